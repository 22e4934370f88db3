/* weft serve — an OpenAI-compatible HTTP API over the serving engine.
 *
 * Threads: one libevent loop thread owns HTTP (evhttp), the jobs and the
 * metrics. The engine delivers events on its own thread; on_engine_event
 * copies each into the event queue (orchestrator/evq.h), which wakes the
 * loop; the loop drains the queue in on_notify. Nothing of
 * libevent's HTTP side is touched off the loop thread.
 *
 * Lifetimes: a job is one generation HTTP request with one choice per
 * (prompt, n) pair, each choice one engine request. A job is freed on the
 * loop thread once every submitted choice has had its final event — never
 * earlier, because engine events point at its choices — whether or not the
 * client is still there. A conn is one client connection, from its accept
 * (evhttp's bufferevent callback) to libevent's free of it (its close
 * callback); a client that goes away (that close callback) marks the job
 * answered on it gone and cancels its choices, which frees their KV; the
 * evhttp request, detached from its connection by libevent, is freed by the
 * evhttp_send_* call that ends the job.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cli.h"
#include "oai.h"
#include "serve_metrics.h"
#include "orchestrator/evq.h"
#include "weft/engine.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weft serve [options]\n\n"
            "Serves the model over an OpenAI-compatible HTTP API: POST /v1/completions,\n"
            "POST /v1/chat/completions (streaming with server-sent events), GET /v1/models,\n"
            "GET /health, GET /metrics (Prometheus); HEAD wherever GET. Prints the address it\n"
            "listens on.\n"
            "SIGINT/SIGTERM: stop accepting, let what runs finish (see --drain-timeout),\n"
            "exit 0; a second signal cancels what is left at once.\n\n"
            "  -m, --model PATH         GGUF model (default: $WEFT_MODEL, else the default model)\n"
            "      --model-name NAME    the id /v1/models reports (default: the file's name)\n"
            "      --host HOST          address to bind (default 127.0.0.1)\n"
            "      --port PORT          port (default 8080; 0 = any free port)\n"
            "      --api-key KEY        require 'Authorization: Bearer KEY' on /v1/ routes\n"
            "                           (default: $WEFT_API_KEY, else no key)\n"
            "      --ctx N              context per request, prompt + output (default 2048)\n"
            "      --parallel N         requests decoded together (default 32)\n"
            "      --batch N            tokens per forward pass (default 256)\n"
            "      --prefill-cap N      prompt tokens per pass while requests decode (default 64;\n"
            "                           0 = up to --batch: more throughput, slower tokens)\n"
            "      --spec N             speculative decoding: up to N draft tokens a request and\n"
            "                           pass, looked up in its prompt and output and checked in\n"
            "                           the same pass, so outputs are the same; a pass takes as\n"
            "                           many as pay for themselves (default 8; 0 = off)\n"
            "      --kv-mem MB          KV cache size (default: parallel x ctx)\n"
            "      --max-queue N        requests waiting beyond --parallel before 429 (default 256;\n"
            "                           0 = no limit); a request whose n choices could never fit\n"
            "                           in --parallel + --max-queue is a 400, not a 429\n"
            "      --max-body BYTES     request body limit, 413 beyond (default 1048576)\n"
            "      --max-connections N  open client connections; one more is closed at once\n"
            "                           (default 1024)\n"
            "      --no-prefix-cache    do not share KV blocks between equal prompt prefixes\n"
            "      --share-generated    also serve a finished request's generated tokens' KV\n"
            "                           to later prompts that repeat them (a chat's next\n"
            "                           turn): faster, but their KV comes from the decoding\n"
            "                           kernels, so such a request's output can differ in\n"
            "                           the last bits from the same request on a cold cache\n"
            "      --drain-timeout S    on shutdown, cancel what still runs after S seconds\n"
            "                           (default 30)\n"
            "      --timeout S          HTTP read/write timeout (default 600)\n"
            "  -t, --threads N          compute threads (default: all cores)\n"
            "  -v, --verbose            log every request to stderr\n"
            "  -h, --help               this help\n");
}

typedef struct srv srv;
typedef struct job job;
typedef struct choice choice;
typedef struct conn conn;

struct choice {
    job *j;
    int index;
    uint64_t id;         /* engine request; 0 = not submitted */
    bool done;
    int status;
    const char *finish;
    char *text;          /* non-streamed: the output so far (malloc) */
    size_t len, cap;
    json_t *logprobs;    /* non-streamed, when asked for */
    int32_t n_prompt, n_cached, n_generated;
    double t_first, t_last;
    evq_msg final;       /* where the final event goes when memory runs out */
};

struct job {
    srv *s;
    struct evhttp_request *req; /* NULL once answered */
    const char *route;
    oai_request r;
    oai_head h;
    char id[48];
    choice *ch;
    int n_ch, n_submitted, n_done;
    bool started;        /* stream headers sent */
    bool gone;           /* the client closed the connection */
    struct event *hangup; /* non-streamed: watches the socket for the peer's close */
    conn *c;             /* its connection while that is open and the job runs, or NULL */
    double t0;
    job *prev, *next;
};

/* One client connection, from accept to libevent's free of it (its close
 * callback). */
struct conn {
    srv *s;
    struct bufferevent *bev;         /* made for libevent; a reference held until adopted */
    struct evhttp_connection *evcon; /* NULL until adopted */
    struct event *adopt;
    struct evbuffer_cb_entry *in_cb; /* counts what arrives into in_bytes */
    size_t in_bytes;                 /* read since its last request reached on_request */
    bool too_large;                  /* past srv.max_raw: answered 413 and closed by on_sweep */
    job *j;                          /* the request being answered on it, if any */
    conn *prev, *next;
};

