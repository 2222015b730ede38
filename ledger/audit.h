/* audit.h -- what an auditor does with a ledger export: open it (SQLite or JSON lines), write one, verify
 * every leaf, signature, tree and checkpoint, and replay the events into each message's timeline.
 * referral-audit is a thin command line over this; docs/LEDGER.md gives the formats and the checks. */
#ifndef AUDIT_H
#define AUDIT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "card.h"
#include "ledger.h"
#include "rb_error.h"

/* An opened export: its ledger and the broker card it names. */
typedef struct {
    sqlite3 *db;
    ledger_t *ledger;
    card_t broker;
} audit_export_t;

/* Opens an export: a SQLite file (read only) or a JSON-lines file (loaded into memory). err says what is
 * wrong (for JSON lines, with the line number). */
rb_err audit_open(audit_export_t *x, const char *path, char *err, size_t errlen);
void audit_close(audit_export_t *x);

typedef enum { AUDIT_SQLITE, AUDIT_JSONL } audit_format_t;

/* Writes an export of the first size leaves of l, the checkpoints up to size and the broker card (text
 * form) to path, which must not exist. */
rb_err audit_write(ledger_t *l, uint64_t size, const char *broker_card, audit_format_t format,
                   const char *path, char *err, size_t errlen);

typedef struct {
    uint64_t leaves, checkpoints, signatures; /* what was checked */
    uint64_t uncovered;                       /* leaves after the last checkpoint */
} audit_stats_t;

/* Verifies the export (docs/LEDGER.md, "Verification"); with signatures false, the envelope and admin
 * signatures are not checked (the tree and checkpoints always are). RB_ERR_INVALID with why naming the
 * first problem: the leaf index or checkpoint, what, expected and found. */
rb_err audit_verify(audit_export_t *x, bool signatures, audit_stats_t *stats, char *why, size_t whylen);

/* Rebuilds every message's timeline and final state, flags impossible sequences, prints totals and
 * time-to-ACK percentiles to out; with broker_db (a broker database, opened read only) also lists every
 * difference from its messages table. *problems receives how many flags and differences there were. */
rb_err audit_replay(audit_export_t *x, const char *broker_db, FILE *out, int *problems, char *err,
                    size_t errlen);

#endif
