/* rbcrypto.c -- the project's cryptography, built on libsodium (see rbcrypto.h for why it is one file).
 *
 * Signatures are pure Ed25519 over domain || 0x00 || message, assembled in a temporary buffer that is
 * wiped afterwards because the message may be plaintext. Sealing is crypto_box_seal; passphrase keys are
 * Argon2id (crypto_pwhash); secret files use XChaCha20-Poly1305 (IETF construction). */
#include "rbcrypto.h"

#include <protobuf-c/protobuf-c.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

rb_err rbcrypto_init(void)
{
    if (sodium_init() < 0)
        return RB_ERR_IO;
    /* A core dump would carry decrypted referrals and secret keys; sodium_malloc already marks its own
     * pages, this covers everything else in the process. */
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return RB_ERR_IO;
    return RB_OK;
}

void rbcrypto_sign_keypair(uint8_t pk[RB_SIGN_PK_BYTES], uint8_t sk[RB_SIGN_SK_BYTES])
{
    crypto_sign_ed25519_keypair(pk, sk);
}

void rbcrypto_box_keypair(uint8_t pk[RB_BOX_PK_BYTES], uint8_t sk[RB_BOX_SK_BYTES])
{
    crypto_box_keypair(pk, sk);
}

void rbcrypto_sign_seed_keypair(const uint8_t seed[32], uint8_t pk[RB_SIGN_PK_BYTES],
                                uint8_t sk[RB_SIGN_SK_BYTES])
{
    crypto_sign_ed25519_seed_keypair(pk, sk, seed);
}

void rbcrypto_box_seed_keypair(const uint8_t seed[32], uint8_t pk[RB_BOX_PK_BYTES],
                               uint8_t sk[RB_BOX_SK_BYTES])
{
    crypto_box_seed_keypair(pk, sk, seed);
}

void rbcrypto_sign_sk_to_pk(const uint8_t sk[RB_SIGN_SK_BYTES], uint8_t pk[RB_SIGN_PK_BYTES])
{
    /* The libsodium secret key stores the public key in its second half, but a tampered file could put
     * anything there: derive it from the seed instead. */
    uint8_t seed_pk[RB_SIGN_PK_BYTES];
    uint8_t seed_sk[RB_SIGN_SK_BYTES];
    crypto_sign_ed25519_seed_keypair(seed_pk, seed_sk, sk);
    memcpy(pk, seed_pk, RB_SIGN_PK_BYTES);
    sodium_memzero(seed_sk, sizeof seed_sk);
}

rb_err rbcrypto_box_sk_to_pk(const uint8_t sk[RB_BOX_SK_BYTES], uint8_t pk[RB_BOX_PK_BYTES])
{
    return crypto_scalarmult_base(pk, sk) == 0 ? RB_OK : RB_ERR_KEY_MISMATCH;
}

void rbcrypto_key_id(const uint8_t pk[RB_SIGN_PK_BYTES], uint8_t id[RB_KEY_ID_BYTES])
{
    uint8_t h[RB_HASH_BYTES];
    crypto_hash_sha256(h, pk, RB_SIGN_PK_BYTES);
    memcpy(id, h, RB_KEY_ID_BYTES);
}

/* domain || 0x00 || msg in a fresh buffer; the caller wipes and frees it. */
static uint8_t *domain_message(const char *domain, const uint8_t *msg, size_t len, size_t *out_len)
{
    size_t dlen = strlen(domain);
    if (len > SIZE_MAX - dlen - 1)
        return NULL;
    uint8_t *buf = malloc(dlen + 1 + len + 1);
    if (buf == NULL)
        return NULL;
    memcpy(buf, domain, dlen);
    buf[dlen] = 0;
    if (len > 0)
        memcpy(buf + dlen + 1, msg, len);
    *out_len = dlen + 1 + len;
    return buf;
}

static void wipe_free(uint8_t *buf, size_t len)
{
    if (buf != NULL) {
        sodium_memzero(buf, len);
        free(buf);
    }
}

rb_err rbcrypto_sign(const char *domain, const uint8_t *msg, size_t len, const uint8_t sk[RB_SIGN_SK_BYTES],
                     uint8_t sig[RB_SIG_BYTES])
{
    size_t blen;
    uint8_t *buf = domain_message(domain, msg, len, &blen);
    if (buf == NULL)
        return RB_ERR_NOMEM;
    crypto_sign_ed25519_detached(sig, NULL, buf, blen, sk);
    wipe_free(buf, blen);
    return RB_OK;
}

rb_err rbcrypto_verify(const char *domain, const uint8_t *msg, size_t len, const uint8_t sig[RB_SIG_BYTES],
                       const uint8_t pk[RB_SIGN_PK_BYTES])
{
    size_t blen;
    uint8_t *buf = domain_message(domain, msg, len, &blen);
    if (buf == NULL)
        return RB_ERR_NOMEM;
    int rc = crypto_sign_ed25519_verify_detached(sig, buf, blen, pk);
    wipe_free(buf, blen);
    return rc == 0 ? RB_OK : RB_ERR_BAD_SIGNATURE;
}

rb_err rbcrypto_sign_note(const uint8_t *msg, size_t len, const uint8_t sk[RB_SIGN_SK_BYTES],
                          uint8_t sig[RB_SIG_BYTES])
{
    if (memchr(msg, 0, len) != NULL)
        return RB_ERR_USAGE;
    crypto_sign_ed25519_detached(sig, NULL, msg, len, sk);
    return RB_OK;
}

rb_err rbcrypto_verify_note(const uint8_t *msg, size_t len, const uint8_t sig[RB_SIG_BYTES],
                            const uint8_t pk[RB_SIGN_PK_BYTES])
{
    return crypto_sign_ed25519_verify_detached(sig, msg, len, pk) == 0 ? RB_OK : RB_ERR_BAD_SIGNATURE;
}

