/* The durable store (gateway/store.c) on a real loop and a real directory: group commit and
 * on_durable order, take/give_back/done, recovery (reopen, a crash before the
 * acknowledgements were written, a torn tail, a corrupt record), FORMAT and LOCK refusals,
 * ttl, maxBytes under rejectNew and dropOldest, segment rollover and deletion, SYNC_OS, a
 * write that fails (RLIMIT_FSIZE), and the on-disk format against a CRC32C of the test's own.
 * IOTGW_STORE_BENCH=1 also prints durable appends/s and drain msgs/s. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway/store.h"
#include "tests/common/clock_env.h"
#include "tests/unit/check_main.h"
#include "transport/log.h"

#define REC_MAGIC 0xC6A4A793u /* gateway/store.c's */

static iotgw_loop *loop;
static char dir[64];
static iotgw_store *open_stores[4]; /* closed by teardown when a failed assertion left them open */

/* on_durable calls, in order */
typedef struct cb {
    uint64_t token;
    int rc;
    char *why;
} cb;
static cb *cbs;
static size_t ncb, cbcap;

static void on_durable(void *ctx, uint64_t token, int rc, const char *why)
{
    (void)ctx;
    if (ncb == cbcap) {
        cbcap = cbcap ? cbcap * 2 : 1024;
        cbs = realloc(cbs, cbcap * sizeof *cbs);
        ck_assert_ptr_nonnull(cbs);
    }
    cbs[ncb++] = (cb){token, rc, rc && why ? strdup(why) : NULL};
}

