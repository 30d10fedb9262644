/*
 * The durable store (gateway/store.h): an append-only log of segment files, an index in
 * memory, one helper thread for the disk's writes and flushes.
 *
 * Directory:
 *   FORMAT                 "iotgw-store 1\n"; a store with anything else is refused
 *   LOCK                   flock()ed (LOCK_EX|LOCK_NB) for the store's life; the holder's pid
 *   0000000000000001.seg   segments: 16 hex digits of a u64 sequence, read in its order
 *
 * Record, little-endian:
 *   u32 magic, u32 len (the bytes after the crc), u32 crc32c (of those len bytes), then
 *   u8 type 1, a message: u64 id, i64 stored_ms, u8 device id length, device id, payload
 *   u8 type 2, acknowledgements: u64 ids of messages that are done (ACK_PER_RECORD at most)
 *
 * Groups: appends and acknowledgements go into the filling group (fill). It is handed to
 * the helper commit_ms after its first entry (commit_timer), or at once when it holds
 * IOTGW_STORE_GROUP_MAX messages or GROUP_MAX_BYTES. The helper writes it with one pwrite()
 * at the segment's known end, fdatasync()s it (unless SYNC_OS, or when it holds only
 * acknowledgements), and says so through iotgw_async; the loop then marks its messages
 * durable and calls on_durable for each, in order. One group is at the helper (flight)
 * while the next fills. A group goes into the newest segment, or into a new one when the
 * newest would pass segment_bytes (the helper creates it and fsyncs the directory). A
 * failed write is cut back with ftruncate(); its messages fail, its acknowledgements go
 * into the next group.
 *
 * Space: a segment goes (the helper unlinks it) once it is not the newest and all its
 * messages are done. Whole segments only, no compaction: one message not done keeps its
 * whole segment, so a device that is never drained pins every segment it has messages in.
 * maxBytes counts the segments on disk (with the space of their done messages) and the
 * groups not yet written. dropOldest drops every message of the oldest segment that has
 * none out (taken and not given back), and of the next, until the new message fits; when
 * every older segment has messages out, it refuses as rejectNew does. The drops' own
 * acknowledgements (8 bytes each) may take it a little past maxBytes; acknowledgements are
 * never refused. ttl: take() drops expired ones on its way; iotgw_store_expire() sweeps each
 * device from its oldest and stops at its first one not expired (out ones are skipped).
 *
 * Acknowledgements that outlive their messages' segment: an acknowledgement in segment A
 * of a message in an older segment T matters as long as T is there. T keeps a tombstone
 * per done message (its id, and the segment its acknowledgement is in); A counts the
 * tombstones that point at it (ack_refs), and does not go while they do: when its own
 * messages are all done, the acknowledgements it holds for segments still there are
 * written again into the newest segment (relog), and A goes once that group is written.
 * So a message done before a clean restart never comes back; one whose acknowledgement
 * was not written yet when the process died comes back (at least once).
 *
 * Recovery reads every segment in order, checks every record, and resynchronises byte by
 * byte after a bad one (the next magic whose record verifies). Bad bytes at the end of
 * the newest segment are a torn write: cut off. Elsewhere they are corrupt: skipped,
 * counted and logged, the file left as it is. Ids go on from the highest seen, in a
 * message or an acknowledgement, plus one.
 *
 * Memory: 32 bytes per stored message (struct ent) in its device's ring, 16 per done
 * message whose segment is still there (struct tomb); an out message also has a slot in
 * the out map (id -> device, position).
 *
 * Threading: everything on the loop's thread but run_job() (the helper), which touches
 * only the job it was handed, the directory's descriptor and name and its own log budget;
 * posted, finished and quit are under mu. on_durable may call into the store (not close).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codecs/assert.h"
#include "gateway/store.h"
#include "transport/async.h"
#include "transport/log.h"

#define FORMAT_TEXT       "iotgw-store 1\n"
#define REC_MAGIC         0xC6A4A793u
#define REC_HDR           12 /* magic, len, crc */
#define REC_MSG           1
#define REC_ACK           2
#define MSG_FIXED         18 /* type, id, stored_ms, device id length */
#define DEVICE_ID_MAX     255
#define ACK_PER_RECORD    4096
#define REC_MAX_LEN       (MSG_FIXED + DEVICE_ID_MAX + IOTGW_STORE_MAX_MESSAGE)
#define GROUP_MAX_BYTES   (4u << 20)
#define SEGMENT_BYTES_MIN 1024ull
#define SEGMENT_BYTES_MAX (1ull << 30)
#define ACK_RETRY_MS      1000 /* acknowledgements alone, after a failed group */
#define TOMB_RELOG        (1ull << 63)

/* ------------------------------------------------------------------ CRC32C */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

/* CRC32C (Castagnoli), slicing by 8; crc32c("123456789") == 0xE3069283. */
static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = ~0u;
    while (n >= 8) {
        uint32_t lo =
            c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
            crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
            crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

/* ------------------------------------------------------------------ little-endian */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ------------------------------------------------------------------ types */

typedef struct tomb {
    uint64_t id;
    uint64_t ack; /* seq of the segment holding its written acknowledgement, 0: none yet; | TOMB_RELOG */
} tomb;

typedef struct seg {
    uint64_t seq;
    int fd;            /* -1 while the helper creates it */
    uint64_t size;     /* bytes written and kept */
    uint64_t live;     /* its messages not done (durable or out) */
    uint64_t nout;     /* of them, out */
    uint64_t ack_refs; /* tombstones of other segments whose acknowledgement is here */
    int relog;         /* the acknowledgements others need are being written again */
    int broken;        /* a failed write could not be cut back: the next group goes elsewhere */
    tomb *tombs;
    size_t ntombs, tombcap;
} seg;

enum ent_state { E_PENDING = 0, E_DURABLE, E_OUT, E_REMOVED };

typedef struct ent {
    uint64_t id;
    int64_t stored_ms;
    seg *seg;          /* once durable */
    uint64_t off : 40; /* the record's, in seg */
    uint64_t plen : 20;
    uint64_t state : 4;
} ent;
_Static_assert(sizeof(ent) == 32, "an index entry is 32 bytes");

/* A device's messages, oldest first: a ring addressed by absolute position; [head, tail)
 * are in it; every entry in [head, scan) is out or removed; head is never a removed one. */
typedef struct dev {
    struct dev *hnext;
    uint32_t hash;
    size_t slot; /* in st->devs */
    ent *ring;
    uint64_t cap, head, tail, scan;
    uint64_t count;   /* entries not removed */
    uint64_t last_id; /* recovery: the last message id seen */
    uint8_t idlen;
    char id[];
} dev;

/* id -> (device, position): open addressing, linear probing, backward-shift deletion. */
typedef struct idslot {
    uint64_t id; /* 0: empty */
    dev *d;
    uint64_t abs;
} idslot;

typedef struct idmap {
    idslot *s;
    size_t cap, n;
} idmap;

typedef struct gmsg {
    uint64_t token;
    dev *d;
    uint64_t abs;
    size_t bufoff;
} gmsg;

#define NO_TOMB SIZE_MAX
typedef struct gack {
    uint64_t id;
    uint64_t tseq; /* the segment of its message (its tombstone's) */
    size_t tidx;   /* the tombstone, or NO_TOMB */
} gack;

typedef struct group {
    uint8_t *buf; /* message records, then (once handed over) acknowledgement records */
    size_t len, cap;
    gmsg *msgs;
    size_t nmsgs, msgcap;
    gack *acks;
    size_t nacks, ackcap;
    int relog;
} group;

typedef struct del {
    int fd;
    uint64_t seq;
} del;

/* What the helper is handed, and what it says back. */
typedef struct job {
    int fd, create, sync;
    uint64_t seq, base;
    const uint8_t *buf;
    size_t len;
    del *dels;
    size_t ndels;
    int new_fd, err, trunc_err, short_write;
    const char *op;
    size_t written;
} job;

struct iotgw_store {
    iotgw_loop *loop;
    char *dir;
    int dirfd, lockfd;
    uint64_t max_bytes, segment_bytes;
    int64_t ttl_ms;
    uint32_t commit_ms;
    iotgw_store_on_full on_full;
    iotgw_store_sync sync;
    void (*on_durable)(void *ctx, uint64_t token, int rc, const char *why);
    void *ctx;

    seg **segs; /* by seq; the last is the newest */
    size_t nsegs, segcap;
    uint64_t next_seg_seq, disk_bytes;

    dev **devtab; /* hash buckets */
    size_t devtab_cap;
    dev **devs; /* those with messages, for device_at */
    size_t ndevs, devcap;

    idmap out;
    uint64_t next_id, messages, bytes;

    group fill, flight, cbs;
    int fill_due, in_flight, closing;
    seg *flight_seg;
    del *dels, *jdels; /* condemned segments: waiting for a job; in the job */
    size_t ndels, delcap, njdels, jdelcap;
    iotgw_timer commit_timer;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv_job, cv_done;
    int posted, finished, quit;
    job job;
    iotgw_async *async;

    uint8_t *rbuf; /* take's payloads */
    size_t rcap;
    size_t *roff;
    size_t roffcap;
    char why[128];

    iotgw_store_stats stats; /* the counters; the rest is computed */
    iotgw_log_limit lim_write, lim_read, lim_corrupt, lim_helper;
};

/* ------------------------------------------------------------------ small helpers */

static int grow(void *pp, size_t *cap, size_t need, size_t elem, size_t first)
{
    void **p = pp;
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : first;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void seg_name(uint64_t seq, char out[24])
{
    snprintf(out, 24, "%016" PRIx64 ".seg", seq);
}

/* The message record's size for a device id and payload. */
static size_t msg_rec_size(size_t idlen, size_t plen)
{
    return REC_HDR + MSG_FIXED + idlen + plen;
}

/* ------------------------------------------------------------------ id map */

static size_t idmap_home(const idmap *m, uint64_t id)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    return (size_t)h & (m->cap - 1);
}

static idslot *idmap_get(const idmap *m, uint64_t id)
{
    if (!m->cap)
        return NULL;
    for (size_t i = idmap_home(m, id);; i = (i + 1) & (m->cap - 1)) {
        if (m->s[i].id == id)
            return &m->s[i];
        if (!m->s[i].id)
            return NULL;
    }
}

static void idmap_insert(idmap *m, idslot v)
{
    size_t i = idmap_home(m, v.id);
    while (m->s[i].id)
        i = (i + 1) & (m->cap - 1);
    m->s[i] = v;
    m->n++;
}

/* id must not be in m. */
static int idmap_put(idmap *m, uint64_t id, dev *d, uint64_t abs)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        idslot *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return -1;
        idmap old = *m;
        m->s = ns;
        m->cap = ncap;
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.s[i].id)
                idmap_insert(m, old.s[i]);
        free(old.s);
    }
    idmap_insert(m, (idslot){id, d, abs});
    return 0;
}

