/* test_clip.c - lib/clip against the independent PyTorch reference (tests/clip_ref.py,
 * fixtures from tests/make_clip_fixtures.py): text and image embeddings of a tiny random
 * CLIP stored as F32, F16 and BF16 (relative error <= 1e-4 of the vector's largest
 * entry), and as a torch.save pytorch_model.bin (tiny.bin: the bits of the F32
 * safetensors, so the same embeddings bit for bit); Pillow's bicubic resize + center crop
 * on synthetic images (exact) and on real CIFAR-10 JPEGs at 224 (exact, via
 * tests/clip_pil_check.py when PIL and ../shared/data are there). */
#include "testlib.h"

#include "clip.h"
#include "err.h"
#include "json.h"
#include "pool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIX "tests/fixtures/clip"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); fclose(f); return NULL; }
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static void pattern_image(uint8_t *o, int h, int w, int seed)
{
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                o[((size_t)c * h + y) * w + x] = (uint8_t)((x * x * 7 + y * 13 + c * 50 + (x * y * 3) % 29 + seed * 17) % 256);
}

/* max |a - b| / max |b| over a vector */
static double rel_err(const float *a, const json *b, int n)
{
    double md = 0, mb = 0;
    for (int k = 0; k < n; k++) {
        double r = b->items[k].num, d = fabs(a[k] - r);
        md = d > md ? d : md;
        mb = fabs(r) > mb ? fabs(r) : mb;
    }
    return md / (mb > 0 ? mb : 1);
}

static void check_model(const char *file, const json *refs, const char *dt)
{
    char path[256];
    snprintf(path, sizeof path, FIX "/%s", file);
    clip_model *m = clip_load(path, NULL);
    CHECK_MSG(m != NULL, "%s: %s", path, err_msg());
    if (!m) return;
    pool_set_threads(2);
    CHECK(m->image_size == 32 && m->patch == 8 && m->vision.heads == 2 && m->text.heads == 4);
    CHECK(m->vision.layers == 2 && m->text.layers == 2 && m->embed_dim == 24 && m->vocab == 1000);
    const json *r = json_get(refs, dt), *texts = json_get(refs, "texts"), *imgs = json_get(refs, "images");
    const json *rt = json_get(r, "text"), *ri = json_get(r, "image");
    int E = m->embed_dim, nt = (int)texts->n, ni = (int)imgs->n;
    CHECK_CLOSE(m->logit_scale, json_get(r, "logit_scale")->num, 1e-6);
    int32_t *tok = malloc((size_t)nt * 77 * sizeof *tok);
    for (int b = 0; b < nt; b++)
        for (int i = 0; i < 77; i++) tok[b * 77 + i] = (int32_t)texts->items[b].items[i].i;
    float *out = malloc((size_t)(nt + ni + 1) * E * sizeof *out);
    CHECK(clip_encode_text(m, tok, nt, 77, out) == 0);
    double worst = 0;
    for (int b = 0; b < nt; b++) {
        double e = rel_err(out + b * E, &rt->items[b], E);
        worst = e > worst ? e : worst;
    }
    /* one at a time gives the same as the batch (the batch trims to its longest EOT) */
    float one[64];
    CHECK(clip_encode_text(m, tok + 77, 1, 77, one) == 0);
    CHECK(rel_err(one, &rt->items[1], E) <= 1e-4);
    fprintf(stderr, "%s: text max relative error %.2e\n", file, worst);
    CHECK(worst <= 1e-4);
    int S = m->image_size;
    float *px = malloc((size_t)(ni + 1) * 3 * S * S * sizeof *px);
    uint8_t *u = malloc(3 * 40 * 56);
    for (int b = 0; b < ni; b++) {
        for (int k = 0; k < 3 * S * S; k++) u[k] = (uint8_t)imgs->items[b].items[k].i;
        CHECK(clip_preprocess(px + (size_t)b * 3 * S * S, u, S, S, S) == 0);
    }
    pattern_image(u, 40, 56, 5);
    CHECK(clip_preprocess(px + (size_t)ni * 3 * S * S, u, 40, 56, S) == 0);
    CHECK(clip_encode_image(m, px, ni + 1, out) == 0);
    worst = 0;
    for (int b = 0; b <= ni; b++) {
        double e = rel_err(out + b * E, &ri->items[b], E);
        worst = e > worst ? e : worst;
    }
    fprintf(stderr, "%s: image max relative error %.2e\n", file, worst);
    CHECK(worst <= 1e-4);
    /* the same on 1 and 3 threads: one chunk, then columns and heads split over the pool
     * (batch 2 < 3 threads), then one chunk per thread (batch 3); texts likewise */
    float *alt = malloc((size_t)(nt + ni + 1) * E * sizeof *alt);
    static const int thr[3] = {1, 3, 3}, nb[3] = {0, 2, 3};
    for (int q = 0; q < 3; q++) {
        pool_set_threads(thr[q]);
        int b = nb[q] ? nb[q] : ni + 1, bt = nb[q] ? nb[q] : nt;
        CHECK(clip_encode_image(m, px, b, alt) == 0);
        double e = 0;
        for (int s = 0; s < b; s++) {
            double md = 0, mb = 0;
            for (int k = s * E; k < (s + 1) * E; k++) {
                md = fmax(md, fabs(alt[k] - out[k]));
                mb = fmax(mb, fabs(out[k]));
            }
            e = fmax(e, md / (mb > 0 ? mb : 1));
        }
        CHECK_MSG(e <= 1e-4, "image, %d threads, batch %d: %.2e from 2 threads", thr[q], b, e);
        CHECK(clip_encode_text(m, tok, bt, 77, alt) == 0);
        worst = 0;
        for (int k = 0; k < bt; k++) worst = fmax(worst, rel_err(alt + k * E, &rt->items[k], E));
        CHECK_MSG(worst <= 1e-4, "text, %d threads, batch %d: %.2e", thr[q], bt, worst);
    }
    pool_set_threads(2);
    /* bf16 products: within bf16's precision of the fp32 reference */
    CHECK(clip_use_bf16(m) == 0);
    CHECK(clip_encode_text(m, tok, nt, 77, alt) == 0);
    double wt = 0, wi = 0;
    for (int k = 0; k < nt; k++) wt = fmax(wt, rel_err(alt + k * E, &rt->items[k], E));
    CHECK(clip_encode_image(m, px, ni, alt) == 0);
    for (int k = 0; k < ni; k++) wi = fmax(wi, rel_err(alt + k * E, &ri->items[k], E));
    fprintf(stderr, "%s: bf16 text %.2e, image %.2e max relative error\n", file, wt, wi);
    CHECK(wt <= 1e-2 && wi <= 1e-2 && wt > 1e-5 && wi > 1e-5);
    free(alt);
    /* bad token ids are an error, not a crash */
    tok[5] = 5000;
    CHECK(clip_encode_text(m, tok, 1, 77, out) == ERR_USAGE);
    free(u);
    free(px);
    free(out);
    free(tok);
    clip_free(m);
}

