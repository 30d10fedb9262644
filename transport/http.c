/*
 * Ordinary HTTP on a WSS listener's port: every path but the WebSocket one reaches the
 * owner's on_http as an iotgw_http_request, answered at once or later. The WebSocket
 * upgrade itself is checked here too: right path, subprotocol AMQPWSB10 offered.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "transport/internal.h"

#define MAX_HEADERS      48
#define DEFAULT_MAX_BODY (1024 * 1024)

struct iotgw_http_request {
    struct lws *wsi; /* NULL once the client is gone */
    iotgw_listener *listener;
    char method[8];
    char *path, *query;
    char *header_names[MAX_HEADERS], *header_values[MAX_HEADERS];
    int n_headers;
    uint8_t *body;
    size_t body_len;
    int too_large, dispatched;
    /* the answer */
    int responded, headers_sent;
    uint8_t *response; /* LWS_PRE bytes of room, then the body */
    size_t response_len;
    int status;
    char *content_type, *extra_headers;
    void *ctx;
    iotgw_http_gone_fn gone;
    char peer[64]; /* the client's address */
};

struct http_pss {
    iotgw_http_request *req;
};

size_t http_request_size(void)
{
    return sizeof(struct http_pss);
}

const char *iotgw_http_method(const iotgw_http_request *r)
{
    return r->method;
}
const char *iotgw_http_path(const iotgw_http_request *r)
{
    return r->path;
}
const char *iotgw_http_query(const iotgw_http_request *r)
{
    return r->query ? r->query : "";
}

const char *iotgw_http_header(const iotgw_http_request *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (!strcasecmp(r->header_names[i], name))
            return r->header_values[i];
    return NULL;
}

const uint8_t *iotgw_http_body(const iotgw_http_request *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : (const uint8_t *)"";
}

const char *iotgw_http_peer(const iotgw_http_request *r)
{
    return r->peer;
}

void iotgw_http_set_context(iotgw_http_request *r, void *ctx, iotgw_http_gone_fn gone)
{
    r->ctx = ctx;
    r->gone = gone;
}

static void request_free(iotgw_http_request *r)
{
    free(r->path), free(r->query), free(r->body), free(r->response);
    free(r->content_type), free(r->extra_headers);
    for (int i = 0; i < r->n_headers; i++)
        free(r->header_names[i]), free(r->header_values[i]);
    free(r);
}

static char *copy_token(struct lws *wsi, enum lws_token_indexes t)
{
    int n = lws_hdr_total_length(wsi, t);
    if (n <= 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s && lws_hdr_copy(wsi, s, n + 1, t) < 0)
        s[0] = '\0';
    return s;
}

/* Copy the headers now: libwebsockets may reuse its header storage before an
 * asynchronous answer is sent. */
static void copy_headers(iotgw_http_request *r, struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        const char *method;
    } methods[] = {
        {WSI_TOKEN_GET_URI, "GET"},     {WSI_TOKEN_POST_URI, "POST"},     {WSI_TOKEN_PUT_URI, "PUT"},
        {WSI_TOKEN_PATCH_URI, "PATCH"}, {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
        {WSI_TOKEN_HEAD_URI, "HEAD"},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (lws_hdr_total_length(wsi, methods[i].tok) > 0)
            snprintf(r->method, sizeof r->method, "%s", methods[i].method);
    for (int t = 0; t < WSI_TOKEN_COUNT && r->n_headers < MAX_HEADERS; t++) {
        const unsigned char *name = lws_token_to_string((enum lws_token_indexes)t);
        if (!name || lws_hdr_total_length(wsi, (enum lws_token_indexes)t) <= 0)
            continue;
        size_t n = strlen((const char *)name);
        if (n < 2 || name[n - 1] != ':') /* method lines ("get ") and pseudo headers */
            continue;
        char *value = copy_token(wsi, (enum lws_token_indexes)t);
        char *key = strndup((const char *)name, n - 1);
        if (!value || !key) {
            free(value), free(key);
            continue;
        }
        for (char *k = key; *k; k++)
            *k = (char)tolower((unsigned char)*k);
        r->header_names[r->n_headers] = key;
        r->header_values[r->n_headers++] = value;
    }
}

/* A header unknown to libwebsockets (e.g. "request-id"), looked up while still there. */
static void copy_custom_header(iotgw_http_request *r, struct lws *wsi, const char *name)
{
    char key[64], value[1024];
    snprintf(key, sizeof key, "%s:", name);
    int n = lws_hdr_custom_copy(wsi, value, sizeof value, key, (int)strlen(key));
    if (n > 0 && r->n_headers < MAX_HEADERS) {
        r->header_names[r->n_headers] = strdup(name);
        r->header_values[r->n_headers++] = strdup(value);
    }
}

static void dispatch(iotgw_http_request *r)
{
    r->dispatched = 1;
    if (r->too_large) {
        size_t max = r->listener->opt.max_http_body ? r->listener->opt.max_http_body : DEFAULT_MAX_BODY;
        char msg[96];
        snprintf(msg, sizeof msg, "{\"Message\":\"request body larger than %zu bytes\"}", max);
        iotgw_http_respond(r, 413, "application/json", NULL, msg, strlen(msg));
    } else if (r->listener->opt.on_http) {
        r->listener->opt.on_http(r, r->listener->opt.ctx);
    } else {
        static const char msg[] = "{\"Message\":\"not found\"}";
        iotgw_http_respond(r, 404, "application/json", NULL, msg, sizeof msg - 1);
    }
}

int iotgw_http_respond(iotgw_http_request *r, int status, const char *content_type, const char *extra_headers,
                       const void *body, size_t len)
{
    if (r->responded)
        return IOTGW_ERR_INVALID_ARG;
    r->responded = 1;
    if (!r->wsi) { /* the client left; nothing to send */
        request_free(r);
        return IOTGW_OK;
    }
    r->status = status;
    r->content_type = strdup(content_type ? content_type : "application/json");
    r->extra_headers = extra_headers ? strdup(extra_headers) : NULL;
    r->response = malloc(LWS_PRE + len + 1);
    if (!r->response || !r->content_type)
        return IOTGW_ERR_NOMEM;
    if (len)
        memcpy(r->response + LWS_PRE, body, len);
    r->response_len = len;
    lws_callback_on_writable(r->wsi);
    return IOTGW_OK;
}

static int write_headers(iotgw_http_request *r, struct lws *wsi)
{
    uint8_t buf[LWS_PRE + 4096], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_common_headers(wsi, (unsigned int)r->status, r->content_type, r->response_len, &p, end))
        return -1;
    for (char *line = r->extra_headers; line && *line;) {
        char *eol = strstr(line, "\r\n"), *colon = strchr(line, ':');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        if (colon && (size_t)(colon - line) < n) {
            char name[128];
            snprintf(name, sizeof name, "%.*s:", (int)(colon - line), line);
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)v,
                                            (int)(n - (size_t)(v - line)), &p, end))
                return -1;
        }
        line = eol ? eol + 2 : line + n;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    r->headers_sent = 1;
    return 0;
}

