/* session.c -- who may speak: ZAP admits registered, admitted keys at the handshake; a session is one
 * connection of such a party, made at its first frame; what its refusals and disconnections cost the
 * ledger is accounted per key and window (WINDOW_MS); and the session timers: heartbeats, silent peers,
 * keys that expire while connected. */
#include "broker_loop.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keyfile.h"
#include "log.h"

rb_err reload_trust(broker_t *b)
{
    trust_t *fresh;
    rb_err rc = store_load_trust(b->store, &fresh);
    if (rc == RB_OK) {
        trust_free(&b->trust);
        b->trust = fresh;
    }
    return rc;
}

bool key_admitted(broker_t *b, const party_t *p)
{
    int64_t t = now_ms();
    return p->enabled && !store_key_revoked(b->store, p->card.key_id) &&
           card_valid_at(&p->card, (uint64_t)(t / 1000)) == RB_OK &&
           (p->retires_ms == 0 || t < p->retires_ms);
}

/* When an admitted key stops being admitted by the passing of time alone (its card expires, or a rotation
 * retires it). Disabling and revoking come from admin commands, which close sessions at once. */
static int64_t admitted_until(const party_t *p)
{
    int64_t expires =
        p->card.expires > (uint64_t)(INT64_MAX / 1000) ? INT64_MAX : (int64_t)p->card.expires * 1000;
    return p->retires_ms != 0 && p->retires_ms < expires ? p->retires_ms : expires;
}

