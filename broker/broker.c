/* broker.c -- the broker's loop (see broker.h).
 *
 * In the manner of redis's event loop: zmq_poll over the ROUTER and the ZAP socket with a timeout set
 * by the next timer (deliveries due, heartbeats), handlers that only look and queue, and a
 * before_sleep() step that commits every queued submission in one SQLite transaction and only then
 * sends their receipts. A receipt therefore always means "on disk", and one fsync serves a whole burst.
 *
 * Delivery state lives in the database, not in memory: a message stays "queued" until its recipient
 * CONFIRMs it, and each DELIVER pushes its next attempt time out by the backoff. Whatever the broker
 * was doing when it was killed, a restart finds every unconfirmed message due again. */
#include "broker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "backup.h"
#include "keyfile.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "rbcrypto.h"
#include "wire.h"

#define MAX_SESSIONS 256
#define ADMIN_SLOTS  16  /* session slots no adapter may take: one key cannot lock the admin out */
#define MAX_PENDING  256 /* submissions committed together at most */
#define RID_MAX      256
#define TIMER_MS     50   /* the timers' resolution: heartbeats, dead letters, metrics */
#define KEY_CHECK_MS 1000 /* how often keys are checked against the expiry warnings (as cheap as a refresh) */
/* Messages that may wait in ZeroMQ for one peer beyond its credit (a group commit's receipts, errors,
 * heartbeats), and from one peer (what it sent that we have not read yet): see broker_open. */
#define SEND_ROOM    (MAX_PENDING + 64)
#define RECEIVE_ROOM 32
/* What one key's connections write to the ledger of their own doing (refusals, sessions closed): the first
 * LEAVES_PER_WINDOW of each WINDOW_MS get a leaf each, the rest are counted and summarised in one leaf when
 * the window ends, so that no peer grows the ledger faster than people can read it, however many
 * connections it cycles through, and every refusal is still accounted for. */
#define WINDOW_MS         10000
#define LEAVES_PER_WINDOW 10
#define CODES_MAX         32 /* room for every Rb__ErrorCode value */
#define ACCOUNTS_MAX      (2 * MAX_SESSIONS)
/* Connections whose session was evicted (their key opened too many), remembered so that what they send
 * next is refused instead of evicting another session of the same key in turn. */
#define CLOSED_MAX     512
#define CLOSED_RID_MAX 32
/* The refusal of a SUBMIT, CONFIRM, ADMIN_REQUEST or PROVE before HELLO: the client library says HELLO and
 * sends it again on reading it (adapters/client.c). */
#define HELLO_FIRST                                                                                          \
    "HELLO first: a connection says HELLO before it submits, confirms, administers or asks a proof"

/* One connection of an authenticated party. */
typedef struct {
    uint8_t rid[RID_MAX]; /* ROUTER routing id */
    size_t rid_len;
    party_t party;                      /* who it is, from the CURVE key (ZAP User-Id) */
    char user[2 * RB_BOX_PK_BYTES + 1]; /* that key in hex, as the ZAP User-Id of its every message */
    char peer[64];                      /* peer address, for the audit log */
    bool hello;                         /* HELLO received: may submit, confirm and be delivered to */
    uint32_t protocol;                  /* the highest version its HELLO says it speaks (0: 1 or 2) */
    int64_t credit;                     /* deliveries it accepts in flight */
    int64_t opened_ms;                  /* its first frame: the oldest session of a key is evicted first */
    int64_t admitted_until_ms;          /* when its key stops being valid by itself (expiry, retirement) */
    int64_t last_rx_ms;                 /* last frame from it */
    int64_t last_tx_ms;                 /* last frame to it */
    uint64_t ledger_size;               /* size of the latest checkpoint it holds, as far as we know */
    struct account *account;            /* its key's, for what it costs the ledger */
    bool used;
} session_t;

/* What one key's sessions cost the ledger in the current window (WINDOW_MS). Kept past the key's sessions
 * until the window ends and its summary is written: a new connection of the key starts with what the key
 * has spent, not afresh. */
typedef struct account {
    uint8_t key[RB_BOX_PK_BYTES];
    char party[CARD_NAME_MAX + 1], agency[CARD_AGENCY_LEN + 1], peer[64]; /* for the summary: the last */
    int64_t window_ms;                                                    /* when the window began */
    int leaves;                  /* leaves of its own in the window: refusals, disconnections */
    uint32_t counted[CODES_MAX]; /* refusals beyond those, by code */
    uint32_t evicted;            /* sessions evicted for newer ones of the key (never a leaf each) */
    uint32_t closed;             /* sessions closed beyond the window's leaves */
    int sessions;                /* open now */
    bool used;
} account_t;

/* A connection whose session was evicted: its routing id and key. */
typedef struct {
    uint8_t rid[CLOSED_RID_MAX];
    size_t rid_len;
    uint8_t key[RB_BOX_PK_BYTES];
} closed_t;

/* A verified submission waiting for the group commit. */
typedef struct {
    session_t *session;
    Rb__Header *header;
    uint8_t *envelope;
    size_t len;
    uint8_t sha256[RB_HASH_BYTES];
    double arrived; /* metrics_clock() when its SUBMIT arrived */
    int same_as;    /* the same envelope again in this batch: the index of the first, which it is answered as;
                     * -1 otherwise (header and envelope are then NULL) */
} pending_t;

/* A SUBMIT's envelope verified ahead, on the verifier thread or the loop's, before the turn's frames are
 * handled in order: the signature check and the hashes are most of a submission's cost, and need nothing
 * but the trust store, which does not change until the frames are handled. */
typedef struct {
    bool done;          /* a SUBMIT of this protocol version: the fields below are set */
    rb_err rc;          /* envelope_verify_header's answer */
    Rb__Header *header; /* on RB_OK; handle_submit takes it */
    card_t sender;
    uint8_t sha256[RB_HASH_BYTES]; /* of the envelope */
} verified_t;

/* One message taken from the ROUTER this turn. */
typedef struct {
    zmq_msg_t rid, body;
    bool two, one_part;
    verified_t pre;
} taken_t;

/* A CONFIRM, applied with the next group commit: a burst of them costs one fsync, not one each. */
typedef struct {
    session_t *session;
    uint8_t id[MSG_ID_BYTES];
    rb_err rc; /* what applying it gave: RB_ERR_USAGE when it was not in flight to that session's party */
} confirm_t;

/* A refused frame, recorded in the ledger with the next group commit (one transaction, one fsync, for
 * however many a turn brings: a peer sending garbage must not cost a disk write per frame). */
typedef struct {
    char party[CARD_NAME_MAX + 1], agency[CARD_AGENCY_LEN + 1], peer[64];
    const char *code; /* a static name */
    char reason[256];
    uint8_t id[MSG_ID_BYTES];
    bool has_id;
    int64_t at_ms;
} refusal_t;

struct broker {
    const broker_config_t *cfg;
    const identity_t *me;
    void *ctx;
    store_t *store;
    trust_t *trust; /* every registered card, revoked keys marked */
    bool started;   /* broker_started is ledgered: the stop will be too */
    void *router;
    void *zap;
    session_t sessions[MAX_SESSIONS];
    account_t accounts[ACCOUNTS_MAX];
    closed_t closed[CLOSED_MAX]; /* a ring: the latest evictions */
    size_t n_closed;             /* evictions so far; the next goes at n_closed % CLOSED_MAX */
    pending_t pending[MAX_PENDING];
    size_t n_pending;
    refusal_t refusals[MAX_PENDING];
    size_t n_refusals;
    confirm_t confirms[MAX_PENDING];
    size_t n_confirms;
    taken_t taken[MAX_PENDING]; /* this turn's messages, verified ahead (verify_ahead) */
    size_t n_taken;
    /* The verifier thread and the loop take the turn's messages to verify one at a time; the loop never
     * waits for the thread to start, only for a message it took to be done. claim packs the turn, how many
     * messages it has and the next to take into one word, so that a take is one compare-and-swap and can
     * never take a message of another turn. */
    pthread_t verifier;
    bool verifier_started, verifier_stop;
    _Atomic uint64_t claim; /* turn << 40 | count << 20 | next */
    atomic_size_t done;     /* messages of this turn verified */
    uint64_t round;         /* turns started: the thread wakes when it changes */
    pthread_mutex_t lock;
    pthread_cond_t wake, finished;
    int64_t refused_handshakes; /* unauthenticated peers turned away since the last log line */
    int64_t refused_logged_ms;
    int64_t dropped_logged_ms;     /* when a dropped frame was last logged */
    int64_t unsessioned;           /* frames answered without a session since the last log line, */
    int64_t unsessioned_logged_ms; /* and when that was */
    int64_t evictions;             /* sessions evicted since the last log line, */
    int64_t evicted_logged_ms;     /* and when that was */
    int64_t housekept_ms;          /* when the timers last ran */
    char endpoint[256];            /* where the ROUTER is bound */
    uint64_t checkpoint_size;      /* the latest committed checkpoint: its size, when, and the note itself, */
    int64_t checkpoint_ms;         /* kept so that receipts and WELCOMEs need not read it back */
    char checkpoint_note[NOTE_TEXT_MAX];
    metrics_t *metrics;      /* the Prometheus endpoint's registry; NULL when off */
    int64_t keys_checked_ms; /* the end of the last interval checked for keys nearing expiry (0: none yet) */
};

static void send_notices(broker_t *b);
static void flush_refusals(broker_t *b);
static rb_err send_notice(broker_t *b, uint64_t leaf);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fills in when and who (from the session; NULL for the broker itself) and appends e to the ledger in
 * the current transaction. */
static rb_err record(broker_t *b, const session_t *s, Rb__LedgerEvent *e, uint64_t *index)
{
    e->at_ms = now_ms();
    if (s != NULL) {
        e->party = (char *)s->party.card.name;
        e->agency = (char *)s->party.card.agency;
        e->peer = (char *)s->peer;
    }
    rb_err rc = store_event(b->store, e, index);
    if (rc != RB_OK) {
        char hex[33] = "";
        if (e->message_id.len == MSG_ID_BYTES)
            wire_id_hex(e->message_id.data, hex);
        log_error("event_not_recorded", "action=%s adapter=%s msg=%s error=%s", e->action, e->party, hex,
                  rb_strerror(rc));
    }
    return rc;
}

static rb_err event(broker_t *b, const session_t *s, const char *action, const uint8_t *id,
                    const char *outcome, const char *detail)
{
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = (char *)action;
    e.message_id = (ProtobufCBinaryData){id ? MSG_ID_BYTES : 0, (uint8_t *)id};
    e.outcome = (char *)outcome;
    e.detail = (char *)(detail ? detail : "");
    return record(b, s, &e, NULL);
}

/* Records an event in a transaction of its own (outside the group commit). */
static void event_now(broker_t *b, const session_t *s, const char *action, const uint8_t *id,
                      const char *outcome, const char *detail)
{
    if (store_begin(b->store) != RB_OK) {
        log_error("event_not_recorded", "action=%s", action);
        return;
    }
    if (event(b, s, action, id, outcome, detail) != RB_OK || store_commit(b->store) != RB_OK) {
        store_rollback(b->store);
        log_error("event_not_recorded", "action=%s", action);
    }
}

/* At start, after broker_started: what an earlier release let expire must reach its adapter, or it would
 * not refuse what a revoked key signed (issue #19). */
