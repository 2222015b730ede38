/* client.c -- the broker client library (see client.h).
 *
 * Everything goes through pump(): it waits on the socket until a condition holds or a deadline passes,
 * sorting what arrives (deliveries into a queue, receipts, errors and admin replies into slots for the
 * call that waits for them) and keeping the connection alive on the way. */
#include "client.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "envelope.h"
#include "ledger.h"
#include "rbcrypto.h"
#include "wire.h"
#include "witness.h"

typedef struct delivery {
    struct delivery *next;
    uint8_t *env;
    size_t len;
    uint32_t attempt;
} delivery_t;

/* A submission waiting for its answer (client_submit_all): checked the moment it comes, so that receipts
 * and WELCOMEs move the checkpoint held in the order the broker sent them. */
typedef struct {
    uint8_t id[MSG_ID_BYTES];
    const uint8_t *env; /* the envelope submitted */
    size_t len;
    client_result_t *result; /* where its answer goes */
    rb_err *error;
    bool answered;
} awaited_t;

struct client {
    void *sock;
    card_t broker;        /* the broker's card: CURVE key and receipt signatures */
    uint32_t credit;      /* announced in HELLO */
    int64_t heartbeat_ms; /* from WELCOME */
    int64_t last_rx_ms, last_tx_ms;
    int64_t last_hello_ms;
    bool welcomed;
    delivery_t *head, *tail;      /* deliveries not yet taken by client_receive */
    Rb__Frame *answer;            /* the ADMIN_REPLY or PROOF (or ERROR) a request waits for, when it came */
    Rb__Frame__BodyCase awaiting; /* the kind of answer a request waits for (0: none) */
    uint32_t protocol;            /* the broker's protocol version, from WELCOME (1 when it does not say) */
    awaited_t *awaited;           /* the submissions waiting for their answers, */
    size_t n_awaited;             /* how many, */
    size_t n_answered;            /* how many have their answer, */
    bool stray_error;         /* and whether an ERROR without a message id came that none can be told from */
    Rb__ErrorCode last_error; /* last unsolicited ERROR */
    char last_reason[256];
    client_ledger_t ledger; /* the broker's ledger as checked so far */
    checkpoint_t held;      /* ledger.note, parsed */
};

/* One ZeroMQ context for all of a process's connections: each context runs its own I/O thread, and a
 * process with many connections (the bench's load generator has 32) would keep as many threads waking on
 * two cores. The last connection closed ends it, so nothing is left for leak checkers. */
static pthread_mutex_t context_lock = PTHREAD_MUTEX_INITIALIZER;
static void *context;
static unsigned context_users;

static void *context_take(void)
{
    pthread_mutex_lock(&context_lock);
    if (context == NULL)
        context = zmq_ctx_new();
    void *ctx = context;
    if (ctx != NULL)
        context_users++;
    pthread_mutex_unlock(&context_lock);
    return ctx;
}

static void context_release(void)
{
    pthread_mutex_lock(&context_lock);
    if (--context_users == 0) {
        zmq_ctx_term(context);
        context = NULL;
    }
    pthread_mutex_unlock(&context_lock);
}

int64_t client_clock_ms(void)
{
    /* Read once: a process's clock jumps only between runs of it, which is what the fault runs do. */
    static int64_t offset_ms = INT64_MIN;
    if (offset_ms == INT64_MIN) {
        const char *o = getenv("RB_TEST_CLOCK_OFFSET_MS");
        char *end = NULL;
        long long v = o != NULL ? strtoll(o, &end, 10) : 0;
        /* Anything but a plain number within a year is ignored, never half-read. */
        offset_ms = o != NULL && *o != '\0' && *end == '\0' && v >= -CLIENT_CLOCK_OFFSET_MAX_MS &&
                            v <= CLIENT_CLOCK_OFFSET_MAX_MS
                        ? v
                        : 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + offset_ms;
}

static rb_err send_frame(client_t *c, Rb__Frame *f)
{
    rb_err rc = wire_send(c->sock, NULL, 0, f);
    if (rc == RB_OK)
        c->last_tx_ms = client_clock_ms();
    return rc;
}

static void send_hello(client_t *c)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Hello hello = RB__HELLO__INIT;
    hello.credit = c->credit;
    hello.ledger_size = c->ledger.holds ? c->held.size : 0;
    hello.protocol = WIRE_VERSION;
    f.body_case = RB__FRAME__BODY_HELLO;
    f.hello = &hello;
    send_frame(c, &f);
    c->last_hello_ms = client_clock_ms();
}

