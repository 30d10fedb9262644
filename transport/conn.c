/*
 * The bridge between one socket and one Proton connection driver, shared by WSS and
 * AMQPS, client and server.
 *
 *   socket bytes in  -> driver read buffer (what does not fit waits, and the socket
 *                       stops being read until Proton has room: back-pressure)
 *   driver events    -> the owner's handler
 *   driver output    -> written only when the socket is writable, WRITE_CHUNK at a time;
 *                       output the peer does not take grows to at most max_output, then
 *                       the connection fails with IOTGW_COND_OUTPUT_LIMIT
 *   driver deadlines -> pn_transport_tick() on a libwebsockets timer (heartbeats, idle timeout)
 *   driver finished  -> the socket is closed; the socket gone -> the owner sees
 *                       PN_TRANSPORT_CLOSED and the connection is freed
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/event.h>
#include <proton/object.h>
#include <proton/sasl.h>
#include <proton/ssl.h>
#include <proton/transport.h>

#include "transport/failure_text.h"
#include "transport/internal.h"
#include "transport/log.h"

#define MIN_PEER_IDLE_MS 100 /* a shorter idle-time-out from a peer is refused */

static void link_in(iotgw_loop *loop, iotgw_conn *c)
{
    iotgw_list_push_front(&loop->conns, &c->loop_node);
}

static void link_out(iotgw_conn *c)
{
    iotgw_list_remove(&c->loop_node);
}

