/* Why a listener cannot start, in words a user can act on, checked before libwebsockets
 * tries: it only says that creating the vhost failed, and it keeps retrying an address
 * that is not on this host (it takes it for an interface that may come up later). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "transport/internal.h"

static int tls_fail(iotgw_diag *diag, const char *what, const char *file)
{
    char reason[256] = "unreadable";
    unsigned long e = ERR_peek_error(); /* the first is the cause; the last is "PEM lib" */
    if (access(file, R_OK))
        snprintf(reason, sizeof reason, "%s", strerror(errno));
    else if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS %s '%s': %s", what, file, reason);
}

int check_tls_files(const char *cert_file, const char *key_file, iotgw_diag *diag)
{
    if (!cert_file)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    int rc = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
        rc = tls_fail(diag, "certificate", cert_file);
    else if (SSL_CTX_use_PrivateKey_file(ctx, key_file ? key_file : cert_file, SSL_FILETYPE_PEM) != 1)
        rc = tls_fail(diag, "key", key_file ? key_file : cert_file);
    else if (SSL_CTX_check_private_key(ctx) != 1)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "TLS key '%s' does not belong to certificate '%s'",
                             key_file ? key_file : cert_file, cert_file);
    SSL_CTX_free(ctx);
    return rc;
}

/* Bind a throw-away socket where the listener would, and report what the system says. */
static int bind_errno(const char *address, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (!address || inet_pton(AF_INET, address, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        if (!address)
            in4->sin_addr.s_addr = htonl(INADDR_ANY);
        len = sizeof *in4;
    } else if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        len = sizeof *in6;
    } else {
        return 0; /* an interface name: libwebsockets resolves it */
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* as libwebsockets does */
    int err = bind(fd, (struct sockaddr *)&ss, len) ? errno : 0;
    close(fd);
    return err;
}

int listen_check(const char *address, int port, const char *cert_file, const char *key_file, iotgw_diag *diag)
{
    if (check_tls_files(cert_file, key_file, diag))
        return diag ? diag->code : IOTGW_ERR_INVALID_ARG;
    int err = bind_errno(address, port);
    const char *hint = err == EADDRINUSE      ? " (another program listens there)"
                       : err == EACCES        ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                       : err == EADDRNOTAVAIL ? " (not an address of this host)"
                                              : "";
    if (err)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "cannot listen on %s:%d: %s%s",
                               address ? address : "*", port, strerror(err), hint);
    return 0;
}
