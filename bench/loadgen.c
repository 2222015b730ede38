/* loadgen.c -- the broker-path load generator of `make bench` (bench/broker.sh runs it; docs/PERFORMANCE.md).
 *
 * Built on the client library, as the adapters are: every receipt it gets is verified (signed checkpoint,
 * consistency, inclusion), and it talks to a real broker over CURVE. Modes:
 *   closed  COUNT referrals as fast as CONNECTIONS source connections can submit them; a sink receives each,
 *           CONFIRMs it and submits a pre-signed ACK; the source receives the ACK and CONFIRMs it. Figures:
 *           referrals fully closed per second, submit->receipt latency, broker CPU per 1,000.
 *   rate    the same loop with submissions offered at RATE per second for SECONDS, on a fixed schedule;
 *           latency is from the scheduled time (a late submission counts its wait).
 *   fill    COUNT referrals submitted with no sink connected: the backlog (one ciphertext, a new signed header
 *           for each).
 *   drain   a sink connects and receives and CONFIRMs COUNT deliveries: the drain rate.
 * Envelopes are sealed before the clock starts (closed, rate), so what is measured is the broker's path.
 * The last line printed is `RESULT {json}`. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "envelope.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"

#define SINK_CREDIT 256
#define TIMEOUT_MS  30000

typedef struct {
    uint8_t *env;
    size_t len;
    msg_id_t id;
} sealed_t;

/* Everything the threads share. */
static struct {
    const char *endpoint;
    card_t broker;
    identity_t *source, *sink;
    size_t count, size;
    int connections;
    double rate;
    sealed_t *referrals, *acks; /* acks[i] answers referrals[i] */
    size_t *slot;               /* open-addressing table: message id -> index + 1 */
    size_t slots;
    atomic_size_t next;    /* the next referral to submit */
    atomic_size_t closed;  /* ACKs received back at the source */
    atomic_size_t drained; /* deliveries confirmed by the sink */
    atomic_int failed;
    double *latency_ms; /* submit->receipt, per referral */
    double start;       /* monotonic seconds */
    pthread_mutex_t lock;
    pthread_cond_t ready;
    size_t *ack_queue; /* referral indexes delivered to the sink, waiting for their ACK to be submitted */
    size_t queue_head, queue_tail;
    bool done;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, rb_err rc, const char *detail)
{
    fprintf(stderr, "loadgen: %s: %s %s\n", what, rb_strerror(rc), detail ? detail : "");
    exit(1);
}

static void fail(const char *what, rb_err rc, const char *detail)
{
    fprintf(stderr, "loadgen: %s: %s %s\n", what, rb_strerror(rc), detail ? detail : "");
    atomic_store(&g.failed, 1);
}

static client_t *connect_as(const identity_t *who, uint32_t credit)
{
    client_t *c;
    char err[300];
    rb_err rc = client_connect(&c, g.endpoint, who, &g.broker, credit, NULL, TIMEOUT_MS, err, sizeof err);
    if (rc != RB_OK)
        die("connect", rc, err);
    return c;
}

static size_t id_hash(const uint8_t id[MSG_ID_BYTES])
{
    uint64_t h; /* the last 8 of the id's 16 bytes: random */
    memcpy(&h, &id[8], sizeof h);
    return (size_t)(h % g.slots);
}

static void index_put(size_t i)
{
    size_t k = id_hash(g.referrals[i].id.bytes);
    while (g.slot[k] != 0)
        k = (k + 1) % g.slots;
    g.slot[k] = i + 1;
}

static bool index_get(const uint8_t id[MSG_ID_BYTES], size_t *i)
{
    for (size_t k = id_hash(id); g.slot[k] != 0; k = (k + 1) % g.slots)
        if (memcmp(g.referrals[g.slot[k] - 1].id.bytes, id, MSG_ID_BYTES) == 0) {
            *i = g.slot[k] - 1;
            return true;
        }
    return false;
}

