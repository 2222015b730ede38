/* admin.c -- admin command verification and execution (see admin.h).
 *
 * Output is JSON written with snprintf: names ([a-z0-9._-]), ORIs, role words, hex ids, numbers and
 * base64 need no escaping; free text (reasons, ledger details, checkpoint notes) goes through out_string. */
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
#include "log.h"
#include "out.h"
#include "rbcrypto.h"

typedef struct {
    store_t *store;
    out_t *out;
    int64_t now_ms;
    const admin_env_t *env;
    bool first;
    bool with_counts;
    party_counts_t total; /* status: the sums over every adapter */
    int connected;
    out_t attention; /* status: what needs someone, as JSON strings separated by commas */
} lister_t;

/* One reason status needs attention, for the operator to read and act on. */
static void attention(lister_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void attention(lister_t *l, const char *fmt, ...)
{
    char line[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    out_printf(&l->attention, "%s", l->attention.len > 0 ? ", " : "");
    out_string(&l->attention, line);
}

/* A party's keys run out: no key left, or the last ends within the warning time. */
static void keys_attention(lister_t *l, const char *who, int64_t end_ms)
{
    int64_t left = end_ms - l->now_ms;
    if (left <= 0)
        attention(l, "%s: no valid key (every key expired, retired or revoked): register a new one", who);
    else if (left <= l->env->key_expiry_warn_ms)
        attention(l, "%s: its key expires in %lld days: rotate it (OPERATIONS.md, rotating a key)", who,
                  (long long)(left / 86400000));
}

/* What in an adapter's counts needs someone: each names the adapter and the command to look further. */
static void adapter_attention(lister_t *l, const party_t *p, const party_counts_t *c, bool connected)
{
    const char *name = p->card.name;
    if (c->dead > 0)
        attention(l, "%s: %d dead letters (dead-letters list)", name, c->dead);
    if (c->quarantined > 0)
        attention(l, "%s: %d messages from it quarantined (quarantine list)", name, c->quarantined);
    if (c->overdue > 0)
        attention(l, "%s: %d referrals confirmed over ack_overdue_ms ago and not answered", name, c->overdue);
    if (p->enabled && !connected && c->queued + c->in_flight > 0)
        attention(l, "%s: %d messages wait for it and it is not connected", name, c->queued + c->in_flight);
    if (p->enabled)
        keys_attention(l, name, c->keys_end_ms);
}

static void counts_out(out_t *o, const party_counts_t *c)
{
    out_printf(o,
               "\"queued\": %d, \"inFlight\": %d, \"awaitingAck\": %d, \"oldestAwaitingAckMs\": %lld, "
               "\"overdueAcks\": %d, \"deadLetters\": %d, \"quarantined\": %d, \"receiptsPerMinute\": %d, "
               "\"keysEndMs\": %lld",
               c->queued, c->in_flight, c->awaiting_ack, (long long)c->oldest_awaiting_ms, c->overdue,
               c->dead, c->quarantined, c->receipts_last_minute, (long long)c->keys_end_ms);
}

static rb_err list_one(void *ctx, const party_t *p)
{
    lister_t *l = ctx;
    if (l->with_counts && p->card.role == CARD_ROLE_ADMIN)
        return RB_OK;
    char key_id[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(p->card.key_id, key_id);
    out_printf(l->out,
               "%s\n  {\"name\": \"%s\", \"role\": \"%s\", \"agency\": \"%s\", \"keyId\": \"%s\", "
               "\"enabled\": %s",
               l->first ? "" : ",", p->card.name, card_role_name((card_role)p->card.role), p->card.agency,
               key_id, p->enabled ? "true" : "false");
    l->first = false;
    if (!l->with_counts) {
        int64_t end;
        rb_err rc = store_keys_end(l->store, p->card.name, &end, NULL);
        if (rc != RB_OK)
            return rc;
        out_printf(l->out, ", \"keyExpiresMs\": %lld, \"keysEndMs\": %lld", (long long)p->card.expires * 1000,
                   (long long)end);
    }
    if (l->with_counts) {
        party_counts_t c;
        rb_err rc = store_counts(l->store, p->card.name, l->now_ms, l->env->ack_overdue_ms, &c);
        if (rc != RB_OK)
            return rc;
        bool connected = l->env->connected && l->env->connected(l->env->ctx, p->card.name);
        out_printf(l->out, ", \"connected\": %s, ", connected ? "true" : "false");
        counts_out(l->out, &c);
        adapter_attention(l, p, &c, connected);
        party_counts_t *t = &l->total;
        t->queued += c.queued;
        t->in_flight += c.in_flight;
        t->awaiting_ack += c.awaiting_ack;
        t->overdue += c.overdue;
        t->dead += c.dead;
        t->quarantined += c.quarantined;
        t->receipts_last_minute += c.receipts_last_minute;
        if (c.oldest_awaiting_ms > t->oldest_awaiting_ms)
            t->oldest_awaiting_ms = c.oldest_awaiting_ms;
        if (p->enabled && (t->keys_end_ms == 0 || c.keys_end_ms < t->keys_end_ms))
            t->keys_end_ms = c.keys_end_ms; /* the nearest */
        l->connected += connected;
    }
    out_printf(l->out, "}");
    return RB_OK;
}

/* "adapter list": every party with its newest key; "status": every adapter with its queues, and totals. */
static rb_err list(store_t *store, out_t *out, int64_t now_ms, bool with_counts, const admin_env_t *env)
{
    lister_t l = {
        .store = store, .out = out, .now_ms = now_ms, .env = env, .first = true, .with_counts = with_counts};
    out_printf(out, with_counts ? "{\"adapters\": [" : "[");
    rb_err rc = store_each_party(store, list_one, &l);
    out_printf(out, "\n]");
    if (with_counts) {
        out_printf(out, ",\n\"total\": {\"connected\": %d, ", l.connected);
        counts_out(out, &l.total);
        const card_t *me = env->broker_card;
        char key_id[2 * RB_KEY_ID_BYTES + 1];
        card_key_id_hex(me->key_id, key_id);
        out_printf(out, "},\n\"broker\": {\"name\": \"%s\", \"keyId\": \"%s\", \"keyExpiresMs\": %lld}",
                   me->name, key_id, (long long)me->expires * 1000);
        keys_attention(&l, me->name, (int64_t)me->expires * 1000);
        out_printf(out, ",\n\"ledgerSize\": %llu, \"atMs\": %lld,\n\"attention\": [%s]}",
                   (unsigned long long)ledger_size(store_ledger(store)), (long long)now_ms,
                   l.attention.buf != NULL ? l.attention.buf : "");
        if (l.attention.failed)
            rc = RB_ERR_NOMEM;
        free(l.attention.buf);
    }
    return rc;
}

/* Whether a moment was crossed in (since_ms, now_ms]: a key registered after it crosses it when it is
 * registered (known_ms). */
static bool crossed(int64_t moment, int64_t known_ms, int64_t since_ms, int64_t now_ms)
{
    int64_t at = moment > known_ms ? moment : known_ms;
    return moment <= now_ms && at > since_ms;
}

/* One party's (or the broker's) keys against the warning times: the latest of the moments end - warn_ms,
 * end - final_ms and end crossed in (since_ms, now_ms] is logged. */
static void warn_keys(const char *who, int64_t end_ms, int64_t known_ms, int64_t since_ms, int64_t now_ms,
                      int64_t warn_ms, int64_t final_ms)
{
    if (end_ms <= now_ms) {
        if (crossed(end_ms, known_ms, since_ms, now_ms))
            log_error("key_expired", "party=%s detail=\"no valid key left: register a new one\"", who);
    } else if (crossed(end_ms - final_ms, known_ms, since_ms, now_ms) ||
               (end_ms - final_ms > now_ms && crossed(end_ms - warn_ms, known_ms, since_ms, now_ms))) {
        log_warn("key_expiring", "party=%s days_left=%lld warning_days=%lld detail=\"rotate it\"", who,
                 (long long)((end_ms - now_ms) / 86400000),
                 (long long)((end_ms - final_ms <= now_ms ? final_ms : warn_ms) / 86400000));
    }
}

typedef struct {
    store_t *store;
    int64_t since_ms, now_ms, warn_ms, final_ms;
} key_warner_t;

static rb_err warn_party(void *ctx, const party_t *p)
{
    key_warner_t *w = ctx;
    int64_t end, added;
    rb_err rc = p->enabled ? store_keys_end(w->store, p->card.name, &end, &added) : RB_OK;
    if (rc == RB_OK && p->enabled)
        warn_keys(p->card.name, end, added, w->since_ms, w->now_ms, w->warn_ms, w->final_ms);
    return rc;
}

void admin_warn_keys(store_t *store, const card_t *broker, int64_t since_ms, int64_t now_ms, int64_t warn_ms,
                     int64_t final_ms)
{
    key_warner_t w = {store, since_ms, now_ms, warn_ms, final_ms};
    warn_keys(broker->name, (int64_t)broker->expires * 1000, 0, since_ms, now_ms, warn_ms, final_ms);
    rb_err rc = store_each_party(store, warn_party, &w);
    if (rc != RB_OK)
        log_warn("key_check_failed", "error=\"%s\"", rb_strerror(rc));
}

static bool parse_message_id(const char *hex, uint8_t id[MSG_ID_BYTES], out_t *out)
{
    if (strlen(hex) == 2 * MSG_ID_BYTES && keyfile_unhex(hex, id, MSG_ID_BYTES))
        return true;
    out_printf(out, "a message id is 32 hex digits");
    return false;
}

static void message_out(out_t *o, const stored_msg_t *m)
{
    char id[33], key[17], sha[65];
    keyfile_hex(m->message_id, MSG_ID_BYTES, id);
    keyfile_hex(m->sender_key_id, RB_KEY_ID_BYTES, key);
    keyfile_hex(m->envelope_sha256, RB_HASH_BYTES, sha);
    out_printf(o,
               "{\"id\": \"%s\", \"kind\": %d, \"sender\": \"%s\", \"senderKeyId\": \"%s\", "
               "\"recipient\": \"%s\", "
               "\"state\": \"%s\", \"attempts\": %d, \"receivedMs\": %lld, \"confirmedMs\": %lld, "
               "\"ackStatus\": %d, \"ackedMs\": %lld, \"ledgerIndex\": %llu, \"envelopeSha256\": \"%s\", "
               "\"envelopeBytes\": %zu, \"reason\": ",
               id, m->kind, m->sender, key, m->recipient, m->state, m->attempts, (long long)m->received_ms,
               (long long)m->confirmed_ms, m->ack_status, (long long)m->acked_ms,
               (unsigned long long)m->submit_index, sha, m->envelope_bytes);
    out_string(o, m->reason);
    out_printf(o, "}");
}

typedef struct {
    out_t *out;
    ledger_t *ledger;
    bool first;
    uint8_t (*ids)[MSG_ID_BYTES]; /* "requeue all": the ids collected, count of them */
    int count;
} messages_out_t;

#define REQUEUE_ALL_MAX 1000 /* per command: a larger backlog takes several, each ledgered */

static rb_err message_list_one(void *ctx, const stored_msg_t *m)
{
    messages_out_t *mo = ctx;
    out_printf(mo->out, "%s\n  ", mo->first ? "" : ",");
    mo->first = false;
    message_out(mo->out, m);
    return RB_OK;
}

/* One leaf of a message's history: when, what, who, outcome, detail; never content (leaves hold none). */
static rb_err history_one(void *ctx, uint64_t index)
{
    messages_out_t *mo = ctx;
    uint8_t *leaf;
    size_t len;
    Rb__LedgerEvent *e;
    rb_err rc = ledger_leaf(mo->ledger, index, &leaf, &len);
    if (rc != RB_OK)
        return rc;
    rc = ledger_parse_leaf(leaf, len, &e);
    free(leaf);
    if (rc != RB_OK)
        return rc;
    out_printf(
        mo->out,
        "%s\n    {\"index\": %llu, \"atMs\": %lld, \"action\": \"%s\", \"party\": \"%s\", \"outcome\": ",
        mo->first ? "" : ",", (unsigned long long)index, (long long)e->at_ms, e->action, e->party);
    out_string(mo->out, e->outcome);
    out_printf(mo->out, ", \"detail\": ");
    out_string(mo->out, e->detail);
    out_printf(mo->out, "}");
    mo->first = false;
    rb__ledger_event__free_unpacked(e, NULL);
    return RB_OK;
}

static rb_err show_message(store_t *store, const char *hex, out_t *out)
{
    uint8_t id[MSG_ID_BYTES];
    bool found;
    stored_msg_t m;
    if (!parse_message_id(hex, id, out))
        return RB_ERR_USAGE;
    rb_err rc = store_find_message(store, id, &found, &m);
    if (rc == RB_OK && !found)
        return out_printf(out, "%s: no such message", hex), RB_ERR_USAGE;
    if (rc != RB_OK)
        return rc;
    out_printf(out, "{\"message\": ");
    message_out(out, &m);
    out_printf(out, ",\n \"history\": [");
    messages_out_t mo = {.out = out, .ledger = store_ledger(store), .first = true};
    rc = store_message_leaves(store, id, history_one, &mo);
    out_printf(out, "\n]}");
    return rc;
}

/* Ids first, changes after: the statement listing them is finished before any update. */
static rb_err collect_id(void *ctx, const stored_msg_t *m)
{
    messages_out_t *mo = ctx;
    if (mo->count < REQUEUE_ALL_MAX)
        memcpy(mo->ids[mo->count++], m->message_id, MSG_ID_BYTES);
    return RB_OK;
}

/* "dead-letters ..." and "quarantine ...": list, requeue (release) one or all, discard one with a reason. */
static rb_err held_messages(store_t *store, const char *state, const char *verb, size_t argc, char **argv,
                            const card_t *by, int64_t now_ms, out_t *out)
{
    messages_out_t mo = {.out = out, .first = true};
    if (strcmp(verb, "list") == 0 && argc == 0) {
        out_printf(out, "[");
        rb_err rc = store_each_message(store, state, message_list_one, &mo);
        out_printf(out, "\n]");
        return rc;
    }
    bool requeue = strcmp(verb, "requeue") == 0 || strcmp(verb, "release") == 0;
    const char *done = ledger_actions[ledger_transition(message_state_of(state), STATE_QUEUED)].name;
    if (requeue && argc == 1 && strcmp(argv[0], "all") == 0) {
        if ((mo.ids = malloc(REQUEUE_ALL_MAX * sizeof *mo.ids)) == NULL)
            return RB_ERR_NOMEM;
        rb_err rc = store_each_message(store, state, collect_id, &mo);
        for (int i = 0; rc == RB_OK && i < mo.count; i++)
            rc = store_requeue(store, mo.ids[i], state, by, now_ms);
        free(mo.ids);
        return rc == RB_OK ? out_printf(out, "{\"%s\": %d}", done, mo.count), RB_OK : rc;
    }
    uint8_t id[MSG_ID_BYTES];
    if ((requeue && argc != 1) || (strcmp(verb, "discard") == 0 && argc != 2) ||
        (!requeue && strcmp(verb, "discard") != 0))
        return out_printf(out, "unknown command or wrong arguments"), RB_ERR_USAGE;
    if (!parse_message_id(argv[0], id, out))
        return RB_ERR_USAGE;
    if (!requeue && argv[1][0] == '\0')
        return out_printf(out, "a discard needs a reason"), RB_ERR_USAGE;
    rb_err rc = requeue ? store_requeue(store, id, state, by, now_ms)
                        : store_discard(store, id, state, argv[1], by, now_ms);
    if (rc == RB_ERR_USAGE)
        return out_printf(out, "%s: not %s", argv[0],
                          strcmp(state, STATE_NAME(DEAD)) == 0 ? "a dead letter" : "quarantined"),
               rc;
    if (rc == RB_ERR_NOT_ALLOWED)
        return out_printf(out,
                          "%s: an ACK or a key notice is never discarded (its recipient needs it): "
                          "requeue it",
                          argv[0]),
               rc;
    if (rc != RB_OK)
        return rc;
    return out_printf(out, "{\"%s\": \"%s\"}", requeue ? done : ACTION_NAME(DISCARDED), argv[0]), RB_OK;
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
    out_printf(lo->out, "%s", lo->first ? "" : ", ");
    out_string(lo->out, note);
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

/* "key add CARD CERT": a party's new key, certified by one of its keys that is valid now. */
static rb_err add_key(store_t *store, char **argv, int64_t now_ms, const admin_env_t *env, out_t *out)
{
    card_t card;
    card_cert_t cert;
    party_t old;
    uint64_t t = (uint64_t)(now_ms / 1000), leaf;
    rb_err rc = card_from_text(&card, argv[0], strlen(argv[0]));
    if (rc == RB_OK)
        rc = card_valid_at(&card, t);
    if (rc != RB_OK)
        return out_printf(out, "card refused: %s", rb_strerror(rc)), rc;
    if ((rc = card_cert_from_text(&cert, argv[1], strlen(argv[1]))) != RB_OK)
        return out_printf(out, "certification refused: %s", rb_strerror(rc)), rc;
    if (store_find_key(store, cert.old_key_id, &old) != RB_OK || strcmp(old.card.name, card.name) != 0)
        return out_printf(out, "%s: the certifying key is not one of this party's registered keys",
                          card.name),
               RB_ERR_UNKNOWN_SENDER;
    if (store_key_revoked(store, old.card.key_id) || card_valid_at(&old.card, t) != RB_OK ||
        (old.retires_ms != 0 && old.retires_ms <= now_ms))
        return out_printf(out,
                          "%s: the certifying key is revoked or no longer valid: certify the new card "
                          "with a valid key of the party; a party left without one is registered again "
                          "under a new name (adapter add)",
                          card.name),
               RB_ERR_KEY_REVOKED;
    if (card_cert_check(&cert, &old.card, &card) != RB_OK)
        return out_printf(out, "%s: the certification is not the old key's signature of this card",
                          card.name),
               RB_ERR_BAD_SIGNATURE;
    int64_t retires = now_ms + env->rotation_overlap_ms;
    if ((rc = store_add_key(store, &card, &cert, retires, now_ms, &leaf)) != RB_OK)
        return out_printf(out, "%s: this key is registered already", card.name), rc;
    /* Adapters learn of adapters' keys; nobody but the broker needs to know an admin's. */
    if (card.role != CARD_ROLE_ADMIN && (rc = store_add_notice(store, leaf)) != RB_OK)
        return rc;
    char new_id[17], old_id[17];
    card_key_id_hex(card.key_id, new_id);
    card_key_id_hex(old.card.key_id, old_id);
    return out_printf(
               out, "{\"added\": \"%s\", \"party\": \"%s\", \"replaces\": \"%s\", \"oldKeyRetiresMs\": %lld}",
               new_id, card.name, old_id, (long long)retires),
           RB_OK;
}

/* "key revoke KEYID REASON SINCE_MS": refused from SINCE_MS (a compromise; 0: now) or from now. */
static rb_err revoke_key(store_t *store, char **argv, const card_t *by, int64_t now_ms, out_t *out)
{
    uint8_t key_id[RB_KEY_ID_BYTES];
    const char *reason = argv[1];
    char *end;
    errno = 0;
    long long since = strtoll(argv[2], &end, 10);
    bool compromised = strcmp(reason, "compromised") == 0;
    if (strlen(argv[0]) != 2 * RB_KEY_ID_BYTES || !keyfile_unhex(argv[0], key_id, sizeof key_id))
        return out_printf(out, "a key id is 16 hex digits"), RB_ERR_USAGE;
    if (!compromised && strcmp(reason, "superseded") != 0 && strcmp(reason, "retired") != 0)
        return out_printf(out, "the reason is compromised, superseded or retired"), RB_ERR_USAGE;
    if (errno != 0 || *end != '\0' || since < 0 || since > now_ms || (!compromised && since != 0))
        return out_printf(out, "--since is a time before now, and only for a compromised key"), RB_ERR_USAGE;
    if (since == 0)
        since = now_ms;
    party_t owner;
    uint64_t leaf;
    rb_err rc = store_find_key(store, key_id, &owner);
    if (rc == RB_OK)
        rc = store_revoke_key(store, key_id, reason, since, now_ms, &leaf);
    if (rc == RB_ERR_UNKNOWN_SENDER)
        return out_printf(out, "%s: no registered key with this id", argv[0]), rc;
    int held = 0;
    char why[80];
    snprintf(why, sizeof why, "signing key %s compromised", argv[0]);
    if (rc == RB_OK && compromised)
        rc = store_quarantine(store, key_id, since, why, by, now_ms, &held);
    if (rc == RB_OK && owner.card.role != CARD_ROLE_ADMIN)
        rc = store_add_notice(store, leaf);
    if (rc != RB_OK)
        return rc;
    return out_printf(out,
                      "{\"revoked\": \"%s\", \"party\": \"%s\", \"reason\": \"%s\", \"sinceMs\": %lld, "
                      "\"quarantined\": %d}",
                      argv[0], owner.card.name, reason, since, held),
           RB_OK;
}

/* Runs one command inside the caller's transaction. */
static rb_err execute(store_t *store, const Rb__AdminCommand *cmd, const card_t *by, int64_t now_ms,
                      const admin_env_t *env, out_t *out, bool *changed)
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
            return out_printf(out, "%s: name or key already registered (a new key for a party: key add)",
                              card.name),
                   rc;
        *changed = true;
        return out_printf(out, "{\"added\": \"%s\", \"role\": \"%s\"}", card.name,
                          card_role_name((card_role)card.role)),
               RB_OK;
    }
    if (strcmp(c, "adapter list") == 0 && argc == 0)
        return list(store, out, now_ms, false, env);
    if (strcmp(c, "status") == 0 && argc == 0)
        return list(store, out, now_ms, true, env);
    if ((strcmp(c, "adapter disable") == 0 || strcmp(c, "adapter enable") == 0) && argc == 1) {
        bool enable = strcmp(c, "adapter enable") == 0;
        rb_err rc = store_set_enabled(store, argv[0], enable);
        if (rc != RB_OK)
            return out_printf(out, "%s: no such party", argv[0]), rc;
        *changed = true;
        return out_printf(out, "{\"%s\": \"%s\"}", enable ? "enabled" : "disabled", argv[0]), RB_OK;
    }
    if (strcmp(c, "key add") == 0 && argc == 2) {
        *changed = true;
        return add_key(store, argv, now_ms, env, out);
    }
    if (strcmp(c, "key revoke") == 0 && argc == 3) {
        *changed = true;
        return revoke_key(store, argv, by, now_ms, out);
    }
    if (strncmp(c, "dead-letters ", 13) == 0)
        return held_messages(store, STATE_NAME(DEAD), c + 13, argc, argv, by, now_ms, out);
    if (strncmp(c, "quarantine ", 11) == 0)
        return held_messages(store, STATE_NAME(QUARANTINED), c + 11, argc, argv, by, now_ms, out);
    if (strcmp(c, "message show") == 0 && argc == 1)
        return show_message(store, argv[0], out);
    if (strcmp(c, "ledger read") == 0 && argc == 3)
        return read_ledger(store, argv, out);
    if (strncmp(c, "backup ", 7) == 0)
        return backup_command(store, c, argv, argc, now_ms, out);
    out_printf(out, "unknown command or wrong arguments: %s", c);
    return RB_ERR_USAGE;
}

/* Ledgers the command exactly as the admin signed it, with the signature and the outcome. */
static rb_err record(store_t *store, const party_t *admin, const char *peer, const Rb__AdminRequest *req,
                     const Rb__AdminCommand *cmd, int64_t now_ms, const char *outcome, const char *reason)
{
    char detail[256];
    /* The first argument names what the command acts on; a card's text is in the command itself. */
    const char *arg = cmd && cmd->n_args > 0 && strcmp(cmd->command, "adapter add") != 0 &&
                              strcmp(cmd->command, "key add") != 0
                          ? cmd->args[0]
                          : "";
    snprintf(detail, sizeof detail, "command=\"%.40s\" arg=\"%.60s\" reason=\"%.120s\"",
             cmd ? cmd->command : "?", arg, reason);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = ACTION_NAME(ADMIN);
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
                   int64_t now_ms, const admin_env_t *env, char **output, bool *changed)
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
    } else if (card_valid_at(&admin->card, (uint64_t)(now_ms / 1000)) != RB_OK ||
               (admin->retires_ms != 0 && admin->retires_ms <= now_ms)) {
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
        (rc = execute(store, cmd, &admin->card, now_ms, env, &out, changed)) == RB_OK) {
        int admins = 0;
        /* Checked after the change, whatever it was: a disable, a revocation, an expiry brought forward. */
        if (*changed && (rc = store_count_admin_keys(store, now_ms, &admins)) == RB_OK && admins == 0) {
            out.len = 0;
            out_printf(&out, "no admin would be left able to sign commands (the last admin cannot "
                             "be removed: add another admin first)");
            rc = RB_ERR_NOT_ALLOWED;
        } else if (rc == RB_OK && (rc = store_commit(store)) != RB_OK) {
            out.len = 0; /* the output of a change that did not happen */
        }
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
