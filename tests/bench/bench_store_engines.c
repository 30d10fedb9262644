/*
 * Store-and-forward engines for the gateway, measured on this machine's disk: LMDB, SQLite
 * (WAL) and an append-only segment log of our own, behind one tiny interface:
 *   append(dev, seq, bytes, len)   batched into a group commit,
 *   commit()                       durable (fdatasync, or the engine's sync commit),
 *   read_oldest(dev, n)            the oldest n un-acked records of a device, in order,
 *   ack(dev, seq)                  delete (acknowledge) a device's records up to seq.
 *
 * Workload, each configuration on the same data in a fresh directory (not tmpfs):
 *   1. ingest  BENCH_MSGS (200,000) 100-byte messages round-robin over 1,000 devices; a group
 *              commits when 2 ms passed since it opened or it holds 1,000 records;
 *   2. drain   every device in order, batches of 100, round-robin, each batch acknowledged,
 *              acks group-committed every 2 ms;
 *   3. mixed   ingest 1,000 / drain 1,000 alternately in one thread for 100,000 messages;
 *   4. restart a child process ingests 200,000 more, acks 50 per device, appends 999 more that
 *              it never commits (the segment log also writes half of them, torn) and is
 *              SIGKILLed; this process then reopens, counts the un-acked records, reopens
 *              once more after a clean close, and drains everything, verifying order and bytes.
 * Every configuration runs BENCH_RUNS (2) times, interleaved. fsync/fdatasync calls made by
 * the libraries are counted by interposing the two symbols (the executable's definitions win
 * over libc's for liblmdb and libsqlite3), bytes written come from /proc/self/io and from the
 * block device's sector counter (/sys/dev/block/M:m/stat, which includes the fs journal).
 *
 * Standalone, not in the Makefiles:
 *   gcc -O2 -Wall -Wextra -o /tmp/bench_store_engines tests/bench/bench_store_engines.c \
 *       -llmdb -lsqlite3
 *   /tmp/bench_store_engines [BASE_DIR=/var/tmp]
 * Environment: BENCH_RUNS (2), BENCH_MSGS (200000), BENCH_SEG_MB (64, segment log), BENCH_CONFIGS (all: "lmdb
 * lmdb-nometasync sqlite-full sqlite-normal sqlite-full-ckpt64m seglog seglog-prezero"), BENCH_TIMEOUT
 * seconds (840). Counters: "syncs" are fsync/fdatasync calls only; LMDB's default commit also writes its meta
 * page through an O_DSYNC descriptor (a second device flush these counters do not see).
 * "written (proc)" is /proc/self/io write_bytes, which the kernel charges per dirtied folio, so
 * it over-counts where the page cache uses large folios; the device counter is the better figure
 * on an otherwise idle machine.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the segment log's record format and slice-by-8 CRC assume little-endian"
#endif

#define NDEV                1000
#define PAYLOAD             100
#define MAX_PAYLOAD         128
#define GROUP_MAX           1000
#define GROUP_NS            2000000ull
#define BATCH               100
#define MIXED_MSGS          100000
#define MIXED_CHUNK         1000
#define RESTART_ACK_PER_DEV 50
#define TORN_APPENDS        999

static uint64_t ingest_msgs = 200000;

/* ------------------------------------------------------------------ utilities */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_store_engines: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

/* fsync/fdatasync interposed: counts and times every sync this process makes, ours and the
 * libraries' (their PLT calls bind to these definitions, which the linker exports because
 * liblmdb.so and libsqlite3.so reference them). */
static uint64_t n_syncs, sync_ns;

int fdatasync(int fd)
{
    uint64_t t = now_ns();
    int rc = (int)syscall(SYS_fdatasync, fd);
    sync_ns += now_ns() - t;
    n_syncs++;
    return rc;
}

int fsync(int fd)
{
    uint64_t t = now_ns();
    int rc = (int)syscall(SYS_fsync, fd);
    sync_ns += now_ns() - t;
    n_syncs++;
    return rc;
}

static uint64_t proc_write_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static char devstat_path[128];

static uint64_t dev_write_bytes(void)
{
    FILE *f;
    uint64_t v[7] = {0};
    if (!devstat_path[0] || !(f = fopen(devstat_path, "r")))
        return 0;
    if (fscanf(f, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, &v[0],
               &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) != 7)
        v[6] = 0;
    fclose(f);
    return v[6] * 512; /* sectors written */
}

static uint64_t du_alloc, du_apparent;

static int du_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (type == FTW_F) {
        du_alloc += (uint64_t)st->st_blocks * 512;
        du_apparent += (uint64_t)st->st_size;
    }
    return 0;
}

static void dir_usage(const char *dir, uint64_t *alloc, uint64_t *apparent)
{
    du_alloc = du_apparent = 0;
    nftw(dir, du_cb, 16, FTW_PHYS);
    *alloc = du_alloc;
    if (apparent)
        *apparent = du_apparent;
}

static int rm_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Drops a store's files from the page cache (after syncing them) so the next open reads the disk. */
static int evict_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    int fd;
    (void)st, (void)ftw;
    if (type == FTW_F && (fd = open(path, O_RDONLY)) >= 0) {
        if (fdatasync(fd) != 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
            fprintf(stderr, "evict %s: %s\n", path, strerror(errno));
        close(fd);
    }
    return 0;
}

static void evict(const char *dir)
{
    nftw(dir, evict_cb, 16, FTW_PHYS);
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0)
        die("fsync dir %s: %s", dir, strerror(errno));
    close(fd);
}

/* ------------------------------------------------------------------ CRC32C, slice-by-8 */

