/* wordnet.h - the noun half of the WordNet 3.0 database, read directly from its files
 * (Debian's wordnet-base: /usr/share/wordnet/index.noun and data.noun; no libwordnet), and
 * Wu-Palmer similarity between two noun synsets computed exactly as NLTK 3.x's
 * Synset.wup_similarity does with its defaults (docs/algorithms.md section 5.2, the
 * WordNet source of the semantic relevance).
 *
 * What NLTK does, and so what this does (nouns; no simulated root: every WordNet 3.0 noun
 * reaches entity.n.01):
 * - hypernyms are the '@' and '@i' (instance) pointers;
 * - the subsumers are the common hypernyms (each synset counts as its own) of greatest
 *   *minimum* depth (NLTK's use_min_depth=True); among ties the one whose NLTK name sorts
 *   first, unless the first synset is one of them;
 * - depth = its maximum depth + 1; len_i = the shortest path distance between synset i and
 *   the subsumer (through any common ancestor); wup = 2 depth / (len_1 + len_2 + 2 depth).
 * Two consequences, both NLTK's, kept on purpose:
 * - a synset with hypernym paths of different lengths is not 1.0 similar to itself:
 *   dog.n.01 (canine.n.02 and domestic_animal.n.01) gives 26/28 = 0.92857...;
 * - the measure is not always symmetric: when the first synset is an ancestor of the
 *   second and ties in minimum depth with another common hypernym, it is the subsumer only
 *   in that order: wup(woman.n.01, girl.n.01) = 18/19 but wup(girl.n.01, woman.n.01) =
 *   12/19 (organism.n.01, also of minimum depth 5, sorts first).
 *
 * Synsets are named by their data.noun byte offset.  A spec names one (wn_resolve):
 *   "maple tree" / "Maple_Tree"  a lemma: lower-cased, spaces to underscores, first sense
 *                                (exact lemma; no morphological reduction of plurals);
 *   "maple.n.02"                 NLTK's synset name: lemma, "n", 1-based sense number;
 *   "maple%1:20:00::"            a sense key (noun: ss_type 1), matched on the lemma's
 *                                synsets by lexicographer file and lex_id (Debian ships no
 *                                index.sense; the result is what index.sense would give).
 *
 * The database is input: every field is parsed with bounds, an offset must point at the
 * start of a line carrying that offset, and a broken file gives one ERR_FORMAT message
 * naming the file, line or offset, and field.  Not here: verbs/adjectives, morphy, other
 * similarity measures, glosses. */
#ifndef FEDSM_WORDNET_H
#define FEDSM_WORDNET_H

#include <stddef.h>
#include <stdint.h>

typedef struct wn_db wn_db;

/* Opens dir/index.noun and dir/data.noun (dir NULL: $WNSEARCHDIR, else
 * /usr/share/wordnet) and reads the index.  Returns owned or NULL: ERR_IO (missing or
 * unreadable file; the message names it and the package), ERR_FORMAT (a corrupt index
 * line, named by file and line), ERR_INTERNAL (out of memory). */
wn_db *wn_open(const char *dir);
void wn_close(wn_db *db); /* NULL-safe */
const char *wn_dir(const wn_db *db); /* borrowed */

/* Resolves spec (see above) to a synset.  0 with *syn set; 1 when WordNet has no such
 * noun, sense number or sense key (the message says which, nothing else changes); < 0 on
 * a corrupt database (ERR_FORMAT) or out of memory. */
int wn_resolve(wn_db *db, const char *spec, uint32_t *syn);

/* NLTK's name of synset syn ("maple.n.02") into buf[cap].  0, or < 0 (corrupt database,
 * buf too small: ERR_INTERNAL). */
int wn_synset_name(wn_db *db, uint32_t syn, char *buf, size_t cap);

/* Wu-Palmer similarity of two synsets, as NLTK (see above), in (0, 1].  0, or < 0
 * (ERR_FORMAT: corrupt database, a hypernym cycle, no common hypernym). */
int wn_wup(wn_db *db, uint32_t a, uint32_t b, double *sim);

/* Longest and shortest hypernym path lengths from syn to a root (NLTK's max_depth and
 * min_depth).  0 or < 0. */
int wn_depths(wn_db *db, uint32_t syn, int *min_depth, int *max_depth);

#endif
