/* clip-embed - CLIP text and image embeddings for fedsm (docs/algorithms.md 4.2 and 5.2, DESIGN 5):
 * class text embeddings from prompt templates (averaged, normalised), the class relevance
 * matrix S (cosine of the bare-name embeddings), and for each shard a `teacher` record
 * (normalised image embeddings, teacher logits exp(logit_scale) * v.t, keyed by `index`).
 * Also: --tokenize (ids of stdin lines) and --import (class embeddings made elsewhere).
 * Cached: the output's meta.inputs (lib/io/inputs.h) holds the digests of the files read
 * (weights, config, vocabulary, import, WordNet database and map, shards) and of the options
 * (classes, templates, precision, tool version tag); a rerun with equal inputs does no work.
 * Not here: the model (lib/models/clip.c), the tokenizer (lib/models/bpe.c), training on the logits. */
#include "bpe.h"
#include "clip.h"
#include "endpoint.h"
#include "err.h"
#include "image.h"
#include "inputs.h"
#include "relevance.h"
#include "safetensors.h"
#include "pool.h"
#include "tool.h"
#include "utf8.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SHARDS 1024
#define VOCAB_NAME "bpe_simple_vocab_16e6.txt.gz"

static const char *const default_prompts[] = {"a photo of a {}"};
static const char *const default_rel_prompts[] = {"{}"};

typedef struct {
    char **v;
    size_t n;
} strlist;

/* ---- failure path: no partial output ---- */

static rec_writer *g_out;

_Noreturn static void fail_code(int code)
{
    if (g_out) rec_writer_close(g_out, false);
    g_out = NULL;
    tool_fail(code);
}

_Noreturn static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn static void die(int code, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    err_set(code, "%s", buf);
    fail_code(code);
}

_Noreturn static void usage(void)
{
    printf("usage: clip-embed --weights FILE [--classes names.txt] [--prompts T.txt]\n"
           "                  [--shard client-NN.mpk.zst ...] -o out.mpk.zst\n"
           "       clip-embed --wordnet [--wordnet-map FILE] --classes names.txt -o rel.mpk.zst\n"
           "       clip-embed --tokenize --vocab bpe_simple_vocab_16e6.txt.gz < lines.txt\n"
           "CLIP (Hugging Face CLIPModel weights: ViT-B/32, B/16, L/14, ...) in C: writes one\n"
           "`embeddings` record (tensors text [C,E] from --prompts, relevance_text [C,E] from\n"
           "--relevance-prompts, relevance [C,C] = their cosine; FedSM replaces the diagonal\n"
           "itself), then one `teacher` record per shard record (embeddings [N,E] normalised,\n"
           "logits [N,C] = exp(logit_scale) * v.t, index [N] from the shard).\n\n"
           "  -w, --weights FILE        model.safetensors or pytorch_model.bin (a torch.save zip);\n"
           "                            config.json beside it sets head counts\n"
           "      --config FILE         config.json elsewhere\n"
           "      --vocab FILE          CLIP BPE merges, gzip (default: " VOCAB_NAME " beside the weights)\n"
           "  -c, --classes FILE        class names, one per line (default: the shards' meta classes)\n"
           "  -p, --prompts FILE        templates, one per line, each with one {} (the class name), # comments\n"
           "                            (default: \"a photo of a {}\", as data/prompts/default.txt)\n"
           "      --relevance-prompts F templates for S (default: \"{}\", data/prompts/bare.txt)\n"
           "  -s, --shard STREAM        a shard stream (repeatable); one teacher record per shard\n"
           "      --import FILE         class embeddings [C,E] made elsewhere (.npy f4/f8, a torch.save'd\n"
           "                            tensor .pt, or a record: tensor `text`, or its only 2-D <f4\n"
           "                            tensor); used for text and S\n"
           "      --wordnet             S from WordNet instead (no weights): Wu-Palmer similarity of the\n"
           "                            classes' first noun senses, as NLTK's wup_similarity; writes only\n"
           "                            `relevance` (meta relevance_source \"wordnet\", synsets)\n"
           "      --wordnet-map FILE    'class-name synset' lines overriding a class's sense (word.n.NN or a\n"
           "                            sense key; e.g. data/wordnet-cifar100.map)\n"
           "      --wordnet-dir DIR     the WordNet 3.0 database (default: $WNSEARCHDIR or /usr/share/wordnet)\n"
           "      --tokenize            print the token ids (sot..eot) of each stdin line, then exit\n"
           "  -b, --batch N             images per forward pass (default 32)\n"
           "  -f, --force               recompute even when the output is up to date\n"
           "  -o, --out STREAM          output (file, '-', or ZeroMQ endpoint)\n"
           "      --threads N           compute threads (default: FEDSM_THREADS or 1)\n"
           "      --bf16                the encoders' matrix products in bf16 (with AVX512-BF16 about\n"
           "                            1.6x faster end to end, 1.8-2x in the encoders; embeddings\n"
           "                            within about 3e-3 relative of fp32)\n"
           "      --seed N              accepted for uniformity; clip-embed uses no randomness\n"
           "  -q, --quiet / -v, --verbose / -h, --help / -V, --version\n\n"
           "example: clip-embed -w data/clip/model.safetensors -s client-00.mpk.zst -o teach.mpk.zst\n"
           "exit: 0 ok, 1 runtime, 2 usage, 3 bad input format, 4 I/O, 5 internal\n");
    exit(0);
}

/* ---- small helpers ---- */

