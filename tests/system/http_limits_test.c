/* http_limits_test.c -- the two HTTP servers against clients that open connections and hold them (issue
 * #18): the rms-http adapter's endpoint (finding 7) and the broker's /metrics (finding 11).
 *
 * A real broker and a real `referral-adapter` with the rms-http connector, as in adapter_test.c. The
 * attacker's sockets come from other loopback addresses (127.0.0.2 and up: Linux answers all of 127/8 on
 * the loopback interface), so that the servers' per-address limits have an attacker and a well-behaved
 * client to tell apart; the well-behaved client is 127.0.0.1. Every socket is non-blocking and every wait
 * has a deadline, so a starved server fails the test instead of hanging it. The figures (RSS, latencies,
 * counts) are printed as TAP comments. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "harness.h"

#define TOKEN "s3cret-token-for-tests"

/* Connections one address may hold: rms-http by default (docs/ADAPTERS.md), the broker's /metrics. */
#define HTTP_PER_ADDRESS    16
#define METRICS_PER_ADDRESS 8

/* How many connections to 127.0.0.1:port the server there has accepted and still holds: sockets in
 * /proc/net/tcp on that address and port, established or closed by the client only, with an inode (one
 * still in the kernel's accept queue has none). What the clients see is not enough: when the accept queue
 * overflows, a client can think itself connected before the server has the connection. */
static int server_held(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned address, local, state;
        unsigned long inode;
        if (sscanf(line, " %*u: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*d %lu", &address, &local, &state,
                   &inode) == 4 &&
            address == 0x0100007Fu && (int)local == port && (state == 0x01 || state == 0x08) && inode != 0)
            n++;
    }
    fclose(f);
    return n;
}

/* Waits until the server at port holds no connection; returns how long that took. */
static int64_t wait_server_idle(int port, int ms)
{
    int64_t t0 = harness_ms(), deadline = harness_deadline(ms);
    while (server_held(port) > 0 && harness_ms() < deadline)
        harness_sleep_ms(50);
    return harness_ms() - t0;
}

/* Raises this process's open-file limit to want (the adapter it starts inherits it, so that what limits
 * the adapter is its own configuration). */
static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        fail_msg("this test opens %lu sockets but the hard limit on open files is %lu: raise it (ulimit -Hn)",
                 (unsigned long)want, (unsigned long)rl.rlim_max);
    rl.rlim_cur = want;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* Starts adapter `i` on rms-http with these extra [rms-http] lines and returns the port it logged. */
static int start_http_adapter(harness_t *h, const char *settings)
{
    char path[700];
    int i = harness_adapter(h);
    test_write_file(test_path(path, sizeof path, "%s/http.token", h->dir), TOKEN "\n", strlen(TOKEN) + 1,
                    0600);
    snprintf(h->connector_settings, sizeof h->connector_settings, "%s", settings);
    harness_adapter_start(h, i, "rms-http");
    for (int64_t deadline = harness_deadline(10000); harness_ms() < deadline; harness_sleep_ms(20)) {
        size_t len;
        char *log = test_read_file(h->adapters[i].log, &len);
        char *at = log ? strstr(log, "event=http_listening") : NULL;
        int port = at != NULL && strstr(at, "port=") != NULL ? atoi(strstr(at, "port=") + 5) : 0;
        free(log);
        if (port > 0)
            return port;
        if (waitpid(h->adapters[i].pid, NULL, WNOHANG) == h->adapters[i].pid) {
            h->adapters[i].pid = 0;
            fail_msg("the adapter exited at start; see %s", h->adapters[i].log);
        }
    }
    fail_msg("the adapter did not log http_listening; see %s", h->adapters[i].log);
    return 0;
}

/* --- connections ---------------------------------------------------------------------------------------- */

/* One connection of the attacker's (or the well-behaved client's). */
typedef struct {
    int fd;         /* -1 once closed here */
    size_t sent;    /* bytes of its request written so far */
    char head[16];  /* the first bytes of the server's answer */
    size_t got;     /* bytes of answer read (only the first sizeof head kept) */
    bool connected; /* the handshake completed */
    bool closed;    /* the server closed or reset it (or refused the handshake) */
} conn_t;

