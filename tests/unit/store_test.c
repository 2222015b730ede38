/* store_test.c -- the broker's database: creation, refusing a database it cannot use (not a broker
 * database, newer schema, corrupt, locked), a step undone inside a transaction, on a real SQLite file.
 * Migrations from every earlier schema: schema_test. */
#include <sqlite3.h>

#include "testutil.h"

#include "envelope.h"
#include "ledger.h"
#include "store.h"

typedef struct {
    char *dir;
    char path[512];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->dir = test_mkdtemp();
    test_path(f->path, sizeof f->path, "%s/broker.db", f->dir);
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

static void set_user_version(const char *path, int v)
{
    sqlite3 *db;
    char sql[64];
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void creates_and_reopens(void **state)
{
    fixture_t *f = *state;
    store_t *s;
    char err[256];
    assert_rb(store_open(&s, f->path, false, err, sizeof err), RB_ERR_IO); /* no file, no create */
    assert_ok(store_open(&s, f->path, true, err, sizeof err));
    store_close(&s);
    assert_null(s);
    assert_ok(store_open(&s, f->path, false, err, sizeof err));
    store_close(&s);
}

static void newer_schema_refused(void **state)
{
    fixture_t *f = *state;
    store_t *s;
    char err[256];
    assert_ok(store_open(&s, f->path, true, err, sizeof err));
    store_close(&s);
    set_user_version(f->path, STORE_SCHEMA_VERSION + 1);
    assert_rb(store_open(&s, f->path, false, err, sizeof err), RB_ERR_BAD_VERSION);
    assert_non_null(strstr(err, "newer"));
}

static void not_a_broker_database_refused(void **state)
{
    fixture_t *f = *state;
    store_t *s;
    char err[256];
    set_user_version(f->path, 0); /* an empty SQLite database */
    assert_rb(store_open(&s, f->path, false, err, sizeof err), RB_ERR_MALFORMED);
    assert_non_null(strstr(err, "not a broker database"));
}

static void corrupt_file_refused(void **state)
{
    fixture_t *f = *state;
    store_t *s;
    char err[256];
    char junk[8192];
    memset(junk, 0x5a, sizeof junk);
    test_write_file(f->path, junk, sizeof junk, 0600);
    assert_true(store_open(&s, f->path, false, err, sizeof err) != RB_OK);
    assert_null(s);
    assert_non_null(strstr(err, f->path));
}

static void locked_by_another_broker(void **state)
{
    fixture_t *f = *state;
    store_t *first, *second;
    char err[256];
    assert_ok(store_open(&first, f->path, true, err, sizeof err));
    assert_rb(store_open(&second, f->path, false, err, sizeof err),
              RB_ERR_BUSY); /* may pass: the other one may be stopping */
    assert_non_null(strstr(err, "another broker"));
    store_close(&first);
    assert_ok(store_open(&second, f->path, false, err, sizeof err));
    store_close(&second);
}

static void append(store_t *s, const char *action, uint64_t *index)
{
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = (char *)action;
    e.outcome = "ok";
    assert_ok(store_event(s, &e, index));
}

/* A step undone inside a transaction takes its ledger appends with it, in memory as on disk: the next
 * append gets the index the undone one had, and the tree reopened from the file has the same root. */
static void undone_step_leaves_the_ledger(void **state)
{
    fixture_t *f = *state;
    store_t *s;
    char err[256];
    assert_ok(store_open(&s, f->path, true, err, sizeof err));
    uint64_t before = ledger_size(store_ledger(s)), index;
    assert_ok(store_begin(s));
    append(s, "kept", &index);
    assert_int_equal(index, before);
    assert_ok(store_step_begin(s));
    append(s, "undone", &index);
    store_step_undo(s);
    assert_int_equal(ledger_size(store_ledger(s)), before + 1);
    assert_ok(store_step_begin(s));
    append(s, "kept too", &index);
    assert_ok(store_step_end(s));
    assert_int_equal(index, before + 1);
    assert_ok(store_commit(s));
    merkle_hash_t root, reopened;
    assert_ok(ledger_root(store_ledger(s), before + 2, &root));
    store_close(&s);
    assert_ok(store_open(&s, f->path, false, err, sizeof err));
    assert_int_equal(ledger_size(store_ledger(s)), before + 2);
    assert_ok(ledger_root(store_ledger(s), before + 2, &reopened));
    assert_memory_equal(root.bytes, reopened.bytes, MERKLE_HASH_BYTES);
    store_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(creates_and_reopens, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(not_a_broker_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(locked_by_another_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(undone_step_leaves_the_ledger, setup, teardown),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
