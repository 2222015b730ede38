/* merkle.h -- RFC 6962 / RFC 9162 Merkle tree hashing and proofs, for the audit ledger.
 *
 * Leaf hash = SHA-256(0x00 || leaf bytes), node hash = SHA-256(0x01 || left || right); the tree over n
 * leaves splits at the largest power of two smaller than n. Verification follows RFC 9162 sections
 * 2.1.3.2 and 2.1.4.2; it is checked against the published test vectors in tests/vectors/merkle. Proofs
 * are generated here from a list of leaf hashes in memory (the ledger's stored tree comes with it). */
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

/* Inclusion proof of leaf index in the tree of the first size leaves: writes its hashes into proof (room
 * for 64) and their count into *n. RB_ERR_USAGE when index >= size or size > count of leaves. */
rb_err merkle_inclusion_proof(const merkle_hash_t *leaves, uint64_t size, uint64_t index,
                              merkle_hash_t *proof, size_t *n);
/* Consistency proof between the trees of the first size1 and size2 leaves (0 < size1 <= size2). */
rb_err merkle_consistency_proof(const merkle_hash_t *leaves, uint64_t size1, uint64_t size2,
                                merkle_hash_t *proof, size_t *n);

/* RB_OK when proof shows that leaf_hash is leaf index of the tree of size leaves with this root;
 * RB_ERR_HASH_MISMATCH when it does not, RB_ERR_MALFORMED when the proof has the wrong shape. */
rb_err merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash_t *leaf_hash,
                               const merkle_hash_t *proof, size_t n, const merkle_hash_t *root);
/* RB_OK when proof shows that the tree of size2 with root2 extends the tree of size1 with root1
 * (0 < size1 <= size2; equal sizes need equal roots and an empty proof). */
rb_err merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash_t *root1,
                                 const merkle_hash_t *root2, const merkle_hash_t *proof, size_t n);

#endif
