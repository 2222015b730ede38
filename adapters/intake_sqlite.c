/* intake_sqlite.c -- sink connector: files referrals into the State's Attorney's intake database.
 *
 * Normalised tables (schema below): one case per RD number and agency (the agency of the sender's verified
 * card, which the runtime has checked the referral names), with its persons, federal agents, evidence and
 * suggested charges, and one filing row per message, naming the sender, its agency and key id. A new referral opens a case under an
 * intake number PREFIX-YEAR-NNNNNN, gap-free within a year (the counter moves in the same transaction as
 * the case). A supplement replaces the case's details with its newer revision; a withdrawal marks the
 * case withdrawn (opening it, when the withdrawal overtook the referral). Filing is idempotent by message id: the filing row says a message is already in.
 *
 * The database belongs to the intake system, which reads it while the adapter writes, so it is opened
 * without an exclusive lock; when it is locked or read-only, filing fails and the runtime tries again
 * later, the envelope waiting in the inbox meanwhile. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapter.h"
#include "keyfile.h"
#include "sqldb.h"
#include "wire.h"

/* Its [intake-sqlite] section (the rows below). */
typedef struct {
    char database[4096];
    char prefix[9];
} intake_sqlite_conf_t;

struct connector {
    sqlite3 *db;
    char prefix[16];
    bool in_batch; /* a transaction is open over the filings since the last flush */
};

static const setting_t settings[] = {
    SETTING_TEXT_ROW("intake-sqlite", "database", intake_sqlite_conf_t, database, 1, NULL, NULL,
                     "the intake database, created when missing"),
    SETTING_TEXT_ROW("intake-sqlite", "prefix", intake_sqlite_conf_t, prefix, 1, "SAO", NULL,
                     "intake numbers PREFIX-YEAR-NNNNNN"),
    {0},
};

static const sqldb_step_t steps[] = {
    {.sql =
         "CREATE TABLE intake_counters(year INTEGER PRIMARY KEY, last INTEGER NOT NULL);"
         "CREATE TABLE cases("
         "  intake_number TEXT PRIMARY KEY,"
         "  agency TEXT NOT NULL, rd_number TEXT NOT NULL,"
         "  revision INTEGER NOT NULL,"
         "  status TEXT NOT NULL DEFAULT 'open',"
         "  occurred_at TEXT, address TEXT, beat TEXT, district TEXT, summary TEXT, narrative TEXT,"
         "  approved_by TEXT, approved_at TEXT, withdrawal_reason TEXT,"
         "  opened_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
         "  UNIQUE(agency, rd_number));"
         "CREATE TABLE filings("
         "  message_id TEXT PRIMARY KEY,"
         "  intake_number TEXT NOT NULL REFERENCES cases(intake_number),"
         "  kind TEXT NOT NULL, revision INTEGER NOT NULL, filed_ms INTEGER NOT NULL);"
         "CREATE TABLE persons(intake_number TEXT NOT NULL, person_ref TEXT, role TEXT, name TEXT, "
         "date_of_birth "
         "TEXT,"
         "  injuries TEXT);"
         "CREATE TABLE federal_agents(intake_number TEXT NOT NULL, agent_ref TEXT, agency TEXT, name TEXT,"
         "  badge_number TEXT, is_supervisor INTEGER, credential_result TEXT, recorded_on TEXT);"
         "CREATE TABLE evidence(intake_number TEXT NOT NULL, evidence_id TEXT, kind TEXT, sha256 TEXT,"
         "  storage_locator TEXT, preservation_hold_at TEXT);"
         "CREATE TABLE charges(intake_number TEXT NOT NULL, ilcs_citation TEXT, description TEXT, agent_refs "
         "TEXT);"},
    /* version 2: a supplement replaces a case's details by intake number; without these every filing
     * scanned the four tables whole (and so does the intake staff's every look at one case) */
    {.sql = "CREATE INDEX persons_case ON persons(intake_number);"
            "CREATE INDEX federal_agents_case ON federal_agents(intake_number);"
            "CREATE INDEX evidence_case ON evidence(intake_number);"
            "CREATE INDEX charges_case ON charges(intake_number);"},
    /* version 3: who sent each filing, as the adapter verified it (name, agency ORI and key id of the card
     * its signatures verified with); NULL in filings made before */
    {.sql = ("ALTER TABLE filings ADD COLUMN sender TEXT;"
             "ALTER TABLE filings ADD COLUMN sender_agency TEXT;"
             "ALTER TABLE filings ADD COLUMN sender_key_id TEXT;")},
};
const sqldb_schema_t intake_sqlite_schema = {"intake", steps, (int)(sizeof steps / sizeof steps[0])};

