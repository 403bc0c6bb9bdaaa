/* test_wordnet.c - lib/models/wordnet.c on hand-made databases (a four-level toy taxonomy
 * whose Wu-Palmer values are worked out below by hand from the formula in wordnet.h) and
 * corrupt copies of them: each must give one ERR_FORMAT/ERR_IO naming the file and field,
 * never a crash.  And lib/fl/relevance.c: cosine S against a direct double computation
 * (1e-6), the row-mean diagonal (1e-6), WordNet S with a map, and the one error naming every
 * unresolved class.  The comparison with NLTK on the real database and the CIFAR names is
 * tests/tools/relevance.sh (docs/algorithms.md section 5.2). */
#include "testlib.h"

#include "err.h"
#include "relevance.h"
#include "wordnet.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/fedsm-wn-XXXXXX";

/* Toy taxonomy: entity <- animal <- dog, animal <- pet <- dog (two paths: dog has min depth 2,
 * max depth 3), animal <- cat, pet <- fido (instance of pet), dog <- puppy. */
static const char *names[] = {"entity", "animal", "pet", "dog", "cat", "fido", "puppy"};
static const int parent[][2] = {{-1, -1}, {0, -1}, {1, -1}, {1, 2}, {1, -1}, {2, -1}, {3, -1}};
static unsigned offs[7];

static void write_db(const char *corrupt_what, const char *corrupt_with)
{
    char p[256], lines[7][256];
    const char *header = "  1 This is a toy database.    \n"; /* licence lines start with spaces */
    unsigned off;
    for (int pass = 0; pass < 2; pass++) {
        off = (unsigned)strlen(header);
        for (int i = 0; i < 7; i++) {
            char ptrs[128] = "";
            int np = 0;
            for (int k = 0; k < 2; k++)
                if (parent[i][k] >= 0) {
                    char b[48];
                    snprintf(b, sizeof b, " %s %08u n 0000", i == 5 ? "@i" : "@", offs[parent[i][k]]);
                    strcat(ptrs, b);
                    np++;
                }
            snprintf(lines[i], sizeof lines[i], "%08u 05 n 01 %s 0 %03d%s | a %s  \n", off, names[i], np, ptrs, names[i]);
            offs[i] = off;
            off += (unsigned)strlen(lines[i]);
        }
    }
    snprintf(p, sizeof p, "%s/data.noun", dir);
    FILE *f = fopen(p, "w");
    fputs(header, f);
    for (int i = 0; i < 7; i++) {
        char *l = lines[i], *at = corrupt_what ? strstr(l, corrupt_what) : NULL;
        if (at) fprintf(f, "%.*s%s%s", (int)(at - l), l, corrupt_with, at + strlen(corrupt_what));
        else fputs(l, f);
    }
    fclose(f);
    snprintf(p, sizeof p, "%s/index.noun", dir);
    f = fopen(p, "w");
    fprintf(f, "  1 This is a toy index.\n");
    const char *sorted[] = {"animal", "cat", "dog", "entity", "fido", "pet", "puppy"};
    for (int k = 0; k < 7; k++) {
        int i = 0;
        while (strcmp(names[i], sorted[k])) i++;
        char l[128];
        if (!strcmp(sorted[k], "dog")) /* two senses: dog.n.02 is cat's synset */
            snprintf(l, sizeof l, "dog n 2 1 @ 2 0 %08u %08u  \n", offs[3], offs[4]);
        else snprintf(l, sizeof l, "%s n 1 1 @ 1 0 %08u  \n", sorted[k], offs[i]);
        char *at = corrupt_what ? strstr(l, corrupt_what) : NULL;
        if (at && strncmp(corrupt_what, "000", 3)) fprintf(f, "%.*s%s%s", (int)(at - l), l, corrupt_with, at + strlen(corrupt_what));
        else fputs(l, f);
    }
    fclose(f);
}

static double wup(wn_db *db, const char *a, const char *b)
{
    uint32_t x = 0, y = 0;
    double s = -1;
    CHECK(wn_resolve(db, a, &x) == 0);
    CHECK(wn_resolve(db, b, &y) == 0);
    CHECK(wn_wup(db, x, y, &s) == 0);
    return s;
}

