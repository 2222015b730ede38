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

/* Opens path (see the flags) in WAL mode, synchronous=FULL, checked (quick_check) and migrated:
 * unless SQLDB_READONLY, first made private whatever the umask (fsmode.h): created 0600 before SQLite opens
 * it, since SQLite gives its -wal, -shm and -journal the database's mode, and the four tightened when they
 * exist more open (to 0600; with SQLDB_SHARED to 0660).
 * migrations[v] takes the schema from version v to v + 1 (PRAGMA user_version). Refuses a newer schema
 * (RB_ERR_BAD_VERSION), a database without our schema when not creating (RB_ERR_MALFORMED), a corrupt one
 * and one in use (RB_ERR_IO); `what` names the program in err ("broker", "adapter"). */
rb_err sqldb_open(sqlite3 **out, const char *path, int flags, const char *const *migrations, int n_migrations,
                  const char *what, char *err, size_t errlen);

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
