/* identity.c -- generating, saving and loading identities (secret file layout in docs/KEYS.md).
 *
 * Every buffer that holds a secret key, a passphrase-derived key or the clear payload comes from
 * rbcrypto_secret_alloc, so it is locked, kept out of core dumps and wiped on free. The packed header
 * (magic .. nonce) is the AEAD's associated data: changing the KDF costs, the key id or the salt makes the
 * file fail to open exactly as a wrong passphrase does. */
#include "identity.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "keyfile.h"

struct identity {
    uint8_t sign_sk[RB_SIGN_SK_BYTES]; /* Ed25519 secret key */
    uint8_t box_sk[RB_BOX_SK_BYTES];   /* X25519 secret key */
    card_t card;                       /* the public card, self-signed */
};

static const uint8_t secret_magic[4] = {'R', 'B', 'S', 'K'};
enum { SECRET_VERSION = 1, KDF_NONE = 0, KDF_ARGON2ID = 1, AEAD_NONE = 0, AEAD_XCHACHA20POLY1305 = 1 };
#define SECRET_HEADER     72 /* magic .. nonce: the associated data */
#define SECRET_KEYS       (RB_SIGN_SK_BYTES + RB_BOX_SK_BYTES)
#define SECRET_PACKED_MAX (SECRET_HEADER + SECRET_KEYS + CARD_PACKED_MAX + RB_AEAD_TAG_BYTES)
#define SECRET_TEXT_MAX   1024

static identity_t *identity_alloc(void)
{
    identity_t *id = rbcrypto_secret_alloc(sizeof *id);
    if (id != NULL)
        memset(id, 0, sizeof *id);
    return id;
}

void identity_free(identity_t **id_p)
{
    if (id_p != NULL && *id_p != NULL) {
        rbcrypto_secret_free(*id_p);
        *id_p = NULL;
    }
}

const card_t *identity_card(const identity_t *id)
{
    return &id->card;
}
const uint8_t *identity_sign_sk(const identity_t *id)
{
    return id->sign_sk;
}
const uint8_t *identity_box_sk(const identity_t *id)
{
    return id->box_sk;
}

/* Makes the identity from two seeds, or from fresh random keys when seed is NULL. */
static rb_err make_identity(identity_t **out, const uint8_t *seed, const char *name, card_role role,
                            const char *agency, uint64_t now_s, uint64_t lifetime_s)
{
    *out = NULL;
    if (lifetime_s == 0 || now_s > UINT64_MAX - lifetime_s)
        return RB_ERR_USAGE;
    identity_t *id = identity_alloc();
    if (id == NULL)
        return RB_ERR_NOMEM;
    uint8_t sign_pk[RB_SIGN_PK_BYTES], box_pk[RB_BOX_PK_BYTES];
    if (seed == NULL) {
        rbcrypto_sign_keypair(sign_pk, id->sign_sk);
        rbcrypto_box_keypair(box_pk, id->box_sk);
    } else {
        /* Separate sub-seeds: libsodium would otherwise derive the same scalar for both keys. */
        static const char sign_label[] = "referral-broker/v1/seed/sign",
                          box_label[] = "referral-broker/v1/seed/box";
        uint8_t sub[32];
        rbcrypto_prf(seed, 32, (const uint8_t *)sign_label, sizeof sign_label, sub, sizeof sub);
        rbcrypto_sign_seed_keypair(sub, sign_pk, id->sign_sk);
        rbcrypto_prf(seed, 32, (const uint8_t *)box_label, sizeof box_label, sub, sizeof sub);
        rbcrypto_box_seed_keypair(sub, box_pk, id->box_sk);
        rbcrypto_wipe(sub, sizeof sub);
    }
    rb_err rc =
        card_make(&id->card, name, role, agency, sign_pk, box_pk, now_s, now_s + lifetime_s, id->sign_sk);
    if (rc != RB_OK) {
        identity_free(&id);
        return rc;
    }
    *out = id;
    return RB_OK;
}

rb_err identity_generate(identity_t **out, const char *name, card_role role, const char *agency,
                         uint64_t now_s, uint64_t lifetime_s)
{
    return make_identity(out, NULL, name, role, agency, now_s, lifetime_s);
}

rb_err identity_from_seed(identity_t **out, const uint8_t seed[32], const char *name, card_role role,
                          const char *agency, uint64_t now_s, uint64_t lifetime_s)
{
    return make_identity(out, seed, name, role, agency, now_s, lifetime_s);
}

