/* merkle.h -- RFC 6962 / RFC 9162 Merkle tree hashing and proofs, for the audit ledger.
 *
 * Leaf hash = SHA-256(0x00 || leaf bytes), node hash = SHA-256(0x01 || left || right); the tree over n
 * leaves splits at the largest power of two smaller than n. Verification follows RFC 9162 sections
 * 2.1.3.2 and 2.1.4.2; it is checked against the published test vectors in tests/vectors/merkle. Proofs
 * are generated from subtree hashes that the caller supplies: from memory, or from the ledger's stored tree. */
#ifndef MERKLE_H
#define MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"

#define MERKLE_HASH_BYTES 32

typedef struct {
    uint8_t bytes[MERKLE_HASH_BYTES];
} merkle_hash_t;

void merkle_leaf_hash(const uint8_t *leaf, size_t len, merkle_hash_t *out);
void merkle_node_hash(const merkle_hash_t *left, const merkle_hash_t *right, merkle_hash_t *out);

/* The root of the tree whose leaves have these hashes (the empty tree: SHA-256 of nothing). */
void merkle_root(const merkle_hash_t *leaves, uint64_t n, merkle_hash_t *out);

/* Proofs are generated from subtree hashes: a merkle_subtree_fn writes MTH(D[lo:hi]), the hash of the
 * tree over leaves lo..hi-1 (hi <= the tree's size), so that a stored tree can answer it from its
 * complete subtrees in O(log n) reads. merkle_memory_subtree answers it from leaf hashes in memory (ctx is
 * the array), for tests. */
typedef rb_err (*merkle_subtree_fn)(void *ctx, uint64_t lo, uint64_t hi, merkle_hash_t *out);
rb_err merkle_memory_subtree(void *leaves, uint64_t lo, uint64_t hi, merkle_hash_t *out);

/* Inclusion proof of leaf index in the tree of size leaves: writes its hashes into proof (room for 64)
 * and their count into *n. RB_ERR_USAGE when index >= size. */
rb_err merkle_inclusion_proof(merkle_subtree_fn subtree, void *ctx, uint64_t size, uint64_t index,
                              merkle_hash_t *proof, size_t *n);
/* Consistency proof between the trees of size1 and size2 leaves (0 < size1 <= size2). */
rb_err merkle_consistency_proof(merkle_subtree_fn subtree, void *ctx, uint64_t size1, uint64_t size2,
                                merkle_hash_t *proof, size_t *n);

/* The right edge of a growing tree: the roots of its complete subtrees, one per set bit of size, largest
 * first. Appending costs one hash per merge; the root costs one hash per set bit. Zero-initialise. */
typedef struct {
    uint64_t size;
    merkle_hash_t hashes[65];
} merkle_frontier_t;
/* Appends a leaf hash; merged (may be NULL) is told of every complete subtree that the append closes:
 * its level (height, 1 = two leaves) and index at that level (its first leaf is index << level). */
void merkle_frontier_append(merkle_frontier_t *f, const merkle_hash_t *leaf_hash,
                            void (*merged)(void *ctx, int level, uint64_t index, const merkle_hash_t *hash),
                            void *ctx);
void merkle_frontier_root(const merkle_frontier_t *f, merkle_hash_t *out);

/* RB_OK when proof shows that leaf_hash is leaf index of the tree of size leaves with this root;
 * RB_ERR_HASH_MISMATCH when it does not, RB_ERR_MALFORMED when the proof has the wrong shape. */
rb_err merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash_t *leaf_hash,
                               const merkle_hash_t *proof, size_t n, const merkle_hash_t *root);
/* RB_OK when proof shows that the tree of size2 with root2 extends the tree of size1 with root1
 * (0 < size1 <= size2; equal sizes need equal roots and an empty proof). */
rb_err merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash_t *root1,
                                 const merkle_hash_t *root2, const merkle_hash_t *proof, size_t n);

#endif
