/* model.c - CIFAR ResNets (ResNet-8 by default) and torchvision ResNet-50 over nn.h kernels.
 *
 * What it is: the tensor table (PyTorch names, state_dict order), the three slabs, init
 * (docs/algorithms.md 1.5), forward/backward chained by hand, SGD, and model records.
 * What it is not: a general graph; a new architecture is a new builder below.
 * Follows: CReFF's ResNet-8 (Model/Resnet8.py, described in docs/algorithms.md 1.5) with DESIGN 5
 * names; torchvision's resnet50 (bottleneck, stride on the 3x3 conv, adaptive avg pool). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "finite.h"
#include "nn.h"
#include "norm.h"
#include "rng.h"

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

/* one conv + BN (+ ReLU) */
typedef struct unit {
    int wi, gi, bi, rmi, rvi; /* tensor indices: conv weight, bn weight/bias/running stats */
    int ci, co, k, stride, pad;
    int hin, win, hout, wout;
    int relu;
    float *z, *a;       /* conv out, bn out: (N, co, hout, wout) */
    float *mean, *rstd; /* (co) */
    const float *x;     /* input of the last forward (N, ci, hin, win) */
} unit;

typedef struct block {
    int nu; /* 2 (basic) or 3 (bottleneck) */
    unit u[3];
    int has_ds;
    unit ds;
    const float *x; /* block input */
    float *y;       /* block output (== u[nu-1].a, overwritten by relu(a + shortcut)) */
} block;

struct model_impl {
    unit stem;
    int has_maxpool, mp_h, mp_w;
    float *mp_out;
    int32_t *mp_arg;
    int nb;
    block *blocks;
    int last_c, last_h, last_w;
    int proj_w, proj_b, fc_w, fc_b; /* tensor indices (-1 none) */
    int n_bn;                       /* BN layers (for num_batches_tracked) */
    /* activations, sized for cap_n samples */
    int cap_n;
    float *x, *pooled, *feat, *logits, *probs;
    size_t g_cap;
    float *g[4];
    float *dpooled, *dfeat, *dlogits;
    float *ws;
    size_t ws_cap;
    /* last forward */
    int n, train, fwd; /* fwd: 0 none, 1 features only, 2 full */
};

/* ------------------------------------------------------------------------------------ */
/* config and table                                                                      */
/* ------------------------------------------------------------------------------------ */

static int is_cifar(const char *arch)
{
    return strcmp(arch, "resnet8") == 0 || strcmp(arch, "cifar-resnet") == 0;
}

int model_config_default(model_config *cfg, const char *arch)
{
    memset(cfg, 0, sizeof *cfg);
    if (!arch || strlen(arch) >= sizeof cfg->arch)
        return err_set(ERR_USAGE, "unknown architecture");
    snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
    cfg->num_classes = 10;
    cfg->in_channels = 3;
    cfg->width = 64;
    if (is_cifar(arch)) {
        cfg->depth = 8;
        cfg->input_size = 32;
    } else if (strcmp(arch, "resnet50") == 0) {
        cfg->depth = 50;
        cfg->input_size = 224;
    } else {
        return err_set(ERR_USAGE, "unknown architecture '%s' (resnet8, cifar-resnet, resnet50)",
                       arch);
    }
    return 0;
}

typedef struct builder {
    model *m;
    int cap;
    int oom;
} builder;

static int add_tensor(builder *b, const char *name, int buffer, int ndim, int64_t s0, int64_t s1,
                      int64_t s2, int64_t s3)
{
    model *m = b->m;
    if (m->n_tensors == b->cap) {
        int nc = b->cap ? 2 * b->cap : 64;
        model_tensor *t = realloc(m->tensors, sizeof *t * nc);
        if (!t) {
            b->oom = 1;
            return -1;
        }
        m->tensors = t;
        b->cap = nc;
    }
    model_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->buffer = buffer;
    t->ndim = ndim;
    int64_t s[4] = {s0, s1, s2, s3};
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = s[i];
        t->numel *= (size_t)s[i];
    }
    return m->n_tensors++;
}

static void add_unit(builder *b, unit *u, const char *conv, const char *bn, int ci, int co, int k,
                     int stride, int pad, int relu, int hin, int win)
{
    char name[MODEL_NAME_MAX];
    memset(u, 0, sizeof *u);
    u->ci = ci, u->co = co, u->k = k, u->stride = stride, u->pad = pad, u->relu = relu;
    u->hin = hin, u->win = win;
    u->hout = (hin + 2 * pad - k) / stride + 1;
    u->wout = (win + 2 * pad - k) / stride + 1;
    snprintf(name, sizeof name, "%s.weight", conv);
    u->wi = add_tensor(b, name, 0, 4, co, ci, k, k);
    snprintf(name, sizeof name, "%s.weight", bn);
    u->gi = add_tensor(b, name, 0, 1, co, 0, 0, 0);
    snprintf(name, sizeof name, "%s.bias", bn);
    u->bi = add_tensor(b, name, 0, 1, co, 0, 0, 0);
    snprintf(name, sizeof name, "%s.running_mean", bn);
    u->rmi = add_tensor(b, name, 1, 1, co, 0, 0, 0);
    snprintf(name, sizeof name, "%s.running_var", bn);
    u->rvi = add_tensor(b, name, 1, 1, co, 0, 0, 0);
    b->m->impl->n_bn++;
}

