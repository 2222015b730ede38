/* rms_http.c -- source connector: an HTTP endpoint for records systems that push referrals.
 *
 *   POST /v1/referrals        body: a referral (proto3 JSON)
 *                             202 {"messageId": ID} once it is sealed in the outbox (also for the same
 *                                 referral sent again: the id it already has)
 *                             400 {"problems": [...]} not a referral, or a rule broken (paths included)
 *                             409 {"problems": [...]} other content under an RD number and revision sent before
 *                             413 body over max_body_bytes; 401 without the bearer token
 *   GET  /v1/referrals/ID     200 {"messageId", "state", "ledgerIndex", "intakeReference", "ack"}; 404 unknown
 *
 * libmicrohttpd runs without threads of its own: the adapter's loop calls MHD_run from poll(), so requests
 * are served on the same thread as everything else and nothing needs a lock. Every request must carry
 * "Authorization: Bearer TOKEN" with the token from token_file (mode 0600); the comparison is constant-time.
 * Responses never echo referral content.
 *
 * Whoever can reach the port can open connections, so nothing is spent on a request before its headers
 * show it may go on: a missing or wrong token (401) or a Content-Length over max_body_bytes (413) is
 * answered on the headers, before any of the body is read, and the connection closed. What one client can
 * hold is bounded by the connection limits (overall, and per address, below the overall one so that an
 * address holding all it may leaves room for the others) and by idle_timeout_s, after which a connection
 * that sends nothing is closed. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "adapter.h"
#include "keyfile.h"
#include "log.h"
#include "pbjson.h"
#include "rbcrypto.h"
#include "wire.h"

#define TOKEN_MAX 256
/* Open files the adapter needs besides its HTTP connections: its store, the broker's socket, logs. */
#define OTHER_FILES 64
/* MHD_run accepts up to 10 connections and makes one pass over the ready ones; the loop comes back to the
 * connector only every 100 ms or so when idle. So one poll runs it again while it has more to do, up to
 * this many times, which leaves the rest of the loop its turn under a flood. */
#define RUNS_PER_POLL 64
/* libmicrohttpd's own messages (one per refused connection, under a flood) logged a second, at most. */
#define MESSAGES_PER_SECOND 10

struct connector {
    adapter_t *adapter;
    struct MHD_Daemon *daemon;
    int epoll_fd;                      /* libmicrohttpd's: readable while it has connections to serve */
    uint8_t token_hash[RB_HASH_BYTES]; /* SHA-256 of the bearer token expected */
    int64_t max_body;                  /* max_body_bytes */
    int64_t message_second;            /* the second (monotonic) of the messages counted below */
    unsigned messages, suppressed;     /* libmicrohttpd's messages logged and dropped in it */
};

/* One request's body as it arrives. */
typedef struct {
    char *data;
    size_t len;
    bool too_big;
} upload_t;

/* Its [rms-http] section (the rows below). */
typedef struct {
    char listen[128], token_file[4096];
    int64_t max_body_bytes, max_connections, max_connections_per_address, idle_timeout_s;
} rms_http_conf_t;

/* listen as ADDRESS:PORT (IPv4) into addr and host; false when it is not. */
static bool parse_listen(const char *listen, struct sockaddr_in *addr, char host[64])
{
    char *end = NULL;
    const char *colon = strchr(listen, ':');
    unsigned long port = 0;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    if (colon != NULL && colon - listen < 64 && colon[1] >= '0' && colon[1] <= '9') {
        port = strtoul(colon + 1, &end, 10);
        snprintf(host, 64, "%.*s", (int)(colon - listen), listen);
    }
    if (end == NULL || *end != '\0' || port > 65535 || inet_pton(AF_INET, host, &addr->sin_addr) != 1)
        return false;
    addr->sin_port = htons((uint16_t)port);
    return true;
}

static bool valid_listen(const char *value, char *why, size_t whylen)
{
    struct sockaddr_in addr;
    char host[64];
    if (parse_listen(value, &addr, host))
        return true;
    snprintf(why, whylen, "must be ADDRESS:PORT, e.g. 127.0.0.1:8080");
    return false;
}

