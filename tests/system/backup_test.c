/* backup_test.c -- online backup and checked restore, as an operator runs them.
 *
 * In process: the snapshot takes a bounded step a turn and carries a change committed between two steps.
 * With real processes: `referral-admin backup` while submissions and deliveries flow; the primary
 * stopped; `referral-broker restore` into a standby data directory holding the broker's key files; the
 * standby broker starts (its signer found the tree consistent), delivers what was queued in the backup,
 * accepts new submissions, and its ledger exported online verifies with referral-audit. Then every way a
 * backup must be refused: flipped bytes, an edited ledger leaf, an edited envelope, another broker's
 * backup, an existing database without --force, and a running broker's database even with it. */
#include <sqlite3.h>
#include <sys/wait.h>

#include "backup.h"
#include "harness.h"
#include "keyfile.h"
#include "ledger.h"
#include "merkle.h"
#include "sqldb.h"
#include "store.h"

#define LOADED     100         /* referrals in the primary before the backup */
#define NARRATIVE  (30 * 1024) /* bytes of narrative each: the database grows to a few MiB */
#define MAX_IDS    4096
#define OUTPUT_MAX 8192

/* Runs a shell command; returns its exit status, with its stdout and stderr in out. */
static int sh(char out[OUTPUT_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char out[OUTPUT_MAX], const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, OUTPUT_MAX - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* A sealed referral whose narrative is big enough to make the database grow. */
static uint8_t *big_referral(harness_t *h, int n, size_t *len, msg_id_t *id)
{
    char *narrative = malloc(NARRATIVE + 1);
    assert_non_null(narrative);
    for (size_t i = 0; i < NARRATIVE; i++)
        narrative[i] = (char)('a' + (i * 7 + (size_t)n) % 26);
    narrative[NARRATIVE] = '\0';
    Rb__Referral r = RB__REFERRAL__INIT;
    r.schema_version = 1;
    r.agency_ori = "ILCPD0000";
    r.rd_number = "JH512334";
    r.revision = 1;
    r.narrative = narrative;
    size_t body_len = rb__referral__get_packed_size(&r);
    uint8_t *body = malloc(body_len);
    rb__referral__pack(&r, body);
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = harness_ms()};
    uint8_t *env;
    assert_ok(envelope_seal(h->cpd, identity_card(h->sao), &p, body, body_len, id, &env, len));
    free(body);
    free(narrative);
    return env;
}

static void submit_big(harness_t *h, client_t *cpd, int n, msg_id_t *id)
{
    size_t len;
    uint8_t *env = big_referral(h, n, &len, id);
    harness_submit_ok(cpd, env, len);
    free(env);
}

/* Takes any delivery waiting (up to wait_ms) and confirms it; returns whether there was one. */
static bool confirm_one(client_t *sink, int wait_ms, uint8_t id[MSG_ID_BYTES])
{
    uint8_t *env;
    size_t len;
    uint32_t attempt;
    if (client_receive(sink, wait_ms, &env, &len, &attempt) != RB_OK)
        return false;
    msg_id_t got;
    assert_ok(envelope_peek_id(env, len, &got));
    free(env);
    memcpy(id, got.bytes, MSG_ID_BYTES);
    assert_ok(client_confirm(sink, id));
    return true;
}

static char *admin_command(harness_t *h, char *cmd, size_t cap, const char *what)
{
    test_path(
        cmd, cap,
        "'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s/admin.secret' %s 2>&1",
        h->bin, h->endpoint, h->data, h->dir, what);
    return cmd;
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqldb_int(sqldb_prepare(db, sql, ""), &v) != RB_OK)
        fail_msg("%s: %s: %s", path, sql, sqlite3_errmsg(db));
    sqlite3_close(db);
    return v;
}

static bool has_message(const char *path, const uint8_t id[MSG_ID_BYTES])
{
    sqlite3 *db;
    int64_t n = 0;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_ok(
        sqldb_int(sqldb_prepare(db, "SELECT count(*) FROM messages WHERE message_id = ?", "b", id, 16), &n));
    sqlite3_close(db);
    return n == 1;
}

static void expect_mode(const char *path, mode_t want)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 0777) != want)
        fail_msg("%s: mode %o, expected %o", path, (unsigned)(st.st_mode & 0777), (unsigned)want);
}

