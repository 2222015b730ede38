/* notices.c -- key notices: each key an admin adds or revokes, and each message an admin discards, is told
 * to the adapters that must know, as an envelope the broker seals and queues like any submission. */
#include "broker_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rbcrypto.h"

void requeue_dead_notices(broker_t *b)
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

void send_notices(broker_t *b)
{
    bool found = false;
    uint64_t leaf;
    rb_err rc;
    while ((rc = store_next_notice(b->store, &found, &leaf)) == RB_OK && found &&
           send_notice(b, leaf) == RB_OK)
        ;
    b->notices_due_ms = rc != RB_OK || found ? now_ms() + STORE_RETRY_MS : INT64_MAX;
}
