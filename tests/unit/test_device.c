/* libiotgw-device against a scripted fake gateway on loopback: the handshake and its
 * refusal, acks, batches, windows, methods, pings answered inside the library, truncated frames
 * and a gateway that disappears. */
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codecs/frame.h"
#include "devices/iotgw_device.h"
#include "tests/unit/check_main.h"

#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

typedef struct fake fake;
typedef void (*script_fn)(fake *f);

struct fake {
    int listen_fd, fd, port;
    pthread_t thread;
    script_fn script;
    iotgw_frame_decoder dec;
    uint8_t buf[65536];
    size_t have;
    Iotgw__Frame *seen[16]; /* frames the fake received, for the test to check */
    int nseen;
};

/* Read one frame from the device (blocking); NULL when it closed. */
static Iotgw__Frame *fake_read(fake *f)
{
    for (;;) {
        if (f->have) {
            size_t used;
            const uint8_t *body;
            size_t blen;
            int rc = iotgw_frame_decoder_next(&f->dec, f->buf, f->have, &used, &body, &blen, NULL);
            Iotgw__Frame *fr = rc == IOTGW_OK ? iotgw__frame__unpack(NULL, blen, body) : NULL;
            memmove(f->buf, f->buf + used, f->have - used);
            f->have -= used;
            if (rc == IOTGW_OK) {
                if (fr && f->nseen < 16)
                    f->seen[f->nseen++] = fr;
                return fr;
            }
        }
        ssize_t n = recv(f->fd, f->buf + f->have, sizeof f->buf - f->have, 0);
        if (n <= 0)
            return NULL;
        f->have += (size_t)n;
    }
}