struct srv {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct evconnlistener *listener; /* sock's; NULL once closed */
    struct event *resume;            /* re-enables the listener after an accept error */
    conn *conns;
    int n_conns, max_conns;
    size_t max_raw;                  /* bytes a request may take on the wire (its head too) */
    struct event *sweep;             /* closes the conns marked too_large */
    bool accept_failing;             /* logged; quiet until an accept succeeds */
    struct event *notify, *sig_int, *sig_term, *grace;
    weft_model *model;
    const tok_vocab *vocab;
    weft_engine *eng;
    int32_t n_ctx;
    char model_id[256];
    const char *api_key;
    size_t max_body;
    double drain_s;
    bool verbose;
    evq *q;              /* engine events for the loop; expects each choice's final event */
    job *jobs;
    int n_jobs;
    int n_sending;       /* replies handed to evhttp and not yet written */
    bool draining;
    uint64_t rng, n_ids;
    long long started;
    metrics m;
};

/* ---- replies ------------------------------------------------------------------ */

/* Draining ends when no job runs and every reply is written (a reply cut
 * off by a dead connection never reports: a timer bounds the wait). */
static void maybe_exit(srv *s)
{
    if (s->draining && s->n_jobs == 0 && s->n_sending == 0) event_base_loopexit(s->base, NULL);
}

static void on_sent(struct evhttp_request *req, void *arg)
{
    srv *s = arg;
    s->n_sending--;
    maybe_exit(s);
}

/* Counts req's reply as in flight until evhttp has written it. */
static void track_send(srv *s, struct evhttp_request *req)
{
    evhttp_request_set_on_complete_cb(req, on_sent, s);
    s->n_sending++;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

/* Sends len bytes of body as the whole response; to a HEAD request only
 * its length. libevent 2.1 leaves Content-Length out of HEAD and CONNECT
 * answers (it expects a tunnel after a CONNECT) and still sends the body it
 * is given after them, on a connection it keeps open: a keep-alive client
 * could not tell where the answer ends (it read a HEAD answer's body as the
 * start of the next answer, and waited on a CONNECT's 404 until a timeout).
 * The length goes in by hand. */
static void send_body(struct evhttp_request *req, int status, const char *body, size_t len)
{
    const enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct evbuffer *b = NULL;
    if (cmd == EVHTTP_REQ_HEAD || cmd == EVHTTP_REQ_CONNECT) {
        char n[32];
        snprintf(n, sizeof n, "%zu", len);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", n);
    }
    if (cmd != EVHTTP_REQ_HEAD && (b = evbuffer_new()) != NULL) evbuffer_add(b, body, len);
    evhttp_send_reply(req, status, reason(status), b);
    if (b) evbuffer_free(b);
}

/* Sends o (taken) as the whole response and counts it. */
static void reply_json(srv *s, struct evhttp_request *req, const char *route, int status, json_t *o)
{
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                              "\"param\":null,\"code\":null}}";
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    track_send(s, req);
    send_body(req, status, body ? body : oom, body ? strlen(body) : sizeof oom - 1);
    free(body);
    metrics_http(&s->m, route, status);
}

static void reply_error(srv *s, struct evhttp_request *req, const char *route, const oai_error *e)
{
    if (s->verbose) fprintf(stderr, "weft serve: %s -> %d %s\n", route, e->status, e->message);
    reply_json(s, req, route, e->status, oai_error_json(e));
}

/* The engine's error codes as HTTP errors. */
static void engine_error(oai_error *e, int rc)
{
    switch (rc) {
    case WEFT_EBUSY:
        oai_fail(e, 429, "rate_limit_error", "queue_full", NULL,
                 "the server's request queue is full; retry later");
        break;
    case WEFT_ECANCELED:
        oai_fail(e, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
        break;
    case WEFT_ERANGE:
        oai_fail(e, 400, "invalid_request_error", "context_length_exceeded", "max_tokens", "%s",
                 weft_last_error());
        break;
    case WEFT_EINVAL:
        oai_fail(e, 400, "invalid_request_error", "invalid_value", NULL, "%s", weft_last_error());
        break;
    case WEFT_ENOKV:
        oai_fail(e, 503, "server_error", "kv_cache_full", NULL, "no KV cache left for the request");
        break;
    default:
        oai_fail(e, 500, "server_error", NULL, NULL, "%s", weft_strerror(rc));
    }
}

/* Writes o (taken) as one server-sent event of the job's stream. */
static void send_sse(job *j, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    struct evbuffer *b = evbuffer_new();
    if (b && s) {
        evbuffer_add(b, "data: ", 6);
        evbuffer_add(b, s, strlen(s));
        evbuffer_add(b, "\n\n", 2);
        evhttp_send_reply_chunk(j->req, b);
    }
    if (b) evbuffer_free(b);
    free(s);
}

static void send_done(job *j)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) return;
    evbuffer_add(b, "data: [DONE]\n\n", 14);
    evhttp_send_reply_chunk(j->req, b);
    evbuffer_free(b);
}

/* ---- jobs ------------------------------------------------------------------------ */

static void job_unwatch(job *j)
{
    if (j->hangup) event_free(j->hangup);
    j->hangup = NULL;
}

static void job_free(job *j)
{
    srv *s = j->s;
    job_unwatch(j);
    if (j->c) j->c->j = NULL;
    if (j->prev) j->prev->next = j->next;
    else if (s->jobs == j) s->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    for (int i = 0; i < j->n_ch; i++) {
        free(j->ch[i].text);
        json_decref(j->ch[i].logprobs);
    }
    free(j->ch);
    oai_request_free(&j->r);
    free(j);
    if (--s->n_jobs == 0 && s->draining) {
        const struct timeval bound = {2, 0};
        event_base_loopexit(s->base, &bound);
        maybe_exit(s);
    }
}

static void job_cancel(job *j)
{
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].id && !j->ch[i].done) weft_engine_cancel(j->s->eng, j->ch[i].id);
}

static oai_usage job_usage(const job *j)
{
    oai_usage u = {0};
    /* a prompt counts once however many choices it has, as OpenAI counts */
    for (int i = 0; i < j->n_ch; i++) {
        if (i % j->r.n == 0) {
            u.prompt += j->ch[i].n_prompt;
            u.cached += j->ch[i].n_cached;
        }
        u.completion += j->ch[i].n_generated;
    }
    return u;
}

/* The first failed choice's status, 0 if all succeeded. */
static int job_status(const job *j)
{
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].status != 0) return j->ch[i].status;
    return 0;
}

