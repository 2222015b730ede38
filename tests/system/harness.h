/* harness.h -- a real broker process for tests: data directory, identities, registration, start, kill.
 *
 * harness_start creates identities (an admin, two police sources, two sinks), runs `referral-broker init`
 * and `referral-broker run` from $BIN (default bin/) on a port the system picks on 127.0.0.1, reads the
 * bound endpoint from the broker's log, and registers every adapter through signed admin commands, as an
 * operator would. Everything lives in one temporary directory that harness_stop removes. */
#ifndef HARNESS_H
#define HARNESS_H

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "testutil.h"

#include "client.h"
#include "envelope.h"
#include "identity.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"
#include "wire.h"

#define HARNESS_NOW ((uint64_t)time(NULL) - 60)

#define HARNESS_MAX_ADAPTERS 4

/* An adapter process (referral-adapter) run by the harness. */
typedef struct {
    char config[700], log[700];
    pid_t pid;
    size_t log_at_start; /* the log's length when it was last started */
} harness_adapter_t;

typedef struct {
    char *dir;
    char bin[512];
    char data[600], config[600], log[600], endpoint[256];
    pid_t pid;
    identity_t *admin, *cpd, *sao, *mallory, *other;
    card_t broker;
    harness_adapter_t adapters[HARNESS_MAX_ADAPTERS];
    int n_adapters;
    char adapter_settings[2048];  /* more [adapter] lines for the configs written from now on */
    char connector_settings[700]; /* more lines for the connector's section of the configs written from now
                                     on, after the harness's own (the last of a key wins) */
} harness_t;

/* The harness of the running test, for the teardown to clean up after a failure. */
static void *harness_current;

static inline int64_t harness_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline of ms, longer by RB_TIMEOUT_SCALE when the processes run slower (tests/valgrind.sh sets it). */
static inline int64_t harness_deadline(int ms)
{
    const char *scale = getenv("RB_TIMEOUT_SCALE");
    int factor = scale != NULL ? atoi(scale) : 1;
    return harness_ms() + (int64_t)ms * (factor > 1 ? factor : 1);
}

static inline void harness_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline identity_t *harness_identity(const char *name, card_role role, const char *agency)
{
    identity_t *id;
    assert_ok(identity_generate(&id, name, role, agency, HARNESS_NOW, 86400));
    return id;
}

/* How many times the broker log says it started. */
static inline int harness_starts(harness_t *h, char *endpoint, size_t cap)
{
    size_t len;
    char *log = test_read_file(h->log, &len);
    int n = 0;
    for (char *p = log; p != NULL && (p = strstr(p, "event=broker_started")) != NULL; p++) {
        n++;
        char *l = strstr(p, "listen=");
        if (l != NULL && endpoint != NULL)
            snprintf(endpoint, cap, "%.*s", (int)strcspn(l + 7, " \n"), l + 7);
    }
    free(log);
    return n;
}

/* One number from a SQLite file another process writes (an adapter's store, the intake database); -1
 * when the query returns no row. */
