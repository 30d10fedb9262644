/* The upstream's device state machine (gateway/upstream_device.c) driven by synthetic
 * events, without a hub process: the pool and one or two connections are real, their
 * AMQP side is a Proton connection pumped in memory against a scripted hub side that
 * attaches whatever the device opens (or detaches it on request). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/transport.h>

#include "gateway/upstream_internal.h"
#include "tests/unit/check_main.h"

static iotgw_loop *loop;
static iotgw_upstream *up;
static pn_connection_driver_t gw_side, hub_side;
static int states[8], nstates, outcomes[4], twin_answers;
static char last_outcome_cond[128];

static void on_outcome(iotgw_upstream_device *dev, void *msg_ctx, iotgw_outcome outcome, const char *cond,
                       const char *description, void *ctx)
{
    (void)dev, (void)msg_ctx, (void)description, (void)ctx;
    outcomes[outcome]++;
    snprintf(last_outcome_cond, sizeof last_outcome_cond, "%s", cond ? cond : "");
}

static void on_state(iotgw_upstream_device *dev, iotgw_device_state state, void *ctx)
{
    (void)dev, (void)ctx;
    if (nstates < 8)
        states[nstates++] = (int)state;
}

static void on_twin(iotgw_upstream_device *dev, const iotgw_twin_response *r, void *ctx)
{
    (void)dev, (void)r, (void)ctx;
    twin_answers++;
}

static void setup(void)
{
    iotgw_diag d = {0};
    loop = iotgw_loop_new(NULL, &d);
    ck_assert_msg(loop != NULL, "%s", d.text);
    iotgw_upstream_options o = {.hub = {.host_name = "hub.example"}, .auth_rate = -1};
    o.cb.on_outcome = on_outcome;
    o.cb.on_state = on_state;
    o.cb.on_twin = on_twin;
    ck_assert_int_eq(iotgw_upstream_new(loop, &o, &up, &d), 0);
    memset(states, 0, sizeof states);
    memset(outcomes, 0, sizeof outcomes);
    nstates = twin_answers = 0;
    ck_assert_int_eq(pn_connection_driver_init(&gw_side, NULL, NULL), 0);
    ck_assert_int_eq(pn_connection_driver_init(&hub_side, NULL, NULL), 0);
    pn_transport_set_server(hub_side.transport);
    pn_connection_open(gw_side.connection);
}

static void teardown(void)
{
    iotgw_upstream_free(up);
    pn_connection_driver_destroy(&gw_side);
    pn_connection_driver_destroy(&hub_side);
    iotgw_loop_free(loop);
}

/* A connection of the pool, open, whose AMQP side is gw_side (no socket: iotgw_conn is
 * NULL, so wakes go nowhere and nothing is sent but what pump() moves). */
static up_conn *open_conn(void)
{
    up_conn *c = up_conn_new(up);
    ck_assert_ptr_nonnull(c);
    c->state = IOTGW_CONNECTION_OPEN;
    c->ssn = pn_session(gw_side.connection);
    pn_session_open(c->ssn);
    return c;
}

static int move_bytes(pn_connection_driver_t *from, pn_connection_driver_t *to)
{
    pn_bytes_t wb = pn_connection_driver_write_buffer(from);
    if (!wb.size)
        return 0;
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(to);
    size_t n = wb.size < rb.size ? wb.size : rb.size;
    if (!n)
        return 0;
    memcpy(rb.start, wb.start, n);
    pn_connection_driver_read_done(to, n);
    pn_connection_driver_write_done(from, n);
    return 1;
}

static const char *detach_link_named; /* the hub side detaches a link whose name starts so */

static void hub_events(void)
{
    pn_event_t *e;
    while ((e = pn_connection_driver_next_event(&hub_side))) {
        switch (pn_event_type(e)) {
        case PN_CONNECTION_REMOTE_OPEN: pn_connection_open(pn_event_connection(e)); break;
        case PN_SESSION_REMOTE_OPEN: pn_session_open(pn_event_session(e)); break;
        case PN_LINK_REMOTE_OPEN: {
            pn_link_t *l = pn_event_link(e);
            pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
            pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
            pn_link_open(l);
            if (pn_link_is_receiver(l))
                pn_link_flow(l, 10);
            break;
        }
        default: break;
        }
    }
    if (detach_link_named) {
        for (pn_link_t *l = pn_link_head(hub_side.connection, PN_LOCAL_ACTIVE); l;
             l = pn_link_next(l, PN_LOCAL_ACTIVE))
            if (!strncmp(pn_link_name(l), detach_link_named, strlen(detach_link_named))) {
                pn_condition_set_name(pn_link_condition(l), "amqp:link:detach-forced");
                pn_condition_set_description(pn_link_condition(l), "the test detaches it");
                pn_link_close(l);
            }
        detach_link_named = NULL;
    }
}