/* The connections of the running test, for the teardown to close after a failure. */
static conn_t *test_conns;
static int test_n_conns;

static conn_t *conns_new(int n)
{
    conn_t *c = calloc((size_t)n, sizeof *c);
    assert_non_null(c);
    for (int i = 0; i < n; i++)
        c[i].fd = -1;
    test_conns = c;
    test_n_conns = n;
    return c;
}

/* A connection under way from loopback address `from` to 127.0.0.1:port. */
static void conn_open(conn_t *c, const char *from, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail_msg("socket: %s", strerror(errno));
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    dst.sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, from, &src.sin_addr), 1);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr), 1);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0)
        fail_msg("cannot bind to %s: %s", from, strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)
        fail_msg("connect from %s: %s", from, strerror(errno));
}

static void conn_close_all(conn_t *c, int n)
{
    for (int i = 0; i < n; i++)
        if (c[i].fd >= 0) {
            close(c[i].fd);
            c[i].fd = -1;
        }
}

static void conns_free(conn_t **c_p)
{
    conn_close_all(*c_p, test_n_conns);
    free(*c_p);
    *c_p = NULL;
    test_conns = NULL;
    test_n_conns = 0;
}

/* cmocka teardown: the test's sockets, then its processes and files. */
static int teardown(void **state)
{
    if (test_conns != NULL)
        conns_free(&test_conns);
    return harness_teardown(state);
}

/* The status of the answer read so far, 0 before a status line. */
static int conn_status(const conn_t *c)
{
    int status = 0;
    char head[sizeof c->head + 1];
    memcpy(head, c->head, sizeof c->head);
    head[c->got < sizeof c->head ? c->got : sizeof c->head] = '\0';
    return sscanf(head, "HTTP/1.%*d %d", &status) == 1 ? status : 0;
}

/* Still waiting for the server: open, and nothing answered. */
static bool conn_waiting(const conn_t *c)
{
    return !c->closed && c->got == 0;
}

/* One pass over n connections, waiting at most ms for any of them: completes handshakes, writes more of
 * each one's request (the same len bytes for all), reads what the server answers, and notes those it closed.
 * The sockets stay open here when the server closes them, so that what each got can still be counted. */