/* --- in process: bounded steps, and a change made between two of them carried into the snapshot -------- */

/* A backup command as admin.c runs it; *out its answer (malloc'd). */
static rb_err command_at(store_t *store, const char *command, char *const *args, size_t argc, int64_t now_ms,
                         char **out)
{
    out_t answer = {0};
    rb_err rc = backup_command(store, command, args, argc, now_ms, &answer);
    assert_false(answer.failed);
    *out = answer.buf;
    return rc;
}

static rb_err run_backup(store_t *store, const char *command, const char *arg, char **out)
{
    char *args[] = {(char *)arg};
    return command_at(store, command, args, arg ? 1 : 0, harness_ms(), out);
}

static void add_message(store_t *store, int n, size_t size)
{
    uint8_t id[MSG_ID_BYTES] = {0}, sha[RB_HASH_BYTES] = {0};
    memcpy(id, &n, sizeof n);
    Rb__Header hd = RB__HEADER__INIT;
    hd.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, id};
    hd.sender = "cpd-rms";
    hd.recipient = "sao-intake";
    uint8_t *env = calloc(1, size);
    assert_non_null(env);
    rbcrypto_random(env, size); /* incompressible, so that pages really fill */
    assert_ok(store_add_message(store, &hd, env, size, sha, 0, harness_ms()));
    free(env);
}

static void snapshot_carries_a_change_made_during_the_copy(void **state)
{
    (void)state;
    assert_ok(rbcrypto_init());
    char *dir = test_mkdtemp(), path[700], snapshot[800], stale[800], err[256];
    store_t *store;
    assert_ok(store_open(&store, test_path(path, sizeof path, "%s/broker.db", dir), true, err, sizeof err));
    assert_ok(store_begin(store));
    for (int i = 0; i < 48; i++) /* 3 MiB: more than two steps of BACKUP_STEP_PAGES */
        add_message(store, i, 64 * 1024);
    assert_ok(store_commit(store));
    /* What a broker killed during a backup leaves behind goes at the first turn. */
    mkdir(test_path(snapshot, sizeof snapshot, "%s/backups", dir), 0700);
    test_write_file(test_path(stale, sizeof stale, "%s/backups/snapshot-0123456789abcdef.db", dir), "x", 1,
                    0600);
    backup_tick(store);
    assert_int_equal(access(stale, F_OK), -1);

    char *out;
    assert_ok(run_backup(store, "backup start", NULL, &out));
    char id[17] = "";
    assert_int_equal(sscanf(out, "{\"backup\": \"%16[0-9a-f]\"", id), 1);
    free(out);
    assert_rb(run_backup(store, "backup start", NULL, &out), RB_ERR_CONFLICT); /* one at a time */
    free(out);
    backup_tick(store);
    assert_ok(run_backup(store, "backup status", id, &out));
    if (strstr(out, "\"state\": \"copying\"") == NULL || strstr(out, "\"pagesLeft\": 0") != NULL)
        fail_msg("after one turn: %s", out);
    free(out);
    out = NULL;

    /* A change committed between two steps, through the same connection. */
    assert_ok(store_begin(store));
    add_message(store, 1000, 1000);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = harness_ms();
    e.action = "broker_started";
    e.outcome = "ok";
    e.detail = "during the backup";
    assert_ok(store_event(store, &e, NULL));
    assert_ok(store_commit(store));

    int turns = 1;
    do {
        free(out);
        backup_tick(store);
        turns++;
        assert_ok(run_backup(store, "backup status", id, &out));
    } while (strstr(out, "\"state\": \"done\"") == NULL && turns < 100);
    if (strstr(out, "\"state\": \"done\"") == NULL)
        fail_msg("not done after %d turns: %s", turns, out);
    free(out);
    assert_true(turns >= 3);

    test_path(snapshot, sizeof snapshot, "%s/backups/snapshot-%s.db", dir, id);
    expect_mode(snapshot, 0600);
    /* One self-contained file: a rollback journal (file format 1), not WAL (2), so nothing else is needed. */
    size_t header_len;
    char *header = test_read_file(snapshot, &header_len);
    assert_true(header_len > 100 && header[18] == 1 && header[19] == 1);
    free(header);
    test_path(path, sizeof path, "%s/backups", dir);
    expect_mode(path, 0700);
    int n = 1000;
    uint8_t during[MSG_ID_BYTES] = {0};
    memcpy(during, &n, sizeof n);
    assert_true(has_message(snapshot, during));
    assert_int_equal(sql_int(snapshot, "SELECT count(*) FROM messages"), 49);
    assert_int_equal(sql_int(snapshot, "SELECT count(*) FROM ledger_leaves WHERE action = 'broker_started'"),
                     1);

    /* Read by chunks: the first one starts with SQLite's magic; an offset past the end is refused. */
    char *args[] = {id, "0"};
    assert_ok(command_at(store, "backup read", args, 2, harness_ms(), &out));
    char *data = strstr(out, "\"data\": \"");
    assert_non_null(data);
    uint8_t *chunk = malloc(BACKUP_CHUNK_MAX);
    size_t len;
    data += 9;
    assert_ok(keyfile_unbase64(data, strcspn(data, "\""), chunk, BACKUP_CHUNK_MAX, &len));
    assert_int_equal(len, BACKUP_CHUNK_MAX);
    assert_memory_equal(chunk, "SQLite format 3", 16);
    free(chunk);
    free(out);
    args[1] = "999999999999";
    assert_rb(command_at(store, "backup read", args, 2, harness_ms(), &out), RB_ERR_USAGE);
    free(out);
    assert_rb(run_backup(store, "backup status", "0000000000000000", &out), RB_ERR_CONFLICT);
    free(out);

    assert_ok(run_backup(store, "backup end", id, &out));
    free(out);
    assert_int_equal(access(snapshot, F_OK), -1);

    /* An admin who never comes back: the snapshot goes BACKUP_IDLE_MS after the last command about it. */
    assert_ok(run_backup(store, "backup start", NULL, &out));
    assert_int_equal(sscanf(out, "{\"backup\": \"%16[0-9a-f]\"", id), 1);
    free(out);
    backup_tick(store);
    test_path(snapshot, sizeof snapshot, "%s/backups/snapshot-%s.db", dir, id);
    assert_int_equal(access(snapshot, F_OK), 0);
    char *status_args[] = {id};
    assert_ok(command_at(store, "backup status", status_args, 1, harness_ms() - BACKUP_IDLE_MS - 1000, &out));
    free(out);
    backup_tick(store);
    assert_int_equal(access(snapshot, F_OK), -1);
    assert_rb(run_backup(store, "backup status", id, &out), RB_ERR_CONFLICT);
    free(out);
    backup_close();
    store_close(&store);
    test_rmdir(&dir);
}

