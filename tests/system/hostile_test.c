/* hostile_test.c -- a real broker under hostile and malformed input: a registered party sending thousands
 * of bad frames, clients that fail the CURVE handshake, a peer that never reads, and a flood of
 * submissions, each while well-behaved clients keep working. What is checked, and the figures of a run,
 * are in docs/TESTING.md ("Hostile input"); the test prints its figures as TAP comments. */
#include "raw_peer.h"

/* Small frames so that oversized ones are cheap to send: TOO_BIG above 64 KiB, and above 128 KiB ZeroMQ
 * drops the connection (ZMQ_MAXMSGSIZE). */
#define HOSTILE_CONFIG "heartbeat_ms = 1000\n[broker]\nmax_message_bytes = 65536\n"

#define N_CODES 18 /* every error code there is, 0 to 17 */

/* A sealed referral whose narrative is n bytes. */
static uint8_t *big_referral(const identity_t *from, const identity_t *to, size_t n, size_t *len)
{
    char *narrative = malloc(n + 1);
    assert_non_null(narrative);
    memset(narrative, 'x', n);
    narrative[n] = '\0';
    msg_id_t id;
    uint8_t *env = harness_referral(from, to, narrative, NULL, len, &id);
    free(narrative);
    return env;
}

/* --- 1. a registered party sending bad frames --------------------------------------------------------------- */

typedef struct {
    harness_t *h;
    client_t *cpd, *sao;
    int referrals;
    int64_t worst_receipt_ms, worst_delivery_ms;
} good_t;

/* One referral from the good source to the good sink: receipted, delivered, confirmed, within bounds. */
static void good_round(good_t *g, msg_id_t *confirmed)
{
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(g->h->cpd, g->h->sao, NULL, NULL, &len, &id);
    int64_t t0 = harness_ms();
    harness_submit_ok(g->cpd, env, len);
    int64_t t1 = harness_ms();
    free(env);
    uint8_t got[MSG_ID_BYTES];
    harness_receive(g->sao, 5000, got, NULL);
    assert_memory_equal(got, id.bytes, MSG_ID_BYTES);
    assert_ok(client_confirm(g->sao, got));
    int64_t t2 = harness_ms();
    g->worst_receipt_ms = t1 - t0 > g->worst_receipt_ms ? t1 - t0 : g->worst_receipt_ms;
    g->worst_delivery_ms = t2 - t1 > g->worst_delivery_ms ? t2 - t1 : g->worst_delivery_ms;
    g->referrals++;
    if (confirmed != NULL)
        *confirmed = id;
}

typedef struct {
    void *s;
    int sent, expected[N_CODES], got[N_CODES], receipts, expected_receipts, other;
} bad_t;

/* Reads what the broker answered the bad peer so far (waiting up to wait_ms for the first). */
static void bad_drain(bad_t *bad, int wait_ms)
{
    for (Rb__Frame *f; (f = raw_recv(bad->s, wait_ms)) != NULL; wait_ms = 0) {
        if (f->body_case == RB__FRAME__BODY_ERROR && (unsigned)f->error->code < N_CODES)
            bad->got[f->error->code]++;
        else if (f->body_case == RB__FRAME__BODY_RECEIPT)
            bad->receipts++;
        else
            bad->other++;
        rb__frame__free_unpacked(f, NULL);
    }
}

static void bad_frame(bad_t *bad, Rb__Frame *f, Rb__ErrorCode want)
{
    assert_true(raw_send(bad->s, f) || (bad_drain(bad, 100), raw_send(bad->s, f)));
    bad->expected[want]++;
    bad->sent++;
}

static void bad_bytes(bad_t *bad, const void *data, size_t len, Rb__ErrorCode want)
{
    raw_bytes(bad->s, data, len);
    bad->expected[want]++;
    bad->sent++;
}

static void bad_submit(bad_t *bad, const uint8_t *env, size_t len, Rb__ErrorCode want)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Submit sub = RB__SUBMIT__INIT;
    sub.envelope = (ProtobufCBinaryData){len, (uint8_t *)env};
    f.body_case = RB__FRAME__BODY_SUBMIT;
    f.submit = &sub;
    bad_frame(bad, &f, want);
}

