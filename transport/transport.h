/*
 * transport: AMQP 1.0 connections over secure WebSocket (WSS, subprotocol AMQPWSB10)
 * and over AMQPS (TLS over TCP), in the client and the server role, on one event loop.
 *
 * Each connection is a Qpid Proton connection driven by pn_connection_driver; its bytes
 * travel over a libwebsockets socket. The owner sees only Proton: it gets every Proton
 * event through its handler and works on pn_connection_t, sessions, links and
 * deliveries with Proton's engine API. Nothing else of libwebsockets or of the driver is
 * visible.
 *
 * TLS: WSS uses libwebsockets' TLS (WebSocket sits between TLS and AMQP); AMQPS uses
 * Proton's own TLS layer over a plain socket. Both verify the peer against a CA file or
 * the system store, check its host name, send SNI, use TLS 1.2 or later, and may
 * present a certificate. Verification is off only with tls.insecure, which is logged at
 * warning level on every connection.
 *
 * Ownership: the loop owns every connection and listener it creates. A connection lives
 * until its handler has seen PN_TRANSPORT_CLOSED; when that handler call returns the
 * connection is freed, so the owner must drop its pointer there. Strings passed in
 * options are copied. Proton objects obtained from a connection belong to it.
 *
 * Threading: everything here, and every Proton call on a connection's objects, happens
 * on the thread that runs iotgw_loop_run(). Nothing is thread-safe.
 *
 * Errors: functions return 0 or a negative IOTGW_ERR_* code (codecs/error.h) with a
 * message in the diag. A connection's failure (DNS, TCP, TLS, WebSocket upgrade, AMQP
 * framing, idle timeout, peer close) reaches its handler as PN_TRANSPORT_ERROR and then
 * PN_TRANSPORT_CLOSED, with the reason in pn_transport_condition(): the condition name
 * is "amqp:..." when it came from AMQP, else one of IOTGW_COND_* below, and the
 * description says what happened in words.
 */
#ifndef IOTGW_TRANSPORT_H
#define IOTGW_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <proton/event.h>
#include <proton/types.h>

#include "codecs/error.h"

/* Condition names for failures below AMQP. */
#define IOTGW_COND_CONNECT      "iotgw:connect-failed"   /* DNS, TCP, proxy */
#define IOTGW_COND_TLS          "iotgw:tls-failed"       /* handshake, certificate */
#define IOTGW_COND_WEBSOCKET    "iotgw:websocket-failed" /* upgrade refused: HTTP status, subprotocol */
#define IOTGW_COND_IO           "iotgw:connection-lost"  /* socket closed or reset */
#define IOTGW_COND_OUTPUT_LIMIT "iotgw:output-limit"     /* peer did not read fast enough */
#define IOTGW_COND_INPUT_LIMIT  "iotgw:input-limit"      /* input kept coming while reading was paused */

#define IOTGW_WS_SUBPROTOCOL             "AMQPWSB10"
#define IOTGW_WS_DEFAULT_PATH            "/$iothub/websocket"
#define IOTGW_DEFAULT_IDLE_TIMEOUT_MS    240000
#define IOTGW_DEFAULT_CONNECT_TIMEOUT_MS 30000
#define IOTGW_MAX_FRAME_SIZE             65536 /* AMQP max-frame-size we advertise and accept */

typedef struct iotgw_loop iotgw_loop;
typedef struct iotgw_conn iotgw_conn;
typedef struct iotgw_listener iotgw_listener;
typedef struct iotgw_http_request iotgw_http_request;
typedef struct iotgw_stream iotgw_stream; /* transport/stream.h */

typedef enum iotgw_transport_kind {
    IOTGW_TRANSPORT_WSS = 1,   /* AMQP over secure WebSocket, default port 443 */
    IOTGW_TRANSPORT_AMQPS = 2, /* AMQP over TLS, default port 5671 */
    IOTGW_TRANSPORT_HTTP = 3,  /* listeners only: plain HTTP, no TLS, no WebSocket (an ops endpoint) */
} iotgw_transport_kind;

typedef struct iotgw_tls_options {
    const char *ca_file;   /* client: PEM CAs to trust (NULL: the system store);
                              listener: when set, clients must present a certificate it signed */
    const char *cert_file; /* PEM certificate: the client's (optional) or the server's */
    const char *key_file;  /* its private key */
    int insecure;          /* client: accept any certificate and name; logged loudly */
} iotgw_tls_options;

/* ------------------------------------------------------------------ loop */

/* The loop's backend (docs/event-loop.md): libuv (epoll), whose cost does not grow with
 * idle connections, or poll(). libuv needs libwebsockets' plugin at run time (Debian:
 * libwebsockets-evlib-uv). iotgw_loop_backend_choose() is the one place that decides. */
