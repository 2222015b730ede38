/* astore.c -- the adapter's outbox and inbox in SQLite (see astore.h). */
#include "astore.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbcrypto.h"
#include "sqldb.h"

struct astore {
    sqlite3 *db; /* WAL, exclusive to this adapter process */
    int depth;   /* astore_begin calls not yet committed or rolled back */
};

static const sqldb_step_t steps[] = {
    /* version 1 */
    {.sql = "CREATE TABLE outbox("
            "  message_id BLOB PRIMARY KEY,"
            "  kind INTEGER NOT NULL,"
            "  envelope BLOB NOT NULL,"
            "  agency TEXT, rd_number TEXT, revision INTEGER, body_sha256 BLOB,"
            "  source TEXT, refused TEXT,"
            "  queued_ms INTEGER NOT NULL,"
            "  receipt_seq INTEGER, broker_ms INTEGER, receipted_ms INTEGER,"
            "  ack_status INTEGER, intake_reference TEXT, ack_json TEXT, acked_ms INTEGER,"
            "  UNIQUE(agency, rd_number, revision));"
            "CREATE INDEX outbox_unreceipted ON outbox(receipted_ms, queued_ms);"
            "CREATE TABLE inbox("
            "  message_id BLOB PRIMARY KEY,"
            "  envelope BLOB NOT NULL,"
            "  received_ms INTEGER NOT NULL,"
            "  state TEXT NOT NULL DEFAULT 'received',"
            "  agency TEXT, rd_number TEXT, revision INTEGER,"
            "  intake_reference TEXT, problems TEXT, processed_ms INTEGER);"
            "CREATE INDEX inbox_state ON inbox(state, received_ms);"
            "CREATE INDEX inbox_content ON inbox(agency, rd_number, revision);"},
    /* version 2: what the broker proved about its ledger, kept so that a rewritten ledger is caught */
    {.sql =
         "ALTER TABLE outbox ADD COLUMN receipt_proof TEXT;"
         "CREATE TABLE checkpoints(id INTEGER PRIMARY KEY, size INTEGER NOT NULL, note TEXT NOT NULL,"
         "  received_ms INTEGER NOT NULL);"
         "CREATE TABLE ledger_alarms(id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, reason TEXT NOT NULL);"},
    /* version 3: the key notices applied to the trust store, applied again at every start */
    {.sql = "CREATE TABLE key_notices(id INTEGER PRIMARY KEY, notice BLOB NOT NULL, applied_ms INTEGER NOT "
            "NULL);"},
    /* version 4: the de-identified facts of each referral, kept for referral-publish (publish.h) */
    {.sql = "ALTER TABLE outbox ADD COLUMN facts TEXT;"},
    /* version 5: who sent each envelope received (the verified card's name) and the SHA-256 of a filed
     * referral's body, so that a duplicate is told from other content under the same revision */
    {.sql = ("ALTER TABLE inbox ADD COLUMN sender TEXT;"
             "ALTER TABLE inbox ADD COLUMN body_sha256 BLOB;"
             "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);")},
    /* version 6: the meta table, which version 5 gained after its first release (752ede2 made databases of
     * version 5 without it, where the runtime could not keep what it keeps there; issue #19) */
    {.sql = "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"},
    /* version 7: an envelope the broker cannot take for now (its recipient is disabled) waits, and is tried
     * again with a growing pause; an ACK keeps its body, to be sealed again to its source's current key if
     * the one it was sealed to is revoked or retired before the broker takes it; and the referrals that
     * brokers before protocol 3 refused for good when their recipient was disabled are queued again (a
     * recipient that is not registered refuses them again) */
    {.sql =
         "ALTER TABLE outbox ADD COLUMN waiting TEXT;"
         "ALTER TABLE outbox ADD COLUMN ack_body BLOB;"
         "ALTER TABLE outbox ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;"
         "ALTER TABLE outbox ADD COLUMN next_try_ms INTEGER NOT NULL DEFAULT 0;"
         "UPDATE outbox SET refused = NULL, waiting = refused WHERE receipted_ms IS NULL AND refused = "
         "'ERROR_CODE_UNKNOWN_RECIPIENT: recipient is not a registered, enabled adapter of the right role';"},
};
const sqldb_schema_t astore_schema = {"adapter", steps, (int)(sizeof steps / sizeof steps[0])};