static rb_err sqlite_open(connector_t **out, adapter_t *a, const void *conf, char *err, size_t errlen)
{
    (void)a;
    const intake_sqlite_conf_t *set = conf;
    connector_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    snprintf(c->prefix, sizeof c->prefix, "%s", set->prefix);
    rb_err rc =
        sqldb_open(&c->db, set->database, SQLDB_CREATE | SQLDB_SHARED, &intake_sqlite_schema, err, errlen);
    if (rc != RB_OK) {
        free(c);
        return rc;
    }
    *out = c;
    return RB_OK;
}

static void sqlite_close(connector_t **c)
{
    if ((*c)->in_batch) /* never flushed: the runtime did not record these filings either */
        sqldb_exec((*c)->db, "ROLLBACK");
    sqlite3_close_v2((*c)->db);
    free(*c);
    *c = NULL;
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    return ev ? ev->name : "UNKNOWN";
}

/* A text column from the statement: the first row's value into out, or "" when none. */
static bool lookup(sqlite3_stmt *st, char *out, size_t cap)
{
    bool found = st != NULL && sqlite3_step(st) == SQLITE_ROW;
    snprintf(out, cap, "%s", found ? (const char *)sqlite3_column_text(st, 0) : "");
    sqlite3_finalize(st);
    return found;
}

/* The next intake number of this year, moving the counter (inside the caller's transaction). */
static rb_err next_intake_number(connector_t *c, char *out, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    int64_t year = tm.tm_year + 1900, last;
    rb_err rc = sqldb_run(sqldb_prepare(c->db,
                                        "INSERT INTO intake_counters(year, last) VALUES(?, 1) "
                                        "ON CONFLICT(year) DO UPDATE SET last = last + 1",
                                        "i", year));
    if (rc == RB_OK)
        rc = sqldb_int(sqldb_prepare(c->db, "SELECT last FROM intake_counters WHERE year = ?", "i", year),
                       &last);
    if (rc == RB_OK)
        snprintf(out, cap, "%s-%lld-%06lld", c->prefix, (long long)year, (long long)last);
    return rc;
}