static void cbs_clear(void)
{
    for (size_t i = 0; i < ncb; i++)
        free(cbs[i].why);
    ncb = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

static void setup(void)
{
    iotgw_log_set_level(IOTGW_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/test_store.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    iotgw_diag d = {0};
    loop = iotgw_loop_new(NULL, &d);
    ck_assert_msg(loop != NULL, "%s", d.text);
    ncb = 0;
}

static void close_store(iotgw_store *st)
{
    for (size_t i = 0; i < sizeof open_stores / sizeof open_stores[0]; i++)
        if (open_stores[i] == st)
            open_stores[i] = NULL;
    iotgw_store_close(st);
}

static void teardown(void)
{
    for (size_t i = 0; i < sizeof open_stores / sizeof open_stores[0]; i++)
        if (open_stores[i])
            close_store(open_stores[i]);
    cbs_clear();
    free(cbs);
    cbs = NULL;
    cbcap = 0;
    iotgw_loop_free(loop);
    loop = NULL;
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    iotgw_log_set_level(IOTGW_LOG_INFO);
    iotgw_log_set_stream(NULL);
}

static iotgw_store_options opts(void)
{
    iotgw_store_options o = {0};
    o.path = dir;
    o.on_durable = on_durable;
    return o;
}

static iotgw_store *open_with(const iotgw_store_options *o)
{
    iotgw_store *st = NULL;
    iotgw_diag d = {0};
    int rc = iotgw_store_open(loop, o, &st, &d);
    ck_assert_msg(rc == 0, "open: %d %s", rc, d.text);
    for (size_t i = 0; i < sizeof open_stores / sizeof open_stores[0]; i++)
        if (!open_stores[i]) {
            open_stores[i] = st;
            break;
        }
    return st;
}

static iotgw_store *open_default(void)
{
    iotgw_store_options o = opts();
    return open_with(&o);
}

/* Runs the loop until n on_durable calls have come (10 s at most). */
static void wait_cbs(size_t n)
{
    int64_t end = iotgw_loop_now_ms(loop) + 10000;
    while (ncb < n && iotgw_loop_now_ms(loop) < end)
        iotgw_loop_run(loop, 10);
    ck_assert_uint_ge(ncb, n);
}

/* Runs the loop until cond holds (10 s at most). */
#define WAIT_UNTIL(cond)                                                                                     \
    do {                                                                                                     \
        int64_t end_ = iotgw_loop_now_ms(loop) + 10000;                                                      \
        while (!(cond) && iotgw_loop_now_ms(loop) < end_)                                                    \
            iotgw_loop_run(loop, 5);                                                                         \
        ck_assert_msg(cond, "waited 10 s for %s", #cond);                                                    \
    } while (0)

static void run_ms(int ms)
{
    int64_t end = iotgw_loop_now_ms(loop) + ms;
    while (iotgw_loop_now_ms(loop) < end)
        iotgw_loop_run(loop, 5);
}

/* A payload that says whose and which it is. */
static size_t payload(uint8_t *b, const char *dev, unsigned i, size_t len)
{
    for (size_t k = 0; k < len; k++)
        b[k] = (uint8_t)(dev[k % strlen(dev)] ^ (i * 31 + k * 7));
    return len;
}

static void append_ok(iotgw_store *st, const char *dev, unsigned i, size_t len, uint64_t token)
{
    uint8_t b[4096];
    ck_assert_uint_le(len, sizeof b);
    payload(b, dev, i, len);
    int rc = iotgw_store_append(st, dev, b, len, token);
    ck_assert_msg(rc == 0, "append %s %u: %d", dev, i, rc);
}

static void check_payload(const iotgw_store_msg *m, const char *dev, unsigned i, size_t len)
{
    uint8_t b[4096];
    payload(b, dev, i, len);
    ck_assert_uint_eq(m->len, len);
    ck_assert_msg(memcmp(m->data, b, len) == 0, "payload of %s %u", dev, i);
}

static iotgw_store_stats stats(const iotgw_store *st)
{
    iotgw_store_stats s;
    iotgw_store_stats_get(st, &s);
    return s;
}

static int count_segments(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strlen(de->d_name) == 20 && strcmp(de->d_name + 16, ".seg") == 0)
            n++;
    closedir(d);
    return n;
}

/* The newest segment's path. */
static void newest_segment(char *out, size_t n)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    char best[32] = "";
    struct dirent *de;
    while ((de = readdir(d)))
        if (strlen(de->d_name) == 20 && strcmp(de->d_name + 16, ".seg") == 0 && strcmp(de->d_name, best) > 0)
            memcpy(best, de->d_name, 21);
    closedir(d);
    ck_assert_str_ne(best, "");
    snprintf(out, n, "%s/%s", dir, best);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    return sb.st_size;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    ck_assert_uint_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void write_file(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

/* ------------------------------------------------------------------ the format */

/* Bitwise CRC32C, independent of the store's table-driven one. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = ~0u;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

START_TEST(crc32c_vector_and_record_format)
{
    ck_assert_uint_eq(crc32c_bitwise((const uint8_t *)"123456789", 9), 0xE3069283u);

    iotgw_store *st = open_default();
    int64_t before = (int64_t)time(NULL) * 1000 - 1000;
    append_ok(st, "dev-a", 1, 100, 7);
    wait_cbs(1);
    iotgw_store_msg m;
    ck_assert_uint_eq(iotgw_store_take(st, "dev-a", &m, 1), 1);
    uint64_t id = m.id;
    iotgw_store_done(st, id);
    close_store(st); /* writes the acknowledgement */

    size_t n;
    char path[128];
    newest_segment(path, sizeof path);
    uint8_t *b = read_file(path, &n);
    /* a message record: magic, len, crc over the rest, type 1, id, stored_ms, device id, payload */
    ck_assert_uint_ge(n, 12 + 18 + 5 + 100);
    ck_assert_uint_eq(le32(b), REC_MAGIC);
    uint32_t len = le32(b + 4);
    ck_assert_uint_eq(len, 1 + 8 + 8 + 1 + 5 + 100);
    ck_assert_uint_eq(le32(b + 8), crc32c_bitwise(b + 12, len));
    ck_assert_uint_eq(b[12], 1);
    ck_assert_uint_eq(le64(b + 13), id);
    int64_t stored = (int64_t)le64(b + 21);
    ck_assert_int_ge(stored, before);
    ck_assert_int_le(stored, (int64_t)time(NULL) * 1000 + 1000);
    ck_assert_uint_eq(b[29], 5);
    ck_assert(memcmp(b + 30, "dev-a", 5) == 0);
    uint8_t want[100];
    payload(want, "dev-a", 1, 100);
    ck_assert(memcmp(b + 35, want, 100) == 0);
    /* then an acknowledgement record: type 2 and the id */
    const uint8_t *a = b + 12 + len;
    ck_assert_uint_eq(n, 12 + len + 12 + 1 + 8);
    ck_assert_uint_eq(le32(a), REC_MAGIC);
    ck_assert_uint_eq(le32(a + 4), 9);
    ck_assert_uint_eq(le32(a + 8), crc32c_bitwise(a + 12, 9));
    ck_assert_uint_eq(a[12], 2);
    ck_assert_uint_eq(le64(a + 13), id);
    free(b);

    char fmt[128];
    snprintf(fmt, sizeof fmt, "%s/FORMAT", dir);
    b = read_file(fmt, &n);
    ck_assert_uint_eq(n, 14);
    ck_assert(memcmp(b, "iotgw-store 1\n", 14) == 0);
    free(b);
}
END_TEST

/* ------------------------------------------------------------------ groups */

START_TEST(durable_callbacks_in_append_order)
{
    iotgw_store *st = open_default();
    const char *devs[3] = {"d1", "d2", "d3"};
    /* more than a group, appended without the loop running: one group at the helper, one filling */
    for (unsigned i = 0; i < 2500; i++)
        append_ok(st, devs[i % 3], i, 20 + i % 50, 1000 + i);
    ck_assert_uint_eq(ncb, 0); /* never inside append */
    iotgw_store_msg m[4];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 4), 0); /* not durable yet */
    wait_cbs(2500);
    for (unsigned i = 0; i < 2500; i++) {
        ck_assert_uint_eq(cbs[i].token, 1000 + i);
        ck_assert_int_eq(cbs[i].rc, 0);
    }
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.appended, 2500);
    ck_assert_uint_eq(s.durable, 2500);
    ck_assert_uint_eq(s.messages, 2500);
    ck_assert_uint_eq(s.devices, 3);
    ck_assert_uint_gt(s.disk_bytes, 2500 * 30);
    ck_assert_int_gt(s.oldest_ms, 0);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d1"), 834);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d2"), 833);
    /* a group that comes later with only a few: commit_ms after its first append */
    append_ok(st, "d1", 9999, 10, 77);
    wait_cbs(2501);
    ck_assert_uint_eq(cbs[2500].token, 77);
    close_store(st);
}
END_TEST

START_TEST(close_commits_what_is_pending)
{
    iotgw_store *st = open_default();
    for (unsigned i = 0; i < 10; i++)
        append_ok(st, "d1", i, 50, i);
    close_store(st); /* on_durable for all of them before it returns */
    ck_assert_uint_eq(ncb, 10);
    for (unsigned i = 0; i < 10; i++)
        ck_assert_int_eq(cbs[i].rc, 0);

    st = open_default();
    ck_assert_uint_eq(stats(st).recovered, 10);
    iotgw_store_msg m[10];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 10), 10);
    for (unsigned i = 0; i < 10; i++)
        iotgw_store_done(st, m[i].id);
    close_store(st); /* the acknowledgements go with it */
    st = open_default();
    ck_assert_uint_eq(stats(st).recovered, 0);
    ck_assert_ptr_null(iotgw_store_device_at(st, 0));
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ take, give_back, done */

