/*
 * evq — engine events handed to a libevent loop thread.
 *
 * The engine calls a request's callback on its own thread (weft/engine.h).
 * A program whose state lives on a libevent loop (weft serve's jobs, the
 * orchestrator's graph) copies each event into an evq from that callback
 * (evq_push) and handles the copies on the loop thread (evq_take), which the
 * queue wakes by activating the loop's event when it stops being empty.
 *
 * The final event of a request must get through, even when memory runs out,
 * because whoever waits for it frees what the request's callbacks point at.
 * So each completion brings a slot (an evq_msg it owns) that a final event
 * falls back to; only its text can then be lost (evq_msg.lost).
 *
 * Counting: evq_expect(q, n) before submitting a request with n completions
 * (n final events); evq_wait_idle blocks until every expected final event
 * has been pushed. That is how an owner knows it may free what the callback
 * reaches: the push touches nothing after it counts a final event.
 *
 * Threads: evq_push and evq_expect from any thread; evq_take, evq_msg_free,
 * evq_wait_idle from the owner's (loop) thread; create and destroy from the
 * owner's thread with no push in progress or to come.
 */
#ifndef WEFT_EVQ_H
#define WEFT_EVQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/engine.h"

struct event;

/* One engine event, copied. Text is len bytes followed by a NUL. */
typedef struct evq_msg {
    struct evq_msg *next;
    void *owner;          /* the user pointer the request was submitted with */
    int32_t index;        /* which completion */
    int32_t token;        /* -1 in the final event */
    float logprob;
    bool done;            /* the final event */
    bool lost;            /* text that could not be copied (out of memory) */
    bool in_slot;         /* the completion's own slot, not allocated */
    int status;           /* final event: 0, WEFT_ECANCELED or the error */
    const char *finish;   /* final event: the engine's static string */
    int32_t n_prompt, n_cached, n_generated;
    double t;             /* weft_now() when the engine delivered it */
    size_t len;
    char *text;
} evq_msg;

typedef struct evq evq;

/* A queue that activates `wake` (EV_READ) when a push finds it empty; wake
 * is borrowed and must outlive the queue. 0 or WEFT_ENOMEM. */
int evq_create(struct event *wake, evq **out);

/* Frees the messages still queued (not their owners). NULL is a no-op. */
void evq_destroy(evq *q);

/* n more final events will come (n < 0: fewer, after a failed submit).
 * Wakes evq_wait_idle when the count reaches zero. */
void evq_expect(evq *q, int32_t n);

/* Engine thread: copies ev (owner and slot: the callback's user pointer and
 * the completion's slot). A final event always gets through, into the slot
 * when allocation fails (then with its text lost); it counts one expected
 * final event down, after which q is not touched. Returns 0, or -1 when a
 * token's event could not be copied (its text is lost: nothing was queued). */
int evq_push(evq *q, const weft_event *ev, void *owner, evq_msg *slot);

/* Loop thread: everything queued, oldest first (NULL if nothing). Each
 * message is freed with evq_msg_free once handled. */
evq_msg *evq_take(evq *q);

/* Frees an allocated message; a slot is left alone (its owner has it). */
void evq_msg_free(evq_msg *m);

/* Blocks until every expected final event has been pushed. */
void evq_wait_idle(evq *q);

#endif
