/* TLS client certificates on listeners: the verification verdict and the verified name.
 *
 * libwebsockets runs OpenSSL's verification but then asks protocol 0 of the vhost,
 * through LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION, whether to accept the
 * certificate; a callback that returns 0 (every default one) accepts it whatever
 * OpenSSL found (lib/tls/openssl/openssl-server.c, OpenSSL_verify_callback: "return !n").
 * So every listener that asks for client certificates answers that callback here, and
 * a peer's name is read only from a certificate that OpenSSL verified. */
#include <stdio.h>
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "transport/internal.h"
#include "transport/log.h"
#include "transport/stream.h"
#include "transport/tls_reason.h"

/* One refusal line per few seconds at most, whatever a peer tries. */
static iotgw_log_limit refusals;
static uint64_t refused; /* the event-loop thread only, as every listener */

uint64_t iotgw_tls_client_cert_refusals(void)
{
    return refused;
}

int tls_peer_verify(struct lws *wsi, void *x509_store_ctx, int preverify_ok, char *out, size_t out_size)
{
    if (preverify_ok)
        return 0;
    X509_STORE_CTX *x = x509_store_ctx;
    refused++; /* our nonzero answer ends the handshake: one call refuses once */
    char why[256], subject[160] = "", peer[64] = "";
    tls_reason_describe(X509_STORE_CTX_get_error(x), X509_STORE_CTX_get_error_depth(x), 0, NULL, why,
                        sizeof why);
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    if (cert)
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    if (wsi)
        lws_get_peer_simple(wsi, peer, sizeof peer);
    iotgw_log_limited(&refusals, IOTGW_LOG_WARN, "TLS: client certificate from %s refused: %s; subject %s",
                      peer[0] ? peer : "?", why, subject[0] ? subject : "?");
    if (out && out_size)
        snprintf(out, out_size, "%s", why);
    return 1; /* nonzero: lws tells OpenSSL to fail the handshake */
}

void tls_close_notify(struct lws *wsi, int only_in_answer)
{
    SSL *ssl = lws_get_ssl(wsi);
    if (!ssl || !SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) ||
        (only_in_answer && !(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)))
        return;
    (void)SSL_shutdown(ssl); /* one record; if the socket cannot take it, the peer sees EOF */
}

int tls_peer_verified_cn(struct lws *wsi, char *out, size_t size)
{
    out[0] = '\0';
    SSL *ssl = lws_get_ssl(wsi);
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert)
        return -1;
    char big[sizeof(union lws_tls_cert_info_results) + 128];
    union lws_tls_cert_info_results *info = (union lws_tls_cert_info_results *)big;
    int rc = lws_tls_peer_cert_info(wsi, LWS_TLS_CERT_INFO_COMMON_NAME, info, 127);
    X509_free(cert);
    if (rc || !info->ns.len || memchr(info->ns.name, '\0', (size_t)info->ns.len) ||
        (size_t)info->ns.len >= size)
        return -1; /* a name with a NUL in it, or too long, names nobody */
    snprintf(out, size, "%.*s", info->ns.len, info->ns.name);
    return 0;
}
