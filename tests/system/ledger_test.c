/* ledger_test.c -- the audit ledger end to end: a real broker's run (receipts, ACK, retries, a dead letter
 * and its requeue) exported both ways, verified and replayed against the broker's tables; each kind of
 * tampering with an export detected and pinpointed; a forked ledger caught by a peer's checkpoint; a
 * ledger of 100,000 events verified; the stored tree refusing to sign over an altered node; and a leaf of an
 * action no broker writes refused by verify and flagged by replay. */
#include <sqlite3.h>

#include "audit.h"
#include "harness.h"
#include "ledger.h"
#include "note.h"
#include "sqldb.h"
#include "store.h"

#define FAST_RETRIES "retry_base_ms = 300\nretry_max_ms = 600\nretry_limit = 2\n"

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* Verifies an export; returns the problem ("" when it verifies). */
static const char *verify_file(const char *path, char why[600])
{
    audit_export_t x;
    audit_stats_t st;
    why[0] = '\0';
    rb_err rc = audit_open(&x, path, why, 600);
    if (rc == RB_OK) {
        rc = audit_verify(&x, true, &st, why, 600);
        audit_close(&x);
    }
    return rc == RB_OK ? "" : why;
}

static void expect_problem(const char *path, const char *want)
{
    char why[600];
    const char *got = verify_file(path, why);
    if (strstr(got, want) == NULL)
        fail_msg("%s: expected a problem naming \"%s\", got \"%s\"", path, want, got);
}

static void sql(const char *path, const char *statement)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(db, statement, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", statement, err);
    sqlite3_close(db);
}

static uint8_t *ack_for(harness_t *h, const msg_id_t *id, size_t *len)
{
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    ack.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
    ack.intake_reference = "SAO-2026-000001";
    uint8_t body[128], *env;
    size_t body_len = rb__ack_body__pack(&ack, body);
    msg_id_t ack_id;
    envelope_params_t p = {.kind = RB__KIND__KIND_ACK,
                           .ref = id,
                           .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                           .created_ms = harness_ms()};
    assert_ok(envelope_seal(h->sao, identity_card(h->cpd), &p, body, body_len, &ack_id, &env, len));
    return env;
}

/* Waits until the broker says a dead letter exists. */
static void wait_dead_letter(harness_t *h)
{
    int64_t deadline = harness_ms() + 15000;
    bool dead = false;
    while (!dead && harness_ms() < deadline) {
        harness_sleep_ms(100);
        char *status = harness_admin(h, true, "status", NULL, 0);
        dead = strstr(status, "\"deadLetters\": 1") != NULL;
        free(status);
    }
    assert_true(dead);
}