static int build(model *m)
{
    model_impl *im = m->impl;
    const model_config *c = &m->cfg;
    builder b = {.m = m};
    char p1[MODEL_NAME_MAX], p2[MODEL_NAME_MAX];
    int h = c->input_size, w = c->input_size;
    if (is_cifar(c->arch)) {
        int n = (c->depth - 2) / 6;
        int wd = c->width;
        add_unit(&b, &im->stem, "conv1", "bn1", c->in_channels, wd, 3, 1, 1, 1, h, w);
        h = im->stem.hout, w = im->stem.wout;
        im->nb = 3 * n;
        im->blocks = calloc((size_t)im->nb, sizeof *im->blocks);
        if (!im->blocks)
            return err_set(ERR_INTERNAL, "out of memory");
        int cin = wd, bi = 0;
        for (int s = 0; s < 3; s++) {
            int cout = wd << s;
            for (int j = 0; j < n; j++, bi++) {
                block *bl = &im->blocks[bi];
                int stride = (s > 0 && j == 0) ? 2 : 1;
                bl->nu = 2;
                snprintf(p1, sizeof p1, "layer%d.%d.conv1", s + 1, j);
                snprintf(p2, sizeof p2, "layer%d.%d.bn1", s + 1, j);
                add_unit(&b, &bl->u[0], p1, p2, cin, cout, 3, stride, 1, 1, h, w);
                int ho = bl->u[0].hout, wo = bl->u[0].wout;
                snprintf(p1, sizeof p1, "layer%d.%d.conv2", s + 1, j);
                snprintf(p2, sizeof p2, "layer%d.%d.bn2", s + 1, j);
                add_unit(&b, &bl->u[1], p1, p2, cout, cout, 3, 1, 1, 0, ho, wo);
                if (stride != 1 || cin != cout) {
                    bl->has_ds = 1;
                    snprintf(p1, sizeof p1, "layer%d.%d.downsample.0", s + 1, j);
                    snprintf(p2, sizeof p2, "layer%d.%d.downsample.1", s + 1, j);
                    add_unit(&b, &bl->ds, p1, p2, cin, cout, 1, stride, 0, 0, h, w);
                }
                cin = cout, h = ho, w = wo;
            }
        }
        im->last_c = cin;
    } else { /* resnet50 */
        static const int layers[4] = {3, 4, 6, 3};
        int wd = c->width;
        add_unit(&b, &im->stem, "conv1", "bn1", c->in_channels, wd, 7, 2, 3, 1, h, w);
        h = im->stem.hout, w = im->stem.wout;
        im->has_maxpool = 1;
        im->mp_h = (h + 2 - 3) / 2 + 1;
        im->mp_w = (w + 2 - 3) / 2 + 1;
        h = im->mp_h, w = im->mp_w;
        im->nb = 16;
        im->blocks = calloc((size_t)im->nb, sizeof *im->blocks);
        if (!im->blocks)
            return err_set(ERR_INTERNAL, "out of memory");
        int cin = wd, bi = 0;
        for (int s = 0; s < 4; s++) {
            int planes = wd << s, cout = planes * 4;
            for (int j = 0; j < layers[s]; j++, bi++) {
                block *bl = &im->blocks[bi];
                int stride = (s > 0 && j == 0) ? 2 : 1;
                bl->nu = 3;
                snprintf(p1, sizeof p1, "layer%d.%d.conv1", s + 1, j);
                snprintf(p2, sizeof p2, "layer%d.%d.bn1", s + 1, j);
                add_unit(&b, &bl->u[0], p1, p2, cin, planes, 1, 1, 0, 1, h, w);
                snprintf(p1, sizeof p1, "layer%d.%d.conv2", s + 1, j);
                snprintf(p2, sizeof p2, "layer%d.%d.bn2", s + 1, j);
                add_unit(&b, &bl->u[1], p1, p2, planes, planes, 3, stride, 1, 1, h, w);
                int ho = bl->u[1].hout, wo = bl->u[1].wout;
                snprintf(p1, sizeof p1, "layer%d.%d.conv3", s + 1, j);
                snprintf(p2, sizeof p2, "layer%d.%d.bn3", s + 1, j);
                add_unit(&b, &bl->u[2], p1, p2, planes, cout, 1, 1, 0, 0, ho, wo);
                if (j == 0) {
                    bl->has_ds = 1;
                    snprintf(p1, sizeof p1, "layer%d.%d.downsample.0", s + 1, j);
                    snprintf(p2, sizeof p2, "layer%d.%d.downsample.1", s + 1, j);
                    add_unit(&b, &bl->ds, p1, p2, cin, cout, 1, stride, 0, 0, h, w);
                }
                cin = cout, h = ho, w = wo;
            }
        }
        im->last_c = cin;
    }
    im->last_h = h, im->last_w = w;
    m->pool_dim = im->last_c;
    m->feat_dim = c->proj_dim > 0 ? c->proj_dim : m->pool_dim;
    im->proj_w = im->proj_b = -1;
    if (c->proj_dim > 0) {
        im->proj_w = add_tensor(&b, "proj.weight", 0, 2, c->proj_dim, m->pool_dim, 0, 0);
        im->proj_b = add_tensor(&b, "proj.bias", 0, 1, c->proj_dim, 0, 0, 0);
    }
    im->fc_w = add_tensor(&b, "fc.weight", 0, 2, c->num_classes, m->feat_dim, 0, 0);
    im->fc_b = add_tensor(&b, "fc.bias", 0, 1, c->num_classes, 0, 0, 0);
    if (b.oom)
        return err_set(ERR_INTERNAL, "out of memory");
    /* offsets: trainables first (table order), then buffers */
    size_t off = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].buffer) {
            m->tensors[i].offset = off;
            off += m->tensors[i].numel;
        }
    m->n_params = off;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].buffer) {
            m->tensors[i].offset = off;
            off += m->tensors[i].numel;
        }
    m->n_total = off;
    return 0;
}

