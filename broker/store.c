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

static rb_err repair_schema_4(sqlite3 *db);

static const sqldb_step_t steps[] = {
    /* version 1 */
    {.sql = "CREATE TABLE parties("
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
            "CREATE TABLE admin_nonces(nonce BLOB PRIMARY KEY, used_ms INTEGER NOT NULL);"},
    /* version 2: the audit ledger, which every event goes to */
    {.sql = LEDGER_SCHEMA},
    /* version 3: several keys per party (rotation), dated revocations, quarantine, key notices to send,
     * and each message's ledger leaves */
    {.sql =
         "CREATE TABLE party_keys("
         "  key_id BLOB PRIMARY KEY,"
         "  party TEXT NOT NULL,"
         "  curve_key BLOB NOT NULL UNIQUE,"
         "  card BLOB NOT NULL,"
         "  added_ms INTEGER NOT NULL,"
         "  retires_ms INTEGER);"
         "INSERT INTO party_keys(key_id, party, curve_key, card, added_ms)"
         "  SELECT key_id, name, curve_key, card, added_ms FROM parties ORDER BY id;"
         "CREATE INDEX party_keys_party ON party_keys(party);"
         "CREATE TABLE parties_v3("
         "  id INTEGER PRIMARY KEY,"
         "  name TEXT NOT NULL UNIQUE,"
         "  role INTEGER NOT NULL,"
         "  agency TEXT NOT NULL,"
         "  enabled INTEGER NOT NULL DEFAULT 1,"
         "  added_ms INTEGER NOT NULL);"
         "INSERT INTO parties_v3 SELECT id, name, role, agency, enabled, added_ms FROM parties;"
         "DROP TABLE parties;"
         "ALTER TABLE parties_v3 RENAME TO parties;"
         /* Revocations before version 3 covered everything the key signed: since 0. */
         "ALTER TABLE revoked_keys ADD COLUMN since_ms INTEGER NOT NULL DEFAULT 0;"
         "ALTER TABLE messages ADD COLUMN sender_key_id BLOB;"
         /* When it was last queued: the time to live counts from here, so a requeued letter gets a new one. */
         "ALTER TABLE messages ADD COLUMN queued_ms INTEGER;"
         "UPDATE messages SET queued_ms = received_ms;"
         "CREATE INDEX messages_sender_key ON messages(sender_key_id, state);"
         "CREATE INDEX messages_state ON messages(state, recipient);"
         "CREATE TABLE message_leaves(message_id BLOB NOT NULL, leaf INTEGER NOT NULL,"
         "  PRIMARY KEY(message_id, leaf)) WITHOUT ROWID;"
         "CREATE TABLE pending_notices(leaf INTEGER PRIMARY KEY);"},
    /* version 4: envelopes in a table of their own, so that the updates of a message's delivery state (each
     * rewrites the whole row) do not rewrite its envelope's overflow pages too; and indexes for the queries
     * each turn runs, so that they cost the same with a million messages queued as with ten: the next
     * deliveries in submission order, and what ran out of attempts or time */
    {.sql =
         "CREATE TABLE envelopes(message_id BLOB PRIMARY KEY, envelope BLOB NOT NULL);"
         /* The ledger's own index of leaves by message serves `message show`: a second one was a write per event. */
         "DROP TABLE message_leaves;"
         "INSERT INTO envelopes SELECT message_id, envelope FROM messages ORDER BY rowid;"
         "ALTER TABLE messages DROP COLUMN envelope;"
         "DROP INDEX messages_due;"
         "DROP INDEX messages_case;"
         /* Partial: only what is queued, so that these stay as small as the queue and a commit dirties a few of
      * their pages, not one per message ever stored; and a message leaves them when it is confirmed. */
         "CREATE INDEX messages_due ON messages(recipient, next_attempt_ms) WHERE state = 'queued';"
         "CREATE INDEX messages_case ON messages(case_key, sender, submit_index) WHERE state = 'queued';"
         "CREATE INDEX messages_order ON messages(recipient, submit_index) WHERE state = 'queued';"
         "CREATE INDEX messages_attempts ON messages(attempts) WHERE state = 'queued';"
         "CREATE INDEX messages_queued ON messages(queued_ms) WHERE state = 'queued';"
         /* For the counts that status and metrics take every second: ACKs awaited (rows leave it when the ACK
      * comes), and what each sender sent in the last minute. */
         "CREATE INDEX messages_awaiting_ack ON messages(recipient, confirmed_ms) "
         "  WHERE state = 'confirmed' AND kind IN (1, 2, 3) AND ack_status IS NULL;"
         "CREATE INDEX messages_received ON messages(sender, received_ms);"},
    /* version 5: the layout of version 4 whichever one a database has (repair_schema_4) */
    {.repair = repair_schema_4},
    /* version 6: the key notices queued for each recipient, which go before anything else (store_due); and
     * the indexes of what may expire without them (a notice never expires), so that notices queued for a
     * party disabled for good are never walked by the dead-letter scan */
    {.sql = "CREATE INDEX messages_notices ON messages(recipient, submit_index) "
            "WHERE state = 'queued' AND kind = 5;"
            "DROP INDEX messages_attempts;"
            "DROP INDEX messages_queued;"
            "CREATE INDEX messages_attempts ON messages(attempts) WHERE state = 'queued' AND kind != 5;"
            "CREATE INDEX messages_queued ON messages(queued_ms) WHERE state = 'queued' AND kind != 5;"},
};
_Static_assert(sizeof steps / sizeof steps[0] == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION is the last step");
const sqldb_schema_t store_schema = {"broker", steps, STORE_SCHEMA_VERSION};

/* Version 4 was changed in place four times before it settled (2026-12-03: e0ac73e, cf52001, 441f7f3,
 * c47cbe2), so a database at version 4 may have any of those layouts, and the first kept its envelopes in
 * messages, where today's broker never looks: its queued referrals were never delivered (issue #19). This
 * makes each of them the last one: envelopes moved to their table, message_leaves dropped, the queue's
 * indexes made as the last layout makes them. On a database of the last layout it changes nothing. */
static rb_err repair_schema_4(sqlite3 *db)
{
    static const char *const indexes[][2] = {
        {"messages_due",
         "CREATE INDEX messages_due ON messages(recipient, next_attempt_ms) WHERE state = 'queued'"},
        {"messages_case",
         "CREATE INDEX messages_case ON messages(case_key, sender, submit_index) WHERE state = 'queued'"},
        {"messages_order",
         "CREATE INDEX messages_order ON messages(recipient, submit_index) WHERE state = 'queued'"},
        {"messages_attempts", "CREATE INDEX messages_attempts ON messages(attempts) WHERE state = 'queued'"},
        {"messages_queued", "CREATE INDEX messages_queued ON messages(queued_ms) WHERE state = 'queued'"},
        {"messages_awaiting_ack", "CREATE INDEX messages_awaiting_ack ON messages(recipient, confirmed_ms) "
                                  "WHERE state = 'confirmed' AND kind IN (1, 2, 3) AND ack_status IS NULL"},
        {"messages_received", "CREATE INDEX messages_received ON messages(sender, received_ms)"},
    };
    rb_err rc = RB_OK;
    if (sqldb_has_column(db, "messages", "envelope"))
        rc = sqldb_exec(db, "CREATE TABLE envelopes(message_id BLOB PRIMARY KEY, envelope BLOB NOT NULL);"
                            "INSERT INTO envelopes SELECT message_id, envelope FROM messages ORDER BY rowid;"
                            "ALTER TABLE messages DROP COLUMN envelope;");
    if (rc == RB_OK)
        rc = sqldb_exec(db, "DROP TABLE IF EXISTS message_leaves");
    for (size_t i = 0; rc == RB_OK && i < sizeof indexes / sizeof indexes[0]; i++)
        rc = sqldb_ensure_index(db, indexes[i][0], indexes[i][1]);
    return rc;
}

rb_err store_open(store_t **out, const char *path, bool create, char *err, size_t errlen)
{
    *out = NULL;
    store_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RB_ERR_NOMEM;
    rb_err rc =
        sqldb_open(&s->db, path, SQLDB_EXCLUSIVE | (create ? SQLDB_CREATE : 0), &store_schema, err, errlen);
    if (rc == RB_OK)
        sqldb_keep_statements(s->db);
    if (rc == RB_OK && (rc = ledger_open(&s->ledger, s->db)) != RB_OK) {
        snprintf(err, errlen, "the broker's ledger does not load: %s", rb_strerror(rc));
        sqldb_close(s->db);
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
        sqldb_close((*store_p)->db);
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

rb_err store_step_begin(store_t *s)
{
    return sqldb_exec(s->db, "SAVEPOINT step");
}

rb_err store_step_end(store_t *s)
{
    return sqldb_exec(s->db, "RELEASE step");
}

void store_step_undo(store_t *s)
{
    sqldb_exec(s->db, "ROLLBACK TO step; RELEASE step");
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
    e.action = ACTION_NAME(PARTY_REGISTERED);
    e.party = (char *)card->name;
    e.agency = (char *)card->agency;
    e.outcome = "ok";
    e.detail = (char *)detail;
    e.card = (ProtobufCBinaryData){card_pack(card, packed), packed};
    return store_event(s, &e, NULL);
}

static rb_err insert_key(store_t *s, const card_t *card, int64_t now_ms)
{
    uint8_t packed[CARD_PACKED_MAX];
    size_t n = card_pack(card, packed);
    return sqldb_run(sqldb_prepare(
        s->db, "INSERT INTO party_keys(key_id, party, curve_key, card, added_ms) VALUES(?, ?, ?, ?, ?)",
        "btbbi", card->key_id, RB_KEY_ID_BYTES, card->name, card->box_pk, RB_BOX_PK_BYTES, packed, (int)n,
        now_ms));
}

rb_err store_add_party(store_t *s, const card_t *card, int64_t now_ms)
{
    rb_err rc = store_record_card(s, card, card_role_name((card_role)card->role), now_ms);
    if (rc == RB_OK)
        rc = sqldb_run(sqldb_prepare(s->db,
                                     "INSERT INTO parties(name, role, agency, added_ms) VALUES(?, ?, ?, ?)",
                                     "titi", card->name, (int64_t)card->role, card->agency, now_ms));
    return rc == RB_OK ? insert_key(s, card, now_ms) : rc;
}

rb_err store_add_key(store_t *s, const card_t *card, const card_cert_t *cert, int64_t retires_ms,
                     int64_t now_ms, uint64_t *leaf)
{
    uint8_t packed[CARD_PACKED_MAX], cert_packed[CARD_CERT_PACKED];
    card_cert_pack(cert, cert_packed);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = ACTION_NAME(KEY_ADDED);
    e.party = (char *)card->name;
    e.agency = (char *)card->agency;
    e.outcome = "ok";
    e.card = (ProtobufCBinaryData){card_pack(card, packed), packed};
    e.key_id = (ProtobufCBinaryData){RB_KEY_ID_BYTES, (uint8_t *)cert->old_key_id};
    e.certification = (ProtobufCBinaryData){sizeof cert_packed, cert_packed};
    e.retires_ms = retires_ms;
    rb_err rc = store_event(s, &e, leaf);
    if (rc == RB_OK)
        rc = insert_key(s, card, now_ms);
    if (rc == RB_OK)
        rc = sqldb_run(sqldb_prepare(s->db,
                                     "UPDATE party_keys SET retires_ms = ? WHERE key_id = ? "
                                     "AND (retires_ms IS NULL OR retires_ms > ?)",
                                     "ibi", retires_ms, cert->old_key_id, RB_KEY_ID_BYTES, retires_ms));
    return rc;
}

rb_err store_set_enabled(store_t *s, const char *name, bool enabled)
{
    rb_err rc = sqldb_run(
        sqldb_prepare(s->db, "UPDATE parties SET enabled = ? WHERE name = ?", "it", (int64_t)enabled, name));
    if (rc == RB_OK && sqlite3_changes(s->db) == 0)
        return RB_ERR_UNKNOWN_SENDER;
    return rc;
}

/* Columns: id, enabled, card, retires_ms. */
#define PARTY_COLUMNS                                                                                        \
    "SELECT p.id, p.enabled, k.card, k.retires_ms FROM parties p JOIN party_keys k ON k.party = p.name "

static rb_err read_party(sqlite3_stmt *st, party_t *out)
{
    out->id = sqlite3_column_int64(st, 0);
    out->enabled = sqlite3_column_int(st, 1) != 0;
    out->retires_ms = sqlite3_column_int64(st, 3);
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
    sqldb_done(st);
    return rc;
}

rb_err store_find_party(store_t *s, const char *name, party_t *out)
{
    return find_party(
        sqldb_prepare(s->db, PARTY_COLUMNS "WHERE p.name = ? ORDER BY k.rowid DESC LIMIT 1", "t", name), out);
}

rb_err store_find_party_by_curve_key(store_t *s, const uint8_t key[RB_BOX_PK_BYTES], party_t *out)
{
    return find_party(sqldb_prepare(s->db, PARTY_COLUMNS "WHERE k.curve_key = ?", "b", key, RB_BOX_PK_BYTES),
                      out);
}

rb_err store_find_key(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], party_t *out)
{
    return find_party(sqldb_prepare(s->db, PARTY_COLUMNS "WHERE k.key_id = ?", "b", key_id, RB_KEY_ID_BYTES),
                      out);
}

static rb_err each_party(store_t *s, sqlite3_stmt *st, rb_err (*fn)(void *ctx, const party_t *p), void *ctx)
{
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
    sqldb_done(st);
    (void)s;
    return rc;
}

rb_err store_each_party(store_t *s, rb_err (*fn)(void *ctx, const party_t *p), void *ctx)
{
    /* Each party once, with its newest key. */
    return each_party(s,
                      sqldb_prepare(s->db,
                                    PARTY_COLUMNS "WHERE k.rowid = (SELECT max(rowid) FROM party_keys "
                                                  "WHERE party = p.name) ORDER BY p.id",
                                    ""),
                      fn, ctx);
}

rb_err store_each_key(store_t *s, rb_err (*fn)(void *ctx, const party_t *p), void *ctx)
{
    return each_party(s, sqldb_prepare(s->db, PARTY_COLUMNS "ORDER BY k.rowid", ""), fn, ctx);
}

rb_err store_revoke_key(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], const char *reason,
                        int64_t since_ms, int64_t now_ms, uint64_t *leaf)
{
    party_t owner;
    rb_err rc = store_find_key(s, key_id, &owner);
    if (rc != RB_OK)
        return rc;
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = ACTION_NAME(KEY_REVOKED);
    e.party = owner.card.name;
    e.agency = owner.card.agency;
    e.outcome = "ok";
    e.detail = (char *)reason;
    e.key_id = (ProtobufCBinaryData){RB_KEY_ID_BYTES, (uint8_t *)key_id};
    e.since_ms = since_ms;
    if ((rc = store_event(s, &e, leaf)) != RB_OK)
        return rc;
    /* Revoked again: the earlier time stands, as in the trust store. */
    return sqldb_run(
        sqldb_prepare(s->db,
                      "INSERT INTO revoked_keys(key_id, reason, revoked_ms, since_ms) VALUES(?, ?, ?, ?) "
                      "ON CONFLICT(key_id) DO UPDATE SET since_ms = min(since_ms, excluded.since_ms)",
                      "btii", key_id, RB_KEY_ID_BYTES, reason, now_ms, since_ms));
}

bool store_key_revoked(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES])
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db, "SELECT 1 FROM revoked_keys WHERE key_id = ?", "b", key_id, RB_KEY_ID_BYTES);
    /* Unsure means revoked: a failing database must not admit a key. */
    bool revoked = st == NULL || sqlite3_step(st) != SQLITE_DONE;
    sqldb_done(st);
    return revoked;
}

