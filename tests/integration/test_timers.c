/* The loop's timers and deferred calls (transport.h): timers embedded in their owners,
 * fired in due order, never inside the call that started them; iotgw_conn_wake and
 * iotgw_conn_close deferred to the next turn and coalesced. Real loop, real sockets. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/connection.h>

#include "tests/unit/check_main.h"
#include "transport/transport.h"

static iotgw_loop *loop;

static void setup(void)
{
    iotgw_diag d = {0};
    loop = iotgw_loop_new(NULL, &d);
    ck_assert_msg(loop != NULL, "%s", d.text);
}

static void teardown(void)
{
    iotgw_loop_free(loop);
    loop = NULL;
}

static void run_for(int ms)
{
    int64_t end = iotgw_loop_now_ms(loop) + ms;
    while (iotgw_loop_now_ms(loop) < end)
        iotgw_loop_run(loop, 10);
}

/* ------------------------------------------------------------------ timers */

#define N_TIMERS 2000

typedef struct probe {
    iotgw_timer t;
    int index, fired;
    int64_t due;
} probe;

static int fired_order[N_TIMERS], nfired;
static probe probes[N_TIMERS];

static void record(iotgw_timer *t, void *ctx)
{
    probe *p = ctx;
    ck_assert_ptr_eq(t, &p->t);
    ck_assert(!iotgw_timer_active(t));
    p->fired++;
    fired_order[nfired++] = p->index;
}

/* Random delays, some restarted, some stopped: every running timer fires once, none
 * early, in due order, and ties in the order they were started. */
START_TEST(timers_fire_in_due_order_then_start_order)
{
    srand(12345);
    nfired = 0;
    int64_t t0 = iotgw_loop_now_ms(loop);
    for (int i = 0; i < N_TIMERS; i++) {
        probe *p = &probes[i];
        memset(p, 0, sizeof *p);
        p->index = i;
        iotgw_timer_init(loop, &p->t, record, p);
        iotgw_timer_start(&p->t, rand() % 300, 0);
    }
    int stopped = 0;
    for (int i = 0; i < N_TIMERS; i += 7) { /* restart some later, stop some */
        if (i % 2) {
            iotgw_timer_start(&probes[i].t, 50 * (i % 5), 0);
        } else {
            iotgw_timer_stop(&probes[i].t);
            iotgw_timer_stop(&probes[i].t); /* twice: harmless */
            stopped++;
        }
    }
    for (int i = 0; i < N_TIMERS; i++)
        probes[i].due = probes[i].t.due_ms;
    run_for(600);
    ck_assert_int_eq(nfired, N_TIMERS - stopped);
    for (int i = 0; i < N_TIMERS; i++)
        ck_assert_int_eq(probes[i].fired, (i % 7 == 0 && i % 2 == 0) ? 0 : 1);
    for (int k = 1; k < nfired; k++) {
        probe *a = &probes[fired_order[k - 1]], *b = &probes[fired_order[k]];
        ck_assert_msg(a->due < b->due || (a->due == b->due && a->t.order < b->t.order),
                      "timer %d (due %lld) fired after timer %d (due %lld)", b->index, (long long)b->due,
                      a->index, (long long)a->due);
    }
    ck_assert(probes[1].due - t0 >= 0);
}
END_TEST

static int zero_calls;
static iotgw_timer zero;

static void zero_fired(iotgw_timer *t, void *ctx)
{
    (void)ctx;
    zero_calls++;
    if (zero_calls < 3)
        iotgw_timer_start(t, 0, 0); /* restarted from its own callback: next turn, not now */
}

START_TEST(zero_ms_timer_runs_on_a_later_turn_never_inside_start)
{
    zero_calls = 0;
    iotgw_timer_init(loop, &zero, zero_fired, NULL);
    iotgw_timer_start(&zero, 0, 0);
    ck_assert_int_eq(zero_calls, 0);
    ck_assert(iotgw_timer_active(&zero));
    iotgw_loop_run(loop, 100);
    ck_assert_int_ge(zero_calls, 1); /* the restarts each wait for a later pass, never spin */
    run_for(50);
    ck_assert_int_eq(zero_calls, 3);
    ck_assert(!iotgw_timer_active(&zero));
}
END_TEST

static int ticks;
static iotgw_timer ticker;

static void tick(iotgw_timer *t, void *ctx)
{
    (void)ctx;
    ck_assert(iotgw_timer_active(t)); /* rearmed before the callback */
    if (++ticks == 5)
        iotgw_timer_stop(t);
}

START_TEST(repeating_timer_runs_until_stopped_from_its_callback)
{
    ticks = 0;
    iotgw_timer_init(loop, &ticker, tick, NULL);
    iotgw_timer_start(&ticker, 10, 20);
    run_for(400);
    ck_assert_int_eq(ticks, 5);
    ck_assert(!iotgw_timer_active(&ticker));
}
END_TEST

/* A callback that stops other timers, including ones due in the same pass, and frees
 * the memory of its own (the owner going away inside its callback). */
static probe *heap_probe;
static int others_fired;

static void other(iotgw_timer *t, void *ctx)
{
    (void)t;
    (void)ctx;
    others_fired++;
}

static void stop_others_and_free_self(iotgw_timer *t, void *ctx)
{
    (void)t;
    probe *mine = ctx;
    for (int i = 0; i < 10; i++)
        iotgw_timer_stop(&probes[i].t);
    free(mine);
    heap_probe = NULL;
}

