/* fault_test.c -- seeded fault runs (docs/TESTING.md): a real broker, a police drop-folder source and an
 * intake-sqlite sink on 127.0.0.1 carry a stream of referrals while the driver kills, pauses, starves and
 * skews them, and an operator disables and enables them, rotates and revokes keys, requeues and discards
 * dead letters, restores the broker from a backup and restarts adapters on changed configs, at moments
 * drawn from a seed. The operator's actions are the ones docs/OPERATIONS.md describes, done with the real
 * tools (referral-admin, referral-keys, referral-broker restore, referral-adapter status). After each run
 * every invariant of the system is checked and printed as figures; a failed run prints the seed that
 * replays it.
 *
 *   FAULT_RUNS=N   runs (default 5: the short version in make test; make test-faults runs 50)
 *   FAULT_SEED=S   the first run's seed (the next runs use S+1, S+2, ...); default: random */
#define _GNU_SOURCE /* prlimit */
#include <inttypes.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <jansson.h>

#include "../system/harness.h"

#define REFERRALS 24

/* A dead letter is made in seconds: the dead-letters action keeps the sink away for longer than this. */
#define TTL_MS 3000

/* The events of a run: faults first, then the operator's actions. */
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
    DISABLE_SOURCE,
    DISABLE_SINK,
    ROTATE_SOURCE,
    ROTATE_SINK,
    REVOKE_SOURCE,
    DEAD_LETTERS,
    BACKUP_RESTORE,
    RECONFIGURE,
    EVENT_KINDS
} event_kind;

#define FIRST_ACTION DISABLE_SOURCE

static const char *const event_names[EVENT_KINDS] = {
    "kill -9 broker",     "kill -9 source",      "kill -9 sink",    "SIGSTOP broker",    "SIGSTOP source",
    "SIGSTOP sink",       "intake locked",       "disk full",       "clock jump",        "disable source",
    "disable sink",       "rotate source key",   "rotate sink key", "revoke source key", "dead letters",
    "backup and restore", "adapter reconfigured"};

/* What the operator's actions did to referrals, per run and in total. */
typedef struct {
    int requeued, discarded, released, quarantine_discarded, lost_in_restore, refused_revoked,
        backups_refused;
} outcomes_t;

/* Totals over all runs, printed at the end. */
static struct {
    int runs, referrals, receipted, filed, acked, refused_full, violations;
    int events[EVENT_KINDS];
    outcomes_t out;
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
    char previous[2][1024]; /* this adapter's older keys, newest first, once its key was rotated */
    char reconfig[2][700];  /* its [adapter] lines of the last config change */
    char connector[2][200]; /* its connector's lines of the last config change */
    char metrics[2][700];   /* the metrics_file the last config change named, which the adapter must write */
    char key_id[2][17];     /* its current key */
    int rotations, backups;
    bool restored;      /* the broker runs on a restored backup: the ledger lost its tail */
    const char *sample; /* the referral every export is made from */
    size_t sample_len;
    int dropped; /* referrals dropped so far */
    outcomes_t out;
    char intake[700], outbox[700], inbox[700], broker_db[700], accounted[700], admin_secret[700];
} run_t;

static const char *const connector[2] = {"rms-files", "intake-sqlite"};
static const char *const party[2] = {"cpd-rms", "sao-intake"};
static const char *const key_file[2] = {"cpd", "sao"}; /* DIR/NAME.secret, as the harness wrote them */

static void start_adapter(run_t *r, int which)
{
    harness_t *h = r->h;
    char offset[32];
    snprintf(offset, sizeof offset, "%" PRId64, r->clock_offset_ms[which]);
    setenv("RB_TEST_CLOCK_OFFSET_MS", offset, 1);
    snprintf(h->adapter_settings, sizeof h->adapter_settings, "%s%s%s%s",
             r->previous[which][0] ? "previous_secret =" : "", r->previous[which],
             r->previous[which][0] ? "\n" : "", r->reconfig[which]);
    snprintf(h->connector_settings, sizeof h->connector_settings, "%s", r->connector[which]);
    harness_adapter_start(h, r->adapter[which], connector[which]);
    unsetenv("RB_TEST_CLOCK_OFFSET_MS");
}

static void restart_broker(run_t *r)
{
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", r->h->endpoint); /* the adapters' configs name it */
    harness_spawn_at(r->h, endpoint);
}

/* Drops the next referral: the sample under its own RD number, written whole into the drop folder
 * (rename). */
