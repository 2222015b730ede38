/* store.c -- the broker's SQLite database (see store.h).
 *
 * Statements are prepared per call: the broker's rate is bounded by fsync, not by parsing SQL. Every
 * function maps SQLite failures to RB_ERR_IO (disk full and I/O errors included), and leaves the
 * transaction for the caller to roll back. */
#include "store.h"

#include "ledger.h"
#include "sqldb.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
    sqlite3 *db;      /* open connection, WAL mode */
    ledger_t *ledger; /* the audit ledger in the same database */
};

static const char *const migrations[] = {
    /* version 1 */
    "CREATE TABLE parties("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  role INTEGER NOT NULL,"
    "  agency TEXT NOT NULL,"
    "  key_id BLOB NOT NULL UNIQUE,"
    "  curve_key BLOB NOT NULL UNIQUE,"
    "  card BLOB NOT NULL,"
    "  enabled INTEGER NOT NULL DEFAULT 1,"
    "  added_ms INTEGER NOT NULL);"
    "CREATE TABLE revoked_keys("
    "  key_id BLOB PRIMARY KEY,"
    "  reason TEXT NOT NULL,"
    "  revoked_ms INTEGER NOT NULL);"
    "CREATE TABLE messages("
    "  message_id BLOB PRIMARY KEY,"
    "  envelope BLOB NOT NULL,"
    "  envelope_sha256 BLOB NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  sender TEXT NOT NULL,"
    "  recipient TEXT NOT NULL,"
    "  case_key BLOB,"
    "  ref_message_id BLOB,"
    "  created_ms INTEGER NOT NULL,"
    "  received_ms INTEGER NOT NULL,"
    "  submit_index INTEGER NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'queued',"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_ms INTEGER NOT NULL,"
    "  confirmed_ms INTEGER,"
    "  ack_status INTEGER,"
    "  ack_message_id BLOB,"
    "  acked_ms INTEGER,"
    "  dead_reason TEXT);"
    "CREATE INDEX messages_due ON messages(recipient, state, next_attempt_ms);"
    "CREATE INDEX messages_case ON messages(case_key, state, submit_index);"
    "CREATE TABLE admin_nonces(nonce BLOB PRIMARY KEY, used_ms INTEGER NOT NULL);",
    /* version 2: the audit ledger, which every event goes to */
    LEDGER_SCHEMA,
};

