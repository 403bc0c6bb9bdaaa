/* endpoint.h - where records go and come from (DESIGN section 3).
 *
 * An endpoint string is one of:
 *   "-"                      stdin / stdout (writing binary to a terminal is refused)
 *   a path                   a file; writers write PATH.tmp.<pid> and rename on commit
 *   tcp://host:port, ipc://p ZeroMQ; "@" prefix binds, ">" prefix or none connects.
 *                            Writers are PUSH, readers PULL.
 * Every writer ends its stream with an `end` record carrying {"count": records written};
 * readers consume `end` records themselves, check the count, and (ZeroMQ) stop after the
 * expected number of producers have ended.
 *
 * An empty spec is refused (ERR_USAGE).  Opening PATH for writing removes the PATH.tmp.<pid>
 * files that killed writers of the same user left behind (ep_file.h).
 *
 * Not here: what is in the records (record.h); the transports (ep_file.h for "-" and
 * paths, ep_zmq.h for ZeroMQ), which endpoint.c dispatches to. */
#ifndef FEDSM_ENDPOINT_H
#define FEDSM_ENDPOINT_H

#include "record.h"

typedef struct ep_opts {
    int timeout_ms;         /* ZeroMQ receive/send timeout; -1 waits forever (default 60000) */
    int64_t max_msg_bytes;  /* ZMQ_MAXMSGSIZE for readers; -1 = no limit (default 64 GiB) */
    int producers;          /* ZeroMQ readers: end records to wait for (default 1) */
    int zstd_level;         /* writers (default 3) */
    rec_limits limits;      /* readers */
} ep_opts;
void ep_opts_default(ep_opts *o);

typedef struct rec_reader rec_reader;
typedef struct rec_writer rec_writer;

/* Opens a reader; NULL on failure (err_msg names the endpoint; ERR_IO for a missing file). */
rec_reader *ep_open_reader(const char *spec, const ep_opts *o);
/* 1: *out is an owned record; 0: end of stream; < 0: error (err_msg names stream and
 * record number).  `end` records are never returned. */
int rec_read(rec_reader *r, record **out);
/* Reads exactly one record of kind (NULL = any) and expects the stream to end there. */
record *ep_read_one(const char *spec, const char *kind, const ep_opts *o);
/* Reads (and frees) every record left, so that the whole stream is checked: a tool that
 * takes one record of a stream calls it before closing, or a cut end, trailing garbage or
 * a wrong end count would pass unseen.  0 at the end of the stream, < 0 on error. */
int rec_read_rest(rec_reader *r);
const char *rec_reader_name(const rec_reader *r);
void rec_reader_close(rec_reader *r); /* NULL-safe */

/* Checks an output before the work that fills it, so that a bad -o fails at once and not
 * after the training: 0, or the error opening it would give (an empty name or bad tcp port,
 * ERR_USAGE; a directory or a missing folder, ERR_IO).  Creates nothing. */
int ep_check_writer(const char *spec);
/* Opens a writer; NULL on failure. */
rec_writer *ep_open_writer(const char *spec, const ep_opts *o);
int rec_write(rec_writer *w, const record *r);
/* commit = true: writes the end record, flushes, renames the temp file into place.
 * commit = false: discards (removes the temp file).  Returns 0 or a negative error;
 * always frees w.  NULL-safe. */
int rec_writer_close(rec_writer *w, bool commit);
/* Writes one record to spec and commits. */
int ep_write_one(const char *spec, const record *r, const ep_opts *o);

/* True when spec names a ZeroMQ endpoint. */
bool ep_is_zmq(const char *spec);

#endif
