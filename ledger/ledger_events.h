/* ledger_events.h -- every ledger action, once: its name as the leaves spell it, who may cause it, which
 * signature it carries, and the move it makes in a message's state machine.
 *
 * The emitters take the names from here, so a misspelling does not compile; `referral-audit verify` refuses
 * a leaf whose action is not here; store.c and the replay in audit.c make the same transitions from the same
 * rows, so the broker and an auditor cannot disagree on what may happen to a message. Adding an event is one
 * row of LEDGER_ACTIONS and the code that emits it. docs/LEDGER.md §2 and §8 give the rules in prose. */
#ifndef LEDGER_EVENTS_H
#define LEDGER_EVENTS_H

#include <stdbool.h>

/* A message's states, as messages.state spells them. */
#define MESSAGE_STATES(X)                                                                                    \
    X(QUEUED, "queued")                                                                                      \
    X(CONFIRMED, "confirmed")                                                                                \
    X(DEAD, "dead")                                                                                          \
    X(QUARANTINED, "quarantined")                                                                            \
    X(DISCARDED, "discarded")

#define LEDGER_STATE_ENUM(id, name) STATE_##id,
typedef enum {
    MESSAGE_STATES(LEDGER_STATE_ENUM) STATE_COUNT,
    STATE_SAME /* a "to" that leaves the state as it was */
} msg_state_t;
#undef LEDGER_STATE_ENUM

/* Who may cause an event. */
enum {
    BY_INIT = 1,      /* referral-broker init */
    BY_BROKER = 2,    /* the broker on its own: its loop, its timers, its key notices */
    BY_ADAPTER = 4,   /* a frame from an adapter's session */
    BY_ADMIN = 8,     /* a signed admin command, in the transaction of its admin leaf */
    BY_OPERATOR = 16, /* a tool run on the broker's host */
};

/* The signature a leaf carries, which verify checks. */
typedef enum {
    SIGNED_NONE,
    SIGNED_CARD,   /* card: its own self-signature */
    SIGNED_CERT,   /* card, certification: the new card's self-signature and the old key's certification */
    SIGNED_SENDER, /* header, header_signature: the envelope's sender over the header */
    SIGNED_ADMIN,  /* admin_command, admin_signature: the admin over the command (outcome ok only) */
} ledger_signature_t;

/* States an event may happen in: FROM(QUEUED) | FROM(DEAD); FROM_NEW, about a message not yet submitted. */
#define FROM(state) (1u << STATE_##state)
#define FROM_NEW    (1u << STATE_COUNT)
#define FROM_ANY    (FROM_NEW - 1)

/* Further rules. */
enum {
    AFTER_ADMIN = 1,    /* right after an admin leaf with outcome ok (registrations: once init is over) */
    AFTER_DELIVERY = 2, /* the message was delivered at least once since it was last queued */
    COUNTS_ATTEMPT = 4, /* one more delivery attempt */
    NEW_ATTEMPTS = 8,   /* attempts from 0 */
};