START_TEST(take_give_back_done)
{
    iotgw_store *st = open_default();
    for (unsigned i = 0; i < 5; i++)
        append_ok(st, "d1", i, 40 + i, i);
    for (unsigned i = 0; i < 3; i++)
        append_ok(st, "d2", 100 + i, 60, 100 + i);
    wait_cbs(8);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d1"), 5);
    ck_assert_uint_eq(iotgw_store_backlog(st, "nobody"), 0);
    const char *a = iotgw_store_device_at(st, 0), *b = iotgw_store_device_at(st, 1);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_null(iotgw_store_device_at(st, 2));
    ck_assert((!strcmp(a, "d1") && !strcmp(b, "d2")) || (!strcmp(a, "d2") && !strcmp(b, "d1")));

    iotgw_store_msg m[8];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 2), 2);
    check_payload(&m[0], "d1", 0, 40);
    check_payload(&m[1], "d1", 1, 41);
    ck_assert_uint_lt(m[0].id, m[1].id);
    uint64_t id0 = m[0].id, id1 = m[1].id;
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 8), 3); /* not the two out */
    check_payload(&m[0], "d1", 2, 42);
    check_payload(&m[2], "d1", 4, 44);
    uint64_t id2 = m[0].id, id3 = m[1].id, id4 = m[2].id;
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 8), 0);

    iotgw_store_give_back(st, id1);
    iotgw_store_give_back(st, id3);
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 8), 2); /* the given back, oldest first */
    ck_assert_uint_eq(m[0].id, id1);
    ck_assert_uint_eq(m[1].id, id3);
    check_payload(&m[0], "d1", 1, 41);
    check_payload(&m[1], "d1", 3, 43);

    iotgw_store_done(st, id0);
    iotgw_store_done(st, id2);
    iotgw_store_done(st, id2); /* twice: the second is not a message out, ignored */
    ck_assert_uint_eq(iotgw_store_backlog(st, "d1"), 3);
    iotgw_store_done(st, id1);
    iotgw_store_done(st, id3);
    iotgw_store_done(st, id4);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d1"), 0);
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 8), 0);
    ck_assert_str_eq(iotgw_store_device_at(st, 0), "d2");
    ck_assert_ptr_null(iotgw_store_device_at(st, 1));

    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.done, 5);
    ck_assert_uint_eq(s.messages, 3);
    ck_assert_uint_eq(s.bytes, 180);
    ck_assert_uint_eq(s.devices, 1);

    ck_assert_uint_eq(iotgw_store_take(st, "d2", m, 8), 3);
    for (unsigned i = 0; i < 3; i++)
        check_payload(&m[i], "d2", 100 + i, 60);
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ recovery */

#define RDEVS 7
#define RMSGS 300

START_TEST(reopen_recovers_exactly_the_not_done)
{
    static const char *devs[RDEVS] = {"alpha", "b", "gamma-device-with-a-longer-id", "d", "e", "f", "g"};
    iotgw_store *st = open_default();
    for (unsigned i = 0; i < RMSGS; i++)
        append_ok(st, devs[i % RDEVS], i, 1 + (i * 37) % 700, i);
    wait_cbs(RMSGS);
    /* take everything; done every third; give the rest back or leave it out */
    uint64_t ids[RMSGS];
    int kept[RMSGS];
    uint64_t maxid = 0;
    size_t nkept = 0;
    for (unsigned k = 0; k < RDEVS; k++) {
        iotgw_store_msg m[RMSGS];
        size_t n = iotgw_store_take(st, devs[k], m, RMSGS);
        ck_assert_uint_eq(n, (RMSGS - k + RDEVS - 1) / RDEVS);
        for (size_t j = 0; j < n; j++) {
            unsigned i = k + (unsigned)j * RDEVS;
            check_payload(&m[j], devs[k], i, 1 + (i * 37) % 700);
            ids[i] = m[j].id;
            if (m[j].id > maxid)
                maxid = m[j].id;
            kept[i] = i % 3 != 0;
            if (!kept[i])
                iotgw_store_done(st, m[j].id);
            else if (i % 2)
                iotgw_store_give_back(st, m[j].id);
            nkept += kept[i];
        }
    }
    close_store(st);

    st = open_default();
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.recovered, nkept);
    ck_assert_uint_eq(s.messages, nkept);
    ck_assert_uint_eq(s.corrupt_records, 0);
    ck_assert_uint_eq(s.torn_bytes, 0);
    ck_assert_uint_eq(s.devices, RDEVS);
    for (unsigned k = 0; k < RDEVS; k++) {
        iotgw_store_msg m[RMSGS];
        size_t n = iotgw_store_take(st, devs[k], m, RMSGS), j = 0;
        for (unsigned i = k; i < RMSGS; i += RDEVS) {
            if (!kept[i])
                continue;
            ck_assert_uint_lt(j, n);
            ck_assert_uint_eq(m[j].id, ids[i]); /* same ids, same order */
            check_payload(&m[j], devs[k], i, 1 + (i * 37) % 700);
            j++;
        }
        ck_assert_uint_eq(j, n);
    }
    /* new ids continue after the old */
    append_ok(st, "alpha", 5000, 10, 1);
    wait_cbs(RMSGS + 1);
    iotgw_store_msg m[RMSGS];
    size_t n = iotgw_store_take(st, "alpha", m, RMSGS);
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_gt(m[n - 1].id, maxid);
    close_store(st);
}
END_TEST

/* A child appends, sees them durable, takes and acknowledges them, and is killed (SIGKILL)
 * before the acknowledgements' group is written: they all come back. */
START_TEST(acks_lost_in_a_crash_bring_messages_back)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        char c = 'n';
        iotgw_diag d = {0};
        iotgw_loop *l = iotgw_loop_new(NULL, &d);
        iotgw_store_options o = opts();
        o.commit_ms = 5000; /* the acknowledgements' group would go after 5 s */
        iotgw_store *st = NULL;
        iotgw_store_msg m[10];
        uint8_t b[64];
        if (!l || iotgw_store_open(l, &o, &st, &d) != 0)
            goto report;
        for (unsigned i = 0; i < 10; i++)
            if (iotgw_store_append(st, "d1", b, payload(b, "d1", i, 64), i) != 0)
                goto report;
        iotgw_store_close(st); /* durable now; and opened again, with its index */
        st = NULL;
        if (ncb != 10 || iotgw_store_open(l, &o, &st, &d) != 0 || iotgw_store_take(st, "d1", m, 10) != 10)
            goto report;
        for (unsigned i = 0; i < 10; i++)
            iotgw_store_done(st, m[i].id);
        if (iotgw_store_backlog(st, "d1") == 0)
            c = 'y';
    report:
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;) /* the parent kills it: no close, no acknowledgements written */
            pause();
    }
    close(p[1]);
    char c = 0;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    close(p[0]);
    kill(pid, SIGKILL);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(c, 'y');

    iotgw_store *st = open_default();
    ck_assert_uint_eq(stats(st).recovered, 10);
    iotgw_store_msg m[10];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 10), 10);
    for (unsigned i = 0; i < 10; i++)
        check_payload(&m[i], "d1", i, 64);
    close_store(st);
}
END_TEST

