/* operator_test.c -- what an operator does in the ordinary course of running the system, and what it must
 * never lose: referrals sent while their recipient is disabled, backups taken after any admin action,
 * revocation notices to a sink that is away. A real broker, real adapters and the real tools, driven the
 * way docs/OPERATIONS.md tells an operator to. */
#include <jansson.h>

#include "harness.h"
#include "raw_peer.h"
#include "store.h"

/* `referral-adapter status` of adapter i, as JSON (the caller json_decref()s it). */
static json_t *adapter_status(harness_t *h, int i)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s/referral-adapter' status --config '%s' 2>&1", h->bin,
             h->adapters[i].config);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    json_t *o = json_loads(out, 0, NULL);
    if (rc != 0 || o == NULL)
        fail_msg("referral-adapter status: %s", out);
    return o;
}

static int status_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

/* Waits until adapter i's status says key == want. */
static void wait_status(harness_t *h, int i, const char *key, int want, int timeout_ms)
{
    int64_t deadline = harness_deadline(timeout_ms);
    for (;;) {
        json_t *o = adapter_status(h, i);
        int got = status_int(o, key);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (got == want) {
            free(text);
            return;
        }
        if (harness_ms() > deadline)
            fail_msg("adapter %d status %s is %d, not %d, after %d ms: %s (see %s)", i, key, got, want,
                     timeout_ms, text, h->adapters[i].log);
        free(text);
        harness_sleep_ms(100);
    }
}

/* An admin disables the recipient for a while (a sink being moved, a source under investigation): what is
 * sent to it meanwhile waits at its sender, which says what it waits for, and goes once it is enabled. Both
 * ways: a referral to a disabled sink, and a sink's ACK to a disabled source. */