static bool same_id(ProtobufCBinaryData b, const uint8_t *id)
{
    return b.len == MSG_ID_BYTES && memcmp(b.data, id, MSG_ID_BYTES) == 0;
}

/* Takes a checkpoint the broker sent if it verifies; raises the alarm if it does not extend the one
 * held. false, with why, when it is not taken: not the broker's checkpoint at all, or an update from a
 * broker that has lost track of what we hold. */
/* RB_OK when the update is taken (alarm or not); RB_ERR_CONFLICT when the broker does not know what we
 * hold (HELLO is sent: ask again); another error when it is not taken. */
static rb_err take_update(client_t *c, const Rb__LedgerUpdate *u, char *why, size_t whylen)
{
    checkpoint_t fresh;
    rb_err rc = witness_check_update(&c->broker, c->ledger.holds ? &c->held : NULL, u, &fresh, why, whylen);
    if (rc == RB_ERR_CONFLICT) {
        /* No evidence against the ledger: a restarted broker met us before our HELLO, or it forgot us as
         * silent and our next frame came before the HELLO. Telling it what we hold gets the proof with its
         * next update. */
        send_hello(c);
        return rc;
    }
    if (rc != RB_OK) {
        snprintf(c->ledger.alarm, sizeof c->ledger.alarm, "%s", why);
        c->ledger.alarms++;
        if (rc != RB_ERR_HASH_MISMATCH)
            return rc;
    }
    /* Alarm or not, the broker's newest signed word is what later ones are checked against. */
    c->held = fresh;
    c->ledger.holds = true;
    c->ledger.size = fresh.size;
    snprintf(c->ledger.note, sizeof c->ledger.note, "%s", u->checkpoint);
    return RB_OK;
}

static rb_err check_receipt(client_t *c, const Rb__Receipt *r, const uint8_t *id, const uint8_t *env,
                            size_t len, client_result_t *result);

/* Takes f (a RECEIPT or an ERROR) as the answer to the waiting submission id, if one waits for it. */
static bool take_answer(client_t *c, const uint8_t *id, const Rb__Frame *f)
{
    for (size_t i = 0; i < c->n_awaited; i++) {
        awaited_t *a = &c->awaited[i];
        if (a->answered || memcmp(a->id, id, MSG_ID_BYTES) != 0)
            continue;
        a->answered = true;
        c->n_answered++;
        *a->error = RB_OK;
        if (f->body_case == RB__FRAME__BODY_RECEIPT) {
            *a->error = check_receipt(c, f->receipt, a->id, a->env, a->len, a->result);
        } else {
            a->result->code = f->error->code;
            snprintf(a->result->reason, sizeof a->result->reason, "%s", f->error->reason);
            /* A submission before HELLO (the broker restarted, or forgot us as silent, under our feet): HELLO
             * went out (take), and the next round sends it again. */
            if (f->error->code == RB__ERROR_CODE__ERROR_CODE_UNEXPECTED)
                *a->error = RB_ERR_CONFLICT;
        }
        return true;
    }
    return false;
}