typedef enum iotgw_loop_backend {
    IOTGW_LOOP_DEFAULT = 0,
    IOTGW_LOOP_LIBUV,
    IOTGW_LOOP_POLL,
} iotgw_loop_backend;

typedef struct iotgw_loop_options {
    int log_level;                      /* libwebsockets' own log mask; 0: errors only */
    iotgw_loop_backend backend;         /* DEFAULT: IOTGW_EVENT_LOOP when set, else default_backend */
    iotgw_loop_backend default_backend; /* the program's own choice; DEFAULT: poll (the emulator's
                                           and the tests', as measured in docs/event-loop.md) */
} iotgw_loop_options;

/* The backend iotgw_loop_new(opt) runs on, and why: "the options", "IOTGW_EVENT_LOOP" or
 * "the default". IOTGW_ERR_INVALID_ARG (and what is allowed, in diag) for an unknown
 * IOTGW_EVENT_LOOP. opt may be NULL. */
int iotgw_loop_backend_choose(const iotgw_loop_options *opt, iotgw_loop_backend *out, const char **why,
                              iotgw_diag *diag);

iotgw_loop *iotgw_loop_new(const iotgw_loop_options *opt, iotgw_diag *diag);
/* "libuv" or "poll". */
const char *iotgw_loop_backend_name(const iotgw_loop *loop);
/* IOTGW_EVENT_LOOP read: *out is IOTGW_LOOP_POLL or _LIBUV, or IOTGW_LOOP_DEFAULT when the
 * variable is unset or empty; IOTGW_ERR_INVALID_ARG (and why, in diag) for another value. */
int iotgw_loop_backend_from_environment(iotgw_loop_backend *out, iotgw_diag *diag);
/* Serve sockets and timers for at most timeout_ms; returns after any work. <0: the loop failed. */
int iotgw_loop_run(iotgw_loop *loop, int timeout_ms);
/* Close every connection and listener (handlers see PN_TRANSPORT_CLOSED) and free the loop. */
void iotgw_loop_free(iotgw_loop *loop);
/* Milliseconds since an arbitrary start, the clock of the loop's timers. */
int64_t iotgw_loop_now_ms(iotgw_loop *loop);

/* ------------------------------------------------------------------ timers */

/* A timer lives inside its owner (as libuv's uv_timer_t): init once, start and stop as
 * often as needed, no allocation. Its fields are the loop's; read them only through the
 * functions below. The owner stops it before freeing the memory it lives in. */
typedef struct iotgw_timer iotgw_timer;
typedef void (*iotgw_timer_fn)(iotgw_timer *t, void *ctx);
struct iotgw_timer {
    iotgw_loop *loop;
    iotgw_timer_fn fn;
    void *ctx;
    int64_t due_ms, repeat_ms;
    uint64_t order; /* start order: timers due at the same time fire in it */
    iotgw_timer *heap_child, *heap_sibling, *heap_prev;
    int active;
};

void iotgw_timer_init(iotgw_loop *loop, iotgw_timer *t, iotgw_timer_fn fn, void *ctx);
/* (Re)start: fn(t, ctx) runs delay_ms from now, then every repeat_ms while repeat_ms > 0.
 * fn never runs inside this call, even at 0 ms: a 0 ms timer defers work to the next turn
 * of the loop. A repeating timer is rearmed before fn runs, so fn may stop it. */
void iotgw_timer_start(iotgw_timer *t, int64_t delay_ms, int64_t repeat_ms);
/* Safe on a timer that is not running, twice, and from its own fn. */
void iotgw_timer_stop(iotgw_timer *t);
int iotgw_timer_active(const iotgw_timer *t);

/* ------------------------------------------------------------------ connections */

/* Called with every Proton event of the connection, in order. */
typedef void (*iotgw_conn_event_fn)(iotgw_conn *c, pn_event_t *e, void *ctx);

typedef struct iotgw_client_options {
    iotgw_transport_kind kind;
    const char *host;  /* where to connect; also SNI, certificate name and AMQP hostname */
    int port;          /* 0: 443 for WSS, 5671 for AMQPS */
    const char *path;  /* WSS request path; NULL: IOTGW_WS_DEFAULT_PATH */
    const char *proxy; /* WSS through an HTTPS proxy with CONNECT: "host:port"; NULL: direct */
    iotgw_tls_options tls;
    uint32_t idle_timeout_ms;    /* advertised to the peer; 0: IOTGW_DEFAULT_IDLE_TIMEOUT_MS */
    uint32_t connect_timeout_ms; /* TCP, TLS, upgrade and the server's AMQP open must be done by
                                    then, else IOTGW_COND_CONNECT; 0: IOTGW_DEFAULT_CONNECT_TIMEOUT_MS */
    int sasl_anonymous;          /* 1: a SASL layer with ANONYMOUS (as the Java SDK); 0: none */
    size_t max_output;           /* bytes of unsent output before the connection is failed; 0: 64 MiB */
    uint32_t split_seed;         /* tests: nonzero cuts every write (WebSocket frame) at random sizes */
} iotgw_client_options;

