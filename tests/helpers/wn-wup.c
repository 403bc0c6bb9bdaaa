/* wn-wup - test helper: WordNet relevance of a class list, in full double precision, for
 * tests/tools/wordnet.sh to compare with NLTK's wup_similarity (docs/algorithms.md 5.2).
 *   wn-wup CLASSES [MAP|-] [DIR]
 * prints "class<TAB>synset" per class, then C rows of C values (%.17g).  Errors: the
 * library's message on stderr, exit 1.  Not a tool: no options, no records. */
#include "err.h"
#include "relevance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: wn-wup CLASSES [MAP|-] [DIR]\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    char **cls = NULL, line[1024];
    int C = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        cls = realloc(cls, (size_t)(C + 1) * sizeof *cls);
        cls[C++] = strdup(line);
    }
    fclose(f);
    const char *map = argc > 2 && strcmp(argv[2], "-") ? argv[2] : NULL, *dir = argc > 3 ? argv[3] : NULL;
    double *S = malloc((size_t)C * C * sizeof *S);
    char **syn = NULL;
    if (!S || relevance_wordnet(S, &syn, dir, map, (const char *const *)cls, C)) {
        fprintf(stderr, "wn-wup: error: %s\n", err_msg());
        return 1;
    }
    for (int c = 0; c < C; c++) printf("%s\t%s\n", cls[c], syn[c]);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) printf("%.17g%c", S[(size_t)i * C + j], j + 1 < C ? ' ' : '\n');
    for (int c = 0; c < C; c++) free(cls[c]), free(syn[c]);
    free(cls);
    free(syn);
    free(S);
    return 0;
}
