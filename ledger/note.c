/* note.c -- C2SP signed notes, checkpoints and tlog-proofs as text (see note.h).
 *
 * Everything the ledger publishes in these formats is checked by tools written elsewhere, and everything
 * it reads in them may come from anyone, so the parsers accept exactly what the specifications allow:
 * one canonical spelling of every number and hash, and no byte the grammar has no place for. */
#include "note.h"

#include "keyfile.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define EM_DASH_SPACE     "\xe2\x80\x94 " /* U+2014 then U+0020: how every signature line starts */
#define EM_DASH_SPACE_LEN 4
#define SIG_TYPE_ED25519  0x01
#define ROOT_B64_LEN      44 /* base64 of 32 bytes, padding included */
#define VKEY_B64_LEN      44 /* base64 of the type byte and a 32-byte key */
#define PROOF_HEADER      "c2sp.org/tlog-proof@v1"
#define U64_DIGITS_MAX    20

/* One code point of valid UTF-8 at s (n bytes left): its length, or 0 for an invalid sequence (truncated,
 * overlong, a surrogate or beyond U+10FFFF), so that no two byte strings can spell the same text. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len;
    uint32_t c;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        c = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        c = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        c = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3fu);
    }
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* Valid UTF-8 without control characters other than newline. The specification forbids only those below
 * U+0020; DEL and the C1 controls are refused too, as nothing the ledger reads has a use for them. */
static bool text_ok(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0 || (cp < 0x20 && cp != '\n') || (cp >= 0x7f && cp <= 0x9f))
            return false;
        i += n;
    }
    return true;
}

/* Unicode White_Space (what Go's unicode.IsSpace tests), which a key name must not contain. */
static bool unicode_space(uint32_t cp)
{
    return cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
           cp == 0x3000;
}

/* A key name as the specification allows it in a signature line. Other signers' names may use any
 * Unicode; only the names this module signs with are held to note_name_ok. */
static bool sig_name_ok(const char *name, size_t len)
{
    const unsigned char *s = (const unsigned char *)name;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0 || cp == '+' || unicode_space(cp))
            return false;
        i += n;
    }
    return true;
}

/* Canonical base64 only (keyfile_unbase64), never empty. */
static bool b64_decode(const char *s, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    return len > 0 && keyfile_unbase64(s, len, out, cap, out_len) == RB_OK;
}

static bool b64_decode_exact(const char *s, size_t len, uint8_t *out, size_t want)
{
    size_t n;
    return b64_decode(s, len, out, want, &n) && n == want;
}

/* Canonical decimal: "0" or no leading zero, at most 2^64-1, digits only. */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > U64_DIGITS_MAX || (s[0] == '0' && len > 1))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The next newline-terminated line of [*p, end), without its newline; false when no newline is left. */
static bool next_line(const char **p, const char *end, const char **line, size_t *len)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (nl == NULL)
        return false;
    *line = *p;
    *len = (size_t)(nl - *p);
    *p = nl + 1;
    return true;
}

bool note_name_ok(const char *name)
{
    if (name == NULL)
        return false;
    size_t len = strnlen(name, NOTE_NAME_MAX + 1);
    if (len == 0 || len > NOTE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x21 || name[i] > 0x7e || name[i] == '+')
            return false;
    return true;
}

void note_key_id(const char *name, const uint8_t pk[RB_SIGN_PK_BYTES], uint8_t id[NOTE_KEY_ID_BYTES])
{
    uint8_t buf[NOTE_NAME_MAX + 2 + RB_SIGN_PK_BYTES], hash[RB_HASH_BYTES];
    size_t len = strnlen(name, NOTE_NAME_MAX + 1);
    if (len > NOTE_NAME_MAX) { /* not a key name; nothing this module accepts will carry it */
        memset(id, 0, NOTE_KEY_ID_BYTES);
        return;
    }
    memcpy(buf, name, len);
    buf[len] = '\n';
    buf[len + 1] = SIG_TYPE_ED25519;
    memcpy(buf + len + 2, pk, RB_SIGN_PK_BYTES);
    rbcrypto_sha256(buf, len + 2 + RB_SIGN_PK_BYTES, hash);
    memcpy(id, hash, NOTE_KEY_ID_BYTES);
}