static void conn_pump(conn_t *c, int n, const char *request, size_t len, int ms)
{
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    assert_non_null(p);
    for (int i = 0; i < n; i++) {
        p[i].fd = c[i].closed ? -1 : c[i].fd;
        p[i].events = (short)(POLLIN | (!c[i].connected || c[i].sent < len ? POLLOUT : 0));
    }
    if (poll(p, (nfds_t)n, ms) < 0 && errno != EINTR)
        fail_msg("poll: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        conn_t *k = &c[i];
        if (p[i].fd < 0 || p[i].revents == 0)
            continue;
        if (!k->connected && (p[i].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            int err = 0;
            socklen_t errlen = sizeof err;
            getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &errlen);
            if (err != 0) { /* refused before any byte */
                k->closed = true;
                continue;
            }
            k->connected = true;
        }
        if ((p[i].revents & POLLOUT) != 0 && k->sent < len) {
            ssize_t w = send(k->fd, request + k->sent, len - k->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                k->sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                k->sent = len; /* the server stopped reading: what it answered is read below */
        }
        if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char buf[4096];
            ssize_t r;
            while ((r = recv(k->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
                if (k->got < sizeof k->head)
                    memcpy(k->head + k->got, buf,
                           (size_t)r < sizeof k->head - k->got ? (size_t)r : sizeof k->head - k->got);
                k->got += (size_t)r;
            }
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) /* r is 0 or -1 here */
                k->closed = true;
        }
    }
    free(p);
}

/* Pumps until every connection is settled (done(c) true) or the deadline; calls sample between passes. */
static void conn_pump_until(conn_t *c, int n, const char *request, size_t len, int ms,
                            bool (*done)(const conn_t *c, size_t len), void (*sample)(void *ctx), void *ctx)
{
    int64_t deadline = harness_deadline(ms);
    for (;;) {
        int pending = 0;
        for (int i = 0; i < n; i++)
            pending += !done(&c[i], len);
        if (pending == 0 || harness_ms() > deadline)
            return;
        conn_pump(c, n, request, len, 50);
        if (sample != NULL)
            sample(ctx);
    }
}

/* One request from 127.0.0.1 on a connection of its own, given up at the deadline (ms from now): returns
 * the status (0: no answer in time) and, in *elapsed_ms, how long it took; *body is the answer (malloc'd). */
static int timed_request(int port, const char *request, size_t len, int ms, int64_t *elapsed_ms, char **body)
{
    int64_t t0 = harness_ms(), deadline = harness_deadline(ms);
    conn_t c;
    conn_open(&c, "127.0.0.1", port);
    size_t cap = 1 << 16, got = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    while (!c.closed && harness_ms() < deadline) {
        struct pollfd p = {c.fd, (short)(POLLIN | (c.sent < len ? POLLOUT : 0)), 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        if ((p.revents & POLLOUT) != 0 && c.sent < len) {
            ssize_t w = send(c.fd, request + c.sent, len - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                c.sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                c.sent = len;
        }
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            ssize_t r = recv(c.fd, buf + got, cap - got, MSG_DONTWAIT);
            if (r > 0)
                got += (size_t)r;
            if (r == 0 || (r < 0 && errno != EAGAIN) || got == cap) /* the end, or more than any answer */
                c.closed = true;
        }
    }
    close(c.fd);
    buf[got] = '\0';
    *elapsed_ms = harness_ms() - t0;
    int status = 0;
    if (!c.closed || sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    char *split = strstr(buf, "\r\n\r\n");
    *body = strdup(split != NULL ? split + 4 : "");
    free(buf);
    return status;
}

/* An HTTP/1.0 POST of body with the token (or none), Content-Length given (the whole body unless less). */
static char *post_request(const char *token, const char *body, size_t body_len, size_t content_length,
                          size_t *len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /v1/referrals HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "%s%s%sContent-Length: %zu\r\n\r\n",
                     token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
                     content_length);
    char *req = malloc((size_t)n + body_len);
    assert_non_null(req);
    memcpy(req, head, (size_t)n);
    memcpy(req + n, body, body_len);
    *len = (size_t)n + body_len;
    return req;
}

/* The adapter's log does not hold the token. */
static void assert_token_not_logged(harness_t *h, int i)
{
    size_t len;
    char *log = test_read_file(h->adapters[i].log, &len);
    assert_non_null(log);
    if (strstr(log, TOKEN) != NULL)
        fail_msg("the bearer token is in the adapter's log %s", h->adapters[i].log);
    free(log);
}

/* --- finding 7: rms-http ---------------------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    long peak_kb;
} rss_probe_t;

static void sample_rss(void *ctx)
{
    rss_probe_t *p = ctx;
    long kb = proc_rss_kb(p->pid);
    p->peak_kb = kb > p->peak_kb ? kb : p->peak_kb;
}

/* Settled for the upload attack: answered or closed, or all of its part of the body sent (then it stalls). */
static bool upload_settled(const conn_t *c, size_t len)
{
    return c->closed || c->got > 0 || (c->connected && c->sent == len);
}

/* 300 clients without a token each announce a 1 MiB referral, send 128 KiB of it and stall, from 20
 * addresses (15 each, under the per-address limit, so that every one of them reaches the headers). Each is
 * refused with 401 on its headers, the adapter's memory stays bounded, and an authorised POST of a valid
 * referral made meanwhile is accepted within seconds. */
static void unauthorised_uploads_refused_on_headers(void **state)
{
    (void)state;
    enum { N = 300, ADDRESSES = 20, PART = 128 * 1024, MIB = 1024 * 1024 };
    raise_nofile(N + 256);
    harness_t *h = harness_start(NULL);
    int port = start_http_adapter(h, "max_body_bytes = 1048576\n"); /* the default: 1 MiB */
    pid_t pid = h->adapters[0].pid;
    int64_t ms;
    char *body;
    const char *probe = "GET /v1/referrals/00000000000000000000000000000000 HTTP/1.0\r\nAuthorization: "
                        "Bearer " TOKEN "\r\n\r\n";
    assert_int_equal(timed_request(port, probe, strlen(probe), 10000, &ms, &body), 404);
    free(body);
    rss_probe_t rss = {pid, proc_rss_kb(pid)};
    long rss0 = rss.peak_kb;

    char *filler = malloc(PART);
    assert_non_null(filler);
    memset(filler, ' ', PART);
    filler[0] = '{';
    size_t len;
    char *attack = post_request(NULL, filler, PART, MIB, &len);
    free(filler);
    conn_t *c = conns_new(N);
    for (int i = 0; i < N; i++) {
        char from[32];
        snprintf(from, sizeof from, "127.0.0.%d", 2 + i % ADDRESSES);
        conn_open(&c[i], from, port);
    }
    int64_t t0 = harness_ms();
    conn_pump_until(c, N, attack, len, 10000, upload_settled, sample_rss, &rss);
    int64_t settle_ms = harness_ms() - t0;

    /* Meanwhile, the records system posts a referral. */
    size_t json_len, good_len;
    char *json = test_read_file("adapters/samples/valid/05-tear-gas-crowd.json", &json_len);
    assert_non_null(json);
    char *good = post_request(TOKEN, json, json_len, json_len, &good_len);
    int64_t good_ms;
    int good_status = timed_request(port, good, good_len, 10000, &good_ms, &body);
    sample_rss(&rss);

    conn_pump_until(c, N, attack, len, 10000, upload_settled, sample_rss, &rss); /* settled, or answered */
    for (int64_t deadline = harness_deadline(10000); harness_ms() < deadline; sample_rss(&rss)) {
        int waiting = 0;
        for (int i = 0; i < N; i++)
            waiting += conn_waiting(&c[i]);
        if (waiting == 0)
            break;
        conn_pump(c, N, attack, len, 50);
    }
    int refused = 0, other = 0, closed = 0, waiting = 0;
    size_t sent = 0;
    for (int i = 0; i < N; i++) {
        int status = conn_status(&c[i]);
        refused += status == 401;
        other += status != 0 && status != 401;
        closed += status == 0 && c[i].closed;
        waiting += conn_waiting(&c[i]);
        sent += c[i].sent > len - PART ? c[i].sent - (len - PART) : 0;
    }
    print_message("# rms-http: %d unauthorised 1 MiB uploads stalled after %d KiB, from %d addresses: %d "
                  "refused 401, %d closed unanswered, %d other answers, %d still waiting; %zu KiB of body "
                  "written to the sockets (settled in %lld ms); adapter RSS %ld -> peak %ld kB (+%ld); "
                  "authorised POST meanwhile: %d in %lld ms\n",
                  N, PART / 1024, ADDRESSES, refused, closed, other, waiting, sent / 1024,
                  (long long)settle_ms, rss0, rss.peak_kb, rss.peak_kb - rss0, good_status,
                  (long long)good_ms);
    if (good_status != 202)
        fail_msg("the authorised POST during the attack got %d (0: no answer within 10 s): %s", good_status,
                 body);
    assert_non_null(strstr(body, "\"messageId\""));
    if (rss.peak_kb - rss0 >= 16 * 1024)
        fail_msg("the adapter's RSS grew by %ld kB under the attack (bound 16 MiB)", rss.peak_kb - rss0);
    if (waiting > 0)
        fail_msg("%d of %d unauthorised uploads got no answer to their headers", waiting, N);
    assert_int_equal(other, 0);
    assert_true(refused >= N / 2);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
    assert_token_not_logged(h, 0);
    free(body);
    free(good);
    free(json);
    free(attack);
    conns_free(&c);
    harness_adapter_stop(h, 0, SIGTERM);
    harness_stop(&h);
}

/* An authorised POST announcing a body over max_body_bytes, and POSTs with a wrong token (another, one
 * byte off, one longer, one shorter), are answered (413, 401) on their headers alone: the client never
 * sends its body. */
static void refused_before_the_body(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int port = start_http_adapter(h, ""); /* the harness's max_body_bytes = 65536 */
    size_t len;
    int64_t ms;
    char *body;
    char *big = post_request(TOKEN, "", 0, 65537, &len);
    int too_big = timed_request(port, big, len, 10000, &ms, &body);
    print_message("# rms-http: Content-Length 65537 over a limit of 65536, no body sent: %d in %lld ms\n",
                  too_big, (long long)ms);
    if (too_big != 413)
        fail_msg("an announced body over the limit got %d (0: no answer within 10 s), expected 413", too_big);
    free(body);
    free(big);
    char *wrong = post_request("wrong-token-of-some-length", "", 0, 1000, &len);
    int unauthorised = timed_request(port, wrong, len, 10000, &ms, &body);
    print_message("# rms-http: a wrong token, Content-Length 1000, no body sent: %d in %lld ms\n",
                  unauthorised, (long long)ms);
    if (unauthorised != 401)
        fail_msg("a wrong token got %d (0: no answer within 10 s), expected 401", unauthorised);
    free(body);
    free(wrong);
    /* Tokens that differ from the right one in a byte, or only by what follows or lacks at the end. */
    const char *near[] = {"s3cret-token-for-testS", TOKEN "x", "s3cret-token-for-test"};
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++) {
        wrong = post_request(near[i], "", 0, 10, &len);
        assert_int_equal(timed_request(port, wrong, len, 10000, &ms, &body), 401);
        free(body);
        free(wrong);
    }
    assert_token_not_logged(h, 0);
    harness_adapter_stop(h, 0, SIGTERM);
    harness_stop(&h);
}

/* Settled for idle connections: the handshake done, or refused or closed. */
static bool idle_settled(const conn_t *c, size_t len)
{
    (void)len;
    return c->connected || c->closed;
}

/* 1,100 idle connections from 4 addresses: the adapter keeps what its limits allow and closes the rest, an
 * authorised POST is still accepted within seconds, and the idle connections it kept go at its timeout. */
static void idle_connections_leave_room(void **state)
{
    (void)state;
    enum { N = 1100, ADDRESSES = 4 };
    raise_nofile(N + 256);
    harness_t *h = harness_start(NULL);
    int port = start_http_adapter(h, "");
    pid_t pid = h->adapters[0].pid;
    int64_t ms;
    char *body;
    const char *probe = "GET /v1/referrals/00000000000000000000000000000000 HTTP/1.0\r\nAuthorization: "
                        "Bearer " TOKEN "\r\n\r\n";
    assert_int_equal(timed_request(port, probe, strlen(probe), 10000, &ms, &body), 404);
    free(body);
    int fds0 = proc_fds(pid);

    conn_t *c = conns_new(N);
    for (int i = 0; i < N; i++) {
        char from[32];
        snprintf(from, sizeof from, "127.0.0.%d", 2 + i % ADDRESSES);
        conn_open(&c[i], from, port);
    }
    int64_t t0 = harness_ms();
    conn_pump_until(c, N, "", 0, 10000, idle_settled, NULL, NULL);
    int64_t settle_ms = harness_ms() - t0;

    size_t json_len, good_len;
    char *json = test_read_file("adapters/samples/valid/05-tear-gas-crowd.json", &json_len);
    assert_non_null(json);
    char *good = post_request(TOKEN, json, json_len, json_len, &good_len);
    int64_t good_ms;
    int good_status = timed_request(port, good, good_len, 10000, &good_ms, &body);
    conn_pump(c, N, "", 0, 100); /* what the adapter closed while the POST went through */
    int fds = proc_fds(pid), held = server_held(port), open = 0, closed = 0, connecting = 0;
    for (int i = 0; i < N; i++) {
        open += c[i].connected && !c[i].closed;
        closed += c[i].closed;
        connecting += !c[i].connected && !c[i].closed;
    }
    print_message("# rms-http: %d idle connections from %d addresses (settled in %lld ms): the adapter holds "
                  "%d (fds %d -> %d); the clients see %d open, %d closed by the adapter, %d not connected; "
                  "authorised POST meanwhile: %d in %lld ms\n",
                  N, ADDRESSES, (long long)settle_ms, held, fds0, fds, open, closed, connecting, good_status,
                  (long long)good_ms);
    if (good_status != 202)
        fail_msg("the authorised POST among %d idle connections got %d (0: no answer within 10 s)", N,
                 good_status);
    assert_true(held <= ADDRESSES * HTTP_PER_ADDRESS);
    assert_true(fds - fds0 <= ADDRESSES * HTTP_PER_ADDRESS);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);

    /* The connections it kept are idle: they go at idle_timeout_s (10 s by default). */
    int64_t idle_ms = wait_server_idle(port, 25000);
    held = server_held(port);
    print_message("# rms-http: the adapter closed the idle connections it held after %lld ms (%d left)\n",
                  (long long)idle_ms, held);
    assert_int_equal(held, 0);
    free(body);
    free(good);
    free(json);
    conns_free(&c);
    harness_adapter_stop(h, 0, SIGTERM);
    harness_stop(&h);
}

