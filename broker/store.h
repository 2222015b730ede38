/* store.h -- the broker's durable state in one SQLite database (WAL, synchronous=FULL).
 *
 * Parties (adapters and admins, with their cards), revoked keys, messages with their delivery state, and
 * the audit ledger (ledger.h), every event of which is written in the transaction of the change it records. Writes happen inside store_begin/store_commit so that the
 * broker can commit many submissions with one fsync (group commit) and answer none before the commit.
 * The schema version is PRAGMA user_version; store_open migrates older databases and refuses newer ones. */
#ifndef STORE_H
#define STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "envelope.h"
#include "ledger.h"
#include "rb_error.h"
#include "trust.h"

typedef struct store store_t;

#define STORE_SCHEMA_VERSION 2

/* Opens (creating if create) the database at path. On failure *out is NULL and err names the cause
 * (locked by another process, newer schema, not a database). */
rb_err store_open(store_t **out, const char *path, bool create, char *err, size_t errlen);
void store_close(store_t **store_p);

rb_err store_begin(store_t *s);
rb_err store_commit(store_t *s);
void store_rollback(store_t *s);

/* One registered party. */
typedef struct {
    int64_t id;   /* row id */
    card_t card;  /* its card: name, role, agency, keys */
    bool enabled; /* disabled parties are refused at the handshake and frame by frame */
} party_t;

/* Registers a party from its card, and ledgers it ("party_registered" with the card); RB_ERR_CONFLICT
 * when the name or key is taken. */
rb_err store_add_party(store_t *s, const card_t *card, int64_t now_ms);
rb_err store_set_enabled(store_t *s, const char *name, bool enabled);
/* The party with this name, or with this CURVE (X25519) public key. RB_ERR_UNKNOWN_SENDER when none. */
rb_err store_find_party(store_t *s, const char *name, party_t *out);
rb_err store_find_party_by_curve_key(store_t *s, const uint8_t key[RB_BOX_PK_BYTES], party_t *out);
/* Every party, for listing: calls fn for each; stops at the first non-OK result and returns it. */
rb_err store_each_party(store_t *s, rb_err (*fn)(void *ctx, const party_t *p), void *ctx);

rb_err store_revoke_key(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], const char *reason,
                        int64_t now_ms);
bool store_key_revoked(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES]);
/* A trust store of every registered card, revoked keys marked. *out is the caller's. */
rb_err store_load_trust(store_t *s, trust_t **out);

/* Appends an audit event (CJIS-style: when, who, from where, what, on which message, outcome) to the
 * ledger in the current transaction; *index (may be NULL) receives its leaf index. */
rb_err store_event(store_t *s, Rb__LedgerEvent *e, uint64_t *index);
/* Ledgers a card ("party_registered"): store_add_party does; init does for the broker's own card. */
rb_err store_record_card(store_t *s, const card_t *card, const char *detail, int64_t now_ms);
/* The ledger in this database: for checkpoints and proofs. */
ledger_t *store_ledger(store_t *s);
/* The connection itself, borrowed: the online backup (backup.h) must copy through it, since the broker holds
 * the database's only lock. */
sqlite3 *store_db(store_t *s);

/* A stored message's state. */
typedef struct {
    uint8_t envelope_sha256[RB_HASH_BYTES];
    uint64_t submit_index; /* ledger index of its "submitted" event */
    int64_t received_ms;
    char recipient[CARD_NAME_MAX + 1];
    char sender[CARD_NAME_MAX + 1];
    int attempts;
    char state[16]; /* "queued", "confirmed", "dead" */
} stored_msg_t;

/* Looks a message up by id: *found says whether it exists, and *out holds it when it does. */
rb_err store_find_message(store_t *s, const uint8_t id[MSG_ID_BYTES], bool *found, stored_msg_t *out);

/* Stores a verified envelope as queued for delivery now. */
rb_err store_add_message(store_t *s, const Rb__Header *h, const uint8_t *env, size_t len,
                         const uint8_t sha256[RB_HASH_BYTES], uint64_t submit_index, int64_t now_ms);

/* A message due for delivery. envelope is the caller's (free()). */
typedef struct {
    uint8_t message_id[MSG_ID_BYTES];
    uint8_t *envelope;
    size_t len;
    int attempts; /* before this one */
    int64_t received_ms;
} due_msg_t;

/* Up to max messages for recipient due at now_ms, oldest first, skipping any whose case key has an
 * earlier message still undelivered. *n receives how many. */
rb_err store_due(store_t *s, const char *recipient, int64_t now_ms, due_msg_t *out, size_t max, size_t *n);
/* Messages delivered to recipient and not yet confirmed nor due again. */
rb_err store_in_flight(store_t *s, const char *recipient, int64_t now_ms, int *count);
/* Records an attempt: attempts + 1, next try at next_ms. */
rb_err store_attempted(store_t *s, const uint8_t id[MSG_ID_BYTES], int64_t next_ms);
/* Marks confirmed; RB_ERR_USAGE when the message is not one queued for recipient. */
rb_err store_confirmed(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *recipient, int64_t now_ms);
rb_err store_dead(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *reason, int64_t now_ms);
/* A dead letter queued again, as new (attempts from 0), and ledgered ("requeued"); RB_ERR_USAGE when the
 * message is not a dead letter. */
rb_err store_requeue(store_t *s, const uint8_t id[MSG_ID_BYTES], int64_t now_ms);
/* Up to max queued messages whose time is up at now_ms: attempts reached limit and the last one went
 * unconfirmed, or received before now_ms - ttl_ms. Their ids go to out, *n how many. */
rb_err store_expired(store_t *s, int64_t now_ms, int64_t limit, int64_t ttl_ms, uint8_t (*out)[MSG_ID_BYTES],
                     int *attempts, size_t max, size_t *n);
/* Records an ACK on the referral it answers. */
rb_err store_acked(store_t *s, const uint8_t referral_id[MSG_ID_BYTES], int ack_status,
                   const uint8_t ack_id[MSG_ID_BYTES], int64_t now_ms);
/* Makes every message of recipient that was delivered but not confirmed due again now (peer gone). */
rb_err store_reschedule(store_t *s, const char *recipient, int64_t now_ms);

/* Counts for status: queued (never delivered), in flight, awaiting ack (confirmed referrals without an
 * ACK) and its oldest age, dead letters. */
typedef struct {
    int queued, in_flight, awaiting_ack, dead;
    int64_t oldest_awaiting_ms;
} party_counts_t;
rb_err store_counts(store_t *s, const char *name, int64_t now_ms, party_counts_t *out);

/* Admin replay protection: RB_ERR_CONFLICT when the nonce was seen. */
rb_err store_use_nonce(store_t *s, const uint8_t *nonce, size_t len, int64_t now_ms);

#endif