START_TEST(torn_tail_is_cut_off)
{
    iotgw_store *st = open_default();
    for (unsigned i = 0; i < 5; i++)
        append_ok(st, "d1", i, 100, i);
    close_store(st);
    char path[128];
    newest_segment(path, sizeof path);
    off_t size = file_size(path);
    ck_assert_int_eq(truncate(path, size - 3), 0);

    st = open_default();
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.recovered, 4);
    ck_assert_uint_eq(s.torn_bytes, 12 + 18 + 2 + 100 - 3);
    ck_assert_uint_eq(s.corrupt_records, 0);
    ck_assert_int_eq(file_size(path), size - (12 + 18 + 2 + 100));
    append_ok(st, "d1", 5, 100, 5); /* writes after the cut */
    close_store(st);

    st = open_default();
    s = stats(st);
    ck_assert_uint_eq(s.recovered, 5);
    ck_assert_uint_eq(s.torn_bytes, 0);
    iotgw_store_msg m[8];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 8), 5);
    for (unsigned i = 0; i < 4; i++)
        check_payload(&m[i], "d1", i, 100);
    check_payload(&m[4], "d1", 5, 100);
    close_store(st);
}
END_TEST

/* The middle record of three gets one byte flipped at offset `at` within the record. */
static void corrupt_middle(size_t at, const char *words)
{
    iotgw_store *st = open_default();
    for (unsigned i = 0; i < 3; i++)
        append_ok(st, "d1", i, 100, i);
    close_store(st);
    char path[128];
    newest_segment(path, sizeof path);
    size_t n;
    uint8_t *b = read_file(path, &n);
    size_t rec = 12 + 18 + 2 + 100;
    ck_assert_uint_eq(n, 3 * rec);
    b[rec + at] ^= 0x20;
    write_file(path, b, n);
    free(b);

    char *logbuf = NULL;
    size_t loglen = 0;
    FILE *logf = open_memstream(&logbuf, &loglen);
    iotgw_log_set_stream(logf);
    iotgw_log_set_level(IOTGW_LOG_WARN);
    st = open_default();
    iotgw_log_set_stream(NULL);
    fclose(logf);
    ck_assert_msg(strstr(logbuf, words) != NULL, "log: %s", logbuf);
    free(logbuf);
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.corrupt_records, 1);
    ck_assert_uint_eq(s.torn_bytes, 0);
    ck_assert_uint_eq(s.recovered, 2);
    iotgw_store_msg m[4];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 4), 2);
    check_payload(&m[0], "d1", 0, 100);
    check_payload(&m[1], "d1", 2, 100);
    close_store(st);
}

START_TEST(corrupt_record_payload_is_skipped)
{
    corrupt_middle(60, "skipped (bad CRC)");
}
END_TEST

START_TEST(corrupt_record_magic_is_skipped)
{
    corrupt_middle(1, "skipped (bad magic)");
}
END_TEST

/* ------------------------------------------------------------------ refusals */

START_TEST(format_mismatch_is_refused)
{
    char path[128];
    snprintf(path, sizeof path, "%s/FORMAT", dir);
    write_file(path, "iotgw-store 2\n", 14);
    iotgw_store_options o = opts();
    iotgw_store *st = NULL;
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_store_open(loop, &o, &st, &d), IOTGW_ERR_IO);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(d.text,
                         "written by an incompatible version (FORMAT says \"iotgw-store 2\"; this iotgw "
                         "reads iotgw-store 1)"),
                  "%s", d.text);
    ck_assert_msg(strstr(d.text, dir), "%s", d.text);
}
END_TEST

START_TEST(lock_held_by_another_process_is_refused)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        iotgw_diag d = {0};
        iotgw_loop *l = iotgw_loop_new(NULL, &d);
        iotgw_store_options o = opts();
        iotgw_store *st = NULL;
        char c = l && iotgw_store_open(l, &o, &st, &d) == 0 ? 'y' : 'n';
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    char c = 0;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    close(p[0]);
    ck_assert_int_eq(c, 'y');

    iotgw_store_options o = opts();
    iotgw_store *st = NULL;
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_store_open(loop, &o, &st, &d), IOTGW_ERR_IO);
    char want[64];
    snprintf(want, sizeof want, "held by another process (pid %ld)", (long)pid);
    ck_assert_msg(strstr(d.text, want), "%s", d.text);

    kill(pid, SIGKILL);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    st = open_default(); /* the holder is gone: its lock with it */
    /* and this process holds it now: a second open is refused with our pid */
    iotgw_store *st2 = NULL;
    ck_assert_int_eq(iotgw_store_open(loop, &o, &st2, &d), IOTGW_ERR_IO);
    snprintf(want, sizeof want, "held by another process (pid %ld)", (long)getpid());
    ck_assert_msg(strstr(d.text, want), "%s", d.text);
    close_store(st);
}
END_TEST