static void run_exported_verified_and_replayed(void **state)
{
    (void)state;
    harness_t *h = harness_start(FAST_RETRIES);
    client_t *cpd = harness_client(h, h->cpd, 0), *sao = harness_client(h, h->sao, 16);
    size_t len, ack_len;
    msg_id_t a, b;
    uint8_t got[MSG_ID_BYTES];
    /* A: delivered, confirmed, ACKed. */
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &a);
    harness_submit_ok(cpd, env, len);
    free(env);
    harness_receive(sao, 5000, got, NULL);
    assert_ok(client_confirm(sao, got));
    uint8_t *ack = ack_for(h, &a, &ack_len);
    harness_submit_ok(sao, ack, ack_len);
    free(ack);
    /* B: never confirmed, so retried and dead-lettered; then requeued and confirmed. */
    env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &b);
    harness_submit_ok(cpd, env, len);
    free(env);
    harness_receive(sao, 5000, got, NULL);
    harness_receive(sao, 5000, got, NULL);
    wait_dead_letter(h);
    char hex[33];
    wire_id_hex(b.bytes, hex);
    const char *args[] = {hex};
    free(harness_admin(h, true, "dead-letters requeue", args, 1));
    harness_receive(sao, 5000, got, NULL);
    assert_memory_equal(got, b.bytes, MSG_ID_BYTES);
    assert_ok(client_confirm(sao, got));
    harness_sleep_ms(300); /* the CONFIRM reaches the broker */
    client_close(&cpd);
    client_close(&sao);

    /* A running broker is exported by an admin, page by page; a stopped one on its host. */
    char online[700], sqlite_export[700], jsonl_export[700], tiles[700], why[600];
    test_path(online, sizeof online, "%s/online.jsonl", h->dir);
    test_path(sqlite_export, sizeof sqlite_export, "%s/ledger.sqlite", h->dir);
    test_path(jsonl_export, sizeof jsonl_export, "%s/ledger.jsonl", h->dir);
    test_path(tiles, sizeof tiles, "%s/tiles", h->dir);
    char secret[700];
    assert_ok(identity_save(h->admin, test_path(secret, sizeof secret, "%s/admin.secret", h->dir), NULL, 0, 0,
                            0, false));
    run("'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s/admin.secret' "
        "export-ledger --out '%s' >/dev/null",
        h->bin, h->endpoint, h->data, h->dir, online);
    assert_string_equal(verify_file(online, why), "");
    harness_signal(h, SIGTERM);
    for (int i = 0; i < 2; i++)
        run("'%s/referral-audit' export --data '%s' --out '%s' --format %s >/dev/null", h->bin, h->data,
            i ? jsonl_export : sqlite_export, i ? "jsonl" : "sqlite");
    run("'%s/referral-audit' export --data '%s' --out '%s' --format tiles >/dev/null", h->bin, h->data,
        tiles);
    assert_string_equal(verify_file(sqlite_export, why), "");
    assert_string_equal(verify_file(jsonl_export, why), "");
    run("'%s/referral-audit' verify --ledger '%s' --broker-card '%s/broker.card' >/dev/null", h->bin,
        jsonl_export, h->data);
    /* No case content and no ciphertext: the export is far smaller than the envelopes. */
    run("! grep -q 'Narrative\\|narrative' '%s'", jsonl_export);

    /* Replay agrees with the broker's own tables. */
    audit_export_t x;
    char db[700];
    test_path(db, sizeof db, "%s/broker.db", h->data);
    assert_ok(audit_open(&x, sqlite_export, why, sizeof why));
    char *report = NULL;
    size_t report_len = 0;
    FILE *out = open_memstream(&report, &report_len);
    int problems = -1;
    assert_ok(audit_replay(&x, db, out, &problems, why, sizeof why));
    fclose(out);
    audit_close(&x);
    if (problems != 0)
        fail_msg("replay: %s", report);
    assert_non_null(strstr(report, "accepted 1"));
    assert_non_null(strstr(report, "dead letters 0"));
    free(report);
    run("'%s/referral-audit' history --ledger '%s' %s | grep -q requeued", h->bin, sqlite_export, hex);

    /* Tampering, each pinpointed. */
    char copy[800];
    int64_t target;
    test_path(copy, sizeof copy, "%s/changed.sqlite", h->dir);
    run("cp '%s' '%s'", sqlite_export, copy);
    sqlite3 *d;
    assert_int_equal(sqlite3_open(copy, &d), SQLITE_OK);
    assert_ok(sqldb_int(sqldb_prepare(d, "SELECT min(idx) FROM ledger_leaves WHERE action = 'delivered'", ""),
                        &target));
    sqlite3_close(d);
    char statement[300], want[128];
    /* One byte of the detail text ("attempt=1" becomes "attempt=2"): still a well-formed leaf. */
    snprintf(
        statement, sizeof statement,
        "UPDATE ledger_leaves SET leaf = CAST(replace(CAST(leaf AS TEXT), 'attempt=1', 'attempt=2') AS BLOB) "
        "WHERE idx = %lld",
        (long long)target);
    sql(copy, statement);
    snprintf(want, sizeof want, "leaf %lld", (long long)target);
    expect_problem(copy, want);

    run("cp '%s' '%s'", sqlite_export, copy);
    snprintf(statement, sizeof statement, "DELETE FROM ledger_leaves WHERE idx = %lld", (long long)target);
    sql(copy, statement);
    snprintf(want, sizeof want, "leaf %lld is missing", (long long)target);
    expect_problem(copy, want);

    run("cp '%s' '%s'", sqlite_export, copy);
    snprintf(
        statement, sizeof statement,
        "UPDATE ledger_leaves SET idx = -1 WHERE idx = %lld; UPDATE ledger_leaves SET idx = %lld WHERE idx = "
        "%lld; UPDATE ledger_leaves SET idx = %lld WHERE idx = -1",
        (long long)target, (long long)target, (long long)target + 1, (long long)target + 1);
    sql(copy, statement);
    snprintf(want, sizeof want, "leaf %lld: its index field says %lld", (long long)target,
             (long long)target + 1);
    expect_problem(copy, want);

    /* A checkpoint re-signed with another key under the same origin. */
    run("cp '%s' '%s'", sqlite_export, copy);
    assert_int_equal(sqlite3_open(copy, &d), SQLITE_OK);
    int64_t size;
    assert_ok(sqldb_int(sqldb_prepare(d, "SELECT max(size) FROM ledger_checkpoints", ""), &size));
    ledger_t *l;
    assert_ok(ledger_open(&l, d));
    checkpoint_t cp = {.size = (uint64_t)size};
    char *card_text;
    card_t broker;
    assert_ok(ledger_get_meta(l, "broker_card", &card_text));
    assert_ok(card_from_text(&broker, card_text, strlen(card_text)));
    free(card_text);
    ledger_origin(&broker, cp.origin);
    assert_ok(ledger_root(l, cp.size, &cp.root));
    char note[NOTE_TEXT_MAX];
    size_t note_len;
    assert_ok(checkpoint_sign(&cp, identity_sign_sk(h->admin), note, &note_len));
    ledger_close(&l);
    sqlite3_close(d);
    char *update =
        sqlite3_mprintf("UPDATE ledger_checkpoints SET note = %Q WHERE size = %lld", note, (long long)size);
    sql(copy, update);
    sqlite3_free(update);
    snprintf(want, sizeof want, "checkpoint of size %lld: not signed", (long long)size);
    expect_problem(copy, want);

    /* A submitted header's signature broken, and a later leaf changed too: the first in leaf order is the
     * problem reported, though headers are checked on every core after the in-order checks of their batch. */
    run("cp '%s' '%s'", sqlite_export, copy);
    assert_int_equal(sqlite3_open(copy, &d), SQLITE_OK);
    int64_t submitted;
    assert_ok(sqldb_int(sqldb_prepare(d, "SELECT min(idx) FROM ledger_leaves WHERE action = 'submitted'", ""),
                        &submitted));
    assert_true(submitted < target);
    uint8_t *leaf;
    size_t leaf_len;
    Rb__LedgerEvent *e;
    assert_ok(ledger_open(&l, d));
    assert_ok(ledger_leaf(l, (uint64_t)submitted, &leaf, &leaf_len));
    assert_ok(ledger_parse_leaf(leaf, leaf_len, &e));
    assert_int_equal(e->header_signature.len, RB_SIG_BYTES);
    e->header_signature.data[RB_SIG_BYTES - 1] ^= 1;
    assert_int_equal(rb__ledger_event__pack(e, leaf), leaf_len);
    assert_ok(sqldb_run(sqldb_prepare(d, "UPDATE ledger_leaves SET leaf = ? WHERE idx = ?", "bi", leaf,
                                      (int)leaf_len, submitted)));
    rb__ledger_event__free_unpacked(e, NULL);
    free(leaf);
    ledger_close(&l);
    sqlite3_close(d);
    snprintf(statement, sizeof statement, "DELETE FROM ledger_leaves WHERE idx = %lld", (long long)target);
    sql(copy, statement);
    snprintf(want, sizeof want, "leaf %lld (submitted): the sender's signed header does not verify",
             (long long)submitted);
    expect_problem(copy, want);

    /* The JSON-lines form: a changed leaf is caught on its line. */
    test_path(copy, sizeof copy, "%s/changed.jsonl", h->dir);
    run("sed '0,/\"action\":\"delivered\"/s/\"leaf\":\"\\(..........\\)./\"leaf\":\"\\1A/' '%s' > '%s'",
        jsonl_export, copy);
    expect_problem(copy, "line ");
    harness_spawn(h);
    harness_stop(&h);
}

