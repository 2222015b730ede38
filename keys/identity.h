/* identity.h -- an identity: the two secret keys and the card that publishes their public halves.
 *
 * The secret keys live in guarded memory (rbcrypto_secret_alloc) from generation or load until
 * identity_free wipes them. On disk they are a secret file (docs/KEYS.md): a labelled line and base64 of
 * a packed struct holding the keys and the card, encrypted under a passphrase with Argon2id and
 * XChaCha20-Poly1305, or in clear for an unattended service (--no-passphrase). Either way the file is mode
 * 0600 and loading refuses one that group or others may read. */
#ifndef IDENTITY_H
#define IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "rb_error.h"

typedef struct identity identity_t;

/* New keys and a self-signed card valid from now_s for lifetime_s seconds. *out is the caller's, to free
 * with identity_free. RB_ERR_USAGE names a bad name, role or agency (see card_make). */
rb_err identity_generate(identity_t **out, const char *name, card_role role, const char *agency,
                         uint64_t now_s, uint64_t lifetime_s);

/* The same, with keys derived from a 32-byte seed (two independent sub-seeds under distinct labels), for
 * known-answer vectors and fuzzing; real identities come from identity_generate. */
rb_err identity_from_seed(identity_t **out, const uint8_t seed[32], const char *name, card_role role,
                          const char *agency, uint64_t now_s, uint64_t lifetime_s);

/* Writes the secret file, encrypted under passphrase (pass_len bytes) with the given Argon2id costs, or in
 * clear when passphrase is NULL. Refuses to replace an existing file (RB_ERR_EXISTS) unless force, both
 * before and after the slow key derivation; on failure no file is left behind. */
rb_err identity_save(const identity_t *id, const char *path, const char *passphrase, size_t pass_len,
                     uint64_t opslimit, uint64_t memlimit, bool force);

/* Whether a secret file needs a passphrase, to know whether to ask for one. Checks the file's mode too. */
rb_err identity_file_encrypted(const char *path, bool *encrypted);

/* Loads and checks a secret file: mode (RB_ERR_INSECURE_FILE), format (RB_ERR_MALFORMED,
 * RB_ERR_BAD_VERSION), passphrase or tampering (RB_ERR_BAD_PASSPHRASE), card self-signature
 * (RB_ERR_BAD_CARD) and that the keys are the card's (RB_ERR_KEY_MISMATCH). passphrase may be NULL for
 * a clear file. On success *out is the caller's, to free with identity_free; on failure *out is NULL. */
rb_err identity_load(identity_t **out, const char *path, const char *passphrase, size_t pass_len);

/* Wipes and frees; nulls *id_p. NULL and *id_p == NULL are fine. */
void identity_free(identity_t **id_p);

/* Borrowed, valid until identity_free. */
const card_t *identity_card(const identity_t *id);
const uint8_t *identity_sign_sk(const identity_t *id);
const uint8_t *identity_box_sk(const identity_t *id);

#endif
