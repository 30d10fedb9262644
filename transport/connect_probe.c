/* Why a client connection could not be made (transport/connect_probe.h). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "transport/connect_probe.h"

void connect_probe(const char *host, int port, char *out, size_t size)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) {
        snprintf(out, size, "cannot resolve %s: %s", host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }
    char addr[INET6_ADDRSTRLEN + 8] = "?";
    void *a = res->ai_family == AF_INET6 ? (void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                         : (void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, addr, sizeof addr);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0;
    if (fd < 0) {
        err = errno;
    } else if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        err = errno;
        if (err == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof err;
            if (poll(&p, 1, CONNECT_PROBE_MS) <= 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        }
    }
    int v6 = res->ai_family == AF_INET6;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    const char *why = err == ETIMEDOUT ? "no answer (a host that is down, or a firewall)"
                      : err            ? strerror(err)
                                       : "answers now: the peer closed before the connection was up";
    snprintf(out, size, v6 ? "[%s]:%d: %s" : "%s:%d: %s", addr, port, why);
}
