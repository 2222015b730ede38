/* note_fuzz.c -- libFuzzer target for checkpoints (signed notes), tlog-proofs and Merkle proofs
 * (ledger/note.c, ledger/merkle.c).
 *
 * Two fixed-seed keys: the "true" key signs only checkpoints of one reference tree (N_LEAVES leaves), in
 * this target and in the checked-in seeds; the "scratch" key signs whatever checkpoint an input asks for.
 * The first byte picks the mode:
 *   0: the rest is text: a checkpoint (parsed, and opened under both keys), a tlog-proof and a verifier key.
 *      A checkpoint that opens under the true key is a reference one whose body is exactly what
 *      checkpoint_sign writes; opening implies parsing to the same checkpoint; a proof or verifier key
 *      that parses formats back to the very same text.
 *   1: the scratch key signs the checkpoint the input names (size, root, origin), which must open; then
 *      the input's (position, xor mask) pairs change bytes of the note. If it still opens, the checkpoint
 *      and every byte of the signed body are unchanged (only other keys' signature lines may differ).
 *   2: an inclusion proof in the reference tree, computed and checked, then changed (index, leaf hash,
 *      proof length, proof bytes): it verifies only if it is the true proof for a true leaf.
 *   3: a consistency proof between two sizes of the reference tree, then changed (sizes, proof length,
 *      proof bytes): it verifies only if it is the true proof for the sizes it claims. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfile.h"
#include "merkle.h"
#include "note.h"
#include "rbcrypto.h"

#define N_LEAVES  45 /* proofs of up to 6 hashes, inner and border */
#define TRUE_NAME "referral-broker/ILCCSAO00/broker"
#define SCRATCH   "scratch.example/log"

static uint8_t true_pk[RB_SIGN_PK_BYTES], true_sk[RB_SIGN_SK_BYTES];
static uint8_t scratch_pk[RB_SIGN_PK_BYTES], scratch_sk[RB_SIGN_SK_BYTES];
static merkle_hash_t hashes[N_LEAVES], roots[N_LEAVES + 1];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    uint8_t seed_true[32] = {4}, seed_scratch[32] = {5};
    if (rbcrypto_init() != RB_OK)
        abort();
    rbcrypto_sign_seed_keypair(seed_true, true_pk, true_sk);
    rbcrypto_sign_seed_keypair(seed_scratch, scratch_pk, scratch_sk);
    for (size_t i = 0; i < N_LEAVES; i++) {
        uint8_t leaf[2] = {'L', (uint8_t)i};
        merkle_leaf_hash(leaf, sizeof leaf, &hashes[i]);
    }
    for (size_t n = 0; n <= N_LEAVES; n++)
        merkle_root(hashes, n, &roots[n]);
    return 0;
}

static bool same_cp(const checkpoint_t *a, const checkpoint_t *b)
{
    return strcmp(a->origin, b->origin) == 0 && a->size == b->size &&
           memcmp(a->root.bytes, b->root.bytes, MERKLE_HASH_BYTES) == 0;
}

/* The length of a note's signed body, as checkpoint_sign writes it. */
static size_t body_len_of(const char *note)
{
    const char *blank = strstr(note, "\n\n");
    return blank ? (size_t)(blank - note) + 1 : 0;
}

