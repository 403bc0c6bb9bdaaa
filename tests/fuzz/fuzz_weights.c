/* fuzz_weights.c - libFuzzer target for the weight-file readers behind st_open: the
 * safetensors header parser and the torch.save zip + pickle reader (lib/io/torchzip.c), which
 * read files downloaded from the internet.
 *
 * The input becomes an in-memory file (memfd) opened by path; when it opens, every float
 * tensor is converted to f32.  Any crash, leak, sanitizer report or oversized allocation is
 * a bug.  Seeds: tests/fuzz/corpus-weights (copies of the .pt files of tests/fixtures/torchzip, and
 * small.safetensors: two tensors, F32 and BF16).  Run by tests/fuzz/run.sh (30 s in make test). */
#include "err.h"
#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-weights", 0);
    if (fd < 0)
        return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    st_file *f = st_open(path);
    if (f) {
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            if ((t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) && t->numel <= (1 << 20)) {
                float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
                if (out && st_to_f32(f, t, out, t->numel) == 0 && t->numel)
                    (void)out[t->numel - 1];
                free(out);
            }
        }
        st_close(f);
    }
    close(fd);
    return 0;
}