static void *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p)
        memset(p, 0, bytes ? bytes : 64);
    return p;
}

/* model_new, and when r is given, the record must hold every tensor of the table (name,
 * <f4, shape) before the slabs are allocated: a record whose meta claims a far larger
 * network than its tensors is refused as such, not as an out-of-memory failure. */
static model *model_alloc(const model_config *cfg, const record *r)
{
    if (!cfg)
        return (void)err_set(ERR_USAGE, "no model config"), NULL;
    model_config c = *cfg;
    c.arch[sizeof c.arch - 1] = 0;
    if (c.in_channels == 0)
        c.in_channels = 3;
    if (is_cifar(c.arch)) {
        if (c.depth < 8 || (c.depth - 2) % 6 != 0)
            return (void)err_set(ERR_USAGE, "%s: depth %d is not 6n+2 (8, 14, 20, ...)", c.arch,
                                 c.depth),
                   NULL;
        if (c.input_size < 4)
            return (void)err_set(ERR_USAGE, "%s: input size %d < 4", c.arch, c.input_size), NULL;
    } else if (strcmp(c.arch, "resnet50") == 0) {
        if (c.depth != 50)
            return (void)err_set(ERR_USAGE, "resnet50: depth %d (must be 50)", c.depth), NULL;
        if (c.input_size < 32)
            return (void)err_set(ERR_USAGE, "resnet50: input size %d < 32", c.input_size), NULL;
    } else {
        return (void)err_set(ERR_USAGE,
                             "unknown architecture '%s' (resnet8, cifar-resnet, resnet50)", c.arch),
               NULL;
    }
    if (c.width < 1 || c.width > 4096 || c.num_classes < 1 || c.num_classes > 1000000 ||
        c.proj_dim < 0 || c.proj_dim > 1000000 || c.in_channels < 1 || c.in_channels > 64 ||
        c.input_size > 4096)
        return (void)err_set(ERR_USAGE,
                             "%s: bad config (width %d, classes %d, proj %d, channels %d, size %d)",
                             c.arch, c.width, c.num_classes, c.proj_dim, c.in_channels,
                             c.input_size),
               NULL;
    model *m = calloc(1, sizeof *m);
    if (!m || !(m->impl = calloc(1, sizeof *m->impl))) {
        free(m);
        return (void)err_set(ERR_INTERNAL, "out of memory"), NULL;
    }
    m->cfg = c;
    if (build(m) < 0) {
        model_free(m);
        return NULL;
    }
    for (int i = 0; r && i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        if (!rec_get(r, t->name, DT_F32, t->ndim, t->shape)) {
            err_wrap(ERR_FORMAT, "not a %s model with %d classes%s", c.arch, c.num_classes,
                     c.proj_dim ? " and a proj layer" : "");
            model_free(m);
            return NULL;
        }
    }
    m->params = alloc_floats(m->n_total);
    m->grads = alloc_floats(m->n_params);
    m->momentum = alloc_floats(m->n_params);
    if (!m->params || !m->grads || !m->momentum) {
        model_free(m);
        return (void)err_set(ERR_INTERNAL, "out of memory"), NULL;
    }
    return m;
}

model *model_new(const model_config *cfg) { return model_alloc(cfg, NULL); }

static void unit_free_acts(unit *u)
{
    free(u->z);
    free(u->a);
    free(u->mean);
    free(u->rstd);
    u->z = u->a = u->mean = u->rstd = NULL;
}

static void free_acts(model_impl *im)
{
    unit_free_acts(&im->stem);
    for (int i = 0; i < im->nb; i++) {
        for (int j = 0; j < im->blocks[i].nu; j++)
            unit_free_acts(&im->blocks[i].u[j]);
        unit_free_acts(&im->blocks[i].ds);
    }
    free(im->mp_out);
    free(im->mp_arg);
    free(im->x);
    free(im->pooled);
    free(im->feat);
    free(im->logits);
    free(im->probs);
    free(im->dpooled);
    free(im->dfeat);
    free(im->dlogits);
    for (int i = 0; i < 4; i++)
        free(im->g[i]);
    im->mp_out = NULL;
    im->mp_arg = NULL;
    im->x = im->pooled = im->feat = im->logits = im->probs = NULL;
    im->dpooled = im->dfeat = im->dlogits = NULL;
    memset(im->g, 0, sizeof im->g);
    im->cap_n = 0;
    im->g_cap = 0;
}

void model_free(model *m)
{
    if (!m)
        return;
    if (m->impl) {
        free_acts(m->impl);
        free(m->impl->blocks);
        free(m->impl->ws);
        free(m->impl);
    }
    free(m->tensors);
    free(m->params);
    free(m->grads);
    free(m->momentum);
    free(m);
}