/* A broker whose ledger was rewritten (here: its database put back to an earlier copy, then grown
 * differently) is caught by the checkpoint a peer kept. */
static void forked_ledger_caught_by_peer(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    harness_signal(h, SIGTERM);
    run("cd '%s' && for f in broker.db*; do cp \"$f\" \"fork-$f\"; done", h->data);
    harness_spawn(h);
    client_t *cpd = harness_client(h, h->cpd, 0);
    size_t len;
    msg_id_t id;
    for (int i = 0; i < 3; i++) {
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
        harness_submit_ok(cpd, env, len);
        free(env);
    }
    const client_ledger_t *held = client_ledger(cpd);
    assert_true(held->holds);
    assert_int_equal(held->alarms, 0);
    char note[NOTE_TEXT_MAX];
    snprintf(note, sizeof note, "%s", held->note);
    client_close(&cpd);

    harness_signal(h, SIGTERM);
    run("cd '%s' && rm -f broker.db* && for f in fork-broker.db*; do mv \"$f\" \"${f#fork-}\"; done",
        h->data);
    harness_spawn(h);
    /* The rewritten ledger grows past the checkpoint held, with other events. */
    client_t *other = harness_client(h, h->mallory, 0);
    for (int i = 0; i < 6; i++) {
        uint8_t *env = harness_referral(h->mallory, h->sao, NULL, NULL, &len, &id);
        harness_submit_ok(other, env, len);
        free(env);
    }
    client_close(&other);
    char err[300];
    assert_ok(client_connect(&cpd, h->endpoint, h->cpd, &h->broker, 0, note, 10000, err, sizeof err));
    held = client_ledger(cpd);
    assert_true(held->alarms > 0);
    assert_non_null(strstr(held->alarm, "rewritten"));
    client_close(&cpd);
    harness_stop(&h);
}