static void expect_open_error(const char *what, const char *with, int code, const char *msg)
{
    write_db(what, with);
    wn_db *db = wn_open(dir);
    int rc = db ? 0 : err_last();
    if (db) { /* data lines are read lazily: use every synset */
        for (int i = 0; i < 7 && !rc; i++) {
            uint32_t s;
            double v;
            rc = wn_resolve(db, names[i], &s);
            if (!rc) rc = wn_wup(db, s, s, &v);
            if (rc == 1) rc = ERR_FORMAT;
        }
        wn_close(db);
    }
    CHECK_MSG(rc == code && strstr(err_msg(), msg), "corrupting '%s' -> '%s': rc %d, message '%s'", what, with, rc,
              err_msg());
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    write_db(NULL, NULL);
    wn_db *db = wn_open(dir);
    CHECK_MSG(db != NULL, "%s", err_msg());
    if (db) {
        int mn, mx;
        uint32_t s;
        char nm[64];
        CHECK(wn_resolve(db, "dog", &s) == 0 && wn_depths(db, s, &mn, &mx) == 0 && mn == 2 && mx == 3);
        CHECK(wn_resolve(db, "Dog", &s) == 0 && s == offs[3]);
        CHECK(wn_resolve(db, "dog.n.02", &s) == 0 && s == offs[4]);
        CHECK(wn_synset_name(db, offs[4], nm, sizeof nm) == 0 && !strcmp(nm, "cat.n.01"));
        CHECK(wn_resolve(db, "dog%1:05:00::", &s) == 0 && s == offs[3]);
        CHECK(wn_resolve(db, "dog%1:06:00::", &s) == 1 && strstr(err_msg(), "no noun with sense key"));
        CHECK(wn_resolve(db, "dog.n.03", &s) == 1 && strstr(err_msg(), "has only 2 senses"));
        CHECK(wn_resolve(db, "dog.v.01", &s) == 1);
        CHECK(wn_resolve(db, "wolf", &s) == 1 && strstr(err_msg(), "no noun 'wolf'"));
        /* dog with itself: common hypernyms {dog 2, animal 1, pet 2, entity 0} by min depth:
         * dog and pet tie at 2 and dog is the first synset, so dog: depth 4, lens 0 -> 1 */
        CHECK_CLOSE(wup(db, "dog", "dog"), 1.0, 1e-15);
        /* pet with dog: subsumer pet (min 2; dog not common): depth 3, len 0 + 1 -> 6/7 */
        CHECK_CLOSE(wup(db, "pet", "dog"), 6.0 / 7, 1e-15);
        /* dog with pet: dog is not common; pet -> the same 6/7 */
        CHECK_CLOSE(wup(db, "dog", "pet"), 6.0 / 7, 1e-15);
        /* dog with cat: animal (depth 2); len dog-animal 1, cat-animal 1 -> 4/6 */
        CHECK_CLOSE(wup(db, "dog", "cat"), 4.0 / 6, 1e-15);
        /* fido (instance of pet) with dog: pet, depth 3, lens 1 + 1 -> 6/8 */
        CHECK_CLOSE(wup(db, "fido", "dog"), 6.0 / 8, 1e-15);
        /* puppy with dog: dog and pet tie at min depth 2, puppy is neither: the first name,
         * dog.n.01; depth = its MAX depth 3 + 1; lens 1 + 0 -> 8/9 */
        CHECK_CLOSE(wup(db, "puppy", "dog"), 8.0 / 9, 1e-15);
        CHECK_CLOSE(wup(db, "puppy", "puppy"), 1.0, 1e-15);
        wn_close(db);

        /* relevance_wordnet: map, names, every unresolved class in one message */
        double S[9];
        char **syn = NULL;
        const char *cls[] = {"Dog", "kitty", "fido"}, *bad[] = {"wolf", "dog", "kitty", "fox"};
        char mp[300];
        snprintf(mp, sizeof mp, "%s/map", dir);
        FILE *f = fopen(mp, "w");
        fprintf(f, "# comment\n\nkitty   dog.n.02\nfox dog.n.9\n");
        fclose(f);
        CHECK_MSG(relevance_wordnet(S, &syn, dir, mp, cls, 3) == 0, "%s", err_msg());
        if (syn) {
            CHECK(!strcmp(syn[0], "dog.n.01") && !strcmp(syn[1], "cat.n.01") && !strcmp(syn[2], "fido.n.01"));
            CHECK_CLOSE(S[1], 4.0 / 6, 1e-15);
            CHECK_CLOSE(S[5], 4.0 / 7, 1e-15); /* cat-fido: animal, depth 2, lens 1 + 2 -> 4/7 */
            for (int k = 0; k < 3; k++) free(syn[k]);
            free(syn);
        }
        CHECK(relevance_wordnet(S, NULL, dir, mp, bad, 4) == ERR_FORMAT);
        CHECK_MSG(strstr(err_msg(), "2 classes not resolved") && strstr(err_msg(), "wolf, fox (map line 4"), "%s",
                  err_msg());
        f = fopen(mp, "w");
        fprintf(f, "kitty dog.n.02\nKitty cat\n");
        fclose(f);
        CHECK(relevance_wordnet(S, NULL, dir, mp, cls, 3) == ERR_FORMAT && strstr(err_msg(), "line 2: 'kitty' is mapped again"));
    }

    /* cosine S and the row-mean diagonal against direct double sums */
    {
        enum { C = 5, E = 7 };
        float emb[C * E], S[C * C];
        for (int k = 0; k < C * E; k++) emb[k] = (float)((k * 37 % 11) - 5) * 0.25f + (k % 3 == 0 ? 1.5f : 0.f);
        CHECK(relevance_cosine(S, emb, C, E) == 0);
        double worst = 0;
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                double d = 0, a = 0, b = 0;
                for (int k = 0; k < E; k++)
                    d += (double)emb[i * E + k] * emb[j * E + k], a += (double)emb[i * E + k] * emb[i * E + k],
                        b += (double)emb[j * E + k] * emb[j * E + k];
                worst = fmax(worst, fabs(S[i * C + j] - d / sqrt(a * b)));
            }
        CHECK_MSG(worst < 1e-6, "cosine off by %g", worst);
        double mean[C];
        for (int i = 0; i < C; i++) {
            mean[i] = 0;
            for (int j = 0; j < C; j++) mean[i] += S[i * C + j] / C;
        }
        float before = S[1];
        relevance_diag_row_mean(S, C);
        for (int i = 0; i < C; i++) CHECK_CLOSE(S[i * C + i], mean[i], 1e-6);
        CHECK(S[1] == before);
        emb[2 * E + 3] = NAN;
        CHECK(relevance_cosine(S, emb, C, E) == ERR_FORMAT && strstr(err_msg(), "row 2"));
        for (int k = 0; k < E; k++) emb[2 * E + k] = 0;
        CHECK(relevance_cosine(S, emb, C, E) == ERR_FORMAT && strstr(err_msg(), "row 2 is zero"));
    }

    /* corrupt databases */
    expect_open_error("05 n 01 dog 0 002", "05 n 01 dog 0 003", ERR_FORMAT, "fewer pointers than p_cnt");
    expect_open_error(" n 01 cat", " v 01 cat", ERR_FORMAT, "ss_type is not n");
    expect_open_error("n 01 pet 0", "n 0g pet 0", ERR_FORMAT, "bad w_cnt");
    expect_open_error("cat n 1 1 @ 1 0", "cat n 2 1 @ 2 0", ERR_FORMAT, "index.noun line");
    expect_open_error("entity n 1 1 @ 1", "entity x 1 1 @ 1", ERR_FORMAT, "part of speech is not n");
    expect_open_error("fido 0 001 @i 0", "fido 0 001 @i x", ERR_FORMAT, "bad pointer");
    char p[300];
    write_db(NULL, NULL);
    snprintf(p, sizeof p, "%s/data.noun", dir);
    truncate(p, 100);
    db = wn_open(dir);
    CHECK(!db && err_last() == ERR_FORMAT && strstr(err_msg(), "truncated"));
    unlink(p);
    db = wn_open(dir);
    CHECK(!db && err_last() == ERR_IO && strstr(err_msg(), "wordnet-base"));
    snprintf(p, sizeof p, "rm -rf %s", dir);
    if (system(p)) fprintf(stderr, "cannot remove %s\n", dir);
    TEST_MAIN_END();
}