rb_err rbcrypto_seal(const uint8_t *msg, size_t len, const uint8_t pk[RB_BOX_PK_BYTES], uint8_t *out)
{
    return crypto_box_seal(out, msg, len, pk) == 0 ? RB_OK : RB_ERR_USAGE;
}

rb_err rbcrypto_seal_open(const uint8_t *box, size_t len, const uint8_t pk[RB_BOX_PK_BYTES],
                          const uint8_t sk[RB_BOX_SK_BYTES], uint8_t *out)
{
    if (len < RB_SEAL_OVERHEAD)
        return RB_ERR_DECRYPT;
    return crypto_box_seal_open(out, box, len, pk, sk) == 0 ? RB_OK : RB_ERR_DECRYPT;
}

void rbcrypto_sha256(const uint8_t *msg, size_t len, uint8_t out[RB_HASH_BYTES])
{
    crypto_hash_sha256(out, msg, len);
}

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(rbcrypto_sha256_t),
               "rbcrypto_sha256_t must hold libsodium's SHA-256 state");

void rbcrypto_sha256_init(rbcrypto_sha256_t *h)
{
    crypto_hash_sha256_init((crypto_hash_sha256_state *)h->opaque);
}

void rbcrypto_sha256_update(rbcrypto_sha256_t *h, const uint8_t *data, size_t len)
{
    crypto_hash_sha256_update((crypto_hash_sha256_state *)h->opaque, data, len);
}

void rbcrypto_sha256_final(rbcrypto_sha256_t *h, uint8_t out[RB_HASH_BYTES])
{
    crypto_hash_sha256_final((crypto_hash_sha256_state *)h->opaque, out);
}

void rbcrypto_prf(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len, uint8_t *out,
                  size_t out_len)
{
    crypto_generichash_blake2b(out, out_len, msg, len, key, key_len);
}

void rbcrypto_random(void *buf, size_t len)
{
    randombytes_buf(buf, len);
}

bool rbcrypto_equal(const void *a, const void *b, size_t len)
{
    return sodium_memcmp(a, b, len) == 0;
}

rb_err rbcrypto_pwhash(uint8_t key[RB_AEAD_KEY_BYTES], const char *passphrase, size_t pass_len,
                       const uint8_t salt[RB_PWHASH_SALT_BYTES], uint64_t opslimit, uint64_t memlimit)
{
    if (opslimit < RB_PWHASH_OPSLIMIT_MIN || opslimit > RB_PWHASH_OPSLIMIT_MAX ||
        memlimit < RB_PWHASH_MEMLIMIT_MIN || memlimit > RB_PWHASH_MEMLIMIT_MAX)
        return RB_ERR_USAGE;
    if (crypto_pwhash(key, RB_AEAD_KEY_BYTES, passphrase, pass_len, salt, opslimit, (size_t)memlimit,
                      crypto_pwhash_ALG_ARGON2ID13) != 0)
        return RB_ERR_NOMEM;
    return RB_OK;
}

rb_err rbcrypto_aead_encrypt(const uint8_t *msg, size_t len, const uint8_t *ad, size_t ad_len,
                             const uint8_t nonce[RB_AEAD_NONCE_BYTES], const uint8_t key[RB_AEAD_KEY_BYTES],
                             uint8_t *out)
{
    crypto_aead_xchacha20poly1305_ietf_encrypt(out, NULL, msg, len, ad, ad_len, NULL, nonce, key);
    return RB_OK;
}

rb_err rbcrypto_aead_decrypt(const uint8_t *box, size_t len, const uint8_t *ad, size_t ad_len,
                             const uint8_t nonce[RB_AEAD_NONCE_BYTES], const uint8_t key[RB_AEAD_KEY_BYTES],
                             uint8_t *out)
{
    if (len < RB_AEAD_TAG_BYTES)
        return RB_ERR_BAD_PASSPHRASE;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, NULL, NULL, box, len, ad, ad_len, nonce, key) != 0)
        return RB_ERR_BAD_PASSPHRASE;
    return RB_OK;
}

void *rbcrypto_secret_alloc(size_t len)
{
    return sodium_malloc(len);
}

void rbcrypto_secret_free(void *p)
{
    sodium_free(p); /* wipes first; accepts NULL */
}

void rbcrypto_wipe(void *p, size_t len)
{
    sodium_memzero(p, len);
}

/* Blocks carry their size in front so that free can wipe them; 16 bytes keep the alignment malloc gives. */
#define WIPE_PREFIX 16

void *rbcrypto_wiping_malloc(size_t size)
{
    if (size > SIZE_MAX - WIPE_PREFIX)
        return NULL;
    unsigned char *p = malloc(size + WIPE_PREFIX);
    if (p == NULL)
        return NULL;
    memcpy(p, &size, sizeof size);
    return p + WIPE_PREFIX;
}

void rbcrypto_wiping_free(void *ptr)
{
    if (ptr == NULL)
        return;
    unsigned char *p = (unsigned char *)ptr - WIPE_PREFIX;
    size_t size;
    memcpy(&size, p, sizeof size);
    sodium_memzero(p, size + WIPE_PREFIX);
    free(p);
}

static void *wiping_alloc(void *data, size_t size)
{
    (void)data;
    return rbcrypto_wiping_malloc(size);
}

static void wiping_free(void *data, void *ptr)
{
    (void)data;
    rbcrypto_wiping_free(ptr);
}

static ProtobufCAllocator wiping_allocator = {wiping_alloc, wiping_free, NULL};

struct ProtobufCAllocator *rbcrypto_wiping_allocator(void)
{
    return &wiping_allocator;
}
