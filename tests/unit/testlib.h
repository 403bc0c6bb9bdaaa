/* testlib.h - the tiny assertion kit of the unit tests (header only).
 * Each test binary returns non-zero when any CHECK failed; tests/run.sh counts them. */
#ifndef FEDSM_TESTLIB_H
#define FEDSM_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int t_failed, t_checks;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        t_checks++;                                                                       \
        if (!(cond)) {                                                                    \
            t_failed++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
        }                                                                                 \
    } while (0)

#define CHECK_MSG(cond, ...)                                                              \
    do {                                                                                  \
        t_checks++;                                                                       \
        if (!(cond)) {                                                                    \
            t_failed++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_CLOSE(a, b, tol)                                                            \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol) * fmax(1.0, fabs((double)(b))),     \
              "%.9g vs %.9g", (double)(a), (double)(b))

/* A check that cannot run (a missing file or interpreter): the binary then exits 77 (SKIP,
 * with the last reason as its last line) unless another check failed; never a quiet PASS. */
static int t_skipped;
static char t_skip_why[1024];
#define SKIP_CHECK(...)                                                                   \
    do {                                                                                  \
        t_skipped++;                                                                      \
        snprintf(t_skip_why, sizeof t_skip_why, __VA_ARGS__);                             \
        fprintf(stderr, "%s:%d: check skipped: %s\n", __FILE__, __LINE__, t_skip_why);     \
    } while (0)

#define TEST_MAIN_END()                                                                   \
    do {                                                                                  \
        fprintf(stderr, "%s: %d checks, %d failed, %d skipped\n", __FILE__, t_checks,     \
                t_failed, t_skipped);                                                     \
        if (!t_failed && t_skipped) fprintf(stderr, "skipped: %s\n", t_skip_why);         \
        return t_failed ? 1 : t_skipped ? 77 : 0;                                         \
    } while (0)

#endif
