/* ledger.c -- the audit ledger's storage (see ledger.h).
 *
 * ledger_nodes holds the hash of every complete subtree, keyed by level * 2^48 + index at that level
 * (level 0 holds the leaf hashes), which is exactly what tlog-tiles calls the hashes of the tree. The
 * right edge (merkle_frontier_t) lives in memory so that an append hashes without reading; it is re-read
 * from the database after a rollback, since the database is the truth.
 *
 * A proof needs about log n subtree hashes, each a read (a complete subtree) or about log n reads and hashes
 * (an incomplete one, computed from the complete ones); the receipts of one group commit all prove against
 * the same tree, and mostly the same nodes of it, so the hashes read or computed are remembered (forgotten
 * whenever a rollback may have taken leaves back). */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqldb.h"

const char LEDGER_SCHEMA[] =
    "CREATE TABLE ledger_leaves("
    "  idx INTEGER PRIMARY KEY,"
    "  at_ms INTEGER NOT NULL,"
    "  action TEXT NOT NULL,"
    "  message_id BLOB,"
    "  leaf BLOB NOT NULL);"
    "CREATE INDEX ledger_leaves_message ON ledger_leaves(message_id) WHERE message_id IS NOT NULL;"
    "CREATE TABLE ledger_nodes(id INTEGER PRIMARY KEY, hash BLOB NOT NULL);"
    "CREATE TABLE ledger_checkpoints(size INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, note TEXT NOT NULL);"
    "CREATE TABLE ledger_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

#define LEVEL_SHIFT 48 /* node id = level << 48 | index: room for 2^48 leaves */

#define SUBTREES 4096 /* remembered subtree hashes, direct-mapped */

typedef struct {
    uint64_t lo, hi; /* hi == 0: empty */
    merkle_hash_t hash;
} subtree_memo_t;

struct ledger {
    sqlite3 *db;
    subtree_memo_t memo[SUBTREES];
    merkle_frontier_t edge; /* the stored tree's right edge; edge.size is the ledger's size */
    rb_err append_rc;       /* the first failure while storing the nodes of one append */
    bool stale;             /* edge not re-read since a rollback: no append until it is */
};

static int64_t node_id(int level, uint64_t index)
{
    return (int64_t)(((uint64_t)level << LEVEL_SHIFT) | index);
}

static rb_err get_node(ledger_t *l, int level, uint64_t index, merkle_hash_t *out)
{
    sqlite3_stmt *st =
        sqldb_prepare(l->db, "SELECT hash FROM ledger_nodes WHERE id = ?", "i", node_id(level, index));
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    rb_err rc = step == SQLITE_ROW && sqlite3_column_bytes(st, 0) == MERKLE_HASH_BYTES ? RB_OK
                : step == SQLITE_ROW || step == SQLITE_DONE                            ? RB_ERR_MALFORMED
                                                                                       : RB_ERR_IO;
    if (rc == RB_OK)
        memcpy(out->bytes, sqlite3_column_blob(st, 0), MERKLE_HASH_BYTES);
    sqldb_done(st);
    return rc;
}

static rb_err put_node(ledger_t *l, int level, uint64_t index, const merkle_hash_t *hash)
{
    return sqldb_run(sqldb_prepare(l->db, "INSERT INTO ledger_nodes(id, hash) VALUES(?, ?)", "ib",
                                   node_id(level, index), hash->bytes, MERKLE_HASH_BYTES));
}

rb_err ledger_reload(ledger_t *l)
{
    int64_t last;
    l->stale = true;
    memset(l->memo, 0, sizeof l->memo); /* a rollback may have taken leaves they cover back */
    rb_err rc =
        sqldb_int(sqldb_prepare(l->db, "SELECT coalesce(max(idx), -1) FROM ledger_leaves", ""), &last);
    if (rc != RB_OK)
        return rc;
    memset(&l->edge, 0, sizeof l->edge);
    uint64_t size = (uint64_t)(last + 1), offset = 0;
    int n = 0;
    for (int level = 63; level >= 0; level--) {
        if (!(size >> level & 1))
            continue;
        if ((rc = get_node(l, level, offset >> level, &l->edge.hashes[n++])) != RB_OK)
            return rc;
        offset += (uint64_t)1 << level;
    }
    l->edge.size = size;
    l->stale = false;
    return RB_OK;
}

