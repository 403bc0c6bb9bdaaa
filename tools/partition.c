/* partition - a labelled image dataset into long-tailed, non-IID client shards: the first
 * stage of every experiment (DESIGN section 4; docs/algorithms.md 1.1-1.4).
 *
 * Reads CIFAR-10/100 binary batches, an image folder or an ImageNet-LT list file
 * (lib/dataset), keeps a long-tailed subset of the training set (lib/split lt_select),
 * splits it among clients (split_make: creff, dirichlet, iid, shards), and writes the whole
 * output directory under a temporary name, renamed into place only when complete:
 *   client-NN.mpk.zst   one `shard` record per client
 *   test.mpk.zst        the full test set (client -1), when the input has one
 *   partition.mpk.zst   one `partition` record: client x class counts and every option
 *   partition.csv       the same counts for people and spreadsheets
 *   partition.svg       a client x class heatmap
 * Deterministic: the same options give byte-identical files, at any --threads.
 *
 * Not here: any training; normalisation is only recorded (mean/std meta), never applied. */
#include "dataset.h"
#include "endpoint.h"
#include "err.h"
#include "norm.h"
#include "pool.h"
#include "split.h"
#include "tool.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PRODUCER "partition " FEDSM_VERSION


typedef struct opts {
    const char *in, *out_dir, *classes_file, *root, *test_list, *name;
    ds_opts ds;
    split_opts sp;
    double imb;
    lt_profile profile;
    bool force;
    int zstd_level;
} opts;

_Noreturn static void usage(void)
{
    printf(
        "usage: partition --in PATH -o DIR [options]\n"
        "Split a labelled image dataset into long-tailed, non-IID client shards.\n\n"
        "input (--format auto detects it from PATH):\n"
        "  -i, --in PATH            CIFAR-10 folder (data_batch_1..5.bin, test_batch.bin,\n"
        "                           batches.meta.txt), CIFAR-100 folder (train.bin, test.bin,\n"
        "                           fine_label_names.txt), image folder (PATH/train/<class>/\n"
        "                           *.jpg|png, optional PATH/test/<class>/), or a list file of\n"
        "                           'relative/path.jpg label' lines (ImageNet-LT)\n"
        "      --format F           auto (default), cifar10, cifar100, folder, list\n"
        "      --classes FILE       class names in label order, one per line (folder: the\n"
        "                           folder names and their order; default: sorted names)\n"
        "      --root DIR           list: folder the paths are relative to (default: the\n"
        "                           list file's folder)\n"
        "      --test-list FILE     list: the test set's list file\n"
        "      --name NAME          dataset name in meta (default: cifar10, cifar100, or the\n"
        "                           folder / list file name)\n"
        "      --store S            auto (default): decode images when all have one size and\n"
        "                           no side > --small-max, else keep the encoded file bytes;\n"
        "                           pixels; encoded\n"
        "      --small-max N        largest side decoded by --store auto (default 64)\n\n"
        "long tail and split:\n"
        "      --if F               imbalance factor n_max/n_min >= 1 (default 100, the\n"
        "                           CLIP2FL/FedSM setting; 1 keeps the whole training set)\n"
        "      --profile P          exp (default): n_c = floor(n_max * IF^(-c/(C-1)));\n"
        "                           step: the first C/2 classes n_max, the rest n_max/IF\n"
        "      --split S            creff (default; CReFF/CLIP2FL Dirichlet with balance\n"
        "                           step and equal-size clients), dirichlet (plain per-class\n"
        "                           Dirichlet), iid, shards (k classes per client)\n"
        "  -K, --clients K          number of clients (default 20)\n"
        "  -a, --alpha A            Dirichlet concentration > 0 (default 0.5)\n"
        "      --min-size N         dirichlet: smallest client allowed (default 10)\n"
        "      --max-tries N        creff/dirichlet: draws before giving up (default 1000)\n"
        "      --classes-per-client k  shards: classes per client (default 2)\n"
        "  -s, --seed N             seed of the long-tail and split streams (default 7)\n\n"
        "output:\n"
        "  -o, --out-dir DIR        output folder (built as DIR.tmp.<pid>, renamed when done)\n"
        "  -f, --force              replace DIR if it exists and is not empty\n"
        "      --zstd-level N       1..19 (default 3)\n"
        "  -t, --threads N          image decoding threads (default: FEDSM_THREADS or 1)\n"
        "  -q, --quiet / -v, --verbose\n"
        "  -h, --help / -V, --version\n\n"
        "writes: client-NN.mpk.zst (shard records: images |u1 [N,3,H,W] or jpeg bytes +\n"
        "offsets <i8 [N+1], labels <i4 [N], index <i8 [N]), test.mpk.zst (client -1),\n"
        "partition.mpk.zst (counts <i8 [K,C], class_counts <i8 [C]), partition.csv,\n"
        "partition.svg\n\n"
        "example: partition --in cifar-10-batches-bin -o parts/c10-if100 --if 100 --alpha 0.5\n"
        "         partition --in cifar10-jpeg -o parts/c10 --threads 2 --split iid --if 1\n"
        "exit: 0 ok, 2 usage, 3 bad input data, 4 I/O\n");
    exit(0);
}