static void requeue_dead_notices(broker_t *b)
{
    int n = 0;
    for (int batch = 256; batch == 256;) {
        if (store_begin(b->store) != RB_OK)
            return;
        if (store_requeue_dead_notices(b->store, identity_card(b->me), now_ms(), &batch) != RB_OK ||
            store_commit(b->store) != RB_OK) {
            store_rollback(b->store);
            log_error("dead_notices_not_requeued", "requeued=%d", n);
            return;
        }
        n += batch;
    }
    if (n > 0)
        log_warn("dead_notices_requeued", "count=%d detail=\"key notices an earlier release dead-lettered\"",
                 n);
}

/* Signs a checkpoint of the ledger as it is, in the current transaction (nothing when the latest one
 * already covers every event). note receives the latest checkpoint. */
static rb_err checkpoint(broker_t *b, char note[NOTE_TEXT_MAX], size_t *len)
{
    rb_err rc = ledger_checkpoint_now(store_ledger(b->store), identity_card(b->me), identity_sign_sk(b->me),
                                      now_ms(), note, len);
    if (rc == RB_ERR_HASH_MISMATCH)
        log_error("ledger_inconsistent",
                  "size=%llu detail=\"the stored tree does not extend the last signed "
                  "checkpoint: refusing to sign\"",
                  (unsigned long long)ledger_size(store_ledger(b->store)));
    else if (rc != RB_OK)
        log_error("checkpoint_failed", "error=%s", rb_strerror(rc));
    return rc;
}

/* A checkpoint in a transaction of its own: every checkpoint_events events or checkpoint_interval_ms,
 * whichever comes first, or when force (start and stop). */
static rb_err checkpoint_now(broker_t *b, bool force)
{
    uint64_t size = ledger_size(store_ledger(b->store));
    int64_t t = now_ms();
    if (size == b->checkpoint_size ||
        !(force || size - b->checkpoint_size >= (uint64_t)b->cfg->checkpoint_events ||
          t - b->checkpoint_ms >= b->cfg->checkpoint_interval_ms))
        return RB_OK;
    char note[NOTE_TEXT_MAX];
    size_t len;
    rb_err rc = store_begin(b->store);
    if (rc == RB_OK)
        rc = checkpoint(b, note, &len);
    if (rc == RB_OK)
        rc = store_commit(b->store);
    if (rc != RB_OK) {
        store_rollback(b->store);
        return rc;
    }
    b->checkpoint_size = size;
    b->checkpoint_ms = t;
    memcpy(b->checkpoint_note, note, len + 1);
    metrics_checkpointed(b->metrics, t, size);
    log_info("checkpoint", "size=%llu", (unsigned long long)size);
    return RB_OK;
}

/* The latest checkpoint, and a proof of its consistency with what the session holds. */
typedef struct {
    Rb__LedgerUpdate update;
    merkle_hash_t hashes[PROOF_HASHES_MAX];
    ProtobufCBinaryData proof[PROOF_HASHES_MAX];
} ledger_update_t;

static rb_err ledger_update(broker_t *b, session_t *s, ledger_update_t *u)
{
    rb__ledger_update__init(&u->update);
    if (b->checkpoint_note[0] == '\0')
        return RB_ERR_USAGE;
    u->update.checkpoint = b->checkpoint_note;
    u->update.old_size = s->ledger_size;
    size_t n = 0;
    rb_err rc;
    /* A peer that holds a larger tree than ours gets no proof: there is none, and it will say so. */
    if (s->ledger_size > 0 && s->ledger_size < b->checkpoint_size &&
        (rc = ledger_consistency_proof(store_ledger(b->store), s->ledger_size, b->checkpoint_size, u->hashes,
                                       &n)) != RB_OK)
        return rc;
    for (size_t i = 0; i < n; i++)
        u->proof[i] = (ProtobufCBinaryData){MERKLE_HASH_BYTES, u->hashes[i].bytes};
    u->update.n_consistency = n;
    u->update.consistency = u->proof;
    s->ledger_size = b->checkpoint_size;
    return RB_OK;
}

static rb_err reload_trust(broker_t *b)
{
    trust_t *fresh;
    rb_err rc = store_load_trust(b->store, &fresh);
    if (rc == RB_OK) {
        trust_free(&b->trust);
        b->trust = fresh;
    }
    return rc;
}

/* Whether a party's key may connect and speak now: enabled, not revoked, valid, not retired. */
static bool admitted(broker_t *b, const party_t *p)
{
    int64_t t = now_ms();
    return p->enabled && !store_key_revoked(b->store, p->card.key_id) &&
           card_valid_at(&p->card, (uint64_t)(t / 1000)) == RB_OK &&
           (p->retires_ms == 0 || t < p->retires_ms);
}

/* When an admitted key stops being admitted by the passing of time alone (its card expires, or a rotation
 * retires it). Disabling and revoking come from admin commands, which close sessions at once. */
static int64_t admitted_until(const party_t *p)
{
    int64_t expires =
        p->card.expires > (uint64_t)(INT64_MAX / 1000) ? INT64_MAX : (int64_t)p->card.expires * 1000;
    return p->retires_ms != 0 && p->retires_ms < expires ? p->retires_ms : expires;
}

/* --- ZAP: admit only registered, enabled parties whose key is valid and not revoked ------------------- */