static void idmap_del(idmap *m, idslot *slot)
{
    size_t i = (size_t)(slot - m->s);
    m->s[i].id = 0;
    m->n--;
    for (size_t j = (i + 1) & (m->cap - 1); m->s[j].id; j = (j + 1) & (m->cap - 1)) {
        size_t h = idmap_home(m, m->s[j].id);
        /* the entry at j may move to the hole at i when its home is not in (i, j] */
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            m->s[i] = m->s[j];
            m->s[j].id = 0;
            i = j;
        }
    }
}

static void idmap_free(idmap *m)
{
    free(m->s);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ segments */

/* The segment with sequence seq, or NULL. */
static seg *seg_find(const iotgw_store *st, uint64_t seq)
{
    size_t lo = 0, hi = st->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->segs[mid]->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->nsegs && st->segs[lo]->seq == seq ? st->segs[lo] : NULL;
}

static seg *seg_newest(const iotgw_store *st)
{
    return st->nsegs ? st->segs[st->nsegs - 1] : NULL;
}

/* A new segment after the others (seq greater than theirs). */
static seg *seg_add(iotgw_store *st, uint64_t seq, int fd)
{
    IOTGW_ASSERT(!st->nsegs || st->segs[st->nsegs - 1]->seq < seq);
    if (grow(&st->segs, &st->segcap, st->nsegs + 1, sizeof *st->segs, 16) != 0)
        return NULL;
    seg *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->seq = seq;
    s->fd = fd;
    st->segs[st->nsegs++] = s;
    if (seq >= st->next_seg_seq)
        st->next_seg_seq = seq + 1;
    return s;
}

static void seg_remove(iotgw_store *st, seg *s)
{
    for (size_t i = 0; i < st->nsegs; i++)
        if (st->segs[i] == s) {
            memmove(st->segs + i, st->segs + i + 1, (st->nsegs - i - 1) * sizeof *st->segs);
            st->nsegs--;
            return;
        }
    IOTGW_ASSERT(!"segment not in the store's list");
}

static void seg_free(seg *s)
{
    free(s->tombs);
    free(s);
}

/* ------------------------------------------------------------------ devices */

static uint32_t dev_hash(const char *id, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h;
}

static dev *dev_find(const iotgw_store *st, const char *id, size_t len)
{
    if (!st->devtab_cap)
        return NULL;
    uint32_t h = dev_hash(id, len);
    for (dev *d = st->devtab[h & (st->devtab_cap - 1)]; d; d = d->hnext)
        if (d->hash == h && d->idlen == len && memcmp(d->id, id, len) == 0)
            return d;
    return NULL;
}

static dev *dev_get(iotgw_store *st, const char *id, size_t len)
{
    dev *d = dev_find(st, id, len);
    if (d)
        return d;
    if (st->ndevs + 1 > st->devtab_cap) {
        size_t ncap = st->devtab_cap ? st->devtab_cap * 2 : 64;
        dev **nt = calloc(ncap, sizeof *nt);
        if (!nt)
            return NULL;
        for (size_t i = 0; i < st->devtab_cap; i++)
            for (dev *x = st->devtab[i], *next; x; x = next) {
                next = x->hnext;
                x->hnext = nt[x->hash & (ncap - 1)];
                nt[x->hash & (ncap - 1)] = x;
            }
        free(st->devtab);
        st->devtab = nt;
        st->devtab_cap = ncap;
    }
    if (grow(&st->devs, &st->devcap, st->ndevs + 1, sizeof *st->devs, 64) != 0)
        return NULL;
    d = calloc(1, sizeof *d + len + 1);
    if (!d)
        return NULL;
    memcpy(d->id, id, len);
    d->idlen = (uint8_t)len;
    d->hash = dev_hash(id, len);
    d->hnext = st->devtab[d->hash & (st->devtab_cap - 1)];
    st->devtab[d->hash & (st->devtab_cap - 1)] = d;
    d->slot = st->ndevs;
    st->devs[st->ndevs++] = d;
    return d;
}

/* A device without messages goes (its slot in devs is taken by the last one). */
static void dev_release(iotgw_store *st, dev *d)
{
    if (d->count)
        return;
    dev **pp = &st->devtab[d->hash & (st->devtab_cap - 1)];
    while (*pp != d)
        pp = &(*pp)->hnext;
    *pp = d->hnext;
    IOTGW_ASSERT(st->devs[d->slot] == d);
    st->devs[d->slot] = st->devs[--st->ndevs];
    st->devs[d->slot]->slot = d->slot;
    free(d->ring);
    free(d);
}

/* Every device without messages goes; from the end, so a loop over devs from the end may call it. */
static void devs_release_empty(iotgw_store *st)
{
    for (size_t i = st->ndevs; i-- > 0;)
        if (st->devs[i]->count == 0)
            dev_release(st, st->devs[i]);
}

static ent *ring_at(const dev *d, uint64_t abs)
{
    IOTGW_ASSERT(abs >= d->head && abs < d->tail);
    return &d->ring[abs & (d->cap - 1)];
}

/* Room for one more at the tail; its absolute position in *abs. */
static int ring_push(dev *d, uint64_t *abs)
{
    if (d->tail - d->head == d->cap) {
        uint64_t ncap = d->cap ? d->cap * 2 : 8;
        ent *nr = malloc(ncap * sizeof *nr);
        if (!nr)
            return -1;
        for (uint64_t a = d->head; a < d->tail; a++)
            nr[a & (ncap - 1)] = d->ring[a & (d->cap - 1)];
        free(d->ring);
        d->ring = nr;
        d->cap = ncap;
    }
    *abs = d->tail++;
    return 0;
}

static void ring_pop_removed(dev *d)
{
    while (d->head < d->tail && d->ring[d->head & (d->cap - 1)].state == E_REMOVED)
        d->head++;
    if (d->scan < d->head)
        d->scan = d->head;
}

/* ------------------------------------------------------------------ groups and the helper */

static int group_empty(const group *g)
{
    return g->len == 0 && g->nacks == 0;
}

static void group_reset(group *g)
{
    g->len = g->nmsgs = g->nacks = 0;
    g->relog = 0;
}

static void group_free(group *g)
{
    free(g->buf);
    free(g->msgs);
    free(g->acks);
    memset(g, 0, sizeof *g);
}

static uint64_t pending_bytes(const iotgw_store *st)
{
    uint64_t n =
        st->fill.len + st->fill.nacks * 8 + (st->fill.nacks + ACK_PER_RECORD - 1) / ACK_PER_RECORD * 13;
    return n + (st->in_flight ? st->flight.len : 0);
}

/* The filling group is about to get its first entry: its commit_ms start now. */
static void fill_touch(iotgw_store *st)
{
    if (group_empty(&st->fill))
        iotgw_timer_start(&st->commit_timer, st->commit_ms, 0);
}

static int push_ack(iotgw_store *st, uint64_t id, uint64_t tseq, size_t tidx)
{
    group *g = &st->fill;
    if (grow(&g->acks, &g->ackcap, g->nacks + 1, sizeof *g->acks, 256) != 0)
        return -1;
    fill_touch(st);
    g->acks[g->nacks++] = (gack){id, tseq, tidx};
    return 0;
}

/* The acknowledgement records after the group's messages. */
static int group_seal_acks(group *g)
{
    size_t nrec = (g->nacks + ACK_PER_RECORD - 1) / ACK_PER_RECORD;
    if (grow(&g->buf, &g->cap, g->len + nrec * (REC_HDR + 1) + g->nacks * 8, 1, 64 * 1024) != 0)
        return -1;
    for (size_t i = 0; i < g->nacks; i += ACK_PER_RECORD) {
        size_t k = g->nacks - i < ACK_PER_RECORD ? g->nacks - i : ACK_PER_RECORD;
        uint8_t *r = g->buf + g->len;
        put32(r, REC_MAGIC);
        put32(r + 4, (uint32_t)(1 + 8 * k));
        put32(r + 8, 0); /* the crc: the helper's */
        r[REC_HDR] = REC_ACK;
        for (size_t j = 0; j < k; j++)
            put64(r + REC_HDR + 1 + 8 * j, g->acks[i + j].id);
        g->len += REC_HDR + 1 + 8 * k;
    }
    return 0;
}

/* The helper's half: write, flush, cut back on failure; close and unlink condemned segments. */
static void run_job(iotgw_store *st, job *j)
{
    j->new_fd = -1;
    j->err = j->trunc_err = j->short_write = 0;
    j->op = NULL;
    j->written = 0;
    if (j->len) {
        /* the records' CRCs: here, off the loop's thread */
        uint8_t *buf = (uint8_t *)j->buf;
        for (size_t off = 0; off < j->len;) {
            uint32_t len = get32(buf + off + 4);
            put32(buf + off + 8, crc32c(buf + off + REC_HDR, len));
            off += REC_HDR + len;
        }
        int fd = j->fd;
        if (j->create) {
            char name[24];
            seg_name(j->seq, name);
            fd = openat(st->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0) {
                j->err = errno;
                j->op = "open";
                goto dels;
            }
            j->new_fd = fd;
            if (fsync(st->dirfd) != 0)
                iotgw_log_limited(&st->lim_helper, IOTGW_LOG_WARN, "store %s: fsync of the directory: %s",
                                  st->dir, strerror(errno));
        }
        while (j->written < j->len) {
            ssize_t w = pwrite(fd, buf + j->written, j->len - j->written, (off_t)(j->base + j->written));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                j->err = w < 0 ? errno : EIO;
                j->short_write = w == 0;
                j->op = "write";
                break;
            }
            j->written += (size_t)w;
        }
        if (!j->err && j->sync) {
            while (fdatasync(fd) != 0) {
                if (errno == EINTR)
                    continue;
                j->err = errno;
                j->op = "fdatasync";
                break;
            }
        }
        if (j->err && ftruncate(fd, (off_t)j->base) != 0)
            j->trunc_err = errno;
    }
dels:
    for (size_t i = 0; i < j->ndels; i++) {
        char name[24];
        seg_name(j->dels[i].seq, name);
        if (j->dels[i].fd >= 0)
            close(j->dels[i].fd);
        if (unlinkat(st->dirfd, name, 0) != 0 && errno != ENOENT)
            iotgw_log_limited(&st->lim_helper, IOTGW_LOG_WARN, "store %s: unlink %s: %s", st->dir, name,
                              strerror(errno));
    }
    if (j->ndels && fsync(st->dirfd) != 0)
        iotgw_log_limited(&st->lim_helper, IOTGW_LOG_WARN, "store %s: fsync of the directory: %s", st->dir,
                          strerror(errno));
}