/* Start connecting. The connection exists at once (configure Proton on it, e.g. open
 * sessions and links, before the first event); its outcome reaches the handler. */
int iotgw_conn_connect(iotgw_loop *loop, const iotgw_client_options *opt, iotgw_conn_event_fn fn, void *ctx,
                       iotgw_conn **out, iotgw_diag *diag);

pn_connection_t *iotgw_conn_connection(iotgw_conn *c);
pn_transport_t *iotgw_conn_transport(iotgw_conn *c);
/* Replace the handler (a listener's accept callback sets it). */
void iotgw_conn_set_handler(iotgw_conn *c, iotgw_conn_event_fn fn, void *ctx);
/* The ctx given with the handler. */
void *iotgw_conn_context(iotgw_conn *c);
/* After changing the connection's Proton state outside its own handler (from a timer,
 * another connection's event, an owner's API call), call this so that the change is
 * processed and sent. As Proton's pn_connection_wake: deferred to the next turn of the
 * loop and coalesced (many calls, one pass), the handler then gets PN_CONNECTION_WAKE
 * before the other events that are pending. The handler never runs inside this call. */
void iotgw_conn_wake(iotgw_conn *c);
/* Close with an AMQP error condition (name may be NULL for a clean close); the socket
 * closes once the peer has been told or after a short grace period. The handler sees
 * the events that follow (PN_TRANSPORT_CLOSED last) from the next turn of the loop, never
 * inside this call, so the connection stays valid when it returns. */
void iotgw_conn_close(iotgw_conn *c, const char *cond_name, const char *description);
/* Encode now what Proton holds for the peer (dispositions, flow), so that what the owner
 * sends after this call goes after it on the wire: Proton otherwise orders a batch's
 * frames itself, new transfers before older dispositions. */
void iotgw_conn_encode_pending(iotgw_conn *c);
/* Bytes produced by Proton and not yet written to the socket: a sender can slow down. */
size_t iotgw_conn_pending_output(iotgw_conn *c);
/* "wss 127.0.0.1:40312" or similar, for logs. */
const char *iotgw_conn_peer(iotgw_conn *c);
/* Common name of the peer's verified TLS certificate (a client certificate on a
 * listener that requires one), or NULL. Valid until the connection is freed. */
const char *iotgw_conn_peer_cn(iotgw_conn *c);

/* ------------------------------------------------------------------ HTTP (WSS listeners) */

/* An ordinary HTTP request on a WSS listener's port, on any path but the WebSocket one.
 * The request stays valid until it is answered or its client goes away; the owner
 * answers at once or later (e.g. after a device replied). */
typedef void (*iotgw_http_fn)(iotgw_http_request *req, void *ctx);
/* Called if the client is seen to go away before an answer; the request is freed when it
 * returns, so the owner drops its pointer there. libwebsockets may notice only when the
 * answer is written: then the answer is dropped and this is not called. Without this
 * callback the request stays valid until the owner answers. */
typedef void (*iotgw_http_gone_fn)(iotgw_http_request *req, void *ctx);

/* Bounds of a request, in bytes: the path (as libwebsockets percent-decodes it) and the
 * query each IOTGW_HTTP_MAX_PATH, one header's value IOTGW_HTTP_MAX_HEADER, all of the
 * request line and headers as stored IOTGW_HTTP_MAX_HEADER_BLOCK (libwebsockets' header
 * space: a request over it is closed by libwebsockets without an answer), the body the
 * listener's max_http_body. */
#define IOTGW_HTTP_MAX_PATH         2048
#define IOTGW_HTTP_MAX_HEADER       8192
#define IOTGW_HTTP_MAX_HEADER_BLOCK 32768

/* Why the transport refuses a request. A refused request still reaches on_http, without
 * its body, so that the owner answers it in its own error shape; the owner must check
 * iotgw_http_refused() before anything else. The transport holds the status: an answer
 * below 400 is replaced by the transport's own refusal, so a refused request is never
 * served. The connection closes after the answer (what the client still sends of a body
 * is read and dropped first, up to a bound, so that it can read the answer). */
