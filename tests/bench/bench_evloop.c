/*
 * Event-loop backends at scale: libwebsockets' default poll() backend against its libuv
 * backend (Debian's libwebsockets-evlib-uv), serving IDLE idle TCP connections while
 * BUSY other connections ping-pong 64-byte messages through an echo, for SECONDS.
 *
 * This measures the library to choose a backend, so it drives libwebsockets directly.
 * The server runs in a child process; this process is the load generator (epoll). The
 * figures: echoes per second, round-trip p50/p99, and the server's CPU time per echo
 * (from /proc), which is what a backend's O(n) per-event cost would show in.
 *
 * Environment: BENCH_IDLE (10000), BENCH_BUSY (1000), BENCH_SECONDS (5),
 * BENCH_BACKENDS ("poll libuv").
 */
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "tests/common/clock_env.h"

#define MSG     64
#define HIST_US 200000 /* latency histogram range, 1 us buckets */

struct echo_pss {
    uint8_t buf[LWS_PRE + 4096];
    size_t len;
};

static int echo_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct echo_pss *p = user;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX:
        if (p->len + len > sizeof p->buf - LWS_PRE)
            return -1;
        memcpy(p->buf + LWS_PRE + p->len, in, len);
        p->len += len;
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE:
        if (p->len && lws_write(wsi, p->buf + LWS_PRE, p->len, LWS_WRITE_RAW) < 0)
            return -1;
        p->len = 0;
        return 0;
    default: return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"echo", echo_cb, sizeof(struct echo_pss), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void raise_fd_limit(void)
{
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
}

/* Child: the echo server. Writes its port to fd, then serves until killed. */
static void serve(const char *backend, int fd)
{
    raise_fd_limit();
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options =
        LWS_SERVER_OPTION_EXPLICIT_VHOSTS | (strcmp(backend, "libuv") ? 0 : LWS_SERVER_OPTION_LIBUV);
    struct lws_context *ctx = lws_create_context(&info);
    memset(&info, 0, sizeof info);
    info.port = 0;
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG | LWS_SERVER_OPTION_DISABLE_IPV6;
    info.listen_accept_role = "raw-skt";
    info.listen_accept_protocol = "echo";
    struct lws_vhost *vh = ctx ? lws_create_vhost(ctx, &info) : NULL;
    int port = vh ? lws_get_vhost_listen_port(vh) : -1;
    if (write(fd, &port, sizeof port) != sizeof port || port < 0)
        _exit(1);
    for (;;)
        lws_service(ctx, 0);
}

static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* fields after the command name */
    unsigned long utime = 0, stime = 0;
    if (p)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int connect_to(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -1;
    }
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    return s;
}

static int run(const char *backend, int idle, int busy, int seconds)
{
    int pfd[2];
    if (pipe(pfd))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        serve(backend, pfd[1]);
    }
    close(pfd[1]);
    int port = -1;
    if (read(pfd[0], &port, sizeof port) != sizeof port || port < 0) {
        fprintf(stderr, "bench_evloop: %s server did not start\n", backend);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 1;
    }
    close(pfd[0]);

    int total = idle + busy, *fds = calloc((size_t)total, sizeof *fds), opened = 0;
    for (int i = 0; i < total; i++) {
        fds[i] = connect_to(port);
        if (fds[i] < 0) {
            fprintf(stderr, "bench_evloop: connection %d failed: %s\n", i, strerror(errno));
            break;
        }
        opened++;
    }
    int ep = epoll_create1(0);
    double *sent_at = calloc((size_t)total, sizeof *sent_at);
    unsigned *hist = calloc(HIST_US + 1, sizeof *hist);
    uint8_t msg[MSG], buf[4096];
    memset(msg, 'x', sizeof msg);
    for (int i = idle; i < opened; i++) { /* busy connections: one message in flight each */
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        sent_at[i] = now_s();
        if (write(fds[i], msg, MSG) != MSG)
            fprintf(stderr, "bench_evloop: short write\n");
    }
    sleep(1); /* let the server settle */
    double cpu0 = cpu_seconds(pid), t0 = now_s(), end = t0 + seconds;
    unsigned long echoes = 0;
    struct epoll_event evs[256];
    while (now_s() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            ssize_t r = read(fds[i], buf, sizeof buf);
            if (r <= 0)
                continue;
            double t = now_s();
            long us = (long)((t - sent_at[i]) * 1e6);
            hist[us < 0 ? 0 : us > HIST_US ? HIST_US : us]++;
            echoes++;
            sent_at[i] = t;
            if (write(fds[i], msg, MSG) != MSG)
                fprintf(stderr, "bench_evloop: short write\n");
        }
    }
    double elapsed = now_s() - t0, cpu = cpu_seconds(pid) - cpu0;
    unsigned long acc = 0;
    long p50 = -1, p99 = -1;
    for (long us = 0; us <= HIST_US; us++) {
        acc += hist[us];
        if (p50 < 0 && acc * 2 >= echoes)
            p50 = us;
        if (p99 < 0 && acc * 100 >= echoes * 99)
            p99 = us;
    }
    printf("%-6s %5d idle + %4d busy: %9.0f echoes/s  p50 %5ld us  p99 %6ld us  server CPU %.2f s/s, %.2f "
           "us/echo\n",
           backend, opened - busy > 0 ? opened - busy : 0, busy, (double)echoes / elapsed, p50, p99,
           cpu / elapsed, echoes ? cpu * 1e6 / (double)echoes : 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    close(ep);
    free(fds), free(sent_at), free(hist);
    return opened == total ? 0 : 1;
}

int main(void)
{
    raise_fd_limit();
    int idle = env_int("BENCH_IDLE", 10000), busy = env_int("BENCH_BUSY", 1000);
    int seconds = env_int("BENCH_SECONDS", 5);
    const char *backends = getenv("BENCH_BACKENDS") ? getenv("BENCH_BACKENDS") : "poll libuv";
    printf("iotgw event-loop benchmark: %d idle + %d busy TCP connections on loopback, 64-byte echo, %d s "
           "each\n",
           idle, busy, seconds);
    int rc = 0;
    char list[64];
    snprintf(list, sizeof list, "%s", backends);
    for (char *b = strtok(list, " "); b; b = strtok(NULL, " "))
        rc |= run(b, idle, busy, seconds);
    return rc;
}