static rb_err add_to_trust(void *ctx, const party_t *p)
{
    rb_err rc = trust_add(ctx, &p->card);
    if (rc == RB_OK && p->retires_ms > 0)
        rc = trust_retire(ctx, p->card.key_id, (uint64_t)(p->retires_ms / 1000));
    return rc;
}

rb_err store_load_trust(store_t *s, trust_t **out)
{
    trust_t *trust;
    rb_err rc = trust_new(&trust);
    if (rc != RB_OK)
        return rc;
    rc = store_each_key(s, add_to_trust, trust);
    sqlite3_stmt *st =
        rc == RB_OK ? sqldb_prepare(s->db, "SELECT key_id, since_ms FROM revoked_keys", "") : NULL;
    if (rc == RB_OK && st == NULL)
        rc = RB_ERR_IO;
    while (rc == RB_OK && sqlite3_step(st) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == RB_KEY_ID_BYTES)
            rc = trust_revoke(trust, sqlite3_column_blob(st, 0),
                              (uint64_t)(sqlite3_column_int64(st, 1) / 1000));
    sqldb_done(st);
    if (rc != RB_OK)
        trust_free(&trust);
    *out = trust;
    return rc;
}

static rb_err count_usable_admin(void *ctx, const party_t *p)
{
    int64_t *counts = ctx; /* [0] now, [1] count */
    uint64_t t = (uint64_t)(counts[0] / 1000);
    if (p->card.role == CARD_ROLE_ADMIN && p->enabled && card_valid_at(&p->card, t) == RB_OK &&
        (p->retires_ms == 0 || p->retires_ms > counts[0]))
        counts[1]++;
    return RB_OK;
}