/* X(ID, name, by, signature, from (0: not about a message's state), to, rules) */
#define LEDGER_ACTIONS(X)                                                                                    \
    X(PARTY_REGISTERED, "party_registered", BY_INIT | BY_ADMIN, SIGNED_CARD, 0, STATE_SAME, AFTER_ADMIN)     \
    X(BROKER_STARTED, "broker_started", BY_BROKER, SIGNED_NONE, 0, STATE_SAME, 0)                            \
    X(BROKER_STOPPED, "broker_stopped", BY_BROKER, SIGNED_NONE, 0, STATE_SAME, 0)                            \
    X(SUBMITTED, "submitted", BY_ADAPTER | BY_BROKER, SIGNED_SENDER, FROM_NEW, STATE_QUEUED, NEW_ATTEMPTS)   \
    X(ACKED, "acked", BY_ADAPTER, SIGNED_SENDER, FROM_ANY, STATE_SAME, AFTER_DELIVERY)                       \
    X(REFUSED, "refused", BY_ADAPTER, SIGNED_NONE, 0, STATE_SAME, 0)                                         \
    X(DELIVERED, "delivered", BY_BROKER, SIGNED_NONE, FROM(QUEUED), STATE_SAME, COUNTS_ATTEMPT)              \
    X(CONFIRMED, "confirmed", BY_ADAPTER, SIGNED_NONE, FROM(QUEUED), STATE_CONFIRMED, AFTER_DELIVERY)        \
    X(DEAD_LETTERED, "dead_lettered", BY_BROKER, SIGNED_NONE, FROM(QUEUED), STATE_DEAD, 0)                   \
    X(REQUEUED, "requeued", BY_ADMIN | BY_BROKER, SIGNED_NONE, FROM(DEAD), STATE_QUEUED, NEW_ATTEMPTS)       \
    X(DISCONNECTED, "disconnected", BY_ADAPTER | BY_BROKER, SIGNED_NONE, 0, STATE_SAME, 0)                   \
    X(ADMIN, "admin", BY_ADMIN, SIGNED_ADMIN, 0, STATE_SAME, 0)                                              \
    X(KEY_REVOKED, "key_revoked", BY_ADMIN, SIGNED_NONE, 0, STATE_SAME, AFTER_ADMIN)                         \
    X(LEDGER_READ, "ledger_read", BY_OPERATOR, SIGNED_NONE, 0, STATE_SAME, 0)                                \
    X(KEY_ADDED, "key_added", BY_ADMIN, SIGNED_CERT, 0, STATE_SAME, AFTER_ADMIN)                             \
    X(QUARANTINED, "quarantined", BY_ADMIN, SIGNED_NONE, FROM(QUEUED), STATE_QUARANTINED, 0)                 \
    X(RELEASED, "released", BY_ADMIN, SIGNED_NONE, FROM(QUARANTINED), STATE_QUEUED, NEW_ATTEMPTS)            \
    X(DISCARDED, "discarded", BY_ADMIN, SIGNED_NONE, FROM(DEAD) | FROM(QUARANTINED), STATE_DISCARDED, 0)

#define LEDGER_ACTION_ENUM(id, name, by, signature, from, to, rules) ACTION_##id,
typedef enum { LEDGER_ACTIONS(LEDGER_ACTION_ENUM) ACTION_COUNT } ledger_action_t;
#undef LEDGER_ACTION_ENUM

typedef struct {
    char *name;                   /* as in LedgerEvent.action (whose type is char *) */
    unsigned by;                  /* BY_*: who may cause it */
    ledger_signature_t signature; /* what verify checks a signature of */
    unsigned from;                /* FROM_*: the states it may happen in; 0: it is not about one */
    msg_state_t to;               /* the state it leaves the message in */
    unsigned rules;               /* AFTER_*, COUNTS_ATTEMPT, NEW_ATTEMPTS */
} ledger_action_row_t;

extern const ledger_action_row_t ledger_actions[ACTION_COUNT];
extern const char *const message_states[STATE_COUNT];

/* The name an emitter writes: ACTION_NAME(SUBMITTED) is "submitted". */
#define ACTION_NAME(id) (ledger_actions[ACTION_##id].name)
#define STATE_NAME(id)  (message_states[STATE_##id])

/* The action of this name; ACTION_COUNT when there is none (a leaf no broker writes). */
ledger_action_t ledger_action_of(const char *name);
/* The state of this name; STATE_COUNT when there is none. */
msg_state_t message_state_of(const char *name);
/* Whether action a may happen to a message in state from. */
bool ledger_moves(ledger_action_t a, msg_state_t from);
/* The first state action a may happen in: for most, the only one. */
msg_state_t ledger_from(ledger_action_t a);
/* The action that moves a message from one state to another; ACTION_COUNT when none does. */
ledger_action_t ledger_transition(msg_state_t from, msg_state_t to);

#endif