/* A referral whose sealed envelope is about g.size bytes: the narrative pads it (the broker never sees it). */
static void seal_referral(size_t i, sealed_t *out)
{
    char rd[32], *narrative = malloc(g.size + 1);
    if (narrative == NULL)
        die("seal", RB_ERR_NOMEM, NULL);
    size_t pad = g.size > 900 ? g.size - 900 : 1;
    memset(narrative, 'x', pad);
    narrative[pad] = '\0';
    snprintf(rd, sizeof rd, "BN%08zu", i);
    Rb__Referral r = RB__REFERRAL__INIT;
    r.schema_version = 1;
    r.agency_ori = "ILCPD0000";
    r.rd_number = rd;
    r.revision = 1;
    r.narrative = narrative;
    size_t body_len = rb__referral__get_packed_size(&r);
    uint8_t *body = malloc(body_len);
    if (body == NULL)
        die("seal", RB_ERR_NOMEM, NULL);
    rb__referral__pack(&r, body);
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = client_clock_ms()};
    rb_err rc =
        envelope_seal(g.source, identity_card(g.sink), &p, body, body_len, &out->id, &out->env, &out->len);
    if (rc != RB_OK)
        die("seal a referral", rc, NULL);
    free(body);
    free(narrative);
}

static void seal_ack(const msg_id_t *ref, sealed_t *out)
{
    Rb__AckBody a = RB__ACK_BODY__INIT;
    a.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
    a.intake_reference = "BENCH-0000000";
    uint8_t body[256];
    size_t body_len = rb__ack_body__pack(&a, body);
    envelope_params_t p = {.kind = RB__KIND__KIND_ACK,
                           .ref = ref,
                           .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                           .created_ms = client_clock_ms()};
    rb_err rc =
        envelope_seal(g.sink, identity_card(g.source), &p, body, body_len, &out->id, &out->env, &out->len);
    if (rc != RB_OK)
        die("seal an ACK", rc, NULL);
}

/* Seals referrals [from, to) and their ACKs: run on both cores before the clock starts. */
typedef struct {
    size_t from, to;
} range_t;

static void *seal_range(void *arg)
{
    const range_t *r = arg;
    for (size_t i = r->from; i < r->to; i++) {
        seal_referral(i, &g.referrals[i]);
        seal_ack(&g.referrals[i].id, &g.acks[i]);
    }
    return NULL;
}

static void seal_all(void)
{
    g.referrals = calloc(g.count, sizeof *g.referrals);
    g.acks = calloc(g.count, sizeof *g.acks);
    g.slots = g.count * 2 + 1;
    g.slot = calloc(g.slots, sizeof *g.slot);
    g.latency_ms = calloc(g.count, sizeof *g.latency_ms);
    g.ack_queue = calloc(g.count, sizeof *g.ack_queue);
    if (!g.referrals || !g.acks || !g.slot || !g.latency_ms || !g.ack_queue)
        die("memory", RB_ERR_NOMEM, NULL);
    enum { WORKERS = 4 };
    pthread_t t[WORKERS];
    range_t r[WORKERS];
    for (size_t w = 0; w < WORKERS; w++) {
        r[w] = (range_t){g.count * w / WORKERS, g.count * (w + 1) / WORKERS};
        pthread_create(&t[w], NULL, seal_range, &r[w]);
    }
    for (size_t w = 0; w < WORKERS; w++)
        pthread_join(t[w], NULL);
    for (size_t i = 0; i < g.count; i++)
        index_put(i);
}

static void submit_ok(client_t *c, const sealed_t *s, const char *what)
{
    client_result_t r;
    for (;;) {
        rb_err rc = client_submit(c, s->env, s->len, TIMEOUT_MS, &r);
        if (rc != RB_OK) {
            fail(what, rc, r.reason);
            return;
        }
        if (r.accepted)
            return;
        if (r.code != RB__ERROR_CODE__ERROR_CODE_STORAGE) { /* "busy: retry" is the only refusal expected */
            fail(what, RB_ERR_CONFLICT, r.reason);
            return;
        }
        usleep(1000);
    }
}

/* A source connection: submits the next referral until none is left (closed, rate). */
static void *source_submitter(void *arg)
{
    (void)arg;
    client_t *c = connect_as(g.source, 0);
    for (size_t i; !atomic_load(&g.failed) && (i = atomic_fetch_add(&g.next, 1)) < g.count;) {
        double due = g.rate > 0 ? g.start + (double)i / g.rate : 0;
        if (due > 0) {
            double wait = due - now_s();
            if (wait > 0)
                usleep((useconds_t)(wait * 1e6));
        }
        double t0 = due > 0 ? due : now_s();
        submit_ok(c, &g.referrals[i], "submit a referral");
        g.latency_ms[i] = (now_s() - t0) * 1000;
    }
    client_close(&c);
    return NULL;
}

