/* witness.h -- checking what a broker says about its ledger, as its peers and auditors do: that a
 * checkpoint is signed by the broker's key, that it extends the last one held (consistency), and that a
 * receipt's leaf is in the tree it names (inclusion). Each failure comes with a sentence naming what did
 * not hold, for an alarm or an auditor's report. */
#ifndef WITNESS_H
#define WITNESS_H

#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "note.h"
#include "rb_error.h"
#include "wire.pb-c.h"

/* Opens a checkpoint signed by the broker of this card (origin from ledger_origin). */
rb_err witness_open_checkpoint(const card_t *broker, const char *note, size_t len, checkpoint_t *out,
                               char *why, size_t whylen);

/* Checks that the tree (new_size, new_root) extends the held one with this consistency proof.
 * RB_ERR_HASH_MISMATCH when it does not (the log was rewritten or shrank), RB_ERR_MALFORMED for a proof of
 * the wrong shape. */
rb_err witness_check_consistency(const checkpoint_t *held, const checkpoint_t *fresh,
                                 const merkle_hash_t *proof, size_t n, char *why, size_t whylen);

/* Checks a LedgerUpdate: its checkpoint's signature, and when held is not NULL its consistency with
 * held. *out receives the new checkpoint (also when only the consistency fails: RB_ERR_HASH_MISMATCH).
 * RB_ERR_CONFLICT when the update proves from another size than held's: it proves nothing either way. */
rb_err witness_check_update(const card_t *broker, const checkpoint_t *held, const Rb__LedgerUpdate *u,
                            checkpoint_t *out, char *why, size_t whylen);

/* Checks a tlog-proof of leaf: the checkpoint's signature, then the inclusion of the leaf's hash at the
 * proof's index. *cp and *index receive what it proves. known_note (or NULL) is a checkpoint's text whose
 * signature the caller checked already, opened as *known: a proof under exactly that text is not checked
 * again (a receipt's proof is under the checkpoint its update brought). */
rb_err witness_check_proof(const card_t *broker, const char *known_note, const checkpoint_t *known,
                           const char *text, size_t len, const uint8_t *leaf, size_t leaf_len,
                           checkpoint_t *cp, uint64_t *index, char *why, size_t whylen);

#endif
