/* tool.c - shared main-side helpers for tools/ (see tool.h). */
#include "tool.h"

#include "err.h"
#include "pool.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *tool_name = "fedsm";
int tool_verbosity = 1;
static int threads_n = 1;
static bool progress_open;

void tool_init(const char *name)
{
    tool_name = name;
    const char *t = getenv("FEDSM_THREADS");
    int64_t n;
    tool_set_threads(t && parse_int(t, 1, 1024, &n) == 0 ? (int)n : 1);
}

static void end_progress(void)
{
    if (progress_open) {
        fputc('\n', stderr);
        progress_open = false;
    }
}

_Noreturn void tool_die(int code, const char *fmt, ...)
{
    end_progress();
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", tool_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(err_exit_code(code) ? err_exit_code(code) : 1);
}

_Noreturn void tool_fail(int code) { tool_die(code, "%s", err_msg()); }

_Noreturn void tool_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", tool_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "hint: try '%s --help'\n", tool_name);
    exit(2);
}

void tool_hint(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hint: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void tool_log(int level, const char *fmt, ...)
{
    if (tool_verbosity < level)
        return;
    end_progress();
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", tool_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void tool_progress(const char *fmt, ...)
{
    if (tool_verbosity < 1 || !isatty(2))
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\r%s: ", tool_name);
    vfprintf(stderr, fmt, ap);
    fputs("\033[K", stderr);
    va_end(ap);
    progress_open = true;
}

void tool_progress_done(void) { end_progress(); }

_Noreturn void tool_version(void)
{
    printf("%s %s\n", tool_name, FEDSM_VERSION);
    exit(0);
}

int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return err_set(ERR_USAGE, "empty number");
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return err_set(ERR_USAGE, "'%s' is not an integer", s);
    if (v < min || v > max)
        return err_set(ERR_USAGE, "%s is out of range [%lld, %lld]", s, (long long)min,
                       (long long)max);
    *out = v;
    return 0;
}

int parse_double(const char *s, double min, double max, double *out)
{
    if (!s || !*s)
        return err_set(ERR_USAGE, "empty number");
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return err_set(ERR_USAGE, "'%s' is not a number", s);
    if (v < min || v > max)
        return err_set(ERR_USAGE, "%s is out of range [%g, %g]", s, min, max);
    *out = v;
    return 0;
}

int64_t tool_parse_int(const char *opt, const char *s, int64_t min, int64_t max)
{
    int64_t v;
    if (parse_int(s, min, max, &v))
        tool_usage_error("%s: %s", opt, err_msg());
    return v;
}

double tool_parse_double(const char *opt, const char *s, double min, double max)
{
    double v;
    if (parse_double(s, min, max, &v))
        tool_usage_error("%s: %s", opt, err_msg());
    return v;
}

uint64_t tool_parse_seed(const char *opt, const char *s)
{
    return (uint64_t)tool_parse_int(opt, s, 0, INT64_MAX);
}

/* ---- the common options (tool.h) ---- */

enum { CO_HELP = TOOL_OPT_HELP, CO_VERSION = TOOL_OPT_VERSION, CO_QUIET = TOOL_OPT_QUIET,
       CO_VERBOSE = TOOL_OPT_VERBOSE, CO_SEED = TOOL_OPT_SEED, CO_THREADS = TOOL_OPT_THREADS,
       CO_OUT = TOOL_OPT_OUT };
static const struct option common_long[] = {
    {"help", no_argument, 0, CO_HELP},          {"version", no_argument, 0, CO_VERSION},
    {"quiet", no_argument, 0, CO_QUIET},        {"verbose", no_argument, 0, CO_VERBOSE},
    {"seed", required_argument, 0, CO_SEED},    {"threads", required_argument, 0, CO_THREADS},
    {"out", required_argument, 0, CO_OUT},
};
#define N_COMMON (sizeof common_long / sizeof *common_long)
/* the short letter of each common option, in common_long's order */
static const char common_short[N_COMMON] = {'h', 'V', 'q', 'v', 's', 't', 'o'};

static struct {
    bool built;
    struct option lo[160];
    char shortopts[128];
    bool unclaimed[N_COMMON]; /* the common short letter is ours, not the tool's */
} g;

static bool claims(const char *own, const struct option *lo, int ch)
{
    if (strchr(own, ch))
        return true;
    for (; lo->name; lo++)
        if (lo->val == ch && !lo->flag)
            return true;
    return false;
}

static void build_tables(const char *own, const struct option *lo)
{
    size_t n = 0, k = 0;
    while (lo[n].name)
        n++;
    if (n + N_COMMON + 1 > sizeof g.lo / sizeof *g.lo || strlen(own) + 3 * N_COMMON + 2 > sizeof g.shortopts)
        tool_die(ERR_INTERNAL, "option table too long");
    memcpy(g.lo, lo, n * sizeof *lo);
    memcpy(g.lo + n, common_long, sizeof common_long);
    memset(&g.lo[n + N_COMMON], 0, sizeof *g.lo);
    g.shortopts[k++] = ':'; /* a missing value returns ':', not '?' */
    strcpy(g.shortopts + k, own);
    k += strlen(own);
    for (size_t i = 0; i < N_COMMON; i++) {
        g.unclaimed[i] = !claims(own, lo, common_short[i]);
        if (g.unclaimed[i]) {
            g.shortopts[k++] = common_short[i];
            if (common_long[i].has_arg)
                g.shortopts[k++] = ':';
        }
    }
    g.shortopts[k] = 0;
    g.built = true;
}

/* The long option the argument `arg` ("--name" or "--name=value") names with value code
 * `val` (0: any), or NULL; counts the prefix matches in *n_match. */
static const struct option *find_long(const char *arg, int val, int *n_match)
{
    const char *name = arg + 2;
    size_t len = strcspn(name, "=");
    const struct option *hit = NULL;
    *n_match = 0;
    for (const struct option *o = g.lo; o->name; o++) {
        if (strncmp(o->name, name, len) || (val && o->val != val))
            continue;
        if (strlen(o->name) == len) { /* exact */
            *n_match = 1;
            return o;
        }
        hit = o;
        ++*n_match;
    }
    return *n_match == 1 ? hit : NULL;
}

/* One error line naming the option as the user wrote it, then the hint; exit 2. */
_Noreturn static void bad_option(int c, char **argv)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    bool is_long = arg && strncmp(arg, "--", 2) == 0 && arg[2];
    int n;
    if (c == '?' && optopt == 0) { /* unknown or ambiguous long option */
        int len = (int)strcspn(arg, "=");
        if (is_long && !find_long(arg, 0, &n) && n > 1)
            tool_usage_error("ambiguous option '%.*s'", len, arg);
        tool_usage_error("unknown option '%.*s'", len, arg);
    }
    const struct option *o = is_long ? find_long(arg, optopt, &n) : NULL;
    if (o && c == ':')
        tool_usage_error("option '--%s' needs a value", o->name);
    if (o)
        tool_usage_error("option '--%s' takes no value", o->name);
    if (c == ':')
        tool_usage_error("option '-%c' needs a value", optopt);
    if (optopt > 32 && optopt < 127)
        tool_usage_error("unknown option '-%c'", optopt);
    tool_usage_error("unknown option '%s'", arg);
}