static void fake_write(fake *f, Iotgw__Frame *fr)
{
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(iotgw_frame_pack(&fr->base, UINT32_MAX, &buf, &len), 0);
    ck_assert_int_eq(send(f->fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
    free(buf);
}

static void welcome(fake *f, uint32_t max_in_flight)
{
    Iotgw__Frame *h = fake_read(f);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(h->body_case, IOTGW__FRAME__BODY_HELLO);
    /* the token the library made from the key names the device at the hub */
    ck_assert_ptr_nonnull(strstr(h->hello->token, "sr=hub.example%2Fdevices%2Fdev1&"));
    ck_assert_str_eq(h->hello->device_id, "dev1");
    ck_assert(h->hello->capabilities && h->hello->capabilities->methods);
    Iotgw__Welcome w = IOTGW__WELCOME__INIT;
    w.protocol_version = 1;
    w.max_frame_size = 65536;
    w.max_in_flight = max_in_flight;
    Iotgw__Frame fr = IOTGW__FRAME__INIT;
    fr.body_case = IOTGW__FRAME__BODY_WELCOME;
    fr.welcome = &w;
    fake_write(f, &fr);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    f->fd = accept(f->listen_fd, NULL, NULL);
    iotgw_frame_decoder_init(&f->dec, 1 << 20);
    f->script(f);
    close(f->fd);
    return NULL;
}

static fake *fake_start(script_fn script)
{
    fake *f = calloc(1, sizeof *f);
    f->script = script;
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(f->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(f->listen_fd, 1), 0);
    socklen_t sl = sizeof a;
    getsockname(f->listen_fd, (struct sockaddr *)&a, &sl);
    f->port = ntohs(a.sin_port);
    pthread_create(&f->thread, NULL, fake_main, f);
    return f;
}

static void fake_join(fake *f)
{
    pthread_join(f->thread, NULL);
}

static void fake_free(fake *f)
{
    close(f->listen_fd);
    for (int i = 0; i < f->nseen; i++)
        iotgw__frame__free_unpacked(f->seen[i], NULL);
    iotgw_frame_decoder_free(&f->dec);
    free(f);
}

static void fake_stop(fake *f)
{
    fake_join(f);
    fake_free(f);
}

static iotgw_device_options options(fake *f)
{
    iotgw_device_options o = {.host = "127.0.0.1",
                              .port = f->port,
                              .device_id = "dev1",
                              .hub_host = "hub.example",
                              .key = KEY,
                              .methods = 1,
                              .timeout_ms = 3000};
    return o;
}

/* ------------------------------------------------------------------ scripts */

static void script_ack(fake *f)
{
    welcome(f, 2);
    Iotgw__Frame *t = fake_read(f);
    ck_assert_int_eq(t->body_case, IOTGW__FRAME__BODY_TELEMETRY);
    Iotgw__Ack a = IOTGW__ACK__INIT;
    a.seq = t->telemetry->seq;
    Iotgw__Frame fr = IOTGW__FRAME__INIT;
    fr.body_case = IOTGW__FRAME__BODY_ACK;
    fr.ack = &a;
    fake_write(f, &fr);
    fake_read(f); /* until the device closes */
}

START_TEST(hello_welcome_telemetry_ack)
{
    fake *f = fake_start(script_ack);
    iotgw_device_options o = options(f);
    iotgw_device *d;
    iotgw_device_error err;
    ck_assert_int_eq(iotgw_device_open(&o, &d, &err), IOTGW_DEVICE_OK);
    ck_assert_uint_eq(iotgw_device_max_in_flight(d), 2);
    uint64_t seq;
    ck_assert_int_eq(iotgw_device_send_raw(d, "{\"t\":21}", 8, "application/json", &seq), IOTGW_DEVICE_OK);
    ck_assert_uint_eq(iotgw_device_in_flight(d), 1);
    iotgw_device_event ev;
    ck_assert_int_eq(iotgw_device_next_event(d, &ev, 3000), IOTGW_DEVICE_OK);
    ck_assert_int_eq(ev.kind, IOTGW_DEVICE_EVENT_ACK);
    ck_assert_uint_eq(ev.id, seq);
    ck_assert_uint_eq(iotgw_device_in_flight(d), 0);
    iotgw_device_close(d);
    fake_stop(f);
}
END_TEST

/* A batch leaves in one write: the first bytes the fake receives hold all three
 * frames. Three acks in one write come back as three events, in order. */
static void script_batch(fake *f)
{
    welcome(f, 8);
    ssize_t n = recv(f->fd, f->buf, sizeof f->buf, 0);
    ck_assert_int_gt(n, 0);
    f->have = (size_t)n;
    uint8_t acks[64];
    size_t alen = 0;
    for (int i = 0; i < 3; i++) {
        size_t before = f->have;
        Iotgw__Frame *t = fake_read(f);
        ck_assert_int_eq(t->body_case, IOTGW__FRAME__BODY_TELEMETRY);
        ck_assert_uint_lt(f->have, before); /* decoded from the bytes of that first recv */
        Iotgw__Ack a = IOTGW__ACK__INIT;
        a.seq = t->telemetry->seq;
        Iotgw__Frame fr = IOTGW__FRAME__INIT;
        fr.body_case = IOTGW__FRAME__BODY_ACK;
        fr.ack = &a;
        uint8_t *buf;
        size_t len;
        ck_assert_int_eq(iotgw_frame_pack(&fr.base, UINT32_MAX, &buf, &len), 0);
        memcpy(acks + alen, buf, len);
        alen += len;
        free(buf);
    }
    ck_assert_uint_eq(f->have, 0);
    ck_assert_int_eq(send(f->fd, acks, alen, MSG_NOSIGNAL), (ssize_t)alen);
    fake_read(f); /* until the device closes */
}

START_TEST(batch_leaves_in_one_write)
{
    fake *f = fake_start(script_batch);
    iotgw_device_options o = options(f);
    iotgw_device *d;
    ck_assert_int_eq(iotgw_device_open(&o, &d, NULL), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_batch_begin(d), IOTGW_DEVICE_OK);
    uint64_t seq[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iotgw_device_send_raw(d, "x", 1, NULL, &seq[i]), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_wants_write(d), 1); /* held, not written */
    ck_assert_uint_eq(iotgw_device_in_flight(d), 3);
    ck_assert_int_eq(iotgw_device_batch_end(d), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_wants_write(d), 0);
    iotgw_device_event ev;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(iotgw_device_next_event(d, &ev, 3000), IOTGW_DEVICE_OK);
        ck_assert_int_eq(ev.kind, IOTGW_DEVICE_EVENT_ACK);
        ck_assert_uint_eq(ev.id, seq[i]);
    }
    ck_assert_uint_eq(iotgw_device_in_flight(d), 0);
    ck_assert_int_eq(iotgw_device_next_event(d, &ev, 0), IOTGW_DEVICE_ERR_TIMEOUT);
    iotgw_device_close(d);
    fake_stop(f);
}
END_TEST

static void script_refuse(fake *f)
{
    fake_read(f);
    Iotgw__Error e = IOTGW__ERROR__INIT;
    e.code = IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE;
    e.message = "device \"dev1\" is not in this gateway's fleet";
    Iotgw__Frame fr = IOTGW__FRAME__INIT;
    fr.body_case = IOTGW__FRAME__BODY_ERROR;
    fr.error = &e;
    fake_write(f, &fr);
}

START_TEST(refusal_is_reported_with_the_gateways_code)
{
    fake *f = fake_start(script_refuse);
    iotgw_device_options o = options(f);
    iotgw_device *d = NULL;
    iotgw_device_error err;
    ck_assert_int_eq(iotgw_device_open(&o, &d, &err), IOTGW_DEVICE_ERR_REFUSED);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(err.gateway_code, IOTGW__ERROR_CODE__ERROR_UNKNOWN_DEVICE);
    ck_assert_ptr_nonnull(strstr(err.message, "not in this gateway's fleet"));
    fake_stop(f);
}
END_TEST

static void script_window_method_ping(fake *f)
{
    welcome(f, 2);
    fake_read(f); /* two telemetry frames, not acknowledged */
    fake_read(f);
    Iotgw__Ping p = IOTGW__PING__INIT;
    p.nonce = 77;
    Iotgw__Frame fr = IOTGW__FRAME__INIT;
    fr.body_case = IOTGW__FRAME__BODY_PING;
    fr.ping = &p;
    fake_write(f, &fr);
    Iotgw__MethodRequest m = IOTGW__METHOD_REQUEST__INIT;
    m.request_id = 9;
    m.name = "rebootDevice";
    m.payload_case = IOTGW__METHOD_REQUEST__PAYLOAD_JSON;
    m.json = (ProtobufCBinaryData){.len = 11, .data = (uint8_t *)"{\"delay\":1}"};
    fr.body_case = IOTGW__FRAME__BODY_METHOD_REQUEST;
    fr.method_request = &m;
    fake_write(f, &fr);
    fake_read(f); /* Pong (answered by the library) */
    fake_read(f); /* MethodResponse */
}

START_TEST(window_method_and_ping)
{
    fake *f = fake_start(script_window_method_ping);
    iotgw_device_options o = options(f);
    iotgw_device *d;
    ck_assert_int_eq(iotgw_device_open(&o, &d, NULL), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_send_raw(d, "a", 1, NULL, NULL), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_send_raw(d, "b", 1, NULL, NULL), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_send_raw(d, "c", 1, NULL, NULL), IOTGW_DEVICE_ERR_WINDOW);
    iotgw_device_event ev;
    ck_assert_int_eq(iotgw_device_next_event(d, &ev, 3000), IOTGW_DEVICE_OK);
    ck_assert_int_eq(ev.kind, IOTGW_DEVICE_EVENT_METHOD);
    ck_assert_str_eq(ev.name, "rebootDevice");
    ck_assert_uint_eq(ev.id, 9);
    ck_assert_uint_eq(ev.len, 11);
    ck_assert_ptr_null(ev.type);
    ck_assert_int_eq(iotgw_device_method_respond(d, ev.id, 200, "{\"ok\":true}"), IOTGW_DEVICE_OK);
    ck_assert_int_eq(iotgw_device_next_event(d, &ev, 3000), IOTGW_DEVICE_OK);
    ck_assert_int_eq(ev.kind, IOTGW_DEVICE_EVENT_CLOSED); /* the script ended */
    ck_assert_int_eq(iotgw_device_next_event(d, &ev, 0), IOTGW_DEVICE_ERR_CLOSED);
    iotgw_device_close(d);
    fake_join(f);
    ck_assert_int_eq(f->nseen, 5);
    ck_assert_int_eq(f->seen[3]->body_case, IOTGW__FRAME__BODY_PONG);
    ck_assert_uint_eq(f->seen[3]->pong->nonce, 77);
    ck_assert_int_eq(f->seen[4]->body_case, IOTGW__FRAME__BODY_METHOD_RESPONSE);
    ck_assert_int_eq(f->seen[4]->method_response->status, 200);
    fake_free(f);
}
END_TEST

static void script_truncated(fake *f)
{
    welcome(f, 4);
    static const uint8_t partial[] = {0x20, 0x22, 0x03}; /* a 32-byte frame, 2 bytes of it */
    send(f->fd, partial, sizeof partial, MSG_NOSIGNAL);
}

START_TEST(truncated_frame_then_gone)
{
    fake *f = fake_start(script_truncated);
    iotgw_device_options o = options(f);
    iotgw_device *d;
    ck_assert_int_eq(iotgw_device_open(&o, &d, NULL), IOTGW_DEVICE_OK);
    iotgw_device_event ev;
    ck_assert_int_eq(iotgw_device_next_event(d, &ev, 3000), IOTGW_DEVICE_OK);
    ck_assert_int_eq(ev.kind, IOTGW_DEVICE_EVENT_CLOSED);
    ck_assert_ptr_nonnull(strstr(ev.text, "middle of a frame"));
    ck_assert_int_eq(iotgw_device_send_raw(d, "x", 1, NULL, NULL), IOTGW_DEVICE_ERR_CLOSED);
    iotgw_device_close(d);
    fake_stop(f);
}
END_TEST

static void script_silent(fake *f)
{
    fake_read(f); /* Hello, then nothing: no Welcome */
    usleep(600 * 1000);
}

START_TEST(no_welcome_times_out)
{
    fake *f = fake_start(script_silent);
    iotgw_device_options o = options(f);
    o.timeout_ms = 300;
    iotgw_device *d = NULL;
    iotgw_device_error err;
    ck_assert_int_eq(iotgw_device_open(&o, &d, &err), IOTGW_DEVICE_ERR_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(err.message, "no Welcome"));
    fake_stop(f);
}
END_TEST

START_TEST(nothing_listening_and_bad_key)
{
    iotgw_device_options o = {.host = "127.0.0.1", .port = 1, .device_id = "d", .hub_host = "h", .key = KEY};
    iotgw_device *d = NULL;
    iotgw_device_error err;
    ck_assert_int_eq(iotgw_device_open(&o, &d, &err), IOTGW_DEVICE_ERR_CONNECT);
    ck_assert_ptr_nonnull(strstr(err.message, "cannot connect"));
    o.key = "not*base64";
    ck_assert_int_eq(iotgw_device_open(&o, &d, &err), IOTGW_DEVICE_ERR_TOKEN);
    o.key = NULL;
    ck_assert_int_eq(iotgw_device_open(&o, &d, &err), IOTGW_DEVICE_ERR_INVALID);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("device");
    TCase *tc = tcase_create("device");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, hello_welcome_telemetry_ack);
    tcase_add_test(tc, batch_leaves_in_one_write);
    tcase_add_test(tc, refusal_is_reported_with_the_gateways_code);
    tcase_add_test(tc, window_method_and_ping);
    tcase_add_test(tc, truncated_frame_then_gone);
    tcase_add_test(tc, no_welcome_times_out);
    tcase_add_test(tc, nothing_listening_and_bad_key);
    suite_add_tcase(s, tc);
    return s;
}
