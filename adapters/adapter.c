/* adapter.c -- the adapter runtime (see adapter.h).
 *
 * One thread, one loop. Each turn: connect if not connected (the broker may be down: nothing is lost, the
 * outbox waits), poll the source connector, submit what has no receipt yet, take deliveries into the inbox
 * (stored, then CONFIRMed), and process the inbox. Filing and the ACK it produces are committed together,
 * and connectors file idempotently by message id, so a crash at any point repeats work but never loses
 * or doubles it. */
#include "adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "fsmode.h"
#include "keyfile.h"
#include "log.h"
#include "pbjson.h"
#include "publish.h"
#include "rbcrypto.h"
#include "referral_rules.h"
#include "wire.h"
#include "witness.h"

/* Keys an adapter still opens with after rotations: each rotation adds one until the operator drops the
 * oldest, once nothing sealed to it can come (docs/ADAPTERS.md, previous_secret). */
#define ADAPTER_PREVIOUS_MAX 8

/* An adapter's config: its [adapter] and [publish] sections (the rows below); the connector's own section
 * fills a struct of the connector's. */
typedef struct {
    char connector[64], secret[4096], previous_secret[4096], broker[256], broker_card[4096], trust[4096],
        recipient[CARD_NAME_MAX + 1], data[2048], metrics_file[4096], areas[4096];
    int64_t receipt_deadline_ms, ack_deadline_ms, threshold;
} adapter_conf_t;

/* A config read: what run, status and publish start from. */
typedef struct {
    settings_t *cfg;            /* the file, for errors naming its lines */
    adapter_conf_t conf;        /* its [adapter] and [publish] sections */
    const connector_ops_t *ops; /* the connector it names */
    void *conn_conf;            /* the connector's section, as its struct */
} setup_t;

struct adapter {
    setup_t *setup;
    const connector_ops_t *ops; /* setup's */
    connector_t *conn;
    identity_t *me;
    identity_t *previous[ADAPTER_PREVIOUS_MAX]; /* keys before rotations, newest first, to open what was
                                                   sealed to them; n_previous of them */
    size_t n_previous;
    card_t broker;  /* the broker's card */
    trust_t *trust; /* peer cards: whom we seal to and whose envelopes we open */
    astore_t *store;
    client_t *client;     /* NULL while not connected */
    int lock_fd;          /* flock on DATA/adapter.lock: one process per data directory */
    unsigned alarms_seen; /* ledger alarms of the current client already kept */
    int64_t next_connect_ms, next_report_ms, next_metrics_ms;
    bool unwitnessed_logged; /* that the broker cannot prove (version 1) was said once */
    int unproved;            /* PROVEs in a row the connected broker did not answer with a proof */
};

/* Why the adapter reconnects when the broker closed its session: newer connections under its key. */
#define SESSION_CLOSED_WHY "the broker closed this connection's session (newer connections under our key)"

static bool valid_endpoint(const char *value, char *why, size_t whylen)
{
    if (wire_endpoint_valid(value, false))
        return true;
    snprintf(why, whylen, "%s: %s", value, WIRE_ENDPOINT_FORM);
    return false;
}

