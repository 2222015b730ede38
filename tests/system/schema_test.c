/* schema_test.c -- every database an earlier release made is upgraded by today's code with what it held
 * still there and usable, and a layout that no release made is refused. The databases are the fixtures in
 * tests/vectors/schemas/ (made by make.py there from each release's own migrations): the broker's, the
 * adapter's and the intake's, including the layouts broker schema 4 and adapter schema 5 had before they
 * were changed in place. */
#include "harness.h"

#include "astore.h"
#include "connector.h"
#include "store.h"

#define FIXTURES "tests/vectors/schemas"

/* What make.py put in every fixture: a queued referral (broker), an outbox and an inbox row (adapter). */
static const uint8_t msg_id[MSG_ID_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
#define ENVELOPE_PART "envelope of a queued referral "
#define ENVELOPE_LEN  300

typedef struct {
    char *dir;
    char path[512];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->dir = test_mkdtemp();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    test_rmdir(&f->dir);
    free(f);
    return 0;
}

/* A private copy of fixture NAME.db in the test's directory, as f->path: the checked-in file stays as made. */
static const char *copy_fixture(fixture_t *f, const char *name)
{
    char from[256];
    size_t len;
    char *bytes = test_read_file(test_path(from, sizeof from, FIXTURES "/%s.db", name), &len);
    if (bytes == NULL)
        fail_msg("fixture %s missing (run tests from the repository root)", from);
    test_path(f->path, sizeof f->path, "%s/%s.db", f->dir, name);
    unlink(f->path);
    test_write_file(f->path, bytes, len, 0600);
    free(bytes);
    return f->path;
}

static void assert_envelope(const uint8_t *env, size_t len)
{
    assert_int_equal(len, ENVELOPE_LEN);
    for (size_t i = 0; i < len; i += strlen(ENVELOPE_PART))
        assert_memory_equal(env + i, ENVELOPE_PART, strlen(ENVELOPE_PART));
}

/* Every broker database a release left: opened by today's broker store, its queued referral is due to its
 * recipient with the same envelope bytes, and the dead-letter scan runs. */
static void broker_databases_upgrade(void **state)
{
    fixture_t *f = *state;
    static const char *const names[] = {"broker-v2",  "broker-v3",  "broker-v4a",
                                        "broker-v4b", "broker-v4c", "broker-v4"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        store_t *s;
        char err[512] = "";
        rb_err rc = store_open(&s, copy_fixture(f, names[i]), false, err, sizeof err);
        if (rc != RB_OK)
            fail_msg("%s: %s: %s", names[i], rb_strerror(rc), err);
        due_msg_t due[4];
        size_t n = 0;
        rc = store_due(s, "sao-intake", 1000000, due, 4, &n);
        if (rc != RB_OK || n != 1)
            fail_msg("%s: the queued referral is not due (%s, %zu due)", names[i], rb_strerror(rc), n);
        assert_memory_equal(due[0].message_id, msg_id, MSG_ID_BYTES);
        assert_envelope(due[0].envelope, due[0].len);
        free(due[0].envelope);
        uint8_t expired[4][MSG_ID_BYTES];
        int attempts[4];
        rc = store_expired(s, 1000000, 5, 3600000, expired, attempts, 4, &n);
        if (rc != RB_OK || n != 0)
            fail_msg("%s: dead-letter scan: %s, %zu", names[i], rb_strerror(rc), n);
        store_close(&s);
        assert_int_equal(harness_db_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    }
}

/* Every adapter database a release left: its unreceipted referral is sent again, its received envelope
 * processed, and what the runtime keeps in meta is kept. */
static void adapter_databases_upgrade(void **state)
{
    fixture_t *f = *state;
    static const char *const names[] = {"adapter-v1", "adapter-v2",  "adapter-v3",
                                        "adapter-v4", "adapter-v5a", "adapter-v5"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        astore_t *s;
        char err[512] = "";
        /* As a broker before protocol 3 left it, when the referral's recipient was disabled: refused for
         * good. Schema 7 queues it again. */
        sqlite3 *db;
        assert_int_equal(sqlite3_open(copy_fixture(f, names[i]), &db), SQLITE_OK);
        assert_int_equal(
            sqlite3_exec(db,
                         "UPDATE outbox SET refused = 'ERROR_CODE_UNKNOWN_RECIPIENT: recipient is "
                         "not a registered, enabled adapter of the right role'",
                         NULL, NULL, NULL),
            SQLITE_OK);
        sqlite3_close(db);
        rb_err rc = astore_open(&s, f->path, false, err, sizeof err);
        if (rc != RB_OK)
            fail_msg("%s: %s: %s", names[i], rb_strerror(rc), err);
        msg_id_t ids[4];
        uint8_t *envs[4];
        size_t lens[4], n = 0;
        rc = astore_outbox_unreceipted(s, 1000000, 4, ids, envs, lens, &n);
        if (rc != RB_OK || n != 1)
            fail_msg("%s: the unreceipted referral is not found (%s, %zu)", names[i], rb_strerror(rc), n);
        assert_memory_equal(ids[0].bytes, msg_id, MSG_ID_BYTES);
        assert_envelope(envs[0], lens[0]);
        free(envs[0]);
        bool found = false;
        msg_id_t id;
        uint8_t *env = NULL;
        size_t len = 0;
        assert_ok(astore_inbox_next(s, &found, &id, &env, &len));
        assert_true(found);
        assert_envelope(env, len);
        free(env);
        int64_t value = 0;
        rc = astore_meta_set(s, "schema_test", 42);
        if (rc == RB_OK)
            rc = astore_meta_get(s, "schema_test", &value);
        if (rc != RB_OK || value != 42)
            fail_msg("%s: meta not kept: %s", names[i], rb_strerror(rc));
        astore_close(&s);
    }
}

/* Every intake database a release left opens under the intake-sqlite connector, its case still filed. */
static void intake_databases_upgrade(void **state)
{
    fixture_t *f = *state;
    static const char *const names[] = {"intake-v1", "intake-v2", "intake-v3"};
    const connector_ops_t *ops = NULL;
    for (size_t i = 0; connectors[i] != NULL; i++)
        if (strcmp(connectors[i]->name, "intake-sqlite") == 0)
            ops = connectors[i];
    assert_non_null(ops);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char ini[1024], ini_path[600], err[512] = "";
        int len = snprintf(ini, sizeof ini, "[intake-sqlite]\ndatabase = %s\n", copy_fixture(f, names[i]));
        test_write_file(test_path(ini_path, sizeof ini_path, "%s/intake.conf", f->dir), ini, (size_t)len,
                        0600);
        settings_t *cfg;
        void *conf = calloc(1, ops->settings_size);
        assert_ok(settings_load(&cfg, ini_path, err, sizeof err));
        assert_ok(settings_apply(cfg, ops->settings, conf, err, sizeof err));
        connector_t *c = NULL;
        rb_err rc = ops->open(&c, NULL, conf, err, sizeof err);
        settings_free(&cfg);
        free(conf);
        if (rc != RB_OK)
            fail_msg("%s: %s: %s", names[i], rb_strerror(rc), err);
        ops->close(&c);
        assert_int_equal(harness_db_int(f->path, "SELECT count(*) FROM filings f JOIN cases c "
                                                 "ON c.intake_number = f.intake_number"),
                         1);
    }
}

/* A broker database at today's version whose layout no release made (here: without its envelopes table, as
 * a database that skipped a migration would be) is refused, with one line naming the file, its version, the
 * first difference and what to do; so is one with a table no release made. */
static void unknown_layout_refused(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *change, *said;
    } cases[] = {
        {"DROP TABLE envelopes", "table envelopes missing"},
        {"DROP INDEX messages_received; CREATE INDEX messages_received ON messages(received_ms)",
         "index messages_received differs"},
        {"CREATE TABLE mine(x)", "table mine not expected"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_t *s;
        char err[512] = "";
        test_path(f->path, sizeof f->path, "%s/broker-%zu.db", f->dir, i);
        assert_ok(store_open(&s, f->path, true, err, sizeof err));
        store_close(&s);
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, cases[i].change, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        rb_err rc = store_open(&s, f->path, false, err, sizeof err);
        if (rc == RB_OK) {
            store_close(&s);
            fail_msg("after \"%s\" the broker opened its database without complaint", cases[i].change);
        }
        assert_rb(rc, RB_ERR_BAD_VERSION);
        char version[32];
        snprintf(version, sizeof version, "version %d", STORE_SCHEMA_VERSION);
        if (strstr(err, f->path) == NULL || strstr(err, version) == NULL ||
            strstr(err, cases[i].said) == NULL || strstr(err, "OPERATIONS.md") == NULL ||
            strchr(err, '\n') != NULL)
            fail_msg("after \"%s\": unclear refusal: %s", cases[i].change, err);
    }
}

/* An operator upgrades a broker whose database was made when schema 4 kept envelopes in messages (e0ac73e):
 * a referral queued for a sink that was away is delivered by the upgraded broker when the sink comes. The
 * database is a real broker's, queued through it, then given the e0ac73e layout of version 4 (its
 * indexes, message_leaves, the envelope back in messages), as that release's broker would have left it. */
static void old_4_queue_delivered_by_a_real_broker(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    client_t *cpd = harness_client(h, h->cpd, 0);
    msg_id_t id;
    size_t len;
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(cpd, env, len);
    free(env);
    client_close(&cpd);
    assert_int_equal(harness_signal(h, SIGTERM), 0);
    char path[700];
    sqlite3 *db;
    assert_int_equal(sqlite3_open(test_path(path, sizeof path, "%s/broker.db", h->data), &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "ALTER TABLE messages ADD COLUMN envelope BLOB;"
                     "UPDATE messages SET envelope = (SELECT envelope FROM envelopes e "
                     "  WHERE e.message_id = messages.message_id);"
                     "DROP TABLE envelopes; DROP INDEX messages_order; DROP INDEX messages_attempts;"
                     "DROP INDEX messages_queued; DROP INDEX messages_due; DROP INDEX messages_case;"
                     "DROP INDEX messages_awaiting_ack; DROP INDEX messages_received;"
                     "DROP INDEX messages_notices;" /* schema 6 */
                     "CREATE INDEX messages_due ON messages(recipient, state, next_attempt_ms);"
                     "CREATE INDEX messages_case ON messages(case_key, state, submit_index);"
                     "CREATE TABLE message_leaves(message_id BLOB NOT NULL, leaf INTEGER NOT NULL,"
                     "  PRIMARY KEY(message_id, leaf)) WITHOUT ROWID;"
                     "CREATE INDEX messages_order ON messages(recipient, state, submit_index);"
                     "CREATE INDEX messages_attempts ON messages(state, attempts);"
                     "CREATE INDEX messages_queued ON messages(state, queued_ms);"
                     "PRAGMA user_version = 4;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    harness_spawn(h);
    client_t *sao = harness_client(h, h->sao, 8);
    uint8_t got[MSG_ID_BYTES];
    harness_receive(sao, 10000, got, NULL);
    assert_memory_equal(got, id.bytes, MSG_ID_BYTES);
    assert_ok(client_confirm(sao, got));
    client_close(&sao);
    harness_stop(&h);
}

/* Each released version's layout, as today's steps make it in a new database, is the one the release made
 * (its fixture): a released step edited in place fails here, as the in-place changes of broker schema 4
 * would have. A change is a new version with a step of its own (docs/OPERATIONS.md, "Upgrading"). */
static void released_layouts_pinned(void **state)
{
    (void)state;
    static const struct {
        const sqldb_schema_t *schema;
        const char *fixture;
        int version;
    } released[] = {
        {&store_schema, "broker-v2", 2},         {&store_schema, "broker-v3", 3},
        {&store_schema, "broker-v4", 4},         {&astore_schema, "adapter-v1", 1},
        {&astore_schema, "adapter-v2", 2},       {&astore_schema, "adapter-v3", 3},
        {&astore_schema, "adapter-v4", 4},       {&astore_schema, "adapter-v5", 5},
        {&intake_sqlite_schema, "intake-v1", 1}, {&intake_sqlite_schema, "intake-v2", 2},
        {&intake_sqlite_schema, "intake-v3", 3},
    };
    for (size_t i = 0; i < sizeof released / sizeof released[0]; i++) {
        char path[256], diff[256] = "";
        sqlite3 *fixture, *today;
        test_path(path, sizeof path, FIXTURES "/%s.db", released[i].fixture);
        assert_int_equal(sqlite3_open_v2(path, &fixture, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_ok(sqldb_reference(&today, released[i].schema, released[i].version));
        rb_err rc = sqldb_layout_diff(today, fixture, false, diff, sizeof diff);
        sqlite3_close(fixture);
        sqldb_close(today);
        if (rc != RB_OK)
            fail_msg(
                "%s version %d is not the layout its release made (%s): a released step was edited; make "
                "the change a new version",
                released[i].schema->what, released[i].version, diff);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(broker_databases_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(adapter_databases_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(intake_databases_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_layout_refused, setup, teardown),
        cmocka_unit_test(released_layouts_pinned),
        cmocka_unit_test_teardown(old_4_queue_delivered_by_a_real_broker, harness_teardown),
    };
    return cmocka_run_group_tests_name("schema", tests, NULL, NULL);
}