/* Sorts one received frame. */
static void take(client_t *c, Rb__Frame *f)
{
    /* The broker does not know this connection as having said HELLO (it restarted, or forgot us as silent):
     * one HELLO for however many frames it refused so. */
    if (f->body_case == RB__FRAME__BODY_ERROR && f->error->code == RB__ERROR_CODE__ERROR_CODE_UNEXPECTED &&
        client_clock_ms() - c->last_hello_ms > 100) {
        c->welcomed = false;
        send_hello(c);
    }
    switch (f->body_case) {
    case RB__FRAME__BODY_WELCOME:
        c->welcomed = true;
        c->protocol = f->welcome->protocol > 0 ? f->welcome->protocol : 1;
        if (f->welcome->heartbeat_ms > 0)
            c->heartbeat_ms = f->welcome->heartbeat_ms;
        if (f->welcome->ledger != NULL) {
            char why[sizeof c->ledger.alarm];
            take_update(c, f->welcome->ledger, why, sizeof why);
        }
        break;
    case RB__FRAME__BODY_DELIVER: {
        delivery_t *d = calloc(1, sizeof *d);
        if (d == NULL || (d->env = malloc(f->deliver->envelope.len + 1)) == NULL) {
            free(d); /* not confirmed, so the broker delivers it again */
            break;
        }
        if (f->deliver->envelope.len > 0) /* an empty one has no data pointer */
            memcpy(d->env, f->deliver->envelope.data, f->deliver->envelope.len);
        d->len = f->deliver->envelope.len;
        d->attempt = f->deliver->attempt;
        if (c->tail)
            c->tail->next = d;
        else
            c->head = d;
        c->tail = d;
        break;
    }
    case RB__FRAME__BODY_RECEIPT: {
        /* Whose it is: the message id of the "submitted" leaf it carries. */
        Rb__LedgerEvent *e = NULL;
        if (ledger_parse_leaf(f->receipt->leaf.data, f->receipt->leaf.len, &e) == RB_OK &&
            e->message_id.len == MSG_ID_BYTES)
            take_answer(c, e->message_id.data, f); /* else one given up on: the resubmission gets it again */
        if (e != NULL)
            rb__ledger_event__free_unpacked(e, NULL);
        break;
    }
    case RB__FRAME__BODY_ADMIN_REPLY:
    case RB__FRAME__BODY_PROOF:
        if (c->awaiting == f->body_case && c->answer == NULL) {
            c->answer = f;
            return;
        }
        break;
    case RB__FRAME__BODY_ERROR:
        if (c->awaiting != 0 && c->answer == NULL && f->error->message_id.len == 0) {
            c->answer = f;
            return;
        }
        if (f->error->message_id.len == MSG_ID_BYTES && take_answer(c, f->error->message_id.data, f))
            break;
        if (f->error->message_id.len == 0 && c->n_awaited - c->n_answered == 1) {
            bool taken = false;
            for (size_t i = 0; i < c->n_awaited && !taken; i++) /* the one still waiting */
                taken = !c->awaited[i].answered && take_answer(c, c->awaited[i].id, f);
            if (taken)
                break;
        }
        if (f->error->message_id.len == 0 && c->n_awaited > c->n_answered)
            c->stray_error = true;
        c->last_error = f->error->code;
        snprintf(c->last_reason, sizeof c->last_reason, "%s", f->error->reason);
        break;
    default:
        break; /* HEARTBEAT: its arrival is all */
    }
    rb__frame__free_unpacked(f, NULL);
}

/* Waits until done(c) or the deadline; keeps the connection alive. RB_ERR_IO on timeout. */
static rb_err pump(client_t *c, int64_t deadline, bool (*done)(const client_t *c))
{
    for (;;) {
        if (done(c))
            return RB_OK;
        int64_t t = client_clock_ms();
        if (t >= deadline)
            return RB_ERR_IO;
        if (t - c->last_tx_ms >= c->heartbeat_ms) {
            Rb__Frame f = RB__FRAME__INIT;
            Rb__Heartbeat hb = RB__HEARTBEAT__INIT;
            f.body_case = RB__FRAME__BODY_HEARTBEAT;
            f.heartbeat = &hb;
            send_frame(c, &f);
        }
        /* The broker forgets a silent peer after three intervals; a new HELLO makes us known again. */
        if (t - c->last_rx_ms > 3 * c->heartbeat_ms && t - c->last_hello_ms > c->heartbeat_ms)
            send_hello(c);
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        int64_t wait = deadline - t < c->heartbeat_ms ? deadline - t : c->heartbeat_ms;
        if (zmq_poll(&item, 1, (long)wait) < 0 && errno != EINTR)
            return RB_ERR_IO;
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        while (zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT) >= 0) {
            c->last_rx_ms = client_clock_ms();
            Rb__Frame *f = rb__frame__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
            if (f != NULL)
                take(c, f);
            zmq_msg_close(&msg);
            zmq_msg_init(&msg);
        }
        zmq_msg_close(&msg);
    }
}

static bool is_welcomed(const client_t *c)
{
    return c->welcomed;
}

