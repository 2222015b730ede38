/* card.c -- packing, parsing and self-signature of identity cards (layout in docs/KEYS.md).
 *
 * Parsing walks a cursor with a limit over the packed bytes; every read goes through take(), so no
 * length field can make it read past the end. */
#include "card.h"

#include <stdio.h>
#include <time.h>
#include <string.h>

#include "keyfile.h"

static const uint8_t card_magic[4] = {'R', 'B', 'C', 'D'};
enum { CARD_VERSION = 1, SIG_ALG_ED25519 = 1, BOX_ALG_X25519 = 1 };
#define CARD_FIXED 96 /* bytes before the name: magic .. expires */

bool card_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CARD_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

bool card_agency_ok(const char *agency)
{
    if (strlen(agency) != CARD_AGENCY_LEN)
        return false;
    for (size_t i = 0; i < CARD_AGENCY_LEN; i++) {
        char c = agency[i];
        bool upper = c >= 'A' && c <= 'Z', digit = c >= '0' && c <= '9';
        if (!(upper || (i >= 2 && digit)))
            return false;
    }
    return true;
}

static const char *const role_names[] = {NULL, "source", "sink", "broker", "admin"};

const char *card_role_name(card_role role)
{
    return role >= CARD_ROLE_SOURCE && role <= CARD_ROLE_ADMIN ? role_names[role] : "?";
}

bool card_role_parse(const char *name, card_role *role)
{
    for (int r = CARD_ROLE_SOURCE; r <= CARD_ROLE_ADMIN; r++)
        if (strcmp(name, role_names[r]) == 0) {
            *role = (card_role)r;
            return true;
        }
    return false;
}

/* The signed part: everything but the trailing signature. */
static size_t pack_signed(const card_t *card, uint8_t *out)
{
    size_t nlen = strlen(card->name), alen = strlen(card->agency);
    memcpy(out, card_magic, 4);
    out[4] = CARD_VERSION;
    out[5] = card->role;
    out[6] = SIG_ALG_ED25519;
    out[7] = BOX_ALG_X25519;
    memcpy(out + 8, card->key_id, RB_KEY_ID_BYTES);
    memcpy(out + 16, card->sign_pk, RB_SIGN_PK_BYTES);
    memcpy(out + 48, card->box_pk, RB_BOX_PK_BYTES);
    keyfile_put_u64(out + 80, card->created);
    keyfile_put_u64(out + 88, card->expires);
    size_t n = CARD_FIXED;
    out[n++] = (uint8_t)nlen;
    memcpy(out + n, card->name, nlen);
    n += nlen;
    out[n++] = (uint8_t)alen;
    memcpy(out + n, card->agency, alen);
    return n + alen;
}

size_t card_pack(const card_t *card, uint8_t out[CARD_PACKED_MAX])
{
    size_t n = pack_signed(card, out);
    memcpy(out + n, card->signature, RB_SIG_BYTES);
    return n + RB_SIG_BYTES;
}

bool card_equal(const card_t *a, const card_t *b)
{
    uint8_t pa[CARD_PACKED_MAX], pb[CARD_PACKED_MAX];
    size_t na = card_pack(a, pa), nb = card_pack(b, pb);
    return na == nb && memcmp(pa, pb, na) == 0;
}

rb_err card_make(card_t *card, const char *name, card_role role, const char *agency,
                 const uint8_t sign_pk[RB_SIGN_PK_BYTES], const uint8_t box_pk[RB_BOX_PK_BYTES],
                 uint64_t created, uint64_t expires, const uint8_t sign_sk[RB_SIGN_SK_BYTES])
{
    if (!card_name_ok(name) || !card_agency_ok(agency) || role < CARD_ROLE_SOURCE || role > CARD_ROLE_ADMIN ||
        expires <= created)
        return RB_ERR_USAGE;
    memset(card, 0, sizeof *card);
    card->role = (uint8_t)role;
    memcpy(card->sign_pk, sign_pk, RB_SIGN_PK_BYTES);
    memcpy(card->box_pk, box_pk, RB_BOX_PK_BYTES);
    rbcrypto_key_id(sign_pk, card->key_id);
    card->created = created;
    card->expires = expires;
    strcpy(card->name, name);
    strcpy(card->agency, agency);
    uint8_t buf[CARD_PACKED_MAX];
    size_t n = pack_signed(card, buf);
    return rbcrypto_sign(RB_DOMAIN_CARD, buf, n, sign_sk, card->signature);
}

typedef struct {
    const uint8_t *p; /* next unread byte */
    size_t left;      /* bytes after p */
} cursor_t;

