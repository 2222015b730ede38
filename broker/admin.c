/* admin.c -- admin command verification and execution (see admin.h).
 *
 * Output is JSON written with snprintf: every value printed is a card name ([a-z0-9._-]), an ORI, a role
 * word, a hex key id, a number or base64, so nothing needs escaping but the newlines of checkpoint notes. */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup.h"
#include "keyfile.h"
#include "ledger.h"
#include "rbcrypto.h"

typedef struct {
    char *buf; /* growing output */
    size_t len, cap;
    bool failed;
} out_t;

static void out_printf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if (o->buf != NULL && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *grown = realloc(o->buf, cap);
        if (grown == NULL) {
            o->failed = true;
            return;
        }
        o->buf = grown;
        o->cap = cap;
    }
}

typedef struct {
    store_t *store;
    out_t *out;
    int64_t now_ms;
    admin_connected_fn connected;
    void *ctx;
    bool first;
    bool with_counts;
} lister_t;

static rb_err list_one(void *ctx, const party_t *p)
{
    lister_t *l = ctx;
    char key_id[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(p->card.key_id, key_id);
    out_printf(
        l->out,
        "%s\n  {\"name\": \"%s\", \"role\": \"%s\", \"agency\": \"%s\", \"keyId\": \"%s\", \"enabled\": %s",
        l->first ? "" : ",", p->card.name, card_role_name((card_role)p->card.role), p->card.agency, key_id,
        p->enabled ? "true" : "false");
    l->first = false;
    if (l->with_counts && p->card.role != CARD_ROLE_ADMIN) {
        party_counts_t c;
        rb_err rc = store_counts(l->store, p->card.name, l->now_ms, &c);
        if (rc != RB_OK)
            return rc;
        out_printf(l->out,
                   ", \"connected\": %s, \"queued\": %d, \"inFlight\": %d, \"awaitingAck\": %d, "
                   "\"oldestAwaitingAckMs\": %lld, \"deadLetters\": %d",
                   l->connected && l->connected(l->ctx, p->card.name) ? "true" : "false", c.queued,
                   c.in_flight, c.awaiting_ack, (long long)c.oldest_awaiting_ms, c.dead);
    }
    out_printf(l->out, "}");
    return RB_OK;
}

static rb_err list(store_t *store, out_t *out, int64_t now_ms, bool with_counts, admin_connected_fn connected,
                   void *ctx)
{
    lister_t l = {store, out, now_ms, connected, ctx, true, with_counts};
    out_printf(out, "[");
    rb_err rc = store_each_party(store, list_one, &l);
    out_printf(out, "\n]");
    return rc;
}

typedef struct {
    out_t *out;
    bool first;
    uint64_t from, to; /* the checkpoints wanted: sizes in [from, to] */
} leaves_out_t;

static rb_err leaf_out(void *ctx, uint64_t index, const uint8_t *leaf, size_t len)
{
    (void)index;
    leaves_out_t *lo = ctx;
    char *b64 = keyfile_base64(leaf, len);
    if (b64 == NULL)
        return RB_ERR_NOMEM;
    out_printf(lo->out, "%s\"%s\"", lo->first ? "" : ", ", b64);
    lo->first = false;
    free(b64);
    return RB_OK;
}

static rb_err checkpoint_out(void *ctx, uint64_t size, int64_t at_ms, const char *note)
{
    (void)at_ms;
    leaves_out_t *lo = ctx;
    if (size < lo->from || size > lo->to)
        return RB_OK;
    /* A note is printable ASCII and newlines (signed-note), so only the newlines need escaping. */
    out_printf(lo->out, "%s\"", lo->first ? "" : ", ");
    for (const char *p = note; *p; p++)
        out_printf(lo->out, *p == '\n' ? "\\n" : *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
    out_printf(lo->out, "\"");
    lo->first = false;
    return RB_OK;
}

/* "ledger read FROM COUNT UNTIL": up to COUNT leaves from FROM, never past UNTIL (0: the latest
 * checkpoint's size), with the checkpoints whose size falls in the page: an export, page by page. */
static rb_err read_ledger(store_t *store, char **argv, out_t *out)
{
    char *end;
    errno = 0;
    uint64_t from = strtoull(argv[0], &end, 10), count = strtoull(argv[1], NULL, 10),
             until = strtoull(argv[2], NULL, 10);
    if (errno != 0 || *end != '\0' || count == 0 || count > 1000)
        return out_printf(out, "ledger read FROM COUNT UNTIL: COUNT from 1 to 1000"), RB_ERR_USAGE;
    ledger_t *l = store_ledger(store);
    char note[NOTE_TEXT_MAX];
    bool found;
    uint64_t latest = 0;
    rb_err rc = ledger_latest_checkpoint(l, UINT64_MAX, &found, note, &latest);
    if (rc != RB_OK)
        return rc;
    if (until == 0 || until > latest)
        until = latest;
    uint64_t to = from + count < until ? from + count : until;
    if (from > to)
        return out_printf(out, "ledger read: FROM beyond the checkpoint's %" PRIu64 " leaves", until),
               RB_ERR_USAGE;
    out_printf(out, "{\"until\": %" PRIu64 ", \"from\": %" PRIu64 ", \"leaves\": [", until, from);
    leaves_out_t lo = {out, true, from == 0 ? 0 : from + 1, to};
    if ((rc = ledger_each_leaf(l, from, to, leaf_out, &lo)) != RB_OK)
        return rc;
    out_printf(out, "], \"checkpoints\": [");
    lo.first = true;
    rc = ledger_each_checkpoint(l, checkpoint_out, &lo);
    out_printf(out, "]}");
    return rc;
}

/* Runs one command inside the caller's transaction. */
static rb_err execute(store_t *store, const Rb__AdminCommand *cmd, int64_t now_ms,
                      admin_connected_fn connected, void *ctx, out_t *out, bool *changed)
{
    const char *c = cmd->command;
    size_t argc = cmd->n_args;
    char **argv = cmd->args;
    if (strcmp(c, "adapter add") == 0 && argc == 1) {
        card_t card;
        rb_err rc = card_from_text(&card, argv[0], strlen(argv[0]));
        if (rc != RB_OK)
            return out_printf(out, "card refused: %s", rb_strerror(rc)), rc;
        if (card.role == CARD_ROLE_BROKER)
            return out_printf(out, "a broker card cannot be registered as a party"), RB_ERR_USAGE;
        if ((rc = card_valid_at(&card, (uint64_t)(now_ms / 1000))) != RB_OK)
            return out_printf(out, "card refused: %s", rb_strerror(rc)), rc;
        if ((rc = store_add_party(store, &card, now_ms)) != RB_OK)
            return out_printf(out, "%s: name or key already registered", card.name), rc;
        *changed = true;
        return out_printf(out, "{\"added\": \"%s\", \"role\": \"%s\"}", card.name,
                          card_role_name((card_role)card.role)),
               RB_OK;
    }
    if (strcmp(c, "adapter list") == 0 && argc == 0)
        return list(store, out, now_ms, false, NULL, NULL);
    if (strcmp(c, "status") == 0 && argc == 0)
        return list(store, out, now_ms, true, connected, ctx);
    if ((strcmp(c, "adapter disable") == 0 || strcmp(c, "adapter enable") == 0) && argc == 1) {
        bool enable = strcmp(c, "adapter enable") == 0;
        rb_err rc = store_set_enabled(store, argv[0], enable);
        if (rc != RB_OK)
            return out_printf(out, "%s: no such party", argv[0]), rc;
        *changed = true;
        return out_printf(out, "{\"%s\": \"%s\"}", enable ? "enabled" : "disabled", argv[0]), RB_OK;
    }
    if (strcmp(c, "key revoke") == 0 && argc == 2) {
        uint8_t key_id[RB_KEY_ID_BYTES];
        if (!keyfile_unhex(argv[0], key_id, sizeof key_id))
            return out_printf(out, "a key id is 16 hex digits"), RB_ERR_USAGE;
        if (argv[1][0] == '\0')
            return out_printf(out, "a revocation needs a reason"), RB_ERR_USAGE;
        rb_err rc = store_revoke_key(store, key_id, argv[1], now_ms);
        if (rc != RB_OK)
            return out_printf(out, "%s: no registered key with this id", argv[0]), rc;
        *changed = true;
        return out_printf(out, "{\"revoked\": \"%s\"}", argv[0]), RB_OK;
    }
    if (strcmp(c, "dead-letters requeue") == 0 && argc == 1) {
        uint8_t id[MSG_ID_BYTES];
        if (strlen(argv[0]) != 2 * MSG_ID_BYTES || !keyfile_unhex(argv[0], id, MSG_ID_BYTES))
            return out_printf(out, "a message id is 32 hex digits"), RB_ERR_USAGE;
        rb_err rc = store_requeue(store, id, now_ms);
        if (rc != RB_OK)
            return out_printf(out, "%s: not a dead letter", argv[0]), rc;
        return out_printf(out, "{\"requeued\": \"%s\"}", argv[0]), RB_OK;
    }
    if (strcmp(c, "ledger read") == 0 && argc == 3)
        return read_ledger(store, argv, out);
    if (strncmp(c, "backup ", 7) == 0) {
        char *text;
        rb_err rc = backup_command(store, c, argv, argc, now_ms, &text);
        out_printf(out, "%s", text ? text : "out of memory");
        free(text);
        return rc;
    }
    out_printf(out, "unknown command or wrong arguments: %s", c);
    return RB_ERR_USAGE;
}

/* Ledgers the command exactly as the admin signed it, with the signature and the outcome. */
static rb_err record(store_t *store, const party_t *admin, const char *peer, const Rb__AdminRequest *req,
                     const Rb__AdminCommand *cmd, int64_t now_ms, const char *outcome, const char *reason)
{
    char detail[256];
    /* The first argument names what the command acts on; a card's text is in the command itself. */
    const char *arg = cmd && cmd->n_args > 0 && strcmp(cmd->command, "adapter add") != 0 ? cmd->args[0] : "";
    snprintf(detail, sizeof detail, "command=\"%.40s\" arg=\"%.60s\" reason=\"%.120s\"",
             cmd ? cmd->command : "?", arg, reason);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = "admin";
    e.party = (char *)admin->card.name;
    e.agency = (char *)admin->card.agency;
    e.peer = (char *)peer;
    e.outcome = (char *)outcome;
    e.detail = detail;
    if (req->signed_.len <= ADMIN_MAX_BYTES) {
        e.admin_command = req->signed_;
        e.admin_signature = req->signature;
    }
    return store_event(store, &e, NULL);
}

bool admin_execute(store_t *store, const party_t *admin, const char *peer, const Rb__AdminRequest *req,
                   int64_t now_ms, admin_connected_fn connected, void *ctx, char **output, bool *changed)
{
    out_t out = {0};
    *changed = false;
    Rb__AdminCommand *cmd = NULL;
    rb_err rc = RB_OK;
    if (req->signed_.len > ADMIN_MAX_BYTES) {
        out_printf(&out, "command over %d bytes", ADMIN_MAX_BYTES);
        rc = RB_ERR_TOO_BIG;
    } else if (req->signature.len != RB_SIG_BYTES ||
               rbcrypto_verify(RB_DOMAIN_ADMIN, req->signed_.data, req->signed_.len, req->signature.data,
                               admin->card.sign_pk) != RB_OK) {
        out_printf(&out, "bad signature on the command");
        rc = RB_ERR_BAD_SIGNATURE;
    } else if ((cmd = rb__admin_command__unpack(NULL, req->signed_.len, req->signed_.data)) == NULL) {
        out_printf(&out, "not an admin command");
        rc = RB_ERR_MALFORMED;
    } else if (card_valid_at(&admin->card, (uint64_t)(now_ms / 1000)) != RB_OK) {
        out_printf(&out, "the admin's key has expired or is not yet valid");
        rc = RB_ERR_KEY_EXPIRED;
    } else if (cmd->issued_ms < now_ms - ADMIN_MAX_AGE_MS || cmd->issued_ms > now_ms + ADMIN_MAX_AGE_MS) {
        out_printf(&out, "command too old or from the future: check the clocks");
        rc = RB_ERR_KEY_EXPIRED;
    }
    bool in_tx = rc == RB_OK && (rc = store_begin(store)) == RB_OK;
    if (rc == RB_OK &&
        (cmd->nonce.len != 16 || store_use_nonce(store, cmd->nonce.data, cmd->nonce.len, now_ms) != RB_OK)) {
        out_printf(&out, "command replayed (nonce already used)");
        rc = RB_ERR_CONFLICT;
    }
    /* The command is ledgered before what it does (a registration, a revocation), in one transaction. */
    if (rc == RB_OK && (rc = record(store, admin, peer, req, cmd, now_ms, "ok", "")) == RB_OK &&
        (rc = execute(store, cmd, now_ms, connected, ctx, &out, changed)) == RB_OK) {
        if ((rc = store_commit(store)) != RB_OK)
            out.len = 0; /* the output of a change that did not happen */
    }
    if (rc != RB_OK) {
        if (in_tx)
            store_rollback(store);
        *changed = false;
        if (out.len == 0)
            out_printf(&out, "the broker could not store the change");
        /* A refused command is recorded too, in a transaction of its own. */
        if (store_begin(store) == RB_OK) {
            if (record(store, admin, peer, req, cmd, now_ms, "refused", out.buf ? out.buf : "") != RB_OK ||
                store_commit(store) != RB_OK)
                store_rollback(store);
        }
    }
    if (cmd != NULL)
        rb__admin_command__free_unpacked(cmd, NULL);
    if (out.failed) {
        free(out.buf);
        out.buf = NULL;
    }
    *output = out.buf;
    return rc == RB_OK;
}

rb_err admin_sign(const identity_t *admin, const Rb__AdminCommand *cmd, Rb__AdminRequest *req)
{
    rb__admin_request__init(req);
    size_t len = rb__admin_command__get_packed_size(cmd);
    uint8_t *bytes = malloc(len ? len : 1), *sig = malloc(RB_SIG_BYTES);
    if (bytes == NULL || sig == NULL) {
        free(bytes);
        free(sig);
        return RB_ERR_NOMEM;
    }
    rb__admin_command__pack(cmd, bytes);
    req->signed_ = (ProtobufCBinaryData){len, bytes};
    req->signature = (ProtobufCBinaryData){RB_SIG_BYTES, sig};
    rb_err rc = rbcrypto_sign(RB_DOMAIN_ADMIN, bytes, len, identity_sign_sk(admin), sig);
    if (rc != RB_OK)
        admin_request_clear(req);
    return rc;
}

void admin_request_clear(Rb__AdminRequest *req)
{
    free(req->signed_.data);
    free(req->signature.data);
    rb__admin_request__init(req);
}
