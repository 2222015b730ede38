/* metrics.c -- the broker's Prometheus endpoint (see metrics.h).
 *
 * Two threads meet here, under one mutex: the broker's loop, which counts and refreshes, and
 * libmicrohttpd's thread, which renders. Nothing slow happens under the lock: the loop reads SQLite
 * before it takes it, and a scrape only formats numbers. Ages (of the last checkpoint, of the last
 * refresh) are computed at scrape time from the time of the event, so that they keep growing when the loop
 * is stuck: the HTTP thread still answers, and what it shows says the loop has stopped.
 *
 * The socket is bound here rather than by libmicrohttpd so that a failure says why (address in use) and
 * the port the system picked for port 0 is known at once.
 *
 * Anyone who reaches the port can open connections and hold them; a scraper must still get in. So what the
 * HTTP thread keeps is bounded: HTTP_CONNECTIONS in all, HTTP_PER_ADDRESS from one address (below the
 * former, so that one address holding all it may leaves room for the others), and a connection that sends
 * or takes nothing for HTTP_TIMEOUT_S is closed. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ledger.h"
#include "log.h"
#include "out.h"
#include "wire.h"

#define KINDS      5  /* Rb__Kind values */
#define CODES      64 /* room for every Rb__ErrorCode value */
#define BUCKETS    16 /* most histogram buckets, +Inf not included */
#define REFRESH_MS 1000
#define STALE_MS   5000 /* /readyz: five refreshes missed, the loop is stuck or cannot read its database */

/* A scraper needs one connection at a time, and a scrape takes milliseconds. */
#define HTTP_CONNECTIONS 64u /* open at once, from everyone */
#define HTTP_PER_ADDRESS 8u  /* open at once from one client address */
#define HTTP_TIMEOUT_S   5u  /* a connection idle this long is closed */
#define HTTP_BACKLOG     64  /* connections the kernel queues before the HTTP thread accepts them */

/* Seconds: a receipt waits for one group commit (an fsync), so milliseconds matter. */
static const double receipt_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
/* Seconds: an intake system answers in milliseconds when automatic, or in days when people review. */
static const double end_to_end_bounds[] = {0.01, 0.1,   1,     10,    60,     300,    900,
                                           3600, 14400, 43200, 86400, 172800, 259200, 604800};

typedef struct {
    const double *bounds; /* upper bounds, increasing */
    size_t n;
    uint64_t counts[BUCKETS + 1]; /* observations per bucket (not cumulative); the last is +Inf */
    uint64_t count;
    double sum;
} histogram_t;

/* Everything labelled with one party's name. */
typedef struct {
    char name[CARD_NAME_MAX + 1];
    bool adapter;          /* an adapter at the last refresh: it has gauges (admins only count refusals) */
    bool connected;        /* said HELLO on an open connection, at the last refresh */
    bool enabled;          /* not disabled by an admin, at the last refresh */
    party_counts_t counts; /* as a recipient, at the last refresh */
    uint64_t submissions[KINDS];
    uint64_t deliveries, retries, confirms;
    uint64_t acks[2]; /* accepted, rejected */
    uint64_t refused[CODES];
    int64_t sessions; /* open now */
} series_t;