/* The source's receiving connection: takes each ACK and CONFIRMs it; a referral is then closed. */
static void *source_receiver(void *arg)
{
    client_t *c = arg;
    while (!atomic_load(&g.failed) && atomic_load(&g.closed) < g.count) {
        uint8_t *env;
        size_t len;
        uint32_t attempt;
        if (client_receive(c, TIMEOUT_MS, &env, &len, &attempt) != RB_OK) {
            fail("no ACK came back", RB_ERR_IO, NULL);
            break;
        }
        msg_id_t id;
        if (envelope_peek_id(env, len, &id) != RB_OK || client_confirm(c, id.bytes) != RB_OK)
            fail("confirm an ACK", RB_ERR_IO, NULL);
        free(env);
        atomic_fetch_add(&g.closed, 1);
    }
    return NULL;
}

/* The sink's receiving connection: CONFIRMs each delivery and queues its ACK (closed, rate), or only
 * counts it (drain). */
static void *sink_receiver(void *arg)
{
    client_t *c = arg;
    bool ack = g.acks != NULL;
    while (!atomic_load(&g.failed) && atomic_load(&g.drained) < g.count) {
        uint8_t *env;
        size_t len;
        uint32_t attempt;
        if (client_receive(c, TIMEOUT_MS, &env, &len, &attempt) != RB_OK) {
            fail("no delivery came", RB_ERR_IO, NULL);
            break;
        }
        msg_id_t id;
        size_t i = 0;
        if (envelope_peek_id(env, len, &id) != RB_OK || client_confirm(c, id.bytes) != RB_OK)
            fail("confirm a delivery", RB_ERR_IO, NULL);
        free(env);
        if (attempt > 1) /* a redelivery of one already taken: confirmed again, counted once */
            continue;
        atomic_fetch_add(&g.drained, 1);
        if (ack && index_get(id.bytes, &i)) {
            pthread_mutex_lock(&g.lock);
            g.ack_queue[g.queue_tail++] = i;
            pthread_cond_signal(&g.ready);
            pthread_mutex_unlock(&g.lock);
        }
    }
    pthread_mutex_lock(&g.lock);
    g.done = true;
    pthread_cond_broadcast(&g.ready);
    pthread_mutex_unlock(&g.lock);
    return NULL;
}

/* A sink connection that submits the ACKs of what the sink received. */
static void *ack_submitter(void *arg)
{
    (void)arg;
    client_t *c = connect_as(g.sink, 0);
    for (;;) {
        pthread_mutex_lock(&g.lock);
        while (g.queue_head == g.queue_tail && !g.done && !atomic_load(&g.failed))
            pthread_cond_wait(&g.ready, &g.lock);
        if (g.queue_head == g.queue_tail) {
            pthread_mutex_unlock(&g.lock);
            break;
        }
        size_t i = g.ack_queue[g.queue_head++];
        pthread_mutex_unlock(&g.lock);
        submit_ok(c, &g.acks[i], "submit an ACK");
    }
    client_close(&c);
    return NULL;
}

/* The broker's CPU seconds so far (utime + stime), or -1. */
static double cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The fields after the command name, from field 3 (state): utime is field 14, stime 15. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long ticks = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok != NULL; tok = strtok(NULL, " "))
        if (++field == 14 || field == 15)
            ticks += strtoull(tok, NULL, 10);
    return field >= 15 ? (double)ticks / (double)sysconf(_SC_CLK_TCK) : -1;
}

/* This process's CPU seconds so far: the clients' share of the machine. */
static double own_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           (double)u.ru_stime.tv_usec / 1e6;
}

/* The broker's resident set now and at its peak, in MB, from /proc/PID/status. */
static void rss_mb(int pid, double *now, double *peak)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    *now = *peak = -1;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *now = strtod(line + 6, NULL) / 1024; /* "VmRSS:   14848 kB" */
        if (strncmp(line, "VmHWM:", 6) == 0)
            *peak = strtod(line + 6, NULL) / 1024;
    }
    fclose(f);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, size_t n, double p)
{
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return n == 0 ? 0 : sorted[k < n ? k : n - 1];
}