/* Replaces the case's details with those of r; a case at revision 0 has none yet. */
static rb_err write_details(connector_t *c, const char *number, int64_t revision, const Rb__Referral *r)
{
    static const char *const tables[] = {"persons", "federal_agents", "evidence", "charges"};
    rb_err rc = RB_OK;
    for (size_t i = 0; rc == RB_OK && revision > 0 && i < 4; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE intake_number = ?", tables[i]);
        rc = sqldb_run(sqldb_prepare(c->db, sql, "t", number));
    }
    for (size_t i = 0; rc == RB_OK && i < r->n_civilians; i++) {
        const Rb__Civilian *p = r->civilians[i];
        char injuries[1024] = "";
        for (size_t j = 0; j < p->n_injuries; j++)
            snprintf(injuries + strlen(injuries), sizeof injuries - strlen(injuries), "%s%s: %s",
                     j ? "; " : "",
                     enum_name(&rb__injury_severity__descriptor, (int)p->injuries[j]->severity),
                     p->injuries[j]->description);
        rc = sqldb_run(sqldb_prepare(c->db, "INSERT INTO persons VALUES(?, ?, ?, ?, ?, ?)", "tttttt", number,
                                     p->person_ref, enum_name(&rb__civilian_role__descriptor, (int)p->role),
                                     p->name, p->date_of_birth, injuries));
    }
    for (size_t i = 0; rc == RB_OK && i < r->n_federal_agents; i++) {
        const Rb__FederalAgent *f = r->federal_agents[i];
        const Rb__CredentialCheck *cc = f->credential_check;
        rc = sqldb_run(
            sqldb_prepare(c->db, "INSERT INTO federal_agents VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                          "ttttti"
                          "tt",
                          number, f->agent_ref, enum_name(&rb__federal_agency__descriptor, (int)f->agency),
                          f->name, f->badge_number, (int64_t)f->is_supervisor,
                          cc ? enum_name(&rb__credential_result__descriptor, (int)cc->result) : NULL,
                          cc ? cc->recorded_on : NULL));
    }
    for (size_t i = 0; rc == RB_OK && i < r->n_evidence; i++) {
        const Rb__EvidenceItem *e = r->evidence[i];
        char sha[2 * RB_HASH_BYTES + 1] = "";
        if (e->sha256.len == RB_HASH_BYTES)
            keyfile_hex(e->sha256.data, RB_HASH_BYTES, sha);
        rc = sqldb_run(sqldb_prepare(c->db, "INSERT INTO evidence VALUES(?, ?, ?, ?, ?, ?)", "tttttt", number,
                                     e->evidence_id, enum_name(&rb__evidence_kind__descriptor, (int)e->kind),
                                     sha, e->storage_locator, e->preservation_hold_at));
    }
    for (size_t i = 0; rc == RB_OK && i < r->n_suggested_charges; i++) {
        const Rb__Charge *ch = r->suggested_charges[i];
        char refs[512] = "";
        for (size_t j = 0; j < ch->n_agent_refs; j++)
            snprintf(refs + strlen(refs), sizeof refs - strlen(refs), "%s%s", j ? "," : "",
                     ch->agent_refs[j]);
        rc = sqldb_run(sqldb_prepare(c->db, "INSERT INTO charges VALUES(?, ?, ?, ?)", "tttt", number,
                                     ch->ilcs_citation, ch->description, refs));
    }
    return rc;
}

