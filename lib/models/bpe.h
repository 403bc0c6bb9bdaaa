/* bpe.h - CLIP's byte-level BPE tokenizer (openai/CLIP simple_tokenizer.py, the
 * algorithm; no code taken), reading the merges file bpe_simple_vocab_16e6.txt.gz.
 *
 * Vocabulary: the 256 byte symbols, the same with "</w>", one entry per merge (the first
 * 48894 merge lines), then <|startoftext|> and <|endoftext|> (49406, 49407 for CLIP).
 * Text clean-up: HTML entities (&amp; &lt; &gt; &quot; &#39; &apos; &nbsp; and numeric
 * ones, unescaped twice as CLIP does), whitespace runs to one space, trim, Python-style
 * lower-casing.  Deviation: ftfy.fix_text (mojibake repair) and the other named HTML
 * entities are not applied; Final_Sigma lower-casing (Σ -> ς at a word end) is not done.
 * Pre-tokenizer: CLIP's pattern  <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|
 * \p{L}+|\p{N}|[^\s\p{L}\p{N}]+  with Unicode tables generated from Python (bpe_unicode.h).
 *
 * Not thread-safe per handle (no shared state between handles). */
#ifndef FEDSM_BPE_H
#define FEDSM_BPE_H

#include <stdint.h>

#define BPE_CONTEXT 77
#define BPE_MAX_MERGES 48894 /* 49152 - 256 - 2 */

typedef struct bpe bpe;

/* Loads a merges file: gzip-compressed (zlib) or plain text; first line is a header.
 * Returns owned or NULL (ERR_IO unreadable, ERR_FORMAT bad line naming its number). */
bpe *bpe_load(const char *path);
void bpe_free(bpe *b); /* NULL-safe */

int bpe_vocab_size(const bpe *b);
int32_t bpe_sot(const bpe *b);
int32_t bpe_eot(const bpe *b);
/* The vocabulary string of id (byte symbols in CLIP's unicode form); NULL if out of range. */
const char *bpe_token_str(const bpe *b, int32_t id);

/* Encodes text (UTF-8) without start/end tokens.  *ids is malloc'd (caller frees), *n its
 * length.  0 or a negative error. */
int bpe_encode(const bpe *b, const char *text, int32_t **ids, int *n);
/* CLIP's tokenize: sot, tokens, eot in out[context], zero padded; when too long, truncated
 * and the last slot set to eot.  Returns the eot position (>= 1), or a negative error. */
int bpe_tokenize(const bpe *b, const char *text, int32_t *out, int context);

#endif
