/* operations_test.c -- what admins do to a running broker, as they do it: a key rotated while referrals
 * flow, a compromised key revoked while it is sending, the last admin protected, dead letters requeued and
 * discarded. A real broker, real adapters and the real tools (referral-keys, referral-admin, referral-audit). */
#include <jansson.h>

#include "harness.h"

#include "keyfile.h"

/* Runs a shell command built from fmt; fails the test unless it exits with want. */
static void run_expect(int want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_expect(int want, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int status = system(cmd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != want)
        fail_msg("exit %d, expected %d: %s", WEXITSTATUS(status), want, cmd);
}

/* `referral-admin ... ARGS` as the harness's admin, from its secret file written on first use. */
static void admin_tool(harness_t *h, int want, const char *args)
{
    char secret[700];
    test_path(secret, sizeof secret, "%s/admin.secret", h->dir);
    if (access(secret, F_OK) != 0)
        assert_ok(identity_save(h->admin, secret, NULL, 0, 0, 0, false));
    run_expect(
        want,
        "'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s' %s >>'%s/admin.out' 2>&1",
        h->bin, h->endpoint, h->data, secret, args, h->dir);
}

/* A count from an adapter's own store (readable while the adapter runs). */
static int64_t adapter_db_int(harness_t *h, int i, const char *sql)
{
    char path[700];
    return harness_db_int(test_path(path, sizeof path, "%s/adapter-%d-data/adapter.db", h->dir, i), sql);
}

static void wait_adapter_db(harness_t *h, int i, const char *sql, int64_t want, int timeout_ms)
{
    int64_t deadline = harness_ms() + timeout_ms, got;
    while ((got = adapter_db_int(h, i, sql)) != want) {
        if (harness_ms() > deadline)
            fail_msg("%s: %lld, expected %lld (see %s)", sql, (long long)got, (long long)want,
                     h->adapters[i].log);
        harness_sleep_ms(50);
    }
}

/* Exports the ledger with the admin tool and verifies every signature in it. An export ends at the
 * latest checkpoint, so it is taken again until it holds every leaf there was when it began. */
static void export_and_verify(harness_t *h)
{
    char *status = harness_admin(h, true, "status", NULL, 0), args[800], cmd[1600], line[256] = "";
    json_t *o = json_loads(status, 0, NULL);
    free(status);
    assert_true(json_is_integer(json_object_get(o, "ledgerSize")));
    unsigned long long want = (unsigned long long)json_integer_value(json_object_get(o, "ledgerSize")),
                       got = 0;
    json_decref(o);
    char export[700];
    test_path(export, sizeof export, "%s/ledger.jsonl", h->dir);
    snprintf(args, sizeof args, "export-ledger --out '%s'", export);
    snprintf(cmd, sizeof cmd,
             "'%s/referral-audit' verify --ledger '%s/ledger.jsonl' --broker-card '%s/broker.card' 2>&1",
             h->bin, h->dir, h->data);
    for (int64_t deadline = harness_ms() + 20000; got < want; harness_sleep_ms(200)) {
        if (harness_ms() > deadline)
            fail_msg("the export holds %llu leaves, not %llu, after 20 s", got, want);
        unlink(export);
        admin_tool(h, 0, args);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        if (fgets(line, sizeof line, p) == NULL)
            line[0] = '\0';
        if (pclose(p) != 0)
            fail_msg("referral-audit verify: %s", line);
        assert_int_equal(sscanf(line, "verified: %llu leaves", &got), 1);
    }
}

/* A source rotates its key while it sends: every referral, under the old key or the new, is receipted
 * and opened by the sink (which learns the new key from the broker's notice, certified by the old key);
 * once the overlap is over, the old key is refused. */
static void rotation_with_traffic_flowing(void **state)
{
    (void)state;
    harness_t *h = harness_start("[keys]\nrotation_overlap_ms = 3000\n");
    int sink = harness_adapter(h);
    harness_adapter_start(h, sink, "intake-sqlite");
    client_t *old_client = harness_client(h, h->cpd, 0);
    int sent = 0;
    for (; sent < 5; sent++) {
        size_t len;
        msg_id_t id;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
        harness_submit_ok(old_client, env, len);
        free(env);
    }
    /* The operator's steps: rotate with the tool, register the new card with its certification. */
    run_expect(0,
               "'%s/referral-keys' rotate --old '%s/cpd.secret' --out '%s/cpd-2' --no-passphrase >/dev/null",
               h->bin, h->dir, h->dir);
    char args[800], path[700];
    snprintf(args, sizeof args, "key add --card '%s/cpd-2.card'", h->dir);
    admin_tool(h, 0, args);
    identity_t *next;
    assert_ok(identity_load(&next, test_path(path, sizeof path, "%s/cpd-2.secret", h->dir), NULL, 0));
    assert_string_equal(identity_card(next)->name, "cpd-rms");
    /* Registering the same new card again, or a card the old key did not certify, is refused. */
    admin_tool(h, 1, args);
    client_t *new_client = harness_client(h, next, 0);
    /* The overlap: both keys send, interleaved, and nothing is refused. */
    for (int i = 0; i < 10; i++, sent++) {
        size_t len;
        msg_id_t id;
        const identity_t *signer = i % 2 ? next : h->cpd;
        uint8_t *env = harness_referral(signer, h->sao, NULL, NULL, &len, &id);
        harness_submit_ok(i % 2 ? new_client : old_client, env, len);
        free(env);
    }
    wait_adapter_db(h, sink, "SELECT count(*) FROM inbox WHERE state IN ('filed', 'rejected')", sent, 20000);
    assert_int_equal(adapter_db_int(h, sink, "SELECT count(*) FROM inbox WHERE state = 'refused'"), 0);
    assert_int_equal(adapter_db_int(h, sink, "SELECT count(*) FROM inbox WHERE state = 'notice'"), 1);
    assert_int_equal(adapter_db_int(h, sink, "SELECT count(*) FROM key_notices"), 1);
    /* After the overlap the old key retires by itself: its connection and its envelopes are refused. */
    harness_sleep_ms(3200);
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    harness_submit_refused(old_client, env, len, RB__ERROR_CODE__ERROR_CODE_DISABLED);
    harness_submit_refused(new_client, env, len, RB__ERROR_CODE__ERROR_CODE_KEY_EXPIRED);
    free(env);
    env = harness_referral(next, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(new_client, env, len);
    free(env);
    client_close(&old_client);
    client_close(&new_client);
    /* A restarted sink still trusts the new key: the notice is kept and applied at start. */
    harness_adapter_stop(h, sink, SIGTERM);
    harness_adapter_start(h, sink, "intake-sqlite");
    wait_adapter_db(h, sink, "SELECT count(*) FROM inbox WHERE state IN ('filed', 'rejected')", sent + 1,
                    20000);
    export_and_verify(h);
    identity_free(&next);
    harness_stop(&h);
}

/* A sink's key is rotated while the sink still runs its old key (stopping it first was skipped): the
 * referrals sealed to the new key cannot be opened, and are held, not lost. Restarted with the new secret
 * and the old one as previous_secret, the sink files them, and those sealed to the old key too. */
static void sink_rotated_out_of_order(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int sink = harness_adapter(h);
    harness_adapter_start(h, sink, "intake-sqlite");
    client_t *source = harness_client(h, h->cpd, 0);
    size_t len;
    msg_id_t id;
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(source, env, len);
    free(env);
    run_expect(0,
               "'%s/referral-keys' rotate --old '%s/sao.secret' --out '%s/sao-2' --no-passphrase >/dev/null",
               h->bin, h->dir, h->dir);
    char args[800], path[700];
    snprintf(args, sizeof args, "key add --card '%s/sao-2.card'", h->dir);
    admin_tool(h, 0, args);
    identity_t *next;
    assert_ok(identity_load(&next, test_path(path, sizeof path, "%s/sao-2.secret", h->dir), NULL, 0));
    for (int i = 0; i < 3; i++) {
        env = harness_referral(h->cpd, next, NULL, NULL, &len, &id);
        harness_submit_ok(source, env, len);
        free(env);
    }
    wait_adapter_db(h, sink, "SELECT count(*) FROM inbox WHERE state = 'held'", 3, 20000);
    assert_int_equal(
        adapter_db_int(h, sink, "SELECT count(*) FROM inbox WHERE state IN ('filed', 'rejected')"), 1);
    assert_int_equal(adapter_db_int(h, sink, "SELECT count(*) FROM inbox WHERE state = 'refused'"), 0);

    harness_adapter_stop(h, sink, SIGTERM);
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cp '%s/sao.secret' '%s/sao-1.secret' && mv '%s/sao-2.secret' '%s/sao.secret'",
             h->dir, h->dir, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    snprintf(h->adapter_settings, sizeof h->adapter_settings, "previous_secret = %s/sao-1.secret\n", h->dir);
    harness_adapter_start(h, sink, "intake-sqlite");
    wait_adapter_db(h, sink, "SELECT count(*) FROM inbox WHERE state IN ('filed', 'rejected')", 4, 20000);
    /* One sealed to the old key after the restart is opened with previous_secret. */
    env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(source, env, len);
    free(env);
    wait_adapter_db(h, sink, "SELECT count(*) FROM inbox WHERE state IN ('filed', 'rejected')", 5, 20000);
    client_close(&source);
    identity_free(&next);
    harness_stop(&h);
}

/* A police key is stolen while it sends: the admin revokes it as compromised since a time. What it sent
 * before is delivered; what it sent since is quarantined; anything more is refused; every adapter is told. */
static void compromised_key_revoked_while_sending(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    client_t *cpd = harness_client(h, h->cpd, 0);
    msg_id_t before[3], after[3];
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &before[i]);
        harness_submit_ok(cpd, env, len);
        free(env);
    }
    harness_sleep_ms(20);
    int64_t since = harness_ms();
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &after[i]);
        harness_submit_ok(cpd, env, len);
        free(env);
    }
    char key_id[17], since_text[24];
    card_key_id_hex(identity_card(h->cpd)->key_id, key_id);
    snprintf(since_text, sizeof since_text, "%lld", (long long)since);
    const char *future[] = {key_id, "compromised", "99999999999999"};
    free(harness_admin(h, false, "key revoke", future, 3)); /* a compromise cannot start in the future */
    const char *args[] = {key_id, "compromised", since_text};
    char *out = harness_admin(h, true, "key revoke", args, 3);
    assert_non_null(strstr(out, "\"quarantined\": 3"));
    free(out);
    /* Later envelopes are refused, on the open connection and on a new one. */
    size_t len;
    msg_id_t later;
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &later);
    harness_submit_refused(cpd, env, len, RB__ERROR_CODE__ERROR_CODE_DISABLED);
    client_close(&cpd);
    free(env);
    /* The sink gets the three sent before, and the revocation notice, and nothing else. */
    client_t *sao = harness_client(h, h->sao, 16);
    int referrals = 0, notices = 0;
    for (;;) {
        uint8_t *got;
        size_t got_len;
        uint32_t attempt;
        if (client_receive(sao, 1500, &got, &got_len, &attempt) != RB_OK)
            break;
        Rb__Header *hd;
        assert_ok(envelope_peek_header(got, got_len, &hd));
        if (hd->kind == RB__KIND__KIND_NOTICE) {
            notices++;
            assert_string_equal(hd->sender, h->broker.name);
        } else {
            bool known = false;
            for (int i = 0; i < 3; i++)
                known |= memcmp(hd->message_id.data, before[i].bytes, MSG_ID_BYTES) == 0;
            assert_true(known);
            referrals++;
        }
        assert_ok(client_confirm(sao, hd->message_id.data));
        rb__header__free_unpacked(hd, NULL);
        free(got);
    }
    assert_int_equal(referrals, 3);
    assert_int_equal(notices, 1);
    /* The admin decides: one discarded, one released (delivered after all), one left held. */
    char hex[3][33];
    for (int i = 0; i < 3; i++)
        wire_id_hex(after[i].bytes, hex[i]);
    out = harness_admin(h, true, "quarantine list", NULL, 0);
    for (int i = 0; i < 3; i++)
        assert_non_null(strstr(out, hex[i]));
    free(out);
    const char *discard[] = {hex[0], "sent with the stolen key"};
    free(harness_admin(h, true, "quarantine discard", discard, 2));
    const char *release[] = {hex[1]};
    free(harness_admin(h, true, "quarantine release", release, 1));
    uint8_t got[MSG_ID_BYTES];
    harness_receive(sao, 5000, got, NULL);
    assert_memory_equal(got, after[1].bytes, MSG_ID_BYTES);
    assert_ok(client_confirm(sao, got));
    const char *show[] = {hex[0]};
    out = harness_admin(h, true, "message show", show, 1);
    assert_non_null(strstr(out, "\"state\": \"discarded\""));
    assert_non_null(strstr(out, "\"action\": \"quarantined\", \"party\": \"ops-admin\""));
    assert_non_null(strstr(out, "\"action\": \"discarded\", \"party\": \"ops-admin\"")); /* who did it */
    assert_non_null(strstr(out, "sent with the stolen key"));
    free(out);
    out = harness_admin(h, true, "status", NULL, 0);
    assert_non_null(strstr(out, "\"quarantined\": 1"));
    free(out);
    /* And the scrape counts the one held, under its sender (refreshed each second). */
    for (int64_t deadline = harness_ms() + 5000;; harness_sleep_ms(100)) {
        char *head, *body;
        assert_int_equal(harness_http(harness_metrics_port(h), "GET /metrics HTTP/1.0\r\n\r\n", &head, &body),
                         200);
        bool held = strstr(body, "\nreferral_quarantined{adapter=\"cpd-rms\"} 1\n") != NULL;
        free(head);
        free(body);
        if (held)
            break;
        if (harness_ms() > deadline)
            fail_msg("referral_quarantined{adapter=\"cpd-rms\"} is not 1 after 5 s");
    }
    client_close(&sao);
    export_and_verify(h);
    harness_stop(&h);
}

