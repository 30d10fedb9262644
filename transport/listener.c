/* iotgw_listener: a WSS (with HTTP), AMQPS or plain HTTP listening socket. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "transport/internal.h"
#include "transport/log.h"

/* Whether path changed since *mtime and *size were taken, which are taken again. */
static int stamp_changed(const char *path, struct timespec *mtime, off_t *size)
{
    struct stat st;
    if (!path || stat(path, &st))
        return 0;
    int changed = st.st_size != *size || st.st_mtim.tv_sec != mtime->tv_sec || st.st_mtim.tv_nsec != mtime->tv_nsec;
    *mtime = st.st_mtim, *size = st.st_size;
    return changed;
}

int iotgw_listener_new(iotgw_loop *loop, const iotgw_listener_options *opt, iotgw_listener **out,
                       iotgw_diag *diag)
{
    if (!loop || !opt ||
        (opt->kind != IOTGW_TRANSPORT_WSS && opt->kind != IOTGW_TRANSPORT_AMQPS &&
         opt->kind != IOTGW_TRANSPORT_HTTP))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "a listener needs a transport kind");
    int plain = opt->kind == IOTGW_TRANSPORT_HTTP;
    if (!plain && (!opt->tls.cert_file || !opt->tls.key_file))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                               "a listener needs a TLS certificate and key file");
    iotgw_listener *l = calloc(1, sizeof *l);
    if (!l)
        return IOTGW_ERR_NOMEM;
    l->loop = loop;
    iotgw_list_init(&l->loop_node);
    l->opt = *opt;
    l->ws_path = strdup(opt->ws_path ? opt->ws_path : IOTGW_WS_DEFAULT_PATH);
    l->address = iotgw_strdup_or_null(opt->address);
    l->cert_file = plain ? NULL : strdup(opt->tls.cert_file);
    l->key_file = plain ? NULL : strdup(opt->tls.key_file);
    l->ca_file = plain ? NULL : iotgw_strdup_or_null(opt->tls.ca_file);
    l->ws_stream_subprotocol = opt->kind == IOTGW_TRANSPORT_WSS && opt->on_ws_stream
                                   ? iotgw_strdup_or_null(opt->ws_stream_subprotocol)
                                   : NULL;
    l->opt.ws_stream_subprotocol = l->ws_stream_subprotocol;
    if (l->ws_stream_subprotocol) {
        l->ws_stream_subprotocol_upper = strdup(l->ws_stream_subprotocol);
        for (char *p = l->ws_stream_subprotocol_upper; p && *p; p++)
            *p = (char)toupper((unsigned char)*p);
        if (!l->ws_stream_subprotocol_upper) {
            iotgw_listener_free(l);
            return IOTGW_ERR_NOMEM;
        }
    }
    l->opt.ws_path = l->ws_path;
    l->opt.address = l->address;
    l->opt.tls.cert_file = l->cert_file;
    l->opt.tls.key_file = l->key_file;
    l->opt.tls.ca_file = l->ca_file;

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = opt->port;
    info.iface = l->address;
    info.user = l;
    info.options = plain ? 0 : LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    /* lws binds an IPv4 address only with IPv6 off for the vhost; otherwise it listens
     * on every interface, which a bind address must never mean. */
    if (l->address && strchr(l->address, '.') && !strchr(l->address, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (plain) {
        info.vhost_name = "http";
        info.options |= LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG;
        l->protocols[0] =
            (struct lws_protocols){LWS_PROTOCOL_HTTP, http_callback, http_request_size(), 0, 0, NULL, 0};
    } else if (opt->kind == IOTGW_TRANSPORT_WSS) {
        info.vhost_name = "wss";
        /* A request whose method lws does not know comes to http.c (protocols[0]) as raw
         * bytes, to be answered in the owner's error shape, not with lws' own HTML 403. */
        info.options |= LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG;
        l->protocols[0] =
            (struct lws_protocols){LWS_PROTOCOL_HTTP, http_callback, http_request_size(), 0, 0, NULL, 0};
        l->protocols[1] = (struct lws_protocols){IOTGW_WS_SUBPROTOCOL, wss_callback, 0, RX_CHUNK, 0, NULL, 0};
        if (l->ws_stream_subprotocol) { /* lws matches names exactly; clients write "mqtt" or "MQTT" */
            l->protocols[2] =
                (struct lws_protocols){l->ws_stream_subprotocol, ws_stream_callback, 0, RX_CHUNK, 0, NULL, 0};
            if (strcmp(l->ws_stream_subprotocol_upper, l->ws_stream_subprotocol))
                l->protocols[3] = (struct lws_protocols){
                    l->ws_stream_subprotocol_upper, ws_stream_callback, 0, RX_CHUNK, 0, NULL, 0};
        }
    } else {
        /* TLS by libwebsockets, AMQP in plaintext to conn.c (amqps.c) */
        info.vhost_name = "amqps";
        l->protocols[0] = (struct lws_protocols){LWS_PROTOCOL_RAW, raw_callback, 0, RX_CHUNK, 0, NULL, 0};
        info.options |= LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
        info.listen_accept_role = "raw-skt";
        info.listen_accept_protocol = LWS_PROTOCOL_RAW;
        info.ssl_info_event_mask = SSL_CB_ALERT; /* a fatal alert we send says why (amqps.c) */
    }
    if (!plain) {
        info.ssl_cert_filepath = l->cert_file;
        info.ssl_private_key_filepath = l->key_file;
        info.ssl_options_set = SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1; /* TLS 1.2+ */
        if (l->ca_file) { /* clients must present a certificate this CA signed */
            info.ssl_ca_filepath = l->ca_file;
            info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
        }
    }
    info.protocols = l->protocols;

    /* Check the files and address now: a bad certificate fails at start-up, with the
     * reason (libwebsockets' own words would only say that it failed). */
    int rc = listen_check(l->address, opt->port, l->cert_file, l->key_file, diag);
    l->vhost = rc ? NULL : lws_create_vhost(loop->ctx, &info);
    if (!l->vhost) {
        if (!rc)
            rc =
                iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "cannot listen on %s:%d (libwebsockets refused)",
                                l->address ? l->address : "*", opt->port);
        iotgw_listener_free(l);
        return rc;
    }
    if (!plain)
        (void)stamp_changed(l->cert_file, &l->cert_mtime, &l->cert_size),
            (void)stamp_changed(l->key_file, &l->key_mtime, &l->key_size);
    iotgw_list_push_front(&loop->listeners, &l->loop_node);
    *out = l;
    return IOTGW_OK;
}