struct metrics {
    pthread_mutex_t lock; /* guards everything below but daemon and refreshed_ms */
    struct MHD_Daemon *daemon;
    int64_t refreshed_ms; /* the loop's own: when it last read the store */
    series_t *series;
    size_t n_series, cap_series;
    histogram_t receipt, end_to_end;
    uint64_t dead_lettered, checkpoints, ledger_leaves;
    uint64_t dropped[METRICS_DROP_REASONS];
    uint64_t refused_handshakes;
    uint64_t sessions_closed[METRICS_CLOSE_REASONS];
    int64_t checkpoint_ms;      /* when the last checkpoint was signed; 0 before the first */
    uint64_t checkpoint_leaves; /* the tree size it signed */
    int64_t snapshot_ms;        /* when the gauges were last refreshed; 0 before the first time */
    bool started;               /* the broker listens and has verified its ledger (metrics_started) */
    int64_t broker_key_end_ms;  /* when the broker's own key expires */
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double metrics_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool parse_listen(const char *text, struct sockaddr_in *addr)
{
    char host[INET_ADDRSTRLEN], *end;
    const char *colon = strrchr(text, ':');
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    if (colon == NULL || (size_t)(colon - text) >= sizeof host || colon[1] < '0' || colon[1] > '9')
        return false;
    unsigned long port = strtoul(colon + 1, &end, 10);
    snprintf(host, sizeof host, "%.*s", (int)(colon - text), text);
    if (*end != '\0' || port > 65535 || inet_pton(AF_INET, host, &addr->sin_addr) != 1)
        return false;
    addr->sin_port = htons((uint16_t)port);
    return true;
}

bool metrics_listen_valid(const char *text)
{
    struct sockaddr_in addr;
    return strcmp(text, "off") == 0 || parse_listen(text, &addr);
}

/* --- the registry --------------------------------------------------------------------------------------- */

/* The series of a party, added at its first mention; NULL when out of memory (the count is lost). Locked. */
static series_t *series_of(metrics_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].name, name) == 0)
            return &m->series[i];
    if (m->n_series == m->cap_series) {
        size_t cap = m->cap_series ? m->cap_series * 2 : 8;
        series_t *grown = realloc(m->series, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        m->series = grown;
        m->cap_series = cap;
    }
    series_t *s = &m->series[m->n_series++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

static void observe(histogram_t *h, double seconds)
{
    size_t i = 0;
    while (i < h->n && seconds > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += seconds;
}

void metrics_receipted(metrics_t *m, store_t *store, const Rb__Header *h, double arrived,
                       int64_t committed_ms)
{
    if (m == NULL)
        return;
    double latency = metrics_clock() - arrived;
    bool ack = h->kind == RB__KIND__KIND_ACK, found = false;
    stored_msg_t ref;
    /* Read before locking: the referral this ACK answers, for when it arrived. */
    if (ack && h->ref_message_id.len == MSG_ID_BYTES &&
        store_find_message(store, h->ref_message_id.data, &found, &ref) != RB_OK)
        found = false;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_of(m, h->sender);
    if (s != NULL) {
        s->submissions[(unsigned)h->kind < KINDS ? h->kind : 0]++;
        if (ack)
            s->acks[h->ack_status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? 0 : 1]++;
    }
    observe(&m->receipt, latency);
    if (found)
        observe(&m->end_to_end, (double)(committed_ms - ref.received_ms) / 1000);
    pthread_mutex_unlock(&m->lock);
}

void metrics_delivered(metrics_t *m, const char *adapter, int attempt)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_of(m, adapter);
    if (s != NULL) {
        s->deliveries++;
        s->retries += attempt > 1;
    }
    pthread_mutex_unlock(&m->lock);
}

void metrics_confirmed(metrics_t *m, const char *adapter)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_of(m, adapter);
    if (s != NULL)
        s->confirms++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_refused(metrics_t *m, const char *party, Rb__ErrorCode code)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_of(m, party);
    if (s != NULL)
        s->refused[(unsigned)code < CODES ? code : 0]++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_handshake_refused(metrics_t *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->refused_handshakes++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_dropped(metrics_t *m, metrics_drop_t why)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->dropped[why]++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_session_opened(metrics_t *m, const char *party)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_of(m, party);
    if (s != NULL)
        s->sessions++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_session_closed(metrics_t *m, const char *party, metrics_close_t why)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_of(m, party);
    if (s != NULL && s->sessions > 0)
        s->sessions--;
    m->sessions_closed[why]++;
    pthread_mutex_unlock(&m->lock);
}

void metrics_dead_lettered(metrics_t *m, size_t n)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->dead_lettered += n;
    pthread_mutex_unlock(&m->lock);
}

void metrics_started(metrics_t *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->started = true;
    pthread_mutex_unlock(&m->lock);
}

void metrics_checkpointed(metrics_t *m, int64_t at_ms, uint64_t size)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->checkpoints++;
    m->checkpoint_ms = at_ms;
    m->checkpoint_leaves = size;
    if (m->ledger_leaves < size) /* the tree holds what was signed, even between refreshes */
        m->ledger_leaves = size;
    pthread_mutex_unlock(&m->lock);
}

