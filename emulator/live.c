/* The hub's live table: one emu_live per identity that has been active, found by the
 * identity's id (emulator/hub_internal.h says what an entry holds and how long it
 * lives). Chained buckets, a power of two of them, doubled when entries outnumber them,
 * so that a lookup stays O(1) from a handful of devices to the benchmarks' many. */
#include <stdlib.h>
#include <string.h>

#include "emulator/hub_internal.h"

#define FIRST_BUCKETS 64

/* FNV-1a of the id. */
static uint32_t hash_of(const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *s = (const unsigned char *)id; *s; s++)
        h = (h ^ *s) * 16777619u;
    return h;
}

emu_live *emu_live_find(const emu_live_table *t, const emu_identity *id)
{
    if (!t->nbuckets)
        return NULL;
    uint32_t h = hash_of(id->id);
    for (emu_live *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->hash_next)
        if (e->hash == h && !strcmp(e->id->id, id->id)) {
            IOTGW_ASSERT(e->id == id); /* an identity leaves the registry only after its entry */
            return e;
        }
    return NULL;
}

/* Rehash into twice the buckets; on failure the table stays as it is (only slower). */
static void grow(emu_live_table *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : FIRST_BUCKETS;
    emu_live **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (emu_live *e = t->buckets[i], *next; e; e = next) {
            next = e->hash_next;
            e->hash_next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

emu_live *emu_live_get(emu_live_table *t, emu_identity *id)
{
    emu_live *e = emu_live_find(t, id);
    if (e)
        return e;
    if (t->count >= t->nbuckets)
        grow(t);
    if (!t->nbuckets || !(e = calloc(1, sizeof *e)))
        return NULL;
    e->id = id;
    e->hash = hash_of(id->id);
    emu_live **head = &t->buckets[e->hash & (t->nbuckets - 1)];
    e->hash_next = *head;
    *head = e;
    t->count++;
    return e;
}

void emu_live_remove(emu_live_table *t, emu_live *live)
{
    IOTGW_ASSERT(!live->active && !live->sessions && !live->c2d);
    emu_live **p = &t->buckets[live->hash & (t->nbuckets - 1)];
    while (*p && *p != live)
        p = &(*p)->hash_next;
    IOTGW_ASSERT(*p == live); /* it is in this table */
    *p = live->hash_next;
    t->count--;
    free(live);
}

void emu_live_table_free(emu_live_table *t, void (*before_free)(emu_live *live))
{
    for (size_t i = 0; i < t->nbuckets; i++)
        for (emu_live *e = t->buckets[i], *next; e; e = next) {
            next = e->hash_next;
            if (before_free)
                before_free(e);
            free(e);
        }
    free(t->buckets);
    *t = (emu_live_table){0};
}