static inline int64_t harness_db_int(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Runs a shell command built from fmt; its exit status (128 when a signal ended it), and what it printed on
 * standard output (and standard error, if the command says 2>&1) in out, cap bytes at most. */
static inline int harness_sh(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int harness_sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[6000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = 0, n;
    while (len + 1 < cap && (n = fread(out + len, 1, cap - 1 - len, p)) > 0)
        len += n;
    out[len] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* --- a process the harness started, from outside ------------------------------------------------------- */

/* For tests that bound a process's memory: with SANITIZE=1, AddressSanitizer would otherwise keep up to 256
 * MiB of freed memory in quarantine in every process the test starts (the environment passes it on). */
static inline void harness_no_asan_quarantine(void)
{
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0:thread_local_quarantine_size_kb=0",
             asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
}

static inline long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static inline int proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static inline void assert_alive(harness_t *h)
{
    assert_int_equal(waitpid(h->pid, NULL, WNOHANG), 0);
    assert_int_equal(kill(h->pid, 0), 0);
}

/* Starts `referral-broker run` on listen (a port the system picks: tcp://127.0.0.1:*, or the one it had
 * before a restart) and waits until it has bound. */
static inline void harness_spawn_at(harness_t *h, const char *listen)
{
    int before = harness_starts(h, NULL, 0);
    char exe[700];
    test_path(exe, sizeof exe, "%s/referral-broker", h->bin);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *log = freopen(h->log, "a", stderr);
        (void)log;
        execl(exe, exe, "run", "--data", h->data, "--config", h->config, "--listen", listen, (char *)NULL);
        _exit(127);
    }
    h->pid = pid;
    int64_t deadline = harness_deadline(15000);
    while (harness_starts(h, h->endpoint, sizeof h->endpoint) == before) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            fail_msg("the broker exited at start (status %d); see %s", status, h->log);
        if (harness_ms() > deadline)
            fail_msg("the broker did not start; see %s", h->log);
        harness_sleep_ms(20);
    }
}

static inline void harness_spawn(harness_t *h)
{
    harness_spawn_at(h, "tcp://127.0.0.1:*");
}

/* Stops the broker with sig and waits for it; returns its wait status. */
static inline int harness_signal(harness_t *h, int sig)
{
    int status = 0;
    if (h->pid <= 0)
        return 0;
    kill(h->pid, sig);
    int64_t deadline = harness_deadline(15000);
    while (waitpid(h->pid, &status, WNOHANG) == 0) {
        if (harness_ms() > deadline) {
            kill(h->pid, SIGKILL);
            waitpid(h->pid, &status, 0);
            fail_msg("the broker did not stop on signal %d", sig);
        }
        harness_sleep_ms(10);
    }
    h->pid = 0;
    return status;
}

static inline client_t *harness_client(harness_t *h, const identity_t *who, uint32_t credit)
{
    client_t *c;
    char err[512];
    rb_err rc = client_connect(&c, h->endpoint, who, &h->broker, credit, NULL, 10000, err, sizeof err);
    if (rc != RB_OK)
        fail_msg("%s", err);
    return c;
}

/* Runs an admin command; fails the test unless the broker's answer is ok == want_ok. */
static inline char *harness_admin(harness_t *h, bool want_ok, const char *command, const char *const *args,
                                  size_t n_args)
{
    client_t *c = harness_client(h, h->admin, 0);
    bool ok;
    char *out;
    assert_ok(client_admin(c, h->admin, command, args, n_args, 10000, &ok, &out));
    client_close(&c);
    if (ok != want_ok)
        fail_msg("admin %s: %s", command, out);
    return out;
}

static inline void harness_register(harness_t *h, const identity_t *who)
{
    char text[CARD_TEXT_MAX + 1];
    text[card_to_text(identity_card(who), text)] = '\0';
    const char *args[] = {text};
    free(harness_admin(h, true, "adapter add", args, 1));
}

/* config: extra INI text for [delivery] (fast timers suit tests); the metrics endpoint listens on a port
 * the system picks (the broker logs it as metrics_listening). */
static inline harness_t *harness_start(const char *delivery_config)
{
    assert_ok(rbcrypto_init());
    harness_t *h = calloc(1, sizeof *h);
    h->dir = test_mkdtemp();
    const char *bin = getenv("BIN");
    snprintf(h->bin, sizeof h->bin, "%s", bin != NULL ? bin : "bin");
    test_path(h->data, sizeof h->data, "%s/data", h->dir);
    test_path(h->config, sizeof h->config, "%s/broker.ini", h->dir);
    test_path(h->log, sizeof h->log, "%s/broker.log", h->dir);
    h->admin = harness_identity("ops-admin", CARD_ROLE_ADMIN, "ILCPD0000");
    h->cpd = harness_identity("cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000");
    h->mallory = harness_identity("mallory-rms", CARD_ROLE_SOURCE, "ILCPD0000");
    h->sao = harness_identity("sao-intake", CARD_ROLE_SINK, "ILCCSAO00");
    h->other = harness_identity("other-intake", CARD_ROLE_SINK, "ILCCSAO00");
    char path[700], cmd[2400];
    assert_ok(card_write_file(identity_card(h->admin), test_path(path, sizeof path, "%s/admin.card", h->dir),
                              false));
    test_path(cmd, sizeof cmd,
              "'%s/referral-broker' init --data '%s' --name broker-1 --admin-card '%s' >/dev/null", h->bin,
              h->data, path);
    assert_int_equal(system(cmd), 0);
    char ini[1024];
    /* Metrics on a port the system picks: tests run side by side, and 9464 may be taken. */
    int n = snprintf(ini, sizeof ini, "[metrics]\nlisten = 127.0.0.1:0\n[delivery]\nheartbeat_ms = 200\n%s\n",
                     delivery_config ? delivery_config : "");
    test_write_file(h->config, ini, (size_t)n, 0644);
    assert_ok(card_read_file(&h->broker, test_path(path, sizeof path, "%s/broker.card", h->data)));
    harness_current = h;
    harness_spawn(h);
    harness_register(h, h->cpd);
    harness_register(h, h->mallory);
    harness_register(h, h->sao);
    harness_register(h, h->other);
    return h;
}

static inline void harness_kill_adapters(harness_t *h)
{
    for (int i = 0; i < h->n_adapters; i++)
        if (h->adapters[i].pid > 0) {
            kill(h->adapters[i].pid, SIGKILL);
            waitpid(h->adapters[i].pid, NULL, 0);
            h->adapters[i].pid = 0;
        }
}

static inline void harness_free(harness_t *h)
{
    harness_kill_adapters(h);
    identity_free(&h->admin);
    identity_free(&h->cpd);
    identity_free(&h->mallory);
    identity_free(&h->sao);
    identity_free(&h->other);
    test_rmdir(&h->dir);
    free(h);
    harness_current = NULL;
}

/* Stops the broker with SIGTERM, which must end it cleanly, and removes everything. */
static inline void harness_stop(harness_t **h_p)
{
    harness_t *h = *h_p;
    int status = harness_signal(h, SIGTERM);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the broker did not stop cleanly on SIGTERM (status %d); see %s", status, h->log);
    harness_free(h);
    *h_p = NULL;
}

/* cmocka teardown: after a failed test, kill its broker and remove its files (the log is printed). */
static inline int harness_teardown(void **state)
{
    (void)state;
    harness_t *h = harness_current;
    if (h != NULL) {
        harness_kill_adapters(h);
        if (h->pid > 0) {
            kill(h->pid, SIGKILL);
            waitpid(h->pid, NULL, 0);
        }
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "tail -v -n 20 '%s' >&2", h->log);
        for (int i = 0; i < h->n_adapters; i++)
            snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "; tail -v -n 20 '%s' >&2",
                     h->adapters[i].log);
        if (system(cmd) != 0)
            print_error("no logs\n");
        harness_free(h);
    }
    return 0;
}

