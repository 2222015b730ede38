/* rabbitmq_load.c -- the RabbitMQ reference point of `make bench RABBITMQ=1` (bench/rabbitmq.sh runs it;
 * docs/PERFORMANCE.md, "RabbitMQ reference").
 *
 * The broker path of bench/loadgen.c, through RabbitMQ with librabbitmq, as alike as the two protocols
 * allow: CONNECTIONS source connections publish COUNT persistent referrals of SIZE random bytes to the
 * durable quorum queue `referrals` with publisher confirms, keeping at most WINDOW unconfirmed each (1: a
 * synchronous submit, as the client library's); one sink connection consumes them (prefetch PREFETCH) and
 * acks each delivery on its own; CONNECTIONS sink connections publish a persistent ACK of ACK_SIZE bytes
 * per referral, confirmed the same way, to the durable quorum queue `acks`; one source connection consumes
 * and acks those. A referral is closed when its ACK is acked at the source. Bodies are made before the clock
 * starts. librabbitmq connections are not thread-safe: each thread has its own.
 *
 *   rabbitmq_load --port PORT [--count N] [--connections C] [--window W] [--prefetch P] [--size B]
 *                 [--ack-size B]
 *   rabbitmq_load --free-ports K      K distinct loopback ports the system picks, one a line
 *
 * The last line printed is `RESULT {json}`. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_S 30
#define CHANNEL   1

/* Everything the threads share. */
static struct {
    int port;
    size_t count, size, ack_size;
    int connections;
    unsigned window;           /* unconfirmed publishes allowed per connection */
    uint16_t prefetch;         /* deliveries a consumer may hold unacked */
    uint8_t *referrals;        /* count bodies of size bytes; the first 8 bytes of each are its index */
    double *latency_ms;        /* publish->confirm, per referral */
    atomic_size_t next;        /* the next referral to publish */
    atomic_size_t drained;     /* referrals acked by the sink, once each */
    atomic_size_t closed;      /* ACKs acked at the source, once each */
    atomic_uchar *seen, *done; /* per referral: taken by the sink; its ACK taken by the source */
    atomic_int failed;
    pthread_mutex_t lock;
    pthread_cond_t ready;
    size_t *ack_queue; /* referral indexes the sink took, waiting for their ACK to be published */
    size_t queue_head, queue_tail;
    bool sink_done;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "rabbitmq_load: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    atomic_store(&g.failed, 1);
    pthread_mutex_lock(&g.lock);
    pthread_cond_broadcast(&g.ready);
    pthread_mutex_unlock(&g.lock);
}

/* False (and the run marked failed) when an RPC did not succeed. */
static bool rpc_ok(amqp_rpc_reply_t r, const char *what)
{
    char detail[128];
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return true;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        fail(what, amqp_error_string2(r.library_error));
        return false;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            /* both close methods start with reply_code and reply_text */
            amqp_channel_close_t *c = r.reply.decoded;
            snprintf(detail, sizeof detail, "server closed: %u %.*s", c->reply_code, (int)c->reply_text.len,
                     (const char *)c->reply_text.bytes);
        } else {
            snprintf(detail, sizeof detail, "server method 0x%08x", r.reply.id);
        }
        fail(what, detail);
        return false;
    default:
        fail(what, "no reply");
        return false;
    }
}