/* The closed loop of closed and rate: returns seconds from the first submission to the last ACK. */
static double closed_loop(void)
{
    client_t *sink = connect_as(g.sink, SINK_CREDIT), *source = connect_as(g.source, SINK_CREDIT);
    int ackers = g.connections;
    pthread_t rx[2], *tx = calloc((size_t)g.connections + (size_t)ackers, sizeof *tx);
    g.start = now_s() + 0.05;
    pthread_create(&rx[0], NULL, sink_receiver, sink);
    pthread_create(&rx[1], NULL, source_receiver, source);
    for (int i = 0; i < ackers; i++)
        pthread_create(&tx[g.connections + i], NULL, ack_submitter, NULL);
    for (int i = 0; i < g.connections; i++)
        pthread_create(&tx[i], NULL, source_submitter, NULL);
    for (int i = 0; i < g.connections; i++)
        pthread_join(tx[i], NULL);
    pthread_join(rx[0], NULL);
    for (int i = 0; i < ackers; i++)
        pthread_join(tx[g.connections + i], NULL);
    pthread_join(rx[1], NULL);
    double took = now_s() - g.start;
    client_close(&sink);
    client_close(&source);
    free(tx);
    return took;
}

/* fill: COUNT referrals with no sink, sealed as they go, from CONNECTIONS connections. */
/* fill: COUNT referrals with no sink. A million sealed up front would not fit in memory and sealing each
 * costs the clients more than the broker, so one sealed referral's ciphertext is sent under a new header
 * for each (a new message id, signed): the broker, which never sees content, gets a million distinct,
 * validly signed envelopes. */
static void *fill_submitter(void *arg)
{
    (void)arg;
    client_t *c = connect_as(g.source, 0);
    sealed_t first;
    seal_referral(0, &first);
    Rb__Envelope *e = rb__envelope__unpack(NULL, first.len, first.env);
    Rb__Header *h = e ? rb__header__unpack(NULL, e->header.len, e->header.data) : NULL;
    if (h == NULL)
        die("unpack a sealed referral", RB_ERR_MALFORMED, NULL);
    for (size_t i; !atomic_load(&g.failed) && (i = atomic_fetch_add(&g.next, 1)) < g.count;) {
        sealed_t s;
        Rb__Header copy = *h;
        envelope_new_id(&s.id, client_clock_ms());
        copy.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, s.id.bytes};
        rb_err rc = envelope_pack(g.source, &copy, e->ciphertext.data, e->ciphertext.len, &s.env, &s.len);
        if (rc != RB_OK)
            die("sign a header", rc, NULL);
        submit_ok(c, &s, "submit a referral");
        free(s.env);
        if (i % 100000 == 0 && i > 0)
            fprintf(stderr, "loadgen: %zu submitted\n", i);
    }
    rb__header__free_unpacked(h, NULL);
    rb__envelope__free_unpacked(e, NULL);
    free(first.env);
    client_close(&c);
    return NULL;
}

static void usage(void);

