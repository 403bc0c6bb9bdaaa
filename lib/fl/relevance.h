/* relevance.h - FedSM's class relevance matrix S [C,C] (docs/algorithms.md section 5.2)
 * from its sources, all producing the same float matrix that clip-embed writes as the
 * `relevance` tensor of an `embeddings` record:
 * - class embeddings (CLIP text, or imported): cosine of the L2-normalised rows;
 * - WordNet: Wu-Palmer similarity between the classes' noun synsets (lib/models/wordnet.h),
 *   a class resolved through an override map when it has a line there, else as the first
 *   noun sense of its name; S[i][j] = wup(class i, class j) in that order, which is not
 *   always symmetric (see wordnet.h);
 * and the FedSM diagonal rule S_cc <- mean_j S_cj (the mean includes the old S_cc), which
 * the producer does NOT apply: a consumer (featgen --method fedsm) calls
 * relevance_diag_row_mean on what it reads.
 * Not here: drawing features from S (featgen), the text encoder (lib/models/clip.c). */
#ifndef FEDSM_RELEVANCE_H
#define FEDSM_RELEVANCE_H

#include <stdint.h>

#include "record.h"

/* S[i*C+j] = <e_i, e_j> / (|e_i| |e_j|) in double, stored as float; emb: [C, E].
 * 0, or ERR_FORMAT when a row is zero or holds NaN/Inf (the message names the row). */
int relevance_cosine(float *S, const float *emb, int C, int E);

/* S [C,C] from WordNet, in double (exactly NLTK's values; store as float).  dir: the database (NULL: wn_open's default); map_path: an override file
 * or NULL.  Map lines: "class-name synset" (the synset is the last field: "maple.n.02" or
 * a sense key "maple%1:20:00::"; the name is everything before it, compared after
 * lower-casing and spaces to underscores); '#' lines and blank lines are comments.
 * synsets, when not NULL, receives C owned NLTK synset names (free each, then the array).
 * 0; ERR_FORMAT with one message naming every class that cannot be resolved (and why, for
 * map entries), or a bad map line (file and line); ERR_IO for unreadable files. */
int relevance_wordnet(double *S, char ***synsets, const char *dir, const char *map_path,
                      const char *const *classes, int C);

/* The reader of clip-embed's `embeddings` record (docs/format.md): tensor `name` (relevance
 * [C,C], text or relevance_text [C,E]) checked to be <f4 [rows, cols] (cols -1: any, at least
 * 1) with every value finite; *out points into r.  0, or ERR_FORMAT naming the stream,
 * record and tensor (and the first value that is not finite). */
int relevance_tensor(const record *r, const char *name, int64_t rows, int64_t cols,
                     const float **out);

/* S_cc <- (1/C) sum_j S_cj for every c, the sum over the row as it is (old diagonal
 * included), in double.  S: [C, C], changed in place. */
void relevance_diag_row_mean(float *S, int C);

#endif
