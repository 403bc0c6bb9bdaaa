/* clip.c - CLIP inference (see clip.h).  Sections: kernels, loading, towers, preprocess.
 * Follows the CLIP architecture as Hugging Face's CLIPModel names it: pre-LayerNorm
 * residual blocks  x += out(attn(ln1(x)));  x += fc2(act(fc1(ln2(x)))),
 * attention softmax(q k^T / sqrt(hd) [+ causal mask]) v per head; QuickGELU
 * x * sigmoid(1.702 x).  Matrix products are OpenBLAS sgemm calls. */
#include "clip.h"

#include "err.h"
#include "json.h"
#include "safetensors.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* ---- kernels ---- */

/* y: (M, N) = x: (M, K) . w^T (w: (N, K)) + b: (N) */
static void linear_forward(float *y, const float *x, const float *w, const float *b, int M, int N, int K)
{
    for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, b, (size_t)N * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 1.0f, y, N);
}

/* y: (M, D) = layernorm(x: (M, D)) * g + b */
static void layernorm_forward(float *y, const float *x, const float *g, const float *b, int M, int D, float eps)
{
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D;
        double s = 0, ss = 0;
        for (int k = 0; k < D; k++) s += xi[k];
        float mean = (float)(s / D);
        for (int k = 0; k < D; k++) { float d = xi[k] - mean; ss += (double)d * d; }
        float rstd = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int k = 0; k < D; k++) yi[k] = (xi[k] - mean) * rstd * g[k] + b[k];
    }
}

static void gelu_forward(float *x, size_t n, bool quick)
{
    if (quick)
        for (size_t k = 0; k < n; k++) x[k] = x[k] / (1.0f + expf(-1.702f * x[k]));
    else
        for (size_t k = 0; k < n; k++) x[k] = 0.5f * x[k] * (1.0f + erff(x[k] * 0.70710678f));
}

/* One (sequence, head): o: (T, hd) with row stride D; qkv: (T, 3D) */
static void attention_head(float *o, const float *qkv, float *att, int T, int D, int hd, int h, bool causal)
{
    const float *q = qkv + (size_t)h * hd, *k = qkv + D + (size_t)h * hd, *v = qkv + 2 * D + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, 3 * D, k, 3 * D, 0.0f, att, T);
    for (int i = 0; i < T; i++) {
        float *a = att + (size_t)i * T;
        int n = causal ? i + 1 : T;
        float mx = a[0];
        for (int j = 1; j < n; j++) mx = a[j] > mx ? a[j] : mx;
        float s = 0;
        for (int j = 0; j < n; j++) { a[j] = expf(a[j] - mx); s += a[j]; }
        float inv = 1.0f / s;
        for (int j = 0; j < n; j++) a[j] *= inv;
        for (int j = n; j < T; j++) a[j] = 0;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, att, T, v, 3 * D, 0.0f, o, D);
}

typedef struct {
    float *o;
    const float *qkv;
    float *att;
    int B, T, D, hd, H, causal, first, step;
} att_job;

static void *attention_worker(void *arg)
{
    att_job *j = arg;
    for (int bh = j->first; bh < j->B * j->H; bh += j->step) {
        int b = bh / j->H, h = bh % j->H;
        attention_head(j->o + (size_t)b * j->T * j->D + (size_t)h * j->hd, j->qkv + (size_t)b * j->T * 3 * j->D,
                       j->att, j->T, j->D, j->hd, h, j->causal);
    }
    return NULL;
}

