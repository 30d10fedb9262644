/* The gateway's device sessions (gateway/session.c, gateway.c) against a fake upstream
 * (tests/common/fake_upstream.c) and a fake stream (tests/fuzz/fake_stream.c): what the
 * hub's outcomes become for the device, pending method calls when the device leaves,
 * and a reload that changes a device's key. The test plays both the device (frames
 * into the session) and the hub (the upstream's callbacks). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codecs/frame.h"
#include "codecs/sas.h"
#include "gateway/gateway_internal.h"
#include "tests/common/fake_upstream.h"
#include "tests/fuzz/fake_stream.h"
#include "tests/unit/check_main.h"
#include "transport/log.h"

#define KEY1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY2 "HxwdGhsYGRYXFBUSExARDg8MDQoLCAkGBwQFAgMAAQI="

static iotgw_loop *loop;
static iotgw_gateway *gw;
static char config_path[64];
static struct iotgw_stream stream;
static size_t read_at; /* of stream.out: frames before this were checked */

static void write_config(const char *key)
{
    FILE *f = fopen(config_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "hub: {hostName: hub.example}\n"
            "ops: {listen: off}\n"
            "devices: {listen: 127.0.0.1:0, maxInFlight: 4}\n"
            "fleet:\n"
            "  devices:\n"
            "    - {id: d1, key: %s}\n",
            key);
    fclose(f);
}

static void setup(void)
{
    snprintf(config_path, sizeof config_path, "/tmp/test_session.XXXXXX");
    int fd = mkstemp(config_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    write_config(KEY1);
    iotgw_log_set_level(IOTGW_LOG_ERROR);
    iotgw_diag diag = {0};
    iotgw_config *cfg;
    loop = iotgw_loop_new(NULL, &diag);
    ck_assert_ptr_nonnull(loop);
    ck_assert_msg(iotgw_config_load(config_path, &cfg, &diag) == 0, "%s", diag.text);
    ck_assert_msg(iotgw_gateway_new(loop, cfg, &gw, &diag) == 0, "%s", diag.text);
    memset(&stream, 0, offsetof(struct iotgw_stream, out));
    read_at = 0;
}

static void teardown(void)
{
    iotgw_gateway_free(gw);
    iotgw_loop_free(loop);
    unlink(config_path);
}

static void device_sends(const Iotgw__Frame *f)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(iotgw_frame_pack(&f->base, UINT32_MAX, &buf, &len), 0);
    ck_assert_int_ge(stream.h.on_data(&stream, buf, len, stream.ctx), 0);
    free(buf);
}

/* The next frame the gateway wrote to the device, or NULL when none is left. */
static Iotgw__Frame *device_receives(void)
{
    if (read_at >= stream.len)
        return NULL;
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, UINT32_MAX);
    size_t used = 0, blen = 0;
    const uint8_t *body;
    ck_assert_int_eq(iotgw_frame_decoder_next(&d, stream.out + read_at, stream.len - read_at, &used, &body, &blen,
                                              NULL),
                     IOTGW_OK);
    Iotgw__Frame *f = iotgw__frame__unpack(NULL, blen, body);
    iotgw_frame_decoder_free(&d);
    read_at += used;
    ck_assert_ptr_nonnull(f);
    return f;
}

static int next_body(void)
{
    Iotgw__Frame *f = device_receives();
    int body = f ? (int)f->body_case : 0;
    iotgw__frame__free_unpacked(f, NULL);
    return body;
}

/* A device "d1" with methods connects and is welcomed; returns its upstream device. */
static iotgw_upstream_device *connect_device(void)
{
    gw_session_accept(gw, &stream);
    char *token = NULL;
    iotgw_diag diag = {0};
    ck_assert_int_eq(iotgw_sas_build("hub.example/devices/d1", KEY1, (uint64_t)time(NULL) + 3600, NULL, &token, &diag),
                     0);
    Iotgw__Capabilities caps = IOTGW__CAPABILITIES__INIT;
    caps.methods = 1;
    Iotgw__Hello h = IOTGW__HELLO__INIT;
    h.protocol_version = 1;
    h.device_id = "d1";
    h.token = token;
    h.capabilities = &caps;
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_HELLO;
    f.hello = &h;
    device_sends(&f);
    free(token);
    ck_assert_int_eq(next_body(), IOTGW__FRAME__BODY_WELCOME);
    iotgw_upstream_device *d = fake_upstream_find(gw->up, "d1");
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d->key, KEY1);
    return d;
}

static void send_telemetry(uint64_t seq)
{
    Iotgw__Telemetry t = IOTGW__TELEMETRY__INIT;
    t.seq = seq;
    t.payload_case = IOTGW__TELEMETRY__PAYLOAD_RAW;
    t.raw = (ProtobufCBinaryData){.len = 5, .data = (uint8_t *)"hello"};
    Iotgw__Frame f = IOTGW__FRAME__INIT;
    f.body_case = IOTGW__FRAME__BODY_TELEMETRY;
    f.telemetry = &t;
    device_sends(&f);
}