static void *helper_main(void *arg)
{
    iotgw_store *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->posted && !st->quit)
            pthread_cond_wait(&st->cv_job, &st->mu);
        if (!st->posted)
            break;
        pthread_mutex_unlock(&st->mu);
        run_job(st, &st->job);
        pthread_mutex_lock(&st->mu);
        st->posted = 0;
        st->finished = 1;
        pthread_cond_signal(&st->cv_done);
        pthread_mutex_unlock(&st->mu);
        iotgw_async_send(st->async);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Hand the helper a job: the filling group (with_group) and the condemned segments. */
static void post(iotgw_store *st, int with_group)
{
    IOTGW_ASSERT(!st->in_flight);
    job j;
    memset(&j, 0, sizeof j);
    j.fd = -1;
    seg *target = NULL;
    if (with_group) {
        iotgw_timer_stop(&st->commit_timer);
        st->fill_due = 0;
        if (st->fill.nacks && group_seal_acks(&st->fill) != 0) {
            iotgw_log_limited(&st->lim_write, IOTGW_LOG_ERROR,
                              "store %s: out of memory: %zu acknowledgements not written (their messages "
                              "will be sent again after a restart)",
                              st->dir, st->fill.nacks);
            st->fill.nacks = 0;
        }
        if (st->fill.len) {
            target = seg_newest(st);
            if (!target || target->broken ||
                (target->size > 0 && target->size + st->fill.len > st->segment_bytes)) {
                seg *s = seg_add(st, st->next_seg_seq, -1);
                if (s) {
                    target = s;
                    j.create = 1;
                }
                /* out of memory: the newest takes it, past segment_bytes; none: the write fails */
            }
            if (target) {
                j.fd = target->fd;
                j.seq = target->seq;
                j.base = target->size;
            } else {
                j.fd = -1; /* EBADF */
            }
            j.sync = st->sync == IOTGW_STORE_SYNC_FSYNC && (st->fill.nmsgs > 0 || st->fill.relog);
        }
        IOTGW_ASSERT(group_empty(&st->flight) && st->flight.nmsgs == 0);
        group t = st->flight;
        st->flight = st->fill;
        st->fill = t;
        j.buf = st->flight.buf;
        j.len = st->flight.len;
    }
    del *t = st->jdels;
    size_t tc = st->jdelcap;
    st->jdels = st->dels;
    st->jdelcap = st->delcap;
    st->njdels = st->ndels;
    st->dels = t;
    st->delcap = tc;
    st->ndels = 0;
    j.dels = st->jdels;
    j.ndels = st->njdels;
    if (!j.len && !j.ndels && group_empty(&st->flight) && st->flight.nmsgs == 0)
        return;
    st->flight_seg = target;
    st->in_flight = 1;
    pthread_mutex_lock(&st->mu);
    st->job = j;
    st->posted = 1;
    pthread_cond_signal(&st->cv_job);
    pthread_mutex_unlock(&st->mu);
}

