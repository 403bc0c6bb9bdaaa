/* ep_file.h - the file and pipe transport behind endpoint.h (DESIGN section 3).
 *
 * Private to lib/io: tools open endpoints through endpoint.h, which dispatches here for
 * "-" (stdin/stdout) and paths.  Outputs to a path are written to PATH.tmp.<pid> and
 * renamed on commit; the temporary is removed on abort, exit() and fatal signals, and
 * stale PATH.tmp.<pid> siblings left by killed processes of the same user are removed
 * when PATH is opened again.  An existing device or FIFO (/dev/null) is written in place.
 * Not here: end records and their counts (endpoint.c). */
#ifndef FEDSM_EP_FILE_H
#define FEDSM_EP_FILE_H

#include "record.h"

typedef struct ep_file_in ep_file_in;
typedef struct ep_file_out ep_file_out;

/* Opens spec ("-" = stdin) for reading records; name labels messages.  NULL on failure
 * (ERR_IO for a missing file or a directory). */
ep_file_in *ep_file_in_open(const char *spec, const char *name, const rec_limits *lim);
/* 1: *out owned; 0: end of input; < 0: error. */
int ep_file_in_next(ep_file_in *f, record **out);
/* True when the input is a regular file (a path, or stdin redirected from one); false for a
 * pipe, a socket or a device, whose stream must end with its end record: without it, its
 * producer died (endpoint.c says so), while a complete file without one (written by another
 * program) stays readable. */
bool ep_file_in_is_regular(const ep_file_in *f);
void ep_file_in_close(ep_file_in *f); /* NULL-safe */

/* Opens spec ("-" = stdout, refused on a terminal) for writing; name labels messages. */
ep_file_out *ep_file_out_open(const char *spec, const char *name);
int ep_file_out_write(ep_file_out *f, const record *r, int zstd_level);
/* commit: flush, sync and rename into place; otherwise remove the temporary.  Returns 0
 * or a negative error (the temporary is removed then too); always frees f.  NULL-safe. */
int ep_file_out_close(ep_file_out *f, bool commit);

/* Removes PATH.tmp.<pid> files next to path whose process is gone (kill(pid, 0) fails with
 * ESRCH) and that belong to this user; returns how many were removed.  Never fails:
 * whatever cannot be read or removed is left alone. */
int ep_file_clean_stale(const char *path);

#endif