rb_err store_open(store_t **out, const char *path, bool create, char *err, size_t errlen)
{
    *out = NULL;
    store_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RB_ERR_NOMEM;
    rb_err rc = sqldb_open(&s->db, path, SQLDB_EXCLUSIVE | (create ? SQLDB_CREATE : 0), migrations,
                           (int)(sizeof migrations / sizeof migrations[0]), "broker", err, errlen);
    if (rc == RB_OK && (rc = ledger_open(&s->ledger, s->db)) != RB_OK) {
        snprintf(err, errlen, "the broker's ledger does not load: %s", rb_strerror(rc));
        sqlite3_close_v2(s->db);
    }
    if (rc != RB_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return RB_OK;
}

void store_close(store_t **store_p)
{
    if (store_p != NULL && *store_p != NULL) {
        ledger_close(&(*store_p)->ledger);
        sqlite3_close_v2((*store_p)->db);
        free(*store_p);
        *store_p = NULL;
    }
}

rb_err store_begin(store_t *s)
{
    return sqldb_exec(s->db, "BEGIN IMMEDIATE");
}

rb_err store_commit(store_t *s)
{
    return sqldb_exec(s->db, "COMMIT");
}

void store_rollback(store_t *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqldb_exec(s->db, "ROLLBACK");
    /* The appends the rollback undid must leave the in-memory edge of the tree too; if it cannot be re-read
     * now, the ledger refuses appends until it can. */
    ledger_reload(s->ledger);
}

ledger_t *store_ledger(store_t *s)
{
    return s->ledger;
}

sqlite3 *store_db(store_t *s)
{
    return s->db;
}

rb_err store_record_card(store_t *s, const card_t *card, const char *detail, int64_t now_ms)
{
    uint8_t packed[CARD_PACKED_MAX];
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = "party_registered";
    e.party = (char *)card->name;
    e.agency = (char *)card->agency;
    e.outcome = "ok";
    e.detail = (char *)detail;
    e.card = (ProtobufCBinaryData){card_pack(card, packed), packed};
    return store_event(s, &e, NULL);
}

rb_err store_add_party(store_t *s, const card_t *card, int64_t now_ms)
{
    uint8_t packed[CARD_PACKED_MAX];
    size_t n = card_pack(card, packed);
    rb_err rc = store_record_card(s, card, card_role_name((card_role)card->role), now_ms);
    if (rc != RB_OK)
        return rc;
    return sqldb_run(
        sqldb_prepare(s->db,
                      "INSERT INTO parties(name, role, agency, key_id, curve_key, card, added_ms) "
                      "VALUES(?, ?, ?, ?, ?, ?, ?)",
                      "titbbbi", card->name, (int64_t)card->role, card->agency, card->key_id, RB_KEY_ID_BYTES,
                      card->box_pk, RB_BOX_PK_BYTES, packed, (int)n, now_ms));
}

rb_err store_set_enabled(store_t *s, const char *name, bool enabled)
{
    rb_err rc = sqldb_run(
        sqldb_prepare(s->db, "UPDATE parties SET enabled = ? WHERE name = ?", "it", (int64_t)enabled, name));
    if (rc == RB_OK && sqlite3_changes(s->db) == 0)
        return RB_ERR_UNKNOWN_SENDER;
    return rc;
}

static rb_err read_party(sqlite3_stmt *st, party_t *out)
{
    out->id = sqlite3_column_int64(st, 0);
    out->enabled = sqlite3_column_int(st, 1) != 0;
    return card_unpack(&out->card, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
}

static rb_err find_party(sqlite3_stmt *st, party_t *out)
{
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    rb_err rc = step == SQLITE_ROW    ? read_party(st, out)
                : step == SQLITE_DONE ? RB_ERR_UNKNOWN_SENDER
                                      : RB_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

rb_err store_find_party(store_t *s, const char *name, party_t *out)
{
    return find_party(sqldb_prepare(s->db, "SELECT id, enabled, card FROM parties WHERE name = ?", "t", name),
                      out);
}

rb_err store_find_party_by_curve_key(store_t *s, const uint8_t key[RB_BOX_PK_BYTES], party_t *out)
{
    return find_party(sqldb_prepare(s->db, "SELECT id, enabled, card FROM parties WHERE curve_key = ?", "b",
                                    key, RB_BOX_PK_BYTES),
                      out);
}

rb_err store_each_party(store_t *s, rb_err (*fn)(void *ctx, const party_t *p), void *ctx)
{
    sqlite3_stmt *st = sqldb_prepare(s->db, "SELECT id, enabled, card FROM parties ORDER BY id", "");
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        party_t p;
        rc = read_party(st, &p);
        if (rc == RB_OK)
            rc = fn(ctx, &p);
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

rb_err store_revoke_key(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], const char *reason, int64_t now_ms)
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db, "SELECT 1 FROM parties WHERE key_id = ?", "b", key_id, RB_KEY_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_ROW)
        return step == SQLITE_DONE ? RB_ERR_UNKNOWN_SENDER : RB_ERR_IO;
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = "key_revoked";
    e.outcome = "ok";
    e.detail = (char *)reason;
    e.key_id = (ProtobufCBinaryData){RB_KEY_ID_BYTES, (uint8_t *)key_id};
    rb_err rc = store_event(s, &e, NULL);
    if (rc != RB_OK)
        return rc;
    return sqldb_run(
        sqldb_prepare(s->db, "INSERT OR IGNORE INTO revoked_keys(key_id, reason, revoked_ms) VALUES(?, ?, ?)",
                      "bti", key_id, RB_KEY_ID_BYTES, reason, now_ms));
}

bool store_key_revoked(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES])
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db, "SELECT 1 FROM revoked_keys WHERE key_id = ?", "b", key_id, RB_KEY_ID_BYTES);
    /* Unsure means revoked: a failing database must not admit a key. */
    bool revoked = st == NULL || sqlite3_step(st) != SQLITE_DONE;
    sqlite3_finalize(st);
    return revoked;
}

static rb_err add_to_trust(void *ctx, const party_t *p)
{
    return trust_add(ctx, &p->card);
}

rb_err store_load_trust(store_t *s, trust_t **out)
{
    trust_t *trust;
    rb_err rc = trust_new(&trust);
    if (rc != RB_OK)
        return rc;
    rc = store_each_party(s, add_to_trust, trust);
    sqlite3_stmt *st =
        rc == RB_OK ? sqldb_prepare(s->db, "SELECT key_id, revoked_ms FROM revoked_keys", "") : NULL;
    if (rc == RB_OK && st == NULL)
        rc = RB_ERR_IO;
    while (rc == RB_OK && sqlite3_step(st) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == RB_KEY_ID_BYTES)
            rc = trust_revoke(trust, sqlite3_column_blob(st, 0),
                              (uint64_t)(sqlite3_column_int64(st, 1) / 1000));
    sqlite3_finalize(st);
    if (rc != RB_OK)
        trust_free(&trust);
    *out = trust;
    return rc;
}

rb_err store_event(store_t *s, Rb__LedgerEvent *e, uint64_t *index)
{
    return ledger_append(s->ledger, e, index);
}