static const char *text_or(sqlite3_stmt *st, int col, const char *dflt)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? (const char *)t : dflt;
}

rb_err astore_open(astore_t **out, const char *path, bool readonly, char *err, size_t errlen)
{
    *out = NULL;
    astore_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RB_ERR_NOMEM;
    rb_err rc =
        sqldb_open(&s->db, path, readonly ? SQLDB_READONLY : SQLDB_CREATE, &astore_schema, err, errlen);
    if (rc != RB_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return RB_OK;
}

void astore_close(astore_t **s_p)
{
    if (s_p != NULL && *s_p != NULL) {
        sqlite3_close_v2((*s_p)->db);
        free(*s_p);
        *s_p = NULL;
    }
}

/* Nested calls are savepoints inside the outermost transaction: the loop batches a whole turn's work in one
 * transaction (one fsync), and a step inside it that fails is undone alone. */
rb_err astore_begin(astore_t *s)
{
    if (sqlite3_get_autocommit(s->db))
        s->depth = 0; /* an I/O error ended the transaction: this step is one of its own */
    rb_err rc = sqldb_exec(s->db, s->depth == 0 ? "BEGIN IMMEDIATE" : "SAVEPOINT step");
    if (rc == RB_OK)
        s->depth++;
    return rc;
}

rb_err astore_commit(astore_t *s)
{
    if (s->depth == 0)
        return RB_ERR_USAGE;
    if (sqlite3_get_autocommit(s->db)) { /* ended by an error: nothing of it is left to commit */
        s->depth = 0;
        return RB_ERR_IO;
    }
    rb_err rc = sqldb_exec(s->db, s->depth == 1 ? "COMMIT" : "RELEASE step");
    if (rc == RB_OK)
        s->depth--;
    return rc;
}

void astore_rollback(astore_t *s)
{
    if (sqlite3_get_autocommit(s->db)) {
        s->depth = 0;
    } else if (s->depth > 1) {
        sqldb_exec(s->db, "ROLLBACK TO step; RELEASE step");
        s->depth--;
    } else {
        sqldb_exec(s->db, "ROLLBACK");
        s->depth = 0;
    }
}

rb_err astore_outbox_add(astore_t *s, const msg_id_t *id, int kind, const uint8_t *env, size_t len,
                         const content_id_t *content, const uint8_t *body_sha256, const char *source,
                         const char *facts, int64_t now_ms)
{
    return sqldb_run(
        sqldb_prepare(s->db,
                      "INSERT INTO outbox(message_id, kind, envelope, agency, rd_number, revision,"
                      " body_sha256, source, facts, queued_ms) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      "bibtt"
                      "ibtti",
                      id->bytes, MSG_ID_BYTES, (int64_t)kind, env, (int)len, content ? content->agency : NULL,
                      content ? content->rd_number : NULL, content ? (int64_t)content->revision : 0,
                      body_sha256, body_sha256 ? RB_HASH_BYTES : 0, source, facts, now_ms));
}

rb_err astore_each_sent(astore_t *s, rb_err (*fn)(void *ctx, const astore_sent_t *sent), void *ctx)
{
    sqlite3_stmt *st = sqldb_prepare(s->db,
                                     "SELECT agency, rd_number, revision, kind, facts, queued_ms,"
                                     " coalesce(ack_status, 0), coalesce(acked_ms, 0) FROM outbox"
                                     " WHERE kind IN (1, 2, 3) AND refused IS NULL"
                                     " ORDER BY agency, rd_number, revision",
                                     "");
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        astore_sent_t r = {
            .agency = text_or(st, 0, ""),
            .rd_number = text_or(st, 1, ""),
            .revision = (uint32_t)sqlite3_column_int64(st, 2),
            .kind = sqlite3_column_int(st, 3),
            .facts = (const char *)sqlite3_column_text(st, 4),
            .queued_ms = sqlite3_column_int64(st, 5),
            .ack_status = sqlite3_column_int(st, 6),
            .acked_ms = sqlite3_column_int64(st, 7),
        };
        rc = fn(ctx, &r);
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

rb_err astore_outbox_find_content(astore_t *s, const content_id_t *content, bool *found, msg_id_t *id,
                                  uint8_t body_sha256[RB_HASH_BYTES])
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT message_id, body_sha256 FROM outbox WHERE agency = ? AND rd_number = ? "
                      "AND revision = ?",
                      "tti", content->agency, content->rd_number, (int64_t)content->revision);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW && sqlite3_column_bytes(st, 0) == MSG_ID_BYTES &&
             sqlite3_column_bytes(st, 1) == RB_HASH_BYTES;
    if (*found) {
        memcpy(id->bytes, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
        memcpy(body_sha256, sqlite3_column_blob(st, 1), RB_HASH_BYTES);
    }
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err astore_outbox_refused(astore_t *s, const msg_id_t *id, const char *reason, int64_t now_ms)
{
    (void)now_ms;
    /* Never over an answer on record: what the sink filed stays filed, whatever is said after. */
    return sqldb_run(sqldb_prepare(s->db,
                                   "UPDATE outbox SET refused = ? WHERE message_id = ? AND acked_ms IS NULL",
                                   "tb", reason, id->bytes, MSG_ID_BYTES));
}

rb_err astore_outbox_last_revision(astore_t *s, const char *agency, const char *rd_number, uint32_t *revision)
{
    int64_t v;
    rb_err rc = sqldb_int(
        sqldb_prepare(s->db,
                      "SELECT coalesce(max(revision), 0) FROM outbox WHERE agency = ? AND rd_number = ?",
                      "tt", agency, rd_number),
        &v);
    *revision = (uint32_t)v;
    return rc;
}

/* Copies a blob column into a new malloc'd buffer. */
static uint8_t *take_blob(sqlite3_stmt *st, int col, size_t *len)
{
    *len = (size_t)sqlite3_column_bytes(st, col);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf != NULL && *len > 0)
        memcpy(buf, sqlite3_column_blob(st, col), *len);
    return buf;
}

/* The first row of (message_id, envelope) from st, finalizing it. */
static rb_err next_envelope(sqlite3_stmt *st, bool *found, msg_id_t *id, uint8_t **env, size_t *len)
{
    *found = false;
    *env = NULL;
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    rb_err rc = step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
    if (step == SQLITE_ROW && sqlite3_column_bytes(st, 0) == MSG_ID_BYTES) {
        memcpy(id->bytes, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
        *env = take_blob(st, 1, len);
        *found = *env != NULL;
        if (*env == NULL)
            rc = RB_ERR_NOMEM;
    }
    sqlite3_finalize(st);
    return rc;
}

rb_err astore_outbox_unreceipted(astore_t *s, int64_t now_ms, size_t max, msg_id_t *ids, uint8_t **envs,
                                 size_t *lens, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st = sqldb_prepare(s->db,
                                     "SELECT message_id, envelope FROM outbox WHERE receipted_ms IS NULL AND "
                                     "refused IS NULL AND next_try_ms <= ? ORDER BY queued_ms, rowid LIMIT ?",
                                     "ii", now_ms, (int64_t)max);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != MSG_ID_BYTES)
            continue;
        memcpy(ids[*n].bytes, sqlite3_column_blob(st, 0), MSG_ID_BYTES);
        if ((envs[*n] = take_blob(st, 1, &lens[*n])) == NULL)
            rc = RB_ERR_NOMEM;
        else
            (*n)++;
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqlite3_finalize(st);
    if (rc != RB_OK) {
        for (size_t i = 0; i < *n; i++)
            free(envs[i]);
        *n = 0;
    }
    return rc;
}

/* An UPDATE that must change one row: RB_ERR_USAGE when it changed none. */
static rb_err update_one(astore_t *s, sqlite3_stmt *st)
{
    rb_err rc = sqldb_run(st);
    return rc == RB_OK && sqlite3_changes(s->db) != 1 ? RB_ERR_USAGE : rc;
}

rb_err astore_outbox_receipted(astore_t *s, const msg_id_t *id, uint64_t ledger_index, int64_t broker_ms,
                               const char *proof, int64_t now_ms)
{
    return update_one(s, sqldb_prepare(s->db,
                                       "UPDATE outbox SET receipt_seq = ?, broker_ms = ?, receipt_proof = ?, "
                                       "receipted_ms = ?, waiting = NULL WHERE message_id = ?",
                                       "iitib", (int64_t)ledger_index, broker_ms, proof, now_ms, id->bytes,
                                       MSG_ID_BYTES));
}

rb_err astore_outbox_keep_body(astore_t *s, const msg_id_t *id, const uint8_t *body, size_t len)
{
    return sqldb_run(sqldb_prepare(s->db, "UPDATE outbox SET ack_body = ? WHERE message_id = ?", "bb", body,
                                   (int)len, id->bytes, MSG_ID_BYTES));
}

rb_err astore_outbox_body(astore_t *s, const msg_id_t *id, uint8_t **body, size_t *len)
{
    *body = NULL;
    sqlite3_stmt *st = sqldb_prepare(s->db, "SELECT ack_body FROM outbox WHERE message_id = ?", "b",
                                     id->bytes, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc =
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB ? RB_OK : RB_ERR_USAGE;
    if (rc == RB_OK && (*body = take_blob(st, 0, len)) == NULL)
        rc = RB_ERR_NOMEM;
    sqlite3_finalize(st);
    return rc;
}

rb_err astore_outbox_waiting(astore_t *s, const msg_id_t *id, const char *reason, int64_t now_ms)
{
    /* 1 s after the first refusal, doubling to a minute: an enabled recipient is not waited for long, and a
     * recipient disabled for days costs a submission a minute per envelope, refused without a ledger leaf
     * past the broker's refusal allowance. */
    return update_one(s, sqldb_prepare(s->db,
                                       "UPDATE outbox SET waiting = ?, tries = tries + 1, next_try_ms = ? + "
                                       "min(60000, 1000 << min(tries, 6)) WHERE message_id = ?",
                                       "tib", reason, now_ms, id->bytes, MSG_ID_BYTES));
}

rb_err astore_add_checkpoint(astore_t *s, const char *note, uint64_t size, int64_t now_ms)
{
    return sqldb_run(
        sqldb_prepare(s->db,
                      "INSERT INTO checkpoints(size, note, received_ms) SELECT ?, ?, ? WHERE "
                      "coalesce((SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1), '') != ?",
                      "itit", (int64_t)size, note, now_ms, note));
}

rb_err astore_latest_checkpoint(astore_t *s, bool *found, char note[NOTE_TEXT_MAX])
{
    sqlite3_stmt *st = sqldb_prepare(s->db, "SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1", "");
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    if (*found)
        snprintf(note, NOTE_TEXT_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err astore_add_alarm(astore_t *s, const char *reason, int64_t now_ms)
{
    return sqldb_run(
        sqldb_prepare(s->db, "INSERT INTO ledger_alarms(at_ms, reason) VALUES(?, ?)", "it", now_ms, reason));
}

rb_err astore_add_notice(astore_t *s, const uint8_t *notice, size_t len, int64_t now_ms)
{
    return sqldb_run(sqldb_prepare(s->db, "INSERT INTO key_notices(notice, applied_ms) VALUES(?, ?)", "bi",
                                   notice, (int)len, now_ms));
}

rb_err astore_each_notice(astore_t *s, rb_err (*fn)(void *ctx, const uint8_t *notice, size_t len), void *ctx)
{
    sqlite3_stmt *st = sqldb_prepare(s->db, "SELECT notice FROM key_notices ORDER BY id", "");
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

rb_err astore_outbox_acked(astore_t *s, const msg_id_t *referral, int status, const char *intake_reference,
                           const char *ack_json, int64_t now_ms)
{
    return update_one(
        s, sqldb_prepare(s->db,
                         "UPDATE outbox SET ack_status = ?, intake_reference = ?, ack_json = ?, acked_ms = ? "
                         "WHERE message_id = ? AND kind != 4 AND acked_ms IS NULL",
                         "ittib", (int64_t)status, intake_reference, ack_json, now_ms, referral->bytes,
                         MSG_ID_BYTES));
}

rb_err astore_outbox_answered(astore_t *s, const msg_id_t *referral, bool *found, uint8_t **env, size_t *len,
                              int *ack_status, char *intake_reference, size_t cap, char **ack_json)
{
    *env = NULL;
    *ack_json = NULL;
    *ack_status = 0;
    intake_reference[0] = '\0';
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT envelope, coalesce(ack_status, 0), coalesce(intake_reference, ''), "
                      "ack_json FROM outbox WHERE message_id = ? AND kind != 4",
                      "b", referral->bytes, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    rb_err rc = step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
    if (*found) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        if ((*env = malloc(*len ? *len : 1)) == NULL)
            rc = RB_ERR_NOMEM;
        else if (*len > 0)
            memcpy(*env, sqlite3_column_blob(st, 0), *len);
        *ack_status = sqlite3_column_int(st, 1);
        snprintf(intake_reference, cap, "%s", (const char *)sqlite3_column_text(st, 2));
        if (rc == RB_OK && sqlite3_column_type(st, 3) != SQLITE_NULL &&
            (*ack_json = strdup((const char *)sqlite3_column_text(st, 3))) == NULL)
            rc = RB_ERR_NOMEM;
    }
    sqlite3_finalize(st);
    return rc;
}

rb_err astore_outbox_status(astore_t *s, const msg_id_t *id, bool *found, outbox_status_t *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT queued_ms, receipted_ms, receipt_seq, ack_status, intake_reference, ack_json,"
                      " acked_ms, refused, waiting FROM outbox WHERE message_id = ? AND kind != 4",
                      "b", id->bytes, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    rb_err rc = step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
    if (*found) {
        out->queued_ms = sqlite3_column_int64(st, 0);
        out->receipted_ms = sqlite3_column_int64(st, 1);
        out->ledger_index = sqlite3_column_int64(st, 2);
        out->acked_ms = sqlite3_column_int64(st, 6);
        snprintf(out->intake_reference, sizeof out->intake_reference, "%s", text_or(st, 4, ""));
        snprintf(out->refused, sizeof out->refused, "%s", text_or(st, 7, ""));
        snprintf(out->waiting, sizeof out->waiting, "%s", text_or(st, 8, ""));
        const char *state = out->refused[0] ? "refused"
                            : sqlite3_column_type(st, 3) != SQLITE_NULL
                                ? (sqlite3_column_int(st, 3) == 1 ? "accepted" : "rejected")
                            : sqlite3_column_type(st, 1) != SQLITE_NULL ? "receipted"
                            : out->waiting[0]                           ? "waiting"
                                                                        : "queued";
        snprintf(out->state, sizeof out->state, "%s", state);
        if (sqlite3_column_type(st, 5) != SQLITE_NULL && (out->ack_json = strdup(text_or(st, 5, ""))) == NULL)
            rc = RB_ERR_NOMEM;
    }
    sqlite3_finalize(st);
    return rc;
}

rb_err astore_inbox_add(astore_t *s, const msg_id_t *id, const uint8_t *env, size_t len, int64_t now_ms,
                        bool *fresh)
{
    rb_err rc = sqldb_run(
        sqldb_prepare(s->db, "INSERT OR IGNORE INTO inbox(message_id, envelope, received_ms) VALUES(?, ?, ?)",
                      "bbi", id->bytes, MSG_ID_BYTES, env, (int)len, now_ms));
    *fresh = rc == RB_OK && sqlite3_changes(s->db) == 1;
    return rc;
}

rb_err astore_inbox_next(astore_t *s, bool *found, msg_id_t *id, uint8_t **env, size_t *len)
{
    return next_envelope(sqldb_prepare(s->db,
                                       "SELECT message_id, envelope FROM inbox WHERE state = 'received' "
                                       "ORDER BY received_ms, rowid LIMIT 1",
                                       ""),
                         found, id, env, len);
}

rb_err astore_inbox_done(astore_t *s, const msg_id_t *id, const char *state, const content_id_t *content,
                         const char *intake_reference, const char *problems, int64_t now_ms)
{
    return update_one(
        s, sqldb_prepare(s->db,
                         "UPDATE inbox SET state = ?, agency = ?, rd_number = ?, revision = ?, "
                         "intake_reference = ?, problems = ?, processed_ms = ? WHERE message_id = ?",
                         "ttti"
                         "ttib",
                         state, content ? content->agency : NULL, content ? content->rd_number : NULL,
                         content ? (int64_t)content->revision : 0, intake_reference, problems, now_ms,
                         id->bytes, MSG_ID_BYTES));
}

rb_err astore_inbox_retry_held(astore_t *s, int *count)
{
    /* The reason is rb_strerror(RB_ERR_BAD_VERSION), as every release since the first wrote it. */
    rb_err rc = sqldb_run(sqldb_prepare(s->db,
                                        "UPDATE inbox SET state = 'received' WHERE state = 'held' OR "
                                        "(state = 'refused' AND problems = 'unsupported format version')",
                                        ""));
    *count = rc == RB_OK ? sqlite3_changes(s->db) : 0;
    return rc;
}

rb_err astore_inbox_find_filed(astore_t *s, const content_id_t *content, bool *found, char *intake_reference,
                               size_t cap, uint8_t body_sha256[RB_HASH_BYTES], bool *has_sha256)
{
    sqlite3_stmt *st =
        sqldb_prepare(s->db,
                      "SELECT intake_reference, body_sha256 FROM inbox WHERE state = 'filed' AND agency = ? "
                      "AND rd_number = ? AND revision = ? LIMIT 1",
                      "tti", content->agency, content->rd_number, (int64_t)content->revision);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    *has_sha256 = *found && sqlite3_column_bytes(st, 1) == RB_HASH_BYTES;
    if (*found)
        snprintf(intake_reference, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    if (*has_sha256)
        memcpy(body_sha256, sqlite3_column_blob(st, 1), RB_HASH_BYTES);
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err astore_meta_get(astore_t *s, const char *key, int64_t *value)
{
    *value = 0;
    sqlite3_stmt *st = sqldb_prepare(s->db, "SELECT value FROM meta WHERE key = ?", "t", key);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *value = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err astore_meta_set(astore_t *s, const char *key, int64_t value)
{
    return sqldb_run(sqldb_prepare(s->db,
                                   "INSERT INTO meta(key, value) VALUES(?, ?) "
                                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                   "ti", key, value));
}

rb_err astore_inbox_origin(astore_t *s, const msg_id_t *id, const char *sender,
                           const uint8_t body_sha256[RB_HASH_BYTES])
{
    return update_one(
        s, sqldb_prepare(s->db, "UPDATE inbox SET sender = ?, body_sha256 = ? WHERE message_id = ?", "tbb",
                         sender, body_sha256, body_sha256 ? RB_HASH_BYTES : 0, id->bytes, MSG_ID_BYTES));
}

rb_err astore_counts(astore_t *s, int64_t now_ms, int64_t receipt_deadline_ms, int64_t ack_deadline_ms,
                     astore_counts_t *out)
{
    memset(out, 0, sizeof *out);
    /* Overdue means awaited: each overdue count is of a subset of the count before it (queued, awaiting an
     * ACK), so a referral the broker refused, never to be receipted or answered, is in neither. */
    sqlite3_stmt *st = sqldb_prepare(
        s->db,
        "SELECT"
        " (SELECT count(*) FROM outbox WHERE receipted_ms IS NULL AND refused IS NULL),"
        " (SELECT count(*) FROM outbox WHERE kind != 4 AND receipted_ms IS NOT NULL AND acked_ms IS NULL"
        "  AND refused IS NULL),"
        " (SELECT count(*) FROM outbox WHERE ack_status = 1),"
        " (SELECT count(*) FROM outbox WHERE ack_status = 2),"
        " (SELECT count(*) FROM outbox WHERE receipted_ms IS NULL AND refused IS NULL AND queued_ms < ?),"
        " (SELECT count(*) FROM outbox WHERE kind != 4 AND receipted_ms IS NOT NULL AND acked_ms IS NULL"
        "  AND refused IS NULL AND queued_ms < ?),"
        " (SELECT count(*) FROM inbox WHERE state IN ('received', 'held')),"
        " (SELECT count(*) FROM inbox WHERE state = 'filed'),"
        " (SELECT count(*) FROM inbox WHERE state IN ('rejected', 'refused')) + "
        " (SELECT count(*) FROM outbox WHERE refused IS NOT NULL),"
        " (SELECT count(*) FROM ledger_alarms),"
        " (SELECT count(*) FROM checkpoints),"
        " (SELECT reason FROM ledger_alarms ORDER BY id DESC LIMIT 1),"
        " (SELECT count(*) FROM outbox WHERE receipted_ms IS NULL AND refused IS NULL AND waiting IS NOT "
        "NULL),"
        " (SELECT waiting FROM outbox WHERE receipted_ms IS NULL AND refused IS NULL AND waiting IS NOT NULL"
        "  ORDER BY queued_ms LIMIT 1)",
        "ii", now_ms - receipt_deadline_ms, now_ms - ack_deadline_ms);
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return RB_ERR_IO;
    }
    int *fields[] = {&out->queued,          &out->receipted,     &out->accepted,      &out->rejected,
                     &out->overdue_receipt, &out->overdue_ack,   &out->inbox_waiting, &out->filed,
                     &out->refused,         &out->ledger_alarms, &out->checkpoints};
    for (int i = 0; i < 11; i++)
        *fields[i] = sqlite3_column_int(st, i);
    snprintf(out->last_alarm, sizeof out->last_alarm, "%s", text_or(st, 11, ""));
    out->waiting = sqlite3_column_int(st, 12);
    snprintf(out->waiting_for, sizeof out->waiting_for, "%s", text_or(st, 13, ""));
    sqlite3_finalize(st);
    return RB_OK;
}

/* printf at the end of out, never past cap. */
static void append(char *out, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *out, size_t cap, size_t *n, const char *fmt, ...)
{
    if (*n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(out + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w > 0)
        *n += (size_t)w < cap - *n ? (size_t)w : cap - *n - 1;
}

rb_err astore_history(astore_t *s, const msg_id_t *id, char *out, size_t cap, bool *found)
{
    out[0] = '\0';
    sqlite3_stmt *st = sqldb_prepare(
        s->db,
        "SELECT 'sent', source, queued_ms, receipt_seq, receipted_ms, ack_status, "
        "intake_reference, ack_json, acked_ms, rd_number, revision, refused, waiting, tries "
        "FROM outbox WHERE message_id = ? "
        "UNION ALL SELECT 'received', state, received_ms, NULL, NULL, NULL, "
        "intake_reference, problems, processed_ms, rd_number, revision, NULL, NULL, 0 FROM inbox "
        "WHERE message_id = ?",
        "bb", id->bytes, MSG_ID_BYTES, id->bytes, MSG_ID_BYTES);
    if (st == NULL)
        return RB_ERR_IO;
    *found = false;
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        *found = true;
        append(out, cap, &n, "RD %s revision %d\n", text_or(st, 9, "-"), sqlite3_column_int(st, 10));
        if (strcmp(text_or(st, 0, ""), "sent") == 0) {
            append(out, cap, &n, "queued     %lld from %s\n", (long long)sqlite3_column_int64(st, 2),
                   text_or(st, 1, "-"));
            if (sqlite3_column_type(st, 12) != SQLITE_NULL)
                append(out, cap, &n, "waiting    %s (%d tries)\n", text_or(st, 12, ""),
                       sqlite3_column_int(st, 13));
            if (sqlite3_column_type(st, 4) != SQLITE_NULL)
                append(out, cap, &n, "receipted  %lld, ledger index %lld\n",
                       (long long)sqlite3_column_int64(st, 4), (long long)sqlite3_column_int64(st, 3));
            /* After the receipt, if any: a discard at the broker comes after it */
            if (sqlite3_column_type(st, 11) != SQLITE_NULL)
                append(out, cap, &n, "refused    %s\n", text_or(st, 11, ""));
            if (sqlite3_column_type(st, 8) != SQLITE_NULL)
                append(out, cap, &n, "%-10s %lld %s\n%s\n",
                       sqlite3_column_int(st, 5) == 1 ? "ACCEPTED" : "REJECTED",
                       (long long)sqlite3_column_int64(st, 8), text_or(st, 6, ""), text_or(st, 7, ""));
        } else {
            append(out, cap, &n, "received   %lld\n%-10s %lld %s\n%s\n",
                   (long long)sqlite3_column_int64(st, 2), text_or(st, 1, "?"),
                   (long long)sqlite3_column_int64(st, 8), text_or(st, 6, ""), text_or(st, 7, ""));
        }
    }
    sqlite3_finalize(st);
    return RB_OK;
}
