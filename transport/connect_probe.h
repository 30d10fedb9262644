/*
 * Why a client connection could not be made, in the operating system's words.
 * libwebsockets 4.1 reads a failed connect's SO_ERROR itself (which clears it) and then
 * reports only "closed before established", and a failed name lookup as no connection
 * at all; so when a connection fails that way the transport asks once more, itself:
 * the name looked up, then one non-blocking connect to its first address, waited for at
 * most CONNECT_PROBE_MS. This runs on the loop's thread and blocks it that long at most,
 * once per failed connection attempt (whose owner backs off between attempts).
 *
 * Threading: any thread. Errors: none; out always holds a sentence.
 */
#ifndef IOTGW_TRANSPORT_CONNECT_PROBE_H
#define IOTGW_TRANSPORT_CONNECT_PROBE_H

#include <stddef.h>

#define CONNECT_PROBE_MS 100

/* e.g. "cannot resolve hub.example: Name or service not known", "127.0.0.1:5671:
 * Connection refused", "10.0.0.1:443: no answer (a host that is down, or a firewall)";
 * or, when the probe gets through, "...: answers now: the peer closed before the
 * connection was up". */
void connect_probe(const char *host, int port, char *out, size_t size);

#endif