static void zap_reply(void *zap, const char *request_id, const char *status, const char *text,
                      const char *user)
{
    zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(zap, request_id, strlen(request_id), ZMQ_SNDMORE);
    zmq_send(zap, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(zap, "", 0, 0);
}

static void handle_zap(broker_t *b)
{
    /* version, request id, domain, address, identity, mechanism, credentials... */
    char parts[7][64];
    size_t sizes[7] = {0};
    uint8_t key[32];
    int n = 0, more = 1;
    size_t more_size = sizeof more;
    while (more) {
        char buf[64];
        int len = zmq_recv(b->zap, buf, sizeof buf, 0);
        if (len < 0)
            return;
        if (n < 7) {
            size_t keep = (size_t)len < sizeof buf ? (size_t)len : sizeof buf;
            memcpy(parts[n], buf, keep);
            sizes[n] = keep;
        }
        n++;
        zmq_getsockopt(b->zap, ZMQ_RCVMORE, &more, &more_size);
    }
    char request_id[65] = "", address[65] = "";
    memcpy(request_id, parts[1], sizes[1] < 64 ? sizes[1] : 64);
    memcpy(address, parts[3], sizes[3] < 64 ? sizes[3] : 64);
    party_t party;
    bool ok = n >= 7 && sizes[5] == 5 && memcmp(parts[5], "CURVE", 5) == 0 && sizes[6] == 32;
    if (ok) {
        memcpy(key, parts[6], 32);
        ok = store_find_party_by_curve_key(b->store, key, &party) == RB_OK && admitted(b, &party);
    }
    if (!ok) {
        b->refused_handshakes++;
        metrics_handshake_refused(b->metrics);
        int64_t t = now_ms();
        if (t - b->refused_logged_ms > 10000) { /* rate-limited: a scan must not flood the log */
            /* The key as referral-keys show prints it ("sealing key"), so that the operator can tell which
             * card is wrong. */
            char sealing_key[2 * RB_BOX_PK_BYTES + 1] = "none";
            if (n >= 7 && sizes[6] == 32)
                keyfile_hex((const uint8_t *)parts[6], 32, sealing_key);
            log_security("handshake_refused", "count=%lld last_peer=%s sealing_key=%s",
                         (long long)b->refused_handshakes, address, sealing_key);
            b->refused_handshakes = 0;
            b->refused_logged_ms = t;
        }
        zap_reply(b->zap, request_id, "400", "not a registered party", "");
        return;
    }
    /* The User-Id names the key, not only the party: during a rotation a party has two. */
    char user[2 * RB_BOX_PK_BYTES + 1];
    keyfile_hex(key, sizeof key, user);
    zap_reply(b->zap, request_id, "200", "OK", user);
}

/* Counts a frame ZeroMQ would not take for a peer (errno from the send says why); false then. */
static bool sent(broker_t *b, rb_err rc)
{
    if (rc != RB_OK)
        metrics_dropped(b->metrics, errno == EAGAIN ? METRICS_DROP_PEER_FULL : METRICS_DROP_PEER_GONE);
    return rc == RB_OK;
}

static void send_frame(broker_t *b, session_t *s, Rb__Frame *f)
{
    if (sent(b, wire_send(b->router, s->rid, s->rid_len, f)))
        s->last_tx_ms = now_ms();
}

/* --- sessions -------------------------------------------------------------------------------------- */

/* A session is one connection of a registered, admitted party, found by the routing id the ROUTER gives
 * its connection, and made at the connection's first frame. The routing id alone proves nothing (a client
 * may choose its own, and take a stale one), so every frame's ZAP User-Id must be the session's key. One key
 * holds at most sessions_per_key sessions, and ADMIN_SLOTS are kept for admins. */

static session_t *find_session(broker_t *b, const uint8_t *rid, size_t rid_len)
{
    for (size_t i = 0; i < MAX_SESSIONS; i++)
        if (b->sessions[i].used && b->sessions[i].rid_len == rid_len &&
            memcmp(b->sessions[i].rid, rid, rid_len) == 0)
            return &b->sessions[i];
    return NULL;
}

/* Whether a submission of this turn still points at s: a session dropped in the turn (replaced by a new
 * connection of its party) keeps its slot until the group commit has recorded and answered them as its. */
static bool pending_uses(const broker_t *b, const session_t *s)
{
    for (size_t i = 0; i < b->n_pending; i++)
        if (b->pending[i].session == s)
            return true;
    for (size_t i = 0; i < b->n_confirms; i++)
        if (b->confirms[i].session == s)
            return true;
    return false;
}

/* Queues a "refused" leaf of party (agency, peer) for the next group commit (the queue is recorded at once
 * when it is full). */
static void queue_refusal(broker_t *b, const char *party, const char *agency, const char *peer,
                          const char *code, const char *detail, const uint8_t *id, int64_t t)
{
    if (b->n_refusals == MAX_PENDING)
        flush_refusals(b);
    refusal_t *r = &b->refusals[b->n_refusals++];
    snprintf(r->party, sizeof r->party, "%s", party);
    snprintf(r->agency, sizeof r->agency, "%s", agency);
    snprintf(r->peer, sizeof r->peer, "%s", peer);
    snprintf(r->reason, sizeof r->reason, "%s", detail);
    r->code = code;
    r->has_id = id != NULL;
    if (id != NULL)
        memcpy(r->id, id, MSG_ID_BYTES);
    r->at_ms = t;
}

/* Ends an account's window: what was only counted in it goes into one "refused" leaf, outcome "summary",
 * detail "count=N window_ms=W CODE=n ... sessions_evicted=K sessions_closed=C". */
static void summarise(broker_t *b, account_t *a, int64_t t)
{
    uint64_t count = 0;
    char detail[256], *p = detail, *end = detail + sizeof detail;
    for (int c = 0; c < CODES_MAX; c++)
        count += a->counted[c];
    if (count > 0 || a->evicted > 0 || a->closed > 0) {
        p += snprintf(p, (size_t)(end - p), "count=%llu window_ms=%lld", (unsigned long long)count,
                      (long long)(t - a->window_ms));
        for (int c = 0; c < CODES_MAX && p < end; c++)
            if (a->counted[c] > 0)
                p += snprintf(p, (size_t)(end - p), " %s=%u",
                              wire_error_name((Rb__ErrorCode)c) + strlen("ERROR_CODE_"), a->counted[c]);
        if (a->evicted > 0 && p < end)
            p += snprintf(p, (size_t)(end - p), " sessions_evicted=%u", a->evicted);
        if (a->closed > 0 && p < end)
            snprintf(p, (size_t)(end - p), " sessions_closed=%u", a->closed);
        log_security("refusals_summarised", "adapter=%s peer=%s detail=\"%s\"", a->party, a->peer, detail);
        queue_refusal(b, a->party, a->agency, a->peer, "summary", detail, NULL, t);
    }
    memset(a->counted, 0, sizeof a->counted);
    a->evicted = a->closed = 0;
    a->leaves = 0;
    a->window_ms = t;
}

/* The account of a key, made at its first session; one of a key with no session left is summarised and
 * reused when every slot is taken. */
static account_t *account_for(broker_t *b, const party_t *p, const char *peer, int64_t t)
{
    account_t *free_slot = NULL, *idle = NULL;
    for (size_t i = 0; i < ACCOUNTS_MAX; i++) {
        account_t *a = &b->accounts[i];
        if (a->used && memcmp(a->key, p->card.box_pk, RB_BOX_PK_BYTES) == 0) {
            snprintf(a->peer, sizeof a->peer, "%s", peer ? peer : "?");
            return a;
        }
        if (!a->used && free_slot == NULL)
            free_slot = a;
        if (a->used && a->sessions == 0 && (idle == NULL || a->window_ms < idle->window_ms))
            idle = a;
    }
    account_t *a = free_slot;
    if (a == NULL) { /* never all taken by open sessions: there are twice as many accounts as sessions */
        a = idle;
        summarise(b, a, t);
    }
    memset(a, 0, sizeof *a);
    a->used = true;
    memcpy(a->key, p->card.box_pk, RB_BOX_PK_BYTES);
    snprintf(a->party, sizeof a->party, "%s", p->card.name);
    snprintf(a->agency, sizeof a->agency, "%s", p->card.agency);
    snprintf(a->peer, sizeof a->peer, "%s", peer ? peer : "?");
    a->window_ms = t;
    return a;
}

/* The accounts' windows: each that has ended is summarised; one with no session and nothing counted is
 * forgotten. At stop (final), every one is summarised. */
static void close_windows(broker_t *b, int64_t t, bool final)
{
    for (size_t i = 0; i < ACCOUNTS_MAX; i++) {
        account_t *a = &b->accounts[i];
        if (!a->used || (!final && t - a->window_ms < WINDOW_MS))
            continue;
        summarise(b, a, t);
        if (a->sessions == 0)
            a->used = false;
    }
}

static void remember_evicted(broker_t *b, const session_t *s)
{
    closed_t *c = &b->closed[b->n_closed++ % CLOSED_MAX];
    c->rid_len = s->rid_len;
    memcpy(c->rid, s->rid, s->rid_len < CLOSED_RID_MAX ? s->rid_len : CLOSED_RID_MAX);
    memcpy(c->key, s->party.card.box_pk, RB_BOX_PK_BYTES);
}

/* Whether the connection with this routing id and key had its session evicted. The key is compared too,
 * so that nobody can have a routing id another party's connection will get later refused in advance. */
static bool was_evicted(const broker_t *b, const uint8_t *rid, size_t rid_len, const uint8_t *key)
{
    for (size_t i = 0; i < CLOSED_MAX; i++) { /* an entry never used has rid_len 0, which no rid has */
        const closed_t *c = &b->closed[i];
        if (c->rid_len == rid_len &&
            memcmp(c->rid, rid, rid_len < CLOSED_RID_MAX ? rid_len : CLOSED_RID_MAX) == 0 &&
            memcmp(c->key, key, RB_BOX_PK_BYTES) == 0)
            return true;
    }
    return false;
}

/* Ends a session: whatever it had in flight is due again, for its party's next connection. A
 * "disconnected" leaf records it while its key's window has leaves left; beyond, it is counted in the
 * window's summary, as an eviction always is (an attacker cycling connections must not get a leaf for
 * each). */
static void close_session(broker_t *b, session_t *s, const char *why, metrics_close_t reason, bool evicted)
{
    int64_t t = now_ms();
    account_t *a = s->account;
    bool leaf = !evicted && a->leaves < LEAVES_PER_WINDOW;
    if (evicted)
        a->evicted++;
    else if (leaf)
        a->leaves++;
    else
        a->closed++;
    if (!evicted) /* evictions are logged together (open_session) */
        log_info("peer_gone", "adapter=%s peer=%s reason=\"%s\"", s->party.card.name, s->peer, why);
    bool receiver = s->hello && s->credit > 0;
    if ((receiver || leaf) && store_begin(b->store) == RB_OK) {
        if ((receiver && store_reschedule(b->store, s->party.card.name, t) != RB_OK) ||
            (leaf && event(b, s, ACTION_NAME(DISCONNECTED), NULL, "ok", why) != RB_OK) ||
            store_commit(b->store) != RB_OK)
            store_rollback(b->store);
    }
    if (evicted)
        remember_evicted(b, s);
    metrics_session_closed(b->metrics, s->party.card.name, reason);
    a->sessions--;
    s->used = false;
}

static void drop_session(broker_t *b, session_t *s, const char *why, metrics_close_t reason)
{
    close_session(b, s, why, reason, false);
}

/* Answers a frame from a connection that has no session and gets none (its party disabled, its session
 * evicted): an ERROR and a count, never a leaf, and a log line at most every ten seconds. */
static void refuse_unsessioned(broker_t *b, const uint8_t *rid, size_t rid_len, const party_t *p,
                               Rb__ErrorCode code, const char *reason, const char *peer)
{
    metrics_refused(b->metrics, p->card.name, code);
    sent(b, wire_send_error(b->router, rid, rid_len, code, reason, NULL));
    b->unsessioned++;
    int64_t t = now_ms();
    if (t - b->unsessioned_logged_ms > 10000) {
        log_security("frames_refused_without_session", "adapter=%s last_peer=%s code=%s count=%lld",
                     p->card.name, peer ? peer : "?", wire_error_name(code), (long long)b->unsessioned);
        b->unsessioned = 0;
        b->unsessioned_logged_ms = t;
    }
}

/* A frame from a connection nobody can answer as (every slot taken, or its key unknown since ZAP). */
static void drop_unsessioned(broker_t *b, const char *peer)
{
    metrics_dropped(b->metrics, METRICS_DROP_NO_SESSION);
    int64_t t = now_ms();
    if (t - b->dropped_logged_ms > 10000) { /* rate-limited, like refused handshakes */
        log_security("frame_dropped", "reason=no_session peer=%s", peer ? peer : "?");
        b->dropped_logged_ms = t;
    }
}

/* A session for the connection with routing id rid, at its first frame; NULL when it gets none (the frame
 * is answered or counted here). */
static session_t *open_session(broker_t *b, const uint8_t *rid, size_t rid_len, const char *user,
                               const char *peer)
{
    party_t p;
    uint8_t key[RB_BOX_PK_BYTES];
    if (rid_len > RID_MAX || user == NULL || strlen(user) != 2 * RB_BOX_PK_BYTES ||
        !keyfile_unhex(user, key, sizeof key) || store_find_party_by_curve_key(b->store, key, &p) != RB_OK) {
        drop_unsessioned(b, peer);
        return NULL;
    }
    if (!admitted(b, &p)) {
        refuse_unsessioned(b, rid, rid_len, &p, RB__ERROR_CODE__ERROR_CODE_DISABLED,
                           "this party is disabled, or the key it connected with is revoked or retired",
                           peer);
        return NULL;
    }
    if (was_evicted(b, rid, rid_len, key)) {
        refuse_unsessioned(b, rid, rid_len, &p, RB__ERROR_CODE__ERROR_CODE_SESSION_CLOSED,
                           "session closed: a newer connection under this key took its place "
                           "(more than sessions_per_key); connect again",
                           peer);
        return NULL;
    }
    session_t *oldest = NULL;
    int same = 0, adapters = 0;
    bool room = false; /* a free slot no submission of this turn still points at */
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *o = &b->sessions[i];
        if (!o->used) {
            room |= !pending_uses(b, o);
            continue;
        }
        adapters += o->party.card.role != CARD_ROLE_ADMIN;
        if (memcmp(o->party.card.box_pk, key, sizeof key) != 0)
            continue;
        same++;
        if (oldest == NULL || o->opened_ms < oldest->opened_ms)
            oldest = o;
    }
    /* The newcomer must get the slot an eviction frees, or another: never an eviction for nothing. */
    if (same >= b->cfg->sessions_per_key && (room || !pending_uses(b, oldest))) {
        adapters -= oldest->party.card.role != CARD_ROLE_ADMIN;
        close_session(b, oldest, "evicted: a newer connection under its key", METRICS_CLOSE_EVICTED, true);
        b->evictions++;
        if (now_ms() - b->evicted_logged_ms > 10000) { /* rate-limited: one line for a burst */
            log_security("sessions_evicted", "adapter=%s count=%lld cap=%lld", p.card.name,
                         (long long)b->evictions, (long long)b->cfg->sessions_per_key);
            b->evictions = 0;
            b->evicted_logged_ms = now_ms();
        }
    }
    session_t *s = NULL;
    if (p.card.role == CARD_ROLE_ADMIN || adapters < MAX_SESSIONS - ADMIN_SLOTS)
        for (size_t i = 0; i < MAX_SESSIONS && s == NULL; i++)
            if (!b->sessions[i].used && !pending_uses(b, &b->sessions[i]))
                s = &b->sessions[i];
    if (s == NULL) {
        drop_unsessioned(b, peer);
        return NULL;
    }
    int64_t t = now_ms();
    memset(s, 0, sizeof *s);
    s->used = true;
    memcpy(s->rid, rid, rid_len);
    s->rid_len = rid_len;
    s->party = p;
    snprintf(s->user, sizeof s->user, "%s", user);
    snprintf(s->peer, sizeof s->peer, "%s", peer ? peer : "?");
    s->opened_ms = s->last_rx_ms = s->last_tx_ms = t;
    s->admitted_until_ms = admitted_until(&p);
    s->account = account_for(b, &p, peer, t);
    s->account->sessions++;
    metrics_session_opened(b->metrics, p.card.name);
    return s;
}

/* After an admin command changed parties or keys: a session whose party is now disabled, or whose key is
 * revoked or retired, is closed at once (the frames its connection sends from then on are answered without
 * a session); the others take their party's new state (a retirement set by a rotation). */
static void revalidate_sessions(broker_t *b)
{
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &b->sessions[i];
        party_t fresh;
        if (!s->used)
            continue;
        if (store_find_party_by_curve_key(b->store, s->party.card.box_pk, &fresh) != RB_OK ||
            !admitted(b, &fresh)) {
            log_security("session_closed", "adapter=%s peer=%s reason=disabled_or_revoked",
                         s->party.card.name, s->peer);
            drop_session(b, s, "its party was disabled, or its key revoked, by an admin",
                         METRICS_CLOSE_DISABLED);
            continue;
        }
        s->party = fresh;
        s->admitted_until_ms = admitted_until(&fresh);
    }
}

