/*
 * list: one intrusive doubly linked list, as libuv's queue and Linux's list_head. A node
 * lives inside its owner's struct; a node that is in no list is linked to itself, so
 * "is it queued?" is iotgw_list_linked(node), never a separate flag.
 *
 * Ownership: the list owns nothing; an owner removes its node before freeing itself.
 * Threading: none (plain data). Errors: none; misuse (a node never initialised, or
 * inserted twice) is caught by IOTGW_ASSERT.
 */
#ifndef IOTGW_CODECS_LIST_H
#define IOTGW_CODECS_LIST_H

#include <stddef.h>

#include "codecs/assert.h"

typedef struct iotgw_list {
    struct iotgw_list *prev, *next;
} iotgw_list;

/* A head, or a node in no list. */
static inline void iotgw_list_init(iotgw_list *n)
{
    n->prev = n->next = n;
}

static inline int iotgw_list_empty(const iotgw_list *head)
{
    return head->next == head;
}

/* The node is in a list (only for nodes, not heads). */
static inline int iotgw_list_linked(const iotgw_list *n)
{
    return n->next != n;
}

static inline void iotgw_list_insert_before(iotgw_list *at, iotgw_list *n)
{
    IOTGW_ASSERT(n->next == n && n->prev == n); /* initialised, and in no list */
    n->next = at;
    n->prev = at->prev;
    at->prev->next = n;
    at->prev = n;
}

static inline void iotgw_list_push_back(iotgw_list *head, iotgw_list *n)
{
    iotgw_list_insert_before(head, n);
}

static inline void iotgw_list_push_front(iotgw_list *head, iotgw_list *n)
{
    iotgw_list_insert_before(head->next, n);
}

/* Take the node out of its list (nothing happens if it is in none). */
static inline void iotgw_list_remove(iotgw_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    iotgw_list_init(n);
}

/* Every node of src moves to the end of dst, in order; src is left empty. */
static inline void iotgw_list_move_all(iotgw_list *dst, iotgw_list *src)
{
    if (iotgw_list_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    iotgw_list_init(src);
}

/* The first node, or NULL when empty. */
static inline iotgw_list *iotgw_list_first(const iotgw_list *head)
{
    return head->next == head ? NULL : head->next;
}

static inline iotgw_list *iotgw_list_last(const iotgw_list *head)
{
    return head->prev == head ? NULL : head->prev;
}

/* The node after n in the list headed by head, or NULL at the end. */
static inline iotgw_list *iotgw_list_next(const iotgw_list *head, const iotgw_list *n)
{
    return n->next == head ? NULL : n->next;
}

/* The struct that holds node ptr as its member. */
#define iotgw_list_entry(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* For each entry; the loop body may remove (and free) the current one. */
#define IOTGW_LIST_FOREACH(var, head, type, member)                                                          \
    for (iotgw_list *var##_node_ = (head)->next, *var##_next_ = var##_node_->next;                           \
         var##_node_ != (head) && ((var) = iotgw_list_entry(var##_node_, type, member), 1);                  \
         var##_node_ = var##_next_, var##_next_ = var##_node_->next)

#endif