rb_err note_verifier_key(const char *name, const uint8_t pk[RB_SIGN_PK_BYTES], char out[NOTE_VKEY_MAX])
{
    if (!note_name_ok(name))
        return RB_ERR_USAGE;
    uint8_t id[NOTE_KEY_ID_BYTES], typed[1 + RB_SIGN_PK_BYTES];
    note_key_id(name, pk, id);
    typed[0] = SIG_TYPE_ED25519;
    memcpy(typed + 1, pk, RB_SIGN_PK_BYTES);
    int n = snprintf(out, NOTE_VKEY_MAX, "%s+%02x%02x%02x%02x+", name, id[0], id[1], id[2], id[3]);
    size_t b64 = sodium_base64_ENCODED_LEN(sizeof typed, sodium_base64_VARIANT_ORIGINAL);
    if (n < 0 || (size_t)n + b64 > NOTE_VKEY_MAX)
        return RB_ERR_USAGE;
    sodium_bin2base64(out + n, b64, typed, sizeof typed, sodium_base64_VARIANT_ORIGINAL);
    return RB_OK;
}

rb_err note_parse_verifier_key(const char *text, char name[NOTE_NAME_MAX + 1], uint8_t pk[RB_SIGN_PK_BYTES])
{
    size_t len = strnlen(text, NOTE_VKEY_MAX);
    const char *plus = memchr(text, '+', len);
    if (len == NOTE_VKEY_MAX || plus == NULL)
        return RB_ERR_MALFORMED;
    size_t name_len = (size_t)(plus - text);
    char got_name[NOTE_NAME_MAX + 1];
    if (name_len > NOTE_NAME_MAX)
        return RB_ERR_MALFORMED;
    memcpy(got_name, text, name_len);
    got_name[name_len] = '\0';
    /* name '+' 8 hex digits '+' base64(type || key): the rest has a fixed length. */
    const char *hex = plus + 1, *b64 = plus + 2 + 2 * NOTE_KEY_ID_BYTES;
    uint8_t typed[1 + RB_SIGN_PK_BYTES], id[NOTE_KEY_ID_BYTES];
    char want_hex[2 * NOTE_KEY_ID_BYTES + 1];
    if (!note_name_ok(got_name) || len != name_len + 2 + 2 * NOTE_KEY_ID_BYTES + VKEY_B64_LEN ||
        hex[2 * NOTE_KEY_ID_BYTES] != '+' || !b64_decode_exact(b64, VKEY_B64_LEN, typed, sizeof typed) ||
        typed[0] != SIG_TYPE_ED25519)
        return RB_ERR_MALFORMED;
    note_key_id(got_name, typed + 1, id);
    /* Lower-case only, the one spelling the specification's tools write. */
    sodium_bin2hex(want_hex, sizeof want_hex, id, sizeof id);
    if (memcmp(hex, want_hex, 2 * NOTE_KEY_ID_BYTES) != 0)
        return RB_ERR_MALFORMED;
    memcpy(name, got_name, name_len + 1);
    memcpy(pk, typed + 1, RB_SIGN_PK_BYTES);
    return RB_OK;
}

/* A signature line without its newline: the key name, and the decoded key ID || signature. */
static bool parse_sig_line(const char *line, size_t len, const char **name, size_t *name_len, uint8_t *raw,
                           size_t cap, size_t *raw_len)
{
    if (len < EM_DASH_SPACE_LEN || memcmp(line, EM_DASH_SPACE, EM_DASH_SPACE_LEN) != 0)
        return false;
    const char *p = line + EM_DASH_SPACE_LEN, *end = line + len;
    const char *space = memchr(p, ' ', (size_t)(end - p));
    if (space == NULL)
        return false;
    *name = p;
    *name_len = (size_t)(space - p);
    return sig_name_ok(p, *name_len) && b64_decode(space + 1, (size_t)(end - space - 1), raw, cap, raw_len) &&
           *raw_len > NOTE_KEY_ID_BYTES;
}

