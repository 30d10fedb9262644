/* Shared by the transport's own files only; owners use transport.h. */
#ifndef IOTGW_TRANSPORT_INTERNAL_H
#define IOTGW_TRANSPORT_INTERNAL_H

#include <string.h>
#include <libwebsockets.h>
#include <uv.h>
#include <proton/connection_driver.h>

#include "codecs/assert.h"
#include "codecs/list.h"
#include "codecs/text.h"
#include "transport/transport.h"
#include "transport/frame_guard.h"

#define LWS_PROTOCOL_HTTP "iotgw-http"
#define LWS_PROTOCOL_RAW  "iotgw-raw"
/* Largest piece of Proton output written to the socket at once. */
#define WRITE_CHUNK (64 * 1024)
/* Largest piece libwebsockets hands us at once. */
#define RX_CHUNK (64 * 1024)
/* Input parked while Proton has no room; reading is paused meanwhile, so only what lws
 * had already read can arrive: more than this means the pause did not hold. */
#define MAX_PARKED_INPUT   (4 * RX_CHUNK)
#define DEFAULT_MAX_OUTPUT (64u * 1024 * 1024)
/* After iotgw_conn_close, how long the peer has to answer before the socket is cut. */
#define CLOSE_GRACE_MS 2000

typedef struct client_vhost client_vhost;

struct amqps_domain; /* amqps.c's TLS settings, made once and shared by connections */

struct iotgw_loop {
    struct lws_context *ctx;
    client_vhost *client_vhosts;
    struct amqps_domain *amqps_domains;
    iotgw_list conns; /* every live connection */
    iotgw_list listeners;
    lws_sorted_usec_list_t wake; /* bounds iotgw_loop_run's wait */
    int64_t wake_at;             /* when it fires; 0: not armed */
    uv_loop_t *uv;               /* the libuv backend's loop; NULL: poll */
    /* timers (timer.c): a heap, and one lws callback armed for its earliest */
    iotgw_timer *timer_root;
    lws_sorted_usec_list_t timer_sul;
    int64_t timer_armed_ms; /* the due time timer_sul is armed for; 0: not armed */
    uint64_t timer_order;
    /* connections woken (iotgw_conn_wake, iotgw_conn_close), served on the next turn */
    iotgw_list wakes;
    iotgw_timer wake_timer;
};

/* amqps.c: free the shared TLS settings (connections keep their own references) */
void amqps_domains_free(iotgw_loop *loop);

/* timer.c: forget the armed callback before the lws context goes */
void loop_timers_shutdown(iotgw_loop *loop);

struct iotgw_conn {
    iotgw_loop *loop;
    iotgw_listener *listener; /* NULL for clients */
    struct lws *wsi;          /* NULL once the socket is gone */
    iotgw_transport_kind kind;
    int is_server;
    pn_connection_driver_t driver;
    iotgw_conn_event_fn fn;
    void *ctx;
    uint8_t *pending_in; /* received, not yet taken by Proton (rx paused meanwhile) */
    size_t pending_len;
    size_t max_output;
    uint32_t split_state; /* nonzero: writes cut at random sizes (tests) */
    lws_sorted_usec_list_t tick_sul;
    int64_t tick_at; /* when tick_sul fires; 0: not scheduled */
    lws_sorted_usec_list_t grace_sul;
    lws_sorted_usec_list_t connect_sul; /* clients: the connect deadline */
    uint32_t connect_timeout_ms;
    int connected;  /* the socket can carry AMQP (TCP, TLS for WSS, upgrade done) */
    int in_connect; /* inside lws_client_connect_via_info: do not free */
    int closing_socket;
    int dispatching;
    int closed_seen; /* the owner has had PN_TRANSPORT_CLOSED */
    char peer[80];
    char host[256]; /* clients: where it connects, for connect_probe */
    int port;
    char peer_cn[128]; /* verified peer certificate's CN, or "" */
    /* AMQPS listeners (libwebsockets' TLS): why the handshake failed, or ""; whether
     * data has arrived (the handshake is done) */
    char tls_failure[256];
    int rx_started;
    /* server connections: every frame checked before Proton reads it (frame_guard.h);
     * once it refused one, nothing more of the peer's input reaches Proton */
    int guarded, input_refused;
    frame_guard guard;
    /* AMQPS (amqps.c): OpenSSL's first refusal of the peer's certificate, 0: none */
    int tls_verify_error, tls_verify_depth;
    SSL_verify_cb tls_next_verify; /* Proton's verify callback, which ours wraps */
    iotgw_list wake_node;          /* in loop->wakes while a wake is pending */
    int wake_event;                /* the owner asked for PN_CONNECTION_WAKE (iotgw_conn_wake) */
    iotgw_list loop_node;          /* in loop->conns */
};

struct iotgw_listener {
    iotgw_loop *loop;
    struct lws_vhost *vhost;
    iotgw_listener_options opt; /* strings below are owned copies */
    char *ws_path;
    char *address;
    char *cert_file, *key_file, *ca_file;
    char *ws_stream_subprotocol, *ws_stream_subprotocol_upper;
    struct lws_protocols protocols[5];
    struct timespec cert_mtime, key_mtime; /* the files as loaded (listener_refresh_certificate) */
    off_t cert_size, key_size;
    iotgw_list loop_node; /* in loop->listeners */
};