/* One adapter as read from the store. */
typedef struct {
    char name[CARD_NAME_MAX + 1];
    party_counts_t counts;
    bool connected, enabled;
} snapshot_t;

typedef struct {
    store_t *store;
    int64_t now_ms, ack_overdue_ms;
    admin_connected_fn connected;
    void *ctx;
    snapshot_t *rows;
    size_t n, cap;
} reader_t;

static rb_err read_party(void *ctx, const party_t *p)
{
    reader_t *r = ctx;
    if (p->card.role == CARD_ROLE_ADMIN)
        return RB_OK;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        snapshot_t *grown = realloc(r->rows, cap * sizeof *grown);
        if (grown == NULL)
            return RB_ERR_NOMEM;
        r->rows = grown;
        r->cap = cap;
    }
    snapshot_t *row = &r->rows[r->n];
    snprintf(row->name, sizeof row->name, "%s", p->card.name);
    row->connected = r->connected(r->ctx, p->card.name);
    row->enabled = p->enabled;
    rb_err rc = store_counts(r->store, p->card.name, r->now_ms, r->ack_overdue_ms, &row->counts);
    if (rc == RB_OK)
        r->n++;
    return rc;
}

void metrics_refresh(metrics_t *m, store_t *store, int64_t now_ms, int64_t ack_overdue_ms,
                     int64_t broker_key_end_ms, admin_connected_fn connected, void *ctx)
{
    if (m == NULL || now_ms - m->refreshed_ms < REFRESH_MS)
        return;
    m->refreshed_ms = now_ms;
    reader_t r = {store, now_ms, ack_overdue_ms, connected, ctx, NULL, 0, 0};
    rb_err rc = store_each_party(store, read_party, &r);
    if (rc != RB_OK) {
        log_warn("metrics_refresh_failed", "error=\"%s\"", rb_strerror(rc));
        free(r.rows);
        return;
    }
    uint64_t leaves = ledger_size(store_ledger(store));
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_series; i++)
        m->series[i].adapter = false;
    for (size_t i = 0; i < r.n; i++) {
        series_t *s = series_of(m, r.rows[i].name);
        if (s != NULL) {
            s->adapter = true;
            s->connected = r.rows[i].connected;
            s->enabled = r.rows[i].enabled;
            s->counts = r.rows[i].counts;
        }
    }
    m->ledger_leaves = leaves;
    m->snapshot_ms = now_ms;
    m->broker_key_end_ms = broker_key_end_ms;
    pthread_mutex_unlock(&m->lock);
    free(r.rows);
}

/* --- the text format ------------------------------------------------------------------------------------ */

static void family(out_t *o, const char *name, const char *type, const char *help)
{
    out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format asks: backslash, double quote and newline. */
static void label_value(out_t *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            out_printf(o, "\\%c", *v);
        else if (*v == '\n')
            out_printf(o, "\\n");
        else
            out_printf(o, "%c", *v);
    }
}

/* name{adapter="party"[,key="value"]} and a space; the value follows. */
static void sample(out_t *o, const char *name, const char *party, const char *key, const char *value)
{
    out_printf(o, "%s{adapter=\"", name);
    label_value(o, party);
    if (key != NULL) {
        out_printf(o, "\",%s=\"", key);
        label_value(o, value);
    }
    out_printf(o, "\"} ");
}

/* The name of an enum value as a label: without its prefix, lower case if asked. */
static const char *enum_label(const ProtobufCEnumDescriptor *d, int value, const char *prefix, bool lower,
                              char out[64])
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    const char *name = v != NULL ? v->name : "UNKNOWN";
    if (strncmp(name, prefix, strlen(prefix)) == 0)
        name += strlen(prefix);
    size_t i = 0;
    for (; i < 63 && name[i] != '\0'; i++)
        out[i] = (char)(lower && name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    out[i] = '\0';
    return out;
}

/* A gauge or counter with one value per adapter. */
typedef enum {
    QUEUED,
    IN_FLIGHT,
    AWAITING,
    OLDEST,
    OVERDUE,
    DEAD,
    QUARANTINED,
    KEYS_END,
    CONNECTED,
    DELIVERIES,
    RETRIES,
    CONFIRMS
} field_t;

