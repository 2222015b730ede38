/* broker.c -- the broker's loop (see broker.h); the rooms it calls are named in broker_loop.h.
 *
 * In the manner of redis's event loop: zmq_poll over the ROUTER and the ZAP socket for at most TIMER_MS,
 * then the turn's work (the ZAP requests, at most one group commit's worth of frames, each handed to the
 * handler of its frame), then before_sleep() (submit.c) commits every queued submission in one SQLite
 * transaction and only then sends their receipts, then the timers: dead letters, key notices, metrics,
 * checkpoints, heartbeats, silent peers and deliveries. */
#include "broker_loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "backup.h"
#include "log.h"

#define TIMER_MS 50 /* the timers' resolution: heartbeats, dead letters, metrics */

/* Deliveries every turn; the rest (dead letters, notices, metrics, heartbeats) at the timer resolution, so
 * that a busy loop's turns, a few milliseconds each, are spent on traffic. */
static void tick(broker_t *b)
{
    int64_t t = now_ms();
    bool housekeeping = t - b->housekept_ms >= TIMER_MS || t < b->housekept_ms;
    if (housekeeping) {
        b->housekept_ms = t;
        dead_letter_expired(b);
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
        record_action_now(b, NULL, "broker_stopped", NULL, "ok", NULL);
        checkpoint_now(b, true);
    }
    metrics_stop(&b->metrics);
    verifier_stop(b);
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
    verifier_start(b);
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
        record_action_now(b, NULL, "broker_started", NULL, "ok", detail);
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

rb_err broker_feed(broker_t *b, const uint8_t *rid, size_t rid_len, const uint8_t *data, size_t len)
{
    session_t *s = rid_len <= RID_MAX ? find_session(b, rid, rid_len) : NULL;
    if (s == NULL)
        return RB_ERR_USAGE;
    handle_frame(b, s, data, len, NULL);
    before_sleep(b);
    return RB_OK;
}
