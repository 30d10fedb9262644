/* iotgw_conn_connect: a client connection over WSS or AMQPS. */
#include <stdio.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/sasl.h>
#include <proton/transport.h>

#include "transport/connect_probe.h"
#include "transport/internal.h"

int iotgw_conn_connect(iotgw_loop *loop, const iotgw_client_options *opt, iotgw_conn_event_fn fn, void *ctx,
                       iotgw_conn **out, iotgw_diag *diag)
{
    if (!loop || !opt || !opt->host || !*opt->host ||
        (opt->kind != IOTGW_TRANSPORT_WSS && opt->kind != IOTGW_TRANSPORT_AMQPS))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "a client needs a host and a transport kind");
    if (opt->proxy && opt->kind != IOTGW_TRANSPORT_WSS)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "a proxy is supported for WSS only");
    int port = opt->port ? opt->port : opt->kind == IOTGW_TRANSPORT_WSS ? 443 : 5671;

    struct lws_vhost *vh = loop_client_vhost(loop, &opt->tls, opt->proxy, diag);
    if (!vh)
        return diag ? diag->code : IOTGW_ERR_INVALID_ARG;
    iotgw_conn *c = conn_new(loop, opt->kind, 0, opt->idle_timeout_ms, opt->max_output);
    if (!c)
        return IOTGW_ERR_NOMEM;
    c->split_state = opt->split_seed;
    snprintf(c->host, sizeof c->host, "%s", opt->host);
    c->port = port;
    snprintf(c->peer, sizeof c->peer, "%s %s:%d", opt->kind == IOTGW_TRANSPORT_WSS ? "wss" : "amqps",
             opt->host, port);

    pn_connection_t *pc = c->driver.connection;
    pn_connection_set_hostname(pc, opt->host);
    pn_transport_t *t = c->driver.transport;
    if (opt->sasl_anonymous) {
        pn_sasl_t *sasl = pn_sasl(t);
        pn_sasl_set_allow_insecure_mechs(sasl, true);
        pn_sasl_allowed_mechs(sasl, "ANONYMOUS");
    }
    if (opt->tls.insecure)
        lwsl_err("WARNING: TLS verification is OFF for %s: the peer's identity is not checked\n", c->peer);

    if (opt->kind == IOTGW_TRANSPORT_AMQPS) {
        int rc = amqps_setup_tls(c, &opt->tls, opt->host, diag);
        if (rc) {
            iotgw_conn_set_handler(c, NULL, NULL);
            conn_on_socket_gone(c, NULL, IOTGW_COND_TLS, "TLS set-up failed");
            return rc;
        }
    }

    struct lws_client_connect_info info;
    memset(&info, 0, sizeof info);
    info.context = loop->ctx;
    info.vhost = vh;
    info.address = opt->host;
    info.port = port;
    info.host = opt->host;
    info.opaque_user_data = c;
    if (opt->kind == IOTGW_TRANSPORT_WSS) {
        info.path = opt->path ? opt->path : IOTGW_WS_DEFAULT_PATH;
        info.origin = opt->host;
        info.protocol = IOTGW_WS_SUBPROTOCOL;
        info.local_protocol_name = IOTGW_WS_SUBPROTOCOL;
        info.ssl_connection = LCCSCF_USE_SSL;
        if (opt->tls.insecure)
            info.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                                   LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
    } else {
        info.method = "RAW";
        info.local_protocol_name = LWS_PROTOCOL_RAW;
    }
    /* Configure Proton now (bind the transport) so the owner can open links at once. */
    pn_connection_driver_bind(&c->driver);

    /* lws may report a failure inside this call: the owner then gets an error return
     * and no events, and the connection is not freed under our feet meanwhile. */
    iotgw_conn_set_handler(c, NULL, NULL);
    c->in_connect = 1;
    struct lws *wsi = lws_client_connect_via_info(&info);
    c->in_connect = 0;
    if (!wsi || c->closed_seen) {
        pn_condition_t *cond = pn_transport_condition(c->driver.transport);
        char why[300];
        if (pn_condition_is_set(cond))
            snprintf(why, sizeof why, "%s", pn_condition_get_description(cond));
        else /* libwebsockets says nothing; most often the name did not resolve */
            connect_probe(opt->host, port, why, sizeof why);
        int rc = iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "could not connect to %s:%d: %s", opt->host,
                                 port, why);
        if (!c->closed_seen)
            conn_on_socket_gone(c, NULL, IOTGW_COND_CONNECT, "could not start connecting"); /* frees it */
        else
            conn_process(c); /* frees it */
        *out = NULL;
        return rc;
    }
    c->wsi = wsi;
    iotgw_conn_set_handler(c, fn, ctx);
    conn_start_connect_deadline(c, opt->connect_timeout_ms);
    *out = c;
    return IOTGW_OK;
}

void conn_connect_failure_words(iotgw_conn *c, char *why, size_t size)
{
    char lws_words[120], os_words[300];
    snprintf(lws_words, sizeof lws_words, "%s", why);
    connect_probe(c->host, c->port, os_words, sizeof os_words);
    snprintf(why, size, "%s (libwebsockets: %s)", os_words, lws_words);
}
