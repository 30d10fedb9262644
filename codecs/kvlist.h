/*
 * Iterating "key=value" lists with a separator: connection strings use ';'
 * ("HostName=h;DeviceId=d"), SAS tokens '&' ("sr=..&sig=..&se=.."). A value may itself
 * contain '='; empty items (";;", a trailing ';') are skipped.
 *
 * Ownership: items point into the caller's string; nothing is allocated.
 * Threading: pure and reentrant.
 */
#ifndef IOTGW_CODECS_KVLIST_H
#define IOTGW_CODECS_KVLIST_H

#include <stddef.h>

typedef struct iotgw_kv {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    size_t offset; /* of the item, from the start of the list */
} iotgw_kv;

/* Read the next item at *cursor (inside the list that starts at list) and advance.
 * Returns 1 with kv filled, 0 at the end, or -1 for an item without '=' (kv->offset
 * and kv->key/key_len then describe the whole item). */
int iotgw_kv_next(const char *list, const char **cursor, char sep, iotgw_kv *kv);

#endif