static uint32_t crc_tab[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

/* Raw update (no pre/post inversion): crc32c(x) = ~crc_upd(~0u, x). */
static uint32_t crc_upd(uint32_t c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n && ((uintptr_t)b & 7)) {
        c = crc_tab[0][(c ^ *b++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        w ^= c;
        c = crc_tab[7][w & 0xff] ^ crc_tab[6][(w >> 8) & 0xff] ^ crc_tab[5][(w >> 16) & 0xff] ^
            crc_tab[4][(w >> 24) & 0xff] ^ crc_tab[3][(w >> 32) & 0xff] ^ crc_tab[2][(w >> 40) & 0xff] ^
            crc_tab[1][(w >> 48) & 0xff] ^ crc_tab[0][w >> 56];
        b += 8;
        n -= 8;
    }
    while (n--)
        c = crc_tab[0][(c ^ *b++) & 0xff] ^ (c >> 8);
    return c;
}

/* ------------------------------------------------------------------ the interface */

typedef struct {
    uint64_t seq;
    uint32_t len;
    uint8_t data[MAX_PAYLOAD];
} rec_t;

typedef struct {
    const char *name;
    void *(*open)(const char *dir, int variant);
    void (*append)(void *h, uint32_t dev, uint64_t seq, const void *p, uint32_t len);
    void (*ack)(void *h, uint32_t dev, uint64_t upto);
    void (*commit)(void *h);
    int (*read_oldest)(void *h, uint32_t dev, int n, rec_t *out);
    uint64_t (*count)(void *h);
    void (*crash)(void *h);       /* called just before SIGKILL, with a group pending */
    uint64_t (*scanned)(void *h); /* bytes verified at open (segment log), or 0 */
    void (*close)(void *h);
} engine_t;

/* ------------------------------------------------------------------ LMDB */

typedef struct {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *wtxn, *rtxn;
} lmdb_t;

#define LMDB_CHECK(rc, what)                                                                                 \
    do {                                                                                                     \
        int rc_ = (rc);                                                                                      \
        if (rc_ != 0)                                                                                        \
            die("lmdb %s: %s", what, mdb_strerror(rc_));                                                     \
    } while (0)

static void lmdb_key(uint8_t k[12], uint32_t dev, uint64_t seq)
{
    for (int i = 0; i < 4; i++)
        k[i] = (uint8_t)(dev >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        k[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

static uint32_t lmdb_key_dev(const uint8_t *k)
{
    return (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 | (uint32_t)k[2] << 8 | k[3];
}

static uint64_t lmdb_key_seq(const uint8_t *k)
{
    uint64_t s = 0;
    for (int i = 0; i < 8; i++)
        s = s << 8 | k[4 + i];
    return s;
}

static void *lmdb_open(const char *dir, int variant)
{
    lmdb_t *l = calloc(1, sizeof *l);
    MDB_txn *t;
    LMDB_CHECK(mdb_env_create(&l->env), "env_create");
    LMDB_CHECK(mdb_env_set_mapsize(l->env, (size_t)2 << 30), "set_mapsize");
    LMDB_CHECK(mdb_env_open(l->env, dir, variant ? MDB_NOMETASYNC : 0, 0644), "env_open");
    LMDB_CHECK(mdb_txn_begin(l->env, NULL, 0, &t), "txn_begin");
    LMDB_CHECK(mdb_dbi_open(t, NULL, 0, &l->dbi), "dbi_open");
    LMDB_CHECK(mdb_txn_commit(t), "txn_commit");
    return l;
}

static MDB_txn *lmdb_wtxn(lmdb_t *l)
{
    if (!l->wtxn)
        LMDB_CHECK(mdb_txn_begin(l->env, NULL, 0, &l->wtxn), "txn_begin");
    return l->wtxn;
}

static void lmdb_append(void *h, uint32_t dev, uint64_t seq, const void *p, uint32_t len)
{
    lmdb_t *l = h;
    uint8_t kb[12];
    MDB_val k = {12, kb}, v = {len, (void *)p};
    lmdb_key(kb, dev, seq);
    LMDB_CHECK(mdb_put(lmdb_wtxn(l), l->dbi, &k, &v, 0), "put");
}

static void lmdb_ack(void *h, uint32_t dev, uint64_t upto)
{
    lmdb_t *l = h;
    uint8_t kb[12];
    MDB_val k = {12, kb}, v;
    MDB_cursor *c;
    int rc;
    lmdb_key(kb, dev, 0);
    LMDB_CHECK(mdb_cursor_open(lmdb_wtxn(l), l->dbi, &c), "cursor_open");
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 12 || lmdb_key_dev(k.mv_data) != dev || lmdb_key_seq(k.mv_data) > upto)
            break;
        LMDB_CHECK(mdb_cursor_del(c, 0), "cursor_del");
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        LMDB_CHECK(rc, "cursor_get");
    mdb_cursor_close(c);
}

static void lmdb_commit(void *h)
{
    lmdb_t *l = h;
    if (l->wtxn) {
        LMDB_CHECK(mdb_txn_commit(l->wtxn), "txn_commit");
        l->wtxn = NULL;
    }
}

static int lmdb_read_oldest(void *h, uint32_t dev, int n, rec_t *out)
{
    lmdb_t *l = h;
    uint8_t kb[12];
    MDB_val k = {12, kb}, v;
    MDB_cursor *c;
    MDB_txn *t = l->wtxn;
    int got = 0, rc;
    if (!t) {
        if (!l->rtxn)
            LMDB_CHECK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &l->rtxn), "txn_begin(rdonly)");
        else
            LMDB_CHECK(mdb_txn_renew(l->rtxn), "txn_renew");
        t = l->rtxn;
    }
    lmdb_key(kb, dev, 0);
    LMDB_CHECK(mdb_cursor_open(t, l->dbi, &c), "cursor_open");
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && got < n;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 12 || lmdb_key_dev(k.mv_data) != dev)
            break;
        if (v.mv_size > MAX_PAYLOAD)
            die("lmdb: oversized value");
        out[got].seq = lmdb_key_seq(k.mv_data);
        out[got].len = (uint32_t)v.mv_size;
        memcpy(out[got].data, v.mv_data, v.mv_size);
        got++;
    }
    mdb_cursor_close(c);
    if (t == l->rtxn)
        mdb_txn_reset(l->rtxn);
    return got;
}

static uint64_t lmdb_count(void *h)
{
    lmdb_t *l = h;
    MDB_txn *t;
    MDB_stat st;
    LMDB_CHECK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &t), "txn_begin(rdonly)");
    LMDB_CHECK(mdb_stat(t, l->dbi, &st), "stat");
    mdb_txn_abort(t);
    return st.ms_entries;
}

static void lmdb_crash(void *h)
{
    (void)h; /* the open write transaction simply dies with the process */
}

static uint64_t no_scan(void *h)
{
    (void)h;
    return 0;
}

static void lmdb_close(void *h)
{
    lmdb_t *l = h;
    if (l->wtxn)
        mdb_txn_abort(l->wtxn);
    if (l->rtxn)
        mdb_txn_abort(l->rtxn);
    mdb_dbi_close(l->env, l->dbi);
    mdb_env_close(l->env);
    free(l);
}

static const engine_t lmdb_engine = {"lmdb",           lmdb_open,  lmdb_append, lmdb_ack, lmdb_commit,
                                     lmdb_read_oldest, lmdb_count, lmdb_crash,  no_scan,  lmdb_close};

/* ------------------------------------------------------------------ SQLite, WAL */

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *ins, *sel, *del, *cnt;
    int in_txn;
} sql_t;

static void sql_exec(sql_t *s, const char *q)
{
    char *err = NULL;
    if (sqlite3_exec(s->db, q, NULL, NULL, &err) != SQLITE_OK)
        die("sqlite %s: %s", q, err ? err : "?");
}

static sqlite3_stmt *sql_prep(sql_t *s, const char *q)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, q, -1, &st, NULL) != SQLITE_OK)
        die("sqlite prepare %s: %s", q, sqlite3_errmsg(s->db));
    return st;
}

