/* model.h - the CIFAR ResNet family (ResNet-8 default) and ResNet-50, forward and backward
 * over nn.h kernels, with PyTorch tensor names and layouts (DESIGN section 5).
 *
 * What it is: a model owns three float slabs (llm.c style):
 *   params   [n_total]  trainable tensors first (offsets 0..n_params), then the BatchNorm
 *                       buffers running_mean/running_var (n_params..n_total).  FedAvg over
 *                       "every tensor, BN running stats included" is one axpy over
 *                       params[0..n_total).
 *   grads    [n_params] same offsets as the trainable part of params.
 *   momentum [n_params] SGD momentum buffers.
 * and a table of named tensors (PyTorch state_dict order) giving offset and shape.
 * num_batches_tracked is one counter for the whole model (every BN layer sees every batch);
 * records carry it per BN layer as an <i8 scalar so PyTorch's strict load_state_dict works.
 *
 * Architectures (docs/algorithms.md 1.5):
 *   "resnet8" / "cifar-resnet": conv1 3x3 (3->w), bn1, relu; layer1..layer3 of (depth-2)/6
 *     BasicBlocks with w, 2w, 4w channels (strides 1, 2, 2; downsample.0/1 = 1x1 conv + BN
 *     when the shape changes); global average pool -> 4w-d; optional proj Linear(4w ->
 *     proj_dim) (no activation); fc Linear(feat_dim -> num_classes).  resnet8 = depth 8,
 *     width 64 (64/128/256 channels, 256-d feature).
 *   "resnet50": torchvision ResNet-50 (conv1 7x7 s2, bn1, relu, maxpool 3x3 s2 p1,
 *     bottleneck layers [3,4,6,3] with stride on the 3x3 conv, 2048-d pool), optional proj,
 *     fc.  width = 64 (base planes).
 * Init (model_init): conv N(0, sqrt(2/(kh*kw*out))), BN gamma 1 beta 0, running 0/1, Linear
 * weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); seeded from rng stream
 * (seed, "init", 0, 0), drawn tensor by tensor in table order.
 *
 * What it is not: a data loader or a training loop (tools/ own those). */
#ifndef FEDSM_MODEL_H
#define FEDSM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

#define MODEL_NAME_MAX 64

typedef struct model_config {
    char arch[32];   /* "resnet8", "cifar-resnet" or "resnet50" */
    int depth;       /* cifar-resnet: 6n+2 (resnet8: 8); resnet50: 50 */
    int width;       /* channels of the first stage: 64 (resnet8 and resnet50) */
    int num_classes; /* classifier outputs */
    int proj_dim;    /* 0 (no proj) or the proj Linear's output size (512 for CLIP2FL/FedSM) */
    int input_size;  /* H = W of the input images: 32 for CIFAR, 224 for ImageNet */
    int in_channels; /* 3 */
} model_config;

/* Defaults for arch ("resnet8", "cifar-resnet", "resnet50"): depth, width, 10 classes, no
 * proj, input 32 (resnet50: 224), 3 channels.  Returns 0 or ERR_USAGE for an unknown arch. */
int model_config_default(model_config *cfg, const char *arch);

typedef struct model_tensor {
    char name[MODEL_NAME_MAX]; /* PyTorch state_dict name, e.g. "layer2.0.downsample.0.weight" */
    size_t offset;             /* into params (and grads/momentum when !buffer) */
    size_t numel;
    int ndim;
    int64_t shape[4];
    int buffer; /* 1 for BN running_mean/running_var (no gradient, no weight decay) */
} model_tensor;

typedef struct model_impl model_impl;

typedef struct model {
    model_config cfg;
    int feat_dim; /* proj_dim when proj is on, else the pooled dim (4*width; resnet50 2048) */
    int pool_dim; /* the pooled vector's dim */
    int n_tensors;
    model_tensor *tensors; /* PyTorch state_dict order (without num_batches_tracked) */
    size_t n_params;       /* trainable floats */
    size_t n_total;        /* trainable + buffers */
    float *params;         /* [n_total], owned, 64-byte aligned */
    float *grads;          /* [n_params], owned */
    float *momentum;       /* [n_params], owned (zero until a momentum step) */
    int64_t num_batches_tracked;
    model_impl *impl; /* layers, activations and scratch; private */
} model;

/* Builds the model for cfg (validated: depth 6n+2 for cifar nets, 50 for resnet50, sizes
 * > 0, input_size large enough).  Parameters are zero until model_init or a load.
 * Returns owned, or NULL with err_msg (ERR_USAGE bad config, ERR_INTERNAL out of memory). */
model *model_new(const model_config *cfg);
void model_free(model *m); /* NULL-safe */
/* Initialises every tensor (docs/algorithms.md 1.5), zeroes grads and momentum, and sets
 * num_batches_tracked to 0. */
void model_init(model *m, uint64_t seed);