/* The limits are settings, checked at start like the others: out of range, a per-address limit over the
 * overall one, more connections than the open-file limit allows, or misspelt, the adapter exits 2 with one
 * line naming the setting. */
static void limit_settings_checked(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int i = harness_adapter(h);
    char path[700];
    test_write_file(test_path(path, sizeof path, "%s/http.token", h->dir), TOKEN "\n", strlen(TOKEN) + 1,
                    0600);
    const struct {
        const char *settings, *says;
        rlim_t files; /* the open-file limit it starts with; 0: this process's */
    } cases[] = {
        {"max_connections = 0\n", "[rms-http] max_connections must be a whole number from 1 to 65536", 0},
        {"max_connections = 100\nmax_connections_per_address = 101\n",
         "[rms-http] max_connections_per_address must be a whole number from 1 to 100", 0},
        {"idle_timeout_s = 0\n", "[rms-http] idle_timeout_s must be a whole number from 1 to 3600", 0},
        {"max_connections = 2000\n",
         "[rms-http] max_connections = 2000 needs 2064 open files and the adapter may open 1024: lower it, "
         "or "
         "raise the limit (LimitNOFILE= in the systemd unit)",
         1024},
        {"max_connection = 10\n", "unknown setting [rms-http] max_connection", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(h->connector_settings, sizeof h->connector_settings, "%s", cases[k].settings);
        struct rlimit mine;
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &mine), 0);
        if (cases[k].files > 0) { /* the adapter inherits it */
            struct rlimit less = {cases[k].files, mine.rlim_max};
            assert_int_equal(setrlimit(RLIMIT_NOFILE, &less), 0);
        }
        harness_adapter_start(h, i, "rms-http");
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &mine), 0);
        int status = 0;
        for (int64_t deadline = harness_deadline(10000); waitpid(h->adapters[i].pid, &status, WNOHANG) == 0;
             harness_sleep_ms(20))
            if (harness_ms() > deadline)
                fail_msg("the adapter started with %s", cases[k].settings);
        h->adapters[i].pid = 0;
        size_t len;
        char *log = test_read_file(h->adapters[i].log, &len);
        assert_non_null(log);
        char *last = log + len - (len > 0 && log[len - 1] == '\n');
        while (last > log && last[-1] != '\n')
            last--;
        print_message("# rms-http with %.*s: exit %d, \"%.*s\"\n", (int)strcspn(cases[k].settings, "\n"),
                      cases[k].settings, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                      (int)strcspn(last, "\n"), last);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 || strstr(last, cases[k].says) == NULL)
            fail_msg("expected exit 2 and \"%s\"", cases[k].says);
        free(log);
    }
    harness_stop(&h);
}