/* The last admin able to sign cannot be disabled or revoked; with a second admin it can, and an admin key
 * rotates like any other. */
static void last_admin_cannot_be_removed(void **state)
{
    (void)state;
    harness_t *h = harness_start("[broker]\ncheckpoint_interval_ms = 200");
    char key_id[17];
    card_key_id_hex(identity_card(h->admin)->key_id, key_id);
    const char *revoke[] = {key_id, "retired", "0"}, *disable[] = {"ops-admin"};
    char *out = harness_admin(h, false, "key revoke", revoke, 3);
    assert_non_null(strstr(out, "last admin"));
    free(out);
    free(harness_admin(h, false, "adapter disable", disable, 1));
    /* Still an admin: commands work. */
    free(harness_admin(h, true, "adapter list", NULL, 0));

    identity_t *second = harness_identity("night-admin", CARD_ROLE_ADMIN, "ILCPD0000");
    harness_register(h, second);
    free(harness_admin(h, true, "key revoke", revoke, 3));
    /* The revoked admin is refused; the second one rotates its own key, then cannot remove itself. */
    client_t *c = harness_client(h, second, 0);
    identity_t *rotated = harness_identity("night-admin", CARD_ROLE_ADMIN, "ILCPD0000");
    card_cert_t cert;
    assert_ok(card_certify(identity_card(second), identity_sign_sk(second), identity_card(rotated), &cert));
    char card_text[CARD_TEXT_MAX + 1], cert_text[CARD_TEXT_MAX + 1];
    card_text[card_to_text(identity_card(rotated), card_text)] = '\0';
    cert_text[card_cert_to_text(&cert, cert_text)] = '\0';
    const char *add[] = {card_text, cert_text};
    bool ok;
    assert_ok(client_admin(c, second, "key add", add, 2, 10000, &ok, &out));
    assert_true(ok);
    free(out);
    /* During the overlap both keys sign commands, and the auditor accepts both. */
    assert_ok(client_admin(c, second, "adapter list", NULL, 0, 10000, &ok, &out));
    assert_true(ok);
    free(out);
    client_t *c2 = harness_client(h, rotated, 0);
    assert_ok(client_admin(c2, rotated, "adapter list", NULL, 0, 10000, &ok, &out));
    assert_true(ok);
    free(out);
    client_close(&c2);
    const char *disable_second[] = {"night-admin"};
    assert_ok(client_admin(c, second, "adapter disable", disable_second, 1, 10000, &ok, &out));
    assert_false(ok);
    assert_non_null(strstr(out, "last admin"));
    free(out);
    client_close(&c);
    /* The first admin's key is revoked: the rotated one exports. */
    identity_t *first = h->admin;
    h->admin = rotated;
    export_and_verify(h);
    h->admin = first;
    identity_free(&second);
    identity_free(&rotated);
    harness_stop(&h);
}

