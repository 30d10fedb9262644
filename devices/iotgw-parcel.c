/*
 * iotgw-parcel: see parcels and frames the way the gateway does.
 *
 *   demo     build an alarm-status parcel, frame it, decode it, print its JSON and
 *            hub-message forms
 *   encode   JSON lines on stdin -> varint-delimited protobuf frames on stdout
 *   decode   varint-delimited protobuf frames on stdin -> JSON lines on stdout
 *   types    list the compiled-in message types
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <proton/codec.h>
#include <proton/message.h>

#include "codecs/frame.h"
#include "codecs/hubmsg.h"
#include "codecs/json_pb.h"
#include "codecs/json_text.h"
#include "codecs/parcel_json.h"
#include "codecs/types.h"
#include "schemas/alarm_status.pb-c.h"
#include "schemas/gateway.pb-c.h"

#ifndef PACKAGE_VERSION /* the build gives it (configure, with git describe) */
#define PACKAGE_VERSION "dev"
#endif

#define DEFAULT_MAX_FRAME (1024 * 1024)
#define MAX_JSON_LINE     (4 * 1024 * 1024)

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: iotgw-parcel COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n"
            "  demo            build an alarm-status parcel, frame it as device telemetry, decode\n"
            "                  it, and print its JSON form and its IoT Hub message forms\n"
            "  encode          read one JSON message per line on stdin, write each as a\n"
            "                  varint-delimited protobuf frame on stdout\n"
            "  decode          read varint-delimited protobuf frames on stdin, write each as\n"
            "                  one line of JSON on stdout\n"
            "  types           list the message types this build knows\n"
            "\n"
            "Options:\n"
            "  -t, --type NAME      message type for encode/decode (default iotgw.Frame);\n"
            "                       for iotgw.Parcel, content of a known type is JSON, not base64\n"
            "  -m, --max-frame N    largest frame decode accepts, in bytes (default %d)\n"
            "  -h, --help           show this help\n"
            "  -V, --version        show the version\n"
            "\n"
            "Exit status: 0 on success, 1 on bad input (the message names the line or frame),\n"
            "2 on bad usage.\n",
            DEFAULT_MAX_FRAME);
}

static void hex_dump(const uint8_t *p, size_t n, size_t limit)
{
    for (size_t i = 0; i < n && i < limit; i++)
        printf("%s%02x", i % 16 == 0 ? (i ? "\n     " : "     ") : " ", p[i]);
    if (n > limit)
        printf(" ... (%zu more)", n - limit);
    printf("\n");
}

static char *message_to_json(const ProtobufCMessage *m, iotgw_diag *d)
{
    json_t *j = NULL;
    int rc = m->descriptor == &iotgw__parcel__descriptor
                 ? iotgw_parcel_to_json((const Iotgw__Parcel *)m, iotgw_types_builtin(), 0, &j, d)
                 : iotgw_json_from_pb(m, 0, &j, d);
    if (rc)
        return NULL;
    char *text = iotgw_json_text(j);
    json_decref(j);
    return text;
}

static void print_hub_message(pn_message_t *m)
{
    pn_atom_t id = pn_message_get_id(m);
    printf("     properties:   message-id \"%.*s\", content-type \"%s\"", (int)id.u.as_bytes.size,
           id.u.as_bytes.start, pn_message_get_content_type(m));
    if (pn_message_get_content_encoding(m))
        printf(", content-encoding \"%s\"", pn_message_get_content_encoding(m));
    printf(", creation-time %" PRId64 "\n", (int64_t)pn_message_get_creation_time(m));

    printf("     application-properties:");
    pn_data_t *p = pn_message_properties(m);
    pn_data_rewind(p);
    pn_data_next(p);
    pn_data_enter(p);
    while (pn_data_next(p)) {
        pn_bytes_t k = pn_data_get_string(p);
        pn_data_next(p);
        pn_bytes_t v = pn_data_get_string(p);
        printf(" %.*s=\"%.*s\"", (int)k.size, k.start, (int)v.size, v.start);
    }
    pn_data_exit(p);
    printf("\n");

    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    pn_data_next(b);
    pn_bytes_t body = pn_data_get_binary(b);
    char encoded[8192];
    size_t enc_len = sizeof encoded;
    pn_message_encode(m, encoded, &enc_len);
    printf("     body:         one AMQP data section, %zu bytes; whole message %zu bytes encoded\n",
           body.size, enc_len);
    if (pn_message_get_content_encoding(m))
        printf("     %.*s\n", (int)body.size, body.start);
    else
        hex_dump((const uint8_t *)body.start, body.size, 48);
}

