/* endpoint.c - record streams over stdin/stdout, files and ZeroMQ (DESIGN section 3; API in
 * endpoint.h).  Files are written under a temporary name and renamed on commit; the temporary
 * is removed on abort, on exit() and on SIGINT/SIGTERM/SIGHUP/SIGPIPE, so a failed tool leaves
 * no output behind.  Not here: the record codec (record.c). */
#include "endpoint.h"

#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

void ep_opts_default(ep_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = 60000;
    o->max_msg_bytes = 64LL << 30;
    o->producers = 1;
    o->zstd_level = 3;
    rec_limits_default(&o->limits);
    const char *t = getenv("FEDSM_TIMEOUT_MS");
    if (t)
        o->timeout_ms = atoi(t);
}

bool ep_is_zmq(const char *spec)
{
    if (*spec == '@' || *spec == '>')
        spec++;
    return strncmp(spec, "tcp://", 6) == 0 || strncmp(spec, "ipc://", 6) == 0 ||
           strncmp(spec, "inproc://", 9) == 0;
}

/* ---- ZeroMQ context (one per process, terminated with its last socket) ---- */
static void *zctx;
static int zsockets;
static void *zmq_context(void)
{
    if (!zctx)
        zctx = zmq_ctx_new();
    return zctx;
}

/* Closes a socket; with the last one the context is terminated, which waits (up to each
 * socket's linger) until queued messages are delivered.  Without it a producer that exits
 * right after rec_writer_close() loses what is still queued, the end record included. */
static void zsock_close(void *s)
{
    zmq_close(s);
    if (--zsockets == 0) {
        while (zmq_ctx_term(zctx) != 0 && errno == EINTR)
            ;
        zctx = NULL;
    }
}

/* Opens a socket of type on spec (with @ / > prefixes). */
static void *zsock_open(const char *spec, int type, const ep_opts *o)
{
    bool bind = spec[0] == '@';
    const char *addr = spec + (spec[0] == '@' || spec[0] == '>');
    void *ctx = zmq_context();
    void *s = ctx ? zmq_socket(ctx, type) : NULL;
    if (!s) {
        err_set(ERR_IO, "cannot create ZeroMQ socket for %s: %s", spec, zmq_strerror(errno));
        return NULL;
    }
    zsockets++;
    int to = o->timeout_ms;
    int linger = o->timeout_ms < 0 ? -1 : o->timeout_ms;
    int one = 1;
    int64_t maxmsg = o->max_msg_bytes;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (type == ZMQ_PULL)
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (type == ZMQ_PUSH && !bind) /* block (up to the timeout) until a peer is there */
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one);
    int rc = bind ? zmq_bind(s, addr) : zmq_connect(s, addr);
    if (rc) {
        err_set(ERR_IO, "cannot %s %s: %s", bind ? "bind" : "connect to", addr,
                zmq_strerror(errno));
        zsock_close(s);
        return NULL;
    }
    return s;
}

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

/* ---- readers ---- */
struct rec_reader {
    char name[256];
    FILE *f;
    bool close_f;
    rec_instream *in;
    void *zs;
    ep_opts o;
    long returned;    /* records handed out */
    long seg_records; /* since the last end record (files) */
    int ends;
    long end_total;
    bool done;
};

static long file_read(void *ctx, void *buf, size_t cap)
{
    rec_reader *r = ctx;
    size_t n = fread(buf, 1, cap, r->f);
    if (n == 0 && ferror(r->f))
        return err_set(ERR_IO, "cannot read %s: %s", r->name, strerror(errno));
    return (long)n;
}

rec_reader *ep_open_reader(const char *spec, const ep_opts *opts)
{
    rec_reader *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (opts)
        r->o = *opts;
    else
        ep_opts_default(&r->o);
    snprintf(r->name, sizeof r->name, "%s", strcmp(spec, "-") ? spec : "<stdin>");
    if (ep_is_zmq(spec)) {
        r->zs = zsock_open(spec, ZMQ_PULL, &r->o);
        if (!r->zs)
            goto fail;
        return r;
    }
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
    r->in = rec_instream_new(file_read, r, r->name, &r->o.limits);
    if (!r->in) {
        err_set(ERR_INTERNAL, "out of memory");
        goto fail;
    }
    return r;
fail:
    rec_reader_close(r);
    return NULL;
}

