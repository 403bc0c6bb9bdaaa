/* dataset.c - CIFAR binary batches, image folders and list files into labels + pixels
 * (see dataset.h).  Image files are read and decoded on the thread pool (pool.h), each
 * thread taking indices from an atomic counter; each sample has its own output slot, so the
 * result does not depend on the thread count, and the error reported is always the one of
 * the lowest failing sample.
 *
 * Not here: long-tail selection, splits, record writing. */
#include "dataset.h"

#include "err.h"
#include "image.h"
#include "utf8.h"
#include "pool.h"
#include "tool.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CIFAR_PIXELS 3072
#define MAX_IMAGE_FILE ((size_t)256 << 20)
#define MAX_LIST_FILE ((size_t)1 << 30)

static const char *const format_names[] = {"auto", "cifar10", "cifar100", "folder", "list"};

const char *ds_format_name(ds_format f) { return (unsigned)f < 5 ? format_names[f] : "?"; }

int ds_format_parse(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (strcmp(s, format_names[i]) == 0)
            return i;
    return -1;
}

void ds_opts_default(ds_opts *o)
{
    memset(o, 0, sizeof *o);
    o->small_max = 64;
}

static void free_strs(char **v, int64_t n)
{
    if (!v)
        return;
    for (int64_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void set_free(ds_set *s)
{
    free(s->labels);
    free(s->pixels);
    free_strs(s->paths, s->n);
    memset(s, 0, sizeof *s);
}

void ds_free(dataset *d)
{
    if (!d)
        return;
    free_strs(d->classes, d->n_classes);
    set_free(&d->train);
    set_free(&d->test);
    memset(d, 0, sizeof *d);
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    size_t at = la;
    if (la && a[la - 1] != '/')
        p[at++] = '/';
    memcpy(p + at, b, lb + 1);
    return p;
}

static int path_kind(const char *p) /* 0 missing, 1 file, 2 dir */
{
    struct stat st;
    if (stat(p, &st) != 0)
        return 0;
    return S_ISDIR(st.st_mode) ? 2 : 1;
}

static char *trim(char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

int ds_read_names(const char *path, char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    void *buf;
    size_t len;
    int rc = image_read_file(path, (size_t)64 << 20, &buf, &len);
    if (rc)
        return rc == ERR_IO ? err_set(ERR_IO, "%s: cannot read class names: %s", path,
                                      strerror(errno))
                            : rc;
    char *text = realloc(buf, len + 1);
    if (!text) {
        free(buf);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    text[len] = 0;
    if (memchr(text, 0, len)) {
        free(text);
        return err_set(ERR_FORMAT, "%s: class names file holds NUL bytes (binary?)", path);
    }
    size_t ok = utf8_valid_prefix((const unsigned char *)text, len);
    if (ok < len) {
        int64_t line = 1;
        for (size_t k = 0; k < ok; k++)
            line += text[k] == '\n';
        free(text);
        return err_set(ERR_FORMAT, "%s: line %lld: not UTF-8 text (byte %zu of the file)", path,
                       (long long)line, ok + 1);
    }
    int cap = 16, cnt = 0;
    int64_t lineno = 0, blank = 0; /* blank: the first blank line since the last name */
    char **names = malloc((size_t)cap * sizeof *names);
    for (char *line = text, *next; line && *line && names; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        lineno++;
        char *t = trim(line);
        if (!*t) {
            blank = blank ? blank : lineno;
            continue;
        }
        if (blank) { /* blank lines after the last name are harmless; between names, not */
            free_strs(names, cnt);
            free(text);
            return err_set(ERR_FORMAT,
                           "%s: line %lld: blank line among the class names (one name per line; "
                           "a gap would shift every later class to another label)",
                           path, (long long)blank);
        }
        if (cnt == cap) {
            char **nn = realloc(names, (size_t)(cap *= 2) * sizeof *names);
            if (!nn) {
                free_strs(names, cnt);
                names = NULL;
                break;
            }
            names = nn;
        }
        if (!(names[cnt++] = strdup(t))) {
            free_strs(names, cnt - 1);
            names = NULL;
        }
    }
    free(text);
    if (!names)
        return err_set(ERR_INTERNAL, "out of memory");
    if (cnt == 0) {
        free(names);
        return err_set(ERR_FORMAT, "%s: no class names", path);
    }
    for (int i = 0; i < cnt; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                rc = err_set(ERR_FORMAT, "%s: class name '%s' appears twice", path, names[i]);
                free_strs(names, cnt);
                return rc;
            }
    *out = names;
    *n = cnt;
    return 0;
}

/* ---- CIFAR ---- */

static int cifar_append(const char *path, int label_bytes, int n_classes, ds_set *s,
                        int64_t *cap)
{
    int kind = path_kind(path);
    if (kind != 1)
        return err_set(ERR_FORMAT, "%s: missing (CIFAR layout incomplete)", path);
    void *buf;
    size_t len;
    int rc = image_read_file(path, (size_t)1 << 34, &buf, &len);
    if (rc)
        return rc;
    size_t rs = (size_t)label_bytes + CIFAR_PIXELS;
    if (len == 0 || len % rs != 0) {
        free(buf);
        return err_set(ERR_FORMAT,
                       "%s: %zu bytes is not a whole number of %zu-byte records (short or "
                       "wrong file?)",
                       path, len, rs);
    }
    int64_t m = (int64_t)(len / rs);
    if (s->n + m > *cap) {
        int64_t nc = (s->n + m) * 2;
        int32_t *l = realloc(s->labels, (size_t)nc * sizeof *l);
        if (l)
            s->labels = l;
        uint8_t *p = realloc(s->pixels, (size_t)nc * CIFAR_PIXELS);
        if (p)
            s->pixels = p;
        if (!l || !p) {
            free(buf);
            return err_set(ERR_INTERNAL, "out of memory reading %s", path);
        }
        *cap = nc;
    }
    const uint8_t *b = buf;
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *r = b + (size_t)i * rs;
        int lab = r[label_bytes - 1]; /* CIFAR-100: [coarse, fine] - the fine label */
        if (label_bytes == 2 && r[0] >= 20) {
            free(buf);
            return err_set(ERR_FORMAT, "%s: record %lld: coarse label %d outside 0..19", path,
                           (long long)i, r[0]);
        }
        if (lab >= n_classes) {
            free(buf);
            return err_set(ERR_FORMAT, "%s: record %lld: unknown label %d (%d classes)", path,
                           (long long)i, lab, n_classes);
        }
        s->labels[s->n + i] = lab;
        memcpy(s->pixels + (size_t)(s->n + i) * CIFAR_PIXELS, r + label_bytes, CIFAR_PIXELS);
    }
    s->n += m;
    s->h = s->w = 32;
    free(buf);
    return 0;
}

static int load_cifar(const char *dir, const ds_opts *o, dataset *d)
{
    bool c10 = d->format == DS_CIFAR10;
    char *names_path = o->classes_file ? strdup(o->classes_file)
                                       : join(dir, c10 ? "batches.meta.txt"
                                                       : "fine_label_names.txt");
    if (!names_path)
        return err_set(ERR_INTERNAL, "out of memory");
    int rc = path_kind(names_path) == 1
                 ? ds_read_names(names_path, &d->classes, &d->n_classes)
                 : err_set(ERR_FORMAT, "%s: missing (class names)", names_path);
    free(names_path);
    if (rc)
        return rc;
    if (d->n_classes > 256)
        return err_set(ERR_FORMAT, "CIFAR layout: %d class names (at most 256)", d->n_classes);
    snprintf(d->name, sizeof d->name, "%s", c10 ? "cifar10" : "cifar100");
    int lb = c10 ? 1 : 2;
    int64_t cap = 0;
    for (int i = 0; i < (c10 ? 5 : 1) && !rc; i++) {
        char f[32];
        snprintf(f, sizeof f, c10 ? "data_batch_%d.bin" : "train.bin", i + 1);
        char *p = join(dir, f);
        rc = p ? cifar_append(p, lb, d->n_classes, &d->train, &cap)
               : err_set(ERR_INTERNAL, "out of memory");
        free(p);
    }
    if (rc)
        return rc;
    char *p = join(dir, c10 ? "test_batch.bin" : "test.bin");
    cap = 0;
    rc = p ? cifar_append(p, lb, d->n_classes, &d->test, &cap)
           : err_set(ERR_INTERNAL, "out of memory");
    free(p);
    d->has_test = rc == 0;
    return rc;
}

/* ---- image files: read, probe, decode on the thread pool ---- */

typedef struct decode_job {
    ds_set *s;
    const ds_opts *o;
    uint8_t **pix; /* [n] decoded [3,h,w] or NULL */
    int *dims;     /* [2n] w, h */
    atomic_llong next, done;
    atomic_llong err_idx; /* lowest failing sample so far (n when none) */
    pthread_mutex_t mu;
    int err_code;
    char err_msg[1024];
    const char *what;
} decode_job;

/* a pool task: takes samples from p->next until none are left */
static void decode_task(void *arg, int tid, int nt)
{
    (void)tid, (void)nt;
    decode_job *p = arg;
    ds_set *s = p->s;
    bool first = false;
    for (;;) {
        long long i = atomic_fetch_add(&p->next, 1);
        if (i >= s->n)
            break;
        if (i == 0)
            first = true; /* the thread that took sample 0 reports progress */
        if (i > atomic_load(&p->err_idx))
            continue;
        void *buf = NULL;
        size_t len = 0;
        int w = 0, h = 0;
        int rc = image_read_file(s->paths[i], MAX_IMAGE_FILE, &buf, &len);
        if (!rc)
            rc = image_probe(buf, len, s->paths[i], &w, &h);
        bool decode = p->o->store == DS_STORE_PIXELS ||
                      (p->o->store == DS_STORE_AUTO && w <= p->o->small_max &&
                       h <= p->o->small_max);
        if (!rc && decode) {
            image im;
            rc = image_decode(buf, len, s->paths[i], &im);
            if (!rc) {
                p->pix[i] = im.chw;
                w = im.w;
                h = im.h;
            }
        }
        free(buf);
        p->dims[2 * i] = w;
        p->dims[2 * i + 1] = h;
        if (rc) {
            pthread_mutex_lock(&p->mu);
            if (i < atomic_load(&p->err_idx)) {
                atomic_store(&p->err_idx, i);
                p->err_code = rc == ERR_IO ? ERR_FORMAT : rc; /* unreadable input */
                snprintf(p->err_msg, sizeof p->err_msg, "%s", err_msg());
            }
            pthread_mutex_unlock(&p->mu);
        }
        long long dn = atomic_fetch_add(&p->done, 1) + 1;
        if (first && p->o->progress && dn % 2000 == 0)
            p->o->progress(p->what, dn, s->n);
    }
}

static int decode_set(ds_set *s, const ds_opts *o, const char *what)
{
    decode_job p;
    memset(&p, 0, sizeof p);
    p.s = s;
    p.o = o;
    p.what = what;
    p.pix = calloc((size_t)s->n + 1, sizeof *p.pix);
    p.dims = calloc(2 * (size_t)s->n + 2, sizeof *p.dims);
    if (!p.pix || !p.dims) {
        free(p.pix);
        free(p.dims);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    atomic_init(&p.next, 0);
    atomic_init(&p.done, 0);
    atomic_init(&p.err_idx, s->n);
    pthread_mutex_init(&p.mu, NULL);
    pool_run(decode_task, &p);
    pthread_mutex_destroy(&p.mu);
    int rc = 0;
    if (atomic_load(&p.err_idx) < s->n) {
        rc = err_set(p.err_code, "%s", p.err_msg);
        goto done;
    }
    bool all = true, same = true;
    int mx = 0;
    for (int64_t i = 0; i < s->n; i++) {
        all = all && p.pix[i];
        same = same && p.dims[2 * i] == p.dims[0] && p.dims[2 * i + 1] == p.dims[1];
        mx = p.dims[2 * i] > mx ? p.dims[2 * i] : mx;
        mx = p.dims[2 * i + 1] > mx ? p.dims[2 * i + 1] : mx;
    }
    s->max_side = mx;
    if (o->store == DS_STORE_PIXELS && !same) {
        int64_t j = 1;
        while (j < s->n && p.dims[2 * j] == p.dims[0] && p.dims[2 * j + 1] == p.dims[1])
            j++;
        rc = err_set(ERR_FORMAT,
                     "images differ in size (%s is %dx%d, %s is %dx%d): cannot store them "
                     "as one pixel tensor; hint: --store encoded",
                     s->paths[0], p.dims[0], p.dims[1], s->paths[j], p.dims[2 * j],
                     p.dims[2 * j + 1]);
        goto done;
    }
    if (all && same && s->n > 0) {
        s->w = p.dims[0];
        s->h = p.dims[1];
        size_t sz = 3 * (size_t)s->w * s->h;
        s->pixels = malloc(sz * (size_t)s->n);
        if (!s->pixels) {
            rc = err_set(ERR_INTERNAL, "out of memory for %lld decoded images",
                         (long long)s->n);
            goto done;
        }
        for (int64_t i = 0; i < s->n; i++)
            memcpy(s->pixels + sz * (size_t)i, p.pix[i], sz);
    }
done:
    for (int64_t i = 0; i < s->n; i++)
        free(p.pix[i]);
    free(p.pix);
    free(p.dims);
    return rc;
}

int ds_read_encoded(const ds_set *s, int64_t i, void **buf, size_t *len)
{
    if (!s->paths || i < 0 || i >= s->n)
        return err_set(ERR_INTERNAL, "ds_read_encoded: no sample %lld", (long long)i);
    int rc = image_read_file(s->paths[i], MAX_IMAGE_FILE, buf, len);
    return rc == ERR_IO ? ERR_FORMAT : rc;
}

/* ---- folders ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_image_name(const char *n)
{
    const char *dot = strrchr(n, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
                   !strcasecmp(dot, ".png"));
}

/* Sorted entries of dir (no hidden ones): sub-folders (want_dirs) or image files. */
static int list_dir(const char *dir, bool want_dirs, char ***out, int64_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return err_set(ERR_FORMAT, "%s: cannot open folder: %s", dir, strerror(errno));
    int64_t cap = 64, cnt = 0;
    char **v = malloc((size_t)cap * sizeof *v);
    struct dirent *e;
    int rc = 0;
    while (v && (e = readdir(dp))) {
        if (e->d_name[0] == '.')
            continue;
        char *full = join(dir, e->d_name);
        if (!full) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        int k = path_kind(full);
        free(full);
        if (want_dirs ? k != 2 : (k != 1 || !is_image_name(e->d_name)))
            continue;
        if (cnt == cap) {
            char **nv = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv) {
                rc = err_set(ERR_INTERNAL, "out of memory");
                break;
            }
            v = nv;
        }
        if (!(v[cnt] = strdup(e->d_name))) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        cnt++;
    }
    closedir(dp);
    if (!v)
        return err_set(ERR_INTERNAL, "out of memory");
    if (rc) {
        free_strs(v, cnt);
        return rc;
    }
    qsort(v, (size_t)cnt, sizeof *v, cmp_str);
    *out = v;
    *n = cnt;
    return 0;
}

static int class_of(const dataset *d, const char *name)
{
    for (int c = 0; c < d->n_classes; c++)
        if (strcmp(d->classes[c], name) == 0)
            return c;
    return -1;
}

static int folder_set(const char *root, const char *sub, dataset *d, ds_set *s)
{
    char *base = join(root, sub);
    if (!base)
        return err_set(ERR_INTERNAL, "out of memory");
    char **dirs;
    int64_t nd;
    int rc = list_dir(base, true, &dirs, &nd);
    if (rc) {
        free(base);
        return rc;
    }
    if (nd == 0)
        rc = err_set(ERR_FORMAT, "%s: no class folders", base);
    for (int64_t i = 0; i < nd && !rc; i++)
        if (class_of(d, dirs[i]) < 0)
            rc = err_set(ERR_FORMAT, "%s/%s: class folder not in the class list", base,
                         dirs[i]);
    int64_t cap = 0;
    for (int c = 0; c < d->n_classes && !rc; c++) {
        char *cdir = join(base, d->classes[c]);
        char **files = NULL;
        int64_t nf = 0;
        if (!cdir) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        if (path_kind(cdir) != 2)
            rc = err_set(ERR_FORMAT, "%s: class folder missing", cdir);
        else if (!(rc = list_dir(cdir, false, &files, &nf)) && nf == 0)
            rc = err_set(ERR_FORMAT, "%s: class folder has no .jpg/.jpeg/.png images", cdir);
        if (!rc && s->n + nf > cap) {
            int64_t nc = (s->n + nf) * 2;
            int32_t *l = realloc(s->labels, (size_t)nc * sizeof *l);
            if (l)
                s->labels = l;
            char **pp = realloc(s->paths, (size_t)nc * sizeof *pp);
            if (pp)
                s->paths = pp;
            if (!l || !pp)
                rc = err_set(ERR_INTERNAL, "out of memory");
            else
                cap = nc;
        }
        for (int64_t i = 0; i < nf && !rc; i++) {
            s->paths[s->n] = join(cdir, files[i]);
            if (!s->paths[s->n]) {
                rc = err_set(ERR_INTERNAL, "out of memory");
                break;
            }
            s->labels[s->n++] = c;
        }
        free_strs(files, nf);
        free(cdir);
    }
    free_strs(dirs, nd);
    free(base);
    return rc;
}

/* The last path component, without trailing slashes, into buf. */
static void base_name(const char *path, char *buf, size_t len)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    snprintf(buf, len, "%.*s", (int)(n - b), path + b);
}

static int load_folder(const char *root, const ds_opts *o, dataset *d)
{
    char *train = join(root, "train");
    if (!train)
        return err_set(ERR_INTERNAL, "out of memory");
    int rc = 0;
    if (o->classes_file) {
        rc = ds_read_names(o->classes_file, &d->classes, &d->n_classes);
    } else {
        char **dirs;
        int64_t nd;
        rc = list_dir(train, true, &dirs, &nd);
        if (!rc && nd == 0) {
            free_strs(dirs, nd);
            rc = err_set(ERR_FORMAT, "%s: no class folders", train);
        } else if (!rc && nd > INT_MAX) {
            free_strs(dirs, nd);
            rc = err_set(ERR_FORMAT, "%s: too many class folders", train);
        } else if (!rc) {
            d->classes = dirs;
            d->n_classes = (int)nd;
        }
    }
    free(train);
    if (rc)
        return rc;
    base_name(root, d->name, sizeof d->name);
    if ((rc = folder_set(root, "train", d, &d->train)))
        return rc;
    char *test = join(root, "test");
    d->has_test = test && path_kind(test) == 2;
    free(test);
    if (d->has_test && (rc = folder_set(root, "test", d, &d->test)))
        return rc;
    d->files_read = d->train.n + d->test.n;
    if ((rc = decode_set(&d->train, o, "train")))
        return rc;
    return d->has_test ? decode_set(&d->test, o, "test") : 0;
}

/* ---- list files ---- */

static int list_set(const char *list, const char *root, int n_classes_known, ds_set *s,
                    int *max_label, int64_t *max_line)
{
    void *buf;
    size_t len;
    int rc = image_read_file(list, MAX_LIST_FILE, &buf, &len);
    if (rc)
        return rc == ERR_IO ? err_set(ERR_IO, "%s: cannot read list file", list) : rc;
    char *text = realloc(buf, len + 1);
    if (!text) {
        free(buf);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    text[len] = 0;
    int64_t cap = 0, lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !rc;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++; /* counts non-empty lines only (strtok skips empty ones) */
        char *t = trim(line);
        if (!*t || *t == '#')
            continue;
        char *sp = t + strlen(t);
        while (sp > t && !isspace((unsigned char)sp[-1]))
            sp--;
        if (sp == t) {
            rc = err_set(ERR_FORMAT, "%s: line %lld: expected 'relative/path label'", list,
                         (long long)lineno);
            break;
        }
        char *lab = sp;
        sp[-1] = 0;
        char *rel = trim(t);
        int64_t v;
        if (parse_int(lab, 0, 1 << 30, &v) != 0) {
            rc = err_set(ERR_FORMAT, "%s: line %lld: bad label '%s'", list, (long long)lineno,
                         lab);
            break;
        }
        if (n_classes_known > 0 && v >= n_classes_known) {
            rc = err_set(ERR_FORMAT, "%s: line %lld: unknown label %lld (%d classes)", list,
                         (long long)lineno, (long long)v, n_classes_known);
            break;
        }
        if (s->n == cap) {
            int64_t nc = cap ? cap * 2 : 1024;
            int32_t *l = realloc(s->labels, (size_t)nc * sizeof *l);
            if (l)
                s->labels = l;
            char **pp = realloc(s->paths, (size_t)nc * sizeof *pp);
            if (pp)
                s->paths = pp;
            if (!l || !pp) {
                rc = err_set(ERR_INTERNAL, "out of memory");
                break;
            }
            cap = nc;
        }
        s->paths[s->n] = rel[0] == '/' ? strdup(rel) : join(root, rel);
        if (!s->paths[s->n]) {
            rc = err_set(ERR_INTERNAL, "out of memory");
            break;
        }
        s->labels[s->n++] = (int32_t)v;
        if (v > *max_label) {
            *max_label = (int)v;
            *max_line = lineno;
        }
    }
    free(text);
    if (!rc && s->n == 0)
        rc = err_set(ERR_FORMAT, "%s: no samples", list);
    return rc;
}

/* Without a names file the classes are 0..max_label, so each must have a training sample:
 * a stray large label (100000) would otherwise make as many classes, all but a few empty. */
static int list_check_classes(const char *list, const ds_set *s, int max_label,
                              int64_t max_line)
{
    if ((int64_t)max_label >= s->n) /* more classes than samples: some are empty */
        return err_set(ERR_FORMAT,
                       "%s: line %lld: label %d, but there are only %lld samples; without "
                       "--classes the labels must number the classes 0..C-1, each with a sample",
                       list, (long long)max_line, max_label, (long long)s->n);
    char *seen = calloc((size_t)max_label + 1, 1);
    if (!seen)
        return err_set(ERR_INTERNAL, "out of memory for %d classes", max_label + 1);
    for (int64_t i = 0; i < s->n; i++)
        seen[s->labels[i]] = 1;
    int missing = 0, first = -1;
    for (int c = 0; c <= max_label; c++)
        if (!seen[c]) {
            first = first < 0 ? c : first;
            missing++;
        }
    free(seen);
    if (missing)
        return err_set(ERR_FORMAT,
                       "%s: line %lld: label %d, but the classes 0..%d include %d without a "
                       "sample (the first: %d); without --classes the labels must number the "
                       "classes 0..C-1",
                       list, (long long)max_line, max_label, max_label, missing, first);
    return 0;
}

static int load_list(const char *list, const ds_opts *o, dataset *d)
{
    int rc = 0;
    if (o->classes_file && (rc = ds_read_names(o->classes_file, &d->classes, &d->n_classes)))
        return rc;
    char *root = NULL;
    if (o->root)
        root = strdup(o->root);
    else {
        root = strdup(list);
        char *sl = root ? strrchr(root, '/') : NULL;
        if (sl)
            sl[sl == root ? 1 : 0] = 0;
        else if (root) {
            free(root);
            root = strdup(".");
        }
    }
    if (!root)
        return err_set(ERR_INTERNAL, "out of memory");
    if (path_kind(root) != 2) {
        rc = err_set(ERR_USAGE, "--root %s: not a folder", root);
        free(root);
        return rc;
    }
    int max_label = -1;
    int64_t max_line = 0;
    rc = list_set(list, root, d->n_classes, &d->train, &max_label, &max_line);
    if (!rc && !d->n_classes)
        rc = list_check_classes(list, &d->train, max_label, max_line);
    if (!rc && o->test_list) {
        if (path_kind(o->test_list) != 1)
            rc = err_set(ERR_IO, "--test-list %s: no such file", o->test_list);
        else /* without names, the classes are the training list's */
            rc = list_set(o->test_list, root, d->n_classes ? d->n_classes : max_label + 1,
                          &d->test, &max_label, &max_line);
        d->has_test = rc == 0;
    }
    free(root);
    if (rc)
        return rc;
    if (!d->classes) { /* no names given: "0".."C-1" */
        d->n_classes = max_label + 1;
        d->classes = calloc((size_t)d->n_classes, sizeof *d->classes);
        for (int c = 0; d->classes && c < d->n_classes; c++) {
            char b[16];
            snprintf(b, sizeof b, "%d", c);
            if (!(d->classes[c] = strdup(b)))
                return err_set(ERR_INTERNAL, "out of memory");
        }
        if (!d->classes)
            return err_set(ERR_INTERNAL, "out of memory");
    }
    const char *b = strrchr(list, '/');
    snprintf(d->name, sizeof d->name, "%s", b ? b + 1 : list);
    char *dot = strrchr(d->name, '.');
    if (dot && dot != d->name)
        *dot = 0;
    d->files_read = d->train.n + d->test.n;
    if ((rc = decode_set(&d->train, o, "train")))
        return rc;
    return d->has_test ? decode_set(&d->test, o, "test") : 0;
}

/* ---- entry ---- */

int ds_load(const char *path, const ds_opts *o, dataset *out)
{
    memset(out, 0, sizeof *out);
    int kind = path_kind(path);
    if (!kind)
        return err_set(ERR_IO, "%s: no such file or folder", path); /* I/O (4), as every tool's missing input */
    ds_format f = o->format;
    if (f == DS_AUTO) {
        char *a = join(path, "data_batch_1.bin"), *b = join(path, "train.bin"),
             *c = join(path, "train");
        if (!a || !b || !c)
            f = DS_AUTO;
        else if (kind == 1)
            f = DS_LIST;
        else if (path_kind(a) == 1)
            f = DS_CIFAR10;
        else if (path_kind(b) == 1)
            f = DS_CIFAR100;
        else if (path_kind(c) == 2)
            f = DS_FOLDER;
        free(a);
        free(b);
        free(c);
        if (f == DS_AUTO)
            return err_set(ERR_USAGE,
                           "%s: not a dataset layout I know (expected data_batch_1.bin, "
                           "train.bin, train/<class>/ or a list file); hint: --format",
                           path);
    }
    if (f == DS_LIST ? kind != 1 : kind != 2)
        return err_set(ERR_USAGE, "%s: format %s needs a %s", path, ds_format_name(f),
                       f == DS_LIST ? "list file" : "folder");
    out->format = f;
    int rc;
    switch (f) {
    case DS_CIFAR10:
    case DS_CIFAR100:
        rc = load_cifar(path, o, out);
        break;
    case DS_FOLDER:
        rc = load_folder(path, o, out);
        break;
    default:
        rc = load_list(path, o, out);
        break;
    }
    if (rc)
        ds_free(out);
    return rc;
}
