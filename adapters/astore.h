/* astore.h -- an adapter's own SQLite store: the outbox of envelopes it sends, the inbox of those it
 * receives.
 *
 * Outbox: an envelope is written here (sealed) before the source system is told it was taken, and stays
 * until the broker's signed receipt is stored next to it; for referrals the ACK that closes it is kept
 * too. Referrals are also indexed by their content identity (agency, RD number, revision), so the same
 * export twice is the same referral. Inbox: a delivered envelope is written here before it is CONFIRMed;
 * opening and filing happen from here, once per message id and once per content identity. */
#ifndef ASTORE_H
#define ASTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "note.h"
#include "rb_error.h"
#include "sqldb.h"

typedef struct astore astore_t;

/* The store's schema, step by step (sqldb.h): what astore_open migrates with, and what tests pin. */
extern const sqldb_schema_t astore_schema;

/* Opens (creating) the store; readonly for a status command while the adapter runs. */
rb_err astore_open(astore_t **out, const char *path, bool readonly, char *err, size_t errlen);
void astore_close(astore_t **s_p);
/* A transaction; begun inside another, a savepoint of it (committed with it, undone alone). */
rb_err astore_begin(astore_t *s);
rb_err astore_commit(astore_t *s);
void astore_rollback(astore_t *s);

/* --- outbox -------------------------------------------------------------------------------------------- */

/* Content identity of a referral: (agency ORI, RD number, revision). */
typedef struct {
    char agency[16];
    char rd_number[16];
    uint32_t revision;
} content_id_t;

/* Queues an envelope to send. content and body_sha256 (SHA-256 of the packed referral) are NULL for ACKs;
 * source names where it came from (a file name); facts are the referral's de-identified facts
 * (publish_facts), NULL for ACKs. RB_ERR_CONFLICT when a referral with this content identity is already in
 * the outbox. */
rb_err astore_outbox_add(astore_t *s, const msg_id_t *id, int kind, const uint8_t *env, size_t len,
                         const content_id_t *content, const uint8_t *body_sha256, const char *source,
                         const char *facts, int64_t now_ms);

/* A referral, supplement or withdrawal this source queued and the broker did not refuse, as publication
 * reads it: the facts kept when it was queued (NULL when queued before they were kept) and the
 * recipient's answer (ack_status 0 and acked_ms 0 while there is none). Borrowed for the callback. */
typedef struct {
    const char *agency, *rd_number;
    uint32_t revision;
    int kind;
    const char *facts;
    int64_t queued_ms;
    int ack_status;
    int64_t acked_ms;
} astore_sent_t;
/* Calls fn for each, by agency, RD number and revision, until fn returns other than RB_OK. */
rb_err astore_each_sent(astore_t *s, rb_err (*fn)(void *ctx, const astore_sent_t *sent), void *ctx);
/* The outbox referral with this content identity: *found, its message id and body hash. */
rb_err astore_outbox_find_content(astore_t *s, const content_id_t *content, bool *found, msg_id_t *id,
                                  uint8_t body_sha256[RB_HASH_BYTES]);
/* The broker refused it for good (not a transient failure): it is not submitted again. */
rb_err astore_outbox_refused(astore_t *s, const msg_id_t *id, const char *reason, int64_t now_ms);
/* The highest revision sent for (agency, RD number), 0 when none. */
rb_err astore_outbox_last_revision(astore_t *s, const char *agency, const char *rd_number,
                                   uint32_t *revision);

/* An ACK's body as signed, kept beside it (astore_outbox_body: RB_ERR_USAGE when none is kept; *body is
 * the caller's), to seal it again to its source's current key. */
rb_err astore_outbox_keep_body(astore_t *s, const msg_id_t *id, const uint8_t *body, size_t len);
rb_err astore_outbox_body(astore_t *s, const msg_id_t *id, uint8_t **body, size_t *len);
/* The broker cannot take it for now (its recipient is disabled): it waits, and is submitted again after a
 * pause that grows with each try, up to a minute. */
rb_err astore_outbox_waiting(astore_t *s, const msg_id_t *id, const char *reason, int64_t now_ms);
/* The oldest envelopes without a receipt whose next try is due at now_ms, at most max, oldest first: *n of
 * them. Each envs[i] is the caller's (free()). */
rb_err astore_outbox_unreceipted(astore_t *s, int64_t now_ms, size_t max, msg_id_t *ids, uint8_t **envs,
                                 size_t *lens, size_t *n);
/* Stores the receipt: the index of the broker's "submitted" leaf, its time and the tlog-proof. */
rb_err astore_outbox_receipted(astore_t *s, const msg_id_t *id, uint64_t ledger_index, int64_t broker_ms,
                               const char *proof, int64_t now_ms);

/* --- the broker's ledger, as the broker proved it to us ----------------------------------------------- */

