/* submit.c -- submissions and CONFIRMs, and the group commit that stores them.
 *
 * A SUBMIT is checked (signature, sender, recipient, duplicates, ACK rules) and queued; a CONFIRM is queued.
 * before_sleep then commits the turn's refusals, CONFIRMs, submissions and one checkpoint in one SQLite
 * transaction and only then sends the receipts: a receipt always means "on disk", and one fsync serves a
 * whole burst. */
#include "broker_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rbcrypto.h"

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
void send_receipt(broker_t *b, session_t *s, uint64_t index)
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

void handle_submit(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre)
{
    const Rb__Submit *sub = f->submit;
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
        refuse_frame(b, s, error_for(rc), rb_strerror(rc),
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
                refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_STORAGE, "busy: retry", id);
            return;
        }
    } else if (store_find_party(b->store, h->recipient, &recipient) != RB_OK ||
               recipient.card.role != (h->kind == RB__KIND__KIND_ACK ? CARD_ROLE_SOURCE : CARD_ROLE_SINK)) {
        code = RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT;
        snprintf(why, sizeof why, "recipient is not a registered adapter of the right role");
    } else if (!sealed_to_recipient(b, h, why, sizeof why)) {
        code = RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT;
    } else if (!recipient.enabled) {
        /* Said only of an envelope sealed for it (a made-up one learns nothing of who is disabled). Not for
         * good: an admin enables it again (docs/OPERATIONS.md), and the sender keeps what it sent until then. A
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
        refuse_frame(b, s, code, why, id);
        rb__header__free_unpacked(h, NULL);
        return;
    }
    pending_t *p = &b->pending[b->n_pending];
    if ((p->envelope = malloc(len)) == NULL) {
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_STORAGE, "out of memory", id);
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

rb_err record_submission(broker_t *b, const session_t *s, const Rb__Header *h, const uint8_t *envelope,
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
    rb_err rc = record_event(b, s, &e, index);
    if (rc == RB_OK && h->kind == RB__KIND__KIND_ACK) {
        e.action = ACTION_NAME(ACKED);
        e.message_id = h->ref_message_id;
        e.outcome = h->ack_status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "accepted" : "rejected";
        e.envelope_sha256 = (ProtobufCBinaryData){0, NULL};
        rc = record_event(b, s, &e, NULL);
    }
    rb__envelope__free_unpacked(env, NULL);
    return rc;
}

void handle_confirm(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre)
{
    (void)pre;
    const Rb__Confirm *c = f->confirm;
    if (c->message_id.len != MSG_ID_BYTES) {
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, "CONFIRM needs a 16-byte message id", NULL);
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
            q->rc = record_action(b, q->session, ACTION_NAME(CONFIRMED), q->id, "ok", NULL);
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
        refuse_frame(b, q->session, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE,
                     "no such delivery to this party", q->id);
    }
}

void before_sleep(broker_t *b)
{
    if (b->n_pending == 0 && b->n_refusals == 0 && b->n_confirms == 0)
        return;
    int64_t t = now_ms();
    /* Zeroed for the analyzer: a repeat (same_as) reads its first's, which is always set. */
    uint64_t indexes[MAX_PENDING] = {0};
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
        rc = sign_checkpoint(b, note, &note_len);
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
            count_sent(b, wire_send_error(b->router, p->session->rid, p->session->rid_len,
                                          RB__ERROR_CODE__ERROR_CODE_STORAGE, why,
                                          first->header->message_id.data));
        }
    }
    clear_pending(b);
}