const char *rec_reader_name(const rec_reader *r) { return r->name; }

void rec_reader_close(rec_reader *r)
{
    if (!r)
        return;
    rec_instream_free(r->in);
    if (r->close_f && r->f)
        fclose(r->f);
    if (r->zs)
        zsock_close(r->zs);
    free(r);
}

/* Handles an end record; returns 1 when the stream is over (ZeroMQ), 0 to go on, < 0. */
static int on_end(rec_reader *r, record *e)
{
    int64_t count = -1;
    if (rec_get_int(e, "count", &count) || count < 0) {
        rec_free(e);
        return err_set(ERR_FORMAT, "bad end record (stream %s, record %ld, field meta.count)",
                       r->name, r->returned);
    }
    rec_free(e);
    r->ends++;
    if (r->zs) {
        r->end_total += count;
        if (r->ends < (r->o.producers > 0 ? r->o.producers : 1))
            return 0;
        if (r->end_total != r->returned)
            return err_set(ERR_FORMAT,
                           "stream %s: producers sent %ld records but %ld arrived (ZeroMQ drops a "
                           "record larger than the reader's --max-msg of %lld bytes)",
                           r->name, r->end_total, r->returned, (long long)r->o.max_msg_bytes);
        return 1;
    }
    if (count != r->seg_records)
        return err_set(ERR_FORMAT,
                       "stream %s is incomplete: its end record counts %lld records, %ld read",
                       r->name, (long long)count, r->seg_records);
    r->seg_records = 0;
    return 0;
}

int rec_read(rec_reader *r, record **out)
{
    *out = NULL;
    while (!r->done) {
        record *rec = NULL;
        int rc;
        if (r->zs) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, r->zs, 0) < 0) {
                int e = errno;
                zmq_msg_close(&m);
                if (e == EAGAIN)
                    return err_set(ERR_IO,
                                   "timed out after %.1f s waiting on %s (%ld records, %d of %d "
                                   "producers finished)",
                                   r->o.timeout_ms / 1000.0, r->name, r->returned, r->ends,
                                   r->o.producers);
                return err_set(ERR_IO, "cannot receive from %s: %s", r->name, zmq_strerror(e));
            }
            rec = rec_decode_mem(zmq_msg_data(&m), zmq_msg_size(&m), &r->o.limits, r->name,
                                 r->returned);
            zmq_msg_close(&m);
            rc = rec ? 1 : err_last();
        } else {
            rc = rec_instream_next(r->in, &rec);
        }
        if (rc < 0)
            return rc;
        if (rc == 0) {
            r->done = true;
            break;
        }
        if (strcmp(rec->kind, "end") == 0) {
            rc = on_end(r, rec);
            if (rc < 0)
                return rc;
            if (rc == 1)
                r->done = true;
            continue;
        }
        rec->index = r->returned++;
        r->seg_records++;
        *out = rec;
        return 1;
    }
    return 0;
}

record *ep_read_one(const char *spec, const char *kind, const ep_opts *o)
{
    rec_reader *r = ep_open_reader(spec, o);
    if (!r)
        return NULL;
    record *rec = NULL, *extra = NULL;
    int rc = rec_read(r, &rec);
    if (rc == 0)
        err_set(ERR_FORMAT, "no records in %s (empty stream)", r->name);
    else if (rc == 1 && kind && strcmp(rec->kind, kind) != 0) {
        err_set(ERR_FORMAT, "wrong record kind (stream %s, record 0, field kind): expected %s, got %s",
                r->name, kind, rec->kind);
        rc = -1;
    } else if (rc == 1 && !ep_is_zmq(spec)) {
        int rc2 = rec_read(r, &extra);
        if (rc2 != 0) {
            if (rc2 == 1)
                err_set(ERR_FORMAT, "%s holds more than one record; expected one %s", r->name,
                        kind ? kind : "record");
            rec_free(extra);
            rc = -1;
        }
    }
    rec_reader_close(r);
    if (rc != 1) {
        rec_free(rec);
        return NULL;
    }
    return rec;
}

/* ---- writers ---- */
struct rec_writer {
    char name[256];
    char *final_path, *tmp_path;
    FILE *f;
    void *zs;
    ep_opts o;
    long count;
};