START_TEST(hub_outcomes_become_acks_and_the_right_nacks)
{
    iotgw_upstream_device *d = connect_device();
    for (uint64_t seq = 1; seq <= 4; seq++)
        send_telemetry(seq);
    ck_assert_int_eq(d->nsent, 4);
    fake_upstream_outcome(d, 0, IOTGW_OUTCOME_ACCEPTED, NULL, NULL);
    fake_upstream_outcome(d, 1, IOTGW_OUTCOME_RETRY, IOTGW_COND_DELIVERY_TIMEOUT, "no outcome");
    fake_upstream_outcome(d, 2, IOTGW_OUTCOME_RETRY, IOTGW_COND_REFUSED, "not registered");
    fake_upstream_outcome(d, 3, IOTGW_OUTCOME_REJECTED, "amqp:link:message-size-exceeded", "too big");
    static const struct {
        int body;
        uint64_t seq;
        Iotgw__NackReason reason;
    } want[] = {{IOTGW__FRAME__BODY_ACK, 1, 0},
                {IOTGW__FRAME__BODY_NACK, 2, IOTGW__NACK_REASON__NACK_TIMEOUT},
                {IOTGW__FRAME__BODY_NACK, 3, IOTGW__NACK_REASON__NACK_UNAUTHORIZED},
                {IOTGW__FRAME__BODY_NACK, 4, IOTGW__NACK_REASON__NACK_TOO_LARGE}};
    for (size_t i = 0; i < 4; i++) {
        Iotgw__Frame *f = device_receives();
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(f->body_case, want[i].body);
        if (want[i].body == IOTGW__FRAME__BODY_ACK) {
            ck_assert_uint_eq(f->ack->seq, want[i].seq);
        } else {
            ck_assert_uint_eq(f->nack->seq, want[i].seq);
            ck_assert_int_eq(f->nack->reason, want[i].reason);
        }
        iotgw__frame__free_unpacked(f, NULL);
    }
    ck_assert_int_eq(next_body(), 0);
}
END_TEST

START_TEST(a_leaving_device_answers_its_pending_methods_then_is_removed_once)
{
    iotgw_upstream_device *d = connect_device();
    fake_upstream_method(d, "reboot", "{}");
    fake_upstream_method(d, "reboot", "{\"now\":true}");
    ck_assert_int_eq(next_body(), IOTGW__FRAME__BODY_METHOD_REQUEST);
    ck_assert_int_eq(next_body(), IOTGW__FRAME__BODY_METHOD_REQUEST);
    ck_assert_int_eq(d->nmethod_answers, 0);
    stream.h.on_closed(&stream, "the test closes it", stream.ctx); /* the device goes away */
    ck_assert_int_eq(d->nmethod_answers, 2);
    ck_assert_int_eq(d->method_status[0], 503);
    ck_assert_int_eq(d->method_status[1], 503);
    ck_assert(d->removed);
    ck_assert_int_eq(gw->up->removes, 1);
    ck_assert(iotgw_list_empty(&gw->sessions));
}
END_TEST

static void reload(void)
{
    iotgw_config *cfg;
    iotgw_diag diag = {0};
    ck_assert_msg(iotgw_config_load(config_path, &cfg, &diag) == 0, "%s", diag.text);
    iotgw_gateway_reload(gw, cfg);
}

START_TEST(reload_changing_the_key_authenticates_the_device_again_and_only_then)
{
    iotgw_upstream_device *d = connect_device();
    reload(); /* the same file: nothing changes at the hub */
    ck_assert_int_eq(gw->up->adds, 1);
    ck_assert(!d->removed);
    write_config(KEY2);
    reload();
    ck_assert(d->removed);
    ck_assert_int_eq(gw->up->adds, 2);
    iotgw_upstream_device *again = fake_upstream_find(gw->up, "d1");
    ck_assert_ptr_ne(again, d);
    ck_assert_str_eq(again->key, KEY2);
    ck_assert_int_eq(next_body(), 0); /* the device itself noticed nothing */
    send_telemetry(9);                /* and its telemetry goes to the new identity */
    ck_assert_int_eq(again->nsent, 1);
    ck_assert_int_eq(d->nsent, 0);
    stream.h.on_closed(&stream, "done", stream.ctx);
    ck_assert(again->removed);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("fake upstream");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, hub_outcomes_become_acks_and_the_right_nacks);
    tcase_add_test(tc, a_leaving_device_answers_its_pending_methods_then_is_removed_once);
    tcase_add_test(tc, reload_changing_the_key_authenticates_the_device_again_and_only_then);
    suite_add_tcase(s, tc);
    return s;
}