/* Settings other than the defaults are the ones applied: with 2 connections an address and a 1 s idle
 * timeout, 10 idle connections from one address leave 2 held, and those go within seconds. */
static void limit_settings_applied(void **state)
{
    (void)state;
    enum { N = 10 };
    harness_t *h = harness_start(NULL);
    int port =
        start_http_adapter(h, "max_connections = 8\nmax_connections_per_address = 2\nidle_timeout_s = 1\n");
    size_t len;
    char *log = test_read_file(h->adapters[0].log, &len);
    assert_non_null(strstr(log, "max_connections=8 per_address=2 idle_timeout_s=1"));
    free(log);
    conn_t *c = conns_new(N);
    for (int i = 0; i < N; i++)
        conn_open(&c[i], "127.0.0.2", port);
    conn_pump_until(c, N, "", 0, 10000, idle_settled, NULL, NULL);
    int64_t ms;
    char *body;
    const char *probe = "GET /v1/referrals/00000000000000000000000000000000 HTTP/1.0\r\nAuthorization: "
                        "Bearer " TOKEN "\r\n\r\n";
    assert_int_equal(timed_request(port, probe, strlen(probe), 10000, &ms, &body), 404);
    free(body);
    int held_first = server_held(port);
    int64_t idle_ms = wait_server_idle(port, 10000);
    int held = server_held(port);
    print_message(
        "# rms-http at 2 an address, idle_timeout_s 1: %d of %d idle connections held, closed after "
        "%lld ms (%d left)\n",
        held_first, N, (long long)idle_ms, held);
    assert_true(held_first <= 2);
    assert_int_equal(held, 0);
    conns_free(&c);
    harness_adapter_stop(h, 0, SIGTERM);
    harness_stop(&h);
}