/* o: (B*T, D) from qkv: (B*T, 3D); att: scratch threads * T * T */
static void attention_forward(float *o, const float *qkv, float *att, int B, int T, int D, int H, bool causal, int threads)
{
    att_job jobs[64];
    pthread_t tid[64];
    int nt = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    if (nt > B * H) nt = B * H;
    for (int t = 0; t < nt; t++)
        jobs[t] = (att_job){o, qkv, att + (size_t)t * T * T, B, T, D, D / H, H, causal, t, nt};
    int started = 1;
    for (int t = 1; t < nt; t++, started++)
        if (pthread_create(&tid[t], NULL, attention_worker, &jobs[t])) break;
    attention_worker(&jobs[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    for (int t = started; t < nt; t++) attention_worker(&jobs[t]); /* thread creation failed */
}

/* ---- towers ---- */

typedef struct {
    float *h, *qkv, *att, *mlp;
} tower_scratch;

/* x: (B*T, D), updated in place through all layers */
static void tower_forward(const clip_tower *tw, float *x, int B, int T, bool causal, tower_scratch *s, int threads)
{
    int D = tw->width, M = tw->mlp, R = B * T;
    for (int l = 0; l < tw->layers; l++) {
        const clip_layer *L = &tw->l[l];
        layernorm_forward(s->h, x, L->ln1_w, L->ln1_b, R, D, tw->ln_eps);
        linear_forward(s->qkv, s->h, L->qkv_w, L->qkv_b, R, 3 * D, D);
        attention_forward(s->h, s->qkv, s->att, B, T, D, tw->heads, causal, threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, D, D, 1.0f, s->h, D, L->out_w, D, 1.0f, x, D);
        for (int i = 0; i < R; i++)
            for (int k = 0; k < D; k++) x[(size_t)i * D + k] += L->out_b[k];
        layernorm_forward(s->h, x, L->ln2_w, L->ln2_b, R, D, tw->ln_eps);
        linear_forward(s->mlp, s->h, L->fc1_w, L->fc1_b, R, M, D);
        gelu_forward(s->mlp, (size_t)R * M, tw->quick_gelu);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, D, M, 1.0f, s->mlp, M, L->fc2_w, M, 1.0f, x, D);
        for (int i = 0; i < R; i++)
            for (int k = 0; k < D; k++) x[(size_t)i * D + k] += L->fc2_b[k];
    }
}

static int scratch_new(tower_scratch *s, const clip_tower *tw, int R, int T, int threads)
{
    size_t D = (size_t)tw->width, M = (size_t)tw->mlp;
    s->h = malloc((size_t)R * D * sizeof(float));
    s->qkv = malloc((size_t)R * 3 * D * sizeof(float));
    s->att = malloc((size_t)(threads < 1 ? 1 : threads) * T * T * sizeof(float));
    s->mlp = malloc((size_t)R * M * sizeof(float));
    if (!s->h || !s->qkv || !s->att || !s->mlp) return err_set(ERR_INTERNAL, "out of memory for CLIP activations");
    return 0;
}

static void scratch_free(tower_scratch *s)
{
    free(s->h); free(s->qkv); free(s->att); free(s->mlp);
}

int clip_encode_text(const clip_model *m, const int32_t *tokens, int batch, int ctx, float *out)
{
    if (ctx > m->context)
        return err_set(ERR_USAGE, "token context %d is longer than the model's %d", ctx, m->context);
    int D = m->text.width, T = 1;
    int *eot = malloc((size_t)(batch > 0 ? batch : 1) * sizeof *eot);
    if (!eot) return err_set(ERR_INTERNAL, "out of memory");
    for (int b = 0; b < batch; b++) {
        const int32_t *t = tokens + (size_t)b * ctx;
        eot[b] = 0;
        for (int i = 0; i < ctx; i++) {
            if (t[i] < 0 || t[i] >= m->vocab) {
                free(eot);
                return err_set(ERR_USAGE, "token id %d is outside the model's vocabulary (%d)", t[i], m->vocab);
            }
            if (t[i] > t[eot[b]]) eot[b] = i;
        }
        if (eot[b] + 1 > T) T = eot[b] + 1; /* causal: later positions cannot change the EOT row */
    }
    int threads = m->threads;
    float *x = malloc((size_t)batch * T * D * sizeof *x);
    tower_scratch s = {0};
    int rc = x ? scratch_new(&s, &m->text, batch * T, T, threads) : err_set(ERR_INTERNAL, "out of memory");
    if (!rc) {
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < T; i++) {
                const float *te = m->tok_emb + (size_t)tokens[(size_t)b * ctx + i] * D, *pe = m->tpos + (size_t)i * D;
                float *xi = x + ((size_t)b * T + i) * D;
                for (int k = 0; k < D; k++) xi[k] = te[k] + pe[k];
            }
        tower_forward(&m->text, x, batch, T, true, &s, threads);
        for (int b = 0; b < batch; b++) {
            float *row = s.h + (size_t)b * D;
            layernorm_forward(row, x + ((size_t)b * T + eot[b]) * D, m->final_ln_w, m->final_ln_b, 1, D, m->text.ln_eps);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, m->embed_dim, D, 1.0f, s.h, D, m->tproj, D, 0.0f,
                    out, m->embed_dim);
    }
    scratch_free(&s);
    free(x);
    free(eot);
    return rc;
}