static bool has_answer(const client_t *c)
{
    return c->answer != NULL;
}

static bool has_answers(const client_t *c)
{
    return c->n_answered == c->n_awaited || c->stray_error;
}

static bool has_delivery(const client_t *c)
{
    return c->head != NULL;
}

/* What the connection's monitor saw while no WELCOME came, as the reason an operator can act on: nothing
 * listening, our key refused, a broker whose key is not the card's, or a broker that said nothing. CURVE
 * gives the client no more than these events; the broker's log has the rest (event=handshake_refused). */
static void why_no_welcome(void *monitor, const char *endpoint, const identity_t *me, int timeout_ms,
                           char *err, size_t errlen)
{
    int seen = 0;
    for (zmq_msg_t m; monitor != NULL;) {
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&m) >= sizeof event)
            memcpy(&event, zmq_msg_data(&m), sizeof event);
        seen |= event;
        while (zmq_msg_more(&m)) /* the endpoint */
            if (zmq_msg_recv(&m, monitor, ZMQ_DONTWAIT) < 0)
                break;
        zmq_msg_close(&m);
    }
    char key_id[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(identity_card(me)->key_id, key_id);
    if (seen & ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        snprintf(
            err, errlen,
            "%s: the broker refused our key (%s, %s) at the handshake: not registered, disabled, revoked "
            "or retired there (its log says which: event=handshake_refused)",
            endpoint, identity_card(me)->name, key_id);
    else if (seen & ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        snprintf(err, errlen, "%s: the broker took our key but sent no WELCOME within %d ms (overloaded?)",
                 endpoint, timeout_ms);
    else if (seen & ZMQ_EVENT_CONNECTED)
        snprintf(err, errlen,
                 "%s: connected, but the handshake did not complete within %d ms: is broker_card the card of "
                 "the broker listening there?",
                 endpoint, timeout_ms);
    else
        snprintf(
            err, errlen,
            "%s: nothing answered within %d ms (connection refused or unreachable): is the broker running, "
            "and is this its endpoint?",
            endpoint, timeout_ms);
}

rb_err client_connect(client_t **out, const char *endpoint, const identity_t *me, const card_t *broker_card,
                      uint32_t credit, const char *checkpoint, int timeout_ms, char *err, size_t errlen)
{
    *out = NULL;
    /* The broker refuses an expired key at the handshake without a word (CURVE cannot say why), so it would
     * look like a broker that is down: our own card says it first. */
    const card_t *mine = identity_card(me);
    if (card_valid_at(mine, (uint64_t)(client_clock_ms() / 1000)) != RB_OK) {
        char key_id[2 * RB_KEY_ID_BYTES + 1], when[CARD_TIME_TEXT];
        card_key_id_hex(mine->key_id, key_id);
        bool early = (uint64_t)(client_clock_ms() / 1000) < mine->created;
        card_time_text(early ? mine->created : mine->expires, when);
        snprintf(err, errlen, "our key (%s, %s) %s %s: %s", mine->name, key_id,
                 early ? "is valid only from" : "expired on", when,
                 early ? "check this machine's clock"
                       : "rotate it (referral-keys rotate) and add the new card");
        return RB_ERR_KEY_EXPIRED;
    }
    client_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    c->broker = *broker_card;
    if (checkpoint != NULL) {
        char why[256];
        if (witness_open_checkpoint(broker_card, checkpoint, strlen(checkpoint), &c->held, why, sizeof why) !=
            RB_OK) {
            snprintf(err, errlen, "the checkpoint held: %s", why);
            free(c);
            return RB_ERR_BAD_SIGNATURE;
        }
        c->ledger.holds = true;
        c->ledger.size = c->held.size;
        snprintf(c->ledger.note, sizeof c->ledger.note, "%s", checkpoint);
    }
    c->credit = credit;
    c->heartbeat_ms = 1000;
    void *ctx = context_take();
    c->sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    if (ctx != NULL && c->sock == NULL)
        context_release(); /* a socket holds its use of the context */
    int zero = 0, reconnect_max = 5000;
    rb_err rc = RB_ERR_IO;
    /* The handshake's events, for the reason when no WELCOME comes; watched only until it does. */
    /* Named afresh each time: ZeroMQ unbinds a closed monitor's endpoint later, in its own thread. */
    static atomic_uint monitors;
    char watch[64];
    snprintf(watch, sizeof watch, "inproc://rb-client-monitor-%ld-%u", (long)getpid(),
             atomic_fetch_add(&monitors, 1));
    void *monitor = NULL;
    if (c->sock != NULL &&
        zmq_socket_monitor(c->sock, watch,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0 &&
        (monitor = zmq_socket(ctx, ZMQ_PAIR)) != NULL &&
        (zmq_setsockopt(monitor, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_connect(monitor, watch) != 0)) {
        zmq_close(monitor);
        monitor = NULL;
    }
    if (c->sock != NULL && zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero) == 0 &&
        zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL_MAX, &reconnect_max, sizeof reconnect_max) == 0 &&
        wire_curve_client(c->sock, me, broker_card) == RB_OK && zmq_connect(c->sock, endpoint) == 0)
        rc = RB_OK;
    if (rc != RB_OK) {
        snprintf(err, errlen, "%s: %s", endpoint, zmq_strerror(errno));
    } else {
        c->last_rx_ms = c->last_tx_ms = client_clock_ms();
        send_hello(c);
        if (pump(c, client_clock_ms() + timeout_ms, is_welcomed) != RB_OK) {
            why_no_welcome(monitor, endpoint, me, timeout_ms, err, errlen);
            rc = RB_ERR_IO;
        }
    }
    if (c->sock != NULL)
        zmq_socket_monitor(c->sock, NULL, 0);
    if (monitor != NULL)
        zmq_close(monitor);
    if (rc != RB_OK) {
        client_close(&c);
        return rc;
    }
    *out = c;
    return RB_OK;
}

void client_close(client_t **client_p)
{
    client_t *c = client_p ? *client_p : NULL;
    if (c == NULL)
        return;
    while (c->head != NULL) {
        delivery_t *d = c->head;
        c->head = d->next;
        free(d->env);
        free(d);
    }
    if (c->answer != NULL)
        rb__frame__free_unpacked(c->answer, NULL);
    if (c->sock) {
        zmq_close(c->sock);
        context_release();
    }
    free(c);
    *client_p = NULL;
}

/* A receipt is the "submitted" leaf of this very envelope, proved included under a checkpoint the
 * broker signed. Anything less is no receipt. */
static rb_err check_receipt(client_t *c, const Rb__Receipt *r, const uint8_t *id, const uint8_t *env,
                            size_t len, client_result_t *result)
{
    char why[sizeof c->ledger.alarm] = "no checkpoint";
    rb_err taken = r->ledger == NULL ? RB_ERR_MALFORMED : take_update(c, r->ledger, why, sizeof why);
    if (taken != RB_OK) {
        snprintf(result->reason, sizeof result->reason, "receipt: %.200s", why);
        return taken == RB_ERR_CONFLICT ? taken : RB_ERR_BAD_SIGNATURE;
    }
    checkpoint_t cp;
    uint64_t index;
    rb_err rc =
        witness_check_proof(&c->broker, c->ledger.note, &c->held, r->proof, strlen(r->proof), r->leaf.data,
                            r->leaf.len, &cp, &index, result->reason, sizeof result->reason);
    Rb__LedgerEvent *e = NULL;
    uint8_t sha[RB_HASH_BYTES];
    rbcrypto_sha256(env, len, sha);
    /* The proof must be under the very checkpoint the update proved consistent, not some other one. */
    if (rc == RB_OK &&
        (cp.size != c->held.size || memcmp(cp.root.bytes, c->held.root.bytes, MERKLE_HASH_BYTES) != 0)) {
        snprintf(result->reason, sizeof result->reason,
                 "receipt: the proof is under another checkpoint than the update");
        rc = RB_ERR_BAD_SIGNATURE;
    }
    if (rc == RB_OK && (rc = ledger_parse_leaf(r->leaf.data, r->leaf.len, &e)) != RB_OK)
        snprintf(result->reason, sizeof result->reason, "receipt: the leaf does not parse");
    if (rc == RB_OK && (ledger_action_of(e->action) != ACTION_SUBMITTED || !same_id(e->message_id, id) ||
                        e->envelope_sha256.len != RB_HASH_BYTES ||
                        memcmp(e->envelope_sha256.data, sha, RB_HASH_BYTES) != 0 || e->index != index)) {
        snprintf(result->reason, sizeof result->reason,
                 "receipt: the leaf is not this envelope's submission");
        rc = RB_ERR_BAD_SIGNATURE;
    }
    if (rc == RB_OK) {
        result->accepted = true;
        result->ledger_index = index;
        result->broker_ms = e->at_ms;
        snprintf(result->proof, sizeof result->proof, "%s", r->proof);
        result->reason[0] = '\0';
    }
    if (e != NULL)
        rb__ledger_event__free_unpacked(e, NULL);
    return rc;
}

/* One round of client_submit_all: sends the envelopes at `which` (count of them; ids[i] is envs[i]'s message
 * id) and waits for their answers until the deadline, each checked as it comes (take_answer). Sets
 * results[] and errors[] of those sent. */
static void submit_round(client_t *c, const uint8_t *const *envs, const size_t *lens, const msg_id_t *ids,
                         const size_t *which, size_t count, int64_t deadline, client_result_t *results,
                         rb_err *errors)
{
    awaited_t awaited[CLIENT_BATCH_MAX];
    memset(awaited, 0, sizeof awaited);
    c->awaited = awaited;
    c->n_awaited = c->n_answered = 0;
    c->stray_error = false;
    rb_err sent = RB_OK;
    for (size_t k = 0; k < count && sent == RB_OK; k++) {
        size_t i = which[k];
        memset(&results[i], 0, sizeof results[i]);
        errors[i] = RB_ERR_IO; /* until its answer comes */
        awaited[k] = (awaited_t){.env = envs[i], .len = lens[i], .result = &results[i], .error = &errors[i]};
        memcpy(awaited[k].id, ids[i].bytes, MSG_ID_BYTES);
        Rb__Frame f = RB__FRAME__INIT;
        Rb__Submit sub = RB__SUBMIT__INIT;
        sub.envelope = (ProtobufCBinaryData){lens[i], (uint8_t *)envs[i]};
        f.body_case = RB__FRAME__BODY_SUBMIT;
        f.submit = &sub;
        if ((sent = send_frame(c, &f)) == RB_OK)
            c->n_awaited++;
    }
    if (sent == RB_OK)
        sent = pump(c, deadline, has_answers);
    for (size_t k = 0; k < count; k++) /* not sent, or no answer in time (or none that can be told apart) */
        if (k >= c->n_awaited || !awaited[k].answered)
            errors[which[k]] = c->stray_error ? RB_ERR_MALFORMED : sent != RB_OK ? sent : RB_ERR_IO;
    c->awaited = NULL;
    c->n_awaited = c->n_answered = 0;
}

rb_err client_submit_all(client_t *c, const uint8_t *const *envs, const size_t *lens, size_t n,
                         int timeout_ms, client_result_t *results, rb_err *errors)
{
    if (n > CLIENT_BATCH_MAX)
        return RB_ERR_USAGE;
    int64_t deadline = client_clock_ms() + timeout_ms;
    msg_id_t ids[CLIENT_BATCH_MAX] = {{{0}}};
    size_t left[CLIENT_BATCH_MAX], n_left = n;
    bool again[CLIENT_BATCH_MAX] = {false};
    for (size_t i = 0; i < n; i++) {
        envelope_peek_id(envs[i], lens[i], &ids[i]); /* unparseable: the broker will say so */
        left[i] = i;
        errors[i] = RB_OK; /* each is set by its round */
    }
    /* Rounds: in one, no message id twice, since answers are told apart by it (the same id on two envelopes
     * is a conflict, answered in a later round). A receipt whose update starts from a checkpoint the broker
     * does not know we hold proves nothing yet, and a submission refused as sent before HELLO was not taken:
     * HELLO went out, and the same submission in the next round (a duplicate gets the same receipt) comes
     * back with the proof; once, then it is a bad receipt. */
    while (n_left > 0) {
        size_t round[CLIENT_BATCH_MAX] = {0}, n_round = 0, kept = 0;
        for (size_t k = 0; k < n_left; k++) {
            bool repeated = false;
            for (size_t j = 0; j < n_round && !repeated; j++)
                repeated = memcmp(ids[round[j]].bytes, ids[left[k]].bytes, MSG_ID_BYTES) == 0;
            if (repeated)
                left[kept++] = left[k];
            else
                round[n_round++] = left[k];
        }
        submit_round(c, envs, lens, ids, round, n_round, deadline, results, errors);
        for (size_t j = 0; j < n_round; j++) {
            size_t i = round[j];
            if (errors[i] == RB_ERR_CONFLICT && !again[i]) {
                again[i] = true;
                left[kept++] = i;
            } else if (errors[i] == RB_ERR_CONFLICT) {
                errors[i] = RB_ERR_BAD_SIGNATURE;
            }
        }
        n_left = kept;
    }
    rb_err first = RB_OK;
    for (size_t i = 0; i < n && first == RB_OK; i++)
        first = errors[i];
    return first;
}

rb_err client_submit(client_t *c, const uint8_t *env, size_t len, int timeout_ms, client_result_t *result)
{
    rb_err error = RB_OK;
    return client_submit_all(c, &env, &len, 1, timeout_ms, result, &error);
}

rb_err client_receive(client_t *c, int timeout_ms, uint8_t **env, size_t *len, uint32_t *attempt)
{
    *env = NULL;
    rb_err rc = pump(c, client_clock_ms() + timeout_ms, has_delivery);
    if (rc != RB_OK)
        return rc;
    delivery_t *d = c->head;
    c->head = d->next;
    if (c->head == NULL)
        c->tail = NULL;
    *env = d->env;
    *len = d->len;
    *attempt = d->attempt;
    free(d);
    return RB_OK;
}

rb_err client_confirm(client_t *c, const uint8_t message_id[16])
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Confirm confirm = RB__CONFIRM__INIT;
    confirm.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, (uint8_t *)message_id};
    f.body_case = RB__FRAME__BODY_CONFIRM;
    f.confirm = &confirm;
    return send_frame(c, &f);
}

