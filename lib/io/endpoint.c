/* endpoint.c - record streams over stdin/stdout, files and ZeroMQ (DESIGN section 3; API in
 * endpoint.h): opens the transport a spec names (ep_file.c for "-" and paths, ep_zmq.c for
 * ZeroMQ) and keeps what every transport shares: the `end` record a writer appends, and the
 * reader's check of its count (per concatenated stream for files, summed over the
 * producers for ZeroMQ).  Not here: the record codec (record.c), the transports' details. */
#include "endpoint.h"

#include "ep_file.h"
#include "ep_zmq.h"
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* An empty spec would name no stream in messages ("cannot open : ..."): refused first; so is
 * a tcp:// port outside 1..65535 (a usage error, not a timeout). */
static int check_spec(const char *spec, const char *what)
{
    if (!spec || !*spec)
        return err_set(ERR_USAGE, "empty %s endpoint: give a path, '-' or a ZeroMQ address", what);
    return ep_is_zmq(spec) ? ep_zmq_check(spec) : 0;
}

/* ---- readers ---- */
struct rec_reader {
    char name[256];
    ep_file_in *file;
    ep_zmq *zmq;
    ep_opts o;
    long returned;    /* records handed out */
    long seg_records; /* since the last end record (files) */
    int ends;
    long end_total;
    bool done;
    char last_kind[32]; /* of the last record handed out, for messages */
};

rec_reader *ep_open_reader(const char *spec, const ep_opts *opts)
{
    if (check_spec(spec, "input"))
        return NULL;
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
    if (ep_is_zmq(spec))
        r->zmq = ep_zmq_open(spec, false, &r->o);
    else
        r->file = ep_file_in_open(spec, r->name, &r->o.limits);
    if (!r->zmq && !r->file) {
        rec_reader_close(r);
        return NULL;
    }
    return r;
}

const char *rec_reader_name(const rec_reader *r) { return r->name; }

void rec_reader_close(rec_reader *r)
{
    if (!r)
        return;
    ep_file_in_close(r->file);
    ep_zmq_close(r->zmq, true);
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
    if (r->zmq) {
        r->end_total += count;
        if (r->ends < (r->o.producers > 0 ? r->o.producers : 1))
            return 0;
        if (r->end_total < r->returned)
            return err_set(ERR_FORMAT,
                           "stream %s: %ld records arrived but the producers' end records "
                           "declare %ld: a producer's end count is wrong",
                           r->name, r->returned, r->end_total);
        /* Fewer arrived than declared.  ZeroMQ drops a message over ZMQ_MAXMSGSIZE without
         * a word, so that is named too, but only when --max-msg was lowered below the
         * default: a lost record of 64 GiB is not a likely story, a wrong count is. */
        if (r->end_total > r->returned) {
            ep_opts d;
            ep_opts_default(&d);
            bool lowered = r->o.max_msg_bytes >= 0 && r->o.max_msg_bytes < d.max_msg_bytes;
            char also[160] = "";
            if (lowered)
                snprintf(also, sizeof also,
                         ", or ZeroMQ dropped a record larger than the reader's --max-msg of "
                         "%lld bytes",
                         (long long)r->o.max_msg_bytes);
            return err_set(ERR_FORMAT,
                           "stream %s: the producers' end records declare %ld records but %ld "
                           "arrived: a producer's end count is wrong%s",
                           r->name, r->end_total, r->returned, also);
        }
        return 1;
    }
    if (count < r->seg_records)
        return err_set(ERR_FORMAT,
                       "stream %s holds more records than it declares: its end record counts "
                       "%lld records, %ld read",
                       r->name, (long long)count, r->seg_records);
    if (count > r->seg_records)
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
        if (r->zmq) {
            rc = ep_zmq_recv(r->zmq, &r->o.limits, r->name, r->returned, &rec);
            if (rc == 0)
                return err_set(ERR_IO,
                               "timed out after %.1f s waiting on %s (%ld records, %d of %d "
                               "producers finished)",
                               r->o.timeout_ms / 1000.0, r->name, r->returned, r->ends,
                               r->o.producers);
        } else {
            rc = ep_file_in_next(r->file, &rec);
        }
        if (rc < 0)
            return rc;
        if (rc == 0) {
            r->done = true;
            /* a pipe or socket whose last part has no end record: its producer died (a
             * file without one is complete: it was renamed into place) */
            if (!ep_file_in_is_regular(r->file) && (r->seg_records > 0 || r->ends == 0)) {
                if (r->returned == 0)
                    return err_set(ERR_FORMAT,
                                   "stream %s ended with no record and no end record: its "
                                   "producer died before writing (a pipe must end with the "
                                   "end record)",
                                   r->name);
                return err_set(ERR_FORMAT,
                               "stream %s ended without its end record after record %ld (%s): "
                               "its producer died or was cut off (a pipe must end with the "
                               "end record)",
                               r->name, r->returned - 1, r->last_kind);
            }
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
        snprintf(r->last_kind, sizeof r->last_kind, "%s", rec->kind);
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

int rec_read_rest(rec_reader *r)
{
    record *rec = NULL;
    int rc;
    while ((rc = rec_read(r, &rec)) == 1)
        rec_free(rec);
    return rc;
}

/* ---- writers ---- */
int ep_check_writer(const char *spec)
{
    if (check_spec(spec, "output"))
        return err_last();
    if (ep_is_zmq(spec))
        return 0;
    if (strcmp(spec, "-") == 0)
        return isatty(1) ? err_set(ERR_USAGE, "refusing to write binary records to a terminal; "
                                              "use -o FILE or a pipe")
                         : 0;
    struct stat st;
    if (stat(spec, &st) == 0)
        return S_ISDIR(st.st_mode) ? err_set(ERR_IO, "cannot write %s: it is a directory", spec) : 0;
    const char *slash = strrchr(spec, '/');
    if (!slash)
        return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", slash == spec ? 1 : (int)(slash - spec), spec);
    if (stat(dir, &st))
        return err_set(ERR_IO, "cannot create %s: folder %s: %s", spec, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return err_set(ERR_IO, "cannot create %s: %s is not a folder", spec, dir);
    return 0;
}

struct rec_writer {
    char name[256];
    ep_file_out *file;
    ep_zmq *zmq;
    ep_opts o;
    long count;
};

rec_writer *ep_open_writer(const char *spec, const ep_opts *opts)
{
    if (check_spec(spec, "output"))
        return NULL;
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
    if (ep_is_zmq(spec))
        w->zmq = ep_zmq_open(spec, true, &w->o);
    else
        w->file = ep_file_out_open(spec, w->name);
    if (!w->zmq && !w->file) {
        free(w);
        return NULL;
    }
    return w;
}

static int write_any(rec_writer *w, const record *r)
{
    return w->zmq ? ep_zmq_send(w->zmq, r, w->o.zstd_level, w->name)
                  : ep_file_out_write(w->file, r, w->o.zstd_level);
}

int rec_write(rec_writer *w, const record *r)
{
    int rc = write_any(w, r);
    if (!rc)
        w->count++;
    return rc;
}

int rec_writer_close(rec_writer *w, bool commit)
{
    if (!w)
        return 0;
    int rc = 0;
    if (commit) {
        record *e = rec_new("end");
        if (!e || rec_set_int(e, "count", w->count))
            rc = err_set(ERR_INTERNAL, "out of memory");
        else
            rc = write_any(w, e);
        rec_free(e);
    }
    int rc2 = ep_file_out_close(w->file, commit && !rc);
    if (!rc)
        rc = rc2;
    ep_zmq_close(w->zmq, commit && !rc);
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
