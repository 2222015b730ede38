/* broker_loop.h -- what the broker's files share: its state, and the calls one room makes into another.
 *
 * Private to broker/: broker.h is the broker's interface. The loop (broker.c) owns a broker_t and runs one
 * turn at a time; every other file is one of its rooms and is only ever called from the loop's thread,
 * except verifier.c's thread, which reads the turn's messages and the trust store and nothing else. */
#ifndef BROKER_LOOP_H
#define BROKER_LOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <zmq.h>

#include "broker.h"
#include "ledger.h"
#include "metrics.h"
#include "wire.h"

#define MAX_SESSIONS 256
#define ADMIN_SLOTS  16  /* session slots no adapter may take: one key cannot lock the admin out */
#define MAX_PENDING  256 /* submissions committed together at most */
#define RID_MAX      256
#define KEY_CHECK_MS 1000 /* how often keys are checked against the expiry warnings (as cheap as a refresh) */
/* Work the store failed, or that a turn left for the next (a full batch of dead letters), is tried again after
 * this long: soon, but never a busy loop on a failing disk. */
#define STORE_RETRY_MS 50
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
    int64_t delivered_ms;          /* when delivery_tick last ran */
    int64_t due_ms;                /* when a stored message next falls due, for a delivery or a dead letter */
    bool deliveries_left;          /* a batch of deliveries or dead letters came full: more are due now */
    bool store_failed;             /* a delivery or a dead letter could not be recorded this turn */
    int64_t notices_due_ms;   /* when key notices may wait to be sent: an admin command ran, or one failed */
    int64_t timers_ms;        /* when the timers last ran */
    char endpoint[256];       /* where the ROUTER is bound */
    uint64_t checkpoint_size; /* the latest committed checkpoint: its size, when, and the note itself, */
    int64_t checkpoint_ms;    /* kept so that receipts and WELCOMEs need not read it back */
    char checkpoint_note[NOTE_TEXT_MAX];
    metrics_t *metrics;      /* the Prometheus endpoint's registry; NULL when off */
    int64_t keys_checked_ms; /* the end of the last interval checked for keys nearing expiry (0: none yet) */
};

/* The latest checkpoint, and a proof of its consistency with what the session holds. */
typedef struct {
    Rb__LedgerUpdate update;
    merkle_hash_t hashes[PROOF_HASHES_MAX];
    ProtobufCBinaryData proof[PROOF_HASHES_MAX];
} ledger_update_t;

static inline int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- record.c: what the broker writes to its ledger of its own accord ----------------------------------- */

/* Fills in when and who (from the session; NULL for the broker itself) and appends e to the ledger in
 * the current transaction. */
rb_err record_event(broker_t *b, const session_t *s, Rb__LedgerEvent *e, uint64_t *index);
/* record_event for an event of an action, a message id (or NULL), an outcome and a detail (or NULL). */
rb_err record_action(broker_t *b, const session_t *s, const char *action, const uint8_t *id,
                     const char *outcome, const char *detail);
/* Records an event in a transaction of its own (outside the group commit). */
void record_action_now(broker_t *b, const session_t *s, const char *action, const uint8_t *id,
                       const char *outcome, const char *detail);
/* Signs a checkpoint of the ledger as it is, in the current transaction (nothing when the latest one
 * already covers every event). note receives the latest checkpoint. */
rb_err sign_checkpoint(broker_t *b, char note[NOTE_TEXT_MAX], size_t *len);
/* A checkpoint in a transaction of its own: every checkpoint_events events or checkpoint_interval_ms,
 * whichever comes first, or when force (start and stop). */
rb_err checkpoint_now(broker_t *b, bool force);
/* When checkpoint_now signs one for the time alone (checkpoint_interval_ms); INT64_MAX when all is signed. */
int64_t checkpoint_deadline(const broker_t *b);
/* The latest checkpoint and its consistency with what s holds, in u (which borrows from b). */
rb_err ledger_update(broker_t *b, session_t *s, ledger_update_t *u);

/* --- session.c: ZAP, sessions, and what their refusals cost the ledger ---------------------------------- */

rb_err reload_trust(broker_t *b);
/* Whether a party's key may connect and speak now: enabled, not revoked, valid, not retired. */
bool key_admitted(broker_t *b, const party_t *p);
/* Answers one ZAP request waiting on b->zap. */
void handle_zap(broker_t *b);
/* Counts a frame ZeroMQ would not take for a peer (errno from the send says why); false then. */
bool count_sent(broker_t *b, rb_err rc);
void send_frame(broker_t *b, session_t *s, Rb__Frame *f);
session_t *find_session(broker_t *b, const uint8_t *rid, size_t rid_len);
/* The session of the connection with routing id rid, made at its first frame; NULL when it gets none (the
 * frame is answered or counted there). */
