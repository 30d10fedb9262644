/*
 * Ordinary HTTP on a WSS listener's port: every path but the WebSocket one reaches the
 * owner's on_http as an iotgw_http_request, answered at once or later. The WebSocket
 * upgrade itself is checked here too: right path, subprotocol AMQPWSB10 offered.
 *
 * Requests over a bound, and those libwebsockets' parser hands over raw because it does
 * not know their method, are refused (transport.h): they reach on_http marked so, and the
 * connection closes after their answer.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "transport/internal.h"

#define MAX_HEADERS      48
#define DEFAULT_MAX_BODY (1024 * 1024)
/* After a refusal, what the client still sends of its body is read and dropped, up to
 * this, before closing: a close with unread input resets the connection, and the client
 * may lose the answer with it. */
#define MAX_DROPPED (4 * 1024 * 1024)
/* Seconds a raw connection may take to send its method (libwebsockets' own timeouts
 * are gone with the HTTP role). */
#define RAW_LINE_TIMEOUT_S 5

struct iotgw_http_request {
    struct lws *wsi; /* NULL once the client is gone */
    iotgw_listener *listener;
    char method[24];
    char *path, *query;
    char *header_names[MAX_HEADERS], *header_values[MAX_HEADERS];
    int n_headers;
    uint8_t *body;
    size_t body_len;
    int dispatched;
    iotgw_http_refusal refusal;
    char why[160];
    int raw; /* on a connection libwebsockets gave up as HTTP: the answer goes out as raw bytes */
    int h2;  /* a stream of an HTTP/2 connection (ALPN h2), which has no request line */
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

/* One per connection while it is HTTP, emptied by libwebsockets between requests. */
struct http_pss {
    iotgw_http_request *req;
    int body_done; /* the request's body, if it has one, is all read */
    int closing;   /* a refusal was answered: close once it is out and the body dropped */
    size_t dropped;
    char line[256]; /* raw: the start of the request line */
    size_t line_len;
};

size_t http_request_size(void)
{
    return sizeof(struct http_pss);
}

iotgw_http_refusal iotgw_http_refused(const iotgw_http_request *r, const char **why)
{
    if (why)
        *why = r->why;
    return r->refusal;
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

static size_t max_body(const iotgw_listener *l)
{
    return l->opt.max_http_body ? l->opt.max_http_body : DEFAULT_MAX_BODY;
}

static iotgw_http_request *request_new(struct lws *wsi, iotgw_listener *l)
{
    iotgw_http_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->wsi = wsi;
    r->listener = l;
    lws_get_peer_simple(wsi, r->peer, sizeof r->peer);
    return r;
}

static void request_free(iotgw_http_request *r)
{
    free(r->path), free(r->query), free(r->body), free(r->response);
    free(r->content_type), free(r->extra_headers);
    for (int i = 0; i < r->n_headers; i++)
        free(r->header_names[i]), free(r->header_values[i]);
    free(r);
}

/* The first refusal found is the one answered. */
static void refuse(iotgw_http_request *r, iotgw_http_refusal why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(iotgw_http_request *r, iotgw_http_refusal why, const char *fmt, ...)
{
    if (r->refusal)
        return;
    r->refusal = why;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
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
 * asynchronous answer is sent. libwebsockets stores at most IOTGW_HTTP_MAX_HEADER + 1
 * bytes of a header (loop.c's token limits), so one over the bound is seen as such
 * whatever its real length; it is refused, not copied. */
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
        int len = lws_hdr_total_length(wsi, (enum lws_token_indexes)t);
        if (!name || len <= 0)
            continue;
        size_t n = strlen((const char *)name);
        if (n < 2 || name[n - 1] != ':') /* method lines ("get ") and pseudo headers */
            continue;
        if (len > IOTGW_HTTP_MAX_HEADER) {
            refuse(r, IOTGW_HTTP_HEADER_TOO_LARGE, "the %.*s header is longer than %d bytes", (int)n - 1,
                   (const char *)name, IOTGW_HTTP_MAX_HEADER);
            continue;
        }
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
    if (lws_hdr_custom_length(wsi, key, (int)strlen(key)) > IOTGW_HTTP_MAX_HEADER) {
        refuse(r, IOTGW_HTTP_HEADER_TOO_LARGE, "the %s header is longer than %d bytes", name,
               IOTGW_HTTP_MAX_HEADER);
        return;
    }
    int n = lws_hdr_custom_copy(wsi, value, sizeof value, key, (int)strlen(key));
    if (n > 0 && r->n_headers < MAX_HEADERS) {
        r->header_names[r->n_headers] = strdup(name);
        r->header_values[r->n_headers++] = strdup(value);
    }
}

/* The bounds of transport.h, checked before the owner sees the request; returns the
 * length of the body that follows (0: none). in/len: the path as libwebsockets decoded
 * it, which is cut at IOTGW_HTTP_MAX_PATH + 1 bytes (loop.c's token limits). */
static long long check_request(iotgw_http_request *r, struct lws *wsi, const char *in, size_t len)
{
    /* libwebsockets decodes %00 into the path and counts the bytes after it. */
    if (in && strlen(in) < len)
        refuse(r, IOTGW_HTTP_BAD_REQUEST, "the path holds an encoded NUL (%%00)");
    if (len > IOTGW_HTTP_MAX_PATH)
        refuse(r, IOTGW_HTTP_URI_TOO_LONG, "the path is longer than %d bytes", IOTGW_HTTP_MAX_PATH);
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > IOTGW_HTTP_MAX_PATH)
        refuse(r, IOTGW_HTTP_URI_TOO_LONG, "the query is longer than %d bytes", IOTGW_HTTP_MAX_PATH);
    /* libwebsockets ends the request line at an encoded CR or LF too (%0D, %0A), cutting
     * the path short and taking the rest for a header: the version is missing then. */
    if (!r->h2 && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP) <= 0)
        refuse(r, IOTGW_HTTP_BAD_REQUEST,
               "the request line ends before its HTTP version (%%0D or %%0A in the path?)");
    const char *cl = iotgw_http_header(r, "content-length");
    if (!cl)
        return 0;
    size_t digits = strspn(cl, "0123456789");
    if (!digits || digits > 18 || cl[digits + strspn(cl + digits, " \t")]) {
        refuse(r, IOTGW_HTTP_BAD_REQUEST, "Content-Length is not a number of bytes");
        return atoll(cl) > 0 ? atoll(cl) : 0; /* what libwebsockets will read of it */
    }
    long long n = atoll(cl);
    if ((unsigned long long)n > max_body(r->listener))
        refuse(r, IOTGW_HTTP_BODY_TOO_LARGE, "the body (Content-Length %lld) is larger than %zu bytes", n,
               max_body(r->listener));
    return n;
}

/* The transport's own answer: to a listener without on_http, and in place of an owner's
 * answer below 400 to a refused request. */
static int own_answer(iotgw_http_request *r)
{
    char msg[sizeof r->why + 32];
    /* why holds only the transport's words, header names and numbers: nothing to escape */
    snprintf(msg, sizeof msg, "{\"Message\":\"%s\"}", r->refusal ? r->why : "not found");
    return iotgw_http_respond(r, r->refusal ? (int)r->refusal : 404, "application/json", NULL, msg,
                              strlen(msg));
}

static void dispatch(iotgw_http_request *r)
{
    r->dispatched = 1;
    if (r->listener->opt.on_http)
        r->listener->opt.on_http(r, r->listener->opt.ctx);
    else
        own_answer(r);
}

int iotgw_http_respond(iotgw_http_request *r, int status, const char *content_type, const char *extra_headers,
                       const void *body, size_t len)
{
    if (r->responded)
        return IOTGW_ERR_INVALID_ARG;
    if (r->refusal && status < 400) /* the owner did not look: a refused request is never served */
        return own_answer(r);
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

/* Status line and headers into [*p, end). */
static int add_headers(iotgw_http_request *r, struct lws *wsi, uint8_t **p, uint8_t *end)
{
    if (lws_add_http_common_headers(wsi, (unsigned int)r->status, r->content_type, r->response_len, p, end))
        return -1;
    /* HTTP/2 has no Connection header; its stream ends with the answer anyway */
    if (r->refusal && !r->h2 &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, p, end))
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
                                            (int)(n - (size_t)(v - line)), p, end))
                return -1;
        }
        line = eol ? eol + 2 : line + n;
    }
    return 0;
}

