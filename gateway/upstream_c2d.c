/* A device's cloud-to-device receiver (shared/docs/iothub-amqp-protocol.md 4.3). The
 * hub gets credit for c2d_credit messages at a time: at most that many wait for the
 * owner to settle them, the rest stay queued at the hub, which is where a slow device's
 * messages belong. Settling maps complete/reject/abandon to accepted/rejected/released. */
#include <stdio.h>
#include <stdlib.h>
#include <proton/connection.h>
#include <proton/delivery.h>

#include "gateway/upstream_internal.h"
#include "transport/log.h"
#include "transport/messaging.h"

#define C2D_MESSAGE_MAX (256 * 1024) /* the hub's limit is 64 KB */

void up_c2d_attach(iotgw_upstream_device *dev)
{
    char address[UP_ADDRESS_MAX];
    up_device_address_checked(dev, "/messages/devicebound", address, sizeof address);
    dev->c2d = up_open_link(dev, 0, "c2d", address, NULL);
    pn_link_set_rcv_settle_mode(dev->c2d, PN_RCV_FIRST);
    pn_link_open(dev->c2d);
    pn_link_flow(dev->c2d, (int)dev->up->opt.c2d_credit);
}

/* The link is gone: its deliveries are the hub's again. */
void up_c2d_forget(iotgw_upstream_device *dev)
{
    while (dev->c2d_pending) {
        up_pending *p = dev->c2d_pending;
        dev->c2d_pending = p->next;
        free(p);
    }
}

void up_c2d_on_delivery(iotgw_upstream_device *dev, pn_delivery_t *d)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    iotgw_diag diag = {0};
    pn_message_t *m = pn_message();
    int rc = iotgw_delivery_take(d, C2D_MESSAGE_MAX, &buf, &len);
    if (rc == 0)
        rc = iotgw_message_decode(m, buf, len, &diag);
    free(buf);
    up_pending *p = rc ? NULL : calloc(1, sizeof *p);
    if (!p) {
        iotgw_log_ev_limited(&dev->log, IOTGW_LOG_WARN, "c2d_refused", dev->id, NULL,
                             "upstream: device %s: cloud-to-device message refused: %s", dev->id,
                             rc ? diag.text : "out of memory");
        iotgw_delivery_settle(d, PN_REJECTED, "amqp:decode-error", rc ? diag.text : "out of memory");
        pn_link_flow(dev->c2d, 1);
        pn_message_free(m);
        return;
    }
    p->id = ++dev->next_c2d_id;
    p->delivery = d;
    p->next = dev->c2d_pending;
    dev->c2d_pending = p;
    if (dev->up->opt.cb.on_c2d) {
        iotgw_c2d_message msg = {.id = p->id, .message = m};
        dev->up->opt.cb.on_c2d(dev, &msg, dev->up->opt.ctx);
    }
    pn_message_free(m);
}

int up_c2d_settle(iotgw_upstream_device *dev, uint64_t id, iotgw_outcome outcome)
{
    for (up_pending **pp = &dev->c2d_pending; *pp; pp = &(*pp)->next) {
        up_pending *p = *pp;
        if (p->id != id)
            continue;
        *pp = p->next;
        uint64_t state = outcome == IOTGW_OUTCOME_ACCEPTED   ? PN_ACCEPTED
                         : outcome == IOTGW_OUTCOME_REJECTED ? PN_REJECTED
                                                             : PN_RELEASED;
        iotgw_delivery_settle(p->delivery, state, NULL, NULL);
        free(p);
        if (dev->c2d)
            pn_link_flow(dev->c2d, 1);
        up_conn_wake(dev->conn);
        return 0;
    }
    return IOTGW_ERR_UPSTREAM_NOT_ONLINE;
}