/* Sends a request (ADMIN_REQUEST, PROVE) and waits until the deadline for its answer: a frame of kind
 * `answer`, or an ERROR without a message id. *out is the caller's (rb__frame__free_unpacked). */
static rb_err request(client_t *c, Rb__Frame *f, Rb__Frame__BodyCase answer, int64_t deadline,
                      Rb__Frame **out)
{
    *out = NULL;
    c->awaiting = answer; /* errors without a message id answer this request */
    rb_err rc = send_frame(c, f);
    if (rc == RB_OK)
        rc = pump(c, deadline, has_answer);
    c->awaiting = 0;
    if (rc == RB_OK) {
        *out = c->answer;
        c->answer = NULL;
    }
    return rc;
}

void admin_request_clear(Rb__AdminRequest *req)
{
    free(req->signed_.data);
    free(req->signature.data);
    rb__admin_request__init(req);
}

rb_err admin_sign(const identity_t *admin, const Rb__AdminCommand *cmd, Rb__AdminRequest *req)
{
    rb__admin_request__init(req);
    size_t len = rb__admin_command__get_packed_size(cmd);
    uint8_t *bytes = malloc(len ? len : 1), *sig = malloc(RB_SIG_BYTES);
    if (bytes == NULL || sig == NULL) {
        free(bytes);
        free(sig);
        return RB_ERR_NOMEM;
    }
    rb__admin_command__pack(cmd, bytes);
    req->signed_ = (ProtobufCBinaryData){len, bytes};
    req->signature = (ProtobufCBinaryData){RB_SIG_BYTES, sig};
    rb_err rc = rbcrypto_sign(RB_DOMAIN_ADMIN, bytes, len, identity_sign_sk(admin), sig);
    if (rc != RB_OK)
        admin_request_clear(req);
    return rc;
}

