/*
 * Byte streams on the event loop: a TCP listener whose connections hand their bytes to
 * the owner and write what the owner gives them, with bounded output and read pausing.
 * The gateway's device endpoint runs on these; AMQP connections do not (transport.h).
 *
 * At the open-file limit a listener neither spins nor floods the log: a connection that
 * would eat into the descriptors the process keeps (transport/fdlimit.h) is refused at
 * once, after opt.refusal is sent to a plain-TCP peer; when accept() itself fails for
 * lack of descriptors, the listener stops accepting until some are free again (it tries
 * after 100 ms to 1 s, and when one of its streams closes). Both are logged, rate-limited.
 *
 * Ownership: the loop owns streams and stream listeners. A stream lives until its
 * on_closed has returned; the owner drops its pointer there. Bytes passed to
 * iotgw_stream_write() are copied.
 *
 * Threading: the iotgw_loop's thread only.
 *
 * Errors: functions return 0 or a negative IOTGW_ERR_* code with a message in the diag.
 * A stream's end reaches on_closed with a reason in words: the peer closed, a reset,
 * the output limit, or the owner's own close.
 */
#ifndef IOTGW_TRANSPORT_STREAM_H
#define IOTGW_TRANSPORT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

typedef struct iotgw_stream iotgw_stream;
typedef struct iotgw_stream_listener iotgw_stream_listener;

typedef struct iotgw_stream_handler {
    /* Bytes arrived. Return 0, or -1 to close the stream now (on_closed follows). */
    int (*on_data)(iotgw_stream *s, const uint8_t *data, size_t len, void *ctx);
    /* The stream is gone; reason says why. It is freed when this returns. */
    void (*on_closed)(iotgw_stream *s, const char *reason, void *ctx);
} iotgw_stream_handler;

/* A connection was accepted: set its handler with iotgw_stream_set_handler(). */
typedef void (*iotgw_stream_accept_fn)(iotgw_stream_listener *l, iotgw_stream *s, void *ctx);

typedef struct iotgw_stream_listener_options {
    const char *address; /* "127.0.0.1", "::1", "0.0.0.0"; NULL: all interfaces */
    int port;            /* 0: any free port (see iotgw_stream_listener_port) */
    iotgw_stream_accept_fn on_accept;
    void *ctx;
    size_t max_output;      /* per stream: unsent bytes before it is closed; 0: 1 MiB */
    iotgw_tls_options tls;  /* cert_file and key_file: TLS 1.2+ on every stream; ca_file too:
                               clients must present a certificate it signed */
    const uint8_t *refusal; /* sent to a plain-TCP connection refused at the open-file limit, */
    size_t refusal_len;     /* then closed (at most 256 bytes, copied); NULL: closed unanswered */
} iotgw_stream_listener_options;

int iotgw_stream_listener_new(iotgw_loop *loop, const iotgw_stream_listener_options *opt,
                              iotgw_stream_listener **out, iotgw_diag *diag);
int iotgw_stream_listener_port(const iotgw_stream_listener *l);
/* What the listener refused: connections accepted and closed at once near the
 * open-file limit, and times accept() failed for lack of descriptors (then it paused). */
void iotgw_stream_listener_refusals(const iotgw_stream_listener *l, uint64_t *near_limit, uint64_t *paused);
/* Client certificates refused at the TLS handshake, by every listener of the process. */
uint64_t iotgw_tls_client_cert_refusals(void);
/* Stop listening (not from inside on_accept); accepted streams go on. */
void iotgw_stream_listener_free(iotgw_stream_listener *l);

void iotgw_stream_set_handler(iotgw_stream *s, const iotgw_stream_handler *h, void *ctx);
/* Queue bytes for the peer. IOTGW_ERR_BUFFER_TOO_SMALL when that would pass
 * max_output: the stream is then closed ("peer does not read"). */
int iotgw_stream_write(iotgw_stream *s, const void *data, size_t len);
size_t iotgw_stream_pending_output(const iotgw_stream *s);
/* Stop (1) or resume (0) reading from the peer. */
void iotgw_stream_pause(iotgw_stream *s, int paused);
/* Close: once what was written has left (flush), or at once. on_closed follows. */
void iotgw_stream_close(iotgw_stream *s, int flush);
/* "127.0.0.1:50412", for logs. */
const char *iotgw_stream_peer(const iotgw_stream *s);
/* The common name of the client's verified certificate (listeners with tls.ca_file), or
 * NULL. Known once the first bytes have arrived. */
const char *iotgw_stream_peer_cn(const iotgw_stream *s);

#endif