static void text_mode(const char *text, size_t len)
{
    checkpoint_t parsed, opened;
    rb_err parse_rc = checkpoint_parse(text, len, &parsed);
    if (checkpoint_open(text, len, TRUE_NAME, true_pk, &opened) == RB_OK) {
        if (parse_rc != RB_OK || !same_cp(&parsed, &opened) || opened.size > N_LEAVES ||
            memcmp(opened.root.bytes, roots[opened.size].bytes, MERKLE_HASH_BYTES) != 0)
            abort(); /* the true key signed no such checkpoint */
        char again[NOTE_TEXT_MAX];
        size_t again_len;
        if (checkpoint_sign(&opened, true_sk, again, &again_len) != RB_OK ||
            memcmp(text, again, body_len_of(again) + 1) != 0)
            abort(); /* opened a body other than the one signed */
    }
    if (checkpoint_open(text, len, SCRATCH, scratch_pk, &opened) == RB_OK &&
        (parse_rc != RB_OK || !same_cp(&parsed, &opened)))
        abort();

    tlog_proof_t p;
    if (proof_parse(text, len, &p) == RB_OK) {
        uint8_t extra[PROOF_EXTRA_MAX];
        size_t extra_len = 0;
        if (p.extra != NULL &&
            keyfile_unbase64(p.extra, p.extra_len, extra, sizeof extra, &extra_len) != RB_OK)
            abort(); /* parsed, so the extra line decodes */
        char *out = malloc(PROOF_FILE_MAX + 1);
        size_t out_len;
        if (out == NULL)
            abort();
        rb_err rc = proof_format(p.index, extra, extra_len, p.path, p.n, p.checkpoint, p.checkpoint_len, out,
                                 PROOF_FILE_MAX + 1, &out_len);
        /* proof_format refuses a checkpoint that does not parse; one that does must come back verbatim. */
        if (rc == RB_OK ? out_len != len || memcmp(out, text, len) != 0
                        : checkpoint_parse(p.checkpoint, p.checkpoint_len, &parsed) == RB_OK)
            abort();
        free(out);
    }

    char z[NOTE_VKEY_MAX + 1], name[NOTE_NAME_MAX + 1], vkey[NOTE_VKEY_MAX];
    size_t zlen = len < NOTE_VKEY_MAX ? len : NOTE_VKEY_MAX;
    memcpy(z, text, zlen);
    z[zlen] = '\0';
    uint8_t pk[RB_SIGN_PK_BYTES];
    if (note_parse_verifier_key(z, name, pk) == RB_OK &&
        (note_verifier_key(name, pk, vkey) != RB_OK || strcmp(vkey, z) != 0))
        abort();
}

static void sign_mode(const uint8_t *data, size_t size)
{
    if (size < 41)
        return;
    checkpoint_t cp = {.size = 0};
    memcpy(&cp.size, data, 8);
    memcpy(cp.root.bytes, data + 8, MERKLE_HASH_BYTES);
    /* Origins: the usual one, or one spelled by the input (as far as a key name allows). */
    size_t olen = data[40] % 8;
    if (olen == 0 || size < 41 + olen) {
        strcpy(cp.origin, SCRATCH);
    } else {
        memcpy(cp.origin, data + 41, olen);
        cp.origin[olen] = '\0';
    }
    data += 41 + (olen && size >= 41 + olen ? olen : 0);
    size -= 41 + (olen && size >= 41 + olen ? olen : 0);
    char note[NOTE_TEXT_MAX + 1];
    size_t len;
    if (checkpoint_sign(&cp, scratch_sk, note, &len) != RB_OK) {
        if (note_name_ok(cp.origin))
            abort(); /* a good origin always signs */
        return;
    }
    checkpoint_t got;
    if (checkpoint_open(note, len, cp.origin, scratch_pk, &got) != RB_OK || !same_cp(&got, &cp))
        abort();
    size_t body = body_len_of(note);
    uint8_t *changed = malloc(NOTE_TEXT_MAX + 1);
    if (changed == NULL)
        abort();
    memcpy(changed, note, len);
    size_t n = len;
    /* (position, mask) pairs; a position past the end appends the mask's byte, growing the note. */
    for (size_t i = 0; i + 1 < size; i += 2) {
        size_t at = data[i] * 2;
        if (at < n)
            changed[at] ^= data[i + 1];
        else if (n < NOTE_TEXT_MAX)
            changed[n++] = data[i + 1];
    }
    if (checkpoint_open((const char *)changed, n, cp.origin, scratch_pk, &got) == RB_OK &&
        (!same_cp(&got, &cp) || n < body || memcmp(changed, note, body) != 0))
        abort(); /* a changed body passed the signature */
    free(changed);
}

