/* backup.h -- online backup of a running broker's database, made by the broker, fetched by an admin.
 *
 * The broker holds its database with an exclusive lock, so no other process can copy it. The broker
 * therefore makes the copy itself, with SQLite's online backup API from its own connection into a snapshot
 * file DATA/backups/snapshot-ID.db (directory 0700, file 0600): a few pages at a time from its loop, so
 * submissions and deliveries keep flowing, and a change the broker commits meanwhile is carried into the
 * copy by SQLite. The snapshot is then hashed (SHA-256) a few MiB per loop, and an admin fetches it with
 * signed, ledgered commands:
 *
 *   backup start           -> {"backup": ID, "state": "requested"}
 *   backup status ID       -> copying with pages done, then done with bytes and sha256 (or failed)
 *   backup read ID OFFSET  -> at most BACKUP_CHUNK_MAX bytes from OFFSET, base64
 *   backup end ID          -> the snapshot is deleted
 *
 * One backup at a time. A snapshot nobody asks about for BACKUP_IDLE_MS is deleted, and so is any snapshot
 * file a previous run of the broker left behind. The database holds the ledger, the parties and the sealed
 * envelopes (never plaintext), but not the broker's secret key: that is copied out of band (docs/ops).
 *
 * The broker side keeps its one backup in this module's state: the broker is one process with one
 * database, and admin.c reaches the backup through the store it executes commands on. */
#ifndef BACKUP_H
#define BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup_fetch.h"
#include "identity.h"
#include "out.h"
#include "rb_error.h"
#include "rbcrypto.h"
#include "store.h"

#define BACKUP_DIR        "backups"
#define BACKUP_IDLE_MS    (2 * 60 * 1000)   /* a snapshot nobody touched for this long is deleted */
#define BACKUP_STEP_PAGES 256               /* copied per loop turn: 1 MiB of 4 KiB pages */
#define BACKUP_HASH_BYTES (4 * 1024 * 1024) /* bytes hashed per loop turn at most */

/* --- the broker side ------------------------------------------------------------------------------------ */

/* Executes one "backup ..." admin command (admin.c calls it inside the command's transaction; nothing here
 * touches the database: "backup start" only registers the request, which the next backup_tick starts
 * outside any transaction). It writes to out, as every admin command does, the JSON answer or one line
 * saying why not. RB_ERR_USAGE for a bad command or argument, RB_ERR_CONFLICT when a
 * backup is already under way or the id is not the current backup's. */
rb_err backup_command(store_t *store, const char *command, char *const *argv, size_t argc, int64_t now_ms,
                      out_t *out);

/* The broker's loop calls this every turn, outside transactions: starts a requested backup, copies and
 * hashes a bounded amount, deletes an abandoned snapshot. Failures are kept for "backup status" and
 * logged; nothing here fails the broker. */
void backup_tick(store_t *store);
/* When backup_tick next has work, on the wall clock in milliseconds: at once while a backup is under way,
 * the idle timeout of a finished one, INT64_MAX when there is none. */
int64_t backup_deadline(void);

/* Abandons any backup (the broker is stopping): finishes SQLite's backup object, which must not outlive
 * the broker's connection, and deletes the snapshot. */
void backup_close(void);

#endif