/* A sealed referral from `from` to the holder of card `to`; narrative may be NULL. case_key may be NULL. */
static inline uint8_t *harness_referral_to(const identity_t *from, const card_t *to, const char *narrative,
                                           const uint8_t *case_key, size_t *len, msg_id_t *id)
{
    Rb__Referral r = RB__REFERRAL__INIT;
    r.schema_version = 1;
    r.agency_ori = "ILCPD0000";
    r.rd_number = "JH512334";
    r.revision = 1;
    r.narrative =
        (char *)(narrative ? narrative : "R/O observed federal agents detain a man at 26th and Kedzie.");
    size_t body_len = rb__referral__get_packed_size(&r);
    uint8_t *body = malloc(body_len);
    assert_non_null(body);
    rb__referral__pack(&r, body);
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .case_key = case_key, .created_ms = harness_ms()};
    uint8_t *env;
    assert_ok(envelope_seal(from, to, &p, body, body_len, id, &env, len));
    free(body);
    return env;
}

static inline uint8_t *harness_referral(const identity_t *from, const identity_t *to, const char *narrative,
                                        const uint8_t *case_key, size_t *len, msg_id_t *id)
{
    return harness_referral_to(from, identity_card(to), narrative, case_key, len, id);
}

/* Submits and expects a receipt; returns its event sequence number. */
static inline uint64_t harness_submit_ok(client_t *c, const uint8_t *env, size_t len)
{
    client_result_t r;
    assert_ok(client_submit(c, env, len, 10000, &r));
    if (!r.accepted)
        fail_msg("refused: %s: %s", wire_error_name(r.code), r.reason);
    return r.ledger_index;
}

/* Submits and expects a refusal with this code. */
static inline void harness_submit_refused(client_t *c, const uint8_t *env, size_t len, Rb__ErrorCode want)
{
    client_result_t r;
    assert_ok(client_submit(c, env, len, 10000, &r));
    if (r.accepted)
        fail_msg("accepted, expected %s", wire_error_name(want));
    if (r.code != want)
        fail_msg("refused with %s (%s), expected %s", wire_error_name(r.code), r.reason,
                 wire_error_name(want));
}

