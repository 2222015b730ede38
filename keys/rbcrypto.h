/* rbcrypto.h -- every cryptographic operation of the project, in one place.
 *
 * Nothing else in the tree calls libsodium's primitives directly: signing, sealing, hashing, random bytes,
 * passphrase key derivation and authenticated encryption all go through here. The FBI CJIS Security Policy
 * asks for FIPS-validated cryptography; keeping the primitives behind this small interface means a
 * validated module could replace libsodium by rewriting one file. Secret-holding memory also comes from
 * here (guarded, locked, excluded from core dumps where the system allows, wiped when freed). */
#ifndef RBCRYPTO_H
#define RBCRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"

#define RB_SIGN_PK_BYTES     32 /* Ed25519 public key */
#define RB_SIGN_SK_BYTES     64 /* Ed25519 secret key (seed || public key, libsodium layout) */
#define RB_SIG_BYTES         64 /* Ed25519 signature */
#define RB_BOX_PK_BYTES      32 /* X25519 public key */
#define RB_BOX_SK_BYTES      32 /* X25519 secret key */
#define RB_SEAL_OVERHEAD     48 /* sealed box: ephemeral public key and MAC */
#define RB_HASH_BYTES        32 /* SHA-256 */
#define RB_KEY_ID_BYTES      8  /* leading bytes of SHA-256 of the Ed25519 public key */
#define RB_AEAD_KEY_BYTES    32 /* XChaCha20-Poly1305 key */
#define RB_AEAD_NONCE_BYTES  24
#define RB_AEAD_TAG_BYTES    16
#define RB_PWHASH_SALT_BYTES 16

/* Domain-separation labels: every signature covers label || 0x00 || message, so a signature made for one
 * purpose can never be replayed as another. */
#define RB_DOMAIN_CARD   "referral-broker/v1/card"
#define RB_DOMAIN_HEADER "referral-broker/v1/header"
#define RB_DOMAIN_INNER  "referral-broker/v1/inner"
#define RB_DOMAIN_ADMIN  "referral-broker/v1/admin"
#define RB_DOMAIN_ROTATE "referral-broker/v1/rotate"

/* Initialises the library and keeps the process from writing core dumps (they would hold secrets).
 * Safe to call more than once; every other function here requires it first. */
rb_err rbcrypto_init(void);

/* A fresh signing pair and a fresh, independent X25519 pair. */
void rbcrypto_sign_keypair(uint8_t pk[RB_SIGN_PK_BYTES], uint8_t sk[RB_SIGN_SK_BYTES]);
void rbcrypto_box_keypair(uint8_t pk[RB_BOX_PK_BYTES], uint8_t sk[RB_BOX_SK_BYTES]);
/* The same pairs derived from a 32-byte seed, for known-answer vectors and fuzzing. */
void rbcrypto_sign_seed_keypair(const uint8_t seed[32], uint8_t pk[RB_SIGN_PK_BYTES],
                                uint8_t sk[RB_SIGN_SK_BYTES]);
void rbcrypto_box_seed_keypair(const uint8_t seed[32], uint8_t pk[RB_BOX_PK_BYTES],
                               uint8_t sk[RB_BOX_SK_BYTES]);
/* The public halves of secret keys, to check that a secret file matches its card. */
void rbcrypto_sign_sk_to_pk(const uint8_t sk[RB_SIGN_SK_BYTES], uint8_t pk[RB_SIGN_PK_BYTES]);
rb_err rbcrypto_box_sk_to_pk(const uint8_t sk[RB_BOX_SK_BYTES], uint8_t pk[RB_BOX_PK_BYTES]);

/* Key id: the first 8 bytes of SHA-256 of the Ed25519 public key. */
void rbcrypto_key_id(const uint8_t pk[RB_SIGN_PK_BYTES], uint8_t id[RB_KEY_ID_BYTES]);

/* Ed25519 over domain || 0x00 || msg. verify returns RB_ERR_BAD_SIGNATURE when it does not hold. */
rb_err rbcrypto_sign(const char *domain, const uint8_t *msg, size_t len, const uint8_t sk[RB_SIGN_SK_BYTES],
                     uint8_t sig[RB_SIG_BYTES]);
rb_err rbcrypto_verify(const char *domain, const uint8_t *msg, size_t len, const uint8_t sig[RB_SIG_BYTES],
                       const uint8_t pk[RB_SIGN_PK_BYTES]);

/* Ed25519 over msg itself, with no domain label: only for C2SP signed notes (the ledger's checkpoints),
 * whose format other tools verify as is. A note is text without NUL bytes, so it can never equal a
 * domain-labelled message (label || 0x00 || ...); callers sign only notes they formatted themselves. */
rb_err rbcrypto_sign_note(const uint8_t *msg, size_t len, const uint8_t sk[RB_SIGN_SK_BYTES],
                          uint8_t sig[RB_SIG_BYTES]);