const model_tensor *model_find(const model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

float *model_param(const model *m, const char *name)
{
    const model_tensor *t = model_find(m, name);
    return t ? m->params + t->offset : NULL;
}

float *model_grad(const model *m, const char *name)
{
    const model_tensor *t = model_find(m, name);
    return t && !t->buffer ? m->grads + t->offset : NULL;
}

static float *P(const model *m, int ti)
{
    return m->params + m->tensors[ti].offset;
}
static float *G(const model *m, int ti)
{
    return m->grads + m->tensors[ti].offset;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void model_init(model *m, uint64_t seed)
{
    rng r;
    rng_init(&r, seed, "init", 0, 0);
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->ndim == 4) { /* conv: N(0, sqrt(2 / (kh kw out))) */
            double sd = sqrt(2.0 / (double)(t->shape[2] * t->shape[3] * t->shape[0]));
            for (size_t j = 0; j < t->numel; j++)
                p[j] = (float)(sd * rng_normal(&r));
        } else if (t->ndim == 2) { /* linear weight: U(+-1/sqrt(fan_in)) */
            double bound = 1.0 / sqrt((double)t->shape[1]);
            for (size_t j = 0; j < t->numel; j++)
                p[j] = (float)((2.0 * rng_uniform(&r) - 1.0) * bound);
        } else if (!strcmp(t->name, "fc.bias") || !strcmp(t->name, "proj.bias")) {
            const model_tensor *wt = &m->tensors[i - 1]; /* the weight precedes its bias */
            double bound = 1.0 / sqrt((double)wt->shape[1]);
            for (size_t j = 0; j < t->numel; j++)
                p[j] = (float)((2.0 * rng_uniform(&r) - 1.0) * bound);
        } else if (ends_with(t->name, ".running_var") || ends_with(t->name, ".weight")) {
            for (size_t j = 0; j < t->numel; j++)
                p[j] = 1.0f; /* BN gamma, running_var */
        } else {
            memset(p, 0, sizeof(float) * t->numel); /* BN beta, running_mean */
        }
    }
    memset(m->grads, 0, sizeof(float) * m->n_params);
    memset(m->momentum, 0, sizeof(float) * m->n_params);
    m->num_batches_tracked = 0;
}

/* ------------------------------------------------------------------------------------ */
/* activations                                                                           */
/* ------------------------------------------------------------------------------------ */

static int unit_alloc(unit *u, int n)
{
    size_t sz = (size_t)n * u->co * u->hout * u->wout;
    u->z = alloc_floats(sz);
    u->a = alloc_floats(sz);
    u->mean = alloc_floats((size_t)u->co);
    u->rstd = alloc_floats((size_t)u->co);
    return u->z && u->a && u->mean && u->rstd ? 0 : -1;
}

static size_t unit_in_size(const unit *u, int n)
{
    return (size_t)n * u->ci * u->hin * u->win;
}
static size_t unit_out_size(const unit *u, int n)
{
    return (size_t)n * u->co * u->hout * u->wout;
}

static int ensure_ws(model *m, const nn_conv2d_dims *d)
{
    model_impl *im = m->impl;
    size_t need = nn_conv2d_ws_floats(d);
    if (need <= im->ws_cap)
        return 0;
    free(im->ws);
    im->ws = alloc_floats(need);
    im->ws_cap = im->ws ? need : 0;
    return im->ws ? 0 : err_set(ERR_INTERNAL, "out of memory (conv workspace)");
}

