/* AMQP over WebSocket: the libwebsockets protocol "AMQPWSB10", client and server side. */
#include <stdio.h>
#include <string.h>

#include "transport/failure_text.h"
#include "transport/internal.h"

/* Protocol 0 of client vhosts: a WSS client belongs to it until the upgrade is done. */
int client_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    if (reason == LWS_CALLBACK_WSI_DESTROY && wsi)
        conn_on_wsi_destroy(wsi);
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* The upgrade is done: a server connection; note the verified client certificate. */
static iotgw_conn *accept_ws(struct lws *wsi)
{
    iotgw_conn *c = conn_accept(wsi, IOTGW_TRANSPORT_WSS);
    if (c && c->listener->opt.tls.ca_file)
        tls_peer_verified_cn(wsi, c->peer_cn, sizeof c->peer_cn);
    return c;
}

int wss_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    iotgw_conn *c;
    if (conn_callback_prologue(wsi, reason, &c))
        return 0;
    char why[200];

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: /* server: upgrade done */
        c = accept_ws(wsi);
        if (!c)
            return -1;
        conn_announce(c);
        return 0;

    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c)
            return -1;
        conn_on_connected(c, wsi);
        return 0;

    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!c)
            return -1;
        return conn_on_bytes(c, in, len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!c)
            return -1;
        return conn_on_writable(c, 1);

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c) {
            snprintf(why, sizeof why, "%s", in ? (const char *)in : "connection failed");
            int status = (int)lws_http_client_http_response(wsi);
            const char *cond = failure_text_wss_client_condition(why);
            if (status && status != 101) {
                snprintf(why, sizeof why, "WebSocket upgrade refused with HTTP status %d", status);
                cond = IOTGW_COND_WEBSOCKET;
            } else if (loop_tls_error()[0]) {
                snprintf(why, sizeof why, "TLS handshake failed: %s", loop_tls_error());
                cond = IOTGW_COND_TLS;
            } else if (!strcmp(cond, IOTGW_COND_CONNECT) && c->host[0]) {
                conn_connect_failure_words(c, why, sizeof why);
            }
            loop_tls_error_clear();
            conn_on_socket_gone(c, wsi, cond, why);
        }
        return 0;

    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c)
            conn_on_socket_gone(c, wsi, IOTGW_COND_IO, "connection closed by the peer");
        return 0;

    default: return 0;
    }
    (void)user;
}