static int cmd_demo(void)
{
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    char time_utc[16], date_utc[16];
    strftime(time_utc, sizeof time_utc, "%H:%M:%S", &utc);
    strftime(date_utc, sizeof date_utc, "%Y-%m-%d", &utc);

    /* 1. the payload */
    Iotgw__AlarmStatus status = IOTGW__ALARM_STATUS__INIT;
    status.alarm_active = 1;
    status.time_utc = time_utc;
    status.date_utc = date_utc;
    uint8_t content[64];
    size_t content_len = iotgw__alarm_status__pack(&status, content);
    iotgw_diag d;
    char *status_json = message_to_json(&status.base, &d);
    printf("1. AlarmStatus payload: %zu bytes of protobuf\n     %s\n\n", content_len, status_json);
    free(status_json);

    /* 2. wrapped in a parcel */
    Iotgw__Address src = IOTGW__ADDRESS__INIT, dst = IOTGW__ADDRESS__INIT;
    src.name = "alarm-agent-1", src.local_id = "zone-3", src.domain_agent = "site-agent",
    src.domain = "plant-north";
    dst.name = "alarm-monitor-1", dst.local_id = "panel-1", dst.domain_agent = "site-agent",
    dst.domain = "plant-north";
    Iotgw__Parcel parcel = IOTGW__PARCEL__INIT;
    parcel.source = &src;
    parcel.destination = &dst;
    parcel.type = (char *)iotgw__alarm_status__descriptor.name;
    parcel.content.data = content;
    parcel.content.len = content_len;
    printf("2. Parcel from %s to %s, type %s: %zu bytes of protobuf\n\n", src.name, dst.name, parcel.type,
           iotgw__parcel__get_packed_size(&parcel));

    /* 3. framed as device telemetry, the way a device sends it to the gateway */
    Iotgw__Telemetry tel = IOTGW__TELEMETRY__INIT;
    tel.seq = 1;
    tel.payload_case = IOTGW__TELEMETRY__PAYLOAD_PARCEL;
    tel.parcel = &parcel;
    Iotgw__Frame frame = IOTGW__FRAME__INIT;
    frame.body_case = IOTGW__FRAME__BODY_TELEMETRY;
    frame.telemetry = &tel;
    uint8_t *wire = NULL;
    size_t wire_len = 0;
    if (iotgw_frame_pack(&frame.base, DEFAULT_MAX_FRAME, &wire, &wire_len)) {
        fprintf(stderr, "iotgw-parcel: could not frame the parcel\n");
        return 1;
    }
    printf("3. Framed as downstream Telemetry (seq 1): %zu bytes on the wire (length prefix + Frame)\n",
           wire_len);
    hex_dump(wire, wire_len, 48);
    printf("\n");

    /* 4. decoded the way the gateway reads its socket: in pieces */
    iotgw_frame_decoder dec;
    iotgw_frame_decoder_init(&dec, DEFAULT_MAX_FRAME);
    const uint8_t *body = NULL;
    size_t body_len = 0, used = 0, off = 0;
    int rc = IOTGW_ERR_AGAIN;
    while (rc == IOTGW_ERR_AGAIN && off < wire_len) {
        size_t piece = wire_len - off < 7 ? wire_len - off : 7;
        rc = iotgw_frame_decoder_next(&dec, wire + off, piece, &used, &body, &body_len, &d);
        off += used;
    }
    ProtobufCMessage *decoded = NULL;
    if (rc || iotgw_frame_unpack(&iotgw__frame__descriptor, body, body_len, &decoded, &d)) {
        fprintf(stderr, "iotgw-parcel: decoding failed: %s\n", d.text);
        return 1;
    }
    Iotgw__Frame *got = (Iotgw__Frame *)decoded;
    char *parcel_json = message_to_json(&got->telemetry->parcel->base, &d);
    printf("4. Decoded from the wire (fed 7 bytes at a time): telemetry seq %" PRIu64
           ", parcel as JSON:\n     %s\n\n",
           got->telemetry->seq, parcel_json);
    free(parcel_json);

    /* 5 and 6. as the hub message the gateway sends */
    char message_id[64];
    snprintf(message_id, sizeof message_id, "alarm-agent-1:%lld:1", (long long)now);
    pn_message_t *m = pn_message();
    iotgw_hubmsg_options opt = {.encoding = IOTGW_HUBMSG_PROTOBUF,
                                .message_id = message_id,
                                .creation_time_ms = (int64_t)now * 1000,
                                .types = iotgw_types_builtin()};
    rc = iotgw_hubmsg_from_parcel(got->telemetry->parcel, &opt, m, &d);
    if (rc == IOTGW_OK) {
        printf("5. As an IoT Hub telemetry message, protobuf encoding (the default):\n");
        print_hub_message(m);
        opt.encoding = IOTGW_HUBMSG_JSON;
        rc = iotgw_hubmsg_from_parcel(got->telemetry->parcel, &opt, m, &d);
    }
    if (rc == IOTGW_OK) {
        printf("\n6. As an IoT Hub telemetry message, JSON encoding (hub routing can query the body):\n");
        print_hub_message(m);
    } else {
        fprintf(stderr, "iotgw-parcel: %s\n", d.text);
    }
    pn_message_free(m);
    protobuf_c_message_free_unpacked(decoded, NULL);
    iotgw_frame_decoder_free(&dec);
    free(wire);
    return rc ? 1 : 0;
}

