#include "codecs/kvlist.h"

#include <string.h>

int iotgw_kv_next(const char *list, const char **cursor, char sep, iotgw_kv *kv)
{
    const char *p = *cursor;
    while (*p == sep)
        p++;
    if (!*p) {
        *cursor = p;
        return 0;
    }
    const char *end = strchr(p, sep);
    size_t len = end ? (size_t)(end - p) : strlen(p);
    *cursor = p + len;
    kv->offset = (size_t)(p - list);
    const char *eq = memchr(p, '=', len);
    kv->key = p;
    if (!eq) {
        kv->key_len = len;
        kv->value = NULL;
        kv->value_len = 0;
        return -1;
    }
    kv->key_len = (size_t)(eq - p);
    kv->value = eq + 1;
    kv->value_len = len - kv->key_len - 1;
    return 1;
}