static void job_reply_whole(job *j)
{
    oai_choice *oc = calloc((size_t)j->n_ch, sizeof *oc);
    if (!oc) {
        oai_error e;
        oai_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
        reply_error(j->s, j->req, j->route, &e);
        return;
    }
    for (int i = 0; i < j->n_ch; i++)
        oc[i] = (oai_choice){j->ch[i].text ? j->ch[i].text : "", j->ch[i].len, j->ch[i].finish,
                             j->ch[i].logprobs};
    const oai_usage u = job_usage(j);
    reply_json(j->s, j->req, j->route, 200, oai_response(&j->h, oc, j->n_ch, &u));
    free(oc);
}

/* Every choice has had its final event: answer (if anyone listens), free. */
static void job_finish(job *j)
{
    srv *s = j->s;
    if (j->c) j->c->j = NULL;
    j->c = NULL;
    job_unwatch(j); /* before the reply: the connection (and its fd) may end with it */
    const int st = job_status(j);
    if (j->req && !j->gone) {
        oai_error e = {0};
        if (st != 0) engine_error(&e, st == WEFT_ECANCELED ? WEFT_ECANCELED : st);
        if (j->started) {
            if (st != 0) send_sse(j, oai_error_json(&e));
            else if (j->r.include_usage) {
                const oai_usage u = job_usage(j);
                send_sse(j, oai_usage_chunk(&j->h, &u));
            }
            send_done(j);
            track_send(s, j->req);
            evhttp_send_reply_end(j->req);
            metrics_http(&s->m, j->route, 200);
        } else if (st != 0) {
            reply_error(s, j->req, j->route, &e);
        } else {
            job_reply_whole(j);
        }
    } else if (j->req) {
        /* detached from its closed connection: these calls free it */
        if (j->started) evhttp_send_reply_end(j->req);
        else evhttp_send_reply(j->req, 499, "Client Closed Request", NULL);
        metrics_http(&s->m, j->route, 499);
    }
    if (j->started) s->m.streams_open--;
    if (s->verbose)
        fprintf(stderr, "weft serve: %s %s done in %.3f s%s\n", j->route, j->id, weft_now() - j->t0,
                j->gone ? " (client gone)" : "");
    job_free(j);
}


/* The peer of a non-streamed request closed its socket (EV_CLOSED) or reset
 * it. evhttp does not read a connection while its request is being
 * answered, so it would only notice when the reply is written; without
 * this, a client that gives up on a long completion would keep the engine
 * busy to the end. A reset reaches libevent's epoll backend as
 * EPOLLERR|EPOLLHUP, which it reports as EV_READ, never EV_CLOSED: so the
 * watch is for both, and a readable socket is peeked — data is a pipelined
 * request (the watch ends: the reply's write will tell), end of file or an
 * error is a peer gone. */
static void on_hangup(evutil_socket_t fd, short what, void *arg)
{
    job *j = arg;
    if (!(what & EV_CLOSED)) {
        char c;
        const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) {
            job_unwatch(j);
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (event_add(j->hangup, NULL) != 0) job_unwatch(j); /* spurious: watch on */
            return;
        }
    }
    job_unwatch(j);
    if (j->gone) return;
    if (j->s->verbose) fprintf(stderr, "weft serve: %s %s: client gone\n", j->route, j->id);
    j->gone = true;
    job_cancel(j);
}

/* Watches a non-streamed job's socket for the peer's close, where the event
 * backend can tell a close from data (EV_FEATURE_EARLY_CLOSE: epoll). */
static void job_watch(job *j, struct evhttp_request *req)
{
    if (!(event_base_get_features(j->s->base) & EV_FEATURE_EARLY_CLOSE)) return;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    const evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0) return;
    j->hangup = event_new(j->s->base, fd, EV_READ | EV_CLOSED, on_hangup, j);
    if (j->hangup && event_add(j->hangup, NULL) != 0) job_unwatch(j);
}

/* ---- engine events ---------------------------------------------------------------- */

/* Engine thread: copy the event, queue it, wake the loop (a token's event
 * that cannot be copied for want of memory loses its text). */
static void on_engine_event(const weft_event *ev, void *user)
{
    choice *c = (choice *)user + ev->index; /* user: the prompt's first choice */
    (void)evq_push(c->j->s->q, ev, user, &c->final);
}

/* Output text (and the sampled token's log-probability) of one choice. */
static void choice_output(choice *c, const evq_msg *m, const char *finish)
{
    job *j = c->j;
    json_t *lp = NULL;
    if (j->r.logprobs && m->token >= 0) {
        char piece[256];
        int pl = tok_piece(j->s->vocab, m->token, piece, sizeof piece, false);
        lp = j->r.stream ? oai_logprobs_new(j->r.kind) : json_incref(c->logprobs);
        oai_logprobs_add(j->r.kind, lp, piece, pl > 0 ? (size_t)pl : 0, m->logprob, c->len);
    }
    if (j->r.stream) {
        if (m->len > 0 || lp || finish)
            send_sse(j, oai_chunk(&j->h, c->index, m->text, m->len, lp, finish, false, j->r.include_usage));
        c->len += m->len; /* the text offset of the next token */
    } else if (m->len > 0) {
        if (c->len + m->len + 1 > c->cap) {
            size_t cap = 2 * (c->len + m->len) + 64;
            char *t = realloc(c->text, cap);
            if (!t) {
                json_decref(lp);
                return; /* out of memory: the text loses this piece */
            }
            c->text = t;
            c->cap = cap;
        }
        memcpy(c->text + c->len, m->text, m->len);
        c->len += m->len;
        c->text[c->len] = 0;
    }
    json_decref(lp);
}

static void choice_final(choice *c, const evq_msg *m)
{
    job *j = c->j;
    srv *s = j->s;
    c->done = true;
    c->status = m->status;
    c->finish = strcmp(m->finish, "length") == 0 ? "length" : "stop";
    c->n_prompt = m->n_prompt;
    c->n_cached = m->n_cached;
    c->n_generated = m->n_generated;
    j->n_done++;
    if (m->status == WEFT_ECANCELED) s->m.choices_cancelled++;
    if (m->status == 0) {
        s->m.prompt_tokens += m->n_prompt;
        s->m.cached_tokens += m->n_cached;
        s->m.generated_tokens += m->n_generated;
        if (c->t_first > 0) {
            metrics_observe(&s->m.ttft, c->t_first - j->t0);
            if (m->n_generated > 1)
                metrics_observe(&s->m.tpot, (c->t_last - c->t_first) / (m->n_generated - 1));
        }
        if (!j->gone) choice_output(c, m, j->r.stream ? c->finish : NULL);
    }
    if (j->n_done == j->n_submitted) job_finish(j);
}

