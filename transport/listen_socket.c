/* Listening sockets bound as libwebsockets binds its own (lws_socket_bind and
 * lws_interface_to_sa in 4.1.6), for the listeners that accept by themselves. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/listen_socket.h"

/* The first address of interface name, or of the interface holding a link-local
 * address (its scope); 0 when there is none. */
static int from_interfaces(const char *name, const struct in6_addr *link_local, struct sockaddr_storage *ss)
{
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs))
        return 0;
    int found = 0;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || !i->ifa_name)
            continue;
        int family = i->ifa_addr->sa_family;
        if (link_local) {
            if (family == AF_INET6 &&
                !memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, link_local, sizeof *link_local)) {
                ((struct sockaddr_in6 *)ss)->sin6_scope_id = if_nametoindex(i->ifa_name);
                found = 1;
            }
        } else if (!strcmp(i->ifa_name, name) && (family == AF_INET || family == AF_INET6)) {
            memcpy(ss, i->ifa_addr,
                   family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
            found = 1;
        }
    }
    freeifaddrs(ifs);
    return found;
}

/* Where to bind; 0, or -1 when address is neither an address nor an interface here. */
static int to_sockaddr(const char *address, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (address && inet_pton(AF_INET, address, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
    } else if (!address || inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6; /* NULL: in6addr_any, all zeros */
        if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr))
            from_interfaces(NULL, &in6->sin6_addr, ss);
    } else if (!from_interfaces(address, NULL, ss)) {
        return -1;
    }
    if (ss->ss_family == AF_INET) {
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
    } else {
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    }
    return 0;
}

int listen_socket_open(const char *address, int port, int *port_out, iotgw_diag *diag)
{
    const char *shown = address ? address : "*";
    struct sockaddr_storage ss;
    socklen_t len;
    if (to_sockaddr(address, port, &ss, &len)) {
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG,
                        "cannot listen on %s:%d: not an IP address or network interface of this host", shown,
                        port);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&ss, len) || listen(fd, SOMAXCONN) ||
        getsockname(fd, (struct sockaddr *)&ss, &len)) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "cannot listen on %s:%d: %s", shown, port,
                        strerror(err));
        return -1;
    }
    *port_out = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}