static const uint8_t *take(cursor_t *c, size_t n)
{
    if (n > c->left)
        return NULL;
    const uint8_t *at = c->p;
    c->p += n;
    c->left -= n;
    return at;
}

/* A length-prefixed string of at most max bytes into out (max + 1 bytes). */
static bool take_string(cursor_t *c, char *out, size_t max)
{
    const uint8_t *len = take(c, 1);
    if (len == NULL || *len > max)
        return false;
    const uint8_t *s = take(c, *len);
    if (s == NULL || memchr(s, 0, *len) != NULL)
        return false;
    memcpy(out, s, *len);
    out[*len] = '\0';
    return true;
}

/* Cards whose signature verified, remembered byte for byte: the broker reads the same few parties' cards
 * from its store for every frame, and an Ed25519 verification costs more than the rest of the frame. The
 * same bytes get the same verdict, so a card that verified once need not be verified again. Per thread, so
 * that no lock is needed. */
#define VERIFIED_CARDS 64
/* cppcheck does not see the members used through the _Thread_local array below. */
typedef struct {
    // cppcheck-suppress unusedStructMember
    uint8_t bytes[CARD_PACKED_MAX];
    // cppcheck-suppress unusedStructMember
    size_t len;
} verified_card_t;
static _Thread_local verified_card_t verified[VERIFIED_CARDS];
static _Thread_local size_t n_verified; /* cards remembered so far (the slots are reused round-robin) */

static bool verified_before(const uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < n_verified && i < VERIFIED_CARDS; i++)
        if (verified[i].len == len && memcmp(verified[i].bytes, bytes, len) == 0)
            return true;
    return false;
}

rb_err card_unpack(card_t *card, const uint8_t *bytes, size_t len)
{
    cursor_t c = {bytes, len};
    memset(card, 0, sizeof *card);
    const uint8_t *fixed = take(&c, CARD_FIXED);
    if (fixed == NULL || memcmp(fixed, card_magic, 4) != 0)
        return RB_ERR_BAD_CARD;
    if (fixed[4] != CARD_VERSION)
        return RB_ERR_BAD_VERSION;
    if (fixed[6] != SIG_ALG_ED25519 || fixed[7] != BOX_ALG_X25519)
        return RB_ERR_BAD_CARD;
    card->role = fixed[5];
    memcpy(card->key_id, fixed + 8, RB_KEY_ID_BYTES);
    memcpy(card->sign_pk, fixed + 16, RB_SIGN_PK_BYTES);
    memcpy(card->box_pk, fixed + 48, RB_BOX_PK_BYTES);
    card->created = keyfile_get_u64(fixed + 80);
    card->expires = keyfile_get_u64(fixed + 88);
    if (!take_string(&c, card->name, CARD_NAME_MAX) || !take_string(&c, card->agency, CARD_AGENCY_LEN))
        return RB_ERR_BAD_CARD;
    size_t signed_len = len - c.left;
    const uint8_t *sig = take(&c, RB_SIG_BYTES);
    if (sig == NULL || c.left != 0)
        return RB_ERR_BAD_CARD;
    memcpy(card->signature, sig, RB_SIG_BYTES);

    uint8_t id[RB_KEY_ID_BYTES];
    rbcrypto_key_id(card->sign_pk, id);
    if (card->role < CARD_ROLE_SOURCE || card->role > CARD_ROLE_ADMIN || !card_name_ok(card->name) ||
        !card_agency_ok(card->agency) || card->expires <= card->created ||
        memcmp(id, card->key_id, sizeof id) != 0)
        return RB_ERR_BAD_CARD;
    if (verified_before(bytes, len))
        return RB_OK;
    if (rbcrypto_verify(RB_DOMAIN_CARD, bytes, signed_len, card->signature, card->sign_pk) != RB_OK)
        return RB_ERR_BAD_CARD;
    if (len <= CARD_PACKED_MAX) {
        size_t slot = n_verified++ % VERIFIED_CARDS;
        memcpy(verified[slot].bytes, bytes, len);
        verified[slot].len = len;
    }
    return RB_OK;
}