/* An option's number: all of it a number within [min, max], else usage. */
static double number(const char *text, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
        usage();
    return v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --mode closed|rate|fill|drain --broker EP --broker-card CARD --source SECRET\n"
            "               --sink SECRET --broker-pid PID [--count N] [--connections C] [--size BYTES]\n"
            "               [--rate R --seconds S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode = NULL, *card = NULL, *source = NULL, *sink = NULL;
    int pid = 0;
    double seconds = 20;
    g.count = 10000;
    g.connections = 8;
    g.size = 4096;
    static const struct option opts[] = {
        {"mode", 1, 0, 'm'}, {"broker", 1, 0, 'b'},  {"broker-card", 1, 0, 'c'}, {"source", 1, 0, 's'},
        {"sink", 1, 0, 'k'}, {"count", 1, 0, 'n'},   {"connections", 1, 0, 'C'}, {"size", 1, 0, 'z'},
        {"rate", 1, 0, 'r'}, {"seconds", 1, 0, 'S'}, {"broker-pid", 1, 0, 'p'},  {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'm':
            mode = optarg;
            break;
        case 'b':
            g.endpoint = optarg;
            break;
        case 'c':
            card = optarg;
            break;
        case 's':
            source = optarg;
            break;
        case 'k':
            sink = optarg;
            break;
        case 'n':
            g.count = (size_t)number(optarg, 1, 1e8);
            break;
        case 'C':
            g.connections = (int)number(optarg, 1, 62);
            break;
        case 'z':
            g.size = (size_t)number(optarg, 1024, 512 * 1024);
            break;
        case 'r':
            g.rate = number(optarg, 1, 1e6);
            break;
        case 'S':
            seconds = number(optarg, 1, 3600);
            break;
        case 'p':
            pid = (int)number(optarg, 1, 1 << 22);
            break;
        default:
            usage();
        }
    }
    if (!mode || !g.endpoint || !card || !source || !sink || !pid || g.count == 0 || g.connections < 1 ||
        g.connections > 62 || g.size < 1024 || g.size > 512 * 1024)
        usage();
    rb_err rc;
    if (rbcrypto_init() != RB_OK)
        die("libsodium", RB_ERR_IO, NULL);
    if ((rc = card_read_file(&g.broker, card)) != RB_OK)
        die(card, rc, NULL);
    if ((rc = identity_load(&g.source, source, NULL, 0)) != RB_OK)
        die(source, rc, NULL);
    if ((rc = identity_load(&g.sink, sink, NULL, 0)) != RB_OK)
        die(sink, rc, NULL);
    double cpu0 = cpu_s(pid), rss0, peak0, rss1, peak1;
    rss_mb(pid, &rss0, &peak0);
    char result[1024];
    if (strcmp(mode, "closed") == 0 || strcmp(mode, "rate") == 0) {
        bool fixed = strcmp(mode, "rate") == 0;
        if (fixed) {
            if (g.rate <= 0)
                usage();
            g.count = (size_t)(g.rate * seconds);
        } else {
            g.rate = 0;
        }
        double t = now_s();
        seal_all();
        fprintf(stderr, "loadgen: %zu referrals and their ACKs sealed in %.1f s\n", g.count, now_s() - t);
        cpu0 = cpu_s(pid);
        double own0 = own_cpu_s();
        double took = closed_loop();
        double own = own_cpu_s() - own0;
        if (atomic_load(&g.failed))
            return 1;
        double cpu = cpu_s(pid) - cpu0;
        qsort(g.latency_ms, g.count, sizeof *g.latency_ms, by_value);
        snprintf(result, sizeof result,
                 "{\"count\": %zu, \"connections\": %d, \"envelope_bytes\": %zu, \"seconds\": %.3f, "
                 "\"closed_per_s\": %.1f, \"offered_per_s\": %.1f, \"p50_receipt_ms\": %.3f, "
                 "\"p99_receipt_ms\": %.3f, \"p999_receipt_ms\": %.3f, \"max_receipt_ms\": %.3f, "
                 "\"broker_cpu_s_per_1000\": %.4f, \"clients_cpu_s_per_1000\": %.4f}",
                 g.count, g.connections, g.referrals[0].len, took, (double)g.count / took, g.rate,
                 percentile(g.latency_ms, g.count, 0.50), percentile(g.latency_ms, g.count, 0.99),
                 percentile(g.latency_ms, g.count, 0.999), g.latency_ms[g.count - 1],
                 cpu * 1000 / (double)g.count, own * 1000 / (double)g.count);
    } else if (strcmp(mode, "fill") == 0) {
        pthread_t *tx = calloc((size_t)g.connections, sizeof *tx);
        double t = now_s();
        for (int i = 0; i < g.connections; i++)
            pthread_create(&tx[i], NULL, fill_submitter, NULL);
        for (int i = 0; i < g.connections; i++)
            pthread_join(tx[i], NULL);
        free(tx);
        if (atomic_load(&g.failed))
            return 1;
        double took = now_s() - t;
        rss_mb(pid, &rss1, &peak1);
        snprintf(result, sizeof result,
                 "{\"count\": %zu, \"seconds\": %.3f, \"fill_per_s\": %.1f, \"rss_mb_before\": %.1f, "
                 "\"rss_mb_after\": %.1f, \"rss_mb_peak\": %.1f, \"broker_cpu_s_per_1000\": %.4f}",
                 g.count, took, (double)g.count / took, rss0, rss1, peak1,
                 (cpu_s(pid) - cpu0) * 1000 / (double)g.count);
    } else if (strcmp(mode, "drain") == 0) {
        client_t *c = connect_as(g.sink, SINK_CREDIT);
        double t = now_s();
        sink_receiver(c);
        if (atomic_load(&g.failed))
            return 1;
        double took = now_s() - t;
        client_close(&c);
        rss_mb(pid, &rss1, &peak1);
        snprintf(result, sizeof result,
                 "{\"count\": %zu, \"seconds\": %.3f, \"drain_per_s\": %.1f, \"rss_mb_after\": %.1f, "
                 "\"rss_mb_peak\": %.1f, \"broker_cpu_s_per_1000\": %.4f}",
                 g.count, took, (double)g.count / took, rss1, peak1,
                 (cpu_s(pid) - cpu0) * 1000 / (double)g.count);
    } else {
        usage();
    }
    printf("RESULT %s\n", result);
    return 0;
}