#define INT_ROW(name, min, max, dflt, help)                                                                  \
    SETTING_INT_ROW("rms-http", #name, rms_http_conf_t, name, min, max, dflt, help)
static const setting_t settings[] = {
    SETTING_TEXT_ROW("rms-http", "listen", rms_http_conf_t, listen, 1, "127.0.0.1:8080", valid_listen,
                     "ADDRESS:PORT to listen on (port 0: any free port)"),
    SETTING_TEXT_ROW("rms-http", "token_file", rms_http_conf_t, token_file, 1, NULL, NULL,
                     "the bearer token, at least 16 characters, on its first line"),
    INT_ROW(max_body_bytes, 1024, 16 * 1024 * 1024, "1048576", "larger bodies are refused with 413"),
    INT_ROW(max_connections, 1, 65536, "256", "connections open at once, from everyone"),
    INT_ROW(
        max_connections_per_address, 1, 65536, "16",
        "connections open at once from one client address (at most max_connections, the default if lower)"),
    INT_ROW(idle_timeout_s, 1, 3600, "10", "a connection that sends or takes nothing this long is closed"),
    {0},
};

static rb_err http_check(void *conf, const settings_t *cfg, char *err, size_t errlen)
{
    rms_http_conf_t *set = conf;
    if (set->max_connections_per_address <= set->max_connections)
        return RB_OK;
    /* The default, 16, gives way to a lower overall limit; a value set over it is a mistake. */
    if (!settings_has(cfg, "rms-http", "max_connections_per_address")) {
        set->max_connections_per_address = set->max_connections;
        return RB_OK;
    }
    return settings_fail(cfg, "rms-http", "max_connections_per_address", err, errlen,
                         "[rms-http] max_connections_per_address must be a whole number from 1 to %lld",
                         (long long)set->max_connections);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY);
    pbjson_free(text);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static json_t *problems_json(const char *lines)
{
    json_t *list = json_array();
    const char *p = lines;
    while (list != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 0)
            json_array_append_new(list, json_stringn(p, n));
        p += n + (nl != NULL);
    }
    return json_pack("{s:o}", "problems", list ? list : json_array());
}

/* The digests are compared, not the tokens: the time taken tells a wrong length no better than a wrong
 * byte. */
static bool authorised(connector_t *c, struct MHD_Connection *conn)
{
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0)
        return false;
    auth += 7;
    uint8_t hash[RB_HASH_BYTES];
    rbcrypto_sha256((const uint8_t *)auth, strlen(auth), hash);
    return rbcrypto_equal(hash, c->token_hash, sizeof hash);
}

/* Answers, on its headers alone, a request that must not go further: no or a wrong token (401), or a
 * Content-Length over max_body_bytes (413). Nothing of its body has been read, and none will be:
 * libmicrohttpd sends the answer and closes the connection. False when the request may go on. */
static bool refused_on_headers(connector_t *c, struct MHD_Connection *conn, const char *url,
                               enum MHD_Result *result)
{
    if (!authorised(c, conn)) {
        log_security("http_unauthorised", "url=%.60s", url);
        *result = reply(conn, MHD_HTTP_UNAUTHORIZED,
                        json_pack("{s:s}", "error", "a valid bearer token is required"));
        return true;
    }
    const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length != NULL) {
        errno = 0;
        unsigned long long n = strtoull(length, NULL, 10); /* libmicrohttpd refused a malformed one */
        if (errno == ERANGE || n > (unsigned long long)c->max_body) {
            log_warn("http_body_refused", "url=%.60s content_length=%.20s max_body_bytes=%lld", url, length,
                     (long long)c->max_body);
            *result = reply(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                            json_pack("{s:[s]}", "problems", "$: the body is larger than the limit"));
            return true;
        }
    }
    return false;
}

static enum MHD_Result post_referral(connector_t *c, struct MHD_Connection *conn, upload_t *u)
{
    if (u->too_big)
        return reply(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                     json_pack("{s:[s]}", "problems", "$: the body is larger than the limit"));
    msg_id_t id;
    char problems[4096];
    rb_err rc = adapter_accept_referral(c->adapter, u->data ? u->data : "", u->len, "http", &id, problems,
                                        sizeof problems);
    if (rc == RB_OK) {
        char hex[33];
        wire_id_hex(id.bytes, hex);
        log_info("export_taken", "via=http msg=%s", hex);
        return reply(conn, MHD_HTTP_ACCEPTED, json_pack("{s:s}", "messageId", hex));
    }
    if (rc == RB_ERR_MALFORMED || rc == RB_ERR_INVALID || rc == RB_ERR_CONFLICT) {
        log_warn("export_rejected", "via=http reason=%s", rb_strerror(rc));
        return reply(conn, rc == RB_ERR_CONFLICT ? MHD_HTTP_CONFLICT : MHD_HTTP_BAD_REQUEST,
                     problems_json(problems));
    }
    return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, json_pack("{s:[s]}", "problems", rb_strerror(rc)));
}

