/* attack_test.c -- what an attacker holding one registered key did to a real broker, each path it took
 * now closed, one test per finding of issue #18 (docs/TESTING.md, "Attacks"). The attacker is mallory-rms,
 * a registered police source; its client is raw_peer.h's: it chooses its routing id, holds hundreds of
 * connections and sends any frame. Each test prints its figures as TAP comments. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "raw_peer.h"

#include "ledger.h"
#include "pbjson.h"
#include "trust.h"

/* Fast heartbeats so that a forgotten session lingers for 3 s at most. */
#define ATTACK_CONFIG "heartbeat_ms = 1000\n"

/* A number at the top of an admin command's JSON output; fails the test when it is not there. */
static uint64_t json_number(const char *text, const char *key)
{
    json_error_t error;
    json_t *doc = json_loads(text, 0, &error), *v = json_object_get(doc, key);
    if (!json_is_integer(v))
        fail_msg("no %s in %s", key, text);
    uint64_t n = (uint64_t)json_integer_value(v);
    json_decref(doc);
    return n;
}

/* The admin's view of the ledger's size (status). */
static uint64_t ledger_size_now(harness_t *h)
{
    char *out = harness_admin(h, true, "status", NULL, 0);
    uint64_t n = json_number(out, "ledgerSize");
    free(out);
    return n;
}

/* An ERROR frame's code from s within timeout_ms (skipping other frames); -1 when none came. */
static int error_code(void *s, int timeout_ms)
{
    Rb__Frame *f = raw_expect(s, RB__FRAME__BODY_ERROR, timeout_ms);
    if (f == NULL)
        return -1;
    int code = (int)f->error->code;
    rb__frame__free_unpacked(f, NULL);
    return code;
}

/* --- 12. SUBMIT before HELLO ------------------------------------------------------------------------------ */

/* PROTOCOL.md and wire.proto say a connection starts with HELLO; a SUBMIT or CONFIRM before it is refused,
 * and the same envelope after HELLO is taken. */
static void submit_before_hello_is_refused(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    zctx = zmq_ctx_new();
    void *s = raw_peer(h, h->mallory, h->broker.box_pk, 0, 0);
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->mallory, h->other, NULL, NULL, &len, &id);
    assert_true(send_submit(s, env, len));
    assert_int_equal(error_code(s, 5000), RB__ERROR_CODE__ERROR_CODE_UNEXPECTED);
    assert_true(send_confirm(s, id.bytes));
    assert_int_equal(error_code(s, 5000), RB__ERROR_CODE__ERROR_CODE_UNEXPECTED);
    send_hello(s, 0);
    Rb__Frame *w = raw_expect(s, RB__FRAME__BODY_WELCOME, 5000);
    assert_non_null(w);
    rb__frame__free_unpacked(w, NULL);
    assert_true(send_submit(s, env, len));
    Rb__Frame *r = raw_expect(s, RB__FRAME__BODY_RECEIPT, 5000);
    assert_non_null(r);
    rb__frame__free_unpacked(r, NULL);
    free(env);
    zmq_close(s);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* --- 3. another party's session by its routing id -------------------------------------------------------- */

/* The sink connects under a routing id of its choosing and goes away; before the broker notices, mallory
 * connects with that routing id. It must not be taken for the sink: no delivery of the sink's, no CONFIRM
 * in its name; the referral waits for the real sink, which gets it. */
static void routing_id_takeover(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    zctx = zmq_ctx_new();
    void *sink = raw_peer_as(h, h->sao, h->broker.box_pk, 0, 0, "sao-connection");
    send_hello(sink, 16);
    Rb__Frame *w = raw_expect(sink, RB__FRAME__BODY_WELCOME, 5000);
    assert_non_null(w);
    rb__frame__free_unpacked(w, NULL);
    zmq_close(sink); /* gone; the broker forgets it only after three silent heartbeat intervals */
    harness_sleep_ms(200);

    void *thief = raw_peer_as(h, h->mallory, h->broker.box_pk, 0, 0, "sao-connection");
    send_hello(thief, 16);
    w = raw_expect(thief, RB__FRAME__BODY_WELCOME, 5000);
    assert_non_null(w);
    assert_string_equal(w->welcome->peer, "mallory-rms"); /* welcomed as itself, not as the sink */
    rb__frame__free_unpacked(w, NULL);

    client_t *cpd = harness_client(h, h->cpd, 0);
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(cpd, env, len);
    free(env);
    /* Whatever reaches the thief, it confirms: none of it may count. */
    int delivered = 0;
    for (int64_t end = harness_ms() + 1500; harness_ms() < end;) {
        Rb__Frame *f = raw_recv(thief, 100);
        if (f != NULL && f->body_case == RB__FRAME__BODY_DELIVER) {
            delivered++;
            msg_id_t got;
            assert_ok(envelope_peek_id(f->deliver->envelope.data, f->deliver->envelope.len, &got));
            send_confirm(thief, got.bytes);
        }
        if (f != NULL)
            rb__frame__free_unpacked(f, NULL);
    }
    char hex[33], *out;
    wire_id_hex(id.bytes, hex);
    const char *show[] = {hex};
    out = harness_admin(h, true, "message show", show, 1);
    print_message("# the thief with the sink's routing id got %d DELIVERs\n", delivered);
    assert_non_null(strstr(out, "\"state\": \"queued\""));
    assert_null(strstr(out, "\"action\": \"confirmed\""));
    free(out);
    assert_int_equal(delivered, 0);

    /* The real sink, connecting again, gets it. */
    client_t *sao = harness_client(h, h->sao, 16);
    uint8_t got[MSG_ID_BYTES];
    harness_receive(sao, 10000, got, NULL);
    assert_memory_equal(got, id.bytes, MSG_ID_BYTES);
    assert_ok(client_confirm(sao, got));
    client_close(&sao);
    client_close(&cpd);
    zmq_close(thief);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* --- 2. one key against every session slot ---------------------------------------------------------------- */

/* mallory's connections, each saying HELLO and then heartbeats from a thread of their own, as an attacker
 * keeps them busy while others try to get in. */
typedef struct {
    void *s[400];
    int n;
    bool welcomed[400], refused[400]; /* a WELCOME came; an ERROR came since the last reset */
    atomic_bool stop;
    pthread_t thread;
} hogs_t;

static void hogs_read(hogs_t *g, int i, int wait_ms)
{
    for (Rb__Frame *f; (f = raw_recv(g->s[i], wait_ms)) != NULL; wait_ms = 0) {
        g->welcomed[i] |= f->body_case == RB__FRAME__BODY_WELCOME;
        g->refused[i] |= f->body_case == RB__FRAME__BODY_ERROR;
        rb__frame__free_unpacked(f, NULL);
    }
}

static void *hogs_main(void *arg)
{
    hogs_t *g = arg;
    while (!atomic_load(&g->stop)) {
        for (int i = 0; i < g->n; i++) {
            send_heartbeat(g->s[i]);
            hogs_read(g, i, 0);
        }
        harness_sleep_ms(100);
    }
    return NULL;
}

static void raise_fd_limit(rlim_t want)
{
    struct rlimit r;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &r), 0);
    if (r.rlim_cur < want) {
        r.rlim_cur = want < r.rlim_max ? want : r.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &r), 0);
    }
}

