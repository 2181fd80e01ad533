/*
 * Intrusive doubly linked lists with a head and a tail, as macros over
 * any struct with two link members (the server keeps sessions in order of
 * heartbeat and finished futures in order of finishing with them).  A
 * list is any struct with head and tail members, zeroed when empty; a
 * list known by its head alone (newest first) has the _HEAD macros.  Not
 * for: lists that need a count or iteration helpers (write the loop).
 */
#ifndef TB_CORE_LIST_H
#define TB_CORE_LIST_H

#include <stddef.h>

/* Appends x at l's tail, through x's members next and prev. */
#define TB__LIST_PUSH(l, x, next, prev) \
  do {                                  \
    (x)->next = NULL;                   \
    (x)->prev = (l).tail;               \
    if ((l).tail)                       \
      (l).tail->next = (x);             \
    else                                \
      (l).head = (x);                   \
    (l).tail = (x);                     \
  } while (0)

/* Puts x first in the list whose first element is head (an lvalue). */
#define TB__LIST_PUSH_HEAD(head, x, next, prev) \
  do {                                          \
    (x)->prev = NULL;                           \
    (x)->next = (head);                         \
    if (head)                                   \
      (head)->prev = (x);                       \
    (head) = (x);                               \
  } while (0)

/* Unlinks x from the list whose first element is head, and clears its
 * links. */
#define TB__LIST_REMOVE_HEAD(head, x, next, prev) \
  do {                                            \
    if ((x)->prev)                                \
      (x)->prev->next = (x)->next;                \
    else                                          \
      (head) = (x)->next;                         \
    if ((x)->next)                                \
      (x)->next->prev = (x)->prev;                \
    (x)->next = (x)->prev = NULL;                 \
  } while (0)

/* Unlinks x, which is in l, and clears its links. */
#define TB__LIST_REMOVE(l, x, next, prev)          \
  do {                                             \
    if ((x)->next == NULL)                         \
      (l).tail = (x)->prev;                        \
    TB__LIST_REMOVE_HEAD((l).head, x, next, prev); \
  } while (0)

#endif /* TB_CORE_LIST_H */