START_TEST(message_size_and_device_id_limits)
{
    iotgw_store *st = open_default();
    uint8_t *big = calloc(1, IOTGW_STORE_MAX_MESSAGE + 1);
    ck_assert_int_eq(iotgw_store_append(st, "d1", big, IOTGW_STORE_MAX_MESSAGE + 1, 1),
                     IOTGW_ERR_INVALID_ARG);
    ck_assert_int_eq(iotgw_store_append(st, "", big, 10, 2), IOTGW_ERR_INVALID_ARG);
    char longid[257];
    memset(longid, 'x', 256);
    longid[256] = '\0';
    ck_assert_int_eq(iotgw_store_append(st, longid, big, 10, 3), IOTGW_ERR_INVALID_ARG);
    longid[255] = '\0';
    big[IOTGW_STORE_MAX_MESSAGE - 1] = 0x5a;
    ck_assert_int_eq(iotgw_store_append(st, longid, big, IOTGW_STORE_MAX_MESSAGE, 4), 0);
    ck_assert_int_eq(iotgw_store_append(st, "d1", big, 0, 5), 0); /* empty messages are fine */
    wait_cbs(2);
    ck_assert_uint_eq(cbs[0].token, 4);
    ck_assert_uint_eq(cbs[1].token, 5);
    ck_assert_uint_eq(stats(st).appended, 2);
    close_store(st);
    st = open_default();
    iotgw_store_msg m;
    ck_assert_uint_eq(iotgw_store_take(st, longid, &m, 1), 1);
    ck_assert_uint_eq(m.len, IOTGW_STORE_MAX_MESSAGE);
    ck_assert(memcmp(m.data, big, IOTGW_STORE_MAX_MESSAGE) == 0);
    ck_assert_uint_eq(iotgw_store_take(st, "d1", &m, 1), 1);
    ck_assert_uint_eq(m.len, 0);
    close_store(st);
    free(big);
}
END_TEST

/* ------------------------------------------------------------------ ttl */

START_TEST(ttl_drops_old_messages)
{
    iotgw_store_options o = opts();
    o.ttl_s = 1;
    iotgw_store *st = open_with(&o);
    for (unsigned i = 0; i < 3; i++)
        append_ok(st, "d1", i, 30, i);
    for (unsigned i = 0; i < 2; i++)
        append_ok(st, "d2", i, 30, 10 + i);
    wait_cbs(5);
    iotgw_store_msg m[4];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 1), 1);
    uint64_t out = m[0].id;
    usleep(1200 * 1000);
    append_ok(st, "d1", 3, 30, 3); /* young */
    wait_cbs(6);
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 4), 1); /* the two old ones dropped on the way */
    check_payload(&m[0], "d1", 3, 30);
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.expired, 2);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d1"), 2); /* the out one is not dropped */
    ck_assert_uint_eq(iotgw_store_backlog(st, "d2"), 2);
    iotgw_store_expire(st);
    s = stats(st);
    ck_assert_uint_eq(s.expired, 4);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d2"), 0);
    ck_assert_uint_eq(s.devices, 1);
    iotgw_store_done(st, out);
    iotgw_store_done(st, m[0].id);
    close_store(st);
    st = open_with(&o);
    ck_assert_uint_eq(stats(st).recovered, 0);
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ maxBytes */

/* Appends n messages of len bytes to dev, one group each `per` messages; the result of the
 * first append that is refused, or 0. */
static int fill_up(iotgw_store *st, const char *dev, unsigned from, unsigned n, unsigned per, size_t len)
{
    uint8_t b[4096];
    for (unsigned i = from; i < from + n; i++) {
        int rc = iotgw_store_append(st, dev, b, payload(b, dev, i, len), i);
        if (rc)
            return rc;
        if ((i + 1 - from) % per == 0)
            wait_cbs(ncb + per);
    }
    return 0;
}

START_TEST(reject_new_when_full)
{
    iotgw_store_options o = opts();
    o.max_bytes = 8192; /* segments of 2 KiB */
    o.on_full = IOTGW_STORE_REJECT_NEW;
    iotgw_store *st = open_with(&o);
    append_ok(st, "bystander", 0, 100, 0);
    append_ok(st, "bystander", 1, 100, 1);
    wait_cbs(2);
    size_t before = ncb;
    int rc = fill_up(st, "d1", 0, 1000, 5, 100);
    ck_assert_int_eq(rc, IOTGW_ERR_STORE_FULL);
    WAIT_UNTIL(ncb - before == iotgw_store_backlog(st, "d1")); /* those before the refused */
    size_t stored = iotgw_store_backlog(st, "d1");
    ck_assert_uint_gt(stored, 30);
    ck_assert_uint_eq(ncb - before, stored); /* no callback for the refused */
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.refused_full, 1);
    ck_assert_uint_le(s.disk_bytes, 8192);
    ck_assert_uint_eq(s.dropped_full, 0);
    uint8_t b[100];
    ck_assert_int_eq(iotgw_store_append(st, "bystander", b, sizeof b, 99), IOTGW_ERR_STORE_FULL);
    ck_assert_uint_eq(stats(st).refused_full, 2);
    /* the bystander's messages are there, whole */
    iotgw_store_msg m[4];
    ck_assert_uint_eq(iotgw_store_take(st, "bystander", m, 4), 2);
    check_payload(&m[0], "bystander", 0, 100);
    check_payload(&m[1], "bystander", 1, 100);
    iotgw_store_give_back(st, m[0].id);
    iotgw_store_give_back(st, m[1].id);
    /* d1 drained: its segments go (the bystander's first one stays), and there is room again */
    iotgw_store_msg dm[64];
    size_t n;
    while ((n = iotgw_store_take(st, "d1", dm, 64)) > 0)
        for (size_t i = 0; i < n; i++)
            iotgw_store_done(st, dm[i].id);
    WAIT_UNTIL(stats(st).disk_bytes <= 3 * 2048);
    ck_assert_int_eq(iotgw_store_append(st, "d1", b, payload(b, "d1", 7, 100), 7), 0);
    wait_cbs(ncb + 1);
    ck_assert_uint_eq(iotgw_store_backlog(st, "bystander"), 2);
    close_store(st);
}
END_TEST