static int file_sink(void *ctx, const void *buf, size_t len)
{
    rec_writer *w = ctx;
    if (fwrite(buf, 1, len, w->f) != len)
        return err_set(ERR_IO, "cannot write %s: %s", w->name, strerror(errno));
    return 0;
}

rec_writer *ep_open_writer(const char *spec, const ep_opts *opts)
{
    rec_writer *w = calloc(1, sizeof *w);
    if (!w) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (opts)
        w->o = *opts;
    else
        ep_opts_default(&w->o);
    snprintf(w->name, sizeof w->name, "%s", strcmp(spec, "-") ? spec : "<stdout>");
    if (ep_is_zmq(spec)) {
        w->zs = zsock_open(spec, ZMQ_PUSH, &w->o);
        if (!w->zs)
            goto fail;
        return w;
    }
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
    size_t n = strlen(spec) + 32;
    w->final_path = strdup(spec);
    w->tmp_path = malloc(n);
    if (!w->final_path || !w->tmp_path) {
        err_set(ERR_INTERNAL, "out of memory");
        goto fail;
    }
    snprintf(w->tmp_path, n, "%s.tmp.%ld", spec, (long)getpid());
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        err_set(ERR_IO, "cannot create %s: %s", w->tmp_path, strerror(errno));
        goto fail;
    }
    if (tmp_register(w->tmp_path))
        goto fail;
    return w;
fail:
    rec_writer_close(w, false);
    return NULL;
}

static void free_msg(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static int zmq_send_record(rec_writer *w, const record *r)
{
    void *buf;
    size_t len;
    int rc = rec_encode_mem(r, w->o.zstd_level, &buf, &len);
    if (rc)
        return rc;
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, buf, len, free_msg, NULL)) {
        free(buf);
        return err_set(ERR_INTERNAL, "zmq_msg_init_data failed");
    }
    if (zmq_msg_send(&m, w->zs, 0) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        if (e == EAGAIN)
            return err_set(ERR_IO, "no consumer took a record on %s within %.1f s (is the reader running?)",
                           w->name, w->o.timeout_ms / 1000.0);
        return err_set(ERR_IO, "cannot send on %s: %s", w->name, zmq_strerror(e));
    }
    return 0;
}

int rec_write(rec_writer *w, const record *r)
{
    int rc = w->zs ? zmq_send_record(w, r) : rec_encode(r, w->o.zstd_level, file_sink, w, NULL);
    if (!rc)
        w->count++;
    return rc;
}

int rec_writer_close(rec_writer *w, bool commit)
{
    if (!w)
        return 0;
    int rc = 0;
    if (commit && (w->f || w->zs)) {
        record *e = rec_new("end");
        if (!e || rec_set_int(e, "count", w->count))
            rc = err_set(ERR_INTERNAL, "out of memory");
        else
            rc = w->zs ? zmq_send_record(w, e) : rec_encode(e, w->o.zstd_level, file_sink, w, NULL);
        rec_free(e);
    }
    if (w->f) {
        if (fflush(w->f) && !rc && commit)
            rc = err_set(ERR_IO, "cannot write %s: %s", w->name, strerror(errno));
        if (w->tmp_path) {
            if (!rc && commit && fsync(fileno(w->f)) && errno != EINVAL)
                rc = err_set(ERR_IO, "cannot sync %s: %s", w->name, strerror(errno));
            if (fclose(w->f) && !rc && commit)
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
    if (w->zs) {
        if (!commit || rc) { /* an aborted stream is not worth waiting for */
            int zero = 0;
            zmq_setsockopt(w->zs, ZMQ_LINGER, &zero, sizeof zero);
        }
        zsock_close(w->zs); /* lingers up to the timeout to deliver what is queued */
    }
    free(w->tmp_path);
    free(w->final_path);
    free(w);
    return rc;
}

int ep_write_one(const char *spec, const record *r, const ep_opts *o)
{
    rec_writer *w = ep_open_writer(spec, o);
    if (!w)
        return err_last() ? err_last() : ERR_IO;
    int rc = rec_write(w, r);
    int rc2 = rec_writer_close(w, rc == 0);
    return rc ? rc : rc2;
}