static int write_headers(iotgw_http_request *r, struct lws *wsi)
{
    uint8_t buf[LWS_PRE + 4096], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (add_headers(r, wsi, &p, end) || lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    r->headers_sent = 1;
    return 0;
}

/* The whole answer in one raw write: libwebsockets' HTTP writing is gone with the role. */
static int write_raw(iotgw_http_request *r, struct lws *wsi)
{
    size_t size = LWS_PRE + 4096 + r->response_len;
    uint8_t *buf = malloc(size), *start = buf + LWS_PRE, *p = start, *end = buf + size - 1;
    int rc = -1;
    if (buf && !add_headers(r, wsi, &p, end) && !lws_finalize_http_header(wsi, &p, end) &&
        (size_t)(end - p) >= r->response_len) {
        memcpy(p, r->response + LWS_PRE, r->response_len);
        p += r->response_len;
        rc = lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_RAW) < 0 ? -1 : 0;
    }
    free(buf);
    return rc;
}

/* The answer, in as many writable callbacks as it takes; then the next request, or the
 * close that follows a refusal. */
static int on_writable(struct http_pss *pss, struct lws *wsi)
{
    iotgw_http_request *r = pss->req;
    if (pss->closing) /* libwebsockets sends what it buffered before calling this */
        return pss->body_done ? -1 : 0;
    if (!r || !r->responded)
        return 0;
    if (r->raw) {
        if (write_raw(r, wsi))
            return -1;
    } else if (!r->headers_sent) {
        if (write_headers(r, wsi))
            return -1;
        lws_callback_on_writable(wsi);
        return 0;
    } else if (lws_write(wsi, r->response + LWS_PRE, r->response_len, LWS_WRITE_HTTP_FINAL) < 0) {
        return -1;
    }
    pss->req = NULL;
    int refused = r->refusal != IOTGW_HTTP_ACCEPTED;
    request_free(r);
    if (refused) {
        pss->closing = 1;
        if (pss->body_done)
            lws_callback_on_writable(wsi);
        return 0;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* The client is gone (or libwebsockets rebinds the connection): the owner may still
 * hold the request. */
static void detach(struct http_pss *pss)
{
    iotgw_http_request *r = pss ? pss->req : NULL;
    if (!r)
        return;
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

static int is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* libwebsockets gave the request up because it does not know its method and handed the
 * connection over raw (listener.c: LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG),
 * in with the bytes from the start of the request. Read the method and the target, and
 * refuse the request through on_http as any other. */
static int raw_request(struct http_pss *pss, struct lws *wsi, const uint8_t *in, size_t len)
{
    if (pss->req || pss->closing) { /* the rest of the request */
        pss->dropped += len;
        return pss->dropped > MAX_DROPPED ? -1 : 0;
    }
    iotgw_listener *l = lws_get_vhost_user(lws_get_vhost(wsi));
    size_t take = len < sizeof pss->line - 1 - pss->line_len ? len : sizeof pss->line - 1 - pss->line_len;
    memcpy(pss->line + pss->line_len, in, take);
    pss->line_len += take;
    pss->line[pss->line_len] = '\0';
    size_t m = 0;
    while (m < pss->line_len && is_tchar((unsigned char)pss->line[m]))
        m++;
    if (m == pss->line_len && m < 16) { /* more of the method to come */
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, RAW_LINE_TIMEOUT_S);
        return 0;
    }
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    iotgw_http_request *r = l ? request_new(wsi, l) : NULL;
    if (!r)
        return -1;
    pss->req = r;
    pss->body_done = 1; /* nothing more is read as a request */
    r->raw = 1;
    const char *target = "/";
    if (m && m < sizeof r->method && pss->line[m] == ' ') {
        snprintf(r->method, sizeof r->method, "%.*s", (int)m, pss->line);
        target = pss->line + m + 1;
        /* 405 rather than HTTP's 501: an owner's resources answer a known method they do
         * not take 405 (the emulator: MethodNotAllowed), and an unknown one is no different. */
        refuse(r, IOTGW_HTTP_UNKNOWN_METHOD, "the method %s is not allowed", r->method);
    } else {
        snprintf(r->method, sizeof r->method, "-");
        refuse(r, IOTGW_HTTP_BAD_REQUEST, "the request line is not HTTP");
    }
    size_t t = 0; /* the target for the owner's logs, up to what arrived of it */
    while (target[t] > ' ' && target[t] < 0x7f)
        t++;
    r->path = *target == '/' ? strndup(target, t) : strdup("/");
    if (!r->path)
        return -1; /* the close frees r */
    dispatch(r);
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
    /* The offered subprotocols are a comma-separated list; AMQPWSB10 (or the listener's
     * stream subprotocol) must be one. */
    const char *other = l->ws_stream_subprotocol;
    for (char *tok = strtok(protos, ", "); tok; tok = strtok(NULL, ", "))
        if (!strcmp(tok, IOTGW_WS_SUBPROTOCOL) || (other && !strcasecmp(tok, other)))
            return 1;
    char why[128];
    snprintf(why, sizeof why, "WebSocket subprotocol %s%s%s required", IOTGW_WS_SUBPROTOCOL,
             other ? " or " : "", other ? other : "");
    lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST, why);
    return 0;
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    if (reason == LWS_CALLBACK_FILTER_NETWORK_CONNECTION) { /* accepted, before TLS */
        iotgw_listener *l = wsi ? lws_get_vhost_user(lws_get_vhost(wsi)) : NULL;
        if (l)
            listener_refresh_certificate(l);
        return 0;
    }
    if (reason == LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION) /* user is OpenSSL's, not ours */
        return tls_peer_verify(wsi, user, (int)len, NULL, 0);
    /* lws tells protocol 0 of every wsi's end: a WebSocket stream's goes to its owner */
    const struct lws_protocols *wp = reason == LWS_CALLBACK_WSI_DESTROY && wsi ? lws_get_protocol(wsi) : NULL;
    if (wp && wp->callback == ws_stream_callback)
        return ws_stream_callback(wsi, reason, user, in, len);
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
        if (!l || l->opt.kind == IOTGW_TRANSPORT_HTTP || strcmp((const char *)in, "websocket") != 0)
            return 1; /* a plain HTTP listener has no WebSocket endpoint */
        return ws_upgrade_allowed(wsi, l) ? 0 : 1;

    case LWS_CALLBACK_HTTP: {
        if (!l)
            return -1;
        r = request_new(wsi, l);
        if (!r)
            return -1;
        pss->req = r;
        r->h2 = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_COLON_PATH) > 0;
        r->path = strdup(in ? (const char *)in : "/");
        if (!r->path)
            return -1; /* the close frees r */
        r->query = copy_token(wsi, WSI_TOKEN_HTTP_URI_ARGS);
        copy_headers(r, wsi);
        /* the IoT Hub service API's own headers (its SDKs send them) */
        copy_custom_header(r, wsi, "request-id");
        copy_custom_header(r, wsi, "x-ms-max-item-count"); /* query paging */
        copy_custom_header(r, wsi, "x-ms-continuation");
        long long body = check_request(r, wsi, in, len);
        pss->body_done = body <= 0;
        /* A refusal is answered before its body is read, which is dropped as it comes. */
        if (r->refusal || body <= 0)
            dispatch(r);
        return 0;
    }

    case LWS_CALLBACK_HTTP_BODY: {
        if (!len || !in) /* an empty piece (a POST without a body) */
            return 0;
        if (!r || !l || r->dispatched) { /* after a refusal */
            pss->dropped += len;
            return pss->dropped > MAX_DROPPED ? -1 : 0;
        }
        if (r->body_len + len > max_body(l)) { /* not from Content-Length, which was checked */
            refuse(r, IOTGW_HTTP_BODY_TOO_LARGE, "the body is larger than %zu bytes", max_body(l));
            dispatch(r);
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
        pss->body_done = 1;
        if (pss->closing)
            lws_callback_on_writable(wsi);
        else if (r && !r->dispatched)
            dispatch(r);
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
    case LWS_CALLBACK_RAW_WRITEABLE: return pss ? on_writable(pss, wsi) : 0;

    case LWS_CALLBACK_RAW_ADOPT: return 0;
    case LWS_CALLBACK_RAW_RX: return pss && in ? raw_request(pss, wsi, in, len) : 0;

    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: /* libwebsockets frees pss after this */
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_RAW_CLOSE: detach(pss); return 0;

    default: return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
