/*
 * AMQP over TLS (AMQPS): libwebsockets carries plain TCP bytes ("raw" sockets) and
 * Proton's own TLS layer (pn_ssl) encrypts them, for clients and servers.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <proton/condition.h>
#include <proton/ssl.h>
#include <proton/transport.h>

#include "transport/internal.h"

/* Where Debian keeps the system's trusted CAs, used when no CA file is given. */
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

static pn_ssl_domain_t *make_domain(pn_ssl_mode_t mode, const iotgw_tls_options *tls, iotgw_diag *diag)
{
    pn_ssl_domain_t *d = pn_ssl_domain(mode);
    if (!d) {
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "Proton has no TLS support");
        return NULL;
    }
    if (pn_ssl_domain_set_protocols(d, "TLSv1.2 TLSv1.3")) {
        pn_ssl_domain_free(d);
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "could not restrict TLS to 1.2 and later");
        return NULL;
    }
    if (tls->cert_file && pn_ssl_domain_set_credentials(
                              d, tls->cert_file, tls->key_file ? tls->key_file : tls->cert_file, NULL)) {
        pn_ssl_domain_free(d);
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS certificate '%s' or key '%s' unreadable or invalid",
                        tls->cert_file, tls->key_file ? tls->key_file : tls->cert_file);
        return NULL;
    }
    if (mode == PN_SSL_MODE_SERVER && tls->ca_file) { /* clients must prove who they are */
        if (pn_ssl_domain_set_trusted_ca_db(d, tls->ca_file) ||
            pn_ssl_domain_set_peer_authentication(d, PN_SSL_VERIFY_PEER, tls->ca_file)) {
            pn_ssl_domain_free(d);
            iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS CA file '%s' unreadable or invalid",
                            tls->ca_file);
            return NULL;
        }
    }
    if (mode == PN_SSL_MODE_CLIENT) {
        const char *ca = tls->ca_file ? tls->ca_file : SYSTEM_CA_BUNDLE;
        int rc = tls->insecure ? pn_ssl_domain_set_peer_authentication(d, PN_SSL_ANONYMOUS_PEER, NULL)
                               : pn_ssl_domain_set_trusted_ca_db(d, ca) ||
                                     pn_ssl_domain_set_peer_authentication(d, PN_SSL_VERIFY_PEER_NAME, NULL);
        if (rc) {
            pn_ssl_domain_free(d);
            iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS CA file '%s' unreadable or invalid", ca);
            return NULL;
        }
    }
    return d;
}

int amqps_setup_tls(iotgw_conn *c, const iotgw_tls_options *tls, const char *host, iotgw_diag *diag)
{
    pn_ssl_domain_t *d = make_domain(c->is_server ? PN_SSL_MODE_SERVER : PN_SSL_MODE_CLIENT, tls, diag);
    if (!d)
        return IOTGW_ERR_INVALID_ARG;
    pn_ssl_t *ssl = pn_ssl(c->driver.transport);
    int rc = pn_ssl_init(ssl, d, NULL);
    pn_ssl_domain_free(d); /* the transport keeps its own reference */
    if (rc)
        return iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "could not start TLS");
    if (host)
        pn_ssl_set_peer_hostname(ssl, host); /* SNI and the name check */
    return IOTGW_OK;
}

/* Accepted TCP: a server connection with Proton's TLS layer on it. */
static iotgw_conn *accept_raw(struct lws *wsi)
{
    iotgw_conn *c = conn_accept(wsi, IOTGW_TRANSPORT_AMQPS);
    iotgw_diag d;
    if (c && amqps_setup_tls(c, &c->listener->opt.tls, NULL, &d)) {
        lwsl_err("amqps listener: %s\n", d.text);
        conn_on_socket_gone(c, wsi, IOTGW_COND_TLS, d.text);
        return NULL;
    }
    return c;
}

int raw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    iotgw_conn *c;
    if (conn_callback_prologue(wsi, reason, &c))
        return 0;
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT: /* server: accepted */
        c = accept_raw(wsi);
        if (!c)
            return -1;
        conn_announce(c);
        return 0;

    case LWS_CALLBACK_RAW_CONNECTED: /* client: TCP connected */
        if (!c)
            return -1;
        conn_on_connected(c, wsi);
        return 0;

    case LWS_CALLBACK_RAW_RX:
        if (!c)
            return -1;
        return conn_on_bytes(c, in, len);

    case LWS_CALLBACK_RAW_WRITEABLE:
        if (!c)
            return -1;
        return conn_on_writable(c, 0);

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c)
            conn_on_socket_gone(c, wsi, IOTGW_COND_CONNECT, in ? (const char *)in : "connection failed");
        return 0;

    case LWS_CALLBACK_RAW_CLOSE:
        if (c)
            conn_on_socket_gone(c, wsi, IOTGW_COND_IO, "connection closed by the peer");
        return 0;

    default: return 0;
    }
}