static void per_adapter(out_t *o, const metrics_t *m, const char *name, const char *type, const char *help,
                        field_t f, int64_t now_ms)
{
    family(o, name, type, help);
    for (size_t i = 0; i < m->n_series; i++) {
        const series_t *s = &m->series[i];
        if (!s->adapter)
            continue;
        sample(o, name, s->name, NULL, NULL);
        switch (f) {
        case QUEUED:
            out_printf(o, "%d\n", s->counts.queued);
            break;
        case IN_FLIGHT:
            out_printf(o, "%d\n", s->counts.in_flight);
            break;
        case AWAITING:
            out_printf(o, "%d\n", s->counts.awaiting_ack);
            break;
        case OLDEST:
            out_printf(o, "%.3f\n", (double)s->counts.oldest_awaiting_ms / 1000);
            break;
        case OVERDUE:
            out_printf(o, "%d\n", s->counts.overdue);
            break;
        case DEAD:
            out_printf(o, "%d\n", s->counts.dead);
            break;
        case QUARANTINED:
            out_printf(o, "%d\n", s->counts.quarantined);
            break;
        case KEYS_END:
            out_printf(o, "%.3f\n", (double)(s->counts.keys_end_ms - now_ms) / 1000);
            break;
        case CONNECTED:
            out_printf(o, "%d\n", s->connected ? 1 : 0);
            break;
        case DELIVERIES:
            out_printf(o, "%llu\n", (unsigned long long)s->deliveries);
            break;
        case RETRIES:
            out_printf(o, "%llu\n", (unsigned long long)s->retries);
            break;
        case CONFIRMS:
            out_printf(o, "%llu\n", (unsigned long long)s->confirms);
            break;
        }
    }
}

static void histogram(out_t *o, const char *name, const char *help, const histogram_t *h)
{
    family(o, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h->n; i++) {
        cumulative += h->counts[i];
        out_printf(o, "%s_bucket{le=\"%.10g\"} %llu\n", name, h->bounds[i], (unsigned long long)cumulative);
    }
    out_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
               (unsigned long long)h->count, name, h->sum, name, (unsigned long long)h->count);
}

