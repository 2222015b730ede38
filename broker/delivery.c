/* delivery.c -- the whole retry rule: what is delivered to whom, when it is due again, and when it is dead.
 *
 * Delivery state lives in the database, not in memory: a message stays "queued" until its recipient
 * CONFIRMs it, and each DELIVER pushes its next attempt time out by the backoff (backoff_ms). A message
 * that runs out of attempts or outlives its time to live is dead-lettered. Whatever the broker was doing
 * when it was killed, a restart finds every unconfirmed message due again. A session that closes makes
 * what it had in flight due again at once (session.c, close_session). */
#include "broker_loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "rbcrypto.h"

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

/* Records the next deliveries due to s at t and commits, and only then sends them: a DELIVER the broker could
 * not record (a full disk) would be CONFIRMed and ACKed by a sink for a message the broker holds as never
 * delivered, and the ACK refused. */
static void deliver_to(broker_t *b, session_t *s, int64_t t)
{
    int in_flight;
    rb_err rc = store_in_flight(b->store, s->party.card.name, t, &in_flight);
    due_msg_t due[64];
    int attempts[64];
    size_t n = 0, recorded = 0,
           room = rc == RB_OK && in_flight < s->credit ? (size_t)(s->credit - in_flight) : 0;
    if (rc == RB_OK && room > 0)
        rc = store_due(b->store, s->party.card.name, t, due, room < 64 ? room : 64, &n);
    b->store_failed |= rc != RB_OK;
    if (n == 0)
        return;
    b->deliveries_left |= n == 64; /* a batch full: more may be due now */
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
            record_event(b, s, &e, NULL) != RB_OK) {
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
        recorded = 0;
    }
    b->store_failed |= recorded < n;
    if (recorded == 0)
        goto done;
    const char *dropped = NULL;
    for (size_t i = 0; i < recorded && dropped == NULL; i++) {
        due_msg_t *d = &due[i];
        Rb__Frame f = RB__FRAME__INIT;
        Rb__Deliver del = RB__DELIVER__INIT;
        del.envelope = (ProtobufCBinaryData){d->len, d->envelope};
        del.attempt = (uint32_t)attempts[i];
        f.body_case = RB__FRAME__BODY_DELIVER;
        f.deliver = &del;
        rc = wire_send(b->router, s->rid, s->rid_len, &f);
        bool full = rc != RB_OK && errno == EAGAIN;
        if (!count_sent(b, rc)) {
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
    b->store_failed |= recorded < n; /* what could not be recorded is still due */
    for (size_t i = 0; i < n; i++)
        free(due[i].envelope);
}

/* Dead-letters what ran out of attempts or time at t, whether or not its recipient is connected. False when
 * the store failed, and nothing was. */
static bool dead_letter_expired(broker_t *b, int64_t t)
{
    uint8_t ids[64][MSG_ID_BYTES];
    int attempts[64];
    size_t n;
    if (store_expired(b->store, t, b->cfg->retry_limit, b->cfg->ttl_ms, ids, attempts, 64, &n) != RB_OK)
        return false;
    if (n == 0)
        return true;
    b->deliveries_left |= n == 64; /* a batch full: more may be due now */
    if (store_begin(b->store) != RB_OK)
        return false;
    for (size_t i = 0; i < n; i++) {
        const char *why =
            attempts[i] >= b->cfg->retry_limit ? "attempt limit reached" : "time to live expired";
        char hex[33];
        wire_id_hex(ids[i], hex);
        if (store_dead(b->store, ids[i], why, t) != RB_OK ||
            record_action(b, NULL, ACTION_NAME(DEAD_LETTERED), ids[i], "dead", why) != RB_OK) {
            store_rollback(b->store);
            return false;
        }
        bool found;
        stored_msg_t m;
        if (store_find_message(b->store, ids[i], &found, &m) != RB_OK || !found)
            m.recipient[0] = '\0';
        log_warn("dead_lettered", "adapter=%s msg=%s attempts=%d reason=%s", m.recipient, hex, attempts[i],
                 why);
    }
    if (store_commit(b->store) != RB_OK) {
        store_rollback(b->store);
        return false;
    }
    metrics_dead_lettered(b->metrics, n);
    return true;
}

void delivery_tick(broker_t *b, int64_t t)
{
    b->deliveries_left = b->store_failed = false;
    if ((t >= b->due_ms || t < b->delivered_ms) && !dead_letter_expired(b, t)) /* or the clock stepped back */
        b->store_failed = true;
    int64_t next = INT64_MAX, at;
    /* Whatever was due at t to a session with credit has gone; what is left for it comes due after t. The
     * rest waits for what only a frame brings (a CONFIRM's credit, a HELLO), and frames wake the loop. */
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &b->sessions[i];
        if (!s->used || !s->hello || s->credit <= 0)
            continue;
        deliver_to(b, s, t);
        if (!s->used) /* dropped: its connection is gone */
            continue;
        if (store_next_attempt(b->store, s->party.card.name, t, &at) != RB_OK)
            b->store_failed = true;
        else if (at < next)
            next = at;
    }
    /* After the deliveries: one whose send failed on its last attempt is due for a dead letter now. */
    if (store_next_expiry(b->store, b->cfg->retry_limit, b->cfg->ttl_ms, &at) != RB_OK)
        b->store_failed = true;
    else if (at < next)
        next = at;
    b->delivered_ms = t;
    /* A failing store is tried again soon, not in a busy loop, even when a full batch left more to do. */
    if (b->store_failed || next <= t) /* next <= t: a dead letter not recorded yet */
        b->due_ms = t + STORE_RETRY_MS;
    else if (b->deliveries_left)
        b->due_ms = t;
    else
        b->due_ms = next;
}