int clip_encode_image(const clip_model *m, const float *pixels, int batch, float *out)
{
    int D = m->vision.width, P = m->patch, G = m->grid, S = m->image_size, T = G * G + 1, K = 3 * P * P;
    int threads = m->threads;
    float *x = malloc((size_t)batch * T * D * sizeof *x);
    float *cols = malloc((size_t)batch * G * G * K * sizeof *cols);
    tower_scratch s = {0};
    int rc = x && cols ? scratch_new(&s, &m->vision, batch * T, T, threads) : err_set(ERR_INTERNAL, "out of memory");
    if (!rc) {
        /* patch embedding as a matrix product: cols (B*G*G, 3*P*P) . patch_w^T */
        for (int b = 0; b < batch; b++)
            for (int py = 0; py < G; py++)
                for (int px = 0; px < G; px++) {
                    float *c = cols + (((size_t)b * G + py) * G + px) * K;
                    for (int ch = 0; ch < 3; ch++)
                        for (int ky = 0; ky < P; ky++)
                            memcpy(c + ((size_t)ch * P + ky) * P,
                                   pixels + (((size_t)b * 3 + ch) * S + (size_t)py * P + ky) * S + (size_t)px * P,
                                   (size_t)P * sizeof(float));
                }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch * G * G, D, K, 1.0f, cols, K, m->patch_w, K, 0.0f,
                    s.h, D);
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < T; t++) {
                float *xi = x + ((size_t)b * T + t) * D;
                const float *src = t ? s.h + ((size_t)b * G * G + t - 1) * D : m->class_emb, *pe = m->vpos + (size_t)t * D;
                for (int k = 0; k < D; k++) xi[k] = src[k] + pe[k];
            }
        layernorm_forward(x, x, m->pre_ln_w, m->pre_ln_b, batch * T, D, m->vision.ln_eps);
        tower_forward(&m->vision, x, batch, T, false, &s, threads);
        for (int b = 0; b < batch; b++)
            layernorm_forward(s.h + (size_t)b * D, x + (size_t)b * T * D, m->post_ln_w, m->post_ln_b, 1, D,
                              m->vision.ln_eps);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, m->embed_dim, D, 1.0f, s.h, D, m->vproj, D, 0.0f,
                    out, m->embed_dim);
    }
    scratch_free(&s);
    free(cols);
    free(x);
    return rc;
}

void clip_l2_normalize(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * d;
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)r[k] * r[k];
        if (s > 0) {
            float inv = (float)(1.0 / sqrt(s));
            for (int k = 0; k < d; k++) r[k] *= inv;
        }
    }
}

/* ---- loading ---- */

typedef struct {
    const st_file *f;
    float *slab;
    int64_t used, cap;
    int rc;
} loader;

/* Reserves n floats in the slab (counting pass when slab is NULL). */
static float *take(loader *L, int64_t n)
{
    float *p = L->slab ? L->slab + L->used : NULL;
    L->used += n;
    return p;
}

/* Copies a tensor of the given shape (entries -1 = any) into the slab at dst. */
static const float *load_into(loader *L, float *dst, const char *name, int ndim, const int64_t *shape, int64_t numel)
{
    if (L->rc) return NULL;
    const st_tensor *t = st_get(L->f, name, ndim, shape);
    if (!t) { L->rc = ERR_FORMAT; return NULL; }
    if (t->numel != numel) {
        L->rc = err_set(ERR_FORMAT, "%s: tensor '%s' has %lld values, expected %lld", st_path(L->f), name,
                        (long long)t->numel, (long long)numel);
        return NULL;
    }
    if (dst && (L->rc = st_to_f32(L->f, t, dst, numel))) return NULL;
    return dst;
}