/* A connection as who, or NULL when the broker does not welcome it within 5 s. */
static client_t *try_client(harness_t *h, const identity_t *who, uint32_t credit)
{
    client_t *c = NULL;
    char err[512];
    if (client_connect(&c, h->endpoint, who, &h->broker, credit, NULL, 5000, err, sizeof err) != RB_OK)
        print_message("# %s: %s\n", identity_card(who)->name, err);
    return c;
}

/* 400 connections under mallory's one key, each saying HELLO and sending heartbeats, took all 256 session
 * slots: nobody else, the admin included, could get a session. Now mallory holds at most sessions_per_key
 * of them (the oldest evicted first), slots are held back for admins, the others and the admin are served
 * while the attack goes on, and the admin's disable closes mallory's sessions at once. */
static void one_key_cannot_lock_everyone_out(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG "[broker]\nsessions_per_key = 4\n");
    zctx = zmq_ctx_new();
    raise_fd_limit(4096);
    hogs_t *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->n = 400;
    for (int i = 0; i < g->n; i++) {
        g->s[i] = raw_peer(h, h->mallory, h->broker.box_pk, 0, 0);
        send_hello(g->s[i], 0);
    }
    assert_int_equal(pthread_create(&g->thread, NULL, hogs_main, g), 0);
    harness_sleep_ms(4000); /* the harness's own admin connections are forgotten meanwhile */

    int64_t t0 = harness_ms();
    client_t *cpd = try_client(h, h->cpd, 0), *sao = try_client(h, h->sao, 16),
             *admin = try_client(h, h->admin, 0);
    bool delivered = false, disabled = false;
    if (cpd != NULL && sao != NULL) {
        size_t len;
        msg_id_t id;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
        client_result_t r;
        uint8_t *got;
        size_t got_len;
        uint32_t attempt;
        delivered = client_submit(cpd, env, len, 5000, &r) == RB_OK && r.accepted &&
                    client_receive(sao, 5000, &got, &got_len, &attempt) == RB_OK;
        if (delivered) {
            free(got);
            assert_ok(client_confirm(sao, id.bytes));
        }
        free(env);
    }
    double sessions = metric(h, "referral_sessions{adapter=\"mallory-rms\"}");
    if (admin != NULL) {
        const char *who[] = {"mallory-rms"};
        bool ok;
        char *out;
        disabled = client_admin(admin, h->admin, "adapter disable", who, 1, 5000, &ok, &out) == RB_OK && ok;
        free(out);
    }
    int64_t served_ms = harness_ms() - t0;
    harness_sleep_ms(1000); /* the hogs' heartbeats meet the closed sessions */
    atomic_store(&g->stop, true);
    pthread_join(g->thread, NULL);

    /* Disabled: every connection of mallory's is answered with an error, none has a session. */
    int welcomed = 0, live = 0;
    for (int i = 0; i < g->n; i++) {
        hogs_read(g, i, 0);
        welcomed += g->welcomed[i];
        g->refused[i] = false;
        send_heartbeat(g->s[i]);
    }
    harness_sleep_ms(1000);
    for (int i = 0; i < g->n; i++) {
        hogs_read(g, i, 0);
        live += !g->refused[i];
    }
    double after = metric(h, "referral_sessions{adapter=\"mallory-rms\"}");
    print_message("# %d connections under one key: %d welcomed, %.0f sessions held (cap 4); the source, the "
                  "sink and the admin %s in %lld ms; after the disable %.0f sessions, %d connections "
                  "answered without an error\n",
                  g->n, welcomed, sessions,
                  delivered && disabled ? "served (a referral delivered, mallory disabled)" : "NOT served",
                  (long long)served_ms, after, live);
    assert_true(delivered);
    assert_true(disabled);
    assert_true(sessions >= 1 && sessions <= 4);
    assert_int_equal(after, 0);
    assert_int_equal(live, 0);
    assert_true(metric(h, "referral_sessions_closed_total{reason=\"evicted\"}") >= g->n - 4);
    assert_true(metric(h, "referral_sessions_closed_total{reason=\"disabled\"}") >= 1);
    for (int i = 0; i < g->n; i++)
        zmq_close(g->s[i]);
    free(g);
    client_close(&cpd);
    client_close(&sao);
    client_close(&admin);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* --- 4. a peer writing the ledger ------------------------------------------------------------------------- */

/* Sends n frames that are no frames, as fast as back-pressure lets, draining what comes back. */
static int garbage(void *s, int n)
{
    uint8_t junk[64];
    rbcrypto_random(junk, sizeof junk);
    junk[0] = 0x0f; /* field 1 with wire type 7: never a Frame */
    int answered = 0;
    for (int i = 0; i < n; i++) {
        while (zmq_send(s, junk, sizeof junk, ZMQ_DONTWAIT) < 0) {
            assert_int_equal(errno, EAGAIN);
            for (Rb__Frame *f; (f = raw_recv(s, 1)) != NULL; answered++)
                rb__frame__free_unpacked(f, NULL);
        }
        for (Rb__Frame *f; (f = raw_recv(s, 0)) != NULL; answered++)
            rb__frame__free_unpacked(f, NULL);
    }
    for (Rb__Frame *f; (f = raw_recv(s, 500)) != NULL; answered++)
        rb__frame__free_unpacked(f, NULL);
    return answered;
}

/* Refusals of mallory's in the stopped broker's ledger: leaves, and frames they account for (a summary leaf
 * counts many). */