static void drop_referral(run_t *r)
{
    if (r->dropped >= REFERRALS)
        return;
    size_t len = r->sample_len;
    char rd[16], path[700], tmp[720], *copy = malloc(len);
    memcpy(copy, r->sample, len);
    snprintf(rd, sizeof rd, "FX%06d", r->dropped);
    for (char *p = copy; (p = memmem(p, len - (size_t)(p - copy), "JH512334", 8)) != NULL; p += 8)
        memcpy(p, rd, 8);
    test_path(path, sizeof path, "%s/drop/export-%03d.json", r->h->dir, r->dropped++);
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

/* `referral-admin ARGS` as the operator types it; fails the test unless the broker did it. */
static void admin(run_t *r, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void admin(run_t *r, char *out, size_t cap, const char *fmt, ...)
{
    harness_t *h = r->h;
    char args[2000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    if (harness_sh(out, cap,
                   "'%s/referral-admin' --broker '%s' --broker-card '%s/broker.card' --as '%s' %s 2>&1",
                   h->bin, h->endpoint, h->data, r->admin_secret, args) != 0)
        fail_msg("referral-admin %s: %s", args, out);
}

/* Records how a referral that will never be filed and ACKed was accounted for, for the invariants. */
static void account(run_t *r, const char *hex, const char *how)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(r->accounted, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO accounted VALUES(lower(?), ?)", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, hex, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, how, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* One number from a query over the source's outbox, with the accounted referrals attached, and when the
 * broker is stopped (it holds its database exclusively while it runs) the intake, sink and broker
 * databases. */
static int64_t count(run_t *r, bool all, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(r->outbox, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char attach[3200];
    int n = snprintf(attach, sizeof attach, "ATTACH 'file:%s?mode=ro' AS acct", r->accounted);
    if (all)
        snprintf(attach + n, sizeof attach - (size_t)n,
                 "; ATTACH 'file:%s?mode=ro' AS intake; ATTACH 'file:%s?mode=ro' AS broker; "
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
#define ACCOUNTED     "lower(hex(message_id)) IN (SELECT message_id FROM acct.accounted)"
/* Neither filed and ACKed, nor refused with its reason at the source, nor accounted for by the operator. */
#define OPEN REFERRAL_ROWS " AND acked_ms IS NULL AND refused IS NULL AND NOT " ACCOUNTED

/* The broker's status as an operator reads it (the caller json_decref()s it); NULL if it does not answer. */
static json_t *broker_status(run_t *r)
{
    char *out = harness_admin(r->h, true, "status", NULL, 0);
    json_t *status = json_loads(out, 0, NULL), *t = json_object_get(status, "total");
    free(out);
    if (t == NULL)
        json_decref(status);
    return t ? status : NULL;
}

static int64_t total_of(json_t *status, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(status, "total"), key));
}

/* What waits at the broker for the enabled adapters: the two the harness registers and the run never uses
 * are disabled, and the key notices queued for them wait there, as they should, until they are enabled. */
static int64_t backlog_of(json_t *status)
{
    int64_t n = 0;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(status, "adapters"), i, a)
    {
        if (json_is_true(json_object_get(a, "enabled")))
            n += json_integer_value(json_object_get(a, "queued")) +
                 json_integer_value(json_object_get(a, "inFlight"));
    }
    return n;
}

/* --- the operator's actions ----------------------------------------------------------------------------- */

/* `adapter disable`, a while, `adapter enable`: what is sent to it meanwhile waits at its sender. */
static void disable_for_a_while(run_t *r, int which)
{
    char out[4096];
    admin(r, out, sizeof out, "adapter disable %s", party[which]);
    for (int n = between(0, 2); n > 0; n--)
        drop_referral(r);
    harness_sleep_ms(between(300, 2500));
    admin(r, out, sizeof out, "adapter enable %s", party[which]);
}

/* The rotation of OPERATIONS.md, "Rotating an adapter's key": the successor made with referral-keys, the
 * adapter stopped, the new card registered, the adapter started on the new key with the old one as
 * previous_secret. With since_ms, the old key is then revoked as compromised since that time ("A
 * compromised key": rotate first, then revoke, then start the adapter on its new key). */
static void rotate(run_t *r, int which, int64_t since_ms)
{
    harness_t *h = r->h;
    char out[4096], old_id[17];
    int n = ++r->rotations;
    if (harness_sh(out, sizeof out,
                   "'%s/referral-keys' rotate --old '%s/%s.secret' --out '%s/%s-%d' --no-passphrase 2>&1",
                   h->bin, h->dir, key_file[which], h->dir, key_file[which], n) != 0)
        fail_msg("referral-keys rotate: %s", out);
    const char *k = strstr(out, "key id ");
    assert_non_null(k);
    snprintf(old_id, sizeof old_id, "%s", r->key_id[which]);
    snprintf(r->key_id[which], sizeof r->key_id[which], "%.16s", k + 7);
    harness_adapter_stop(h, r->adapter[which], SIGTERM);
    admin(r, out, sizeof out, "key add --card '%s/%s-%d.card'", h->dir, key_file[which], n);
    if (since_ms > 0) {
        char since[32];
        time_t t = (time_t)(since_ms / 1000);
        strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        admin(r, out, sizeof out, "key revoke %s --reason compromised --since %s", old_id, since);
        print_message("#   revoked: %s", out);
    }
    /* Every older key stays: what waited while the adapter was away may be sealed to any of them. */
    if (harness_sh(out, sizeof out,
                   "cp -p '%s/%s.secret' '%s/%s-previous-%d.secret' && mv '%s/%s-%d.secret' '%s/%s.secret'",
                   h->dir, key_file[which], h->dir, key_file[which], n, h->dir, key_file[which], n, h->dir,
                   key_file[which]) != 0)
        fail_msg("switching the key files: %s", out);
    char older[sizeof r->previous[which]];
    snprintf(older, sizeof older, "%s", r->previous[which]);
    if (snprintf(r->previous[which], sizeof r->previous[which], " %s/%s-previous-%d.secret%s", h->dir,
                 key_file[which], n, older) >= (int)sizeof r->previous[which])
        fail_msg("more rotations than the previous_secret line holds");
    start_adapter(r, which);
}

/* A police key compromised since a moment of the last few seconds. The operator asks the agency about each
 * quarantined message (its time of signing is in `referral-adapter status --id`): one signed before the
 * compromise is released; one signed since would be refused by the intake adapter (OPERATIONS.md), so it is
 * discarded with a reason and sent by the agency's outage route. */
static void revoke_source_key(run_t *r)
{
    harness_t *h = r->h;
    int64_t t0 = harness_ms();
    bool sink_away = between(0, 1); /* then what the key sent last is still at the broker */
    if (sink_away) {
        harness_adapter_stop(h, r->adapter[SINK], SIGTERM);
        for (int n = between(1, 3); n > 0; n--)
            drop_referral(r);
        for (int64_t deadline = harness_ms() + 5000;
             harness_ms() < deadline &&
             (count(r, false, "SELECT count(*) FROM " REFERRAL_ROWS) < r->dropped ||
              count(r, false, "SELECT count(*) FROM " REFERRAL_ROWS " AND receipt_seq IS NULL") > 0);)
            harness_sleep_ms(50);
    }
    /* Around the time the last referrals were signed, so that some were signed before and some since;
     * whole seconds, and not in the future. */
    int64_t since = t0 + between(-3000, 1500), now = harness_ms();
    since = (since < now ? since : now) / 1000 * 1000;
    rotate(r, SOURCE, since);
    if (sink_away)
        start_adapter(r, SINK);
    char out[65536];
    admin(r, out, sizeof out, "quarantine list --json");
    json_t *list = json_loads(out, 0, NULL), *m;
    assert_non_null(list);
    size_t i;
    json_array_foreach(list, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        char shown[4096];
        if (harness_sh(shown, sizeof shown, "'%s/referral-adapter' status --config '%s' --id %s 2>&1", h->bin,
                       h->adapters[r->adapter[SOURCE]].config, id) != 0)
            fail_msg("referral-adapter status --id %s: %s", id, shown);
        const char *queued = strstr(shown, "queued ");
        assert_non_null(queued);
        if (strtoll(queued + 7, NULL, 10) < since) {
            admin(r, out, sizeof out, "quarantine release %s --yes", id);
            r->out.released++;
        } else {
            admin(r, out, sizeof out,
                  "quarantine discard %s --reason 'signed after the compromise: sent by the outage route' "
                  "--yes",
                  id);
            account(r, id, "discarded");
            r->out.quarantine_discarded++;
        }
    }
    json_decref(list);
}

/* The sink is away for longer than the time to live while referrals come: they are dead-lettered. The
 * operator mends the cause (starts the sink), discards one if the agency sent it another way, and requeues
 * the rest (OPERATIONS.md, "Dead letters"). */
static void dead_letters(run_t *r)
{
    harness_t *h = r->h;
    harness_adapter_stop(h, r->adapter[SINK], SIGTERM);
    for (int n = between(1, 2); n > 0; n--)
        drop_referral(r);
    char out[65536];
    json_t *list = NULL;
    for (int64_t deadline = harness_ms() + TTL_MS + 8000; harness_ms() < deadline; harness_sleep_ms(250)) {
        admin(r, out, sizeof out, "dead-letters list --json");
        json_decref(list);
        list = json_loads(out, 0, NULL);
        if (json_array_size(list) > 0)
            break;
    }
    start_adapter(r, SINK);
    bool discard = between(0, 1);
    json_t *m;
    size_t i;
    json_array_foreach(list, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (discard && json_integer_value(json_object_get(m, "kind")) == 1) {
            admin(r, out, sizeof out, "dead-letters discard %s --reason 'sent again on paper' --yes", id);
            account(r, id, "discarded");
            r->out.discarded++;
            discard = false;
        }
    }
    json_decref(list);
    admin(r, out, sizeof out, "dead-letters requeue --all --yes");
    json_t *o = json_loads(out, 0, NULL);
    r->out.requeued += (int)json_integer_value(json_object_get(o, "requeued"));
    json_decref(o);
}

/* Lists what a restore from a backup of `leaves` leaves lost, as OPERATIONS.md ("What a restore loses")
 * tells the operator to: the referrals receipted at or beyond it and not acknowledged, at the source, and
 * the ACKs receipted at or beyond it, at the sink (each names the referral it answers). */
static void list_lost(run_t *r, int64_t leaves)
{
    const char *const query[2] = {
        "SELECT lower(hex(message_id)), envelope FROM outbox WHERE kind != 4 AND ack_status IS NULL AND "
        "refused IS NULL AND receipt_seq >= ?",
        "SELECT '', envelope FROM outbox WHERE kind = 4 AND receipt_seq >= ?"};
    const char *const path[2] = {r->outbox, r->inbox};
    for (int which = SOURCE; which <= SINK; which++) {
        sqlite3 *db;
        assert_int_equal(sqlite3_open_v2(path[which], &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, query[which], -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_int64(st, 1, leaves);
        while (sqlite3_step(st) == SQLITE_ROW) {
            char hex[33];
            snprintf(hex, sizeof hex, "%s", (const char *)sqlite3_column_text(st, 0));
            if (which == SINK) {
                Rb__Header *hd;
                assert_ok(envelope_peek_header(sqlite3_column_blob(st, 1),
                                               (size_t)sqlite3_column_bytes(st, 1), &hd));
                if (hd->ref_message_id.len == MSG_ID_BYTES)
                    wire_id_hex(hd->ref_message_id.data, hex);
                rb__header__free_unpacked(hd, NULL);
            }
            account(r, hex,
                    which == SOURCE ? "receipted after the backup" : "ACK receipted after the backup");
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
}

/* A backup taken with referral-admin while referrals flow, restored into a new data directory with the
 * broker's key files; a moment later the primary is lost, and the restored standby takes its endpoint
 * (OPERATIONS.md, "Putting a standby broker in place from a backup"). */
static void backup_and_restore(run_t *r)
{
    harness_t *h = r->h;
    char out[8192], file[700], standby[560];
    int n = ++r->backups;
    test_path(file, sizeof file, "%s/backup-%d.db", h->dir, n);
    test_path(standby, sizeof standby, "%s/standby-%d", h->dir, n);
    admin(r, out, sizeof out, "backup --out '%s'", file);
    json_t *o = json_loads(out, 0, NULL);
    int64_t leaves = json_integer_value(json_object_get(o, "ledgerLeaves"));
    json_decref(o);
    assert_true(leaves > 0);
    assert_int_equal(mkdir(standby, 0700), 0);
    if (harness_sh(out, sizeof out, "cp -p '%s/broker.secret' '%s/broker.card' '%s/'", h->data, h->data,
                   standby) != 0)
        fail_msg("copying the broker's key files: %s", out);
    if (harness_sh(out, sizeof out, "'%s/referral-broker' restore --from '%s' --data '%s' 2>&1", h->bin, file,
                   standby) != 0) {
        print_message("#   VIOLATION: backup %d does not restore: %s", n, out);
        r->out.backups_refused++;
        return; /* the primary carries on */
    }
    /* Sometimes the intake is stalled meanwhile: what the primary receipts then is filed by nobody before
     * it is lost, the tail a restore loses at its worst. */
    pid_t sink = between(0, 1) ? h->adapters[r->adapter[SINK]].pid : 0;
    if (sink > 0)
        kill(sink, SIGSTOP);
    for (int k = between(0, 2); k > 0; k--)
        drop_referral(r);
    harness_sleep_ms(between(0, 1500));
    harness_signal(h, between(0, 1) ? SIGKILL : SIGTERM);
    list_lost(r, leaves);
    snprintf(h->data, sizeof h->data, "%s", standby);
    snprintf(r->broker_db, sizeof r->broker_db, "%s/broker.db", standby);
    restart_broker(r);
    if (sink > 0)
        kill(sink, SIGCONT);
    r->restored = true;
}

/* The adapter restarted on a changed config: other timings, and a metrics file it must write. */
static void reconfigure(run_t *r)
{
    int which = between(0, 1), file = between(0, 999), receipt_ms = between(1000, 600000),
        ack_ms = between(1000, 600000), stable_ms = between(0, 400), scan_ms = between(10, 400);
    char metrics[600];
    test_path(metrics, sizeof metrics, "%s/metrics-%d-%d.prom", r->h->dir, which, file);
    snprintf(r->metrics[which], sizeof r->metrics[which], "%s", metrics);
    snprintf(r->reconfig[which], sizeof r->reconfig[which],
             "metrics_file = %s\nreceipt_deadline_ms = %d\nack_deadline_ms = %d\n", metrics, receipt_ms,
             ack_ms);
    if (which == SOURCE)
        snprintf(r->connector[which], sizeof r->connector[which], "stable_ms = %d\nscan_ms = %d\n", stable_ms,
                 scan_ms);
    harness_adapter_stop(r->h, r->adapter[which], SIGTERM);
    start_adapter(r, which);
}

/* One event, from its start to its end (durations from the seed). */
static void inject(run_t *r, event_kind kind)
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
    case DISABLE_SOURCE:
    case DISABLE_SINK:
        disable_for_a_while(r, kind == DISABLE_SINK ? SINK : SOURCE);
        break;
    case ROTATE_SOURCE:
    case ROTATE_SINK:
        rotate(r, kind == ROTATE_SINK ? SINK : SOURCE, 0);
        break;
    case REVOKE_SOURCE:
        revoke_source_key(r);
        break;
    case DEAD_LETTERS:
        dead_letters(r);
        break;
    case BACKUP_RESTORE:
        backup_and_restore(r);
        break;
    case RECONFIGURE:
        reconfigure(r);
        break;
    default:
        fail();
    }
}

/* Everything has settled: every referral taken by the source is ACKed, refused with its reason or accounted
 * for by the operator, nothing is queued, in flight or quarantined at the broker, and the operator, who
 * watches deadLetters, has requeued any dead letter. False after timeout_ms. */
static bool settled(run_t *r, int timeout_ms)
{
    int64_t deadline = harness_ms() + timeout_ms, taken = 0, open = -1, backlog = -1, quarantined = -1;
    while (harness_ms() < deadline) {
        json_t *status = broker_status(r);
        if (status != NULL) {
            backlog = backlog_of(status);
            quarantined = total_of(status, "quarantined");
            if (total_of(status, "deadLetters") > 0) {
                char out[4096];
                admin(r, out, sizeof out, "dead-letters requeue --all --yes");
                json_t *o = json_loads(out, 0, NULL);
                r->out.requeued += (int)json_integer_value(json_object_get(o, "requeued"));
                json_decref(o);
                backlog = -1;
            }
            json_decref(status);
        }
        taken = count(r, false, "SELECT count(*) FROM " REFERRAL_ROWS);
        open = count(r, false, "SELECT count(*) FROM " OPEN);
        if (taken == REFERRALS && open == 0 && backlog == 0 && quarantined == 0)
            return true;
        harness_sleep_ms(200);
    }
    print_message("#   at the deadline: taken %" PRId64 ", open %" PRId64 ", broker backlog %" PRId64
                  ", quarantined %" PRId64 "\n",
                  taken, open, backlog, quarantined);
    return false;
}

/* How many envelopes in an adapter's inbox were addressed to someone else. */
static int64_t misaddressed(const char *path, const char *name)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT envelope FROM inbox", -1, &st, NULL), SQLITE_OK);
    int64_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        Rb__Header *hd;
        if (envelope_peek_header(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &hd) !=
            RB_OK) {
            n++;
            continue;
        }
        n += strcmp(hd->recipient, name) != 0;
        rb__header__free_unpacked(hd, NULL);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The sink's ACKs the broker refused for good, each printed with its reason, but for those answering a
 * referral the operator listed as lost by a restore (the restored broker does not know it). */
static int64_t refused_acks(run_t *r)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(r->inbox, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(
        /* one sealed again to its source's current key is not refused: its successor goes */
        sqlite3_prepare_v2(db,
                           "SELECT envelope, refused FROM outbox WHERE kind = 4 AND refused IS NOT NULL AND "
                           "refused NOT LIKE 'sealed again to key %'",
                           -1, &st, NULL),
        SQLITE_OK);
    int64_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        Rb__Header *hd;
        assert_ok(envelope_peek_header(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &hd));
        char ref[33] = "", sql[200];
        if (hd->ref_message_id.len == MSG_ID_BYTES)
            wire_id_hex(hd->ref_message_id.data, ref);
        rb__header__free_unpacked(hd, NULL);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM acct.accounted WHERE message_id = '%s' AND how LIKE '%%backup%%'",
                 ref);
        bool lost = count(r, false, sql) > 0;
        print_message("#   ACK of %s refused at the sink%s: %s\n", ref, lost ? " (lost by the restore)" : "",
                      (const char *)sqlite3_column_text(st, 1));
        n += !lost;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

typedef struct {
    const char *what;
    int64_t n;
} violation_t;

/* Checks every invariant (the broker stopped); prints the figures; returns the number of violations. */
static int check_invariants(run_t *r)
{
    harness_t *h = r->h;
    int64_t receipted = count(r, true, "SELECT count(*) FROM " RECEIPTED);
    int64_t filed = count(r, true, "SELECT count(*) FROM intake.filings");
    int64_t acked = count(r, true, "SELECT count(*) FROM " RECEIPTED " AND acked_ms IS NOT NULL");
    int64_t refused = count(r, true, "SELECT count(*) FROM " REFERRAL_ROWS " AND refused IS NOT NULL");
    char sink_db[700];
    test_path(sink_db, sizeof sink_db, "%s", r->inbox);
    /* The intake schema makes a message id and an intake number unique by itself; what can go wrong is
     * one referral (one RD number, one case) filed twice under two message ids, or not at all. */
    violation_t v[] = {
        {"referrals dropped but not taken by the source",
         REFERRALS - count(r, true, "SELECT count(*) FROM " REFERRAL_ROWS)},
        {"referrals silently gone (not ACKed, not refused with a reason, not accounted for by the operator)",
         count(r, true, "SELECT count(*) FROM " OPEN)},
        {"receipted but not filed (and not accounted for)",
         count(r, true,
               "SELECT count(*) FROM " RECEIPTED " AND NOT " ACCOUNTED " AND NOT EXISTS (SELECT 1 FROM "
               "intake.filings f WHERE f.message_id = lower(hex(outbox.message_id)))")},
        {"filed but never receipted",
         count(r, true,
               "SELECT count(*) FROM intake.filings f WHERE NOT EXISTS "
               "(SELECT 1 FROM " RECEIPTED " AND lower(hex(message_id)) = f.message_id)")},
        {"referrals filed more than once (filings of one case)",
         count(r, true,
               "SELECT count(*) FROM intake.cases c WHERE (SELECT count(*) FROM intake.filings f "
               "WHERE f.intake_number = c.intake_number) <> 1")},
        {"cases other than one per filing",
         count(r, true,
               "SELECT (SELECT count(*) FROM intake.cases) - (SELECT count(*) FROM intake.filings)")},
        {"intake numbers skipped",
         count(r, true,
               "SELECT (SELECT coalesce(max(last), 0) FROM intake.intake_counters) - count(*) "
               "FROM intake.cases")},
        {"refused at the source for another reason than a revoked key or an operator's discard",
         count(r, true,
               "SELECT count(*) FROM " REFERRAL_ROWS " AND refused IS NOT NULL AND "
               "refused NOT LIKE '%revoked%' AND refused NOT LIKE 'discarded at the broker by %'")},
        {"discarded by the operator but not shown refused, with who and why, at the source",
         count(r, true,
               "SELECT count(*) FROM acct.accounted a JOIN main.outbox o ON lower(hex(o.message_id)) = "
               "a.message_id WHERE o.kind = 1 AND a.how = 'discarded' AND o.acked_ms IS NULL AND "
               "coalesce(o.refused, '') NOT LIKE 'discarded at the broker by %: _%'")},
        {"discarded by the operator but not shown as discarded with the reason at the broker",
         count(r, true,
               "SELECT count(*) FROM acct.accounted a WHERE how = 'discarded' AND NOT EXISTS (SELECT 1 "
               "FROM broker.messages m WHERE lower(hex(m.message_id)) = a.message_id AND "
               "m.state = 'discarded' AND coalesce(m.dead_reason, '') <> '')")},
        {"messages left at the broker (not confirmed or discarded)",
         count(r, true,
               "SELECT count(*) FROM broker.messages WHERE state NOT IN ('confirmed', 'discarded') AND NOT "
               "(kind = 5 AND recipient IN (SELECT name FROM broker.parties WHERE enabled = 0))")},
        {"envelopes at the sink not filed (received, held or refused)",
         count(r, true, "SELECT count(*) FROM sink.inbox WHERE state NOT IN ('filed', 'notice')")},
        {"ACKs the broker refused for good at the sink (their referral filed, the source never told)",
         refused_acks(r)},
        {"envelopes received by a party they were not addressed to",
         misaddressed(r->inbox, party[SINK]) + misaddressed(r->outbox, party[SOURCE])},
        {"backups that did not restore", r->out.backups_refused},
        {"metrics file of a changed config not written",
         (r->metrics[SOURCE][0] && access(r->metrics[SOURCE], F_OK) != 0) +
             (r->metrics[SINK][0] && access(r->metrics[SINK], F_OK) != 0)},
        {"audit verify or replay failed", 0},
        {"replay disagrees with the adapters", 0},
    };
    size_t nv = sizeof v / sizeof v[0];
    char export[700], replay[65536];
    test_path(export, sizeof export, "%s/ledger.sqlite", h->dir);
    int status =
        harness_sh(replay, sizeof replay,
                   "'%s/referral-audit' export --data '%s' --out '%s' >/dev/null && "
                   "'%s/referral-audit' verify --ledger '%s' --broker-card '%s/broker.card' >/dev/null && "
                   "'%s/referral-audit' replay --ledger '%s' --data '%s' 2>&1",
                   h->bin, h->data, export, h->bin, export, h->data, h->bin, export, h->data);
    int64_t ledger_accepted = -1;
    char *summary = strstr(replay, "messages "), *a = strstr(replay, "; accepted ");
    if (a != NULL)
        ledger_accepted = strtoll(a + 11, NULL, 10);
    v[nv - 2].n = status != 0;
    /* A restored ledger lost the ACKs its primary took after the backup; the source may hold some of them. */
    v[nv - 1].n = r->restored ? ledger_accepted > acked || ledger_accepted > filed
                              : ledger_accepted != acked || ledger_accepted != filed;
    int64_t leaves = count(r, true, "SELECT count(*) FROM broker.ledger_leaves");
    int violations = 0;
    for (size_t i = 0; i < nv; i++)
        if (v[i].n != 0) {
            violations++;
            print_message("#   VIOLATION: %s: %" PRId64 "\n", v[i].what, v[i].n);
        }
    r->out.refused_revoked = (int)refused;
    /* Of those the operator listed after a restore, the ones that did not come through after all. */
    r->out.lost_in_restore = (int)count(r, true,
                                        "SELECT count(*) FROM " REFERRAL_ROWS " AND acked_ms IS NULL AND "
                                        "lower(hex(message_id)) IN (SELECT message_id FROM acct.accounted "
                                        "WHERE how LIKE '%backup%')");
    if (refused > 0) { /* the reasons the source's operator is shown */
        char reasons[4096];
        harness_sh(reasons, sizeof reasons,
                   "sqlite3 '%s' \"SELECT count(*), refused FROM outbox WHERE kind = 1 AND refused "
                   "IS NOT NULL GROUP BY refused\" 2>&1",
                   r->outbox);
        print_message("#   refused at the source: %s", reasons);
    }
    print_message("#   referrals %d, receipted %" PRId64 ", filed %" PRId64 ", acked %" PRId64
                  ", refused at the source (revoked key) %" PRId64
                  ", discarded by the operator %d, listed as "
                  "lost by a restore %d, ledger leaves %" PRId64 ", ledger says accepted %" PRId64
                  "\n#   replay: %.*s\n",
                  REFERRALS, receipted, filed, acked, refused, r->out.discarded + r->out.quarantine_discarded,
                  r->out.lost_in_restore, leaves, ledger_accepted, summary ? (int)strcspn(summary, "\n") : 0,
                  summary ? summary : "");
    total.receipted += (int)receipted;
    total.filed += (int)filed;
    total.acked += (int)acked;
    total.ledger_leaves += leaves;
    return violations;
}

/* Starts a run: the broker with delivery config, the source and the sink on their connectors (the caller
 * free()s r->sample). */
static void run_start(run_t *r, const char *config)
{
    harness_t *h = r->h = harness_start(config);
    r->adapter[SOURCE] = harness_adapter(h);
    r->adapter[SINK] = harness_adapter(h);
    card_key_id_hex(identity_card(h->cpd)->key_id, r->key_id[SOURCE]);
    card_key_id_hex(identity_card(h->sao)->key_id, r->key_id[SINK]);
    test_path(r->intake, sizeof r->intake, "%s/intake.db", h->dir);
    test_path(r->outbox, sizeof r->outbox, "%s/adapter-%d-data/adapter.db", h->dir, r->adapter[SOURCE]);
    test_path(r->broker_db, sizeof r->broker_db, "%s/broker.db", h->data);
    test_path(r->inbox, sizeof r->inbox, "%s/adapter-%d-data/adapter.db", h->dir, r->adapter[SINK]);
    test_path(r->admin_secret, sizeof r->admin_secret, "%s/admin.secret", h->dir);
    assert_ok(identity_save(h->admin, r->admin_secret, NULL, 0, 0, 0, false));
    test_path(r->accounted, sizeof r->accounted, "%s/accounted.db", h->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(r->accounted, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE accounted(message_id TEXT PRIMARY KEY, how TEXT NOT NULL)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    /* The harness registers two more parties, which never run here: disabled, as a party that is away for
     * good is, they are sent no key notices that would wait for them for ever. */
    char out[4096];
    admin(r, out, sizeof out, "adapter disable mallory-rms");
    admin(r, out, sizeof out, "adapter disable other-intake");
    r->sample = test_read_file("adapters/samples/valid/01-fatal-shooting.json", &r->sample_len);
    assert_non_null(r->sample);
    char path[700];
    mkdir(test_path(path, sizeof path, "%s/drop", h->dir), 0750);
    start_adapter(r, SINK); /* creates the intake database the faults lock */
    start_adapter(r, SOURCE);
}

static void fault_run(void **state)
{
    uint64_t seed = *(uint64_t *)*state;
    rng_state = seed;
    print_message("# run seed %" PRIu64 " (replay: FAULT_SEED=%" PRIu64 " FAULT_RUNS=1)\n", seed, seed);
    char config[200];
    snprintf(config, sizeof config, "retry_base_ms = 100\nretry_max_ms = 1000\nttl_ms = %d\n", TTL_MS);
    run_t r = {0};
    run_start(&r, config);
    harness_t *h = r.h;
    char out[4096];

    /* The stream: a few referrals before each event and the rest after the last one. */
    int events = between(5, 8), kinds[EVENT_KINDS] = {0};
    for (int e = 0; e < events; e++) {
        for (int n = between(1, REFERRALS / events); n > 0; n--)
            drop_referral(&r);
        harness_sleep_ms(between(100, 1200));
        event_kind kind = (event_kind)between(0, EVENT_KINDS - 1);
        kinds[kind]++;
        total.events[kind]++;
        inject(&r, kind);
    }
    while (r.dropped < REFERRALS)
        drop_referral(&r);
    free((char *)r.sample);

    bool calm = settled(&r, 90000);
    harness_adapter_stop(h, r.adapter[SOURCE], SIGTERM);
    harness_adapter_stop(h, r.adapter[SINK], SIGTERM);
    int status = harness_signal(h, SIGTERM);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char figures[800] = "";
    for (int k = 0; k < EVENT_KINDS; k++)
        if (kinds[k] > 0)
            snprintf(figures + strlen(figures), sizeof figures - strlen(figures), "%s%s x%d",
                     figures[0] ? ", " : "", event_names[k], kinds[k]);
    /* Counted where the refusals arrive: the broker's own log is a file its disk limit also stops. */
    harness_sh(out, sizeof out,
               "cat '%s/'adapter-*.log | grep 'event=submit_deferred' | grep -c 'could not store' || true",
               h->dir);
    int64_t full = strtoll(out, NULL, 10);
    total.refused_full += (int)full;
    print_message("#   events: %s; submissions refused by the full disk: %" PRId64
                  "; dead letters requeued %d, discarded %d; quarantined released %d, discarded %d%s\n",
                  figures, full, r.out.requeued, r.out.discarded, r.out.released, r.out.quarantine_discarded,
                  calm ? "" : "; NOT SETTLED after 90 s");
    int violations = check_invariants(&r) + !calm;
    total.runs++;
    total.referrals += REFERRALS;
    total.violations += violations;
    total.out.requeued += r.out.requeued;
    total.out.discarded += r.out.discarded;
    total.out.released += r.out.released;
    total.out.quarantine_discarded += r.out.quarantine_discarded;
    total.out.lost_in_restore += r.out.lost_in_restore;
    total.out.refused_revoked += r.out.refused_revoked;
    total.out.backups_refused += r.out.backups_refused;
    if (violations > 0)
        fail_msg("run seed %" PRIu64 ": %d violations", seed, violations);
    harness_free(h);
}

/* An adapter whose clock is 30 s behind the host that made its new key (referral-keys rotate, as
 * OPERATIONS.md says) signs with it at once. On 63ae1d9 a card was valid from the second it was made, and
 * what the adapter signed in those 30 s was refused for good (KEY_EXPIRED: key expired or not yet valid),
 * the source's referrals and the sink's ACKs alike: fault run seed 3001 (a clock jump back, then a
 * revocation). */
static void a_clock_behind_signs_with_its_new_key(void **state)
{
    (void)state;
    run_t r = {0};
    r.clock_offset_ms[SOURCE] = r.clock_offset_ms[SINK] = -30000;
    run_start(&r, NULL);
    rotate(&r, SOURCE, 0);
    rotate(&r, SINK, 0);
    drop_referral(&r);
    harness_wait_count(r.h, "drop/acks", ".json", 1, 20000);
    assert_int_equal(count(&r, false, "SELECT count(*) FROM " REFERRAL_ROWS " AND refused IS NOT NULL"), 0);
    free((char *)r.sample);
    harness_adapter_stop(r.h, r.adapter[SOURCE], SIGTERM);
    harness_adapter_stop(r.h, r.adapter[SINK], SIGTERM);
    harness_stop(&r.h);
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
    struct CMUnitTest *tests = calloc((size_t)runs + 2, sizeof *tests);
    uint64_t *seeds = calloc((size_t)runs, sizeof *seeds);
    char(*names)[48] = calloc((size_t)runs, sizeof *names);
    tests[0] = (struct CMUnitTest){.name = "disk full: refuses, holds deliveries, recovers",
                                   .test_func = disk_full_refuses_then_recovers,
                                   .teardown_func = harness_teardown};
    tests[1] = (struct CMUnitTest){.name = "a clock behind signs with its new key at once",
                                   .test_func = a_clock_behind_signs_with_its_new_key,
                                   .teardown_func = harness_teardown};
    for (int i = 0; i < runs; i++) {
        seeds[i] = first + (uint64_t)i;
        snprintf(names[i], sizeof names[i], "fault run, seed %" PRIu64, seeds[i]);
        tests[i + 2] = (struct CMUnitTest){.name = names[i],
                                           .test_func = fault_run,
                                           .teardown_func = harness_teardown,
                                           .initial_state = &seeds[i]};
    }
    int failed = _cmocka_run_group_tests("fault_test", tests, (size_t)runs + 2, NULL, NULL);
    printf(
        "# fault runs: %d, referrals %d, receipted %d, filed %d, acked %d, refused at the source (revoked "
        "key) %d, lost by a restore (listed) %d, ledger leaves %" PRId64
        ", submissions refused by a full disk %d, violations %d\n"
        "# dead letters requeued %d, discarded %d; quarantined released %d, discarded %d; backups that did "
        "not restore %d\n# events:",
        total.runs, total.referrals, total.receipted, total.filed, total.acked, total.out.refused_revoked,
        total.out.lost_in_restore, total.ledger_leaves, total.refused_full, total.violations,
        total.out.requeued, total.out.discarded, total.out.released, total.out.quarantine_discarded,
        total.out.backups_refused);
    for (int k = 0; k < EVENT_KINDS; k++)
        printf("%s %s %d", k ? "," : "", event_names[k], total.events[k]);
    printf("\n");
    free(tests);
    free(seeds);
    free(names);
    return failed;
}
