/* sqldb.c -- shared SQLite plumbing (see sqldb.h). */
#include "sqldb.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fsmode.h"

/* Prepared statements kept for the databases that asked (sqldb_keep_statements): a broker turn runs the same
 * few dozen statements hundreds of times, and parsing them again each time was a quarter of its CPU. Keyed by
 * the SQL text's address (the callers pass literals); per thread, so that no lock is needed. */
#define KEPT_MAX 128
#define DBS_MAX  4
typedef struct {
    sqlite3 *db;
    const char *sql;
    sqlite3_stmt *st;
} kept_t;
static _Thread_local kept_t kept[KEPT_MAX];
static _Thread_local size_t n_kept;
static _Thread_local sqlite3 *keeping[DBS_MAX];

void sqldb_keep_statements(sqlite3 *db)
{
    for (size_t i = 0; i < DBS_MAX; i++)
        if (keeping[i] == NULL) {
            keeping[i] = db;
            return;
        }
}

void sqldb_close(sqlite3 *db)
{
    for (size_t i = 0; i < n_kept;)
        if (kept[i].db == db) {
            sqlite3_finalize(kept[i].st);
            kept[i] = kept[--n_kept];
        } else {
            i++;
        }
    for (size_t i = 0; i < DBS_MAX; i++)
        if (keeping[i] == db)
            keeping[i] = NULL;
    sqlite3_close_v2(db);
}

void sqldb_done(sqlite3_stmt *st)
{
    for (size_t i = 0; st != NULL && i < n_kept; i++)
        if (kept[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st);
}

/* A statement for sql, kept or new; NULL when it does not prepare. */
static sqlite3_stmt *statement(sqlite3 *db, const char *sql)
{
    bool keep = false;
    for (size_t i = 0; i < DBS_MAX; i++)
        keep |= db != NULL && keeping[i] == db;
    sqlite3_stmt *st = NULL;
    if (!keep)
        return sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK ? st : NULL;
    for (size_t i = 0; i < n_kept; i++)
        if (kept[i].db == db && kept[i].sql == sql) {
            /* In use further up the stack (rows still being read): this caller gets one of its own. */
            if (sqlite3_stmt_busy(kept[i].st))
                return sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK ? st : NULL;
            return kept[i].st;
        }
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    if (n_kept < KEPT_MAX)
        kept[n_kept++] = (kept_t){db, sql, st};
    return st;
}

rb_err sqldb_exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? RB_OK : RB_ERR_IO;
}

static int user_version(sqlite3 *db)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The last failure was another connection holding the database: it may pass. */
static bool busy(sqlite3 *db)
{
    return sqlite3_errcode(db) == SQLITE_BUSY || sqlite3_errcode(db) == SQLITE_LOCKED;
}

