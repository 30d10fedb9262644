/* libiotgw-device's TLS (OpenSSL) under a connected non-blocking socket: handshake with
 * the gateway's certificate checked against a CA file and its name, an optional client
 * certificate, then reads and writes that behave like recv/send (EAGAIN when the socket
 * is not ready). Internal to the library. */
#ifndef IOTGW_DEVICE_TLS_H
#define IOTGW_DEVICE_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct dev_tls dev_tls;

/* Handshake within timeout_ms; NULL with err set on failure. */
dev_tls *dev_tls_start(int fd, const char *host, const char *ca_file, const char *cert_file,
                       const char *key_file, int timeout_ms, char *err, size_t errlen);
/* Like recv/send: bytes, 0 at the peer's close (read), -1 with errno (EAGAIN: not ready). */
ssize_t dev_tls_read(dev_tls *t, void *buf, size_t len);
ssize_t dev_tls_write(dev_tls *t, const void *buf, size_t len);
void dev_tls_free(dev_tls *t);

#endif