static void handle_msg(evq_msg *m)
{
    choice *c = (choice *)m->owner + m->index;
    if (m->done) {
        choice_final(c, m);
        return;
    }
    if (c->t_first == 0) c->t_first = m->t;
    c->t_last = m->t;
    if (!c->j->gone) choice_output(c, m, NULL);
}

/* Loop thread: drain what the engine delivered. */
static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    srv *s = arg;
    evq_msg *m = evq_take(s->q);
    while (m) {
        evq_msg *next = m->next;
        const bool in_slot = m->in_slot;
        handle_msg(m); /* may free the job, and with it a message in a choice's slot */
        if (!in_slot) evq_msg_free(m);
        m = next;
    }
}

/* ---- connections --------------------------------------------------------------------- */

static void conn_free(conn *c)
{
    srv *s = c->s;
    if (c->prev) c->prev->next = c->next;
    else if (s->conns == c) s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    event_free(c->adopt);
    s->n_conns--;
    free(c);
}

/* libevent frees the connection: a job still answered on it has lost its
 * client. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    conn *c = arg;
    job *j = c->j;
    evbuffer_remove_cb_entry(bufferevent_get_input(evhttp_connection_get_bufferevent(evcon)), c->in_cb);
    if (j) {
        j->c = NULL;
        j->gone = true;
        job_cancel(j);
    }
    conn_free(c);
}

/* The conn of an open connection, NULL if it has none (see make_bev). */
static conn *conn_of(srv *s, struct evhttp_connection *evcon)
{
    for (conn *c = s->conns; c; c = c->next)
        if (c->evcon == evcon) return c;
    return NULL;
}

/* The request being read on c has more bytes than any request may have:
 * libevent would read on (its own limit is higher, see listen_http) and
 * then answer with an HTML page; instead reading stops and on_sweep answers
 * and closes. Not while a job is answered on c: what a client sends then
 * waits unread for the next request. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    conn *c = arg;
    (void)buf;
    c->in_bytes += info->n_added;
    if (c->in_bytes <= c->s->max_raw || c->j || c->too_large || !c->evcon) return;
    c->too_large = true;
    bufferevent_disable(evhttp_connection_get_bufferevent(c->evcon), EV_READ);
    event_active(c->s->sweep, EV_TIMEOUT, 0);
}

/* The 413 of a request too large to read, written straight to the socket
 * (its reply would be the connection's first unsent bytes: libevent writes
 * nothing while it reads a request), then the connection is closed. */
static void conn_reject_large(conn *c)
{
    srv *s = c->s;
    oai_error e;
    oai_fail(&e, 413, "invalid_request_error", "request_too_large", NULL,
             "the request has more than %zu bytes; this server takes a body of at most %zu",
             s->max_raw, s->max_body);
    json_t *o = oai_error_json(&e);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char head[160];
    const int n = snprintf(head, sizeof head,
                           "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                           body ? strlen(body) : 0);
    const evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
    if (fd >= 0 && send(fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n && body)
        (void)send(fd, body, strlen(body), MSG_NOSIGNAL | MSG_DONTWAIT);
    free(body);
    metrics_http(&s->m, "other", 413);
    if (s->verbose) fprintf(stderr, "weft serve: a request of more than %zu bytes: 413\n", s->max_raw);
    evhttp_connection_free(c->evcon); /* on_conn_close frees c */
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    srv *s = arg;
    (void)fd;
    (void)what;
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->too_large) conn_reject_large(c);
    }
}

/* Runs once libevent has set up the connection make_bev made the
 * bufferevent of, before any of its I/O (it is activated from inside the
 * accept). libevent clears the callbacks of a bufferevent it frees, so one
 * it gave up on in between has no callback argument (our reference kept it
 * readable); else the argument is the connection. */
static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    srv *s = c->s;
    void *evcon = NULL;
    (void)fd;
    (void)what;
    bufferevent_getcb(c->bev, NULL, NULL, NULL, &evcon);
    bufferevent_decref(c->bev);
    c->bev = NULL;
    if (!evcon) {
        conn_free(c);
        return;
    }
    c->evcon = evcon;
    evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
    if (s->n_conns > s->max_conns) {
        if (s->verbose) fprintf(stderr, "weft serve: %d connections open: closing a new one\n", s->max_conns);
        evhttp_connection_free(c->evcon); /* on_conn_close frees c */
    }
}

/* evhttp's bufferevent factory, called inside the accept of each
 * connection — the one hook libevent gives there: counts the connection
 * and queues on_adopt. Out of memory it returns NULL: libevent makes its
 * own bufferevent and the connection goes uncounted (and its request is not
 * cancelled when it closes, unless the hang-up watch sees it). */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    srv *s = arg;
    s->accept_failing = false;
    conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    /* options 0, as libevent's own: evhttp_connection_free closes the fd */
    c->bev = bufferevent_socket_new(base, -1, 0);
    c->adopt = event_new(base, -1, 0, on_adopt, c);
    if (!c->bev || !c->adopt) {
        if (c->bev) bufferevent_free(c->bev);
        if (c->adopt) event_free(c->adopt);
        free(c);
        return NULL;
    }
    c->in_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
    if (!c->in_cb) {
        bufferevent_free(c->bev);
        event_free(c->adopt);
        free(c);
        return NULL;
    }
    bufferevent_incref(c->bev);
    c->s = s;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    event_active(c->adopt, EV_TIMEOUT, 0);
    return c->bev;
}

/* evhttp_bind_listener hands the listener evhttp's callback argument, and
 * the error callback gets that one too: it finds the server here (one per
 * process). */
