/*
 * Device session fuzz target: arbitrary bytes as what a device sends to iotgw, fed to a
 * real session (gateway/session.c) of a real gateway whose hub is never reached, in
 * pieces whose size the input's first byte chooses. The fleet has device "fz" with a
 * known key, so seeds with a valid Hello reach every frame handler.
 * Property: whatever arrives, everything the gateway wrote back is a sequence of whole,
 * parseable frames, nothing follows an Error frame, and a session that sent an Error
 * has closed its connection.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codecs/frame.h"
#include "gateway/gateway_internal.h"
#include "tests/fuzz/fake_stream.h"
#include "transport/log.h"

static iotgw_loop *loop;
static iotgw_gateway *gw;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char path[] = "/tmp/fuzz-session-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    const char *config = "hub: {hostName: localhost, connectHost: 127.0.0.1, port: 1}\n"
                         "ops: {listen: off}\n"
                         "devices: {listen: 127.0.0.1:0, maxFrameSize: 4096, maxInFlight: 4}\n"
                         "methods: {ProcessMessage: {request: iotgw.Parcel, response: iotgw.Parcel}}\n"
                         "fleet:\n"
                         "  devices:\n"
                         "    - {id: fz, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n"
                         "    - {id: off, key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=, disabled: true}\n";
    if (fd < 0 || write(fd, config, strlen(config)) != (ssize_t)strlen(config))
        abort();
    close(fd);
    iotgw_config *cfg;
    iotgw_diag diag = {0};
    iotgw_log_set_level(IOTGW_LOG_ERROR);
    loop = iotgw_loop_new(&(iotgw_loop_options){0}, &diag);
    if (!loop || iotgw_config_load(path, &cfg, &diag) || iotgw_gateway_new(loop, cfg, &gw, &diag)) {
        fprintf(stderr, "fuzz_session: %s\n", diag.text);
        abort();
    }
    unlink(path);
    return 0;
}

/* Everything written back must be whole frames, and none after an Error. */
static void check_output(const struct iotgw_stream *s)
{
    iotgw_frame_decoder d;
    iotgw_frame_decoder_init(&d, UINT32_MAX);
    size_t off = 0;
    int error_seen = 0;
    while (off < s->len) {
        size_t used;
        const uint8_t *body;
        size_t blen;
        int rc = iotgw_frame_decoder_next(&d, s->out + off, s->len - off, &used, &body, &blen, NULL);
        if (rc != IOTGW_OK)
            abort(); /* a partial or malformed frame from the gateway */
        off += used;
        Iotgw__Frame *f = iotgw__frame__unpack(NULL, blen, body);
        if (!f || error_seen)
            abort();
        error_seen = f->body_case == IOTGW__FRAME__BODY_ERROR;
        iotgw__frame__free_unpacked(f, NULL);
    }
    iotgw_frame_decoder_free(&d);
    if (error_seen && !s->closed)
        abort(); /* an Error frame must end the connection */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct iotgw_stream s;
    memset(&s, 0, offsetof(struct iotgw_stream, out));
    gw_session_accept(gw, &s);
    gw_session *session = iotgw_list_entry(iotgw_list_first(&gw->sessions), gw_session, node);
    fake_stream_feed(&s, data, size);
    check_output(&s);
    gw_session_destroy(session);
    return 0;
}