START_TEST(callback_may_stop_due_timers_and_free_its_own)
{
    others_fired = 0;
    heap_probe = calloc(1, sizeof *heap_probe);
    iotgw_timer_init(loop, &heap_probe->t, stop_others_and_free_self, heap_probe);
    iotgw_timer_start(&heap_probe->t, 5, 0);
    for (int i = 0; i < 10; i++) {
        iotgw_timer_init(loop, &probes[i].t, other, NULL);
        iotgw_timer_start(&probes[i].t, 5, 0); /* due together, started after: stopped first */
    }
    run_for(100);
    ck_assert_ptr_null(heap_probe);
    ck_assert_int_eq(others_fired, 0);
}
END_TEST

/* ------------------------------------------------------------------ deferred wake and close */

static int wakes, handler_depth, handler_reentered, closed;
static int in_api_call;
static iotgw_conn *server_conn;

static void server_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)ctx;
    if (handler_depth)
        handler_reentered = 1;
    handler_depth++;
    ck_assert_msg(!in_api_call, "handler ran inside the call that caused it (event %s)",
                  pn_event_type_name(pn_event_type(e)));
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN: pn_connection_open(iotgw_conn_connection(c)); break;
    case PN_CONNECTION_WAKE: wakes++; break;
    case PN_TRANSPORT_CLOSED:
        closed++;
        server_conn = NULL;
        break;
    default: break;
    }
    handler_depth--;
}

static void on_accept(iotgw_listener *l, iotgw_conn *c, void *ctx)
{
    (void)l;
    (void)ctx;
    server_conn = c;
    iotgw_conn_set_handler(c, server_event, NULL);
}

static int client_open, client_closed;

static void client_event(iotgw_conn *c, pn_event_t *e, void *ctx)
{
    (void)c;
    (void)ctx;
    if (pn_event_type(e) == PN_CONNECTION_REMOTE_OPEN)
        client_open = 1;
    if (pn_event_type(e) == PN_TRANSPORT_CLOSED)
        client_closed = 1;
}

START_TEST(wake_is_deferred_and_coalesced_close_is_deferred)
{
    const char *dir = getenv("IOTGW_TEST_CERTS");
    ck_assert_msg(dir != NULL, "IOTGW_TEST_CERTS must name the test certificate folder");
    char cert[600], key[600], ca[600];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    wakes = handler_depth = handler_reentered = closed = client_open = client_closed = 0;
    server_conn = NULL;
    iotgw_listener_options lo = {.kind = IOTGW_TRANSPORT_AMQPS,
                                 .address = "127.0.0.1",
                                 .tls = {.cert_file = cert, .key_file = key},
                                 .on_accept = on_accept};
    iotgw_listener *l;
    iotgw_diag d = {0};
    ck_assert_msg(iotgw_listener_new(loop, &lo, &l, &d) == 0, "%s", d.text);
    iotgw_client_options co = {.kind = IOTGW_TRANSPORT_AMQPS,
                               .host = "localhost",
                               .port = iotgw_listener_port(l),
                               .tls = {.ca_file = ca}};
    iotgw_conn *cc;
    ck_assert_msg(iotgw_conn_connect(loop, &co, client_event, NULL, &cc, &d) == 0, "%s", d.text);
    pn_connection_open(iotgw_conn_connection(cc));
    for (int64_t end = iotgw_loop_now_ms(loop) + 5000; !client_open && iotgw_loop_now_ms(loop) < end;)
        iotgw_loop_run(loop, 10);
    ck_assert(client_open);
    ck_assert_ptr_nonnull(server_conn);

    in_api_call = 1;
    for (int i = 0; i < 100; i++)
        iotgw_conn_wake(server_conn);
    in_api_call = 0;
    ck_assert_int_eq(wakes, 0);
    iotgw_loop_run(loop, 100);
    ck_assert_int_eq(wakes, 1); /* one event for a hundred calls */
    iotgw_conn_wake(server_conn);
    run_for(50);
    ck_assert_int_eq(wakes, 2);

    in_api_call = 1;
    iotgw_conn *s = server_conn;
    iotgw_conn_close(s, "amqp:unauthorized-access", "a test closes it");
    iotgw_conn_wake(s); /* still valid after close returned */
    in_api_call = 0;
    ck_assert_int_eq(closed, 0);
    for (int64_t end = iotgw_loop_now_ms(loop) + 5000;
         (!closed || !client_closed) && iotgw_loop_now_ms(loop) < end;)
        iotgw_loop_run(loop, 10);
    ck_assert_int_eq(closed, 1);
    ck_assert(client_closed);
    ck_assert_int_eq(handler_reentered, 0);
    iotgw_listener_free(l);
}
END_TEST

Suite *suite_under_test(void)
{
    Suite *s = suite_create("timers");
    TCase *tc = tcase_create("loop");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, timers_fire_in_due_order_then_start_order);
    tcase_add_test(tc, zero_ms_timer_runs_on_a_later_turn_never_inside_start);
    tcase_add_test(tc, repeating_timer_runs_until_stopped_from_its_callback);
    tcase_add_test(tc, callback_may_stop_due_timers_and_free_its_own);
    tcase_add_test(tc, wake_is_deferred_and_coalesced_close_is_deferred);
    suite_add_tcase(s, tc);
    return s;
}