/* --- finding 11: the broker's /metrics ------------------------------------------------------------------- */

/* Idle connections to /metrics: 40, then 200 from one address, then 48 from six (each at the per-address
 * limit). A scrape from another address is answered within seconds each time; the endpoint keeps no more
 * of them than its per-address limit allows, and closes those it kept at its idle timeout. */
static void metrics_scraped_while_idle_connections_held(void **state)
{
    (void)state;
    enum { MOST = 200 };
    raise_nofile(MOST + 256);
    harness_t *h = harness_start(NULL);
    int port = harness_metrics_port(h);
    const char *scrape = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    const struct {
        int n, addresses;
    } rounds[] = {{40, 1}, {MOST, 1}, {6 * METRICS_PER_ADDRESS, 6}};
    conn_t *c = conns_new(MOST);
    int n = 0;
    for (size_t r = 0; r < sizeof rounds / sizeof rounds[0]; r++) {
        conn_close_all(c, n);
        wait_server_idle(port, 10000); /* the last round's gone */
        n = rounds[r].n;
        for (int i = 0; i < n; i++) {
            char from[32];
            snprintf(from, sizeof from, "127.0.0.%d", 2 + (int)r + i % rounds[r].addresses);
            conn_open(&c[i], from, port);
        }
        int64_t t0 = harness_ms();
        conn_pump_until(c, n, "", 0, 10000, idle_settled, NULL, NULL);
        int64_t settle_ms = harness_ms() - t0;
        int64_t ms;
        char *body;
        int status = timed_request(port, scrape, strlen(scrape), 5000, &ms, &body);
        conn_pump(c, n, "", 0, 100);
        int held = server_held(port), open = 0;
        for (int i = 0; i < n; i++)
            open += c[i].connected && !c[i].closed;
        print_message("# metrics: %d idle connections from %d address(es) (settled in %lld ms): the broker "
                      "holds %d, the clients see %d open; a scrape from another address: %d in %lld ms\n",
                      n, rounds[r].addresses, (long long)settle_ms, held, open, status, (long long)ms);
        if (status != 200)
            fail_msg("GET /metrics with %d idle connections held got %d (0: no answer within 5 s)", n,
                     status);
        assert_non_null(strstr(body, "\nreferral_up 1\n"));
        assert_true(held <= METRICS_PER_ADDRESS * rounds[r].addresses);
        free(body);
    }
    /* Those of the last round that it kept: closed once idle for 5 s. */
    int64_t idle_ms = wait_server_idle(port, 15000);
    int held = server_held(port);
    print_message("# metrics: the broker closed the idle connections it held after %lld ms (%d left)\n",
                  (long long)idle_ms, held);
    assert_int_equal(held, 0);
    conns_free(&c);
    harness_stop(&h);
}

int main(void)
{
    harness_no_asan_quarantine();           /* the RSS bound is about the adapter's own memory */
    if (getenv("HTTP_LIMITS_ONLY") != NULL) /* one test by name, when working on it */
        cmocka_set_test_filter(getenv("HTTP_LIMITS_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(unauthorised_uploads_refused_on_headers, teardown),
        cmocka_unit_test_teardown(refused_before_the_body, teardown),
        cmocka_unit_test_teardown(idle_connections_leave_room, teardown),
        cmocka_unit_test_teardown(limit_settings_checked, teardown),
        cmocka_unit_test_teardown(limit_settings_applied, teardown),
        cmocka_unit_test_teardown(metrics_scraped_while_idle_connections_held, teardown),
    };
    return cmocka_run_group_tests_name("http_limits", tests, NULL, NULL);
}