void listener_refresh_certificate(iotgw_listener *l)
{
    int changed = stamp_changed(l->cert_file, &l->cert_mtime, &l->cert_size);
    changed |= stamp_changed(l->key_file, &l->key_mtime, &l->key_size);
    if (!changed)
        return;
    iotgw_diag d = {0};
    if (check_tls_files(l->cert_file, l->key_file, &d)) { /* half written, perhaps: the next try */
        l->cert_size = l->key_size = -1;
        static iotgw_log_limit not_yet; /* tried again at each accept: one line per window */
        iotgw_log_limited(&not_yet, IOTGW_LOG_WARN, "listener: the changed certificate is not used yet: %s",
                          d.text);
        return;
    }
    lws_tls_cert_updated(l->loop->ctx, l->cert_file, l->key_file, NULL, 0, NULL, 0);
}

int iotgw_listener_port(const iotgw_listener *l)
{
    return lws_get_vhost_listen_port(l->vhost);
}

void iotgw_listener_free(iotgw_listener *l)
{
    if (!l)
        return;
    iotgw_list_remove(&l->loop_node);
    /* Connections accepted here outlive it as plain connections. */
    iotgw_conn *c;
    IOTGW_LIST_FOREACH (c, &l->loop->conns, iotgw_conn, loop_node)
        if (c->listener == l)
            c->listener = NULL;
    if (l->vhost)
        lws_vhost_destroy(l->vhost);
    free(l->ws_path), free(l->ws_stream_subprotocol), free(l->ws_stream_subprotocol_upper), free(l->address),
        free(l->cert_file), free(l->key_file), free(l->ca_file);
    free(l);
}
