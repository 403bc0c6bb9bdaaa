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

#define TEST_MAIN_END()                                                                   \
    do {                                                                                  \
        fprintf(stderr, "%s: %d checks, %d failed\n", __FILE__, t_checks, t_failed);       \
        return t_failed ? 1 : 0;                                                          \
    } while (0)

#endif