static void ledgered_refusals(harness_t *h, int *leaves, int64_t *frames)
{
    char path[700];
    sqlite3 *db;
    test_path(path, sizeof path, "%s/broker.db", h->data);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT leaf FROM ledger_leaves WHERE action = 'refused'", -1, &st, NULL),
        SQLITE_OK);
    *leaves = 0;
    *frames = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        Rb__LedgerEvent *e;
        assert_ok(ledger_parse_leaf(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &e));
        if (strcmp(e->party, "mallory-rms") == 0) {
            (*leaves)++;
            const char *count = strstr(e->detail, "count=");
            *frames += strcmp(e->outcome, "summary") == 0 && count != NULL ? strtoll(count + 6, NULL, 10) : 1;
        }
        rb__ledger_event__free_unpacked(e, NULL);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* A disabled party's open connection sent 100,000 garbage frames and wrote 100,000 "refused" leaves. Now
 * the disable closes its session, and what it sends after is answered without a session and without a
 * leaf; an enabled party's garbage costs at most a few leaves an interval, each summarising the rest, so
 * that every refused frame is accounted for. */
static void refusals_cannot_grow_the_ledger(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    zctx = zmq_ctx_new();
    void *s = raw_peer(h, h->mallory, h->broker.box_pk, 0, 1000);
    send_hello(s, 0);
    Rb__Frame *w = raw_expect(s, RB__FRAME__BODY_WELCOME, 5000);
    assert_non_null(w);
    rb__frame__free_unpacked(w, NULL);

    /* Enabled: 20,000 garbage frames, every one answered. */
    enum { ENABLED = 20000, DISABLED = 100000 };
    uint64_t size0 = ledger_size_now(h);
    int64_t t0 = harness_ms();
    int answered = garbage(s, ENABLED);
    int64_t took = harness_ms() - t0;
    uint64_t size1 = ledger_size_now(h);

    /* Disabled: its open connection goes on. */
    const char *who[] = {"mallory-rms"};
    free(harness_admin(h, true, "adapter disable", who, 1));
    uint64_t size2 = ledger_size_now(h);
    int64_t t1 = harness_ms();
    int answered_disabled = garbage(s, DISABLED);
    int64_t took_disabled = harness_ms() - t1;
    uint64_t size3 = ledger_size_now(h);
    double refused = metric(h, "referral_refused_frames_total{adapter=\"mallory-rms\",code=\"MALFORMED\"}");
    double disabled = metric(h, "referral_refused_frames_total{adapter=\"mallory-rms\",code=\"DISABLED\"}");
    zmq_close(s);
    zmq_ctx_term(zctx);
    harness_signal(h, SIGTERM);
    int leaves;
    int64_t frames;
    ledgered_refusals(h, &leaves, &frames);
    print_message("# enabled: %d garbage frames in %lld ms, %d answered, ledger +%llu leaves (%d refused "
                  "leaves accounting for %lld frames); disabled: %d frames in %lld ms, %d answered, ledger "
                  "+%llu leaves (the status reads included)\n",
                  ENABLED, (long long)took, answered, (unsigned long long)(size1 - size0), leaves,
                  (long long)frames, DISABLED, (long long)took_disabled, answered_disabled,
                  (unsigned long long)(size3 - size2));
    /* Answers beyond the peer's queue at the broker are dropped (the broker never blocks on a peer), so
     * what counts is the broker's own count. */
    assert_int_equal((int)refused, ENABLED);
    assert_int_equal(frames, ENABLED); /* every refused frame is in the ledger, one by one or counted */
    assert_true(leaves <= 40);
    assert_true(size1 - size0 <= 60);
    assert_true(size3 - size2 <= 10);
    assert_int_equal((int)disabled, DISABLED); /* each answered DISABLED and counted, none ledgered */
    harness_free(h);
}

/* New connections buy no leaves: the key's window counts whatever connection a refusal or a closed session
 * comes from. 100 connections under one key, one after another, each saying HELLO with credit (replacing the
 * one before) and sending 5 garbage frames, cost the ledger at most a window's leaves and its summary. */