/* Answers a frame with ERROR and counts it; the refusal gets a ledger leaf of its own, or, past
 * LEAVES_PER_WINDOW of its key's window, a count in the window's summary leaf. */
static void refuse(broker_t *b, session_t *s, Rb__ErrorCode code, const char *reason, const uint8_t *id)
{
    metrics_refused(b->metrics, s->party.card.name, code);
    sent(b, wire_send_error(b->router, s->rid, s->rid_len, code, reason, id));
    account_t *a = s->account;
    if (a->leaves >= LEAVES_PER_WINDOW) {
        a->counted[(unsigned)code < CODES_MAX ? code : 0]++;
        return;
    }
    a->leaves++;
    char hex[33] = "";
    if (id != NULL)
        wire_id_hex(id, hex);
    log_security("frame_refused", "adapter=%s peer=%s msg=%s code=%s reason=%s", s->party.card.name, s->peer,
                 hex, wire_error_name(code), reason);
    queue_refusal(b, s->party.card.name, s->party.card.agency, s->peer, wire_error_name(code), reason, id,
                  now_ms());
}

/* --- submissions ------------------------------------------------------------------------------------ */

static Rb__ErrorCode error_for(rb_err rc)
{
    switch (rc) {
    case RB_ERR_TOO_BIG:
        return RB__ERROR_CODE__ERROR_CODE_TOO_BIG;
    case RB_ERR_UNKNOWN_SENDER:
    case RB_ERR_BAD_SIGNATURE:
    case RB_ERR_HASH_MISMATCH:
        return RB__ERROR_CODE__ERROR_CODE_BAD_SIGNATURE;
    case RB_ERR_KEY_REVOKED:
        return RB__ERROR_CODE__ERROR_CODE_KEY_REVOKED;
    case RB_ERR_KEY_EXPIRED:
        return RB__ERROR_CODE__ERROR_CODE_KEY_EXPIRED;
    case RB_ERR_NOT_ALLOWED:
        return RB__ERROR_CODE__ERROR_CODE_NOT_ALLOWED;
    case RB_ERR_CONFLICT:
        return RB__ERROR_CODE__ERROR_CODE_CONFLICT;
    default:
        return RB__ERROR_CODE__ERROR_CODE_BAD_ENVELOPE;
    }
}

/* Answers a stored submission with its "submitted" leaf and the proof of it under the latest checkpoint. */
static void send_receipt(broker_t *b, session_t *s, uint64_t index)
{
    ledger_t *l = store_ledger(b->store);
    ledger_update_t *u = malloc(sizeof *u);
    uint8_t *leaf = NULL;
    size_t leaf_len, n, text_len;
    merkle_hash_t path[PROOF_HASHES_MAX];
    char *text = malloc(PROOF_TEXT_MAX);
    rb_err rc = u == NULL || text == NULL ? RB_ERR_NOMEM : ledger_update(b, s, u);
    if (rc == RB_OK)
        rc = ledger_leaf(l, index, &leaf, &leaf_len);
    if (rc == RB_OK)
        rc = ledger_inclusion_proof(l, index, b->checkpoint_size, path, &n);
    if (rc == RB_OK)
        rc = proof_format(index, NULL, 0, path, n, b->checkpoint_note, strlen(b->checkpoint_note), text,
                          PROOF_TEXT_MAX, &text_len);
    if (rc == RB_OK) {
        Rb__Receipt receipt = RB__RECEIPT__INIT;
        receipt.leaf = (ProtobufCBinaryData){leaf_len, leaf};
        receipt.proof = text;
        receipt.ledger = &u->update;
        Rb__Frame f = RB__FRAME__INIT;
        f.body_case = RB__FRAME__BODY_RECEIPT;
        f.receipt = &receipt;
        send_frame(b, s, &f);
    } else {
        log_error("receipt_failed", "adapter=%s index=%llu error=%s", s->party.card.name,
                  (unsigned long long)index, rb_strerror(rc));
    }
    free(leaf);
    free(text);
    free(u);
}

static bool pending_has(broker_t *b, const uint8_t *id, const uint8_t *sha256, bool *same, int *which)
{
    for (size_t i = 0; i < b->n_pending; i++)
        if (b->pending[i].same_as < 0 &&
            memcmp(b->pending[i].header->message_id.data, id, MSG_ID_BYTES) == 0) {
            *same = memcmp(b->pending[i].sha256, sha256, RB_HASH_BYTES) == 0;
            *which = (int)i;
            return true;
        }
    return false;
}

/* An ACK must answer a referral delivered to the acker, from the party the ACK goes to; *answered is the
 * status of the ACK recorded on it already (stored, or in this batch), 0 when none. */
static bool ack_allowed(broker_t *b, const session_t *s, const Rb__Header *h, int *answered)
{
    bool found;
    stored_msg_t ref;
    if (store_find_message(b->store, h->ref_message_id.data, &found, &ref) != RB_OK || !found)
        return false;
    *answered = ref.ack_status;
    for (size_t i = 0; i < b->n_pending && *answered == 0; i++)
        if (b->pending[i].same_as < 0 && b->pending[i].header->kind == RB__KIND__KIND_ACK &&
            memcmp(b->pending[i].header->ref_message_id.data, h->ref_message_id.data, MSG_ID_BYTES) == 0)
            *answered = (int)b->pending[i].header->ack_status;
    return strcmp(ref.recipient, s->party.card.name) == 0 && strcmp(ref.sender, h->recipient) == 0 &&
           ref.attempts > 0;
}

/* Whether h is sealed to a key its recipient holds: one of the recipient's registered keys, not revoked (a
 * compromised key's thief would read it), and not expired or retired when the sender sealed it (the
 * header's time, by which the sender's own key is judged too: an envelope sealed during a rotation's
 * overlap and submitted after it is still the recipient's to open). why says which, and what to do. */
static bool sealed_to_recipient(const broker_t *b, const Rb__Header *h, char *why, size_t cap)
{
    char hex[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(h->recipient_key_id.data, hex);
    const card_t *k = trust_find_key(b->trust, h->recipient_key_id.data);
    if (k == NULL || strcmp(k->name, h->recipient) != 0) {
        snprintf(why, cap, "sealed to key %s, which is not a registered key of %s: seal to its current card",
                 hex, h->recipient);
        return false;
    }
    if (trust_revoked(b->trust, k->key_id)) {
        snprintf(why, cap, "sealed to key %s of %s, which is revoked: seal to its current card", hex,
                 h->recipient);
        return false;
    }
    if (trust_check(b->trust, k, (uint64_t)(h->created_ms / 1000)) != RB_OK) {
        snprintf(why, cap,
                 "sealed to key %s of %s after it retired or expired, or before it was valid: seal to its "
                 "current card",
                 hex, h->recipient);
        return false;
    }
    return true;
}

/* The part of a submission that needs nothing but the trust store: the header's signature, and the hash. */
static void verify_envelope(const broker_t *b, const uint8_t *env, size_t len, verified_t *out)
{
    out->done = true;
    out->header = NULL;
    out->rc = envelope_verify_header(b->trust, env, len, &out->header, &out->sender);
    if (out->rc == RB_OK)
        rbcrypto_sha256(env, len, out->sha256);
}

/* pre: the envelope verified ahead (verify_ahead), or NULL to verify it here. */
static void handle_submit(broker_t *b, session_t *s, const Rb__Submit *sub, verified_t *pre)
{
    const uint8_t *env = sub->envelope.data;
    size_t len = sub->envelope.len;
    verified_t here;
    if (pre == NULL || !pre->done) {
        verify_envelope(b, env, len, &here);
        pre = &here;
    }
    Rb__Header *h = pre->header;
    pre->header = NULL; /* ours now */
    card_t sender = pre->sender;
    rb_err rc = pre->rc;
    /* A revoked key signs nothing new, whatever date it puts on it: a thief can back-date. */
    if (rc == RB_OK && trust_revoked(b->trust, sender.key_id)) {
        rb__header__free_unpacked(h, NULL);
        rc = RB_ERR_KEY_REVOKED;
    }
    if (rc != RB_OK) {
        /* Named by its message id when it has a readable one, so that a client with several submissions in
         * flight can tell which was refused. */
        msg_id_t peeked;
        refuse(b, s, error_for(rc), rb_strerror(rc),
               envelope_peek_id(env, len, &peeked) == RB_OK ? peeked.bytes : NULL);
        return;
    }
    const uint8_t *id = h->message_id.data;
    char why[160] = "";
    Rb__ErrorCode code = RB__ERROR_CODE__ERROR_CODE_UNSPECIFIED;
    party_t recipient;
    uint8_t sha256[RB_HASH_BYTES];
    memcpy(sha256, pre->sha256, RB_HASH_BYTES);
    bool found = false, same = false;
    int first = -1, answered = 0;
    stored_msg_t old;
    if (strcmp(h->sender, s->party.card.name) != 0) {
        code = RB__ERROR_CODE__ERROR_CODE_SENDER_MISMATCH;
        snprintf(why, sizeof why, "header names another sender than the authenticated party");
    } else if (/* an envelope stored already gets its receipt again, whatever became of its recipient since */
               pending_has(b, id, sha256, &same, &first) ||
               (store_find_message(b->store, id, &found, &old) == RB_OK && found &&
                (same = (memcmp(old.envelope_sha256, sha256, RB_HASH_BYTES) == 0), true))) {
        if (!same) {
            code = RB__ERROR_CODE__ERROR_CODE_CONFLICT;
            snprintf(why, sizeof why, "message id already submitted with another envelope");
        } else if (found) {
            char hex[33];
            wire_id_hex(id, hex);
            log_info("duplicate_submit", "adapter=%s msg=%s", s->party.card.name, hex);
            send_receipt(b, s, old.submit_index); /* the same promise again */
            rb__header__free_unpacked(h, NULL);
            return;
        } else { /* the same envelope twice in one batch: answered with the first one's receipt */
            rb__header__free_unpacked(h, NULL);
            if (b->n_pending < MAX_PENDING)
                b->pending[b->n_pending++] = (pending_t){.session = s, .same_as = first};
            else
                refuse(b, s, RB__ERROR_CODE__ERROR_CODE_STORAGE, "busy: retry", id);
            return;
        }
    } else if (store_find_party(b->store, h->recipient, &recipient) != RB_OK ||
               recipient.card.role != (h->kind == RB__KIND__KIND_ACK ? CARD_ROLE_SOURCE : CARD_ROLE_SINK)) {
        code = RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT;
        snprintf(why, sizeof why, "recipient is not a registered adapter of the right role");
    } else if (!sealed_to_recipient(b, h, why, sizeof why)) {
        code = RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT;
    } else if (!recipient.enabled) {
        /* Said only of an envelope sealed for it (a made-up one learns nothing of who is disabled). For now:
         * an admin enables it again (docs/OPERATIONS.md), and the sender keeps what it sent until then. A
         * peer of version 1 or 2 knows no RECIPIENT_DISABLED, and retries STORAGE. */
        code = s->protocol >= 3 ? RB__ERROR_CODE__ERROR_CODE_RECIPIENT_DISABLED
                                : RB__ERROR_CODE__ERROR_CODE_STORAGE;
        snprintf(why, sizeof why, "recipient %.64s is disabled: keep it and submit it again later",
                 h->recipient);
    } else if (h->kind == RB__KIND__KIND_ACK && !ack_allowed(b, s, h, &answered)) {
        code = RB__ERROR_CODE__ERROR_CODE_NOT_ALLOWED;
        snprintf(why, sizeof why, "ACK for a message not delivered to this party by its recipient");
    } else if (h->kind == RB__KIND__KIND_ACK && answered != 0 && answered != (int)h->ack_status) {
        /* An answer is final: a second ACK may repeat it (a sink that crashed before recording its first),
         * never contradict it. */
        code = RB__ERROR_CODE__ERROR_CODE_CONFLICT;
        snprintf(why, sizeof why,
                 "the referral was answered %s already: a second ACK must agree with the first",
                 answered == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "ACCEPTED" : "REJECTED");
    } else if (b->n_pending == MAX_PENDING) {
        code = RB__ERROR_CODE__ERROR_CODE_STORAGE;
        snprintf(why, sizeof why, "busy: retry");
    }
    if (code != RB__ERROR_CODE__ERROR_CODE_UNSPECIFIED) {
        refuse(b, s, code, why, id);
        rb__header__free_unpacked(h, NULL);
        return;
    }
    pending_t *p = &b->pending[b->n_pending];
    if ((p->envelope = malloc(len)) == NULL) {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_STORAGE, "out of memory", id);
        rb__header__free_unpacked(h, NULL);
        return;
    }
    memcpy(p->envelope, env, len);
    p->len = len;
    p->header = h;
    p->session = s;
    p->arrived = metrics_clock();
    memcpy(p->sha256, sha256, RB_HASH_BYTES);
    p->same_as = -1;
    b->n_pending++;
}