iotgw_conn *conn_new(iotgw_loop *loop, iotgw_transport_kind kind, int is_server, uint32_t idle_timeout_ms,
                     size_t max_output)
{
    iotgw_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (pn_connection_driver_init(&c->driver, NULL, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    iotgw_list_init(&c->wake_node);
    iotgw_list_init(&c->loop_node);
    c->kind = kind;
    c->is_server = is_server;
    c->max_output = max_output ? max_output : DEFAULT_MAX_OUTPUT;
    snprintf(c->peer, sizeof c->peer, "%s (connecting)", kind == IOTGW_TRANSPORT_WSS ? "wss" : "amqps");
    pn_transport_t *t = c->driver.transport;
    pn_transport_set_idle_timeout(t, idle_timeout_ms ? idle_timeout_ms : IOTGW_DEFAULT_IDLE_TIMEOUT_MS);
    /* Without a limit Proton buffers whatever frame size a peer announces (up to 4 GiB);
     * IoT Hub itself advertises 65536. A larger frame is a framing error. */
    pn_transport_set_max_frame(t, IOTGW_MAX_FRAME_SIZE);
    if (is_server) {
        pn_transport_set_server(t);
        c->guarded = 1;
        c->guard.max_frame = IOTGW_MAX_FRAME_SIZE;
        /* Official SDKs either open a SASL layer or send the bare AMQP header: accept both.
         * Proton detects which from the 8-byte protocol header. */
        sasl_server_setup(c);
    }
    link_in(loop, c);
    return c;
}

void conn_attach(iotgw_conn *c, struct lws *wsi, const char *peer)
{
    c->wsi = wsi;
    c->connected = 1;
    lws_set_opaque_user_data(wsi, c);
    snprintf(c->peer, sizeof c->peer, "%s %s", c->kind == IOTGW_TRANSPORT_WSS ? "wss" : "amqps", peer);
}

iotgw_conn *conn_accept(struct lws *wsi, iotgw_transport_kind kind)
{
    iotgw_listener *l = lws_get_vhost_user(lws_get_vhost(wsi));
    if (!l)
        return NULL;
    iotgw_conn *c = conn_new(l->loop, kind, 1, l->opt.idle_timeout_ms, l->opt.max_output);
    if (!c)
        return NULL;
    c->listener = l;
    c->split_state = l->opt.split_seed;
    char peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    conn_attach(c, wsi, peer);
    return c;
}

void conn_announce(iotgw_conn *c)
{
    if (c->listener && c->listener->opt.on_accept)
        c->listener->opt.on_accept(c->listener, c, c->listener->opt.ctx);
    conn_process(c);
}

pn_connection_t *iotgw_conn_connection(iotgw_conn *c)
{
    return c->driver.connection;
}

pn_transport_t *iotgw_conn_transport(iotgw_conn *c)
{
    return c->driver.transport;
}

const char *iotgw_conn_peer(iotgw_conn *c)
{
    return c->peer;
}

const char *iotgw_conn_peer_cn(iotgw_conn *c)
{
    if (!c->peer_cn[0] && c->kind == IOTGW_TRANSPORT_AMQPS && !c->is_server) { /* Proton's TLS */
        pn_ssl_t *ssl = pn_ssl(c->driver.transport);
        const char *cn =
            ssl ? pn_ssl_get_remote_subject_subfield(ssl, PN_SSL_CERT_SUBJECT_COMMON_NAME) : NULL;
        if (cn)
            snprintf(c->peer_cn, sizeof c->peer_cn, "%s", cn);
    }
    return c->peer_cn[0] ? c->peer_cn : NULL;
}

void iotgw_conn_set_handler(iotgw_conn *c, iotgw_conn_event_fn fn, void *ctx)
{
    c->fn = fn;
    c->ctx = ctx;
}

void *iotgw_conn_context(iotgw_conn *c)
{
    return c->ctx;
}

void iotgw_conn_encode_pending(iotgw_conn *c)
{
    (void)pn_transport_pending(c->driver.transport); /* runs Proton's output side into its buffer */
}

size_t iotgw_conn_pending_output(iotgw_conn *c)
{
    ssize_t n = pn_transport_pending(c->driver.transport);
    return n > 0 ? (size_t)n : 0;
}

static void destroy(iotgw_conn *c)
{
    iotgw_list_remove(&c->wake_node);
    lws_sul_cancel(&c->tick_sul);
    lws_sul_cancel(&c->grace_sul);
    lws_sul_cancel(&c->connect_sul);
    if (c->wsi) { /* still connecting, or closing: forget it and let lws close it */
        lws_set_opaque_user_data(c->wsi, NULL);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    link_out(c);
    pn_connection_driver_destroy(&c->driver);
    frame_guard_free(&c->guard);
    free(c->pending_in);
    free(c);
}

static void tick_cb(lws_sorted_usec_list_t *sul)
{
    iotgw_conn *c = lws_container_of(sul, iotgw_conn, tick_sul);
    c->tick_at = 0;
    conn_process(c);
}

static void schedule_tick(iotgw_conn *c)
{
    int64_t now = iotgw_loop_now_ms(c->loop);
    int64_t next = pn_transport_tick(c->driver.transport, now);
    /* Armed for that moment or an earlier one: leave it. Each frame moves the idle
     * deadlines later, and re-arming costs a sorted insert among every connection's
     * timers (lws_dll2_add_sorted: O(connections) per frame); firing early only brings
     * this call again, which arms the later deadline then. */
    if (next == c->tick_at || (next > 0 && c->tick_at > 0 && next > c->tick_at))
        return;
    c->tick_at = next;
    if (next > 0)
        lws_sul_schedule(c->loop->ctx, 0, &c->tick_sul, tick_cb,
                         (lws_usec_t)(next > now ? next - now : 0) * 1000);
    else
        lws_sul_cancel(&c->tick_sul);
}

static void close_refused(iotgw_conn *c);

static void grace_cb(lws_sorted_usec_list_t *sul)
{
    iotgw_conn *c = lws_container_of(sul, iotgw_conn, grace_sul);
    if (!pn_connection_driver_finished(&c->driver)) {
        if (c->input_refused) /* the reason the owner sees at PN_TRANSPORT_CLOSED */
            pn_connection_driver_errorf(&c->driver, c->guard.cond, "%s", c->guard.why);
        pn_connection_driver_close(&c->driver);
        conn_process(c);
    }
}

/* Give Proton what waited for room; resume reading the socket once all of it fitted. */
static void feed_pending(iotgw_conn *c)
{
    while (c->pending_len) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
        if (rb.size == 0)
            return;
        size_t n = rb.size < c->pending_len ? rb.size : c->pending_len;
        memcpy(rb.start, c->pending_in, n);
        pn_connection_driver_read_done(&c->driver, n);
        memmove(c->pending_in, c->pending_in + n, c->pending_len - n);
        c->pending_len -= n;
    }
    if (c->wsi && !pn_connection_driver_read_closed(&c->driver))
        lws_rx_flow_control(c->wsi, 1);
}

static void close_socket_when_flushed(iotgw_conn *c)
{
    if (c->wsi && c->connected && !c->closing_socket) {
        c->closing_socket = 1;
        lws_callback_on_writable(c->wsi);
    }
}

/* Proton reports its TLS layer's failures as framing errors "SSL Failure: ...": give
 * them our TLS condition so that owners need not parse text, and say why a certificate
 * was refused, which Proton's text does not (amqps.c notes OpenSSL's verdict). */
static void name_tls_failure(iotgw_conn *c)
{
    pn_condition_t *cond = pn_transport_condition(c->driver.transport);
    const char *why = failure_text_proton_tls_reason(pn_condition_get_description(cond));
    if (!why)
        return;
    char refusal[192], text[320];
    if (amqps_tls_refusal(c, refusal, sizeof refusal))
        snprintf(text, sizeof text, "TLS handshake failed: %s", refusal);
    else /* not a certificate refusal, or one we could not watch: the usual reasons */
        snprintf(text, sizeof text, "TLS handshake failed: %s%s", why,
                 failure_text_is_verify_failure(why) ? " (the peer's certificate is not signed by a "
                                                       "trusted CA, names another host, or has expired)"
                                                     : "");
    pn_condition_set_name(cond, IOTGW_COND_TLS);
    pn_condition_set_description(cond, text);
}

/* Run the owner's handler over every pending event, then settle what follows from them:
 * output to write, the next deadline, the socket to close. */
void conn_process(iotgw_conn *c)
{
    if (c->dispatching)
        return; /* the outer call will see the new events */
    c->dispatching = 1;
    feed_pending(c);
    pn_event_t *e;
    do {
        while ((e = pn_connection_driver_next_event(&c->driver))) {
            if (pn_event_type(e) == PN_TRANSPORT_CLOSED)
                c->closed_seen = 1;
            if (pn_event_type(e) == PN_TRANSPORT_ERROR)
                name_tls_failure(c);
            if (pn_event_type(e) == PN_CONNECTION_REMOTE_OPEN)
                lws_sul_cancel(&c->connect_sul);
            if (c->fn)
                c->fn(c, e, c->ctx);
        }
        /* Asking for output runs Proton's output side, which may close the transport's
         * head and queue more events (e.g. after a TLS failure): deliver those too. */
        (void)pn_connection_driver_write_buffer(&c->driver);
        if (c->input_refused == 1)
            close_refused(c);
    } while (pn_connection_driver_has_event(&c->driver));
    c->dispatching = 0;

    /* A peer's idle-time-out under MIN_PEER_IDLE_MS (1 ms makes Proton's next heartbeat
     * due at once, forever: the loop would spin writing empty frames); any open frame may
     * set it, so it is looked at each time. */
    pn_millis_t idle = pn_transport_get_remote_idle_timeout(c->driver.transport);
    if (idle && idle < MIN_PEER_IDLE_MS && !pn_connection_driver_write_closed(&c->driver)) {
        pn_connection_driver_errorf(&c->driver, "amqp:invalid-field", "idle-time-out %u ms is below %u ms",
                                    (unsigned)idle, (unsigned)MIN_PEER_IDLE_MS);
        pn_connection_driver_close(&c->driver);
        conn_process(c);
        return;
    }
    if (iotgw_conn_pending_output(c) > c->max_output && !pn_connection_driver_write_closed(&c->driver)) {
        pn_connection_driver_errorf(&c->driver, IOTGW_COND_OUTPUT_LIMIT,
                                    "more than %zu bytes of output waiting: the peer is not reading",
                                    c->max_output);
        pn_connection_driver_close(&c->driver);
        conn_process(c);
        return;
    }
    if (c->closed_seen && (!c->wsi || !c->connected)) {
        if (!c->in_connect)
            destroy(c);
        return;
    }
    if (pn_connection_driver_finished(&c->driver)) {
        lws_sul_cancel(&c->tick_sul);
        close_socket_when_flushed(c);
        return;
    }
    schedule_tick(c);
    if (c->wsi && c->connected && pn_connection_driver_write_buffer(&c->driver).size)
        lws_callback_on_writable(c->wsi);
}

void conn_on_connected(iotgw_conn *c, struct lws *wsi)
{
    c->wsi = wsi;
    c->connected = 1;
    conn_process(c);
}

/* The guard refused a frame: Proton never sees it nor anything after it. The peer gets
 * the AMQP close with the guard's condition (if the AMQP layer is up; in the SASL layer
 * it only sees the socket end), then the socket is cut after CLOSE_GRACE_MS. */
static void refuse_input(iotgw_conn *c)
{
    static iotgw_log_limit refusals; /* the loop's thread only */
    c->input_refused = 1; /* conn_process closes (close_refused) */
    c->pending_len = 0;
    iotgw_log_limited(&refusals, IOTGW_LOG_WARN, "AMQP peer %s refused: %s: %s", c->peer, c->guard.cond,
                      c->guard.why);
    lws_sul_schedule(c->loop->ctx, 0, &c->grace_sul, grace_cb, (lws_usec_t)CLOSE_GRACE_MS * 1000);
}

/* After the owner saw the events of what came before the refused frame (it would open
 * what is closed here before them). */
static void close_refused(iotgw_conn *c)
{
    c->input_refused = 2;
    pn_connection_t *pc = c->driver.connection;
    pn_condition_set_name(pn_connection_condition(pc), c->guard.cond);
    pn_condition_set_description(pn_connection_condition(pc), c->guard.why);
    if (!(pn_connection_state(pc) & PN_LOCAL_CLOSED))
        pn_connection_close(pc);
}

int conn_on_bytes(iotgw_conn *c, const uint8_t *data, size_t len)
{
    if (c->input_refused)
        return 0; /* dropped: the socket is cut when the grace ends */
    int refused = 0;
    if (c->guarded) {
        size_t ok = frame_guard_scan(&c->guard, data, len);
        refused = ok < len;
        len = ok;
    }
    if (refused) {
        /* what came before the refused frame, then nothing more; not ahead of input still
         * parked (Proton would read the stream out of order): then the peer loses both */
        while (len && !c->pending_len) {
            pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
            if (rb.size == 0)
                break; /* Proton is full: the peer loses what it sent before, no one else */
            size_t n = rb.size < len ? rb.size : len;
            memcpy(rb.start, data, n);
            pn_connection_driver_read_done(&c->driver, n);
            data += n;
            len -= n;
        }
        refuse_input(c);
        conn_process(c);
        return 0;
    }
    if (c->pending_len == 0) {
        while (len) {
            pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
            if (rb.size == 0)
                break;
            size_t n = rb.size < len ? rb.size : len;
            memcpy(rb.start, data, n);
            pn_connection_driver_read_done(&c->driver, n);
            data += n;
            len -= n;
        }
    }
    if (len) {
        if (pn_connection_driver_read_closed(&c->driver)) {
            len = 0; /* Proton has stopped reading (it failed or closed): drop the rest */
        } else {
            /* Keep what Proton cannot take yet and stop reading the socket until it can. */
            if (c->pending_len + len > MAX_PARKED_INPUT) {
                pn_connection_driver_errorf(&c->driver, IOTGW_COND_INPUT_LIMIT,
                                            "more than %d bytes arrived while reading was paused",
                                            MAX_PARKED_INPUT);
                pn_connection_driver_close(&c->driver);
                conn_process(c);
                return -1;
            }
            uint8_t *nb = realloc(c->pending_in, c->pending_len + len);
            if (!nb)
                return -1;
            memcpy(nb + c->pending_len, data, len);
            c->pending_in = nb;
            c->pending_len += len;
            lws_rx_flow_control(c->wsi, 0);
        }
    }
    conn_process(c);
    return 0;
}

int conn_on_writable(iotgw_conn *c, int ws)
{
    pn_bytes_t wb = pn_connection_driver_write_buffer(&c->driver);
    if (wb.size) {
        size_t n = wb.size < WRITE_CHUNK ? wb.size : WRITE_CHUNK;
        if (c->split_state) { /* xorshift32: frames of 1..4096 bytes */
            c->split_state ^= c->split_state << 13, c->split_state ^= c->split_state >> 17,
                c->split_state ^= c->split_state << 5;
            size_t cut = 1 + c->split_state % 4096;
            n = n < cut ? n : cut;
        }
        static uint8_t buf[LWS_PRE + WS_CLIENT_FRAME_HEADER_MAX + WRITE_CHUNK];
        int w;
        /* lws keeps what the kernel does not take and sends it before anything else. */
        if (ws && !c->is_server) { /* framed and masked here: see ws_frame.c */
            size_t len = ws_client_frame(buf + LWS_PRE, (const uint8_t *)wb.start, n);
            w = len ? lws_write(c->wsi, buf + LWS_PRE, len, LWS_WRITE_RAW) : -1;
        } else {
            memcpy(buf + LWS_PRE, wb.start, n);
            w = lws_write(c->wsi, buf + LWS_PRE, n, ws ? LWS_WRITE_BINARY : LWS_WRITE_RAW);
        }
        if (w < 0) {
            pn_connection_driver_errorf(&c->driver, IOTGW_COND_IO, "write to %s failed", c->peer);
            pn_connection_driver_close(&c->driver);
            conn_process(c);
            return -1;
        }
        pn_connection_driver_write_done(&c->driver, n);
    }
    conn_process(c);
    if (c->closing_socket && !pn_connection_driver_write_buffer(&c->driver).size &&
        !lws_partial_buffered(c->wsi)) {
        if (!ws && c->is_server)
            tls_close_notify(c->wsi, 0);
        return -1;
    }
    return 0;
}

void conn_on_socket_gone(iotgw_conn *c, struct lws *wsi, const char *cond_name, const char *description)
{
    if (wsi)
        lws_set_opaque_user_data(wsi, NULL); /* no later callback reaches c */
    c->wsi = NULL;
    char tls[sizeof c->tls_failure + 32];
    if (c->tls_failure[0]) { /* the socket ended because the TLS handshake failed */
        snprintf(tls, sizeof tls, "TLS handshake failed: %s", c->tls_failure);
        cond_name = IOTGW_COND_TLS, description = tls;
    }
    pn_condition_t *cond = pn_transport_condition(c->driver.transport);
    /* After both closes the socket's end loses nothing: a TLS server (libwebsockets') closes
     * as soon as its close_notify is out, before Proton has written ours */
    pn_state_t both_closed = PN_LOCAL_CLOSED | PN_REMOTE_CLOSED;
    int clean = (pn_connection_state(c->driver.connection) & both_closed) == both_closed && !c->tls_failure[0];
    if (!pn_connection_driver_finished(&c->driver) && !clean && !pn_condition_is_set(cond))
        pn_condition_set_name(cond, cond_name), pn_condition_set_description(cond, description);
    pn_connection_driver_close(&c->driver);
    conn_process(c); /* delivers PN_TRANSPORT_CLOSED and frees */
}

void conn_on_wsi_destroy(struct lws *wsi)
{
    iotgw_conn *c = lws_get_opaque_user_data(wsi);
    /* Still ours: lws freed the socket without a close callback (seen with its libuv
     * backend when a server drops a WSS client during the upgrade). Report it now
     * rather than keep a pointer to a freed socket. */
    if (c && c->wsi == wsi)
        conn_on_socket_gone(c, wsi, IOTGW_COND_IO, "connection closed by the peer");
}

int conn_callback_prologue(struct lws *wsi, enum lws_callback_reasons reason, iotgw_conn **c)
{
    *c = NULL;
    switch (reason) {
    case LWS_CALLBACK_GET_THREAD_ID: /* pseudo-connections of lws: no vhost, no user data */
    case LWS_CALLBACK_PROTOCOL_INIT:
    case LWS_CALLBACK_PROTOCOL_DESTROY: return 1;
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi)
            conn_on_wsi_destroy(wsi);
        return 1;
    default: *c = wsi ? lws_get_opaque_user_data(wsi) : NULL; return 0;
    }
}

/* Deferred: the next turn of the loop serves it (loop_serve_wakes). */
static void schedule_wake(iotgw_conn *c)
{
    iotgw_loop *loop = c->loop;
    if (!iotgw_list_linked(&c->wake_node))
        iotgw_list_push_back(&loop->wakes, &c->wake_node);
    if (!iotgw_timer_active(&loop->wake_timer))
        iotgw_timer_start(&loop->wake_timer, 0, 0);
}

void iotgw_conn_wake(iotgw_conn *c)
{
    c->wake_event = 1;
    schedule_wake(c);
}

/* The connections woken before this turn began, each once; a wake asked for while
 * serving waits for the next turn. */
void loop_serve_wakes(iotgw_timer *t, void *ctx)
{
    (void)t;
    iotgw_loop *loop = ctx;
    iotgw_list batch;
    iotgw_list_init(&batch);
    iotgw_list_move_all(&batch, &loop->wakes);
    iotgw_list *n;
    while ((n = iotgw_list_first(&batch))) {
        iotgw_conn *c = iotgw_list_entry(n, iotgw_conn, wake_node);
        iotgw_list_remove(n);
        if (c->wake_event && !c->closed_seen) {
            c->wake_event = 0;
            pn_collector_put(c->driver.collector, PN_OBJECT, c->driver.connection, PN_CONNECTION_WAKE);
        }
        conn_process(c); /* may free c */
    }
}

static void connect_deadline_cb(lws_sorted_usec_list_t *sul)
{
    iotgw_conn *c = lws_container_of(sul, iotgw_conn, connect_sul);
    /* the peer's open arrived (Proton's state says so), or the connection is over */
    if (!(pn_connection_state(c->driver.connection) & PN_REMOTE_UNINIT) ||
        pn_connection_driver_finished(&c->driver))
        return;
    pn_connection_driver_errorf(&c->driver, IOTGW_COND_CONNECT, "no AMQP open from %s within %u ms", c->peer,
                                c->connect_timeout_ms);
    pn_connection_driver_close(&c->driver);
    conn_process(c);
}

void conn_start_connect_deadline(iotgw_conn *c, uint32_t ms)
{
    c->connect_timeout_ms = ms ? ms : IOTGW_DEFAULT_CONNECT_TIMEOUT_MS;
    lws_sul_schedule(c->loop->ctx, 0, &c->connect_sul, connect_deadline_cb,
                     (lws_usec_t)c->connect_timeout_ms * 1000);
}


void iotgw_conn_close(iotgw_conn *c, const char *cond_name, const char *description)
{
    pn_connection_t *pc = c->driver.connection;
    if (cond_name) {
        pn_condition_t *cond = pn_connection_condition(pc);
        pn_condition_set_name(cond, cond_name);
        pn_condition_set_description(cond, description);
    }
    if (!(pn_connection_state(pc) & PN_LOCAL_CLOSED))
        pn_connection_close(pc);
    lws_sul_schedule(c->loop->ctx, 0, &c->grace_sul, grace_cb, (lws_usec_t)CLOSE_GRACE_MS * 1000);
    schedule_wake(c); /* its events reach the handler on the next turn, not inside this call */
}

void conn_free_all(iotgw_loop *loop)
{
    iotgw_list *n;
    while ((n = iotgw_list_first(&loop->conns))) {
        iotgw_conn *c = iotgw_list_entry(n, iotgw_conn, loop_node);
        if (c->wsi) {
            lws_set_opaque_user_data(c->wsi, NULL);
            c->wsi = NULL;
        }
        pn_condition_t *cond = pn_transport_condition(c->driver.transport);
        if (!pn_condition_is_set(cond))
            pn_condition_set_name(cond, IOTGW_COND_IO),
                pn_condition_set_description(cond, "event loop shut down");
        pn_connection_driver_close(&c->driver);
        conn_process(c); /* the owner sees PN_TRANSPORT_CLOSED; destroy() unlinks it */
        if (iotgw_list_first(&loop->conns) == n) /* already finished before: free it here */
            destroy(c);
    }
}
