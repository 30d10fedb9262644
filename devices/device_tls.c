#include "devices/device_tls.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct dev_tls {
    SSL_CTX *ctx;
    SSL *ssl;
};

void dev_tls_free(dev_tls *t)
{
    if (!t)
        return;
    if (t->ssl)
        SSL_free(t->ssl);
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    free(t);
}

static dev_tls *fail(dev_tls *t, char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char detail[160] = "";
    if (e)
        ERR_error_string_n(e, detail, sizeof detail);
    snprintf(err, errlen, "TLS: %s%s%s", what, e ? ": " : "", detail);
    ERR_clear_error();
    dev_tls_free(t);
    return NULL;
}

dev_tls *dev_tls_start(int fd, const char *host, const char *ca_file, const char *cert_file,
                       const char *key_file, int timeout_ms, char *err, size_t errlen)
{
    dev_tls *t = calloc(1, sizeof *t);
    if (!t || !(t->ctx = SSL_CTX_new(TLS_client_method())))
        return fail(t, err, errlen, "no TLS context");
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file ? !SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL)
                : !SSL_CTX_set_default_verify_paths(t->ctx))
        return fail(t, err, errlen, "cannot load the CA certificates");
    if (cert_file &&
        (!SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) ||
         !SSL_CTX_use_PrivateKey_file(t->ctx, key_file ? key_file : cert_file, SSL_FILETYPE_PEM)))
        return fail(t, err, errlen, "cannot load the client certificate or key");
    if (!(t->ssl = SSL_new(t->ctx)) || !SSL_set_fd(t->ssl, fd))
        return fail(t, err, errlen, "no TLS session");
    /* our output buffer may move between a write that could not finish and its retry */
    SSL_set_mode(t->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    SSL_set_tlsext_host_name(t->ssl, host); /* SNI */
    SSL_set1_host(t->ssl, host);            /* the certificate must name the gateway */
    for (;;) {
        int rc = SSL_connect(t->ssl);
        if (rc == 1)
            return t;
        int e = SSL_get_error(t->ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            long v = SSL_get_verify_result(t->ssl);
            return fail(t, err, errlen,
                        v != X509_V_OK ? X509_verify_cert_error_string(v)
                                       : "the handshake with the gateway failed");
        }
        struct pollfd p = {.fd = fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        if (poll(&p, 1, timeout_ms) <= 0)
            return fail(t, err, errlen, "no TLS handshake in time");
    }
}

static ssize_t result(dev_tls *t, int n)
{
    if (n > 0)
        return n;
    switch (SSL_get_error(t->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default:
        errno = ECONNRESET;
        ERR_clear_error();
        return -1;
    }
}

ssize_t dev_tls_read(dev_tls *t, void *buf, size_t len)
{
    return result(t, SSL_read(t->ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len)));
}

ssize_t dev_tls_write(dev_tls *t, const void *buf, size_t len)
{
    return result(t, SSL_write(t->ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len)));
}