typedef enum iotgw_http_refusal {
    IOTGW_HTTP_ACCEPTED = 0,
    IOTGW_HTTP_BAD_REQUEST = 400,      /* not HTTP, a Content-Length not a number, a NUL in the path */
    IOTGW_HTTP_UNKNOWN_METHOD = 405,   /* a method libwebsockets does not know (e.g. BREW) */
    IOTGW_HTTP_BODY_TOO_LARGE = 413,   /* Content-Length over max_http_body: before the body is read */
    IOTGW_HTTP_URI_TOO_LONG = 414,     /* the path or the query over IOTGW_HTTP_MAX_PATH */
    IOTGW_HTTP_HEADER_TOO_LARGE = 431, /* a header over IOTGW_HTTP_MAX_HEADER */
} iotgw_http_refusal;

/* IOTGW_HTTP_ACCEPTED, or the refusal (its value is the HTTP status) with why: one line
 * naming the bound or header, fit to return to the client; valid as long as req. */
iotgw_http_refusal iotgw_http_refused(const iotgw_http_request *req, const char **why);
const char *iotgw_http_method(const iotgw_http_request *req);
const char *iotgw_http_path(const iotgw_http_request *req);  /* without the query */
const char *iotgw_http_query(const iotgw_http_request *req); /* after '?', or "" */
/* A request header by lower-case name ("authorization"), or NULL. */
const char *iotgw_http_header(const iotgw_http_request *req, const char *name);
const uint8_t *iotgw_http_body(const iotgw_http_request *req, size_t *len);
/* The client's address ("127.0.0.1", "::1"), for logs and loopback-only resources. */
const char *iotgw_http_peer(const iotgw_http_request *req);
void iotgw_http_set_context(iotgw_http_request *req, void *ctx, iotgw_http_gone_fn gone);
/* Answer and release the request. extra_headers: "Name: value\r\n" lines or NULL. */
int iotgw_http_respond(iotgw_http_request *req, int status, const char *content_type,
                       const char *extra_headers, const void *body, size_t len);

/* ------------------------------------------------------------------ listeners */

/* A new AMQP connection was accepted; set its handler with iotgw_conn_set_handler. */
typedef void (*iotgw_accept_fn)(iotgw_listener *l, iotgw_conn *c, void *ctx);
/* A WebSocket connection chose the listener's stream subprotocol: its messages' bytes are
 * a byte stream (transport/stream.h); set its handler with iotgw_stream_set_handler. */
typedef void (*iotgw_ws_stream_fn)(iotgw_listener *l, iotgw_stream *s, void *ctx);
/* A client chose SASL PLAIN (IoT Hub: user "{device}@sas.{hub}" or "{policy}@sas.root.{hub}",
 * password a SAS token). Return 0 to accept; anything else fails SASL authentication. */
typedef int (*iotgw_sasl_plain_fn)(iotgw_conn *c, const char *user, const char *password, void *ctx);

typedef struct iotgw_listener_options {
    iotgw_transport_kind kind;
    const char *address;   /* "127.0.0.1", "::1", NULL: all */
    int port;              /* 0: any free port (see iotgw_listener_port) */
    const char *ws_path;   /* WSS: path of the AMQP upgrade; NULL: IOTGW_WS_DEFAULT_PATH */
    iotgw_tls_options tls; /* cert_file and key_file are required */
    iotgw_accept_fn on_accept;
    iotgw_http_fn on_http;             /* WSS: other paths; NULL: 404 */
    iotgw_sasl_plain_fn on_sasl_plain; /* NULL: PLAIN is not offered */
    /* WSS: a second subprotocol on ws_path (e.g. "mqtt", as IoT Hub serves MQTT over
     * WebSocket), whose connections are byte streams handed to on_ws_stream: binary
     * messages in and out, their framing not significant. NULL: AMQPWSB10 only. */
    const char *ws_stream_subprotocol;
    iotgw_ws_stream_fn on_ws_stream;
    size_t ws_stream_max_output; /* per stream, as iotgw_stream_listener_options.max_output */
    void *ctx;
    uint32_t idle_timeout_ms; /* advertised; 0: IOTGW_DEFAULT_IDLE_TIMEOUT_MS */
    size_t max_http_body;     /* 0: 1 MiB; larger bodies are refused (413) */
    size_t max_output;        /* per connection, as for clients; 0: 64 MiB */
    uint32_t split_seed;      /* tests: as for clients */
} iotgw_listener_options;

/* Accepted connections detect the protocol header: a SASL layer or a bare AMQP header
 * are both served. SASL offers MSSBCBS and ANONYMOUS (both accepted at once: IoT Hub
 * clients authenticate later through CBS) and PLAIN when on_sasl_plain is set. */
int iotgw_listener_new(iotgw_loop *loop, const iotgw_listener_options *opt, iotgw_listener **out,
                       iotgw_diag *diag);
int iotgw_listener_port(const iotgw_listener *l);
void iotgw_listener_free(iotgw_listener *l);

#endif