/* ---- output directory ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* 0 missing, 1 empty folder, 2 non-empty folder, 3 not a folder */
static int dir_state(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return 3;
    int n = 0;
    struct dirent *e;
    DIR *d = opendir(dir);
    if (!d)
        return 2;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n ? 2 : 1;
}

static char tmp_dir[4096]; /* removed by cleanup() on any failure */

static void cleanup(void)
{
    if (tmp_dir[0])
        rm_tree(tmp_dir);
    tmp_dir[0] = 0;
}

_Noreturn static void fail(int code)
{
    cleanup();
    tool_fail(code);
}

static void path_in(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmp_dir, name);
}

/* ---- records ---- */

static void set_common_meta(record *r, const opts *o, const dataset *d, bool encoded)
{
    rec_set_str(r, "dataset", o->name ? o->name : d->name);
    rec_set_strs(r, "classes", (const char *const *)d->classes, (size_t)d->n_classes);
    rec_set_int(r, "num_classes", d->n_classes);
    rec_set_int(r, "num_clients", o->sp.clients);
    rec_set_int(r, "seed", (int64_t)o->sp.seed);
    rec_set_float(r, "if", o->imb);
    rec_set_str(r, "profile", o->profile == LT_STEP ? "step" : "exp");
    rec_set_float(r, "alpha", o->sp.alpha);
    rec_set_str(r, "split", split_mode_name(o->sp.mode));
    if (o->sp.mode == SPLIT_DIRICHLET)
        rec_set_int(r, "min_size", o->sp.min_size);
    if (o->sp.mode == SPLIT_SHARDS)
        rec_set_int(r, "classes_per_client", o->sp.classes_per_client);
    rec_set_str(r, "source_format", ds_format_name(d->format));
    rec_set_str(r, "producer", PRODUCER);
    rec_set_floats(r, "mean", norm_for_storage(encoded)->mean, 3); /* the one table: norm.h */
    rec_set_floats(r, "std", norm_for_storage(encoded)->std, 3);
}