/* A broker's store as init leaves it (its own card, then an admin's), in an open transaction; card_text
 * receives the broker card's text form. */
static store_t *initialised_store(const char *dir, identity_t **broker, identity_t **admin,
                                  char card_text[CARD_TEXT_MAX + 1])
{
    char path[600], why[600];
    assert_ok(
        identity_generate(broker, "broker-1", CARD_ROLE_BROKER, "IL0000000", (uint64_t)time(NULL), 86400));
    assert_ok(
        identity_generate(admin, "ops-admin", CARD_ROLE_ADMIN, "IL0000000", (uint64_t)time(NULL), 86400));
    store_t *s;
    assert_ok(store_open(&s, test_path(path, sizeof path, "%s/broker.db", dir), true, why, sizeof why));
    card_text[card_to_text(identity_card(*broker), card_text)] = '\0';
    assert_ok(store_begin(s));
    assert_ok(store_record_card(s, identity_card(*broker), "the broker's own card", 1));
    assert_ok(store_add_party(s, identity_card(*admin), 1));
    return s;
}

/* 100,000 events, a checkpoint every 1,000, exported and verified; then one node of the stored tree
 * altered, and the broker's signer refuses to sign a checkpoint over it. */
static void hundred_thousand_events(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), path[600], out[600], why[600];
    identity_t *broker, *admin;
    char note[NOTE_TEXT_MAX], card_text[CARD_TEXT_MAX + 1];
    size_t note_len;
    store_t *s = initialised_store(dir, &broker, &admin, card_text);
    ledger_t *l = store_ledger(s);
    for (int i = 0; i < 100000; i++) {
        uint8_t id[16] = {(uint8_t)i, (uint8_t)(i >> 8), (uint8_t)(i >> 16)};
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        e.at_ms = 1000 + i;
        e.action = i % 2 ? "delivered" : "disconnected";
        e.message_id = (ProtobufCBinaryData){i % 2 ? 16 : 0, id};
        e.outcome = "ok";
        e.attempt = 1;
        assert_ok(store_event(s, &e, NULL));
        if (i % 1000 == 999)
            assert_ok(ledger_checkpoint_now(l, identity_card(broker), identity_sign_sk(broker), 2, note,
                                            &note_len));
    }
    assert_ok(store_commit(s));
    assert_int_equal(ledger_size(l), 100002);
    for (int i = 0; i < 2; i++) {
        test_path(out, sizeof out, "%s/export-%d.%s", dir, i, i ? "jsonl" : "sqlite");
        assert_ok(
            audit_write(l, ledger_size(l), card_text, i ? AUDIT_JSONL : AUDIT_SQLITE, out, why, sizeof why));
        audit_export_t x;
        audit_stats_t st;
        assert_ok(audit_open(&x, out, why, sizeof why));
        if (audit_verify(&x, true, &st, why, sizeof why) != RB_OK)
            fail_msg("%s", why);
        assert_int_equal(st.leaves, 100002);
        assert_int_equal(st.checkpoints, 100);
        assert_int_equal(st.uncovered, 0);
        audit_close(&x);
    }
    /* An altered node: the signer refuses, since the tree no longer extends its last checkpoint. */
    store_close(&s);
    test_path(path, sizeof path, "%s/broker.db", dir);
    sql(path, "UPDATE ledger_nodes SET hash = zeroblob(32) WHERE id = 16 << 48"); /* leaves 0 to 65,535 */
    assert_ok(store_open(&s, path, false, why, sizeof why));
    assert_ok(store_begin(s));
    Rb__LedgerEvent more = RB__LEDGER_EVENT__INIT;
    more.action = "disconnected";
    more.outcome = "ok";
    assert_ok(store_event(s, &more, NULL));
    assert_rb(ledger_checkpoint_now(store_ledger(s), identity_card(broker), identity_sign_sk(broker), 3, note,
                                    &note_len),
              RB_ERR_HASH_MISMATCH);
    store_rollback(s);
    store_close(&s);
    identity_free(&broker);
    identity_free(&admin);
    test_rmdir(&dir);
}