/* One burst of every kind of bad frame; i varies sizes and cut points. */
static void bad_burst(harness_t *h, bad_t *bad, int i, const msg_id_t *old_confirm)
{
    uint8_t junk[300];
    rbcrypto_random(junk, sizeof junk);
    junk[0] = 0x0f; /* field 1 with wire type 7, which does not exist: never a Frame */
    bad_bytes(bad, junk, 1 + (size_t)i % sizeof junk, RB__ERROR_CODE__ERROR_CODE_MALFORMED);
    bad_bytes(bad, "", 0, RB__ERROR_CODE__ERROR_CODE_MALFORMED); /* a Frame with no body */

    /* A valid referral of the bad party's own, cut short anywhere; whole, it is replayed: the same receipt
     * each time. */
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->mallory, h->other, NULL, NULL, &len, &id);
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Submit sub = RB__SUBMIT__INIT;
    sub.envelope = (ProtobufCBinaryData){len, env};
    f.version = WIRE_VERSION;
    f.body_case = RB__FRAME__BODY_SUBMIT;
    f.submit = &sub;
    size_t packed = rb__frame__get_packed_size(&f);
    uint8_t *buf = malloc(packed);
    rb__frame__pack(&f, buf);
    bad_bytes(bad, buf, 2 + (size_t)(i * 7919) % (packed - 2), RB__ERROR_CODE__ERROR_CODE_MALFORMED);
    free(buf);
    if (i % 20 == 0) {
        assert_true(send_submit(bad->s, env, len));
        assert_true(send_submit(bad->s, env, len)); /* the same envelope twice */
        bad->expected_receipts += 2;
        bad->sent += 2;
    }
    /* Tampered: one byte of the envelope flipped. */
    env[(size_t)(i * 131) % len] ^= 0x40;
    Rb__Frame t = RB__FRAME__INIT;
    Rb__Submit tsub = RB__SUBMIT__INIT;
    tsub.envelope = (ProtobufCBinaryData){len, env};
    t.body_case = RB__FRAME__BODY_SUBMIT;
    t.submit = &tsub;
    assert_true(raw_send(bad->s, &t) || (bad_drain(bad, 100), raw_send(bad->s, &t)));
    bad->sent++;
    bad->expected[0]++; /* BAD_ENVELOPE or BAD_SIGNATURE, by where the flip fell: counted apart */
    free(env);

    /* Garbage in a well-formed SUBMIT. */
    bad_submit(bad, junk, 64, RB__ERROR_CODE__ERROR_CODE_BAD_ENVELOPE);
    /* Another party's envelope: a spoofed sender. */
    env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    bad_submit(bad, env, len, RB__ERROR_CODE__ERROR_CODE_SENDER_MISMATCH);
    free(env);
    /* To a party that is no sink. */
    env = harness_referral(h->mallory, h->cpd, NULL, NULL, &len, &id);
    bad_submit(bad, env, len, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    free(env);
    /* Oversized: refused; the first time only, beyond the hard limit (the connection goes, see below). */
    if (i % 25 == 0) {
        uint8_t *big = calloc(1, 70000);
        bad_bytes(bad, big, 70000, RB__ERROR_CODE__ERROR_CODE_TOO_BIG);
        free(big);
    }
    /* Another version. */
    Rb__Frame v = RB__FRAME__INIT;
    Rb__Heartbeat hb = RB__HEARTBEAT__INIT;
    v.version = WIRE_VERSION + 1 + (uint32_t)i;
    v.body_case = RB__FRAME__BODY_HEARTBEAT;
    v.heartbeat = &hb;
    bad_frame(bad, &v, RB__ERROR_CODE__ERROR_CODE_UNSUPPORTED_VERSION);
    /* Frames of another role: the broker's own, and an admin's. */
    Rb__Frame o = RB__FRAME__INIT;
    Rb__Welcome w = RB__WELCOME__INIT;
    Rb__Deliver d = RB__DELIVER__INIT;
    Rb__Error e = RB__ERROR__INIT;
    Rb__AdminRequest ar = RB__ADMIN_REQUEST__INIT;
    switch (i % 4) {
    case 0:
        o.body_case = RB__FRAME__BODY_WELCOME, o.welcome = &w;
        break;
    case 1:
        o.body_case = RB__FRAME__BODY_DELIVER, o.deliver = &d;
        break;
    case 2:
        o.body_case = RB__FRAME__BODY_ERROR, o.error = &e;
        break;
    default:
        o.body_case = RB__FRAME__BODY_ADMIN_REQUEST, o.admin_request = &ar;
    }
    bad_frame(bad, &o, RB__ERROR_CODE__ERROR_CODE_UNEXPECTED);
    /* CONFIRMs: of an unknown id, of a message delivered to another party (an old CONFIRM replayed),
     * and with a short id. */
    uint8_t unknown[MSG_ID_BYTES];
    rbcrypto_random(unknown, sizeof unknown);
    Rb__Frame c = RB__FRAME__INIT;
    Rb__Confirm conf = RB__CONFIRM__INIT;
    c.body_case = RB__FRAME__BODY_CONFIRM;
    c.confirm = &conf;
    conf.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, unknown};
    bad_frame(bad, &c, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE);
    conf.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, (uint8_t *)old_confirm->bytes};
    bad_frame(bad, &c, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE);
    conf.message_id = (ProtobufCBinaryData){3, unknown};
    bad_frame(bad, &c, RB__ERROR_CODE__ERROR_CODE_MALFORMED);
    /* Two parts in one message. */
    assert_int_equal(zmq_send(bad->s, "a", 1, ZMQ_SNDMORE), 1);
    bad_bytes(bad, "b", 1, RB__ERROR_CODE__ERROR_CODE_MALFORMED);
}

