/* backup_fetch.h -- the admin's side of the online backup: fetches a snapshot of a running broker's
 * database through the client, with signed, ledgered "backup ..." commands (the broker's side, and the
 * commands themselves, are in broker/backup.h). */
#ifndef BACKUP_FETCH_H
#define BACKUP_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "identity.h"
#include "rb_error.h"
#include "rbcrypto.h"

#define BACKUP_CHUNK_MAX (512 * 1024) /* one read: base64 of it fits a frame with room to spare */

/* What backup_fetch wrote. */
typedef struct {
    char id[17];                        /* the broker's backup id */
    uint64_t bytes;                     /* size of the file */
    char sha256[2 * RB_HASH_BYTES + 1]; /* hex, as the broker computed it and as checked here */
    int64_t ledger_leaves;              /* leaves of the ledger in the copy */
    int64_t messages;                   /* messages in the copy */
    int64_t ms;                         /* from "backup start" to the file in place */
} backup_fetched_t;

/* Asks the broker at the other end of client for a backup and writes it to path (which must not exist):
 * start, wait for the snapshot, read it in chunks into a temporary file (0600) beside path, check its
 * size and SHA-256 against the broker's and PRAGMA integrity_check, then link it into place. The snapshot
 * is ended on the broker whatever happens once it was started. On failure nothing is left at path and err
 * says why: RB_ERR_EXISTS (path exists), RB_ERR_CONFLICT (the broker refused: another backup is under way),
 * RB_ERR_IO, RB_ERR_HASH_MISMATCH or RB_ERR_MALFORMED (the copy does not check). */
rb_err backup_fetch(client_t *client, const identity_t *admin, const char *path, int timeout_ms,
                    backup_fetched_t *out, char *err, size_t errlen);

#endif