static void inclusion_mode(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    uint64_t tree = 1 + data[0] % N_LEAVES, index = data[1] % tree;
    merkle_hash_t proof[PROOF_HASHES_MAX];
    size_t n;
    if (merkle_inclusion_proof(merkle_memory_subtree, hashes, tree, index, proof, &n) != RB_OK ||
        merkle_verify_inclusion(index, tree, &hashes[index], proof, n, &roots[tree]) != RB_OK)
        abort(); /* a true proof verifies */
    merkle_hash_t leaf = hashes[index];
    uint64_t claim = index;
    if (size > 2)
        claim = data[2] & 0x80 ? (uint64_t)data[2] << 56 : data[2] % (tree + 2);
    if (size > 3)
        leaf = hashes[data[3] % N_LEAVES];
    if (size > 4 && data[4] < n) /* drop the last hashes */
        n = data[4];
    for (size_t i = 5; i + 1 < size; i += 2)
        proof[(data[i] / MERKLE_HASH_BYTES) % PROOF_HASHES_MAX].bytes[data[i] % MERKLE_HASH_BYTES] ^=
            data[i + 1];
    if (merkle_verify_inclusion(claim, tree, &leaf, proof, n, &roots[tree]) == RB_OK) {
        merkle_hash_t truth[PROOF_HASHES_MAX];
        size_t n_truth;
        if (claim >= tree || memcmp(leaf.bytes, hashes[claim].bytes, MERKLE_HASH_BYTES) != 0 ||
            merkle_inclusion_proof(merkle_memory_subtree, hashes, tree, claim, truth, &n_truth) != RB_OK ||
            n_truth != n || memcmp(truth, proof, n * sizeof *proof) != 0)
            abort(); /* a proof of something untrue, or a second proof of a true thing */
    }
}

static void consistency_mode(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    uint64_t size2 = 1 + data[0] % N_LEAVES, size1 = 1 + data[1] % size2;
    merkle_hash_t proof[PROOF_HASHES_MAX + 1] = {{{0}}};
    size_t n;
    if (merkle_consistency_proof(merkle_memory_subtree, hashes, size1, size2, proof, &n) != RB_OK ||
        merkle_verify_consistency(size1, size2, &roots[size1], &roots[size2], proof, n) != RB_OK)
        abort();
    uint64_t c1 = size1, c2 = size2;
    if (size > 3) {
        c1 = data[2] % (N_LEAVES + 1);
        c2 = data[3] % (N_LEAVES + 1);
    }
    if (size > 4 && data[4] <= PROOF_HASHES_MAX)
        n = data[4] < n ? data[4] : n + (data[4] > n); /* shorter, or one hash longer */
    for (size_t i = 5; i + 1 < size; i += 2)
        proof[(data[i] / MERKLE_HASH_BYTES) % PROOF_HASHES_MAX].bytes[data[i] % MERKLE_HASH_BYTES] ^=
            data[i + 1];
    if (merkle_verify_consistency(c1, c2, &roots[c1], &roots[c2], proof, n) == RB_OK) {
        if (c1 == 0 || c2 < c1)
            abort();
        merkle_hash_t truth[PROOF_HASHES_MAX];
        size_t n_truth = 0;
        if (c1 < c2 &&
            merkle_consistency_proof(merkle_memory_subtree, hashes, c1, c2, truth, &n_truth) != RB_OK)
            abort();
        if (n_truth != n || memcmp(truth, proof, n * sizeof *proof) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        text_mode((const char *)data + 1, size - 1);
        break;
    case 1:
        sign_mode(data + 1, size - 1);
        break;
    case 2:
        inclusion_mode(data + 1, size - 1);
        break;
    default:
        consistency_mode(data + 1, size - 1);
        break;
    }
    return 0;
}