static void hostile_registered_peer(void **state)
{
    (void)state;
    harness_t *h = harness_start(HOSTILE_CONFIG);
    zctx = zmq_ctx_new();
    good_t g = {.h = h};
    g.cpd = harness_client(h, h->cpd, 0);
    g.sao = harness_client(h, h->sao, 16);
    msg_id_t old;
    good_round(&g, &old);
    long rss0 = proc_rss_kb(h->pid);

    bad_t bad = {.s = raw_peer(h, h->mallory, h->broker.box_pk, 0, 0)};
    send_hello(bad.s, 0); /* before it, a SUBMIT is refused (attack_test) */
    Rb__Frame *welcome = raw_expect(bad.s, RB__FRAME__BODY_WELCOME, 5000);
    assert_non_null(welcome);
    rb__frame__free_unpacked(welcome, NULL);
    int64_t t0 = harness_ms();
    for (int i = 0; i < 200; i++) {
        bad_burst(h, &bad, i, &old);
        if (i % 4 == 0)
            good_round(&g, NULL);
        bad_drain(&bad, 0);
    }
    /* Everything sent is answered within a bound. */
    int expected_errors = 0;
    for (int c = 0; c < N_CODES; c++)
        expected_errors += bad.expected[c];
    int64_t deadline = harness_ms() + 20000;
    for (int answered = 0; answered < expected_errors + bad.expected_receipts && harness_ms() < deadline;) {
        bad_drain(&bad, 200);
        answered = bad.receipts;
        for (int c = 0; c < N_CODES; c++)
            answered += bad.got[c];
    }
    int64_t elapsed = harness_ms() - t0;
    good_round(&g, NULL);
    assert_alive(h);

    print_message(
        "# %d bad frames in %lld ms, answered: %d ERRORs, %d receipts (for %d valid resubmissions)\n",
        bad.sent, (long long)elapsed, expected_errors, bad.receipts, bad.expected_receipts);
    /* A tampered envelope is refused by whichever check its flipped byte fails first. */
    static const Rb__ErrorCode tamper_codes[] = {
        RB__ERROR_CODE__ERROR_CODE_BAD_ENVELOPE, RB__ERROR_CODE__ERROR_CODE_BAD_SIGNATURE,
        RB__ERROR_CODE__ERROR_CODE_KEY_EXPIRED, RB__ERROR_CODE__ERROR_CODE_KEY_REVOKED,
        RB__ERROR_CODE__ERROR_CODE_NOT_ALLOWED};
    int tampered = -bad.expected[RB__ERROR_CODE__ERROR_CODE_BAD_ENVELOPE];
    double refused_total = 0;
    for (int c = 1; c < N_CODES; c++) {
        bool tamper = false;
        for (size_t k = 0; k < sizeof tamper_codes / sizeof *tamper_codes; k++)
            tamper |= (int)tamper_codes[k] == c;
        if (tamper)
            tampered += bad.got[c];
        else if (bad.got[c] != bad.expected[c])
            fail_msg("%s: %d ERRORs for %d frames", wire_error_name((Rb__ErrorCode)c), bad.got[c],
                     bad.expected[c]);
        char series[200];
        const char *name = wire_error_name((Rb__ErrorCode)c) + strlen("ERROR_CODE_");
        snprintf(series, sizeof series, "referral_refused_frames_total{adapter=\"mallory-rms\",code=\"%s\"}",
                 name);
        double counted = metric_at_least(h, series, bad.got[c], bad.got[c] ? 3000 : 0);
        if (counted != bad.got[c])
            fail_msg("%s counted %.0f, answered %d", series, counted, bad.got[c]);
        refused_total += counted;
        if (bad.got[c] + bad.expected[c] > 0)
            print_message("#   %-20s sent %4d answered and counted %4d\n", name, bad.expected[c], bad.got[c]);
    }
    print_message("#   (tampered envelopes %d, refused under the codes above)\n", bad.expected[0]);
    assert_int_equal(tampered, bad.expected[0]);
    assert_int_equal((int)refused_total, expected_errors);
    assert_int_equal(bad.receipts, bad.expected_receipts);
    assert_int_equal(bad.other, 0);
    /* One message stored per distinct valid envelope: replays took nothing. */
    int distinct = bad.expected_receipts / 2; /* each valid envelope was sent twice */
    assert_int_equal(metric_at_least(h,
                                     "referral_submissions_total{adapter=\"mallory-rms\",kind=\"referral\"}",
                                     distinct, 3000),
                     distinct);
    assert_int_equal(metric(h, "referral_dropped_frames_total{reason=\"no_session\"}"), 0);

    /* Beyond the hard limit ZeroMQ drops the connection; the broker goes on. */
    uint8_t *huge = calloc(1, 140000);
    raw_bytes(bad.s, huge, 140000);
    free(huge);
    harness_sleep_ms(300);
    assert_alive(h);
    good_round(&g, NULL);
    long rss1 = proc_rss_kb(h->pid);
    print_message(
        "# good referrals %d: worst receipt %lld ms, worst delivery %lld ms; broker RSS %ld -> %ld kB\n",
        g.referrals, (long long)g.worst_receipt_ms, (long long)g.worst_delivery_ms, rss0, rss1);
    assert_true(g.worst_receipt_ms < 5000 && g.worst_delivery_ms < 5000);
    assert_true(rss1 - rss0 < 64 * 1024);

    zmq_close(bad.s);
    client_close(&g.cpd);
    client_close(&g.sao);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* --- 2. clients that fail the handshake ---------------------------------------------------------------------- */

static void unauthenticated_clients(void **state)
{
    (void)state;
    harness_t *h = harness_start(HOSTILE_CONFIG);
    zctx = zmq_ctx_new();
    client_t *probe = harness_client(h, h->cpd, 0); /* warm: the first connection's allocations done */
    client_close(&probe);
    harness_sleep_ms(300);
    long rss0 = proc_rss_kb(h->pid);
    int fds0 = proc_fds(h->pid);

    enum { BATCH = 100, BATCHES = 10 };
    int answered = 0;
    for (int b = 0; b < BATCHES; b++) {
        void *s[BATCH];
        identity_t *ids[BATCH] = {0};
        for (int i = 0; i < BATCH; i++) {
            uint8_t wrong[RB_BOX_PK_BYTES];
            rbcrypto_random(wrong, sizeof wrong);
            switch (i % 3) {
            case 0: /* no CURVE at all */
                s[i] = raw_peer(h, NULL, NULL, 0, 0);
                break;
            case 1: /* a registered key, but the wrong server key */
                s[i] = raw_peer(h, h->cpd, wrong, 0, 0);
                break;
            default: /* random keys nobody registered */
                ids[i] = harness_identity("stranger", CARD_ROLE_SOURCE, "ILCPD0000");
                s[i] = raw_peer(h, ids[i], h->broker.box_pk, 0, 0);
            }
            send_hello(s[i], 16);
        }
        harness_sleep_ms(250);
        for (int i = 0; i < BATCH; i++) {
            Rb__Frame *f = raw_recv(s[i], 0);
            if (f != NULL) {
                answered++;
                rb__frame__free_unpacked(f, NULL);
            }
            zmq_close(s[i]);
            identity_free(&ids[i]);
        }
    }
    assert_int_equal(answered, 0);
    int random_keys = BATCHES * (BATCH / 3); /* a third of each batch */
    double refused = metric_at_least(h, "referral_refused_handshakes_total", random_keys, 5000);
    assert_true(refused >= random_keys);
    /* The broker lets go of the closed connections. */
    int fds1 = proc_fds(h->pid);
    for (int64_t deadline = harness_ms() + 5000; fds1 > fds0 + 5 && harness_ms() < deadline;) {
        harness_sleep_ms(100);
        fds1 = proc_fds(h->pid);
    }
    long rss1 = proc_rss_kb(h->pid);
    print_message(
        "# %d unauthenticated connections (%d refused by ZAP), 0 answered; broker RSS %ld -> %ld kB, "
        "fds %d -> %d\n",
        BATCH * BATCHES, (int)refused, rss0, rss1, fds0, fds1);
    assert_true(fds1 <= fds0 + 5);
    assert_true(rss1 - rss0 < 16 * 1024);
    /* And a registered client still works. */
    good_t g = {.h = h};
    g.cpd = harness_client(h, h->cpd, 0);
    g.sao = harness_client(h, h->sao, 16);
    good_round(&g, NULL);
    assert_alive(h);
    client_close(&g.cpd);
    client_close(&g.sao);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* --- 3. resource limits ----------------------------------------------------------------------------------- */

/* Redeliveries every 50 ms at most, and never dead-lettered meanwhile: a peer that does not read would
 * be sent the same 16 envelopes again and again. */
#define LIMITS_CONFIG                                                                                        \
    "heartbeat_ms = 1000\nretry_base_ms = 50\nretry_max_ms = 50\nretry_limit = 1000\n"                       \
    "[broker]\nmax_message_bytes = 65536\n"

static void peer_that_never_reads(void **state)
{
    (void)state;
    harness_t *h = harness_start(LIMITS_CONFIG);
    zctx = zmq_ctx_new();
    good_t g = {.h = h};
    g.cpd = harness_client(h, h->cpd, 0);
    g.sao = harness_client(h, h->sao, 16);
    good_round(&g, NULL);

    /* The sink other-intake says HELLO with credit, reads its WELCOME, and then reads nothing more (its
     * ZeroMQ queue holds one message, its socket buffer 4 KiB), while it keeps its session alive. */
    void *stuck = raw_peer(h, h->other, h->broker.box_pk, 1, 0);
    send_hello(stuck, 16);
    Rb__Frame *w = raw_recv(stuck, 5000);
    assert_non_null(w);
    assert_int_equal(w->body_case, RB__FRAME__BODY_WELCOME);
    rb__frame__free_unpacked(w, NULL);
    long rss0 = proc_rss_kb(h->pid);

    /* 200 referrals of 48 KiB for it: 9.6 MB, against a queue of (credit + 64) messages. */
    for (int i = 0; i < 200; i++) {
        size_t len;
        uint8_t *env = big_referral(h->cpd, h->other, 48 * 1024, &len);
        harness_submit_ok(g.cpd, env, len);
        free(env);
        if (i % 10 == 0)
            send_heartbeat(stuck);
    }
    long peak = 0;
    for (int64_t end = harness_ms() + 4000; harness_ms() < end;) {
        send_heartbeat(stuck);
        good_round(&g, NULL); /* the other sink is served all along */
        long rss = proc_rss_kb(h->pid);
        peak = rss > peak ? rss : peak;
        harness_sleep_ms(100);
    }
    double full = metric_at_least(h, "referral_dropped_frames_total{reason=\"peer_full\"}", 1, 3000);
    double deliveries = metric(h, "referral_deliveries_total{adapter=\"other-intake\"}");
    print_message("# a peer that never reads: %.0f DELIVERs queued for it, %.0f refused by its full queue; "
                  "broker RSS %ld -> peak %ld kB; %d good referrals meanwhile, worst delivery %lld ms\n",
                  deliveries, full, rss0, peak, g.referrals, (long long)g.worst_delivery_ms);
    assert_true(full >= 1);
    assert_true(peak - rss0 < 48 * 1024);
    assert_true(g.worst_delivery_ms < 5000);
    assert_alive(h);
    zmq_close(stuck);
    client_close(&g.cpd);
    client_close(&g.sao);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

static void flood_of_submissions(void **state)
{
    (void)state;
    harness_t *h = harness_start(HOSTILE_CONFIG);
    zctx = zmq_ctx_new();
    good_t g = {.h = h};
    g.cpd = harness_client(h, h->cpd, 0);
    g.sao = harness_client(h, h->sao, 16);
    good_round(&g, NULL);
    long rss0 = proc_rss_kb(h->pid);

    /* mallory-rms submits valid 32 KiB referrals (to other-intake, not connected) as fast as it can,
     * without waiting for receipts. */
    void *flood = raw_peer(h, h->mallory, h->broker.box_pk, 0, 16);
    send_hello(flood, 0);
    Rb__Frame *welcome = raw_expect(flood, RB__FRAME__BODY_WELCOME, 5000);
    assert_non_null(welcome);
    rb__frame__free_unpacked(welcome, NULL);
    enum { FLOOD = 600 };
    int sent = 0, blocked = 0, receipts = 0, errors = 0;
    long peak = 0;
    uint8_t *envs[FLOOD];
    size_t lens[FLOOD];
    for (int i = 0; i < FLOOD; i++) /* sealed beforehand, so that they go faster than the broker stores */
        envs[i] = big_referral(h->mallory, h->other, 32 * 1024, &lens[i]);
    int64_t t0 = harness_ms();
    while (sent < FLOOD) {
        while (!send_submit(flood, envs[sent], lens[sent])) { /* back-pressure: ZeroMQ would block */
            blocked++;
            harness_sleep_ms(1);
        }
        free(envs[sent]);
        sent++;
        if (sent % 100 == 0) {
            good_round(&g, NULL);
            long rss = proc_rss_kb(h->pid);
            peak = rss > peak ? rss : peak;
        }
        for (Rb__Frame *f; (f = raw_recv(flood, 0)) != NULL; rb__frame__free_unpacked(f, NULL)) {
            receipts += f->body_case == RB__FRAME__BODY_RECEIPT;
            errors += f->body_case == RB__FRAME__BODY_ERROR;
        }
    }
    for (int64_t deadline = harness_ms() + 20000; receipts + errors < FLOOD && harness_ms() < deadline;)
        for (Rb__Frame *f; (f = raw_recv(flood, 200)) != NULL; rb__frame__free_unpacked(f, NULL)) {
            receipts += f->body_case == RB__FRAME__BODY_RECEIPT;
            errors += f->body_case == RB__FRAME__BODY_ERROR;
        }
    int64_t elapsed = harness_ms() - t0;
    good_round(&g, NULL);
    int64_t stored = (int64_t)metric_at_least(
        h, "referral_submissions_total{adapter=\"mallory-rms\",kind=\"referral\"}", FLOOD, 3000);
    print_message(
        "# flood: %d SUBMITs of 32 KiB in %lld ms, %d sends held back by back-pressure, %d receipts, "
        "%d ERRORs, %lld stored; broker RSS %ld -> peak %ld kB; %d good referrals meanwhile, worst "
        "receipt %lld ms\n",
        sent, (long long)elapsed, blocked, receipts, errors, (long long)stored, rss0, peak, g.referrals,
        (long long)g.worst_receipt_ms);
    assert_int_equal(receipts, FLOOD);
    assert_true(blocked > 0);
    assert_int_equal(stored, FLOOD);
    assert_true(peak - rss0 < 64 * 1024);
    assert_true(g.worst_receipt_ms < 5000);
    assert_alive(h);
    zmq_close(flood);
    client_close(&g.cpd);
    client_close(&g.sao);
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

int main(void)
{
    harness_no_asan_quarantine();       /* the RSS bounds are about the broker's own memory */
    if (getenv("HOSTILE_ONLY") != NULL) /* one test by name, when working on it */
        cmocka_set_test_filter(getenv("HOSTILE_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(hostile_registered_peer, harness_teardown),
        cmocka_unit_test_teardown(unauthenticated_clients, harness_teardown),
        cmocka_unit_test_teardown(peer_that_never_reads, harness_teardown),
        cmocka_unit_test_teardown(flood_of_submissions, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