static void clear_pending(broker_t *b)
{
    for (size_t i = 0; i < b->n_pending; i++)
        if (b->pending[i].same_as < 0) {
            rb__header__free_unpacked(b->pending[i].header, NULL);
            free(b->pending[i].envelope);
        }
    b->n_pending = 0;
}

/* Ledgers a submission: "submitted" with the sender's signed header, and for an ACK also "acked" on the
 * referral it answers, with the same header. s is the submitting session, NULL for the broker's own
 * notices. */
static rb_err record_submission(broker_t *b, const session_t *s, const Rb__Header *h, const uint8_t *envelope,
                                size_t len, const uint8_t sha256[RB_HASH_BYTES], uint64_t *index)
{
    Rb__Envelope *env = rb__envelope__unpack(NULL, len, envelope); /* verified already */
    if (env == NULL)
        return RB_ERR_MALFORMED;
    char detail[160];
    snprintf(detail, sizeof detail, "kind=%d recipient=%s bytes=%zu", (int)h->kind, h->recipient, len);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = ACTION_NAME(SUBMITTED);
    e.party = h->sender;
    e.agency = h->sender_agency;
    e.message_id = h->message_id;
    e.outcome = "ok";
    e.detail = detail;
    e.header = env->header;
    e.header_signature = env->header_signature;
    e.envelope_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, (uint8_t *)sha256};
    rb_err rc = record(b, s, &e, index);
    if (rc == RB_OK && h->kind == RB__KIND__KIND_ACK) {
        e.action = ACTION_NAME(ACKED);
        e.message_id = h->ref_message_id;
        e.outcome = h->ack_status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "accepted" : "rejected";
        e.envelope_sha256 = (ProtobufCBinaryData){0, NULL};
        rc = record(b, s, &e, NULL);
    }
    rb__envelope__free_unpacked(env, NULL);
    return rc;
}

/* Records the refusals of this turn in the current transaction. */
static rb_err record_refusals(broker_t *b)
{
    for (size_t i = 0; i < b->n_refusals; i++) {
        refusal_t *r = &b->refusals[i];
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        e.action = ACTION_NAME(REFUSED);
        e.party = r->party;
        e.agency = r->agency;
        e.peer = r->peer;
        e.message_id = (ProtobufCBinaryData){r->has_id ? MSG_ID_BYTES : 0, r->id};
        e.outcome = (char *)r->code;
        e.detail = r->reason;
        e.at_ms = r->at_ms;
        rb_err rc = store_event(b->store, &e, NULL);
        if (rc != RB_OK)
            return rc;
    }
    return RB_OK;
}

/* Records the queued refusals in a transaction of their own, and empties the queue. */
static void flush_refusals(broker_t *b)
{
    if (b->n_refusals > 0 &&
        (store_begin(b->store) != RB_OK || record_refusals(b) != RB_OK || store_commit(b->store) != RB_OK)) {
        store_rollback(b->store);
        log_error("refusals_not_recorded", "refusals=%zu", b->n_refusals);
    }
    b->n_refusals = 0;
}

static void handle_confirm(broker_t *b, session_t *s, const Rb__Confirm *c)
{
    if (c->message_id.len != MSG_ID_BYTES) {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, "CONFIRM needs a 16-byte message id", NULL);
        return;
    }
    confirm_t *q = &b->confirms[b->n_confirms++]; /* handle_router leaves room for one frame's worth */
    q->session = s;
    memcpy(q->id, c->message_id.data, MSG_ID_BYTES);
    q->rc = RB_OK;
}

/* Applies this turn's CONFIRMs in the current transaction, each in a savepoint: one that was not in flight
 * to its party is undone alone and answered after the commit. */
static rb_err apply_confirms(broker_t *b, int64_t t)
{
    for (size_t i = 0; i < b->n_confirms; i++) {
        confirm_t *q = &b->confirms[i];
        rb_err rc = store_step_begin(b->store);
        if (rc != RB_OK)
            return rc;
        q->rc = store_confirmed(b->store, q->id, q->session->party.card.name, t);
        if (q->rc == RB_OK)
            q->rc = event(b, q->session, ACTION_NAME(CONFIRMED), q->id, "ok", NULL);
        if (q->rc == RB_OK)
            rc = store_step_end(b->store);
        else
            store_step_undo(b->store);
        if (rc != RB_OK || (q->rc != RB_OK && q->rc != RB_ERR_USAGE))
            return rc != RB_OK ? rc : q->rc;
    }
    return RB_OK;
}

/* After the commit: logs what was confirmed, and refuses a CONFIRM of what was not in flight to its party
 * (a repeated CONFIRM of what it confirmed already is harmless). */
static void answer_confirms(broker_t *b)
{
    for (size_t i = 0; i < b->n_confirms; i++) {
        confirm_t *q = &b->confirms[i];
        const char *adapter = q->session->party.card.name;
        char hex[33];
        wire_id_hex(q->id, hex);
        if (q->rc == RB_OK) {
            log_info("confirmed", "adapter=%s msg=%s", adapter, hex);
            metrics_confirmed(b->metrics, adapter);
            continue;
        }
        bool found;
        stored_msg_t m;
        if (store_find_message(b->store, q->id, &found, &m) == RB_OK && found &&
            strcmp(m.recipient, adapter) == 0 && strcmp(m.state, "confirmed") == 0)
            continue;
        refuse(b, q->session, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE, "no such delivery to this party",
               q->id);
    }
}

/* Commits this turn's refusals, CONFIRMs, every pending submission and one checkpoint covering them in one
 * transaction, then answers each submission with its receipt. */
static void before_sleep(broker_t *b)
{
    if (b->n_pending == 0 && b->n_refusals == 0 && b->n_confirms == 0)
        return;
    int64_t t = now_ms();
    uint64_t indexes[MAX_PENDING];
    rb_err rc = store_begin(b->store);
    if (rc == RB_OK)
        rc = record_refusals(b);
    if (rc == RB_OK)
        rc = apply_confirms(b, t);
    for (size_t i = 0; rc == RB_OK && i < b->n_pending; i++) {
        pending_t *p = &b->pending[i];
        if (p->same_as >= 0)
            continue;
        rc = record_submission(b, p->session, p->header, p->envelope, p->len, p->sha256, &indexes[i]);
        if (rc == RB_OK)
            rc = store_add_message(b->store, p->header, p->envelope, p->len, p->sha256, indexes[i], t);
        if (rc == RB_OK && p->header->kind == RB__KIND__KIND_ACK)
            rc = store_acked(b->store, p->header->ref_message_id.data, (int)p->header->ack_status,
                             p->header->message_id.data, t);
    }
    char note[NOTE_TEXT_MAX];
    size_t note_len;
    bool signed_now = b->n_pending > 0;
    if (rc == RB_OK && signed_now)
        rc = checkpoint(b, note, &note_len);
    if (rc == RB_OK)
        rc = store_commit(b->store);
    /* For a store failure, SQLite's own words ("database or disk is full", "disk I/O error"), taken before
     * the rollback replaces them: they tell the sender and the operator what to fix. */
    char why[160] = "";
    if (rc != RB_OK) {
        const char *cause = rc == RB_ERR_IO ? sqlite3_errmsg(store_db(b->store)) : rb_strerror(rc);
        snprintf(why, sizeof why, "the broker could not store it (%s): retry later", cause);
        log_error("commit_failed", "submissions=%zu confirms=%zu refusals=%zu error=%s", b->n_pending,
                  b->n_confirms, b->n_refusals, cause);
        store_rollback(b->store);
        /* The refusals were answered already: they go into the ledger without the submissions if they can. */
        flush_refusals(b);
    } else if (signed_now) {
        b->checkpoint_size = ledger_size(store_ledger(b->store));
        b->checkpoint_ms = t;
        memcpy(b->checkpoint_note, note, note_len + 1);
        metrics_checkpointed(b->metrics, t, b->checkpoint_size);
    }
    b->n_refusals = 0;
    /* CONFIRMs lost with a failed commit are not answered: the deliveries stay in flight and come again. */
    if (rc == RB_OK)
        answer_confirms(b);
    b->n_confirms = 0;
    for (size_t i = 0; i < b->n_pending; i++) {
        pending_t *p = &b->pending[i];
        pending_t *first = p->same_as >= 0 ? &b->pending[p->same_as] : p;
        size_t k = p->same_as >= 0 ? (size_t)p->same_as : i;
        char hex[33];
        wire_id_hex(first->header->message_id.data, hex);
        if (rc == RB_OK) {
            if (p->same_as < 0) {
                log_info("submitted", "adapter=%s msg=%s index=%llu", p->session->party.card.name, hex,
                         (unsigned long long)indexes[k]);
                metrics_receipted(b->metrics, b->store, p->header, p->arrived, t);
            }
            send_receipt(b, p->session, indexes[k]);
        } else {
            sent(b, wire_send_error(b->router, p->session->rid, p->session->rid_len,
                                    RB__ERROR_CODE__ERROR_CODE_STORAGE, why, first->header->message_id.data));
        }
    }
    clear_pending(b);
}

/* --- delivery ---------------------------------------------------------------------------------------- */

/* Backoff before attempt n+1: base * 2^(n-1), capped, with up to 20% jitter so that retries spread. */
static int64_t backoff_ms(const broker_config_t *cfg, int attempt)
{
    int64_t d = cfg->retry_base_ms;
    for (int i = 1; i < attempt && d < cfg->retry_max_ms; i++)
        d *= 2;
    if (d > cfg->retry_max_ms)
        d = cfg->retry_max_ms;
    uint32_t r;
    rbcrypto_random(&r, sizeof r);
    return d - (int64_t)(r % (uint32_t)(d / 5 + 1));
}

/* Records the next deliveries due to s and commits, and only then sends them: a DELIVER the broker could
 * not record (a full disk) would be CONFIRMed and ACKed by a sink for a message the broker holds as never
 * delivered, and the ACK refused. */