rb_err rbcrypto_verify_note(const uint8_t *msg, size_t len, const uint8_t sig[RB_SIG_BYTES],
                            const uint8_t pk[RB_SIGN_PK_BYTES]);

/* Anonymous sealed box to an X25519 key: out has len + RB_SEAL_OVERHEAD bytes. open writes len -
 * RB_SEAL_OVERHEAD bytes and returns RB_ERR_DECRYPT when the box was not made for this key or was altered. */
rb_err rbcrypto_seal(const uint8_t *msg, size_t len, const uint8_t pk[RB_BOX_PK_BYTES], uint8_t *out);
rb_err rbcrypto_seal_open(const uint8_t *box, size_t len, const uint8_t pk[RB_BOX_PK_BYTES],
                          const uint8_t sk[RB_BOX_SK_BYTES], uint8_t *out);

void rbcrypto_sha256(const uint8_t *msg, size_t len, uint8_t out[RB_HASH_BYTES]);
/* SHA-256 of data that comes in pieces (a file read chunk by chunk): init, update as often as needed,
 * final. The state is libsodium's, held opaque here. */
typedef struct {
    uint64_t opaque[16];
} rbcrypto_sha256_t;
void rbcrypto_sha256_init(rbcrypto_sha256_t *h);
void rbcrypto_sha256_update(rbcrypto_sha256_t *h, const uint8_t *data, size_t len);
void rbcrypto_sha256_final(rbcrypto_sha256_t *h, uint8_t out[RB_HASH_BYTES]);
/* Keyed BLAKE2b with a 16..64-byte output: a pseudorandom function for derived identifiers. */
void rbcrypto_prf(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len, uint8_t *out,
                  size_t out_len);
void rbcrypto_random(void *buf, size_t len);
/* Constant-time comparison; true when equal. */
bool rbcrypto_equal(const void *a, const void *b, size_t len);

/* Argon2id passphrase costs. MODERATE is the default for key files; the floor and ceiling bound what a
 * file may ask for, so a tampered file can neither weaken the derivation nor exhaust memory. */
#define RB_PWHASH_OPSLIMIT_DEFAULT 3ULL
#define RB_PWHASH_MEMLIMIT_DEFAULT (256ULL << 20)
#define RB_PWHASH_OPSLIMIT_MIN     2ULL
#define RB_PWHASH_OPSLIMIT_MAX     64ULL
#define RB_PWHASH_MEMLIMIT_MIN     (64ULL << 20)
#define RB_PWHASH_MEMLIMIT_MAX     (4ULL << 30)
/* Derives a 32-byte key from a passphrase. RB_ERR_USAGE for costs outside the bounds above, RB_ERR_NOMEM
 * when the system cannot supply the memory. */
rb_err rbcrypto_pwhash(uint8_t key[RB_AEAD_KEY_BYTES], const char *passphrase, size_t pass_len,
                       const uint8_t salt[RB_PWHASH_SALT_BYTES], uint64_t opslimit, uint64_t memlimit);

/* XChaCha20-Poly1305 with associated data: out has len + RB_AEAD_TAG_BYTES bytes. decrypt returns
 * RB_ERR_BAD_PASSPHRASE when the tag fails (wrong key, or the data or ad altered). */
rb_err rbcrypto_aead_encrypt(const uint8_t *msg, size_t len, const uint8_t *ad, size_t ad_len,
                             const uint8_t nonce[RB_AEAD_NONCE_BYTES], const uint8_t key[RB_AEAD_KEY_BYTES],
                             uint8_t *out);
rb_err rbcrypto_aead_decrypt(const uint8_t *box, size_t len, const uint8_t *ad, size_t ad_len,
                             const uint8_t nonce[RB_AEAD_NONCE_BYTES], const uint8_t key[RB_AEAD_KEY_BYTES],
                             uint8_t *out);

/* Memory for secrets: guarded pages, locked, wiped on free. NULL on failure. secret_free(NULL) is fine. */
void *rbcrypto_secret_alloc(size_t len);
void rbcrypto_secret_free(void *p);
/* Wipes len bytes so that the compiler cannot elide it. */
void rbcrypto_wipe(void *p, size_t len);

/* malloc and free for plaintext that passes through other libraries (protobuf-c, jansson): free wipes the
 * block (its size is kept in front of it). rbcrypto_wiping_free(NULL) is fine. */
void *rbcrypto_wiping_malloc(size_t size);
void rbcrypto_wiping_free(void *ptr);

/* A protobuf-c allocator (a ProtobufCAllocator, declared opaque here to keep protobuf out of this
 * header) whose free wipes each block, for messages that hold plaintext. */
struct ProtobufCAllocator;
struct ProtobufCAllocator *rbcrypto_wiping_allocator(void);

#endif
