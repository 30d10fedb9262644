#include "hubside/amqp_address.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codecs/identity.h"
#include "codecs/percent.h"

#define MAX_SEGMENTS 8

const char *iotgw_hubaddr_kind_name(iotgw_hubaddr_kind kind)
{
    switch (kind) {
    case IOTGW_HUBADDR_CBS: return "cbs";
    case IOTGW_HUBADDR_TELEMETRY: return "telemetry";
    case IOTGW_HUBADDR_C2D: return "c2d";
    case IOTGW_HUBADDR_METHODS: return "methods";
    case IOTGW_HUBADDR_TWIN: return "twin";
    case IOTGW_HUBADDR_SERVICE_C2D: return "service-c2d";
    case IOTGW_HUBADDR_SERVICE_FEEDBACK: return "service-feedback";
    case IOTGW_HUBADDR_SERVICE_FILE_NOTIFICATIONS: return "service-file-notifications";
    case IOTGW_HUBADDR_EVENTS: return "events";
    }
    return "?";
}

void iotgw_hubaddr_clear(iotgw_hubaddr *a)
{
    free(a->device_id);
    free(a->module_id);
    free(a->consumer_group);
    free(a->event_hub);
    memset(a, 0, sizeof *a);
}

static int decode_id(const char *seg, size_t n, const char *what, char **out, iotgw_diag *diag)
{
    int rc = iotgw_percent_decode(seg, n, out, diag);
    if (!rc && (rc = iotgw_identity_check(*out, what, diag))) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

static int word(const char *seg, size_t n, const char *w)
{
    return strlen(w) == n && !strncasecmp(seg, w, n);
}

static int parse_events(const char **seg, const size_t *len, const char *address, iotgw_hubaddr *out,
                        iotgw_diag *diag)
{
    /* seg: {name}/ConsumerGroups/{g}/Partitions/{n} */
    char digits[8];
    if (len[4] == 0 || len[4] >= sizeof digits || strspn(seg[4], "0123456789") < len[4])
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "partition in \"%.100s\" is not a number",
                               address);
    memcpy(digits, seg[4], len[4]);
    digits[len[4]] = '\0';
    int rc = iotgw_percent_decode(seg[2], len[2], &out->consumer_group, diag);
    if (rc)
        return rc;
    out->kind = IOTGW_HUBADDR_EVENTS;
    out->partition = atoi(digits);
    return 0;
}

int iotgw_hubaddr_parse(const char *address, iotgw_hubaddr *out, iotgw_diag *diag)
{
    memset(out, 0, sizeof *out);
    if (!address || !*address)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "no address");
    const char *p = address;
    if (!strncasecmp(p, "amqps://", 8)) {
        p = strchr(p + 8, '/');
        if (!p)
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "address \"%.100s\" has a host but no path",
                                   address);
    }
    if (!strcmp(p, "$cbs") || !strcmp(p, "/$cbs")) {
        out->kind = IOTGW_HUBADDR_CBS;
        return 0;
    }
    const char *seg[MAX_SEGMENTS];
    size_t len[MAX_SEGMENTS];
    int n = 0;
    if (*p == '/')
        p++;
    while (*p) {
        if (n == MAX_SEGMENTS)
            return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "unknown address \"%.100s\"", address);
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        seg[n] = p;
        len[n++] = l;
        p += l;
        if (*p == '/')
            p++;
    }
    if (n == 2 && word(seg[0], len[0], "messages") && word(seg[1], len[1], "devicebound")) {
        out->kind = IOTGW_HUBADDR_SERVICE_C2D;
        return 0;
    }
    if (n == 3 && word(seg[0], len[0], "messages") && word(seg[1], len[1], "serviceBound") &&
        word(seg[2], len[2], "feedback")) {
        out->kind = IOTGW_HUBADDR_SERVICE_FEEDBACK;
        return 0;
    }
    if (n == 3 && word(seg[0], len[0], "messages") && word(seg[1], len[1], "serviceBound") &&
        word(seg[2], len[2], "filenotifications")) {
        out->kind = IOTGW_HUBADDR_SERVICE_FILE_NOTIFICATIONS;
        return 0;
    }
    if (n == 6 && word(seg[0], len[0], "messages") && word(seg[1], len[1], "events") &&
        word(seg[2], len[2], "ConsumerGroups") && word(seg[4], len[4], "Partitions"))
        return parse_events(seg + 1, len + 1, address, out, diag);
    if (n == 5 && word(seg[1], len[1], "ConsumerGroups") && word(seg[3], len[3], "Partitions")) {
        int rc = parse_events(seg, len, address, out, diag);
        if (!rc && (rc = iotgw_percent_decode(seg[0], len[0], &out->event_hub, diag)))
            iotgw_hubaddr_clear(out);
        return rc;
    }
    if (n < 3 || !word(seg[0], len[0], "devices"))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "unknown address \"%.100s\"", address);
    int rest = 2;
    if (n >= 5 && word(seg[2], len[2], "modules"))
        rest = 4;
    int tail = n - rest;
    const char *a = seg[rest], *b = tail == 2 ? seg[rest + 1] : NULL;
    size_t la = len[rest], lb = tail == 2 ? len[rest + 1] : 0;
    if (tail == 1 && word(a, la, "twin"))
        out->kind = IOTGW_HUBADDR_TWIN;
    else if (tail == 2 && word(a, la, "messages") && word(b, lb, "events"))
        out->kind = IOTGW_HUBADDR_TELEMETRY;
    else if (tail == 2 && word(a, la, "messages") && word(b, lb, "devicebound"))
        out->kind = IOTGW_HUBADDR_C2D;
    else if (tail == 2 && word(a, la, "methods") && word(b, lb, "devicebound"))
        out->kind = IOTGW_HUBADDR_METHODS;
    else
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "unknown address \"%.100s\"", address);
    int rc = decode_id(seg[1], len[1], "device id", &out->device_id, diag);
    if (!rc && rest == 4)
        rc = decode_id(seg[3], len[3], "module id", &out->module_id, diag);
    if (rc)
        iotgw_hubaddr_clear(out);
    return rc;
}