/* Splits a note at its last blank line and checks every signature line's syntax. The signed text is
 * text[0, *body_len): the body with its final newline, without the blank line. */
static rb_err note_split(const char *text, size_t len, size_t *body_len, const char **sigs, size_t *sigs_len)
{
    if (text == NULL || len < 3 || len > NOTE_TEXT_MAX || text[len - 1] != '\n' || !text_ok(text, len))
        return RB_ERR_MALFORMED;
    size_t i = len - 2; /* the blank line's newline is at i + 1, at most len - 2 */
    while (i > 0 && !(text[i] == '\n' && text[i + 1] == '\n'))
        i--;
    if (text[i] != '\n' || text[i + 1] != '\n' || i + 2 == len)
        return RB_ERR_MALFORMED;
    *body_len = i + 1;
    *sigs = text + i + 2;
    *sigs_len = len - i - 2;
    const char *p = *sigs, *end = text + len, *line, *name;
    size_t line_len, name_len, raw_len;
    uint8_t raw[NOTE_TEXT_MAX];
    while (p < end) {
        if (!next_line(&p, end, &line, &line_len) ||
            !parse_sig_line(line, line_len, &name, &name_len, raw, sizeof raw, &raw_len))
            return RB_ERR_MALFORMED;
    }
    return RB_OK;
}

/* The checkpoint body: origin, size, root, then optional extension lines, none of them empty. */
static rb_err parse_body(const char *body, size_t len, checkpoint_t *cp)
{
    const char *p = body, *end = body + len, *line;
    size_t n;
    memset(cp, 0, sizeof *cp); /* callers copy the whole struct; no stack bytes go with it */
    if (!next_line(&p, end, &line, &n) || n == 0 || n > NOTE_NAME_MAX)
        return RB_ERR_MALFORMED;
    memcpy(cp->origin, line, n);
    cp->origin[n] = '\0';
    if (!next_line(&p, end, &line, &n) || !parse_u64(line, n, &cp->size))
        return RB_ERR_MALFORMED;
    if (!next_line(&p, end, &line, &n) || n != ROOT_B64_LEN ||
        !b64_decode_exact(line, n, cp->root.bytes, MERKLE_HASH_BYTES))
        return RB_ERR_MALFORMED;
    while (p < end)
        if (!next_line(&p, end, &line, &n) || n == 0)
            return RB_ERR_MALFORMED;
    return RB_OK;
}

rb_err checkpoint_parse(const char *text, size_t len, checkpoint_t *out)
{
    size_t body_len, sigs_len;
    const char *sigs;
    checkpoint_t cp;
    rb_err rc = note_split(text, len, &body_len, &sigs, &sigs_len);
    if (rc == RB_OK)
        rc = parse_body(text, body_len, &cp);
    if (rc == RB_OK)
        *out = cp;
    return rc;
}

