/*
 * A listening TCP socket bound where libwebsockets 4.1.6 binds a vhost's (its
 * lws_socket_bind), for listeners that accept connections themselves:
 *   NULL          every interface, IPv6 and IPv4 alike ([::], the system's bindv6only);
 *   "127.0.0.1"   that IPv4 address only ("0.0.0.0": every IPv4 address);
 *   "::1", "::"   that IPv6 address (a link-local one on its interface); "::" takes IPv4
 *                 too unless the system's bindv6only says not;
 *   "eth0"        an interface name: its first address.
 * SO_REUSEADDR as libwebsockets sets it, close-on-exec, non-blocking, the system's
 * largest backlog.
 *
 * Ownership: the descriptor is the caller's to close. Threading: any.
 * Errors: -1 with "cannot listen on ADDRESS:PORT: reason" in the diag (listen_check's words).
 */
#ifndef IOTGW_TRANSPORT_LISTEN_SOCKET_H
#define IOTGW_TRANSPORT_LISTEN_SOCKET_H

#include "transport/transport.h"

/* The descriptor, with the port it got in *port_out (port 0: one the system chose). */
int listen_socket_open(const char *address, int port, int *port_out, iotgw_diag *diag);

#endif