static const float *load(loader *L, const char *name, int ndim, const int64_t *shape)
{
    int64_t numel = 1;
    for (int k = 0; k < ndim; k++) numel *= shape[k];
    return load_into(L, take(L, numel), name, ndim, shape, numel);
}

static const float *load1(loader *L, const char *name, int64_t a)
{
    int64_t s[1] = {a};
    return load(L, name, 1, s);
}
static const float *load2(loader *L, const char *name, int64_t a, int64_t b)
{
    int64_t s[2] = {a, b};
    return load(L, name, 2, s);
}

static int count_layers(const st_file *f, const char *prefix)
{
    char name[256];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, "%s.encoder.layers.%d.layer_norm1.weight", prefix, n);
        if (!st_find(f, name)) return n;
    }
}

/* Loads (or, in the counting pass, sizes) one tower's layers. */
static void load_tower(loader *L, clip_tower *tw, const char *prefix)
{
    int64_t D = tw->width, M = tw->mlp;
    char n[256];
#define NAME(fmt) (snprintf(n, sizeof n, "%s.encoder.layers.%d." fmt, prefix, l), n)
    for (int l = 0; l < tw->layers && !L->rc; l++) {
        clip_layer *c = &tw->l[l];
        c->ln1_w = load1(L, NAME("layer_norm1.weight"), D);
        c->ln1_b = load1(L, NAME("layer_norm1.bias"), D);
        float *qkv_w = take(L, 3 * D * D), *qkv_b = take(L, 3 * D);
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        int64_t s2[2] = {D, D}, s1[1] = {D};
        for (int k = 0; k < 3; k++) {
            char w[64], b[64];
            snprintf(w, sizeof w, "self_attn.%s.weight", qkv[k]);
            snprintf(b, sizeof b, "self_attn.%s.bias", qkv[k]);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, l, w);
            load_into(L, qkv_w ? qkv_w + k * D * D : NULL, n, 2, s2, D * D);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, l, b);
            load_into(L, qkv_b ? qkv_b + k * D : NULL, n, 1, s1, D);
        }
        c->qkv_w = qkv_w;
        c->qkv_b = qkv_b;
        c->out_w = load2(L, NAME("self_attn.out_proj.weight"), D, D);
        c->out_b = load1(L, NAME("self_attn.out_proj.bias"), D);
        c->ln2_w = load1(L, NAME("layer_norm2.weight"), D);
        c->ln2_b = load1(L, NAME("layer_norm2.bias"), D);
        c->fc1_w = load2(L, NAME("mlp.fc1.weight"), M, D);
        c->fc1_b = load1(L, NAME("mlp.fc1.bias"), M);
        c->fc2_w = load2(L, NAME("mlp.fc2.weight"), D, M);
        c->fc2_b = load1(L, NAME("mlp.fc2.bias"), D);
    }
#undef NAME
}

static void load_all(loader *L, clip_model *m)
{
    int64_t Dv = m->vision.width, Dt = m->text.width, E = m->embed_dim, P = m->patch;
    int64_t pw[4] = {Dv, 3, P, P};
    float *p = take(L, Dv * 3 * P * P);
    m->patch_w = load_into(L, p, "vision_model.embeddings.patch_embedding.weight", 4, pw, Dv * 3 * P * P);
    m->class_emb = load1(L, "vision_model.embeddings.class_embedding", Dv);
    m->vpos = load2(L, "vision_model.embeddings.position_embedding.weight", (int64_t)m->grid * m->grid + 1, Dv);
    m->pre_ln_w = load1(L, "vision_model.pre_layrnorm.weight", Dv);
    m->pre_ln_b = load1(L, "vision_model.pre_layrnorm.bias", Dv);
    load_tower(L, &m->vision, "vision_model");
    m->post_ln_w = load1(L, "vision_model.post_layernorm.weight", Dv);
    m->post_ln_b = load1(L, "vision_model.post_layernorm.bias", Dv);
    m->vproj = load2(L, "visual_projection.weight", E, Dv);
    m->tok_emb = load2(L, "text_model.embeddings.token_embedding.weight", m->vocab, Dt);
    m->tpos = load2(L, "text_model.embeddings.position_embedding.weight", m->context, Dt);
    load_tower(L, &m->text, "text_model");
    m->final_ln_w = load1(L, "text_model.final_layer_norm.weight", Dt);
    m->final_ln_b = load1(L, "text_model.final_layer_norm.bias", Dt);
    m->tproj = load2(L, "text_projection.weight", E, Dt);
}

