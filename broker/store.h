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
#include "sqldb.h"
#include "trust.h"

typedef struct store store_t;

#define STORE_SCHEMA_VERSION 6
/* The database's schema, step by step (sqldb.h): what store_open migrates with, and what tests pin. */
extern const sqldb_schema_t store_schema;

/* Opens (creating if create) the database at path. On failure *out is NULL and err names the cause
 * (locked by another process, newer schema, not a database). */
rb_err store_open(store_t **out, const char *path, bool create, char *err, size_t errlen);
void store_close(store_t **store_p);

rb_err store_begin(store_t *s);
rb_err store_commit(store_t *s);
void store_rollback(store_t *s);
/* A step inside a transaction that can be undone alone (SQLite savepoints, one open at a time): what it
 * appended to the ledger leaves the in-memory tree too when it is undone. */
rb_err store_step_begin(store_t *s);
rb_err store_step_end(store_t *s);
void store_step_undo(store_t *s);

/* One registered party, with one of its keys (a party has several during a key rotation). */
typedef struct {
    int64_t id;         /* row id */
    card_t card;        /* the card of that key: name, role, agency, keys */
    bool enabled;       /* disabled parties are refused at the handshake and frame by frame */
    int64_t retires_ms; /* 0, or when a rotation ends this key's validity (Unix ms) */
} party_t;

/* Registers a party from its card, and ledgers it ("party_registered" with the card); RB_ERR_CONFLICT
 * when the name or key is taken. */
rb_err store_add_party(store_t *s, const card_t *card, int64_t now_ms);
/* Adds a rotated key to its party, certified by cert (which the caller checked against the old key), ends
 * the old key's validity at retires_ms (unless already earlier), and ledgers it ("key_added" with card
 * and certification) at *leaf. RB_ERR_CONFLICT when the key is registered already. */
rb_err store_add_key(store_t *s, const card_t *card, const card_cert_t *cert, int64_t retires_ms,
                     int64_t now_ms, uint64_t *leaf);
rb_err store_set_enabled(store_t *s, const char *name, bool enabled);
/* The party with this name (with its newest key), with this CURVE (X25519) public key, or with this
 * signing key id (with that key). RB_ERR_UNKNOWN_SENDER when none. */
rb_err store_find_party(store_t *s, const char *name, party_t *out);
rb_err store_find_party_by_curve_key(store_t *s, const uint8_t key[RB_BOX_PK_BYTES], party_t *out);
rb_err store_find_key(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], party_t *out);
/* Every party once with its newest key (for listing), or every key: calls fn for each; stops at the first
 * non-OK result and returns it. */
rb_err store_each_party(store_t *s, rb_err (*fn)(void *ctx, const party_t *p), void *ctx);
rb_err store_each_key(store_t *s, rb_err (*fn)(void *ctx, const party_t *p), void *ctx);

/* Revokes a registered key for what it signed from since_ms on, and ledgers it ("key_revoked") at *leaf
 * (may be NULL). RB_ERR_UNKNOWN_SENDER when no party has the key. */
rb_err store_revoke_key(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], const char *reason,
                        int64_t since_ms, int64_t now_ms, uint64_t *leaf);
bool store_key_revoked(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES]);
/* A trust store of every registered key, retirements and revocations marked. *out is the caller's. */
rb_err store_load_trust(store_t *s, trust_t **out);
/* Admin keys that can still sign commands: enabled, valid now, not retired, not revoked. */
rb_err store_count_admin_keys(store_t *s, int64_t now_ms, int *count);

/* Key notices the broker owes the adapters: the leaf of each "key_added" or "key_revoked" to announce. */
rb_err store_add_notice(store_t *s, uint64_t leaf);
rb_err store_next_notice(store_t *s, bool *found, uint64_t *leaf);
rb_err store_notice_sent(store_t *s, uint64_t leaf);

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
    uint8_t message_id[MSG_ID_BYTES];
    uint8_t envelope_sha256[RB_HASH_BYTES];
    uint8_t sender_key_id[RB_KEY_ID_BYTES];
    uint64_t submit_index; /* ledger index of its "submitted" event */
    int64_t received_ms, confirmed_ms, acked_ms;
    char recipient[CARD_NAME_MAX + 1];
    char sender[CARD_NAME_MAX + 1];
    int kind, attempts, ack_status;
    char state[16];   /* "queued", "confirmed", "dead", "quarantined", "discarded" */
    char reason[160]; /* why dead, quarantined or discarded */
    size_t envelope_bytes;
} stored_msg_t;

/* Looks a message up by id: *found says whether it exists, and *out holds it when it does. */
rb_err store_find_message(store_t *s, const uint8_t id[MSG_ID_BYTES], bool *found, stored_msg_t *out);
/* Every message in a state, oldest first. */
rb_err store_each_message(store_t *s, const char *state, rb_err (*fn)(void *ctx, const stored_msg_t *m),
                          void *ctx);
