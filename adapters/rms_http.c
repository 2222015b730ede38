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
 * Responses never echo referral content. */
#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapter.h"
#include "keyfile.h"
#include "log.h"
#include "pbjson.h"
#include "rbcrypto.h"
#include "wire.h"

#define TOKEN_MAX 256

struct connector {
    adapter_t *adapter;
    struct MHD_Daemon *daemon;
    char token[TOKEN_MAX]; /* the bearer token expected */
    size_t token_len;
    int64_t max_body;
};

/* One request's body as it arrives. */
typedef struct {
    char *data;
    size_t len;
    bool too_big;
} upload_t;

static const char *const settings[] = {"listen", "token_file", "max_body_bytes", NULL};

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

static bool authorised(connector_t *c, struct MHD_Connection *conn)
{
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0)
        return false;
    auth += 7;
    return strlen(auth) == c->token_len && rbcrypto_equal(auth, c->token, c->token_len);
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
    if (u == NULL) { /* headers only so far */
        if ((u = calloc(1, sizeof *u)) == NULL)
            return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*upload_data_size > 0) { /* a piece of the body */
        if (!u->too_big && u->len + *upload_data_size <= (size_t)c->max_body) {
            char *grown = realloc(u->data, u->len + *upload_data_size + 1);
            if (grown == NULL)
                return MHD_NO;
            u->data = grown;
            memcpy(u->data + u->len, upload_data, *upload_data_size);
            u->len += *upload_data_size;
        } else {
            u->too_big = true; /* the rest is read and dropped; the answer is 413 */
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!authorised(c, conn)) {
        log_security("http_unauthorised", "url=%.60s", url);
        return reply(conn, MHD_HTTP_UNAUTHORIZED,
                     json_pack("{s:s}", "error", "a valid bearer token is required"));
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

static rb_err read_token(connector_t *c, const char *path, char *err, size_t errlen)
{
    struct stat st;
    size_t len;
    rb_err rc = keyfile_read(path, c->token, sizeof c->token - 1, &len, &st);
    if (rc == RB_OK && (st.st_mode & 077) != 0)
        rc = RB_ERR_INSECURE_FILE;
    while (rc == RB_OK && len > 0 && (c->token[len - 1] == '\n' || c->token[len - 1] == '\r'))
        len--;
    if (rc == RB_OK && len < 16) {
        snprintf(err, errlen, "%s: the token must be at least 16 characters", path);
        return RB_ERR_USAGE;
    }
    if (rc != RB_OK) {
        snprintf(err, errlen, "%s: %s", path, rb_strerror(rc));
        return rc;
    }
    c->token[len] = '\0';
    c->token_len = len;
    return RB_OK;
}

/* libmicrohttpd's own messages (a failed accept, a malformed request) as log lines like every other. */
static void on_http_message(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void on_http_message(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    text[strcspn(text, "\n")] = '\0';
    log_warn("http_error", "detail=%s", text);
}

static rb_err http_open(connector_t **out, adapter_t *a, const settings_t *cfg, char *err, size_t errlen)
{
    pbjson_init(); /* jansson's memory comes from the wiping allocator */
    connector_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    c->adapter = a;
    const char *listen = settings_get(cfg, "rms-http", "listen", "127.0.0.1:8080");
    const char *token = settings_get(cfg, "rms-http", "token_file", NULL);
    rb_err rc = settings_int(cfg, "rms-http", "max_body_bytes", 1024 * 1024, 1024, 16 * 1024 * 1024,
                             &c->max_body, err, errlen);
    if (rc == RB_OK && token == NULL) {
        snprintf(err, errlen, "[rms-http] token_file is required");
        rc = RB_ERR_USAGE;
    }
    if (rc == RB_OK)
        rc = read_token(c, token, err, errlen);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    char host[64], *end = NULL;
    const char *colon = strchr(listen, ':');
    unsigned long port = 0;
    if (rc == RB_OK && colon != NULL && (size_t)(colon - listen) < sizeof host && colon[1] >= '0' &&
        colon[1] <= '9') {
        port = strtoul(colon + 1, &end, 10);
        snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
    }
    if (rc == RB_OK &&
        (end == NULL || *end != '\0' || port > 65535 || inet_pton(AF_INET, host, &addr.sin_addr) != 1)) {
        snprintf(err, errlen, "[rms-http] listen must be ADDRESS:PORT, e.g. 127.0.0.1:8080");
        rc = RB_ERR_USAGE;
    }
    if (rc == RB_OK) {
        addr.sin_port = htons((uint16_t)port);
        c->daemon = MHD_start_daemon(MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL, on_request, c,
                                     MHD_OPTION_EXTERNAL_LOGGER, on_http_message, NULL, MHD_OPTION_SOCK_ADDR,
                                     (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, c,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
        if (c->daemon == NULL) {
            snprintf(err, errlen, "[rms-http] cannot listen on %s", listen);
            rc = RB_ERR_IO;
        }
    }
    if (rc != RB_OK) {
        rbcrypto_wipe(c->token, sizeof c->token);
        free(c);
        return rc;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(c->daemon, MHD_DAEMON_INFO_BIND_PORT);
    log_info("http_listening", "address=%s port=%u", host, info ? info->port : (unsigned)port);
    *out = c;
    return RB_OK;
}

static void http_poll(connector_t *c)
{
    MHD_run(c->daemon); /* serves whatever is ready, without blocking */
}

static void http_close(connector_t **c)
{
    MHD_stop_daemon((*c)->daemon);
    rbcrypto_wipe((*c)->token, sizeof(*c)->token);
    free(*c);
    *c = NULL;
}

const connector_ops_t rms_http_connector = {
    .name = "rms-http",
    .role = CARD_ROLE_SOURCE,
    .settings = settings,
    .open = http_open,
    .poll = http_poll,
    .close = http_close,
};
