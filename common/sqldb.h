/* sqldb.h -- what the broker's and the adapters' SQLite stores share: opening a database in WAL mode
 * with an exclusive lock and running its migrations, and binding statements without boilerplate. */
#ifndef SQLDB_H
#define SQLDB_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"

enum {
    SQLDB_CREATE = 1,    /* create the file if it does not exist */
    SQLDB_EXCLUSIVE = 2, /* hold the lock for the connection's lifetime (one process per database) */
    SQLDB_READONLY = 4,  /* look only: no locking mode, no migration (a status command) */
    SQLDB_SHARED = 8,    /* another system's database (the intake's): its group may keep its access */
};

/* One step of a schema, from version v to v + 1: its SQL, then, for what plain SQL cannot say (whether a
 * column a release left is there), a repair in C; either may be NULL. A released step is never edited:
 * a change is a new step (tests/system/schema_test.c holds each released layout). */
typedef struct {
    const char *sql;
    rb_err (*repair)(sqlite3 *db); /* RB_OK, or an error that undoes the whole migration */
} sqldb_step_t;

/* A database's schema: steps[v] takes it from version v to v + 1 (PRAGMA user_version), so the current
 * version is n_steps; `what` names the program in errors ("broker", "adapter"). */
typedef struct {
    const char *what;
    const sqldb_step_t *steps;
    int n_steps;
} sqldb_schema_t;

/* Opens path (see the flags) in WAL mode, synchronous=FULL, checked (quick_check), migrated and compared:
 * unless SQLDB_READONLY, first made private whatever the umask (fsmode.h): created 0600 before SQLite opens
 * it, since SQLite gives its -wal, -shm and -journal the database's mode, and the four tightened when they
 * exist more open (to 0600; with SQLDB_SHARED to 0660).
 * The steps a database lacks run in one transaction, with the comparison of its layout (sqldb_layout_diff)
 * to the one the steps make in a new database: on any difference nothing is changed. Refuses a newer
 * schema or a layout this build does not know (RB_ERR_BAD_VERSION; with SQLDB_SHARED, objects of the other
 * system's own are let be), a database without our schema when not creating (RB_ERR_MALFORMED), a corrupt
 * one and one in use (RB_ERR_IO); err says which, in one line. */
rb_err sqldb_open(sqlite3 **out, const char *path, int flags, const sqldb_schema_t *schema, char *err,
                  size_t errlen);

/* A new in-memory database made by the first `version` steps of schema, for comparing layouts with;
 * the caller closes it (sqldb_close). */
rb_err sqldb_reference(sqlite3 **out, const sqldb_schema_t *schema, int version);
/* Compares the tables, indexes, views and triggers of have with want's (type, name, table and the
 * statement that makes each, spaces and quotes aside): RB_OK when alike, else RB_ERR_BAD_VERSION and the
 * first difference in diff ("table envelopes missing", "index messages_due differs", "table x not
 * expected"; with extras_ok an object of have's own is no difference), or RB_ERR_IO. */
rb_err sqldb_layout_diff(sqlite3 *have, sqlite3 *want, bool extras_ok, char *diff, size_t difflen);
/* For repairs: whether table has column. */
bool sqldb_has_column(sqlite3 *db, const char *table, const char *column);
/* For repairs: makes index `name` as create_sql says, dropping one of that name made otherwise first. */
rb_err sqldb_ensure_index(sqlite3 *db, const char *name, const char *create_sql);

rb_err sqldb_exec(sqlite3 *db, const char *sql);

/* Prepares sql and binds its parameters from a format: 't' text, 'b' blob (pointer and int length; a NULL
 * pointer binds NULL), 'i' int64, 'n' NULL. NULL on failure. */
sqlite3_stmt *sqldb_prepare(sqlite3 *db, const char *sql, const char *fmt, ...);
/* Keeps the statements sqldb_prepare makes for db, on this thread, for the next call with the same SQL text
 * (the same address): every statement of db is then released with sqldb_done, and db closed with
 * sqldb_close. */
void sqldb_keep_statements(sqlite3 *db);
/* Releases a statement from sqldb_prepare: reset for next time when kept, else finalized. */
void sqldb_done(sqlite3_stmt *st);
/* Finalizes the statements kept for db and closes it. */
void sqldb_close(sqlite3 *db);
/* Steps a statement that returns no rows and releases it (sqldb_done): RB_ERR_CONFLICT on a constraint, RB_ERR_IO on
 * any other failure (disk full included). A NULL statement is RB_ERR_IO. */
rb_err sqldb_run(sqlite3_stmt *st);
/* Steps a statement that returns one integer and releases it (sqldb_done). */
rb_err sqldb_int(sqlite3_stmt *st, int64_t *out);

#endif
