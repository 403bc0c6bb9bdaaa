/* test_split.c - long-tail counts against the published CIFAR-LT totals (docs/algorithms.md 1.2),
 * and the invariants of every split mode (docs/algorithms.md 1.3): each sample in exactly one
 * client, client sizes, determinism, bounded failures. */
#include "err.h"
#include "rng.h"
#include "split.h"
#include "testlib.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int64_t sum(const int64_t *v, int n)
{
    int64_t s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* A split that fails is a failed check and ends the test function: its result is garbage
 * (reading it would crash instead of failing). */
#define SPLIT_OK(...)                                                                     \
    do {                                                                                  \
        int rc_ = split_make(__VA_ARGS__);                                                \
        CHECK_MSG(rc_ == 0, "split_make: %s", err_msg());                                 \
        if (rc_)                                                                          \
            return;                                                                       \
    } while (0)

/* The Dirichlet draws behind the non-IID mix, against the distribution's moments: for
 * Dir(alpha, ..., alpha) over K, E p_j = 1/K and Var p_j = (1/K)(1 - 1/K) / (K alpha + 1),
 * and E[p_j^2 p_i] products are not needed: 40,000 draws at alpha 0.5 (the papers') and 1,
 * K 10; means within 4 standard errors, variances within 6%. */
static void test_dirichlet_moments(void)
{
    const int K = 10, N = 40000;
    const double alphas[] = {0.5, 1.0, 0.1};
    for (int a = 0; a < 3; a++) {
        double alpha = alphas[a], p[10], s1[10] = {0}, s2[10] = {0};
        rng r;
        rng_init(&r, 7, "test-dirichlet", a, 0);
        int sum_ok = 1;
        for (int i = 0; i < N; i++) {
            rng_dirichlet(&r, p, K, alpha);
            double t = 0;
            for (int j = 0; j < K; j++) {
                s1[j] += p[j], s2[j] += p[j] * p[j], t += p[j];
                sum_ok &= p[j] >= 0;
            }
            sum_ok &= fabs(t - 1) < 1e-9;
        }
        CHECK_MSG(sum_ok, "alpha %g: proportions >= 0 summing to 1", alpha);
        double var = (1.0 / K) * (1 - 1.0 / K) / (K * alpha + 1), se = sqrt(var / N);
        for (int j = 0; j < K; j++) {
            double m = s1[j] / N, v = s2[j] / N - m * m;
            CHECK_MSG(fabs(m - 1.0 / K) < 4 * se, "alpha %g: mean of p[%d] %.5f vs %.5f", alpha, j, m, 1.0 / K);
            CHECK_MSG(fabs(v / var - 1) < 0.06, "alpha %g: variance of p[%d] %.6f vs %.6f", alpha, j, v, var);
        }
    }
}

static void test_lt_counts(void)
{
    int64_t c10[10], c100[100];
    static const int64_t want10[10] = {5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50};
    CHECK(lt_counts(5000, 10, 100, LT_EXP, c10) == 0);
    CHECK(memcmp(c10, want10, sizeof want10) == 0);
    CHECK(sum(c10, 10) == 12406);
    CHECK(lt_counts(5000, 10, 50, LT_EXP, c10) == 0);
    CHECK(sum(c10, 10) == 13996 && c10[9] == 100);
    CHECK(lt_counts(5000, 10, 10, LT_EXP, c10) == 0);
    CHECK(sum(c10, 10) == 20431 && c10[9] == 500);
    CHECK(lt_counts(5000, 10, 1, LT_EXP, c10) == 0);
    CHECK(sum(c10, 10) == 50000);
    CHECK(lt_counts(500, 100, 100, LT_EXP, c100) == 0);
    CHECK(sum(c100, 100) == 10847 && c100[0] == 500 && c100[99] == 5);
    CHECK(lt_counts(500, 100, 50, LT_EXP, c100) == 0);
    CHECK(sum(c100, 100) == 12608);
    CHECK(lt_counts(500, 100, 10, LT_EXP, c100) == 0);
    CHECK(sum(c100, 100) == 19573);
    /* many/medium/few of docs/algorithms.md 1.8 at IF=100: class 69 has exactly 20 */
    CHECK(lt_counts(500, 100, 100, LT_EXP, c100) == 0);
    CHECK(c100[34] > 100 && c100[35] <= 100 && c100[69] == 20 && c100[70] < 20);
    /* step: half at n_max, half at n_max/IF */
    CHECK(lt_counts(5000, 10, 100, LT_STEP, c10) == 0);
    CHECK(c10[0] == 5000 && c10[4] == 5000 && c10[5] == 50 && c10[9] == 50);
    CHECK(lt_counts(5000, 10, 0.5, LT_EXP, c10) == ERR_USAGE);
}

static void test_lt_select(void)
{
    enum { C = 10, PER = 500 };
    int32_t *labels = malloc(C * PER * sizeof *labels);
    for (int i = 0; i < C * PER; i++)
        labels[i] = (i * 7) % C; /* interleaved classes */
    int64_t *pos, n, kept[C], want[C];
    CHECK(lt_select(labels, C * PER, C, 100, LT_EXP, 7, &pos, &n, kept) == 0);
    lt_counts(PER, C, 100, LT_EXP, want);
    CHECK(memcmp(kept, want, sizeof want) == 0);
    CHECK(n == sum(want, C));
    int64_t got[C] = {0};
    int sorted = 1;
    for (int64_t i = 0; i < n; i++) {
        got[labels[pos[i]]]++;
        if (i && pos[i] <= pos[i - 1])
            sorted = 0;
    }
    CHECK(sorted);
    CHECK(memcmp(got, want, sizeof want) == 0);
    int64_t *pos2, n2;
    CHECK(lt_select(labels, C * PER, C, 100, LT_EXP, 7, &pos2, &n2, NULL) == 0);
    CHECK(n2 == n && memcmp(pos, pos2, n * sizeof *pos) == 0);
    free(pos2);
    CHECK(lt_select(labels, C * PER, C, 100, LT_EXP, 8, &pos2, &n2, NULL) == 0);
    CHECK(n2 == n && memcmp(pos, pos2, n * sizeof *pos) != 0);
    free(pos2);
    free(pos);
    CHECK(lt_select(labels, C * PER, C, 1, LT_EXP, 7, &pos, &n, kept) == 0);
    CHECK(n == C * PER);
    free(pos);
    labels[3] = C;
    CHECK(lt_select(labels, C * PER, C, 10, LT_EXP, 7, &pos, &n, kept) == ERR_FORMAT);
    free(labels);
}

/* Each position exactly once; returns per-client class counts [K][C] (malloc'd). */
static int64_t *check_partition(const split_result *s, const int32_t *labels, int64_t n, int c)
{
    char *seen = calloc(n, 1);
    int64_t *cnt = calloc((size_t)s->clients * c, sizeof *cnt);
    int ok = s->offsets[0] == 0 && s->offsets[s->clients] == n;
    for (int k = 0; k < s->clients; k++)
        for (int64_t i = s->offsets[k]; i < s->offsets[k + 1]; i++) {
            int64_t p = s->items[i];
            if (p < 0 || p >= n || seen[p]) {
                ok = 0;
                continue;
            }
            if (i > s->offsets[k] && s->items[i - 1] >= p)
                ok = 0;
            seen[p] = 1;
            cnt[(size_t)k * c + labels[p]]++;
        }
    CHECK_MSG(ok, "every sample exactly once, ascending in a client");
    free(seen);
    return cnt;
}

static int cmp_pos(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int32_t *lt_labels(int c, int64_t per, double imb, int64_t *n_out)
{
    int64_t *cnt = malloc(c * sizeof *cnt), n;
    lt_counts((double)per, c, imb, LT_EXP, cnt);
    n = sum(cnt, c);
    int32_t *l = malloc(n * sizeof *l);
    int64_t w = 0;
    for (int k = 0; k < c; k++)
        for (int64_t i = 0; i < cnt[k]; i++)
            l[w++] = k;
    /* interleave deterministically so positions are not class-sorted */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (i * 2654435761u) % (i + 1);
        int32_t t = l[i];
        l[i] = l[j];
        l[j] = t;
    }
    free(cnt);
    *n_out = n;
    return l;
}

static void test_creff(void)
{
    int64_t n;
    int32_t *labels = lt_labels(10, 5000, 100, &n); /* CIFAR-10-LT: 12,406 */
    split_opts o;
    split_opts_default(&o);
    split_result s, s2;
    SPLIT_OK(labels, n, 10, &o, &s);
    int64_t *cnt = check_partition(&s, labels, n, 10);
    for (int k = 0; k < 20; k++) {
        int64_t sz = s.offsets[k + 1] - s.offsets[k];
        CHECK(sz == n / 20 + (k < n % 20)); /* 621 x 6, 620 x 14 */
    }
    /* non-IID: some client lacks some class, and clients differ */
    int zeros = 0;
    for (int i = 0; i < 200; i++)
        zeros += cnt[i] == 0;
    CHECK(zeros > 0);
    free(cnt);
    SPLIT_OK(labels, n, 10, &o, &s2);
    CHECK(memcmp(s.items, s2.items, n * sizeof *s.items) == 0);
    split_free(&s2);
    o.seed = 8;
    SPLIT_OK(labels, n, 10, &o, &s2);
    CHECK(memcmp(s.items, s2.items, n * sizeof *s.items) != 0);
    split_free(&s2);
    split_free(&s);
    /* 25 clients: chunks of 10, 10, 5 workers; 7 clients: one chunk of 7 */
    int ks[] = {25, 7, 1};
    for (int i = 0; i < 3; i++) {
        split_opts_default(&o);
        o.clients = ks[i];
        SPLIT_OK(labels, n, 10, &o, &s);
        free(check_partition(&s, labels, n, 10));
        for (int k = 0; k < ks[i]; k++)
            CHECK(s.offsets[k + 1] - s.offsets[k] == n / ks[i] + (k < n % ks[i]));
        split_free(&s);
    }
    /* tiny alpha: gamma draws underflow to 0 and the balance step can zero every
     * proportion (the NaN case of docs/algorithms.md 8.14) - must still work, or fail cleanly */
    split_opts_default(&o);
    o.alpha = 1e-3;
    o.max_tries = 50;
    int rc = split_make(labels, n, 10, &o, &s);
    CHECK(rc == 0 || rc == ERR_USAGE);
    if (rc == 0)
        free(check_partition(&s, labels, n, 10));
    split_free(&s);
    free(labels);
    /* CIFAR-100-LT */
    labels = lt_labels(100, 500, 100, &n);
    split_opts_default(&o);
    SPLIT_OK(labels, n, 100, &o, &s);
    free(check_partition(&s, labels, n, 100));
    CHECK(s.offsets[1] == n / 20 + (n % 20 > 0));
    split_free(&s);
    free(labels);
}

/* The CReFF draw rules on the auxiliary workers as drawn (split_result.aux_*), which the
 * equal-size client slices hide (docs/algorithms.md 1.3): the clients are the workers'
 * concatenated lists cut into K equal slices; each worker's samples come in class order;
 * every worker of a chunk (N_s samples over nw workers) holds at least int(0.5 * N_s / nw);
 * the balance cap: a worker that already holds N_s / nw or more receives no later class
 * (the chunk's last worker at most 1 sample of one: the rest after the floored cuts).  CIFAR-10-LT (IF 100) at alpha
 * 0.3 and 0.5 (no gamma underflow, so the NaN guard never applies), K 10 (one chunk) and 20
 * (two chunks of 10), seeds 1..8; the minimum rule must have caused a redraw somewhere. */
static void test_creff_rules(void)
{
    int64_t n;
    int32_t *labels = lt_labels(10, 5000, 100, &n);
    int64_t *sorted = malloc(n * sizeof *sorted);
    int redraws = 0, bad_order = 0, bad_slices = 0, bad_min = 0, bad_cap = 0;
    double alphas[] = {0.3, 0.5};
    int ks[] = {10, 20};
    for (int ai = 0; ai < 2; ai++)
        for (int ki = 0; ki < 2; ki++)
            for (int seed = 1; seed <= 8; seed++) {
                split_opts o;
                split_opts_default(&o);
                o.alpha = alphas[ai];
                o.clients = ks[ki];
                o.seed = (uint64_t)seed;
                split_result s;
                SPLIT_OK(labels, n, 10, &o, &s);
                int k = o.clients;
                redraws += s.tries > 1;
                CHECK(s.aux_offsets && s.aux_items && s.aux_offsets[0] == 0 && s.aux_offsets[k] == n);
                /* the clients: the workers' lists concatenated, cut into K slices, sorted */
                memcpy(sorted, s.aux_items, n * sizeof *sorted);
                for (int j = 0; j < k; j++) {
                    int64_t a = s.offsets[j], len = s.offsets[j + 1] - a;
                    qsort(sorted + a, (size_t)len, sizeof *sorted, cmp_pos);
                }
                bad_slices += memcmp(sorted, s.items, n * sizeof *sorted) != 0;
                /* chunks of 10 workers: the first holds int(10/K * N) samples */
                for (int j = 0; j < k; j++) {
                    int chunk = j / 10, nw = k < 10 ? k : 10;
                    int64_t c0 = (int64_t)((double)nw / k * (double)n);
                    int64_t n_s = k <= 10 ? n : chunk == 0 ? c0 : n - c0;
                    int64_t need = (int64_t)(0.5 * (double)n_s / nw);
                    double full = (double)n_s / nw;
                    /* the chunk's last worker takes the rest of each class after the
                     * floor of the cumulative cuts: up to 1 sample a class past the cap */
                    int64_t a = s.aux_offsets[j], b = s.aux_offsets[j + 1], block = a;
                    int64_t over = j % 10 == nw - 1 || j == k - 1 ? 1 : 0;
                    for (int64_t i = a; i < b; i++) {
                        if (i > a && labels[s.aux_items[i]] < labels[s.aux_items[i - 1]])
                            bad_order++;
                        if (i + 1 < b && labels[s.aux_items[i + 1]] == labels[s.aux_items[i]])
                            continue;
                        /* [block, i] is one class block; the worker held block - a before it */
                        bad_cap += (double)(block - a) >= full && i + 1 - block > over;
                        block = i + 1;
                    }
                    bad_min += b - a < need;
                }
                split_free(&s);
            }
    CHECK_MSG(bad_order == 0, "%d workers' samples out of class order", bad_order);
    CHECK_MSG(bad_slices == 0, "%d splits whose clients are not the workers' lists cut in K slices", bad_slices);
    CHECK_MSG(bad_min == 0, "%d workers below int(0.5 * N_s / workers)", bad_min);
    CHECK_MSG(bad_cap == 0, "%d workers given a class after reaching N_s / workers (balance cap)", bad_cap);
    CHECK_MSG(redraws > 0, "no split needed a redraw: the minimum rule is untested");
    printf("creff rules: 32 splits, %d needed a redraw\n", redraws);
    free(sorted);
    free(labels);
}

/* The class cuts are floor(cumsum(p) * n_c), as numpy's astype(int) (docs/algorithms.md 1.3).
 * With alpha 1e6 over 2 clients p = (1/2 + d, 1/2 - d), |d| ~ 4e-4: a class of odd size
 * 2m + 1 is cut at floor(m + 1/2 + d (2m + 1)) = m whatever the sign of d (rounding would
 * give m + 1 for about half the classes).  Dirichlet mode, classes of 11, 13, ..., 29. */
static void test_cuts_floor(void)
{
    int32_t labels[200];
    int64_t n = 0, want[10];
    for (int c = 0; c < 10; c++) {
        want[c] = c + 5; /* of 2 (c + 5) + 1 */
        for (int i = 0; i < 2 * (c + 5) + 1; i++)
            labels[n++] = c;
    }
    int bad = 0;
    for (int seed = 1; seed <= 4; seed++) {
        split_opts o;
        split_opts_default(&o);
        o.mode = SPLIT_DIRICHLET;
        o.clients = 2;
        o.alpha = 1e6;
        o.seed = (uint64_t)seed;
        split_result s;
        SPLIT_OK(labels, n, 10, &o, &s);
        int64_t *cnt = check_partition(&s, labels, n, 10);
        for (int c = 0; c < 10; c++)
            bad += cnt[c] != want[c];
        free(cnt);
        split_free(&s);
    }
    CHECK_MSG(bad == 0, "%d of 40 odd-sized classes not cut at the floor (m of 2m + 1)", bad);
}

static void test_dirichlet(void)
{
    int64_t n;
    int32_t *labels = lt_labels(10, 500, 10, &n);
    split_opts o;
    split_opts_default(&o);
    o.mode = SPLIT_DIRICHLET;
    o.min_size = 20;
    split_result s;
    SPLIT_OK(labels, n, 10, &o, &s);
    free(check_partition(&s, labels, n, 10));
    for (int k = 0; k < 20; k++)
        CHECK(s.offsets[k + 1] - s.offsets[k] >= 20);
    split_free(&s);
    /* impossible: bounded retries fail with a message */
    o.alpha = 0.001;
    o.min_size = n / 20;
    o.max_tries = 20;
    CHECK(split_make(labels, n, 10, &o, &s) == ERR_USAGE);
    CHECK(strstr(err_msg(), "tries") != NULL);
    o.min_size = n; /* more than possible */
    CHECK(split_make(labels, n, 10, &o, &s) == ERR_USAGE);
    free(labels);
}

static void test_iid_shards(void)
{
    int64_t n;
    int32_t *labels = lt_labels(10, 500, 10, &n);
    split_opts o;
    split_opts_default(&o);
    o.mode = SPLIT_IID;
    split_result s;
    SPLIT_OK(labels, n, 10, &o, &s);
    int64_t *cnt = check_partition(&s, labels, n, 10);
    for (int k = 0; k < 20; k++)
        CHECK(s.offsets[k + 1] - s.offsets[k] == n / 20 + (k < n % 20));
    free(cnt);
    split_free(&s);

    o.mode = SPLIT_SHARDS;
    o.classes_per_client = 2;
    SPLIT_OK(labels, n, 10, &o, &s);
    cnt = check_partition(&s, labels, n, 10);
    for (int k = 0; k < 20; k++) {
        int nz = 0;
        for (int c = 0; c < 10; c++)
            nz += cnt[k * 10 + c] > 0;
        CHECK(nz >= 1 && nz <= 2);
    }
    free(cnt);
    split_free(&s);
    o.clients = 4; /* 4 x 2 < 10 classes */
    CHECK(split_make(labels, n, 10, &o, &s) == ERR_USAGE);
    o.clients = 20;
    o.classes_per_client = 11;
    CHECK(split_make(labels, n, 10, &o, &s) == ERR_USAGE);
    /* more clients than samples */
    o.mode = SPLIT_IID;
    o.clients = 100;
    CHECK(split_make(labels, 50, 10, &o, &s) == ERR_USAGE);
    o.mode = SPLIT_CREFF;
    o.clients = 20;
    o.alpha = 0;
    CHECK(split_make(labels, n, 10, &o, &s) == ERR_USAGE);
    CHECK(split_mode_parse("shards") == SPLIT_SHARDS && split_mode_parse("x") == -1);
    free(labels);
}

int main(void)
{
    test_dirichlet_moments();
    test_lt_counts();
    test_lt_select();
    test_creff();
    test_creff_rules();
    test_cuts_floor();
    test_dirichlet();
    test_iid_shards();
    TEST_MAIN_END();
}