/* Writes one shard of samples pos[0..n) (positions in set s). */
static int write_shard(const char *path, const opts *o, const dataset *d, const ds_set *s,
                       const char *set_name, int client, const int64_t *pos, int64_t n)
{
    bool encoded = s->pixels == NULL;
    record *r = rec_new("shard");
    if (!r)
        return err_set(ERR_INTERNAL, "out of memory");
    int rc = 0;
    int64_t shp[4] = {n, 3, s->h, s->w};
    if (!encoded) {
        size_t sz = 3 * (size_t)s->h * s->w;
        uint8_t *img = rec_add_new(r, "images", DT_U8, 4, shp);
        if (!img) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            memcpy(img + sz * (size_t)i, s->pixels + sz * (size_t)pos[i], sz);
    } else {
        int64_t on = n + 1;
        int64_t *off = rec_add_new(r, "offsets", DT_I64, 1, &on);
        size_t cap = 1 << 20, used = 0;
        uint8_t *bytes = malloc(cap);
        if (!off || !bytes) {
            free(bytes);
            rc = err_set(ERR_INTERNAL, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < n && !rc; i++) {
            void *b;
            size_t len;
            off[i] = (int64_t)used;
            if ((rc = ds_read_encoded(s, pos[i], &b, &len)))
                break;
            if (used + len > cap) {
                while (used + len > cap)
                    cap *= 2;
                uint8_t *nb = realloc(bytes, cap);
                if (!nb) {
                    free(b);
                    rc = err_set(ERR_INTERNAL, "out of memory");
                    break;
                }
                bytes = nb;
            }
            memcpy(bytes + used, b, len);
            used += len;
            free(b);
        }
        off[n] = (int64_t)used;
        int64_t bn = (int64_t)used;
        if (!rc)
            rc = rec_add(r, "jpeg", DT_U8, 1, &bn, bytes, REC_COPY);
        free(bytes);
        if (rc)
            goto done;
    }
    int32_t *lab = rec_add_new(r, "labels", DT_I32, 1, shp);
    int64_t *idx = rec_add_new(r, "index", DT_I64, 1, shp);
    if (!lab || !idx) {
        rc = err_set(ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        lab[i] = s->labels[pos[i]];
        idx[i] = pos[i];
    }
    set_common_meta(r, o, d, encoded);
    rec_set_str(r, "set", set_name);
    rec_set_int(r, "client", client);
    rec_set_int(r, "count", n);
    if (!encoded) {
        rec_set_int(r, "height", s->h);
        rec_set_int(r, "width", s->w);
    } else {
        rec_set_str(r, "encoding", "file bytes (JPEG or PNG), sample i = jpeg[offsets[i]:offsets[i+1]]");
    }
    ep_opts eo;
    ep_opts_default(&eo);
    eo.zstd_level = o->zstd_level;
    rc = ep_write_one(path, r, &eo);
done:
    rec_free(r);
    return rc;
}

static int write_partition_record(const char *path, const opts *o, const dataset *d,
                                  const int64_t *counts, const int64_t *class_counts,
                                  const int64_t *source_counts, const int64_t *sizes,
                                  int tries, bool encoded)
{
    record *r = rec_new("partition");
    if (!r)
        return err_set(ERR_INTERNAL, "out of memory");
    int K = o->sp.clients, C = d->n_classes;
    int64_t kc[2] = {K, C}, c1 = C, k1 = K;
    int rc = rec_add(r, "counts", DT_I64, 2, kc, (void *)counts, REC_BORROW);
    if (!rc)
        rc = rec_add(r, "class_counts", DT_I64, 1, &c1, (void *)class_counts, REC_BORROW);
    if (!rc)
        rc = rec_add(r, "source_counts", DT_I64, 1, &c1, (void *)source_counts, REC_BORROW);
    if (!rc)
        rc = rec_add(r, "client_sizes", DT_I64, 1, &k1, (void *)sizes, REC_BORROW);
    if (!rc) {
        set_common_meta(r, o, d, encoded);
        rec_set_int(r, "client", -1);
        int64_t tot = 0;
        for (int c = 0; c < C; c++)
            tot += class_counts[c];
        rec_set_int(r, "train_total", tot);
        rec_set_int(r, "source_total", d->train.n);
        rec_set_int(r, "test_total", d->has_test ? d->test.n : 0);
        rec_set_int(r, "max_tries", o->sp.max_tries);
        rec_set_int(r, "tries", tries);
        rec_set_str(r, "storage", encoded ? "encoded" : "pixels");
        ep_opts eo;
        ep_opts_default(&eo);
        rc = ep_write_one(path, r, &eo);
    }
    rec_free(r);
    return rc;
}

static int write_file_atomic(const char *path, int (*fn)(FILE *, const void *), const void *ctx)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return err_set(ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    fn(f, ctx);
    int ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return err_set(ERR_IO, "%s: cannot write", path);
    }
    return 0;
}

typedef struct report {
    const opts *o;
    const dataset *d;
    const int64_t *counts, *class_counts, *sizes;
    int64_t total;
} report;

static int emit_csv(FILE *f, const void *ctx)
{
    const report *rp = ctx;
    int K = rp->o->sp.clients, C = rp->d->n_classes;
    fputs("client,size,classes", f);
    for (int c = 0; c < C; c++) {
        fputc(',', f);
        tool_csv_field(f, rp->d->classes[c]);
    }
    fputc('\n', f);
    for (int k = 0; k < K; k++) {
        int nz = 0;
        for (int c = 0; c < C; c++)
            nz += rp->counts[(size_t)k * C + c] > 0;
        fprintf(f, "%d,%lld,%d", k, (long long)rp->sizes[k], nz);
        for (int c = 0; c < C; c++)
            fprintf(f, ",%lld", (long long)rp->counts[(size_t)k * C + c]);
        fputc('\n', f);
    }
    int nzc = 0;
    for (int c = 0; c < C; c++)
        nzc += rp->class_counts[c] > 0;
    fprintf(f, "total,%lld,%d", (long long)rp->total, nzc);
    for (int c = 0; c < C; c++)
        fprintf(f, ",%lld", (long long)rp->class_counts[c]);
    fputc('\n', f);
    return 0;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Colour for t in [0, 1]: white -> blue -> dark navy. */
static void heat(double t, int *r, int *g, int *b)
{
    static const double stops[3][3] = {{247, 251, 255}, {66, 146, 198}, {8, 29, 88}};
    double x = t * 2;
    int i = x >= 1 ? 1 : 0;
    double u = x - i;
    if (u > 1)
        u = 1;
    *r = (int)lround(stops[i][0] + (stops[i + 1][0] - stops[i][0]) * u);
    *g = (int)lround(stops[i][1] + (stops[i + 1][1] - stops[i][1]) * u);
    *b = (int)lround(stops[i][2] + (stops[i + 1][2] - stops[i][2]) * u);
}

static int emit_svg(FILE *f, const void *ctx)
{
    const report *rp = ctx;
    const opts *o = rp->o;
    int K = o->sp.clients, C = rp->d->n_classes;
    int cw = C <= 10 ? 44 : C <= 20 ? 30 : C <= 50 ? 14 : 8;
    int ch = K <= 20 ? 22 : K <= 50 ? 12 : 6;
    int left = 84, top = 120, barw = 140, right = barw + 70;
    int W = left + C * cw + right, H = top + K * ch + 70;
    int64_t mx = 1, smax = 1;
    for (size_t i = 0; i < (size_t)K * C; i++)
        mx = rp->counts[i] > mx ? rp->counts[i] : mx;
    for (int k = 0; k < K; k++)
        smax = rp->sizes[k] > smax ? rp->sizes[k] : smax;
    bool numbers = cw >= 30 && ch >= 18;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"11\" stroke=\"none\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    fputs("<text x=\"8\" y=\"18\" font-size=\"14\" font-weight=\"bold\">", f);
    xml_text(f, o->name ? o->name : rp->d->name);
    fprintf(f,
            ": %d clients, split %s, alpha %g, IF %g (%s), seed %llu, %lld training "
            "samples</text>\n",
            K, split_mode_name(o->sp.mode), o->sp.alpha, o->imb,
            o->profile == LT_STEP ? "step" : "exp", (unsigned long long)o->sp.seed,
            (long long)rp->total);
    fprintf(f,
            "<text x=\"8\" y=\"34\" fill=\"#555\">cell = samples of a class held by a "
            "client (colour: sqrt scale, max %lld); bar = client size</text>\n",
            (long long)mx);
    /* class labels: horizontal and staggered over 3 rows when they fit (C <= 20), else
     * rotated, every 5th, with class numbers under the grid */
    for (int c = 0; c < C; c++) {
        int x = left + c * cw + cw / 2;
        if (cw >= 30) {
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", x,
                    top - 8 - 14 * (2 - c % 3));
            xml_text(f, rp->d->classes[c]);
            fprintf(f, "</text><line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
                       "stroke=\"#bbb\"/>\n",
                    x, top - 5 - 14 * (2 - c % 3), x, top);
        } else if (c % 5 == 0 || cw >= 10) {
            fprintf(f, "<text transform=\"translate(%d,%d) rotate(-90)\">", x + 4, top - 4);
            xml_text(f, rp->d->classes[c]);
            fputs("</text>\n", f);
        }
    }
    for (int k = 0; k < K; k++) {
        int y = top + k * ch;
        if (ch >= 10 || k % 5 == 0)
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">client %d</text>\n",
                    left - 6, y + ch / 2 + 4, k);
        for (int c = 0; c < C; c++) {
            int64_t v = rp->counts[(size_t)k * C + c];
            double t = sqrt((double)v / (double)mx);
            int r, g, b;
            heat(t, &r, &g, &b);
            fprintf(f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                    "fill=\"#%02x%02x%02x\" stroke=\"#ddd\" stroke-width=\"0.5\"><title>client "
                    "%d, ",
                    left + c * cw, y, cw, ch, r, g, b, k);
            xml_text(f, rp->d->classes[c]);
            fprintf(f, ": %lld</title></rect>\n", (long long)v);
            if (numbers && v > 0)
                fprintf(f,
                        "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"10\" "
                        "fill=\"%s\" stroke=\"none\">%lld</text>\n",
                        left + c * cw + cw / 2, y + ch / 2 + 4, t > 0.55 ? "white" : "#222",
                        (long long)v);
        }
        int bx = left + C * cw + 10;
        int bl = (int)lround((double)barw * rp->sizes[k] / smax);
        fprintf(f,
                "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#9ecae1\" "
                "stroke=\"none\"/>\n",
                bx, y + 2, bl > 0 ? bl : 1, ch > 4 ? ch - 4 : 1);
        if (ch >= 10)
            fprintf(f, "<text x=\"%d\" y=\"%d\">%lld</text>\n", bx + bl + 4, y + ch / 2 + 4,
                    (long long)rp->sizes[k]);
    }
    /* per-class totals row */
    int ty = top + K * ch + 16;
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">total</text>\n", left - 6, ty);
    for (int c = 0; c < C && numbers; c++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"10\">%lld</text>\n",
                left + c * cw + cw / 2, ty, (long long)rp->class_counts[c]);
    for (int c = 0; c < C && !numbers; c += 10)
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\">class %d</text>\n",
                left + c * cw, ty, c);
    /* legend */
    int ly = H - 30;
    for (int i = 0; i <= 20; i++) {
        int r, g, b;
        heat(i / 20.0, &r, &g, &b);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"8\" height=\"12\" fill=\"#%02x%02x%02x\"/>\n",
                left + i * 8, ly, r, g, b);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\">0</text><text x=\"%d\" y=\"%d\">%lld</text>\n</svg>\n",
            left - 10, ly + 10, left + 21 * 8 + 4, ly + 10, (long long)mx);
    return 0;
}