static void deliver_to(broker_t *b, session_t *s)
{
    int64_t t = now_ms();
    int in_flight;
    if (store_in_flight(b->store, s->party.card.name, t, &in_flight) != RB_OK || in_flight >= s->credit)
        return;
    due_msg_t due[64];
    int attempts[64];
    size_t n, recorded = 0, room = (size_t)(s->credit - in_flight);
    if (store_due(b->store, s->party.card.name, t, due, room < 64 ? room : 64, &n) != RB_OK || n == 0)
        return;
    if (store_begin(b->store) != RB_OK)
        goto done;
    /* Each in a savepoint: one that cannot be recorded is undone alone, and the ones before it go. */
    for (; recorded < n; recorded++) {
        due_msg_t *d = &due[recorded];
        char detail[64];
        attempts[recorded] = d->attempts + 1;
        if (store_step_begin(b->store) != RB_OK)
            break;
        snprintf(detail, sizeof detail, "attempt=%d", attempts[recorded]);
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        e.action = ACTION_NAME(DELIVERED);
        e.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, d->message_id};
        e.outcome = "sent";
        e.detail = detail;
        e.attempt = (uint32_t)attempts[recorded];
        if (store_attempted(b->store, d->message_id, t + backoff_ms(b->cfg, attempts[recorded]),
                            b->cfg->retry_limit) != RB_OK ||
            record(b, s, &e, NULL) != RB_OK) {
            store_step_undo(b->store);
            break;
        }
        if (store_step_end(b->store) != RB_OK)
            break;
    }
    if (store_commit(b->store) != RB_OK) {
        log_error("delivery_not_recorded", "adapter=%s error=%s", s->party.card.name,
                  sqlite3_errmsg(store_db(b->store)));
        store_rollback(b->store);
        goto done;
    }
    const char *dropped = NULL;
    for (size_t i = 0; i < recorded && dropped == NULL; i++) {
        due_msg_t *d = &due[i];
        Rb__Frame f = RB__FRAME__INIT;
        Rb__Deliver del = RB__DELIVER__INIT;
        del.envelope = (ProtobufCBinaryData){d->len, d->envelope};
        del.attempt = (uint32_t)attempts[i];
        f.body_case = RB__FRAME__BODY_DELIVER;
        f.deliver = &del;
        rb_err rc = wire_send(b->router, s->rid, s->rid_len, &f);
        bool full = rc != RB_OK && errno == EAGAIN;
        if (!sent(b, rc)) {
            /* The connection is gone, or its peer does not read what it asked for: the session goes (it must
             * say HELLO again to be delivered to), and what it had in flight, this one included, is due
             * again at once (drop_session). */
            dropped = full ? "not reading: its queue is full" : "connection closed";
            break;
        }
        char hex[33];
        wire_id_hex(d->message_id, hex);
        s->last_tx_ms = t;
        log_info("delivered", "adapter=%s msg=%s attempt=%d", s->party.card.name, hex, attempts[i]);
        metrics_delivered(b->metrics, s->party.card.name, attempts[i]);
    }
    if (dropped != NULL)
        drop_session(b, s, dropped, METRICS_CLOSE_GONE);
done:
    for (size_t i = 0; i < n; i++)
        free(due[i].envelope);
}

static bool is_connected(void *ctx, const char *name)
{
    broker_t *b = ctx;
    for (size_t i = 0; i < MAX_SESSIONS; i++)
        if (b->sessions[i].used && b->sessions[i].hello && strcmp(b->sessions[i].party.card.name, name) == 0)
            return true;
    return false;
}

/* --- frames -------------------------------------------------------------------------------------------- */

/* Whether the broker speaks the frame's version, and its body came with it or before. */
static bool version_known(const Rb__Frame *f)
{
    return f->version >= wire_frame_version(f->body_case) && f->version <= WIRE_VERSION;
}

/* Answers PROVE: the consistency of two sizes of the ledger, both within the latest checkpoint, for a source
 * checking a checkpoint a sink's ACK carried against its own. */
static void send_proof(broker_t *b, session_t *s, const Rb__Prove *p)
{
    merkle_hash_t hashes[PROOF_HASHES_MAX];
    ProtobufCBinaryData proof[PROOF_HASHES_MAX];
    size_t n = 0;
    if (p->old_size == 0 || p->old_size > p->new_size || p->new_size > b->checkpoint_size) {
        char why[160];
        snprintf(why, sizeof why,
                 "PROVE needs 0 < old_size <= new_size <= %llu, the latest checkpoint's size",
                 (unsigned long long)b->checkpoint_size);
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, why, NULL);
        return;
    }
    if (p->old_size < p->new_size &&
        ledger_consistency_proof(store_ledger(b->store), p->old_size, p->new_size, hashes, &n) != RB_OK) {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_STORAGE, "the broker could not read its ledger: retry later",
               NULL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        proof[i] = (ProtobufCBinaryData){MERKLE_HASH_BYTES, hashes[i].bytes};
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Proof reply = RB__PROOF__INIT;
    reply.old_size = p->old_size;
    reply.new_size = p->new_size;
    reply.n_consistency = n;
    reply.consistency = proof;
    f.body_case = RB__FRAME__BODY_PROOF;
    f.proof = &reply;
    send_frame(b, s, &f);
}

/* pre: a SUBMIT's envelope verified ahead (verify_ahead), or NULL. */
static void handle_frame(broker_t *b, session_t *s, const uint8_t *data, size_t len, verified_t *pre)
{
    int64_t t = now_ms();
    s->last_rx_ms = t;
    /* Its key expired or retired since it connected (a disable or a revocation closed the session at once):
     * this frame and every one after it get an error and nothing else. */
    if (t >= s->admitted_until_ms) {
        drop_session(b, s, "its key expired or retired", METRICS_CLOSE_DISABLED);
        refuse_unsessioned(b, s->rid, s->rid_len, &s->party, RB__ERROR_CODE__ERROR_CODE_DISABLED,
                           "this party is disabled, or the key it connected with is revoked or retired",
                           s->peer);
        return;
    }
    if ((int64_t)len > b->cfg->max_message_bytes) {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_TOO_BIG, "frame over the broker's size limit", NULL);
        return;
    }
    Rb__Frame *f = rb__frame__unpack(NULL, len, data);
    if (f == NULL || f->body_case == RB__FRAME__BODY__NOT_SET) {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, "not a frame", NULL);
    } else if (!version_known(f)) {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_UNSUPPORTED_VERSION,
               "protocol versions 1 to 3 only, and PROVE is of version 2 or later", NULL);
    } else if (!s->hello &&
               (f->body_case == RB__FRAME__BODY_SUBMIT || f->body_case == RB__FRAME__BODY_CONFIRM ||
                f->body_case == RB__FRAME__BODY_ADMIN_REQUEST || f->body_case == RB__FRAME__BODY_PROVE)) {
        /* Named by its message id, so that a client can tell which submission to send again after HELLO. */
        msg_id_t id;
        bool named = f->body_case == RB__FRAME__BODY_SUBMIT
                         ? envelope_peek_id(f->submit->envelope.data, f->submit->envelope.len, &id) == RB_OK
                         : f->body_case == RB__FRAME__BODY_CONFIRM &&
                               f->confirm->message_id.len == MSG_ID_BYTES &&
                               (memcpy(id.bytes, f->confirm->message_id.data, MSG_ID_BYTES), true);
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_UNEXPECTED, HELLO_FIRST, named ? id.bytes : NULL);
    } else if (f->body_case == RB__FRAME__BODY_HELLO) {
        s->hello = true;
        s->protocol = f->hello->protocol;
        s->credit = f->hello->credit > b->cfg->credit ? b->cfg->credit : f->hello->credit;
        s->ledger_size = f->hello->ledger_size;
        /* One receiver per party: a new one (an adapter restarted) replaces any older connection. */
        for (size_t i = 0; s->credit > 0 && i < MAX_SESSIONS; i++) {
            session_t *o = &b->sessions[i];
            if (o != s && o->used && o->credit > 0 && strcmp(o->party.card.name, s->party.card.name) == 0)
                drop_session(b, o, "replaced by a new connection", METRICS_CLOSE_REPLACED);
        }
        Rb__Frame w = RB__FRAME__INIT;
        Rb__Welcome welcome = RB__WELCOME__INIT;
        welcome.broker = (char *)identity_card(b->me)->name;
        welcome.peer = s->party.card.name;
        welcome.heartbeat_ms = (uint32_t)b->cfg->heartbeat_ms;
        welcome.protocol = WIRE_VERSION;
        ledger_update_t *u = malloc(sizeof *u);
        if (u != NULL && ledger_update(b, s, u) == RB_OK)
            welcome.ledger = &u->update;
        w.body_case = RB__FRAME__BODY_WELCOME;
        w.welcome = &welcome;
        send_frame(b, s, &w);
        free(u);
        log_info("hello", "adapter=%s peer=%s credit=%lld", s->party.card.name, s->peer,
                 (long long)s->credit);
    } else if (f->body_case == RB__FRAME__BODY_SUBMIT && s->party.card.role != CARD_ROLE_ADMIN) {
        handle_submit(b, s, f->submit, pre);
    } else if (f->body_case == RB__FRAME__BODY_CONFIRM && s->party.card.role != CARD_ROLE_ADMIN) {
        handle_confirm(b, s, f->confirm);
    } else if (f->body_case == RB__FRAME__BODY_HEARTBEAT) {
        /* last_rx_ms is all it is for */
    } else if (f->body_case == RB__FRAME__BODY_PROVE) {
        send_proof(b, s, f->prove);
    } else if (f->body_case == RB__FRAME__BODY_ADMIN_REQUEST && s->party.card.role == CARD_ROLE_ADMIN) {
        char *output = NULL;
        bool changed = false;
        admin_env_t env = {.connected = is_connected,
                           .ctx = b,
                           .rotation_overlap_ms = b->cfg->rotation_overlap_ms,
                           .ack_overdue_ms = b->cfg->ack_overdue_ms,
                           .key_expiry_warn_ms = b->cfg->key_expiry_warn_ms,
                           .broker_card = identity_card(b->me)};
        bool ok =
            admin_execute(b->store, &s->party, s->peer, f->admin_request, now_ms(), &env, &output, &changed);
        if (changed) {
            if (reload_trust(b) != RB_OK)
                log_error("trust_reload_failed", "after=admin");
            revalidate_sessions(b);
            /* Before the reply: whatever the admin's peers submit next is queued after the notice, so adapters
             * learn of a new key before they see it. */
            send_notices(b);
        }
        Rb__Frame r = RB__FRAME__INIT;
        Rb__AdminReply reply = RB__ADMIN_REPLY__INIT;
        reply.ok = ok;
        reply.output = output ? output : "";
        r.body_case = RB__FRAME__BODY_ADMIN_REPLY;
        r.admin_reply = &reply;
        send_frame(b, s, &r);
        free(output);
    } else {
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_UNEXPECTED, "this party may not send this frame", NULL);
    }
    if (f != NULL)
        rb__frame__free_unpacked(f, NULL);
}

/* Takes one message from the ROUTER: a frame from the connection with routing id rid, whose session is
 * made at its first message (user and peer are the ZAP User-Id and the peer address). */