static void cycling_connections_buy_no_leaves(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    zctx = zmq_ctx_new();
    uint64_t size0 = ledger_size_now(h);
    void *before = NULL;
    uint8_t junk[32];
    memset(junk, 0x0f, sizeof junk); /* field 1 with wire type 7: never a Frame */
    for (int i = 0; i < 100; i++) {
        void *s = raw_peer(h, h->mallory, h->broker.box_pk, 0, 0);
        send_hello(s, 1);
        for (int k = 0; k < 5; k++)
            raw_bytes(s, junk, sizeof junk);
        harness_sleep_ms(20);
        if (before != NULL)
            zmq_close(before);
        before = s;
    }
    harness_sleep_ms(500);
    uint64_t size1 = ledger_size_now(h);
    print_message(
        "# 100 connections under one key, each HELLO with credit and 5 garbage frames: ledger +%llu "
        "leaves\n",
        (unsigned long long)(size1 - size0));
    assert_true(size1 - size0 <= 20);
    zmq_close(before);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* An adapter whose session newer connections under its key evicted is told so (SESSION_CLOSED), and
 * connects again: a referral dropped after is still receipted. Before, its connection stayed refused. */
static void an_evicted_adapter_connects_again(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG "[broker]\nsessions_per_key = 2\n");
    zctx = zmq_ctx_new();
    int source = harness_adapter(h);
    harness_adapter_start(h, source, "rms-files");
    char db[800];
    test_path(db, sizeof db, "%s/adapter-%d-data/adapter.db", h->dir, source);
    int64_t deadline = harness_deadline(10000);
    while (metric(h, "referral_sessions{adapter=\"cpd-rms\"}") < 1 && harness_ms() < deadline)
        harness_sleep_ms(50);
    /* Two connections under the adapter's key: its session, the oldest, goes. */
    void *clones[2];
    for (int i = 0; i < 2; i++) {
        clones[i] = raw_peer(h, h->cpd, h->broker.box_pk, 0, 0);
        send_hello(clones[i], 0);
        Rb__Frame *w = raw_expect(clones[i], RB__FRAME__BODY_WELCOME, 5000);
        assert_non_null(w);
        rb__frame__free_unpacked(w, NULL);
    }
    assert_true(metric(h, "referral_sessions_closed_total{reason=\"evicted\"}") >= 1);
    harness_sleep_ms(3000); /* the adapter's heartbeats meet SESSION_CLOSED */
    for (int i = 0; i < 2; i++)
        zmq_close(clones[i]);
    harness_drop(h, "adapters/samples/valid/01-fatal-shooting.json", NULL);
    deadline = harness_deadline(20000);
    while (harness_db_int(db, "SELECT count(*) FROM outbox WHERE receipted_ms IS NOT NULL") < 1) {
        if (harness_ms() > deadline)
            fail_msg("the evicted adapter never had its referral receipted; see %s", h->adapters[source].log);
        harness_sleep_ms(50);
    }
    /* Told why, and not taken for a forged receipt. */
    char cmd[1800];
    test_path(cmd, sizeof cmd,
              "grep -q \"closed this connection's session\" '%s' && ! grep -q bad_receipt '%s'",
              h->adapters[source].log, h->adapters[source].log);
    assert_int_equal(system(cmd), 0);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* --- 5. sealed to a key the recipient does not hold -------------------------------------------------------- */

/* The broker receipted and queued envelopes sealed to the recipient's revoked key, or to a key it never
 * had: whoever holds that key reads them, the recipient cannot. Now each is refused with the reason, and
 * one sealed to its current key is taken; one sealed to a key before it retired is still taken. */
/* A referral from mallory, sealed to the card `to`, submitted on c: refused UNKNOWN_RECIPIENT, its reason
 * saying words. */
static void refused_saying(harness_t *h, client_t *c, const card_t *to, const char *words)
{
    client_result_t r;
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral_to(h->mallory, to, NULL, NULL, &len, &id);
    assert_ok(client_submit(c, env, len, 10000, &r));
    free(env);
    assert_false(r.accepted);
    print_message("# %s: %s\n", wire_error_name(r.code), r.reason);
    assert_int_equal(r.code, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    if (strstr(r.reason, words) == NULL)
        fail_msg("the reason does not say \"%s\": %s", words, r.reason);
}

/* A new key for old's party, certified by old, added by the admin as an operator would (key add). */
static void rotate(harness_t *h, const identity_t *old, const identity_t *next)
{
    card_cert_t cert;
    assert_ok(card_certify(identity_card(old), identity_sign_sk(old), identity_card(next), &cert));
    char card_text[CARD_TEXT_MAX + 1], cert_text[CARD_TEXT_MAX + 1];
    card_text[card_to_text(identity_card(next), card_text)] = '\0';
    cert_text[card_cert_to_text(&cert, cert_text)] = '\0';
    const char *add[] = {card_text, cert_text};
    free(harness_admin(h, true, "key add", add, 2));
}

static void sealed_to_a_key_the_recipient_does_not_hold(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG "[keys]\nrotation_overlap_ms = 1000\n");
    client_t *m = harness_client(h, h->mallory, 0);
    size_t len;
    msg_id_t id;

    /* A key other-intake never had, under its name. */
    identity_t *stranger = harness_identity("other-intake", CARD_ROLE_SINK, "ILCCSAO00");
    refused_saying(h, m, identity_card(stranger), "not a registered key of other-intake");
    /* Another party's key: addressed to other-intake, sealed to sao-intake's key. */
    card_t lent = *identity_card(h->sao);
    snprintf(lent.name, sizeof lent.name, "other-intake");
    refused_saying(h, m, &lent, "not a registered key of other-intake");

    /* other-intake rotates; an envelope sealed to its old key before it retires is taken after. */
    identity_t *rotated = harness_identity("other-intake", CARD_ROLE_SINK, "ILCCSAO00");
    size_t early_len;
    uint8_t *early = harness_referral(h->mallory, h->other, NULL, NULL, &early_len, &id);
    rotate(h, h->other, rotated);
    harness_sleep_ms(1500); /* the old key retires after the 1 s overlap */
    harness_submit_ok(m, early, early_len);
    free(early);
    refused_saying(h, m, identity_card(h->other), "retired");
    uint8_t *env = harness_referral(h->mallory, rotated, NULL, NULL, &len, &id);
    harness_submit_ok(m, env, len);
    free(env);

    /* sao-intake's key revoked as compromised (a second key first, so that it is still reachable). */
    identity_t *sao2 = harness_identity("sao-intake", CARD_ROLE_SINK, "ILCCSAO00");
    rotate(h, h->sao, sao2);
    char key_id[17];
    card_key_id_hex(identity_card(h->sao)->key_id, key_id);
    const char *revoke[] = {key_id, "compromised", "0"};
    free(harness_admin(h, true, "key revoke", revoke, 3));
    refused_saying(h, m, identity_card(h->sao), "revoked");
    env = harness_referral(h->mallory, sao2, NULL, NULL, &len, &id);
    harness_submit_ok(m, env, len);
    free(env);

    client_close(&m);
    identity_free(&stranger);
    identity_free(&rotated);
    identity_free(&sao2);
    harness_stop(&h);
}

/* --- 1. another agency's cases ---------------------------------------------------------------------------- */

/* A sample referral (adapters/samples/valid/NAME) sealed by from to the card to, with its RD number (and that
 * of what it references) set to rd, and its narrative to narrative, when not NULL. */
static uint8_t *sample_sealed(const identity_t *from, const card_t *to, const char *name, const char *rd,
                              const char *narrative, size_t *len, msg_id_t *id)
{
    char path[512], err[256];
    size_t n;
    snprintf(path, sizeof path, "adapters/samples/valid/%s", name);
    char *json = test_read_file(path, &n);
    assert_non_null(json);
    ProtobufCMessage *m;
    assert_ok(pbjson_parse(&rb__referral__descriptor, json, n, NULL, &m, err, sizeof err));
    free(json);
    Rb__Referral *r = (Rb__Referral *)m;
    Rb__Kind kind = r->references == NULL             ? RB__KIND__KIND_REFERRAL
                    : r->withdrawal_reason[0] != '\0' ? RB__KIND__KIND_WITHDRAWAL
                                                      : RB__KIND__KIND_SUPPLEMENT;
    /* Swapped in for packing only: the parsed message owns its own strings. */
    char *own_rd = r->rd_number, *own_ref = r->references ? r->references->rd_number : NULL,
         *own_narrative = r->narrative;
    if (rd != NULL) {
        r->rd_number = (char *)rd;
        if (r->references != NULL)
            r->references->rd_number = (char *)rd;
    }
    if (narrative != NULL)
        r->narrative = (char *)narrative;
    size_t body_len = protobuf_c_message_get_packed_size(m);
    uint8_t *body = malloc(body_len);
    assert_non_null(body);
    protobuf_c_message_pack(m, body);
    r->rd_number = own_rd;
    if (r->references != NULL)
        r->references->rd_number = own_ref;
    r->narrative = own_narrative;
    protobuf_c_message_free_unpacked(m, NULL);
    envelope_params_t p = {.kind = kind, .created_ms = harness_ms()};
    uint8_t *env;
    assert_ok(envelope_seal(from, to, &p, body, body_len, id, &env, len));
    free(body);
    return env;
}

/* Receives the next ACK for who and opens it with trust; confirms it. The body is the caller's. */
static Rb__AckBody *receive_ack(client_t *c, const identity_t *who, const trust_t *trust, msg_id_t *referral)
{
    uint8_t *env;
    size_t len;
    uint32_t attempt;
    if (client_receive(c, 20000, &env, &len, &attempt) != RB_OK)
        fail_msg("no ACK within 20 s");
    envelope_opened_t o;
    assert_ok(envelope_open(who, trust, env, len, &o));
    assert_int_equal(o.header->kind, RB__KIND__KIND_ACK);
    memcpy(referral->bytes, o.header->ref_message_id.data, MSG_ID_BYTES);
    assert_ok(client_confirm(c, o.header->message_id.data));
    Rb__AckBody *ack = rb__ack_body__unpack(NULL, o.body_len, o.body);
    assert_non_null(ack);
    envelope_opened_clear(&o);
    free(env);
    return ack;
}

static bool has_problem_at(const Rb__AckBody *ack, const char *path)
{
    for (size_t i = 0; i < ack->n_problems; i++)
        if (strcmp(ack->problems[i]->path, path) == 0)
            return true;
    return false;
}

/* A police source registered with another agency sent referrals whose body named the CPD: the intake filed
 * them into the CPD's case (a first referral that made the CPD's own a "duplicate" never filed, a supplement
 * that replaced its narrative, a withdrawal that closed it), and ACKed them ACCEPTED. Now the intake
 * refuses each, naming $.agencyOri; the CPD's referral is filed and answered as itself; every filing
 * records who sent it; and the CPD's own source refuses an export naming another agency. */
static void another_agency_cannot_touch_a_case(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    identity_t *evil = harness_identity("evil-rms", CARD_ROLE_SOURCE, "ILEVL0000");
    harness_register(h, evil);
    int sink = harness_adapter(h), source = harness_adapter(h);
    char path[700];
    /* The intake trusts every registered police source, the other agency's included. */
    assert_ok(card_write_file(identity_card(evil),
                              test_path(path, sizeof path, "%s/trust-sink/evil.card", h->dir), true));
    assert_ok(card_write_file(identity_card(h->mallory),
                              test_path(path, sizeof path, "%s/trust-sink/mallory.card", h->dir), true));
    harness_adapter_start(h, sink, "intake-sqlite");
    harness_adapter_start(h, source, "rms-files");
    trust_t *trust;
    assert_ok(trust_new(&trust));
    assert_ok(trust_add(trust, identity_card(h->sao)));
    client_t *attacker = harness_client(h, evil, 16);
    const card_t *sao = identity_card(h->sao);

    /* First: a referral for the CPD's RD number, before the CPD sends its own. */
    size_t len;
    msg_id_t id, answered;
    uint8_t *env = sample_sealed(evil, sao, "01-fatal-shooting.json", NULL, NULL, &len, &id);
    harness_submit_ok(attacker, env, len);
    free(env);
    Rb__AckBody *ack = receive_ack(attacker, evil, trust, &answered);
    print_message("# the other agency's referral for the CPD's case: %s, %zu problems\n",
                  ack->status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "ACCEPTED" : "REJECTED",
                  ack->n_problems);
    assert_int_equal(ack->status, RB__ACK_STATUS__ACK_STATUS_REJECTED);
    assert_true(has_problem_at(ack, "$.agencyOri"));
    rb__ack_body__free_unpacked(ack, NULL);

    char db[700];
    test_path(db, sizeof db, "%s/intake.db", h->dir);
    /* The CPD's own referral: filed as itself, not a duplicate. */
    harness_drop(h, "adapters/samples/valid/01-fatal-shooting.json", NULL);
    harness_wait_count(h, "drop/acks", ".json", 1, 30000);
    char cmd[1600];
    test_path(
        cmd, sizeof cmd,
        "grep -q ACK_STATUS_ACCEPTED '%s'/drop/acks/*.json && ! grep -q duplicate '%s'/drop/acks/*.json",
        h->dir, h->dir);
    assert_int_equal(system(cmd), 0);

    /* Another source of the CPD's own sends the same referral, byte for byte: a duplicate, answered with the
     * intake number the CPD's was filed under, and said to be one; the same revision with other content is
     * no duplicate, and is refused rather than half kept. */
    client_t *twin = harness_client(h, h->mallory, 16);
    env = sample_sealed(h->mallory, sao, "01-fatal-shooting.json", NULL, NULL, &len, &id);
    harness_submit_ok(twin, env, len);
    free(env);
    ack = receive_ack(twin, h->mallory, trust, &answered);
    char cpd_reference[64];
    snprintf(cpd_reference, sizeof cpd_reference, "%s", ack->intake_reference);
    print_message("# the same referral from another CPD source: %s, duplicate %d, intake number %s\n",
                  ack->status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "ACCEPTED" : "REJECTED",
                  ack->duplicate, ack->intake_reference);
    assert_int_equal(ack->status, RB__ACK_STATUS__ACK_STATUS_ACCEPTED);
    assert_true(ack->duplicate);
    rb__ack_body__free_unpacked(ack, NULL);
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM filings WHERE sender = 'cpd-rms' AND intake_number = '%s'", cpd_reference);
    assert_int_equal(harness_db_int(db, sql), 1); /* the CPD's own filing's number */
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM filings"), 1);
    env = sample_sealed(h->mallory, sao, "01-fatal-shooting.json", NULL,
                        "Another account under the same revision.", &len, &id);
    harness_submit_ok(twin, env, len);
    free(env);
    ack = receive_ack(twin, h->mallory, trust, &answered);
    assert_int_equal(ack->status, RB__ACK_STATUS__ACK_STATUS_REJECTED);
    assert_true(has_problem_at(ack, "$.revision"));
    rb__ack_body__free_unpacked(ack, NULL);
    client_close(&twin);

    /* Then a supplement replacing the narrative, and a withdrawal closing the case. */
    env = sample_sealed(evil, sao, "07-supplement-fatal-shooting.json", NULL, "REWRITTEN BY ANOTHER AGENCY",
                        &len, &id);
    harness_submit_ok(attacker, env, len);
    free(env);
    env = sample_sealed(evil, sao, "08-withdrawal-vehicle-stop.json", "JH512334", NULL, &len, &id);
    harness_submit_ok(attacker, env, len);
    free(env);
    for (int i = 0; i < 2; i++) {
        ack = receive_ack(attacker, evil, trust, &answered);
        assert_int_equal(ack->status, RB__ACK_STATUS__ACK_STATUS_REJECTED);
        assert_true(has_problem_at(ack, "$.agencyOri"));
        rb__ack_body__free_unpacked(ack, NULL);
    }

    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM cases"), 1);
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM cases WHERE agency = 'ILCPD0000' AND "
                                        "rd_number = 'JH512334' AND status = 'open' AND revision = 1 AND "
                                        "narrative NOT LIKE '%ANOTHER AGENCY%'"),
                     1);
    /* Every filing says who sent it: the name, agency and key id the signature was verified with. */
    char key_id[17];
    card_key_id_hex(identity_card(h->cpd)->key_id, key_id);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM filings WHERE sender = 'cpd-rms' AND sender_agency = 'ILCPD0000' AND "
             "sender_key_id = '%s'",
             key_id);
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM filings"), 1);
    assert_int_equal(harness_db_int(db, sql), 1);

    /* The CPD's source refuses an export naming another agency, before sealing anything. */
    test_path(cmd, sizeof cmd,
              "jq '.agencyOri = \"ILEVL0000\" | .rdNumber = \"JH999999\"' "
              "adapters/samples/valid/02-night-raid-south-shore.json "
              "> '%s/other.json' && mv '%s/other.json' '%s/drop/other.json'",
              h->dir, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    harness_wait_count(h, "drop/rejected", ".errors.txt", 1, 10000);
    test_path(cmd, sizeof cmd, "grep -q '^\\$.agencyOri: ' '%s/drop/rejected/other.json.errors.txt'", h->dir);
    assert_int_equal(system(cmd), 0);

    client_close(&attacker);
    trust_free(&trust);
    identity_free(&evil);
    harness_stop(&h);
}