/* Receives one delivery and returns its message id; fails after timeout_ms. */
static inline void harness_receive(client_t *c, int timeout_ms, uint8_t id[MSG_ID_BYTES], uint32_t *attempt)
{
    uint8_t *env;
    size_t len;
    uint32_t a;
    rb_err rc = client_receive(c, timeout_ms, &env, &len, &a);
    if (rc != RB_OK)
        fail_msg("nothing delivered within %d ms", timeout_ms);
    msg_id_t got;
    assert_ok(envelope_peek_id(env, len, &got));
    memcpy(id, got.bytes, MSG_ID_BYTES);
    free(env);
    if (attempt)
        *attempt = a;
}

/* Writes an identity's secret (unattended) and the trust store of the other side for adapters. */
static inline void harness_adapter_files(harness_t *h)
{
    char path[700];
    assert_ok(
        identity_save(h->cpd, test_path(path, sizeof path, "%s/cpd.secret", h->dir), NULL, 0, 0, 0, true));
    assert_ok(
        identity_save(h->sao, test_path(path, sizeof path, "%s/sao.secret", h->dir), NULL, 0, 0, 0, true));
    mkdir(test_path(path, sizeof path, "%s/trust-source", h->dir), 0700);
    mkdir(test_path(path, sizeof path, "%s/trust-sink", h->dir), 0700);
    assert_ok(card_write_file(identity_card(h->sao),
                              test_path(path, sizeof path, "%s/trust-source/sao.card", h->dir), true));
    assert_ok(card_write_file(identity_card(h->cpd),
                              test_path(path, sizeof path, "%s/trust-sink/cpd.card", h->dir), true));
}

/* A new adapter slot; the first one also writes the adapters' secret files and trust stores. */
static inline int harness_adapter(harness_t *h)
{
    assert_true(h->n_adapters < HARNESS_MAX_ADAPTERS);
    if (h->n_adapters == 0)
        harness_adapter_files(h);
    int i = h->n_adapters++;
    harness_adapter_t *ad = &h->adapters[i];
    test_path(ad->config, sizeof ad->config, "%s/adapter-%d.ini", h->dir, i);
    test_path(ad->log, sizeof ad->log, "%s/adapter-%d.log", h->dir, i);
    return i;
}

/* (Re)writes adapter i's config with the broker's current endpoint and starts it on a connector: a police
 * source (rms-files with drop folder DIR/drop, rms-http with token file DIR/http.token) or a sink
 * (intake-sqlite with DIR/intake.db, intake-files with DIR/intake-out). */
static inline void harness_adapter_start(harness_t *h, int i, const char *connector)
{
    harness_adapter_t *ad = &h->adapters[i];
    bool source = strncmp(connector, "rms-", 4) == 0;
    char ini[4096];
    int n = snprintf(
        ini, sizeof ini,
        "[adapter]\nconnector = %s\nsecret = %s/%s.secret\nbroker = %s\nbroker_card = %s/broker.card\n"
        "trust = %s/trust-%s\ndata = %s/adapter-%d-data\n%s%s\n",
        connector, h->dir, source ? "cpd" : "sao", h->endpoint, h->data, h->dir, source ? "source" : "sink",
        h->dir, i, source ? "recipient = sao-intake\n" : "", h->adapter_settings);
    if (strcmp(connector, "rms-files") == 0)
        n += snprintf(ini + n, sizeof ini - (size_t)n,
                      "[rms-files]\ndrop = %s/drop\nstable_ms = 200\nscan_ms = 50\n", h->dir);
    else if (strcmp(connector, "rms-http") == 0)
        n += snprintf(
            ini + n, sizeof ini - (size_t)n,
            "[rms-http]\nlisten = 127.0.0.1:0\ntoken_file = %s/http.token\nmax_body_bytes = 65536\n", h->dir);
    else if (strcmp(connector, "intake-sqlite") == 0)
        n += snprintf(ini + n, sizeof ini - (size_t)n, "[intake-sqlite]\ndatabase = %s/intake.db\n", h->dir);
    else
        n += snprintf(ini + n, sizeof ini - (size_t)n, "[intake-files]\nout = %s/intake-out\n", h->dir);
    n += snprintf(ini + n, sizeof ini - (size_t)n, "%s", h->connector_settings);
    test_write_file(ad->config, ini, (size_t)n, 0600);
    size_t log_len; /* 0 when there is no log yet */
    free(test_read_file(ad->log, &log_len));
    ad->log_at_start = log_len;
    char exe[700];
    test_path(exe, sizeof exe, "%s/referral-adapter", h->bin);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *log = freopen(ad->log, "a", stderr);
        (void)log;
        execl(exe, exe, "--config", ad->config, (char *)NULL);
        _exit(127);
    }
    ad->pid = pid;
}