/* Link events of the gateway side go where the connection's dispatch sends them. */
static void gateway_events(up_conn *c)
{
    pn_event_t *e;
    while ((e = pn_connection_driver_next_event(&gw_side))) {
        pn_link_t *l = pn_event_link(e);
        switch (pn_event_type(e)) {
        case PN_LINK_REMOTE_OPEN:
        case PN_LINK_REMOTE_CLOSE:
        case PN_LINK_REMOTE_DETACH:
        case PN_LINK_FLOW:
        case PN_DELIVERY: up_device_on_link_event(c, pn_link_get_context(l), e); break;
        default: break;
        }
    }
}

static void pump(up_conn *c)
{
    for (int i = 0; i < 50; i++) {
        int moved = move_bytes(&gw_side, &hub_side) | move_bytes(&hub_side, &gw_side);
        hub_events();
        gateway_events(c);
        if (!moved && !pn_connection_driver_has_event(&gw_side) && !pn_connection_driver_has_event(&hub_side))
            break;
    }
}

static void turn(void)
{
    iotgw_loop_run(loop, 5); /* the pool's deferred work */
}

static iotgw_upstream_device *add(const char *id, unsigned features)
{
    iotgw_device_credential cred = {.device_id = id, .key = "c2VjcmV0LWtleS0xMjM0NQ=="};
    iotgw_upstream_device *dev = NULL;
    iotgw_diag d = {0};
    ck_assert_int_eq(iotgw_upstream_device_add(up, &cred, features, NULL, &dev, &d), 0);
    return dev;
}

/* Add, place, send the put-token (by event, as the connection does), accept it, attach. */
static iotgw_upstream_device *bring_online(up_conn *c, const char *id, unsigned features)
{
    iotgw_upstream_device *dev = add(id, features);
    turn();
    ck_assert_int_eq(dev->st, UP_DEV_QUEUED);
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = 41});
    ck_assert_int_eq(dev->st, UP_DEV_AUTHENTICATING);
    up_device_event(dev, UP_EV_TOKEN_ACCEPTED, NULL);
    ck_assert_int_eq(dev->st, UP_DEV_ATTACHING);
    pump(c);
    ck_assert_int_eq(dev->st, UP_DEV_ONLINE);
    ck_assert_uint_eq(c->nonline, 1);
    return dev;
}

START_TEST(add_calls_back_nothing_and_places_on_the_next_turn)
{
    up_conn *c = open_conn();
    iotgw_upstream_device *dev = add("dev-1", 0);
    ck_assert_int_eq(nstates, 0);
    ck_assert_int_eq(dev->st, UP_DEV_UNPLACED);
    ck_assert_ptr_null(dev->conn);
    turn();
    ck_assert_ptr_eq(dev->conn, c);
    ck_assert_int_eq(dev->st, UP_DEV_QUEUED); /* its connection is open: its turn comes */
    ck_assert_int_eq(nstates, 0);             /* still "waiting" to the owner */
    ck_assert_uint_eq(c->ndevices, 1);
}
END_TEST

START_TEST(connection_lost_during_cbs_waits_then_queues_again)
{
    up_conn *c = open_conn();
    iotgw_upstream_device *dev = add("dev-1", 0);
    turn();
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = 7});
    ck_assert_int_eq(dev->st, UP_DEV_AUTHENTICATING);
    ck_assert_uint_eq(dev->cbs_request, 7);
    up_device_event(dev, UP_EV_CONN_LOST, NULL);
    ck_assert_int_eq(dev->st, UP_DEV_WAITING);
    ck_assert_uint_eq(dev->cbs_request, 0); /* a late reply to 7 finds no device */
    ck_assert_int_eq(nstates, 2);
    ck_assert_int_eq(states[0], IOTGW_DEVICE_AUTHENTICATING);
    ck_assert_int_eq(states[1], IOTGW_DEVICE_WAITING);
    up_device_event(dev, UP_EV_CONN_OPEN, NULL);
    ck_assert_int_eq(dev->st, UP_DEV_QUEUED);
    ck_assert_uint_eq(c->ndevices, 1);
}
END_TEST

