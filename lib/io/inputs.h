/* inputs.h - meta.inputs, what an output was made from (DESIGN 6, docs/format.md "meta"):
 *   "inputs": {"records": ["<hex SHA-256 of input 1>", ...], "options": "<hex SHA-256>"}
 * records: one digest per input stream, in the order the tool names them (a file's bytes;
 * "" for stdin and ZeroMQ inputs, which have no file to digest); options: the digest of
 * the canonical option string, "name=value\n" per option that changes the output, in a
 * fixed order per tool.  Two outputs with equal inputs maps were made from the same bytes
 * with the same options (the pipelines' cache key).
 * What it is not: provenance of paths (a moved file keeps its digest). */
#ifndef FEDSM_INPUTS_H
#define FEDSM_INPUTS_H

#include "mval.h"
#include "record.h"
#include "sha256.h"

#include <stdint.h>

typedef struct {
    mval records;   /* array of hex strings */
    sha256_ctx opt; /* over "name=value\n" */
    int err;        /* first error of an add (returned by inputs_set) */
} inputs;

void inputs_init(inputs *in);
/* Appends the SHA-256 of the file spec names ("" for '-' and ZeroMQ endpoints). */
void inputs_add_file(inputs *in, const char *spec);
/* Appends a digest computed elsewhere (hex, 64 characters). */
void inputs_add_digest(inputs *in, const char *hex);
/* Adds "name=value\n" to the options digest. */
void inputs_add_option(inputs *in, const char *name, const char *value);
void inputs_add_option_int(inputs *in, const char *name, int64_t value);
/* Adds "name=%.17g\n". */
void inputs_add_option_float(inputs *in, const char *name, double value);
/* Sets r's meta.inputs and releases in; 0 or the first error (file unreadable, no memory). */
int inputs_set(inputs *in, record *r);
/* Releases in without setting anything (NULL-safe). */
void inputs_clear(inputs *in);
/* True when two meta.inputs values are the same map (records and options equal). */
bool inputs_equal(const mval *a, const mval *b);

#endif