/* After a job, or when the filling group is due: hand over what is ready. */
static void kick(iotgw_store *st)
{
    if (st->in_flight)
        return;
    if (!group_empty(&st->fill) &&
        (st->fill_due || st->fill.nmsgs >= IOTGW_STORE_GROUP_MAX || st->fill.len >= GROUP_MAX_BYTES))
        post(st, 1);
    else if (st->ndels)
        post(st, 0);
}

static void on_commit_timer(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_store *st = ctx;
    if (group_empty(&st->fill))
        return;
    st->fill_due = 1;
    kick(st);
}

/* ------------------------------------------------------------------ done, drops, space */

static void gc(iotgw_store *st);

/* The message is done (acknowledged, expired or dropped): out of the index, its id into the
 * next group's acknowledgements, a tombstone in its segment. The caller counts it, and calls
 * ring_pop_removed(), dev_release() and gc() once it is through with the device's ring. */
static void mark_done(iotgw_store *st, dev *d, uint64_t abs)
{
    ent *e = ring_at(d, abs);
    IOTGW_ASSERT(e->state == E_DURABLE);
    seg *s = e->seg;
    size_t tidx = NO_TOMB;
    if (grow(&s->tombs, &s->tombcap, s->ntombs + 1, sizeof *s->tombs, 64) == 0) {
        tidx = s->ntombs++;
        s->tombs[tidx] = (tomb){e->id, 0};
    }
    if (push_ack(st, e->id, s->seq, tidx) != 0)
        iotgw_log_limited(&st->lim_write, IOTGW_LOG_ERROR,
                          "store %s: out of memory: the acknowledgement of message %" PRIu64
                          " is not written (it will be sent again after a restart)",
                          st->dir, e->id);
    IOTGW_ASSERT(s->live > 0 && d->count > 0 && st->messages > 0);
    s->live--;
    d->count--;
    st->messages--;
    st->bytes -= e->plen;
    e->state = E_REMOVED;
}

/* A segment whose messages are all done goes: tombstones pointing elsewhere let go. */
static void condemn(iotgw_store *st, seg *s)
{
    for (size_t i = 0; i < s->ntombs; i++) {
        uint64_t a = s->tombs[i].ack & ~TOMB_RELOG;
        if (a && a != s->seq) {
            seg *as = seg_find(st, a);
            if (as) {
                IOTGW_ASSERT(as->ack_refs > 0);
                as->ack_refs--;
            }
        }
    }
    seg_remove(st, s);
    st->disk_bytes -= s->size;
    if (grow(&st->dels, &st->delcap, st->ndels + 1, sizeof *st->dels, 16) == 0) {
        st->dels[st->ndels++] = (del){s->fd, s->seq};
    } else {
        if (s->fd >= 0)
            close(s->fd); /* the file stays; the next open deletes it */
    }
    seg_free(s);
}

/* S's messages are all done but others' acknowledgements are in it: write those again. */
static void relog(iotgw_store *st, seg *s)
{
    s->relog = 1;
    for (size_t i = 0; i < st->nsegs; i++) {
        seg *t = st->segs[i];
        if (t == s)
            continue;
        for (size_t k = 0; k < t->ntombs; k++)
            if (t->tombs[k].ack == s->seq) {
                if (push_ack(st, t->tombs[k].id, t->seq, k) != 0) {
                    s->relog = 0; /* out of memory: the next gc tries again */
                    return;
                }
                t->tombs[k].ack |= TOMB_RELOG;
                st->fill.relog = 1;
            }
    }
}

/* Segments that are not the newest and whose messages are all done go, or have their
 * acknowledgements for others written again first. */
static void gc(iotgw_store *st)
{
again:
    for (size_t i = 0; i + 1 < st->nsegs; i++) {
        seg *s = st->segs[i];
        if (s->live > 0)
            continue;
        if (s->ack_refs == 0) {
            condemn(st, s);
            goto again;
        }
        if (!s->relog)
            relog(st, s);
    }
    kick(st);
}

/* Segments that will go as soon as their acknowledgements for others are written. */
static uint64_t releasing_bytes(const iotgw_store *st)
{
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < st->nsegs; i++)
        if (st->segs[i]->live == 0)
            n += st->segs[i]->size;
    return n;
}

/* dropOldest: every message of S (none is out) is dropped. */
static void drop_segment(iotgw_store *st, seg *s)
{
    for (size_t i = st->ndevs; i-- > 0;) {
        dev *d = st->devs[i];
        for (uint64_t a = d->head; a < d->tail; a++) {
            ent *e = ring_at(d, a);
            if (e->state == E_REMOVED)
                continue;
            if (e->state == E_PENDING || e->seg->seq > s->seq)
                break;
            if (e->seg == s) {
                mark_done(st, d, a);
                st->stats.dropped_full++;
            }
        }
        ring_pop_removed(d);
        if (d->count == 0)
            dev_release(st, d);
    }
    IOTGW_ASSERT(s->live == 0);
}

/* Room for a record of rec bytes, dropping the oldest for it under dropOldest. */
static int make_room(iotgw_store *st, uint64_t rec)
{
    uint64_t used = st->disk_bytes + pending_bytes(st);
    if (used + rec <= st->max_bytes)
        return 1;
    used -= releasing_bytes(st);
    if (used + rec <= st->max_bytes)
        return 1;
    if (st->on_full != IOTGW_STORE_DROP_OLDEST || rec > st->max_bytes)
        return 0;
    int dropped = 0;
    while (used + rec > st->max_bytes) {
        seg *s = NULL;
        for (size_t i = 0; i + 1 < st->nsegs && !s; i++)
            if (st->segs[i]->live > 0 && st->segs[i]->nout == 0)
                s = st->segs[i];
        if (!s)
            break;
        uint64_t n = s->live;
        drop_segment(st, s);
        iotgw_log_limited(&st->lim_write, IOTGW_LOG_WARN,
                          "store %s: full (maxBytes %" PRIu64 "): dropped the %" PRIu64
                          " oldest messages (segment %016" PRIx64 ")",
                          st->dir, st->max_bytes, n, s->seq);
        used -= s->size;
        dropped = 1;
    }
    if (dropped)
        gc(st);
    return used + rec <= st->max_bytes;
}

/* ------------------------------------------------------------------ completion */