/* ---- summary ---- */

static void print_summary(const opts *o, const dataset *d, const int64_t *counts,
                          const int64_t *class_counts, const int64_t *sizes, int64_t total,
                          int tries)
{
    if (tool_verbosity < 1)
        return;
    int K = o->sp.clients, C = d->n_classes;
    fprintf(stderr, "%s: %s (%s), %d classes: %lld training samples -> %lld kept (IF %g, %s)\n",
            tool_name, o->name ? o->name : d->name, ds_format_name(d->format), C,
            (long long)d->train.n, (long long)total, o->imb,
            o->profile == LT_STEP ? "step" : "exp");
    fprintf(stderr, "  per class:");
    for (int c = 0; c < C; c++)
        fprintf(stderr, "%s%s %lld", c % 6 ? ", " : "\n    ", d->classes[c],
                (long long)class_counts[c]);
    fputc('\n', stderr);
    int64_t mn = INT64_MAX, mxs = 0;
    int cmin = C, cmax = 0;
    for (int k = 0; k < K; k++) {
        mn = sizes[k] < mn ? sizes[k] : mn;
        mxs = sizes[k] > mxs ? sizes[k] : mxs;
        int nz = 0;
        for (int c = 0; c < C; c++)
            nz += counts[(size_t)k * C + c] > 0;
        cmin = nz < cmin ? nz : cmin;
        cmax = nz > cmax ? nz : cmax;
    }
    fprintf(stderr,
            "  split %s (alpha %g, seed %llu, %d draw%s): %d clients, sizes %lld..%lld, "
            "classes per client %d..%d\n",
            split_mode_name(o->sp.mode), o->sp.alpha, (unsigned long long)o->sp.seed, tries,
            tries == 1 ? "" : "s", K, (long long)mn, (long long)mxs, cmin, cmax);
    for (int k = 0; k < K; k++) {
        int nz = 0;
        for (int c = 0; c < C; c++)
            nz += counts[(size_t)k * C + c] > 0;
        fprintf(stderr, "%s%3d: %6lld (%d cl)%s", k % 4 ? "   " : "    ", k,
                (long long)sizes[k], nz, k % 4 == 3 || k == K - 1 ? "\n" : "");
    }
    if (d->has_test)
        fprintf(stderr, "  test: %lld samples\n", (long long)d->test.n);
    else
        fprintf(stderr, "  test: none in the input (no test.mpk.zst)\n");
}