rb_err ledger_open(ledger_t **out, sqlite3 *db)
{
    *out = NULL;
    ledger_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return RB_ERR_NOMEM;
    l->db = db;
    rb_err rc = ledger_reload(l);
    if (rc != RB_OK) {
        free(l);
        return rc;
    }
    *out = l;
    return RB_OK;
}

void ledger_close(ledger_t **ledger_p)
{
    if (ledger_p != NULL) {
        free(*ledger_p);
        *ledger_p = NULL;
    }
}

uint64_t ledger_size(const ledger_t *l)
{
    return l->edge.size;
}

rb_err ledger_parse_leaf(const uint8_t *leaf, size_t len, Rb__LedgerEvent **out)
{
    *out = NULL;
    if (len > LEDGER_LEAF_MAX)
        return RB_ERR_TOO_BIG;
    Rb__LedgerEvent *e = rb__ledger_event__unpack(NULL, len, leaf);
    if (e == NULL)
        return RB_ERR_MALFORMED;
    if (e->version != LEDGER_VERSION) {
        rb__ledger_event__free_unpacked(e, NULL);
        return RB_ERR_BAD_VERSION;
    }
    /* Canonical only: the bytes must be what this event serialises to (no repeated fields, no other field
     * order) and hold no field this version does not know (protobuf-c would keep and re-serialise one),
     * so that one event has one leaf hash and every byte of it means something. */
    bool canonical = rb__ledger_event__get_packed_size(e) == len;
    if (canonical && len > 0) {
        uint8_t *again = malloc(len);
        canonical = again != NULL && rb__ledger_event__pack(e, again) == len && memcmp(again, leaf, len) == 0;
        free(again);
    }
    if (!canonical || e->base.n_unknown_fields != 0 || (e->message_id.len != 0 && e->message_id.len != 16)) {
        rb__ledger_event__free_unpacked(e, NULL);
        return RB_ERR_MALFORMED;
    }
    *out = e;
    return RB_OK;
}

static void store_merged(void *ctx, int level, uint64_t index, const merkle_hash_t *hash)
{
    ledger_t *l = ctx;
    if (l->append_rc == RB_OK)
        l->append_rc = put_node(l, level, index, hash);
}

/* Stores leaf bytes whose parsed form is e, at the end. */
static rb_err append(ledger_t *l, const Rb__LedgerEvent *e, const uint8_t *leaf, size_t len)
{
    if (l->stale)
        return RB_ERR_IO;
    if (e->index != l->edge.size)
        return RB_ERR_USAGE;
    rb_err rc = sqldb_run(sqldb_prepare(
        l->db, "INSERT INTO ledger_leaves(idx, at_ms, action, message_id, leaf) VALUES(?, ?, ?, ?, ?)",
        "iitbb", (int64_t)e->index, e->at_ms, e->action, e->message_id.len ? e->message_id.data : NULL,
        (int)e->message_id.len, leaf, (int)len));
    merkle_hash_t hash;
    merkle_leaf_hash(leaf, len, &hash);
    if (rc == RB_OK)
        rc = put_node(l, 0, e->index, &hash);
    if (rc != RB_OK)
        return rc;
    merkle_frontier_t before = l->edge;
    l->append_rc = RB_OK;
    merkle_frontier_append(&l->edge, &hash, store_merged, l);
    if (l->append_rc != RB_OK)
        l->edge = before;
    return l->append_rc;
}

rb_err ledger_append(ledger_t *l, Rb__LedgerEvent *e, uint64_t *index)
{
    if (l->stale && ledger_reload(l) != RB_OK)
        return RB_ERR_IO;
    e->version = LEDGER_VERSION;
    e->index = l->edge.size;
    size_t len = rb__ledger_event__get_packed_size(e);
    if (len > LEDGER_LEAF_MAX)
        return RB_ERR_TOO_BIG;
    uint8_t *leaf = malloc(len ? len : 1);
    if (leaf == NULL)
        return RB_ERR_NOMEM;
    rb__ledger_event__pack(e, leaf);
    rb_err rc = append(l, e, leaf, len);
    free(leaf);
    if (rc == RB_OK && index != NULL)
        *index = e->index;
    return rc;
}