static srv *listening_srv;

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    srv *s = arg;
    (void)fd;
    (void)what;
    if (s->listener) evconnlistener_enable(s->listener);
}

/* accept() failed with something other than a retry (EMFILE, ENFILE,
 * ENOBUFS...): the listening socket stays readable, so libevent would call
 * accept again at once, for ever, at 100% CPU. Pause accepting for 100 ms
 * instead; the connections wait in the backlog meanwhile. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    const int err = EVUTIL_SOCKET_ERROR();
    srv *s = listening_srv;
    (void)arg;
    evconnlistener_disable(lev);
    if (!s || !s->resume) return;
    if (!s->accept_failing)
        fprintf(stderr, "weft serve: accept: %s (%d connections open); pausing accepts\n",
                evutil_socket_error_to_string(err), s->n_conns);
    s->accept_failing = true;
    const struct timeval pause = {0, 100 * 1000};
    evtimer_add(s->resume, &pause);
}

/* ---- generation requests -------------------------------------------------------------- */

static uint64_t next_rand(srv *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

/* Does a prompt of n_prompt tokens and max_tokens more fit the context?
 * Returns 0, or -1 with *e naming what to shorten: the prompt when it
 * leaves no room for one token, else the max_tokens field. */
static int check_context(const srv *s, const oai_request *r, int32_t n_prompt, int32_t max_tokens,
                         oai_error *e)
{
    if (n_prompt >= s->n_ctx)
        return oai_fail(e, 400, "invalid_request_error", "context_length_exceeded",
                        r->kind == OAI_CHAT ? "messages" : "prompt",
                        "this model's context is %d tokens per request; the prompt has %d, which "
                        "leaves no room for output",
                        s->n_ctx, n_prompt);
    if ((int64_t)n_prompt + max_tokens > s->n_ctx)
        return oai_fail(e, 400, "invalid_request_error", "context_length_exceeded", r->max_tokens_param,
                        "this model's context is %d tokens per request; the prompt has %d, so '%s' "
                        "can be at most %d, not %d",
                        s->n_ctx, n_prompt, r->max_tokens_param, s->n_ctx - n_prompt, max_tokens);
    return 0;
}

/* Submits one engine request per prompt, each with the request's n
 * completions (forked from one prefill, seeds seed, seed+1, ...). On failure
 * cancels what went in and fills *e. */
static int job_submit(job *j, oai_error *e)
{
    srv *s = j->s;
    const oai_request *r = &j->r;
    const uint64_t seed = r->seed_set ? r->sampling.seed : next_rand(s);
    for (int p = 0; p < r->n_prompts; p++) {
        const int32_t max_tokens = r->max_tokens ? r->max_tokens : s->n_ctx - r->n_prompt[p];
        if (check_context(s, r, r->n_prompt[p], max_tokens, e) < 0) goto fail;
        weft_request rq = {.tokens = r->prompts[p], .n_tokens = r->n_prompt[p], .sampling = r->sampling,
                           .max_tokens = max_tokens, .stop = (const char *const *)r->stop,
                           .n_stop = r->n_stop, .ignore_eos = r->ignore_eos, .n = r->n,
                           .logprobs = r->logprobs};
        rq.sampling.seed = seed;
        choice *first = &j->ch[p * r->n];
        for (int k = 0; k < r->n; k++) {
            choice *c = first + k;
            c->j = j;
            c->index = p * r->n + k;
            if (r->logprobs && !r->stream && !(c->logprobs = oai_logprobs_new(r->kind))) {
                oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
                goto fail;
            }
        }
        uint64_t id = 0;
        evq_expect(s->q, r->n); /* one final event per choice */
        int rc = weft_engine_submit(s->eng, &rq, on_engine_event, first, &id);
        if (rc < 0) {
            evq_expect(s->q, -r->n);
            engine_error(e, rc);
            goto fail;
        }
        for (int k = 0; k < r->n; k++) first[k].id = id; /* one id, n final events */
        j->n_submitted += r->n;
    }
    return 0;
fail:
    job_cancel(j);
    return -1;
}

static void job_start_stream(job *j)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(j->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    /* HTTP/1.0 has no chunked encoding: a stream ends when the connection
     * does. For "Connection: keep-alive" libevent would send Content-Length:
     * 0 and keep it open; without the header it sends neither and closes it
     * (the version is only in http_struct.h in libevent 2.1). */
    if (j->req->major == 1 && j->req->minor == 0)
        evhttp_remove_header(evhttp_request_get_input_headers(j->req), "Connection");
    evhttp_send_reply_start(j->req, 200, "OK");
    j->started = true;
    j->s->m.streams_open++;
    if (j->r.kind == OAI_CHAT)
        for (int i = 0; i < j->n_ch; i++)
            send_sse(j, oai_chunk(&j->h, i, "", 0, NULL, NULL, true, j->r.include_usage));
}

static void handle_generate(srv *s, struct evhttp_request *req, oai_kind kind, const char *route)
{
    oai_error e;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const size_t len = evbuffer_get_length(in);
    if (len > s->max_body) {
        oai_fail(&e, 413, "invalid_request_error", "request_too_large", NULL,
                 "the body has %zu bytes; this server takes at most %zu", len, s->max_body);
        reply_error(s, req, route, &e);
        return;
    }
    if (s->draining) {
        engine_error(&e, WEFT_ECANCELED);
        reply_error(s, req, route, &e);
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        oai_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
        reply_error(s, req, route, &e);
        return;
    }
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (oai_parse(kind, body ? body : "", body ? len : 0, s->vocab, &j->r, &e) < 0) {
        reply_error(s, req, route, &e);
        free(j);
        return;
    }
    j->s = s;
    j->req = req;
    j->route = route;
    j->t0 = weft_now();
    j->n_ch = j->r.n_prompts * j->r.n;
    snprintf(j->id, sizeof j->id, "%s-%llx%08llx", kind == OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)++s->n_ids, (unsigned long long)(next_rand(s) & 0xffffffffu));
    j->h = (oai_head){kind, j->id, (long long)time(NULL), s->model_id};
    j->next = s->jobs;
    if (s->jobs) s->jobs->prev = j;
    s->jobs = j;
    s->n_jobs++;
    j->ch = calloc((size_t)j->n_ch, sizeof *j->ch);
    if (!j->ch) oai_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
    if (!j->ch || job_submit(j, &e) < 0) {
        reply_error(s, req, route, &e);
        j->req = NULL; /* answered; the job lives on until its cancelled choices end */
        j->gone = true;
        if (j->n_submitted == 0) job_free(j);
        return;
    }
    if (s->verbose)
        fprintf(stderr, "weft serve: %s %s: %d choice(s), prompt %d tokens%s\n", route, j->id, j->n_ch,
                j->r.n_prompt[0], j->r.stream ? ", streamed" : "");
    j->c = conn_of(s, evhttp_request_get_connection(req));
    if (j->c) j->c->j = j;
    if (j->r.stream) job_start_stream(j);
    else job_watch(j, req);
}