/* Dead letters are listed, requeued (one, then all, with --yes) and discarded with a reason, each
 * ledgered; a requeued letter is delivered again. */
static void dead_letters_requeue_and_discard(void **state)
{
    (void)state;
    /* The harness's cards are valid a day: warned of an hour before, so that `status` can come out clean. */
    harness_t *h = harness_start("retry_base_ms = 200\nretry_max_ms = 400\nretry_limit = 2\n"
                                 "[keys]\nexpiry_warn_ms = 7200000\nexpiry_final_warn_ms = 3600000\n");
    client_t *cpd = harness_client(h, h->cpd, 0), *sao = harness_client(h, h->sao, 16);
    msg_id_t ids[3];
    char hex[3][33];
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &ids[i]);
        harness_submit_ok(cpd, env, len);
        free(env);
        wire_id_hex(ids[i].bytes, hex[i]);
    }
    /* Never confirmed: each is dead after two attempts. */
    int64_t deadline = harness_ms() + 15000;
    char *out = NULL;
    do {
        free(out);
        uint8_t *env;
        size_t len;
        uint32_t attempt;
        if (client_receive(sao, 100, &env, &len, &attempt) == RB_OK)
            free(env);
        out = harness_admin(h, true, "dead-letters list", NULL, 0);
    } while ((strstr(out, hex[0]) == NULL || strstr(out, hex[1]) == NULL || strstr(out, hex[2]) == NULL) &&
             harness_ms() < deadline);
    for (int i = 0; i < 3; i++)
        assert_non_null(strstr(out, hex[i]));
    assert_non_null(strstr(out, "attempt limit reached"));
    free(out);
    client_close(&sao);
    /* Issue #19: `status` exits 1 while something needs someone, saying what (0 on c00af3b). */
    admin_tool(h, 1, "status");
    admin_tool(h, 1, "status --json");
    char path[700];
    size_t said_len;
    char *said = test_read_file(test_path(path, sizeof path, "%s/admin.out", h->dir), &said_len);
    assert_non_null(
        strstr(said, "referral-admin: attention: sao-intake: 3 dead letters (dead-letters list)\n"));
    free(said);

    const char *requeue[] = {hex[0]}, *discard[] = {hex[1], "duplicate of a paper referral"},
               *no_reason[] = {hex[2], ""}, *all[] = {"all"};
    free(harness_admin(h, true, "dead-letters discard", discard, 2));
    free(harness_admin(h, false, "dead-letters discard", discard, 2)); /* not a dead letter any more */
    free(harness_admin(h, false, "dead-letters discard", no_reason, 2));
    free(harness_admin(h, true, "dead-letters requeue", requeue, 1));
    out = harness_admin(h, true, "dead-letters requeue", all, 1);
    assert_non_null(strstr(out, "\"requeued\": 1"));
    free(out);
    /* Both requeued letters come again; this time they are confirmed. */
    sao = harness_client(h, h->sao, 16);
    for (int n = 0; n < 2; n++) {
        uint8_t got[MSG_ID_BYTES];
        harness_receive(sao, 5000, got, NULL);
        assert_true(memcmp(got, ids[0].bytes, MSG_ID_BYTES) == 0 ||
                    memcmp(got, ids[2].bytes, MSG_ID_BYTES) == 0);
        assert_ok(client_confirm(sao, got));
    }
    out = harness_admin(h, true, "dead-letters list", NULL, 0);
    assert_string_equal(out, "[\n]");
    free(out);
    const char *show[] = {hex[1]};
    out = harness_admin(h, true, "message show", show, 1);
    assert_non_null(strstr(out, "\"state\": \"discarded\""));
    assert_non_null(strstr(out, "duplicate of a paper referral"));
    assert_non_null(strstr(out, "\"action\": \"discarded\", \"party\": \"ops-admin\""));
    assert_non_null(strstr(out, "\"envelopeBytes\": 0"));
    free(out);
    /* The tool asks for --yes before anything it cannot undo. */
    char args[200];
    snprintf(args, sizeof args, "dead-letters discard %s --reason x", hex[0]);
    admin_tool(h, 2, args);
    admin_tool(h, 2, "dead-letters requeue --all");
    admin_tool(h, 0, "dead-letters list");
    /* The source is told of the discard (a notice of its own): until it takes it, status says it waits. */
    admin_tool(h, 1, "status");
    client_t *told = harness_client(h, h->cpd, 16);
    uint8_t notice[MSG_ID_BYTES];
    harness_receive(told, 5000, notice, NULL);
    assert_ok(client_confirm(told, notice));
    client_close(&told);
    for (int64_t until = harness_deadline(5000); harness_ms() < until; harness_sleep_ms(50)) {
        char *o = harness_admin(h, true, "status", NULL, 0);
        bool calm = strstr(o, "\"attention\": []") != NULL;
        free(o);
        if (calm)
            break;
    }
    admin_tool(h, 0, "status");
    client_close(&cpd);
    client_close(&sao);
    export_and_verify(h);
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(rotation_with_traffic_flowing, harness_teardown),
        cmocka_unit_test_teardown(sink_rotated_out_of_order, harness_teardown),
        cmocka_unit_test_teardown(compromised_key_revoked_while_sending, harness_teardown),
        cmocka_unit_test_teardown(last_admin_cannot_be_removed, harness_teardown),
        cmocka_unit_test_teardown(dead_letters_requeue_and_discard, harness_teardown),
    };
    return cmocka_run_group_tests_name("operations", tests, NULL, NULL);
}
