/* restore.h -- puts a backup of a broker's database in place, after checking it.
 *
 * A backup is used only if a copy of it, made inside the data directory, passes PRAGMA integrity_check,
 * has a schema version this build knows, holds a ledger that verifies completely (every leaf, every
 * signature, every signed checkpoint, against the broker card in the ledger itself: audit.h), whose replay
 * agrees with the messages table, and whose every stored envelope is the one its "submitted" leaf names;
 * and if that card is the data directory's broker.card (and broker.secret's card) when those exist. The
 * checked copy is migrated to this build's schema and renamed into place as DIR/broker.db (0600); an
 * existing database is replaced only when asked, and then kept as broker.db.before-restore. */
#ifndef RESTORE_H
#define RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "card.h"
#include "rb_error.h"

/* What the restored database holds, for the operator to compare with what they expect. */
typedef struct {
    card_t broker;             /* the broker whose ledger this is */
    int schema_version;        /* of the backup, before migration */
    uint64_t ledger_size;      /* leaves */
    uint64_t checkpoint_size;  /* the latest signed checkpoint */
    int64_t checkpoint_ms;     /* when it was signed (0 if the store does not say) */
    char checkpoint_root[64];  /* its root hash, base64 as in the note */
    uint64_t signatures;       /* checked by the verification */
    int64_t queued, in_flight; /* messages waiting for delivery: never tried / delivered, unconfirmed */
    int64_t confirmed, dead;   /* delivered and confirmed; dead letters */
    int64_t awaiting_ack;      /* confirmed referrals without an ACK yet */
    int64_t parties;           /* registered adapters and admins */
    bool replaced;             /* an existing broker.db was moved to broker.db.before-restore */
} restore_summary_t;

/* Checks the backup at from and installs it as dir/broker.db (dir is created 0700 if missing). Refuses an
 * existing dir/broker.db unless force. On failure nothing in dir has changed and err says why:
 * RB_ERR_MALFORMED (integrity, not a broker database), RB_ERR_BAD_VERSION (newer schema), RB_ERR_INVALID
 * (the ledger or the envelopes do not verify), RB_ERR_KEY_MISMATCH (another broker's backup),
 * RB_ERR_EXISTS (a database is there; a broker is running on it), RB_ERR_IO. */
rb_err restore_backup(const char *from, const char *dir, bool force, restore_summary_t *out, char *err,
                      size_t errlen);

/* Prints what was restored, for the operator: broker, ledger, latest checkpoint, messages by state, and
 * what is still missing from dir before the broker can run there. */
void restore_print(const restore_summary_t *s, const char *from, const char *dir, FILE *out);

#endif