static int ensure_acts(model *m, int n)
{
    model_impl *im = m->impl;
    if (n <= im->cap_n)
        return 0;
    free_acts(im);
    int bad = unit_alloc(&im->stem, n);
    size_t gmax = unit_out_size(&im->stem, n);
    for (int i = 0; i < im->nb; i++) {
        block *bl = &im->blocks[i];
        for (int j = 0; j < bl->nu; j++) {
            bad |= unit_alloc(&bl->u[j], n);
            size_t s = unit_out_size(&bl->u[j], n);
            gmax = s > gmax ? s : gmax;
            s = unit_in_size(&bl->u[j], n);
            gmax = s > gmax ? s : gmax;
        }
        if (bl->has_ds)
            bad |= unit_alloc(&bl->ds, n);
    }
    if (im->has_maxpool) {
        size_t s = (size_t)n * im->stem.co * im->mp_h * im->mp_w;
        im->mp_out = alloc_floats(s);
        im->mp_arg = aligned_alloc(64, (s * sizeof(int32_t) + 63) / 64 * 64);
        bad |= !im->mp_out || !im->mp_arg;
    }
    const model_config *c = &m->cfg;
    im->x = alloc_floats((size_t)n * c->in_channels * c->input_size * c->input_size);
    im->pooled = alloc_floats((size_t)n * m->pool_dim);
    im->feat = alloc_floats((size_t)n * m->feat_dim);
    im->logits = alloc_floats((size_t)n * c->num_classes);
    im->probs = alloc_floats((size_t)n * c->num_classes);
    im->dlogits = alloc_floats((size_t)n * c->num_classes);
    im->dpooled = alloc_floats((size_t)n * m->pool_dim);
    im->dfeat = alloc_floats((size_t)n * m->feat_dim);
    bad |= !im->x || !im->pooled || !im->feat || !im->logits || !im->probs || !im->dlogits ||
           !im->dpooled || !im->dfeat;
    for (int i = 0; i < 4; i++) {
        im->g[i] = alloc_floats(gmax);
        bad |= !im->g[i];
    }
    im->g_cap = gmax;
    if (bad) {
        free_acts(im);
        return err_set(ERR_INTERNAL, "out of memory (activations for batch %d)", n);
    }
    im->cap_n = n;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* forward                                                                               */
/* ------------------------------------------------------------------------------------ */

static nn_conv2d_dims unit_dims(const unit *u, int n)
{
    return nn_conv2d_make(n, u->ci, u->hin, u->win, u->co, u->k, u->stride, u->pad);
}

static int unit_forward(model *m, unit *u, const float *x, int n, int train)
{
    nn_conv2d_dims d = unit_dims(u, n);
    if (ensure_ws(m, &d) < 0)
        return -1;
    u->x = x;
    nn_conv2d_forward(u->z, x, P(m, u->wi), NULL, &d, m->impl->ws);
    nn_batchnorm_forward(u->a, u->mean, u->rstd, u->z, P(m, u->gi), P(m, u->bi), P(m, u->rmi),
                         P(m, u->rvi), n, u->co, u->hout * u->wout, train, BN_MOMENTUM, BN_EPS,
                         u->relu);
    return 0;
}

static const float *forward_body(model *m, const float *x, int n, int train)
{
    model_impl *im = m->impl;
    const model_config *c = &m->cfg;
    if (n < 1)
        return (void)err_set(ERR_USAGE, "model_forward: batch size %d", n), NULL;
    if (ensure_acts(m, n) < 0)
        return NULL;
    im->fwd = 0;
    memcpy(im->x, x, sizeof(float) * n * c->in_channels * c->input_size * c->input_size);
    if (unit_forward(m, &im->stem, im->x, n, train) < 0)
        return NULL;
    const float *h = im->stem.a;
    if (im->has_maxpool) {
        nn_maxpool_forward(im->mp_out, im->mp_arg, h, n, im->stem.co, im->stem.hout, im->stem.wout,
                           3, 2, 1, im->mp_h, im->mp_w);
        h = im->mp_out;
    }
    for (int i = 0; i < im->nb; i++) {
        block *bl = &im->blocks[i];
        bl->x = h;
        const float *cur = h;
        for (int j = 0; j < bl->nu; j++) {
            if (unit_forward(m, &bl->u[j], cur, n, train) < 0)
                return NULL;
            cur = bl->u[j].a;
        }
        const float *sc = h;
        if (bl->has_ds) {
            if (unit_forward(m, &bl->ds, h, n, train) < 0)
                return NULL;
            sc = bl->ds.a;
        }
        unit *last = &bl->u[bl->nu - 1];
        bl->y = last->a;
        nn_add_forward(bl->y, last->a, sc, unit_out_size(last, n), 1);
        h = bl->y;
    }
    nn_avgpool_forward(im->pooled, h, n, im->last_c, im->last_h * im->last_w);
    if (im->proj_w >= 0)
        nn_linear_forward(im->feat, im->pooled, P(m, im->proj_w), P(m, im->proj_b), n, m->pool_dim,
                          m->feat_dim);
    else
        memcpy(im->feat, im->pooled, sizeof(float) * n * m->pool_dim);
    if (train)
        m->num_batches_tracked++;
    im->n = n;
    im->train = train;
    im->fwd = 1;
    return im->feat;
}

const float *model_forward_features(model *m, const float *x, int n, int train)
{
    return forward_body(m, x, n, train);
}

const float *model_forward(model *m, const float *x, int n, int train)
{
    model_impl *im = m->impl;
    if (!forward_body(m, x, n, train))
        return NULL;
    nn_linear_forward(im->logits, im->feat, P(m, im->fc_w), P(m, im->fc_b), n, m->feat_dim,
                      m->cfg.num_classes);
    im->fwd = 2;
    return im->logits;
}

const float *model_features(const model *m)
{
    return m->impl->feat;
}
const float *model_pooled(const model *m)
{
    return m->impl->pooled;
}

/* ------------------------------------------------------------------------------------ */
/* backward                                                                              */
/* ------------------------------------------------------------------------------------ */

/* dout: gradient wrt u->a (if u->relu, wrt the post-ReLU output).  Writes dx (or skips it
 * when dx is NULL), using tmp for the BN input gradient. */
static int unit_backward(model *m, unit *u, float *dx, const float *dout, float *tmp, int n)
{
    model_impl *im = m->impl;
    nn_batchnorm_backward(tmp, G(m, u->gi), G(m, u->bi), dout, u->z, u->relu ? u->a : NULL, u->mean,
                          u->rstd, P(m, u->gi), n, u->co, u->hout * u->wout, im->train, u->relu);
    nn_conv2d_dims d = unit_dims(u, n);
    if (ensure_ws(m, &d) < 0)
        return -1;
    nn_conv2d_backward(dx, G(m, u->wi), NULL, tmp, u->x, P(m, u->wi), &d, im->ws);
    return 0;
}

static int backward_body(model *m, const float *dfeat)
{
    model_impl *im = m->impl;
    const int n = im->n;
    if (im->proj_w >= 0)
        nn_linear_backward(im->dpooled, G(m, im->proj_w), G(m, im->proj_b), dfeat, im->pooled,
                           P(m, im->proj_w), n, m->pool_dim, m->feat_dim);
    else
        memcpy(im->dpooled, dfeat, sizeof(float) * n * m->pool_dim);
    float *A = im->g[0], *B = im->g[1], *C = im->g[2], *D = im->g[3];
    nn_avgpool_backward(A, im->dpooled, n, im->last_c, im->last_h * im->last_w);
    for (int i = im->nb - 1; i >= 0; i--) {
        block *bl = &im->blocks[i];
        unit *last = &bl->u[bl->nu - 1];
        size_t ny = unit_out_size(last, n);
        nn_relu_backward(A, A, bl->y, ny); /* A: d(a_last + shortcut) */
        /* main path: A -> ... -> C (gradient wrt the block input) */
        const float *cur = A;
        for (int j = bl->nu - 1; j >= 0; j--) {
            if (unit_backward(m, &bl->u[j], C, cur, B, n) < 0)
                return -1;
            cur = C;
        }
        size_t nx = unit_in_size(&bl->u[0], n);
        if (bl->has_ds) {
            if (unit_backward(m, &bl->ds, D, A, B, n) < 0)
                return -1;
            for (size_t k = 0; k < nx; k++)
                C[k] += D[k];
        } else {
            for (size_t k = 0; k < nx; k++)
                C[k] += A[k];
        }
        float *t = A;
        A = C;
        C = t;
    }
    if (im->has_maxpool) {
        nn_maxpool_backward(C, A, im->mp_arg, n, im->stem.co, im->stem.hout, im->stem.wout,
                            im->mp_h, im->mp_w);
        float *t = A;
        A = C;
        C = t;
    }
    return unit_backward(m, &im->stem, NULL, A, B, n);
}

int model_backward(model *m, const float *dlogits)
{
    model_impl *im = m->impl;
    if (im->fwd != 2)
        return err_set(ERR_USAGE, "model_backward: no model_forward before it");
    nn_linear_backward(im->dfeat, G(m, im->fc_w), G(m, im->fc_b), dlogits, im->feat, P(m, im->fc_w),
                       im->n, m->feat_dim, m->cfg.num_classes);
    return backward_body(m, im->dfeat);
}

int model_backward_features(model *m, const float *dfeat)
{
    if (m->impl->fwd < 1)
        return err_set(ERR_USAGE, "model_backward_features: no forward before it");
    return backward_body(m, dfeat);
}

void model_zero_grad(model *m)
{
    memset(m->grads, 0, sizeof(float) * m->n_params);
}

void model_sgd_step(model *m, float lr, float momentum, float wd)
{
    nn_sgd_step(m->params, momentum != 0.0f ? m->momentum : NULL, m->grads, m->n_params, lr,
                momentum, wd);
}

int model_train_step_grads(model *m, const float *x, const int32_t *labels, const float *teacher,
                           int n, float kd_t, float kd_alpha, float *loss)
{
    const float *logits = model_forward(m, x, n, 1);
    if (!logits)
        return err_last() ? err_last() : ERR_INTERNAL;
    model_impl *im = m->impl;
    const int c = m->cfg.num_classes;
    float l = nn_cross_entropy_forward(im->probs, logits, labels, n, c);
    memset(im->dlogits, 0, sizeof(float) * n * c);
    nn_cross_entropy_backward(im->dlogits, im->probs, labels, n, c, 1.0f);
    if (teacher) {
        l += nn_kd_forward(logits, teacher, n, c, kd_t, kd_alpha);
        nn_kd_backward(im->dlogits, logits, teacher, n, c, kd_t, kd_alpha);
    }
    if (loss)
        *loss = l;
    return model_backward(m, im->dlogits);
}

/* ------------------------------------------------------------------------------------ */
/* records                                                                               */
/* ------------------------------------------------------------------------------------ */

/* "layer1.0.bn1.running_var" -> "layer1.0.bn1.num_batches_tracked" in out */
static void nbt_name(char *out, size_t cap, const char *running_var)
{
    size_t k = strlen(running_var) - strlen("running_var");
    snprintf(out, cap, "%.*snum_batches_tracked", (int)k, running_var);
}

int model_to_record(const model *m, record *r, int mode)
{
    int rc;
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        if ((rc = rec_add(r, t->name, DT_F32, t->ndim, t->shape, m->params + t->offset,
                          mode == REC_BORROW ? REC_BORROW : REC_COPY)) < 0)
            return rc;
        if (ends_with(t->name, ".running_var")) {
            char name[MODEL_NAME_MAX + 32];
            nbt_name(name, sizeof name, t->name);
            static const int64_t scalar[1] = {0}; /* ndim 0; non-NULL for rec_add's memcpy */
            int64_t *v = rec_add_new(r, name, DT_I64, 0, scalar);
            if (!v)
                return err_last() ? err_last() : err_set(ERR_INTERNAL, "out of memory");
            *v = m->num_batches_tracked;
        }
    }
    const model_config *c = &m->cfg;
    const norm_stats *ns = norm_for_arch(c->arch); /* the one table: norm.h */
    const double *mean = ns->mean, *sd = ns->std;
    if ((rc = rec_set_str(r, "arch", c->arch)) < 0 ||
        (rc = rec_set_int(r, "depth", c->depth)) < 0 ||
        (rc = rec_set_int(r, "width", c->width)) < 0 ||
        (rc = rec_set_int(r, "num_classes", c->num_classes)) < 0 ||
        (rc = rec_set_int(r, "proj_dim", c->proj_dim)) < 0 ||
        (rc = rec_set_int(r, "feat_dim", m->feat_dim)) < 0 ||
        (rc = rec_set_int(r, "input_size", c->input_size)) < 0 ||
        (rc = rec_set_int(r, "in_channels", c->in_channels)) < 0)
        return rc;
    if (c->in_channels == 3 && ((rc = rec_set_floats(r, "mean", mean, 3)) < 0 ||
                                (rc = rec_set_floats(r, "std", sd, 3)) < 0))
        return rc;
    return 0;
}