rb_err checkpoint_open(const char *text, size_t len, const char *name, const uint8_t pk[RB_SIGN_PK_BYTES],
                       checkpoint_t *out)
{
    if (!note_name_ok(name))
        return RB_ERR_USAGE;
    size_t body_len, sigs_len;
    const char *sigs;
    checkpoint_t cp;
    rb_err rc = note_split(text, len, &body_len, &sigs, &sigs_len);
    if (rc == RB_OK)
        rc = parse_body(text, body_len, &cp);
    if (rc != RB_OK)
        return rc;
    if (strcmp(cp.origin, name) != 0) /* another log's checkpoint, whoever signed it */
        return RB_ERR_UNKNOWN_SENDER;
    uint8_t id[NOTE_KEY_ID_BYTES], raw[NOTE_TEXT_MAX];
    note_key_id(name, pk, id);
    size_t want_len = strlen(name), line_len, sig_name_len, raw_len;
    const char *p = sigs, *end = sigs + sigs_len, *line, *sig_name;
    bool found = false;
    /* Every line of this key must hold, not just one: a note carrying a bad signature by a trusted key
     * has been tampered with, and the specification lets a verifier refuse it whole. */
    while (p < end) {
        if (!next_line(&p, end, &line, &line_len) ||
            !parse_sig_line(line, line_len, &sig_name, &sig_name_len, raw, sizeof raw, &raw_len))
            return RB_ERR_MALFORMED;
        if (sig_name_len != want_len || memcmp(sig_name, name, want_len) != 0 ||
            memcmp(raw, id, NOTE_KEY_ID_BYTES) != 0)
            continue;
        found = true;
        if (raw_len != NOTE_KEY_ID_BYTES + RB_SIG_BYTES ||
            rbcrypto_verify_note((const uint8_t *)text, body_len, raw + NOTE_KEY_ID_BYTES, pk) != RB_OK)
            return RB_ERR_BAD_SIGNATURE;
    }
    if (!found)
        return RB_ERR_UNKNOWN_SENDER;
    *out = cp;
    return RB_OK;
}

rb_err checkpoint_sign(const checkpoint_t *cp, const uint8_t sk[RB_SIGN_SK_BYTES], char out[NOTE_TEXT_MAX],
                       size_t *len)
{
    if (strnlen(cp->origin, sizeof cp->origin) > NOTE_NAME_MAX || !note_name_ok(cp->origin))
        return RB_ERR_USAGE;
    int n = snprintf(out, NOTE_TEXT_MAX, "%s\n%" PRIu64 "\n", cp->origin, cp->size);
    if (n < 0 || (size_t)n + ROOT_B64_LEN + 2 > NOTE_TEXT_MAX)
        return RB_ERR_TOO_BIG;
    size_t body_len = (size_t)n;
    sodium_bin2base64(out + body_len, ROOT_B64_LEN + 1, cp->root.bytes, MERKLE_HASH_BYTES,
                      sodium_base64_VARIANT_ORIGINAL);
    body_len += ROOT_B64_LEN;
    out[body_len++] = '\n';

    uint8_t pk[RB_SIGN_PK_BYTES], raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES];
    rb_err rc = rbcrypto_sign_note((const uint8_t *)out, body_len, sk, raw + NOTE_KEY_ID_BYTES);
    if (rc != RB_OK)
        return rc;
    rbcrypto_sign_sk_to_pk(sk, pk);
    note_key_id(cp->origin, pk, raw);

    size_t b64 = sodium_base64_ENCODED_LEN(sizeof raw, sodium_base64_VARIANT_ORIGINAL); /* with its NUL */
    n = snprintf(out + body_len, NOTE_TEXT_MAX - body_len, "\n" EM_DASH_SPACE "%s ", cp->origin);
    if (n < 0 || body_len + (size_t)n + b64 + 1 > NOTE_TEXT_MAX)
        return RB_ERR_TOO_BIG;
    size_t total = body_len + (size_t)n;
    sodium_bin2base64(out + total, b64, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    total += b64 - 1;
    out[total++] = '\n';
    out[total] = '\0';
    *len = total;
    return RB_OK;
}