static int ws_upgrade_allowed(struct lws *wsi, iotgw_listener *l)
{
    char path[512] = "", protos[256] = "";
    lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
    lws_hdr_copy(wsi, protos, sizeof protos, WSI_TOKEN_PROTOCOL);
    if (strcmp(path, l->ws_path) != 0) {
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "no WebSocket endpoint on this path");
        return 0;
    }
    /* The offered subprotocols are a comma-separated list; AMQPWSB10 must be one. */
    for (char *tok = strtok(protos, ", "); tok; tok = strtok(NULL, ", "))
        if (!strcmp(tok, IOTGW_WS_SUBPROTOCOL))
            return 1;
    lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST, "WebSocket subprotocol AMQPWSB10 required");
    return 0;
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    if (reason == LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION) /* user is OpenSSL's, not ours */
        return tls_peer_verify(wsi, user, (int)len);
    struct http_pss *pss = user;
    iotgw_http_request *r = pss ? pss->req : NULL;
    iotgw_listener *l = NULL;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
    case LWS_CALLBACK_HTTP:
    case LWS_CALLBACK_HTTP_BODY: l = lws_get_vhost_user(lws_get_vhost(wsi)); break;
    default: break;
    }

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        if (!l || strcmp((const char *)in, "websocket") != 0)
            return 1;
        return ws_upgrade_allowed(wsi, l) ? 0 : 1;

    case LWS_CALLBACK_HTTP: {
        if (!l)
            return -1;
        r = calloc(1, sizeof *r);
        if (!r)
            return -1;
        pss->req = r;
        r->wsi = wsi;
        lws_get_peer_simple(wsi, r->peer, sizeof r->peer);
        r->listener = l;
        r->path = strdup(in ? (const char *)in : "/");
        r->query = copy_token(wsi, WSI_TOKEN_HTTP_URI_ARGS);
        copy_headers(r, wsi);
        copy_custom_header(r, wsi, "request-id");
        const char *cl = iotgw_http_header(r, "content-length");
        if (cl && strtoul(cl, NULL, 10) > 0) {
            size_t max = l->opt.max_http_body ? l->opt.max_http_body : DEFAULT_MAX_BODY;
            if (strtoul(cl, NULL, 10) > max)
                r->too_large = 1;
            return 0; /* the body follows */
        }
        dispatch(r);
        return 0;
    }

    case LWS_CALLBACK_HTTP_BODY: {
        if (!r || !l || r->too_large)
            return 0;
        if (!len || !in)
            return 0; /* an empty piece (a POST without a body) */
        size_t max = l->opt.max_http_body ? l->opt.max_http_body : DEFAULT_MAX_BODY;
        if (r->body_len + len > max) {
            r->too_large = 1;
            return 0;
        }
        uint8_t *nb = realloc(r->body, r->body_len + len + 1);
        if (!nb)
            return -1;
        memcpy(nb + r->body_len, in, len);
        r->body = nb;
        r->body_len += len;
        r->body[r->body_len] = '\0';
        return 0;
    }

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (r && !r->dispatched)
            dispatch(r);
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!r || !r->responded)
            return 0;
        if (!r->headers_sent) {
            if (write_headers(r, wsi))
                return -1;
            lws_callback_on_writable(wsi);
            return 0;
        }
        if (lws_write(wsi, r->response + LWS_PRE, r->response_len, LWS_WRITE_HTTP_FINAL) < 0)
            return -1;
        pss->req = NULL;
        request_free(r);
        return lws_http_transaction_completed(wsi) ? -1 : 0;

    case LWS_CALLBACK_CLOSED_HTTP:
        if (r) {
            pss->req = NULL;
            r->wsi = NULL;
            if (r->responded || !r->dispatched) {
                request_free(r);
            } else if (r->gone) { /* the owner drops it in gone() */
                r->gone(r, r->ctx);
                request_free(r);
            }
            /* else the owner still holds it: iotgw_http_respond frees it, sending nothing */
        }
        return 0;

    default: return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
