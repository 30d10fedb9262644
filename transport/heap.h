/*
 * Memory freed after a burst of connections, given back to the system.
 *
 * glibc keeps what is freed inside its heap for reuse; after a burst of connections has
 * come and gone (each holds libwebsockets', OpenSSL's and the owner's state: 1.8 KiB for
 * an idle TCP connection, 45 KiB for one stopped half-way through its TLS handshake) the
 * freed pages stay resident, scattered between live allocations where shrinking the heap
 * cannot reach them: +8.6 MB after 5,000 idle connections, 8.6 -> 39.5 MB after rounds of
 * 600 half-open TLS ones. malloc_trim(0) releases such pages. iotgw_heap_release() does
 * so when it is worth it: at least IOTGW_HEAP_SLACK bytes free in the heap, and that
 * much freed, or that much more resident, since it last looked or trimmed; so a steady
 * process never pays for it, and each trim follows a change of that size.
 *
 * Ownership: nothing. Threading: process-wide state; call from one thread (the gateway:
 * its loop's once a second). Errors: none; it returns the bytes of resident memory given
 * back (0 when it did not trim).
 */
#ifndef IOTGW_TRANSPORT_HEAP_H
#define IOTGW_TRANSPORT_HEAP_H

#include <stddef.h>

#define IOTGW_HEAP_SLACK (4u << 20)

size_t iotgw_heap_release(void);

#endif