static void zap_reply(void *zap, const char *request_id, const char *status, const char *text,
                      const char *user)
{
    zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(zap, request_id, strlen(request_id), ZMQ_SNDMORE);
    zmq_send(zap, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(zap, "", 0, 0);
}

void handle_zap(broker_t *b)
{
    /* version, request id, domain, address, identity, mechanism, credentials... */
    char parts[7][64];
    size_t sizes[7] = {0};
    uint8_t key[32];
    int n = 0, more = 1;
    size_t more_size = sizeof more;
    while (more) {
        char buf[64];
        int len = zmq_recv(b->zap, buf, sizeof buf, 0);
        if (len < 0)
            return;
        if (n < 7) {
            size_t keep = (size_t)len < sizeof buf ? (size_t)len : sizeof buf;
            memcpy(parts[n], buf, keep);
            sizes[n] = keep;
        }
        n++;
        zmq_getsockopt(b->zap, ZMQ_RCVMORE, &more, &more_size);
    }
    char request_id[65] = "", address[65] = "";
    memcpy(request_id, parts[1], sizes[1] < 64 ? sizes[1] : 64);
    memcpy(address, parts[3], sizes[3] < 64 ? sizes[3] : 64);
    party_t party;
    bool ok = n >= 7 && sizes[5] == 5 && memcmp(parts[5], "CURVE", 5) == 0 && sizes[6] == 32;
    if (ok) {
        memcpy(key, parts[6], 32);
        ok = store_find_party_by_curve_key(b->store, key, &party) == RB_OK && key_admitted(b, &party);
    }
    if (!ok) {
        b->refused_handshakes++;
        metrics_handshake_refused(b->metrics);
        int64_t t = now_ms();
        if (t - b->refused_logged_ms > 10000) { /* rate-limited: a scan must not flood the log */
            /* The key as referral-keys show prints it ("sealing key"), so that the operator can tell which
             * card is wrong. */
            char sealing_key[2 * RB_BOX_PK_BYTES + 1] = "none";
            if (n >= 7 && sizes[6] == 32)
                keyfile_hex((const uint8_t *)parts[6], 32, sealing_key);
            log_security("handshake_refused", "count=%lld last_peer=%s sealing_key=%s",
                         (long long)b->refused_handshakes, address, sealing_key);
            b->refused_handshakes = 0;
            b->refused_logged_ms = t;
        }
        zap_reply(b->zap, request_id, "400", "not a registered party", "");
        return;
    }
    /* The User-Id names the key, not only the party: during a rotation a party has two. */
    char user[2 * RB_BOX_PK_BYTES + 1];
    keyfile_hex(key, sizeof key, user);
    zap_reply(b->zap, request_id, "200", "OK", user);
}

bool count_sent(broker_t *b, rb_err rc)
{
    if (rc != RB_OK)
        metrics_dropped(b->metrics, errno == EAGAIN ? METRICS_DROP_PEER_FULL : METRICS_DROP_PEER_GONE);
    return rc == RB_OK;
}

void send_frame(broker_t *b, session_t *s, Rb__Frame *f)
{
    if (count_sent(b, wire_send(b->router, s->rid, s->rid_len, f)))
        s->last_tx_ms = now_ms();
}

/* A session is one connection of a registered, admitted party, found by the routing id the ROUTER gives
 * its connection, and made at the connection's first frame. The routing id alone proves nothing (a client
 * may choose its own, and take a stale one), so every frame's ZAP User-Id must be the session's key. One key
 * holds at most sessions_per_key sessions, and ADMIN_SLOTS are kept for admins. */

session_t *find_session(broker_t *b, const uint8_t *rid, size_t rid_len)
{
    for (size_t i = 0; i < MAX_SESSIONS; i++)
        if (b->sessions[i].used && b->sessions[i].rid_len == rid_len &&
            memcmp(b->sessions[i].rid, rid, rid_len) == 0)
            return &b->sessions[i];
    return NULL;
}

/* Whether a submission of this turn still points at s: a session dropped in the turn (replaced by a new
 * connection of its party) keeps its slot until the group commit has recorded and answered them as its. */
static bool pending_uses(const broker_t *b, const session_t *s)
{
    for (size_t i = 0; i < b->n_pending; i++)
        if (b->pending[i].session == s)
            return true;
    for (size_t i = 0; i < b->n_confirms; i++)
        if (b->confirms[i].session == s)
            return true;
    return false;
}

/* Queues a "refused" leaf of party (agency, peer) for the next group commit (the queue is recorded at once
 * when it is full). */
static void queue_refusal(broker_t *b, const char *party, const char *agency, const char *peer,
                          const char *code, const char *detail, const uint8_t *id, int64_t t)
{
    if (b->n_refusals == MAX_PENDING)
        flush_refusals(b);
    refusal_t *r = &b->refusals[b->n_refusals++];
    snprintf(r->party, sizeof r->party, "%s", party);
    snprintf(r->agency, sizeof r->agency, "%s", agency);
    snprintf(r->peer, sizeof r->peer, "%s", peer);
    snprintf(r->reason, sizeof r->reason, "%s", detail);
    r->code = code;
    r->has_id = id != NULL;
    if (id != NULL)
        memcpy(r->id, id, MSG_ID_BYTES);
    r->at_ms = t;
}

/* Ends an account's window: what was only counted in it goes into one "refused" leaf, outcome "summary",
 * detail "count=N window_ms=W CODE=n ... sessions_evicted=K sessions_closed=C". */
static void summarise(broker_t *b, account_t *a, int64_t t)
{
    uint64_t count = 0;
    char detail[256], *p = detail, *end = detail + sizeof detail;
    for (int c = 0; c < CODES_MAX; c++)
        count += a->counted[c];
    if (count > 0 || a->evicted > 0 || a->closed > 0) {
        p += snprintf(p, (size_t)(end - p), "count=%llu window_ms=%lld", (unsigned long long)count,
                      (long long)(t - a->window_ms));
        for (int c = 0; c < CODES_MAX && p < end; c++)
            if (a->counted[c] > 0)
                p += snprintf(p, (size_t)(end - p), " %s=%u",
                              wire_error_name((Rb__ErrorCode)c) + strlen("ERROR_CODE_"), a->counted[c]);
        if (a->evicted > 0 && p < end)
            p += snprintf(p, (size_t)(end - p), " sessions_evicted=%u", a->evicted);
        if (a->closed > 0 && p < end)
            snprintf(p, (size_t)(end - p), " sessions_closed=%u", a->closed);
        log_security("refusals_summarised", "adapter=%s peer=%s detail=\"%s\"", a->party, a->peer, detail);
        queue_refusal(b, a->party, a->agency, a->peer, "summary", detail, NULL, t);
    }
    memset(a->counted, 0, sizeof a->counted);
    a->evicted = a->closed = 0;
    a->leaves = 0;
    a->window_ms = t;
}

/* The account of a key, made at its first session; one of a key with no session left is summarised and
 * reused when every slot is taken. */
static account_t *account_for(broker_t *b, const party_t *p, const char *peer, int64_t t)
{
    account_t *free_slot = NULL, *idle = NULL;
    for (size_t i = 0; i < ACCOUNTS_MAX; i++) {
        account_t *a = &b->accounts[i];
        if (a->used && memcmp(a->key, p->card.box_pk, RB_BOX_PK_BYTES) == 0) {
            snprintf(a->peer, sizeof a->peer, "%s", peer ? peer : "?");
            return a;
        }
        if (!a->used && free_slot == NULL)
            free_slot = a;
        if (a->used && a->sessions == 0 && (idle == NULL || a->window_ms < idle->window_ms))
            idle = a;
    }
    account_t *a = free_slot;
    if (a == NULL) { /* never all taken by open sessions: there are twice as many accounts as sessions */
        a = idle;
        summarise(b, a, t);
    }
    memset(a, 0, sizeof *a);
    a->used = true;
    memcpy(a->key, p->card.box_pk, RB_BOX_PK_BYTES);
    snprintf(a->party, sizeof a->party, "%s", p->card.name);
    snprintf(a->agency, sizeof a->agency, "%s", p->card.agency);
    snprintf(a->peer, sizeof a->peer, "%s", peer ? peer : "?");
    a->window_ms = t;
    return a;
}

void close_windows(broker_t *b, int64_t t, bool final)
{
    for (size_t i = 0; i < ACCOUNTS_MAX; i++) {
        account_t *a = &b->accounts[i];
        if (!a->used || (!final && t - a->window_ms < WINDOW_MS))
            continue;
        summarise(b, a, t);
        if (a->sessions == 0)
            a->used = false;
    }
}

static void remember_evicted(broker_t *b, const session_t *s)
{
    closed_t *c = &b->closed[b->n_closed++ % CLOSED_MAX];
    c->rid_len = s->rid_len;
    memcpy(c->rid, s->rid, s->rid_len < CLOSED_RID_MAX ? s->rid_len : CLOSED_RID_MAX);
    memcpy(c->key, s->party.card.box_pk, RB_BOX_PK_BYTES);
}

/* Whether the connection with this routing id and key had its session evicted. The key is compared too,
 * so that nobody can have a routing id another party's connection will get later refused in advance. */
static bool was_evicted(const broker_t *b, const uint8_t *rid, size_t rid_len, const uint8_t *key)
{
    for (size_t i = 0; i < CLOSED_MAX; i++) { /* an entry never used has rid_len 0, which no rid has */
        const closed_t *c = &b->closed[i];
        if (c->rid_len == rid_len &&
            memcmp(c->rid, rid, rid_len < CLOSED_RID_MAX ? rid_len : CLOSED_RID_MAX) == 0 &&
            memcmp(c->key, key, RB_BOX_PK_BYTES) == 0)
            return true;
    }
    return false;
}

/* Ends a session: whatever it had in flight is due again, for its party's next connection. A
 * "disconnected" leaf records it while its key's window has leaves left; beyond, it is counted in the
 * window's summary, as an eviction always is (an attacker cycling connections must not get a leaf for
 * each). */
static void close_session(broker_t *b, session_t *s, const char *why, metrics_close_t reason, bool evicted)
{
    int64_t t = now_ms();
    account_t *a = s->account;
    bool leaf = !evicted && a->leaves < LEAVES_PER_WINDOW;
    if (evicted)
        a->evicted++;
    else if (leaf)
        a->leaves++;
    else
        a->closed++;
    if (!evicted) /* evictions are logged together (open_session) */
        log_info("peer_gone", "adapter=%s peer=%s reason=\"%s\"", s->party.card.name, s->peer, why);
    bool receiver = s->hello && s->credit > 0;
    if ((receiver || leaf) && store_begin(b->store) == RB_OK) {
        if ((receiver && store_reschedule(b->store, s->party.card.name, t) != RB_OK) ||
            (leaf && record_action(b, s, ACTION_NAME(DISCONNECTED), NULL, "ok", why) != RB_OK) ||
            store_commit(b->store) != RB_OK)
            store_rollback(b->store);
    }
    if (evicted)
        remember_evicted(b, s);
    metrics_session_closed(b->metrics, s->party.card.name, reason);
    a->sessions--;
    s->used = false;
}

void drop_session(broker_t *b, session_t *s, const char *why, metrics_close_t reason)
{
    close_session(b, s, why, reason, false);
}

void refuse_unsessioned(broker_t *b, const uint8_t *rid, size_t rid_len, const party_t *p, Rb__ErrorCode code,
                        const char *reason, const char *peer)
{
    metrics_refused(b->metrics, p->card.name, code);
    count_sent(b, wire_send_error(b->router, rid, rid_len, code, reason, NULL));
    b->unsessioned++;
    int64_t t = now_ms();
    if (t - b->unsessioned_logged_ms > 10000) {
        log_security("frames_refused_without_session", "adapter=%s last_peer=%s code=%s count=%lld",
                     p->card.name, peer ? peer : "?", wire_error_name(code), (long long)b->unsessioned);
        b->unsessioned = 0;
        b->unsessioned_logged_ms = t;
    }
}

/* A frame from a connection nobody can answer as (every slot taken, or its key unknown since ZAP). */
static void drop_unsessioned(broker_t *b, const char *peer)
{
    metrics_dropped(b->metrics, METRICS_DROP_NO_SESSION);
    int64_t t = now_ms();
    if (t - b->dropped_logged_ms > 10000) { /* rate-limited, like refused handshakes */
        log_security("frame_dropped", "reason=no_session peer=%s", peer ? peer : "?");
        b->dropped_logged_ms = t;
    }
}

/* A session for the connection with routing id rid, at its first frame; NULL when it gets none (the frame
 * is answered or counted here). */
session_t *open_session(broker_t *b, const uint8_t *rid, size_t rid_len, const char *user, const char *peer)
{
    party_t p;
    uint8_t key[RB_BOX_PK_BYTES];
    if (rid_len > RID_MAX || user == NULL || strlen(user) != 2 * RB_BOX_PK_BYTES ||
        !keyfile_unhex(user, key, sizeof key) || store_find_party_by_curve_key(b->store, key, &p) != RB_OK) {
        drop_unsessioned(b, peer);
        return NULL;
    }
    if (!key_admitted(b, &p)) {
        refuse_unsessioned(b, rid, rid_len, &p, RB__ERROR_CODE__ERROR_CODE_DISABLED,
                           "this party is disabled, or the key it connected with is revoked or retired",
                           peer);
        return NULL;
    }
    if (was_evicted(b, rid, rid_len, key)) {
        refuse_unsessioned(b, rid, rid_len, &p, RB__ERROR_CODE__ERROR_CODE_SESSION_CLOSED,
                           "session closed: a newer connection under this key took its place "
                           "(more than sessions_per_key); connect again",
                           peer);
        return NULL;
    }
    session_t *oldest = NULL;
    int same = 0, adapters = 0;
    bool room = false; /* a free slot no submission of this turn still points at */
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *o = &b->sessions[i];
        if (!o->used) {
            room |= !pending_uses(b, o);
            continue;
        }
        adapters += o->party.card.role != CARD_ROLE_ADMIN;
        if (memcmp(o->party.card.box_pk, key, sizeof key) != 0)
            continue;
        same++;
        if (oldest == NULL || o->opened_ms < oldest->opened_ms)
            oldest = o;
    }
    /* The newcomer must get the slot an eviction frees, or another: never an eviction for nothing. */
    if (same >= b->cfg->sessions_per_key && (room || !pending_uses(b, oldest))) {
        adapters -= oldest->party.card.role != CARD_ROLE_ADMIN;
        close_session(b, oldest, "evicted: a newer connection under its key", METRICS_CLOSE_EVICTED, true);
        b->evictions++;
        if (now_ms() - b->evicted_logged_ms > 10000) { /* rate-limited: one line for a burst */
            log_security("sessions_evicted", "adapter=%s count=%lld cap=%lld", p.card.name,
                         (long long)b->evictions, (long long)b->cfg->sessions_per_key);
            b->evictions = 0;
            b->evicted_logged_ms = now_ms();
        }
    }
    session_t *s = NULL;
    if (p.card.role == CARD_ROLE_ADMIN || adapters < MAX_SESSIONS - ADMIN_SLOTS)
        for (size_t i = 0; i < MAX_SESSIONS && s == NULL; i++)
            if (!b->sessions[i].used && !pending_uses(b, &b->sessions[i]))
                s = &b->sessions[i];
    if (s == NULL) {
        drop_unsessioned(b, peer);
        return NULL;
    }
    int64_t t = now_ms();
    memset(s, 0, sizeof *s);
    s->used = true;
    memcpy(s->rid, rid, rid_len);
    s->rid_len = rid_len;
    s->party = p;
    snprintf(s->user, sizeof s->user, "%s", user);
    snprintf(s->peer, sizeof s->peer, "%s", peer ? peer : "?");
    s->opened_ms = s->last_rx_ms = s->last_tx_ms = t;
    s->admitted_until_ms = admitted_until(&p);
    s->account = account_for(b, &p, peer, t);
    s->account->sessions++;
    metrics_session_opened(b->metrics, p.card.name);
    return s;
}