static ProtobufCMessage *message_from_json(const ProtobufCMessageDescriptor *type, const char *line,
                                           size_t len, iotgw_diag *d)
{
    ProtobufCMessage *m = NULL;
    if (type != &iotgw__parcel__descriptor) {
        if (iotgw_pb_from_json_text(type, line, len, &m, d))
            return NULL;
        return m;
    }
    json_error_t err;
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        iotgw_diag_fail(d, IOTGW_ERR_JSON_SYNTAX, "JSON syntax error at column %d: %s", err.column, err.text);
        return NULL;
    }
    int rc = iotgw_parcel_from_json(j, iotgw_types_builtin(), (Iotgw__Parcel **)&m, d);
    json_decref(j);
    return rc ? NULL : m;
}

/* One line of stdin into *buf, which grows to at most MAX_JSON_LINE + 1 bytes; a longer
 * line is read to its end, not kept, and flagged. Returns its length, or -1 at the end. */
static long read_line(char **buf, size_t *cap, int *too_long)
{
    size_t n = 0;
    int ch;
    *too_long = 0;
    while ((ch = getchar()) != EOF && ch != '\n') {
        if (n >= MAX_JSON_LINE) {
            *too_long = 1;
            continue;
        }
        if (n + 1 >= *cap) {
            size_t ncap = *cap ? *cap * 2 : 4096;
            if (ncap > MAX_JSON_LINE + 1)
                ncap = MAX_JSON_LINE + 1;
            char *nb = realloc(*buf, ncap);
            if (!nb)
                return -1;
            *buf = nb;
            *cap = ncap;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0 && !*too_long)
        return -1;
    if (*cap == 0 && !(*buf = malloc(*cap = 1)))
        return -1;
    (*buf)[n] = '\0';
    return (long)n;
}

static int cmd_encode(const ProtobufCMessageDescriptor *type)
{
    char *line = NULL;
    size_t cap = 0;
    long n;
    int too_long;
    unsigned long lineno = 0;
    int status = 0;
    while ((n = read_line(&line, &cap, &too_long)) >= 0) {
        lineno++;
        if (too_long) {
            fprintf(stderr, "iotgw-parcel: line %lu: longer than %d bytes\n", lineno, MAX_JSON_LINE);
            status = 1;
            break;
        }
        while (n > 0 && line[n - 1] == '\r')
            n--;
        if (n == 0)
            continue;
        iotgw_diag d = {0};
        ProtobufCMessage *m = message_from_json(type, line, (size_t)n, &d);
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc = m ? iotgw_frame_pack(m, UINT32_MAX, &out, &out_len) : d.code;
        if (rc) {
            fprintf(stderr, "iotgw-parcel: line %lu: %s\n", lineno, m ? iotgw_strerror(rc) : d.text);
            status = 1;
            protobuf_c_message_free_unpacked(m, NULL);
            break;
        }
        fwrite(out, 1, out_len, stdout);
        free(out);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    free(line);
    return status;
}

static int emit_frame(const ProtobufCMessageDescriptor *type, const uint8_t *body, size_t len,
                      unsigned long index)
{
    iotgw_diag d;
    ProtobufCMessage *m = NULL;
    char *text = NULL;
    if (iotgw_frame_unpack(type, body, len, &m, &d) == IOTGW_OK)
        text = message_to_json(m, &d);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!text) {
        fprintf(stderr, "iotgw-parcel: frame %lu: %s\n", index, d.text);
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

static int cmd_decode(const ProtobufCMessageDescriptor *type, uint32_t max_frame)
{
    iotgw_frame_decoder dec;
    iotgw_frame_decoder_init(&dec, max_frame);
    uint8_t buf[65536];
    size_t n;
    unsigned long index = 0;
    int status = 0;
    iotgw_diag d;
    while (!status && (n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        const uint8_t *p = buf;
        while (!status && n > 0) {
            const uint8_t *body;
            size_t body_len, used;
            int rc = iotgw_frame_decoder_next(&dec, p, n, &used, &body, &body_len, &d);
            p += used;
            n -= used;
            if (rc == IOTGW_ERR_AGAIN)
                break;
            index++;
            if (rc) {
                fprintf(stderr, "iotgw-parcel: frame %lu: %s\n", index, d.text);
                status = 1;
            } else {
                status = emit_frame(type, body, body_len, index);
            }
        }
    }
    if (!status && iotgw_frame_decoder_finish(&dec, &d)) {
        fprintf(stderr, "iotgw-parcel: frame %lu: %s\n", index + 1, d.text);
        status = 1;
    }
    iotgw_frame_decoder_free(&dec);
    return status;
}

static int cmd_types(void)
{
    const iotgw_type_registry *r = iotgw_types_builtin();
    for (size_t i = 0; i < r->n_types; i++)
        printf("%s\n", r->types[i]->name);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"type", required_argument, NULL, 't'},
        {"max-frame", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *type_name = "iotgw.Frame";
    unsigned long max_frame = DEFAULT_MAX_FRAME;
    int c;
    while ((c = getopt_long(argc, argv, "t:m:hV", opts, NULL)) != -1) {
        switch (c) {
        case 't': type_name = optarg; break;
        case 'm': {
            char *end;
            errno = 0;
            max_frame = strtoul(optarg, &end, 10);
            if (errno || *end || max_frame == 0 || max_frame > UINT32_MAX) {
                fprintf(stderr, "iotgw-parcel: --max-frame takes a number of bytes from 1 to %u\n",
                        UINT32_MAX);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        case 'V': printf("iotgw-parcel %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    const ProtobufCMessageDescriptor *type = iotgw_types_find(iotgw_types_builtin(), type_name);
    if (!type && (!strcmp(cmd, "encode") || !strcmp(cmd, "decode"))) {
        fprintf(stderr, "iotgw-parcel: unknown type '%s' (see 'iotgw-parcel types')\n", type_name);
        return 2;
    }
    if (!strcmp(cmd, "demo"))
        return cmd_demo();
    if (!strcmp(cmd, "encode"))
        return cmd_encode(type);
    if (!strcmp(cmd, "decode"))
        return cmd_decode(type, (uint32_t)max_frame);
    if (!strcmp(cmd, "types"))
        return cmd_types();
    fprintf(stderr, "iotgw-parcel: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
