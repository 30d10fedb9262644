/*
 * The process's open-file limit (RLIMIT_NOFILE), which bounds its connections: raising
 * the soft limit at start, and the descriptors kept back from accepted connections.
 *
 * Raise before iotgw_loop_new(): libwebsockets sizes its descriptor table from the limit
 * when the loop is created and refuses any descriptor above it afterwards. It allocates
 * 16 bytes per possible descriptor then, so the soft limit is raised to the hard limit
 * but not past IOTGW_FD_LIMIT_CAP (16 MiB at the 1,048,576 containers often allow); a
 * soft limit already higher is kept, so an operator can still choose more.
 *
 * Stream listeners (transport/stream.h) refuse a connection whose descriptor would leave
 * fewer than iotgw_fd_reserve() free under the limit: the process keeps those for its
 * own connections and files (the gateway's hub connections, a reload's files).
 *
 * Ownership: nothing is allocated. Threading: the reserve is process-wide; set it before
 * the loop runs. Errors: 0 or a negative IOTGW_ERR_* code with a message in the diag.
 */
#ifndef IOTGW_TRANSPORT_FDLIMIT_H
#define IOTGW_TRANSPORT_FDLIMIT_H

#include "transport/transport.h"

#define IOTGW_FD_LIMIT_CAP       65536
#define IOTGW_FD_RESERVE_DEFAULT 16

typedef struct iotgw_fd_limit {
    long soft;   /* in force (or, with apply 0, what raising would give) */
    long before; /* the soft limit found */
    long hard;
} iotgw_fd_limit;

/* Raise the soft limit (apply 1) or only say what raising would give (apply 0). */
int iotgw_fd_limit_raise(int apply, iotgw_fd_limit *out, iotgw_diag *diag);
/* The soft limit in force now. */
long iotgw_fd_limit_now(void);

void iotgw_fd_reserve_set(long n);
long iotgw_fd_reserve(void);

#endif