void revalidate_sessions(broker_t *b)
{
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &b->sessions[i];
        party_t fresh;
        if (!s->used)
            continue;
        if (store_find_party_by_curve_key(b->store, s->party.card.box_pk, &fresh) != RB_OK ||
            !key_admitted(b, &fresh)) {
            log_security("session_closed", "adapter=%s peer=%s reason=disabled_or_revoked",
                         s->party.card.name, s->peer);
            drop_session(b, s, "its party was disabled, or its key revoked, by an admin",
                         METRICS_CLOSE_DISABLED);
            continue;
        }
        s->party = fresh;
        s->admitted_until_ms = admitted_until(&fresh);
    }
}

void refuse_frame(broker_t *b, session_t *s, Rb__ErrorCode code, const char *reason, const uint8_t *id)
{
    metrics_refused(b->metrics, s->party.card.name, code);
    count_sent(b, wire_send_error(b->router, s->rid, s->rid_len, code, reason, id));
    account_t *a = s->account;
    if (a->leaves >= LEAVES_PER_WINDOW) {
        a->counted[(unsigned)code < CODES_MAX ? code : 0]++;
        return;
    }
    a->leaves++;
    char hex[33] = "";
    if (id != NULL)
        wire_id_hex(id, hex);
    log_security("frame_refused", "adapter=%s peer=%s msg=%s code=%s reason=%s", s->party.card.name, s->peer,
                 hex, wire_error_name(code), reason);
    queue_refusal(b, s->party.card.name, s->party.card.agency, s->peer, wire_error_name(code), reason, id,
                  now_ms());
}

