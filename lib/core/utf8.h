/* utf8.h - the UTF-8 encoder shared by the JSON reader and the BPE tokenizer, and the
 * validator of the text files read as names (class lists, prompt templates). */
#ifndef FEDSM_UTF8_H
#define FEDSM_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes code point cp (< 0x110000) to o as 1-4 bytes; returns the byte count. */
static inline size_t utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Length of the valid UTF-8 prefix of s[0, n) (n when all of it is valid): no overlong
 * forms, surrogates or code points above U+10FFFF.  A NUL byte is valid UTF-8: callers that
 * refuse it check for it themselves. */
static inline size_t utf8_valid_prefix(const unsigned char *s, size_t n)
{
    for (size_t k = 0; k < n;) {
        unsigned c = s[k];
        unsigned len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || k + len > n || (len == 2 && c < 0xC2))
            return k;
        uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
        for (unsigned j = 1; j < len; j++) {
            if ((s[k + j] & 0xC0) != 0x80)
                return k;
            cp = cp << 6 | (s[k + j] & 0x3Fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp < 0xE000))
            return k;
        k += len;
    }
    return n;
}

#endif