rb_err store_count_admin_keys(store_t *s, int64_t now_ms, int *count)
{
    int64_t counts[2] = {now_ms, 0};
    rb_err rc = each_party(s,
                           sqldb_prepare(s->db,
                                         PARTY_COLUMNS "WHERE p.role = 4 AND k.key_id NOT IN "
                                                       "(SELECT key_id FROM revoked_keys)",
                                         ""),
                           count_usable_admin, counts);
    *count = (int)counts[1];
    return rc;
}

rb_err store_add_notice(store_t *s, uint64_t leaf)
{
    return sqldb_run(sqldb_prepare(s->db, "INSERT INTO pending_notices(leaf) VALUES(?)", "i", (int64_t)leaf));
}

rb_err store_next_notice(store_t *s, bool *found, uint64_t *leaf)
{
    int64_t v = -1;
    rb_err rc =
        sqldb_int(sqldb_prepare(s->db, "SELECT coalesce(min(leaf), -1) FROM pending_notices", ""), &v);
    *found = rc == RB_OK && v >= 0;
    *leaf = *found ? (uint64_t)v : 0;
    return rc;
}

rb_err store_notice_sent(store_t *s, uint64_t leaf)
{
    return sqldb_run(sqldb_prepare(s->db, "DELETE FROM pending_notices WHERE leaf = ?", "i", (int64_t)leaf));
}