static rb_err file_in_transaction(connector_t *c, const char *hex, Rb__Kind kind, const Rb__Referral *r,
                                  const card_t *sender, char *number, size_t cap, int64_t now)
{
    const Rb__Incident *in = r->incident;
    const Rb__SupervisorApproval *ap = r->approval;
    bool has_case =
        lookup(sqldb_prepare(c->db, "SELECT intake_number FROM cases WHERE agency = ? AND rd_number = ?",
                             "tt", sender->agency, r->rd_number),
               number, cap);
    rb_err rc = RB_OK;
    if (!has_case) {
        /* A withdrawal that overtook its referral opens the case too, already withdrawn, at revision 0:
         * the referral's details fill it when they come. */
        rc = next_intake_number(c, number, cap);
        if (rc == RB_OK)
            rc = sqldb_run(
                sqldb_prepare(c->db,
                              "INSERT INTO cases(intake_number, agency, rd_number, revision, opened_ms,"
                              " updated_ms) VALUES(?, ?, ?, 0, ?, ?)",
                              "tttii", number, sender->agency, r->rd_number, now, now));
    }
    if (rc == RB_OK && kind == RB__KIND__KIND_WITHDRAWAL) {
        rc = sqldb_run(
            sqldb_prepare(c->db,
                          "UPDATE cases SET status = 'withdrawn', withdrawal_reason = ?, updated_ms = ? "
                          "WHERE intake_number = ?",
                          "tit", r->withdrawal_reason, now, number));
    } else if (rc == RB_OK) {
        /* A later revision replaces the details; an older one arriving late changes nothing. */
        int64_t current = 0;
        rc =
            sqldb_int(sqldb_prepare(c->db, "SELECT revision FROM cases WHERE intake_number = ?", "t", number),
                      &current);
        if (rc == RB_OK && (int64_t)r->revision > current) {
            rc = sqldb_run(sqldb_prepare(
                c->db,
                "UPDATE cases SET revision = ?, occurred_at = ?, address = ?, beat = ?, "
                "district = ?, summary = ?, narrative = ?, approved_by = ?, approved_at = ?, "
                "updated_ms = ? WHERE intake_number = ?",
                "ittttttttit", (int64_t)r->revision, in ? in->occurred_at : NULL, in ? in->address : NULL,
                in ? in->beat : NULL, in ? in->district : NULL, in ? in->summary : NULL, r->narrative,
                ap ? ap->name : NULL, ap ? ap->approved_at : NULL, now, number));
            if (rc == RB_OK)
                rc = write_details(c, number, current, r);
        }
    }
    char key_id[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(sender->key_id, key_id);
    if (rc == RB_OK)
        rc = sqldb_run(
            sqldb_prepare(c->db,
                          "INSERT INTO filings(message_id, intake_number, kind, revision, filed_ms, "
                          "sender, sender_agency, sender_key_id) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                          "tttiittt", hex, number, enum_name(&rb__kind__descriptor, (int)kind),
                          (int64_t)r->revision, now, sender->name, sender->agency, key_id));
    return rc;
}

static rb_err sqlite_file(connector_t *c, const msg_id_t *id, Rb__Kind kind, const Rb__Referral *r,
                          const card_t *sender, char *intake_reference, size_t cap, char *err, size_t errlen)
{
    char hex[33];
    wire_id_hex(id->bytes, hex);
    /* Already filed (a crash after filing, before the inbox was updated): the same number again. */
    if (lookup(sqldb_prepare(c->db, "SELECT intake_number FROM filings WHERE message_id = ?", "t", hex),
               intake_reference, cap))
        return RB_OK;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    /* The filings of one pass over the inbox share a transaction, committed by sqlite_flush before the
     * runtime records them: one fsync a pass. Each filing is a savepoint, undone alone when it fails. */
    rb_err rc = RB_OK;
    if (c->in_batch && sqlite3_get_autocommit(c->db))
        rc = RB_ERR_IO; /* an error ended the batch, and the filings before this one with it: flush fails */
    else if (!c->in_batch && (rc = sqldb_exec(c->db, "BEGIN IMMEDIATE")) == RB_OK)
        c->in_batch = true;
    if (rc == RB_OK && (rc = sqldb_exec(c->db, "SAVEPOINT filing")) == RB_OK) {
        rc = file_in_transaction(c, hex, kind, r, sender, intake_reference, cap, now);
        if (rc != RB_OK)
            snprintf(err, errlen, "intake database: %s", sqlite3_errmsg(c->db));
        sqldb_exec(c->db, rc == RB_OK ? "RELEASE filing" : "ROLLBACK TO filing; RELEASE filing");
    } else if (rc != RB_OK) {
        snprintf(err, errlen, "intake database: %s", sqlite3_errmsg(c->db));
    }
    return rc;
}

static rb_err sqlite_flush(connector_t *c)
{
    if (!c->in_batch)
        return RB_OK;
    c->in_batch = false;
    if (sqlite3_get_autocommit(c->db))
        return RB_ERR_IO; /* ended by an error: its filings are gone */
    rb_err rc = sqldb_exec(c->db, "COMMIT");
    if (rc != RB_OK && !sqlite3_get_autocommit(c->db))
        sqldb_exec(c->db, "ROLLBACK");
    return rc;
}

const connector_ops_t intake_sqlite_connector = {
    .name = "intake-sqlite",
    .role = CARD_ROLE_SINK,
    .settings = settings,
    .settings_size = sizeof(intake_sqlite_conf_t),
    .open = sqlite_open,
    .file = sqlite_file,
    .flush = sqlite_flush,
    .close = sqlite_close,
};
