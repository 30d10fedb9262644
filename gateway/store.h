/*
 * store: the gateway's durable store of device telemetry, for store-and-forward
 * (docs/store.md). With a store, a device's message is acknowledged to the device once
 * it is durable here; the gateway sends it to the hub from here, in order per device,
 * and acknowledges it to the store once the hub accepted it (or refused it for good).
 *
 * Engine: an append-only log of segment files in one directory, chosen by measurement
 * (docs/store.md: 1.7-2.0 M durable msgs/s against LMDB's 0.14 M and SQLite's 0.05 M on
 * the same disk, and 1.05x write amplification against 35x and 91x during a backlog).
 * Records carry a CRC32C; a record is a message (its id, device id, store time, the
 * encoded hub message) or an acknowledgement (message ids that are done). An in-memory
 * index per device holds where its waiting messages are; a segment whose messages are all
 * done is deleted.
 *
 * Durability: appends join a group, which one helper thread writes (one write) and makes
 * durable (one fdatasync) commit_ms after its first append, or at once when it holds
 * IOTGW_STORE_GROUP_MAX messages; the loop thread never waits for the disk's flush. Each
 * message's on_durable comes back on the loop thread (transport/async.h), in append
 * order. IOTGW_STORE_SYNC_OS skips the fdatasync: SIGKILL or a crash of the gateway
 * still loses nothing acknowledged (the kernel has the data), a power cut or a kernel
 * crash loses what the kernel had not written yet (about 30 s: vm.dirty_expire_centisecs).
 * Acknowledgements travel with the next group, never alone with an fsync: one lost in a
 * crash makes its message go to the hub twice (at least once, same message-id).
 *
 * Recovery at open: every segment is read and each record's CRC checked. A torn record
 * at the end of the newest segment (a crash mid-write) is cut off; a corrupted record
 * elsewhere is skipped, counted and logged, and reading resumes at the next valid record;
 * everything else is recovered. A directory another process holds (an flock on its LOCK
 * file), or one written by an incompatible version (its FORMAT file), is refused with
 * words saying which. ENOSPC or another write error fails that group: its messages get
 * on_durable with an error and are not in the store (the segment is cut back to before
 * the group, so nothing half-written stays), and the next group tries again.
 *
 * Ownership: the store copies what it is given; pointers it returns (iotgw_store_msg.data,
 * device ids) are valid until the next call into the store. Threading: every call on the
 * loop thread; the helper thread is the store's own. Errors: 0 or a negative IOTGW_ERR_*
 * code with the reason in the diag.
 */
#ifndef IOTGW_GATEWAY_STORE_H
#define IOTGW_GATEWAY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "codecs/error.h"
#include "transport/transport.h"

#define IOTGW_STORE_DEFAULT_MAX_BYTES     (1024ull * 1024 * 1024)
#define IOTGW_STORE_DEFAULT_TTL_S         7200 /* as IoT Edge's timeToLiveSecs */
#define IOTGW_STORE_DEFAULT_COMMIT_MS     2
#define IOTGW_STORE_DEFAULT_SEGMENT_BYTES (64ull * 1024 * 1024)
#define IOTGW_STORE_GROUP_MAX             1000
#define IOTGW_STORE_MAX_MESSAGE           (256 * 1024 + 4096) /* a hub message and its envelope */

typedef enum iotgw_store_sync {
    IOTGW_STORE_SYNC_FSYNC = 0, /* fdatasync per group: a power cut loses nothing acknowledged */
    IOTGW_STORE_SYNC_OS = 1,    /* the kernel writes when it will: see above */
} iotgw_store_sync;

typedef enum iotgw_store_on_full {
    IOTGW_STORE_REJECT_NEW = 0,  /* iotgw_store_append fails with IOTGW_ERR_STORE_FULL */
    IOTGW_STORE_DROP_OLDEST = 1, /* the oldest messages, of any device, are dropped for room (those of
                                    the oldest segment with none out; none such: as REJECT_NEW) */
} iotgw_store_on_full;