rb_err ledger_append_leaf(ledger_t *l, const uint8_t *leaf, size_t len)
{
    Rb__LedgerEvent *e;
    rb_err rc = ledger_parse_leaf(leaf, len, &e);
    if (rc != RB_OK)
        return rc;
    rc = append(l, e, leaf, len);
    rb__ledger_event__free_unpacked(e, NULL);
    return rc;
}

rb_err ledger_leaf(ledger_t *l, uint64_t index, uint8_t **leaf, size_t *len)
{
    *leaf = NULL;
    if (index >= l->edge.size)
        return RB_ERR_USAGE;
    sqlite3_stmt *st =
        sqldb_prepare(l->db, "SELECT leaf FROM ledger_leaves WHERE idx = ?", "i", (int64_t)index);
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_ERR_IO;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        if ((*leaf = malloc(*len ? *len : 1)) != NULL) {
            memcpy(*leaf, sqlite3_column_blob(st, 0), *len);
            rc = RB_OK;
        } else {
            rc = RB_ERR_NOMEM;
        }
    }
    sqldb_done(st);
    return rc;
}

rb_err ledger_each_leaf(ledger_t *l, uint64_t from, uint64_t to, ledger_leaf_fn fn, void *ctx)
{
    sqlite3_stmt *st =
        sqldb_prepare(l->db, "SELECT idx, leaf FROM ledger_leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                      "ii", (int64_t)from, (int64_t)(to > INT64_MAX ? INT64_MAX : to));
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(ctx, (uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
                (size_t)sqlite3_column_bytes(st, 1));
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqldb_done(st);
    return rc;
}

typedef struct {
    ledger_t *l;
    merkle_frontier_t frontier;
    uint64_t expected;  /* the next index */
    bool find;          /* the second pass: look for the first leaf whose stored hash differs */
    uint64_t first_bad; /* a leaf missing, or found to differ */
} rehash_t;

static rb_err rehash_leaf(void *ctx, uint64_t index, const uint8_t *leaf, size_t len)
{
    rehash_t *r = ctx;
    merkle_hash_t h, stored;
    if (index != r->expected) { /* a leaf missing from the sequence */
        r->first_bad = r->expected;
        return RB_ERR_HASH_MISMATCH;
    }
    r->expected++;
    merkle_leaf_hash(leaf, len, &h);
    if (!r->find) {
        merkle_frontier_append(&r->frontier, &h, NULL, NULL);
        return RB_OK;
    }
    if (ledger_node(r->l, 0, index, &stored) != RB_OK ||
        memcmp(h.bytes, stored.bytes, MERKLE_HASH_BYTES) != 0) {
        r->first_bad = index;
        return RB_ERR_HASH_MISMATCH; /* found: the pass stops here */
    }
    return RB_OK;
}

rb_err ledger_verify_leaves(ledger_t *l, uint64_t size, uint64_t *first_bad)
{
    *first_bad = size;
    if (size == 0)
        return RB_OK;
    rehash_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return RB_ERR_NOMEM;
    r->l = l;
    r->first_bad = size;
    merkle_hash_t from_leaves, from_nodes;
    rb_err rc = ledger_each_leaf(l, 0, size, rehash_leaf, r);
    if (rc == RB_OK && r->expected != size) { /* leaves missing at the end */
        r->first_bad = r->expected;
        rc = RB_ERR_HASH_MISMATCH;
    }
    if (rc == RB_OK && (rc = ledger_root(l, size, &from_nodes)) == RB_OK) {
        merkle_frontier_root(&r->frontier, &from_leaves);
        if (memcmp(from_leaves.bytes, from_nodes.bytes, MERKLE_HASH_BYTES) != 0) {
            /* A second pass, only now: which leaf it is, for the operator. */
            r->find = true;
            r->expected = 0;
            ledger_each_leaf(l, 0, size, rehash_leaf, r);
            rc = RB_ERR_HASH_MISMATCH;
        }
    }
    if (rc == RB_ERR_HASH_MISMATCH)
        *first_bad = r->first_bad;
    free(r);
    return rc;
}

rb_err ledger_find_message(ledger_t *l, const uint8_t *message_id, uint64_t *indexes, size_t max, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st =
        sqldb_prepare(l->db, "SELECT idx FROM ledger_leaves WHERE message_id = ? ORDER BY idx LIMIT ?", "bi",
                      message_id, 16, (int64_t)max);
    if (st == NULL)
        return RB_ERR_IO;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        indexes[(*n)++] = (uint64_t)sqlite3_column_int64(st, 0);
    sqldb_done(st);
    return step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
}

/* MTH(D[lo:hi]) from the stored complete subtrees: one read when [lo, hi) is one, else split as RFC 6962
 * does (its left part always is one). */
static rb_err subtree(void *ctx, uint64_t lo, uint64_t hi, merkle_hash_t *out)
{
    ledger_t *l = ctx;
    uint64_t n = hi - lo;
    if (hi > l->edge.size || n == 0)
        return RB_ERR_USAGE;
    subtree_memo_t *m = &l->memo[(lo * 0x9e3779b97f4a7c15ULL ^ hi) % SUBTREES];
    if (m->hi == hi && m->lo == lo) {
        *out = m->hash;
        return RB_OK;
    }
    rb_err rc;
    /* NOLINTNEXTLINE(clang-analyzer-core.DivideZero): n is not 0 here (above); the analyzer forgets it */
    if ((n & (n - 1)) == 0 && lo % n == 0) {
        rc = get_node(l, __builtin_ctzll(n), lo / n, out);
    } else {
        uint64_t k = 1;
        while (k << 1 < n)
            k <<= 1;
        merkle_hash_t left, right;
        rc = subtree(l, lo, lo + k, &left);
        if (rc == RB_OK)
            rc = subtree(l, lo + k, hi, &right);
        if (rc == RB_OK)
            merkle_node_hash(&left, &right, out);
    }
    if (rc == RB_OK)
        *m = (subtree_memo_t){lo, hi, *out};
    return rc;
}

rb_err ledger_root(ledger_t *l, uint64_t size, merkle_hash_t *out)
{
    if (size > l->edge.size)
        return RB_ERR_USAGE;
    if (size == l->edge.size) {
        merkle_frontier_root(&l->edge, out);
        return RB_OK;
    }
    if (size == 0) {
        merkle_root(NULL, 0, out);
        return RB_OK;
    }
    return subtree(l, 0, size, out);
}

rb_err ledger_inclusion_proof(ledger_t *l, uint64_t index, uint64_t size, merkle_hash_t *proof, size_t *n)
{
    *n = 0;
    if (size > l->edge.size)
        return RB_ERR_USAGE;
    return merkle_inclusion_proof(subtree, l, size, index, proof, n);
}

rb_err ledger_consistency_proof(ledger_t *l, uint64_t size1, uint64_t size2, merkle_hash_t *proof, size_t *n)
{
    *n = 0;
    if (size2 > l->edge.size)
        return RB_ERR_USAGE;
    return merkle_consistency_proof(subtree, l, size1, size2, proof, n);
}

void ledger_origin(const card_t *broker, char out[NOTE_NAME_MAX + 1])
{
    snprintf(out, NOTE_NAME_MAX + 1, "referral-broker/%s/%s", broker->agency, broker->name);
}

rb_err ledger_add_checkpoint(ledger_t *l, const char *note, uint64_t size, int64_t at_ms)
{
    return sqldb_run(sqldb_prepare(l->db, "INSERT INTO ledger_checkpoints(size, at_ms, note) VALUES(?, ?, ?)",
                                   "iit", (int64_t)size, at_ms, note));
}

rb_err ledger_latest_checkpoint(ledger_t *l, uint64_t max_size, bool *found, char note[NOTE_TEXT_MAX],
                                uint64_t *size)
{
    *found = false;
    int64_t max = max_size > INT64_MAX ? INT64_MAX : (int64_t)max_size;
    sqlite3_stmt *st = sqldb_prepare(
        l->db, "SELECT size, note FROM ledger_checkpoints WHERE size <= ? ORDER BY size DESC LIMIT 1", "i",
        max);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    rb_err rc = step == SQLITE_ROW || step == SQLITE_DONE ? RB_OK : RB_ERR_IO;
    if (step == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        if (len >= NOTE_TEXT_MAX) {
            rc = RB_ERR_TOO_BIG;
        } else {
            memcpy(note, sqlite3_column_text(st, 1), len);
            note[len] = '\0';
            *size = (uint64_t)sqlite3_column_int64(st, 0);
            *found = true;
        }
    }
    sqldb_done(st);
    return rc;
}

rb_err ledger_each_checkpoint(ledger_t *l, ledger_checkpoint_fn fn, void *ctx)
{
    sqlite3_stmt *st =
        sqldb_prepare(l->db, "SELECT size, at_ms, note FROM ledger_checkpoints ORDER BY size", "");
    if (st == NULL)
        return RB_ERR_IO;
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(ctx, (uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                (const char *)sqlite3_column_text(st, 2));
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqldb_done(st);
    return rc;
}

rb_err ledger_checkpoint_now(ledger_t *l, const card_t *broker, const uint8_t sk[RB_SIGN_SK_BYTES],
                             int64_t at_ms, char note[NOTE_TEXT_MAX], size_t *len)
{
    bool found;
    uint64_t old_size = 0, size = l->edge.size;
    rb_err rc = ledger_latest_checkpoint(l, UINT64_MAX, &found, note, &old_size);
    if (rc != RB_OK)
        return rc;
    if (found && old_size == size) {
        *len = strlen(note);
        return RB_OK;
    }
    checkpoint_t cp = {.size = size};
    ledger_origin(broker, cp.origin);
    merkle_frontier_root(&l->edge, &cp.root);
    if (found) {
        /* Never sign a tree that does not extend the last one signed. */
        checkpoint_t old;
        merkle_hash_t proof[PROOF_HASHES_MAX];
        size_t n;
        if (checkpoint_open(note, strlen(note), cp.origin, broker->sign_pk, &old) != RB_OK ||
            old.size != old_size || old_size > size ||
            ledger_consistency_proof(l, old_size, size, proof, &n) != RB_OK ||
            merkle_verify_consistency(old_size, size, &old.root, &cp.root, proof, n) != RB_OK)
            return RB_ERR_HASH_MISMATCH;
    }
    if ((rc = checkpoint_sign(&cp, sk, note, len)) == RB_OK)
        rc = ledger_add_checkpoint(l, note, size, at_ms);
    return rc;
}

rb_err ledger_set_meta(ledger_t *l, const char *key, const char *value)
{
    return sqldb_run(sqldb_prepare(l->db, "INSERT OR REPLACE INTO ledger_meta(key, value) VALUES(?, ?)", "tt",
                                   key, value));
}

rb_err ledger_get_meta(ledger_t *l, const char *key, char **value)
{
    *value = NULL;
    sqlite3_stmt *st = sqldb_prepare(l->db, "SELECT value FROM ledger_meta WHERE key = ?", "t", key);
    if (st == NULL)
        return RB_ERR_IO;
    int step = sqlite3_step(st);
    rb_err rc = step == SQLITE_DONE || step == SQLITE_ROW ? RB_OK : RB_ERR_IO;
    if (step == SQLITE_ROW && (*value = strdup((const char *)sqlite3_column_text(st, 0))) == NULL)
        rc = RB_ERR_NOMEM;
    sqldb_done(st);
    return rc;
}

rb_err ledger_node(ledger_t *l, int level, uint64_t index, merkle_hash_t *out)
{
    if (level < 0 || level > 63 || index >= l->edge.size >> level)
        return RB_ERR_USAGE;
    return get_node(l, level, index, out);
}
