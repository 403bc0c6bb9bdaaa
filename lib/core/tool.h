/* tool.h - what every tool's main shares: option parsing, messages, progress, exit.
 *
 * The one part of lib/ that may exit the process: tool_die() and tool_fail() are for
 * tools' mains only.  Message format (DESIGN section 7):
 *   tool: error: what (where): why
 *   hint: ...
 * Verbosity: -q 0 (errors only), default 1, -v 2 and up. */
#ifndef FEDSM_TOOL_H
#define FEDSM_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#define FEDSM_VERSION "0.1.0"

extern const char *tool_name; /* set by tool_init */
extern int tool_verbosity;

/* Sets the tool name used in messages; call first in main. */
void tool_init(const char *name);
/* Prints "name: error: <fmt>" to stderr and exits with err_exit_code(code). */
_Noreturn void tool_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "name: error: <err_msg()>" and exits with err_exit_code(code). */
_Noreturn void tool_fail(int code);
/* Usage error: message, then "try 'name --help'", exit 2. */
_Noreturn void tool_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tool_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Informational line on stderr when verbosity >= level. */
void tool_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Progress line (overwritten with \r) only when stderr is a terminal and verbosity >= 1;
 * tool_progress_done() ends the line. */
void tool_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tool_progress_done(void);
/* `name FEDSM_VERSION` on stdout, exit 0. */
_Noreturn void tool_version(void);

/* Checked number parsing: whole string, range-checked.  Exit 2 naming the option on
 * failure. */
int64_t tool_parse_int(const char *opt, const char *s, int64_t min, int64_t max);
double tool_parse_double(const char *opt, const char *s, double min, double max);
uint64_t tool_parse_seed(const char *opt, const char *s);
/* Non-exiting variants: 0 or ERR_USAGE. */
int parse_int(const char *s, int64_t min, int64_t max, int64_t *out);
int parse_double(const char *s, double min, double max, double *out);

/* Sets the compute thread count (OpenBLAS and ours); n <= 0 means all cores. */
void tool_set_threads(int n);
int tool_threads(void);

/* Monotonic seconds. */
double tool_now(void);

#endif
