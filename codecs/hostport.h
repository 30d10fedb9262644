/*
 * "HOST:PORT" as users write it on command lines and in configuration: a name or IPv4
 * address, or an IPv6 address in brackets ("[::1]:443"), then a decimal port 0..65535.
 */
#ifndef IOTGW_CODECS_HOSTPORT_H
#define IOTGW_CODECS_HOSTPORT_H

#include <stddef.h>

/* Split text into host (brackets removed, NUL-terminated, at most host_size - 1 bytes)
 * and port. 0, or IOTGW_ERR_INVALID_ARG when there is no host, no port, a port that is
 * not a number in 0..65535, or a host that does not fit. */
int iotgw_hostport_parse(const char *text, char *host, size_t host_size, int *port);

#endif