START_TEST(drop_oldest_when_full)
{
    iotgw_store_options o = opts();
    o.max_bytes = 16384; /* segments of 4 KiB */
    o.on_full = IOTGW_STORE_DROP_OLDEST;
    iotgw_store *st = open_with(&o);
    uint8_t b[100];
    for (unsigned i = 0; i < 400; i++) {
        const char *dev = i % 2 ? "d2" : "d1";
        ck_assert_int_eq(iotgw_store_append(st, dev, b, payload(b, dev, i, 100), i), 0);
        if (i % 5 == 4)
            wait_cbs(i + 1);
        iotgw_store_stats s = stats(st);
        ck_assert_uint_le(s.disk_bytes, 16384 + 1024); /* about maxBytes: acknowledgements of the dropped */
    }
    run_ms(50);
    iotgw_store_stats s = stats(st);
    ck_assert_uint_gt(s.dropped_full, 200);
    ck_assert_uint_eq(s.refused_full, 0);
    ck_assert_uint_eq(s.messages + s.dropped_full, 400);
    /* what is left is the newest, contiguous, in order */
    iotgw_store_msg m[400];
    size_t n1 = iotgw_store_take(st, "d1", m, 400);
    ck_assert_uint_gt(n1, 10);
    unsigned first1 = 400 - 2 * (unsigned)n1;
    for (size_t j = 0; j < n1; j++)
        check_payload(&m[j], "d1", first1 + 2 * (unsigned)j, 100);
    iotgw_store_msg m2[400];
    size_t n2 = iotgw_store_take(st, "d2", m2, 400);
    ck_assert_uint_eq(n1 + n2, s.messages);
    check_payload(&m2[n2 - 1], "d2", 399, 100);

    /* every message out: dropping cannot make room, the append is refused */
    int rc = 0;
    for (unsigned i = 400; i < 800 && !rc; i++) {
        rc = iotgw_store_append(st, "d3", b, payload(b, "d3", i, 100), i);
        if (!rc && i % 5 == 4)
            wait_cbs(ncb + 5);
    }
    ck_assert_int_eq(rc, IOTGW_ERR_STORE_FULL);
    ck_assert_uint_eq(stats(st).refused_full, 1);
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ segments */

START_TEST(segments_roll_and_done_ones_go)
{
    iotgw_store_options o = opts();
    o.segment_bytes = 4096;
    iotgw_store *st = open_with(&o);
    ck_assert_int_eq(fill_up(st, "d1", 0, 200, 10, 100), 0);
    int nseg = count_segments();
    ck_assert_int_ge(nseg, 6); /* 200 x 132 B in 4 KiB segments */
    iotgw_store_msg m[50];
    size_t n, total = 0;
    while ((n = iotgw_store_take(st, "d1", m, 50)) > 0) {
        for (size_t i = 0; i < n; i++)
            check_payload(&m[i], "d1", (unsigned)(total + i), 100);
        for (size_t i = 0; i < n; i++)
            iotgw_store_done(st, m[i].id);
        total += n;
    }
    ck_assert_uint_eq(total, 200);
    WAIT_UNTIL(count_segments() == 1); /* only the newest is kept */
    char path[128];
    newest_segment(path, sizeof path);
    WAIT_UNTIL(stats(st).disk_bytes == (uint64_t)file_size(path)); /* once the acknowledgements are in */
    close_store(st);
    st = open_with(&o);
    ck_assert_uint_eq(stats(st).recovered, 0);
    close_store(st);
}
END_TEST

/* A device never drained keeps its old segment; the segments after it go when done, and
 * the acknowledgements they held for the old segment's other messages are written again
 * first: after a restart, only the pinned device's messages come back. */
START_TEST(a_pinned_segment_does_not_bring_done_messages_back)
{
    iotgw_store_options o = opts();
    o.segment_bytes = 4096;
    iotgw_store *st = open_with(&o);
    append_ok(st, "stuck", 0, 100, 0);
    ck_assert_int_eq(fill_up(st, "busy", 1, 9, 9, 100), 0); /* one group with stuck's */
    wait_cbs(10);
    /* busy's first are done while later segments fill: their acknowledgements land after */
    for (unsigned round = 0; round < 8; round++) {
        ck_assert_int_eq(fill_up(st, "busy", 10 + round * 20, 20, 10, 100), 0);
        iotgw_store_msg m[64];
        size_t n = iotgw_store_take(st, "busy", m, 64);
        for (size_t i = 0; i < n; i++)
            iotgw_store_done(st, m[i].id);
        run_ms(10);
    }
    ck_assert_uint_eq(iotgw_store_backlog(st, "busy"), 0);
    WAIT_UNTIL(count_segments() <= 2); /* stuck's segment and the newest */
    close_store(st);

    st = open_with(&o);
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.recovered, 1);
    ck_assert_uint_eq(iotgw_store_backlog(st, "busy"), 0);
    iotgw_store_msg m;
    ck_assert_uint_eq(iotgw_store_take(st, "stuck", &m, 1), 1);
    check_payload(&m, "stuck", 0, 100);
    iotgw_store_done(st, m.id);
    run_ms(20);
    close_store(st);
    st = open_with(&o);
    ck_assert_uint_eq(stats(st).recovered, 0);
    close_store(st);
}
END_TEST

START_TEST(sync_os_mode_works)
{
    iotgw_store_options o = opts();
    o.sync = IOTGW_STORE_SYNC_OS;
    iotgw_store *st = open_with(&o);
    for (unsigned i = 0; i < 100; i++)
        append_ok(st, i % 2 ? "d1" : "d2", i, 80, i);
    wait_cbs(100);
    for (unsigned i = 0; i < 100; i++)
        ck_assert_int_eq(cbs[i].rc, 0);
    close_store(st);
    st = open_with(&o);
    ck_assert_uint_eq(stats(st).recovered, 100);
    iotgw_store_msg m[60];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 60), 50);
    check_payload(&m[49], "d1", 99, 80);
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ write failure */