/* --- 6. an ACK that disagrees with itself, or with what was sent ---------------------------------------- */

/* An ACK from the sink sao to the source's referral: header_status in the clear header, body_status in the
 * signed body, received as the SHA-256 of what the sink says it received. */
static void send_ack_holding(harness_t *h, client_t *sink, const msg_id_t *referral,
                             Rb__AckStatus header_status, Rb__AckStatus body_status,
                             const uint8_t received[RB_HASH_BYTES], const char *reference,
                             const char *checkpoint, Rb__ErrorCode want)
{
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    ack.status = body_status;
    ack.checkpoint = (char *)(checkpoint ? checkpoint : "");
    ack.intake_reference = (char *)reference;
    ack.received_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, (uint8_t *)received};
    ack.decided_ms = harness_ms();
    size_t body_len = rb__ack_body__get_packed_size(&ack), len;
    uint8_t *body = malloc(body_len), *env;
    assert_non_null(body);
    rb__ack_body__pack(&ack, body);
    envelope_params_t p = {
        .kind = RB__KIND__KIND_ACK, .ref = referral, .ack_status = header_status, .created_ms = harness_ms()};
    msg_id_t id;
    assert_ok(envelope_seal(h->sao, identity_card(h->cpd), &p, body, body_len, &id, &env, &len));
    free(body);
    if (want == RB__ERROR_CODE__ERROR_CODE_UNSPECIFIED)
        harness_submit_ok(sink, env, len);
    else
        harness_submit_refused(sink, env, len, want);
    free(env);
}