/* "model record (src, record i)" or "model record" for a record built in memory */
static const char *where(const record *r, char *buf, size_t cap)
{
    if (r->src[0])
        snprintf(buf, cap, "model record (%s, record %ld)", r->src, r->index);
    else
        snprintf(buf, cap, "model record");
    return buf;
}

/* "[i,j,k]": flat index k of a tensor of shape t->shape, unravelled (C order) */
static const char *unravel(const tensor *t, int64_t k, char *buf, size_t cap)
{
    int64_t idx[TENSOR_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? k % t->shape[d] : 0;
        k = t->shape[d] ? k / t->shape[d] : 0;
    }
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? "," : "", (long long)idx[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

/* meta key of r as an int >= lo (and <= hi), when present */
static int meta_int_in(const record *r, const char *key, int64_t lo, int64_t hi, const char *why)
{
    char wb[320];
    int64_t v;
    if (!mv_map_get(r->meta, key))
        return 0;
    if (rec_get_int(r, key, &v) < 0)
        return ERR_FORMAT;
    if (v < lo || v > hi)
        return err_set(ERR_FORMAT, "%s, field meta.%s: %lld (%s)", where(r, wb, sizeof wb), key,
                       (long long)v, why);
    return 0;
}

int model_check_record(const record *r)
{
    char wb[320], ib[160];
    const char *arch;
    model_config def;
    if (rec_get_str(r, "arch", &arch) < 0)
        return err_wrap(ERR_FORMAT, "model record");
    if (model_config_default(&def, arch) < 0)
        return err_set(ERR_FORMAT, "%s, field meta.arch: %s", where(r, wb, sizeof wb), err_msg());
    int rc;
    if ((rc = meta_int_in(r, "num_classes", 1, 1000000, "a model has 1 to 1000000 classes")) ||
        (rc = meta_int_in(r, "input_size", 1, 4096, "1 to 4096 pixels")) ||
        (rc = meta_int_in(r, "in_channels", 1, 64, "1 to 64 channels")) ||
        (rc = meta_int_in(r, "depth", 1, 10000, "at least 1")) ||
        (rc = meta_int_in(r, "width", 1, 4096, "1 to 4096")) ||
        (rc = meta_int_in(r, "proj_dim", 0, 1000000, "0: none")) ||
        (rc = meta_int_in(r, "round", 0, MODEL_ROUND_MAX,
                          "a round is 0 or more, and its next round must fit 2^31 - 1")) ||
        (rc = meta_int_in(r, "num_samples", 0, INT64_MAX, "a sample count is 0 or more")) ||
        (rc = meta_int_in(r, "client", -1, INT32_MAX, "a client id is 0 or more; -1: none")))
        return rc;
    const mval *cl = mv_map_get(r->meta, "clients");
    if (cl) {
        if (cl->type != MV_ARRAY)
            return err_set(ERR_FORMAT, "%s, field meta.clients: not an array", where(r, wb, sizeof wb));
        for (size_t i = 0; i < cl->u.arr.n; i++)
            if (cl->u.arr.items[i].type != MV_INT || cl->u.arr.items[i].u.i < 0)
                return err_set(ERR_FORMAT, "%s, field meta.clients[%zu]: not a client id (an int >= 0)",
                               where(r, wb, sizeof wb), i);
    }
    /* the input normalisation: finite, std > 0 (a zero std divides every pixel by 0) */
    int64_t chans = 3;
    rec_opt_int(r, "in_channels", &chans);
    for (int k = 0; k < 2; k++) {
        const char *key = k ? "std" : "mean";
        const mval *v = mv_map_get(r->meta, key);
        if (!v)
            continue;
        if (v->type != MV_ARRAY || (int64_t)v->u.arr.n != chans)
            return err_set(ERR_FORMAT, "%s, field meta.%s: expected %lld numbers (one per input channel)",
                           where(r, wb, sizeof wb), key, (long long)chans);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            const mval *e = &v->u.arr.items[i];
            double x = e->type == MV_FLOAT ? e->u.f : e->type == MV_INT ? (double)e->u.i : NAN;
            if (!isfinite((float)x) || (k && !(x > 0)))
                return err_set(ERR_FORMAT, "%s, field meta.%s[%zu]: %s (%s)", where(r, wb, sizeof wb),
                               key, i, e->type == MV_FLOAT || e->type == MV_INT ? "bad value" : "not a number",
                               k ? "a std is a finite number > 0" : "a mean is a finite number");
        }
    }
    int64_t classes = -1;
    rec_opt_int(r, "num_classes", &classes);
    for (int i = 0; i < r->n_tensors; i++) {
        const tensor *t = &r->tensors[i];
        if (classes > 0 && (!strcmp(t->name, "fc.weight") || !strcmp(t->name, "fc.bias")) &&
            (t->ndim < 1 || t->shape[0] != classes))
            return err_set(ERR_FORMAT, "%s, field tensors.%s: %lld rows, but meta.num_classes is %lld",
                           where(r, wb, sizeof wb), t->name, t->ndim ? (long long)t->shape[0] : 0LL,
                           (long long)classes);
        if (ends_with(t->name, ".num_batches_tracked") && t->ndim == 0 &&
            (t->dtype == DT_I64 || t->dtype == DT_I32)) {
            int64_t v = t->dtype == DT_I64 ? *(const int64_t *)t->data : *(const int32_t *)t->data;
            if (v < 0)
                return err_set(ERR_FORMAT, "%s, field tensors.%s: %lld (a count of batches is 0 or more)",
                               where(r, wb, sizeof wb), t->name, (long long)v);
        }
        if (t->dtype != DT_F32)
            continue;
        const float *p = t->data;
        int64_t n = tensor_numel(t), bad = first_nonfinite(p, n);
        if (bad >= 0)
            return err_set(ERR_FORMAT, "%s, field tensors.%s%s: %g (every weight must be finite)",
                           where(r, wb, sizeof wb), t->name, unravel(t, bad, ib, sizeof ib), p[bad]);
        if (ends_with(t->name, ".running_var"))
            for (int64_t j = 0; j < n; j++)
                if (p[j] < 0)
                    return err_set(ERR_FORMAT, "%s, field tensors.%s%s: %g (a variance is 0 or more)",
                                   where(r, wb, sizeof wb), t->name, unravel(t, j, ib, sizeof ib), p[j]);
    }
    return 0;
}

int model_check_meta(const model *m, const record *r)
{
    char wb[320];
    const model_config *c = &m->cfg;
    const char *arch = NULL;
    if (rec_opt_str(r, "arch", &arch) < 0)
        return ERR_FORMAT;
    if (arch && is_cifar(arch) != is_cifar(c->arch))
        return err_set(ERR_FORMAT, "%s: architecture '%s', expected '%s'", where(r, wb, sizeof wb),
                       arch, c->arch);
    const char *keys[] = {"depth", "width", "num_classes", "proj_dim"};
    const int want[] = {c->depth, c->width, c->num_classes, c->proj_dim};
    for (int k = 0; k < 4; k++) {
        int64_t v;
        if (!mv_map_get(r->meta, keys[k]))
            continue;
        if (rec_get_int(r, keys[k], &v) < 0)
            return ERR_FORMAT;
        if (v != want[k])
            return err_set(ERR_FORMAT, "%s, field meta.%s: %lld, but the %s model has %d (another "
                           "architecture?)", where(r, wb, sizeof wb), keys[k], (long long)v, c->arch,
                           want[k]);
    }
    return 0;
}

int model_load_record(model *m, const record *r)
{
    char wb[320];
    const model_config *c = &m->cfg;
    if (model_check_meta(m, r) < 0)
        return ERR_FORMAT;
    /* every tensor of the model must be there with the right dtype and shape */
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        if (!rec_get(r, t->name, DT_F32, t->ndim, t->shape))
            return err_wrap(ERR_FORMAT, "not a %s model with %d classes%s", c->arch, c->num_classes,
                            c->proj_dim ? " and a proj layer" : "");
    }
    /* and nothing else */
    int64_t nbt = -1;
    for (int i = 0; i < r->n_tensors; i++) {
        const tensor *t = &r->tensors[i];
        if (model_find(m, t->name))
            continue;
        if (ends_with(t->name, ".num_batches_tracked")) {
            if (t->ndim != 0 || (t->dtype != DT_I64 && t->dtype != DT_I32))
                return err_set(ERR_FORMAT, "%s: tensor '%s': expected an <i8 scalar",
                               where(r, wb, sizeof wb), t->name);
            if (nbt < 0)
                nbt = t->dtype == DT_I64 ? *(const int64_t *)t->data : *(const int32_t *)t->data;
            continue;
        }
        return err_set(ERR_FORMAT,
                       "%s: tensor '%s' is not part of a %s model (depth %d, width "
                       "%d%s)",
                       where(r, wb, sizeof wb), t->name, c->arch, c->depth, c->width,
                       c->proj_dim ? ", proj" : "");
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        const tensor *rt = rec_find(r, t->name);
        memcpy(m->params + t->offset, rt->data, sizeof(float) * t->numel);
    }
    if (nbt >= 0)
        m->num_batches_tracked = nbt;
    return 0;
}