/* A logged-in connection with CHANNEL open, or NULL (the run marked failed). Caller owns it. */
static amqp_connection_state_t connect_broker(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = c ? amqp_tcp_socket_new(c) : NULL;
    struct timeval tv = {.tv_sec = TIMEOUT_S};
    int rc = s ? amqp_socket_open_noblock(s, "127.0.0.1", g.port, &tv) : AMQP_STATUS_NO_MEMORY;
    if (rc != AMQP_STATUS_OK) {
        fail("connect", amqp_error_string2(rc));
        if (c)
            amqp_destroy_connection(c);
        return NULL;
    }
    if (!rpc_ok(amqp_login(c, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
                "log in")) {
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_channel_open(c, CHANNEL);
    if (!rpc_ok(amqp_get_rpc_reply(c), "open a channel")) {
        amqp_destroy_connection(c);
        return NULL;
    }
    return c;
}

static void disconnect(amqp_connection_state_t c)
{
    if (c == NULL)
        return;
    amqp_channel_close(c, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* What a publisher sends next: a referral index, NONE_YET (nothing now, more may come) or FINISHED. */
#define NONE_YET ((size_t)-1)
#define FINISHED ((size_t)-2)

static size_t take_referral(bool block)
{
    (void)block;
    size_t i = atomic_fetch_add(&g.next, 1);
    return i < g.count && !atomic_load(&g.failed) ? i : FINISHED;
}

static size_t take_ack(bool block)
{
    size_t i = NONE_YET;
    pthread_mutex_lock(&g.lock);
    while (block && g.queue_head == g.queue_tail && !g.sink_done && !atomic_load(&g.failed))
        pthread_cond_wait(&g.ready, &g.lock);
    if (g.queue_head != g.queue_tail)
        i = g.ack_queue[g.queue_head++];
    else if (g.sink_done || atomic_load(&g.failed))
        i = FINISHED;
    pthread_mutex_unlock(&g.lock);
    return i;
}

typedef struct {
    bool referrals; /* publish referrals (the sources) or ACKs (the sink) */
} publisher_t;

/* One unconfirmed publish: which referral, and when it left. */
typedef struct {
    size_t index;
    double sent;
    bool confirmed;
} inflight_t;

/* A publishing connection: persistent messages, publisher confirms, at most WINDOW unconfirmed. Delivery
 * tags run 1, 2, ... on the channel, so the unconfirmed ones are a run of at most WINDOW tags in a ring. */
static void *publisher(void *arg)
{
    const publisher_t *p = arg;
    amqp_connection_state_t c = connect_broker();
    inflight_t *ring = calloc(g.window, sizeof *ring);
    uint8_t *ack_body = malloc(g.ack_size);
    if (c == NULL || ring == NULL || ack_body == NULL) {
        if (c)
            fail("out of memory", NULL);
        goto out;
    }
    if (getrandom(ack_body, g.ack_size, 0) != (ssize_t)g.ack_size) {
        fail("getrandom", NULL);
        goto out;
    }
    amqp_confirm_select(c, CHANNEL);
    if (!rpc_ok(amqp_get_rpc_reply(c), "confirm.select"))
        goto out;
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    amqp_bytes_t queue = amqp_cstring_bytes(p->referrals ? "referrals" : "acks");
    uint64_t next_tag = 1, confirmed = 0; /* every tag <= confirmed is confirmed */
    bool finished = false;
    while (!atomic_load(&g.failed)) {
        while (!finished && next_tag - 1 - confirmed < g.window) {
            size_t i = p->referrals ? take_referral(false) : take_ack(next_tag - 1 == confirmed);
            if (i == FINISHED)
                finished = true;
            if (i == FINISHED || i == NONE_YET)
                break;
            amqp_bytes_t body;
            if (p->referrals) {
                body = (amqp_bytes_t){.len = g.size, .bytes = g.referrals + i * g.size};
            } else {
                memcpy(ack_body, &i, sizeof i); /* the ACK names the referral it answers */
                body = (amqp_bytes_t){.len = g.ack_size, .bytes = ack_body};
            }
            ring[next_tag % g.window] = (inflight_t){.index = i, .sent = now_s()};
            int rc = amqp_basic_publish(c, CHANNEL, amqp_empty_bytes, queue, 0, 0, &props, body);
            if (rc != AMQP_STATUS_OK) {
                fail("publish", amqp_error_string2(rc));
                goto out;
            }
            next_tag++;
        }
        if (next_tag - 1 == confirmed) {
            if (finished)
                break;
            continue;
        }
        amqp_frame_t f;
        struct timeval tv = {.tv_sec = TIMEOUT_S};
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            fail("wait for a confirm", amqp_error_string2(rc));
            goto out;
        }
        if (f.frame_type != AMQP_FRAME_METHOD || f.payload.method.id != AMQP_BASIC_ACK_METHOD) {
            char what[64];
            snprintf(what, sizeof what, "frame type %u method 0x%08x", f.frame_type,
                     f.frame_type == AMQP_FRAME_METHOD ? f.payload.method.id : 0);
            fail("a confirm was expected", what);
            goto out;
        }
        const amqp_basic_ack_t *a = f.payload.method.decoded;
        double t = now_s();
        for (uint64_t tag = confirmed + 1; tag < next_tag; tag++) {
            inflight_t *e = &ring[tag % g.window];
            if (tag == a->delivery_tag || (a->multiple && tag < a->delivery_tag)) {
                e->confirmed = true;
                if (p->referrals)
                    g.latency_ms[e->index] = (t - e->sent) * 1000;
            }
        }
        while (confirmed + 1 < next_tag && ring[(confirmed + 1) % g.window].confirmed)
            confirmed++;
        amqp_maybe_release_buffers(c);
    }
out:
    disconnect(c);
    free(ring);
    free(ack_body);
    return NULL;
}

/* A consuming connection: acks each delivery on its own; the sink queues an ACK for each referral it has
 * not taken before, the source counts each ACK once. */
static void *consumer(void *arg)
{
    bool sink = *(const bool *)arg;
    amqp_connection_state_t c = connect_broker();
    atomic_size_t *count = sink ? &g.drained : &g.closed;
    atomic_uchar *once = sink ? g.seen : g.done;
    if (c == NULL)
        goto out;
    amqp_basic_qos(c, CHANNEL, 0, g.prefetch, 0);
    if (!rpc_ok(amqp_get_rpc_reply(c), "basic.qos"))
        goto out;
    amqp_basic_consume(c, CHANNEL, amqp_cstring_bytes(sink ? "referrals" : "acks"), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (!rpc_ok(amqp_get_rpc_reply(c), "basic.consume"))
        goto out;
    while (!atomic_load(&g.failed) && atomic_load(count) < g.count) {
        amqp_envelope_t e;
        struct timeval tv = {.tv_sec = TIMEOUT_S};
        amqp_maybe_release_buffers(c);
        if (!rpc_ok(amqp_consume_message(c, &e, &tv, 0), sink ? "no referral came" : "no ACK came"))
            break;
        size_t i = SIZE_MAX;
        if (e.message.body.len >= sizeof i)
            memcpy(&i, e.message.body.bytes, sizeof i);
        int rc = amqp_basic_ack(c, CHANNEL, e.delivery_tag, 0);
        amqp_destroy_envelope(&e);
        if (rc != AMQP_STATUS_OK) {
            fail("basic.ack", amqp_error_string2(rc));
            break;
        }
        if (i >= g.count) {
            fail("a message names no referral", NULL);
            break;
        }
        if (atomic_exchange(&once[i], 1)) /* a redelivery of one already taken */
            continue;
        atomic_fetch_add(count, 1);
        if (sink) {
            pthread_mutex_lock(&g.lock);
            g.ack_queue[g.queue_tail++] = i;
            pthread_cond_signal(&g.ready);
            pthread_mutex_unlock(&g.lock);
        }
    }
out:
    if (sink) {
        pthread_mutex_lock(&g.lock);
        g.sink_done = true;
        pthread_cond_broadcast(&g.ready);
        pthread_mutex_unlock(&g.lock);
    }
    disconnect(c);
    return NULL;
}

/* Declares both durable quorum queues and returns the server's version (caller frees), or NULL. */
static char *prepare(void)
{
    amqp_connection_state_t c = connect_broker();
    if (c == NULL)
        return NULL;
    amqp_table_entry_t type = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_table_t args = {.num_entries = 1, .entries = &type};
    for (int q = 0; q < 2; q++) {
        amqp_queue_declare(c, CHANNEL, amqp_cstring_bytes(q ? "acks" : "referrals"), 0, 1, 0, 0, args);
        if (!rpc_ok(amqp_get_rpc_reply(c), "declare a quorum queue")) {
            disconnect(c);
            return NULL;
        }
    }
    char *version = strdup("unknown");
    const amqp_table_t *props = amqp_get_server_properties(c);
    for (int k = 0; props && k < props->num_entries; k++) {
        const amqp_table_entry_t *e = &props->entries[k];
        if (e->key.len == 7 && memcmp(e->key.bytes, "version", 7) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)) {
            free(version);
            version = strndup(e->value.value.bytes.bytes, e->value.value.bytes.len);
            for (char *v = version; v && *v; v++) /* it goes into JSON unescaped */
                if (!strchr("0123456789.+-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", *v))
                    *v = '?';
        }
    }
    disconnect(c);
    return version;
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

/* Binds K loopback sockets to port 0 at once, so the K ports printed are distinct and free now. */
static int free_ports(int k)
{
    int fds[16];
    if (k < 1 || k > 16)
        return 2;
    for (int i = 0; i < k; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &len) != 0) {
            perror("rabbitmq_load: free port");
            return 1;
        }
        printf("%u\n", ntohs(a.sin_port));
    }
    for (int i = 0; i < k; i++)
        close(fds[i]);
    return 0;
}

int main(int argc, char **argv)
{
    g.count = 20000;
    g.connections = 8;
    g.window = 1;
    g.prefetch = 256;
    g.size = 4096;
    g.ack_size = 600;
    static const struct option opts[] = {
        {"port", 1, 0, 'p'},     {"count", 1, 0, 'n'},      {"connections", 1, 0, 'C'},
        {"window", 1, 0, 'w'},   {"prefetch", 1, 0, 'q'},   {"size", 1, 0, 'z'},
        {"ack-size", 1, 0, 'a'}, {"free-ports", 1, 0, 'f'}, {0, 0, 0, 0},
    };
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'p':
            g.port = (int)strtol(optarg, NULL, 10);
            break;
        case 'n':
            g.count = strtoull(optarg, NULL, 10);
            break;
        case 'C':
            g.connections = (int)strtol(optarg, NULL, 10);
            break;
        case 'w':
            g.window = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'q':
            g.prefetch = (uint16_t)strtoul(optarg, NULL, 10);
            break;
        case 'z':
            g.size = strtoull(optarg, NULL, 10);
            break;
        case 'a':
            g.ack_size = strtoull(optarg, NULL, 10);
            break;
        case 'f':
            return free_ports((int)strtol(optarg, NULL, 10));
        default:
            goto usage;
        }
    }
    if (optind != argc || g.port <= 0 || g.port > 65535 || g.count == 0 || g.connections < 1 ||
        g.connections > 256 || g.window < 1 || g.prefetch < 1 || g.size < sizeof(size_t) ||
        g.ack_size < sizeof(size_t))
        goto usage;

    g.referrals = malloc(g.count * g.size);
    g.latency_ms = calloc(g.count, sizeof *g.latency_ms);
    g.seen = calloc(g.count, sizeof *g.seen);
    g.done = calloc(g.count, sizeof *g.done);
    g.ack_queue = calloc(g.count, sizeof *g.ack_queue);
    if (!g.referrals || !g.latency_ms || !g.seen || !g.done || !g.ack_queue) {
        fprintf(stderr, "rabbitmq_load: out of memory\n");
        return 1;
    }
    for (size_t off = 0; off < g.count * g.size;) {
        ssize_t n = getrandom(g.referrals + off, g.count * g.size - off, 0);
        if (n <= 0) {
            perror("rabbitmq_load: getrandom");
            return 1;
        }
        off += (size_t)n;
    }
    for (size_t i = 0; i < g.count; i++)
        memcpy(g.referrals + i * g.size, &i, sizeof i);

    char *version = prepare();
    if (version == NULL)
        return 1;
    printf("RabbitMQ %s: %zu referrals of %zu bytes, ACKs of %zu bytes, %d+%d publishing connections, window "
           "%u, prefetch %u\n",
           version, g.count, g.size, g.ack_size, g.connections, g.connections, g.window, g.prefetch);
    fflush(stdout);

    int n = 2 * g.connections;
    pthread_t *pub = calloc((size_t)n, sizeof *pub), cons[2];
    publisher_t roles[2] = {{.referrals = true}, {.referrals = false}};
    bool sink = true, source = false;
    double start = now_s();
    pthread_create(&cons[0], NULL, consumer, &sink);
    pthread_create(&cons[1], NULL, consumer, &source);
    for (int i = 0; i < n; i++)
        pthread_create(&pub[i], NULL, publisher, &roles[i < g.connections ? 0 : 1]);
    for (int i = 0; i < g.connections; i++)
        pthread_join(pub[i], NULL);
    pthread_join(cons[0], NULL);
    for (int i = g.connections; i < n; i++)
        pthread_join(pub[i], NULL);
    pthread_join(cons[1], NULL);
    double took = now_s() - start;
    free(pub);
    if (atomic_load(&g.failed) || atomic_load(&g.closed) != g.count) {
        fprintf(stderr, "rabbitmq_load: the run failed with %zu of %zu referrals closed\n",
                atomic_load(&g.closed), g.count);
        return 1;
    }

    qsort(g.latency_ms, g.count, sizeof *g.latency_ms, by_value);
    double per_s = (double)g.count / took, p50 = percentile(g.latency_ms, g.count, 0.50),
           p99 = percentile(g.latency_ms, g.count, 0.99);
    printf("  %-34s %12.0f\n", "referrals closed per second", per_s);
    printf("  %-34s %12.3f\n", "publish->confirm p50 ms", p50);
    printf("  %-34s %12.3f\n", "publish->confirm p99 ms", p99);
    printf("  %-34s %12zu\n", "messages published and consumed", 2 * g.count);
    printf("  %-34s %12.2f\n", "seconds", took);
    printf("RESULT {\"rabbitmq_per_s\": %.1f, \"rabbitmq_confirm_p50_ms\": %.3f, "
           "\"rabbitmq_confirm_p99_ms\": %.3f, "
           "\"rabbitmq_count\": %zu, \"rabbitmq_connections\": %d, \"rabbitmq_window\": %u, "
           "\"rabbitmq_seconds\": "
           "%.2f, \"rabbitmq_version\": \"%s\"}\n",
           per_s, p50, p99, g.count, g.connections, g.window, took, version);
    free(version);
    free(g.referrals);
    free(g.latency_ms);
    free((void *)g.seen);
    free((void *)g.done);
    free(g.ack_queue);
    return 0;
usage:
    fprintf(stderr,
            "usage: rabbitmq_load --port PORT [--count N] [--connections C] [--window W] [--prefetch P]\n"
            "                     [--size BYTES] [--ack-size BYTES]\n"
            "       rabbitmq_load --free-ports K\n");
    return 2;
}