typedef struct iotgw_store_options {
    const char *path;       /* a directory, made (0700) when missing */
    uint64_t max_bytes;     /* the segments together; 0: IOTGW_STORE_DEFAULT_MAX_BYTES */
    uint32_t ttl_s;         /* a message older than this is dropped, not sent; 0: IOTGW_STORE_DEFAULT_TTL_S */
    iotgw_store_on_full on_full;
    iotgw_store_sync sync;
    uint32_t commit_ms;     /* 0: IOTGW_STORE_DEFAULT_COMMIT_MS */
    uint64_t segment_bytes; /* 0: IOTGW_STORE_DEFAULT_SEGMENT_BYTES (tests use small ones); at most
                               max_bytes / 4 (space is freed a whole segment at a time), 1 KiB .. 1 GiB */
    /* The message appended with token is durable (rc 0), or could not be written (rc
     * IOTGW_ERR_IO, why e.g. "write: No space left on device") and is not in the store. It may
     * call into the store, but not iotgw_store_close. */
    void (*on_durable)(void *ctx, uint64_t token, int rc, const char *why);
    void *ctx;
} iotgw_store_options;

typedef struct iotgw_store_stats {
    uint64_t messages, bytes; /* stored and not done (taken ones and ones not durable yet included) */
    int64_t oldest_ms;        /* store time (wall clock, ms) of the oldest of them; 0: none */
    unsigned devices;         /* devices with messages stored */
    uint64_t disk_bytes;      /* the segments' size on disk */
    uint64_t appended, durable, write_failed; /* since open: appends, made durable, failed groups' messages */
    uint64_t done, expired, dropped_full, refused_full; /* acknowledged; dropped past ttl; for room; refused */
    uint64_t recovered, corrupt_records, torn_bytes; /* found at open (corrupt_records: also messages
                                                        take found corrupt, and dropped) */
} iotgw_store_stats;

typedef struct iotgw_store iotgw_store;

/* Open (and recover) the store. Errors: IOTGW_ERR_IO with words naming the path and the
 * cause; "held by another process (pid N)"; "written by an incompatible version". */
int iotgw_store_open(iotgw_loop *loop, const iotgw_store_options *opt, iotgw_store **out, iotgw_diag *diag);
/* Commit what was appended (its on_durable calls run before this returns), stop the
 * helper thread, close. NULL is fine. */
void iotgw_store_close(iotgw_store *st);

/* Append an encoded hub message of device_id. 0: on_durable(token) follows, never inside
 * this call. IOTGW_ERR_STORE_FULL: rejectNew and no room: nothing stored, no callback.
 * IOTGW_ERR_INVALID_ARG: over IOTGW_STORE_MAX_MESSAGE, or a device id empty or over 255 bytes. */
int iotgw_store_append(iotgw_store *st, const char *device_id, const uint8_t *msg, size_t len, uint64_t token);

/* A stored message handed out to be sent. */
typedef struct iotgw_store_msg {
    uint64_t id;        /* the store's, for iotgw_store_done / _give_back */
    int64_t stored_ms;  /* wall clock */
    const uint8_t *data; /* the encoded hub message */
    size_t len;
} iotgw_store_msg;

/* Hand out up to max durable messages of device_id that are not out already, oldest
 * first; those past the ttl are dropped on the way (counted in expired, and done).
 * Returns how many. A message out is not handed out again until it is given back. */
size_t iotgw_store_take(iotgw_store *st, const char *device_id, iotgw_store_msg *out, size_t max);
/* The message is done: the hub accepted it, or refused it for good. id: one that
 * iotgw_store_take handed out and that is still out; another id is ignored (the same
 * for iotgw_store_give_back). */
void iotgw_store_done(iotgw_store *st, uint64_t id);
/* The message was not sent after all (the hub asked to retry, the device's upstream
 * went away): it is handed out again, before the device's later ones. */
void iotgw_store_give_back(iotgw_store *st, uint64_t id);
/* Messages of device_id stored and not done (out ones included). */
uint64_t iotgw_store_backlog(const iotgw_store *st, const char *device_id);
/* Devices with messages stored, one at a time: i from 0; NULL past the last. */
const char *iotgw_store_device_at(const iotgw_store *st, size_t i);
/* Drop what is past the ttl now (the loop calls it every second or so). */
void iotgw_store_expire(iotgw_store *st);
void iotgw_store_stats_get(const iotgw_store *st, iotgw_store_stats *out);

#endif
