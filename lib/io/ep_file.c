/* ep_file.c - the file and pipe transport behind endpoint.h (API in ep_file.h): reading
 * records from stdin or a file, writing them to stdout or to PATH.tmp.<pid> renamed on
 * commit, removing temporaries on abort, exit() and SIGINT/SIGTERM/SIGHUP/SIGPIPE, and
 * removing the stale temporaries a SIGKILLed run left behind.  Not here: end records and
 * their counts (endpoint.c), the record codec (record.c). */
#include "ep_file.h"

#include "err.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- temporary files: removed on abort, exit and fatal signals ---- */
#define MAX_TMP 64
static char *tmp_paths[MAX_TMP];
static volatile sig_atomic_t tmp_hooked;

static void tmp_cleanup(void)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (tmp_paths[i])
            unlink(tmp_paths[i]);
}

static void tmp_signal(int sig)
{
    tmp_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int tmp_register(char *path)
{
    if (!tmp_hooked) {
        tmp_hooked = 1;
        atexit(tmp_cleanup);
        int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
        for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
            struct sigaction sa = {0};
            sa.sa_handler = tmp_signal;
            sigemptyset(&sa.sa_mask);
            struct sigaction old;
            if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
                continue;
            sigaction(sigs[i], &sa, NULL);
        }
    }
    for (int i = 0; i < MAX_TMP; i++)
        if (!tmp_paths[i]) {
            tmp_paths[i] = path;
            return 0;
        }
    return err_set(ERR_INTERNAL, "too many open output files");
}

static void tmp_forget(const char *path)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (tmp_paths[i] == path)
            tmp_paths[i] = NULL;
}

/* SIGKILL (or a power cut) runs no handler: the temporary stays.  The next writer of the
 * same path removes it when its owner is gone.  A PID alive in another PID namespace that
 * shares this directory would look dead here; such setups should not share output paths. */