static void finish(iotgw_store *st)
{
    job j = st->job;
    seg *t = st->flight_seg;
    group *g = &st->flight;
    int rc = 0;
    st->in_flight = 0;
    st->flight_seg = NULL;
    if (j.create && j.new_fd >= 0)
        t->fd = j.new_fd;
    if (j.len && !j.err) {
        t->size = j.base + j.len;
        st->disk_bytes += j.len;
        for (size_t i = 0; i < g->nmsgs; i++) {
            ent *e = ring_at(g->msgs[i].d, g->msgs[i].abs);
            IOTGW_ASSERT(e->state == E_PENDING);
            e->state = E_DURABLE;
            e->seg = t;
            e->off = j.base + g->msgs[i].bufoff;
            t->live++;
        }
        st->stats.durable += g->nmsgs;
        for (size_t i = 0; i < g->nacks; i++) {
            const gack *a = &g->acks[i];
            seg *ts = a->tidx == NO_TOMB ? NULL : seg_find(st, a->tseq);
            if (!ts)
                continue; /* that segment is gone: the acknowledgement no longer matters */
            tomb *tb = &ts->tombs[a->tidx];
            uint64_t old = tb->ack & ~TOMB_RELOG;
            if (old && old != ts->seq) {
                seg *os = seg_find(st, old);
                if (os) {
                    IOTGW_ASSERT(os->ack_refs > 0);
                    os->ack_refs--;
                }
            }
            tb->ack = t->seq;
            if (t != ts)
                t->ack_refs++;
        }
    } else if (j.len) {
        rc = IOTGW_ERR_IO;
        if (j.short_write)
            snprintf(st->why, sizeof st->why, "write: short write (%zu of %zu bytes)", j.written, j.len);
        else
            snprintf(st->why, sizeof st->why, "%s: %s", j.op ? j.op : "write",
                     j.err ? strerror(j.err) : "out of memory");
        char name[24];
        seg_name(j.seq, name);
        iotgw_log_limited(&st->lim_write, IOTGW_LOG_ERROR,
                          "store %s: writing %zu messages and %zu acknowledgements to %s failed (%s): the "
                          "messages are not stored",
                          st->dir, g->nmsgs, g->nacks, name, st->why);
        for (size_t i = 0; i < g->nmsgs; i++) {
            dev *d = g->msgs[i].d;
            ent *e = ring_at(d, g->msgs[i].abs);
            IOTGW_ASSERT(e->state == E_PENDING);
            e->state = E_REMOVED;
            d->count--;
            st->messages--;
            st->bytes -= e->plen;
            ring_pop_removed(d);
        }
        st->stats.write_failed += g->nmsgs;
        if (st->closing) {
            if (g->nacks)
                iotgw_log(IOTGW_LOG_WARN,
                          "store %s: %zu acknowledgements not written at close: their messages will be "
                          "sent again",
                          st->dir, g->nacks);
        } else {
            int only_acks = group_empty(&st->fill);
            for (size_t i = 0; i < g->nacks; i++)
                push_ack(st, g->acks[i].id, g->acks[i].tseq, g->acks[i].tidx);
            st->fill.relog |= g->relog;
            if (only_acks && g->nacks) /* alone: no hurry, and no loop of failures */
                iotgw_timer_start(&st->commit_timer, ACK_RETRY_MS, 0);
        }
        if (j.trunc_err && t) {
            t->broken = 1;
            iotgw_log(IOTGW_LOG_ERROR,
                      "store %s: %s could not be cut back to %" PRIu64 " bytes after a failed write (%s): "
                      "the next group goes into a new segment",
                      st->dir, name, j.base, strerror(j.trunc_err));
        }
        if (t && j.create && j.new_fd < 0) {
            seg_remove(st, t);
            seg_free(t);
            if (j.err == EEXIST)
                st->next_seg_seq++;
        }
        devs_release_empty(st);
    }
    st->njdels = 0;
    group tmp = st->cbs;
    st->cbs = st->flight;
    st->flight = tmp;
    group_reset(&st->flight);
    size_t ncb = st->cbs.nmsgs;
    gc(st); /* kicks */
    if (st->on_durable)
        for (size_t i = 0; i < ncb; i++)
            st->on_durable(st->ctx, st->cbs.msgs[i].token, rc, rc ? st->why : NULL);
    group_reset(&st->cbs);
}

static void on_async(iotgw_async *a, void *ctx)
{
    (void)a;
    iotgw_store *st = ctx;
    pthread_mutex_lock(&st->mu);
    int f = st->finished;
    st->finished = 0;
    pthread_mutex_unlock(&st->mu);
    if (f)
        finish(st);
}

/* ------------------------------------------------------------------ recovery */

typedef enum rec_check {
    REC_OK = 0,
    REC_SHORT,
    REC_BAD_MAGIC,
    REC_BAD_LEN,
    REC_BAD_CRC,
    REC_BAD_BODY
} rec_check;

static const char *rec_check_text(rec_check c)
{
    switch (c) {
    case REC_SHORT: return "a record cut short";
    case REC_BAD_MAGIC: return "bad magic";
    case REC_BAD_LEN: return "impossible length";
    case REC_BAD_CRC: return "bad CRC";
    case REC_BAD_BODY: return "bad record body";
    default: return "ok";
    }
}

static rec_check check_record(const uint8_t *p, uint64_t size, uint64_t off)
{
    if (size - off < REC_HDR)
        return REC_SHORT;
    const uint8_t *r = p + off;
    if (get32(r) != REC_MAGIC)
        return REC_BAD_MAGIC;
    uint32_t len = get32(r + 4);
    if (len < 1 || len > REC_MAX_LEN)
        return REC_BAD_LEN;
    if (len > size - off - REC_HDR)
        return REC_SHORT;
    if (crc32c(r + REC_HDR, len) != get32(r + 8))
        return REC_BAD_CRC;
    const uint8_t *b = r + REC_HDR;
    if (b[0] == REC_MSG) {
        if (len < MSG_FIXED + 1 || b[17] == 0 || MSG_FIXED + (uint32_t)b[17] > len ||
            len - MSG_FIXED - b[17] > IOTGW_STORE_MAX_MESSAGE || get64(b + 1) == 0)
            return REC_BAD_BODY;
        return REC_OK;
    }
    if (b[0] == REC_ACK) {
        if (len < 9 || (len - 1) % 8 != 0 || (len - 1) / 8 > ACK_PER_RECORD)
            return REC_BAD_BODY;
        return REC_OK;
    }
    return REC_BAD_BODY;
}

/* The next offset from off at which a record verifies, or size. */
static uint64_t resync(const uint8_t *p, uint64_t size, uint64_t off)
{
    static const uint8_t first = (uint8_t)(REC_MAGIC & 0xff);
    while (off + REC_HDR <= size) {
        const uint8_t *q = memchr(p + off, first, (size_t)(size - off - REC_HDR + 1));
        if (!q)
            break;
        off = (uint64_t)(q - p);
        if (get32(q) == REC_MAGIC && check_record(p, size, off) == REC_OK)
            return off;
        off++;
    }
    return size;
}

static int apply_message(iotgw_store *st, seg *s, const uint8_t *r, uint64_t off, idmap *rmap)
{
    uint32_t len = get32(r + 4);
    const uint8_t *b = r + REC_HDR;
    uint64_t id = get64(b + 1);
    int64_t stored_ms = (int64_t)get64(b + 9);
    uint8_t idlen = b[17];
    uint32_t plen = len - MSG_FIXED - idlen;
    if (id >= st->next_id)
        st->next_id = id + 1;
    dev *d = dev_get(st, (const char *)b + MSG_FIXED, idlen);
    if (!d)
        return -1;
    if (id <= d->last_id || idmap_get(rmap, id))
        return 0; /* seen already: not written by this store as such; ignored */
    uint64_t abs;
    if (ring_push(d, &abs) != 0 || idmap_put(rmap, id, d, abs) != 0)
        return -1;
    ent *e = &d->ring[abs & (d->cap - 1)];
    *e = (ent){.id = id, .stored_ms = stored_ms, .seg = s, .off = off, .plen = plen, .state = E_DURABLE};
    d->last_id = id;
    d->count++;
    s->live++;
    st->messages++;
    st->bytes += plen;
    return 0;
}

