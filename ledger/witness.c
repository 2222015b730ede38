/* witness.c -- checks of a broker's checkpoints and proofs (see witness.h). */
#include "witness.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"

rb_err witness_open_checkpoint(const card_t *broker, const char *note, size_t len, checkpoint_t *out,
                               char *why, size_t whylen)
{
    char origin[NOTE_NAME_MAX + 1];
    ledger_origin(broker, origin);
    rb_err rc = checkpoint_open(note, len, origin, broker->sign_pk, out);
    if (rc != RB_OK)
        snprintf(why, whylen, "checkpoint not signed by %s: %s", origin,
                 rc == RB_ERR_MALFORMED ? "not a checkpoint note" : rb_strerror(rc));
    return rc;
}

rb_err witness_check_consistency(const checkpoint_t *held, const checkpoint_t *fresh,
                                 const merkle_hash_t *proof, size_t n, char *why, size_t whylen)
{
    if (fresh->size < held->size) {
        snprintf(why, whylen, "the ledger shrank: a checkpoint of %" PRIu64 " leaves after one of %" PRIu64,
                 fresh->size, held->size);
        return RB_ERR_HASH_MISMATCH;
    }
    rb_err rc = held->size == 0
                    ? RB_OK
                    : merkle_verify_consistency(held->size, fresh->size, &held->root, &fresh->root, proof, n);
    if (rc != RB_OK)
        snprintf(why, whylen,
                 "the checkpoint of %" PRIu64 " leaves is not consistent with the one of %" PRIu64
                 " held: the ledger was rewritten",
                 fresh->size, held->size);
    return rc == RB_OK ? RB_OK : RB_ERR_HASH_MISMATCH;
}

rb_err witness_check_update(const card_t *broker, const checkpoint_t *held, const Rb__LedgerUpdate *u,
                            checkpoint_t *out, char *why, size_t whylen)
{
    rb_err rc = witness_open_checkpoint(broker, u->checkpoint, strlen(u->checkpoint), out, why, whylen);
    if (rc != RB_OK || held == NULL)
        return rc;
    merkle_hash_t proof[PROOF_HASHES_MAX];
    if (u->n_consistency > PROOF_HASHES_MAX) {
        snprintf(why, whylen, "consistency proof of %zu hashes", u->n_consistency);
        return RB_ERR_MALFORMED;
    }
    for (size_t i = 0; i < u->n_consistency; i++) {
        if (u->consistency[i].len != MERKLE_HASH_BYTES) {
            snprintf(why, whylen, "consistency proof hash %zu is %zu bytes", i, u->consistency[i].len);
            return RB_ERR_MALFORMED;
        }
        memcpy(proof[i].bytes, u->consistency[i].data, MERKLE_HASH_BYTES);
    }
    if (u->old_size != held->size && out->size >= held->size) {
        snprintf(why, whylen,
                 "the update proves from %" PRIu64 " leaves, not from the %" PRIu64
                 " of the checkpoint held (the broker does not know it: restarted?)",
                 u->old_size, held->size);
        return RB_ERR_CONFLICT;
    }
    return witness_check_consistency(held, out, proof, u->n_consistency, why, whylen);
}

rb_err witness_check_proof(const card_t *broker, const char *known_note, const checkpoint_t *known,
                           const char *text, size_t len, const uint8_t *leaf, size_t leaf_len,
                           checkpoint_t *cp, uint64_t *index, char *why, size_t whylen)
{
    tlog_proof_t p;
    rb_err rc = proof_parse(text, len, &p);
    if (rc != RB_OK) {
        snprintf(why, whylen, "not a tlog-proof");
        return rc;
    }
    if (known_note != NULL && known != NULL && strlen(known_note) == p.checkpoint_len &&
        memcmp(known_note, p.checkpoint, p.checkpoint_len) == 0)
        *cp = *known;
    else if ((rc = witness_open_checkpoint(broker, p.checkpoint, p.checkpoint_len, cp, why, whylen)) != RB_OK)
        return rc;
    merkle_hash_t hash;
    merkle_leaf_hash(leaf, leaf_len, &hash);
    if ((rc = merkle_verify_inclusion(p.index, cp->size, &hash, p.path, p.n, &cp->root)) != RB_OK) {
        snprintf(why, whylen, "leaf %" PRIu64 " is not included in the checkpoint of %" PRIu64 " leaves",
                 p.index, cp->size);
        return rc;
    }
    *index = p.index;
    return RB_OK;
}