int ep_file_clean_stale(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    char dir[4096];
    if (dlen >= sizeof dir)
        return 0;
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(dlen ? dlen : 1), path); /* "/x" -> "/" */
    else
        snprintf(dir, sizeof dir, ".");
    size_t blen = strlen(base);
    if (blen == 0)
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0)
            continue;
        const char *digits = n + blen + 5;
        if (*digits < '1' || *digits > '9')
            continue;
        char *end;
        errno = 0;
        long pid = strtol(digits, &end, 10);
        if (*end || errno || pid <= 0 || pid > INT_MAX || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or not ours to signal (EPERM): leave it */
        char full[4096 + 256];
        snprintf(full, sizeof full, "%s/%s", dir, n);
        struct stat st;
        if (lstat(full, &st) || !S_ISREG(st.st_mode) || st.st_uid != getuid())
            continue;
        if (unlink(full) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

/* ---- reading ---- */
struct ep_file_in {
    char name[256];
    FILE *f;
    bool close_f;
    bool regular; /* a regular file, not a pipe, socket or device */
    rec_instream *in;
};

static long file_read(void *ctx, void *buf, size_t cap)
{
    ep_file_in *r = ctx;
    size_t n = fread(buf, 1, cap, r->f);
    if (n == 0 && ferror(r->f))
        return err_set(ERR_IO, "cannot read %s: %s", r->name, strerror(errno));
    return (long)n;
}

ep_file_in *ep_file_in_open(const char *spec, const char *name, const rec_limits *lim)
{
    ep_file_in *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    if (strcmp(spec, "-") == 0) {
        r->f = stdin;
    } else {
        struct stat st;
        if (stat(spec, &st)) {
            err_set(ERR_IO, "cannot open %s: %s", spec, strerror(errno));
            goto fail;
        }
        if (S_ISDIR(st.st_mode)) {
            err_set(ERR_IO, "cannot read %s: it is a directory, not a record stream", spec);
            goto fail;
        }
        r->f = fopen(spec, "rb");
        if (!r->f) {
            err_set(ERR_IO, "cannot open %s: %s", spec, strerror(errno));
            goto fail;
        }
        r->close_f = true;
    }
    struct stat fst;
    r->regular = fstat(fileno(r->f), &fst) == 0 && S_ISREG(fst.st_mode);
    r->in = rec_instream_new(file_read, r, r->name, lim);
    if (!r->in) {
        err_set(ERR_INTERNAL, "out of memory");
        goto fail;
    }
    return r;
fail:
    ep_file_in_close(r);
    return NULL;
}

int ep_file_in_next(ep_file_in *f, record **out) { return rec_instream_next(f->in, out); }

bool ep_file_in_is_regular(const ep_file_in *f) { return f->regular; }

void ep_file_in_close(ep_file_in *f)
{
    if (!f)
        return;
    rec_instream_free(f->in);
    if (f->close_f && f->f)
        fclose(f->f);
    free(f);
}

/* ---- writing ---- */
struct ep_file_out {
    char name[256];
    char *final_path, *tmp_path; /* NULL for stdout and devices */
    FILE *f;
    bool close_f; /* a device or FIFO opened in place */
};

static int file_sink(void *ctx, const void *buf, size_t len)
{
    ep_file_out *w = ctx;
    if (fwrite(buf, 1, len, w->f) != len)
        return err_set(ERR_IO, "cannot write %s: %s", w->name, strerror(errno));
    return 0;
}

ep_file_out *ep_file_out_open(const char *spec, const char *name)
{
    ep_file_out *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(w->name, sizeof w->name, "%s", name);
    if (strcmp(spec, "-") == 0) {
        if (isatty(1)) {
            err_set(ERR_USAGE, "refusing to write binary records to a terminal; use -o FILE or a pipe");
            goto fail;
        }
        w->f = stdout;
        return w;
    }
    struct stat st;
    if (stat(spec, &st) == 0 && S_ISDIR(st.st_mode)) {
        err_set(ERR_IO, "cannot write %s: it is a directory", spec);
        goto fail;
    }
    if (stat(spec, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* a device or FIFO (/dev/null, a named pipe) is written in place: renaming a
         * temporary over it would replace /dev/null itself with a file when run as root */
        w->f = fopen(spec, "wb");
        if (!w->f) {
            err_set(ERR_IO, "cannot open %s: %s", spec, strerror(errno));
            goto fail;
        }
        w->close_f = true;
        return w;
    }
    ep_file_clean_stale(spec);
    size_t n = strlen(spec) + 32;
    w->final_path = strdup(spec);
    w->tmp_path = malloc(n);
    if (!w->final_path || !w->tmp_path) {
        err_set(ERR_INTERNAL, "out of memory");
        goto fail;
    }
    snprintf(w->tmp_path, n, "%s.tmp.%ld", spec, (long)getpid());
    /* registered (the signal handlers hooked) before the file exists: a TERM between the
     * two would otherwise kill the process by default and leave the temporary */
    if (tmp_register(w->tmp_path))
        goto fail;
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        err_set(ERR_IO, "cannot create %s: %s", w->tmp_path, strerror(errno));
        goto fail;
    }
    return w;
fail:
    ep_file_out_close(w, false);
    return NULL;
}

int ep_file_out_write(ep_file_out *w, const record *r, int zstd_level)
{
    return rec_encode(r, zstd_level, file_sink, w, NULL);
}

int ep_file_out_close(ep_file_out *w, bool commit)
{
    if (!w)
        return 0;
    int rc = 0;
    if (w->f) {
        if (fflush(w->f) && commit)
            rc = err_set(ERR_IO, "cannot write %s: %s", w->name, strerror(errno));
        if (w->tmp_path) {
            if (!rc && commit && fsync(fileno(w->f)) && errno != EINVAL)
                rc = err_set(ERR_IO, "cannot sync %s: %s", w->name, strerror(errno));
            if (fclose(w->f) && !rc && commit)
                rc = err_set(ERR_IO, "cannot close %s: %s", w->name, strerror(errno));
        } else if (w->close_f && fclose(w->f) && !rc && commit) {
            rc = err_set(ERR_IO, "cannot close %s: %s", w->name, strerror(errno));
        }
    }
    if (w->tmp_path) {
        if (commit && !rc && rename(w->tmp_path, w->final_path))
            rc = err_set(ERR_IO, "cannot rename %s to %s: %s", w->tmp_path, w->final_path,
                         strerror(errno));
        if (!commit || rc)
            unlink(w->tmp_path);
        tmp_forget(w->tmp_path);
    }
    free(w->tmp_path);
    free(w->final_path);
    free(w);
    return rc;
}
