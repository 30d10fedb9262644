/*
 * gateway/upstream.h without a hub, for testing the gateway's device sessions: devices
 * added and removed, messages sent and method answers are recorded; the test plays the
 * hub by calling the owner's callbacks itself (fake_upstream_outcome() and the like).
 */
#ifndef IOTGW_TESTS_FAKE_UPSTREAM_H
#define IOTGW_TESTS_FAKE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/upstream.h"

#define FAKE_UPSTREAM_MAX 16

struct iotgw_upstream_device {
    iotgw_upstream *up;
    char id[130], key[100];
    unsigned features;
    void *ctx;
    iotgw_device_state state;
    int removed;
    void *sent_ctx[FAKE_UPSTREAM_MAX]; /* msg_ctx of each message sent, in order */
    int nsent;
    int method_status[FAKE_UPSTREAM_MAX]; /* answers to method requests, in order */
    int nmethod_answers;
};

struct iotgw_upstream {
    iotgw_upstream_options opt;
    iotgw_upstream_device *devices[FAKE_UPSTREAM_MAX]; /* every one ever added, removed ones too */
    int ndevices, adds, removes;
};

/* The latest device added with this id (removed or not), or NULL. */
iotgw_upstream_device *fake_upstream_find(iotgw_upstream *up, const char *id);
void fake_upstream_outcome(iotgw_upstream_device *d, int index, iotgw_outcome outcome, const char *cond,
                           const char *description);
void fake_upstream_state(iotgw_upstream_device *d, iotgw_device_state state);
void fake_upstream_method(iotgw_upstream_device *d, const char *name, const char *json);

#endif