/* --- real processes ------------------------------------------------------------------------------------- */

/* Starts `referral-admin backup --out FILE` in the background. */
static pid_t start_backup(harness_t *h, const char *file, const char *log)
{
    char exe[700], card[700], secret[700];
    test_path(exe, sizeof exe, "%s/referral-admin", h->bin);
    test_path(card, sizeof card, "%s/broker.card", h->data);
    test_path(secret, sizeof secret, "%s/admin.secret", h->dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen(log, "w", stdout) == NULL || dup2(fileno(stdout), 2) < 0)
            _exit(126);
        execl(exe, exe, "--broker", h->endpoint, "--broker-card", card, "--as", secret, "backup", "--out",
              file, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool in(const uint8_t (*ids)[MSG_ID_BYTES], size_t n, const uint8_t *id)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(ids[i], id, MSG_ID_BYTES) == 0)
            return true;
    return false;
}

static void backup_under_load_restores_to_a_resuming_broker(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    char path[800], out[OUTPUT_MAX], cmd[4096];
    assert_ok(identity_save(h->admin, test_path(path, sizeof path, "%s/admin.secret", h->dir), NULL, 0, 0, 0,
                            false));
    client_t *cpd = harness_client(h, h->cpd, 0), *sao = harness_client(h, h->sao, 8);
    static uint8_t before[MAX_IDS][MSG_ID_BYTES], during[MAX_IDS][MSG_ID_BYTES];
    for (int i = 0; i < LOADED; i++) {
        msg_id_t id;
        submit_big(h, cpd, i, &id);
        memcpy(before[i], id.bytes, MSG_ID_BYTES);
    }
    /* Some delivered and confirmed before the backup, so that it holds every state. */
    uint8_t got[MSG_ID_BYTES];
    for (int confirmed = 0; confirmed < 20; confirmed++)
        if (!confirm_one(sao, 5000, got))
            fail_msg("only %d delivered", confirmed);

    /* The backup, while the police keep submitting and the intake keeps confirming. */
    char file[700], log[700];
    test_path(file, sizeof file, "%s/backup.db", h->dir);
    test_path(log, sizeof log, "%s/backup.out", h->dir);
    pid_t admin = start_backup(h, file, log);
    size_t n_during = 0;
    int status = 0, confirmed_during = 0;
    int64_t deadline = harness_ms() + 60000;
    while (waitpid(admin, &status, WNOHANG) == 0) {
        if (harness_ms() > deadline || n_during == MAX_IDS) {
            kill(admin, SIGKILL);
            waitpid(admin, NULL, 0);
            fail_msg("the backup did not finish under load");
        }
        msg_id_t id;
        submit_big(h, cpd, 1000 + (int)n_during, &id);
        memcpy(during[n_during++], id.bytes, MSG_ID_BYTES);
        confirmed_during += confirm_one(sao, 1, got);
    }
    size_t len;
    char *printed = test_read_file(log, &len);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("referral-admin backup: %s", printed);
    assert_non_null(strstr(printed, "\"integrity\": \"ok\""));
    free(printed);
    expect_mode(file, 0600);
    assert_true(n_during > 0);
    client_close(&cpd);
    client_close(&sao);

    /* The broker copied in several turns, the submissions going on between them. */
    char *broker_log = test_read_file(h->log, &len), *done = strstr(broker_log, "event=backup_done");
    int steps = 0;
    long long bytes = 0, ms = 0;
    assert_non_null(done);
    assert_int_equal(sscanf(strstr(done, "bytes="), "bytes=%lld", &bytes), 1);
    assert_int_equal(sscanf(strstr(done, "steps="), "steps=%d", &steps), 1);
    assert_int_equal(sscanf(strstr(done, "ms="), "ms=%lld", &ms), 1);
    free(broker_log);
    assert_true(bytes > 2 * BACKUP_STEP_PAGES * 4096 && steps >= 2);
    int64_t in_backup = 0;
    for (size_t i = 0; i < n_during; i++)
        in_backup += has_message(file, during[i]);
    for (int i = 0; i < LOADED; i++)
        if (!has_message(file, before[i]))
            fail_msg("referral %d, receipted before the backup started, is not in it", i);
    print_message(
        "backup: %lld bytes in %d steps, %lld ms; %zu submitted and %d confirmed while it ran, %lld "
        "of those submissions in it\n",
        bytes, steps, ms, n_during, confirmed_during, (long long)in_backup);

    /* What the backup holds as not yet confirmed is what the standby must deliver. */
    static uint8_t queued[MAX_IDS][MSG_ID_BYTES];
    size_t n_queued = 0;
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT message_id FROM messages WHERE state = 'queued'", -1, &st, NULL),
        SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW && n_queued < MAX_IDS)
        memcpy(queued[n_queued++], sqlite3_column_blob(st, 0), MSG_ID_BYTES);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_true(n_queued > 0);

    /* The primary is lost; the standby gets the broker's key files out of band, and the backup. */
    harness_signal(h, SIGTERM);
    char standby[500];
    test_path(standby, sizeof standby, "%s/standby", h->dir);
    assert_int_equal(mkdir(standby, 0700), 0);
    assert_int_equal(sh(out, "cp -p '%s/broker.secret' '%s/broker.card' '%s/'", h->data, h->data, standby),
                     0);
    if (sh(out, "'%s/referral-broker' restore --from '%s' --data '%s' 2>&1", h->bin, file, standby) != 0)
        fail_msg("restore: %s", out);
    assert_non_null(strstr(out, "leaves verified"));
    assert_null(strstr(out, "next:")); /* the key files are there */
    print_message("%s", out);
    test_path(path, sizeof path, "%s/broker.db", standby);
    expect_mode(path, 0600);

    /* The standby starts: its signer found the restored tree consistent with its last checkpoint. */
    snprintf(h->data, sizeof h->data, "%s", standby);
    harness_spawn(h);
    client_t *sink = harness_client(h, h->sao, 16), *source = harness_client(h, h->cpd, 0);
    size_t delivered = 0;
    static uint8_t seen[MAX_IDS][MSG_ID_BYTES];
    while (delivered < n_queued) {
        if (!confirm_one(sink, 10000, got))
            fail_msg("the standby delivered %zu of the %zu queued in the backup", delivered, n_queued);
        if (!in((const uint8_t(*)[MSG_ID_BYTES])queued, n_queued, got))
            fail_msg("the standby delivered a message the backup did not hold as queued");
        if (!in((const uint8_t(*)[MSG_ID_BYTES])seen, delivered, got))
            memcpy(seen[delivered++], got, MSG_ID_BYTES);
    }
    /* It accepts new submissions and delivers them. */
    msg_id_t fresh;
    submit_big(h, source, 5000, &fresh);
    while (confirm_one(sink, 10000, got) && memcmp(got, fresh.bytes, MSG_ID_BYTES) != 0)
        ;
    assert_memory_equal(got, fresh.bytes, MSG_ID_BYTES);
    client_close(&sink);
    client_close(&source);

    /* Its ledger, exported online, verifies for an auditor. */
    char export[700];
    test_path(export, sizeof export, "%s/after.jsonl", h->dir);
    test_path(path, sizeof path, "export-ledger --out '%s'", export);
    if (sh(out, "%s", admin_command(h, cmd, sizeof cmd, path)) != 0)
        fail_msg("export-ledger: %s", out);
    if (sh(out, "'%s/referral-audit' verify --ledger '%s' --broker-card '%s/broker.card' 2>&1", h->bin,
           export, standby) != 0)
        fail_msg("verify: %s", out);
    assert_non_null(strstr(out, "verified:"));
    harness_stop(&h);
}