static int apply_acks(iotgw_store *st, seg *s, const uint8_t *r, idmap *rmap)
{
    uint32_t n = (get32(r + 4) - 1) / 8;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = get64(r + REC_HDR + 1 + 8 * i);
        if (id >= st->next_id)
            st->next_id = id + 1;
        idslot *slot = idmap_get(rmap, id);
        if (!slot)
            continue; /* its segment is gone, or it was acknowledged already */
        dev *d = slot->d;
        ent *e = ring_at(d, slot->abs);
        idmap_del(rmap, slot);
        seg *t = e->seg;
        if (t != s) {
            if (grow(&t->tombs, &t->tombcap, t->ntombs + 1, sizeof *t->tombs, 64) != 0)
                return -1;
            t->tombs[t->ntombs++] = (tomb){id, s->seq};
            s->ack_refs++;
        }
        e->state = E_REMOVED;
        t->live--;
        d->count--;
        st->messages--;
        st->bytes -= e->plen;
        ring_pop_removed(d);
    }
    return 0;
}

static int recover_segment(iotgw_store *st, seg *s, int newest, idmap *rmap, iotgw_diag *diag)
{
    char name[24];
    seg_name(s->seq, name);
    struct stat sb;
    if (fstat(s->fd, &sb) != 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: stat %s: %s", st->dir, name, strerror(errno));
    uint64_t size = (uint64_t)sb.st_size;
    s->size = size;
    if (!size)
        return 0;
    uint8_t *p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, s->fd, 0);
    if (p == MAP_FAILED)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: mmap %s: %s", st->dir, name, strerror(errno));
    uint64_t off = 0;
    int rc = 0;
    while (off < size) {
        rec_check c = check_record(p, size, off);
        if (c == REC_OK) {
            uint32_t len = get32(p + off + 4);
            if ((p[off + REC_HDR] == REC_MSG ? apply_message(st, s, p + off, off, rmap)
                                             : apply_acks(st, s, p + off, rmap)) != 0) {
                rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "store %s: out of memory reading %s", st->dir,
                                     name);
                break;
            }
            off += REC_HDR + len;
            continue;
        }
        uint64_t next = resync(p, size, off + 1);
        if (next >= size && newest) {
            iotgw_log(IOTGW_LOG_WARN,
                      "store %s: %s ends with %" PRIu64 " bytes of a record not completely written (%s at "
                      "offset %" PRIu64 "): cut off",
                      st->dir, name, size - off, rec_check_text(c), off);
            if (ftruncate(s->fd, (off_t)off) != 0 || fdatasync(s->fd) != 0) {
                rc = iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: truncate %s: %s", st->dir, name,
                                     strerror(errno));
                break;
            }
            st->stats.torn_bytes += size - off;
            s->size = off;
            break;
        }
        st->stats.corrupt_records++;
        iotgw_log_limited(&st->lim_corrupt, IOTGW_LOG_WARN,
                          "store %s: %s: %" PRIu64 " bytes at offset %" PRIu64 " skipped (%s)%s", st->dir,
                          name, next - off, off, rec_check_text(c),
                          next >= size ? ", to the end of the segment" : "");
        off = next;
    }
    munmap(p, (size_t)size);
    return rc;
}

static int seq_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int parse_seg_name(const char *n, uint64_t *seq)
{
    if (strlen(n) != 20 || strcmp(n + 16, ".seg") != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = n[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (x < 0)
            return 0;
        v = v << 4 | (uint64_t)x;
    }
    *seq = v;
    return v != 0;
}

/* Rings without the removed entries. */
static int compact_rings(iotgw_store *st)
{
    for (size_t i = 0; i < st->ndevs; i++) {
        dev *d = st->devs[i];
        if (d->count == d->tail - d->head)
            continue;
        uint64_t ncap = 8;
        while (ncap < d->count)
            ncap *= 2;
        ent *nr = malloc(ncap * sizeof *nr);
        if (!nr)
            return -1;
        uint64_t n = 0;
        for (uint64_t a = d->head; a < d->tail; a++)
            if (d->ring[a & (d->cap - 1)].state != E_REMOVED)
                nr[n++] = d->ring[a & (d->cap - 1)];
        free(d->ring);
        d->ring = nr;
        d->cap = ncap;
        d->head = d->scan = 0;
        d->tail = n;
    }
    return 0;
}

static int recover(iotgw_store *st, iotgw_diag *diag)
{
    int64_t t0 = mono_ms();
    DIR *dp = fdopendir(dup(st->dirfd));
    if (!dp)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: %s", st->dir, strerror(errno));
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        uint64_t seq;
        if (!parse_seg_name(de->d_name, &seq))
            continue;
        if (grow(&seqs, &cap, n + 1, sizeof *seqs, 16) != 0) {
            rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
            break;
        }
        seqs[n++] = seq;
    }
    closedir(dp);
    if (rc) {
        free(seqs);
        return rc;
    }
    if (n)
        qsort(seqs, n, sizeof *seqs, seq_cmp);
    for (size_t i = 0; i < n && !rc; i++) {
        char name[24];
        seg_name(seqs[i], name);
        int fd = openat(st->dirfd, name, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            rc = iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: open %s: %s", st->dir, name, strerror(errno));
        } else if (!seg_add(st, seqs[i], fd)) {
            close(fd);
            rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
        }
    }
    free(seqs);
    idmap rmap = {0};
    for (size_t i = 0; i < st->nsegs && !rc; i++) {
        rc = recover_segment(st, st->segs[i], i + 1 == st->nsegs, &rmap, diag);
        st->disk_bytes += st->segs[i]->size;
    }
    idmap_free(&rmap);
    if (rc)
        return rc;
    if (compact_rings(st) != 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    devs_release_empty(st);
    st->stats.recovered = st->messages;
    /* what is done already goes now, on this thread: the helper is not running yet */
    for (size_t i = 0; i + 1 < st->nsegs; i++) {
        seg *s = st->segs[i];
        if (s->live == 0 && s->ack_refs == 0) {
            condemn(st, s);
            i = (size_t)-1;
        }
    }
    if (st->ndels) {
        job j;
        memset(&j, 0, sizeof j);
        j.dels = st->dels;
        j.ndels = st->ndels;
        run_job(st, &j);
        st->ndels = 0;
    }
    iotgw_log(IOTGW_LOG_INFO,
              "store %s: %" PRIu64 " messages of %zu devices recovered from %zu segments (%" PRIu64
              " bytes) in %" PRId64 " ms; %" PRIu64 " corrupt records skipped, %" PRIu64
              " torn bytes cut off",
              st->dir, st->messages, st->ndevs, st->nsegs, st->disk_bytes, mono_ms() - t0,
              st->stats.corrupt_records, st->stats.torn_bytes);
    return 0;
}

/* ------------------------------------------------------------------ open, close */

static int mkdirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = '/';
        }
    int rc = mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

static int take_lock(iotgw_store *st, iotgw_diag *diag)
{
    st->lockfd = openat(st->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->lockfd < 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: open LOCK: %s", st->dir, strerror(errno));
    if (flock(st->lockfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK)
            return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: flock LOCK: %s", st->dir, strerror(errno));
        char b[32];
        ssize_t n = pread(st->lockfd, b, sizeof b - 1, 0);
        long pid = 0;
        if (n > 0) {
            b[n] = '\0';
            pid = strtol(b, NULL, 10);
        }
        if (pid > 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: held by another process (pid %ld)", st->dir,
                                   pid);
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: held by another process (pid unknown)",
                               st->dir);
    }
    char b[32];
    int n = snprintf(b, sizeof b, "%ld\n", (long)getpid());
    if (ftruncate(st->lockfd, 0) != 0 || pwrite(st->lockfd, b, (size_t)n, 0) != n)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: write LOCK: %s", st->dir, strerror(errno));
    return 0;
}