static const st_tensor *need(const st_file *f, const char *name, int ndim)
{
    const st_tensor *t = st_find(f, name);
    if (!t) { err_set(ERR_FORMAT, "%s: tensor '%s' is missing; not a Hugging Face CLIPModel checkpoint?", st_path(f), name); return NULL; }
    if (t->ndim != ndim) { err_set(ERR_FORMAT, "%s: tensor '%s' has %d dimensions, expected %d", st_path(f), name, t->ndim, ndim); return NULL; }
    for (int k = 0; k < ndim; k++)
        if (t->shape[k] <= 0 || t->shape[k] > (1 << 20)) {
            err_set(ERR_FORMAT, "%s: tensor '%s' has an implausible shape", st_path(f), name);
            return NULL;
        }
    return t;
}

/* Reads heads / activation / eps from config.json (optional). */
static int read_config(clip_model *m, const char *path, const char *weights)
{
    char buf[4096];
    if (!path) {
        const char *sl = strrchr(weights, '/');
        int dl = sl ? (int)(sl - weights) : 0;
        snprintf(buf, sizeof buf, "%.*s%sconfig.json", dl, weights, sl ? "/" : "");
        path = buf;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return 0; /* absent: CLIP's conventions */
    char *text = malloc(1 << 20);
    size_t n = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!text) return err_set(ERR_INTERNAL, "out of memory");
    json *j = json_parse(text, n, path);
    free(text);
    if (!j) return ERR_FORMAT;
    static const char *const secs[2] = {"vision_config", "text_config"};
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        const json *c = json_get(j, secs[k]);
        int64_t h;
        if (c && json_get_int(c, "num_attention_heads", &h) == 0) tw->heads = (int)h;
        const json *act = json_get(c, "hidden_act");
        if (act && act->type == JSON_STR) {
            if (!strcmp(act->str, "gelu")) tw->quick_gelu = false;
            else if (strcmp(act->str, "quick_gelu")) {
                json_free(j);
                return err_set(ERR_FORMAT, "%s: %s.hidden_act '%s' is not supported (quick_gelu, gelu)", path, secs[k], act->str);
            }
        }
        const json *eps = json_get(c, "layer_norm_eps");
        if (eps && eps->type == JSON_NUM) tw->ln_eps = (float)eps->num;
    }
    json_free(j);
    return 0;
}