static void send_ack(harness_t *h, client_t *sink, const msg_id_t *referral, Rb__AckStatus header_status,
                     Rb__AckStatus body_status, const uint8_t received[RB_HASH_BYTES], const char *reference,
                     Rb__ErrorCode want)
{
    send_ack_holding(h, sink, referral, header_status, body_status, received, reference, NULL, want);
}

/* Waits until the source's inbox has processed n envelopes. */
static void wait_processed(harness_t *h, int i, int n)
{
    char db[800];
    test_path(db, sizeof db, "%s/adapter-%d-data/adapter.db", h->dir, i);
    int64_t deadline = harness_deadline(20000);
    while (harness_db_int(db, "SELECT count(*) FROM inbox WHERE state != 'received'") < n) {
        if (harness_ms() > deadline)
            fail_msg("the source processed fewer than %d envelopes in 20 s", n);
        harness_sleep_ms(50);
    }
}

/* An ACK's clear status said ACCEPTED and its signed body REJECTED: the ledger recorded one, the police
 * adapter the other. received_sha256 was never checked, and a second ACK overwrote the first. Now the source
 * refuses an ACK whose two statuses differ, one for other bytes than it sent, and one that contradicts the
 * answer on record; the broker refuses a second ACK of another status; a repeated answer changes nothing. */
