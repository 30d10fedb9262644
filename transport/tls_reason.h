/*
 * Why OpenSSL refused a peer's certificate, as one sentence for a connection's
 * condition or a log line: the WSS path (libwebsockets' log, transport/loop.c) and the
 * AMQPS path (Proton's TLS layer, transport/amqps.c) both name a refusal through this,
 * so the same problem reads the same on both.
 *
 * Ownership: the caller's buffer; nothing is kept.
 * Threading: pure; any thread.
 * Errors: none; an unknown code still gives a sentence (with OpenSSL's text for it).
 */
#ifndef IOTGW_TRANSPORT_TLS_REASON_H
#define IOTGW_TRANSPORT_TLS_REASON_H

#include <stddef.h>

/* err: OpenSSL's X509_V_ERR_* verify result; depth: where in the chain the refused
 * certificate is (0: the peer's own, <0: unknown); peer_is_server: the peer whose
 * certificate it is was the server (we are the client); host: the name the client
 * asked for, for a name mismatch (NULL: not known here). Writes at most size bytes. */
void tls_reason_describe(int err, int depth, int peer_is_server, const char *host, char *out, size_t size);

#endif