/* Table lookup: NULL when absent. */
const model_tensor *model_find(const model *m, const char *name);
/* params + t->offset (and grads + t->offset for trainable tensors). */
float *model_param(const model *m, const char *name);
float *model_grad(const model *m, const char *name);

/* Forward pass on x: (n, in_channels, input_size, input_size), normalised floats; n may
 * change call to call.  train != 0: BN uses batch statistics and updates the running stats
 * (and num_batches_tracked); 0: eval mode.  Returns the logits (n, num_classes), owned by
 * the model and valid until the next forward; NULL with err_msg on out of memory.
 * Afterwards model_features() gives the feature vectors (n, feat_dim): the proj output
 * when proj is on, else the pooled vector. */
const float *model_forward(model *m, const float *x, int n, int train);
/* As model_forward, but stops at the features (fc is not run).  Returns (n, feat_dim). */
const float *model_forward_features(model *m, const float *x, int n, int train);
/* The features of the last forward: (n, feat_dim).  Owned by the model. */
const float *model_features(const model *m);
/* The pooled vector of the last forward: (n, pool_dim) (== features when proj is off). */
const float *model_pooled(const model *m);

/* Backward through the last model_forward (same n, same train flag): dlogits (n,
 * num_classes) -> grads += d loss / d params for every trainable tensor (BN in eval mode
 * treats running stats as constants).  Returns 0, or ERR_USAGE if no full forward
 * preceded it. */
int model_backward(model *m, const float *dlogits);
/* Backward from the features instead: dfeat (n, feat_dim); fc gets no gradient. */
int model_backward_features(model *m, const float *dfeat);
void model_zero_grad(model *m);
/* One SGD step over all trainable tensors (nn_sgd_step; PyTorch semantics, weight decay on
 * every trainable tensor, BN included).  Buffers are untouched. */
void model_sgd_step(model *m, float lr, float momentum, float wd);

/* Training-loss helper: forward (train mode), mean CE, backward into grads (not zeroed
 * here).  labels: (n).  teacher: (n, num_classes) CLIP logits or NULL; with a teacher the
 * loss is CE + kd_alpha T^2 KL (docs/algorithms.md 4.2).  *loss receives the total loss.
 * Returns 0 or a negative error. */
int model_train_step_grads(model *m, const float *x, const int32_t *labels, const float *teacher,
                           int n, float kd_t, float kd_alpha, float *loss);

/* ---- records (DESIGN section 2) ---- */
/* Adds every param and buffer as an <f4 tensor by PyTorch name (plus
 * "<bn>.num_batches_tracked" <i8 scalars) and sets meta arch, depth, width, num_classes,
 * proj_dim, feat_dim, input_size, in_channels, mean, std (norm_for_arch: CIFAR's for the
 * cifar nets, ImageNet's for resnet50; a tool that knows the data overwrites them, as
 * aggregate --init --partition does).  mode: REC_COPY, or REC_BORROW (the record points
 * into m->params: keep m alive and unchanged until the record is written and freed).
 * Returns 0 or a negative error. */
int model_to_record(const model *m, record *r, int mode);
/* The largest meta.round a model or update may carry: the next round (round + 1) must
 * still be one every tool's --round accepts (at most INT32_MAX). */
#define MODEL_ROUND_MAX (INT32_MAX - 1)
/* Checks the values a model (or update) record carries, not its layout (model_load_record
 * does that): meta.arch a known architecture; num_classes, input_size, in_channels, depth,
 * width >= 1 and proj_dim >= 0 when present; mean/std (when present) in_channels finite
 * numbers with every std > 0; round in [0, MODEL_ROUND_MAX], num_samples >= 0, client
 * >= -1 and every entry of clients >= 0 when present; fc.weight/fc.bias of num_classes
 * rows; every <f4 tensor finite (one pass over the floats); every BatchNorm running_var
 * >= 0; every num_batches_tracked >= 0.  0, or ERR_FORMAT naming the stream, record,
 * field and (for a tensor) the first bad index and value. */
int model_check_record(const record *r);
/* Builds a model from a record's meta and copies its tensors in (model_load_record), after
 * model_check_record.  Returns owned, or NULL with err_msg (ERR_FORMAT: missing or bad
 * meta, unknown arch, a tensor missing / of wrong dtype or shape, or a bad value, named in
 * the message). */
model *model_from_record(const record *r);
/* 0 when the meta of r describes m's architecture: arch of the same family, and depth,
 * width, num_classes, proj_dim equal to m's where r has them; else ERR_FORMAT naming the
 * field.  For records whose tensors are taken in part (a retrained head). */
int model_check_meta(const model *m, const record *r);
/* Copies a record's tensors into an existing model after checking every tensor (name,
 * <f4 dtype, shape; num_batches_tracked optional) and the meta arch/depth/width/
 * num_classes/proj_dim when present.  Nothing is modified on failure.  0 or ERR_FORMAT. */
int model_load_record(model *m, const record *r);

#endif