START_TEST(write_failure_fails_the_group_and_the_next_succeeds)
{
    iotgw_store *st = open_default();
    /* RLIMIT_FSIZE is the process's: Check's own message file must stay under it, so the
     * segment starts with a big one (Check writes about 50 bytes per assertion) */
    static uint8_t big[200000];
    memset(big, 0x42, sizeof big);
    ck_assert_int_eq(iotgw_store_append(st, "big", big, sizeof big, 1000), 0);
    for (unsigned i = 0; i < 10; i++)
        append_ok(st, "d1", i, 100, i);
    wait_cbs(11);
    cbs_clear();
    char path[128];
    newest_segment(path, sizeof path);
    off_t size = file_size(path);

    char *logbuf = NULL;
    size_t loglen = 0;
    FILE *logf = open_memstream(&logbuf, &loglen);
    iotgw_log_set_stream(logf);

    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)size + 100; /* the next group gets 100 bytes in, then EFBIG */
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    for (unsigned i = 10; i < 20; i++)
        append_ok(st, "d1", i, 100, i);
    wait_cbs(10);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    iotgw_log_set_stream(NULL);
    fclose(logf);

    for (unsigned i = 10; i < 20; i++) {
        ck_assert_uint_eq(cbs[i - 10].token, i);
        ck_assert_int_eq(cbs[i - 10].rc, IOTGW_ERR_IO);
        ck_assert_str_eq(cbs[i - 10].why, "write: File too large");
    }
    ck_assert_msg(strstr(logbuf, "File too large"), "log: %s", logbuf);
    free(logbuf);
    ck_assert_int_eq(file_size(path), size); /* cut back */
    iotgw_store_stats s = stats(st);
    ck_assert_uint_eq(s.write_failed, 10);
    ck_assert_uint_eq(s.messages, 11);
    ck_assert_uint_eq(iotgw_store_backlog(st, "d1"), 10);

    for (unsigned i = 20; i < 25; i++)
        append_ok(st, "d1", i, 100, i);
    wait_cbs(15);
    for (unsigned i = 20; i < 25; i++)
        ck_assert_int_eq(cbs[i - 10].rc, 0);
    close_store(st);

    st = open_default();
    s = stats(st);
    ck_assert_uint_eq(s.recovered, 16);
    ck_assert_uint_eq(s.corrupt_records, 0);
    ck_assert_uint_eq(s.torn_bytes, 0);
    iotgw_store_msg m[20];
    ck_assert_uint_eq(iotgw_store_take(st, "d1", m, 20), 15);
    for (unsigned j = 0; j < 10; j++)
        check_payload(&m[j], "d1", j, 100);
    for (unsigned j = 10; j < 15; j++)
        check_payload(&m[j], "d1", j + 10, 100);
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ against a model */

#define MDEVS 5
#define MMAX  4000

typedef struct mmsg {
    unsigned i; /* its payload's seed */
    size_t len;
    uint64_t id; /* 0 until taken once */
    int out;
} mmsg;

static mmsg model[MDEVS][MMAX];
static size_t mlen[MDEVS];

static uint64_t rnd_state = 88172645463325252ull;
static unsigned rnd(unsigned n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (unsigned)(rnd_state % n);
}

/* Random appends, takes, give-backs, dones and reopens, with small segments (many of them
 * rolled and deleted, acknowledgements written again for pinned ones), checked against a
 * model of what each device must hand out, in which order, with which ids and bytes. */
START_TEST(random_operations_match_a_model)
{
    static const char *devs[MDEVS] = {"m0", "m1", "m2", "m3", "m4"};
    memset(mlen, 0, sizeof mlen);
    iotgw_store_options o = opts();
    o.segment_bytes = 1024;
    iotgw_store *st = open_with(&o);
    unsigned next = 0;
    size_t appended = 0;
    for (int step = 0; step < 400; step++) {
        unsigned n = rnd(8);
        for (unsigned k = 0; k < n; k++) {
            unsigned d = rnd(MDEVS);
            if (d == 4 && mlen[d] > 3)
                continue; /* m4 keeps a few and is never drained: it pins its segments */
            if (mlen[d] == MMAX)
                continue;
            size_t len = 1 + rnd(300);
            append_ok(st, devs[d], next, len, next);
            model[d][mlen[d]++] = (mmsg){next, len, 0, 0};
            next++;
            appended++;
        }
        wait_cbs(appended);
        unsigned d = rnd(MDEVS);
        switch (rnd(5)) {
        case 0:
        case 1: { /* take */
            iotgw_store_msg m[16];
            size_t want = 1 + rnd(16);
            size_t got = iotgw_store_take(st, devs[d], m, want), j = 0;
            for (size_t x = 0; x < mlen[d] && j < want; x++) {
                mmsg *e = &model[d][x];
                if (e->out)
                    continue;
                ck_assert_uint_lt(j, got);
                check_payload(&m[j], devs[d], e->i, e->len);
                if (e->id)
                    ck_assert_uint_eq(m[j].id, e->id);
                e->id = m[j].id;
                e->out = 1;
                j++;
            }
            ck_assert_uint_eq(j, got);
            break;
        }
        case 2:
        case 3: /* done or give back one that is out */
            if (d == 4)
                break;
            for (size_t x = 0; x < mlen[d]; x++) {
                if (!model[d][x].out || rnd(4) == 0)
                    continue;
                if (rnd(4)) {
                    iotgw_store_done(st, model[d][x].id);
                    memmove(&model[d][x], &model[d][x + 1], (mlen[d] - x - 1) * sizeof model[d][0]);
                    mlen[d]--;
                    x--;
                } else {
                    iotgw_store_give_back(st, model[d][x].id);
                    model[d][x].out = 0;
                }
            }
            break;
        default:
            if (rnd(8) == 0) { /* reopen: nothing is out any more */
                close_store(st);
                st = open_with(&o);
                cbs_clear();
                appended = 0;
                size_t total = 0;
                for (unsigned k = 0; k < MDEVS; k++) {
                    for (size_t x = 0; x < mlen[k]; x++)
                        model[k][x].out = 0;
                    total += mlen[k];
                    ck_assert_uint_eq(iotgw_store_backlog(st, devs[k]), mlen[k]);
                }
                iotgw_store_stats s = stats(st);
                ck_assert_uint_eq(s.recovered, total);
                ck_assert_uint_eq(s.corrupt_records, 0);
                ck_assert_uint_eq(s.torn_bytes, 0);
            } else {
                run_ms(3);
            }
        }
        for (unsigned k = 0; k < MDEVS; k++)
            ck_assert_uint_eq(iotgw_store_backlog(st, devs[k]), mlen[k]);
    }
    ck_assert_uint_gt(next, 500);
    /* all but m4 drained: their segments go, m4's stay (and no more than those) */
    for (unsigned k = 0; k < 4; k++) {
        iotgw_store_msg m[64];
        size_t got;
        while ((got = iotgw_store_take(st, devs[k], m, 64)) > 0)
            for (size_t j = 0; j < got; j++)
                iotgw_store_done(st, m[j].id);
        for (size_t x = 0; x < mlen[k]; x++)
            if (model[k][x].out)
                iotgw_store_done(st, model[k][x].id);
        ck_assert_uint_eq(iotgw_store_backlog(st, devs[k]), 0);
    }
    WAIT_UNTIL(count_segments() <= (int)mlen[4] + 2);
    close_store(st);
    st = open_with(&o);
    ck_assert_uint_eq(stats(st).recovered, mlen[4]);
    close_store(st);
}
END_TEST