rb_err store_find_message(store_t *s, const uint8_t id[MSG_ID_BYTES], bool *found, stored_msg_t *out)
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT envelope_sha256, submit_index, received_ms, recipient, sender, attempts, state "
                      "FROM messages WHERE message_id = ?",
                      "b", id, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    if (*found) {
        memset(out, 0, sizeof *out);
        if (sqlite3_column_bytes(st, 0) == RB_HASH_BYTES)
            memcpy(out->envelope_sha256, sqlite3_column_blob(st, 0), RB_HASH_BYTES);
        out->submit_index = (uint64_t)sqlite3_column_int64(st, 1);
        out->received_ms = sqlite3_column_int64(st, 2);
        snprintf(out->recipient, sizeof out->recipient, "%s", (const char *)sqlite3_column_text(st, 3));
        snprintf(out->sender, sizeof out->sender, "%s", (const char *)sqlite3_column_text(st, 4));
        out->attempts = sqlite3_column_int(st, 5);
        snprintf(out->state, sizeof out->state, "%s", (const char *)sqlite3_column_text(st, 6));
    }
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err store_add_message(store_t *s, const Rb__Header *h, const uint8_t *env, size_t len,
                         const uint8_t sha256[RB_HASH_BYTES], uint64_t submit_index, int64_t now_ms)
{
    return sqldb_run(sqldb_prepare(
        s->db,
        "INSERT INTO messages(message_id, envelope, envelope_sha256, kind, sender, recipient, case_key,"
        " ref_message_id, created_ms, received_ms, submit_index, next_attempt_ms) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "bbbittbbiiii", h->message_id.data, MSG_ID_BYTES, env, (int)len, sha256, RB_HASH_BYTES,
        (int64_t)h->kind, h->sender, h->recipient, h->case_key.len ? h->case_key.data : NULL,
        (int)h->case_key.len, h->ref_message_id.len ? h->ref_message_id.data : NULL,
        (int)h->ref_message_id.len, h->created_ms, now_ms, (int64_t)submit_index, now_ms));
}

rb_err store_due(store_t *s, const char *recipient, int64_t now_ms, due_msg_t *out, size_t max, size_t *n)
{
    *n = 0;
    /* Within a sender's case key, only the oldest undelivered message may go: the others wait for it. */
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT m.message_id, m.envelope, m.attempts, m.received_ms FROM messages m "
                      "WHERE m.recipient = ? AND m.state = 'queued' AND m.next_attempt_ms <= ? "
                      "AND (m.case_key IS NULL OR NOT EXISTS (SELECT 1 FROM messages e "
                      "  WHERE e.case_key = m.case_key AND e.sender = m.sender AND e.state = 'queued' "
                      "  AND e.submit_index < m.submit_index)) "
                      "ORDER BY m.submit_index LIMIT ?",
                      "tii", recipient, now_ms, (int64_t)max);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        due_msg_t *d = &out[*n];
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        if (sqlite3_column_bytes(st, 0) != MSG_ID_BYTES || (d->envelope = malloc(len ? len : 1)) == NULL) {
            rc = RB_ERR_NOMEM;
            break;
        }
        memcpy(d->message_id, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
        memcpy(d->envelope, sqlite3_column_blob(st, 1), len);
        d->len = len;
        d->attempts = sqlite3_column_int(st, 2);
        d->received_ms = sqlite3_column_int64(st, 3);
        (*n)++;
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqlite3_finalize(st);
    if (rc != RB_OK) {
        for (size_t i = 0; i < *n; i++)
            free(out[i].envelope);
        *n = 0;
    }
    return rc;
}

static rb_err count(store_t *s, sqlite3_stmt *st, int *out)
{
    (void)s;
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *out = step == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    return step == SQLITE_ROW ? RB_OK : RB_ERR_IO;
}

rb_err store_in_flight(store_t *s, const char *recipient, int64_t now_ms, int *n)
{
    return count(
        s,
        sqldb_prepare(
            s->db,
            "SELECT count(*) FROM messages WHERE recipient = ? AND state = 'queued' AND attempts > 0 "
            "AND next_attempt_ms > ?",
            "ti", recipient, now_ms),
        n);
}

/* An UPDATE that must change exactly one row; RB_ERR_USAGE when it changed none. */
static rb_err update_one(store_t *s, sqlite3_stmt *st)
{
    rb_err rc = sqldb_run(st);
    if (rc == RB_OK && sqlite3_changes(s->db) != 1)
        return RB_ERR_USAGE;
    return rc;
}

rb_err store_attempted(store_t *s, const uint8_t id[MSG_ID_BYTES], int64_t next_ms)
{
    return update_one(
        s, sqldb_prepare(
               s->db, "UPDATE messages SET attempts = attempts + 1, next_attempt_ms = ? WHERE message_id = ?",
               "ib", next_ms, id, MSG_ID_BYTES));
}