static void render(out_t *o, const metrics_t *m, int64_t now_ms)
{
    family(o, "referral_up", "gauge", "1 while the broker runs and serves metrics.");
    out_printf(o, "referral_up 1\n");
    family(o, "referral_build_info", "gauge", "Versions of the protocol, ledger and database schema.");
    out_printf(o, "referral_build_info{protocol=\"%d\",ledger=\"%d\",schema=\"%d\"} 1\n", WIRE_VERSION,
               LEDGER_VERSION, STORE_SCHEMA_VERSION);

    per_adapter(o, m, "referral_queue_depth", "gauge",
                "Messages for this recipient waiting for a delivery: never delivered, or due again.", QUEUED,
                now_ms);
    per_adapter(o, m, "referral_in_flight", "gauge",
                "Messages delivered to this recipient and not confirmed.", IN_FLIGHT, now_ms);
    per_adapter(o, m, "referral_awaiting_ack", "gauge",
                "Referrals confirmed by this recipient and not answered by an ACK.", AWAITING, now_ms);
    per_adapter(
        o, m, "referral_oldest_awaiting_ack_age_seconds", "gauge",
        "Age since the broker received it of the oldest referral awaiting an ACK from this recipient.",
        OLDEST, now_ms);
    per_adapter(o, m, "referral_overdue_acks", "gauge",
                "Referrals confirmed by this recipient longer than ack_overdue_ms ago and not ACKed.",
                OVERDUE, now_ms);
    per_adapter(o, m, "referral_dead_letters", "gauge",
                "Messages for this recipient in the dead-letter queue.", DEAD, now_ms);
    per_adapter(o, m, "referral_quarantined", "gauge",
                "Messages from this sender held after its key was revoked as compromised.", QUARANTINED,
                now_ms);
    per_adapter(o, m, "referral_key_expiry_seconds", "gauge",
                "Seconds until the last of this party's keys stops being valid (expiry, or the end of a "
                "rotation's overlap); 0 or less: it has none.",
                KEYS_END, now_ms);
    if (m->snapshot_ms > 0) {
        double nearest = (double)(m->broker_key_end_ms - now_ms) / 1000;
        /* A party disabled for good, or with no key left, is not one to alert on for ever. */
        for (size_t i = 0; i < m->n_series; i++) {
            const series_t *s = &m->series[i];
            if (s->adapter && s->enabled && s->counts.keys_end_ms > 0 &&
                (double)(s->counts.keys_end_ms - now_ms) / 1000 < nearest)
                nearest = (double)(s->counts.keys_end_ms - now_ms) / 1000;
        }
        family(o, "referral_key_expiry_seconds_min", "gauge",
               "Seconds until the nearest of referral_key_expiry_seconds and the broker's own key's expiry.");
        out_printf(o, "referral_key_expiry_seconds_min %.3f\n", nearest);
        family(o, "referral_broker_key_expiry_seconds", "gauge",
               "Seconds until the broker's own key expires.");
        out_printf(o, "referral_broker_key_expiry_seconds %.3f\n",
                   (double)(m->broker_key_end_ms - now_ms) / 1000);
    }
    per_adapter(o, m, "referral_adapter_connected", "gauge",
                "1 while the adapter has a connection that said HELLO.", CONNECTED, now_ms);
    int connected = 0;
    for (size_t i = 0; i < m->n_series; i++)
        connected += m->series[i].adapter && m->series[i].connected;
    family(o, "referral_connected_adapters", "gauge", "Adapters with a connection that said HELLO.");
    out_printf(o, "referral_connected_adapters %d\n", connected);
    family(o, "referral_ledger_leaves", "gauge", "Events in the audit ledger (the Merkle tree's size).");
    out_printf(o, "referral_ledger_leaves %llu\n", (unsigned long long)m->ledger_leaves);
    if (m->checkpoint_ms > 0) {
        family(o, "referral_last_checkpoint_age_seconds", "gauge",
               "Time since the broker last signed a ledger checkpoint.");
        out_printf(o, "referral_last_checkpoint_age_seconds %.3f\n",
                   (double)(now_ms - m->checkpoint_ms) / 1000);
        family(o, "referral_last_checkpoint_leaves", "gauge",
               "Tree size of the last signed checkpoint: below referral_ledger_leaves, events await a "
               "signature.");
        out_printf(o, "referral_last_checkpoint_leaves %llu\n", (unsigned long long)m->checkpoint_leaves);
    }
    if (m->snapshot_ms > 0) {
        family(o, "referral_last_refresh_age_seconds", "gauge",
               "Time since the broker's loop last refreshed the gauges (each second): growing, the loop is "
               "stuck.");
        out_printf(o, "referral_last_refresh_age_seconds %.3f\n", (double)(now_ms - m->snapshot_ms) / 1000);
    }

    char label[64];
    family(o, "referral_submissions_total", "counter",
           "Submissions stored and receipted, by sender and kind.");
    for (size_t i = 0; i < m->n_series; i++) {
        const series_t *s = &m->series[i];
        for (int k = 1; k < KINDS && s->adapter; k++) {
            sample(o, "referral_submissions_total", s->name, "kind",
                   enum_label(&rb__kind__descriptor, k, "KIND_", true, label));
            out_printf(o, "%llu\n", (unsigned long long)s->submissions[k]);
        }
    }
    per_adapter(o, m, "referral_deliveries_total", "counter", "DELIVER frames sent to this recipient.",
                DELIVERIES, now_ms);
    per_adapter(o, m, "referral_retries_total", "counter",
                "Deliveries to this recipient after the first attempt.", RETRIES, now_ms);
    per_adapter(o, m, "referral_confirms_total", "counter", "CONFIRMs received from this recipient.",
                CONFIRMS, now_ms);
    family(o, "referral_acks_total", "counter", "ACKs stored, by the adapter that sent them and outcome.");
    for (size_t i = 0; i < m->n_series; i++) {
        const series_t *s = &m->series[i];
        if (!s->adapter)
            continue;
        sample(o, "referral_acks_total", s->name, "outcome", "accepted");
        out_printf(o, "%llu\n", (unsigned long long)s->acks[0]);
        sample(o, "referral_acks_total", s->name, "outcome", "rejected");
        out_printf(o, "%llu\n", (unsigned long long)s->acks[1]);
    }
    family(o, "referral_refused_frames_total", "counter",
           "Frames refused with an ERROR, by party and error code (a series appears at its first refusal).");
    for (size_t i = 0; i < m->n_series; i++)
        for (int c = 0; c < CODES; c++)
            if (m->series[i].refused[c] > 0) {
                sample(o, "referral_refused_frames_total", m->series[i].name, "code",
                       enum_label(&rb__error_code__descriptor, c, "ERROR_CODE_", false, label));
                out_printf(o, "%llu\n", (unsigned long long)m->series[i].refused[c]);
            }
    family(o, "referral_refused_handshakes_total", "counter",
           "CURVE handshakes the ZAP handler refused: keys of no registered, enabled, valid party.");
    out_printf(o, "referral_refused_handshakes_total %llu\n", (unsigned long long)m->refused_handshakes);
    family(o, "referral_dropped_frames_total", "counter",
           "Frames neither handled nor answered, by reason: no_session (from a connection the broker has no "
           "session for), peer_full (to a peer whose queue is full: it does not read), peer_gone (to a "
           "connection already closed).");
    static const char *const drop_names[METRICS_DROP_REASONS] = {"no_session", "peer_full", "peer_gone"};
    for (int i = 0; i < METRICS_DROP_REASONS; i++)
        out_printf(o, "referral_dropped_frames_total{reason=\"%s\"} %llu\n", drop_names[i],
                   (unsigned long long)m->dropped[i]);
    family(o, "referral_sessions", "gauge",
           "Sessions open now, by party (admins included): at most [broker] sessions_per_key per key.");
    for (size_t i = 0; i < m->n_series; i++)
        if (m->series[i].sessions > 0 || m->series[i].adapter) {
            sample(o, "referral_sessions", m->series[i].name, NULL, NULL);
            out_printf(o, "%lld\n", (long long)m->series[i].sessions);
        }
    family(o, "referral_sessions_closed_total", "counter",
           "Sessions the broker closed, by reason: silent, replaced (a newer receiving connection of its "
           "party), gone (its connection closed or it does not read), evicted (its key opened more than "
           "sessions_per_key), disabled (its party disabled, its key revoked, retired or expired), "
           "routing_id_reused (another key's connection came under its routing id).");
    static const char *const close_names[METRICS_CLOSE_REASONS] = {
        "silent", "replaced", "gone", "evicted", "disabled", "routing_id_reused"};
    for (int i = 0; i < METRICS_CLOSE_REASONS; i++)
        out_printf(o, "referral_sessions_closed_total{reason=\"%s\"} %llu\n", close_names[i],
                   (unsigned long long)m->sessions_closed[i]);
    family(o, "referral_dead_lettered_total", "counter", "Messages moved to the dead-letter queue.");
    out_printf(o, "referral_dead_lettered_total %llu\n", (unsigned long long)m->dead_lettered);
    family(o, "referral_checkpoints_total", "counter", "Ledger checkpoints signed since the broker started.");
    out_printf(o, "referral_checkpoints_total %llu\n", (unsigned long long)m->checkpoints);

    histogram(o, "referral_receipt_latency_seconds",
              "From a SUBMIT's arrival to its RECEIPT being sent, the group commit included.", &m->receipt);
    histogram(o, "referral_end_to_end_latency_seconds",
              "From the broker receiving a referral to it receiving the ACK that answers it.",
              &m->end_to_end);
}