static void card_label(const card_t *card, char *out, size_t cap)
{
    char id[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(card->key_id, id);
    snprintf(out, cap, "referral-broker card v1: name=%s role=%s agency=%s keyid=%s", card->name,
             card_role_name((card_role)card->role), card->agency, id);
}

size_t card_to_text(const card_t *card, char text[CARD_TEXT_MAX])
{
    char label[160];
    uint8_t packed[CARD_PACKED_MAX];
    size_t n = card_pack(card, packed), text_len = 0;
    card_label(card, label, sizeof label);
    rb_err rc = keyfile_armor(label, packed, n, text, CARD_TEXT_MAX, &text_len);
    (void)rc; /* CARD_TEXT_MAX holds the largest card */
    return text_len;
}

rb_err card_from_text(card_t *card, const char *text, size_t len)
{
    char label[CARD_TEXT_MAX], expect[160];
    uint8_t packed[CARD_PACKED_MAX];
    size_t n;
    if (keyfile_unarmor(text, len, label, sizeof label, packed, sizeof packed, &n) != RB_OK)
        return RB_ERR_BAD_CARD;
    rb_err rc = card_unpack(card, packed, n);
    if (rc != RB_OK)
        return rc;
    card_label(card, expect, sizeof expect);
    return strcmp(label, expect) == 0 ? RB_OK : RB_ERR_BAD_CARD;
}

rb_err card_read_file(card_t *card, const char *path)
{
    char text[CARD_TEXT_MAX];
    size_t len;
    struct stat st;
    rb_err rc = keyfile_read(path, text, sizeof text, &len, &st);
    if (rc != RB_OK)
        return rc == RB_ERR_TOO_BIG ? RB_ERR_BAD_CARD : rc;
    return card_from_text(card, text, len);
}

rb_err card_write_file(const card_t *card, const char *path, bool force)
{
    char text[CARD_TEXT_MAX];
    size_t len = card_to_text(card, text);
    return keyfile_write(path, text, len, 0644, force);
}

static const uint8_t cert_magic[4] = {'R', 'B', 'K', 'C'};
#define CERT_VERSION   1
#define CERT_SIGNED_AT 24 /* magic, version, reserved, both key ids: the certification's own signed bytes */

/* What the old key signs: the certification's first bytes, then the new card as packed. */
static size_t cert_message(const card_cert_t *cert, const card_t *next,
                           uint8_t out[CERT_SIGNED_AT + CARD_PACKED_MAX])
{
    uint8_t packed[CARD_CERT_PACKED];
    card_cert_pack(cert, packed);
    memcpy(out, packed, CERT_SIGNED_AT);
    return CERT_SIGNED_AT + card_pack(next, out + CERT_SIGNED_AT);
}

static bool same_holder(const card_t *old, const card_t *next)
{
    return old->role == next->role && strcmp(old->name, next->name) == 0 &&
           strcmp(old->agency, next->agency) == 0 && next->created >= old->created &&
           memcmp(old->key_id, next->key_id, RB_KEY_ID_BYTES) != 0;
}

rb_err card_certify(const card_t *old, const uint8_t old_sign_sk[RB_SIGN_SK_BYTES], const card_t *next,
                    card_cert_t *cert)
{
    memset(cert, 0, sizeof *cert);
    if (!same_holder(old, next))
        return RB_ERR_USAGE;
    memcpy(cert->old_key_id, old->key_id, RB_KEY_ID_BYTES);
    memcpy(cert->new_key_id, next->key_id, RB_KEY_ID_BYTES);
    uint8_t msg[CERT_SIGNED_AT + CARD_PACKED_MAX];
    size_t n = cert_message(cert, next, msg);
    return rbcrypto_sign(RB_DOMAIN_ROTATE, msg, n, old_sign_sk, cert->signature);
}

rb_err card_cert_check(const card_cert_t *cert, const card_t *old, const card_t *next)
{
    if (memcmp(cert->old_key_id, old->key_id, RB_KEY_ID_BYTES) != 0 ||
        memcmp(cert->new_key_id, next->key_id, RB_KEY_ID_BYTES) != 0 || !same_holder(old, next))
        return RB_ERR_USAGE;
    uint8_t msg[CERT_SIGNED_AT + CARD_PACKED_MAX];
    size_t n = cert_message(cert, next, msg);
    return rbcrypto_verify(RB_DOMAIN_ROTATE, msg, n, cert->signature, old->sign_pk) == RB_OK
               ? RB_OK
               : RB_ERR_BAD_SIGNATURE;
}

void card_cert_pack(const card_cert_t *cert, uint8_t out[CARD_CERT_PACKED])
{
    memset(out, 0, CARD_CERT_PACKED);
    memcpy(out, cert_magic, 4);
    out[4] = CERT_VERSION;
    memcpy(out + 8, cert->old_key_id, RB_KEY_ID_BYTES);
    memcpy(out + 16, cert->new_key_id, RB_KEY_ID_BYTES);
    memcpy(out + CERT_SIGNED_AT, cert->signature, RB_SIG_BYTES);
}

rb_err card_cert_unpack(card_cert_t *cert, const uint8_t *bytes, size_t len)
{
    static const uint8_t zero[3];
    memset(cert, 0, sizeof *cert);
    if (len != CARD_CERT_PACKED || memcmp(bytes, cert_magic, 4) != 0 || memcmp(bytes + 5, zero, 3) != 0)
        return RB_ERR_MALFORMED;
    if (bytes[4] != CERT_VERSION)
        return RB_ERR_BAD_VERSION;
    memcpy(cert->old_key_id, bytes + 8, RB_KEY_ID_BYTES);
    memcpy(cert->new_key_id, bytes + 16, RB_KEY_ID_BYTES);
    memcpy(cert->signature, bytes + CERT_SIGNED_AT, RB_SIG_BYTES);
    return RB_OK;
}

static void cert_label(const card_cert_t *cert, char *out, size_t cap)
{
    char old[2 * RB_KEY_ID_BYTES + 1], next[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(cert->old_key_id, old);
    card_key_id_hex(cert->new_key_id, next);
    snprintf(out, cap, "referral-broker key certification v1: old=%s new=%s", old, next);
}

size_t card_cert_to_text(const card_cert_t *cert, char text[CARD_TEXT_MAX])
{
    char label[120];
    uint8_t packed[CARD_CERT_PACKED];
    size_t text_len = 0;
    card_cert_pack(cert, packed);
    cert_label(cert, label, sizeof label);
    rb_err rc = keyfile_armor(label, packed, sizeof packed, text, CARD_TEXT_MAX, &text_len);
    (void)rc; /* CARD_TEXT_MAX holds it */
    return text_len;
}

rb_err card_cert_from_text(card_cert_t *cert, const char *text, size_t len)
{
    char label[CARD_TEXT_MAX], expect[120];
    uint8_t packed[CARD_CERT_PACKED + 1];
    size_t n;
    if (keyfile_unarmor(text, len, label, sizeof label, packed, sizeof packed, &n) != RB_OK)
        return RB_ERR_MALFORMED;
    rb_err rc = card_cert_unpack(cert, packed, n);
    if (rc != RB_OK)
        return rc;
    cert_label(cert, expect, sizeof expect);
    return strcmp(label, expect) == 0 ? RB_OK : RB_ERR_MALFORMED;
}

rb_err card_cert_read_file(card_cert_t *cert, const char *path)
{
    char text[CARD_TEXT_MAX];
    size_t len;
    struct stat st;
    rb_err rc = keyfile_read(path, text, sizeof text, &len, &st);
    if (rc != RB_OK)
        return rc == RB_ERR_TOO_BIG ? RB_ERR_MALFORMED : rc;
    return card_cert_from_text(cert, text, len);
}

rb_err card_cert_write_file(const card_cert_t *cert, const char *path, bool force)
{
    char text[CARD_TEXT_MAX];
    size_t len = card_cert_to_text(cert, text);
    return keyfile_write(path, text, len, 0644, force);
}

rb_err card_valid_at(const card_t *card, uint64_t t)
{
    return t >= card->created && t < card->expires ? RB_OK : RB_ERR_KEY_EXPIRED;
}

void card_key_id_hex(const uint8_t id[RB_KEY_ID_BYTES], char out[2 * RB_KEY_ID_BYTES + 1])
{
    keyfile_hex(id, RB_KEY_ID_BYTES, out);
}

void card_fingerprint(const card_t *card, char out[CARD_FINGERPRINT_MAX])
{
    uint8_t both[RB_SIGN_PK_BYTES + RB_BOX_PK_BYTES], h[RB_HASH_BYTES];
    char hex[2 * RB_HASH_BYTES + 1];
    memcpy(both, card->sign_pk, RB_SIGN_PK_BYTES);
    memcpy(both + RB_SIGN_PK_BYTES, card->box_pk, RB_BOX_PK_BYTES);
    rbcrypto_sha256(both, sizeof both, h);
    keyfile_hex(h, sizeof h, hex);
    size_t o = 0;
    for (size_t i = 0; i < 2 * RB_HASH_BYTES; i++) {
        if (i > 0 && i % 4 == 0)
            out[o++] = ' ';
        out[o++] = hex[i];
    }
    out[o] = '\0';
}

void card_time_text(uint64_t t, char out[CARD_TIME_TEXT])
{
    struct tm tm;
    time_t tt = t > (uint64_t)INT32_MAX * 64 ? (time_t)INT32_MAX * 64 : (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, CARD_TIME_TEXT, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, CARD_TIME_TEXT, "%llu", (unsigned long long)t);
}