clip_model *clip_load(const char *path, const char *config_json)
{
    st_file *f = st_open(path);
    if (!f) return NULL;
    clip_model *m = calloc(1, sizeof *m);
    if (!m) { err_set(ERR_INTERNAL, "out of memory"); st_close(f); return NULL; }
    m->threads = 1;
    const st_tensor *ce = need(f, "vision_model.embeddings.class_embedding", 1),
                    *pe = need(f, "vision_model.embeddings.patch_embedding.weight", 4),
                    *vp = need(f, "vision_model.embeddings.position_embedding.weight", 2),
                    *fc = need(f, "vision_model.encoder.layers.0.mlp.fc1.weight", 2),
                    *te = need(f, "text_model.embeddings.token_embedding.weight", 2),
                    *tp = need(f, "text_model.embeddings.position_embedding.weight", 2),
                    *tf = need(f, "text_model.encoder.layers.0.mlp.fc1.weight", 2),
                    *pr = need(f, "visual_projection.weight", 2),
                    *ls = st_find(f, "logit_scale");
    if (ls && ls->numel != 1) ls = NULL; /* shape [] in Hugging Face files; [1] accepted */
    if (!ls) err_set(ERR_FORMAT, "%s: tensor 'logit_scale' is missing or not a scalar", path);
    if (!ce || !pe || !vp || !fc || !te || !tp || !tf || !pr || !ls) goto fail;
    m->vision.width = (int)ce->shape[0];
    m->patch = (int)pe->shape[2];
    int npos = (int)vp->shape[0] - 1, g = (int)lround(sqrt((double)(npos > 0 ? npos : 0)));
    if (g < 1 || g * g != npos) {
        err_set(ERR_FORMAT, "%s: tensor 'vision_model.embeddings.position_embedding.weight' has %d rows; expected 1 + a square number of patches", path, npos + 1);
        goto fail;
    }
    m->grid = g;
    m->image_size = g * m->patch;
    m->vision.mlp = (int)fc->shape[0];
    m->vision.layers = count_layers(f, "vision_model");
    m->vocab = (int)te->shape[0];
    m->text.width = (int)te->shape[1];
    m->context = (int)tp->shape[0];
    m->text.mlp = (int)tf->shape[0];
    m->text.layers = count_layers(f, "text_model");
    m->embed_dim = (int)pr->shape[0];
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        tw->heads = tw->width / 64;
        tw->quick_gelu = true;
        tw->ln_eps = 1e-5f;
    }
    if (read_config(m, config_json, path)) goto fail;
    for (int k = 0; k < 2; k++) {
        clip_tower *tw = k ? &m->text : &m->vision;
        if (tw->heads < 1 || tw->width % tw->heads) {
            err_set(ERR_FORMAT, "%s: %s tower: width %d is not divisible into %d heads (set num_attention_heads in config.json)",
                    path, k ? "text" : "vision", tw->width, tw->heads);
            goto fail;
        }
        tw->l = calloc((size_t)tw->layers, sizeof *tw->l);
        if (!tw->l) { err_set(ERR_INTERNAL, "out of memory"); goto fail; }
    }
    float lsv;
    if (st_to_f32(f, ls, &lsv, 1)) goto fail;
    m->logit_scale = lsv;
    loader L = {f, NULL, 0, 0, 0};
    load_all(&L, m); /* counting pass: checks names and shapes, sizes the slab */
    if (L.rc) goto fail;
    m->n_params = L.used;
    m->slab = malloc((size_t)L.used * sizeof(float));
    if (!m->slab) { err_set(ERR_INTERNAL, "out of memory for %lld CLIP parameters", (long long)L.used); goto fail; }
    L = (loader){f, m->slab, 0, L.used, 0};
    load_all(&L, m);
    if (L.rc) goto fail;
    st_close(f);
    return m;
fail:
    st_close(f);
    clip_free(m);
    return NULL;
}

void clip_free(clip_model *m)
{
    if (!m) return;
    free(m->vision.l);
    free(m->text.l);
    free(m->slab);
    free(m);
}

/* ---- preprocessing: Pillow's 8-bit bicubic resample (two passes), crop, normalise ---- */

#define PREC_BITS 22 /* Pillow: 32 - 8 - 2 */

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

