/* Engine events handed to a libevent loop thread (evq.h). */
#include "orchestrator/evq.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "weft/common.h"

struct evq {
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t idle;
    evq_msg *head, *tail;
    int32_t n_expected; /* final events not yet pushed */
    struct event *wake;
};

int evq_create(struct event *wake, evq **out)
{
    *out = NULL;
    evq *q = weft_calloc(1, sizeof *q);
    if (!q) return weft_error(WEFT_ENOMEM, "event queue: out of memory");
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->idle, NULL);
    q->wake = wake;
    *out = q;
    return 0;
}

void evq_destroy(evq *q)
{
    if (!q) return;
    evq_msg *m = q->head;
    while (m) {
        evq_msg *next = m->next;
        evq_msg_free(m);
        m = next;
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->idle);
    weft_free(q);
}

void evq_expect(evq *q, int32_t n)
{
    pthread_mutex_lock(&q->mu);
    q->n_expected += n;
    if (q->n_expected <= 0) pthread_cond_broadcast(&q->idle);
    pthread_mutex_unlock(&q->mu);
}

/* Messages are allocated with malloc, not weft_malloc: they are made on the
 * engine thread and a sandboxed run's cap (weft_calloc's counter) must not
 * fail the engine's deliveries. */
int evq_push(evq *q, const weft_event *ev, void *owner, evq_msg *slot)
{
    evq_msg *m = malloc(sizeof *m + ev->text_len + 1);
    if (m) {
        memset(m, 0, sizeof *m);
        m->text = (char *)(m + 1);
        m->len = ev->text_len;
        if (ev->text_len) memcpy(m->text, ev->text, ev->text_len);
        m->text[m->len] = 0;
    } else if (ev->done) {
        m = slot;
        memset(m, 0, sizeof *m);
        m->in_slot = true;
        m->lost = ev->text_len > 0;
        m->text = (char *)"";
    } else {
        return -1;
    }
    m->owner = owner;
    m->index = ev->index;
    m->token = ev->token;
    m->logprob = ev->logprob;
    m->done = ev->done;
    m->status = ev->status;
    m->finish = ev->finish;
    m->n_prompt = ev->n_prompt;
    m->n_cached = ev->n_cached;
    m->n_generated = ev->n_generated;
    m->t = weft_now();
    pthread_mutex_lock(&q->mu);
    const bool was_empty = q->head == NULL;
    if (q->tail) q->tail->next = m;
    else q->head = m;
    q->tail = m;
    /* woken, and counted, before the unlock: once the last final event is
     * counted the owner may free q and the event the moment it gets the lock */
    if (was_empty) event_active(q->wake, EV_READ, 0);
    if (ev->done && --q->n_expected <= 0) pthread_cond_broadcast(&q->idle);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

evq_msg *evq_take(evq *q)
{
    pthread_mutex_lock(&q->mu);
    evq_msg *m = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return m;
}

void evq_msg_free(evq_msg *m)
{
    if (m && !m->in_slot) free(m);
}

void evq_wait_idle(evq *q)
{
    pthread_mutex_lock(&q->mu);
    while (q->n_expected > 0) pthread_cond_wait(&q->idle, &q->mu);
    pthread_mutex_unlock(&q->mu);
}
