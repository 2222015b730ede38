/* envelope.h -- sealing, verifying and opening the envelopes that carry every message.
 *
 * Sealing signs the Inner payload (with message id, kind, sender and recipient bound in), seals it to the
 * recipient's X25519 key, then signs the serialised Header exactly as it is sent. Opening checks, in this
 * order, and stops at the first failure with one precise error: size, outer framing, header format and
 * version, sender known and allowed, key valid and not revoked, header signature, ciphertext hash,
 * recipient, decryption, inner signature, inner/outer agreement, body. Every protobuf on the way must be
 * in canonical form with no unknown fields, so no bit of an envelope can change without being refused.
 * The byte-level format is in docs/KEYS.md. */
#ifndef ENVELOPE_H
#define ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "envelope.pb-c.h"
#include "identity.h"
#include "rb_error.h"
#include "trust.h"

/* Largest envelope accepted or produced. Referrals carry evidence locators and hashes, not the footage. */
#define ENVELOPE_MAX_BYTES (1024 * 1024)
#define ENVELOPE_VERSION   1
#define ENVELOPE_ACK_VERSION                                                                                 \
    2 /* InnerSigned.version of an ACK: its body may hold AckBody's version 2 fields */
#define MSG_ID_BYTES   16
#define CASE_KEY_BYTES 16

/* A message id: a UUIDv7 (48-bit Unix milliseconds, version, random bits). */
typedef struct {
    uint8_t bytes[MSG_ID_BYTES];
} msg_id_t;

/* What a sealed envelope says in its clear header besides sender and recipient. */
typedef struct {
    Rb__Kind kind;            /* REFERRAL, SUPPLEMENT, WITHDRAWAL, ACK or NOTICE */
    const msg_id_t *ref;      /* the message followed or answered; required for ACK, else NULL or set */
    const uint8_t *case_key;  /* CASE_KEY_BYTES for ordering, or NULL */
    Rb__AckStatus ack_status; /* ACK only; UNSPECIFIED otherwise */
    int64_t created_ms;       /* Unix milliseconds, also the time the sender's key must be valid at */
} envelope_params_t;

/* A new message id for time now_ms. */
void envelope_new_id(msg_id_t *id, int64_t now_ms);

/* The case key for (agency, RD number): a keyed hash under a key derived from the sender's signing key,
 * so equal cases share a key for in-order delivery while the broker learns nothing about RD numbers. */
void envelope_case_key(const identity_t *from, const char *agency, const char *rd_number,
                       uint8_t out[CASE_KEY_BYTES]);

/* Seals body_len bytes of body (a packed Referral or AckBody) from `from` to `to`. On success *out
 * (*out_len bytes) is the caller's, to free with free(), and *id is the new message id. On failure
 * nothing is allocated: RB_ERR_TOO_BIG when the envelope would exceed ENVELOPE_MAX_BYTES, RB_ERR_USAGE
 * for parameters that break the header's rules (see docs/KEYS.md). */
rb_err envelope_seal(const identity_t *from, const card_t *to, const envelope_params_t *params,
                     const uint8_t *body, size_t body_len, msg_id_t *id, uint8_t **out, size_t *out_len);

/* The last step of sealing on its own: packs header, signs the packed bytes with signer, and assembles
 * the envelope around ciphertext. Tests use it to build envelopes that sealing never would. */
rb_err envelope_pack(const identity_t *signer, const Rb__Header *header, const uint8_t *ciphertext,
                     size_t ciphertext_len, uint8_t **out, size_t *out_len);

/* The header checks of envelope_verify_header on header bytes and their signature alone (as the ledger
 * keeps them): format, sender known by key id with this name and agency, role allowed to send the kind,
 * key valid and unrevoked at created_ms, signature. On success *out is the caller's
 * (rb__header__free_unpacked) and *sender the signer's card. */
rb_err envelope_verify_signed_header(const trust_t *trust, const uint8_t *header, size_t len,
                                     const uint8_t sig[RB_SIG_BYTES], Rb__Header **out, card_t *sender);
/* Verifies everything that can be verified without the recipient's key (the broker's check): framing,
 * header, sender, key validity, header signature, ciphertext hash. On success *header is the caller's
 * (free with protobuf_c_message_free_unpacked(&(*header)->base, NULL)) and *sender is a copy of the
 * sender's card. On failure *header is NULL. */
rb_err envelope_verify_header(const trust_t *trust, const uint8_t *env, size_t len, Rb__Header **header,
                              card_t *sender);

/* The clear header of an envelope, parsed but NOT verified: for routing decisions, display and picking
 * out the message id. RB_ERR_MALFORMED when it does not parse. *header is the caller's. */
rb_err envelope_peek_header(const uint8_t *env, size_t len, Rb__Header **header);
/* Just its message id, likewise unverified. */
rb_err envelope_peek_id(const uint8_t *env, size_t len, msg_id_t *id);

/* An opened envelope. Everything in it is the caller's; envelope_opened_clear frees and wipes it. */
typedef struct {
    Rb__Header *header;                     /* the verified clear header */
    card_t sender;                          /* the sender's card, from the trust store */
    uint8_t envelope_sha256[RB_HASH_BYTES]; /* of the whole envelope as received (what ACKs quote) */
    uint8_t *body;                          /* the packed body, in secret memory */
    size_t body_len;
    ProtobufCMessage
        *message; /* body unpacked: Rb__Referral, Rb__AckBody for ACK, Rb__KeyNotice for NOTICE */
} envelope_opened_t;

/* Verifies and opens an envelope addressed to `as`. On success fills *out; on failure *out is zeroed and
 * holds nothing to free. */
rb_err envelope_open(const identity_t *as, const trust_t *trust, const uint8_t *env, size_t len,
                     envelope_opened_t *out);
void envelope_opened_clear(envelope_opened_t *opened);

#endif