static rb_err fail(sqlite3 **db, rb_err rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static rb_err fail(sqlite3 **db, rb_err rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    sqldb_close(*db);
    *db = NULL;
    return rc;
}

/* The database and the files SQLite keeps beside it, private (sqldb.h). */
static rb_err make_private(const char *path, bool create, mode_t keep, char *err, size_t errlen)
{
    static const char *const sides[] = {"", "-wal", "-shm", "-journal"};
    rb_err rc = RB_OK;
    for (size_t i = 0; rc == RB_OK && i < sizeof sides / sizeof sides[0]; i++) {
        char side[4200];
        snprintf(side, sizeof side, "%s%s", path, sides[i]);
        rc = fsmode_file(side, create && i == 0, 0600, keep, err, errlen);
    }
    return rc;
}

/* Runs steps [from, to) of schema in db, inside the caller's transaction. */
static rb_err run_steps(sqlite3 *db, const sqldb_schema_t *schema, int from, int to, int *failed)
{
    for (int v = from; v < to; v++) {
        const sqldb_step_t *step = &schema->steps[v];
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version=%d;", v + 1);
        if ((step->sql != NULL && sqldb_exec(db, step->sql) != RB_OK) ||
            (step->repair != NULL && step->repair(db) != RB_OK) || sqldb_exec(db, bump) != RB_OK) {
            *failed = v + 1;
            return RB_ERR_IO;
        }
    }
    return RB_OK;
}

rb_err sqldb_reference(sqlite3 **out, const sqldb_schema_t *schema, int version)
{
    int failed;
    *out = NULL;
    if (sqlite3_open_v2(":memory:", out, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        run_steps(*out, schema, 0, version, &failed) != RB_OK) {
        sqldb_close(*out);
        *out = NULL;
        return RB_ERR_IO;
    }
    return RB_OK;
}

/* sql without what does not change its meaning: runs of spaces, spaces beside punctuation, and the quotes
 * of identifiers (SQLite quotes a renamed table's name, and keeps the spacing a statement was written
 * with, in which migrations of one layout differ). Literals ('...') are kept as they are. */
static void normalise(const char *sql, char *out, size_t cap)
{
    size_t n = 0;
    bool space = false, literal = false;
    for (const char *p = sql ? sql : ""; *p != '\0' && n + 2 < cap; p++) {
        char c = *p;
        if (c == '\'')
            literal = !literal;
        if (!literal && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            space = n > 0;
            continue;
        }
        if (!literal && c == '"')
            continue;
        bool punct = !literal && (c == '(' || c == ')' || c == ',' || c == ';');
        if (space && !punct && !(n > 0 && (out[n - 1] == '(' || out[n - 1] == ',')))
            out[n++] = ' ';
        space = false;
        out[n++] = c;
    }
    out[n] = '\0';
}

static sqlite3_stmt *layout(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db,
                       "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' "
                       "ESCAPE '\\' ORDER BY type, name",
                       -1, &st, NULL);
    return st;
}

static const char *column(sqlite3_stmt *st, int i)
{
    const char *text = (const char *)sqlite3_column_text(st, i);
    return text ? text : "";
}

/* -1, 0 or 1 as the row of a (type, name) comes before, with or after b's; a finished side comes last. */
static int order(sqlite3_stmt *a, bool a_row, sqlite3_stmt *b, bool b_row)
{
    if (!a_row || !b_row)
        return a_row ? -1 : b_row ? 1 : 0;
    int c = strcmp(column(a, 0), column(b, 0));
    return c != 0 ? c : strcmp(column(a, 1), column(b, 1));
}

rb_err sqldb_layout_diff(sqlite3 *have, sqlite3 *want, bool extras_ok, char *diff, size_t difflen)
{
    sqlite3_stmt *h = layout(have), *w = layout(want);
    rb_err rc = h != NULL && w != NULL ? RB_OK : RB_ERR_IO;
    bool h_row = rc == RB_OK && sqlite3_step(h) == SQLITE_ROW,
         w_row = rc == RB_OK && sqlite3_step(w) == SQLITE_ROW;
    while (rc == RB_OK && (h_row || w_row)) {
        int c = order(h, h_row, w, w_row);
        if (c > 0) {
            snprintf(diff, difflen, "%s %s missing", column(w, 0), column(w, 1));
            rc = RB_ERR_BAD_VERSION;
        } else if (c < 0 && !extras_ok) {
            snprintf(diff, difflen, "%s %s not expected", column(h, 0), column(h, 1));
            rc = RB_ERR_BAD_VERSION;
        } else if (c == 0) {
            char a[4096], b[4096];
            normalise(column(h, 3), a, sizeof a);
            normalise(column(w, 3), b, sizeof b);
            if (strcmp(column(h, 2), column(w, 2)) != 0 || strcmp(a, b) != 0) {
                snprintf(diff, difflen, "%s %s differs", column(w, 0), column(w, 1));
                rc = RB_ERR_BAD_VERSION;
            }
        }
        if (rc == RB_OK && c <= 0)
            h_row = sqlite3_step(h) == SQLITE_ROW;
        if (rc == RB_OK && c >= 0)
            w_row = sqlite3_step(w) == SQLITE_ROW;
    }
    sqlite3_finalize(h);
    sqlite3_finalize(w);
    return rc;
}

bool sqldb_has_column(sqlite3 *db, const char *table, const char *column_name)
{
    int64_t n = 0;
    return sqldb_int(sqldb_prepare(db, "SELECT count(*) FROM pragma_table_info(?) WHERE name = ?", "tt",
                                   table, column_name),
                     &n) == RB_OK &&
           n > 0;
}

rb_err sqldb_ensure_index(sqlite3 *db, const char *name, const char *create_sql)
{
    sqlite3_stmt *st =
        sqldb_prepare(db, "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", "t", name);
    if (st == NULL)
        return RB_ERR_IO;
    char have[4096] = "", want[4096];
    bool found = sqlite3_step(st) == SQLITE_ROW;
    if (found)
        normalise(column(st, 0), have, sizeof have);
    sqldb_done(st);
    normalise(create_sql, want, sizeof want);
    if (found && strcmp(have, want) == 0)
        return RB_OK;
    char drop[256];
    snprintf(drop, sizeof drop, "DROP INDEX IF EXISTS \"%s\"", name);
    return sqldb_exec(db, drop) == RB_OK ? sqldb_exec(db, create_sql) : RB_ERR_IO;
}

rb_err sqldb_open(sqlite3 **out, const char *path, int flags, const sqldb_schema_t *schema, char *err,
                  size_t errlen)
{
    sqlite3 *db = NULL;
    *out = NULL;
    bool create = flags & SQLDB_CREATE, readonly = flags & SQLDB_READONLY;
    const char *what = schema->what;
    int n = schema->n_steps;
    if (!readonly && make_private(path, create, flags & SQLDB_SHARED ? 0660 : 0600, err, errlen) != RB_OK)
        return RB_ERR_IO;
    int open_flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                     (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2(path, &db, open_flags, NULL) != SQLITE_OK)
        return fail(&db, RB_ERR_IO, err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_busy_timeout(db, readonly ? 2000 : 0);
    /* With SQLDB_EXCLUSIVE the lock is held for the connection's lifetime: a second process fails here.
     * temp_store=MEMORY keeps the sub-journal of a transaction's savepoints in memory: on disk (SQLite
     * spills it past 64 KiB) it was half the broker's write calls. It holds the pages one transaction
     * changed, so it is bounded by the group commit, not by the store. */
    const char *setup =
        flags & SQLDB_EXCLUSIVE
            ? "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
              "PRAGMA temp_store=MEMORY; BEGIN IMMEDIATE; COMMIT;"
            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY;";
    if (!readonly && sqldb_exec(db, setup) != RB_OK)
        return fail(&db, busy(db) ? RB_ERR_BUSY : RB_ERR_IO, err, errlen, "%s: %s (is another %s using it?)",
                    path, sqlite3_errmsg(db), what);
    if (sqldb_exec(db, "PRAGMA quick_check") != RB_OK)
        return fail(&db, RB_ERR_MALFORMED, err, errlen, "%s: database is corrupt: %s", path,
                    sqlite3_errmsg(db));
    int version = user_version(db);
    if (version < 0 || version > n)
        return fail(&db, RB_ERR_BAD_VERSION, err, errlen,
                    "%s: schema version %d is newer than this %s knows (%d)", path, version, what, n);
    if (version == 0 && !create)
        return fail(&db, RB_ERR_MALFORMED, err, errlen, "%s: not a %s database", path, what);
    if (readonly && version != n)
        return fail(&db, RB_ERR_BAD_VERSION, err, errlen, "%s: schema version %d, this %s needs %d", path,
                    version, what, n);
    int failed = 0;
    /* A step that fails for want of room or of the lock may pass; one whose SQL fails on this database
     * will fail again (a layout no release made). */
    if (version < n &&
        (sqldb_exec(db, "BEGIN") != RB_OK || run_steps(db, schema, version, n, &failed) != RB_OK))
        return fail(&db,
                    busy(db) ? RB_ERR_BUSY
                    : sqlite3_errcode(db) == SQLITE_FULL || sqlite3_errcode(db) == SQLITE_IOERR
                        ? RB_ERR_IO
                        : RB_ERR_BAD_VERSION,
                    err, errlen, "%s: migration to version %d failed: %s", path, failed, sqlite3_errmsg(db));
    /* The layout is compared whatever the version said: a release that changed a version in place left
     * databases that claim it and are not it (issue #19: queued referrals never delivered). */
    sqlite3 *want = NULL;
    char diff[256] = "";
    rb_err rc = sqldb_reference(&want, schema, n);
    if (rc == RB_OK)
        rc = sqldb_layout_diff(db, want, flags & SQLDB_SHARED, diff, sizeof diff);
    sqldb_close(want);
    if (rc != RB_OK) { /* closing without COMMIT undoes the migration: the file is left as it was */
        char at[64];
        snprintf(at, sizeof at, version < n ? "%d (migrating to %d)" : "%d", version, n);
        return fail(&db, rc == RB_ERR_BAD_VERSION ? rc : RB_ERR_IO, err, errlen,
                    "%s: schema version %s has a layout this %s does not know (%s): restore the backup taken "
                    "before the upgrade, or see docs/OPERATIONS.md \"Upgrading\"",
                    path, at, what, rc == RB_ERR_BAD_VERSION ? diff : "unreadable");
    }
    if (version < n && sqldb_exec(db, "COMMIT") != RB_OK)
        return fail(&db, RB_ERR_IO, err, errlen, "%s: migration to version %d failed: %s", path, n,
                    sqlite3_errmsg(db));
    *out = db;
    return RB_OK;
}

sqlite3_stmt *sqldb_prepare(sqlite3 *db, const char *sql, const char *fmt, ...)
{
    sqlite3_stmt *st = statement(db, sql);
    if (st == NULL)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = SQLITE_OK;
    for (int i = 1; *fmt && rc == SQLITE_OK; fmt++, i++) {
        if (*fmt == 't') {
            rc = sqlite3_bind_text(st, i, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        } else if (*fmt == 'b') {
            const void *p = va_arg(ap, const void *);
            int n = va_arg(ap, int);
            rc = p ? sqlite3_bind_blob(st, i, p, n, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
        } else if (*fmt == 'i') {
            rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
        } else {
            rc = sqlite3_bind_null(st, i);
        }
    }
    va_end(ap);
    if (rc != SQLITE_OK) {
        sqldb_done(st);
        return NULL;
    }
    return st;
}

rb_err sqldb_run(sqlite3_stmt *st)
{
    if (st == NULL)
        return RB_ERR_IO;
    int rc = sqlite3_step(st);
    sqldb_done(st);
    if (rc == SQLITE_CONSTRAINT)
        return RB_ERR_CONFLICT;
    return rc == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

rb_err sqldb_int(sqlite3_stmt *st, int64_t *out)
{
    if (st == NULL)
        return RB_ERR_IO;
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqldb_done(st);
    return rc == SQLITE_ROW ? RB_OK : RB_ERR_IO;
}