static int check_format(iotgw_store *st, iotgw_diag *diag)
{
    int fd = openat(st->dirfd, "FORMAT", O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        const size_t n = sizeof FORMAT_TEXT - 1;
        fd = openat(st->dirfd, "FORMAT.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int ok = fd >= 0 && write(fd, FORMAT_TEXT, n) == (ssize_t)n && fsync(fd) == 0;
        int err = errno;
        if (fd >= 0)
            close(fd);
        if (!ok || renameat(st->dirfd, "FORMAT.tmp", st->dirfd, "FORMAT") != 0 || fsync(st->dirfd) != 0)
            return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: write FORMAT: %s", st->dir,
                                   strerror(ok ? errno : err));
        return 0;
    }
    if (fd < 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: open FORMAT: %s", st->dir, strerror(errno));
    char b[64];
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n < 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: read FORMAT: %s", st->dir, strerror(errno));
    b[n] = '\0';
    if ((size_t)n == sizeof FORMAT_TEXT - 1 && memcmp(b, FORMAT_TEXT, (size_t)n) == 0)
        return 0;
    char shown[41];
    size_t k = 0;
    for (ssize_t i = 0; i < n && b[i] != '\n' && k < sizeof shown - 1; i++)
        shown[k++] = b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' ? b[i] : '?';
    shown[k] = '\0';
    return iotgw_diag_fail(
        diag, IOTGW_ERR_IO,
        "store %s: written by an incompatible version (FORMAT says \"%s\"; this iotgw reads "
        "iotgw-store 1)",
        st->dir, shown);
}

static void store_free(iotgw_store *st)
{
    for (size_t i = 0; i < st->nsegs; i++) {
        if (st->segs[i]->fd >= 0)
            close(st->segs[i]->fd);
        seg_free(st->segs[i]);
    }
    for (size_t i = 0; i < st->ndels; i++)
        if (st->dels[i].fd >= 0)
            close(st->dels[i].fd);
    free(st->segs);
    for (size_t i = 0; i < st->ndevs; i++) {
        free(st->devs[i]->ring);
        free(st->devs[i]);
    }
    free(st->devs);
    free(st->devtab);
    idmap_free(&st->out);
    group_free(&st->fill);
    group_free(&st->flight);
    group_free(&st->cbs);
    free(st->dels);
    free(st->jdels);
    free(st->rbuf);
    free(st->roff);
    if (st->lockfd >= 0)
        close(st->lockfd); /* lets go of the flock */
    if (st->dirfd >= 0)
        close(st->dirfd);
    free(st->dir);
    free(st);
}

int iotgw_store_open(iotgw_loop *loop, const iotgw_store_options *opt, iotgw_store **out, iotgw_diag *diag)
{
    pthread_once(&crc_once, crc_init);
    IOTGW_ASSERT(crc32c((const uint8_t *)"123456789", 9) == 0xE3069283u);
    *out = NULL;
    if (!loop || !opt || !opt->path || !*opt->path)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "store: no path");
    iotgw_store *st = calloc(1, sizeof *st);
    if (!st || !(st->dir = strdup(opt->path))) {
        free(st);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    }
    st->loop = loop;
    st->dirfd = st->lockfd = -1;
    st->max_bytes = opt->max_bytes ? opt->max_bytes : IOTGW_STORE_DEFAULT_MAX_BYTES;
    st->ttl_ms = (int64_t)(opt->ttl_s ? opt->ttl_s : IOTGW_STORE_DEFAULT_TTL_S) * 1000;
    st->commit_ms = opt->commit_ms ? opt->commit_ms : IOTGW_STORE_DEFAULT_COMMIT_MS;
    st->on_full = opt->on_full;
    st->sync = opt->sync;
    st->on_durable = opt->on_durable;
    st->ctx = opt->ctx;
    /* a segment at most a quarter of maxBytes, so that whole segments can go to make room */
    uint64_t sb = opt->segment_bytes ? opt->segment_bytes : IOTGW_STORE_DEFAULT_SEGMENT_BYTES;
    if (sb > st->max_bytes / 4)
        sb = st->max_bytes / 4;
    if (sb > SEGMENT_BYTES_MAX)
        sb = SEGMENT_BYTES_MAX;
    if (sb < SEGMENT_BYTES_MIN)
        sb = SEGMENT_BYTES_MIN;
    st->segment_bytes = sb;
    st->next_id = 1;
    st->next_seg_seq = 1;
    iotgw_timer_init(loop, &st->commit_timer, on_commit_timer, st);

    int rc = 0;
    if (mkdirs(st->dir) != 0)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: mkdir: %s", st->dir, strerror(errno));
    else if ((st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_IO, "store %s: %s", st->dir, strerror(errno));
    if (!rc)
        rc = take_lock(st, diag);
    if (!rc)
        rc = check_format(st, diag);
    if (!rc)
        rc = recover(st, diag);
    if (!rc && !(st->async = iotgw_async_new(loop, on_async, st, diag)))
        rc = diag ? diag->code : IOTGW_ERR_INTERNAL;
    if (!rc) {
        pthread_mutex_init(&st->mu, NULL);
        pthread_cond_init(&st->cv_job, NULL);
        pthread_cond_init(&st->cv_done, NULL);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old); /* the helper takes no signal */
        int e = pthread_create(&st->thread, NULL, helper_main, st);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != 0) {
            pthread_cond_destroy(&st->cv_done);
            pthread_cond_destroy(&st->cv_job);
            pthread_mutex_destroy(&st->mu);
            rc = iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "store %s: pthread_create: %s", st->dir,
                                 strerror(e));
        }
    }
    if (!rc)
        gc(st); /* segments done but for acknowledgements others need: those are written again */
    if (rc) {
        iotgw_async_free(st->async);
        store_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

void iotgw_store_close(iotgw_store *st)
{
    if (!st)
        return;
    st->closing = 1;
    for (;;) {
        if (st->in_flight) {
            pthread_mutex_lock(&st->mu);
            while (!st->finished)
                pthread_cond_wait(&st->cv_done, &st->mu);
            st->finished = 0;
            pthread_mutex_unlock(&st->mu);
            finish(st); /* on_durable: here, the one exception to "never inside the call" */
        } else if (!group_empty(&st->fill)) {
            post(st, 1);
        } else if (st->ndels) {
            post(st, 0);
        } else {
            break;
        }
    }
    iotgw_timer_stop(&st->commit_timer);
    pthread_mutex_lock(&st->mu);
    st->quit = 1;
    pthread_cond_signal(&st->cv_job);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->thread, NULL);
    pthread_cond_destroy(&st->cv_done);
    pthread_cond_destroy(&st->cv_job);
    pthread_mutex_destroy(&st->mu);
    iotgw_async_free(st->async);
    iotgw_log_limit_flush(&st->lim_write, IOTGW_LOG_WARN, "store");
    store_free(st);
}

/* ------------------------------------------------------------------ the calls */

int iotgw_store_append(iotgw_store *st, const char *device_id, const uint8_t *msg, size_t len, uint64_t token)
{
    size_t idlen = device_id ? strlen(device_id) : 0;
    if (!st || idlen == 0 || idlen > DEVICE_ID_MAX || len > IOTGW_STORE_MAX_MESSAGE || (len && !msg))
        return IOTGW_ERR_INVALID_ARG;
    size_t rec = msg_rec_size(idlen, len);
    if (!make_room(st, rec)) {
        st->stats.refused_full++;
        return IOTGW_ERR_STORE_FULL;
    }
    group *g = &st->fill;
    dev *d = dev_get(st, device_id, idlen);
    uint64_t abs;
    if (!d || grow(&g->buf, &g->cap, g->len + rec, 1, 64 * 1024) != 0 ||
        grow(&g->msgs, &g->msgcap, g->nmsgs + 1, sizeof *g->msgs, 256) != 0 || ring_push(d, &abs) != 0) {
        if (d && d->count == 0)
            dev_release(st, d);
        return IOTGW_ERR_NOMEM;
    }
    if (g->nmsgs == 0) /* its first message: commit_ms from now (acknowledgements are in no hurry) */
        iotgw_timer_start(&st->commit_timer, st->commit_ms, 0);
    uint64_t id = st->next_id++;
    int64_t now = wall_ms();
    uint8_t *r = g->buf + g->len;
    put32(r, REC_MAGIC);
    put32(r + 4, (uint32_t)(rec - REC_HDR));
    put32(r + 8, 0); /* the crc: the helper's */
    r[REC_HDR] = REC_MSG;
    put64(r + REC_HDR + 1, id);
    put64(r + REC_HDR + 9, (uint64_t)now);
    r[REC_HDR + 17] = (uint8_t)idlen;
    memcpy(r + REC_HDR + MSG_FIXED, device_id, idlen);
    if (len)
        memcpy(r + REC_HDR + MSG_FIXED + idlen, msg, len);
    g->msgs[g->nmsgs++] = (gmsg){token, d, abs, g->len};
    g->len += rec;
    d->ring[abs & (d->cap - 1)] =
        (ent){.id = id, .stored_ms = now, .seg = NULL, .off = 0, .plen = len, .state = E_PENDING};
    d->count++;
    st->messages++;
    st->bytes += len;
    st->stats.appended++;
    if (g->nmsgs >= IOTGW_STORE_GROUP_MAX || g->len >= GROUP_MAX_BYTES) {
        st->fill_due = 1;
        kick(st);
    }
    return 0;
}