/* ---- the other routes ----------------------------------------------------------------- */

static json_t *model_json(const srv *s)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", s->model_id, "object", "model", "created",
                     (json_int_t)s->started, "owned_by", "weft");
}

static void handle_models(srv *s, struct evhttp_request *req, const char *path)
{
    if (strcmp(path, "/v1/models") == 0) {
        reply_json(s, req, "/v1/models", 200,
                   json_pack("{s:s,s:[o]}", "object", "list", "data", model_json(s)));
        return;
    }
    const char *id = path + strlen("/v1/models/");
    char *dec = evhttp_uridecode(id, 0, NULL);
    const bool same = dec && strcmp(dec, s->model_id) == 0;
    free(dec);
    if (same) {
        reply_json(s, req, "/v1/models", 200, model_json(s));
        return;
    }
    oai_error e;
    oai_fail(&e, 404, "invalid_request_error", "model_not_found", "model", "no such model");
    reply_error(s, req, "/v1/models", &e);
}

static void handle_metrics(srv *s, struct evhttp_request *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        const weft_engine_stats st = weft_engine_get_stats(s->eng);
        metrics_http(&s->m, "/metrics", 200); /* this response counts too */
        metrics_render(&s->m, &st, f);
        fclose(f);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    send_body(req, text ? 200 : 500, text ? text : "", text ? len : 0);
    free(text);
}

/* Constant-time comparison of the bearer token with the key. */
static bool authorized(const srv *s, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    const size_t n = strlen(s->api_key), m = strlen(h);
    unsigned char diff = n != m;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(s->api_key[i] ^ (i < m ? h[i] : 0));
    return diff == 0;
}

/* HEAD goes wherever GET does: the head of the GET reply (send_body). */
static bool method_allowed(enum evhttp_cmd_type cmd, bool post)
{
    return post ? cmd == EVHTTP_REQ_POST : cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
}

/* Has the connection closed after req's reply (said once, whatever the
 * number of reasons). */
static void close_after(struct evhttp_request *req)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    if (!evhttp_find_header(out, "Connection")) evhttp_add_header(out, "Connection", "close");
}

/* Does libevent read a body for this method? Not for HEAD, TRACE and
 * methods it does not know (evhttp_method_may_have_body). */
static bool reads_body(enum evhttp_cmd_type cmd)
{
    return cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT ||
           cmd == EVHTTP_REQ_DELETE || cmd == EVHTTP_REQ_OPTIONS || cmd == EVHTTP_REQ_PATCH ||
           cmd == EVHTTP_REQ_CONNECT;
}

/* Does req say a body follows its head? The headers frame a request's body
 * whatever its method (RFC 9112, 6.3): where libevent reads none, that body
 * would be parsed as the next request on the connection. */
static bool declares_body(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *cl = evhttp_find_header(in, "Content-Length");
    return evhttp_find_header(in, "Transfer-Encoding") != NULL || (cl && strcmp(cl, "0") != 0);
}

/* 405 with the route's methods in Allow. A method libevent reads no body
 * for closes the connection after the reply, body declared or not. */