START_TEST(identity_refused_twice_is_for_good_and_its_telemetry_answered)
{
    open_conn();
    iotgw_upstream_device *dev = add("dev-1", 0);
    turn();
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iotgw_upstream_send(dev, (const uint8_t *)"m", 1, NULL), 0);
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = 1});
    up_event_args refusal = {
        .kind = UP_REFUSAL_IDENTITY, .cond = "amqp:unauthorized-access", .description = "401"};
    up_device_event(dev, UP_EV_REFUSED, &refusal);
    ck_assert_int_eq(dev->st, UP_DEV_FAILED);
    ck_assert_int_eq(dev->refused, 0); /* once may be passing: the telemetry waits */
    ck_assert_uint_eq(dev->queue.count, 3);
    ck_assert_int_eq(outcomes[IOTGW_OUTCOME_RETRY], 0);
    up_device_event(dev, UP_EV_RETRY_DUE, NULL);
    ck_assert_int_eq(dev->st, UP_DEV_QUEUED);
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = 2});
    up_device_event(dev, UP_EV_REFUSED, &refusal);
    ck_assert_int_eq(dev->refused, 1);
    ck_assert_int_eq(outcomes[IOTGW_OUTCOME_RETRY], 3);
    ck_assert_str_eq(last_outcome_cond, IOTGW_COND_REFUSED);
    ck_assert_uint_eq(dev->queue.count, 0);
    ck_assert_int_eq(iotgw_upstream_send(dev, (const uint8_t *)"m", 1, NULL), IOTGW_ERR_UPSTREAM_NOT_ONLINE);
    ck_assert_uint_eq(up->pending_bytes, 0);
}
END_TEST

START_TEST(link_lost_during_renewal_fails_the_device_and_forgets_the_renewal)
{
    up_conn *c = open_conn();
    iotgw_upstream_device *dev = bring_online(c, "dev-1", IOTGW_UPSTREAM_METHODS);
    ck_assert(dev->authorized);
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = 99}); /* a renewal */
    ck_assert_int_eq(dev->st, UP_DEV_ONLINE);
    ck_assert_uint_eq(dev->cbs_request, 99);
    detach_link_named = "methods-requests";
    pump(c);
    ck_assert_int_eq(dev->st, UP_DEV_FAILED);
    ck_assert_uint_eq(dev->cbs_request, 0);
    ck_assert(!dev->authorized);
    ck_assert_uint_eq(c->nonline, 0);
    ck_assert_ptr_null(dev->tel);
    ck_assert_msg(strstr(dev->reason, "the test detaches it") != NULL, "reason: %s", dev->reason);
    ck_assert(!iotgw_list_linked(&dev->ready_node));
}
END_TEST

START_TEST(remove_with_pending_twin_and_telemetry_calls_back_nothing)
{
    up_conn *c = open_conn();
    iotgw_upstream_device *dev = bring_online(c, "dev-1", IOTGW_UPSTREAM_TWIN);
    uint64_t id = 0;
    ck_assert_int_eq(iotgw_upstream_twin_request(dev, IOTGW_TWIN_GET, NULL, 0, &id), 0);
    ck_assert_int_eq(iotgw_upstream_send(dev, (const uint8_t *)"m", 1, NULL), 0);
    int before = nstates;
    iotgw_upstream_device_remove(dev);
    ck_assert_int_eq(twin_answers, 0);
    ck_assert_int_eq(outcomes[1] + outcomes[2] + outcomes[3], 0);
    ck_assert_int_eq(nstates, before);
    ck_assert_uint_eq(c->ndevices, 0);
    ck_assert_uint_eq(c->nonline, 0);
    ck_assert_uint_eq(up->pending_bytes, 0);
    pump(c); /* the hub's answers to the closed links go to no device */
}
END_TEST

START_TEST(connection_full_moves_the_device_to_another)
{
    up_conn *c1 = open_conn();
    iotgw_upstream_device *dev = add("dev-1", 0);
    turn();
    ck_assert_ptr_eq(dev->conn, c1);
    up_conn *c2 = open_conn();
    up_device_event(dev, UP_EV_TOKEN_SENT, &(up_event_args){.request = 3});
    c1->capacity = 0; /* what the connection sets when the hub says it is full */
    up_device_event(dev, UP_EV_CONN_FULL, NULL);
    ck_assert_int_eq(dev->st, UP_DEV_UNPLACED);
    ck_assert_ptr_null(dev->conn);
    ck_assert_uint_eq(c1->ndevices, 0);
    turn();
    ck_assert_ptr_eq(dev->conn, c2);
    ck_assert_int_eq(dev->st, UP_DEV_QUEUED);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("upstream_device");
    TCase *tc = tcase_create("events");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, add_calls_back_nothing_and_places_on_the_next_turn);
    tcase_add_test(tc, connection_lost_during_cbs_waits_then_queues_again);
    tcase_add_test(tc, identity_refused_twice_is_for_good_and_its_telemetry_answered);
    tcase_add_test(tc, link_lost_during_renewal_fails_the_device_and_forgets_the_renewal);
    tcase_add_test(tc, remove_with_pending_twin_and_telemetry_calls_back_nothing);
    tcase_add_test(tc, connection_full_moves_the_device_to_another);
    suite_add_tcase(s, tc);
    return s;
}