static int expired(const iotgw_store *st, const ent *e, int64_t now)
{
    return now - e->stored_ms > st->ttl_ms;
}

/* Reads e's record into rbuf at at; 0, -1 (could not read: left alone) or -2 (not the record). */
static int read_record(iotgw_store *st, const dev *d, const ent *e, size_t at)
{
    size_t rl = msg_rec_size(d->idlen, e->plen);
    uint8_t *r = st->rbuf + at;
    size_t got = 0;
    while (got < rl) {
        ssize_t n = pread(e->seg->fd, r + got, rl - got, (off_t)(e->off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            char name[24];
            seg_name(e->seg->seq, name);
            iotgw_log_limited(&st->lim_read, IOTGW_LOG_ERROR,
                              "store %s: reading message %" PRIu64 " of %s from %s: %s", st->dir, e->id,
                              d->id, name, n < 0 ? strerror(errno) : "end of file");
            return -1;
        }
        got += (size_t)n;
    }
    if (get32(r) != REC_MAGIC || get32(r + 4) != rl - REC_HDR ||
        crc32c(r + REC_HDR, rl - REC_HDR) != get32(r + 8) || r[REC_HDR] != REC_MSG ||
        get64(r + REC_HDR + 1) != e->id) {
        char name[24];
        seg_name(e->seg->seq, name);
        iotgw_log_limited(&st->lim_read, IOTGW_LOG_ERROR,
                          "store %s: message %" PRIu64 " of %s in %s at offset %" PRIu64
                          " is corrupt (bad CRC): dropped",
                          st->dir, e->id, d->id, name, (uint64_t)e->off);
        return -2;
    }
    return 0;
}

size_t iotgw_store_take(iotgw_store *st, const char *device_id, iotgw_store_msg *out, size_t max)
{
    dev *d = st && device_id ? dev_find(st, device_id, strlen(device_id)) : NULL;
    if (!d || !max)
        return 0;
    int64_t now = wall_ms();
    size_t n = 0, used = 0, dropped = 0;
    uint64_t a = d->scan > d->head ? d->scan : d->head;
    for (; a < d->tail && n < max; a++) {
        ent *e = ring_at(d, a);
        if (e->state == E_OUT || e->state == E_REMOVED)
            continue;
        if (e->state == E_PENDING)
            break;
        if (expired(st, e, now)) {
            mark_done(st, d, a);
            st->stats.expired++;
            dropped++;
            continue;
        }
        size_t rl = msg_rec_size(d->idlen, e->plen);
        if (grow(&st->rbuf, &st->rcap, used + rl, 1, 64 * 1024) != 0 ||
            grow(&st->roff, &st->roffcap, n + 1, sizeof *st->roff, 16) != 0)
            break;
        int r = read_record(st, d, e, used);
        if (r == -1)
            break;
        if (r == -2) {
            mark_done(st, d, a);
            st->stats.corrupt_records++;
            dropped++;
            continue;
        }
        if (idmap_put(&st->out, e->id, d, a) != 0)
            break;
        e->state = E_OUT;
        e->seg->nout++;
        out[n].id = e->id;
        out[n].stored_ms = e->stored_ms;
        out[n].len = e->plen;
        st->roff[n] = used + REC_HDR + MSG_FIXED + d->idlen;
        used += rl;
        n++;
    }
    d->scan = a;
    ring_pop_removed(d);
    for (size_t i = 0; i < n; i++)
        out[i].data = st->rbuf + st->roff[i];
    if (dropped) {
        if (d->count == 0)
            dev_release(st, d);
        gc(st);
    }
    return n;
}

/* The message id, out, is back in: durable and not out. Its entry, or NULL when id is
 * not a message out (then *d is untouched). */
static ent *bring_back(iotgw_store *st, uint64_t id, dev **d, uint64_t *abs)
{
    idslot *slot = st ? idmap_get(&st->out, id) : NULL;
    if (!slot)
        return NULL;
    *d = slot->d;
    *abs = slot->abs;
    idmap_del(&st->out, slot);
    ent *e = ring_at(*d, *abs);
    IOTGW_ASSERT(e->state == E_OUT && e->id == id && e->seg->nout > 0);
    e->seg->nout--;
    e->state = E_DURABLE;
    return e;
}

void iotgw_store_done(iotgw_store *st, uint64_t id)
{
    dev *d;
    uint64_t abs;
    ent *e = bring_back(st, id, &d, &abs);
    if (!e) {
        if (st)
            iotgw_log(IOTGW_LOG_DEBUG, "store %s: done(%" PRIu64 "): not a message out; ignored", st->dir,
                      id);
        return;
    }
    seg *s = e->seg;
    mark_done(st, d, abs);
    st->stats.done++;
    ring_pop_removed(d);
    if (d->count == 0)
        dev_release(st, d);
    if (s->live == 0)
        gc(st);
}

void iotgw_store_give_back(iotgw_store *st, uint64_t id)
{
    dev *d;
    uint64_t abs;
    if (!bring_back(st, id, &d, &abs))
        return;
    if (abs < d->scan)
        d->scan = abs;
}

uint64_t iotgw_store_backlog(const iotgw_store *st, const char *device_id)
{
    const dev *d = st && device_id ? dev_find(st, device_id, strlen(device_id)) : NULL;
    return d ? d->count : 0;
}

const char *iotgw_store_device_at(const iotgw_store *st, size_t i)
{
    return st && i < st->ndevs ? st->devs[i]->id : NULL;
}

void iotgw_store_expire(iotgw_store *st)
{
    if (!st)
        return;
    int64_t now = wall_ms();
    size_t dropped = 0;
    for (size_t i = st->ndevs; i-- > 0;) {
        dev *d = st->devs[i];
        /* oldest first: the first one in time stops the sweep (an out one is skipped) */
        for (uint64_t a = d->head; a < d->tail; a++) {
            ent *e = ring_at(d, a);
            if (e->state == E_OUT || e->state == E_REMOVED)
                continue;
            if (e->state == E_PENDING || !expired(st, e, now))
                break;
            mark_done(st, d, a);
            st->stats.expired++;
            dropped++;
        }
        ring_pop_removed(d);
        if (d->count == 0)
            dev_release(st, d);
    }
    if (dropped)
        gc(st);
}

void iotgw_store_stats_get(const iotgw_store *st, iotgw_store_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!st)
        return;
    *out = st->stats;
    out->messages = st->messages;
    out->bytes = st->bytes;
    out->devices = (unsigned)st->ndevs;
    out->disk_bytes = st->disk_bytes;
    out->oldest_ms = 0;
    for (size_t i = 0; i < st->ndevs; i++) {
        const dev *d = st->devs[i];
        if (d->head < d->tail) {
            int64_t t = d->ring[d->head & (d->cap - 1)].stored_ms;
            if (!out->oldest_ms || t < out->oldest_ms)
                out->oldest_ms = t;
        }
    }
}
