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

/* --- 5. sealed to a key the recipient does not hold -------------------------------------------------------- */

/* The broker receipted and queued envelopes sealed to the recipient's revoked key, or to a key it never
 * had: whoever holds that key reads them, the recipient cannot. Now each is refused with the reason, and
 * one sealed to its current key is taken; one sealed to a key before it retired is still taken. */
static void sealed_to_a_key_the_recipient_does_not_hold(void **state)
{
    (void)state;
    harness_t *h = harness_start(ATTACK_CONFIG "[keys]\nrotation_overlap_ms = 1000\n");
    client_t *m = harness_client(h, h->mallory, 0);
    size_t len;
    msg_id_t id;
    client_result_t r;

    /* A key other-intake never had, under its name. */
    identity_t *stranger = harness_identity("other-intake", CARD_ROLE_SINK, "ILCCSAO00");
    uint8_t *env = harness_referral(h->mallory, stranger, NULL, NULL, &len, &id);
    assert_ok(client_submit(m, env, len, 10000, &r));
    free(env);
    assert_false(r.accepted);
    print_message("# sealed to a key it never had: %s: %s\n", wire_error_name(r.code), r.reason);
    assert_int_equal(r.code, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    assert_non_null(strstr(r.reason, "not a registered key of other-intake"));
    /* Another party's key: addressed to other-intake, sealed to sao-intake's key. */
    card_t lent = *identity_card(h->sao);
    snprintf(lent.name, sizeof lent.name, "other-intake");
    env = harness_referral_to(h->mallory, &lent, NULL, NULL, &len, &id);
    assert_ok(client_submit(m, env, len, 10000, &r));
    free(env);
    assert_false(r.accepted);
    assert_int_equal(r.code, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    assert_non_null(strstr(r.reason, "not a registered key of other-intake"));

    /* other-intake rotates; an envelope sealed to its old key before it retires is taken after. */
    identity_t *rotated = harness_identity("other-intake", CARD_ROLE_SINK, "ILCCSAO00");
    uint8_t *early = harness_referral(h->mallory, h->other, NULL, NULL, &len, &id);
    size_t early_len = len;
    card_cert_t cert;
    assert_ok(
        card_certify(identity_card(h->other), identity_sign_sk(h->other), identity_card(rotated), &cert));
    char card_text[CARD_TEXT_MAX + 1], cert_text[CARD_TEXT_MAX + 1];
    card_text[card_to_text(identity_card(rotated), card_text)] = '\0';
    cert_text[card_cert_to_text(&cert, cert_text)] = '\0';
    const char *add[] = {card_text, cert_text};
    free(harness_admin(h, true, "key add", add, 2));
    harness_sleep_ms(1500); /* the old key retires after the 1 s overlap */
    harness_submit_ok(m, early, early_len);
    free(early);
    env = harness_referral(h->mallory, h->other, NULL, NULL, &len, &id);
    assert_ok(client_submit(m, env, len, 10000, &r));
    free(env);
    assert_false(r.accepted);
    print_message("# sealed to a retired key after it retired: %s: %s\n", wire_error_name(r.code), r.reason);
    assert_int_equal(r.code, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    assert_non_null(strstr(r.reason, "retired"));
    env = harness_referral(h->mallory, rotated, NULL, NULL, &len, &id);
    harness_submit_ok(m, env, len);
    free(env);

    /* sao-intake's key revoked as compromised (a second key first, so that it is still reachable). */
    identity_t *sao2 = harness_identity("sao-intake", CARD_ROLE_SINK, "ILCCSAO00");
    assert_ok(card_certify(identity_card(h->sao), identity_sign_sk(h->sao), identity_card(sao2), &cert));
    card_text[card_to_text(identity_card(sao2), card_text)] = '\0';
    cert_text[card_cert_to_text(&cert, cert_text)] = '\0';
    free(harness_admin(h, true, "key add", add, 2));
    char key_id[17];
    card_key_id_hex(identity_card(h->sao)->key_id, key_id);
    const char *revoke[] = {key_id, "compromised", "0"};
    free(harness_admin(h, true, "key revoke", revoke, 3));
    env = harness_referral(h->mallory, h->sao, NULL, NULL, &len, &id);
    assert_ok(client_submit(m, env, len, 10000, &r));
    free(env);
    assert_false(r.accepted);
    print_message("# sealed to a revoked key: %s: %s\n", wire_error_name(r.code), r.reason);
    assert_int_equal(r.code, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    assert_non_null(strstr(r.reason, "revoked"));
    env = harness_referral(h->mallory, sao2, NULL, NULL, &len, &id);
    harness_submit_ok(m, env, len);
    free(env);

    client_close(&m);
    identity_free(&stranger);
    identity_free(&rotated);
    identity_free(&sao2);
    harness_stop(&h);
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
        cmocka_unit_test_teardown(sealed_to_a_key_the_recipient_does_not_hold, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
