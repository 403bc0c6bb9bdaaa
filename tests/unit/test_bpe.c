/* test_bpe.c - lib/bpe: the algorithm on a small merges file written here (expected ids
 * worked out by hand), and the real CLIP vocabulary (../shared/data, else the binary exits 77,
 * SKIP) against tokens-real.jsonl, the output of the Python reference tokenizer of
 * tests/clip_ref.py on tests/fixtures/clip/tokenizer-strings.txt. */
#include "testlib.h"

#include "bpe.h"
#include "err.h"
#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* byte symbol ids: printable ASCII '!'..'~' are 0..93 in CLIP's order; "</w>" forms +256 */
#define SYM(c) ((c) - '!')
#define SYMW(c) (256 + (c) - '!')

static void small_vocab(void)
{
    char path[] = "/tmp/fedsm-bpe-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    gzFile g = gzopen(path, "wb");
    /* merges: rank 0 "h e" -> 512, 1 "l l" -> 513, 2 "he ll" -> 514, 3 "o</w>" is not a merge
     * (single symbol) so: 3 "ll o</w>" -> 515, 4 "he llo</w>" -> 516 */
    gzputs(g, "#version: test\nh e\nl l\nhe ll\nll o</w>\nhe llo</w>\n");
    gzclose(g);
    bpe *b = bpe_load(path);
    CHECK_MSG(b != NULL, "%s", err_msg());
    if (!b) return;
    CHECK(bpe_vocab_size(b) == 512 + 5 + 2);
    CHECK(bpe_sot(b) == 517 && bpe_eot(b) == 518);
    CHECK(!strcmp(bpe_token_str(b, 516), "hello</w>"));
    int32_t *ids;
    int n;
    /* "hello": h e l l o</w> -> he l l o</w> -> he ll o</w> -> hell o</w>? no: ranks are
     * he(0) ll(1) "he ll"(2) "ll o</w>"(3): after he, ll: [he, ll, o</w>]; best pair is
     * (he, ll) rank 2 -> [hell, o</w>]; (hell, o</w>) is no merge: ids 514, SYMW('o') */
    CHECK(bpe_encode(b, "Hello", &ids, &n) == 0);
    CHECK(n == 2 && ids[0] == 514 && ids[1] == SYMW('o'));
    free(ids);
    /* "llo" -> ll o</w> -> llo</w> (515); "hh" -> h h</w>; "it's" -> it + 's */
    CHECK(bpe_encode(b, "  LLO\t\n hh it's 7", &ids, &n) == 0);
    int32_t want[] = {515, SYM('h'), SYMW('h'), SYM('i'), SYMW('t'), SYM('\''), SYMW('s'), SYMW('7')};
    CHECK(n == 8);
    for (int k = 0; k < n && k < 8; k++) CHECK_MSG(ids[k] == want[k], "token %d: %d vs %d", k, ids[k], want[k]);
    free(ids);
    /* non-printable bytes use the shifted symbols: ' ' (byte 32) is symbol 188 + 32 */
    int32_t ctx[8];
    CHECK(bpe_tokenize(b, "a b c d e f g h i", ctx, 8) == 7);
    CHECK(ctx[0] == 517 && ctx[1] == SYMW('a') && ctx[6] == SYMW('f') && ctx[7] == 518);
    CHECK(bpe_tokenize(b, "", ctx, 8) == 1 && ctx[1] == 518 && ctx[2] == 0);
    bpe_free(b);
    /* a merge of unknown symbols is a format error naming the line */
    g = gzopen(path, "wb");
    gzputs(g, "#version\nh e\nxyz q\n");
    gzclose(g);
    CHECK(bpe_load(path) == NULL && err_last() == ERR_FORMAT && strstr(err_msg(), "line 3"));
    unlink(path);
    CHECK(bpe_load("/nonexistent/vocab.txt.gz") == NULL && err_last() == ERR_IO);
}

static void real_vocab(void)
{
    const char *dir = getenv("FEDSM_SHARED_DATA");
    char path[512];
    snprintf(path, sizeof path, "%s/bpe_simple_vocab_16e6.txt.gz", dir ? dir : "../shared/data");
    if (access(path, R_OK)) {
        SKIP_CHECK("%s not found (set FEDSM_SHARED_DATA): real-vocabulary BPE check, the only one of a "
                   "wrong merge order", path);
        return;
    }
    bpe *b = bpe_load(path);
    CHECK_MSG(b != NULL, "%s", err_msg());
    if (!b) return;
    CHECK(bpe_vocab_size(b) == 49408 && bpe_sot(b) == 49406 && bpe_eot(b) == 49407);
    FILE *f = fopen("tests/fixtures/clip/tokens-real.jsonl", "r");
    CHECK(f != NULL);
    char line[8192];
    int n_lines = 0;
    while (f && fgets(line, sizeof line, f)) {
        json *j = json_parse(line, strcspn(line, "\n"), "tokens-real.jsonl");
        CHECK(j != NULL);
        if (!j) continue;
        const json *t = json_get(j, "text"), *ids = json_get(j, "ids");
        int32_t out[BPE_CONTEXT];
        int eot = bpe_tokenize(b, t->str, out, BPE_CONTEXT);
        bool same = eot == (int)ids->n - 1;
        for (size_t k = 0; same && k < ids->n; k++) same = out[k] == ids->items[k].i;
        CHECK_MSG(same, "'%s': eot %d, reference length %zu", t->str, eot, ids->n);
        if (!same) {
            for (int k = 0; k <= eot && eot > 0; k++) fprintf(stderr, "%d ", out[k]);
            fprintf(stderr, "\n");
        }
        n_lines++;
        json_free(j);
    }
    if (f) fclose(f);
    fprintf(stderr, "real vocabulary: %d strings checked\n", n_lines);
    CHECK(n_lines >= 10);
    bpe_free(b);
}

int main(void)
{
    small_vocab();
    real_vocab();
    TEST_MAIN_END();
}
