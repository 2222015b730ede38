/* metrics_test.c -- the Prometheus endpoint: scraped over HTTP from a real broker while traffic flows, its
 * text checked line by line against the exposition format, its settings and startup errors, and the
 * registry's rendering (escaping, histogram buckets) in process. */
#include <math.h>
#include <jansson.h>
#include <regex.h>

#include "harness.h"
#include "config.h"
#include "metrics.h"

/* A retry within a second, the third unconfirmed attempt dead-lettered; heartbeats slow enough that
 * clients left idle while the test scrapes stay connected; referrals overdue after a second. */
#define METRICS_CONFIG                                                                                       \
    "heartbeat_ms = 5000\nretry_base_ms = 1000\nretry_max_ms = 1000\nretry_limit = 3\n"                      \
    "ack_overdue_ms = 1000\n"

static int status_of(int port, const char *request)
{
    char *head, *body;
    int status = harness_http(port, request, &head, &body);
    free(head);
    free(body);
    return status;
}

/* Fails unless text is Prometheus text format 0.0.4 as we write it: HELP and TYPE before a family's
 * samples, each sample "name{label="value",...} value" with the value a number, histogram buckets
 * cumulative and ending in +Inf equal to _count. */
static void check_exposition(const char *text)
{
    regex_t help, type, sample;
    assert_int_equal(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* [^\n]+$", REG_EXTENDED), 0);
    assert_int_equal(
        regcomp(&type, "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$", REG_EXTENDED), 0);
    assert_int_equal(regcomp(&sample,
                             "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
                             "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                             "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*\\})? ([^ ]+)$",
                             REG_EXTENDED),
                     0);
    char family[128] = "", kind[16] = "";
    double last_bucket = -1, inf_bucket = -1; /* the family's last bucket so far, and its +Inf bucket */
    int samples = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        assert_non_null(end); /* every line ends with a newline, the last one too */
        char buf[512];
        size_t n = (size_t)(end - line);
        assert_true(n < sizeof buf);
        memcpy(buf, line, n);
        buf[n] = '\0';
        regmatch_t m[7];
        if (strncmp(buf, "# HELP ", 7) == 0) {
            if (regexec(&help, buf, 0, NULL, 0) != 0)
                fail_msg("bad HELP line: %s", buf);
        } else if (strncmp(buf, "# TYPE ", 7) == 0) {
            if (regexec(&type, buf, 3, m, 0) != 0)
                fail_msg("bad TYPE line: %s", buf);
            snprintf(family, sizeof family, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), buf + m[1].rm_so);
            snprintf(kind, sizeof kind, "%.*s", (int)(m[2].rm_eo - m[2].rm_so), buf + m[2].rm_so);
            last_bucket = inf_bucket = -1;
        } else {
            if (regexec(&sample, buf, 7, m, 0) != 0)
                fail_msg("not a sample line: %s", buf);
            char name[128], *value_end;
            snprintf(name, sizeof name, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), buf + m[1].rm_so);
            double value = strtod(buf + m[6].rm_so, &value_end);
            if (*value_end != '\0')
                fail_msg("not a number: %s", buf);
            size_t fl = strlen(family);
            bool ours = strcmp(name, family) == 0 ||
                        (strcmp(kind, "histogram") == 0 && strncmp(name, family, fl) == 0 &&
                         (strcmp(name + fl, "_bucket") == 0 || strcmp(name + fl, "_sum") == 0 ||
                          strcmp(name + fl, "_count") == 0));
            if (!ours)
                fail_msg("sample outside its family (%s): %s", family, buf);
            if (strcmp(name + fl, "_bucket") == 0) {
                assert_true(inf_bucket < 0 && value >= last_bucket); /* cumulative, +Inf last */
                last_bucket = value;
                if (strstr(buf, "{le=\"+Inf\"}") != NULL)
                    inf_bucket = value;
            } else if (strcmp(name + fl, "_count") == 0) {
                assert_true(inf_bucket >= 0 && inf_bucket == value);
            }
            samples++;
        }
        line = end + 1;
    }
    assert_true(samples > 0);
    regfree(&help);
    regfree(&type);
    regfree(&sample);
}

