/* trust.h -- a trust store: the cards a process believes, looked up by key id or by name.
 *
 * On disk a trust store is a directory of *.card files (other files are ignored). Every card is checked
 * when loaded; one bad card fails the whole load, naming the file, because silently trusting less than
 * the operator configured would lose messages later in a way nobody could explain. A revoked key stays
 * in the store, marked with the time from which it is refused, so that messages it signed from then on
 * are refused as revoked rather than as unknown, and those it signed before stay verifiable. A key
 * replaced by rotation stays too, with the end of its overlap as an earlier expiry. */
#ifndef TRUST_H
#define TRUST_H

#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "rb_error.h"

typedef struct trust trust_t;

/* An empty store. *out is the caller's, to free with trust_free. */
rb_err trust_new(trust_t **out);
/* Loads every *.card in dir. On failure *out is NULL and err (errlen bytes) names the file and why. */
rb_err trust_load_dir(trust_t **out, const char *dir, char *err, size_t errlen);
void trust_free(trust_t **trust_p);

/* Adds a copy of a checked card. Adding the same card twice is fine; a different card with the key id or
 * the signing key of one already held is RB_ERR_CONFLICT. */
rb_err trust_add(trust_t *trust, const card_t *card);
/* Marks a key revoked for what it signed from Unix second at_s on (a compromised key: from the compromise;
 * otherwise from the revocation); RB_ERR_UNKNOWN_SENDER when no card has that key id. */
rb_err trust_revoke(trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES], uint64_t at_s);
/* Ends a key's validity at Unix second at_s, before its card's expiry (the overlap of a rotation ended). */
rb_err trust_retire(trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES], uint64_t at_s);
/* Whether the key is revoked at all, whatever the time: nothing new is accepted under such a key, since a
 * thief can back-date what it signs. */
bool trust_revoked(const trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES]);

/* The card with this key id, or NULL. Borrowed, valid until the store changes or is freed. */
const card_t *trust_find_key(const trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES]);
/* The card named name that is valid at Unix second t and not revoked, the latest created if several
 * (key rotation); NULL when none. Borrowed as above. */
const card_t *trust_find_name(const trust_t *trust, const char *name, uint64_t t);
/* The card named name, usable at Unix second t, whose signing key verifies sig over domain || 0x00 ||
 * msg: during a rotation a party holds two keys and either may have signed. NULL when none does. */
const card_t *trust_find_signer(const trust_t *trust, const char *name, uint64_t t, const char *domain,
                                const uint8_t *msg, size_t len, const uint8_t sig[RB_SIG_BYTES]);
/* Whether a card's key may be used for something signed at Unix second t: RB_ERR_KEY_REVOKED when t is
 * at or after its revocation time, RB_ERR_KEY_EXPIRED outside its validity (or after its retirement),
 * RB_ERR_UNKNOWN_SENDER when the store does not hold it. */
rb_err trust_check(const trust_t *trust, const card_t *card, uint64_t t);

size_t trust_count(const trust_t *trust);

#endif
