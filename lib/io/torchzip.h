/* torchzip.h - reads a PyTorch zip checkpoint (what torch.save writes since PyTorch 1.6,
 * e.g. a Hugging Face pytorch_model.bin) into tensorfile.h's tensor table, so that
 * st_open (safetensors.h) takes it as it takes a model.safetensors.
 *
 * Layout: a zip archive (stored entries, zip64 end records accepted) holding
 * <dir>/data.pkl, a pickle of the state dict, and <dir>/data/<key>, one raw little-endian
 * storage per key.  A small pickle machine reads data.pkl: it knows the opcodes (protocols
 * 2 to 5) and the handful of globals torch.save emits for a dict of tensors
 * (collections.OrderedDict, torch._utils._rebuild_tensor_v2/_v3, _rebuild_parameter, the
 * torch.*Storage types and torch dtypes) and nothing else; it never executes anything.
 * Every tensor must be contiguous and lie inside its storage; tensors may share a storage
 * (tied weights).  Entries of the dict that are not tensors are skipped.
 *
 * Not here: the legacy pre-1.6 format (a bare pickle stream), compressed or encrypted
 * entries, TorchScript archives, big-endian checkpoints, writing. */
#ifndef FEDSM_TORCHZIP_H
#define FEDSM_TORCHZIP_H

#include "tensorfile.h"

#include <stdbool.h>
#include <stddef.h>

/* True when the len bytes at map start like a zip archive (PK\3\4). */
bool tz_is_zip(const void *map, size_t len);

/* Reads the checkpoint mapped at map[0, len); path names it in messages.  0 with *t an
 * owned array of *n tensors (names owned, data pointing into map), or ERR_FORMAT
 * (ERR_INTERNAL when out of memory) with *t NULL and a message naming the file and, where
 * there is one, the tensor. */
int tz_read(const char *path, const void *map, size_t len, st_tensor **t, int *n);

#endif