static void *sql_open(const char *dir, int variant)
{
    sql_t *s = calloc(1, sizeof *s);
    char path[512];
    snprintf(path, sizeof path, "%s/store.db", dir);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        die("sqlite open %s: %s", path, sqlite3_errmsg(s->db));
    sql_exec(s, "PRAGMA journal_mode=WAL");
    sql_exec(s, variant & 1 ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL");
    if (variant & 2) /* checkpoint every 16,384 WAL pages (64 MiB) instead of 1,000 */
        sql_exec(s, "PRAGMA wal_autocheckpoint=16384");
    sql_exec(s, "PRAGMA cache_size=-32768"); /* 32 MiB: the whole store fits, as LMDB's map does */
    sql_exec(s,
             "CREATE TABLE IF NOT EXISTS msg(dev INTEGER NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,"
             " PRIMARY KEY(dev, seq)) WITHOUT ROWID");
    s->ins = sql_prep(s, "INSERT INTO msg(dev, seq, body) VALUES(?1, ?2, ?3)");
    s->sel = sql_prep(s, "SELECT seq, body FROM msg WHERE dev = ?1 ORDER BY seq LIMIT ?2");
    s->del = sql_prep(s, "DELETE FROM msg WHERE dev = ?1 AND seq <= ?2");
    s->cnt = sql_prep(s, "SELECT count(*) FROM msg");
    return s;
}

static void sql_begin(sql_t *s)
{
    if (!s->in_txn) {
        sql_exec(s, "BEGIN");
        s->in_txn = 1;
    }
}

static void sql_step_done(sql_t *s, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die("sqlite step: %s", sqlite3_errmsg(s->db));
    sqlite3_reset(st);
}

static void sql_append(void *h, uint32_t dev, uint64_t seq, const void *p, uint32_t len)
{
    sql_t *s = h;
    sql_begin(s);
    sqlite3_bind_int64(s->ins, 1, dev);
    sqlite3_bind_int64(s->ins, 2, (sqlite3_int64)seq);
    sqlite3_bind_blob(s->ins, 3, p, (int)len, SQLITE_STATIC);
    sql_step_done(s, s->ins);
}

static void sql_ack(void *h, uint32_t dev, uint64_t upto)
{
    sql_t *s = h;
    sql_begin(s);
    sqlite3_bind_int64(s->del, 1, dev);
    sqlite3_bind_int64(s->del, 2, (sqlite3_int64)upto);
    sql_step_done(s, s->del);
}

static void sql_commit(void *h)
{
    sql_t *s = h;
    if (s->in_txn) {
        sql_exec(s, "COMMIT");
        s->in_txn = 0;
    }
}

static int sql_read_oldest(void *h, uint32_t dev, int n, rec_t *out)
{
    sql_t *s = h;
    int got = 0, rc;
    sqlite3_bind_int64(s->sel, 1, dev);
    sqlite3_bind_int(s->sel, 2, n);
    while ((rc = sqlite3_step(s->sel)) == SQLITE_ROW) {
        int len = sqlite3_column_bytes(s->sel, 1);
        if (len > MAX_PAYLOAD)
            die("sqlite: oversized blob");
        out[got].seq = (uint64_t)sqlite3_column_int64(s->sel, 0);
        out[got].len = (uint32_t)len;
        memcpy(out[got].data, sqlite3_column_blob(s->sel, 1), (size_t)len);
        got++;
    }
    if (rc != SQLITE_DONE)
        die("sqlite select: %s", sqlite3_errmsg(s->db));
    sqlite3_reset(s->sel);
    return got;
}

static uint64_t sql_count(void *h)
{
    sql_t *s = h;
    uint64_t n;
    if (sqlite3_step(s->cnt) != SQLITE_ROW)
        die("sqlite count: %s", sqlite3_errmsg(s->db));
    n = (uint64_t)sqlite3_column_int64(s->cnt, 0);
    sqlite3_reset(s->cnt);
    return n;
}

static void sql_crash(void *h)
{
    (void)h;
}

static void sql_close(void *h)
{
    sql_t *s = h;
    if (s->in_txn)
        sql_exec(s, "ROLLBACK");
    sqlite3_finalize(s->ins);
    sqlite3_finalize(s->sel);
    sqlite3_finalize(s->del);
    sqlite3_finalize(s->cnt);
    if (sqlite3_close(s->db) != SQLITE_OK)
        die("sqlite close: %s", sqlite3_errmsg(s->db));
    free(s);
}

static const engine_t sqlite_engine = {"sqlite",        sql_open,  sql_append, sql_ack, sql_commit,
                                       sql_read_oldest, sql_count, sql_crash,  no_scan, sql_close};

/* ------------------------------------------------------------------ segment log
 *
 * Record: [u32 len|flags][u32 crc32c][u32 device][u64 seq][payload], little-endian, 20-byte
 * header. len's low 30 bits are the payload length; flag bit 31 = ACK (device's records up to
 * seq are acknowledged), bit 30 = COMMIT (ends a group; device = records in the group, seq =
 * group number). The CRC covers len, device, seq and payload, seeded with the segment id, so a
 * recycled segment's stale records would fail it. A group is one write() + one fdatasync();
 * recovery applies a group's records and acks only when its COMMIT record is found intact, so a
 * torn group (any sector missing) is discarded whole. Segments are SEG_MAX bytes at most and are
 * unlinked, oldest first, once every record in them is acknowledged and they are not active.
 * Variant 1 ("prezero") zero-fills each segment to SEG_MAX when it is created, so the group
 * writes overwrite allocated blocks and fdatasync has no size or extent change to journal. */

static uint32_t SEG_MAX = 64u << 20; /* BENCH_SEG_MB overrides, to exercise rollover and deletion */
#define HDR      20
#define F_ACK    0x80000000u
#define F_COMMIT 0x40000000u
#define LEN_MASK 0x3fffffffu

typedef struct {
    uint32_t seg, off;
    uint64_t seq;
} ent_t;

typedef struct {
    ent_t *e;
    uint32_t cap, head, n;
} ring_t;

typedef struct {
    int fd;
    uint8_t *map;
    uint64_t size; /* committed bytes */
    uint64_t live; /* un-acked data records */
    uint32_t seed; /* crc state after the segment id */
} seg_t;

typedef struct {
    uint32_t dev, bufoff;
    uint64_t seq;
} pend_t;

typedef struct {
    char dir[400];
    int prezero;
    ring_t rings[NDEV];
    seg_t **segs;
    uint32_t nsegs, first, active; /* segs[first..active] exist */
    uint8_t *buf;
    size_t buflen, bufcap;
    uint32_t group_recs;
    pend_t *pend;
    size_t npend, pendcap;
    uint64_t group_no, scanned;
} seglog_t;

static void ring_push(ring_t *r, ent_t e)
{
    if (r->n == r->cap) {
        uint32_t ncap = r->cap ? r->cap * 2 : 256;
        ent_t *ne = xrealloc(NULL, ncap * sizeof *ne);
        for (uint32_t i = 0; i < r->n; i++)
            ne[i] = r->e[(r->head + i) & (r->cap - 1)];
        free(r->e);
        r->e = ne;
        r->cap = ncap;
        r->head = 0;
    }
    r->e[(r->head + r->n) & (r->cap - 1)] = e;
    r->n++;
}

static uint32_t seg_seed(uint32_t id)
{
    return crc_upd(~0u, &id, 4);
}

static void seg_path(const seglog_t *g, uint32_t id, char *out, size_t n)
{
    snprintf(out, n, "%s/%08" PRIu32 ".seg", g->dir, id);
}

static seg_t *seg_map(seglog_t *g, uint32_t id, int fd)
{
    seg_t *s = calloc(1, sizeof *s);
    s->fd = fd;
    s->map = mmap(NULL, SEG_MAX, PROT_READ, MAP_SHARED, fd, 0);
    if (s->map == MAP_FAILED)
        die("mmap segment: %s", strerror(errno));
    s->seed = seg_seed(id);
    if (id >= g->nsegs) {
        uint32_t n = id + 16;
        g->segs = xrealloc(g->segs, n * sizeof *g->segs);
        memset(g->segs + g->nsegs, 0, (n - g->nsegs) * sizeof *g->segs);
        g->nsegs = n;
    }
    g->segs[id] = s;
    return s;
}

static uint64_t segs_created, segs_deleted; /* this process's, for the progress line */

static seg_t *seg_create(seglog_t *g, uint32_t id)
{
    char path[512];
    int fd;
    seg_path(g, id, path, sizeof path);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        die("create %s: %s", path, strerror(errno));
    if (g->prezero) {
        static uint8_t zeros[1 << 20];
        for (uint32_t o = 0; o < SEG_MAX; o += sizeof zeros)
            if (pwrite(fd, zeros, sizeof zeros, o) != (ssize_t)sizeof zeros)
                die("zero-fill %s: %s", path, strerror(errno));
        if (fdatasync(fd) != 0)
            die("fdatasync %s: %s", path, strerror(errno));
    }
    fsync_dir(g->dir);
    segs_created++;
    return seg_map(g, id, fd);
}

static void seg_drop(seglog_t *g, uint32_t id)
{
    char path[512];
    seg_t *s = g->segs[id];
    seg_path(g, id, path, sizeof path);
    munmap(s->map, SEG_MAX);
    close(s->fd);
    if (unlink(path) != 0)
        die("unlink %s: %s", path, strerror(errno));
    free(s);
    g->segs[id] = NULL;
    segs_deleted++;
}

static uint32_t rec_crc(uint32_t seed, const uint8_t *rec, uint32_t len)
{
    uint32_t c = crc_upd(seed, rec, 4);
    return ~crc_upd(c, rec + 8, 12 + (size_t)len);
}

static void buf_rec(seglog_t *g, uint32_t lenflags, uint32_t dev, uint64_t seq, const void *p, uint32_t len)
{
    uint8_t *r;
    if (g->buflen + HDR + len > g->bufcap) {
        g->bufcap = (g->bufcap ? g->bufcap * 2 : 256 * 1024);
        g->buf = xrealloc(g->buf, g->bufcap);
    }
    r = g->buf + g->buflen;
    memcpy(r, &lenflags, 4);
    memset(r + 4, 0, 4); /* crc: computed at commit, once the segment (and its seed) is known */
    memcpy(r + 8, &dev, 4);
    memcpy(r + 12, &seq, 8);
    if (len)
        memcpy(r + HDR, p, len);
    g->buflen += HDR + len;
}

/* Fills in the CRCs of the buffered group for segment seed. */
static void buf_seal(seglog_t *g, uint32_t seed)
{
    for (size_t off = 0; off < g->buflen;) {
        uint32_t lf, len, crc;
        memcpy(&lf, g->buf + off, 4);
        len = lf & LEN_MASK;
        crc = rec_crc(seed, g->buf + off, len);
        memcpy(g->buf + off + 4, &crc, 4);
        off += HDR + len;
    }
}

/* Recovery: scans every segment in order, verifying CRCs, applying a group only at its intact
 * COMMIT record; cuts the active segment back to its last intact group. */
static void seglog_recover(seglog_t *g)
{
    DIR *d = opendir(g->dir);
    struct dirent *de;
    uint32_t *ids = NULL, nids = 0;
    struct {
        int ack;
        uint32_t dev, off;
        uint64_t seq;
    } *ops = NULL;
    size_t nops = 0, opcap = 0;
    if (!d)
        die("opendir %s: %s", g->dir, strerror(errno));
    while ((de = readdir(d))) {
        uint32_t id;
        char tail[8];
        if (sscanf(de->d_name, "%8" SCNu32 ".%3s", &id, tail) == 2 && !strcmp(tail, "seg")) {
            ids = xrealloc(ids, (nids + 1) * sizeof *ids);
            ids[nids++] = id;
        }
    }
    closedir(d);
    for (uint32_t i = 1; i < nids; i++) /* insertion sort: a handful of segments */
        for (uint32_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    for (uint32_t i = 0; i < nids; i++) {
        char path[512];
        struct stat st;
        int fd;
        seg_t *s;
        uint64_t off = 0, good = 0, fsz;
        seg_path(g, ids[i], path, sizeof path);
        if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0)
            die("open %s: %s", path, strerror(errno));
        s = seg_map(g, ids[i], fd);
        fsz = (uint64_t)st.st_size < SEG_MAX ? (uint64_t)st.st_size : SEG_MAX;
        nops = 0;
        while (off + HDR <= fsz) {
            const uint8_t *r = s->map + off;
            uint32_t lf, crc, len, dev;
            uint64_t seq;
            memcpy(&lf, r, 4);
            memcpy(&crc, r + 4, 4);
            len = lf & LEN_MASK;
            if (len > MAX_PAYLOAD || off + HDR + len > fsz || rec_crc(s->seed, r, len) != crc)
                break;
            memcpy(&dev, r + 8, 4);
            memcpy(&seq, r + 12, 8);
            off += HDR + len;
            if (lf & F_COMMIT) {
                if (dev != (uint32_t)nops) /* record count mismatch: treat as torn */
                    break;
                for (size_t k = 0; k < nops; k++) {
                    if (ops[k].dev >= NDEV)
                        die("seglog: device %" PRIu32 " out of range", ops[k].dev);
                    if (!ops[k].ack) {
                        ring_push(&g->rings[ops[k].dev], (ent_t){ids[i], ops[k].off, ops[k].seq});
                        s->live++;
                    } else {
                        ring_t *rg = &g->rings[ops[k].dev];
                        while (rg->n && rg->e[rg->head].seq <= ops[k].seq) {
                            g->segs[rg->e[rg->head].seg]->live--;
                            rg->head = (rg->head + 1) & (rg->cap - 1);
                            rg->n--;
                        }
                    }
                }
                nops = 0;
                good = off;
                g->group_no = seq + 1;
                continue;
            }
            if (nops == opcap) {
                opcap = opcap ? opcap * 2 : 4096;
                ops = xrealloc(ops, opcap * sizeof *ops);
            }
            ops[nops].ack = (lf & F_ACK) != 0;
            ops[nops].dev = dev;
            ops[nops].off = (uint32_t)(off - HDR - len);
            ops[nops].seq = seq;
            nops++;
        }
        g->scanned += off;
        s->size = good;
        if (i + 1 < nids) {
            if (good != fsz && !g->prezero)
                fprintf(stderr, "seglog: segment %" PRIu32 " has %" PRIu64 " bytes past its last group\n",
                        ids[i], fsz - good);
            continue;
        }
        /* the active segment: drop the torn tail durably before writing after it */
        if (!g->prezero && fsz > good) {
            if (ftruncate(fd, (off_t)good) != 0 || fdatasync(fd) != 0)
                die("truncate %s: %s", path, strerror(errno));
        } else if (g->prezero && off > good) {
            static uint8_t zeros[64 * 1024];
            for (uint64_t o = good; o < off; o += sizeof zeros) {
                size_t n = off - o < sizeof zeros ? (size_t)(off - o) : sizeof zeros;
                if (pwrite(fd, zeros, n, (off_t)o) != (ssize_t)n)
                    die("zero torn tail: %s", strerror(errno));
            }
            if (fdatasync(fd) != 0)
                die("fdatasync: %s", strerror(errno));
        }
    }
    if (nids) {
        g->first = ids[0];
        g->active = ids[nids - 1];
    }
    free(ids);
    free(ops);
}

static void seglog_gc(seglog_t *g)
{
    while (g->first < g->active && g->segs[g->first] && g->segs[g->first]->live == 0) {
        seg_drop(g, g->first);
        g->first++;
    }
}

static void *seglog_open(const char *dir, int variant)
{
    seglog_t *g = calloc(1, sizeof *g);
    snprintf(g->dir, sizeof g->dir, "%s", dir);
    g->prezero = variant;
    seglog_recover(g);
    if (!g->nsegs || !g->segs[g->active]) {
        g->first = g->active = 0;
        seg_create(g, 0);
    }
    seglog_gc(g);
    return g;
}

static void seglog_append(void *h, uint32_t dev, uint64_t seq, const void *p, uint32_t len)
{
    seglog_t *g = h;
    if (g->npend == g->pendcap) {
        g->pendcap = g->pendcap ? g->pendcap * 2 : 2048;
        g->pend = xrealloc(g->pend, g->pendcap * sizeof *g->pend);
    }
    g->pend[g->npend++] = (pend_t){dev, (uint32_t)g->buflen, seq};
    buf_rec(g, len, dev, seq, p, len);
    g->group_recs++;
}

static void seglog_ack(void *h, uint32_t dev, uint64_t upto)
{
    seglog_t *g = h;
    ring_t *r = &g->rings[dev];
    while (r->n && r->e[r->head].seq <= upto) {
        g->segs[r->e[r->head].seg]->live--;
        r->head = (r->head + 1) & (r->cap - 1);
        r->n--;
    }
    buf_rec(g, F_ACK, dev, upto, NULL, 0);
    g->group_recs++;
}

static void seglog_commit(void *h)
{
    seglog_t *g = h;
    seg_t *s;
    size_t done = 0;
    if (!g->buflen)
        return;
    buf_rec(g, F_COMMIT, g->group_recs, g->group_no++, NULL, 0);
    s = g->segs[g->active];
    if (s->size + g->buflen > SEG_MAX) {
        g->active++;
        s = seg_create(g, g->active);
    }
    buf_seal(g, s->seed);
    while (done < g->buflen) {
        ssize_t w = pwrite(s->fd, g->buf + done, g->buflen - done, (off_t)(s->size + done));
        if (w <= 0)
            die("pwrite segment: %s", strerror(errno));
        done += (size_t)w;
    }
    if (fdatasync(s->fd) != 0)
        die("fdatasync segment: %s", strerror(errno));
    for (size_t i = 0; i < g->npend; i++) {
        ring_push(&g->rings[g->pend[i].dev],
                  (ent_t){g->active, (uint32_t)(s->size + g->pend[i].bufoff), g->pend[i].seq});
        s->live++;
    }
    s->size += g->buflen;
    g->buflen = 0;
    g->npend = 0;
    g->group_recs = 0;
    seglog_gc(g);
}

static int seglog_read_oldest(void *h, uint32_t dev, int n, rec_t *out)
{
    seglog_t *g = h;
    ring_t *r = &g->rings[dev];
    int got = 0;
    for (; got < n && (uint32_t)got < r->n; got++) {
        ent_t *e = &r->e[(r->head + (uint32_t)got) & (r->cap - 1)];
        const uint8_t *rec = g->segs[e->seg]->map + e->off;
        uint32_t lf;
        memcpy(&lf, rec, 4);
        out[got].seq = e->seq;
        out[got].len = lf & LEN_MASK;
        memcpy(out[got].data, rec + HDR, out[got].len);
    }
    return got;
}

static uint64_t seglog_count(void *h)
{
    seglog_t *g = h;
    uint64_t n = 0;
    for (int i = 0; i < NDEV; i++)
        n += g->rings[i].n;
    return n;
}

/* Simulated power cut mid-group: half of the pending group reaches the file, no COMMIT. */
static void seglog_crash(void *h)
{
    seglog_t *g = h;
    seg_t *s = g->segs[g->active];
    buf_seal(g, s->seed);
    if (pwrite(s->fd, g->buf, g->buflen / 2, (off_t)s->size) < 0)
        die("pwrite torn: %s", strerror(errno));
}

static uint64_t seglog_scanned(void *h)
{
    return ((seglog_t *)h)->scanned;
}

static void seglog_close(void *h)
{
    seglog_t *g = h;
    for (uint32_t i = 0; i < g->nsegs; i++)
        if (g->segs[i]) {
            munmap(g->segs[i]->map, SEG_MAX);
            close(g->segs[i]->fd);
            free(g->segs[i]);
        }
    for (int i = 0; i < NDEV; i++)
        free(g->rings[i].e);
    free(g->segs);
    free(g->buf);
    free(g->pend);
    free(g);
}

static const engine_t seglog_engine = {"seglog",       seglog_open,        seglog_append, seglog_ack,
                                       seglog_commit,  seglog_read_oldest, seglog_count,  seglog_crash,
                                       seglog_scanned, seglog_close};

/* ------------------------------------------------------------------ configurations */

typedef struct {
    const char *label;
    const engine_t *eng;
    int variant;
} config_t;

static const config_t configs[] = {
    {"lmdb", &lmdb_engine, 0},
    {"lmdb-nometasync", &lmdb_engine, 1},
    {"sqlite-full", &sqlite_engine, 0},
    {"sqlite-normal", &sqlite_engine, 1},
    {"sqlite-full-ckpt64m", &sqlite_engine, 2},
    {"seglog", &seglog_engine, 0},
    {"seglog-prezero", &seglog_engine, 1},
};
#define NCONFIGS (sizeof configs / sizeof configs[0])

/* ------------------------------------------------------------------ harness */

static uint64_t next_seq[NDEV], acked[NDEV]; /* next seq to assign; last acked seq */

static void make_payload(uint8_t *b, uint32_t dev, uint64_t seq)
{
    memcpy(b, &dev, 4);
    memcpy(b + 4, &seq, 8);
    for (int i = 12; i < PAYLOAD; i++)
        b[i] = (uint8_t)(seq * 31 + dev * 7 + (uint64_t)i);
}

static void check_rec(const rec_t *r, uint32_t dev, uint64_t want_seq)
{
    uint32_t d;
    uint64_t s;
    memcpy(&d, r->data, 4);
    memcpy(&s, r->data + 4, 8);
    if (r->seq != want_seq || r->len != PAYLOAD || d != dev || s != want_seq ||
        r->data[PAYLOAD - 1] != (uint8_t)(want_seq * 31 + dev * 7 + PAYLOAD - 1))
        die("device %" PRIu32 ": got seq %" PRIu64 " (len %" PRIu32 ", body dev %" PRIu32 " seq %" PRIu64
            "), want %" PRIu64,
            dev, r->seq, r->len, d, s, want_seq);
}

typedef struct {
    const engine_t *e;
    void *h;
    uint64_t open_ns, commits;
    uint32_t appends, ops;
} group_t;

static void g_commit(group_t *g)
{
    if (!g->ops)
        return;
    g->e->commit(g->h);
    g->commits++;
    g->ops = g->appends = 0;
}

static void g_begin(group_t *g)
{
    if (!g->ops)
        g->open_ns = now_ns();
}

static void g_end(group_t *g, int append)
{
    g->ops++;
    g->appends += (uint32_t)append;
    if (g->appends >= GROUP_MAX || now_ns() - g->open_ns >= GROUP_NS)
        g_commit(g);
}

static void ingest(group_t *g, uint64_t n, uint32_t *rr)
{
    uint8_t p[PAYLOAD];
    for (uint64_t k = 0; k < n; k++) {
        uint32_t dev = (*rr)++ % NDEV;
        uint64_t seq = next_seq[dev]++;
        make_payload(p, dev, seq);
        g_begin(g);
        g->e->append(g->h, dev, seq, p, PAYLOAD);
        g_end(g, 1);
    }
}

/* Round-robin from *cursor, up to max records, each device's batch verified and acked. */
static uint64_t drain(group_t *g, uint64_t max, uint32_t *cursor)
{
    static rec_t recs[BATCH];
    uint64_t got = 0;
    uint32_t empty_run = 0;
    while (got < max && empty_run < NDEV) {
        uint32_t dev = (*cursor)++ % NDEV;
        int want = max - got < BATCH ? (int)(max - got) : BATCH;
        int n = g->e->read_oldest(g->h, dev, want, recs);
        if (n <= 0) {
            empty_run++;
            continue;
        }
        empty_run = 0;
        for (int i = 0; i < n; i++)
            check_rec(&recs[i], dev, acked[dev] + 1 + (uint64_t)i);
        g_begin(g);
        g->e->ack(g->h, dev, recs[n - 1].seq);
        acked[dev] = recs[n - 1].seq;
        g_end(g, 0);
        got += (uint64_t)n;
    }
    return got;
}

static uint64_t expected_unacked(void)
{
    uint64_t n = 0;
    for (int d = 0; d < NDEV; d++)
        n += next_seq[d] - 1 - acked[d];
    return n;
}

typedef struct {
    uint64_t t, syncs, sync_ns, wb, devb;
    double cpu;
} snap_t;

typedef struct {
    double secs, cpu, sync_secs;
    uint64_t msgs, commits, syncs, wb, devb, disk, apparent;
} phase_t;

typedef struct {
    int ran;
    phase_t ph[3];
    uint64_t recovered, expected, recovered2, store_alloc, store_apparent, scanned, verified;
    double open_ms, count_ms, reopen_ms, cold_ms, verify_secs;
} result_t;

static void snap(snap_t *s)
{
    s->t = now_ns();
    s->syncs = n_syncs;
    s->sync_ns = sync_ns;
    s->wb = proc_write_bytes();
    s->devb = dev_write_bytes();
    s->cpu = cpu_secs();
}

static void phase_end(phase_t *p, const snap_t *a, uint64_t msgs, uint64_t commits, const char *dir)
{
    snap_t b;
    snap(&b);
    p->secs = (double)(b.t - a->t) / 1e9;
    p->cpu = b.cpu - a->cpu;
    p->syncs = b.syncs - a->syncs;
    p->sync_secs = (double)(b.sync_ns - a->sync_ns) / 1e9;
    p->wb = b.wb - a->wb;
    p->devb = b.devb - a->devb;
    p->msgs = msgs;
    p->commits = commits;
    dir_usage(dir, &p->disk, &p->apparent);
}

static void run_config(const config_t *c, const char *dir, result_t *r)
{
    const engine_t *e = c->eng;
    group_t g = {e, NULL, 0, 0, 0, 0};
    uint32_t rr = 0, cursor = 0;
    uint64_t in = 0, out = 0, t0;
    snap_t s;
    pid_t pid;
    int status;

    memset(r, 0, sizeof *r);
    for (int d = 0; d < NDEV; d++)
        next_seq[d] = 1, acked[d] = 0;
    if (mkdir(dir, 0755) != 0)
        die("mkdir %s: %s", dir, strerror(errno));
    g.h = e->open(dir, c->variant);

    /* 1. ingest */
    snap(&s);
    ingest(&g, ingest_msgs, &rr);
    g_commit(&g);
    phase_end(&r->ph[0], &s, ingest_msgs, g.commits, dir);
    if (e->count(g.h) != ingest_msgs)
        die("%s: %" PRIu64 " records after ingest, want %" PRIu64, c->label, e->count(g.h), ingest_msgs);

    /* 2. drain */
    g.commits = 0;
    snap(&s);
    out = drain(&g, UINT64_MAX, &cursor);
    g_commit(&g);
    phase_end(&r->ph[1], &s, out, g.commits, dir);
    if (out != ingest_msgs || e->count(g.h) != 0)
        die("%s: drained %" PRIu64 ", %" PRIu64 " left", c->label, out, e->count(g.h));

    /* 3. mixed: ingest 1,000, drain 1,000 */
    g.commits = 0;
    out = 0;
    snap(&s);
    while (in < MIXED_MSGS) {
        ingest(&g, MIXED_CHUNK, &rr);
        in += MIXED_CHUNK;
        g_commit(
            &g); /* the chunk is a full group already unless 2 ms passed; drain reads only durable records */
        out += drain(&g, MIXED_CHUNK, &cursor);
    }
    g_commit(&g);
    phase_end(&r->ph[2], &s, in, g.commits, dir);
    r->ph[2].apparent = out; /* reused: messages drained during the mixed phase */
    if (e->count(g.h) != expected_unacked())
        die("%s: %" PRIu64 " un-acked after mixed, want %" PRIu64, c->label, e->count(g.h),
            expected_unacked());
    e->close(g.h);

    /* 4. restart after a crash: the child writes and is killed; this process recovers */
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(300);
        g.h = e->open(dir, c->variant);
        g.ops = g.appends = 0;
        ingest(&g, ingest_msgs, &rr);
        g_commit(&g);
        for (int d = 0; d < NDEV; d++) {
            g_begin(&g);
            e->ack(g.h, (uint32_t)d, acked[d] + RESTART_ACK_PER_DEV);
            g_end(&g, 0);
        }
        g_commit(&g);
        for (int k = 0; k < TORN_APPENDS; k++) { /* never committed */
            uint8_t p[PAYLOAD];
            uint32_t dev = rr++ % NDEV;
            uint64_t seq = next_seq[dev]++;
            make_payload(p, dev, seq);
            e->append(g.h, dev, seq, p, PAYLOAD);
        }
        e->crash(g.h);
        raise(SIGKILL);
        _exit(3);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        die("%s: crash child did not die by SIGKILL (status %d)", c->label, status);
    for (int d = 0; d < NDEV; d++) { /* what the child committed */
        next_seq[d] += ingest_msgs / NDEV;
        acked[d] += RESTART_ACK_PER_DEV;
    }
    rr += (uint32_t)ingest_msgs;
    r->expected = expected_unacked();
    dir_usage(dir, &r->store_alloc, &r->store_apparent);

    t0 = now_ns();
    g.h = e->open(dir, c->variant);
    r->open_ms = (double)(now_ns() - t0) / 1e6;
    t0 = now_ns();
    r->recovered = e->count(g.h);
    r->count_ms = (double)(now_ns() - t0) / 1e6;
    r->scanned = e->scanned(g.h);
    e->close(g.h);
    t0 = now_ns();
    g.h = e->open(dir, c->variant);
    r->recovered2 = e->count(g.h);
    r->reopen_ms = (double)(now_ns() - t0) / 1e6;
    e->close(g.h);
    evict(dir);
    t0 = now_ns();
    g.h = e->open(dir, c->variant);
    if (e->count(g.h) != r->expected)
        die("%s: cold reopen counted %" PRIu64 ", want %" PRIu64, c->label, e->count(g.h), r->expected);
    r->cold_ms = (double)(now_ns() - t0) / 1e6;

    /* verify: everything recovered drains in order, byte-exact, and nothing uncommitted came back */
    g.ops = g.appends = 0;
    t0 = now_ns();
    r->verified = drain(&g, UINT64_MAX, &cursor);
    g_commit(&g);
    r->verify_secs = (double)(now_ns() - t0) / 1e9;
    if (r->recovered != r->expected || r->recovered2 != r->expected || r->verified != r->expected ||
        e->count(g.h) != 0)
        die("%s: recovered %" PRIu64 "/%" PRIu64 " (reopen %" PRIu64 ", drained %" PRIu64 "), want %" PRIu64,
            c->label, r->recovered, r->recovered2, r->verified, e->count(g.h), r->expected);
    e->close(g.h);
    r->ran = 1;
}

/* ------------------------------------------------------------------ fdatasync alone */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void fsync_probe(const char *base, const char *when)
{
    char path[512];
    static uint8_t b[4096];
    uint64_t lat[2][1000];
    int fd;
    memset(b, 0xa5, sizeof b);
    snprintf(path, sizeof path, "%s/fsync-probe", base);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("open %s: %s", path, strerror(errno));
    for (int i = 0; i < 1000; i++) { /* 4 KiB append + fdatasync */
        uint64_t t = now_ns();
        if (write(fd, b, sizeof b) != (ssize_t)sizeof b || fdatasync(fd) != 0)
            die("probe: %s", strerror(errno));
        lat[0][i] = now_ns() - t;
    }
    for (int i = 0; i < 1000; i++) { /* 4 KiB overwrite of those blocks + fdatasync */
        uint64_t t = now_ns();
        if (pwrite(fd, b, sizeof b, (off_t)i * 4096) != (ssize_t)sizeof b || fdatasync(fd) != 0)
            die("probe: %s", strerror(errno));
        lat[1][i] = now_ns() - t;
    }
    close(fd);
    unlink(path);
    for (int k = 0; k < 2; k++) {
        qsort(lat[k], 1000, sizeof lat[k][0], cmp_u64);
        printf("| %s | %s | %.0f | %.0f | %.0f |\n", when, k ? "4 KiB overwrite" : "4 KiB append",
               lat[k][499] / 1e3, lat[k][989] / 1e3, lat[k][999] / 1e3);
    }
}

/* ------------------------------------------------------------------ main */

/* BENCH_CONFIGS: space- or comma-separated labels; unset = all. */
static int wanted(const char *list, const char *label)
{
    size_t n = strlen(label);
    if (!list)
        return 1;
    for (const char *q = strstr(list, label); q; q = strstr(q + 1, label))
        if ((q == list || q[-1] == ' ' || q[-1] == ',') && (q[n] == 0 || q[n] == ' ' || q[n] == ','))
            return 1;
    return 0;
}

static void on_alarm(int sig)
{
    static const char msg[] =
        "\nbench_store_engines: BENCH_TIMEOUT reached, stopping (scratch directory left behind)\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    _exit(2);
}

static const char *fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53: return "ext2/ext3/ext4";
    case 0x01021994: return "tmpfs";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794c7630: return "overlayfs";
    case 0x2FC12FC1: return "zfs";
    case 0xF2F52010: return "f2fs";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/var/tmp";
    const char *want = getenv("BENCH_CONFIGS");
    int runs = getenv("BENCH_RUNS") ? atoi(getenv("BENCH_RUNS")) : 2;
    unsigned timeout = getenv("BENCH_TIMEOUT") ? (unsigned)atoi(getenv("BENCH_TIMEOUT")) : 840;
    static char dir[400], sub[512], cmd[600];
    static result_t res[NCONFIGS][8];
    struct statfs sf;
    struct stat st;
    FILE *p;

    if (getenv("BENCH_MSGS"))
        ingest_msgs = (uint64_t)strtoull(getenv("BENCH_MSGS"), NULL, 10) / NDEV * NDEV;
    if (getenv("BENCH_SEG_MB")) {
        unsigned mb = (unsigned)atoi(getenv("BENCH_SEG_MB"));
        if (mb < 1 || mb > 1024)
            die("BENCH_SEG_MB must be 1..1024");
        SEG_MAX = mb << 20;
    }
    if (runs < 1 || runs > 8 || ingest_msgs < NDEV * RESTART_ACK_PER_DEV)
        die("BENCH_RUNS must be 1..8 and BENCH_MSGS at least %d", NDEV * RESTART_ACK_PER_DEV);
    signal(SIGALRM, on_alarm);
    alarm(timeout);
    crc_init();
    if (~crc_upd(~0u, "123456789", 9) != 0xE3069283u)
        die("crc32c self-test failed");

    snprintf(dir, sizeof dir, "%s/iotgw-store-bench.XXXXXX", base);
    if (!mkdtemp(dir))
        die("mkdtemp %s: %s", dir, strerror(errno));
    if (statfs(dir, &sf) != 0 || stat(dir, &st) != 0)
        die("statfs %s: %s", dir, strerror(errno));
    printf("# bench_store_engines\n\nscratch: %s\nstatfs f_type 0x%lx (%s)", dir, (unsigned long)sf.f_type,
           fs_name((long)sf.f_type));
    snprintf(cmd, sizeof cmd, "stat -f -c %%T '%s'", dir);
    if ((p = popen(cmd, "r"))) {
        char line[128];
        if (fgets(line, sizeof line, p))
            printf("; `stat -f -c %%T` says: %s", line);
        pclose(p);
    }
    printf("\n");
    if ((unsigned long)sf.f_type == 0x01021994)
        die("%s is on tmpfs: run on the real disk", dir);
    snprintf(devstat_path, sizeof devstat_path, "/sys/dev/block/%u:%u/stat", major(st.st_dev),
             minor(st.st_dev));
    if (access(devstat_path, R_OK) != 0)
        devstat_path[0] = 0;
    printf("block device counter: %s\n", devstat_path[0] ? devstat_path : "(none)");
    printf("segment log: %u MiB segments\n", SEG_MAX >> 20);
    printf("sqlite %s, %s; %d devices, %" PRIu64
           " ingest msgs, %d-byte payloads, group = 2 ms or %d records\n\n",
           sqlite3_libversion(), MDB_VERSION_STRING, NDEV, ingest_msgs, PAYLOAD, GROUP_MAX);

    printf("## fdatasync alone (1,000 each, µs)\n\n| when | op | p50 | p99 | max |\n|---|---|---|---|---|\n");
    fsync_probe(dir, "before");
    fflush(stdout);

    for (int run = 0; run < runs; run++)
        for (size_t c = 0; c < NCONFIGS; c++) {
            uint64_t t0 = now_ns(), created = segs_created, deleted = segs_deleted;
            if (!wanted(want, configs[c].label))
                continue;
            snprintf(sub, sizeof sub, "%s/%s-run%d", dir, configs[c].label, run + 1);
            run_config(&configs[c], sub, &res[c][run]);
            rm_rf(sub);
            fprintf(stderr, "%s run %d: %.1f s", configs[c].label, run + 1, (double)(now_ns() - t0) / 1e9);
            if (configs[c].eng == &seglog_engine)
                fprintf(stderr,
                        " (segments created %" PRIu64 ", deleted %" PRIu64 " outside the crash child)",
                        segs_created - created, segs_deleted - deleted);
            fputc('\n', stderr);
        }
    fsync_probe(dir, "after");

    printf("\n## 1. ingest (%" PRIu64
           " msgs)\n\n| engine | run | durable msgs/s | commits/s | syncs/s | syncs/commit | "
           "msgs/commit | CPU µs/msg | sync time %% | disk B/msg | written B/msg (proc*) | written B/msg "
           "(device) |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
           ingest_msgs);
    for (size_t c = 0; c < NCONFIGS; c++)
        for (int run = 0; run < runs; run++) {
            const phase_t *q = &res[c][run].ph[0];
            if (!res[c][run].ran)
                continue;
            printf("| %s | %d | %.0f | %.0f | %.0f | %.2f | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f |\n",
                   configs[c].label, run + 1, q->msgs / q->secs, q->commits / q->secs, q->syncs / q->secs,
                   (double)q->syncs / (double)q->commits, (double)q->msgs / (double)q->commits,
                   q->cpu * 1e6 / q->msgs, 100 * q->sync_secs / q->secs, (double)q->disk / q->msgs,
                   (double)q->wb / q->msgs, (double)q->devb / q->msgs);
        }
    printf("\n## 2. drain (batches of %d, acks committed every 2 ms)\n\n| engine | run | msgs/s | commits | "
           "syncs/s | "
           "CPU µs/msg | sync time %% | written B/msg (proc) | written B/msg (device) | disk B after (all "
           "acked) |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n",
           BATCH);
    for (size_t c = 0; c < NCONFIGS; c++)
        for (int run = 0; run < runs; run++) {
            const phase_t *q = &res[c][run].ph[1];
            if (!res[c][run].ran)
                continue;
            printf("| %s | %d | %.0f | %" PRIu64 " | %.0f | %.2f | %.0f | %.0f | %.0f | %" PRIu64 " |\n",
                   configs[c].label, run + 1, q->msgs / q->secs, q->commits, q->syncs / q->secs,
                   q->cpu * 1e6 / q->msgs, 100 * q->sync_secs / q->secs, (double)q->wb / q->msgs,
                   (double)q->devb / q->msgs, q->disk);
        }
    printf("\n## 3. mixed (ingest %d / drain %d alternately, %d msgs)\n\n| engine | run | msgs/s | drained | "
           "commits/s "
           "| syncs/s | CPU µs/msg | written B/msg (proc) | written B/msg (device) "
           "|\n|---|---|---|---|---|---|---|---|---|\n",
           MIXED_CHUNK, MIXED_CHUNK, MIXED_MSGS);
    for (size_t c = 0; c < NCONFIGS; c++)
        for (int run = 0; run < runs; run++) {
            const phase_t *q = &res[c][run].ph[2];
            if (!res[c][run].ran)
                continue;
            printf("| %s | %d | %.0f | %" PRIu64 " | %.0f | %.0f | %.2f | %.0f | %.0f |\n", configs[c].label,
                   run + 1, q->msgs / q->secs, q->apparent, q->commits / q->secs, q->syncs / q->secs,
                   q->cpu * 1e6 / q->msgs, (double)q->wb / q->msgs, (double)q->devb / q->msgs);
        }
    printf("\n## 4. restart after SIGKILL (child: +%" PRIu64
           " msgs, %d acked per device, %d appended uncommitted)\n\n"
           "| engine | run | recovered un-acked | expected | open+recover ms | count ms | store MB (alloc / "
           "apparent) | "
           "scanned MB | open ms per 100 MB | clean reopen+count ms | cold-cache reopen+count ms | verify "
           "drain msgs/s |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
           ingest_msgs, RESTART_ACK_PER_DEV, TORN_APPENDS);
    for (size_t c = 0; c < NCONFIGS; c++)
        for (int run = 0; run < runs; run++) {
            const result_t *q = &res[c][run];
            double mb = (q->scanned ? q->scanned : q->store_apparent) / 1e6;
            if (!q->ran)
                continue;
            printf("| %s | %d | %" PRIu64 " | %" PRIu64
                   " | %.2f | %.2f | %.1f / %.1f | %.1f | %.2f | %.2f | %.2f | %.0f |\n",
                   configs[c].label, run + 1, q->recovered, q->expected, q->open_ms, q->count_ms,
                   q->store_alloc / 1e6, q->store_apparent / 1e6, q->scanned / 1e6, q->open_ms / (mb / 100),
                   q->reopen_ms, q->cold_ms, q->verified / q->verify_secs);
        }
    rm_rf(dir);
    return 0;
}
