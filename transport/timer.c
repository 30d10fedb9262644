/* Timers embedded in their owners (transport.h): a pairing heap ordered by due time, then
 * by start order, with one libwebsockets scheduled callback armed for the earliest. No
 * allocation: the heap's links live in the timers themselves. */
#include "transport/internal.h"

static int before(const iotgw_timer *a, const iotgw_timer *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->order < b->order);
}

/* Two heaps into one; either may be NULL. */
static iotgw_timer *meld(iotgw_timer *a, iotgw_timer *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (before(b, a)) {
        iotgw_timer *t = a;
        a = b, b = t;
    }
    /* b becomes a's first child */
    b->heap_prev = a;
    b->heap_sibling = a->heap_child;
    if (a->heap_child)
        a->heap_child->heap_prev = b;
    a->heap_child = b;
    a->heap_prev = NULL;
    a->heap_sibling = NULL;
    return a;
}

/* The children of a removed node, melded in pairs left to right, then right to left
 * (the two passes that give the pairing heap its bounds); iterative, so a long sibling
 * list costs no stack. */
static iotgw_timer *merge_children(iotgw_timer *first)
{
    if (!first)
        return NULL;
    iotgw_timer *paired = NULL; /* pass one's results, last first, linked by heap_sibling */
    while (first) {
        iotgw_timer *a = first, *b = a->heap_sibling;
        first = b ? b->heap_sibling : NULL;
        a->heap_sibling = a->heap_prev = NULL;
        if (b)
            b->heap_sibling = b->heap_prev = NULL;
        iotgw_timer *m = meld(a, b);
        m->heap_sibling = paired;
        paired = m;
    }
    iotgw_timer *root = NULL;
    while (paired) {
        iotgw_timer *next = paired->heap_sibling;
        paired->heap_sibling = NULL;
        root = meld(root, paired);
        paired = next;
    }
    return root;
}

static void heap_remove(iotgw_loop *loop, iotgw_timer *t)
{
    iotgw_timer *children = merge_children(t->heap_child);
    if (t == loop->timer_root) {
        loop->timer_root = children;
    } else {
        /* unlink t from its parent (heap_prev is the parent when t is the first child)
         * or from its left sibling */
        if (t->heap_prev->heap_child == t)
            t->heap_prev->heap_child = t->heap_sibling;
        else
            t->heap_prev->heap_sibling = t->heap_sibling;
        if (t->heap_sibling)
            t->heap_sibling->heap_prev = t->heap_prev;
        loop->timer_root = meld(loop->timer_root, children);
    }
    t->heap_child = t->heap_sibling = t->heap_prev = NULL;
}

static void fire_due(lws_sorted_usec_list_t *sul);

/* Keep libwebsockets' callback armed for the earliest timer. */
static void arm(iotgw_loop *loop)
{
    iotgw_timer *root = loop->timer_root;
    if (!root) {
        if (loop->timer_armed_ms) {
            lws_sul_cancel(&loop->timer_sul);
            loop->timer_armed_ms = 0;
        }
        return;
    }
    int64_t due = root->due_ms > 0 ? root->due_ms : 1;
    if (loop->timer_armed_ms == due)
        return;
    int64_t wait = root->due_ms - iotgw_loop_now_ms(loop);
    lws_sul_schedule(loop->ctx, 0, &loop->timer_sul, fire_due, (lws_usec_t)(wait > 0 ? wait : 0) * 1000);
    loop->timer_armed_ms = due;
}

/* Run the timers that are due and were started before this pass began: one started (or
 * restarted) by a callback waits for the next turn of the loop, even at 0 ms, so a
 * callback never runs inside the call that started it and a 0 ms timer cannot spin. */
static void fire_due(lws_sorted_usec_list_t *sul)
{
    iotgw_loop *loop = lws_container_of(sul, iotgw_loop, timer_sul);
    loop->timer_armed_ms = 0;
    int64_t now = iotgw_loop_now_ms(loop);
    uint64_t started_before = loop->timer_order;
    iotgw_timer *t;
    while ((t = loop->timer_root) && t->due_ms <= now && t->order < started_before) {
        heap_remove(loop, t);
        t->active = 0;
        if (t->repeat_ms > 0)
            iotgw_timer_start(t, t->repeat_ms, t->repeat_ms); /* before fn, which may stop it */
        t->fn(t, t->ctx);                                     /* may free t's owner: t is not touched after */
    }
    arm(loop);
}

void iotgw_timer_init(iotgw_loop *loop, iotgw_timer *t, iotgw_timer_fn fn, void *ctx)
{
    memset(t, 0, sizeof *t);
    t->loop = loop;
    t->fn = fn;
    t->ctx = ctx;
}

void iotgw_timer_start(iotgw_timer *t, int64_t delay_ms, int64_t repeat_ms)
{
    IOTGW_ASSERT(t->loop && t->fn); /* iotgw_timer_init first */
    iotgw_loop *loop = t->loop;
    if (t->active)
        heap_remove(loop, t);
    t->due_ms = iotgw_loop_now_ms(loop) + (delay_ms > 0 ? delay_ms : 0);
    t->repeat_ms = repeat_ms > 0 ? repeat_ms : 0;
    t->order = loop->timer_order++;
    t->active = 1;
    loop->timer_root = meld(loop->timer_root, t);
    arm(loop);
}

void iotgw_timer_stop(iotgw_timer *t)
{
    if (!t->active)
        return;
    heap_remove(t->loop, t);
    t->active = 0;
    t->repeat_ms = 0;
    arm(t->loop);
}

int iotgw_timer_active(const iotgw_timer *t)
{
    return t->active;
}

void loop_timers_shutdown(iotgw_loop *loop)
{
    lws_sul_cancel(&loop->timer_sul);
    loop->timer_armed_ms = 0;
}
