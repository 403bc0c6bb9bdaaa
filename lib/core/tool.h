/* tool.h - what every tool's main shares: option parsing, messages, progress, exit.
 *
 * The one part of lib/ that may exit the process: tool_die() and tool_fail() are for
 * tools' mains only.  Message format (DESIGN section 7):
 *   tool: error: what (where): why
 *   hint: ...
 * Verbosity: -q 0 (errors only), default 1, -v 2 and up. */
#ifndef FEDSM_TOOL_H
#define FEDSM_TOOL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
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

/* ---- the common options ----
 * Every tool has these, from one table here appended to its own getopt_long table:
 *   -h/--help  -V/--version  -q/--quiet  -v/--verbose  -s/--seed S  --threads N (also -t
 *   unless the tool claims -t)  -o/--out X
 * A tool that defines one of these short letters itself (inspect's -t) keeps it; the long
 * name still reaches the common option.  tool_getopt() handles the common options and every
 * bad option itself and returns only the tool's own ones, so a tool's switch has no
 * default case.  Errors (exit 2, one line plus the hint "try 'tool --help'"):
 *   unknown option '--x'        option '--x' needs a value     option '--x' takes no value
 *   -o: empty name (refused before any work)   --seed/--threads: bad number
 * --help calls the usage function given; --version prints "tool VERSION". */
/* The common options' getopt codes, for a tool's alias of one (partition's --out-dir). */
enum { TOOL_OPT_HELP = 0x10000, TOOL_OPT_VERSION, TOOL_OPT_QUIET, TOOL_OPT_VERBOSE,
       TOOL_OPT_SEED, TOOL_OPT_THREADS, TOOL_OPT_OUT };
typedef struct {
    void (*usage)(void); /* prints the help to stdout and exits 0 (set by the tool) */
    const char *out;     /* -o/--out, NULL when not given */
    uint64_t seed;       /* -s/--seed; the tool sets its default before parsing */
    bool seed_given;
    int threads; /* --threads as given (0: all cores), -1 when not given; already applied */
} tool_common;

/* getopt_long over the tool's short options `own` (without the common letters) and its long
 * table `lo` (terminated by a zero entry, without the common options); returns the next
 * option of the tool's own, -1 at the end (operands are left at argv[optind..]).  Use one
 * tool_common and the same own/lo for every call of one parse. */
int tool_getopt(int argc, char **argv, const char *own, const struct option *lo,
                tool_common *co);

/* The one place that applies a thread count: the pool every parallel loop runs on
 * (pool_set_threads, which holds OpenBLAS at 1 thread).  n <= 0 means all cores.  tool_init applies FEDSM_THREADS (default 1),
 * tool_getopt applies --threads; tools do not call it themselves. */
void tool_set_threads(int n);
int tool_threads(void);

/* s as one CSV field on f (RFC 4180: quoted, inner quotes doubled, when it holds , " CR LF
 * or starts or ends with a space). */
void tool_csv_field(FILE *f, const char *s);

/* Monotonic seconds. */
double tool_now(void);

#endif
