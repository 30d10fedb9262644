/*
 * Fleet sharding: a fleet split over N gateway instances, each device with exactly one
 * home instance, decided from the device's id alone so that the instances (and
 * iotgw-devsim --shard) agree without talking to each other. The home of a device is
 * the 32-bit FNV-1a hash of its id's bytes modulo N. Changing the function moves devices
 * between instances: tests/unit/test_shard.c pins it with fixed vectors.
 *
 * The hash and the home are inline here so that every program computes them with this
 * one definition, including iotgw-devsim, which compiles the codecs it needs from source.
 * shard.c reads a shard index from a StatefulSet pod name ("iotgw-2": 2).
 *
 * Ownership: nothing is allocated. Threading: pure and reentrant. Errors:
 * IOTGW_ERR_INVALID_ARG with the reason in the diag.
 */
#ifndef IOTGW_CODECS_SHARD_H
#define IOTGW_CODECS_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "codecs/error.h"

/* The most shards a fleet may be split into (fleet.shard.count, --shard I/N). */
#define IOTGW_SHARD_MAX 1024

/* FNV-1a, 32 bits (offset basis 2166136261, prime 16777619), over len bytes of id. */
static inline uint32_t iotgw_shard_hash(const char *id, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)id[i];
        h *= 16777619u;
    }
    return h;
}

/* The home shard of the device with this id (a NUL-terminated string), in [0, count);
 * 0 for a count of 0 or 1. */
static inline unsigned iotgw_shard_of(const char *id, unsigned count)
{
    size_t len = 0;
    while (id[len])
        len++;
    return count > 1 ? iotgw_shard_hash(id, len) % count : 0;
}

/* The ordinal a StatefulSet gives its pod, from the pod's name: the decimal number after
 * the name's last '-' ("iotgw-2": 2; "edge-gw-10": 10). The name must be a Kubernetes
 * name (1 to 253 of a-z, 0-9, '-', '.'), the number without leading zeros and below
 * 1,000,000,000. The diag quotes the name only when it is such a name. */
int iotgw_shard_ordinal(const char *name, unsigned *ordinal, iotgw_diag *diag);

#endif
