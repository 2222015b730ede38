/* fault_test.c -- seeded fault runs (docs/TESTING.md): a real broker, a police drop-folder source and an
 * intake-sqlite sink on 127.0.0.1 carry a stream of referrals while the driver kills, pauses, starves and
 * skews them at moments drawn from a seed. After each run every invariant of the system is checked and
 * printed as figures; a failed run prints the seed that replays it.
 *
 *   FAULT_RUNS=N   runs (default 5: the short version in make test; make test-faults runs 50)
 *   FAULT_SEED=S   the first run's seed (the next runs use S+1, S+2, ...); default: random */
#define _GNU_SOURCE /* prlimit */
#include <inttypes.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <jansson.h>

#include "../unit/harness.h"

#define REFERRALS 24

typedef enum {
    KILL_BROKER,
    KILL_SOURCE,
    KILL_SINK,
    STOP_BROKER,
    STOP_SOURCE,
    STOP_SINK,
    INTAKE_LOCKED,
    DISK_FULL,
    CLOCK_JUMP,
    FAULT_KINDS
} fault_kind;

static const char *const fault_names[FAULT_KINDS] = {"kill -9 broker", "kill -9 source", "kill -9 sink",
                                                     "SIGSTOP broker", "SIGSTOP source", "SIGSTOP sink",
                                                     "intake locked",  "disk full",      "clock jump"};

/* Totals over all runs, printed at the end. */
static struct {
    int runs, referrals, receipted, filed, acked, refused_full, violations;
    int faults[FAULT_KINDS];
    int64_t ledger_leaves;
} total;

static uint64_t rng_state;

/* splitmix64: the whole run follows from its seed. */
static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int between(int lo, int hi)
{
    return lo + (int)(rng() % (uint64_t)(hi - lo + 1));
}

enum { SOURCE, SINK };

typedef struct {
    harness_t *h;
    int adapter[2];
    int64_t clock_offset_ms[2];
    char intake[700], outbox[700], inbox[700], broker_db[700];
} run_t;

static const char *const connector[2] = {"rms-files", "intake-sqlite"};

static void start_adapter(run_t *r, int which)
{
    char offset[32];
    snprintf(offset, sizeof offset, "%" PRId64, r->clock_offset_ms[which]);
    setenv("RB_TEST_CLOCK_OFFSET_MS", offset, 1);
    harness_adapter_start(r->h, r->adapter[which], connector[which]);
    unsetenv("RB_TEST_CLOCK_OFFSET_MS");
}

static void restart_broker(run_t *r)
{
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", r->h->endpoint); /* the adapters' configs name it */
    harness_spawn_at(r->h, endpoint);
}