static char *scrape(int port)
{
    char *head, *body;
    assert_int_equal(harness_http(port,
                                  "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                                  &head, &body),
                     200);
    assert_non_null(strstr(head, "text/plain; version=0.0.4"));
    free(head);
    check_exposition(body);
    return body;
}

/* The value of one series ("name" or "name{labels}", exactly as written); NAN when absent. */
static double value_in(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; *line != '\0';) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        const char *end = strchr(line, '\n');
        if (end == NULL)
            break;
        line = end + 1;
    }
    return NAN;
}

static double value_of(int port, const char *series)
{
    char *text = scrape(port);
    double v = value_in(text, series);
    free(text);
    return v;
}

/* Scrapes until the series has the value wanted (gauges are refreshed once a second, counters move when the
 * broker's loop has done the work); fails after timeout_ms showing the last scrape. */
static void wait_value(int port, const char *series, double want, int timeout_ms)
{
    int64_t deadline = harness_ms() + timeout_ms;
    for (;;) {
        char *text = scrape(port);
        double v = value_in(text, series);
        if (v == want) {
            free(text);
            return;
        }
        if (harness_ms() > deadline) {
            fprintf(stderr, "%s\n", text);
            free(text);
            fail_msg("%s is %g, expected %g after %d ms", series, v, want, timeout_ms);
        }
        free(text);
        harness_sleep_ms(100);
    }
}

static uint8_t *ack_for(harness_t *h, const msg_id_t *referral, Rb__AckStatus status, size_t *len)
{
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    ack.status = status;
    ack.intake_reference = "SAO-2026-000042";
    uint8_t body[256], *env;
    size_t body_len = rb__ack_body__pack(&ack, body);
    msg_id_t id;
    envelope_params_t p = {
        .kind = RB__KIND__KIND_ACK, .ref = referral, .ack_status = status, .created_ms = harness_ms()};
    assert_ok(envelope_seal(h->sao, identity_card(h->cpd), &p, body, body_len, &id, &env, len));
    return env;
}

#define SAO(name)   name "{adapter=\"sao-intake\"}"
#define CPD(name)   name "{adapter=\"cpd-rms\"}"
#define OTHER(name) name "{adapter=\"other-intake\"}"

/* Referrals in, delivered (one retried), confirmed, overdue, ACKed, ACKs delivered back; a refusal and a
 * dead letter on the side. Each counter and gauge moves as it must. */