int tool_getopt(int argc, char **argv, const char *own, const struct option *lo, tool_common *co)
{
    if (!g.built) {
        build_tables(own, lo);
        co->threads = -1;
    }
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, g.shortopts, g.lo, NULL);
        if (c == -1)
            return -1;
        if (c == '?' || c == ':')
            bad_option(c, argv);
        for (size_t i = 0; i < N_COMMON; i++)
            if (g.unclaimed[i] && c == common_short[i])
                c = common_long[i].val;
        switch (c) {
        case CO_HELP:
            if (co->usage)
                co->usage();
            printf("usage: %s [options]\n", tool_name);
            exit(0);
        case CO_VERSION: tool_version();
        case CO_QUIET: tool_verbosity = 0; break;
        case CO_VERBOSE: tool_verbosity++; break;
        case CO_SEED:
            co->seed = tool_parse_seed("--seed", optarg);
            co->seed_given = true;
            break;
        case CO_THREADS:
            co->threads = (int)tool_parse_int("--threads", optarg, 0, 256);
            tool_set_threads(co->threads);
            break;
        case CO_OUT:
            if (!*optarg)
                tool_usage_error("-o/--out: empty name");
            co->out = optarg;
            break;
        default: return c;
        }
    }
}

void tool_set_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > POOL_MAX_THREADS)
        n = POOL_MAX_THREADS;
    threads_n = n;
    pool_set_threads(n); /* also holds OpenBLAS at 1 thread: each pool worker calls it */
}

int tool_threads(void) { return threads_n; }

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void tool_csv_field(FILE *f, const char *s)
{
    size_t n = strlen(s);
    if (!strpbrk(s, ",\"\r\n") && !(n && (s[0] == ' ' || s[n - 1] == ' '))) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}
