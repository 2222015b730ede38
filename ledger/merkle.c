/* merkle.c -- RFC 6962 / RFC 9162 Merkle trees (see merkle.h).
 *
 * Generation follows the recursive definitions of RFC 6962 section 2.1 (PATH and SUBPROOF) over leaf
 * hashes in memory. Verification follows RFC 9162 in the form transparency-dev/merkle uses: an
 * inclusion path splits into an "inner" part, where the leaf's and the last leaf's paths differ, and a
 * "border" part along the right edge, which decides every left/right choice from the index alone. */
#include "merkle.h"

#include <stdbool.h>
#include <string.h>

#include "rbcrypto.h"

void merkle_leaf_hash(const uint8_t *leaf, size_t len, merkle_hash_t *out)
{
    uint8_t buf[1 + 65536];
    if (len <= sizeof buf - 1) {
        buf[0] = 0x00;
        if (len > 0) /* an empty leaf may come as NULL (an empty protobuf bytes field) */
            memcpy(buf + 1, leaf, len);
        rbcrypto_sha256(buf, len + 1, out->bytes);
        return;
    }
    /* Ledger leaves are at most 65,535 bytes; a longer one is hashed to something no leaf can match. */
    memset(out->bytes, 0xff, MERKLE_HASH_BYTES);
}

void merkle_node_hash(const merkle_hash_t *left, const merkle_hash_t *right, merkle_hash_t *out)
{
    uint8_t buf[1 + 2 * MERKLE_HASH_BYTES];
    buf[0] = 0x01;
    memcpy(buf + 1, left->bytes, MERKLE_HASH_BYTES);
    memcpy(buf + 1 + MERKLE_HASH_BYTES, right->bytes, MERKLE_HASH_BYTES);
    rbcrypto_sha256(buf, sizeof buf, out->bytes);
}

/* The largest power of two smaller than n (n > 1). */
static uint64_t split(uint64_t n)
{
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

void merkle_root(const merkle_hash_t *leaves, uint64_t n, merkle_hash_t *out)
{
    if (n == 0) {
        rbcrypto_sha256(NULL, 0, out->bytes);
        return;
    }
    if (n == 1) {
        *out = leaves[0];
        return;
    }
    uint64_t k = split(n);
    merkle_hash_t left, right;
    merkle_root(leaves, k, &left);
    merkle_root(leaves + k, n - k, &right);
    merkle_node_hash(&left, &right, out);
}

rb_err merkle_memory_subtree(void *leaves, uint64_t lo, uint64_t hi, merkle_hash_t *out)
{
    merkle_root((const merkle_hash_t *)leaves + lo, hi - lo, out);
    return RB_OK;
}

/* RFC 6962 PATH(m, D[lo:lo+n]), appending to proof. */
static rb_err path(merkle_subtree_fn subtree, void *ctx, uint64_t lo, uint64_t m, uint64_t n,
                   merkle_hash_t *proof, size_t *len)
{
    if (n <= 1)
        return RB_OK;
    uint64_t k = split(n);
    rb_err rc = m < k ? path(subtree, ctx, lo, m, k, proof, len)
                      : path(subtree, ctx, lo + k, m - k, n - k, proof, len);
    if (rc != RB_OK)
        return rc;
    return m < k ? subtree(ctx, lo + k, lo + n, &proof[(*len)++])
                 : subtree(ctx, lo, lo + k, &proof[(*len)++]);
}

rb_err merkle_inclusion_proof(merkle_subtree_fn subtree, void *ctx, uint64_t size, uint64_t index,
                              merkle_hash_t *proof, size_t *n)
{
    *n = 0;
    if (index >= size)
        return RB_ERR_USAGE;
    return path(subtree, ctx, 0, index, size, proof, n);
}

/* RFC 6962 SUBPROOF(m, D[lo:lo+n], complete), appending to proof. */
static rb_err subproof(merkle_subtree_fn subtree, void *ctx, uint64_t lo, uint64_t m, uint64_t n,
                       bool complete, merkle_hash_t *proof, size_t *len)
{
    if (m == n)
        return complete ? RB_OK : subtree(ctx, lo, lo + n, &proof[(*len)++]);
    uint64_t k = split(n);
    rb_err rc = m <= k ? subproof(subtree, ctx, lo, m, k, complete, proof, len)
                       : subproof(subtree, ctx, lo + k, m - k, n - k, false, proof, len);
    if (rc != RB_OK)
        return rc;
    return m <= k ? subtree(ctx, lo + k, lo + n, &proof[(*len)++])
                  : subtree(ctx, lo, lo + k, &proof[(*len)++]);
}

rb_err merkle_consistency_proof(merkle_subtree_fn subtree, void *ctx, uint64_t size1, uint64_t size2,
                                merkle_hash_t *proof, size_t *n)
{
    *n = 0;
    if (size1 == 0 || size1 > size2)
        return RB_ERR_USAGE;
    return size1 < size2 ? subproof(subtree, ctx, 0, size1, size2, true, proof, n) : RB_OK;
}

void merkle_frontier_append(merkle_frontier_t *f, const merkle_hash_t *leaf_hash,
                            void (*merged)(void *ctx, int level, uint64_t index, const merkle_hash_t *hash),
                            void *ctx)
{
    /* f->hashes[i] is the root of the i-th complete subtree from the left, one per set bit of size. */
    int n = __builtin_popcountll(f->size);
    f->hashes[n] = *leaf_hash;
    uint64_t index = f->size;
    for (int level = 0; index & 1; level++, index >>= 1) {
        n--;
        merkle_node_hash(&f->hashes[n], &f->hashes[n + 1], &f->hashes[n]);
        if (merged != NULL)
            merged(ctx, level + 1, index >> 1, &f->hashes[n]);
    }
    f->size++;
}

void merkle_frontier_root(const merkle_frontier_t *f, merkle_hash_t *out)
{
    int n = __builtin_popcountll(f->size);
    if (n == 0) {
        merkle_root(NULL, 0, out);
        return;
    }
    *out = f->hashes[n - 1];
    for (int i = n - 2; i >= 0; i--)
        merkle_node_hash(&f->hashes[i], out, out);
}

static int bit_length(uint64_t x)
{
    int n = 0;
    for (; x != 0; x >>= 1)
        n++;
    return n;
}

static int ones(uint64_t x)
{
    int n = 0;
    for (; x != 0; x &= x - 1)
        n++;
    return n;
}

static int trailing_zeros(uint64_t x)
{
    int n = 0;
    for (; x != 0 && (x & 1) == 0; x >>= 1)
        n++;
    return n;
}

/* For leaf index in a tree of size: how many proof hashes are inner, and how many on the border. */
static void decompose(uint64_t index, uint64_t size, size_t *inner, size_t *border)
{
    *inner = (size_t)bit_length(index ^ (size - 1));
    *border = (size_t)ones(*inner >= 64 ? 0 : index >> *inner);
}

static void chain_inner(merkle_hash_t *seed, const merkle_hash_t *proof, size_t n, uint64_t index)
{
    for (size_t i = 0; i < n; i++) {
        merkle_hash_t next;
        if (((index >> i) & 1) == 0)
            merkle_node_hash(seed, &proof[i], &next);
        else
            merkle_node_hash(&proof[i], seed, &next);
        *seed = next;
    }
}

static void chain_inner_right(merkle_hash_t *seed, const merkle_hash_t *proof, size_t n, uint64_t index)
{
    for (size_t i = 0; i < n; i++)
        if (((index >> i) & 1) == 1) {
            merkle_hash_t next;
            merkle_node_hash(&proof[i], seed, &next);
            *seed = next;
        }
}

static void chain_border_right(merkle_hash_t *seed, const merkle_hash_t *proof, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        merkle_hash_t next;
        merkle_node_hash(&proof[i], seed, &next);
        *seed = next;
    }
}