static void reject_method(srv *s, struct evhttp_request *req, const char *route, bool post)
{
    const enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *allow = post ? "POST" : "GET, HEAD";
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    if (!reads_body(cmd)) close_after(req);
    oai_error e;
    oai_fail(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "%s takes %s", route, allow);
    reply_error(s, req, route, &e);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    srv *s = arg;
    conn *c = conn_of(s, evhttp_request_get_connection(req));
    if (c) c->in_bytes = 0, c->too_large = false; /* read whole: answered as any other */
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    const enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    oai_error e;
    /* a CONNECT's target is host:port, which libevent parses to an empty
     * path: the 404 names the target */
    if ((!path || !*path) && evhttp_request_get_uri(req)) path = evhttp_request_get_uri(req);
    if (!path) path = "";
    /* whatever the answer (401, 404, ...): a body libevent leaves unread ends the connection */
    if (!reads_body(cmd) && declares_body(req)) close_after(req);
    const bool is_v1 = strncmp(path, "/v1/", 4) == 0;
    const char *route = strcmp(path, "/v1/completions") == 0        ? "/v1/completions"
                        : strcmp(path, "/v1/chat/completions") == 0 ? "/v1/chat/completions"
                        : strcmp(path, "/v1/models") == 0 || strncmp(path, "/v1/models/", 11) == 0
                            ? "/v1/models"
                        : strcmp(path, "/health") == 0  ? "/health"
                        : strcmp(path, "/metrics") == 0 ? "/metrics"
                                                        : NULL;
    if (is_v1 && s->api_key && !authorized(s, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        oai_fail(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                 "a valid API key is required: 'Authorization: Bearer KEY'");
        reply_error(s, req, route ? route : "other", &e);
        return;
    }
    if (!route) {
        oai_fail(&e, 404, "invalid_request_error", "not_found", NULL, "no route %.200s", path);
        reply_error(s, req, "other", &e);
        return;
    }
    const bool post = strcmp(route, "/v1/completions") == 0 || strcmp(route, "/v1/chat/completions") == 0;
    if (!method_allowed(cmd, post)) {
        reject_method(s, req, route, post);
        return;
    }
    if (strcmp(route, "/v1/completions") == 0) handle_generate(s, req, OAI_COMPLETION, route);
    else if (strcmp(route, "/v1/chat/completions") == 0) handle_generate(s, req, OAI_CHAT, route);
    else if (strcmp(route, "/v1/models") == 0) handle_models(s, req, path);
    else if (strcmp(route, "/metrics") == 0) handle_metrics(s, req);
    else
        reply_json(s, req, route, s->draining ? 503 : 200,
                   json_pack("{s:s}", "status", s->draining ? "draining" : "ok"));
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    srv *s = arg;
    fprintf(stderr, "weft serve: drain timeout: cancelling %d request(s)\n", s->n_jobs);
    for (job *j = s->jobs; j; j = j->next) job_cancel(j);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    srv *s = arg;
    if (s->draining) {
        on_grace(sig, what, arg);
        return;
    }
    s->draining = true;
    if (s->sock) evhttp_del_accept_socket(s->http, s->sock); /* frees the listener */
    s->sock = NULL;
    s->listener = NULL;
    if (s->resume) evtimer_del(s->resume);
    fprintf(stderr, "weft serve: %s: no new connections; %d request(s) in flight\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", s->n_jobs);
    if (s->n_jobs == 0) {
        const struct timeval bound = {2, 0};
        event_base_loopexit(s->base, &bound);
        maybe_exit(s);
        return;
    }
    const struct timeval tv = {(time_t)s->drain_s, (suseconds_t)((s->drain_s - (time_t)s->drain_s) * 1e6)};
    s->grace = evtimer_new(s->base, on_grace, s);
    if (s->grace) evtimer_add(s->grace, &tv);
}

/* ---- set-up --------------------------------------------------------------------------- */

typedef struct serve_opts {
    const char *model_path, *model_name, *host, *api_key;
    long port, ctx, parallel, batch, kv_mb, max_queue, threads, prefill_cap, spec;
    long max_body, timeout, max_conns;
    double drain_s;
    bool prefix, share_generated, verbose;
} serve_opts;

/* Returns 0, 2 for a usage error, or -1 for --help (done). */
static int parse_opts(int argc, char **argv, serve_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"model-name", required_argument, 0, 'N'},
        {"host", required_argument, 0, 'H'},       {"port", required_argument, 0, 'p'},
        {"api-key", required_argument, 0, 'k'},    {"ctx", required_argument, 0, 'C'},
        {"parallel", required_argument, 0, 'P'},   {"batch", required_argument, 0, 'b'},
        {"kv-mem", required_argument, 0, 'K'},     {"max-queue", required_argument, 0, 'Q'},
        {"max-body", required_argument, 0, 'B'},   {"no-prefix-cache", no_argument, 0, 'X'},
        {"drain-timeout", required_argument, 0, 'D'}, {"timeout", required_argument, 0, 'T'},
        {"threads", required_argument, 0, 't'},    {"verbose", no_argument, 0, 'v'},
        {"prefill-cap", required_argument, 0, 'c'}, {"share-generated", no_argument, 0, 'G'},
        {"max-connections", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'},
        {"spec", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    *o = (serve_opts){.host = "127.0.0.1", .api_key = getenv("WEFT_API_KEY"), .port = 8080,
                      .ctx = 2048, .parallel = 32, .batch = 256, .max_queue = 256,
                      .max_body = 1 << 20, .timeout = 600, .max_conns = 1024, .drain_s = 30, .prefix = true,
                      .prefill_cap = -1, .spec = -1};
    if (o->api_key && !*o->api_key) o->api_key = NULL;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:vh", opts, NULL)) != -1) {
        long *num = NULL, lo = 0, hi = 0;
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 'N': o->model_name = optarg; break;
        case 'H': o->host = optarg; break;
        case 'k': o->api_key = optarg; break;
        case 'X': o->prefix = false; break;
        case 'G': o->share_generated = true; break;
        case 'v': o->verbose = true; break;
        case 'h': usage(stdout); return -1;
        case 'p': num = &o->port, lo = 0, hi = 65535; break;
        case 'C': num = &o->ctx, lo = 16, hi = 1 << 20; break;
        case 'P': num = &o->parallel, lo = 1, hi = 1024; break;
        case 'b': num = &o->batch, lo = 1, hi = 1 << 16; break;
        case 'c': num = &o->prefill_cap, lo = 0, hi = 1 << 16; break;
        case 'S': num = &o->spec, lo = 0, hi = 64; break;
        case 'K': num = &o->kv_mb, lo = 0, hi = 1 << 22; break;
        case 'Q': num = &o->max_queue, lo = 0, hi = 1 << 20; break;
        case 'B': num = &o->max_body, lo = 1024, hi = 1L << 30; break;
        case 'T': num = &o->timeout, lo = 1, hi = 1 << 30; break;
        case 'M': num = &o->max_conns, lo = 1, hi = 1 << 20; break;
        case 't': num = &o->threads, lo = 0, hi = 256; break;
        case 'D':
            o->drain_s = strtod(optarg, &end);
            if (*end || !(o->drain_s >= 0 && o->drain_s < 1e6)) goto bad;
            break;
        default: usage(stderr); return 2;
        }
        if (num) {
            *num = strtol(optarg, &end, 10);
            if (*end || !*optarg || *num < lo || *num > hi) goto bad;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "weft serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->share_generated && !o->prefix) { /* it shares through the prefix cache */
        fprintf(stderr, "weft serve: --share-generated needs the prefix cache (not with --no-prefix-cache)\n");
        return 2;
    }
    return 0;
bad:
    fprintf(stderr, "weft serve: bad option value '%s' (see --help)\n", optarg);
    return 2;
}

static int load_engine(srv *s, const serve_opts *o)
{
    char pathbuf[4096];
    const char *path = o->model_path ? o->model_path : weft_default_model_path(pathbuf, sizeof pathbuf);
    fprintf(stderr, "weft serve: loading %s\n", path);
    if (weft_model_load(path, &s->model) < 0) {
        fprintf(stderr, "weft serve: %s\n", weft_last_error());
        return -1;
    }
    s->vocab = weft_model_vocab(s->model);
    if (o->model_name) {
        snprintf(s->model_id, sizeof s->model_id, "%s", o->model_name);
    } else {
        const char *base = strrchr(path, '/');
        snprintf(s->model_id, sizeof s->model_id, "%s", base ? base + 1 : path);
        char *dot = strstr(s->model_id, ".gguf");
        if (dot && dot[5] == 0) *dot = 0;
    }
    weft_engine_params ep = weft_engine_default_params();
    ep.ctx.n_ctx = (int32_t)o->ctx;
    ep.ctx.n_seq_max = (int32_t)o->parallel;
    ep.ctx.n_batch = (int32_t)o->batch;
    ep.ctx.n_threads = (int32_t)o->threads;
    ep.ctx.kv_mem = (size_t)o->kv_mb << 20;
    ep.prefix_cache = o->prefix;
    ep.share_generated = o->share_generated;
    if (o->prefill_cap >= 0) ep.prefill_cap = (int32_t)o->prefill_cap;
    if (o->spec >= 0) ep.spec_max = (int32_t)o->spec;
    ep.max_waiting = (int32_t)(o->max_queue > 0 ? o->max_queue : 0);
    if (weft_engine_create(s->model, &ep, &s->eng) < 0) {
        fprintf(stderr, "weft serve: %s\n", weft_last_error());
        return -1;
    }
    s->n_ctx = (int32_t)o->ctx;
    return 0;
}

/* A listener on host:port (the first of its addresses that binds), as
 * evhttp_bind_socket makes one but ours, to set its error callback; NULL on
 * failure. */
static struct evconnlistener *new_listener(struct event_base *base, const char *host, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                    .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG};
    struct evutil_addrinfo *ai = NULL;
    if (evutil_getaddrinfo(host, ps, &hints, &ai) != 0) return NULL;
    struct evconnlistener *lev = NULL;
    for (struct evutil_addrinfo *a = ai; a && !lev; a = a->ai_next)
        lev = evconnlistener_new_bind(base, NULL, NULL,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
                                      -1, a->ai_addr, (int)a->ai_addrlen);
    evutil_freeaddrinfo(ai);
    return lev;
}