/* tiny.bin, the same weights saved with torch.save (tests/fixtures_torchzip.py), loads to
 * the same slab and gives the same embeddings as tiny.safetensors, bit for bit. */
static void check_torch_bin(const json *refs)
{
    clip_model *a = clip_load(FIX "/tiny.safetensors", NULL), *b = clip_load(FIX "/tiny.bin", NULL);
    CHECK_MSG(a && b, "%s", err_msg());
    if (a && b) {
        CHECK(a->n_params == b->n_params && a->logit_scale == b->logit_scale);
        CHECK(a->n_params == b->n_params && !memcmp(a->slab, b->slab, (size_t)a->n_params * sizeof(float)));
        const json *texts = json_get(refs, "texts"), *imgs = json_get(refs, "images");
        int nt = (int)texts->n, ni = (int)imgs->n, E = a->embed_dim, S = a->image_size;
        int32_t *tok = malloc((size_t)nt * 77 * sizeof *tok);
        float *px = malloc((size_t)ni * 3 * S * S * sizeof *px), *oa = malloc((size_t)(nt + ni) * E * sizeof *oa),
              *ob = malloc((size_t)(nt + ni) * E * sizeof *ob);
        uint8_t *u = malloc((size_t)3 * S * S);
        for (int k = 0; k < nt; k++)
            for (int i = 0; i < 77; i++) tok[k * 77 + i] = (int32_t)texts->items[k].items[i].i;
        for (int k = 0; k < ni; k++) {
            for (int q = 0; q < 3 * S * S; q++) u[q] = (uint8_t)imgs->items[k].items[q].i;
            CHECK(clip_preprocess(px + (size_t)k * 3 * S * S, u, S, S, S) == 0);
        }
        CHECK(clip_encode_text(a, tok, nt, 77, oa) == 0 && clip_encode_text(b, tok, nt, 77, ob) == 0);
        CHECK(clip_encode_image(a, px, ni, oa + nt * E) == 0 && clip_encode_image(b, px, ni, ob + nt * E) == 0);
        CHECK_MSG(!memcmp(oa, ob, (size_t)(nt + ni) * E * sizeof *oa), "tiny.bin embeddings differ from tiny.safetensors");
        free(tok);
        free(px);
        free(oa);
        free(ob);
        free(u);
    }
    clip_free(a);
    clip_free(b);
}