static enum MHD_Result get_referral(connector_t *c, struct MHD_Connection *conn, const char *hex)
{
    msg_id_t id;
    bool found = false;
    outbox_status_t st;
    if (!keyfile_unhex(hex, id.bytes, MSG_ID_BYTES) ||
        astore_outbox_status(adapter_store(c->adapter), &id, &found, &st) != RB_OK || !found)
        return reply(conn, MHD_HTTP_NOT_FOUND, json_pack("{s:s}", "error", "no such referral"));
    json_t *body = json_pack("{s:s, s:s, s:I, s:s}", "messageId", hex, "state", st.state, "queuedMs",
                             (json_int_t)st.queued_ms, "intakeReference", st.intake_reference);
    if (body != NULL && st.ledger_index > 0)
        json_object_set_new(body, "ledgerIndex", json_integer(st.ledger_index));
    if (body != NULL && st.refused[0] != '\0')
        json_object_set_new(body, "refused", json_string(st.refused));
    if (body != NULL && st.ack_json != NULL)
        json_object_set_new(body, "ack", json_loads(st.ack_json, 0, NULL));
    free(st.ack_json);
    return reply(conn, MHD_HTTP_OK, body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    connector_t *c = cls;
    upload_t *u = *con_cls;
    if (u == NULL) { /* the headers, and none of the body yet */
        enum MHD_Result refused;
        if (refused_on_headers(c, conn, url, &refused))
            return refused;
        if ((u = calloc(1, sizeof *u)) == NULL)
            return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*upload_data_size > 0) { /* a piece of the body, of an authorised request */
        if (!u->too_big && u->len + *upload_data_size <= (size_t)c->max_body) {
            char *grown = realloc(u->data, u->len + *upload_data_size + 1);
            if (grown == NULL)
                return MHD_NO;
            u->data = grown;
            memcpy(u->data + u->len, upload_data, *upload_data_size);
            u->len += *upload_data_size;
        } else {
            u->too_big = true; /* a chunked body: the rest is read and dropped; the answer is 413 */
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/referrals") == 0)
        return post_referral(c, conn, u);
    if (strcmp(method, "GET") == 0 && strncmp(url, "/v1/referrals/", 14) == 0)
        return get_referral(c, conn, url + 14);
    return reply(conn, MHD_HTTP_NOT_FOUND, json_pack("{s:s}", "error", "no such resource"));
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)conn;
    (void)why;
    upload_t *u = *con_cls;
    if (u != NULL) {
        if (u->data != NULL)
            rbcrypto_wipe(u->data, u->len);
        free(u->data);
        free(u);
        *con_cls = NULL;
    }
}

/* Keeps the token's digest only; the token itself is wiped. */
static rb_err read_token(connector_t *c, const char *path, char *err, size_t errlen)
{
    struct stat st;
    size_t len = 0;
    char token[TOKEN_MAX];
    rb_err rc = keyfile_read(path, token, sizeof token - 1, &len, &st);
    if (rc == RB_OK && (st.st_mode & 077) != 0)
        rc = RB_ERR_INSECURE_FILE;
    while (rc == RB_OK && len > 0 && (token[len - 1] == '\n' || token[len - 1] == '\r'))
        len--;
    if (rc == RB_OK && len < 16) {
        snprintf(err, errlen, "%s: the token must be at least 16 characters", path);
        rc = RB_ERR_USAGE;
    } else if (rc != RB_OK) {
        snprintf(err, errlen, "%s: %s", path, rb_strerror(rc));
    } else {
        rbcrypto_sha256((const uint8_t *)token, len, c->token_hash);
    }
    rbcrypto_wipe(token, sizeof token);
    return rc;
}

static int64_t monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

/* Logs how many of libmicrohttpd's messages were dropped, once their second is over. */
static void report_suppressed(connector_t *c)
{
    int64_t now = monotonic_s();
    if (now == c->message_second)
        return;
    if (c->suppressed > 0)
        log_warn("http_errors_suppressed", "count=%u", c->suppressed);
    c->message_second = now;
    c->messages = c->suppressed = 0;
}

/* libmicrohttpd's own messages (a failed accept, a malformed request, a connection over a limit) as log
 * lines like every other, MESSAGES_PER_SECOND at most: a flood of connections must not become a flood of
 * log lines. */
static void on_http_message(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void on_http_message(void *cls, const char *fmt, va_list ap)
{
    connector_t *c = cls;
    report_suppressed(c);
    if (c->messages++ >= MESSAGES_PER_SECOND) {
        c->suppressed++;
        return;
    }
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    text[strcspn(text, "\n")] = '\0';
    log_warn("http_error", "detail=%s", text);
}

static rb_err http_open(connector_t **out, adapter_t *a, const void *conf, char *err, size_t errlen)
{
    pbjson_init(); /* jansson's memory comes from the wiping allocator */
    const rms_http_conf_t *set = conf;
    connector_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    c->adapter = a;
    c->max_body = set->max_body_bytes;
    int64_t connections = set->max_connections, per_address = set->max_connections_per_address,
            timeout = set->idle_timeout_s;
    const char *listen = set->listen;
    rb_err rc = RB_OK;
    struct rlimit files;
    int64_t files_needed = connections + OTHER_FILES;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY &&
        (rlim_t)files_needed > files.rlim_cur) {
        snprintf(
            err, errlen,
            "[rms-http] max_connections = %lld needs %lld open files and the adapter may open %llu: lower "
            "it, or raise the limit (LimitNOFILE= in the systemd unit)",
            (long long)connections, (long long)files_needed, (unsigned long long)files.rlim_cur);
        rc = RB_ERR_USAGE;
    }
    if (rc == RB_OK)
        rc = read_token(c, set->token_file, err, errlen);
    struct sockaddr_in addr;
    char host[64];
    parse_listen(listen, &addr, host); /* checked with the settings */
    unsigned port = ntohs(addr.sin_port);
    if (rc == RB_OK) {
        /* epoll, not select: one descriptor that says when there is work (http_poll), and no FD_SETSIZE
         * ceiling on the connections. */
        c->daemon = MHD_start_daemon(
            MHD_USE_ERROR_LOG | MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, on_request, c,
            MHD_OPTION_EXTERNAL_LOGGER, on_http_message, c, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, c, MHD_OPTION_CONNECTION_LIMIT, (unsigned)connections,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)per_address, MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)timeout, MHD_OPTION_END);
        const union MHD_DaemonInfo *epoll_info =
            c->daemon ? MHD_get_daemon_info(c->daemon, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
        if (c->daemon == NULL || epoll_info == NULL) {
            snprintf(err, errlen, "[rms-http] cannot listen on %s", listen);
            rc = RB_ERR_IO;
        } else {
            c->epoll_fd = epoll_info->epoll_fd;
        }
    }
    if (rc != RB_OK) {
        if (c->daemon != NULL)
            MHD_stop_daemon(c->daemon);
        rbcrypto_wipe(c->token_hash, sizeof c->token_hash);
        free(c);
        return rc;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(c->daemon, MHD_DAEMON_INFO_BIND_PORT);
    log_info("http_listening", "address=%s port=%u max_connections=%lld per_address=%lld idle_timeout_s=%lld",
             host, info ? info->port : (unsigned)port, (long long)connections, (long long)per_address,
             (long long)timeout);
    *out = c;
    return RB_OK;
}

/* Whether libmicrohttpd has more to do now: a connection or the listening socket ready, or a connection
 * timed out. */
static bool http_busy(connector_t *c)
{
    struct pollfd p = {.fd = c->epoll_fd, .events = POLLIN};
    MHD_UNSIGNED_LONG_LONG wait_ms;
    return poll(&p, 1, 0) > 0 || (MHD_get_timeout(c->daemon, &wait_ms) == MHD_YES && wait_ms == 0);
}

static void http_poll(connector_t *c)
{
    for (int run = 0; run < RUNS_PER_POLL; run++) {
        MHD_run(c->daemon); /* serves whatever is ready, without blocking */
        if (!http_busy(c))
            break;
    }
    report_suppressed(c);
}

static void http_close(connector_t **c)
{
    MHD_stop_daemon((*c)->daemon);
    rbcrypto_wipe((*c)->token_hash, sizeof(*c)->token_hash);
    free(*c);
    *c = NULL;
}

const connector_ops_t rms_http_connector = {
    .name = "rms-http",
    .role = CARD_ROLE_SOURCE,
    .settings = settings,
    .settings_size = sizeof(rms_http_conf_t),
    .check = http_check,
    .open = http_open,
    .poll = http_poll,
    .close = http_close,
};