rb_err client_admin(client_t *c, const identity_t *admin, const char *command, const char *const *args,
                    size_t n_args, int timeout_ms, bool *ok, char **output)
{
    *output = NULL;
    *ok = false;
    uint8_t nonce[16];
    rbcrypto_random(nonce, sizeof nonce);
    Rb__AdminCommand cmd = RB__ADMIN_COMMAND__INIT;
    cmd.command = (char *)command;
    cmd.args = (char **)args;
    cmd.n_args = n_args;
    cmd.issued_ms = client_clock_ms();
    cmd.nonce = (ProtobufCBinaryData){sizeof nonce, nonce};
    Rb__AdminRequest req;
    rb_err rc = admin_sign(admin, &cmd, &req);
    if (rc != RB_OK)
        return rc;
    Rb__Frame f = RB__FRAME__INIT, *a;
    f.body_case = RB__FRAME__BODY_ADMIN_REQUEST;
    f.admin_request = &req;
    rc = request(c, &f, RB__FRAME__BODY_ADMIN_REPLY, client_clock_ms() + timeout_ms, &a);
    admin_request_clear(&req);
    if (rc != RB_OK)
        return rc;
    const char *text = a->body_case == RB__FRAME__BODY_ADMIN_REPLY ? a->admin_reply->output
                       : a->body_case == RB__FRAME__BODY_ERROR     ? a->error->reason
                                                                   : "unexpected answer";
    *ok = a->body_case == RB__FRAME__BODY_ADMIN_REPLY && a->admin_reply->ok;
    *output = strdup(text);
    rb__frame__free_unpacked(a, NULL);
    return *output ? RB_OK : RB_ERR_NOMEM;
}