static void take_message(broker_t *b, const uint8_t *rid, size_t rid_len, const char *user, const char *peer,
                         const uint8_t *data, size_t len, bool one_part, verified_t *pre)
{
    session_t *s = rid_len <= RID_MAX ? find_session(b, rid, rid_len) : NULL;
    /* The ROUTER gives a routing id to one live connection at a time: another key under a session's id means
     * the session's own connection is gone and a new one chose that id. The new one is never the old party. */
    if (s != NULL && (user == NULL || strcmp(user, s->user) != 0)) {
        log_security("routing_id_reused", "adapter=%s peer=%s new_peer=%s", s->party.card.name, s->peer,
                     peer ? peer : "?");
        drop_session(b, s, "another key's connection came under its routing id: its own is gone",
                     METRICS_CLOSE_STALE);
        s = NULL;
    }
    if (s == NULL && (s = open_session(b, rid, rid_len, user, peer)) == NULL)
        return;
    if (!one_part) {
        s->last_rx_ms = now_ms();
        refuse(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, "one frame per message, in one part", NULL);
        return;
    }
    handle_frame(b, s, data, len, pre);
}

/* A message taken this turn: when it is a SUBMIT of this protocol version, its envelope verified. */
static void verify_taken(broker_t *b, taken_t *t)
{
    t->pre.done = false;
    size_t len = zmq_msg_size(&t->body);
    if (!t->two || !t->one_part || (int64_t)len > b->cfg->max_message_bytes)
        return;
    Rb__Frame *f = rb__frame__unpack(NULL, len, zmq_msg_data(&t->body));
    if (f != NULL && f->body_case == RB__FRAME__BODY_SUBMIT && version_known(f))
        verify_envelope(b, f->submit->envelope.data, f->submit->envelope.len, &t->pre);
    if (f != NULL)
        rb__frame__free_unpacked(f, NULL);
}

/* Takes messages to verify until none is left; the one that finishes the last wakes the loop. */
static void verify_some(broker_t *b)
{
    uint64_t v = atomic_load(&b->claim);
    for (;;) {
        size_t count = (size_t)(v >> 20 & 0xfffff), i = (size_t)(v & 0xfffff);
        if (i >= count)
            return;
        if (!atomic_compare_exchange_weak(&b->claim, &v, v + 1))
            continue; /* v is reloaded */
        verify_taken(b, &b->taken[i]);
        if (atomic_fetch_add(&b->done, 1) + 1 == count) {
            pthread_mutex_lock(&b->lock);
            pthread_cond_signal(&b->finished);
            pthread_mutex_unlock(&b->lock);
        }
        v = atomic_load(&b->claim);
    }
}

static void *verifier_main(void *arg)
{
    broker_t *b = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->verifier_stop && b->round == seen)
            pthread_cond_wait(&b->wake, &b->lock);
        if (b->verifier_stop)
            break;
        seen = b->round;
        pthread_mutex_unlock(&b->lock);
        verify_some(b);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* Verifies the turn's submissions before they are handled in order, on both cores: the loop and the
 * verifier thread take them one at a time, and the loop waits only for one the thread has in hand. */