/* tls_peer.c: client certificates on listeners. Protocol 0 of a listener that asks for
 * client certificates answers LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION with
 * tls_peer_verify(wsi, user, (int)len, why, size): nonzero refuses the certificate (and logs
 * why, rate-limited; why, if not NULL, gets the reason in tls_reason.c's words). tls_peer_verified_cn: the CN of the peer's certificate if OpenSSL
 * verified it, else -1 and "". */
int tls_peer_verify(struct lws *wsi, void *x509_store_ctx, int preverify_ok, char *why, size_t why_size);
int tls_peer_verified_cn(struct lws *wsi, char *out, size_t size);
/* Before a TLS raw socket is closed: libwebsockets closes a raw socket without TLS's
 * close_notify, which peers (Proton among them) report as a truncated connection. Once
 * our output is flushed (only_in_answer 0), or when the peer's close_notify ended the
 * socket (only_in_answer 1: not after a reset). Nothing on a plain socket. */
void tls_close_notify(struct lws *wsi, int only_in_answer);

/* conn.c: the bridge between a socket and a Proton connection driver */
iotgw_conn *conn_new(iotgw_loop *loop, iotgw_transport_kind kind, int is_server, uint32_t idle_timeout_ms,
                     size_t max_output);
void conn_attach(iotgw_conn *c, struct lws *wsi, const char *peer);
/* A listener accepted wsi: a server connection attached to it, not yet announced. */
iotgw_conn *conn_accept(struct lws *wsi, iotgw_transport_kind kind);
/* Tell the listener's owner about it (on_accept) and start processing. */
void conn_announce(iotgw_conn *c);
/* A client's socket can carry AMQP now (TCP, and for WSS TLS and the upgrade, done). */
void conn_on_connected(iotgw_conn *c, struct lws *wsi);
/* Bytes arrived from the socket. Returns -1 when the callback should close the socket. */
int conn_on_bytes(iotgw_conn *c, const uint8_t *data, size_t len);
/* The socket can take data. Returns -1 when the callback should close the socket. */
int conn_on_writable(iotgw_conn *c, int ws);
/* The socket is gone (closed, reset, or never connected): tell the owner and free. */
void conn_on_socket_gone(iotgw_conn *c, struct lws *wsi, const char *cond_name, const char *description);
void conn_process(iotgw_conn *c);
/* libwebsockets is freeing wsi: if a connection still points at it, it is gone. */
void conn_on_wsi_destroy(struct lws *wsi);
/* The start of every connection callback: handles the reasons that concern no
 * connection (returns 1), else sets *c to wsi's connection, or NULL (returns 0). */
int conn_callback_prologue(struct lws *wsi, enum lws_callback_reasons reason, iotgw_conn **c);
int client_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
/* Clients: fail the connection unless the server's AMQP open arrives within ms (0: default). */
void conn_start_connect_deadline(iotgw_conn *c, uint32_t ms);
void conn_free_all(iotgw_loop *loop);
/* The wake timer's callback: serves loop->wakes. */
void loop_serve_wakes(iotgw_timer *t, void *ctx);

/* wss.c and amqps.c: the libwebsockets protocol callbacks */
int wss_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
int raw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
/* stream.c: a WSS listener's WebSocket connections on its stream subprotocol */
int ws_stream_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
/* client.c: a connect failure libwebsockets named only vaguely ("closed before
 * established"), in the system's words: why becomes "HOST:PORT: Connection refused
 * (libwebsockets: closed before established)" or the like (connect_probe.h). */
void conn_connect_failure_words(iotgw_conn *c, char *why, size_t size);
/* amqps.c: Proton's TLS layer on a connection's transport */
int amqps_setup_tls(iotgw_conn *c, const iotgw_tls_options *tls, const char *host, iotgw_diag *diag);
/* Why the peer's certificate was refused, if it was (1, the reason in out), else 0. */
int amqps_tls_refusal(iotgw_conn *c, char *out, size_t size);
/* http.c */
size_t http_request_size(void);

/* sasl_server.c: offer MSSBCBS, ANONYMOUS and (when the listener checks it) PLAIN */
void sasl_server_setup(iotgw_conn *c);

/* loop.c */
/* libwebsockets states why a TLS handshake failed only in its log, just before it
 * fails that connection: the last such reason, or "". */
const char *loop_tls_error(void);
/* ws_frame.c: one masked binary frame (FIN set) of n payload bytes written to out, which
 * has room for n + WS_CLIENT_FRAME_HEADER_MAX; returns its length, 0 if no masking key. */
#define WS_CLIENT_FRAME_HEADER_MAX 14
size_t ws_client_frame(uint8_t *out, const uint8_t *payload, size_t n);
/* listen_check.c: that a certificate and its key load and belong together */
int check_tls_files(const char *cert_file, const char *key_file, iotgw_diag *diag);
/* listener.c: before a TLS listener accepts: when its certificate or key file changed
 * (renewed in place), new connections get the new one once both load and match;
 * connections already open keep theirs. A stat() of each file per connection. */
void listener_refresh_certificate(iotgw_listener *l);
/* listen_check.c: before a listener is created, that its certificate and key load and
 * match (cert NULL: no TLS) and that its address can be bound (not in use, permitted, of
 * this host); 0, or an IOTGW_ERR_ code with the reason in diag. */
int listen_check(const char *address, int port, const char *cert_file, const char *key_file,
                 iotgw_diag *diag);
void loop_tls_error_clear(void);
struct lws_vhost *loop_client_vhost(iotgw_loop *loop, const iotgw_tls_options *tls, const char *proxy,
                                    iotgw_diag *diag);
const struct lws_protocols *loop_client_protocols(void);

#endif