static void secret_label(const uint8_t key_id[RB_KEY_ID_BYTES], const char *name, bool encrypted, char *out,
                         size_t cap)
{
    char hex[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(key_id, hex);
    snprintf(out, cap, "referral-broker secret key v1: keyid=%s name=%s encrypted=%s", hex, name,
             encrypted ? "argon2id" : "none");
}

rb_err identity_save(const identity_t *id, const char *path, const char *passphrase, size_t pass_len,
                     uint64_t opslimit, uint64_t memlimit, bool force)
{
    if (!force && access(path, F_OK) == 0)
        return RB_ERR_EXISTS; /* before the slow KDF; keyfile_write checks again at the end */
    bool encrypted = passphrase != NULL;
    uint8_t card_bytes[CARD_PACKED_MAX];
    size_t card_len = card_pack(&id->card, card_bytes);
    size_t clear_len = SECRET_KEYS + card_len;
    size_t packed_len = SECRET_HEADER + clear_len + (encrypted ? RB_AEAD_TAG_BYTES : 0);

    uint8_t *packed = rbcrypto_secret_alloc(SECRET_PACKED_MAX);
    uint8_t *clear = rbcrypto_secret_alloc(SECRET_KEYS + CARD_PACKED_MAX);
    uint8_t *key = rbcrypto_secret_alloc(RB_AEAD_KEY_BYTES);
    char *text = rbcrypto_secret_alloc(SECRET_TEXT_MAX);
    rb_err rc = RB_ERR_NOMEM;
    if (packed == NULL || clear == NULL || key == NULL || text == NULL)
        goto done;

    memset(packed, 0, SECRET_HEADER);
    memcpy(packed, secret_magic, 4);
    packed[4] = SECRET_VERSION;
    packed[5] = encrypted ? KDF_ARGON2ID : KDF_NONE;
    packed[6] = encrypted ? AEAD_XCHACHA20POLY1305 : AEAD_NONE;
    memcpy(packed + 8, id->card.key_id, RB_KEY_ID_BYTES);
    memcpy(clear, id->sign_sk, RB_SIGN_SK_BYTES);
    memcpy(clear + RB_SIGN_SK_BYTES, id->box_sk, RB_BOX_SK_BYTES);
    memcpy(clear + SECRET_KEYS, card_bytes, card_len);
    if (encrypted) {
        keyfile_put_u64(packed + 16, opslimit);
        keyfile_put_u64(packed + 24, memlimit);
        rbcrypto_random(packed + 32, RB_PWHASH_SALT_BYTES);
        rbcrypto_random(packed + 48, RB_AEAD_NONCE_BYTES);
        rc = rbcrypto_pwhash(key, passphrase, pass_len, packed + 32, opslimit, memlimit);
        if (rc != RB_OK)
            goto done;
        rc = rbcrypto_aead_encrypt(clear, clear_len, packed, SECRET_HEADER, packed + 48, key,
                                   packed + SECRET_HEADER);
        if (rc != RB_OK)
            goto done;
    } else {
        memcpy(packed + SECRET_HEADER, clear, clear_len);
    }
    char label[160];
    size_t text_len;
    secret_label(id->card.key_id, id->card.name, encrypted, label, sizeof label);
    rc = keyfile_armor(label, packed, packed_len, text, SECRET_TEXT_MAX, &text_len);
    if (rc == RB_OK)
        rc = keyfile_write(path, text, text_len, 0600, force);
done:
    rbcrypto_secret_free(packed);
    rbcrypto_secret_free(clear);
    rbcrypto_secret_free(key);
    rbcrypto_secret_free(text);
    return rc;
}

/* A file in clear has no KDF costs, salt or nonce: those bytes must be zero, so none can change unseen. */
static bool clear_header_zero(const uint8_t *packed)
{
    for (size_t i = 16; i < SECRET_HEADER; i++)
        if (packed[i] != 0)
            return false;
    return true;
}

/* Reads and unarmours a secret file into packed (SECRET_PACKED_MAX secret bytes), checking its mode. */
static rb_err read_secret_file(const char *path, uint8_t *packed, size_t *packed_len, char *label,
                               size_t label_cap)
{
    char *text = rbcrypto_secret_alloc(SECRET_TEXT_MAX);
    if (text == NULL)
        return RB_ERR_NOMEM;
    size_t len;
    struct stat st;
    rb_err rc = keyfile_read(path, text, SECRET_TEXT_MAX, &len, &st);
    if (rc == RB_ERR_TOO_BIG)
        rc = RB_ERR_MALFORMED;
    if (rc == RB_OK && (st.st_mode & 077) != 0)
        rc = RB_ERR_INSECURE_FILE;
    if (rc == RB_OK)
        rc = keyfile_unarmor(text, len, label, label_cap, packed, SECRET_PACKED_MAX, packed_len);
    if (rc == RB_OK && (*packed_len < SECRET_HEADER || memcmp(packed, secret_magic, 4) != 0))
        rc = RB_ERR_MALFORMED;
    if (rc == RB_OK && packed[4] != SECRET_VERSION)
        rc = RB_ERR_BAD_VERSION;
    if (rc == RB_OK &&
        (packed[7] != 0 || !((packed[5] == KDF_NONE && packed[6] == AEAD_NONE && clear_header_zero(packed)) ||
                             (packed[5] == KDF_ARGON2ID && packed[6] == AEAD_XCHACHA20POLY1305))))
        rc = RB_ERR_MALFORMED;
    rbcrypto_secret_free(text);
    return rc;
}

rb_err identity_file_encrypted(const char *path, bool *encrypted)
{
    uint8_t *packed = rbcrypto_secret_alloc(SECRET_PACKED_MAX);
    if (packed == NULL)
        return RB_ERR_NOMEM;
    char label[SECRET_TEXT_MAX];
    size_t len;
    rb_err rc = read_secret_file(path, packed, &len, label, sizeof label);
    if (rc == RB_OK)
        *encrypted = packed[5] == KDF_ARGON2ID;
    rbcrypto_secret_free(packed);
    return rc;
}

/* Checks the decrypted payload (keys || card) and fills id from it. */
static rb_err take_payload(identity_t *id, const uint8_t *clear, size_t len, const uint8_t *key_id)
{
    if (len <= SECRET_KEYS)
        return RB_ERR_MALFORMED;
    rb_err rc = card_unpack(&id->card, clear + SECRET_KEYS, len - SECRET_KEYS);
    if (rc != RB_OK)
        return rc;
    memcpy(id->sign_sk, clear, RB_SIGN_SK_BYTES);
    memcpy(id->box_sk, clear + RB_SIGN_SK_BYTES, RB_BOX_SK_BYTES);
    uint8_t sign_pk[RB_SIGN_PK_BYTES], box_pk[RB_BOX_PK_BYTES];
    rbcrypto_sign_sk_to_pk(id->sign_sk, sign_pk);
    if (rbcrypto_box_sk_to_pk(id->box_sk, box_pk) != RB_OK ||
        memcmp(sign_pk, id->card.sign_pk, sizeof sign_pk) != 0 ||
        memcmp(sign_pk, id->sign_sk + (RB_SIGN_SK_BYTES - RB_SIGN_PK_BYTES), sizeof sign_pk) != 0 ||
        memcmp(box_pk, id->card.box_pk, sizeof box_pk) != 0 ||
        memcmp(key_id, id->card.key_id, RB_KEY_ID_BYTES) != 0)
        return RB_ERR_KEY_MISMATCH;
    return RB_OK;
}

rb_err identity_load(identity_t **out, const char *path, const char *passphrase, size_t pass_len)
{
    *out = NULL;
    uint8_t *packed = rbcrypto_secret_alloc(SECRET_PACKED_MAX);
    uint8_t *clear = rbcrypto_secret_alloc(SECRET_PACKED_MAX);
    uint8_t *key = rbcrypto_secret_alloc(RB_AEAD_KEY_BYTES);
    identity_t *id = identity_alloc();
    char label[SECRET_TEXT_MAX], expect[160];
    size_t len, clear_len = 0;
    rb_err rc = RB_ERR_NOMEM;
    if (packed == NULL || clear == NULL || key == NULL || id == NULL)
        goto done;
    rc = read_secret_file(path, packed, &len, label, sizeof label);
    if (rc != RB_OK)
        goto done;
    bool encrypted = packed[5] == KDF_ARGON2ID;
    if (encrypted) {
        if (passphrase == NULL || len < SECRET_HEADER + RB_AEAD_TAG_BYTES) {
            rc = RB_ERR_BAD_PASSPHRASE;
            goto done;
        }
        rc = rbcrypto_pwhash(key, passphrase, pass_len, packed + 32, keyfile_get_u64(packed + 16),
                             keyfile_get_u64(packed + 24));
        if (rc == RB_ERR_USAGE)
            rc = RB_ERR_MALFORMED; /* costs outside the bounds: altered, or not ours */
        if (rc != RB_OK)
            goto done;
        clear_len = len - SECRET_HEADER - RB_AEAD_TAG_BYTES;
        rc = rbcrypto_aead_decrypt(packed + SECRET_HEADER, len - SECRET_HEADER, packed, SECRET_HEADER,
                                   packed + 48, key, clear);
    } else {
        clear_len = len - SECRET_HEADER;
        memcpy(clear, packed + SECRET_HEADER, clear_len);
    }
    if (rc == RB_OK)
        rc = take_payload(id, clear, clear_len, packed + 8);
    if (rc == RB_OK) {
        secret_label(id->card.key_id, id->card.name, encrypted, expect, sizeof expect);
        if (strcmp(label, expect) != 0)
            rc = RB_ERR_MALFORMED;
    }
done:
    rbcrypto_secret_free(packed);
    rbcrypto_secret_free(clear);
    rbcrypto_secret_free(key);
    if (rc == RB_OK)
        *out = id;
    else
        identity_free(&id);
    return rc;
}