/* Fixed-point coefficients for resizing in_size -> out_size; *ksize per output. */
static int resample_coeffs(int in_size, int out_size, int **bounds_out, int32_t **k_out, int *ksize_out)
{
    double scale = (double)in_size / out_size, fscale = scale < 1 ? 1 : scale, support = 2.0 * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = malloc((size_t)out_size * ksize * sizeof *kk);
    int32_t *ki = malloc((size_t)out_size * ksize * sizeof *ki);
    int *bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
    if (!kk || !ki || !bounds) {
        free(kk); free(ki); free(bounds);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0, ss = 1.0 / fscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = kk + (size_t)xx * ksize;
        int x = 0;
        for (; x < xmax; x++) { k[x] = bicubic((x + xmin - center + 0.5) * ss); ww += k[x]; }
        for (x = 0; x < xmax; x++) if (ww != 0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    for (size_t q = 0; q < (size_t)out_size * ksize; q++)
        ki[q] = (int32_t)(kk[q] < 0 ? -0.5 + kk[q] * (1 << PREC_BITS) : 0.5 + kk[q] * (1 << PREC_BITS));
    free(kk);
    *bounds_out = bounds;
    *k_out = ki;
    *ksize_out = ksize;
    return 0;
}

static uint8_t clip8(int32_t v)
{
    v >>= PREC_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One plane (h, w) -> (oh, ow): horizontal pass, then vertical, as Pillow does. */
static int resize_plane(uint8_t *out, const uint8_t *in, int h, int w, int oh, int ow)
{
    uint8_t *tmp = NULL;
    const uint8_t *src = in;
    int rc = 0;
    if (ow != w) {
        int *bd, ks;
        int32_t *k;
        if ((rc = resample_coeffs(w, ow, &bd, &k, &ks))) return rc;
        tmp = malloc((size_t)h * ow);
        if (!tmp) { free(bd); free(k); return err_set(ERR_INTERNAL, "out of memory"); }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < ow; x++) {
                int32_t ss = 1 << (PREC_BITS - 1);
                const int32_t *kx = k + (size_t)x * ks;
                const uint8_t *row = in + (size_t)y * w + bd[2 * x];
                for (int q = 0; q < bd[2 * x + 1]; q++) ss += row[q] * kx[q];
                tmp[(size_t)y * ow + x] = clip8(ss);
            }
        free(bd);
        free(k);
        src = tmp;
    }
    if (oh != h) {
        int *bd, ks;
        int32_t *k;
        if ((rc = resample_coeffs(h, oh, &bd, &k, &ks))) { free(tmp); return rc; }
        for (int y = 0; y < oh; y++) {
            const int32_t *ky = k + (size_t)y * ks;
            for (int x = 0; x < ow; x++) {
                int32_t ss = 1 << (PREC_BITS - 1);
                for (int q = 0; q < bd[2 * y + 1]; q++) ss += src[(size_t)(bd[2 * y] + q) * ow + x] * ky[q];
                out[(size_t)y * ow + x] = clip8(ss);
            }
        }
        free(bd);
        free(k);
    } else {
        memcpy(out, src, (size_t)oh * ow);
    }
    free(tmp);
    return 0;
}

/* Python's round() of d / 2 for an integer d >= 0 (half to even). */
static int half_round_even(int d)
{
    int q = d / 2;
    return (d % 2 && q % 2) ? q + 1 : q;
}

int clip_resize_crop_u8(uint8_t *out, const uint8_t *chw, int h, int w, int size)
{
    if (h < 1 || w < 1 || size < 1 || h > 65535 || w > 65535)
        return err_set(ERR_FORMAT, "bad image size %dx%d", w, h);
    int oh, ow; /* torchvision Resize(int): shorter side to size, longer int(size * long / short) */
    if (h <= w) { oh = size; ow = (int)((double)size * w / h); }
    else { ow = size; oh = (int)((double)size * h / w); }
    uint8_t *r = malloc((size_t)oh * ow);
    if (!r) return err_set(ERR_INTERNAL, "out of memory");
    int top = half_round_even(oh - size), left = half_round_even(ow - size);
    for (int c = 0; c < 3; c++) {
        int rc = resize_plane(r, chw + (size_t)c * h * w, h, w, oh, ow);
        if (rc) { free(r); return rc; }
        for (int y = 0; y < size; y++)
            memcpy(out + ((size_t)c * size + y) * size, r + (size_t)(y + top) * ow + left, (size_t)size);
    }
    free(r);
    return 0;
}

int clip_preprocess(float *out, const uint8_t *chw, int h, int w, int size)
{
    size_t n = (size_t)size * size;
    uint8_t *u = malloc(3 * n);
    if (!u) return err_set(ERR_INTERNAL, "out of memory");
    int rc = clip_resize_crop_u8(u, chw, h, w, size);
    if (!rc)
        for (int c = 0; c < 3; c++)
            for (size_t k = 0; k < n; k++)
                out[c * n + k] = ((float)u[c * n + k] / 255.0f - clip_mean[c]) / clip_std[c];
    free(u);
    return rc;
}
