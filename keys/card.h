/* card.h -- public identity cards: who holds a key, in what role, for which agency, until when.
 *
 * A card binds a name ("cpd-rms"), a role, an agency ORI, an Ed25519 signing key and an X25519 sealing
 * key, with a creation and an expiry time, and is self-signed by its signing key. A card is a plain value
 * (no pointers) so that it can be copied into trust stores and identities freely. docs/KEYS.md gives the
 * packed layout and the text form. */
#ifndef CARD_H
#define CARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"
#include "rbcrypto.h"

typedef enum {
    CARD_ROLE_SOURCE = 1, /* sends referrals: a police records system adapter */
    CARD_ROLE_SINK = 2,   /* receives referrals and answers with ACKs: the intake adapter */
    CARD_ROLE_BROKER = 3, /* the broker itself */
    CARD_ROLE_ADMIN = 4,  /* an operator who signs trust changes */
} card_role;

#define CARD_NAME_MAX   64  /* [a-z0-9][a-z0-9._-]{0,63} */
#define CARD_AGENCY_LEN 9   /* an NCIC ORI: two letters, then seven letters or digits */
#define CARD_PACKED_MAX 240 /* the largest packed card, signature included */

typedef struct {
    uint8_t role;                      /* a card_role */
    uint8_t key_id[RB_KEY_ID_BYTES];   /* first 8 bytes of SHA-256(sign_pk) */
    uint8_t sign_pk[RB_SIGN_PK_BYTES]; /* Ed25519: verifies this holder's signatures */
    uint8_t box_pk[RB_BOX_PK_BYTES];   /* X25519: what messages to this holder are sealed to */
    uint64_t created;                  /* Unix seconds */
    uint64_t expires;                  /* Unix seconds; the key is valid in [created, expires) */
    char name[CARD_NAME_MAX + 1];      /* adapter or operator name, NUL-terminated */
    char agency[CARD_AGENCY_LEN + 1];  /* ORI of the holder's agency, NUL-terminated */
    uint8_t signature[RB_SIG_BYTES];   /* self-signature over the packed fields before it */
} card_t;

/* Fills everything but the signature and key id from the arguments, then signs with sign_sk (whose public
 * half must be sign_pk). RB_ERR_USAGE names a bad name, role, agency or time span. */
rb_err card_make(card_t *card, const char *name, card_role role, const char *agency,
                 const uint8_t sign_pk[RB_SIGN_PK_BYTES], const uint8_t box_pk[RB_BOX_PK_BYTES],
                 uint64_t created, uint64_t expires, const uint8_t sign_sk[RB_SIGN_SK_BYTES]);

/* The packed form (docs/KEYS.md) into out (CARD_PACKED_MAX bytes). */
size_t card_pack(const card_t *card, uint8_t out[CARD_PACKED_MAX]);
/* Parses and checks a packed card: layout, field syntax, key id, self-signature. RB_ERR_BAD_CARD when any
 * of it fails, RB_ERR_BAD_VERSION for an unknown version. */
rb_err card_unpack(card_t *card, const uint8_t *bytes, size_t len);

/* Text form: a label line and base64 of the packed card. text must hold CARD_TEXT_MAX bytes. */
#define CARD_TEXT_MAX 512
size_t card_to_text(const card_t *card, char text[CARD_TEXT_MAX]);
rb_err card_from_text(card_t *card, const char *text, size_t len);

rb_err card_read_file(card_t *card, const char *path);
/* Mode 0644; refuses to replace an existing file unless force. */
rb_err card_write_file(const card_t *card, const char *path, bool force);

/* RB_OK when the key may be used at Unix second t, RB_ERR_KEY_EXPIRED otherwise (not yet valid, or
 * expired). */
rb_err card_valid_at(const card_t *card, uint64_t t);

/* Unix second t as UTC text, 2027-12-07T23:29:19Z (CARD_TIME_TEXT bytes with the NUL), as the tools print
 * a card's dates. */
#define CARD_TIME_TEXT 32
void card_time_text(uint64_t t, char out[CARD_TIME_TEXT]);

/* Whether two cards are the same card, byte for byte in packed form. */
bool card_equal(const card_t *a, const card_t *b);

/* A key certification: the old key of a party vouching for its new card (key rotation), so that whoever
 * trusts the old card can trust the new one without asking anyone else. Packed: magic "RBKC", version 1,
 * three zero bytes, the old and the new key id, and the old key's Ed25519 signature under the "rotate"
 * label over those 24 bytes followed by the new card's packed form (docs/KEYS.md). */
#define CARD_CERT_PACKED 88
typedef struct {
    uint8_t old_key_id[RB_KEY_ID_BYTES];
    uint8_t new_key_id[RB_KEY_ID_BYTES];
    uint8_t signature[RB_SIG_BYTES];
} card_cert_t;

/* Certifies next with the secret key of old (old_sign_sk). RB_ERR_USAGE unless next has old's name, role
 * and agency and was created no earlier than old. */
rb_err card_certify(const card_t *old, const uint8_t old_sign_sk[RB_SIGN_SK_BYTES], const card_t *next,
                    card_cert_t *cert);
/* Whether cert is old's certification of next: key ids, same name, role and agency, next created no
 * earlier, signature. RB_ERR_BAD_SIGNATURE or RB_ERR_USAGE (naming nothing more) when not. */
rb_err card_cert_check(const card_cert_t *cert, const card_t *old, const card_t *next);
void card_cert_pack(const card_cert_t *cert, uint8_t out[CARD_CERT_PACKED]);
rb_err card_cert_unpack(card_cert_t *cert, const uint8_t *bytes, size_t len);
/* Text form (a label line naming both key ids, then base64) and files, as for cards. */
size_t card_cert_to_text(const card_cert_t *cert, char text[CARD_TEXT_MAX]);
rb_err card_cert_from_text(card_cert_t *cert, const char *text, size_t len);
rb_err card_cert_read_file(card_cert_t *cert, const char *path);
rb_err card_cert_write_file(const card_cert_t *cert, const char *path, bool force);

bool card_name_ok(const char *name);
bool card_agency_ok(const char *agency);
const char *card_role_name(card_role role); /* "source", …; "?" when out of range */
bool card_role_parse(const char *name, card_role *role);

/* Key id as 16 lowercase hex digits (17 bytes with the NUL). */
void card_key_id_hex(const uint8_t id[RB_KEY_ID_BYTES], char out[2 * RB_KEY_ID_BYTES + 1]);
/* Fingerprint for comparing over the phone: SHA-256 of both public keys, 64 hex digits in groups of 4. */
#define CARD_FINGERPRINT_MAX 80
void card_fingerprint(const card_t *card, char out[CARD_FINGERPRINT_MAX]);

#endif