static void an_ack_must_answer_what_was_sent(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    int source = harness_adapter(h);
    harness_adapter_start(h, source, "rms-files");
    client_t *sink = harness_client(h, h->sao, 16);
    harness_drop(h, "adapters/samples/valid/01-fatal-shooting.json", NULL);
    uint8_t *env;
    size_t len;
    uint32_t attempt;
    if (client_receive(sink, 20000, &env, &len, &attempt) != RB_OK)
        fail_msg("the referral was not delivered");
    msg_id_t referral;
    assert_ok(envelope_peek_id(env, len, &referral));
    assert_ok(client_confirm(sink, referral.bytes));
    uint8_t received[RB_HASH_BYTES], other[RB_HASH_BYTES];
    rbcrypto_sha256(env, len, received);
    free(env);
    memcpy(other, received, sizeof other);
    other[0] ^= 1;
    const Rb__AckStatus ACCEPTED = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                        REJECTED = RB__ACK_STATUS__ACK_STATUS_REJECTED;
    const Rb__ErrorCode TAKEN = RB__ERROR_CODE__ERROR_CODE_UNSPECIFIED;

    send_ack(h, sink, &referral, ACCEPTED, REJECTED, received, "SAO-2026-000001", TAKEN); /* two statuses */
    send_ack(h, sink, &referral, ACCEPTED, ACCEPTED, other, "SAO-2026-000001", TAKEN);    /* other bytes */
    wait_processed(h, source, 2);
    assert_int_equal(harness_count(h, "drop/acks", ".json"), 0);
    send_ack(h, sink, &referral, ACCEPTED, ACCEPTED, received, "SAO-2026-000001", TAKEN); /* the answer */
    wait_processed(h, source, 3);
    assert_int_equal(harness_count(h, "drop/acks", ".json"), 1);
    /* A second answer: another status is refused by the broker; the same status with another intake number
     * reaches the source, which keeps the first; the same answer again changes nothing. */
    send_ack(h, sink, &referral, REJECTED, REJECTED, received, "", RB__ERROR_CODE__ERROR_CODE_CONFLICT);
    send_ack(h, sink, &referral, ACCEPTED, ACCEPTED, received, "SAO-2026-000999", TAKEN);
    send_ack(h, sink, &referral, ACCEPTED, ACCEPTED, received, "SAO-2026-000001", TAKEN);
    wait_processed(h, source, 5);

    char db[800], cmd[1600];
    test_path(db, sizeof db, "%s/adapter-%d-data/adapter.db", h->dir, source);
    int64_t refused = harness_db_int(db, "SELECT count(*) FROM inbox WHERE state = 'refused'");
    print_message("# 6 ACKs for one referral: 1 refused by the broker, 3 refused by the source, 1 answer, 1 "
                  "repeat; the source refused %lld\n",
                  (long long)refused);
    assert_int_equal(refused, 3);
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM outbox WHERE ack_status = 1 AND "
                                        "intake_reference = 'SAO-2026-000001'"),
                     1);
    test_path(cmd, sizeof cmd,
              "grep -q SAO-2026-000001 '%s'/drop/acks/*.json && grep -q 'statuses\\|inner payload' '%s' && "
              "grep -q received_sha256 '%s' && grep -q 'the first (ACCEPTED SAO-2026-000001) stands' '%s'",
              h->dir, h->adapters[source].log, h->adapters[source].log, h->adapters[source].log);
    assert_int_equal(system(cmd), 0);
    /* The broker's record is the first ACK's status, whatever came after. */
    char hex[33];
    wire_id_hex(referral.bytes, hex);
    const char *show[] = {hex};
    char *out = harness_admin(h, true, "message show", show, 1);
    assert_non_null(strstr(out, "\"ackStatus\": 1"));
    free(out);
    client_close(&sink);
    harness_stop(&h);
}

/* --- 9. a forked ledger ---------------------------------------------------------------------------------- */

/* A second broker process with the first's key, on a copy of its data directory: its pid; its endpoint into
 * endpoint. */
static pid_t spawn_twin(harness_t *h, const char *data, const char *log, char *endpoint, size_t cap)
{
    char exe[700];
    test_path(exe, sizeof exe, "%s/referral-broker", h->bin);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *out = freopen(log, "a", stderr);
        (void)out;
        execl(exe, exe, "run", "--data", data, "--config", h->config, "--listen", "tcp://127.0.0.1:*",
              (char *)NULL);
        _exit(127);
    }
    for (int64_t deadline = harness_deadline(15000);;) {
        size_t len;
        char *text = test_read_file(log, &len),
             *at = text ? strstr(text, "event=broker_started name=") : NULL;
        char *l = at ? strstr(at, "listen=") : NULL;
        if (l != NULL)
            snprintf(endpoint, cap, "%.*s", (int)strcspn(l + 7, " \n"), l + 7);
        free(text);
        if (l != NULL)
            return pid;
        if (harness_ms() > deadline)
            fail_msg("the twin broker did not start; see %s", log);
        harness_sleep_ms(50);
    }
}

/* Delivers the next referral to the sink, confirms it, and gives its id and the SHA-256 of its envelope. */
static void take_referral(client_t *sink, msg_id_t *id, uint8_t sha[RB_HASH_BYTES])
{
    uint8_t *env;
    size_t len;
    uint32_t attempt;
    if (client_receive(sink, 20000, &env, &len, &attempt) != RB_OK)
        fail_msg("the referral was not delivered");
    assert_ok(envelope_peek_id(env, len, id));
    assert_ok(client_confirm(sink, id->bytes));
    rbcrypto_sha256(env, len, sha);
    free(env);
}

/* Two brokers with one key on two copies of one database, the police source on one and the intake on the
 * other: each adapter's own checkpoints were consistent, so nobody noticed. Now the intake's ACK carries
 * the checkpoint it holds, the source has the broker prove it consistent with its own, and it cannot be: the
 * alarm is in the source's status, its log and its metrics. An ACK from the same ledger raises none. */