static void values_follow_traffic(void **state)
{
    (void)state;
    harness_t *h = harness_start(METRICS_CONFIG);
    int port = harness_metrics_port(h);
    char *text = scrape(port);
    assert_true(value_in(text, "referral_up") == 1);
    double leaves = value_in(text, "referral_ledger_leaves"),
           checkpoints = value_in(text, "referral_checkpoints_total");
    assert_true(leaves > 0 && checkpoints >= 1);
    assert_true(value_in(text, "referral_last_checkpoint_age_seconds") < 60);
    assert_true(value_in(text, "referral_last_checkpoint_leaves") <= leaves);
    free(text);
    wait_value(port, "referral_connected_adapters", 0, 5000); /* the harness's admin is no adapter */
    wait_value(port, SAO("referral_queue_depth"), 0, 5000);

    client_t *cpd = harness_client(h, h->cpd, 16);
    wait_value(port, CPD("referral_adapter_connected"), 1, 5000);
    wait_value(port, "referral_connected_adapters", 1, 5000);
    msg_id_t ids[3];
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &ids[i]);
        harness_submit_ok(cpd, env, len);
        free(env);
    }
    size_t len;
    msg_id_t stray;
    uint8_t *env = harness_referral(h->cpd, h->mallory, NULL, NULL, &len, &stray); /* a source: refused */
    harness_submit_refused(cpd, env, len, RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT);
    free(env);
    wait_value(port, "referral_submissions_total{adapter=\"cpd-rms\",kind=\"referral\"}", 3, 5000);
    wait_value(port, "referral_refused_frames_total{adapter=\"cpd-rms\",code=\"UNKNOWN_RECIPIENT\"}", 1,
               5000);
    wait_value(port, "referral_receipt_latency_seconds_count", 3, 5000);
    wait_value(port, SAO("referral_queue_depth"), 3, 5000); /* up: nobody takes them yet */
    assert_true(value_of(port, "referral_ledger_leaves") > leaves);

    /* A sink that never confirms: its referral is tried three times, then dead-lettered. */
    client_t *other = harness_client(h, h->other, 16);
    msg_id_t doomed;
    env = harness_referral(h->cpd, h->other, NULL, NULL, &len, &doomed);
    harness_submit_ok(cpd, env, len);
    free(env);

    /* The intake takes them: two confirmed at once, the third only when it comes again. */
    client_t *sao = harness_client(h, h->sao, 16);
    for (int i = 0; i < 3; i++) {
        uint8_t got[MSG_ID_BYTES];
        uint32_t attempt;
        harness_receive(sao, 5000, got, &attempt);
        assert_int_equal(attempt, 1);
        if (memcmp(got, ids[2].bytes, MSG_ID_BYTES) != 0)
            assert_ok(client_confirm(sao, got));
    }
    uint8_t got[MSG_ID_BYTES];
    uint32_t attempt;
    harness_receive(sao, 5000, got, &attempt);
    assert_memory_equal(got, ids[2].bytes, MSG_ID_BYTES);
    assert_int_equal(attempt, 2);
    assert_ok(client_confirm(sao, got));
    wait_value(port, SAO("referral_deliveries_total"), 4, 5000);
    wait_value(port, SAO("referral_retries_total"), 1, 5000);
    wait_value(port, SAO("referral_confirms_total"), 3, 5000);
    wait_value(port, SAO("referral_queue_depth"), 0, 5000); /* down */
    wait_value(port, SAO("referral_in_flight"), 0, 5000);
    wait_value(port, SAO("referral_awaiting_ack"), 3, 5000);
    wait_value(port, "referral_connected_adapters", 3, 5000);

    /* Confirmed a second ago and unanswered: overdue. */
    wait_value(port, SAO("referral_overdue_acks"), 3, 10000);
    assert_true(value_of(port, SAO("referral_oldest_awaiting_ack_age_seconds")) >= 1);

    for (int i = 0; i < 3; i++) {
        env =
            ack_for(h, &ids[i],
                    i < 2 ? RB__ACK_STATUS__ACK_STATUS_ACCEPTED : RB__ACK_STATUS__ACK_STATUS_REJECTED, &len);
        harness_submit_ok(sao, env, len);
        free(env);
    }
    /* The ACKs go back to the police like any message (confirmed at once, so never retried). */
    for (int i = 0; i < 3; i++) {
        harness_receive(cpd, 5000, got, NULL);
        assert_ok(client_confirm(cpd, got));
    }
    wait_value(port, "referral_acks_total{adapter=\"sao-intake\",outcome=\"accepted\"}", 2, 5000);
    wait_value(port, "referral_acks_total{adapter=\"sao-intake\",outcome=\"rejected\"}", 1, 5000);
    wait_value(port, "referral_submissions_total{adapter=\"sao-intake\",kind=\"ack\"}", 3, 5000);
    wait_value(port, "referral_end_to_end_latency_seconds_count", 3, 5000);
    text = scrape(port);
    /* Each ACK came at least a second after its referral: that is when they were overdue. */
    assert_true(value_in(text, "referral_end_to_end_latency_seconds_sum") >= 3);
    assert_true(value_in(text, "referral_end_to_end_latency_seconds_bucket{le=\"1\"}") == 0);
    assert_true(value_in(text, "referral_receipt_latency_seconds_count") == 7);
    free(text);
    wait_value(port, SAO("referral_awaiting_ack"), 0, 5000);
    wait_value(port, SAO("referral_overdue_acks"), 0, 5000);

    wait_value(port, CPD("referral_deliveries_total"), 3, 5000);
    wait_value(port, CPD("referral_confirms_total"), 3, 5000);

    wait_value(port, OTHER("referral_dead_letters"), 1, 15000);
    wait_value(port, "referral_dead_lettered_total", 1, 5000);
    wait_value(port, OTHER("referral_deliveries_total"), 3, 5000);
    text = scrape(port);
    assert_true(value_in(text, "referral_checkpoints_total") > checkpoints);
    assert_true(value_in(text, "referral_last_checkpoint_leaves") > leaves);
    assert_true(value_in(text, "referral_last_checkpoint_leaves") <=
                value_in(text, "referral_ledger_leaves"));
    assert_true(value_in(text, "referral_last_refresh_age_seconds") < 5); /* the loop refreshes each second */
    free(text);

    /* Only GET /metrics is served. */
    assert_int_equal(status_of(port, "GET / HTTP/1.0\r\n\r\n"), 404);
    assert_int_equal(status_of(port, "GET /metrics/x HTTP/1.0\r\n\r\n"), 404);
    assert_int_equal(status_of(port, "POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"), 405);
    assert_int_equal(status_of(port, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                     405);
    assert_int_equal(status_of(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n"), 200);

    client_close(&cpd);
    client_close(&sao);
    client_close(&other);
    harness_stop(&h);
}

/* The sum of one count over every adapter in `status` (JSON), and one adapter's. */
static int status_count(harness_t *h, const char *adapter, const char *field)
{
    char *out = harness_admin(h, true, "status", NULL, 0);
    json_t *o = json_loads(out, 0, NULL);
    free(out);
    assert_non_null(o);
    json_t *from = json_object_get(o, "total"), *each;
    size_t i;
    json_array_foreach(json_object_get(o, "adapters"), i, each)
    {
        if (adapter != NULL && strcmp(json_string_value(json_object_get(each, "name")), adapter) == 0)
            from = each;
    }
    json_t *v = json_object_get(from, field);
    assert_true(json_is_integer(v));
    int n = (int)json_integer_value(v);
    json_decref(o);
    return n;
}

/* A message's state and attempts as `message show` gives them. */
static void message_state(harness_t *h, const char *hex, char state[16], int *attempts)
{
    const char *args[] = {hex};
    char *out = harness_admin(h, true, "message show", args, 1);
    json_t *o = json_loads(out, 0, NULL);
    free(out);
    json_t *m = json_object_get(o, "message");
    snprintf(state, 16, "%s", json_string_value(json_object_get(m, "state")));
    *attempts = (int)json_integer_value(json_object_get(m, "attempts"));
    json_decref(o);
}

/* Issue #19, item 3, as the operator met it: a real intake adapter is delivered a referral and goes away
 * before it CONFIRMs (stopped, then killed). `message show` says queued after one attempt; `status` and
 * `referral_queue_depth` must count it too, or the "queue growing" alert cannot fire. On c00af3b both said
 * 0: a message delivered once and due again was neither "queued" (never delivered) nor "in flight". */
static void sink_gone_after_one_delivery_is_counted(void **state)
{
    (void)state;
    /* Redelivery a minute away, so that only the sink's going makes the message due again. */
    harness_t *h = harness_start("heartbeat_ms = 1000\nretry_base_ms = 60000\nretry_max_ms = 60000\n");
    int port = harness_metrics_port(h);
    int sink = harness_adapter(h);
    harness_adapter_start(h, sink, "intake-sqlite");
    wait_value(port, SAO("referral_adapter_connected"), 1, 10000);
    assert_int_equal(kill(h->adapters[sink].pid, SIGSTOP), 0);

    client_t *cpd = harness_client(h, h->cpd, 0);
    size_t len;
    msg_id_t id;
    char hex[33], st[16];
    uint8_t *env = harness_referral(h->cpd, h->sao, NULL, NULL, &len, &id);
    harness_submit_ok(cpd, env, len);
    free(env);
    wire_id_hex(id.bytes, hex);
    int attempts = 0;
    for (int64_t deadline = harness_ms() + 10000; attempts == 0; harness_sleep_ms(50)) {
        if (harness_ms() > deadline)
            fail_msg("never delivered to the stopped sink");
        message_state(h, hex, st, &attempts);
    }
    /* Delivered, not confirmed: in flight while the sink's session lasts. */
    assert_int_equal(status_count(h, "sao-intake", "inFlight"), 1);

    kill(h->adapters[sink].pid, SIGKILL);
    waitpid(h->adapters[sink].pid, NULL, 0);
    h->adapters[sink].pid = 0;
    wait_value(port, SAO("referral_adapter_connected"), 0, 10000);
    message_state(h, hex, st, &attempts);
    assert_string_equal(st, "queued");
    assert_int_equal(attempts, 1);
    /* Waiting for a delivery again: queued, wherever the operator looks. */
    assert_int_equal(status_count(h, "sao-intake", "queued"), 1);
    assert_int_equal(status_count(h, "sao-intake", "inFlight"), 0);
    assert_int_equal(status_count(h, NULL, "queued"), 1);
    wait_value(port, SAO("referral_queue_depth"), 1, 5000);

    /* The sink comes back: delivered again, taken, and the queue is empty. */
    harness_adapter_start(h, sink, "intake-sqlite");
    wait_value(port, SAO("referral_confirms_total"), 1, 10000);
    wait_value(port, SAO("referral_queue_depth"), 0, 5000);
    wait_value(port, SAO("referral_in_flight"), 0, 5000);
    message_state(h, hex, st, &attempts);
    assert_string_equal(st, "confirmed");
    assert_int_equal(attempts, 2);
    client_close(&cpd);
    harness_stop(&h);
}

static bool never_connected(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return false;
}

/* One GET; returns the status, *body the body (malloc'd). */
static int get(int port, const char *path, char **body)
{
    char request[200], *head;
    snprintf(request, sizeof request, "GET %s HTTP/1.0\r\n\r\n", path);
    int status = harness_http(port, request, &head, body);
    free(head);
    return status;
}

/* Issue #19, "Health": a load balancer or systemd asks the metrics listener whether the broker lives and
 * whether it is ready (started: listening, its ledger verified; and its loop reading the database). On
 * c00af3b both paths were 404. The states a running broker cannot be put in from outside (starting, a loop
 * that stopped reading) are taken in process, on a real store. */
static void health_and_readiness(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int port = harness_metrics_port(h);
    char *body;
    assert_int_equal(get(port, "/healthz", &body), 200);
    assert_string_equal(body, "ok\n");
    free(body);
    int status;
    for (int64_t deadline = harness_ms() + 5000; (status = get(port, "/readyz", &body)) != 200; free(body))
        if (harness_ms() > deadline)
            fail_msg("/readyz %d: %s", status, body);
    assert_string_equal(body, "ready\n");
    free(body);
    harness_stop(&h);

    metrics_t *m;
    assert_ok(metrics_start(&m, "127.0.0.1:0"));
    char *dir = test_mkdtemp(), path[600], err[300];
    store_t *store;
    assert_ok(store_open(&store, test_path(path, sizeof path, "%s/broker.db", dir), true, err, sizeof err));
    int64_t now = harness_ms();
    const char *why = metrics_readiness(m, now);
    assert_non_null(why);
    assert_non_null(strstr(why, "starting"));
    metrics_refresh(m, store, now, 0, now + 86400000, never_connected,
                    NULL); /* read the store, but not started yet */
    assert_non_null(metrics_readiness(m, now));
    metrics_started(m);
    assert_null(metrics_readiness(m, now));
    assert_null(metrics_readiness(m, now + 5000));
    why = metrics_readiness(m, now + 5001); /* no read for over 5 s: a stuck loop */
    assert_non_null(why);
    assert_non_null(strstr(why, "has not read its database"));
    metrics_stop(&m);
    store_close(&store);
    test_rmdir(&dir);
}

/* Runs `referral-broker run` on a second data directory with extra arguments; returns its exit status and
 * leaves its stderr in DIR/second.log. */
static int second_broker(harness_t *h, const char *config, const char *args)
{
    char cmd[3000], ini[700];
    test_path(ini, sizeof ini, "%s/second.ini", h->dir);
    test_write_file(ini, config, strlen(config), 0644);
    test_path(cmd, sizeof cmd,
              "'%s/referral-broker' run --data '%s/data2' --config '%s' --listen tcp://127.0.0.1:* %s "
              "2>'%s/second.log'",
              h->bin, h->dir, ini, args, h->dir);
    int status = system(cmd);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static bool second_log_has(harness_t *h, const char *text)
{
    char path[700];
    size_t len;
    char *log = test_read_file(test_path(path, sizeof path, "%s/second.log", h->dir), &len);
    bool found = log != NULL && strstr(log, text) != NULL;
    if (!found)
        print_error("%s: no \"%s\" in:\n%s\n", path, text, log ? log : "(nothing)");
    free(log);
    return found;
}

/* A port in use (exit 3), a malformed address and out-of-range settings (2) stop the broker at start, saying why;
 * "off" runs without an endpoint. */
static void startup_errors_and_off(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    char cmd[2000], config[200];
    test_path(
        cmd, sizeof cmd,
        "'%s/referral-broker' init --data '%s/data2' --name broker-2 --admin-card '%s/admin.card' >/dev/null",
        h->bin, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);

    snprintf(config, sizeof config, "[metrics]\nlisten = 127.0.0.1:%d\n", harness_metrics_port(h));
    assert_int_equal(second_broker(h, config, ""), 3); /* may pass: restarted (OPERATIONS.md, exit status) */
    assert_true(second_log_has(h, "event=metrics_bind_failed"));
    assert_true(second_log_has(h, "Address already in use"));

    assert_int_equal(second_broker(h, "[metrics]\nlisten = localhost:9464\n", ""), 2);
    assert_true(second_log_has(h, "line 2: [metrics] listen must be off, or ADDRESS:PORT"));
    assert_int_equal(second_broker(h, "[delivery]\nack_overdue_ms = 10\n", ""), 2);
    assert_true(second_log_has(h, "[delivery] ack_overdue_ms must be a whole number from 1000"));
    assert_int_equal(second_broker(h, "", "--metrics 127.0.0.1:65536"), 2);
    assert_true(second_log_has(h, "--metrics must be off, or ADDRESS:PORT"));

    /* off: the broker runs, says so, and listens on nothing but ZeroMQ. */
    char ini[700], log[700];
    test_path(ini, sizeof ini, "%s/off.ini", h->dir);
    test_path(log, sizeof log, "%s/off.log", h->dir);
    test_write_file(ini, "[metrics]\nlisten = off\n", strlen("[metrics]\nlisten = off\n"), 0644);
    test_path(cmd, sizeof cmd,
              "'%s/referral-broker' run --data '%s/data2' --config '%s' --listen tcp://127.0.0.1:* 2>'%s' & "
              "pid=$!; for i in $(seq 100); do grep -q event=broker_started '%s' && break; sleep 0.1; done; "
              "kill -TERM $pid; wait $pid",
              h->bin, h->dir, ini, log, log);
    assert_int_equal(system(cmd), 0);
    size_t len;
    char *text = test_read_file(log, &len);
    assert_non_null(strstr(text, "event=metrics_off"));
    assert_null(strstr(text, "event=metrics_listening"));
    assert_non_null(strstr(text, "event=broker_stopped"));
    free(text);
    harness_stop(&h);
}

/* How many lines of the broker's log hold text. */
static int log_lines(harness_t *h, const char *text)
{
    size_t len;
    char *log = test_read_file(h->log, &len);
    int n = 0;
    for (char *p = log; p != NULL && (p = strstr(p, text)) != NULL; p++)
        n++;
    free(log);
    return n;
}

/* Issue #19, "Key expiry": keys that end soon are seen before everything stops. The harness's adapter
 * cards are valid one day, the broker's 365 days; the default warnings are 30 and 7 days. On c00af3b
 * nothing said so: no log line, no field, no metric, `status` clean. */
static void keys_nearing_expiry_are_seen(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int port = harness_metrics_port(h);
    int64_t cpd_end = (int64_t)identity_card(h->cpd)->expires * 1000;
    /* Logged once each, at the nearer warning, not every turn: */
    for (int64_t deadline = harness_ms() + 5000;
         log_lines(h, "event=key_expiring party=cpd-rms days_left=0 warning_days=7 ") != 1;
         harness_sleep_ms(50))
        if (harness_ms() > deadline)
            fail_msg("no key_expiring for cpd-rms; see %s", h->log);
    harness_sleep_ms(1500);
    assert_int_equal(log_lines(h, "event=key_expiring party=cpd-rms "), 1);
    assert_int_equal(log_lines(h, "event=key_expiring party=sao-intake "), 1);
    assert_int_equal(log_lines(h, "event=key_expiring party=broker-1 "), 0);

    char *out = harness_admin(h, true, "status", NULL, 0);
    json_t *o = json_loads(out, 0, NULL), *each;
    size_t i;
    bool seen = false;
    json_array_foreach(json_object_get(o, "adapters"), i, each)
    {
        if (strcmp(json_string_value(json_object_get(each, "name")), "cpd-rms") == 0) {
            assert_int_equal(json_integer_value(json_object_get(each, "keysEndMs")), cpd_end);
            seen = true;
        }
    }
    assert_true(seen);
    json_t *broker = json_object_get(o, "broker");
    assert_string_equal(json_string_value(json_object_get(broker, "name")), "broker-1");
    assert_true(json_integer_value(json_object_get(broker, "keyExpiresMs")) >
                harness_ms() + 300LL * 86400000);
    assert_true(json_integer_value(json_object_get(json_object_get(o, "total"), "keysEndMs")) <= cpd_end);
    seen = false;
    json_array_foreach(json_object_get(o, "attention"), i, each)
    {
        seen |= strcmp(json_string_value(each),
                       "cpd-rms: its key expires in 0 days: rotate it (OPERATIONS.md, rotating a key)") == 0;
    }
    assert_true(seen);
    json_decref(o);
    free(out);
    out = harness_admin(h, true, "adapter list", NULL, 0);
    char want[100];
    snprintf(want, sizeof want, "\"keyExpiresMs\": %lld, \"keysEndMs\": %lld", (long long)cpd_end,
             (long long)cpd_end);
    assert_non_null(strstr(out, want));
    free(out);

    wait_value(port, "referral_connected_adapters", 0, 5000); /* refreshed at least once */
    char *text = scrape(port);
    double left = value_in(text, CPD("referral_key_expiry_seconds"));
    assert_true(left > 0 && left <= 86400);
    assert_true(value_in(text, "referral_key_expiry_seconds_min") <= left);
    assert_true(value_in(text, "referral_broker_key_expiry_seconds") > 300.0 * 86400);
    free(text);

    /* The warnings are settings, checked. */
    assert_int_equal(
        second_broker(h, "[keys]\nexpiry_warn_ms = 86400000\nexpiry_final_warn_ms = 86400000\n", ""), 2);
    assert_true(second_log_has(h, "[keys] expiry_final_warn_ms must be below expiry_warn_ms (86400000)"));
    assert_int_equal(second_broker(h, "[keys]\nexpiry_warn_ms = 60000\n", ""), 2);
    assert_true(second_log_has(h, "[keys] expiry_warn_ms must be a whole number from 3600000"));
    harness_stop(&h);
}

/* The settings: defaults, values read, and the listen forms accepted. */
static void settings(void **state)
{
    (void)state;
    broker_config_t cfg;
    config_defaults(&cfg);
    assert_string_equal(cfg.metrics_listen, "127.0.0.1:9464");
    assert_int_equal(cfg.ack_overdue_ms, 72LL * 3600 * 1000);
    char *dir = test_mkdtemp(), path[600], err[300];
    test_path(path, sizeof path, "%s/b.ini", dir);
    const char *ini = "[metrics]\nlisten = 0.0.0.0:0\n[delivery]\nack_overdue_ms = 3600000\n";
    test_write_file(path, ini, strlen(ini), 0644);
    assert_ok(config_load(&cfg, path, err, sizeof err));
    assert_string_equal(cfg.metrics_listen, "0.0.0.0:0");
    assert_int_equal(cfg.ack_overdue_ms, 3600000);
    test_rmdir(&dir);
    static const char *const good[] = {"off", "127.0.0.1:9464", "127.0.0.1:0", "10.1.2.3:65535"};
    static const char *const bad[] = {"",           "on",       "localhost:9464",  "127.0.0.1",
                                      "127.0.0.1:", ":9464",    "127.0.0.1:65536", "127.0.0.1:94x",
                                      "[::1]:9464", "1.2.3:80", " 127.0.0.1:1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!metrics_listen_valid(good[i]))
            fail_msg("refused: \"%s\"", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (metrics_listen_valid(bad[i]))
            fail_msg("accepted: \"%s\"", bad[i]);
}

/* In process: label values escaped, histogram observations in the right buckets, hooks harmless when off. */
static void rendering(void **state)
{
    (void)state;
    metrics_t *off;
    assert_ok(metrics_start(&off, "off"));
    assert_null(off);
    metrics_delivered(off, "cpd-rms", 2); /* metrics off: every hook does nothing */
    metrics_refresh(off, NULL, 0, 0, 0, NULL, NULL);
    metrics_stop(&off);

    metrics_t *m;
    assert_ok(metrics_start(&m, "127.0.0.1:0"));
    metrics_refused(m, "odd\"name\\with\nbreaks", RB__ERROR_CODE__ERROR_CODE_TOO_BIG);
    Rb__Header h = RB__HEADER__INIT;
    h.kind = RB__KIND__KIND_REFERRAL;
    h.sender = "cpd-rms";
    metrics_receipted(m, NULL, &h, metrics_clock() - 0.003, 0); /* 3 ms: in the 5 ms bucket */
    metrics_checkpointed(m, harness_ms() - 2500, 42);
    char *text;
    size_t len;
    assert_ok(metrics_render(m, &text, &len));
    assert_int_equal(strlen(text), len);
    check_exposition(text);
    assert_true(value_in(text, "referral_refused_frames_total{adapter=\"odd\\\"name\\\\with\\nbreaks\","
                               "code=\"TOO_BIG\"}") == 1);
    assert_true(value_in(text, "referral_receipt_latency_seconds_bucket{le=\"0.0025\"}") == 0);
    assert_true(value_in(text, "referral_receipt_latency_seconds_bucket{le=\"0.005\"}") == 1);
    assert_true(value_in(text, "referral_receipt_latency_seconds_bucket{le=\"+Inf\"}") == 1);
    double sum = value_in(text, "referral_receipt_latency_seconds_sum");
    assert_true(sum >= 0.003 && sum < 0.005);
    double age = value_in(text, "referral_last_checkpoint_age_seconds");
    assert_true(age >= 2.5 && age < 60);
    assert_true(value_in(text, "referral_last_checkpoint_leaves") == 42);
    assert_true(isnan(value_in(text, "referral_last_refresh_age_seconds"))); /* never refreshed */
    /* Counted, but no adapter yet (no refresh from a store): no per-adapter series. */
    assert_null(strstr(text, "adapter=\"cpd-rms\""));
    free(text);
    metrics_stop(&m);
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(settings),
        cmocka_unit_test(rendering),
        cmocka_unit_test_teardown(values_follow_traffic, harness_teardown),
        cmocka_unit_test_teardown(startup_errors_and_off, harness_teardown),
        cmocka_unit_test_teardown(sink_gone_after_one_delivery_is_counted, harness_teardown),
        cmocka_unit_test_teardown(health_and_readiness, harness_teardown),
        cmocka_unit_test_teardown(keys_nearing_expiry_are_seen, harness_teardown),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