static rb_err match(const merkle_hash_t *got, const merkle_hash_t *want)
{
    return rbcrypto_equal(got->bytes, want->bytes, MERKLE_HASH_BYTES) ? RB_OK : RB_ERR_HASH_MISMATCH;
}

rb_err merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash_t *leaf_hash,
                               const merkle_hash_t *proof, size_t n, const merkle_hash_t *root)
{
    if (index >= size)
        return RB_ERR_MALFORMED;
    size_t inner, border;
    decompose(index, size, &inner, &border);
    if (n != inner + border)
        return RB_ERR_MALFORMED;
    merkle_hash_t h = *leaf_hash;
    chain_inner(&h, proof, inner, index);
    chain_border_right(&h, proof + inner, border);
    return match(&h, root);
}

rb_err merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash_t *root1,
                                 const merkle_hash_t *root2, const merkle_hash_t *proof, size_t n)
{
    /* Every tree extends the empty one, so a proof from size 0 says nothing: refused as meaningless. */
    if (size1 == 0 || size2 < size1)
        return RB_ERR_MALFORMED;
    if (size1 == size2)
        return n == 0 ? match(root1, root2) : RB_ERR_MALFORMED;
    if (n == 0)
        return RB_ERR_MALFORMED;
    size_t inner, border;
    decompose(size1 - 1, size2, &inner, &border);
    int shift = trailing_zeros(size1);
    inner -= (size_t)shift; /* shift < inner whenever size1 < size2 */
    /* The proof starts with the root of the subtree of size 2^shift, unless size1 is exactly that. */
    merkle_hash_t seed;
    size_t start;
    if (size1 == (uint64_t)1 << shift) {
        seed = *root1;
        start = 0;
    } else {
        seed = proof[0];
        start = 1;
    }
    if (n != start + inner + border)
        return RB_ERR_MALFORMED;
    proof += start;
    uint64_t mask = (size1 - 1) >> shift;
    merkle_hash_t h1 = seed, h2 = seed;
    chain_inner_right(&h1, proof, inner, mask);
    chain_border_right(&h1, proof + inner, border);
    rb_err rc = match(&h1, root1);
    if (rc != RB_OK)
        return rc;
    chain_inner(&h2, proof, inner, mask);
    chain_border_right(&h2, proof + inner, border);
    return match(&h2, root2);
}