/* ------------------------------------------------------------------ figures (IOTGW_STORE_BENCH=1) */

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_one(iotgw_store_sync sync, const char *label)
{
    enum { N = 200000, DEVS = 1000, LEN = 100 };
    static char ids[DEVS][24];
    for (int k = 0; k < DEVS; k++)
        snprintf(ids[k], sizeof ids[k], "device-%04d", k);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(dir, 0700);
    cbs_clear();
    iotgw_store_options o = opts();
    o.commit_ms = 2;
    o.sync = sync;
    iotgw_store *st = open_with(&o);
    uint8_t b[LEN];
    memset(b, 'x', sizeof b);
    double t0 = now_s(), c0 = cpu_s();
    unsigned refused = 0; /* no ck_assert in the timed loops: Check writes a record per assertion */
    for (unsigned i = 0; i < N; i++) {
        refused += iotgw_store_append(st, ids[i % DEVS], b, LEN, i) != 0;
        if (i % 1000 == 999)
            iotgw_loop_run(loop, 0);
    }
    while (ncb < N - refused)
        iotgw_loop_run(loop, 10);
    double t1 = now_s(), c1 = cpu_s();
    ck_assert_uint_eq(refused, 0);
    for (unsigned i = 0; i < N; i++)
        ck_assert_int_eq(cbs[i].rc, 0);
    iotgw_store_stats s = stats(st);
    iotgw_store_msg m[100];
    size_t drained = 0;
    double t2 = now_s(), c2 = cpu_s();
    while (drained < N) {
        for (int k = 0; k < DEVS; k++) {
            size_t n = iotgw_store_take(st, ids[k], m, 100);
            for (size_t j = 0; j < n; j++)
                iotgw_store_done(st, m[j].id);
            drained += n;
        }
        iotgw_loop_run(loop, 0);
    }
    double t3 = now_s(), c3 = cpu_s();
    close_store(st);
    printf("store bench (%s): %d x %d B over %d devices, commit_ms 2: %.0f durable appends/s "
           "(%.2f s, CPU %.2f us/msg, %.1f B/msg on disk); take+done drain %.0f msgs/s (%.3f s, CPU %.2f "
           "us/msg)\n",
           label, N, LEN, DEVS, N / (t1 - t0), t1 - t0, (c1 - c0) * 1e6 / N, (double)s.disk_bytes / N,
           N / (t3 - t2), t3 - t2, (c3 - c2) * 1e6 / N);
}

START_TEST(bench_figures)
{
    if (!getenv("IOTGW_STORE_BENCH") || strcmp(getenv("IOTGW_STORE_BENCH"), "1") != 0)
        return;
    int runs = env_int("IOTGW_STORE_BENCH_RUNS", 2);
    for (int r = 0; r < runs; r++) {
        bench_one(IOTGW_STORE_SYNC_FSYNC, "fdatasync");
        bench_one(IOTGW_STORE_SYNC_OS, "SYNC_OS");
    }
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, crc32c_vector_and_record_format);
    tcase_add_test(tc, durable_callbacks_in_append_order);
    tcase_add_test(tc, close_commits_what_is_pending);
    tcase_add_test(tc, take_give_back_done);
    tcase_add_test(tc, reopen_recovers_exactly_the_not_done);
    tcase_add_test(tc, acks_lost_in_a_crash_bring_messages_back);
    tcase_add_test(tc, torn_tail_is_cut_off);
    tcase_add_test(tc, corrupt_record_payload_is_skipped);
    tcase_add_test(tc, corrupt_record_magic_is_skipped);
    tcase_add_test(tc, format_mismatch_is_refused);
    tcase_add_test(tc, lock_held_by_another_process_is_refused);
    tcase_add_test(tc, message_size_and_device_id_limits);
    tcase_add_test(tc, ttl_drops_old_messages);
    tcase_add_test(tc, reject_new_when_full);
    tcase_add_test(tc, drop_oldest_when_full);
    tcase_add_test(tc, segments_roll_and_done_ones_go);
    tcase_add_test(tc, a_pinned_segment_does_not_bring_done_messages_back);
    tcase_add_test(tc, sync_os_mode_works);
    tcase_add_test(tc, write_failure_fails_the_group_and_the_next_succeeds);
    tcase_add_test(tc, random_operations_match_a_model);
    tcase_add_test(tc, bench_figures);
    suite_add_tcase(s, tc);
    return s;
}