/* Binds and prints the address (tests read the port from that line). */
static int listen_http(srv *s, const serve_opts *o)
{
    s->http = evhttp_new(s->base);
    if (!s->http) return -1;
    evhttp_set_gencb(s->http, on_request, s);
    /* A body a little over --max-body is read whole and handle_generate
     * answers 413 with its size. One beyond max_raw is cut off by on_input,
     * which answers 413 too. libevent's own limit would answer with an HTML
     * page, at once for a Content-Length over it: there is none (a
     * connection make_bev could not count, out of memory, goes unguarded). */
    s->max_raw = (size_t)o->max_body * 4 + 64 * 1024 + 4096;
    s->sweep = event_new(s->base, -1, 0, on_sweep, s);
    if (!s->sweep) return -1;
    evhttp_set_max_body_size(s->http, -1);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, (int)o->timeout);
    /* every method reaches on_request, which answers a wrong one with a JSON
     * 405: libevent would send an HTML 501. All 16 bits: the nine methods
     * it names and the one it marks unknown (1 << 15, http-internal.h). */
    evhttp_set_allowed_methods(s->http, 0xffff);
    evhttp_set_bevcb(s->http, make_bev, s);
    s->resume = evtimer_new(s->base, on_resume, s);
    s->listener = s->resume ? new_listener(s->base, o->host, (int)o->port) : NULL;
    s->sock = s->listener ? evhttp_bind_listener(s->http, s->listener) : NULL;
    if (!s->sock) {
        if (s->listener) evconnlistener_free(s->listener);
        s->listener = NULL;
        fprintf(stderr, "weft serve: cannot listen on %s:%ld\n", o->host, o->port);
        return -1;
    }
    listening_srv = s;
    evconnlistener_set_error_cb(s->listener, on_accept_error);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int port = (int)o->port;
    if (getsockname(evhttp_bound_socket_get_fd(s->sock), (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    printf("weft serve: listening on http://%s:%d (model %s%s)\n", o->host, port, s->model_id,
           s->api_key ? ", API key required" : "");
    fflush(stdout);
    return 0;
}

static void srv_close(srv *s)
{
    weft_engine_destroy(s->eng); /* nothing in flight: no more events */
    if (s->q) evq_wait_idle(s->q);
    evq_destroy(s->q);
    if (s->http) evhttp_free(s->http);
    listening_srv = NULL;
    if (s->notify) event_free(s->notify);
    if (s->sig_int) event_free(s->sig_int);
    if (s->sig_term) event_free(s->sig_term);
    if (s->grace) event_free(s->grace);
    if (s->resume) event_free(s->resume);
    if (s->sweep) event_free(s->sweep);
    if (s->base) event_base_free(s->base);
    weft_model_free(s->model);
}

int cmd_serve(int argc, char **argv)
{
    serve_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0) return rc < 0 ? 0 : rc;
    srv s = {.api_key = o.api_key, .max_body = (size_t)o.max_body, .drain_s = o.drain_s,
             .verbose = o.verbose, .started = (long long)time(NULL), .max_conns = (int)o.max_conns};
    s.rng = (((uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull) ^ (uint64_t)clock()) | 1;
    metrics_init(&s.m);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not a signal */
    rc = 1;
    if (evthread_use_pthreads() < 0 || load_engine(&s, &o) < 0) goto out;
    if (!(s.base = event_base_new())) goto out;
    s.notify = event_new(s.base, -1, 0, on_notify, &s);
    if (!s.notify || evq_create(s.notify, &s.q) < 0) goto out;
    s.sig_int = evsignal_new(s.base, SIGINT, on_signal, &s);
    s.sig_term = evsignal_new(s.base, SIGTERM, on_signal, &s);
    if (!s.sig_int || !s.sig_term || evsignal_add(s.sig_int, NULL) < 0 ||
        evsignal_add(s.sig_term, NULL) < 0 || listen_http(&s, &o) < 0)
        goto out;
    if (event_base_dispatch(s.base) < 0) goto out;
    /* the loop no longer handles signals; tearing down takes a moment */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    fprintf(stderr, "weft serve: stopped\n");
    rc = 0;
out:
    srv_close(&s);
    return rc;
}