static void list_push(strlist *l, const char *s)
{
    char **nv = realloc(l->v, (l->n + 1) * sizeof *nv);
    if (!nv || !(nv[l->n] = strdup(s))) die(ERR_INTERNAL, "out of memory");
    l->v = nv;
    l->n++;
}

static void list_free(strlist *l)
{
    for (size_t k = 0; k < l->n; k++) free(l->v[k]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Non-empty lines, trimmed; '#' lines are comments when comments is set (a template file,
 * whose every line must then hold "{}" exactly once).  Every line must be UTF-8 without NUL.
 * Without comments (a class list) a blank line is an error: skipping it would move every
 * later class to another label. */
static void read_lines(const char *path, strlist *out, bool comments)
{
    FILE *f = fopen(path, "r");
    if (!f) die(ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
        die(ERR_IO, "cannot read %s: it is a directory", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = 0;
        size_t ok = utf8_valid_prefix((const unsigned char *)line, (size_t)n);
        if (ok < (size_t)n || memchr(line, 0, (size_t)n))
            die(ERR_FORMAT, "%s line %zu: not UTF-8 text (byte %zu)", path, lineno, ok + 1);
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s && !comments)
            die(ERR_FORMAT, "%s line %zu: blank line in a class list (one name per line; a gap would shift every later label)",
                path, lineno);
        if (!*s || (comments && *s == '#')) continue;
        const char *ph = strstr(s, "{}");
        if (comments && (!ph || strstr(ph + 2, "{}"))) /* a template: CLIP's str.format(name) */
            die(ERR_FORMAT, "%s line %zu: a prompt template holds the class name's place '{}' exactly once (%s)",
                path, lineno, ph ? "twice here" : "none here: every class would get the same text");
        list_push(out, s);
    }
    free(line);
    fclose(f);
    if (!out->n) die(ERR_FORMAT, "%s: no entries", path);
}

/* One input file into meta.inputs: its digest in records, its role appended to *roles (the
 * "records" option, so that one optional file absent and another present never give the
 * same list). */
static void add_record(inputs *in, char *roles, size_t cap, const char *role, const char *path)
{
    inputs_add_file(in, path);
    size_t n = strlen(roles);
    snprintf(roles + n, cap - n, "%s%s", n ? "," : "", role);
}

/* The cache check: true when out_path already holds an `embeddings` record made from equal
 * inputs (meta.inputs of e). */
static bool up_to_date(const char *out_path, const record *e)
{
    rec_reader *rd = ep_open_reader(out_path, NULL);
    record *r = NULL;
    bool same = rd && rec_read(rd, &r) == 1 && !strcmp(r->kind, "embeddings") &&
                inputs_equal(mv_map_get(r->meta, "inputs"), mv_map_get(e->meta, "inputs"));
    rec_free(r);
    rec_reader_close(rd);
    err_clear();
    if (same) tool_log(1, "%s is up to date (same meta.inputs); nothing to do (--force recomputes)", out_path);
    return same;
}

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static char *beside(const char *path, const char *name)
{
    const char *sl = strrchr(path, '/');
    size_t dl = sl ? (size_t)(sl - path + 1) : 0;
    char *o = malloc(dl + strlen(name) + 1);
    if (!o) die(ERR_INTERNAL, "out of memory");
    memcpy(o, path, dl);
    strcpy(o + dl, name);
    return o;
}

/* ---- text side ---- */

/* Class embeddings for each class: mean over templates of normalised features, normalised. */
static float *embed_classes(const clip_model *m, const bpe *tok, const strlist *classes, const strlist *tmpl)
{
    size_t C = classes->n, T = tmpl->n, E = (size_t)m->embed_dim, B = C * T;
    int32_t *ids = malloc(B * BPE_CONTEXT * sizeof *ids);
    float *feat = malloc(B * E * sizeof *feat), *out = calloc(C * E, sizeof *out);
    if (!ids || !feat || !out) die(ERR_INTERNAL, "out of memory");
    for (size_t c = 0; c < C; c++)
        for (size_t t = 0; t < T; t++) {
            const char *tp = tmpl->v[t], *ph = strstr(tp, "{}");
            char buf[2048];
            if (ph) snprintf(buf, sizeof buf, "%.*s%s%s", (int)(ph - tp), tp, classes->v[c], ph + 2);
            else snprintf(buf, sizeof buf, "%s", tp);
            int rc = bpe_tokenize(tok, buf, ids + (c * T + t) * BPE_CONTEXT, BPE_CONTEXT);
            if (rc < 0) fail_code(rc);
        }
    for (size_t b0 = 0; b0 < B; b0 += 64) {
        int nb = (int)(B - b0 < 64 ? B - b0 : 64);
        int rc = clip_encode_text(m, ids + b0 * BPE_CONTEXT, nb, BPE_CONTEXT, feat + b0 * E);
        if (rc) {
            err_wrap(rc, "text encoder");
            fail_code(rc);
        }
    }
    clip_l2_normalize(feat, (int)B, (int)E);
    for (size_t c = 0; c < C; c++)
        for (size_t t = 0; t < T; t++)
            for (size_t k = 0; k < E; k++) out[c * E + k] += feat[(c * T + t) * E + k] / (float)T;
    clip_l2_normalize(out, (int)C, (int)E);
    free(ids);
    free(feat);
    return out;
}

/* .npy (f4/f8, 2-D, C order) or a record stream: returns owned [C, E] floats. */
static float *import_embeddings(const char *path, size_t C, int *E_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(ERR_IO, "cannot open %s: %s", path, strerror(errno));
    unsigned char magic[10];
    size_t got = fread(magic, 1, 10, f);
    float *out = NULL;
    int64_t rows = 0, cols = 0;
    if (got == 10 && !memcmp(magic, "\x93NUMPY", 6)) {
        size_t hl = magic[6] == 1 ? (size_t)(magic[8] | magic[9] << 8) : 0;
        if (magic[6] != 1) {
            unsigned char b[2];
            if (fread(b, 1, 2, f) != 2) die(ERR_FORMAT, "%s: truncated .npy header", path);
            hl = (size_t)(magic[8] | magic[9] << 8 | b[0] << 16 | b[1] << 24);
        }
        if (hl > 65536) die(ERR_FORMAT, "%s: .npy header too long", path);
        char *h = calloc(1, hl + 1);
        if (!h || fread(h, 1, hl, f) != hl) die(ERR_FORMAT, "%s: truncated .npy header", path);
        for (size_t k = strlen(h); k > 0 && (h[k - 1] == ' ' || h[k - 1] == '\n'); k--) h[k - 1] = 0; /* padding */
        bool f8 = strstr(h, "'<f8'") != NULL, f4 = strstr(h, "'<f4'") != NULL;
        char close = 0;
        const char *sh = strstr(h, "'shape': (");
        if ((!f4 && !f8) || strstr(h, "'fortran_order': True") || !sh ||
            sscanf(sh, "'shape': (%ld, %ld%c", &rows, &cols, &close) != 3 || close != ')')
            die(ERR_FORMAT, "%s: expected a 2-D C-order <f4 or <f8 array (header %s)", path, h);
        free(h);
        if (rows < 1 || cols < 1 || rows > (1 << 20) || cols > (1 << 16))
            die(ERR_FORMAT, "%s: implausible shape (%ld, %ld)", path, (long)rows, (long)cols);
        size_t n = (size_t)(rows * cols);
        out = malloc(n * sizeof *out);
        if (!out) die(ERR_INTERNAL, "out of memory");
        for (size_t k = 0; k < n; k++) {
            if (f8) {
                double d;
                if (fread(&d, 8, 1, f) != 1) die(ERR_FORMAT, "%s: truncated .npy data", path);
                out[k] = (float)d;
            } else if (fread(&out[k], 4, 1, f) != 1) die(ERR_FORMAT, "%s: truncated .npy data", path);
        }
        if (fgetc(f) != EOF) die(ERR_FORMAT, "%s: bytes after the (%ld, %ld) array's data", path, (long)rows, (long)cols);
        fclose(f);
    } else if (got >= 4 && !memcmp(magic, "PK\3\4", 4)) { /* torch.save zip: a tensor or a dict of them */
        fclose(f);
        st_file *sf = st_open(path);
        if (!sf) fail_code(err_last());
        const st_tensor *t = st_count(sf) == 1 ? st_at(sf, 0) : st_find(sf, "text");
        for (int k = 0; !t && k < st_count(sf); k++)
            if (st_at(sf, k)->ndim == 2) {
                if (t) die(ERR_FORMAT, "%s: several 2-D tensors and none called `text`; save the [C,E] tensor alone", path);
                t = st_at(sf, k);
            }
        if (!t || t->ndim != 2 || (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16))
            die(ERR_FORMAT, "%s: expected one 2-D float tensor [C,E] of class embeddings%s%s (%d dims, %s)", path,
                t ? ", got " : "", t ? t->name : "", t ? t->ndim : 0, t ? st_dtype_name(t->dtype) : "none");
        rows = t->shape[0];
        cols = t->shape[1];
        if (rows < 1 || cols < 1 || rows > (1 << 20) || cols > (1 << 16))
            die(ERR_FORMAT, "%s: implausible shape (%ld, %ld)", path, (long)rows, (long)cols);
        out = malloc((size_t)(rows * cols) * sizeof *out);
        if (!out) die(ERR_INTERNAL, "out of memory");
        if (st_to_f32(sf, t, out, rows * cols)) fail_code(err_last());
        st_close(sf);
    } else {
        fclose(f);
        record *r = NULL;
        rec_reader *rd = ep_open_reader(path, NULL);
        if (!rd) fail_code(err_last());
        int rc = rec_read(rd, &r);
        if (rc < 0) fail_code(rc);
        if (rc == 0) die(ERR_FORMAT, "%s: no records", path);
        if ((rc = rec_read_rest(rd)) < 0) fail_code(rc); /* the whole stream is checked */
        rec_reader_close(rd);
        const tensor *t = rec_find(r, "text");
        int n2 = 0; /* without `text`: the record's only 2-D <f4 tensor, never a guess */
        for (int k = 0; !rec_find(r, "text") && k < r->n_tensors; k++)
            if (r->tensors[k].ndim == 2 && r->tensors[k].dtype == DT_F32) t = &r->tensors[k], n2++;
        if (n2 > 1)
            die(ERR_FORMAT, "%s: record 0: no tensor `text` and %d 2-D <f4 tensors: which are the class "
                "embeddings?", path, n2);
        if (!t || t->dtype != DT_F32 || t->ndim != 2)
            die(ERR_FORMAT, "%s: record 0: no tensor `text` (or other 2-D <f4 tensor) of class embeddings", path);
        rows = t->shape[0];
        cols = t->shape[1];
        out = malloc(t->nbytes ? t->nbytes : 1);
        if (!out) die(ERR_INTERNAL, "out of memory");
        memcpy(out, t->data, t->nbytes);
        rec_free(r);
    }
    if ((size_t)rows != C)
        die(ERR_FORMAT, "%s: %ld rows of class embeddings for %zu classes", path, (long)rows, C);
    for (int64_t k = 0; k < rows * cols; k++)
        if (!isfinite(out[k]))
            die(ERR_FORMAT, "%s: class embedding [%ld, %ld] is %s", path, (long)(k / cols), (long)(k % cols),
                isnan(out[k]) ? "NaN" : "infinite");
    clip_l2_normalize(out, (int)rows, (int)cols);
    *E_out = (int)cols;
    return out;
}

/* ---- image side ---- */

static int teacher_for_shard(const clip_model *m, const record *s, const float *text, size_t C, int batch,
                             const mval *inputs, const char *src, record **out)
{
    /* pixels: `images` |u1 [N,3,H,W], or encoded `jpeg` bytes (JPEG/PNG) with `offsets` [N+1] */
    const tensor *im = rec_find(s, "images"), *enc = rec_find(s, "jpeg"), *off = rec_find(s, "offsets");
    int64_t N, H = 0, W = 0;
    if (!im && enc && off) {
        if (enc->dtype != DT_U8 || enc->ndim != 1 || off->dtype != DT_I64 || off->ndim != 1 || off->shape[0] < 1)
            return err_set(ERR_FORMAT, "%s record %ld: `jpeg` must be |u1 [bytes] and `offsets` <i8 [N+1]", s->src, s->index);
        N = off->shape[0] - 1;
        const int64_t *o = off->data;
        for (int64_t i = 0; i <= N; i++)
            if (o[i] < 0 || o[i] > enc->shape[0] || (i && o[i] < o[i - 1]))
                return err_set(ERR_FORMAT, "%s record %ld: `offsets`[%lld] = %lld is out of order or past the data",
                               s->src, s->index, (long long)i, (long long)o[i]);
    } else {
        int64_t shp[4] = {-1, 3, -1, -1};
        if (!(im = rec_get(s, "images", DT_U8, 4, shp))) return ERR_FORMAT;
        N = im->shape[0], H = im->shape[2], W = im->shape[3];
    }
    int64_t n1[1] = {N};
    const tensor *idx = rec_get(s, "index", DT_I64, 1, n1);
    if (!idx) return ERR_FORMAT;
    const tensor *lab = rec_find(s, "labels");
    if (lab && (lab->ndim != 1 || lab->shape[0] != N || (lab->dtype != DT_I64 && lab->dtype != DT_I32)))
        return err_set(ERR_FORMAT, "%s record %ld: tensor `labels` must be <i8 or <i4 [%lld]", s->src, s->index,
                       (long long)N);
    if (im && N > 0 && (H < 1 || W < 1))
        return err_set(ERR_FORMAT, "%s record %ld: empty images", s->src, s->index);
    int E = m->embed_dim, S = m->image_size;
    record *t = rec_new("teacher");
    int64_t se[2] = {N, E}, sl[2] = {N, (int64_t)C};
    float *emb = t ? rec_add_new(t, "embeddings", DT_F32, 2, se) : NULL;
    float *lg = t ? rec_add_new(t, "logits", DT_F32, 2, sl) : NULL;
    int64_t *ix = t ? rec_add_new(t, "index", DT_I64, 1, n1) : NULL;
    float *px = malloc((size_t)batch * 3 * S * S * sizeof *px);
    if (!t || (N && (!emb || !lg || !ix)) || !px) {
        rec_free(t);
        free(px);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    if (N) memcpy(ix, idx->data, (size_t)N * 8);
    float scale = expf(m->logit_scale);
    double t0 = tool_now();
    for (int64_t b0 = 0; b0 < N; b0 += batch) {
        int nb = (int)(N - b0 < batch ? N - b0 : batch), rc = 0;
        for (int k = 0; k < nb && !rc; k++) {
            float *dst = px + (size_t)k * 3 * S * S;
            if (im) {
                rc = clip_preprocess(dst, (const uint8_t *)im->data + (size_t)(b0 + k) * 3 * H * W, (int)H, (int)W, S);
            } else {
                const int64_t *o = off->data;
                char name[300];
                image img = {0};
                snprintf(name, sizeof name, "%s record %ld image %lld", src, s->index, (long long)(b0 + k));
                rc = image_decode((const uint8_t *)enc->data + o[b0 + k], (size_t)(o[b0 + k + 1] - o[b0 + k]), name, &img);
                if (!rc) rc = clip_preprocess(dst, img.chw, img.h, img.w, S);
                image_free(&img);
            }
        }
        if (!rc) rc = clip_encode_image(m, px, nb, emb + b0 * E);
        if (rc) {
            rec_free(t);
            free(px);
            return rc;
        }
        clip_l2_normalize(emb + b0 * E, nb, E);
        double dt = tool_now() - t0, rate = (double)(b0 + nb) / (dt > 0 ? dt : 1e-9);
        tool_progress("%s: %lld/%lld images, %.1f images/s, %.0f s left", src, (long long)(b0 + nb), (long long)N,
                      rate, (double)(N - b0 - nb) / rate);
    }
    tool_progress_done();
    if (N) {
        for (int64_t i = 0; i < N; i++)
            for (size_t c = 0; c < C; c++) {
                float d = 0;
                for (int k = 0; k < E; k++) d += emb[i * E + k] * text[c * E + k];
                lg[i * (int64_t)C + (int64_t)c] = scale * d;
            }
    }
    double dt = tool_now() - t0;
    tool_log(1, "%s: %lld images in %.1f s (%.1f images/s)", src, (long long)N, dt, dt > 0 ? N / dt : 0.0);
    free(px);
    int64_t client = -1;
    const char *dataset = NULL;
    const char **cls = NULL;
    size_t ncls = 0;
    rec_opt_int(s, "client", &client);
    rec_opt_str(s, "dataset", &dataset);
    int rc = rec_set_int(t, "client", client);
    if (!rc && dataset) rc = rec_set_str(t, "dataset", dataset);
    if (!rc && mv_map_get(s->meta, "classes") && rec_get_strs(s, "classes", &cls, &ncls) == 0) {
        rc = rec_set_strs(t, "classes", cls, ncls);
        free(cls);
    }
    if (!rc) rc = rec_set_float(t, "logit_scale", scale);
    if (!rc) rc = rec_set_str(t, "shard", src);
    if (!rc) rc = rec_set_str(t, "precision", m->slab_h ? "bf16" : "fp32");
    if (!rc) rc = rec_set_str(t, "producer", "clip-embed " FEDSM_VERSION);
    mval inp;
    if (!rc && (mv_copy(&inp, inputs) || mv_map_put(t->meta, "inputs", &inp)))
        rc = err_set(ERR_INTERNAL, "out of memory for meta.inputs");
    if (rc) {
        rec_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- main ---- */

static int tokenize_stdin(const char *vocab)
{
    bpe *b = bpe_load(vocab);
    if (!b) fail_code(err_last());
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        int32_t ids[BPE_CONTEXT];
        int eot = bpe_tokenize(b, line, ids, BPE_CONTEXT);
        if (eot < 0) fail_code(eot);
        for (int k = 0; k <= eot; k++) printf(k ? " %d" : "%d", ids[k]);
        putchar('\n');
    }
    free(line);
    bpe_free(b);
    return 0;
}

/* The shards' meta classes (all shards must agree); NULL list when none has them.  Every
 * --shard stream must hold shard records only, at least one, each with samples: a stream of
 * anything else would otherwise give no teacher, silently. */
static void shard_classes(char **shards, int n_shards, strlist *out)
{
    for (int k = 0; k < n_shards; k++) {
        rec_reader *rd = ep_open_reader(shards[k], NULL);
        if (!rd) fail_code(err_last());
        record *r = NULL;
        int rc;
        long n_rec = 0;
        while ((rc = rec_read(rd, &r)) == 1) {
            n_rec++;
            if (strcmp(r->kind, "shard"))
                die(ERR_FORMAT, "wrong record kind (stream %s, record %ld, field kind): expected shard, got %s",
                    shards[k], r->index, r->kind);
            const tensor *im = rec_find(r, "images"), *of = rec_find(r, "offsets");
            int64_t ns = im && im->ndim >= 1 ? im->shape[0] : of && of->ndim == 1 ? of->shape[0] - 1 : -1;
            if (ns == 0)
                die(ERR_FORMAT, "empty shard (stream %s, record %ld, field tensors.%s): no samples", shards[k],
                    r->index, im ? "images" : "offsets");
            const char **cls = NULL;
            size_t n = 0;
            if (mv_map_get(r->meta, "classes")) {
                if ((rc = rec_get_strs(r, "classes", &cls, &n))) fail_code(rc);
                if (!out->n)
                    for (size_t c = 0; c < n; c++) list_push(out, cls[c]);
                else {
                    bool same = n == out->n;
                    for (size_t c = 0; same && c < n; c++) same = !strcmp(cls[c], out->v[c]);
                    if (!same) die(ERR_FORMAT, "%s record %ld: meta classes differ from the other shards'", shards[k], r->index);
                }
                free(cls);
            }
            rec_free(r);
        }
        if (rc < 0) fail_code(rc);
        if (!n_rec) die(ERR_FORMAT, "%s holds no shard record (--shard takes partition's client or test shards)", shards[k]);
        rec_reader_close(rd);
    }
}

/* --wordnet: one `embeddings` record holding only `relevance` (Wu-Palmer, lib/fl/relevance.c). */
static int wordnet_main(const char *classes_path, const char *map, const char *dir, const char *out_path, bool force)
{
    strlist classes = {0};
    read_lines(classes_path, &classes, false);
    const char *db = dir ? dir : getenv("WNSEARCHDIR") && *getenv("WNSEARCHDIR") ? getenv("WNSEARCHDIR") : "/usr/share/wordnet";
    /* meta.inputs: the database files found and the map; the classes */
    inputs in;
    inputs_init(&in);
    char roles[64] = "";
    const char *files[] = {"index.noun", "data.noun"};
    for (int k = 0; k < 2; k++) {
        char *p = malloc(strlen(db) + 16);
        if (!p) die(ERR_INTERNAL, "out of memory");
        sprintf(p, "%s/%s", db, files[k]);
        if (file_exists(p)) add_record(&in, roles, sizeof roles, files[k], p); /* else relevance_wordnet says what is missing */
        free(p);
    }
    if (map) add_record(&in, roles, sizeof roles, "wordnet_map", map);
    inputs_add_option(&in, "tool", "clip-embed/1");
    inputs_add_option(&in, "relevance", "wordnet-wup/1");
    inputs_add_option(&in, "records", roles);
    for (size_t k = 0; k < classes.n; k++) inputs_add_option(&in, "class", classes.v[k]);
    record *er = rec_new("embeddings");
    if (!er) die(ERR_INTERNAL, "out of memory");
    int rc = inputs_set(&in, er);
    if (rc) fail_code(rc);
    if (!force && strcmp(out_path, "-") && !ep_is_zmq(out_path) && file_exists(out_path) && up_to_date(out_path, er)) {
        rec_free(er);
        list_free(&classes);
        return 0;
    }
    size_t C = classes.n;
    double *Sd = malloc(C * C * sizeof *Sd);
    char **syn = NULL;
    if (!Sd) die(ERR_INTERNAL, "out of memory");
    rc = relevance_wordnet(Sd, &syn, dir, map, (const char *const *)classes.v, (int)C);
    if (rc) fail_code(rc);
    int64_t scc[2] = {(int64_t)C, (int64_t)C};
    float *S = rec_add_new(er, "relevance", DT_F32, 2, scc);
    if (!S) die(ERR_INTERNAL, "out of memory");
    for (size_t k = 0; k < C * C; k++) S[k] = (float)Sd[k];
    rc = rec_set_strs(er, "classes", (const char *const *)classes.v, classes.n);
    if (!rc) rc = rec_set_strs(er, "synsets", (const char *const *)syn, C);
    if (!rc) rc = rec_set_str(er, "source", "wordnet");
    if (!rc) rc = rec_set_str(er, "relevance_source", "wordnet");
    if (!rc) rc = rec_set_str(er, "relevance_measure", "Wu-Palmer, as NLTK wup_similarity (row i, column j: wup(i, j))");
    if (!rc) rc = rec_set_str(er, "relevance_diag", "wup(c, c) (1 unless c has hypernym paths of unequal length); FedSM sets it to the row mean itself");
    if (!rc) rc = rec_set_str(er, "wordnet_dir", db);
    if (!rc && map) rc = rec_set_str(er, "wordnet_map", map);
    if (!rc) rc = rec_set_str(er, "producer", "clip-embed " FEDSM_VERSION);
    if (rc) fail_code(rc);
    g_out = ep_open_writer(out_path, NULL);
    if (!g_out) fail_code(err_last());
    if ((rc = rec_write(g_out, er))) fail_code(rc);
    rc = rec_writer_close(g_out, true);
    g_out = NULL;
    if (rc) tool_fail(rc);
    tool_log(1, "relevance: %zu classes from WordNet (%s)", C, db);
    rec_free(er);
    for (size_t k = 0; k < C; k++) free(syn[k]);
    free(syn);
    free(Sd);
    list_free(&classes);
    return 0;
}

int main(int argc, char **argv)
{
    tool_init("clip-embed");
    const char *weights = NULL, *vocab = NULL, *config = NULL, *classes_path = NULL, *prompts_path = NULL,
               *rel_path = NULL, *import_path = NULL, *out_path = NULL;
    char *shards[MAX_SHARDS];
    int n_shards = 0, batch = 32;
    bool tokenize = false, force = false, bf16 = false;
    char *vocab_owned = NULL; /* vocabulary found beside the weights */
    enum { O_VOCAB = 256, O_CONFIG, O_REL, O_IMPORT, O_TOKENIZE, O_THREADS, O_SEED, O_BF16, O_WORDNET, O_WN_MAP, O_WN_DIR };
    bool wordnet = false;
    const char *wn_map = NULL, *wn_dir = NULL;
    static const struct option opts[] = {
        {"weights", required_argument, 0, 'w'}, {"vocab", required_argument, 0, O_VOCAB},
        {"config", required_argument, 0, O_CONFIG}, {"classes", required_argument, 0, 'c'},
        {"prompts", required_argument, 0, 'p'}, {"relevance-prompts", required_argument, 0, O_REL},
        {"shard", required_argument, 0, 's'}, {"import", required_argument, 0, O_IMPORT},
        {"tokenize", no_argument, 0, O_TOKENIZE}, {"batch", required_argument, 0, 'b'},
        {"force", no_argument, 0, 'f'}, {"bf16", no_argument, 0, O_BF16},
        {"wordnet", no_argument, 0, O_WORDNET}, {"wordnet-map", required_argument, 0, O_WN_MAP},
        {"wordnet-dir", required_argument, 0, O_WN_DIR}, {0, 0, 0, 0}};
    tool_common co = {.usage = usage}; /* --seed is accepted: nothing here is random */
    int c;
    while ((c = tool_getopt(argc, argv, "w:c:p:s:b:f", opts, &co)) != -1) {
        switch (c) {
        case 'w': weights = optarg; break;
        case O_VOCAB: vocab = optarg; break;
        case O_CONFIG: config = optarg; break;
        case 'c': classes_path = optarg; break;
        case 'p': prompts_path = optarg; break;
        case O_REL: rel_path = optarg; break;
        case 's':
            if (n_shards == MAX_SHARDS) tool_usage_error("at most %d --shard options", MAX_SHARDS);
            shards[n_shards++] = optarg;
            break;
        case O_IMPORT: import_path = optarg; break;
        case O_TOKENIZE: tokenize = true; break;
        case 'b': batch = (int)tool_parse_int("--batch", optarg, 1, 4096); break;
        case 'f': force = true; break;
        case O_BF16: bf16 = true; break;
        case O_WORDNET: wordnet = true; break;
        case O_WN_MAP: wn_map = optarg; break;
        case O_WN_DIR: wn_dir = optarg; break;
        }
    }
    out_path = co.out;
    if (optind < argc) tool_usage_error("unexpected argument '%s'", argv[optind]);

    if (!vocab && weights) {
        char *v = beside(weights, VOCAB_NAME);
        if (file_exists(v)) vocab = vocab_owned = v;
        else free(v);
    }
    if (tokenize) {
        if (!vocab) tool_usage_error("--tokenize needs --vocab (or --weights with " VOCAB_NAME " beside it)");
        int rc = tokenize_stdin(vocab);
        free(vocab_owned);
        return rc;
    }
    if (!out_path) tool_usage_error("no output: give -o FILE (or '-')");
    if (ep_check_writer(out_path)) fail_code(err_last()); /* a bad -o fails now, not after the work */
    if ((wn_map || wn_dir) && !wordnet) tool_usage_error("--wordnet-map and --wordnet-dir need --wordnet");
    if (wordnet && (weights || import_path || n_shards))
        tool_usage_error("--wordnet replaces the text encoder: no --weights, --import or --shard with it");
    if (wordnet && !classes_path) tool_usage_error("--wordnet needs --classes");
    if (wordnet) return wordnet_main(classes_path, wn_map, wn_dir, out_path, force);
    if (!weights && !import_path) tool_usage_error("give --weights (or --import for class embeddings)");
    if (!weights && n_shards) tool_usage_error("--shard needs --weights (the image encoder)");
    if (!import_path && !vocab)
        tool_usage_error("no vocabulary: give --vocab (" VOCAB_NAME "), or put it beside the weights");
    if (!classes_path && !n_shards) tool_usage_error("give --classes (or shards whose meta names the classes)");

    /* classes and templates */
    strlist classes = {0}, prompts = {0}, rel = {0}, from_shards = {0};
    if (classes_path) read_lines(classes_path, &classes, false);
    if (n_shards) shard_classes(shards, n_shards, &from_shards);
    if (!classes.n) {
        if (!from_shards.n) die(ERR_FORMAT, "%s: no meta classes; give --classes", shards[0]);
        for (size_t k = 0; k < from_shards.n; k++) list_push(&classes, from_shards.v[k]);
    } else if (from_shards.n) {
        bool same = classes.n == from_shards.n;
        for (size_t k = 0; same && k < classes.n; k++) same = !strcmp(classes.v[k], from_shards.v[k]);
        if (!same)
            die(ERR_FORMAT, "%s: classes differ from the shards' meta classes (%zu vs %zu); teacher logits must follow "
                "the shards' label order", classes_path, classes.n, from_shards.n);
    }
    list_free(&from_shards);
    if (prompts_path) read_lines(prompts_path, &prompts, true);
    else for (size_t k = 0; k < sizeof default_prompts / sizeof *default_prompts; k++) list_push(&prompts, default_prompts[k]);
    if (rel_path) read_lines(rel_path, &rel, true);
    else for (size_t k = 0; k < sizeof default_rel_prompts / sizeof *default_rel_prompts; k++) list_push(&rel, default_rel_prompts[k]);

    /* meta.inputs, the cache key: the files read (their roles in the "records" option; the
     * shards last, in order), then the options */
    inputs in;
    inputs_init(&in);
    char roles[64] = "";
    if (weights) {
        add_record(&in, roles, sizeof roles, "weights", weights);
        char *cfg = config ? strdup(config) : beside(weights, "config.json");
        if (!cfg) die(ERR_INTERNAL, "out of memory");
        if (file_exists(cfg)) add_record(&in, roles, sizeof roles, "config", cfg);
        free(cfg);
    }
    if (vocab && !import_path) add_record(&in, roles, sizeof roles, "vocab", vocab);
    if (import_path) add_record(&in, roles, sizeof roles, "import", import_path);
    for (int k = 0; k < n_shards; k++) inputs_add_file(&in, shards[k]);
    inputs_add_option(&in, "tool", "clip-embed/1");
    inputs_add_option(&in, "records", roles);
    inputs_add_option_int(&in, "shards", n_shards);
    for (size_t k = 0; k < classes.n; k++) inputs_add_option(&in, "class", classes.v[k]);
    for (size_t k = 0; k < prompts.n; k++) inputs_add_option(&in, "prompt", prompts.v[k]);
    for (size_t k = 0; k < rel.n; k++) inputs_add_option(&in, "relevance_prompt", rel.v[k]);
    inputs_add_option(&in, "precision", bf16 && weights ? "bf16" : "fp32");
    record *er = rec_new("embeddings");
    if (!er) die(ERR_INTERNAL, "out of memory");
    int rc = inputs_set(&in, er);
    if (rc) fail_code(rc);
    if (!force && strcmp(out_path, "-") && !ep_is_zmq(out_path) && file_exists(out_path) && up_to_date(out_path, er)) {
        rec_free(er);
        list_free(&classes);
        list_free(&prompts);
        list_free(&rel);
        free(vocab_owned);
        return 0;
    }

    /* model and text side */
    clip_model *m = NULL;
    if (weights) {
        double t0 = tool_now();
        m = clip_load(weights, config);
        if (!m) fail_code(err_last());
        if (bf16 && clip_use_bf16(m)) fail_code(err_last());
        tool_log(1, "%s: vision %d layers x %d (patch %d, %d px), text %d layers x %d, embed %d, logit scale %.2f (%.1f s)",
                 weights, m->vision.layers, m->vision.width, m->patch, m->image_size, m->text.layers, m->text.width,
                 m->embed_dim, expf(m->logit_scale), tool_now() - t0);
    }
    size_t C = classes.n;
    int E;
    float *text, *rtext;
    if (import_path) {
        text = import_embeddings(import_path, C, &E);
        if (m && E != m->embed_dim)
            die(ERR_FORMAT, "%s: embeddings have %d dimensions, the model's image embeddings %d", import_path, E, m->embed_dim);
        rtext = malloc(C * (size_t)E * sizeof *rtext);
        if (!rtext) die(ERR_INTERNAL, "out of memory");
        memcpy(rtext, text, C * (size_t)E * sizeof *rtext);
    } else {
        bpe *tok = bpe_load(vocab);
        if (!tok) fail_code(err_last());
        /* the tokenizer's ids must be the model's: none past its vocabulary, and a model of CLIP's
         * full vocabulary needs every merge (a cut merges list would shift the last tokens) */
        int nv = bpe_vocab_size(tok), full = 512 + BPE_MAX_MERGES + 2;
        if (nv > m->vocab || (m->vocab == full && nv != full))
            die(ERR_FORMAT, "%s: a vocabulary of %d tokens for a model of %d (%s)", vocab, nv, m->vocab,
                nv > m->vocab ? "ids past the model's embeddings" : "merges missing: a cut vocabulary file?");
        E = m->embed_dim;
        text = embed_classes(m, tok, &classes, &prompts);
        rtext = embed_classes(m, tok, &classes, &rel);
        bpe_free(tok);
    }

    int64_t sce[2] = {(int64_t)C, E}, scc[2] = {(int64_t)C, (int64_t)C};
    rc = rec_add(er, "text", DT_F32, 2, sce, text, REC_COPY);
    if (!rc) rc = rec_add(er, "relevance_text", DT_F32, 2, sce, rtext, REC_COPY);
    float *S = rc ? NULL : rec_add_new(er, "relevance", DT_F32, 2, scc);
    if (!rc && !S) rc = err_set(ERR_INTERNAL, "out of memory");
    if (!rc && (rc = relevance_cosine(S, rtext, (int)C, E))) err_wrap(rc, "%s", import_path ? import_path : "text encoder");
    if (rc) fail_code(rc);
    rc = rec_set_strs(er, "classes", (const char *const *)classes.v, classes.n);
    if (!rc) rc = rec_set_strs(er, "prompts", (const char *const *)prompts.v, prompts.n);
    if (!rc) rc = rec_set_strs(er, "relevance_prompts", (const char *const *)rel.v, rel.n);
    if (!rc) rc = rec_set_str(er, "relevance_diag", "cosine (1); FedSM sets it to the row mean itself");
    if (!rc) rc = rec_set_int(er, "embed_dim", E);
    if (!rc) rc = rec_set_str(er, "source", import_path ? "import" : "clip");
    if (!rc) rc = rec_set_str(er, "relevance_source", import_path ? "import" : "clip");
    if (!rc && import_path) rc = rec_set_str(er, "import", import_path);
    if (!rc && m) {
        rc = rec_set_str(er, "model", weights);
        if (!rc) rc = rec_set_float(er, "logit_scale", expf(m->logit_scale));
        int64_t dims[] = {m->vision.width, m->vision.layers, m->vision.heads, m->patch, m->image_size,
                          m->text.width,   m->text.layers,   m->text.heads,   m->vocab, m->context};
        if (!rc) rc = rec_set_ints(er, "model_dims", dims, sizeof dims / sizeof *dims);
        if (!rc) rc = rec_set_str(er, "model_dims_order", "vision width,layers,heads,patch,image_size; text width,layers,heads,vocab,context");
        if (!rc) rc = rec_set_str(er, "arch", "clip-vit");
    }
    if (!rc) rc = rec_set_str(er, "producer", "clip-embed " FEDSM_VERSION);
    if (rc) fail_code(rc);

    g_out = ep_open_writer(out_path, NULL);
    if (!g_out) fail_code(err_last());
    if ((rc = rec_write(g_out, er))) fail_code(rc);
    tool_log(1, "embeddings: %zu classes x %d, %zu prompt(s), %zu relevance prompt(s)", C, E, prompts.n, rel.n);

    for (int k = 0; k < n_shards; k++) {
        rec_reader *rd = ep_open_reader(shards[k], NULL);
        if (!rd) fail_code(err_last());
        record *s = NULL;
        while ((rc = rec_read(rd, &s)) == 1) {
            if (strcmp(s->kind, "shard")) /* shard_classes read every stream first */
                die(ERR_FORMAT, "wrong record kind (stream %s, record %ld, field kind): expected shard, got %s",
                    shards[k], s->index, s->kind);
            record *t = NULL;
            rc = teacher_for_shard(m, s, text, C, batch, mv_map_get(er->meta, "inputs"), shards[k], &t);
            rec_free(s);
            if (rc) fail_code(rc);
            rc = rec_write(g_out, t);
            rec_free(t);
            if (rc) fail_code(rc);
        }
        if (rc < 0) fail_code(rc);
        rec_reader_close(rd);
    }
    rc = rec_writer_close(g_out, true);
    g_out = NULL;
    if (rc) tool_fail(rc);
    rec_free(er);
    free(text);
    free(rtext);
    clip_free(m);
    list_free(&classes);
    list_free(&prompts);
    list_free(&rel);
    free(vocab_owned);
    return 0;
}
