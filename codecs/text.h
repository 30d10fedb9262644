/*
 * text: the few string helpers every layer needs, in one place.
 *
 * Ownership: iotgw_strdup_or_null's result is the caller's (free). Threading: pure.
 * Errors: NULL for no memory; a copy that would not fit says so (-1).
 */
#ifndef IOTGW_CODECS_TEXT_H
#define IOTGW_CODECS_TEXT_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* A copy of s, or NULL for NULL (and for no memory: check s && !result). */
static inline char *iotgw_strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* s into out (size bytes, NUL-terminated in any case): 0, or -1 when it was cut. For a
 * buffer that holds outside input, so that a cut is a refusal, not a silent change. */
static inline int iotgw_text_copy(char *out, size_t size, const char *s)
{
    size_t n = strlen(s);
    if (!size)
        return -1;
    if (n >= size) {
        memcpy(out, s, size - 1);
        out[size - 1] = '\0';
        return -1;
    }
    memcpy(out, s, n + 1);
    return 0;
}

#endif
