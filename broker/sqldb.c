/* sqldb.c -- shared SQLite plumbing (see sqldb.h). */
#include "sqldb.h"

#include <stdarg.h>
#include <stdio.h>

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

rb_err sqldb_open(sqlite3 **out, const char *path, int flags, const char *const *migrations, int n_migrations,
                  const char *what, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    *out = NULL;
    bool create = flags & SQLDB_CREATE, readonly = flags & SQLDB_READONLY;
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
        return fail(&db, RB_ERR_IO, err, errlen, "%s: %s (is another %s using it?)", path, sqlite3_errmsg(db),
                    what);
    if (sqldb_exec(db, "PRAGMA quick_check") != RB_OK)
        return fail(&db, RB_ERR_MALFORMED, err, errlen, "%s: database is corrupt: %s", path,
                    sqlite3_errmsg(db));
    int version = user_version(db);
    if (version < 0 || version > n_migrations)
        return fail(&db, RB_ERR_BAD_VERSION, err, errlen,
                    "%s: schema version %d is newer than this %s knows (%d)", path, version, what,
                    n_migrations);
    if (version == 0 && !create)
        return fail(&db, RB_ERR_MALFORMED, err, errlen, "%s: not a %s database", path, what);
    if (readonly && version != n_migrations)
        return fail(&db, RB_ERR_BAD_VERSION, err, errlen, "%s: schema version %d, this %s needs %d", path,
                    version, what, n_migrations);
    for (int v = version; v < n_migrations; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version=%d;", v + 1);
        if (sqldb_exec(db, "BEGIN") != RB_OK || sqldb_exec(db, migrations[v]) != RB_OK ||
            sqldb_exec(db, bump) != RB_OK || sqldb_exec(db, "COMMIT") != RB_OK)
            return fail(&db, RB_ERR_IO, err, errlen, "%s: migration to version %d failed: %s", path, v + 1,
                        sqlite3_errmsg(db));
    }
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
