/*
 * failure_text: the one place where the transport reads meaning out of its libraries'
 * words. libwebsockets reports a WSS client's failure as text, logs a refused server
 * certificate as text, and Proton names its TLS layer's failures in a condition's
 * description; each function here recognises one such family of messages, as written
 * by libwebsockets 4.1 and Qpid Proton 0.37 (Debian 12). tests/unit/test_failure_text.c
 * holds every message recognised, so that a library upgrade that rewords one fails a
 * test rather than a user.
 *
 * Threading: pure, reentrant. Errors: none; "not recognised" is a return value.
 */
#ifndef IOTGW_TRANSPORT_FAILURE_TEXT_H
#define IOTGW_TRANSPORT_FAILURE_TEXT_H

#include <stddef.h>

/* A WSS client's LWS_CALLBACK_CLIENT_CONNECTION_ERROR text: IOTGW_COND_TLS,
 * IOTGW_COND_WEBSOCKET (the upgrade: "HS: ..."), or IOTGW_COND_CONNECT (anything else:
 * DNS, TCP, a peer that hung up). NULL text: IOTGW_COND_CONNECT. */
const char *failure_text_wss_client_condition(const char *why);

/* libwebsockets' log line for a server certificate OpenSSL refused, "SSL error: {words}
 * (preverify_ok=0;err={n};depth={d})": 1 with OpenSSL's verify error and depth (err 0
 * when the numbers are missing) and the words (*words, *words_len: without the numbers
 * and trailing blanks); 0 for any other line. */
int failure_text_lws_ssl_error(const char *line, int *err, int *depth, const char **words, size_t *words_len);

/* Proton's description of a TLS failure, "SSL Failure: {OpenSSL's text}": the reason
 * without OpenSSL's "error:{code}:{library}:{function}:" prefix, or NULL when the
 * description is not a TLS failure. */
const char *failure_text_proton_tls_reason(const char *description);

/* OpenSSL's words for a refused certificate ("certificate verify failed"). */
int failure_text_is_verify_failure(const char *reason);

#endif
