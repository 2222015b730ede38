/* ledger.h -- the audit ledger: an append-only RFC 6962 Merkle tree of LedgerEvent leaves, stored in
 * SQLite with the hashes of its complete subtrees, and the signed checkpoints of it.
 *
 * The broker's database holds the ledger next to its other tables, and appends happen in the caller's
 * transaction, so an event and the state change it records commit together or not at all. An export is a
 * SQLite file with only these tables; referral-audit opens it with the same code. Appending costs one
 * leaf row and on average one node row; a root, an inclusion or a consistency proof at any size reads
 * O(log n) stored nodes, so nothing ever walks all leaves except a full verification. docs/LEDGER.md
 * gives the formats. */
#ifndef LEDGER_H
#define LEDGER_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "ledger.pb-c.h"
#include "ledger_events.h" /* the actions a leaf may name */
#include "merkle.h"
#include "note.h"
#include "rb_error.h"

#define LEDGER_VERSION  1
#define LEDGER_LEAF_MAX 65535 /* a tlog-tiles entry is length-prefixed with two bytes */

/* The ledger's tables (leaves, nodes, checkpoints, meta), as one SQL script. */
extern const char LEDGER_SCHEMA[];

typedef struct ledger ledger_t;

/* Opens the ledger in db (whose tables exist); db stays the caller's. */
rb_err ledger_open(ledger_t **out, sqlite3 *db);
void ledger_close(ledger_t **ledger_p);
/* Re-reads the size and right edge from the database: after a rollback undid appends. Until it succeeds
 * (ledger_append retries it), nothing is appended over a possibly wrong edge. */
rb_err ledger_reload(ledger_t *l);
uint64_t ledger_size(const ledger_t *l);

/* Sets e->version and e->index, serialises e and appends it; *index (may be NULL) receives its index.
 * RB_ERR_TOO_BIG when the leaf would exceed LEDGER_LEAF_MAX bytes. */
rb_err ledger_append(ledger_t *l, Rb__LedgerEvent *e, uint64_t *index);
/* Appends leaf bytes exactly as given (an import); they must parse as the next leaf (ledger_parse_leaf). */
rb_err ledger_append_leaf(ledger_t *l, const uint8_t *leaf, size_t len);

/* Parses leaf bytes strictly: a LedgerEvent of version 1 whose serialisation is exactly these bytes.
 * *out is the caller's (rb__ledger_event__free_unpacked). */
rb_err ledger_parse_leaf(const uint8_t *leaf, size_t len, Rb__LedgerEvent **out);

/* The leaf at index; *leaf is the caller's (free()). RB_ERR_USAGE when index >= size. */
rb_err ledger_leaf(ledger_t *l, uint64_t index, uint8_t **leaf, size_t *len);
/* Calls fn for each leaf of index from up to (not including) to, in order; stops at the first non-OK
 * result and returns it. */
typedef rb_err (*ledger_leaf_fn)(void *ctx, uint64_t index, const uint8_t *leaf, size_t len);
rb_err ledger_each_leaf(ledger_t *l, uint64_t from, uint64_t to, ledger_leaf_fn fn, void *ctx);
/* Hashes the first size stored leaves again, from their bytes, and compares the root with the one the stored
 * nodes give (which checkpoints are checked against): RB_ERR_HASH_MISMATCH when a leaf was rewritten under
 * them, *first_bad then the first leaf whose hash differs from the stored leaf hash (size when none does). */
rb_err ledger_verify_leaves(ledger_t *l, uint64_t size, uint64_t *first_bad);
/* Indexes of the leaves about one message, in order: *n receives how many (at most max). */
rb_err ledger_find_message(ledger_t *l, const uint8_t *message_id, uint64_t *indexes, size_t max, size_t *n);

/* The root of the tree of the first size leaves, and proofs in it (see merkle.h). */
rb_err ledger_root(ledger_t *l, uint64_t size, merkle_hash_t *out);
rb_err ledger_inclusion_proof(ledger_t *l, uint64_t index, uint64_t size, merkle_hash_t *proof, size_t *n);
rb_err ledger_consistency_proof(ledger_t *l, uint64_t size1, uint64_t size2, merkle_hash_t *proof, size_t *n);

/* The origin (and signed-note key name) of a broker's ledger: "referral-broker/<agency>/<name>". */
void ledger_origin(const card_t *broker, char out[NOTE_NAME_MAX + 1]);

/* Signs a checkpoint of the whole tree as it is now (in the caller's transaction) and stores it, unless
 * the latest stored one already has this size; either way note receives the latest (NUL-terminated) and
 * *len its length. Before signing, the tree must be provably consistent with the latest stored
 * checkpoint: RB_ERR_HASH_MISMATCH, and nothing signed, when it is not (the database was altered). */
rb_err ledger_checkpoint_now(ledger_t *l, const card_t *broker, const uint8_t sk[RB_SIGN_SK_BYTES],
                             int64_t at_ms, char note[NOTE_TEXT_MAX], size_t *len);
/* Stores a checkpoint note (NUL-terminated) as it is (an import). */
rb_err ledger_add_checkpoint(ledger_t *l, const char *note, uint64_t size, int64_t at_ms);
/* The latest checkpoint of size at most max_size (UINT64_MAX: the latest); *found false when none. */
rb_err ledger_latest_checkpoint(ledger_t *l, uint64_t max_size, bool *found, char note[NOTE_TEXT_MAX],
                                uint64_t *size);
/* Calls fn for each stored checkpoint, smallest first. */
typedef rb_err (*ledger_checkpoint_fn)(void *ctx, uint64_t size, int64_t at_ms, const char *note);
rb_err ledger_each_checkpoint(ledger_t *l, ledger_checkpoint_fn fn, void *ctx);

/* Named values beside the ledger: "broker_card" holds the broker's card text in exports. */
rb_err ledger_set_meta(ledger_t *l, const char *key, const char *value);
/* *value is the caller's (free()); NULL when the key is absent. */
rb_err ledger_get_meta(ledger_t *l, const char *key, char **value);

/* The stored hash of the complete subtree at this level (height; 0 = leaf hashes) and index at that level,
 * i.e. MTH(D[index << level : (index + 1) << level]): what tlog-tiles serves. RB_ERR_USAGE when that
 * subtree is not complete within the current size. */
rb_err ledger_node(ledger_t *l, int level, uint64_t index, merkle_hash_t *out);

#endif