static void verify_ahead(broker_t *b)
{
    /* Every message of the last turn is done (below), so no take of it can succeed any more. */
    atomic_store(&b->done, 0);
    pthread_mutex_lock(&b->lock);
    b->round++;
    atomic_store(&b->claim, (b->round & 0xffffff) << 40 | (uint64_t)b->n_taken << 20);
    if (b->verifier_started && b->n_taken >= 2)
        pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    verify_some(b);
    pthread_mutex_lock(&b->lock);
    while (atomic_load(&b->done) < b->n_taken)
        pthread_cond_wait(&b->finished, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

/* At most one group commit's worth per turn: what is left waits in ZeroMQ's queue for the peer (at most
 * ZMQ_RCVHWM messages each) and then in TCP, so a flood slows its sender down instead of growing our
 * memory, and the commit, the timers and the other peers get their turn. */
static void handle_router(broker_t *b)
{
    /* Each message adds at most one submission or one CONFIRM to the group commit. */
    size_t room = MAX_PENDING - (b->n_pending > b->n_confirms ? b->n_pending : b->n_confirms);
    for (b->n_taken = 0; b->n_taken < room; b->n_taken++) {
        taken_t *t = &b->taken[b->n_taken];
        zmq_msg_init(&t->rid);
        if (zmq_msg_recv(&t->rid, b->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&t->rid);
            break;
        }
        zmq_msg_init(&t->body);
        t->two = zmq_msg_more(&t->rid) && zmq_msg_recv(&t->body, b->router, 0) >= 0;
        t->one_part = t->two && !zmq_msg_more(&t->body);
        for (bool more = t->two && !t->one_part; more;) { /* extra parts: drain them */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            more = zmq_msg_recv(&extra, b->router, 0) >= 0 && zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
    }
    verify_ahead(b);
    for (size_t i = 0; i < b->n_taken; i++) {
        taken_t *t = &b->taken[i];
        if (t->two)
            take_message(b, zmq_msg_data(&t->rid), zmq_msg_size(&t->rid), zmq_msg_gets(&t->body, "User-Id"),
                         zmq_msg_gets(&t->body, "Peer-Address"), zmq_msg_data(&t->body),
                         zmq_msg_size(&t->body), t->one_part, &t->pre);
        if (t->pre.done && t->pre.header != NULL) /* not handled as a submission after all */
            rb__header__free_unpacked(t->pre.header, NULL);
        zmq_msg_close(&t->rid);
        zmq_msg_close(&t->body);
    }
    b->n_taken = 0;
}

rb_err broker_feed(broker_t *b, const uint8_t *rid, size_t rid_len, const uint8_t *data, size_t len)
{
    session_t *s = rid_len <= RID_MAX ? find_session(b, rid, rid_len) : NULL;
    if (s == NULL)
        return RB_ERR_USAGE;
    handle_frame(b, s, data, len, NULL);
    before_sleep(b);
    return RB_OK;
}

/* Dead-letters what ran out of attempts or time, whether or not its recipient is connected. */
static void expire(broker_t *b)
{
    int64_t t = now_ms();
    uint8_t ids[64][MSG_ID_BYTES];
    int attempts[64];
    size_t n;
    if (store_expired(b->store, t, b->cfg->retry_limit, b->cfg->ttl_ms, ids, attempts, 64, &n) != RB_OK ||
        n == 0)
        return;
    if (store_begin(b->store) != RB_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        const char *why =
            attempts[i] >= b->cfg->retry_limit ? "attempt limit reached" : "time to live expired";
        char hex[33];
        wire_id_hex(ids[i], hex);
        if (store_dead(b->store, ids[i], why, t) != RB_OK ||
            event(b, NULL, ACTION_NAME(DEAD_LETTERED), ids[i], "dead", why) != RB_OK) {
            store_rollback(b->store);
            return;
        }
        bool found;
        stored_msg_t m;
        if (store_find_message(b->store, ids[i], &found, &m) != RB_OK || !found)
            m.recipient[0] = '\0';
        log_warn("dead_lettered", "adapter=%s msg=%s attempts=%d reason=%s", m.recipient, hex, attempts[i],
                 why);
    }
    if (store_commit(b->store) != RB_OK)
        store_rollback(b->store);
    else
        metrics_dead_lettered(b->metrics, n);
}

/* --- key notices ------------------------------------------------------------------------------------------- */

/* A notice of the change recorded at leaf `index`, packed into *out (malloc'd); *owner is the party whose
 * key changed, *owner_role its role; or, for a discarded message, its sender, who alone is told
 * (*owner_role -1). */
static rb_err notice_body(broker_t *b, uint64_t index, uint8_t **out, size_t *len,
                          char owner[CARD_NAME_MAX + 1], int *owner_role)
{
    uint8_t *leaf;
    size_t leaf_len;
    Rb__LedgerEvent *e = NULL;
    rb_err rc = ledger_leaf(store_ledger(b->store), index, &leaf, &leaf_len);
    if (rc == RB_OK) {
        rc = ledger_parse_leaf(leaf, leaf_len, &e);
        free(leaf);
    }
    if (rc != RB_OK)
        return rc;
    Rb__KeyNotice n = RB__KEY_NOTICE__INIT;
    n.ledger_index = index;
    uint8_t packed[CARD_PACKED_MAX];
    party_t revoked;
    if (strcmp(e->action, ACTION_NAME(KEY_ADDED)) == 0) {
        n.change = RB__KEY_NOTICE__CHANGE__CHANGE_ADDED;
        n.card = e->card;
        n.certification = e->certification;
        n.old_key_retires_ms = e->retires_ms;
    } else if (strcmp(e->action, ACTION_NAME(KEY_REVOKED)) == 0 && e->key_id.len == RB_KEY_ID_BYTES &&
               store_find_key(b->store, e->key_id.data, &revoked) == RB_OK) {
        n.change = RB__KEY_NOTICE__CHANGE__CHANGE_REVOKED;
        n.card = (ProtobufCBinaryData){card_pack(&revoked.card, packed), packed};
        n.reason = e->detail;
        n.revoked_since_ms = e->since_ms;
    } else if (strcmp(e->action, ACTION_NAME(DISCARDED)) != 0 || e->message_id.len != MSG_ID_BYTES) {
        rc = RB_ERR_MALFORMED;
    }
    snprintf(owner, CARD_NAME_MAX + 1, "%s", e->party);
    card_t changed;
    bool found = false;
    stored_msg_t m;
    if (rc == RB_OK && strcmp(e->action, ACTION_NAME(DISCARDED)) == 0) {
        n.change = RB__KEY_NOTICE__CHANGE__CHANGE_DISCARDED;
        n.message_id = e->message_id;
        n.reason = e->detail;
        n.admin = e->party;
        if ((rc = store_find_message(b->store, e->message_id.data, &found, &m)) == RB_OK && !found)
            rc = RB_ERR_MALFORMED; /* a leaf about a message never stored */
        if (found)
            snprintf(owner, CARD_NAME_MAX + 1, "%s", m.sender);
        *owner_role = -1;
    } else if (rc == RB_OK && (rc = card_unpack(&changed, n.card.data, n.card.len)) == RB_OK) {
        *owner_role = changed.role;
    }
    *len = rb__key_notice__get_packed_size(&n);
    if (rc == RB_OK && (*out = malloc(*len ? *len : 1)) == NULL)
        rc = RB_ERR_NOMEM;
    if (rc == RB_OK)
        rb__key_notice__pack(&n, *out);
    rb__ledger_event__free_unpacked(e, NULL);
    return rc;
}

typedef struct {
    broker_t *b;
    const uint8_t *body;
    size_t len;
    const char *owner;
    int owner_role;
    int sent;
} notice_run_t;

/* Seals the notice to one adapter and queues it like any submission, in the caller's transaction. */
static rb_err notice_to(void *ctx, const party_t *p)
{
    notice_run_t *r = ctx;
    /* Sources need the sinks' keys and sinks the sources'; a party of the owner's role has no use for it. A
     * disabled party gets it too, delivered once it is enabled again and before anything else (store_due).
     * A discard is told to the message's sender alone. */
    if (p->card.role == CARD_ROLE_ADMIN ||
        (r->owner_role < 0 ? strcmp(p->card.name, r->owner) != 0 : p->card.role == r->owner_role))
        return RB_OK;
    envelope_params_t params = {.kind = RB__KIND__KIND_NOTICE, .created_ms = now_ms()};
    msg_id_t id;
    uint8_t *env, sha256[RB_HASH_BYTES];
    size_t len;
    Rb__Header *h = NULL;
    uint64_t index;
    rb_err rc = envelope_seal(r->b->me, &p->card, &params, r->body, r->len, &id, &env, &len);
    if (rc != RB_OK)
        return rc;
    rbcrypto_sha256(env, len, sha256);
    rc = envelope_peek_header(env, len, &h);
    if (rc == RB_OK)
        rc = record_submission(r->b, NULL, h, env, len, sha256, &index);
    if (rc == RB_OK)
        rc = store_add_message(r->b->store, h, env, len, sha256, index, params.created_ms);
    if (h != NULL)
        rb__header__free_unpacked(h, NULL);
    free(env);
    r->sent += rc == RB_OK;
    return rc;
}

/* Tells every adapter of the other role of each key change an admin made, one notice envelope each, delivered
 * like any envelope: so that receivers trust a rotated key, and refuse a revoked one, without an operator
 * copying cards around. */
static void send_notices(broker_t *b)
{
    bool found;
    uint64_t leaf;
    while (store_next_notice(b->store, &found, &leaf) == RB_OK && found && send_notice(b, leaf) == RB_OK)
        ;
}

static rb_err send_notice(broker_t *b, uint64_t leaf)
{
    notice_run_t r = {.b = b};
    char owner[CARD_NAME_MAX + 1] = "";
    uint8_t *body = NULL;
    rb_err rc = notice_body(b, leaf, &body, &r.len, owner, &r.owner_role);
    r.body = body;
    r.owner = owner;
    if (rc == RB_OK && (rc = store_begin(b->store)) == RB_OK) {
        rc = store_each_party(b->store, notice_to, &r);
        if (rc == RB_OK)
            rc = store_notice_sent(b->store, leaf);
        if (rc == RB_OK)
            rc = store_commit(b->store);
        if (rc != RB_OK)
            store_rollback(b->store);
    }
    free(body);
    if (rc == RB_OK)
        log_info("key_notices_queued", "leaf=%llu adapter=%s recipients=%d", (unsigned long long)leaf, owner,
                 r.sent);
    else
        log_error("key_notices_failed", "leaf=%llu error=\"%s\"", (unsigned long long)leaf, rb_strerror(rc));
    return rc;
}

/* --- timers ------------------------------------------------------------------------------------------------ */

/* Deliveries every turn; the rest (dead letters, notices, metrics, heartbeats) at the timer resolution, so
 * that a busy loop's turns, a few milliseconds each, are spent on traffic. */
static void tick(broker_t *b)
{
    int64_t t = now_ms();
    bool housekeeping = t - b->housekept_ms >= TIMER_MS || t < b->housekept_ms;
    if (housekeeping) {
        b->housekept_ms = t;
        expire(b);
        close_windows(b, t, false);
        send_notices(b);
        if (t - b->keys_checked_ms >= KEY_CHECK_MS || t < b->keys_checked_ms) {
            admin_warn_keys(b->store, identity_card(b->me), b->keys_checked_ms, t, b->cfg->key_expiry_warn_ms,
                            b->cfg->key_expiry_final_warn_ms);
            b->keys_checked_ms = t;
        }
        metrics_refresh(b->metrics, b->store, t, b->cfg->ack_overdue_ms,
                        (int64_t)identity_card(b->me)->expires * 1000, is_connected, b);
    }
    checkpoint_now(b, false);
    backup_tick(b->store);
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &b->sessions[i];
        if (!s->used)
            continue;
        if (!housekeeping) {
            if (s->hello && s->credit > 0)
                deliver_to(b, s);
            continue;
        }
        if (t - s->last_rx_ms > 3 * b->cfg->heartbeat_ms) {
            drop_session(b, s, "silent for 3 heartbeat intervals", METRICS_CLOSE_SILENT);
            continue;
        }
        if (t >= s->admitted_until_ms) {
            drop_session(b, s, "its key expired or retired", METRICS_CLOSE_DISABLED);
            continue;
        }
        /* A session that has not said HELLO (its peer was forgotten as silent and spoke again) hears
         * nothing, so that the peer, hearing nothing for three intervals, says HELLO again. */
        if (s->hello && t - s->last_tx_ms >= b->cfg->heartbeat_ms) {
            Rb__Frame f = RB__FRAME__INIT;
            Rb__Heartbeat hb = RB__HEARTBEAT__INIT;
            f.body_case = RB__FRAME__BODY_HEARTBEAT;
            f.heartbeat = &hb;
            send_frame(b, s, &f);
        }
        if (s->hello && s->credit > 0)
            deliver_to(b, s);
    }
}

void broker_close(broker_t **b_p, rb_err why)
{
    broker_t *b = *b_p;
    if (b == NULL)
        return;
    close_windows(b, now_ms(), true); /* every refusal accounted for in the ledger */
    before_sleep(b);                  /* nothing received is left unanswered or unstored */
    before_sleep(b);                  /* and the refusals of the CONFIRMs answered in it */
    backup_close();
    /* A start that did not come up (a port in use) ledgers nothing: restarted every few seconds, it would
     * otherwise add a leaf each time. */
    if (b->started && why != RB_ERR_HASH_MISMATCH) {
        event_now(b, NULL, ACTION_NAME(BROKER_STOPPED), NULL, "ok", NULL);
        checkpoint_now(b, true);
    }
    metrics_stop(&b->metrics);
    if (b->verifier_started) {
        pthread_mutex_lock(&b->lock);
        b->verifier_stop = true;
        pthread_cond_signal(&b->wake);
        pthread_mutex_unlock(&b->lock);
        pthread_join(b->verifier, NULL);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->wake);
    pthread_cond_destroy(&b->finished);
    if (b->started)
        log_info("broker_stopped", "name=%s", identity_card(b->me)->name);
    zmq_close(b->router);
    zmq_close(b->zap);
    zmq_ctx_term(b->ctx);
    trust_free(&b->trust);
    free(b);
    *b_p = NULL;
}

rb_err broker_open(broker_t **out, const broker_config_t *cfg, const identity_t *me, store_t *store)
{
    *out = NULL;
    broker_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return RB_ERR_NOMEM;
    b->cfg = cfg;
    b->me = me;
    b->store = store;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->wake, NULL);
    pthread_cond_init(&b->finished, NULL);
    /* One core verifies while the other handles frames; on one core there is nothing to share. */
    b->verifier_started =
        sysconf(_SC_NPROCESSORS_ONLN) > 1 && pthread_create(&b->verifier, NULL, verifier_main, b) == 0;
    rb_err rc = reload_trust(b);
    b->ctx = zmq_ctx_new();
    b->zap = zmq_socket(b->ctx, ZMQ_REP);
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    int64_t hard_limit = cfg->max_message_bytes * 2; /* beyond this, ZeroMQ drops the connection */
    /* What may wait per peer, each way: a peer that does not read, or sends faster than we store, holds at
     * most this many messages of our memory. Out: its deliveries (credit) and room for the answers to what
     * it sends; a send beyond fails at once (ROUTER_MANDATORY, DONTWAIT) instead of blocking the loop. */
    int sndhwm = (int)cfg->credit + SEND_ROOM, rcvhwm = RECEIVE_ROOM;
    if (rc == RB_OK &&
        (b->zap == NULL || b->router == NULL || zmq_bind(b->zap, "inproc://zeromq.zap.01") != 0 ||
         zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
         zmq_setsockopt(b->router, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
         zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &hard_limit, sizeof hard_limit) != 0 ||
         zmq_setsockopt(b->router, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm) != 0 ||
         zmq_setsockopt(b->router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) != 0 ||
         wire_curve_server(b->router, me) != RB_OK))
        rc = RB_ERR_IO;
    if (rc == RB_OK && zmq_bind(b->router, cfg->listen) != 0) {
        log_error("bind_failed", "listen=%s error=%s", cfg->listen, zmq_strerror(errno));
        rc = RB_ERR_IO;
    }
    if (rc == RB_OK)
        rc = metrics_start(&b->metrics, cfg->metrics_listen);
    if (rc == RB_OK) {
        /* The endpoint actually bound: with "tcp://127.0.0.1:*" the system picks a free port. */
        size_t bound_len = sizeof b->endpoint;
        if (zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, b->endpoint, &bound_len) != 0)
            snprintf(b->endpoint, sizeof b->endpoint, "%s", cfg->listen);
        /* Every stored leaf hashed again from its bytes, against the stored tree that checkpoint_now checks
         * against the last signed checkpoint: a leaf rewritten under its nodes is caught before anything is
         * added after it. */
        uint64_t size = ledger_size(store_ledger(store)), bad;
        if ((rc = ledger_verify_leaves(store_ledger(store), size, &bad)) != RB_OK)
            log_error("ledger_inconsistent", "size=%llu leaf=%llu detail=\"%s\"", (unsigned long long)size,
                      (unsigned long long)bad,
                      rc == RB_ERR_HASH_MISMATCH
                          ? "a stored leaf does not hash to the tree its checkpoints signed: "
                            "the ledger was rewritten; refusing to run (restore a backup, "
                            "docs/OPERATIONS.md)"
                          : rb_strerror(rc));
    }
    if (rc == RB_OK) {
        char detail[300];
        snprintf(detail, sizeof detail, "listen=%s", b->endpoint);
        event_now(b, NULL, ACTION_NAME(BROKER_STARTED), NULL, "ok", detail);
        requeue_dead_notices(b);
        b->started = true;
        /* A ledger that does not extend its last checkpoint was altered: refuse to run on it. */
        rc = checkpoint_now(b, true);
        if (rc == RB_OK) {
            metrics_started(b->metrics);
            log_info("broker_started", "name=%s listen=%s ledger_size=%llu", identity_card(me)->name,
                     b->endpoint, (unsigned long long)b->checkpoint_size);
            /* Type=notify: systemd starts the adapters ordered after this unit only now, with the store
             * open and the port bound (without NOTIFY_SOCKET, as run by hand, this does nothing). */
            (void)sd_notify(0, "READY=1");
        }
    }
    if (rc != RB_OK)
        broker_close(&b, rc);
    *out = b;
    return rc;
}

const char *broker_endpoint(const broker_t *b)
{
    return b->endpoint;
}

rb_err broker_step(broker_t *b)
{
    zmq_pollitem_t items[] = {{b->router, 0, ZMQ_POLLIN, 0}, {b->zap, 0, ZMQ_POLLIN, 0}};
    long timeout = b->cfg->heartbeat_ms < TIMER_MS ? b->cfg->heartbeat_ms : TIMER_MS;
    if (zmq_poll(items, 2, timeout) < 0 && errno != EINTR)
        return RB_ERR_IO;
    if (items[1].revents & ZMQ_POLLIN)
        handle_zap(b);
    if (items[0].revents & ZMQ_POLLIN)
        handle_router(b);
    before_sleep(b);
    tick(b);
    return RB_OK;
}

rb_err broker_run(const broker_config_t *cfg, const identity_t *me, store_t *store,
                  const volatile sig_atomic_t *stop)
{
    broker_t *b;
    rb_err rc = broker_open(&b, cfg, me, store);
    while (rc == RB_OK && !*stop)
        rc = broker_step(b);
    broker_close(&b, rc);
    return rc;
}