static void progress_cb(const char *what, int64_t done, int64_t total)
{
    tool_progress("decoding %s images: %lld/%lld", what, (long long)done, (long long)total);
}

/* ---- main ---- */

enum {
    OPT_FORMAT = 256, OPT_CLASSES, OPT_ROOT, OPT_TEST_LIST, OPT_NAME, OPT_STORE,
    OPT_SMALL_MAX, OPT_IF, OPT_PROFILE, OPT_SPLIT, OPT_MIN_SIZE, OPT_MAX_TRIES, OPT_CPC,
    OPT_ZSTD,
};

static void parse_args(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        {"in", required_argument, 0, 'i'},
        {"format", required_argument, 0, OPT_FORMAT},
        {"classes", required_argument, 0, OPT_CLASSES},
        {"root", required_argument, 0, OPT_ROOT},
        {"test-list", required_argument, 0, OPT_TEST_LIST},
        {"name", required_argument, 0, OPT_NAME},
        {"store", required_argument, 0, OPT_STORE},
        {"small-max", required_argument, 0, OPT_SMALL_MAX},
        {"if", required_argument, 0, OPT_IF},
        {"profile", required_argument, 0, OPT_PROFILE},
        {"split", required_argument, 0, OPT_SPLIT},
        {"clients", required_argument, 0, 'K'},
        {"alpha", required_argument, 0, 'a'},
        {"min-size", required_argument, 0, OPT_MIN_SIZE},
        {"max-tries", required_argument, 0, OPT_MAX_TRIES},
        {"classes-per-client", required_argument, 0, OPT_CPC},
        {"out-dir", required_argument, 0, TOOL_OPT_OUT}, /* = -o/--out */
        {"force", no_argument, 0, 'f'},
        {"zstd-level", required_argument, 0, OPT_ZSTD},
        {0, 0, 0, 0},
    };
    tool_common co = {.usage = usage, .seed = o->sp.seed};
    int c, v;
    while ((c = tool_getopt(argc, argv, "i:K:a:f", lo, &co)) != -1) {
        switch (c) {
        case 'i': o->in = optarg; break;
        case OPT_FORMAT:
            if ((v = ds_format_parse(optarg)) < 0)
                tool_usage_error("--format: unknown format '%s' (auto, cifar10, cifar100, "
                                 "folder, list)", optarg);
            o->ds.format = (ds_format)v;
            break;
        case OPT_CLASSES: o->classes_file = optarg; break;
        case OPT_ROOT: o->root = optarg; break;
        case OPT_TEST_LIST: o->test_list = optarg; break;
        case OPT_NAME: o->name = optarg; break;
        case OPT_STORE:
            if (!strcmp(optarg, "auto"))
                o->ds.store = DS_STORE_AUTO;
            else if (!strcmp(optarg, "pixels"))
                o->ds.store = DS_STORE_PIXELS;
            else if (!strcmp(optarg, "encoded"))
                o->ds.store = DS_STORE_ENCODED;
            else
                tool_usage_error("--store: unknown '%s' (auto, pixels, encoded)", optarg);
            break;
        case OPT_SMALL_MAX:
            o->ds.small_max = (int)tool_parse_int("--small-max", optarg, 1, 65535);
            break;
        case OPT_IF:
            o->imb = tool_parse_double("--if", optarg, 1.0, 1e9);
            break;
        case OPT_PROFILE:
            if (!strcmp(optarg, "exp"))
                o->profile = LT_EXP;
            else if (!strcmp(optarg, "step"))
                o->profile = LT_STEP;
            else
                tool_usage_error("--profile: unknown '%s' (exp, step)", optarg);
            break;
        case OPT_SPLIT:
            if ((v = split_mode_parse(optarg)) < 0)
                tool_usage_error("--split: unknown '%s' (creff, dirichlet, iid, shards)",
                                 optarg);
            o->sp.mode = (split_mode)v;
            break;
        case 'K': o->sp.clients = (int)tool_parse_int("--clients", optarg, 1, 100000); break;
        case 'a':
            o->sp.alpha = tool_parse_double("--alpha", optarg, 0, 1e6);
            if (!(o->sp.alpha > 0))
                tool_usage_error("--alpha: %s must be > 0", optarg);
            break;
        case OPT_MIN_SIZE:
            o->sp.min_size = tool_parse_int("--min-size", optarg, 0, INT64_MAX / 4);
            break;
        case OPT_MAX_TRIES:
            o->sp.max_tries = (int)tool_parse_int("--max-tries", optarg, 1, 100000000);
            break;
        case OPT_CPC:
            o->sp.classes_per_client =
                (int)tool_parse_int("--classes-per-client", optarg, 1, 1000000);
            break;
        case 'f': o->force = true; break;
        case OPT_ZSTD: o->zstd_level = (int)tool_parse_int("--zstd-level", optarg, 1, 19); break;
        }
    }
    o->out_dir = co.out;
    o->sp.seed = co.seed;
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->in)
        tool_usage_error("--in PATH is required");
    if (!o->out_dir)
        tool_usage_error("--out-dir DIR is required");
    if (o->ds.format != DS_LIST && o->ds.format != DS_AUTO && (o->root || o->test_list))
        tool_usage_error("--root and --test-list are for list files");
}