/* Flips len bytes of a file at offset. */
static void flip(const char *path, long offset, size_t len)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(fseek(f, offset + (long)i, SEEK_SET), 0);
        int c = fgetc(f);
        assert_int_equal(fseek(f, offset + (long)i, SEEK_SET), 0);
        fputc(c ^ 0xff, f);
    }
    assert_int_equal(fclose(f), 0);
}

/* Rewrites a "submitted" leaf's time, as an operator covering something up would, with the stored leaf hash
 * recomputed too: only the signed checkpoints can tell. */
static void edit_leaf(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT idx, leaf FROM ledger_leaves WHERE action = 'submitted' "
                                        "ORDER BY idx LIMIT 1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t idx = sqlite3_column_int64(st, 0);
    Rb__LedgerEvent *e =
        rb__ledger_event__unpack(NULL, (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_blob(st, 1));
    sqlite3_finalize(st);
    assert_non_null(e);
    e->at_ms -= 3600 * 1000;
    uint8_t leaf[LEDGER_LEAF_MAX];
    size_t n = rb__ledger_event__pack(e, leaf);
    rb__ledger_event__free_unpacked(e, NULL);
    merkle_hash_t hash;
    merkle_leaf_hash(leaf, n, &hash);
    assert_ok(sqldb_run(
        sqldb_prepare(db, "UPDATE ledger_leaves SET leaf = ? WHERE idx = ?", "bi", leaf, (int)n, idx)));
    assert_ok(sqldb_run(sqldb_prepare(db, "UPDATE ledger_nodes SET hash = ? WHERE id = ?", "bi", hash.bytes,
                                      MERKLE_HASH_BYTES, idx)));
    sqlite3_close(db);
}

/* restore FILE into DIR: the exit status, and the output must name want. */
static void expect_restore(harness_t *h, const char *file, const char *dir, const char *flags,
                           int want_status, const char *want)
{
    char out[OUTPUT_MAX];
    int got =
        sh(out, "'%s/referral-broker' restore --from '%s' --data '%s' %s 2>&1", h->bin, file, dir, flags);
    if (got != want_status || strstr(out, want) == NULL)
        fail_msg("restore %s into %s %s: exit %d, expected %d naming \"%s\": %s", file, dir, flags, got,
                 want_status, want, out);
}

static void restore_refuses_bad_backups(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    char path[800], out[OUTPUT_MAX], cmd[4096], file[700], copy[800], target[800];
    assert_ok(identity_save(h->admin, test_path(path, sizeof path, "%s/admin.secret", h->dir), NULL, 0, 0, 0,
                            false));
    client_t *cpd = harness_client(h, h->cpd, 0);
    for (int i = 0; i < 5; i++) {
        msg_id_t id;
        submit_big(h, cpd, i, &id);
    }
    client_close(&cpd);
    test_path(file, sizeof file, "%s/backup.db", h->dir);
    test_path(path, sizeof path, "backup --out '%s'", file);
    if (sh(out, "%s", admin_command(h, cmd, sizeof cmd, path)) != 0)
        fail_msg("backup: %s", out);
    /* Never over an existing file. */
    assert_int_equal(sh(out, "%s", admin_command(h, cmd, sizeof cmd, path)), 2);
    assert_non_null(strstr(out, "exists"));

    /* Not into a running broker's directory, even with --force. */
    expect_restore(h, file, h->data, "--force", 2, "a broker is running");

    /* Flipped bytes in a table's page header. */
    test_path(copy, sizeof copy, "%s/flipped.db", h->dir);
    assert_int_equal(sh(out, "cp '%s' '%s'", file, copy), 0);
    flip(copy, 4096, 8);
    test_path(target, sizeof target, "%s/t-flipped", h->dir);
    expect_restore(h, copy, target, "", 1, "fails the integrity check");
    assert_int_equal(access(target, F_OK), -1); /* nothing left behind */

    /* An edited ledger leaf, its stored hash edited to match. */
    test_path(copy, sizeof copy, "%s/edited-leaf.db", h->dir);
    assert_int_equal(sh(out, "cp '%s' '%s'", file, copy), 0);
    edit_leaf(copy);
    test_path(target, sizeof target, "%s/t-leaf", h->dir);
    expect_restore(h, copy, target, "", 1, "the ledger does not verify: checkpoint of size");

    /* An edited envelope: the table is not signed, but its submitted leaf names the envelope's hash. */
    test_path(copy, sizeof copy, "%s/edited-envelope.db", h->dir);
    assert_int_equal(sh(out, "cp '%s' '%s'", file, copy), 0);
    assert_int_equal(
        sh(out, "sqlite3 '%s' \"UPDATE envelopes SET envelope = envelope || x'00' WHERE rowid = 1\"", copy),
        0);
    test_path(target, sizeof target, "%s/t-envelope", h->dir);
    expect_restore(h, copy, target, "", 1, "the stored envelope is not the one its submitted leaf");

    /* A queued message passed off as discarded, its envelope blanked: the ledger says it was never
     * discarded. */
    test_path(copy, sizeof copy, "%s/blanked-envelope.db", h->dir);
    assert_int_equal(sh(out, "cp '%s' '%s'", file, copy), 0);
    assert_int_equal(
        sh(out,
           "sqlite3 '%s' \"UPDATE envelopes SET envelope = X'' WHERE rowid = 1; UPDATE messages SET "
           "state = 'discarded' WHERE message_id = (SELECT message_id FROM envelopes WHERE rowid "
           "= 1)\"",
           copy),
        0);
    test_path(target, sizeof target, "%s/t-blanked", h->dir);
    expect_restore(h, copy, target, "", 1, "discarded");

    /* Another broker's key files in the directory. */
    test_path(target, sizeof target, "%s/t-other", h->dir);
    assert_int_equal(mkdir(target, 0700), 0);
    assert_ok(card_write_file(identity_card(h->sao), test_path(path, sizeof path, "%s/broker.card", target),
                              false));
    expect_restore(h, file, target, "", 1, "belongs to another broker");

    /* An existing database is replaced only with --force, and kept. */
    test_path(target, sizeof target, "%s/t-force", h->dir);
    expect_restore(h, file, target, "", 0, "leaves verified");
    expect_restore(h, file, target, "", 2, "only with --force");
    expect_restore(h, file, target, "--force", 0, "kept as");
    test_path(path, sizeof path, "%s/broker.db.before-restore", target);
    assert_int_equal(access(path, F_OK), 0);
    expect_restore(h, file, target, "--force", 2, "from an earlier restore");
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(snapshot_carries_a_change_made_during_the_copy),
        cmocka_unit_test_teardown(backup_under_load_restores_to_a_resuming_broker, harness_teardown),
        cmocka_unit_test_teardown(restore_refuses_bad_backups, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