/* A leaf whose action no broker writes ("delivred", a misspelt "delivered"), signed under a checkpoint as
 * a broker with a typo would sign it: `referral-audit verify` must refuse it, naming the leaf and the
 * action, and `replay` must flag it, instead of both passing it by as an event they need not check. After
 * it, a delivery of a dead letter, which the replay flags from the same table the store moves messages by. */
static void misspelt_action_refused(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), out[600], why[600];
    identity_t *broker, *admin;
    char note[NOTE_TEXT_MAX], card_text[CARD_TEXT_MAX + 1];
    size_t note_len;
    store_t *s = initialised_store(dir, &broker, &admin, card_text);
    uint8_t id[16] = {1};
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = 2;
    e.action = "delivred";
    e.message_id = (ProtobufCBinaryData){sizeof id, id};
    e.outcome = "sent";
    e.attempt = 1;
    assert_ok(store_event(s, &e, NULL));
    Rb__Header h = RB__HEADER__INIT;
    uint8_t header[128];
    h.version = 1;
    h.message_id = e.message_id;
    h.kind = RB__KIND__KIND_REFERRAL;
    h.sender = "cpd-rms";
    h.recipient = "sao-intake";
    e.header = (ProtobufCBinaryData){rb__header__pack(&h, header), header};
    e.action = "submitted";
    e.outcome = "ok";
    e.attempt = 0;
    assert_ok(store_event(s, &e, NULL));
    e.header = (ProtobufCBinaryData){0, NULL};
    e.action = "dead_lettered";
    e.outcome = "dead";
    assert_ok(store_event(s, &e, NULL));
    e.action = "delivered";
    e.outcome = "sent";
    e.attempt = 1;
    assert_ok(store_event(s, &e, NULL));
    assert_ok(ledger_checkpoint_now(store_ledger(s), identity_card(broker), identity_sign_sk(broker), 3, note,
                                    &note_len));
    assert_ok(store_commit(s));
    test_path(out, sizeof out, "%s/export.jsonl", dir);
    assert_ok(audit_write(store_ledger(s), 6, card_text, AUDIT_JSONL, out, why, sizeof why));
    store_close(&s);
    expect_problem(out, "leaf 2 (delivred): unknown action");

    const char *bin = getenv("BIN") ? getenv("BIN") : "bin";
    run("'%s/referral-audit' verify --ledger '%s' 2>&1 | tee '%s/verify.txt' | grep -q "
        "'leaf 2 (delivred): unknown action'; test \"$(wc -l <'%s/verify.txt')\" = 1",
        bin, out, dir, dir);
    run("'%s/referral-audit' verify --ledger '%s' --no-signatures >/dev/null 2>&1; test $? = 1", bin, out);
    run("'%s/referral-audit' replay --ledger '%s' >'%s/replay.txt'; test $? = 1", bin, out, dir);
    run("grep -q '^impossible: leaf 2: unknown action delivred (message 01000' '%s/replay.txt'", dir);
    run("grep -q '^impossible: leaf 5: delivered while the message is dead (message 01000' '%s/replay.txt'",
        dir);
    run("grep -q '^2 problems$' '%s/replay.txt'", dir);
    identity_free(&broker);
    identity_free(&admin);
    test_rmdir(&dir);
}

int main(void)
{
    assert_ok(rbcrypto_init());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(run_exported_verified_and_replayed, harness_teardown),
        cmocka_unit_test_teardown(forked_ledger_caught_by_peer, harness_teardown),
        cmocka_unit_test(hundred_thousand_events),
        cmocka_unit_test(misspelt_action_refused),
    };
    return cmocka_run_group_tests_name("ledger", tests, NULL, NULL);
}