session_t *open_session(broker_t *b, const uint8_t *rid, size_t rid_len, const char *user, const char *peer);
/* Ends a session: what it had in flight is due again for its party's next connection. */
void drop_session(broker_t *b, session_t *s, const char *why, metrics_close_t reason);
/* Answers a frame from a connection that has no session and gets none (its party disabled, its session
 * evicted): an ERROR and a count, never a leaf, and a log line at most every ten seconds. */
void refuse_unsessioned(broker_t *b, const uint8_t *rid, size_t rid_len, const party_t *p, Rb__ErrorCode code,
                        const char *reason, const char *peer);
/* After an admin command changed parties or keys: a session whose party is now disabled, or whose key is
 * revoked or retired, is closed at once (the frames its connection sends from then on are answered without
 * a session); the others take their party's new state (a retirement set by a rotation). */
void revalidate_sessions(broker_t *b);
/* Answers a frame with ERROR and counts it; the refusal gets a ledger leaf of its own, or, past
 * LEAVES_PER_WINDOW of its key's window, a count in the window's summary leaf. */
void refuse_frame(broker_t *b, session_t *s, Rb__ErrorCode code, const char *reason, const uint8_t *id);
/* Records the refusals of this turn in the current transaction. */
rb_err record_refusals(broker_t *b);
/* Records the queued refusals in a transaction of their own, and empties the queue. */
void flush_refusals(broker_t *b);
/* The session timers at t: ended windows summarised, silent and expired sessions closed, heartbeats sent. */
void sessions_tick(broker_t *b, int64_t t);
/* When sessions_tick next has work. */
int64_t sessions_deadline(const broker_t *b);
/* Whether a party has a session that said HELLO (admin_connected_fn; ctx is the broker). */
bool is_connected(void *ctx, const char *name);
/* The accounts' windows: each that has ended is summarised; one with no session and nothing counted is
 * forgotten. At stop (final), every one is summarised. */
void close_windows(broker_t *b, int64_t t, bool final);

/* --- submit.c: submissions, CONFIRMs and the group commit --------------------------------------------- */

/* The handlers of SUBMIT and CONFIRM (frames.c's table): each queues its frame for the group commit, or
 * refuses it. pre: a SUBMIT's envelope verified ahead (verify_ahead), or NULL to verify it here. */
void handle_submit(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre);
void handle_confirm(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre);
/* Ledgers a submission: "submitted" with the sender's signed header, and for an ACK also "acked" on the
 * referral it answers, with the same header. s is the submitting session, NULL for the broker's own
 * notices. */
rb_err record_submission(broker_t *b, const session_t *s, const Rb__Header *h, const uint8_t *envelope,
                         size_t len, const uint8_t sha256[RB_HASH_BYTES], uint64_t *index);
/* Commits this turn's refusals, CONFIRMs, every pending submission and one checkpoint covering them in one
 * transaction, then answers each submission with its receipt. */
void before_sleep(broker_t *b);

/* --- delivery.c: deliveries, retries with backoff, dead letters ---------------------------------------- */

/* The stored timers at t: dead-letters what is due to be (when something fell due), delivers what is due to
 * every session that said HELLO with credit, and sets b->due_ms, when something stored next falls due. */
void delivery_tick(broker_t *b, int64_t t);

/* --- notices.c: key notices --------------------------------------------------------------------------- */

/* Tells every adapter of the other role of each key change an admin made, one notice envelope each, delivered
 * like any envelope: so that receivers trust a rotated key, and refuse a revoked one, without an operator
 * copying cards around. */
void send_notices(broker_t *b);
/* At start, after broker_started: what an earlier release let expire must reach its adapter, or it would
 * not refuse what a revoked key signed (issue #19). */
void requeue_dead_notices(broker_t *b);

/* --- verifier.c: the verifier thread ------------------------------------------------------------------ */

/* Starts the thread when there is a second core to run it (b->verifier_started says whether it did). */
void verifier_start(broker_t *b);
/* Stops and joins the thread, if it started. */
void verifier_stop(broker_t *b);
/* The part of a submission that needs nothing but the trust store: the header's signature, and the hash. */
void verify_envelope(const broker_t *b, const uint8_t *env, size_t len, verified_t *out);
/* Verifies the turn's submissions before they are handled in order, on both cores: the loop and the
 * verifier thread take them one at a time, and the loop waits only for one the thread has in hand. */
void verify_ahead(broker_t *b);

/* --- frames.c: from a message on the ROUTER to the handler of its frame ------------------------------- */

/* Takes one message from the ROUTER: a frame from the connection with routing id rid, whose session is
 * made at its first message (user and peer are the ZAP User-Id and the peer address). */
void take_message(broker_t *b, const uint8_t *rid, size_t rid_len, const char *user, const char *peer,
                  const uint8_t *data, size_t len, bool one_part, verified_t *pre);
/* pre: a SUBMIT's envelope verified ahead (verify_ahead), or NULL. */
void handle_frame(broker_t *b, session_t *s, const uint8_t *data, size_t len, verified_t *pre);
/* Whether the broker speaks the frame's version, and its body came with it or before. */
bool version_known(const Rb__Frame *f);

#endif