/* Referral i: the sample under its own RD number, written whole into the drop folder (rename). */
static void drop_referral(run_t *r, const char *sample, size_t len, int i)
{
    char rd[16], path[700], tmp[720], *copy = malloc(len);
    memcpy(copy, sample, len);
    snprintf(rd, sizeof rd, "FX%06d", i);
    for (char *p = copy; (p = memmem(p, len - (size_t)(p - copy), "JH512334", 8)) != NULL; p += 8)
        memcpy(p, rd, 8);
    test_path(path, sizeof path, "%s/drop/export-%03d.json", r->h->dir, i);
    snprintf(tmp, sizeof tmp, "%s.part", path);
    test_write_file(tmp, copy, len, 0644);
    assert_int_equal(rename(tmp, path), 0);
    free(copy);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* One fault, from its start to its end (durations from the seed). */
static void inject(run_t *r, fault_kind kind)
{
    harness_t *h = r->h;
    int which = kind == KILL_SINK || kind == STOP_SINK ? SINK : SOURCE;
    int ms = between(300, 2500);
    switch (kind) {
    case KILL_BROKER:
        harness_signal(h, SIGKILL);
        harness_sleep_ms(between(0, 800));
        restart_broker(r);
        break;
    case KILL_SOURCE:
    case KILL_SINK:
        harness_adapter_stop(h, r->adapter[which], SIGKILL);
        harness_sleep_ms(between(0, 800));
        start_adapter(r, which);
        break;
    case STOP_BROKER:
        kill(h->pid, SIGSTOP);
        harness_sleep_ms(ms);
        kill(h->pid, SIGCONT);
        break;
    case STOP_SOURCE:
    case STOP_SINK:
        kill(h->adapters[r->adapter[which]].pid, SIGSTOP);
        harness_sleep_ms(ms);
        kill(h->adapters[r->adapter[which]].pid, SIGCONT);
        break;
    case INTAKE_LOCKED: { /* another writer holds the intake database: the sink cannot file */
        sqlite3 *db;
        assert_int_equal(sqlite3_open(r->intake, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 10000);
        assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
        harness_sleep_ms(ms);
        assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        break;
    }
    case DISK_FULL: { /* no file of the broker's may grow past the database's size: its disk is full */
        struct rlimit full = {(rlim_t)file_size(r->broker_db), RLIM_INFINITY},
                      unlimited = {RLIM_INFINITY, RLIM_INFINITY};
        assert_int_equal(prlimit(h->pid, RLIMIT_FSIZE, &full, NULL), 0);
        harness_sleep_ms(ms);
        assert_int_equal(prlimit(h->pid, RLIMIT_FSIZE, &unlimited, NULL), 0);
        break;
    }
    case CLOCK_JUMP: /* the adapter comes back with its clock set back (under a minute: its key's validity
                      * began a minute before the run) or forward by up to six hours */
        which = between(0, 1);
        r->clock_offset_ms[which] =
            between(0, 1) ? -(int64_t)between(1000, 45000) : (int64_t)between(60000, 6 * 3600 * 1000);
        harness_adapter_stop(h, r->adapter[which], SIGTERM);
        start_adapter(r, which);
        break;
    default:
        fail();
    }
}

/* One number from a query over the source's outbox, with the intake and broker databases attached. */
static int64_t count(run_t *r, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(r->outbox, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char attach[2400];
    snprintf(attach, sizeof attach,
             "ATTACH 'file:%s?mode=ro' AS intake; ATTACH 'file:%s?mode=ro' AS broker; "
             "ATTACH 'file:%s?mode=ro' AS sink",
             r->intake, r->broker_db, r->inbox);
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_exec(db, attach, NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    } else {
        print_error("query failed: %s: %s\n", sql, sqlite3_errmsg(db));
    }
    sqlite3_close(db);
    return v;
}

#define REFERRAL_ROWS "main.outbox WHERE kind = 1"
#define RECEIPTED     REFERRAL_ROWS " AND receipt_seq IS NOT NULL"

/* The broker's total of queued and in-flight messages, from its status as an operator reads it (the
 * broker holds its database exclusively while it runs); -1 if it does not answer. */
static int64_t broker_backlog(run_t *r)
{
    char *out = harness_admin(r->h, true, "status", NULL, 0);
    json_t *status = json_loads(out, 0, NULL), *t = json_object_get(status, "total");
    int64_t n = t ? json_integer_value(json_object_get(t, "queued")) +
                        json_integer_value(json_object_get(t, "inFlight"))
                  : -1;
    json_decref(status);
    free(out);
    return n;
}

/* Everything has settled: an ACK back in the drop folder for every referral, each filed, nothing queued
 * at the broker. False after timeout_ms. */
static bool settled(run_t *r, int timeout_ms)
{
    int64_t deadline = harness_ms() + timeout_ms, filed = 0, backlog = -1;
    int acks = 0;
    while (harness_ms() < deadline) {
        acks = harness_count(r->h, "drop/acks", ".json");
        filed = harness_db_int(r->intake, "SELECT count(*) FROM filings");
        if (acks == REFERRALS && filed == REFERRALS && (backlog = broker_backlog(r)) == 0)
            return true;
        harness_sleep_ms(200);
    }
    print_message("#   at the deadline: ACKs back %d, filed %" PRId64 ", broker backlog %" PRId64 "\n", acks,
                  filed, backlog);
    return false;
}

/* A shell command's standard output (malloc'd) and exit status. */
static char *run_command(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0, n;
    char *out = calloc(1, cap + 1);
    while (len < cap && (n = fread(out + len, 1, cap - len, p)) > 0)
        len += n;
    *status = pclose(p);
    return out;
}

typedef struct {
    const char *what;
    int64_t n;
} violation_t;

/* Checks every invariant (the broker stopped); prints the figures; returns the number of violations. */
static int check_invariants(run_t *r)
{
    harness_t *h = r->h;
    int64_t receipted = count(r, "SELECT count(*) FROM " RECEIPTED);
    int64_t filed = count(r, "SELECT count(*) FROM intake.filings");
    int64_t acked = count(r, "SELECT count(*) FROM " RECEIPTED " AND acked_ms IS NOT NULL");
    /* The intake schema makes a message id and an intake number unique by itself; what can go wrong is
     * one referral (one RD number, one case) filed twice under two message ids, or not at all. */
    violation_t v[] = {
        {"referrals dropped but never receipted", REFERRALS - receipted},
        {"receipted but not filed",
         count(r, "SELECT count(*) FROM " RECEIPTED " AND NOT EXISTS (SELECT 1 FROM "
                  "intake.filings f WHERE f.message_id = lower(hex(outbox.message_id)))")},
        {"filed but never receipted",
         count(r, "SELECT count(*) FROM intake.filings f WHERE NOT EXISTS "
                  "(SELECT 1 FROM " RECEIPTED " AND lower(hex(message_id)) = f.message_id)")},
        {"referrals filed more than once (filings of one case)",
         count(r, "SELECT count(*) FROM intake.cases c WHERE (SELECT count(*) FROM intake.filings f "
                  "WHERE f.intake_number = c.intake_number) <> 1")},
        {"cases other than one per referral", count(r, "SELECT count(*) FROM intake.cases") - REFERRALS},
        {"receipted but the ACK not back", receipted - acked},
        {"intake numbers skipped",
         count(r, "SELECT (SELECT coalesce(max(last), 0) FROM intake.intake_counters) - count(*) "
                  "FROM intake.cases")},
        {"messages left at the broker (not confirmed)",
         count(r, "SELECT count(*) FROM broker.messages WHERE state <> 'confirmed'")},
        {"envelopes at the sink not filed (received, held or refused)",
         count(r, "SELECT count(*) FROM sink.inbox WHERE state <> 'filed'")},
        {"audit verify or replay failed", 0},
        {"replay disagrees with the adapters", 0},
    };
    char cmd[6000], export[700];
    int status;
    test_path(export, sizeof export, "%s/ledger.sqlite", h->dir);
    snprintf(cmd, sizeof cmd,
             "'%s/referral-audit' export --data '%s' --out '%s' >/dev/null && "
             "'%s/referral-audit' verify --ledger '%s' --broker-card '%s/broker.card' >/dev/null && "
             "'%s/referral-audit' replay --ledger '%s' --data '%s' 2>&1",
             h->bin, h->data, export, h->bin, export, h->data, h->bin, export, h->data);
    char *replay = run_command(cmd, &status);
    int64_t ledger_accepted = -1;
    char *summary = strstr(replay, "messages "), *a = strstr(replay, "; accepted ");
    if (a != NULL)
        ledger_accepted = strtoll(a + 11, NULL, 10);
    v[9].n = status != 0;
    v[10].n = ledger_accepted != acked || ledger_accepted != filed;
    int64_t leaves = count(r, "SELECT count(*) FROM broker.ledger_leaves");
    int violations = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i].n != 0) {
            violations++;
            print_message("#   VIOLATION: %s: %" PRId64 "\n", v[i].what, v[i].n);
        }
    print_message("#   referrals %d, receipted %" PRId64 ", filed %" PRId64 ", acked %" PRId64
                  ", ledger leaves %" PRId64 ", ledger says accepted %" PRId64 "\n#   replay: %.*s\n",
                  REFERRALS, receipted, filed, acked, leaves, ledger_accepted,
                  summary ? (int)strcspn(summary, "\n") : 0, summary ? summary : "");
    total.receipted += (int)receipted;
    total.filed += (int)filed;
    total.acked += (int)acked;
    total.ledger_leaves += leaves;
    free(replay);
    return violations;
}

static void fault_run(void **state)
{
    uint64_t seed = *(uint64_t *)*state;
    rng_state = seed;
    print_message("# run seed %" PRIu64 " (replay: FAULT_SEED=%" PRIu64 " FAULT_RUNS=1)\n", seed, seed);
    run_t r = {.h = harness_start("retry_base_ms = 100\nretry_max_ms = 1000\n")};
    harness_t *h = r.h;
    r.adapter[SOURCE] = harness_adapter(h);
    r.adapter[SINK] = harness_adapter(h);
    test_path(r.intake, sizeof r.intake, "%s/intake.db", h->dir);
    test_path(r.outbox, sizeof r.outbox, "%s/adapter-%d-data/adapter.db", h->dir, r.adapter[SOURCE]);
    test_path(r.broker_db, sizeof r.broker_db, "%s/broker.db", h->data);
    test_path(r.inbox, sizeof r.inbox, "%s/adapter-%d-data/adapter.db", h->dir, r.adapter[SINK]);
    size_t len;
    char *sample = test_read_file("adapters/samples/valid/01-fatal-shooting.json", &len);
    assert_non_null(sample);
    char path[700];
    mkdir(test_path(path, sizeof path, "%s/drop", h->dir), 0750);
    start_adapter(&r, SINK); /* creates the intake database the faults lock */
    start_adapter(&r, SOURCE);

    /* The stream: a few referrals before each fault and the rest after the last one. */
    int faults = between(4, 6), dropped = 0, kinds[FAULT_KINDS] = {0};
    for (int f = 0; f < faults; f++) {
        for (int n = between(1, REFERRALS / faults); n > 0 && dropped < REFERRALS; n--)
            drop_referral(&r, sample, len, dropped++);
        harness_sleep_ms(between(100, 1200));
        fault_kind kind = (fault_kind)between(0, FAULT_KINDS - 1);
        kinds[kind]++;
        total.faults[kind]++;
        inject(&r, kind);
    }
    while (dropped < REFERRALS)
        drop_referral(&r, sample, len, dropped++);
    free(sample);

    bool calm = settled(&r, 90000);
    harness_adapter_stop(h, r.adapter[SOURCE], SIGTERM);
    harness_adapter_stop(h, r.adapter[SINK], SIGTERM);
    int status = harness_signal(h, SIGTERM);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char figures[400] = "";
    for (int k = 0; k < FAULT_KINDS; k++)
        if (kinds[k] > 0)
            snprintf(figures + strlen(figures), sizeof figures - strlen(figures), "%s%s x%d",
                     figures[0] ? ", " : "", fault_names[k], kinds[k]);
    /* Counted where the refusals arrive: the broker's own log is a file its disk limit also stops. */
    char cmd[1000];
    snprintf(cmd, sizeof cmd,
             "cat '%s/'adapter-*.log | grep 'event=submit_deferred' | grep -c 'could not store' || true",
             h->dir);
    char *out = run_command(cmd, &status);
    int64_t full = strtoll(out, NULL, 10);
    free(out);
    total.refused_full += (int)full;
    print_message("#   faults: %s; submissions refused by the full disk: %" PRId64 "%s\n", figures, full,
                  calm ? "" : "; NOT SETTLED after 90 s");
    int violations = check_invariants(&r) + !calm;
    total.runs++;
    total.referrals += REFERRALS;
    total.violations += violations;
    if (violations > 0)
        fail_msg("run seed %" PRIu64 ": %d violations", seed, violations);
    harness_free(h);
}

/* The broker's disk fills (no file of its own may grow): a submission that needs room is refused with a
 * STORAGE error naming the reason, the broker stays up, nothing is delivered that it cannot record (a
 * DELIVER missing from its records would be CONFIRMed and ACKed for a message it holds as never delivered,
 * and the ACK refused: the bug a fault run found), and once space returns what was accepted before is
 * delivered, each once, and the refused submission is taken. */
static void disk_full_refuses_then_recovers(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    client_t *src = harness_client(h, h->cpd, 0);
    enum { STORED = 5 };
    for (int i = 0; i < STORED; i++) {
        size_t len;
        msg_id_t id;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
        harness_submit_ok(src, env, len);
        free(env);
    }
    char db[700];
    test_path(db, sizeof db, "%s/broker.db", h->data);
    struct rlimit full = {(rlim_t)file_size(db), RLIM_INFINITY}, unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    assert_int_equal(prlimit(h->pid, RLIMIT_FSIZE, &full, NULL), 0);
    char narrative[3000];
    memset(narrative, 'x', sizeof narrative - 1);
    narrative[sizeof narrative - 1] = '\0';
    client_result_t r = {.accepted = true};
    size_t len = 0;
    uint8_t *env = NULL;
    for (int tries = 0; r.accepted && tries < 200; tries++) {
        msg_id_t id;
        free(env);
        env = harness_referral(h->cpd, h->sao, narrative, NULL, &len, &id);
        assert_ok(client_submit(src, env, len, 10000, &r));
    }
    assert_false(r.accepted);
    assert_int_equal(r.code, RB__ERROR_CODE__ERROR_CODE_STORAGE);
    print_message("# refused on a full disk: %s\n", r.reason);
    assert_non_null(strstr(r.reason, "could not store it"));
    client_t *snk = harness_client(h, h->sao, 10);
    uint8_t *early;
    size_t early_len;
    uint32_t attempt;
    assert_int_equal(client_receive(snk, 1500, &early, &early_len, &attempt), RB_ERR_IO);
    assert_int_equal(prlimit(h->pid, RLIMIT_FSIZE, &unlimited, NULL), 0);
    for (int i = 0; i < STORED; i++) {
        uint8_t id[MSG_ID_BYTES];
        harness_receive(snk, 10000, id, &attempt);
        assert_int_equal(attempt, 1);
        assert_ok(client_confirm(snk, id));
    }
    harness_submit_ok(src, env, len);
    free(env);
    client_close(&snk);
    client_close(&src);
    harness_stop(&h);
}

int main(void)
{
    const char *runs_env = getenv("FAULT_RUNS"), *seed_env = getenv("FAULT_SEED");
    int runs = runs_env ? atoi(runs_env) : 5;
    assert_ok(rbcrypto_init());
    uint64_t first;
    if (seed_env != NULL)
        first = strtoull(seed_env, NULL, 0);
    else
        rbcrypto_random(&first, sizeof first);
    first %= 1000000000000ULL; /* short enough to type */
    struct CMUnitTest *tests = calloc((size_t)runs + 1, sizeof *tests);
    uint64_t *seeds = calloc((size_t)runs, sizeof *seeds);
    char(*names)[48] = calloc((size_t)runs, sizeof *names);
    tests[0] = (struct CMUnitTest){.name = "disk full: refuses, holds deliveries, recovers",
                                   .test_func = disk_full_refuses_then_recovers,
                                   .teardown_func = harness_teardown};
    for (int i = 0; i < runs; i++) {
        seeds[i] = first + (uint64_t)i;
        snprintf(names[i], sizeof names[i], "fault run, seed %" PRIu64, seeds[i]);
        tests[i + 1] = (struct CMUnitTest){.name = names[i],
                                           .test_func = fault_run,
                                           .teardown_func = harness_teardown,
                                           .initial_state = &seeds[i]};
    }
    int failed = _cmocka_run_group_tests("fault_test", tests, (size_t)runs + 1, NULL, NULL);
    printf("# fault runs: %d, referrals %d, receipted %d, filed %d, acked %d, ledger leaves %" PRId64
           ", submissions refused by a full disk %d, violations %d\n# faults injected:",
           total.runs, total.referrals, total.receipted, total.filed, total.acked, total.ledger_leaves,
           total.refused_full, total.violations);
    for (int k = 0; k < FAULT_KINDS; k++)
        printf("%s %s %d", k ? "," : "", fault_names[k], total.faults[k]);
    printf("\n");
    free(tests);
    free(seeds);
    free(names);
    return failed;
}