rb_err record_refusals(broker_t *b)
{
    for (size_t i = 0; i < b->n_refusals; i++) {
        refusal_t *r = &b->refusals[i];
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        e.action = ACTION_NAME(REFUSED);
        e.party = r->party;
        e.agency = r->agency;
        e.peer = r->peer;
        e.message_id = (ProtobufCBinaryData){r->has_id ? MSG_ID_BYTES : 0, r->id};
        e.outcome = (char *)r->code;
        e.detail = r->reason;
        e.at_ms = r->at_ms;
        rb_err rc = store_event(b->store, &e, NULL);
        if (rc != RB_OK)
            return rc;
    }
    return RB_OK;
}

void flush_refusals(broker_t *b)
{
    if (b->n_refusals > 0 &&
        (store_begin(b->store) != RB_OK || record_refusals(b) != RB_OK || store_commit(b->store) != RB_OK)) {
        store_rollback(b->store);
        log_error("refusals_not_recorded", "refusals=%zu", b->n_refusals);
    }
    b->n_refusals = 0;
}

bool is_connected(void *ctx, const char *name)
{
    broker_t *b = ctx;
    for (size_t i = 0; i < MAX_SESSIONS; i++)
        if (b->sessions[i].used && b->sessions[i].hello && strcmp(b->sessions[i].party.card.name, name) == 0)
            return true;
    return false;
}

void sessions_tick(broker_t *b, int64_t t)
{
    close_windows(b, t, false);
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &b->sessions[i];
        if (!s->used)
            continue;
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
    }
}

/* The earliest of the conditions sessions_tick tests, each the first millisecond it holds. */
int64_t sessions_deadline(const broker_t *b)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < ACCOUNTS_MAX; i++)
        if (b->accounts[i].used && b->accounts[i].window_ms + WINDOW_MS < next)
            next = b->accounts[i].window_ms + WINDOW_MS;
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        const session_t *s = &b->sessions[i];
        if (!s->used)
            continue;
        int64_t silent = s->last_rx_ms + 3 * b->cfg->heartbeat_ms + 1,
                heartbeat = s->last_tx_ms + b->cfg->heartbeat_ms;
        if (silent < next)
            next = silent;
        if (s->admitted_until_ms < next)
            next = s->admitted_until_ms;
        if (s->hello && heartbeat < next)
            next = heartbeat;
    }
    return next;
}