/* Keeps a verified checkpoint (nothing when it is the latest one kept already). */
rb_err astore_add_checkpoint(astore_t *s, const char *note, uint64_t size, int64_t now_ms);
/* The latest checkpoint kept; *found false when none. */
rb_err astore_latest_checkpoint(astore_t *s, bool *found, char note[NOTE_TEXT_MAX]);
/* Keeps an alarm: a checkpoint that did not extend the one held (the ledger was rewritten). */
rb_err astore_add_alarm(astore_t *s, const char *reason, int64_t now_ms);
/* Keeps a key notice from the broker (a packed KeyNotice) once applied, to apply again at every start. */
rb_err astore_add_notice(astore_t *s, const uint8_t *notice, size_t len, int64_t now_ms);
rb_err astore_each_notice(astore_t *s, rb_err (*fn)(void *ctx, const uint8_t *notice, size_t len), void *ctx);
/* Records the ACK for a referral we sent: the first one only. RB_ERR_USAGE when the referral is not ours or
 * has its ACK already. */
rb_err astore_outbox_acked(astore_t *s, const msg_id_t *referral, int status, const char *intake_reference,
                           const char *ack_json, int64_t now_ms);
/* A referral we sent, as an ACK for it is checked: *found, the envelope as sent (*env the caller's, free()),
 * and the ACK recorded so far (*ack_status 0 when none, its intake reference, and *ack_json, the caller's
 * to free(), NULL when none). */
rb_err astore_outbox_answered(astore_t *s, const msg_id_t *referral, bool *found, uint8_t **env, size_t *len,
                              int *ack_status, char *intake_reference, size_t cap, char **ack_json);

/* What became of a message we sent. */
typedef struct {
    char state[16]; /* "queued", "waiting", "receipted", "accepted", "rejected", "refused" */
    int64_t queued_ms, receipted_ms, acked_ms;
    int64_t ledger_index; /* the broker's event sequence number, when receipted */
    char intake_reference[64];
    char *ack_json;    /* the ACK as JSON when there is one (malloc'd; the caller frees it) */
    char refused[256]; /* why the broker refused it */
    char waiting[256]; /* why the broker cannot take it for now (it is tried again) */
} outbox_status_t;
rb_err astore_outbox_status(astore_t *s, const msg_id_t *id, bool *found, outbox_status_t *out);

/* --- inbox ----------------------------------------------------------------------------------------------- */

/* Stores a delivered envelope (state "received"). *fresh false when it was already there (a redelivery). */
rb_err astore_inbox_add(astore_t *s, const msg_id_t *id, const uint8_t *env, size_t len, int64_t now_ms,
                        bool *fresh);
/* The oldest received envelope not yet processed. */
rb_err astore_inbox_next(astore_t *s, bool *found, msg_id_t *id, uint8_t **env, size_t *len);
/* Marks a received envelope processed: state "filed", "rejected", "ack", "notice", "refused" (not
 * openable) or "held" (sealed to a key this adapter does not hold),
 * with the content identity and intake reference when filed. */
rb_err astore_inbox_done(astore_t *s, const msg_id_t *id, const char *state, const content_id_t *content,
                         const char *intake_reference, const char *problems, int64_t now_ms);
/* Puts every "held" envelope (sealed to a key the adapter did not hold) back as received, for another try
 * with the keys configured now, and every one refused for its format version, for another try with the
 * formats this release reads (an ACK of a newer version that reached the adapter before its upgrade);
 * *count how many. */
rb_err astore_inbox_retry_held(astore_t *s, int *count);
/* The filed referral with this content identity, for idempotent filing: its intake reference, and the
 * SHA-256 of its body when kept (*has_sha256; filings before schema 5 have none). */
rb_err astore_inbox_find_filed(astore_t *s, const content_id_t *content, bool *found, char *intake_reference,
                               size_t cap, uint8_t body_sha256[RB_HASH_BYTES], bool *has_sha256);
/* A number the adapter keeps about itself (key: "broker_protocol", the highest protocol version the broker
 * spoke); 0 when none was kept. */
rb_err astore_meta_get(astore_t *s, const char *key, int64_t *value);
rb_err astore_meta_set(astore_t *s, const char *key, int64_t value);
/* Records who sent a received envelope (its verified card's name) and, for a referral, its body's SHA-256. */
rb_err astore_inbox_origin(astore_t *s, const msg_id_t *id, const char *sender,
                           const uint8_t body_sha256[RB_HASH_BYTES]);

/* --- status ------------------------------------------------------------------------------------------------ */

typedef struct {
    int queued;    /* outbox: no receipt yet (waiting included) */
    int receipted; /* outbox referrals with a receipt and no ACK */
    int accepted, rejected;
    int overdue_receipt; /* no receipt within the receipt deadline */
    int overdue_ack;     /* receipted, and no ACK within the ACK deadline of its queueing */
    int inbox_waiting;   /* received, not yet processed, or held for a key not configured yet */
    int filed, refused;
    int ledger_alarms; /* checkpoints from the broker that did not verify or did not extend ours */
    int checkpoints;   /* checkpoints kept */
    char last_alarm[256];
    int waiting;           /* outbox: no receipt, the broker cannot take them for now (tried again) */
    char waiting_for[256]; /* why the oldest of them waits */
} astore_counts_t;
rb_err astore_counts(astore_t *s, int64_t now_ms, int64_t receipt_deadline_ms, int64_t ack_deadline_ms,
                     astore_counts_t *out);
/* One message's history as text lines into out (cap bytes); *found false when unknown. */
rb_err astore_history(astore_t *s, const msg_id_t *id, char *out, size_t cap, bool *found);

#endif
