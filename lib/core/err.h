/* err.h - error codes and the per-thread error message shared by every lib/ module.
 *
 * lib/ never exits and never prints: a failing function sets a message with err_set()
 * and returns a negative code (constructors return NULL).  A tool prints err_msg()
 * and exits with err_exit_code(code).  Codes follow DESIGN section 7. */
#ifndef FEDSM_ERR_H
#define FEDSM_ERR_H

#include <stddef.h>

enum {
    ERR_OK = 0,
    ERR_RUNTIME = -1,  /* exit 1: runtime failure (NaN, diverged, no data) */
    ERR_USAGE = -2,    /* exit 2: bad option or argument */
    ERR_FORMAT = -3,   /* exit 3: bad input format or version */
    ERR_IO = -4,       /* exit 4: I/O or network */
    ERR_INTERNAL = -5, /* exit 5: internal error (out of memory, bug) */
};

/* Sets the thread's error message (printf-style) and returns code, so callers can
 * write `return err_set(ERR_FORMAT, "...", ...)`. */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with "prefix: " (to add context on the way up). */
int err_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message set on this thread ("" when none).  Borrowed. */
const char *err_msg(void);
/* The code passed to the last err_set on this thread (ERR_OK when none). */
int err_last(void);
void err_clear(void);
/* Process exit status for an error code: 0 for ERR_OK, 1..5 otherwise. */
int err_exit_code(int code);

#endif