static void check_preprocess(const json *refs)
{
    const json *p = json_get(refs, "preprocess");
    for (size_t k = 0; k < p->n; k++) {
        int64_t h, w, size, seed;
        json_get_int(&p->items[k], "h", &h);
        json_get_int(&p->items[k], "w", &w);
        json_get_int(&p->items[k], "size", &size);
        json_get_int(&p->items[k], "seed", &seed);
        const json *ref = json_get(&p->items[k], "out");
        uint8_t *in = malloc((size_t)(3 * h * w)), *o = malloc((size_t)(3 * size * size));
        pattern_image(in, (int)h, (int)w, (int)seed);
        CHECK(clip_resize_crop_u8(o, in, (int)h, (int)w, (int)size) == 0);
        int maxd = 0;
        for (int64_t q = 0; q < 3 * size * size; q++) {
            int d = abs((int)o[q] - (int)ref->items[q].i);
            maxd = d > maxd ? d : maxd;
        }
        CHECK_MSG(maxd == 0, "%lldx%lld -> %lld: max difference %d from Pillow", (long long)w, (long long)h,
                  (long long)size, maxd);
        free(in);
        free(o);
    }
}

/* Real CIFAR-10 JPEGs (decoded by PIL) through the 224 pipeline, vs Pillow. */
static void check_real_images(void)
{
    char dir[] = "/tmp/fedsm-clip-XXXXXX", cmd[512];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/clip_pil_check.py %s > %s/log 2>&1", dir, dir);
    int rc = system(cmd);
    rc = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
    if (rc == 77 || rc == 127) { /* the reference says why (no archive, no PIL), or no python3 */
        char p[600], why[300] = "no reason given";
        snprintf(p, sizeof p, "%s/log", dir);
        FILE *f = fopen(p, "r");
        if (f && fgets(why, sizeof why, f)) why[strcspn(why, "\n")] = 0;
        if (f) fclose(f);
        SKIP_CHECK("real-image CLIP preprocessing check: tests/clip_pil_check.py exit %d: %s", rc, why);
    } else if (rc != 0) {
        CHECK_MSG(rc == 0, "tests/clip_pil_check.py exit %d (log in %s/log)", rc, dir);
        return;
    } else {
        int n = 0, worst = 0;
        for (int k = 0;; k++, n++) {
            char p[600];
            size_t len, rlen;
            snprintf(p, sizeof p, "%s/%d.in", dir, k);
            char *in = slurp(p, &len);
            if (!in) break;
            snprintf(p, sizeof p, "%s/%d.ref", dir, k);
            char *ref = slurp(p, &rlen);
            int h = 0, w = 0;
            char *nl = strchr(in, '\n');
            sscanf(in, "%d %d", &h, &w);
            CHECK(ref && nl && rlen == 3 * 224 * 224);
            if (!ref || !nl) { free(in); free(ref); break; }
            uint8_t *o = malloc(3 * 224 * 224);
            CHECK(clip_resize_crop_u8(o, (const uint8_t *)nl + 1, h, w, 224) == 0);
            for (int q = 0; q < 3 * 224 * 224; q++) {
                int d = abs((int)o[q] - (int)(uint8_t)ref[q]);
                worst = d > worst ? d : worst;
            }
            free(o);
            free(in);
            free(ref);
        }
        fprintf(stderr, "real images: %d checked at 224, max difference from Pillow %d\n", n, worst);
        CHECK(n > 0 && worst == 0);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "note: could not remove %s\n", dir);
}

int main(void)
{
    size_t len;
    char *text = slurp(FIX "/refs.json", &len);
    CHECK(text != NULL);
    if (!text) TEST_MAIN_END();
    json *refs = json_parse(text, len, "refs.json");
    free(text);
    CHECK(refs != NULL);
    if (!refs) TEST_MAIN_END();
    check_model("tiny.safetensors", refs, "F32");
    check_model("tiny-f16.safetensors", refs, "F16");
    check_model("tiny-bf16.safetensors", refs, "BF16");
    check_model("tiny.bin", refs, "F32"); /* torch.save of the F32 weights */
    check_torch_bin(refs);
    check_preprocess(refs);
    check_real_images();
    /* normalisation */
    float v[6] = {3, 4, 0, 0, 0, 0};
    clip_l2_normalize(v, 2, 3);
    CHECK_CLOSE(v[0], 0.6, 1e-7);
    CHECK(v[3] == 0);
    json_free(refs);
    TEST_MAIN_END();
}
