/* iotgw_async: an eventfd adopted by libwebsockets as a raw file (transport/async.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "transport/async.h"
#include "transport/internal.h"

#define LWS_PROTOCOL_ASYNC "iotgw-async"

struct iotgw_async {
    iotgw_loop *loop;
    int fd;
    struct lws_vhost *vhost;
    struct lws *wsi; /* the eventfd, watched; NULL once lws let go of it */
    struct lws_protocols protocols[2];
    iotgw_async_fn fn;
    void *ctx;
};

static int async_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user, (void)in, (void)len;
    iotgw_async *a = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (a) {
            uint64_t n;
            /* read first: a send that comes while fn runs makes it run again */
            while (read(a->fd, &n, sizeof n) < 0 && errno == EINTR)
                ;
            a->fn(a, a->ctx);
        }
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
    case LWS_CALLBACK_WSI_DESTROY: /* lws closes the descriptor */
        if (a) {
            a->wsi = NULL;
            a->fd = -1;
            lws_set_opaque_user_data(wsi, NULL);
        }
        return 0;
    default: return 0;
    }
}

iotgw_async *iotgw_async_new(iotgw_loop *loop, iotgw_async_fn fn, void *ctx, iotgw_diag *diag)
{
    iotgw_async *a = calloc(1, sizeof *a);
    if (!a) {
        iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->fn = fn;
    a->ctx = ctx;
    a->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->fd < 0) {
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "eventfd: %s", strerror(errno));
        free(a);
        return NULL;
    }
    a->protocols[0] = (struct lws_protocols){LWS_PROTOCOL_ASYNC, async_callback, 0, 0, 0, NULL, 0};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = "async";
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = a->protocols;
    a->vhost = lws_create_vhost(loop->ctx, &info);
    if (a->vhost) {
        lws_adopt_desc_t ad = {.vh = a->vhost,
                               .type = LWS_ADOPT_RAW_FILE_DESC,
                               .fd = {.filefd = a->fd},
                               .vh_prot_name = LWS_PROTOCOL_ASYNC,
                               .opaque = a};
        a->wsi = lws_adopt_descriptor_vhost_via_info(&ad);
    }
    if (!a->wsi) {
        iotgw_diag_fail(diag, IOTGW_ERR_INTERNAL, "libwebsockets would not watch an eventfd");
        iotgw_async_free(a);
        return NULL;
    }
    return a;
}

void iotgw_async_send(iotgw_async *a)
{
    uint64_t one = 1;
    /* EAGAIN: the counter is full, so a wake-up is pending anyway */
    while (write(a->fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void iotgw_async_free(iotgw_async *a)
{
    if (!a)
        return;
    if (a->wsi) {
        lws_set_opaque_user_data(a->wsi, NULL);
        lws_set_timeout(a->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_SYNC);
    } else if (a->fd >= 0) {
        close(a->fd);
    }
    if (a->vhost)
        lws_vhost_destroy(a->vhost);
    free(a);
}