static void a_disabled_recipient_loses_nothing(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int src = harness_adapter(h), snk = harness_adapter(h);
    const char *sink[] = {"sao-intake"}, *source[] = {"cpd-rms"};
    free(harness_admin(h, true, "adapter disable", sink, 1));
    harness_adapter_start(h, src, "rms-files");
    harness_drop(h, "adapters/samples/valid/01-fatal-shooting.json", NULL);
    harness_wait_count(h, "drop/sent", ".json", 1, 10000);
    wait_status(h, src, "waiting", 1, 10000);
    json_t *o = adapter_status(h, src);
    assert_int_equal(status_int(o, "refused"), 0);
    assert_int_equal(status_int(o, "queued"), 1);
    assert_non_null(strstr(json_string_value(json_object_get(o, "waitingFor")), "sao-intake is disabled"));
    json_decref(o);
    /* Enabled again: it goes by itself, within the pause between tries (a minute at most). */
    free(harness_admin(h, true, "adapter enable", sink, 1));
    harness_adapter_start(h, snk, "intake-sqlite");
    harness_wait_count(h, "drop/acks", ".json", 1, 70000);
    wait_status(h, src, "waiting", 0, 1000);

    /* The other way: the sink answers while the source is disabled. */
    harness_adapter_stop(h, snk, SIGTERM);
    harness_drop(h, "adapters/samples/valid/02-night-raid-south-shore.json", NULL);
    wait_status(h, src, "awaitingAck", 1, 10000);
    free(harness_admin(h, true, "adapter disable", source, 1));
    harness_adapter_start(h, snk, "intake-sqlite");
    wait_status(h, snk, "filed", 2, 20000);
    wait_status(h, snk, "waiting", 1, 10000);
    o = adapter_status(h, snk);
    assert_int_equal(status_int(o, "refused"), 0);
    json_decref(o);
    free(harness_admin(h, true, "adapter enable", source, 1));
    harness_wait_count(h, "drop/acks", ".json", 2, 70000);
    wait_status(h, snk, "waiting", 0, 1000);
    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

/* A client of protocol version 1 or 2 knows no RECIPIENT_DISABLED (it would take an unknown code for a
 * refusal for good): it is told STORAGE, which it retries; one of version 3 is told RECIPIENT_DISABLED. */
static void an_older_client_is_told_to_retry(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    zctx = zmq_ctx_new();
    const char *sink[] = {"sao-intake"};
    free(harness_admin(h, true, "adapter disable", sink, 1));
    for (uint32_t protocol = 0; protocol <= WIRE_VERSION; protocol += WIRE_VERSION) {
        void *s = raw_peer(h, h->cpd, h->broker.box_pk, 0, 0);
        Rb__Frame f = RB__FRAME__INIT;
        Rb__Hello hello = RB__HELLO__INIT;
        hello.protocol = protocol;
        f.version = 1;
        f.body_case = RB__FRAME__BODY_HELLO;
        f.hello = &hello;
        assert_true(raw_send(s, &f));
        rb__frame__free_unpacked(raw_expect(s, RB__FRAME__BODY_WELCOME, 5000), NULL);
        size_t len;
        msg_id_t id;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
        Rb__Submit sub = RB__SUBMIT__INIT;
        sub.envelope = (ProtobufCBinaryData){len, env};
        f.body_case = RB__FRAME__BODY_SUBMIT;
        f.submit = &sub;
        assert_true(raw_send(s, &f));
        Rb__Frame *e = raw_expect(s, RB__FRAME__BODY_ERROR, 5000);
        assert_non_null(e);
        assert_int_equal(e->error->code, protocol >= 3 ? RB__ERROR_CODE__ERROR_CODE_RECIPIENT_DISABLED
                                                       : RB__ERROR_CODE__ERROR_CODE_STORAGE);
        assert_non_null(strstr(e->error->reason, "sao-intake is disabled"));
        rb__frame__free_unpacked(e, NULL);
        free(env);
        zmq_close(s);
    }
    zmq_ctx_term(zctx);
    harness_stop(&h);
}

/* Submits a referral from who to the sink sao-intake, receipted; its id. */
static msg_id_t submit_one(harness_t *h, client_t *c, const identity_t *who)
{
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(who, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(c, env, len);
    free(env);
    return id;
}

/* A key rotated with the tool and the new card registered (`key add`), as OPERATIONS.md says: the key in
 * DIR/OLD.secret succeeded by DIR/NEW.secret and .card. */
static void rotate_key(harness_t *h, const char *old, const char *new)
{
    char out[4096], secret[700];
    test_path(secret, sizeof secret, "%s/admin.secret", h->dir);
    if (access(secret, F_OK) != 0)
        assert_ok(identity_save(h->admin, secret, NULL, 0, 0, 0, false));
    if (harness_sh(
            out, sizeof out,
            "'%s/referral-keys' rotate --old '%s/%s.secret' --out '%s/%s' --no-passphrase 2>&1 && "
            "'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s' key add --card "
            "'%s/%s.card' 2>&1",
            h->bin, h->dir, old, h->dir, new, h->bin, h->endpoint, h->data, secret, h->dir, new) != 0)
        fail_msg("rotate %s and key add: %s", old, out);
}

static void rotate_police_key(harness_t *h)
{
    rotate_key(h, "cpd", "cpd-2");
}

/* Takes a backup with the admin tool and restores it into a new data directory with the broker's key
 * files, as OPERATIONS.md says; the restored broker starts and serves. */
static void backup_and_restore(harness_t *h, int n)
{
    char out[8192], file[700], standby[700], secret[700];
    test_path(secret, sizeof secret, "%s/admin.secret", h->dir);
    if (access(secret, F_OK) != 0)
        assert_ok(identity_save(h->admin, secret, NULL, 0, 0, 0, false));
    test_path(file, sizeof file, "%s/backup-%d.db", h->dir, n);
    test_path(standby, sizeof standby, "%s/standby-%d", h->dir, n);
    if (harness_sh(
            out, sizeof out,
            "'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s' backup --out '%s' "
            "2>&1",
            h->bin, h->endpoint, h->data, secret, file) != 0)
        fail_msg("backup %d: %s", n, out);
    assert_int_equal(mkdir(standby, 0700), 0);
    assert_int_equal(harness_sh(out, sizeof out, "cp -p '%s/broker.secret' '%s/broker.card' '%s/'", h->data,
                                h->data, standby),
                     0);
    if (harness_sh(out, sizeof out, "'%s/referral-broker' restore --from '%s' --data '%s' 2>&1", h->bin, file,
                   standby) != 0)
        fail_msg("restore of backup %d: %s", n, out);
    assert_non_null(strstr(out, "leaves verified"));
    /* Nothing of the restore's own is left beside the database: neither its checked copy (mkstemp names it
     * broker.db.restore- and six random characters) nor the files SQLite keeps beside one. */
    assert_int_equal(harness_sh(out, sizeof out, "ls -A '%s' | grep -c restore-", standby), 1);
}

/* Every admin action there is, each followed by a backup that must restore: a backup is only worth what
 * its restore does, and the day it is needed is the day after something was discarded. */
static void a_backup_restores_after_every_admin_action(void **state)
{
    (void)state;
    harness_t *h = harness_start("retry_base_ms = 100\nretry_max_ms = 200\nretry_limit = 1\n");
    int n = 0;
    client_t *cpd = harness_client(h, h->cpd, 0), *mallory = harness_client(h, h->mallory, 0);
    char dead[3][33], held[2][33];
    for (int i = 0; i < 3; i++)
        wire_id_hex(submit_one(h, cpd, h->cpd).bytes, dead[i]);
    /* Delivered and never confirmed: dead letters after one attempt. */
    client_t *sao = harness_client(h, h->sao, 16);
    for (int64_t deadline = harness_deadline(15000);;) {
        uint8_t *env;
        size_t len;
        uint32_t attempt;
        if (client_receive(sao, 100, &env, &len, &attempt) == RB_OK)
            free(env);
        char *out = harness_admin(h, true, "dead-letters list", NULL, 0);
        bool all = strstr(out, dead[0]) && strstr(out, dead[1]) && strstr(out, dead[2]);
        free(out);
        if (all)
            break;
        if (harness_ms() > deadline)
            fail_msg("no three dead letters after 15 s");
    }
    client_close(&sao);
    backup_and_restore(h, n++);
    const char *discard[] = {dead[0], "sent again on paper"}, *requeue[] = {dead[1]};
    free(harness_admin(h, true, "dead-letters discard", discard, 2));
    backup_and_restore(h, n++);
    free(harness_admin(h, true, "dead-letters requeue", requeue, 1));
    backup_and_restore(h, n++);
    const char *other[] = {"other-intake"};
    free(harness_admin(h, true, "adapter disable", other, 1));
    backup_and_restore(h, n++);
    free(harness_admin(h, true, "adapter enable", other, 1));
    backup_and_restore(h, n++);
    /* A compromised key, revoked since before what it sent: quarantined, one discarded, one released. */
    int64_t since = harness_ms();
    harness_sleep_ms(5);
    for (int i = 0; i < 2; i++)
        wire_id_hex(submit_one(h, mallory, h->mallory).bytes, held[i]);
    char key_id[17], since_text[24];
    card_key_id_hex(identity_card(h->mallory)->key_id, key_id);
    snprintf(since_text, sizeof since_text, "%lld", (long long)since);
    const char *revoke[] = {key_id, "compromised", since_text};
    free(harness_admin(h, true, "key revoke", revoke, 3));
    backup_and_restore(h, n++);
    const char *qdiscard[] = {held[0], "sent with the stolen key"}, *release[] = {held[1]};
    free(harness_admin(h, true, "quarantine discard", qdiscard, 2));
    backup_and_restore(h, n++);
    free(harness_admin(h, true, "quarantine release", release, 1));
    backup_and_restore(h, n++);
    /* A rotation: the new key certified by the old one, registered with the tool. */
    harness_adapter_files(h);
    rotate_police_key(h);
    backup_and_restore(h, n++);
    client_close(&cpd);
    client_close(&mallory);
    harness_stop(&h);
}

/* A count from adapter i's own store; -1 before the adapter made it. */
static int64_t adapter_db(harness_t *h, int i, const char *sql)
{
    char path[700];
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    test_path(path, sizeof path, "%s/adapter-%d-data/adapter.db", h->dir, i);
    if (access(path, F_OK) == 0 && sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    return v;
}

/* A key is revoked while the sink is away for longer than the time to live; meanwhile the admin releases
 * what the key signed after the compromise (by mistake, or to see it). The sink, back, learns the
 * revocation before anything else, and files nothing the key signed after the revocation time. */
static void a_revocation_reaches_a_sink_that_was_away(void **state)
{
    (void)state;
    /* The time to live counts again from the release: it must outlast the start of a sanitized sink on a
     * loaded CI machine (4 s did not, once), and the notice, never dead-lettered, must outlive it. */
    harness_t *h = harness_start("ttl_ms = 10000\n");
    int snk = harness_adapter(h);
    char path[700];
    assert_ok(card_write_file(identity_card(h->mallory),
                              test_path(path, sizeof path, "%s/trust-sink/mallory.card", h->dir), true));
    client_t *mallory = harness_client(h, h->mallory, 0);
    int64_t since = harness_ms();
    harness_sleep_ms(5);
    msg_id_t id = submit_one(h, mallory, h->mallory);
    client_close(&mallory);
    char key_id[17], since_text[24], hex[33];
    card_key_id_hex(identity_card(h->mallory)->key_id, key_id);
    snprintf(since_text, sizeof since_text, "%lld", (long long)since);
    const char *revoke[] = {key_id, "compromised", since_text}, *other[] = {"other-intake"};
    free(harness_admin(h, true, "adapter disable", other, 1)); /* away too, and told when it comes back */
    char *out = harness_admin(h, true, "key revoke", revoke, 3);
    assert_non_null(strstr(out, "\"quarantined\": 1"));
    free(out);
    size_t log_len;
    char *log = test_read_file(h->log, &log_len);
    assert_non_null(strstr(log, "adapter=mallory-rms recipients=2")); /* cpd-rms is of its role */
    free(log);
    harness_sleep_ms(10500); /* past the time to live of the notice */
    wire_id_hex(id.bytes, hex);
    const char *release[] = {hex};
    free(harness_admin(h, true, "quarantine release", release, 1));
    harness_adapter_start(h, snk, "intake-sqlite");
    int64_t deadline = harness_deadline(15000);
    while (adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state != 'received'") < 2) {
        if (harness_ms() > deadline)
            fail_msg("the sink processed %lld of 2 envelopes (the notice and the released referral) in 15 s; "
                     "its inbox: %lld filed, %lld notices; the broker's dead letters: %lld (see %s)",
                     (long long)adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state != 'received'"),
                     (long long)adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'filed'"),
                     (long long)adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'notice'"),
                     (long long)harness_db_int(test_path(path, sizeof path, "%s/broker.db", h->data),
                                               "SELECT count(*) FROM messages WHERE state = 'dead'"),
                     h->adapters[snk].log);
        harness_sleep_ms(50);
    }
    assert_int_equal(adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'notice'"), 1);
    assert_int_equal(adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'refused'"), 1);
    assert_int_equal(adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'filed'"), 0);
    assert_int_equal(
        harness_db_int(test_path(path, sizeof path, "%s/intake.db", h->dir), "SELECT count(*) FROM filings"),
        0);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

/* A referral the sink never confirmed is dead-lettered, and the admin discards it with a reason: the police
 * adapter is told, by a notice from the broker, and shows it refused with who discarded it and why, instead
 * of awaiting its ACK (and counting it overdue) for ever. */
static void a_discarded_referral_is_shown_to_its_source(void **state)
{
    (void)state;
    harness_t *h = harness_start("retry_base_ms = 100\nretry_max_ms = 200\nretry_limit = 1\n");
    snprintf(h->adapter_settings, sizeof h->adapter_settings, "ack_deadline_ms = 1\n");
    int src = harness_adapter(h);
    harness_adapter_start(h, src, "rms-files");
    client_t *sao = harness_client(h, h->sao, 16);
    harness_drop(h, "adapters/samples/valid/01-fatal-shooting.json", NULL);
    uint8_t id[MSG_ID_BYTES];
    harness_receive(sao, 10000, id, NULL); /* and never confirmed: a dead letter after one attempt */
    client_close(&sao);
    char hex[33], *out = NULL;
    wire_id_hex(id, hex);
    for (int64_t deadline = harness_deadline(10000); out == NULL || strstr(out, hex) == NULL;) {
        free(out);
        if (harness_ms() > deadline)
            fail_msg("not a dead letter after 10 s");
        harness_sleep_ms(100);
        out = harness_admin(h, true, "dead-letters list", NULL, 0);
    }
    free(out);
    wait_status(h, src, "awaitingAck", 1, 10000);
    const char *discard[] = {hex, "sent again on paper"};
    free(harness_admin(h, true, "dead-letters discard", discard, 2));
    wait_status(h, src, "refused", 1, 10000);
    json_t *o = adapter_status(h, src);
    assert_int_equal(status_int(o, "awaitingAck"), 0);
    assert_int_equal(status_int(o, "overdueAck"), 0);
    json_decref(o);
    char cmd[1600], text[4096];
    snprintf(cmd, sizeof cmd, "'%s/referral-adapter' status --config '%s' --id %s 2>&1", h->bin,
             h->adapters[src].config, hex);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    text[fread(text, 1, sizeof text - 1, p)] = '\0';
    pclose(p);
    if (strstr(text, "discarded at the broker by ops-admin: sent again on paper") == NULL)
        fail_msg("status --id does not say who discarded it and why: %s", text);
    harness_adapter_stop(h, src, SIGTERM);
    harness_stop(&h);
}

/* Waits until the message is a dead letter. */
static void wait_dead(harness_t *h, const char *hex)
{
    char *out = NULL;
    for (int64_t deadline = harness_deadline(10000); out == NULL || strstr(out, hex) == NULL;) {
        free(out);
        if (harness_ms() > deadline)
            fail_msg("%s is not a dead letter after 10 s", hex);
        harness_sleep_ms(100);
        out = harness_admin(h, true, "dead-letters list", NULL, 0);
    }
    free(out);
}

/* The sink filed and ACKed a referral but its CONFIRM was lost: a dead letter all the same. The admin who
 * discards it must not make its source show it refused (it was filed); and an ACK is never discarded (its
 * source needs the answer): it is requeued. */
static void an_answered_referral_and_an_ack_are_not_given_up(void **state)
{
    (void)state;
    harness_t *h = harness_start("retry_base_ms = 100\nretry_max_ms = 200\nretry_limit = 1\n");
    client_t *cpd = harness_client(h, h->cpd, 16), *sao = harness_client(h, h->sao, 16);
    msg_id_t referral = submit_one(h, cpd, h->cpd);
    uint8_t *env;
    size_t len;
    uint32_t attempt;
    assert_ok(client_receive(sao, 10000, &env, &len, &attempt));
    uint8_t received[RB_HASH_BYTES];
    rbcrypto_sha256(env, len, received);
    free(env);
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    ack.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
    ack.intake_reference = "SAO-2026-000001";
    ack.received_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, received};
    ack.decided_ms = harness_ms();
    size_t body_len = rb__ack_body__get_packed_size(&ack);
    uint8_t *body = malloc(body_len);
    assert_non_null(body);
    rb__ack_body__pack(&ack, body);
    envelope_params_t p = {.kind = RB__KIND__KIND_ACK,
                           .ref = &referral,
                           .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                           .created_ms = harness_ms()};
    msg_id_t ack_id;
    assert_ok(envelope_seal(h->sao, identity_card(h->cpd), &p, body, body_len, &ack_id, &env, &len));
    free(body);
    harness_submit_ok(sao, env, len); /* filed and answered; the CONFIRM never comes */
    free(env);
    assert_ok(client_receive(cpd, 10000, &env, &len, &attempt)); /* the ACK, never confirmed either */
    free(env);
    char hex[33], ack_hex[33];
    wire_id_hex(referral.bytes, hex);
    wire_id_hex(ack_id.bytes, ack_hex);
    wait_dead(h, hex);
    wait_dead(h, ack_hex);
    const char *discard[] = {hex, "sent again on paper"}, *discard_ack[] = {ack_hex, "no one needs it"};
    free(harness_admin(h, true, "dead-letters discard", discard, 2));
    /* No notice of it to the source: its answer stands (what comes is the ACK again, if anything). */
    for (int64_t until = harness_deadline(1500); harness_ms() < until;) {
        uint8_t *got;
        if (client_receive(cpd, 100, &got, &len, &attempt) != RB_OK)
            continue;
        Rb__Header *hd;
        assert_ok(envelope_peek_header(got, len, &hd));
        if (hd->kind == RB__KIND__KIND_NOTICE)
            fail_msg("the source was sent a notice about a referral it had the answer to");
        rb__header__free_unpacked(hd, NULL);
        free(got);
    }
    char *out = harness_admin(h, false, "dead-letters discard", discard_ack, 2);
    assert_non_null(
        strstr(out, "an ACK or a key notice is never discarded (its recipient needs it): requeue it"));
    free(out);
    client_close(&cpd);
    client_close(&sao);
    harness_stop(&h);
}

/* A broker of an earlier release let a revocation notice expire (dead-lettered, as its ledger says): the
 * upgraded broker queues it again at start, and the sink gets it. */
static void a_notice_an_earlier_release_let_expire_is_sent(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    char key_id[17], path[700], err[512];
    card_key_id_hex(identity_card(h->mallory)->key_id, key_id);
    const char *revoke[] = {key_id, "superseded", "0"};
    free(harness_admin(h, true, "key revoke", revoke, 3));
    assert_int_equal(harness_signal(h, SIGTERM), 0);
    /* What the earlier release did, through the broker's own store: dead_lettered, as its ledger says. */
    test_path(path, sizeof path, "%s/broker.db", h->data);
    sqlite3 *db;
    sqlite3_stmt *st;
    uint8_t notice[MSG_ID_BYTES];
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT message_id FROM messages WHERE kind = 5 AND recipient = "
                                        "'sao-intake'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    memcpy(notice, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
    sqlite3_finalize(st);
    sqlite3_close(db);
    store_t *store;
    assert_ok(store_open(&store, path, false, err, sizeof err));
    assert_ok(store_begin(store));
    assert_ok(store_dead(store, notice, "time to live expired", harness_ms()));
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = harness_ms();
    e.action = "dead_lettered";
    e.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, notice};
    e.outcome = "dead";
    e.detail = "time to live expired";
    assert_ok(store_event(store, &e, NULL));
    assert_ok(store_commit(store));
    store_close(&store);
    harness_spawn(h);
    client_t *sao = harness_client(h, h->sao, 16);
    uint8_t got[MSG_ID_BYTES];
    harness_receive(sao, 5000, got, NULL);
    assert_memory_equal(got, notice, MSG_ID_BYTES);
    assert_ok(client_confirm(sao, got));
    client_close(&sao);
    size_t log_len;
    char *log = test_read_file(h->log, &log_len);
    assert_non_null(strstr(log, "event=dead_notices_requeued count=1"));
    free(log);
    harness_stop(&h);
}

/* A party that never confirms a key notice (a broken adapter, or one holding a stolen key) is not sent it
 * for ever, a ledger leaf each time: after the attempt limit it waits for that party's next HELLO. */
static void an_unconfirmed_notice_waits_for_the_next_hello(void **state)
{
    (void)state;
    harness_t *h = harness_start("retry_base_ms = 100\nretry_max_ms = 200\nretry_limit = 2\n");
    client_t *sao = harness_client(h, h->sao, 16);
    char key_id[17];
    card_key_id_hex(identity_card(h->mallory)->key_id, key_id);
    const char *revoke[] = {key_id, "superseded", "0"};
    free(harness_admin(h, true, "key revoke", revoke, 3));
    uint8_t got[MSG_ID_BYTES], first[MSG_ID_BYTES];
    uint32_t attempt;
    harness_receive(sao, 5000, first, &attempt);
    assert_int_equal(attempt, 1);
    harness_receive(sao, 5000, got, &attempt);
    assert_int_equal(attempt, 2);
    uint8_t *env;
    size_t len;
    rb_err rc = client_receive(sao, 1500, &env, &len, &attempt);
    if (rc == RB_OK)
        fail_msg("delivered again (attempt %u) past the attempt limit", attempt);
    client_close(&sao);
    sao = harness_client(h, h->sao, 16); /* a new HELLO: it comes again, and is confirmed */
    harness_receive(sao, 5000, got, &attempt);
    assert_memory_equal(got, first, MSG_ID_BYTES);
    assert_int_equal(attempt, 3);
    assert_ok(client_confirm(sao, got));
    client_close(&sao);
    harness_stop(&h);
}

/* A police key is rotated while a referral it signed waits for the intake, away past the rotation's overlap:
 * the intake answers it sealed to the police adapter's new key (the old one retired; the broker would refuse
 * an ACK sealed to it, and the police adapter would wait for its answer for ever). */
static void an_answer_goes_to_the_sources_current_key(void **state)
{
    (void)state;
    harness_t *h = harness_start("[keys]\nrotation_overlap_ms = 1000\n");
    int snk = harness_adapter(h);
    client_t *cpd = harness_client(h, h->cpd, 0);
    submit_one(h, cpd, h->cpd);
    client_close(&cpd);
    char path[700];
    rotate_police_key(h);
    harness_sleep_ms(1500); /* the old key retires */
    harness_adapter_start(h, snk, "intake-sqlite");
    identity_t *next;
    assert_ok(identity_load(&next, test_path(path, sizeof path, "%s/cpd-2.secret", h->dir), NULL, 0));
    client_t *cpd2 = harness_client(h, next, 16);
    uint8_t got[MSG_ID_BYTES];
    harness_receive(cpd2, 15000, got, NULL); /* the ACK, which the broker took */
    assert_ok(client_confirm(cpd2, got));
    client_close(&cpd2);
    /* The sink stores the receipt after the broker has taken (and may have delivered) the ACK. */
    static const char receipted[] =
        "SELECT count(*) FROM outbox WHERE kind = 4 AND refused IS NULL AND receipted_ms IS NOT NULL";
    for (int64_t until = harness_deadline(5000); adapter_db(h, snk, receipted) != 1 && harness_ms() < until;)
        harness_sleep_ms(50);
    assert_int_equal(adapter_db(h, snk, receipted), 1);
    identity_free(&next);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

/* The intake's key is rotated twice while a referral sealed to its first key waits at the broker (the
 * intake away): started on its third key with both older ones as previous_secret, newest first, it opens
 * and answers the referral (rejected: the harness's referral has none of the order's fields). With one
 * previous key, as the manual said was enough, no configuration could open both what was sealed to the
 * first key and what was sealed to the second: the referral was held for ever. */
static void a_sink_rotated_twice_opens_what_waited(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int snk = harness_adapter(h);
    client_t *cpd = harness_client(h, h->cpd, 0);
    submit_one(h, cpd, h->cpd);
    client_close(&cpd);
    rotate_key(h, "sao", "sao-2");
    rotate_key(h, "sao-2", "sao-3");
    char out[4096];
    if (harness_sh(out, sizeof out,
                   "cd '%s' && mv sao.secret sao-1.secret && cp sao-3.secret sao.secret 2>&1", h->dir) != 0)
        fail_msg("switching the key files: %s", out);
    snprintf(h->adapter_settings, sizeof h->adapter_settings,
             "previous_secret = %s/sao-2.secret %s/sao-1.secret\n", h->dir, h->dir);
    harness_adapter_start(h, snk, "intake-sqlite");
    static const char answered[] = "SELECT count(*) FROM inbox WHERE state = 'rejected'";
    for (int64_t deadline = harness_deadline(15000); adapter_db(h, snk, answered) < 1;) {
        if (harness_ms() > deadline)
            fail_msg(
                "the referral sealed to the intake's first key was not answered in 15 s; held: %lld (see %s)",
                (long long)adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'held'"),
                h->adapters[snk].log);
        harness_sleep_ms(100);
    }
    assert_int_equal(adapter_db(h, snk, "SELECT count(*) FROM inbox WHERE state = 'held'"), 0);
    harness_adapter_stop(h, snk, SIGTERM);
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(a_disabled_recipient_loses_nothing, harness_teardown),
        cmocka_unit_test_teardown(an_older_client_is_told_to_retry, harness_teardown),
        cmocka_unit_test_teardown(a_backup_restores_after_every_admin_action, harness_teardown),
        cmocka_unit_test_teardown(a_revocation_reaches_a_sink_that_was_away, harness_teardown),
        cmocka_unit_test_teardown(a_discarded_referral_is_shown_to_its_source, harness_teardown),
        cmocka_unit_test_teardown(an_answered_referral_and_an_ack_are_not_given_up, harness_teardown),
        cmocka_unit_test_teardown(a_notice_an_earlier_release_let_expire_is_sent, harness_teardown),
        cmocka_unit_test_teardown(an_unconfirmed_notice_waits_for_the_next_hello, harness_teardown),
        cmocka_unit_test_teardown(an_answer_goes_to_the_sources_current_key, harness_teardown),
        cmocka_unit_test_teardown(a_sink_rotated_twice_opens_what_waited, harness_teardown),
    };
    return cmocka_run_group_tests_name("operator", tests, NULL, NULL);
}
