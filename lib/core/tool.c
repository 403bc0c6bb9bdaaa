/* tool.c - shared main-side helpers for tools/ (see tool.h). */
#include "tool.h"

#include "err.h"

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

void openblas_set_num_threads(int);

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

void tool_set_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    threads_n = n;
    openblas_set_num_threads(n);
}

int tool_threads(void) { return threads_n; }

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
