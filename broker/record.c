/* record.c -- what the broker writes to its ledger of its own accord: events, and the signed checkpoints
 * that cover them, and the checkpoint and consistency proof a peer is brought up to date with.
 *
 * Events are appended in the caller's transaction (record_event), so that a change and its leaf commit
 * together; record_action_now is for the few that stand alone (start, stop). */
#include "broker_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

rb_err record_event(broker_t *b, const session_t *s, Rb__LedgerEvent *e, uint64_t *index)
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

rb_err record_action(broker_t *b, const session_t *s, const char *action, const uint8_t *id,
                     const char *outcome, const char *detail)
{
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = (char *)action;
    e.message_id = (ProtobufCBinaryData){id ? MSG_ID_BYTES : 0, (uint8_t *)id};
    e.outcome = (char *)outcome;
    e.detail = (char *)(detail ? detail : "");
    return record_event(b, s, &e, NULL);
}

void record_action_now(broker_t *b, const session_t *s, const char *action, const uint8_t *id,
                       const char *outcome, const char *detail)
{
    if (store_begin(b->store) != RB_OK) {
        log_error("event_not_recorded", "action=%s", action);
        return;
    }
    if (record_action(b, s, action, id, outcome, detail) != RB_OK || store_commit(b->store) != RB_OK) {
        store_rollback(b->store);
        log_error("event_not_recorded", "action=%s", action);
    }
}

rb_err sign_checkpoint(broker_t *b, char note[NOTE_TEXT_MAX], size_t *len)
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

rb_err checkpoint_now(broker_t *b, bool force)
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
        rc = sign_checkpoint(b, note, &len);
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

int64_t checkpoint_deadline(const broker_t *b)
{
    uint64_t size = ledger_size(store_ledger(b->store));
    if (size == b->checkpoint_size)
        return INT64_MAX;
    /* Grown by checkpoint_events since (the timers after checkpoint_now may have added them): due now. */
    return size - b->checkpoint_size >= (uint64_t)b->cfg->checkpoint_events
               ? 0
               : b->checkpoint_ms + b->cfg->checkpoint_interval_ms;
}

rb_err ledger_update(broker_t *b, session_t *s, ledger_update_t *u)
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