rb_err client_prove(client_t *c, uint64_t old_size, uint64_t new_size, int timeout_ms,
                    merkle_hash_t proof[PROOF_HASHES_MAX], size_t *n, char *why, size_t whylen)
{
    *n = 0;
    if (c->protocol < 2) {
        snprintf(why, whylen, "the broker speaks protocol version %u: it cannot prove (upgrade it)",
                 c->protocol);
        return RB_ERR_BAD_VERSION;
    }
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Prove prove = RB__PROVE__INIT;
    prove.old_size = old_size;
    prove.new_size = new_size;
    f.body_case = RB__FRAME__BODY_PROVE;
    f.prove = &prove;
    int64_t deadline = client_clock_ms() + timeout_ms;
    Rb__Frame *a;
    rb_err rc = request(c, &f, RB__FRAME__BODY_PROOF, deadline, &a);
    /* A broker that forgot our HELLO refuses it (take said HELLO again): once more, after the WELCOME. */
    if (rc == RB_OK && a->body_case == RB__FRAME__BODY_ERROR &&
        a->error->code == RB__ERROR_CODE__ERROR_CODE_UNEXPECTED) {
        rb__frame__free_unpacked(a, NULL);
        if ((rc = pump(c, deadline, is_welcomed)) == RB_OK)
            rc = request(c, &f, RB__FRAME__BODY_PROOF, deadline, &a);
    }
    if (rc != RB_OK) {
        snprintf(why, whylen, "no answer from the broker");
        return rc;
    }
    if (a->body_case == RB__FRAME__BODY_ERROR) {
        snprintf(why, whylen, "the broker refused: %s", a->error->reason);
        rc = a->error->code == RB__ERROR_CODE__ERROR_CODE_MALFORMED ? RB_ERR_USAGE : RB_ERR_IO;
    } else if (a->proof->old_size != old_size || a->proof->new_size != new_size ||
               a->proof->n_consistency > PROOF_HASHES_MAX) {
        snprintf(why, whylen, "the broker proved other sizes than asked");
        rc = RB_ERR_MALFORMED;
    }
    for (size_t i = 0; rc == RB_OK && i < a->proof->n_consistency; i++) {
        if (a->proof->consistency[i].len != MERKLE_HASH_BYTES) {
            snprintf(why, whylen, "a proof hash of the wrong length");
            rc = RB_ERR_MALFORMED;
            break;
        }
        memcpy(proof[i].bytes, a->proof->consistency[i].data, MERKLE_HASH_BYTES);
        *n = i + 1;
    }
    rb__frame__free_unpacked(a, NULL);
    return rc;
}

uint32_t client_protocol(const client_t *c)
{
    return c->protocol;
}

const client_ledger_t *client_ledger(const client_t *c)
{
    return &c->ledger;
}

Rb__ErrorCode client_last_error(const client_t *c, const char **reason)
{
    if (reason)
        *reason = c->last_reason;
    return c->last_error;
}