rb_err proof_format(uint64_t index, const uint8_t *extra, size_t extra_len, const merkle_hash_t *path,
                    size_t n, const char *checkpoint, size_t checkpoint_len, char *out, size_t cap,
                    size_t *len)
{
    checkpoint_t cp;
    if (n > PROOF_HASHES_MAX || (n > 0 && path == NULL) || extra_len > PROOF_EXTRA_MAX)
        return RB_ERR_USAGE;
    /* Parsers of the proof take the rest of it as the checkpoint verbatim, so something that is not one
     * would only be found out by the reader; refuse it here instead. */
    if (checkpoint_parse(checkpoint, checkpoint_len, &cp) != RB_OK)
        return RB_ERR_USAGE;
    size_t b64 = extra_len > 0 ? sodium_base64_ENCODED_LEN(extra_len, sodium_base64_VARIANT_ORIGINAL) : 0;
    int head = snprintf(out, cap, PROOF_HEADER "\n%s", extra_len > 0 ? "extra " : "");
    if (head < 0 || (size_t)head + b64 + 32 + n * (ROOT_B64_LEN + 1) + 1 + checkpoint_len + 1 > cap)
        return RB_ERR_TOO_BIG;
    size_t total = (size_t)head;
    if (extra_len > 0) {
        sodium_bin2base64(out + total, b64, extra, extra_len, sodium_base64_VARIANT_ORIGINAL);
        total += b64 - 1;
        out[total++] = '\n';
    }
    total += (size_t)snprintf(out + total, cap - total, "index %" PRIu64 "\n", index);
    for (size_t i = 0; i < n; i++) {
        sodium_bin2base64(out + total, ROOT_B64_LEN + 1, path[i].bytes, MERKLE_HASH_BYTES,
                          sodium_base64_VARIANT_ORIGINAL);
        total += ROOT_B64_LEN;
        out[total++] = '\n';
    }
    out[total++] = '\n';
    memcpy(out + total, checkpoint, checkpoint_len);
    total += checkpoint_len;
    out[total] = '\0';
    *len = total;
    return RB_OK;
}

rb_err proof_parse(const char *text, size_t len, tlog_proof_t *out)
{
    static const char extra_tag[] = "extra ", index_tag[] = "index ";
    if (text == NULL || len == 0 || len > PROOF_FILE_MAX)
        return RB_ERR_MALFORMED;
    const char *p = text, *end = text + len, *line;
    size_t n;
    if (!next_line(&p, end, &line, &n) || n != strlen(PROOF_HEADER) || memcmp(line, PROOF_HEADER, n) != 0)
        return RB_ERR_MALFORMED;
    if (!next_line(&p, end, &line, &n))
        return RB_ERR_MALFORMED;
    tlog_proof_t proof = {0};
    if (n >= sizeof extra_tag - 1 && memcmp(line, extra_tag, sizeof extra_tag - 1) == 0) {
        /* Still base64: present only when there is extra data, so never empty. */
        uint8_t data[PROOF_EXTRA_MAX];
        size_t data_len;
        proof.extra = line + sizeof extra_tag - 1;
        proof.extra_len = n - (sizeof extra_tag - 1);
        if (!b64_decode(proof.extra, proof.extra_len, data, sizeof data, &data_len) ||
            !next_line(&p, end, &line, &n))
            return RB_ERR_MALFORMED;
    }
    if (n < sizeof index_tag - 1 || memcmp(line, index_tag, sizeof index_tag - 1) != 0 ||
        !parse_u64(line + sizeof index_tag - 1, n - (sizeof index_tag - 1), &proof.index))
        return RB_ERR_MALFORMED;
    proof.n = 0;
    for (;;) {
        if (!next_line(&p, end, &line, &n))
            return RB_ERR_MALFORMED;
        if (n == 0)
            break;
        if (proof.n == PROOF_HASHES_MAX || n != ROOT_B64_LEN ||
            !b64_decode_exact(line, n, proof.path[proof.n].bytes, MERKLE_HASH_BYTES))
            return RB_ERR_MALFORMED;
        proof.n++;
    }
    if (p == end)
        return RB_ERR_MALFORMED;
    proof.checkpoint = p;
    proof.checkpoint_len = (size_t)(end - p);
    *out = proof;
    return RB_OK;
}