/* The index of every ledger leaf about a message, in order. */
rb_err store_message_leaves(store_t *s, const uint8_t id[MSG_ID_BYTES],
                            rb_err (*fn)(void *ctx, uint64_t leaf), void *ctx);

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
rb_err store_in_flight(store_t *s, const char *recipient, int64_t now_ms, int *n);
/* Records an attempt: attempts + 1, next try at next_ms; a key notice at its limit-th attempt or later waits
 * instead for its party's next HELLO (store_reschedule). */
rb_err store_attempted(store_t *s, const uint8_t id[MSG_ID_BYTES], int64_t next_ms, int64_t limit);
/* Marks confirmed; RB_ERR_USAGE when the message is not one queued for recipient. */
rb_err store_confirmed(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *recipient, int64_t now_ms);
rb_err store_dead(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *reason, int64_t now_ms);
/* A dead letter ("dead") or a quarantined message queued again, as new (attempts from 0, a new time to
 * live), and ledgered ("requeued" or "released"); RB_ERR_USAGE when the message is not in from_state. */
rb_err store_requeue(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *from_state, const card_t *by,
                     int64_t now_ms);
/* A dead letter or quarantined message given up for good: its envelope is deleted, and the decision
 * ledgered ("discarded" with the reason); RB_ERR_USAGE when the message is not in from_state. */
rb_err store_discard(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *from_state, const char *reason,
                     const card_t *by, int64_t now_ms);
/* Key notices an earlier release dead-lettered (before protocol 3 a notice could expire), queued again and
 * ledgered ("requeued", by the broker's own card), at most 256 a call: *count says how many. */
rb_err store_requeue_dead_notices(store_t *s, const card_t *by, int64_t now_ms, int *count);
/* Holds every queued message signed with key_id and received from since_ms on ("quarantined"), for an
 * admin to release or discard; *count receives how many. */
rb_err store_quarantine(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], int64_t since_ms,
                        const char *reason, const card_t *by, int64_t now_ms, int *count);
/* Up to max queued messages whose time is up at now_ms: attempts reached limit and the last one went
 * unconfirmed, or queued (received, or requeued) before now_ms - ttl_ms. Their ids go to out, *n how many.
 * Never a key notice: a recipient that has not confirmed one would file what a revoked key signed. */
rb_err store_expired(store_t *s, int64_t now_ms, int64_t limit, int64_t ttl_ms, uint8_t (*out)[MSG_ID_BYTES],
                     int *attempts, size_t max, size_t *n);
/* When store_expired next has work: the next attempt of the earliest message out of attempts (limit), or
 * the end of the oldest time to live; INT64_MAX when neither. Both read an index: cheap every loop turn. */
rb_err store_next_expiry(store_t *s, int64_t limit, int64_t ttl_ms, int64_t *at_ms);
/* When the next queued message to recipient falls due after after_ms (its next_attempt_ms, store_due);
 * INT64_MAX when none will. */
rb_err store_next_attempt(store_t *s, const char *recipient, int64_t after_ms, int64_t *at_ms);
/* Records an ACK on the referral it answers, unless it has one already (the first stands). */
rb_err store_acked(store_t *s, const uint8_t referral_id[MSG_ID_BYTES], int ack_status,
                   const uint8_t ack_id[MSG_ID_BYTES], int64_t now_ms);
/* Makes every message of recipient that was delivered but not confirmed due again now (peer gone). */
rb_err store_reschedule(store_t *s, const char *recipient, int64_t now_ms);

/* Counts for status: to the party, queued (waiting for a delivery: never delivered, or due again) and in
 * flight (delivered, not confirmed, not yet due again), which between them are every queued message;
 * awaiting ack (confirmed referrals without an ACK) and its oldest age, overdue (awaiting ack and confirmed
 * at least ack_overdue_ms ago; none when ack_overdue_ms is 0), dead letters; from it, quarantined and
 * received in the last minute; and when its keys stop (store_keys_end). */
typedef struct {
    int queued, in_flight, awaiting_ack, dead, quarantined, receipts_last_minute;
    int64_t oldest_awaiting_ms;
    int overdue;
    int64_t keys_end_ms; /* 0: no key left that is not revoked */
} party_counts_t;
/* When the last of a party's keys stops being valid (Unix ms): the latest end among its keys not revoked,
 * each key's end being its card's expiry or, earlier, the end of a rotation's overlap; 0 when none.
 * *added_ms (may be NULL): when that key was registered. */
rb_err store_keys_end(store_t *s, const char *name, int64_t *end_ms, int64_t *added_ms);
rb_err store_counts(store_t *s, const char *name, int64_t now_ms, int64_t ack_overdue_ms,
                    party_counts_t *out);

/* Admin replay protection: RB_ERR_CONFLICT when the nonce was seen. */
rb_err store_use_nonce(store_t *s, const uint8_t *nonce, size_t len, int64_t now_ms);

#endif