rb_err store_event(store_t *s, Rb__LedgerEvent *e, uint64_t *index)
{
    uint64_t at;
    rb_err rc = ledger_append(s->ledger, e, &at);
    if (index != NULL)
        *index = at;
    return rc;
}

/* Columns read_message expects. */
#define MESSAGE_COLUMNS                                                                                      \
    "SELECT message_id, envelope_sha256, submit_index, received_ms, recipient, sender, attempts, state, "    \
    "kind, coalesce(dead_reason, ''), coalesce(confirmed_ms, 0), coalesce(ack_status, 0), "                  \
    "coalesce(acked_ms, 0), sender_key_id, "                                                                 \
    "(SELECT length(envelope) FROM envelopes e WHERE e.message_id = messages.message_id) FROM messages "

static void read_message(sqlite3_stmt *st, stored_msg_t *out)
{
    memset(out, 0, sizeof *out);
    if (sqlite3_column_bytes(st, 0) == MSG_ID_BYTES)
        memcpy(out->message_id, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
    if (sqlite3_column_bytes(st, 1) == RB_HASH_BYTES)
        memcpy(out->envelope_sha256, sqlite3_column_blob(st, 1), RB_HASH_BYTES);
    out->submit_index = (uint64_t)sqlite3_column_int64(st, 2);
    out->received_ms = sqlite3_column_int64(st, 3);
    snprintf(out->recipient, sizeof out->recipient, "%s", (const char *)sqlite3_column_text(st, 4));
    snprintf(out->sender, sizeof out->sender, "%s", (const char *)sqlite3_column_text(st, 5));
    out->attempts = sqlite3_column_int(st, 6);
    snprintf(out->state, sizeof out->state, "%s", (const char *)sqlite3_column_text(st, 7));
    out->kind = sqlite3_column_int(st, 8);
    snprintf(out->reason, sizeof out->reason, "%s", (const char *)sqlite3_column_text(st, 9));
    out->confirmed_ms = sqlite3_column_int64(st, 10);
    out->ack_status = sqlite3_column_int(st, 11);
    out->acked_ms = sqlite3_column_int64(st, 12);
    if (sqlite3_column_bytes(st, 13) == RB_KEY_ID_BYTES)
        memcpy(out->sender_key_id, sqlite3_column_blob(st, 13), RB_KEY_ID_BYTES);
    out->envelope_bytes = (size_t)sqlite3_column_int64(st, 14);
}

rb_err store_find_message(store_t *s, const uint8_t id[MSG_ID_BYTES], bool *found, stored_msg_t *out)
{
    sqlite3_stmt *st = sqldb_prepare(s->db, MESSAGE_COLUMNS "WHERE message_id = ?", "b", id, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    if (*found)
        read_message(st, out);
    sqldb_done(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err store_each_message(store_t *s, const char *state, rb_err (*fn)(void *ctx, const stored_msg_t *m),
                          void *ctx)
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db, MESSAGE_COLUMNS "WHERE state = ? ORDER BY submit_index", "t", state);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        stored_msg_t m;
        read_message(st, &m);
        rc = fn(ctx, &m);
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqldb_done(st);
    return rc;
}

rb_err store_message_leaves(store_t *s, const uint8_t id[MSG_ID_BYTES],
                            rb_err (*fn)(void *ctx, uint64_t leaf), void *ctx)
{
    sqlite3_stmt *st = sqldb_prepare(s->db, "SELECT idx FROM ledger_leaves WHERE message_id = ? ORDER BY idx",
                                     "b", id, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(ctx, (uint64_t)sqlite3_column_int64(st, 0));
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqldb_done(st);
    return rc;
}

rb_err store_add_message(store_t *s, const Rb__Header *h, const uint8_t *env, size_t len,
                         const uint8_t sha256[RB_HASH_BYTES], uint64_t submit_index, int64_t now_ms)
{
    rb_err rc = sqldb_run(sqldb_prepare(s->db, "INSERT INTO envelopes(message_id, envelope) VALUES(?, ?)",
                                        "bb", h->message_id.data, MSG_ID_BYTES, env, (int)len));
    if (rc != RB_OK)
        return rc;
    return sqldb_run(sqldb_prepare(
        s->db,
        "INSERT INTO messages(message_id, envelope_sha256, kind, sender, recipient, case_key,"
        " ref_message_id, created_ms, received_ms, submit_index, next_attempt_ms, sender_key_id, queued_ms) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "bbittbbiiiibi", h->message_id.data, MSG_ID_BYTES, sha256, RB_HASH_BYTES, (int64_t)h->kind, h->sender,
        h->recipient, h->case_key.len ? h->case_key.data : NULL, (int)h->case_key.len,
        h->ref_message_id.len ? h->ref_message_id.data : NULL, (int)h->ref_message_id.len, h->created_ms,
        now_ms, (int64_t)submit_index, now_ms, h->sender_key_id.data, (int)h->sender_key_id.len, now_ms));
}

rb_err store_due(store_t *s, const char *recipient, int64_t now_ms, due_msg_t *out, size_t max, size_t *n)
{
    *n = 0;
    /* Key notices first: while one to this recipient is queued (not confirmed yet), nothing else is
     * delivered to it, so that it has learnt every revocation before it is given anything signed after one,
     * whatever was submitted before the notice (a quarantined envelope released later). */
    int64_t notices = 0;
    rb_err rc =
        sqldb_int(sqldb_prepare(s->db,
                                "SELECT count(*) FROM (SELECT 1 FROM messages INDEXED BY messages_notices "
                                "WHERE recipient = ? AND state = 'queued' AND kind = 5 LIMIT 1)",
                                "t", recipient),
                  &notices);
    if (rc != RB_OK)
        return rc;
    /* Within a sender's case key, only the oldest undelivered message may go: the others wait for it. */
    sqlite3_stmt *st =
        notices > 0
            ? sqldb_prepare(
                  s->db,
                  "SELECT m.message_id, v.envelope, m.attempts, m.received_ms FROM messages m "
                  "INDEXED BY messages_notices JOIN envelopes v ON v.message_id = m.message_id WHERE "
                  "m.recipient = ? AND m.state = 'queued' AND m.kind = 5 AND m.next_attempt_ms <= ? "
                  "ORDER BY m.submit_index LIMIT ?",
                  "tii", recipient, now_ms, (int64_t)max)
            : sqldb_prepare(s->db,
                            "SELECT m.message_id, v.envelope, m.attempts, m.received_ms FROM messages m "
                            "INDEXED BY messages_order JOIN envelopes v ON v.message_id = m.message_id WHERE "
                            "m.recipient = ? AND m.state = 'queued' AND m.next_attempt_ms <= ? "
                            "AND (m.case_key IS NULL OR NOT EXISTS (SELECT 1 FROM messages e "
                            "  WHERE e.case_key = m.case_key AND e.sender = m.sender AND e.state = 'queued' "
                            "  AND e.submit_index < m.submit_index)) "
                            "ORDER BY m.submit_index LIMIT ?",
                            "tii", recipient, now_ms, (int64_t)max);
    if (st == NULL)
        return RB_ERR_IO;
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
    sqldb_done(st);
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
    sqldb_done(st);
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

/* The state action a moves a message to, and the one it moves it from (the first, for an action that may
 * happen in several): what a transition's UPDATE binds, so that it makes the move ledger_events.h lists. */
static const char *state_after(ledger_action_t a)
{
    return message_states[ledger_actions[a].to];
}

static const char *state_before(ledger_action_t a)
{
    return message_states[ledger_from(a)];
}

/* An UPDATE that must change exactly one row; RB_ERR_USAGE when it changed none. */
static rb_err update_one(store_t *s, sqlite3_stmt *st)
{
    rb_err rc = sqldb_run(st);
    if (rc == RB_OK && sqlite3_changes(s->db) != 1)
        return RB_ERR_USAGE;
    return rc;
}

rb_err store_attempted(store_t *s, const uint8_t id[MSG_ID_BYTES], int64_t next_ms, int64_t limit)
{
    /* A key notice is never dead-lettered: past the limit it waits for its party's next HELLO
     * (store_reschedule), not a delivery leaf every retry for ever. */
    return update_one(
        s, sqldb_prepare(s->db,
                         "UPDATE messages SET attempts = attempts + 1, next_attempt_ms = CASE WHEN "
                         "kind = 5 AND attempts + 1 >= ? THEN ? ELSE ? END WHERE message_id = ?",
                         "iiib", limit, INT64_MAX / 2, next_ms, id, MSG_ID_BYTES));
}

rb_err store_confirmed(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *recipient, int64_t now_ms)
{
    return update_one(s,
                      sqldb_prepare(s->db,
                                    "UPDATE messages SET state = ?, confirmed_ms = ? "
                                    "WHERE message_id = ? AND recipient = ? AND state = ? AND attempts > 0",
                                    "tibtt", state_after(ACTION_CONFIRMED), now_ms, id, MSG_ID_BYTES,
                                    recipient, state_before(ACTION_CONFIRMED)));
}

rb_err store_dead(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *reason, int64_t now_ms)
{
    (void)now_ms;
    return update_one(s, sqldb_prepare(s->db,
                                       "UPDATE messages SET state = ?, dead_reason = ? WHERE message_id = ?",
                                       "ttb", state_after(ACTION_DEAD_LETTERED), reason, id, MSG_ID_BYTES));
}

/* Ledgers an admin's decision on a message: action with outcome "ok" and the reason. */
/* An admin's decision about a message, named by the admin who made it (by). */
static rb_err message_event(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *action,
                            const char *reason, const card_t *by, int64_t now_ms, uint64_t *index)
{
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.at_ms = now_ms;
    e.action = (char *)action;
    e.party = (char *)by->name;
    e.agency = (char *)by->agency;
    e.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, (uint8_t *)id};
    e.outcome = "ok";
    e.detail = (char *)(reason ? reason : "");
    return store_event(s, &e, index);
}

rb_err store_requeue(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *from_state, const card_t *by,
                     int64_t now_ms)
{
    ledger_action_t a =
        ledger_transition(message_state_of(from_state), STATE_QUEUED); /* requeued, released */
    if (a == ACTION_COUNT)
        return RB_ERR_USAGE;
    rb_err rc = update_one(
        s, sqldb_prepare(s->db,
                         "UPDATE messages SET state = ?, attempts = 0, next_attempt_ms = ?, queued_ms = ?, "
                         "dead_reason = NULL WHERE message_id = ? AND state = ?",
                         "tiibt", state_after(a), now_ms, now_ms, id, MSG_ID_BYTES, from_state));
    return rc == RB_OK ? message_event(s, id, ledger_actions[a].name, NULL, by, now_ms, NULL) : rc;
}

rb_err store_discard(store_t *s, const uint8_t id[MSG_ID_BYTES], const char *from_state, const char *reason,
                     const card_t *by, int64_t now_ms)
{
    /* An ACK or a key notice is requeued, never given up: its recipient needs it (the answer to a referral,
     * the news of a key), and nothing else would tell it. */
    int64_t kind = 0, answered = 0;
    rb_err rc =
        sqldb_int(sqldb_prepare(s->db, "SELECT coalesce((SELECT kind FROM messages WHERE message_id = ?), 0)",
                                "b", id, MSG_ID_BYTES),
                  &kind);
    if (rc == RB_OK && (kind == RB__KIND__KIND_ACK || kind == RB__KIND__KIND_NOTICE))
        return RB_ERR_NOT_ALLOWED;
    if (rc == RB_OK)
        rc = sqldb_int(sqldb_prepare(s->db,
                                     "SELECT coalesce((SELECT ack_status IS NOT NULL FROM messages WHERE "
                                     "message_id = ?), 0)",
                                     "b", id, MSG_ID_BYTES),
                       &answered);
    /* The envelope goes (it will never be delivered); its hash, header and history stay in the ledger. */
    uint64_t index = 0;
    if (rc == RB_OK && !ledger_moves(ACTION_DISCARDED, message_state_of(from_state)))
        rc = RB_ERR_USAGE;
    if (rc == RB_OK)
        rc = update_one(s, sqldb_prepare(s->db,
                                         "UPDATE messages SET state = ?, dead_reason = ? WHERE "
                                         "message_id = ? AND state = ?",
                                         "ttbt", state_after(ACTION_DISCARDED), reason, id, MSG_ID_BYTES,
                                         from_state));
    if (rc == RB_OK)
        rc = sqldb_run(sqldb_prepare(s->db, "UPDATE envelopes SET envelope = X'' WHERE message_id = ?", "b",
                                     id, MSG_ID_BYTES));
    if (rc == RB_OK)
        rc = message_event(s, id, ACTION_NAME(DISCARDED), reason, by, now_ms, &index);
    /* Its sender is told, so that it shows it refused instead of awaiting an ACK for ever; unless it was
     * answered already (filed, its CONFIRM lost): the sender has the answer, and it stands. */
    return rc == RB_OK && !answered ? store_add_notice(s, index) : rc;
}

rb_err store_requeue_dead_notices(store_t *s, const card_t *by, int64_t now_ms, int *count)
{
    /* Ids first, changes after: the statement listing them is finished before any update. */
    enum { MAX = 256 };
    uint8_t ids[MAX][MSG_ID_BYTES];
    int n = 0;
    *count = 0;
    sqlite3_stmt *st = sqldb_prepare(s->db,
                                     "SELECT message_id FROM messages INDEXED BY messages_state "
                                     "WHERE state = 'dead' AND kind = 5 LIMIT 256",
                                     "");
    if (st == NULL)
        return RB_ERR_IO;
    int step = SQLITE_DONE;
    while (n < MAX && (step = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == MSG_ID_BYTES)
            memcpy(ids[n++], sqlite3_column_blob(st, 0), MSG_ID_BYTES);
    sqldb_done(st);
    rb_err rc = step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
    for (int i = 0; rc == RB_OK && i < n; i++)
        rc = store_requeue(s, ids[i], state_before(ACTION_REQUEUED), by, now_ms);
    if (rc == RB_OK)
        *count = n;
    return rc;
}

rb_err store_quarantine(store_t *s, const uint8_t key_id[RB_KEY_ID_BYTES], int64_t since_ms,
                        const char *reason, const card_t *by, int64_t now_ms, int *count)
{
    *count = 0;
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT message_id FROM messages WHERE sender_key_id = ? AND state = ? "
                      "AND received_ms >= ? ORDER BY submit_index",
                      "bti", key_id, RB_KEY_ID_BYTES, state_before(ACTION_QUARANTINED), since_ms);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        uint8_t id[MSG_ID_BYTES];
        if (sqlite3_column_bytes(st, 0) != MSG_ID_BYTES)
            continue;
        memcpy(id, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
        rc = update_one(
            s, sqldb_prepare(s->db, "UPDATE messages SET state = ?, dead_reason = ? WHERE message_id = ?",
                             "ttb", state_after(ACTION_QUARANTINED), reason, id, MSG_ID_BYTES));
        if (rc == RB_OK)
            rc = message_event(s, id, ACTION_NAME(QUARANTINED), reason, by, now_ms, NULL);
        if (rc == RB_OK)
            (*count)++;
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqldb_done(st);
    return rc;
}

rb_err store_expired(store_t *s, int64_t now_ms, int64_t limit, int64_t ttl_ms, uint8_t (*out)[MSG_ID_BYTES],
                     int *attempts, size_t max, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT message_id, attempts FROM messages INDEXED BY messages_attempts "
                      "WHERE state = 'queued' AND attempts >= ? AND next_attempt_ms <= ? AND kind != 5 UNION "
                      "SELECT message_id, attempts FROM messages INDEXED BY messages_queued "
                      "WHERE state = 'queued' AND queued_ms < ? AND kind != 5 LIMIT ?",
                      "iiii", limit, now_ms, now_ms - ttl_ms, (int64_t)max);
    if (st == NULL)
        return RB_ERR_IO;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == MSG_ID_BYTES) {
            memcpy(out[*n], sqlite3_column_blob(st, 0), MSG_ID_BYTES);
            attempts[(*n)++] = sqlite3_column_int(st, 1);
        }
    sqldb_done(st);
    return step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err store_next_expiry(store_t *s, int64_t limit, int64_t ttl_ms, int64_t *at_ms)
{
    /* queued_ms + ttl_ms + 1: store_expired takes what was queued before now_ms - ttl_ms. */
    return sqldb_int(
        sqldb_prepare(s->db,
                      "SELECT coalesce(min(t), ?) FROM ("
                      "SELECT min(next_attempt_ms) AS t FROM messages INDEXED BY messages_attempts "
                      "WHERE state = 'queued' AND attempts >= ? AND kind != 5 UNION ALL "
                      "SELECT min(queued_ms) + ? FROM messages INDEXED BY messages_queued "
                      "WHERE state = 'queued' AND kind != 5)",
                      "iii", INT64_MAX, limit, ttl_ms + 1),
        at_ms);
}

rb_err store_next_attempt(store_t *s, const char *recipient, int64_t after_ms, int64_t *at_ms)
{
    return sqldb_int(
        sqldb_prepare(s->db,
                      "SELECT coalesce(min(next_attempt_ms), ?) FROM messages INDEXED BY messages_due "
                      "WHERE recipient = ? AND state = 'queued' AND next_attempt_ms > ?",
                      "iti", INT64_MAX, recipient, after_ms),
        at_ms);
}

rb_err store_acked(store_t *s, const uint8_t referral_id[MSG_ID_BYTES], int ack_status,
                   const uint8_t ack_id[MSG_ID_BYTES], int64_t now_ms)
{
    /* The first ACK is the answer on record; one agreeing with it later changes nothing (the broker
     * refuses one that does not agree). */
    return sqldb_run(sqldb_prepare(s->db,
                                   "UPDATE messages SET ack_status = ?, ack_message_id = ?, acked_ms = ? "
                                   "WHERE message_id = ? AND ack_message_id IS NULL",
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

rb_err store_keys_end(store_t *s, const char *name, int64_t *end_ms, int64_t *added_ms)
{
    *end_ms = 0;
    if (added_ms != NULL)
        *added_ms = 0;
    sqlite3_stmt *st = sqldb_prepare(s->db,
                                     "SELECT card, retires_ms, added_ms FROM party_keys WHERE party = ? AND "
                                     "key_id NOT IN (SELECT key_id FROM revoked_keys)",
                                     "t", name);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        card_t card;
        if ((rc = card_unpack(&card, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0))) !=
            RB_OK)
            break;
        int64_t end = (int64_t)card.expires * 1000, retires = sqlite3_column_int64(st, 1);
        if (retires > 0 && retires < end)
            end = retires;
        if (end > *end_ms) {
            *end_ms = end;
            if (added_ms != NULL)
                *added_ms = sqlite3_column_int64(st, 2);
        }
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqldb_done(st);
    return rc;
}

rb_err store_counts(store_t *s, const char *name, int64_t now_ms, int64_t ack_overdue_ms, party_counts_t *out)
{
    memset(out, 0, sizeof *out);
    /* Every queued message is one or the other: in flight (delivered, its redelivery time not yet come) or
     * waiting for a delivery, first or again (a recipient gone before it CONFIRMed is made due at once). */
    rb_err rc =
        count(s,
              sqldb_prepare(s->db, "SELECT count(*) FROM messages WHERE recipient = ? AND state = 'queued'",
                            "t", name),
              &out->queued);
    if (rc == RB_OK)
        rc = store_in_flight(s, name, now_ms, &out->in_flight);
    out->queued -= out->in_flight;
    if (rc == RB_OK)
        rc =
            count(s,
                  sqldb_prepare(s->db, "SELECT count(*) FROM messages WHERE recipient = ? AND state = 'dead'",
                                "t", name),
                  &out->dead);
    if (rc != RB_OK)
        return rc;
    rc =
        count(s,
              sqldb_prepare(s->db, "SELECT count(*) FROM messages WHERE sender = ? AND state = 'quarantined'",
                            "t", name),
              &out->quarantined);
    if (rc == RB_OK)
        rc = count(s,
                   sqldb_prepare(s->db, "SELECT count(*) FROM messages WHERE sender = ? AND received_ms > ?",
                                 "ti", name, now_ms - 60000),
                   &out->receipts_last_minute);
    if (rc != RB_OK)
        return rc;
    /* Referrals, supplements and withdrawals are answered; ACKs and key notices are not. */
    sqlite3_stmt *st = sqldb_prepare(
        s->db,
        "SELECT count(*), min(received_ms), sum(confirmed_ms <= ?) FROM messages "
        "INDEXED BY messages_awaiting_ack WHERE recipient = ? AND state = 'confirmed' AND kind IN (1, 2, 3) "
        "AND ack_status IS NULL",
        "it", ack_overdue_ms > 0 ? now_ms - ack_overdue_ms : INT64_MIN, name);
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
        sqldb_done(st);
        return RB_ERR_IO;
    }
    out->awaiting_ack = sqlite3_column_int(st, 0);
    out->overdue = sqlite3_column_int(st, 2);
    if (out->awaiting_ack > 0)
        out->oldest_awaiting_ms = now_ms - sqlite3_column_int64(st, 1);
    sqldb_done(st);
    return store_keys_end(s, name, &out->keys_end_ms, NULL);
}

rb_err store_use_nonce(store_t *s, const uint8_t *nonce, size_t len, int64_t now_ms)
{
    return sqldb_run(sqldb_prepare(s->db, "INSERT INTO admin_nonces(nonce, used_ms) VALUES(?, ?)", "bi",
                                   nonce, (int)len, now_ms));
}