model *model_from_record(const record *r)
{
    char wb[320];
    model_config c;
    const char *arch;
    int64_t depth, width, classes, proj = 0, size = 0, chans = 3;
    if (model_check_record(r) < 0)
        return NULL;
    if (rec_get_str(r, "arch", &arch) < 0 || model_config_default(&c, arch) < 0)
        return (void)err_wrap(ERR_FORMAT, "model record"), NULL;
    if (rec_get_int(r, "depth", &depth) < 0 || rec_get_int(r, "width", &width) < 0 ||
        rec_get_int(r, "num_classes", &classes) < 0 || rec_opt_int(r, "proj_dim", &proj) < 0 ||
        rec_opt_int(r, "in_channels", &chans) < 0)
        return NULL;
    size = c.input_size;
    if (rec_opt_int(r, "input_size", &size) < 0)
        return NULL;
    if (depth < 0 || depth > 10000 || width < 1 || width > 4096 || classes < 1 ||
        classes > 1000000 || proj < 0 || proj > 1000000 || size < 1 || size > 4096 || chans < 1 ||
        chans > 64)
        return (void)err_set(ERR_FORMAT, "%s: meta out of range", where(r, wb, sizeof wb)), NULL;
    c.depth = (int)depth, c.width = (int)width, c.num_classes = (int)classes;
    c.proj_dim = (int)proj, c.input_size = (int)size, c.in_channels = (int)chans;
    model *m = model_alloc(&c, r);
    if (!m) {
        if (err_last() != ERR_FORMAT)
            err_wrap(ERR_FORMAT, "%s", where(r, wb, sizeof wb));
        return NULL;
    }
    if (model_load_record(m, r) < 0) {
        model_free(m);
        return NULL;
    }
    return m;
}