rb_err store_confirmed(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *recipient, int64_t now_ms)
{
    return update_one(
        s, sqldb_prepare(s->db,
                         "UPDATE messages SET state = 'confirmed', confirmed_ms = ? "
                         "WHERE message_id = ? AND recipient = ? AND state = 'queued' AND attempts > 0",
                         "ibt", now_ms, id, MSG_ID_BYTES, recipient));
}

rb_err store_dead(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *reason, int64_t now_ms)
{
    (void)now_ms;
    return update_one(
        s, sqldb_prepare(s->db, "UPDATE messages SET state = 'dead', dead_reason = ? WHERE message_id = ?",
                         "tb", reason, id, MSG_ID_BYTES));
}

rb_err store_requeue(store_t *s, const uint8_t id[MSG_ID_BYTES], int64_t now_ms)
{
    rb_err rc = update_one(
        s, sqldb_prepare(s->db,
                         "UPDATE messages SET state = 'queued', attempts = 0, next_attempt_ms = ?, "
                         "dead_reason = NULL WHERE message_id = ? AND state = 'dead'",
                         "ib", now_ms, id, MSG_ID_BYTES));
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = "requeued";
    e.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, (uint8_t *)id};
    e.outcome = "ok";
    return rc == RB_OK ? store_event(s, &e, NULL) : rc;
}

rb_err store_expired(store_t *s, int64_t now_ms, int64_t limit, int64_t ttl_ms, uint8_t (*out)[MSG_ID_BYTES],
                     int *attempts, size_t max, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st = sqldb_prepare(s->db,
                                     "SELECT message_id, attempts FROM messages WHERE state = 'queued' AND "
                                     "((attempts >= ? AND next_attempt_ms <= ?) OR received_ms < ?) LIMIT ?",
                                     "iiii", limit, now_ms, now_ms - ttl_ms, (int64_t)max);
    if (st == NULL)
        return RB_ERR_IO;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == MSG_ID_BYTES) {
            memcpy(out[*n], sqlite3_column_blob(st, 0), MSG_ID_BYTES);
            attempts[(*n)++] = sqlite3_column_int(st, 1);
        }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err store_acked(store_t *s, const uint8_t referral_id[MSG_ID_BYTES], int ack_status,
                   const uint8_t ack_id[MSG_ID_BYTES], int64_t now_ms)
{
    return update_one(s, sqldb_prepare(s->db,
                                       "UPDATE messages SET ack_status = ?, ack_message_id = ?, acked_ms = ? "
                                       "WHERE message_id = ?",
                                       "ibib", (int64_t)ack_status, ack_id, MSG_ID_BYTES, now_ms, referral_id,
                                       MSG_ID_BYTES));
}

rb_err store_reschedule(store_t *s, const char *recipient, int64_t now_ms)
{
    return sqldb_run(
        sqldb_prepare(s->db,
                      "UPDATE messages SET next_attempt_ms = ? WHERE recipient = ? AND state = 'queued' "
                      "AND attempts > 0 AND next_attempt_ms > ?",
                      "iti", now_ms, recipient, now_ms));
}

rb_err store_counts(store_t *s, const char *name, int64_t now_ms, party_counts_t *out)
{
    memset(out, 0, sizeof *out);
    rb_err rc = count(
        s,
        sqldb_prepare(
            s->db, "SELECT count(*) FROM messages WHERE recipient = ? AND state = 'queued' AND attempts = 0",
            "t", name),
        &out->queued);
    if (rc == RB_OK)
        rc = store_in_flight(s, name, now_ms, &out->in_flight);
    if (rc == RB_OK)
        rc =
            count(s,
                  sqldb_prepare(s->db, "SELECT count(*) FROM messages WHERE recipient = ? AND state = 'dead'",
                                "t", name),
                  &out->dead);
    if (rc != RB_OK)
        return rc;
    sqlite3_stmt *st = sqldb_prepare(s->db,
                                     "SELECT count(*), min(received_ms) FROM messages WHERE recipient = ? "
                                     "AND state = 'confirmed' AND kind != 4 AND ack_status IS NULL",
                                     "t", name);
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return RB_ERR_IO;
    }
    out->awaiting_ack = sqlite3_column_int(st, 0);
    if (out->awaiting_ack > 0)
        out->oldest_awaiting_ms = now_ms - sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    return RB_OK;
}

rb_err store_use_nonce(store_t *s, const uint8_t *nonce, size_t len, int64_t now_ms)
{
    return sqldb_run(sqldb_prepare(s->db, "INSERT INTO admin_nonces(nonce, used_ms) VALUES(?, ?)", "bi",
                                   nonce, (int)len, now_ms));
}