/* Stops adapter i with sig. A SIGTERM waits for the adapter to have started (an operator's stop comes after
 * a start has taken effect; before its main() runs, no process can handle a signal): it must then exit 0. */
static inline void harness_adapter_stop(harness_t *h, int i, int sig)
{
    harness_adapter_t *ad = &h->adapters[i];
    if (ad->pid <= 0)
        return;
    int status = 0;
    bool exited = false;
    for (int64_t deadline = harness_deadline(15000); sig == SIGTERM && harness_ms() < deadline;) {
        size_t len;
        char *log = test_read_file(ad->log, &len);
        bool started =
            log != NULL && len > ad->log_at_start && strstr(log + ad->log_at_start, "event=adapter_started");
        free(log);
        if (started || (exited = (waitpid(ad->pid, &status, WNOHANG) == ad->pid)))
            break;
        harness_sleep_ms(10);
    }
    if (!exited) {
        kill(ad->pid, sig);
        waitpid(ad->pid, &status, 0);
    }
    ad->pid = 0;
    if (sig == SIGTERM && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
        fail_msg("adapter %d did not stop cleanly (status %d); see %s", i, status, ad->log);
}

/* How many entries a directory holds whose names end in suffix. */
static inline int harness_count(harness_t *h, const char *sub, const char *suffix)
{
    char path[700];
    test_path(path, sizeof path, "%s/%s", h->dir, sub);
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *e;
    size_t m = strlen(suffix);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        n += e->d_name[0] != '.' && len > m && strcmp(e->d_name + len - m, suffix) == 0;
    }
    closedir(d);
    return n;
}

/* Waits until harness_count(sub, suffix) reaches want; fails after timeout_ms. */
static inline void harness_wait_count(harness_t *h, const char *sub, const char *suffix, int want,
                                      int timeout_ms)
{
    int64_t deadline = harness_deadline(timeout_ms);
    int n;
    while ((n = harness_count(h, sub, suffix)) < want) {
        if (harness_ms() > deadline) {
            char cmd[1600];
            snprintf(cmd, sizeof cmd, "ls -R '%s/drop' >&2", h->dir);
            for (int i = 0; i < h->n_adapters; i++)
                snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "; tail -v -n 30 '%s' >&2",
                         h->adapters[i].log);
            if (system(cmd) != 0)
                print_error("cannot list %s\n", h->dir);
            fail_msg("%s/*%s: %d of %d after %d ms", sub, suffix, n, want, timeout_ms);
        }
        harness_sleep_ms(50);
    }
}

/* Copies a sample file into the drop folder, under another name if given. */
static inline void harness_drop(harness_t *h, const char *sample, const char *as)
{
    char cmd[2000];
    const char *slash = strrchr(sample, '/');
    test_path(cmd, sizeof cmd,
              "mkdir -p '%s/drop' && cp '%s' '%s/drop/%s.tmp' && mv '%s/drop/%s.tmp' '%s/drop/%s'", h->dir,
              sample, h->dir, as ? as : slash + 1, h->dir, as ? as : slash + 1, h->dir, as ? as : slash + 1);
    assert_int_equal(system(cmd), 0);
}

/* The metrics port the broker logged last. */
static inline int harness_metrics_port(harness_t *h)
{
    size_t len;
    char *log = test_read_file(h->log, &len);
    assert_non_null(log);
    const char *tag = "event=metrics_listening address=127.0.0.1:";
    int port = 0;
    for (char *p = log; (p = strstr(p, tag)) != NULL; p++)
        port = atoi(p + strlen(tag));
    free(log);
    assert_true(port > 0);
    return port;
}

/* One HTTP request on loopback; returns the status, *head and *body (malloc'd) the response's parts. */
static inline int harness_http(int port, const char *request, char **head, char **body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    size_t n = strlen(request);
    assert_int_equal(write(fd, request, n), (ssize_t)n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len)) > 0)
        if ((len += (size_t)r) == cap) {
            char *bigger = realloc(buf, (cap *= 2) + 1);
            assert_non_null(bigger);
            buf = bigger;
        }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    char *split = strstr(buf, "\r\n\r\n");
    assert_non_null(split);
    *split = '\0';
    *head = strdup(buf);
    *body = strdup(split + 4);
    free(buf);
    return status;
}

#endif