int main(int argc, char **argv)
{
    tool_init("partition");
    opts o;
    memset(&o, 0, sizeof o);
    ds_opts_default(&o.ds);
    split_opts_default(&o.sp);
    o.imb = 100;
    o.zstd_level = 3;
    parse_args(argc, argv, &o);
    o.ds.classes_file = o.classes_file;
    o.ds.root = o.root;
    o.ds.test_list = o.test_list;
    o.ds.progress = progress_cb;

    size_t olen = strlen(o.out_dir);
    while (olen > 1 && o.out_dir[olen - 1] == '/')
        olen--;
    char out_dir[4000];
    if (olen >= sizeof out_dir - 64)
        tool_usage_error("--out-dir: path too long");
    snprintf(out_dir, sizeof out_dir, "%.*s", (int)olen, o.out_dir);
    int st = dir_state(out_dir);
    if (st == 3)
        tool_usage_error("--out-dir %s exists and is not a folder", out_dir);
    if (st == 2 && !o.force) {
        fprintf(stderr, "%s: error: --out-dir %s exists and is not empty\n", tool_name, out_dir);
        tool_hint("--force replaces it");
        exit(2);
    }
    { /* the folder DIR goes into must exist (and take DIR.tmp.<pid>): checked now, before
       * the dataset is read, not when the shards are written */
        const char *slash = strrchr(out_dir, '/');
        char parent[4000];
        if (slash)
            snprintf(parent, sizeof parent, "%.*s", slash == out_dir ? 1 : (int)(slash - out_dir),
                     out_dir);
        else
            snprintf(parent, sizeof parent, ".");
        struct stat pst;
        if (stat(parent, &pst))
            tool_die(ERR_IO, "cannot create --out-dir %s: folder %s: %s", out_dir, parent,
                     strerror(errno));
        if (!S_ISDIR(pst.st_mode))
            tool_die(ERR_IO, "cannot create --out-dir %s: %s is not a folder", out_dir, parent);
        if (access(parent, W_OK | X_OK))
            tool_die(ERR_IO, "cannot create --out-dir %s: folder %s: %s", out_dir, parent,
                     strerror(errno));
    }

    double t0 = tool_now();
    dataset d;
    int rc = ds_load(o.in, &o.ds, &d);
    tool_progress_done();
    if (rc)
        tool_fail(rc);
    tool_log(2, "loaded %s: %lld train, %lld test in %.2f s (%d threads)", d.name,
             (long long)d.train.n, (long long)d.test.n, tool_now() - t0, pool_threads());
    if (o.test_list == NULL && d.format == DS_LIST)
        tool_log(1, "no --test-list: no test.mpk.zst will be written");

    int C = d.n_classes, K = o.sp.clients;
    int64_t *source_counts = calloc((size_t)C, sizeof *source_counts);
    int64_t *class_counts = calloc((size_t)C, sizeof *class_counts);
    int64_t *pos = NULL, n_lt = 0;
    if (!source_counts || !class_counts)
        tool_die(ERR_INTERNAL, "out of memory");
    for (int64_t i = 0; i < d.train.n; i++)
        source_counts[d.train.labels[i]]++;
    if ((rc = lt_select(d.train.labels, d.train.n, C, o.imb, o.profile, o.sp.seed, &pos, &n_lt,
                        class_counts)))
        tool_fail(rc);
    int32_t *lt_labels = malloc(((size_t)n_lt + 1) * sizeof *lt_labels);
    if (!lt_labels)
        tool_die(ERR_INTERNAL, "out of memory");
    for (int64_t i = 0; i < n_lt; i++)
        lt_labels[i] = d.train.labels[pos[i]];
    split_result sp;
    if (n_lt < K) {
        fprintf(stderr, "%s: error: %d clients but only %lld training samples after the long "
                "tail\n", tool_name, K, (long long)n_lt);
        tool_hint("lower --clients or --if");
        exit(2);
    }
    if ((rc = split_make(lt_labels, n_lt, C, &o.sp, &sp)))
        tool_fail(rc);

    int64_t *counts = calloc((size_t)K * C, sizeof *counts);
    int64_t *sizes = calloc((size_t)K, sizeof *sizes);
    if (!counts || !sizes)
        tool_die(ERR_INTERNAL, "out of memory");
    for (int k = 0; k < K; k++) {
        sizes[k] = sp.offsets[k + 1] - sp.offsets[k];
        for (int64_t i = sp.offsets[k]; i < sp.offsets[k + 1]; i++) {
            sp.items[i] = pos[sp.items[i]]; /* LT position -> source index */
            counts[(size_t)k * C + d.train.labels[sp.items[i]]]++;
        }
    }

    /* build everything under out_dir.tmp.<pid>, then rename */
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp.%ld", out_dir, (long)getpid());
    rm_tree(tmp_dir);
    if (mkdir(tmp_dir, 0777) != 0) {
        int e = errno;
        tmp_dir[0] = 0;
        tool_die(ERR_IO, "cannot create %s.tmp.%ld: %s", out_dir, (long)getpid(), strerror(e));
    }
    bool encoded = d.train.pixels == NULL;
    int width = 2;
    for (int k = K - 1; k >= 100; k /= 10)
        width++;
    char path[4200];
    double t1 = tool_now();
    for (int k = 0; k < K; k++) {
        char num[16], name[64];
        int nd = snprintf(num, sizeof num, "%d", k);
        snprintf(name, sizeof name, "client-%.*s%s.mpk.zst", nd < width ? width - nd : 0,
                 "0000000000", num);
        path_in(path, sizeof path, name);
        tool_progress("writing %s", name);
        if ((rc = write_shard(path, &o, &d, &d.train, "train", k, sp.items + sp.offsets[k],
                              sizes[k])))
            fail(rc);
    }
    if (d.has_test) {
        int64_t *all = malloc(((size_t)d.test.n + 1) * sizeof *all);
        if (!all)
            fail(err_set(ERR_INTERNAL, "out of memory"));
        for (int64_t i = 0; i < d.test.n; i++)
            all[i] = i;
        path_in(path, sizeof path, "test.mpk.zst");
        rc = write_shard(path, &o, &d, &d.test, "test", -1, all, d.test.n);
        free(all);
        if (rc)
            fail(rc);
    }
    tool_progress_done();
    path_in(path, sizeof path, "partition.mpk.zst");
    if ((rc = write_partition_record(path, &o, &d, counts, class_counts, source_counts, sizes,
                                     sp.tries, encoded)))
        fail(rc);
    report rp = {&o, &d, counts, class_counts, sizes, n_lt};
    path_in(path, sizeof path, "partition.csv");
    if ((rc = write_file_atomic(path, emit_csv, &rp)))
        fail(rc);
    path_in(path, sizeof path, "partition.svg");
    if ((rc = write_file_atomic(path, emit_svg, &rp)))
        fail(rc);

    /* into place: an empty or (with --force) old folder is replaced */
    st = dir_state(out_dir);
    char old[4100] = "";
    if (st == 1 && rmdir(out_dir) != 0)
        fail(err_set(ERR_IO, "cannot replace empty folder %s: %s", out_dir, strerror(errno)));
    if (st == 2) {
        if (!o.force) {
            cleanup();
            tool_die(ERR_USAGE, "--out-dir %s appeared while partitioning", out_dir);
        }
        snprintf(old, sizeof old, "%s.old.%ld", out_dir, (long)getpid());
        if (rename(out_dir, old) != 0)
            fail(err_set(ERR_IO, "cannot move old %s aside: %s", out_dir, strerror(errno)));
    }
    if (st == 3)
        fail(err_set(ERR_USAGE, "--out-dir %s exists and is not a folder", out_dir));
    if (rename(tmp_dir, out_dir) != 0) {
        int e = errno;
        if (old[0])
            rename(old, out_dir);
        fail(err_set(ERR_IO, "cannot rename %s to %s: %s", tmp_dir, out_dir, strerror(e)));
    }
    tmp_dir[0] = 0;
    if (old[0])
        rm_tree(old);

    print_summary(&o, &d, counts, class_counts, sizes, n_lt, sp.tries);
    tool_log(1, "wrote %s: %d client shards%s, partition.{mpk.zst,csv,svg} (%.2f s; %.2f s "
             "writing)", out_dir, K, d.has_test ? ", test" : "", tool_now() - t0,
             tool_now() - t1);

    split_free(&sp);
    free(counts);
    free(sizes);
    free(lt_labels);
    free(pos);
    free(source_counts);
    free(class_counts);
    ds_free(&d);
    return 0;
}