#define TEXT_ROW(section, name, min, dflt, valid, help)                                                      \
    SETTING_TEXT_ROW(section, #name, adapter_conf_t, name, min, dflt, valid, help)
#define INT_ROW(section, name, min, max, dflt, help)                                                         \
    SETTING_INT_ROW(section, #name, adapter_conf_t, name, min, max, dflt, help)

const setting_t adapter_settings[] = {
    TEXT_ROW("adapter", connector, 1, NULL, NULL,
             "rms-files, rms-http (sources), intake-files, intake-sqlite (sinks)"),
    TEXT_ROW("adapter", secret, 1, NULL, NULL, "the adapter's secret key, made with --no-passphrase"),
    TEXT_ROW("adapter", previous_secret, 1, "", NULL,
             "the keys before the last rotations, newest first, separated by spaces"),
    TEXT_ROW("adapter", broker, 1, NULL, valid_endpoint, "the broker's endpoint, tcp://HOST:PORT"),
    TEXT_ROW("adapter", broker_card, 1, NULL, NULL, "the broker's card"),
    TEXT_ROW("adapter", trust, 1, NULL, NULL, "a folder of the cards of the other side"),
    TEXT_ROW("adapter", recipient, 0, "", NULL, "sources only: the sink referrals are sealed to"),
    TEXT_ROW("adapter", data, 1, NULL, NULL, "the adapter's own folder, for its store"),
    INT_ROW("adapter", receipt_deadline_ms, 1, INT64_MAX / 2, "60000",
            "a referral without the broker's receipt this long is overdue"),
    INT_ROW("adapter", ack_deadline_ms, 1, INT64_MAX / 2, "86400000",
            "a referral without an ACK this long is overdue"),
    TEXT_ROW("adapter", metrics_file, 1, "", NULL, "where the counts go for Prometheus's textfile collector"),
    /* referral-publish's (docs/PUBLISHING.md) */
    INT_ROW("publish", threshold, 2, 1000000, "5", "counts under it are suppressed"),
    TEXT_ROW("publish", areas, 0, "", NULL, "the area each district widens to"),
    {0},
};

static rb_err reapply_notice(void *ctx, const uint8_t *bytes, size_t len);
static rb_err write_metrics(adapter_t *a);

astore_t *adapter_store(adapter_t *a)
{
    return a->store;
}

/* previous_secret: one or more key files, separated by spaces, newest first. */
static rb_err load_previous(adapter_t *a, const char *list, char *err, size_t errlen)
{
    for (const char *p = list + strspn(list, " \t"); *p != '\0'; p += strspn(p, " \t")) {
        size_t n = strcspn(p, " \t");
        char path[PATH_MAX];
        if (n >= sizeof path)
            return settings_fail(a->setup->cfg, "adapter", "previous_secret", err, errlen,
                                 "a path is too long");
        if (a->n_previous == ADAPTER_PREVIOUS_MAX)
            return settings_fail(a->setup->cfg, "adapter", "previous_secret", err, errlen,
                                 "more than %d keys: drop the oldest, which nothing can still be sealed to",
                                 ADAPTER_PREVIOUS_MAX);
        memcpy(path, p, n);
        path[n] = '\0';
        rb_err rc = identity_load(&a->previous[a->n_previous], path, NULL, 0);
        if (rc != RB_OK) {
            snprintf(err, errlen, "%s: %s", path, rb_strerror(rc));
            return rc;
        }
        a->n_previous++;
        p += n;
    }
    return RB_OK;
}

static const connector_ops_t *find_connector(const char *name)
{
    for (size_t i = 0; connectors[i] != NULL; i++)
        if (strcmp(connectors[i]->name, name) == 0)
            return connectors[i];
    return NULL;
}

static void setup_free(setup_t **s_p)
{
    setup_t *s = *s_p;
    if (s == NULL)
        return;
    settings_free(&s->cfg);
    free(s->conn_conf);
    free(s);
    *s_p = NULL;
}

/* Reads the config, its connector's section included: whatever is wrong in it is said here, for run, status
 * and publish alike. */
static rb_err setup_read(setup_t *s, const char *path, char *err, size_t errlen)
{
    rb_err rc = settings_load(&s->cfg, path, err, errlen);
    if (rc != RB_OK)
        return rc;
    /* A misspelt section is named before its settings are missed ("[adapter] connector is required"). */
    const setting_t *any[8] = {adapter_settings};
    for (size_t i = 0; connectors[i] != NULL && i + 2 < sizeof any / sizeof any[0]; i++)
        any[i + 1] = connectors[i]->settings;
    if ((rc = settings_check_sections(s->cfg, any, err, errlen)) != RB_OK ||
        (rc = settings_apply(s->cfg, adapter_settings, &s->conf, err, errlen)) != RB_OK)
        return rc;
    if ((s->ops = find_connector(s->conf.connector)) == NULL)
        return settings_fail(s->cfg, "adapter", "connector", err, errlen,
                             "[adapter] connector: no connector named '%s'", s->conf.connector);
    const setting_t *mine[] = {adapter_settings, s->ops->settings, NULL};
    if ((rc = settings_check_sections(s->cfg, mine, err, errlen)) != RB_OK)
        return rc;
    if ((s->conn_conf = calloc(1, s->ops->settings_size)) == NULL)
        return RB_ERR_NOMEM;
    if ((rc = settings_apply(s->cfg, s->ops->settings, s->conn_conf, err, errlen)) == RB_OK &&
        s->ops->check != NULL)
        rc = s->ops->check(s->conn_conf, s->cfg, err, errlen);
    return rc;
}

/* setup_read into a new setup; on failure *out is NULL. */
static rb_err setup_load(setup_t **out, const char *path, char *err, size_t errlen)
{
    setup_t *s = calloc(1, sizeof *s);
    rb_err rc = s == NULL ? RB_ERR_NOMEM : setup_read(s, path, err, errlen);
    if (rc != RB_OK)
        setup_free(&s);
    *out = s;
    return rc;
}

rb_err adapter_open(adapter_t **out, const char *config_path, char *err, size_t errlen)
{
    *out = NULL;
    adapter_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return RB_ERR_NOMEM;
    a->lock_fd = -1;
    char path[4096];
    rb_err rc = setup_load(&a->setup, config_path, err, errlen);
    if (rc != RB_OK) {
        adapter_close(&a);
        return rc;
    }
    a->ops = a->setup->ops;
    const adapter_conf_t *conf = &a->setup->conf;
    const char *secret = conf->secret, *broker_card = conf->broker_card, *trust = conf->trust,
               *data = conf->data;
    /* Unattended: the secret file has no passphrase, and is protected by its mode. */
    if ((rc = identity_load(&a->me, secret, NULL, 0)) == RB_ERR_BAD_PASSPHRASE)
        snprintf(err, errlen,
                 "%s: protected by a passphrase: an adapter needs a secret made with "
                 "--no-passphrase (referral-keys passwd --no-passphrase)",
                 secret);
    else if (rc != RB_OK)
        snprintf(err, errlen, "%s: %s", secret, rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
    if (rc == RB_OK && identity_card(a->me)->role != a->ops->role) {
        snprintf(err, errlen, "%s: the card's role is %s, connector %s needs %s", secret,
                 card_role_name((card_role)identity_card(a->me)->role), a->ops->name,
                 card_role_name(a->ops->role));
        rc = RB_ERR_USAGE;
    }
    if (rc == RB_OK && (rc = card_read_file(&a->broker, broker_card)) != RB_OK)
        snprintf(err, errlen, "%s: %s", broker_card, rb_strerror(rc));
    if (rc == RB_OK)
        rc = trust_load_dir(&a->trust, trust, err, errlen);
    /* The broker signs key notices. */
    if (rc == RB_OK && (rc = trust_add(a->trust, &a->broker)) != RB_OK)
        snprintf(err, errlen, "%s: the broker's card conflicts with a card in %s", broker_card, trust);
    if (rc == RB_OK)
        rc = load_previous(a, conf->previous_secret, err, errlen);
    if (rc == RB_OK && a->ops->role == CARD_ROLE_SOURCE) {
        const char *recipient = conf->recipient;
        if (recipient[0] == '\0') {
            rc = settings_fail(a->setup->cfg, "adapter", "recipient", err, errlen,
                               "[adapter] recipient is required");
        } else if (trust_find_name(a->trust, recipient, (uint64_t)(client_clock_ms() / 1000)) == NULL) {
            snprintf(err, errlen, "[adapter] recipient: no valid card named '%s' in %s", recipient, trust);
            rc = RB_ERR_USAGE;
        }
    }
    /* Every line this process writes is about it, from the first (a data directory tightened) on. */
    if (rc == RB_OK) {
        log_set_context("adapter", identity_card(a->me)->name);
        rc = fsmode_dir(data, 0700, 0700, NULL, err, errlen);
    }
    if (rc == RB_OK) {
        snprintf(path, sizeof path, "%s/adapter.lock", data);
        a->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (a->lock_fd < 0 || flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            snprintf(err, errlen, "%s: another adapter is running on this data directory", data);
            rc = RB_ERR_BUSY; /* or the one being replaced is still stopping */
        }
    }
    /* A start that fails leaves no store behind that it made: the next start, with the config put right,
     * makes it. One that was there stays (the lock is held: no one else made it meanwhile). */
    bool fresh = false;
    if (rc == RB_OK) {
        snprintf(path, sizeof path, "%s/adapter.db", data);
        fresh = access(path, F_OK) != 0 && errno == ENOENT;
        rc = astore_open(&a->store, path, false, err, errlen);
    }
    if (rc == RB_OK)
        rc = astore_each_notice(a->store, reapply_notice, a->trust);
    int held = 0;
    if (rc == RB_OK && (rc = astore_inbox_retry_held(a->store, &held)) == RB_OK && held > 0)
        log_info("held_envelopes_retried", "count=%d", held);
    if (rc == RB_OK)
        rc = a->ops->open(&a->conn, a, a->setup->conn_conf, err, errlen);
    /* A mistyped metrics_file is said at start, not every ten seconds in the log. */
    if (rc == RB_OK && (rc = write_metrics(a)) != RB_OK)
        snprintf(err, errlen, "[adapter] metrics_file: %s: %s (a folder the adapter may write to)",
                 a->setup->conf.metrics_file, rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
    if (rc != RB_OK) {
        adapter_close(&a);
        static const char *const made[] = {"", "-wal", "-shm"};
        for (size_t i = 0; fresh && i < sizeof made / sizeof made[0]; i++) {
            char file[4200];
            snprintf(file, sizeof file, "%s%s", path, made[i]);
            unlink(file);
        }
        return rc;
    }
    log_info("adapter_started", "connector=%s broker=%s", a->ops->name, a->setup->conf.broker);
    /* Type=notify: ready once its store is open and its connector listens, not when the broker answers,
     * which may be down for a while (without NOTIFY_SOCKET, as run by hand, this does nothing). */
    (void)sd_notify(0, "READY=1");
    if (getenv("RB_TEST_CLOCK_OFFSET_MS") != NULL) /* a test hook: never meant for a real deployment */
        log_warn("clock_offset", "RB_TEST_CLOCK_OFFSET_MS=%s; clock_ms=%lld",
                 getenv("RB_TEST_CLOCK_OFFSET_MS"), (long long)client_clock_ms());
    *out = a;
    return RB_OK;
}

void adapter_close(adapter_t **a_p)
{
    adapter_t *a = a_p ? *a_p : NULL;
    if (a == NULL)
        return;
    if (a->conn != NULL)
        a->ops->close(&a->conn);
    client_close(&a->client);
    astore_close(&a->store);
    trust_free(&a->trust);
    identity_free(&a->me);
    for (size_t i = 0; i < a->n_previous; i++)
        identity_free(&a->previous[i]);
    setup_free(&a->setup);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    free(a);
    *a_p = NULL;
}

/* --- accepting referrals (source) ------------------------------------------------------------------------ */

static Rb__Kind kind_of(const Rb__Referral *r)
{
    if (r->references == NULL)
        return RB__KIND__KIND_REFERRAL;
    return r->withdrawal_reason[0] != '\0' ? RB__KIND__KIND_WITHDRAWAL : RB__KIND__KIND_SUPPLEMENT;
}

static void list_problems(const referral_problems_t *p, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->count && n < cap; i++) {
        int w = snprintf(out + n, cap - n, "%s: %s\n", p->items[i].path, p->items[i].message);
        if (w > 0)
            n += (size_t)w;
    }
}

/* Adds a problem to the list (when it has room: the list says when it was cut short). */
static void add_problem(referral_problems_t *p, const char *path, const char *message)
{
    if (p->count == REFERRAL_MAX_PROBLEMS) {
        p->truncated = true;
        return;
    }
    referral_problem_t *item = &p->items[p->count];
    snprintf(item->path, sizeof item->path, "%.*s", (int)sizeof item->path - 1, path);
    snprintf(item->message, sizeof item->message, "%.*s", (int)sizeof item->message - 1, message);
    p->count++;
}

/* The problem with a referral naming another agency than its sender's card, or NULL: a police source
 * refers only its own agency's cases, whatever its export says. */
static const char *foreign_agency(const Rb__Referral *r, const card_t *sender, char *why, size_t cap)
{
    if (strcmp(r->agency_ori, sender->agency) == 0)
        return NULL;
    snprintf(
        why, cap,
        "names agency %.16s, not %s's own (%s, on its card): a source refers only its own agency's cases",
        r->agency_ori, sender->name, sender->agency);
    return why;
}

rb_err adapter_accept_referral(adapter_t *a, const char *json, size_t len, const char *source, msg_id_t *id,
                               char *problems, size_t cap)
{
    problems[0] = '\0';
    ProtobufCMessage *m;
    rb_err rc =
        pbjson_parse(&rb__referral__descriptor, json, len, rbcrypto_wiping_allocator(), &m, problems, cap);
    if (rc != RB_OK)
        return rc == RB_ERR_NOMEM ? rc : RB_ERR_MALFORMED;
    Rb__Referral *r = (Rb__Referral *)m;
    Rb__Kind kind = kind_of(r);
    int64_t t = client_clock_ms();
    referral_problems_t found;
    uint8_t *body = NULL, *env = NULL;
    size_t body_len = 0, env_len = 0;
    bool valid = referral_validate(r, kind, t, &found) == RB_OK;
    char why[256];
    if (foreign_agency(r, identity_card(a->me), why, sizeof why) != NULL) {
        add_problem(&found, "$.agencyOri", why);
        valid = false;
    }
    if (!valid) {
        list_problems(&found, problems, cap);
        rc = RB_ERR_INVALID;
        goto done;
    }
    content_id_t content;
    snprintf(content.agency, sizeof content.agency, "%s", r->agency_ori);
    snprintf(content.rd_number, sizeof content.rd_number, "%s", r->rd_number);
    content.revision = r->revision;
    body_len = protobuf_c_message_get_packed_size(m);
    if ((body = rbcrypto_secret_alloc(body_len ? body_len : 1)) == NULL) {
        rc = RB_ERR_NOMEM;
        goto done;
    }
    protobuf_c_message_pack(m, body);
    uint8_t body_sha[RB_HASH_BYTES], old_sha[RB_HASH_BYTES];
    rbcrypto_sha256(body, body_len, body_sha);
    bool exists;
    if ((rc = astore_outbox_find_content(a->store, &content, &exists, id, old_sha)) != RB_OK)
        goto done;
    if (exists) {
        if (memcmp(body_sha, old_sha, RB_HASH_BYTES) != 0) {
            uint32_t last = 0;
            astore_outbox_last_revision(a->store, content.agency, content.rd_number, &last);
            snprintf(
                problems, cap,
                "$.revision: RD %s revision %u was already sent with other content; send the change as a "
                "supplement with revision %u\n",
                content.rd_number, content.revision, last + 1);
            rc = RB_ERR_CONFLICT;
        }
        goto done; /* the same referral again: the id it already has */
    }
    const card_t *to = trust_find_name(a->trust, a->setup->conf.recipient, (uint64_t)(t / 1000));
    if (to == NULL) {
        snprintf(problems, cap, "no valid card for the recipient %s\n", a->setup->conf.recipient);
        rc = RB_ERR_UNKNOWN_SENDER;
        goto done;
    }
    /* A supplement or withdrawal names the envelope of the referral it follows, when we sent it. */
    msg_id_t ref;
    bool has_ref = false;
    if (r->references != NULL && r->references->message_id.len == MSG_ID_BYTES) {
        memcpy(ref.bytes, r->references->message_id.data, MSG_ID_BYTES);
        has_ref = true;
    } else if (r->references != NULL) {
        content_id_t earlier = content;
        earlier.revision = r->references->revision;
        uint8_t unused[RB_HASH_BYTES];
        astore_outbox_find_content(a->store, &earlier, &has_ref, &ref, unused);
    }
    uint8_t case_key[CASE_KEY_BYTES];
    envelope_case_key(a->me, content.agency, content.rd_number, case_key);
    envelope_params_t p = {.kind = kind, .ref = has_ref ? &ref : NULL, .case_key = case_key, .created_ms = t};
    if ((rc = envelope_seal(a->me, to, &p, body, body_len, id, &env, &env_len)) != RB_OK)
        goto done;
    char *facts = publish_facts(r);
    rc = facts == NULL
             ? RB_ERR_NOMEM
             : astore_outbox_add(a->store, id, kind, env, env_len, &content, body_sha, source, facts, t);
    free(facts);
    if (rc == RB_OK) {
        char hex[33];
        wire_id_hex(id->bytes, hex);
        log_info("queued", "msg=%s kind=%d source=%s", hex, (int)kind, source);
    }
done:
    free(env);
    rbcrypto_secret_free(body);
    protobuf_c_message_free_unpacked(m, rbcrypto_wiping_allocator());
    return rc;
}

/* --- the broker connection ---------------------------------------------------------------------------------- */

/* A ledger alarm: kept (status shows it), logged, and counted in the metrics file at once. */
static void raise_alarm(adapter_t *a, const char *reason)
{
    log_security("ledger_alarm", "broker=%s reason=\"%s\"", a->setup->conf.broker, reason);
    if (astore_add_alarm(a->store, reason, client_clock_ms()) != RB_OK)
        log_error("alarm_not_stored", "reason=\"%s\"", reason);
    write_metrics(a);
}

/* Keeps the broker's latest verified checkpoint, and any new alarm the client raised about it. */
static void keep_ledger(adapter_t *a)
{
    const client_ledger_t *l = client_ledger(a->client);
    int64_t t = client_clock_ms();
    if (l->alarms > a->alarms_seen) {
        a->alarms_seen = l->alarms;
        raise_alarm(a, l->alarm);
    }
    if (l->holds && astore_add_checkpoint(a->store, l->note, l->size, t) != RB_OK)
        log_error("checkpoint_not_stored", "size=%llu", (unsigned long long)l->size);
}

/* The latest checkpoint this adapter holds, as a signed note: the connection's, checked in memory, or the
 * one kept in the store while there is none. false when it holds none. */
static bool held_checkpoint(adapter_t *a, char note[NOTE_TEXT_MAX])
{
    const client_ledger_t *l = a->client != NULL ? client_ledger(a->client) : NULL;
    bool held = false;
    if (l != NULL && l->holds)
        snprintf(note, NOTE_TEXT_MAX, "%s", l->note);
    else if (astore_latest_checkpoint(a->store, &held, note) != RB_OK)
        held = false;
    return (l != NULL && l->holds) || held;
}

static void ensure_connected(adapter_t *a)
{
    int64_t t = client_clock_ms();
    if (a->client != NULL || t < a->next_connect_ms)
        return;
    char err[512], note[NOTE_TEXT_MAX];
    bool held = false;
    if (astore_latest_checkpoint(a->store, &held, note) != RB_OK)
        held = false;
    if (client_connect(&a->client, a->setup->conf.broker, a->me, &a->broker, 16, held ? note : NULL, 1000,
                       err, sizeof err) == RB_OK) {
        log_info("connected", "broker=%s", a->setup->conf.broker);
        a->alarms_seen = 0;
        keep_ledger(a);
        /* A broker that once could prove its checkpoints (protocol 2) and now says it cannot would switch
         * cross-witnessing off: a downgrade is an alarm. */
        int64_t spoke = 0, speaks = (int64_t)client_protocol(a->client);
        if (astore_meta_get(a->store, "broker_protocol", &spoke) == RB_OK && speaks > spoke)
            astore_meta_set(a->store, "broker_protocol", speaks);
        if (speaks < spoke) {
            char reason[200];
            snprintf(reason, sizeof reason,
                     "the broker spoke protocol version %lld and now speaks %lld: it no longer proves the "
                     "checkpoints recipients hold",
                     (long long)spoke, (long long)speaks);
            raise_alarm(a, reason);
        }
    } else {
        log_warn("broker_unreachable", "broker=%s error=%s", a->setup->conf.broker, err);
        a->next_connect_ms = t + 2000;
    }
}

static void disconnect(adapter_t *a, const char *why)
{
    log_warn("disconnected", "broker=%s reason=%s", a->setup->conf.broker, why);
    client_close(&a->client);
}

/* The broker refused an ACK as sealed to a key its source no longer holds (rotated out, or revoked since the
 * referral was signed): sealed again to the source's current key, as a new envelope; or, when we know of no
 * other key yet, it waits for the key notice. false when it is not an ACK, or its body was not kept. */
static bool seal_ack_again(adapter_t *a, const msg_id_t *id, const uint8_t *env, size_t len,
                           const char *reason)
{
    Rb__Header *h = NULL;
    if (envelope_peek_header(env, len, &h) != RB_OK)
        return false;
    int64_t now = client_clock_ms();
    const card_t *to = trust_find_name(a->trust, h->recipient, (uint64_t)(now / 1000));
    uint8_t *body = NULL, *sealed = NULL;
    size_t body_len, sealed_len;
    bool done = false, same = to != NULL && h->recipient_key_id.len == RB_KEY_ID_BYTES &&
                              memcmp(to->key_id, h->recipient_key_id.data, RB_KEY_ID_BYTES) == 0;
    if (h->kind == RB__KIND__KIND_ACK && h->ref_message_id.len == MSG_ID_BYTES &&
        astore_outbox_body(a->store, id, &body, &body_len) == RB_OK) {
        char hex[33], fresh_hex[33], key_id[2 * RB_KEY_ID_BYTES + 1] = "";
        wire_id_hex(id->bytes, hex);
        msg_id_t ref, fresh;
        memcpy(ref.bytes, h->ref_message_id.data, MSG_ID_BYTES);
        envelope_params_t p = {
            .kind = RB__KIND__KIND_ACK, .ref = &ref, .ack_status = h->ack_status, .created_ms = now};
        if (to == NULL || same) {
            done = astore_outbox_waiting(a->store, id, reason, now) == RB_OK;
            log_warn("ack_waits_for_key", "msg=%s recipient=%s", hex, h->recipient);
        } else if (envelope_seal(a->me, to, &p, body, body_len, &fresh, &sealed, &sealed_len) == RB_OK &&
                   astore_outbox_add(a->store, &fresh, RB__KIND__KIND_ACK, sealed, sealed_len, NULL, NULL,
                                     "ack", NULL, now) == RB_OK &&
                   astore_outbox_keep_body(a->store, &fresh, body, body_len) == RB_OK) {
            char why[300];
            wire_id_hex(fresh.bytes, fresh_hex);
            card_key_id_hex(to->key_id, key_id);
            snprintf(why, sizeof why, "sealed again to key %s as %s: %s", key_id, fresh_hex, reason);
            done = astore_outbox_refused(a->store, id, why, now) == RB_OK;
            log_warn("ack_sealed_again", "msg=%s as=%s recipient=%s key_id=%s", hex, fresh_hex, h->recipient,
                     key_id);
        }
    }
    free(sealed);
    free(body);
    rb__header__free_unpacked(h, NULL);
    return done;
}

/* Submits what has no receipt yet, up to CLIENT_BATCH_MAX envelopes at once (client_submit_all: one round
 * trip, and one group commit at the broker, for all of them). Their receipts and checkpoints are stored in
 * one transaction: one fsync, not two a message. A crash before it commits loses only receipts, and the
 * broker answers a resubmission with the original receipt. Returns how many were submitted. */
static int submit_outbox(adapter_t *a)
{
    msg_id_t ids[CLIENT_BATCH_MAX];
    uint8_t *envs[CLIENT_BATCH_MAX];
    size_t lens[CLIENT_BATCH_MAX], n;
    if (a->client == NULL ||
        astore_outbox_unreceipted(a->store, client_clock_ms(), CLIENT_BATCH_MAX, ids, envs, lens, &n) !=
            RB_OK ||
        n == 0)
        return 0;
    client_result_t results[CLIENT_BATCH_MAX];
    rb_err errors[CLIENT_BATCH_MAX];
    client_submit_all(a->client, (const uint8_t *const *)envs, lens, n, 5000, results, errors);
    keep_ledger(a);
    bool batch = astore_begin(a->store) == RB_OK;
    const char *lost = NULL; /* why the connection goes, if it does */
    bool deferred = false;
    for (size_t i = 0; i < n; i++) {
        client_result_t *r = &results[i];
        char hex[33];
        wire_id_hex(ids[i].bytes, hex);
        if (errors[i] == RB_ERR_IO) {
            lost = "no answer to a submission"; /* submitted again after reconnecting */
        } else if (errors[i] != RB_OK) {
            log_error("bad_receipt", "msg=%s error=%s detail=%s", hex, rb_strerror(errors[i]), r->reason);
            lost = "bad receipt";
        } else if (r->accepted) {
            astore_outbox_receipted(a->store, &ids[i], r->ledger_index, r->broker_ms, r->proof,
                                    client_clock_ms());
            log_info("receipted", "msg=%s ledger_index=%llu", hex, (unsigned long long)r->ledger_index);
        } else if (r->code == RB__ERROR_CODE__ERROR_CODE_RECIPIENT_DISABLED) {
            /* For now, and for this envelope only: the others in the batch go on. */
            astore_outbox_waiting(a->store, &ids[i], r->reason, client_clock_ms());
            log_warn("submit_waiting", "msg=%s code=%s reason=%s", hex, wire_error_name(r->code), r->reason);
        } else if (r->code == RB__ERROR_CODE__ERROR_CODE_UNKNOWN_RECIPIENT &&
                   seal_ack_again(a, &ids[i], envs[i], lens[i], r->reason)) {
            /* an ACK, sealed again to its source's current key, or waiting to learn it */
        } else if (r->code == RB__ERROR_CODE__ERROR_CODE_SESSION_CLOSED) {
            lost = SESSION_CLOSED_WHY;
        } else if (r->code == RB__ERROR_CODE__ERROR_CODE_STORAGE ||
                   r->code == RB__ERROR_CODE__ERROR_CODE_DISABLED ||
                   r->code ==
                       RB__ERROR_CODE__ERROR_CODE_UNEXPECTED) { /* the connection's state, not the envelope */
            log_warn("submit_deferred", "msg=%s code=%s reason=%s", hex, wire_error_name(r->code), r->reason);
            deferred = true;
        } else {
            char reason[300];
            snprintf(reason, sizeof reason, "%s: %s", wire_error_name(r->code), r->reason);
            astore_outbox_refused(a->store, &ids[i], reason, client_clock_ms());
            log_error("submit_refused", "msg=%s code=%s reason=%s", hex, wire_error_name(r->code), r->reason);
        }
        free(envs[i]);
    }
    if (batch && astore_commit(a->store) != RB_OK) {
        astore_rollback(a->store);
        log_error("receipts_not_stored", "count=%zu", n); /* submitted again, receipted again */
    }
    if (lost != NULL)
        disconnect(a, lost);
    return deferred ? 0 : (int)n; /* a busy or full broker: the loop waits before the next try */
}

/* Takes what the broker delivers: stored in the inbox in one transaction, and only once that is committed
 * CONFIRMed, so the broker forgets nothing we have not got on disk. */
static void receive_deliveries(adapter_t *a, int wait_ms)
{
    enum { MAX = 256 };
    msg_id_t taken[MAX];
    int n = 0;
    bool batch = false;
    for (int i = 0; a->client != NULL && i < MAX; i++) {
        uint8_t *env;
        size_t len;
        uint32_t attempt;
        if (client_receive(a->client, i == 0 ? wait_ms : 0, &env, &len, &attempt) != RB_OK)
            break;
        if (!batch)
            batch = astore_begin(a->store) == RB_OK;
        msg_id_t id;
        bool fresh = false;
        char hex[33] = "?";
        if (envelope_peek_id(env, len, &id) == RB_OK) {
            wire_id_hex(id.bytes, hex);
            if (astore_inbox_add(a->store, &id, env, len, client_clock_ms(), &fresh) == RB_OK)
                taken[n++] = id;
            else
                log_error("inbox_write_failed", "msg=%s", hex);
        }
        log_info("received", "msg=%s attempt=%u duplicate=%d", hex, attempt, !fresh);
        free(env);
    }
    if (!batch)
        return;
    if (astore_commit(a->store) != RB_OK) {
        astore_rollback(a->store);
        log_error("inbox_write_failed", "count=%d", n); /* unconfirmed: the broker delivers them again */
        return;
    }
    for (int i = 0; i < n && a->client != NULL; i++)
        client_confirm(a->client, taken[i].bytes);
}

/* --- processing the inbox -------------------------------------------------------------------------------------- */

/* Seals an ACK for the opened referral and queues it in the outbox (inside the caller's transaction). An
 * ACK claims no filing that did not happen: a duplicate says so, with the intake reference it was filed
 * under. */
static rb_err queue_ack(adapter_t *a, const envelope_opened_t *o, bool accepted, bool duplicate,
                        const char *intake_reference, const referral_problems_t *problems)
{
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    Rb__Problem items[REFERRAL_MAX_PROBLEMS], *ptrs[REFERRAL_MAX_PROBLEMS];
    ack.status = accepted ? RB__ACK_STATUS__ACK_STATUS_ACCEPTED : RB__ACK_STATUS__ACK_STATUS_REJECTED;
    ack.duplicate = accepted && duplicate; /* filed before under intake_reference: not filed again */
    ack.intake_reference = (char *)intake_reference;
    ack.received_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, (uint8_t *)o->envelope_sha256};
    /* What this side was shown of the ledger, for the source to check against what it was shown. */
    char checkpoint[NOTE_TEXT_MAX];
    if (held_checkpoint(a, checkpoint))
        ack.checkpoint = checkpoint;
    ack.decided_ms = client_clock_ms();
    for (size_t i = 0; problems != NULL && i < problems->count; i++) {
        rb__problem__init(&items[i]);
        items[i].path = (char *)problems->items[i].path;
        items[i].message = (char *)problems->items[i].message;
        ptrs[i] = &items[i];
    }
    ack.problems = ptrs;
    ack.n_problems = problems ? problems->count : 0;
    size_t body_len = rb__ack_body__get_packed_size(&ack);
    uint8_t *body = malloc(body_len ? body_len : 1), *env = NULL;
    if (body == NULL)
        return RB_ERR_NOMEM;
    rb__ack_body__pack(&ack, body);
    msg_id_t ref, id;
    memcpy(ref.bytes, o->header->message_id.data, MSG_ID_BYTES);
    envelope_params_t p = {
        .kind = RB__KIND__KIND_ACK, .ref = &ref, .ack_status = ack.status, .created_ms = ack.decided_ms};
    size_t env_len;
    /* To the source's current key, which may not be the one that signed the referral any more (rotated out,
     * revoked): the broker takes an envelope only if its recipient holds the key it is sealed to. */
    const card_t *to = trust_find_name(a->trust, o->sender.name, (uint64_t)(ack.decided_ms / 1000));
    rb_err rc = envelope_seal(a->me, to != NULL ? to : &o->sender, &p, body, body_len, &id, &env, &env_len);
    if (rc == RB_OK)
        rc = astore_outbox_add(a->store, &id, RB__KIND__KIND_ACK, env, env_len, NULL, NULL, "ack", NULL,
                               ack.decided_ms);
    if (rc == RB_OK)
        rc = astore_outbox_keep_body(a->store, &id, body, body_len);
    free(body);
    free(env);
    return rc;
}

/* A sink's referral: validate, file once per content, answer. false to stop processing for now. */
static bool handle_referral(adapter_t *a, const msg_id_t *id, const envelope_opened_t *o, const char *hex)
{
    const Rb__Referral *r = (const Rb__Referral *)o->message;
    referral_problems_t problems;
    /* Cases, and duplicates, are the verified sender's agency's: never what the body says alone. */
    content_id_t content;
    snprintf(content.agency, sizeof content.agency, "%s", o->sender.agency);
    snprintf(content.rd_number, sizeof content.rd_number, "%s", r->rd_number);
    content.revision = r->revision;
    bool valid = referral_validate(r, o->header->kind, client_clock_ms(), &problems) == RB_OK;
    char why[256];
    if (foreign_agency(r, &o->sender, why, sizeof why) != NULL) {
        add_problem(&problems, "$.agencyOri", why);
        valid = false;
    }
    char reference[64] = "", err[256] = "", listed[2048] = "";
    uint8_t body_sha[RB_HASH_BYTES], filed_sha[RB_HASH_BYTES];
    rbcrypto_sha256(o->body, o->body_len, body_sha);
    bool already = false, has_sha = false;
    if (valid && astore_inbox_find_filed(a->store, &content, &already, reference, sizeof reference, filed_sha,
                                         &has_sha) != RB_OK)
        return false;
    /* A filing of before schema 5 kept no body hash: it cannot show this is the same referral, so this one is
     * filed (the connectors key cases by agency and RD number: nothing is filed twice over). */
    if (already && !has_sha) {
        already = false;
        reference[0] = '\0';
    }
    /* The same RD number and revision with other content is no duplicate: filing it would keep half of what
     * was signed, and dropping it would lose the rest. */
    if (valid && already && memcmp(filed_sha, body_sha, RB_HASH_BYTES) != 0) {
        snprintf(why, sizeof why,
                 "revision %u of this RD number was filed before with other content (%.63s): send the change "
                 "as a supplement with a higher revision",
                 r->revision, reference);
        add_problem(&problems, "$.revision", why);
        valid = false;
        already = false;
        reference[0] = '\0';
    }
    if (valid && !already &&
        a->ops->file(a->conn, id, o->header->kind, r, &o->sender, reference, sizeof reference, err,
                     sizeof err) != RB_OK) {
        log_warn("filing_deferred", "msg=%s error=%s", hex, err); /* e.g. the intake database is locked */
        return false;
    }
    if (!valid)
        list_problems(&problems, listed, sizeof listed);
    rb_err rc = astore_begin(a->store);
    if (rc == RB_OK)
        rc = queue_ack(a, o, valid, already, reference, valid ? NULL : &problems);
    if (rc == RB_OK)
        rc = astore_inbox_done(a->store, id, valid ? (already ? "duplicate" : "filed") : "rejected", &content,
                               reference, listed, client_clock_ms());
    if (rc == RB_OK)
        rc = astore_inbox_origin(a->store, id, o->sender.name, body_sha);
    if (rc == RB_OK)
        rc = astore_commit(a->store);
    if (rc != RB_OK) {
        astore_rollback(a->store);
        log_error("inbox_update_failed", "msg=%s error=%s", hex, rb_strerror(rc));
        return false;
    }
    log_info(valid ? "filed" : "rejected", "msg=%s intake_reference=%s duplicate_content=%d problems=%zu",
             hex, reference, already, valid ? (size_t)0 : problems.count);
    return true;
}

/* Why a source takes no ACK as the answer to its referral, or NULL when it does (docs/KEYS.md, "What the
 * receiver of an ACK checks"; envelope_open has checked its signatures and that its two statuses agree).
 * *repeat: when the referral has this very answer already, the ACK recorded then as JSON (the caller's). */
static const char *ack_refusal(adapter_t *a, const msg_id_t *referral, const envelope_opened_t *o,
                               char **repeat, bool *retry, char *why, size_t cap)
{
    const Rb__AckBody *ack = (const Rb__AckBody *)o->message;
    bool found;
    uint8_t *sent = NULL, sha[RB_HASH_BYTES];
    size_t sent_len = 0;
    int answered;
    char reference[256];
    Rb__Header *h = NULL;
    char *first = NULL;
    *repeat = NULL;
    *retry = false;
    if (astore_outbox_answered(a->store, referral, &found, &sent, &sent_len, &answered, reference,
                               sizeof reference, &first) != RB_OK) {
        *retry = true; /* the store's trouble, not the ACK's */
        return snprintf(why, cap, "the adapter's store could not be read"), why;
    }
    if (found) {
        rbcrypto_sha256(sent, sent_len, sha);
        if (envelope_peek_header(sent, sent_len, &h) != RB_OK)
            h = NULL;
    }
    free(sent);
    const char *refused = NULL;
    if (!found)
        refused = "ACK for a referral this adapter did not send";
    else if (h == NULL || strcmp(h->recipient, o->sender.name) != 0) {
        snprintf(why, cap, "ACK from %s, not from the referral's recipient %s", o->sender.name,
                 h ? h->recipient : "?");
        refused = why;
    } else if (ack->received_sha256.len != RB_HASH_BYTES ||
               memcmp(ack->received_sha256.data, sha, RB_HASH_BYTES) != 0)
        refused = "ACK for other bytes than the envelope sent: received_sha256 differs";
    else if (answered != 0 &&
             (answered != (int)ack->status || strcmp(reference, ack->intake_reference) != 0)) {
        snprintf(why, cap, "a second ACK with another answer: the first (%s %.63s) stands",
                 answered == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "ACCEPTED" : "REJECTED", reference);
        refused = why;
    } else if (answered != 0) {
        *repeat = first; /* the caller's now */
        first = NULL;
    }
    free(first);
    if (h != NULL)
        rb__header__free_unpacked(h, NULL);
    return refused;
}

/* Cross-witnessing (docs/LEDGER.md): the checkpoint the acker held when it answered must be of the same
 * ledger as the one we hold; the broker proves it (PROVE). A broker that shows two parties two ledgers
 * under its one key cannot. Raises a ledger alarm when it is not (the answer itself stands: it is the
 * acker's, signed); RB_ERR_IO when it cannot be asked now (not connected, no answer): the ACK waits. */
static rb_err cross_witness(adapter_t *a, const Rb__AckBody *ack)
{
    if (ack->checkpoint[0] == '\0') /* an ACK of version 1, or an acker that holds none */
        return RB_OK;
    char why[400], reason[600], note[NOTE_TEXT_MAX];
    checkpoint_t theirs, ours;
    if (witness_open_checkpoint(&a->broker, ack->checkpoint, strlen(ack->checkpoint), &theirs, why,
                                sizeof why) != RB_OK) {
        snprintf(reason, sizeof reason, "the checkpoint the recipient held is not our broker's: %s", why);
        raise_alarm(a, reason);
        return RB_OK;
    }
    if (!held_checkpoint(a, note) ||
        witness_open_checkpoint(&a->broker, note, strlen(note), &ours, why, sizeof why) != RB_OK)
        return RB_OK; /* nothing of ours to compare with */
    const checkpoint_t *lo = theirs.size <= ours.size ? &theirs : &ours,
                       *hi = lo == &theirs ? &ours : &theirs;
    merkle_hash_t proof[PROOF_HASHES_MAX];
    size_t n = 0;
    rb_err rc = RB_OK;
    if (lo->size < hi->size) {
        if (a->client == NULL)
            return RB_ERR_IO;
        rc = client_prove(a->client, lo->size, hi->size, 5000, proof, &n, why, sizeof why);
        if (rc == RB_ERR_BAD_VERSION) {
            if (!a->unwitnessed_logged)
                log_warn("cross_witness_unavailable", "reason=\"%s\"", why);
            a->unwitnessed_logged = true;
            return RB_OK;
        }
        if (rc != RB_OK && rc != RB_ERR_USAGE) {
            /* No answer, or not a proof: asked again on later turns, but not forever: a broker that will not
             * prove what it signed is itself the evidence. */
            log_warn("cross_witness_deferred", "try=%d reason=\"%s\"", a->unproved + 1, why);
            if (++a->unproved < 5)
                return RB_ERR_IO;
            snprintf(
                reason, sizeof reason,
                "the broker did not prove the recipient's checkpoint of %llu leaves against ours of %llu "
                "in 5 tries (%s): the ACK is taken unwitnessed",
                (unsigned long long)theirs.size, (unsigned long long)ours.size, why);
            a->unproved = 0;
            raise_alarm(a, reason);
            return RB_OK;
        }
        a->unproved = 0;
    }
    if (rc == RB_ERR_USAGE ||
        merkle_verify_consistency(lo->size, hi->size, &lo->root, &hi->root, proof, n) != RB_OK) {
        snprintf(reason, sizeof reason,
                 "the recipient's checkpoint of %llu leaves and ours of %llu are not of one ledger%s%s: the "
                 "broker's "
                 "key signs two ledgers (a fork, or a broker restored or copied)",
                 (unsigned long long)theirs.size, (unsigned long long)ours.size,
                 rc == RB_ERR_USAGE ? ": " : "", rc == RB_ERR_USAGE ? why : "");
        raise_alarm(a, reason);
    }
    return RB_OK;
}

/* A source's ACK: record it on the referral and tell the connector, and only then mark it processed, so
 * that a crash in between repeats the (idempotent) telling instead of losing it. The first ACK a source
 * takes is the answer; a later one that repeats it changes nothing, one that contradicts it is refused. */
static bool handle_ack(adapter_t *a, const msg_id_t *id, const envelope_opened_t *o, const char *hex)
{
    const Rb__AckBody *ack = (const Rb__AckBody *)o->message;
    msg_id_t referral;
    memcpy(referral.bytes, o->header->ref_message_id.data, MSG_ID_BYTES);
    char ref_hex[33], why[256];
    wire_id_hex(referral.bytes, ref_hex);
    char *repeat;
    bool retry;
    const char *refused = ack_refusal(a, &referral, o, &repeat, &retry, why, sizeof why);
    if (retry) {
        log_error("ack_deferred", "msg=%s ack=%s reason=\"%s\"", ref_hex, hex, refused);
        return false;
    }
    if (refused != NULL) {
        log_security("ack_refused", "msg=%s ack=%s reason=\"%s\"", ref_hex, hex, refused);
        astore_inbox_done(a->store, id, "refused", NULL, ack->intake_reference, refused, client_clock_ms());
        return true;
    }
    /* A repeat of the answer on record was witnessed with it. */
    if (repeat == NULL && cross_witness(a, ack) != RB_OK)
        return false; /* checked again on a later turn, with a broker to ask */
    if (repeat != NULL) {
        /* The connector is told the answer on record again (it may not have been, if it failed the first
         * time): idempotent, and never the later copy's bytes. */
        rb_err told = a->ops->on_ack != NULL ? a->ops->on_ack(a->conn, &referral, repeat) : RB_OK;
        free(repeat);
        if (told != RB_OK)
            return false;
        log_info("ack_repeated", "msg=%s ack=%s", ref_hex, hex);
        astore_inbox_done(a->store, id, "ack", NULL, ack->intake_reference, "the same answer again",
                          client_clock_ms());
        return true;
    }
    char *json = NULL;
    pbjson_format(o->message, PBJSON_PRETTY, &json);
    rb_err rc = astore_outbox_acked(a->store, &referral, (int)ack->status, ack->intake_reference,
                                    json ? json : "", client_clock_ms());
    if (rc != RB_OK) {
        pbjson_free(json);
        return false; /* tried again on a later turn */
    }
    log_info("acked", "msg=%s ack=%s status=%s intake_reference=%s duplicate=%d", ref_hex, hex,
             ack->status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "ACCEPTED" : "REJECTED",
             ack->intake_reference, ack->duplicate);
    if (a->ops->on_ack != NULL && a->ops->on_ack(a->conn, &referral, json ? json : "") != RB_OK) {
        pbjson_free(json);
        return false; /* told again on a later turn */
    }
    astore_inbox_done(a->store, id, "ack", NULL, ack->intake_reference, NULL, client_clock_ms());
    pbjson_free(json);
    return true;
}

/* Applies a key notice to the trust store: a rotated key on the word of the old key (its certification,
 * checked here), a revocation on the broker's (it can only make us refuse more). */
static rb_err apply_notice(trust_t *trust, const Rb__KeyNotice *n, char *why, size_t cap)
{
    card_t card;
    card_cert_t cert;
    if (card_unpack(&card, n->card.data, n->card.len) != RB_OK)
        return snprintf(why, cap, "the notice's card does not parse"), RB_ERR_MALFORMED;
    if (n->change == RB__KEY_NOTICE__CHANGE__CHANGE_REVOKED) {
        rb_err rc = trust_revoke(trust, card.key_id, (uint64_t)(n->revoked_since_ms / 1000));
        return rc == RB_ERR_UNKNOWN_SENDER ? RB_OK : rc; /* a key we never trusted stays untrusted */
    }
    if (n->change != RB__KEY_NOTICE__CHANGE__CHANGE_ADDED ||
        card_cert_unpack(&cert, n->certification.data, n->certification.len) != RB_OK)
        return snprintf(why, cap, "not a key notice this adapter knows"), RB_ERR_MALFORMED;
    const card_t *old = trust_find_key(trust, cert.old_key_id);
    if (old == NULL)
        return snprintf(why, cap, "%s: the key certifying the new card is not in our trust store", card.name),
               RB_ERR_UNKNOWN_SENDER;
    if (card_cert_check(&cert, old, &card) != RB_OK)
        return snprintf(why, cap, "%s: the new card is not certified by its old key", card.name),
               RB_ERR_BAD_SIGNATURE;
    rb_err rc = trust_add(trust, &card);
    if (rc == RB_OK && n->old_key_retires_ms > 0)
        rc = trust_retire(trust, cert.old_key_id, (uint64_t)(n->old_key_retires_ms / 1000));
    if (rc != RB_OK)
        snprintf(why, cap, "%s: the new card conflicts with our trust store", card.name);
    return rc;
}

/* A kept notice that no longer applies (its certifying card was taken out of the trust directory) is
 * reported, not fatal: it can only add trust, never take it away, and the card it carried can be put in
 * the trust directory by hand. */
static rb_err reapply_notice(void *ctx, const uint8_t *bytes, size_t len)
{
    char why[200] = "";
    Rb__KeyNotice *n = rb__key_notice__unpack(NULL, len, bytes);
    rb_err rc = n == NULL ? RB_ERR_MALFORMED : apply_notice(ctx, n, why, sizeof why);
    if (n != NULL)
        rb__key_notice__free_unpacked(n, NULL);
    if (rc != RB_OK)
        log_security("key_notice_not_reapplied", "reason=\"%s\" error=%s", why, rb_strerror(rc));
    return RB_OK;
}

/* The broker says an admin discarded a message we sent: it is shown refused, with who and why, and no
 * longer awaits its ACK. Nothing to keep for a restart: the outbox row says it. */
static void handle_discard(adapter_t *a, const msg_id_t *id, const Rb__KeyNotice *n, const char *hex)
{
    char reason[300], sent[33] = "?";
    msg_id_t discarded;
    bool named = n->message_id.len == MSG_ID_BYTES;
    if (named) {
        memcpy(discarded.bytes, n->message_id.data, MSG_ID_BYTES);
        wire_id_hex(discarded.bytes, sent);
    }
    snprintf(reason, sizeof reason, "discarded at the broker by %.64s: %.150s (ledger index %llu)", n->admin,
             n->reason, (unsigned long long)n->ledger_index);
    if (astore_begin(a->store) != RB_OK)
        return;
    if ((named && astore_outbox_refused(a->store, &discarded, reason, client_clock_ms()) != RB_OK) ||
        astore_inbox_done(a->store, id, "notice", NULL, NULL, NULL, client_clock_ms()) != RB_OK ||
        astore_commit(a->store) != RB_OK) {
        astore_rollback(a->store);
        return;
    }
    /* The admin's reason stays out of the log (it may name a case); status --id shows it. */
    log_warn("discarded_at_broker", "msg=%s notice=%s by=%s ledger_index=%llu", sent, hex, n->admin,
             (unsigned long long)n->ledger_index);
}

static void handle_notice(adapter_t *a, const msg_id_t *id, const envelope_opened_t *o, const char *hex)
{
    char why[200] = "";
    const Rb__KeyNotice *n = (const Rb__KeyNotice *)o->message;
    if (n->change == RB__KEY_NOTICE__CHANGE__CHANGE_DISCARDED) {
        handle_discard(a, id, n, hex);
        return;
    }
    rb_err rc = apply_notice(a->trust, n, why, sizeof why);
    if (rc == RB_OK) {
        /* Kept in the same store as the inbox state, to be applied again at every start. */
        if (astore_begin(a->store) != RB_OK)
            return;
        if (astore_add_notice(a->store, o->body, o->body_len, client_clock_ms()) != RB_OK ||
            astore_inbox_done(a->store, id, "notice", NULL, NULL, NULL, client_clock_ms()) != RB_OK ||
            astore_commit(a->store) != RB_OK) {
            astore_rollback(a->store);
            return;
        }
        log_security("key_notice_applied", "msg=%s change=%s ledger_index=%llu", hex,
                     n->change == RB__KEY_NOTICE__CHANGE__CHANGE_ADDED ? "added" : "revoked",
                     (unsigned long long)n->ledger_index);
    } else {
        log_security("key_notice_refused", "msg=%s reason=\"%s\"", hex, why);
        astore_inbox_done(a->store, id, "refused", NULL, NULL, why, client_clock_ms());
    }
}

/* One pass over the inbox. What each message changes in the store is a step of one transaction over the
 * pass, committed after the connector has made its part durable (flush): a crash repeats the pass (the
 * connectors are idempotent), and the pass costs one fsync of each store, not one a message. Returns how
 * many messages it handled. */
static int process_inbox(adapter_t *a)
{
    int i = 0;
    bool batch = false;
    for (; i < 256; i++) {
        bool found;
        msg_id_t id;
        uint8_t *env;
        size_t len;
        if (astore_inbox_next(a->store, &found, &id, &env, &len) != RB_OK || !found)
            break;
        if (!batch)
            batch = astore_begin(a->store) == RB_OK;
        char hex[33];
        wire_id_hex(id.bytes, hex);
        envelope_opened_t o;
        rb_err rc = envelope_open(a->me, a->trust, env, len, &o);
        /* Sealed to one of our keys before a rotation, and delivered after it. */
        for (size_t k = 0; rc == RB_ERR_WRONG_RECIPIENT && k < a->n_previous; k++)
            rc = envelope_open(a->previous[k], a->trust, env, len, &o);
        free(env);
        if (rc == RB_ERR_WRONG_RECIPIENT) {
            /* Most likely sealed to this adapter's new key while it still runs the old one (a rotation
             * done out of order): kept, and tried again at the next start, with the keys then configured. */
            log_security("envelope_held",
                         "msg=%s reason=\"sealed to a key this adapter does not hold: configure its new "
                         "secret, and its older keys, newest first, as previous_secret, and restart\"",
                         hex);
            astore_inbox_done(a->store, &id, "held", NULL, NULL, rb_strerror(rc), client_clock_ms());
            continue;
        }
        if (rc != RB_OK) {
            log_security("envelope_refused", "msg=%s reason=%s", hex, rb_strerror(rc));
            astore_inbox_done(a->store, &id, "refused", NULL, NULL, rb_strerror(rc), client_clock_ms());
            continue;
        }
        bool go_on = true;
        bool is_ack = o.header->kind == RB__KIND__KIND_ACK;
        if (o.header->kind == RB__KIND__KIND_NOTICE) {
            handle_notice(a, &id, &o, hex);
        } else if (is_ack && a->ops->role == CARD_ROLE_SOURCE) {
            go_on = handle_ack(a, &id, &o, hex);
        } else if (!is_ack && a->ops->role == CARD_ROLE_SINK) {
            go_on = handle_referral(a, &id, &o, hex);
        } else {
            astore_inbox_done(a->store, &id, "refused", NULL, NULL, "not a kind this adapter takes",
                              client_clock_ms());
        }
        envelope_opened_clear(&o);
        if (!go_on)
            break;
    }
    if (!batch)
        return i;
    rb_err rc = a->ops->flush != NULL ? a->ops->flush(a->conn) : RB_OK;
    if (rc == RB_OK)
        rc = astore_commit(a->store);
    if (rc != RB_OK) {
        astore_rollback(a->store);
        log_warn("inbox_pass_undone", "count=%d error=%s", i, rb_strerror(rc)); /* done again next turn */
    }
    return i;
}

/* The adapter's counts in Prometheus's text format, for the node exporter's textfile collector
 * ([adapter] metrics_file; docs/OPERATIONS.md): an adapter serves no HTTP of its own. Written whole and
 * renamed into place, so a scrape never reads half of it. */
static rb_err write_metrics(adapter_t *a)
{
    astore_counts_t c;
    if (a->setup->conf.metrics_file[0] == '\0')
        return RB_OK;
    rb_err rc = astore_counts(a->store, client_clock_ms(), a->setup->conf.receipt_deadline_ms,
                              a->setup->conf.ack_deadline_ms, &c);
    if (rc != RB_OK)
        return rc;
    const char *name = identity_card(a->me)->name;
    char text[4096];
    int n = snprintf(
        text, sizeof text,
        "# HELP referral_adapter_ledger_alarms Ledger alarms kept: checkpoints that did not extend the one "
        "held, "
        "or that a recipient held and the broker could not prove consistent with ours.\n"
        "# TYPE referral_adapter_ledger_alarms counter\nreferral_adapter_ledger_alarms{adapter=\"%s\"} %d\n"
        "# HELP referral_adapter_queued Envelopes in the outbox without the broker's receipt.\n"
        "# TYPE referral_adapter_queued gauge\nreferral_adapter_queued{adapter=\"%s\"} %d\n"
        "# HELP referral_adapter_waiting Envelopes in the outbox the broker cannot take for now (their "
        "recipient is disabled), tried again.\n"
        "# TYPE referral_adapter_waiting gauge\nreferral_adapter_waiting{adapter=\"%s\"} %d\n"
        "# HELP referral_adapter_awaiting_ack Referrals receipted and not answered by an ACK.\n"
        "# TYPE referral_adapter_awaiting_ack gauge\nreferral_adapter_awaiting_ack{adapter=\"%s\"} %d\n"
        "# HELP referral_adapter_overdue Referrals past the receipt or ACK deadline.\n"
        "# TYPE referral_adapter_overdue gauge\nreferral_adapter_overdue{adapter=\"%s\",of=\"receipt\"} %d\n"
        "referral_adapter_overdue{adapter=\"%s\",of=\"ack\"} %d\n"
        "# HELP referral_adapter_inbox_waiting Envelopes received and not processed yet, or held.\n"
        "# TYPE referral_adapter_inbox_waiting gauge\nreferral_adapter_inbox_waiting{adapter=\"%s\"} %d\n"
        "# HELP referral_adapter_refused Envelopes received and refused (not openable, or not to be taken).\n"
        "# TYPE referral_adapter_refused gauge\nreferral_adapter_refused{adapter=\"%s\"} %d\n",
        name, c.ledger_alarms, name, c.queued, name, c.waiting, name, c.receipted, name, c.overdue_receipt,
        name, c.overdue_ack, name, c.inbox_waiting, name, c.refused);
    if (n <= 0 || (size_t)n >= sizeof text)
        return RB_ERR_NOMEM;
    if ((rc = keyfile_write(a->setup->conf.metrics_file, text, (size_t)n, 0644, true)) != RB_OK)
        log_error("metrics_not_written", "file=%s error=\"%s\"", a->setup->conf.metrics_file,
                  strerror(errno));
    return rc;
}

/* The overdue every 30 seconds in the log, the metrics file every 10. */
static void report_overdue(adapter_t *a)
{
    int64_t t = client_clock_ms();
    if (t >= a->next_metrics_ms) {
        a->next_metrics_ms = t + 10000;
        write_metrics(a);
    }
    if (t < a->next_report_ms)
        return;
    a->next_report_ms = t + 30000;
    astore_counts_t c;
    if (astore_counts(a->store, t, a->setup->conf.receipt_deadline_ms, a->setup->conf.ack_deadline_ms, &c) ==
            RB_OK &&
        (c.overdue_receipt > 0 || c.overdue_ack > 0))
        log_warn("overdue", "no_receipt=%d no_ack=%d", c.overdue_receipt, c.overdue_ack);
}

rb_err adapter_run(adapter_t *a, const volatile sig_atomic_t *stop)
{
    int processed = 0;
    while (!*stop) {
        ensure_connected(a);
        if (a->ops->poll != NULL)
            a->ops->poll(a->conn);
        if (a->client != NULL) {
            /* Wait for the broker only when there is nothing else to do. */
            int sent = submit_outbox(a);
            receive_deliveries(a, sent > 0 || processed > 0 ? 0 : 100);
            /* Another process uses our key (a copy of this adapter, or a thief: see the broker's log): a new
             * connection takes a session back. */
            if (a->client != NULL &&
                client_last_error(a->client, NULL) == RB__ERROR_CODE__ERROR_CODE_SESSION_CLOSED)
                disconnect(a, SESSION_CLOSED_WHY);
        } else {
            struct timespec pause = {0, 100 * 1000000L};
            nanosleep(&pause, NULL);
        }
        processed = process_inbox(a);
        report_overdue(a);
    }
    log_info("adapter_stopped", "connector=%s", a->ops->name);
    return RB_OK;
}

rb_err adapter_status(const char *config_path, const char *message_id_hex, char *err, size_t errlen)
{
    setup_t *r = NULL;
    astore_t *store = NULL;
    rb_err rc = setup_load(&r, config_path, err, errlen);
    if (rc == RB_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/adapter.db", r->conf.data);
        rc = astore_open(&store, path, true, err, errlen);
    }
    if (rc == RB_OK && message_id_hex != NULL) {
        msg_id_t id;
        char history[8192];
        bool found = false;
        if (!keyfile_unhex(message_id_hex, id.bytes, MSG_ID_BYTES)) {
            snprintf(err, errlen, "--id must be a message id of 32 hex digits");
            rc = RB_ERR_USAGE;
        } else if ((rc = astore_history(store, &id, history, sizeof history, &found)) == RB_OK && !found) {
            snprintf(err, errlen, "%s: no such message in this adapter", message_id_hex);
            rc = RB_ERR_USAGE;
        } else if (rc == RB_OK) {
            printf("message %s\n%s", message_id_hex, history);
        }
    } else if (rc == RB_OK) {
        astore_counts_t c;
        if ((rc = astore_counts(store, client_clock_ms(), r->conf.receipt_deadline_ms,
                                r->conf.ack_deadline_ms, &c)) == RB_OK)
            printf("{\"queued\": %d, \"waiting\": %d, \"waitingFor\": \"%s\", \"awaitingAck\": %d, "
                   "\"accepted\": %d, \"rejected\": %d, "
                   "\"overdueReceipt\": %d, "
                   "\"overdueAck\": %d, \"inboxWaiting\": %d, \"filed\": %d, \"refused\": %d, "
                   "\"checkpoints\": %d, \"ledgerAlarms\": %d, \"lastLedgerAlarm\": \"%s\"}\n",
                   c.queued, c.waiting, c.waiting_for, c.receipted, c.accepted, c.rejected, c.overdue_receipt,
                   c.overdue_ack, c.inbox_waiting, c.filed, c.refused, c.checkpoints, c.ledger_alarms,
                   c.last_alarm);
    }
    astore_close(&store);
    setup_free(&r);
    return rc;
}

rb_err adapter_publish(const char *config_path, const char *dir, const char *as_of, publish_report_t *report,
                       char *err, size_t errlen)
{
    setup_t *r = NULL;
    identity_t *me = NULL;
    astore_t *store = NULL;
    rb_err rc = setup_load(&r, config_path, err, errlen);
    if (rc == RB_OK && r->ops->role != CARD_ROLE_SOURCE) {
        snprintf(err, errlen, "connector %s receives referrals: only a source (the police side) publishes",
                 r->ops->name);
        rc = RB_ERR_USAGE;
    }
    if (rc == RB_OK && (rc = identity_load(&me, r->conf.secret, NULL, 0)) != RB_OK)
        snprintf(err, errlen, "%s: %s", r->conf.secret, rb_strerror(rc));
    if (rc == RB_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/adapter.db", r->conf.data);
        rc = astore_open(&store, path, true, err, errlen);
    }
    if (rc == RB_OK) {
        publish_options_t o = {.threshold = (int)r->conf.threshold, .as_of = as_of, .areas = r->conf.areas};
        rc = publish_write(store, me, &o, dir, report, err, errlen);
    }
    astore_close(&store);
    identity_free(&me);
    setup_free(&r);
    return rc;
}