static void a_forked_ledger_is_noticed(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    char prom[600], db[800];
    test_path(prom, sizeof prom, "%s/cpd.prom", h->dir);
    snprintf(h->adapter_settings, sizeof h->adapter_settings, "metrics_file = %.600s\n", prom);
    int source = harness_adapter(h);
    harness_adapter_start(h, source, "rms-files");
    test_path(db, sizeof db, "%s/adapter-%d-data/adapter.db", h->dir, source);

    /* The same ledger: no alarm. */
    client_t *sink = harness_client(h, h->sao, 16);
    harness_drop(h, "adapters/samples/valid/01-fatal-shooting.json", NULL);
    msg_id_t referral;
    uint8_t sha[RB_HASH_BYTES];
    take_referral(sink, &referral, sha);
    send_ack_holding(h, sink, &referral, RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                     RB__ACK_STATUS__ACK_STATUS_ACCEPTED, sha, "SAO-2026-000001", client_ledger(sink)->note,
                     RB__ERROR_CODE__ERROR_CODE_UNSPECIFIED);
    wait_processed(h, source, 1);
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM outbox WHERE ack_status = 1"), 1);
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM ledger_alarms"), 0);
    client_close(&sink);

    /* The fork: the database copied while the broker is stopped, and both started. */
    char twin_data[700], twin_log[700], twin_endpoint[256], cmd[2000];
    test_path(twin_data, sizeof twin_data, "%s/twin-data", h->dir);
    test_path(twin_log, sizeof twin_log, "%s/twin.log", h->dir);
    harness_signal(h, SIGTERM);
    test_path(cmd, sizeof cmd, "cp -a '%s' '%s'", h->data, twin_data);
    assert_int_equal(system(cmd), 0);
    harness_spawn_at(h, h->endpoint);
    pid_t twin = spawn_twin(h, twin_data, twin_log, twin_endpoint, sizeof twin_endpoint);
    /* The twin's ledger grows apart: a submission there. */
    client_t *other;
    char err[512];
    assert_ok(client_connect(&other, twin_endpoint, h->mallory, &h->broker, 0, NULL, 10000, err, sizeof err));
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->mallory, h->other, NULL, NULL, &len, &id);
    harness_submit_ok(other, env, len);
    free(env);
    client_close(&other);
    /* The intake sees the twin's ledger, the police source the first broker's. */
    client_t *sink_twin;
    assert_ok(client_connect(&sink_twin, twin_endpoint, h->sao, &h->broker, 0, NULL, 10000, err, sizeof err));
    char twin_note[NOTE_TEXT_MAX];
    snprintf(twin_note, sizeof twin_note, "%s", client_ledger(sink_twin)->note);
    client_close(&sink_twin);
    kill(twin, SIGTERM);
    waitpid(twin, NULL, 0);

    sink = harness_client(h, h->sao, 16);
    harness_drop(h, "adapters/samples/valid/02-night-raid-south-shore.json", NULL);
    take_referral(sink, &referral, sha);
    send_ack_holding(h, sink, &referral, RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                     RB__ACK_STATUS__ACK_STATUS_ACCEPTED, sha, "SAO-2026-000002", twin_note,
                     RB__ERROR_CODE__ERROR_CODE_UNSPECIFIED);
    wait_processed(h, source, 2);
    int64_t alarms = harness_db_int(db, "SELECT count(*) FROM ledger_alarms");
    print_message("# an ACK holding the twin broker's checkpoint: %lld ledger alarm(s) at the source\n",
                  (long long)alarms);
    assert_true(alarms >= 1);
    test_path(cmd, sizeof cmd,
              "'%s/referral-adapter' status --config '%s' | grep -q '\"ledgerAlarms\": [1-9].*not of one "
              "ledger' && "
              "grep -q 'event=ledger_alarm.*not of one ledger' '%s' && "
              "grep -q '^referral_adapter_ledger_alarms{adapter=\"cpd-rms\"} [1-9]' '%s'",
              h->bin, h->adapters[source].config, h->adapters[source].log, prom);
    assert_int_equal(system(cmd), 0);
    /* The answer itself stands: it is the intake's, signed. */
    assert_int_equal(harness_db_int(db, "SELECT count(*) FROM outbox WHERE ack_status = 1"), 2);
    client_close(&sink);
    harness_stop(&h);
}

/* A leaf rewritten in the database under its stored tree went unnoticed: the broker started on it. Now it
 * hashes every stored leaf again at start and refuses to run, naming the leaf. */
static void a_rewritten_leaf_stops_the_broker(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG);
    client_t *m = harness_client(h, h->mallory, 0);
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->mallory, h->other, NULL, NULL, &len, &id);
    uint64_t index = harness_submit_ok(m, env, len);
    free(env);
    client_close(&m);
    harness_signal(h, SIGTERM);

    /* The "submitted" leaf rewritten, still a well-formed leaf: another recipient in its detail. */
    char path[700];
    sqlite3 *db;
    test_path(path, sizeof path, "%s/broker.db", h->data);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT leaf FROM ledger_leaves WHERE idx = ?", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)index);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    Rb__LedgerEvent *e;
    assert_ok(ledger_parse_leaf(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &e));
    sqlite3_finalize(st);
    char *own = e->detail;
    e->detail = "kind=1 recipient=sao-intake bytes=1";
    size_t n = rb__ledger_event__get_packed_size(e);
    uint8_t *leaf = malloc(n);
    assert_non_null(leaf);
    rb__ledger_event__pack(e, leaf);
    e->detail = own;
    rb__ledger_event__free_unpacked(e, NULL);
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE ledger_leaves SET leaf = ? WHERE idx = ?", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(st, 1, leaf, (int)n, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)index);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(leaf);

    char cmd[2400];
    /* A broker that starts is stopped after 30 s (exit 124): the test then fails instead of waiting. */
    test_path(
        cmd, sizeof cmd,
        "timeout 30 '%s/referral-broker' run --data '%s' --config '%s' --listen 'tcp://127.0.0.1:*' 2>>'%s'",
        h->bin, h->data, h->config, h->log);
    int status = system(cmd);
    size_t log_len;
    char *log = test_read_file(h->log, &log_len);
    const char *line = strstr(log, "event=ledger_inconsistent");
    print_message("# a rewritten leaf %llu: the broker exited with %d: %.200s\n", (unsigned long long)index,
                  WEXITSTATUS(status), line ? line : "(no ledger_inconsistent in its log)");
    assert_int_equal(WEXITSTATUS(status), 2);
    assert_non_null(line);
    char leaf_at[64];
    snprintf(leaf_at, sizeof leaf_at, " leaf=%llu ", (unsigned long long)index);
    assert_non_null(strstr(line, leaf_at));
    free(log);
    harness_free(h);
}

int main(void)
{
    if (getenv("ATTACK_ONLY") != NULL) /* one test by name, when working on it */
        cmocka_set_test_filter(getenv("ATTACK_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(submit_before_hello_is_refused, harness_teardown),
        cmocka_unit_test_teardown(routing_id_takeover, harness_teardown),
        cmocka_unit_test_teardown(one_key_cannot_lock_everyone_out, harness_teardown),
        cmocka_unit_test_teardown(refusals_cannot_grow_the_ledger, harness_teardown),
        cmocka_unit_test_teardown(cycling_connections_buy_no_leaves, harness_teardown),
        cmocka_unit_test_teardown(an_evicted_adapter_connects_again, harness_teardown),
        cmocka_unit_test_teardown(sealed_to_a_key_the_recipient_does_not_hold, harness_teardown),
        cmocka_unit_test_teardown(another_agency_cannot_touch_a_case, harness_teardown),
        cmocka_unit_test_teardown(an_ack_must_answer_what_was_sent, harness_teardown),
        cmocka_unit_test_teardown(a_forked_ledger_is_noticed, harness_teardown),
        cmocka_unit_test_teardown(a_rewritten_leaf_stops_the_broker, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
