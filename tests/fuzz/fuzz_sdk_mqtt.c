/*
 * SDK-device fuzz target: arbitrary bytes as what an MQTT device sends to iotgw's
 * devices.mqtt listener, fed to the real front end (hubside/mqtt_device.c) and the real
 * gateway back end (gateway/sdk_mqtt.c, session.c) of a gateway whose hub is never
 * reached, in pieces whose size the input's first byte chooses; then the connection is
 * lost, as a device that goes away. The fleet has device "fz" with a known key, so seeds
 * with a valid CONNECT (its token expires in 2100) reach every topic.
 * Property: whatever arrives, everything the gateway wrote back is a sequence of whole,
 * valid MQTT packets a server may send, and nothing follows a refusing CONNACK.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codecs/mqtt.h"
#include "gateway/gateway_internal.h"
#include "tests/fuzz/fake_stream.h"
#include "transport/log.h"

static iotgw_loop *loop;
static iotgw_gateway *gw;

static void temp_file(char *path, const char *text)
{
    int fd = mkstemps(path, 4);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        abort();
    close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char cert[] = "/tmp/fuzz-sdk-mqtt-XXXXXX.pem", path[] = "/tmp/fuzz-sdk-mqtt-XXXXXX.yml";
    temp_file(cert, "not read: the fake stream listener does no TLS\n");
    char config[1024];
    snprintf(config, sizeof config,
             "hub: {hostName: localhost, connectHost: 127.0.0.1, port: 1}\n"
             "ops: {listen: off}\n"
             "devices:\n"
             "  maxInFlight: 4\n"
             "  tls: {cert: %s, key: %s}\n"
             "  mqtt: {listen: 127.0.0.1:0}\n"
             "fleet:\n"
             "  devices:\n"
             "    - {id: fz, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n"
             "    - {id: off, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=, disabled: true}\n",
             cert, cert);
    temp_file(path, config);
    iotgw_config *cfg;
    iotgw_diag diag = {0};
    iotgw_log_set_level(IOTGW_LOG_ERROR);
    loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    if (!loop || iotgw_config_load(path, &cfg, &diag) || iotgw_gateway_new(loop, cfg, &gw, &diag) ||
        !gw->mqtt) {
        fprintf(stderr, "fuzz_sdk_mqtt: %s\n", diag.text);
        abort();
    }
    unlink(path);
    unlink(cert);
    return 0;
}

/* Everything written back must be whole server packets; nothing after a refusal. */
static void check_output(const struct iotgw_stream *s)
{
    iotgw_mqtt_decoder d;
    iotgw_mqtt_decoder_init(&d, IOTGW_MQTT_CLIENT, 1 << 20);
    size_t off = 0;
    int refused = 0;
    while (off < s->len) {
        iotgw_mqtt_packet p;
        size_t used = 0;
        int rc = iotgw_mqtt_decoder_next(&d, s->out + off, s->len - off, &used, &p, NULL);
        if (rc != IOTGW_OK || refused)
            abort(); /* a partial or malformed packet from the gateway, or one after a refusal */
        off += used;
        if (p.type == IOTGW_MQTT_CONNACK && p.u.connack.return_code != IOTGW_MQTT_CONNACK_ACCEPTED)
            refused = 1;
    }
    iotgw_mqtt_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct iotgw_stream s;
    memset(&s, 0, offsetof(struct iotgw_stream, out));
    if (!iotgw_hubmqtt_accept(gw->mqtt, &s, 0))
        abort();
    fake_stream_feed(&s, data, size);
    check_output(&s);
    if (s.h.on_closed) /* the device goes: its will, its session's end, the connection freed */
        s.h.on_closed(&s, "the fuzz input ended", s.ctx);
    if (!iotgw_list_empty(&gw->sessions))
        abort(); /* a session outlived its connection */
    return 0;
}