rb_err metrics_render(metrics_t *m, char **text, size_t *len)
{
    out_t o = {0};
    int64_t now = wall_ms();
    pthread_mutex_lock(&m->lock);
    render(&o, m, now);
    pthread_mutex_unlock(&m->lock);
    if (o.failed || o.buf == NULL) {
        free(o.buf);
        return RB_ERR_NOMEM;
    }
    *text = o.buf;
    *len = o.len;
    return RB_OK;
}

/* --- HTTP ----------------------------------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

const char *metrics_readiness(metrics_t *m, int64_t now_ms)
{
    pthread_mutex_lock(&m->lock);
    bool started = m->started;
    int64_t age = now_ms - m->snapshot_ms;
    pthread_mutex_unlock(&m->lock);
    if (!started)
        return "not ready: starting (binding, verifying the ledger)\n";
    if (age > STALE_MS)
        return "not ready: the broker's loop has not read its database for over 5 s (stuck, or the database "
               "cannot be read: see its log)\n";
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    (void)upload_data;
    static int headers_seen; /* a marker: the first call only announces the request */
    if (*con_cls == NULL) {
        *con_cls = &headers_seen;
        return MHD_YES;
    }
    if (*upload_data_size > 0) { /* a body nobody asked for: read and dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    bool health = strcmp(url, "/healthz") == 0, ready = strcmp(url, "/readyz") == 0;
    if (strcmp(url, "/metrics") != 0 && !health && !ready)
        return reply(conn, MHD_HTTP_NOT_FOUND, "not found: GET /metrics, /healthz or /readyz\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: GET only\n");
    /* Live: this thread answers. Ready: started, and the loop read the store within STALE_MS. */
    if (health)
        return reply(conn, MHD_HTTP_OK, "ok\n");
    if (ready) {
        const char *why = metrics_readiness(cls, wall_ms());
        return reply(conn, why == NULL ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why ? why : "ready\n");
    }
    char *text;
    size_t len;
    if (metrics_render(cls, &text, &len) != RB_OK)
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

static void free_registry(metrics_t *m)
{
    pthread_mutex_destroy(&m->lock);
    free(m->series);
    free(m);
}

rb_err metrics_start(metrics_t **out, const char *address)
{
    *out = NULL;
    if (strcmp(address, "off") == 0) {
        log_info("metrics_off", "listen=off");
        return RB_OK;
    }
    struct sockaddr_in addr;
    if (!parse_listen(address, &addr)) {
        log_error("metrics_bind_failed", "address=\"%s\" error=\"[metrics] listen %s\"", address,
                  METRICS_LISTEN_FORM);
        return RB_ERR_USAGE;
    }
    metrics_t *m = calloc(1, sizeof *m);
    if (m == NULL || pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return RB_ERR_NOMEM;
    }
    m->receipt.bounds = receipt_bounds;
    m->receipt.n = sizeof receipt_bounds / sizeof receipt_bounds[0];
    m->end_to_end.bounds = end_to_end_bounds;
    m->end_to_end.n = sizeof end_to_end_bounds / sizeof end_to_end_bounds[0];

    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    socklen_t addr_len = sizeof addr;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, HTTP_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) != 0) {
        log_error("metrics_bind_failed", "address=%s error=\"%s\"", address, strerror(errno));
        if (fd >= 0)
            close(fd);
        free_registry(m);
        return RB_ERR_IO;
    }
    /* The HTTP thread inherits this thread's signal mask: blocked there, SIGTERM and SIGINT always reach
     * the loop's thread and interrupt its poll at once. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    m->daemon = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, on_request, m,
                                 MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, HTTP_CONNECTIONS,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_ADDRESS,
                                 MHD_OPTION_CONNECTION_TIMEOUT, HTTP_TIMEOUT_S, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    char bound[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, bound, sizeof bound);
    if (m->daemon == NULL) {
        log_error("metrics_bind_failed", "address=%s:%u error=\"the HTTP server did not start\"", bound,
                  ntohs(addr.sin_port));
        free_registry(m); /* not fd: libmicrohttpd may have closed it already, and the broker exits */
        return RB_ERR_IO;
    }
    log_info("metrics_listening", "address=%s:%u", bound, ntohs(addr.sin_port));
    *out = m;
    return RB_OK;
}

void metrics_stop(metrics_t **m_p)
{
    metrics_t *m = *m_p;
    if (m == NULL)
        return;
    MHD_stop_daemon(m->daemon); /* joins its thread and closes the listening socket */
    free_registry(m);
    *m_p = NULL;
}
