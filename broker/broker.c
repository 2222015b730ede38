/* broker.c -- the broker's loop (see broker.h); the rooms it calls are named in broker_loop.h.
 *
 * In the manner of redis's event loop, a turn (broker_step) is:
 *   1. zmq_poll over the ROUTER and the ZAP socket, for as long as nothing is due: until the earliest
 *      deadline of the timers (sleep_ms), at most MAX_SLEEP_MS. Only the sockets and a signal (EINTR) end
 *      the wait early; nothing else needs to, as no other thread gives the loop work (the verifier thread
 *      is waited for within the turn, metrics' thread only reads).
 *   2. The turn's work: the ZAP requests, then at most one group commit's worth of frames, each handed to
 *      the handler the table in frames.c names for it.
 *   3. before_sleep() (submit.c): every queued submission committed in one SQLite transaction, and only
 *      then their receipts sent. A receipt therefore always means "on disk", and one fsync serves a burst.
 *   4. The timers that are due (run_timers), each of which knows its next deadline: sessions' heartbeats,
 *      silence and expiry, refusal windows, key notices, key warnings and metrics, checkpoints, the backup,
 *      dead letters and deliveries (delivery.c, whose deadline is the stored messages' next one). */
#include "broker_loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "backup.h"
#include "log.h"

/* Bounds a sleep should the wall clock step back, which moves every deadline away; the key checks wake the
 * loop as often anyway. */
#define MAX_SLEEP_MS KEY_CHECK_MS

/* The timers, each when it is due: sessions' (windows, silence, expiry, heartbeats), key notices left over,
 * key expiry warnings and metrics, checkpoints, the backup's next step, then dead letters and deliveries. */
static void run_timers(broker_t *b)
{
    int64_t t = now_ms();
    b->timers_ms = t;
    sessions_tick(b, t);
    if (t >= b->notices_due_ms)
        send_notices(b);
    if (t - b->keys_checked_ms >= KEY_CHECK_MS || t < b->keys_checked_ms) {
        admin_warn_keys(b->store, identity_card(b->me), b->keys_checked_ms, t, b->cfg->key_expiry_warn_ms,
                        b->cfg->key_expiry_final_warn_ms);
        b->keys_checked_ms = t;
        /* It refreshes at most once a second by itself: here, on the key checks' second. */
        metrics_refresh(b->metrics, b->store, t, b->cfg->ack_overdue_ms,
                        (int64_t)identity_card(b->me)->expires * 1000, is_connected, b);
    }
    checkpoint_now(b, false);
    backup_tick(b->store);
    delivery_tick(b, t);
}

/* How long poll may wait: until the earliest deadline of the timers (run_timers), at most MAX_SLEEP_MS; not
 * at all while refusals the timers queued (a refusal window's summary) wait for before_sleep to record them. */
static long sleep_ms(const broker_t *b)
{
    if (b->n_refusals > 0)
        return 0;
    int64_t next = sessions_deadline(b), t = now_ms();
    int64_t others[] = {b->notices_due_ms, b->keys_checked_ms + KEY_CHECK_MS, checkpoint_deadline(b)};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (others[i] < next)
            next = others[i];
    /* A deadline the timers left behind them is work that failed (a heartbeat ZeroMQ would not take, a
     * checkpoint the store refused): tried again soon, not in a busy loop. */
    if (next <= b->timers_ms)
        next = b->timers_ms + STORE_RETRY_MS;
    /* These two say "at once" themselves when work is left: a backup under way, a full batch. */
    int64_t backup = backup_deadline();
    if (backup < next)
        next = backup;
    if (b->due_ms < next)
        next = b->due_ms;
    return next <= t ? 0 : next - t < MAX_SLEEP_MS ? (long)(next - t) : MAX_SLEEP_MS;
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
        record_action_now(b, NULL, ACTION_NAME(BROKER_STOPPED), NULL, "ok", NULL);
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
        record_action_now(b, NULL, ACTION_NAME(BROKER_STARTED), NULL, "ok", detail);
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
    /* Only a loop with nothing to read computes how long to sleep. */
    int ready = zmq_poll(items, 2, 0);
    if (ready == 0)
        ready = zmq_poll(items, 2, sleep_ms(b));
    if (ready < 0 && errno != EINTR)
        return RB_ERR_IO;
    if (items[1].revents & ZMQ_POLLIN)
        handle_zap(b);
    if (items[0].revents & ZMQ_POLLIN)
        handle_router(b);
    before_sleep(b);
    run_timers(b);
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
