/* json.h - a small, bounds-checked JSON reader (RFC 8259) for the headers of files fedsm
 * loads from elsewhere: the safetensors header and Hugging Face config.json.
 *
 * Not a general JSON library: no writer, numbers are kept as double (plus an exact int64
 * when the text is an integer), strings are decoded to UTF-8 (\uXXXX and surrogate pairs
 * included).  Nesting is limited to 64 levels. */
#ifndef FEDSM_JSON_H
#define FEDSM_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL = 0, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ } json_type;

typedef struct json json;
struct json {
    json_type type;
    bool b;
    double num;
    int64_t i;     /* exact value when is_int */
    bool is_int;
    char *str;     /* JSON_STR: NUL-terminated UTF-8 (may hold NULs; see len) */
    size_t len;
    size_t n;      /* JSON_ARR / JSON_OBJ: item count */
    json *items;   /* n values */
    char **keys;   /* JSON_OBJ: n keys */
};

/* Parses len bytes.  Returns owned tree or NULL with ERR_FORMAT and a message giving the
 * byte offset; `what` names the document in messages. */
json *json_parse(const char *text, size_t len, const char *what);
void json_free(json *j); /* NULL-safe */
/* Object member by key (first match), NULL when absent or j is not an object. */
const json *json_get(const json *j, const char *key);
/* Integer member: 0 and *out set, or -1 when absent / not an integer. */
int json_get_int(const json *j, const char *key, int64_t *out);

#endif
