/* note_test.c -- signed notes, checkpoints and tlog-proofs (ledger/note.c): the published examples of
 * other implementations verified, sign and open round trips, tampering and foreign signatures, and every
 * malformation the specifications rule out refused. */
#include <sodium.h>
#include <stdbool.h>

#include "testutil.h"

#include "note.h"
#include "rbcrypto.h"

#define DASH   "\xe2\x80\x94" /* U+2014 */
#define ORIGIN "example.org/ledger"

/* The example of c2sp.org/signed-note, section "Verifier keys" (also used as the known answer by several
 * independent implementations). Its signature is checked below, so a wrong copy cannot pass. */
#define SPEC_VKEY "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
#define SPEC_NOTE                                                                                            \
    "This is an example message.\n\n" DASH " example.com/foo "                                               \
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
#define SPEC_PK "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4"

/* The example in the documentation of golang.org/x/mod/sumdb/note (BSD-3-Clause): the seed of its signer
 * key "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", its verifier key
 * and the signature Go writes. Ed25519 is deterministic, so signing must reproduce it byte for byte. */
#define GO_SEED "810a1402d5146c8d84f2443330f54080ebf98ee17d9c74f6252fc5d5c7283173"
#define GO_VKEY "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
#define GO_TEXT                                                                                              \
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
#define GO_SIG "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="

/* The example of c2sp.org/tlog-proof, verbatim: its signatures are elided ("[...]"), so only the proof
 * lines parse; its checkpoint must not. */
#define SPEC_PROOF                                                                                           \
    "c2sp.org/tlog-proof@v1\n"                                                                               \
    "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"                                           \
    "index 73894\n"                                                                                          \
    "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"                                                         \
    "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"                                                         \
    "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"                                                         \
    "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"                                                         \
    "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"                                                         \
    "\n"                                                                                                     \
    "example.com/fancylog\n"                                                                                 \
    "109482\n"                                                                                               \
    "sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"                                                         \
    "\n" DASH " example.com/fancylog hI2DJw[...]1roloI=\n" DASH                                              \
    " witness1.example mJirIklj[...]qY9v2B/5bg==\n"

static uint8_t pk[RB_SIGN_PK_BYTES], sk[RB_SIGN_SK_BYTES];
static uint8_t other_pk[RB_SIGN_PK_BYTES], other_sk[RB_SIGN_SK_BYTES];

static int setup(void **state)
{
    (void)state;
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)i;
    rbcrypto_sign_seed_keypair(seed, pk, sk);
    seed[0] ^= 1;
    rbcrypto_sign_seed_keypair(seed, other_pk, other_sk);
    return 0;
}

static checkpoint_t sample_checkpoint(uint64_t size)
{
    checkpoint_t cp;
    memset(&cp, 0, sizeof cp);
    strcpy(cp.origin, ORIGIN);
    cp.size = size;
    for (int i = 0; i < MERKLE_HASH_BYTES; i++)
        cp.root.bytes[i] = (uint8_t)(0xa0 + i);
    return cp;
}

/* A signed checkpoint, malloc'd, with room to grow. */
static char *signed_sample(void)
{
    checkpoint_t cp = sample_checkpoint(12345);
    char *text = calloc(1, 2 * NOTE_TEXT_MAX);
    size_t len;
    assert_non_null(text);
    assert_ok(checkpoint_sign(&cp, sk, text, &len));
    assert_int_equal(len, strlen(text));
    return text;
}

/* text with its first occurrence of from replaced by to (which must occur), malloc'd. */
static char *replace(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (at == NULL)
        fail_msg("\"%s\" not in the text", from);
    size_t head = (size_t)(at - text), flen = strlen(from), tlen = strlen(to);
    char *out = malloc(strlen(text) - flen + tlen + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    memcpy(out + head, to, tlen);
    strcpy(out + head + tlen, at + flen);
    return out;
}

static char *b64(const uint8_t *bin, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    assert_non_null(out);
    sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

/* A signature line "— name base64(raw)\n", malloc'd. */
static char *sig_line(const char *name, const uint8_t *raw, size_t len)
{
    char *enc = b64(raw, len);
    char *line = malloc(strlen(name) + strlen(enc) + 8);
    assert_non_null(line);
    sprintf(line, DASH " %s %s\n", name, enc);
    free(enc);
    return line;
}

static char *concat(const char *a, const char *b)
{
    char *out = malloc(strlen(a) + strlen(b) + 1);
    assert_non_null(out);
    strcpy(out, a);
    strcat(out, b);
    return out;
}

/* Signs body as a note by (name, key) itself, to build what checkpoint_sign never writes. */
static char *sign_body(const char *body, const char *name, const uint8_t key_pk[RB_SIGN_PK_BYTES],
                       const uint8_t key_sk[RB_SIGN_SK_BYTES])
{
    uint8_t raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES];
    note_key_id(name, key_pk, raw);
    assert_ok(rbcrypto_sign_note((const uint8_t *)body, strlen(body), key_sk, raw + NOTE_KEY_ID_BYTES));
    char *line = sig_line(name, raw, sizeof raw), *with_blank = concat(body, "\n");
    char *note = concat(with_blank, line);
    free(line);
    free(with_blank);
    return note;
}

static rb_err open_text(const char *text)
{
    checkpoint_t cp;
    return checkpoint_open(text, strlen(text), ORIGIN, pk, &cp);
}

static char *root_b64(void)
{
    checkpoint_t cp = sample_checkpoint(0);
    return b64(cp.root.bytes, MERKLE_HASH_BYTES);
}

static void hex_to_bin(const char *hex, uint8_t *out, size_t len)
{
    size_t n;
    assert_int_equal(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &n, NULL), 0);
    assert_int_equal(n, len);
}

static void spec_example_verifies(void **state)
{
    (void)state;
    char name[NOTE_NAME_MAX + 1], vkey[NOTE_VKEY_MAX];
    uint8_t key[RB_SIGN_PK_BYTES], want_pk[RB_SIGN_PK_BYTES], id[NOTE_KEY_ID_BYTES];
    assert_ok(note_parse_verifier_key(SPEC_VKEY, name, key));
    assert_string_equal(name, "example.com/foo");
    hex_to_bin(SPEC_PK, want_pk, sizeof want_pk);
    assert_memory_equal(key, want_pk, RB_SIGN_PK_BYTES);
    note_key_id(name, key, id);
    assert_memory_equal(id, "\x53\x0d\x90\x3a", NOTE_KEY_ID_BYTES);
    assert_ok(note_verifier_key(name, key, vkey));
    assert_string_equal(vkey, SPEC_VKEY);

    /* The note is not a checkpoint, so it is taken apart here: body, blank line, one signature line. */
    const char *note = SPEC_NOTE, *blank = strstr(note, "\n\n");
    assert_non_null(blank);
    size_t body_len = (size_t)(blank - note) + 1;
    char prefix[NOTE_NAME_MAX + 8];
    sprintf(prefix, DASH " %s ", name);
    const char *line = blank + 2;
    assert_memory_equal(line, prefix, strlen(prefix));
    const char *enc = line + strlen(prefix);
    uint8_t raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES + 1];
    size_t raw_len;
    assert_int_equal(sodium_base642bin(raw, sizeof raw, enc, strcspn(enc, "\n"), NULL, &raw_len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(raw_len, NOTE_KEY_ID_BYTES + RB_SIG_BYTES);
    assert_memory_equal(raw, id, NOTE_KEY_ID_BYTES);
    assert_ok(rbcrypto_verify_note((const uint8_t *)note, body_len, raw + NOTE_KEY_ID_BYTES, key));
    /* Without its final newline, or with the blank line, the text is not what was signed. */
    assert_rb(rbcrypto_verify_note((const uint8_t *)note, body_len - 1, raw + NOTE_KEY_ID_BYTES, key),
              RB_ERR_BAD_SIGNATURE);
    assert_rb(rbcrypto_verify_note((const uint8_t *)note, body_len + 1, raw + NOTE_KEY_ID_BYTES, key),
              RB_ERR_BAD_SIGNATURE);
    /* Not a checkpoint: a single body line. */
    checkpoint_t cp;
    assert_rb(checkpoint_parse(note, strlen(note), &cp), RB_ERR_MALFORMED);
}

static void go_example_signs_alike(void **state)
{
    (void)state;
    uint8_t seed[32], key_pk[RB_SIGN_PK_BYTES], key_sk[RB_SIGN_SK_BYTES];
    uint8_t raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES];
    char vkey[NOTE_VKEY_MAX];
    hex_to_bin(GO_SEED, seed, sizeof seed);
    rbcrypto_sign_seed_keypair(seed, key_pk, key_sk);
    assert_ok(note_verifier_key("PeterNeumann", key_pk, vkey));
    assert_string_equal(vkey, GO_VKEY);
    note_key_id("PeterNeumann", key_pk, raw);
    assert_ok(rbcrypto_sign_note((const uint8_t *)GO_TEXT, strlen(GO_TEXT), key_sk, raw + NOTE_KEY_ID_BYTES));
    char *enc = b64(raw, sizeof raw);
    assert_string_equal(enc, GO_SIG);
    free(enc);
}

static void key_id_and_vkey_round_trip(void **state)
{
    (void)state;
    char vkey[NOTE_VKEY_MAX], name[NOTE_NAME_MAX + 1];
    uint8_t key[RB_SIGN_PK_BYTES], id[NOTE_KEY_ID_BYTES], buf[64], hash[RB_HASH_BYTES];

    /* The key ID as the specification defines it, computed here independently. */
    size_t n = strlen(ORIGIN);
    memcpy(buf, ORIGIN, n);
    buf[n] = 0x0a;
    buf[n + 1] = 0x01;
    memcpy(buf + n + 2, pk, RB_SIGN_PK_BYTES);
    rbcrypto_sha256(buf, n + 2 + RB_SIGN_PK_BYTES, hash);
    note_key_id(ORIGIN, pk, id);
    assert_memory_equal(id, hash, NOTE_KEY_ID_BYTES);

    assert_ok(note_verifier_key(ORIGIN, pk, vkey));
    char want[NOTE_VKEY_MAX];
    sprintf(want, ORIGIN "+%02x%02x%02x%02x+", id[0], id[1], id[2], id[3]);
    assert_memory_equal(vkey, want, strlen(want));
    assert_int_equal(strlen(vkey), strlen(ORIGIN) + 1 + 8 + 1 + 44);
    assert_ok(note_parse_verifier_key(vkey, name, key));
    assert_string_equal(name, ORIGIN);
    assert_memory_equal(key, pk, RB_SIGN_PK_BYTES);

    /* The longest name still fits the buffer. */
    char long_name[NOTE_NAME_MAX + 2];
    memset(long_name, 'a', NOTE_NAME_MAX);
    long_name[NOTE_NAME_MAX] = '\0';
    assert_ok(note_verifier_key(long_name, pk, vkey));
    assert_ok(note_parse_verifier_key(vkey, name, key));
    assert_string_equal(name, long_name);
    long_name[NOTE_NAME_MAX] = 'a';
    long_name[NOTE_NAME_MAX + 1] = '\0';
    assert_rb(note_verifier_key(long_name, pk, vkey), RB_ERR_USAGE);

    assert_true(note_name_ok("a"));
    assert_true(note_name_ok("sum.golang.org/x~!"));
    const char *bad_names[] = {"", "a b", "a+b", "a\tb", "caf\xc3\xa9", "a\x7f"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_false(note_name_ok(bad_names[i]));
        assert_rb(note_verifier_key(bad_names[i], pk, vkey), RB_ERR_USAGE);
    }
}

static void bad_verifier_keys(void **state)
{
    (void)state;
    char name[NOTE_NAME_MAX + 1];
    uint8_t key[RB_SIGN_PK_BYTES];
    const char *bad[] = {
        "example.com/foo",                                                           /* no '+' */
        "example.com/foo+530d903a",                                                  /* no key */
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",     /* wrong ID */
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",     /* upper case */
        "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",      /* 7 digits */
        "example.com/fo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",      /* other name */
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",                    /* no name */
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k ",    /* trailing space */
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",      /* short */
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",     /* type 0x02 */
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2kAAAA", /* 36 bytes */
        "example.com/foo+530d903a-AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",     /* '-' for '+' */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (note_parse_verifier_key(bad[i], name, key) != RB_ERR_MALFORMED)
            fail_msg("verifier key accepted: \"%s\"", bad[i]);
    assert_ok(note_parse_verifier_key(SPEC_VKEY, name, key)); /* the control: the unaltered key */
}

static void sign_open_round_trip(void **state)
{
    (void)state;
    const uint64_t sizes[] = {0, 1, 12345, UINT64_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        checkpoint_t cp = sample_checkpoint(sizes[i]), got, parsed;
        char text[NOTE_TEXT_MAX], want[256];
        size_t len;
        assert_ok(checkpoint_sign(&cp, sk, text, &len));
        assert_int_equal(len, strlen(text));
        char *root = root_b64();
        sprintf(want, ORIGIN "\n%llu\n%s\n\n" DASH " " ORIGIN " ", (unsigned long long)sizes[i], root);
        free(root);
        assert_memory_equal(text, want, strlen(want));
        assert_int_equal(len, strlen(want) + 92 + 1); /* base64 of 4 + 64 bytes, newline */
        assert_int_equal(text[len - 1], '\n');
        assert_ok(checkpoint_open(text, len, ORIGIN, pk, &got));
        assert_string_equal(got.origin, ORIGIN);
        assert_true(got.size == sizes[i]);
        assert_memory_equal(got.root.bytes, cp.root.bytes, MERKLE_HASH_BYTES);
        assert_ok(checkpoint_parse(text, len, &parsed));
        assert_string_equal(parsed.origin, ORIGIN);
        assert_true(parsed.size == sizes[i]);
        assert_memory_equal(parsed.root.bytes, cp.root.bytes, MERKLE_HASH_BYTES);
    }
    checkpoint_t bad = sample_checkpoint(1);
    char text[NOTE_TEXT_MAX];
    size_t len;
    strcpy(bad.origin, "has space");
    assert_rb(checkpoint_sign(&bad, sk, text, &len), RB_ERR_USAGE);
    memset(bad.origin, 'a', sizeof bad.origin); /* no terminating NUL */
    assert_rb(checkpoint_sign(&bad, sk, text, &len), RB_ERR_USAGE);
}

static void wrong_key_unknown(void **state)
{
    (void)state;
    char *text = signed_sample();
    checkpoint_t cp;
    assert_ok(open_text(text));
    assert_rb(checkpoint_open(text, strlen(text), ORIGIN, other_pk, &cp), RB_ERR_UNKNOWN_SENDER);
    assert_rb(checkpoint_open(text, strlen(text), "example.org/other", pk, &cp), RB_ERR_UNKNOWN_SENDER);
    assert_rb(checkpoint_open(text, strlen(text), "not a name", pk, &cp), RB_ERR_USAGE);
    /* Signed by the right name with another key: that key's ID, so no line of ours. */
    checkpoint_t sample = sample_checkpoint(12345);
    char other[NOTE_TEXT_MAX];
    size_t len;
    assert_ok(checkpoint_sign(&sample, other_sk, other, &len));
    assert_rb(checkpoint_open(other, len, ORIGIN, pk, &cp), RB_ERR_UNKNOWN_SENDER);
    assert_ok(checkpoint_open(other, len, ORIGIN, other_pk, &cp));
    /* Our key's valid signature on another log's checkpoint: not a checkpoint of this log. */
    char *root = root_b64(), body[256];
    sprintf(body, "example.org/other\n12345\n%s\n", root);
    char *foreign = sign_body(body, ORIGIN, pk, sk);
    assert_rb(open_text(foreign), RB_ERR_UNKNOWN_SENDER);
    assert_ok(checkpoint_parse(foreign, strlen(foreign), &cp));
    free(foreign);
    free(root);
    free(text);
}

/* The signed sample with one byte of its signature (after the key ID) changed, or cut to len bytes. */
static char *tampered_signature(size_t flip, size_t cut)
{
    char *text = signed_sample();
    char *line = strstr(text, DASH " " ORIGIN " ") + strlen(DASH " " ORIGIN " ");
    uint8_t raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES];
    size_t n;
    assert_int_equal(sodium_base642bin(raw, sizeof raw, line, strcspn(line, "\n"), NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    raw[flip] ^= 0x01;
    char *enc = b64(raw, cut);
    strcpy(line, enc);
    strcat(line, "\n");
    free(enc);
    return text;
}

static void bad_signature(void **state)
{
    (void)state;
    char *text = tampered_signature(NOTE_KEY_ID_BYTES + 10, NOTE_KEY_ID_BYTES + RB_SIG_BYTES);
    assert_rb(open_text(text), RB_ERR_BAD_SIGNATURE);
    free(text);
    text = tampered_signature(NOTE_KEY_ID_BYTES + RB_SIG_BYTES - 1, NOTE_KEY_ID_BYTES + RB_SIG_BYTES);
    assert_rb(open_text(text), RB_ERR_BAD_SIGNATURE);
    free(text);
    /* A flipped key-ID byte is another key's line: skipped, leaving none of ours. */
    text = tampered_signature(0, NOTE_KEY_ID_BYTES + RB_SIG_BYTES);
    assert_rb(open_text(text), RB_ERR_UNKNOWN_SENDER);
    free(text);
    /* Our key ID with a signature of the wrong length cannot verify. */
    text = tampered_signature(NOTE_KEY_ID_BYTES, NOTE_KEY_ID_BYTES + 1);
    assert_rb(open_text(text), RB_ERR_BAD_SIGNATURE);
    free(text);

    /* A changed size or root with the signature left alone. */
    text = signed_sample();
    char *t = replace(text, "\n12345\n", "\n12346\n");
    assert_rb(open_text(t), RB_ERR_BAD_SIGNATURE);
    free(t);
    checkpoint_t cp = sample_checkpoint(0);
    char *root = b64(cp.root.bytes, MERKLE_HASH_BYTES);
    cp.root.bytes[7] ^= 0x40;
    char *changed = b64(cp.root.bytes, MERKLE_HASH_BYTES);
    t = replace(text, root, changed);
    assert_rb(open_text(t), RB_ERR_BAD_SIGNATURE);
    assert_ok(checkpoint_parse(t, strlen(t), &cp)); /* still well formed */
    free(t);
    free(root);
    free(changed);
    /* A second line of our key that does not verify spoils the good one. */
    char *bad_line = tampered_signature(NOTE_KEY_ID_BYTES + 3, NOTE_KEY_ID_BYTES + RB_SIG_BYTES);
    t = concat(text, strstr(bad_line, DASH));
    assert_rb(open_text(t), RB_ERR_BAD_SIGNATURE);
    free(t);
    free(bad_line);
    free(text);
}

static void foreign_signatures_skipped(void **state)
{
    (void)state;
    char *text = signed_sample();
    uint8_t id[NOTE_KEY_ID_BYTES], raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES];
    memset(raw, 0x5a, sizeof raw);
    char *witness = sig_line("witness.example", raw, sizeof raw);
    /* Same name, another key ID (a rotated key, say). */
    char *same_name = sig_line(ORIGIN, raw, sizeof raw);
    /* Our key ID under another name. */
    note_key_id(ORIGIN, pk, id);
    memcpy(raw, id, NOTE_KEY_ID_BYTES);
    char *same_id = sig_line("example.org/other", raw, sizeof raw);
    /* A signature of another type and length, by a name that is not ASCII. */
    char *unicode = sig_line("t\xc3\xa9moin.example/\xe2\x98\x83", raw, 5);

    char *t1 = concat(text, witness), *t2 = concat(t1, same_name), *t3 = concat(t2, same_id);
    char *t4 = concat(t3, unicode);
    char *sigs_first = malloc(strlen(text) + strlen(witness) + 8);
    size_t body_len = (size_t)(strstr(text, "\n\n") - text) + 2;
    memcpy(sigs_first, text, body_len);
    sprintf(sigs_first + body_len, "%s%s", witness, text + body_len);
    checkpoint_t cp;
    assert_ok(checkpoint_open(t4, strlen(t4), ORIGIN, pk, &cp));
    assert_true(cp.size == 12345);
    assert_ok(open_text(sigs_first));

    /* Only other keys' lines: nothing of ours. */
    char *body = malloc(body_len + 1);
    memcpy(body, text, body_len);
    body[body_len] = '\0';
    char *only_foreign = concat(body, witness);
    assert_rb(open_text(only_foreign), RB_ERR_UNKNOWN_SENDER);
    assert_ok(checkpoint_parse(only_foreign, strlen(only_foreign), &cp));

    /* A name with a Unicode space, or a '+', is refused even for another key. */
    char *nbsp = sig_line("witness\xc2\xa0x", raw, sizeof raw), *plus = sig_line("w+x", raw, sizeof raw);
    char *t5 = concat(text, nbsp), *t6 = concat(text, plus);
    assert_rb(open_text(t5), RB_ERR_MALFORMED);
    assert_rb(open_text(t6), RB_ERR_MALFORMED);

    free(nbsp);
    free(plus);
    free(t5);
    free(t6);
    free(body);
    free(only_foreign);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
    free(sigs_first);
    free(witness);
    free(same_name);
    free(same_id);
    free(unicode);
    free(text);
}

static void extension_lines(void **state)
{
    (void)state;
    char *root = root_b64(), body[512];
    sprintf(body, ORIGIN "\n7\n%s\nextension one\nsecond: \xe2\x9c\x93 caf\xc3\xa9\n", root);
    char *note = sign_body(body, ORIGIN, pk, sk);
    checkpoint_t cp, want = sample_checkpoint(7);
    assert_ok(open_text(note));
    assert_ok(checkpoint_open(note, strlen(note), ORIGIN, pk, &cp));
    assert_string_equal(cp.origin, ORIGIN);
    assert_true(cp.size == 7);
    assert_memory_equal(cp.root.bytes, want.root.bytes, MERKLE_HASH_BYTES);
    free(note);
    /* An empty extension line is refused, even when properly signed. */
    sprintf(body, ORIGIN "\n7\n%s\nextension\n\nmore\n", root);
    note = sign_body(body, ORIGIN, pk, sk);
    assert_rb(open_text(note), RB_ERR_MALFORMED);
    free(note);
    /* An origin of NOTE_NAME_MAX bytes parses; one more does not fit the struct. */
    char origin[NOTE_NAME_MAX + 2];
    memset(origin, 'o', NOTE_NAME_MAX);
    origin[NOTE_NAME_MAX] = '\0';
    sprintf(body, "%s\n7\n%s\n", origin, root);
    note = sign_body(body, origin, pk, sk);
    assert_ok(checkpoint_open(note, strlen(note), origin, pk, &cp));
    free(note);
    strcat(origin, "o");
    sprintf(body, "%s\n7\n%s\n", origin, root);
    note = sign_body(body, ORIGIN, pk, sk);
    assert_rb(checkpoint_parse(note, strlen(note), &cp), RB_ERR_MALFORMED);
    free(note);
    free(root);
}

typedef struct {
    const char *what, *from, *to;
} edit_t;

static void malformed_checkpoints(void **state)
{
    (void)state;
    char *text = signed_sample(), *root = root_b64();
    /* The root with stray bits after its 32 bytes: the character before '=' carries two unused bits. */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char stray[64], short_root[64], long_root[64], no_pad[64], url_root[64], spaced_root[64];
    strcpy(stray, root);
    stray[42] = alphabet[(strchr(alphabet, root[42]) - alphabet) ^ 1];
    uint8_t bytes[33] = {0};
    char *enc = b64(bytes, 31);
    strcpy(short_root, enc);
    free(enc);
    enc = b64(bytes, 33);
    strcpy(long_root, enc);
    free(enc);
    strcpy(no_pad, root);
    no_pad[43] = '\0';
    strcpy(url_root, "-_");
    strcat(url_root, root + 2);
    sprintf(spaced_root, " %s", root);
    const char *sig_prefix = DASH " " ORIGIN " ";

    const edit_t edits[] = {
        {"no origin", ORIGIN "\n12345\n", "\n12345\n"},
        {"two body lines", "\n12345\n", "\n"},
        {"empty line in the body", "\n12345\n", "\n\n12345\n"},
        {"two blank lines", "=\n\n" DASH, "=\n\n\n" DASH},
        {"no blank line", "=\n\n" DASH, "=\n" DASH},
        {"leading zero", "\n12345\n", "\n012345\n"},
        {"plus sign", "\n12345\n", "\n+12345\n"},
        {"minus sign", "\n12345\n", "\n-12345\n"},
        {"space in size", "\n12345\n", "\n 12345\n"},
        {"hex size", "\n12345\n", "\n0x3039\n"},
        {"2^64", "\n12345\n", "\n18446744073709551616\n"},
        {"21 digits", "\n12345\n", "\n100000000000000000000\n"},
        {"empty size", "\n12345\n", "\n\n"},
        {"root with stray bits", root, stray},
        {"31-byte root", root, short_root},
        {"33-byte root", root, long_root},
        {"root without padding", root, no_pad},
        {"url-safe root", root, url_root},
        {"space before root", root, spaced_root},
        {"hyphens for the dash", sig_prefix, "-- " ORIGIN " "},
        {"en dash", sig_prefix, "\xe2\x80\x93 " ORIGIN " "},
        {"no space after the dash", sig_prefix, DASH ORIGIN " "},
        {"two spaces after the dash", sig_prefix, DASH "  " ORIGIN " "},
        {"two spaces after the name", sig_prefix, DASH " " ORIGIN "  "},
        {"no name", sig_prefix, DASH " "},
        {"CR", "=\n\n", "=\nx\r\n\n"},
        {"tab", "=\n\n", "=\nx\ty\n\n"},
        {"DEL", "=\n\n", "=\nx\x7fy\n\n"},
        {"C1 control", "=\n\n", "=\nx\xc2\x85y\n\n"},
        {"invalid UTF-8", "=\n\n", "=\nx\xffy\n\n"},
        {"overlong UTF-8", "=\n\n", "=\nx\xc0\xafy\n\n"},
        {"overlong 3-byte UTF-8", "=\n\n", "=\nx\xe0\x80\xafy\n\n"},
        {"surrogate", "=\n\n", "=\nx\xed\xa0\x80y\n\n"},
        {"truncated UTF-8", "=\n\n", "=\nx\xe2\x98\n\n"},
        {"beyond U+10FFFF", "=\n\n", "=\nx\xf4\x90\x80\x80\n\n"},
        {"control character", "=\n\n", "=\nx\x01\n\n"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        char *t = replace(text, edits[i].from, edits[i].to);
        checkpoint_t cp;
        rb_err open_rc = open_text(t), parse_rc = checkpoint_parse(t, strlen(t), &cp);
        if (open_rc != RB_ERR_MALFORMED || parse_rc != RB_ERR_MALFORMED) {
            print_error("%s: open %s, parse %s\n", edits[i].what, rb_strerror(open_rc),
                        rb_strerror(parse_rc));
            bad++;
        }
        free(t);
    }
    assert_int_equal(bad, 0);
    /* The control for the extension-line cases: a printable one is well formed, so only the signature
     * fails. */
    char *t = replace(text, "=\n\n", "=\nx y \xe2\x9c\x93\n\n");
    assert_rb(open_text(t), RB_ERR_BAD_SIGNATURE);
    free(t);

    /* Cut or appended text. */
    size_t len = strlen(text);
    checkpoint_t cp;
    assert_rb(checkpoint_open(text, len - 1, ORIGIN, pk, &cp), RB_ERR_MALFORMED); /* no final newline */
    assert_rb(checkpoint_parse(text, len - 1, &cp), RB_ERR_MALFORMED);
    assert_rb(checkpoint_open(text, 0, ORIGIN, pk, &cp), RB_ERR_MALFORMED);
    size_t body_len = (size_t)(strstr(text, "\n\n") - text) + 2;
    assert_rb(checkpoint_open(text, body_len, ORIGIN, pk, &cp), RB_ERR_MALFORMED); /* no signature line */
    t = concat(text, "\n");
    assert_rb(open_text(t), RB_ERR_MALFORMED); /* a blank line after the signatures */
    free(t);
    uint8_t four[4] = {0}, five[5] = {0};
    char *l4 = sig_line("w.example", four, 4), *l5 = sig_line("w.example", five, 5);
    t = concat(text, l4);
    assert_rb(open_text(t), RB_ERR_MALFORMED); /* a signature of 4 bytes: a key ID and nothing signed */
    free(t);
    t = concat(text, l5);
    assert_ok(open_text(t)); /* the control: 5 bytes is enough */
    free(t);
    t = concat(text, DASH " w.example AAAA AAAA\n");
    assert_rb(open_text(t), RB_ERR_MALFORMED);
    free(t);
    t = concat(text, DASH " w.example\n");
    assert_rb(open_text(t), RB_ERR_MALFORMED);
    free(t);
    free(l4);
    free(l5);

    /* A NUL byte where an extension line would be. */
    char with_nul[NOTE_TEXT_MAX];
    memcpy(with_nul, text, len);
    char *nl = strstr(with_nul, "=\n\n");
    assert_non_null(nl);
    nl[1] = '\0';
    assert_rb(checkpoint_open(with_nul, len, ORIGIN, pk, &cp), RB_ERR_MALFORMED);
    char *ext_nul = replace(text, "\n12345\n", "\n12345\nx@y\n");
    *strchr(ext_nul, '@') = '\0';
    assert_rb(checkpoint_open(ext_nul, len + 4, ORIGIN, pk, &cp), RB_ERR_MALFORMED);
    free(ext_nul);
    free(root);
    free(text);
}

static void size_limit(void **state)
{
    (void)state;
    char *text = signed_sample();
    uint8_t raw[NOTE_KEY_ID_BYTES + RB_SIG_BYTES];
    memset(raw, 0x33, sizeof raw);
    char *line = sig_line("w.example", raw, sizeof raw);
    size_t full = strlen(line);
    char *buf = calloc(1, NOTE_TEXT_MAX + 512);
    assert_non_null(buf);
    strcpy(buf, text);
    /* Other keys' lines up to exactly NOTE_TEXT_MAX bytes: the last one's name takes up the slack. */
    while (strlen(buf) + full + 15 <= NOTE_TEXT_MAX)
        strcat(buf, line);
    size_t rest = NOTE_TEXT_MAX - strlen(buf);
    char name[200], five_line[256];
    memset(name, 'n', rest - 14);
    name[rest - 14] = '\0';
    uint8_t five[5] = {1, 2, 3, 4, 5};
    char *last = sig_line(name, five, sizeof five);
    strcpy(five_line, last);
    free(last);
    strcat(buf, five_line);
    assert_int_equal(strlen(buf), NOTE_TEXT_MAX);
    assert_ok(open_text(buf));
    /* One byte more: a longer name. */
    char *longer = malloc(NOTE_TEXT_MAX + 2);
    size_t at = (size_t)(strstr(buf, five_line) - buf) + strlen(DASH " ");
    memcpy(longer, buf, at);
    longer[at] = 'n';
    strcpy(longer + at + 1, buf + at);
    assert_int_equal(strlen(longer), NOTE_TEXT_MAX + 1);
    assert_rb(open_text(longer), RB_ERR_MALFORMED);
    free(longer);
    free(buf);
    free(line);
    free(text);
}

static void proof_round_trip(void **state)
{
    (void)state;
    char cp_text[NOTE_TEXT_MAX], out[PROOF_TEXT_MAX];
    checkpoint_t sample = sample_checkpoint(1000), cp;
    size_t cp_len, len;
    assert_ok(checkpoint_sign(&sample, sk, cp_text, &cp_len));
    merkle_hash_t path[PROOF_HASHES_MAX];
    for (int i = 0; i < PROOF_HASHES_MAX; i++)
        for (int j = 0; j < MERKLE_HASH_BYTES; j++)
            path[i].bytes[j] = (uint8_t)(i * 7 + j);
    const size_t counts[] = {0, 1, 5, PROOF_HASHES_MAX};
    const uint64_t indexes[] = {0, 999, 73894, UINT64_MAX};
    for (size_t c = 0; c < 4; c++) {
        size_t n = counts[c];
        assert_ok(proof_format(indexes[c], NULL, 0, path, n, cp_text, cp_len, out, sizeof out, &len));
        assert_int_equal(len, strlen(out));
        char head[64];
        sprintf(head, "c2sp.org/tlog-proof@v1\nindex %llu\n", (unsigned long long)indexes[c]);
        assert_memory_equal(out, head, strlen(head));
        assert_int_equal(len, strlen(head) + n * 45 + 1 + cp_len);
        tlog_proof_t proof;
        assert_ok(proof_parse(out, len, &proof));
        assert_true(proof.index == indexes[c]);
        assert_int_equal(proof.n, n);
        assert_null(proof.extra);
        assert_int_equal(proof.extra_len, 0);
        if (n > 0)
            assert_memory_equal(proof.path, path, n * sizeof *path);
        assert_ptr_equal(proof.checkpoint, out + len - cp_len);
        assert_int_equal(proof.checkpoint_len, cp_len);
        assert_ok(checkpoint_open(proof.checkpoint, proof.checkpoint_len, ORIGIN, pk, &cp));
        assert_true(cp.size == 1000);
    }

    /* The layout of the specification's example: an extra line and witnesses' cosignatures. */
    assert_ok(proof_format(73894, NULL, 0, path, 5, cp_text, cp_len, out, sizeof out, &len));
    uint8_t raw[72];
    memset(raw, 0x77, sizeof raw);
    char *w1 = sig_line("witness1.example", raw, 68), *w2 = sig_line("witness2.example", raw, sizeof raw);
    char *with_extra =
        replace(out, "@v1\n", "@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n");
    char *t1 = concat(with_extra, w1), *t2 = concat(t1, w2);
    tlog_proof_t proof;
    assert_ok(proof_parse(t2, strlen(t2), &proof));
    assert_ptr_equal(proof.extra, strstr(t2, "YWdl"));
    assert_int_equal(proof.extra_len, 52);
    assert_true(proof.index == 73894);
    assert_int_equal(proof.n, 5);
    assert_memory_equal(proof.path, path, 5 * sizeof *path);
    assert_ok(checkpoint_open(proof.checkpoint, proof.checkpoint_len, ORIGIN, pk, &cp));
    free(w1);
    free(w2);
    free(with_extra);
    free(t1);
    free(t2);

    /* The specification's own example parses as a proof; its checkpoint, with elided signatures, not. */
    assert_ok(proof_parse(SPEC_PROOF, strlen(SPEC_PROOF), &proof));
    assert_true(proof.index == 73894);
    assert_int_equal(proof.n, 5);
    uint8_t first[MERKLE_HASH_BYTES];
    size_t n;
    const char *h = "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=";
    assert_int_equal(
        sodium_base642bin(first, sizeof first, h, strlen(h), NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL),
        0);
    assert_memory_equal(proof.path[0].bytes, first, MERKLE_HASH_BYTES);
    assert_memory_equal(proof.extra, "YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n", 53);
    assert_int_equal(proof.extra_len, 52);
    assert_memory_equal(proof.checkpoint, "example.com/fancylog\n109482\n", 28);
    assert_rb(checkpoint_parse(proof.checkpoint, proof.checkpoint_len, &cp), RB_ERR_MALFORMED);

    /* Formatting refuses what it could not write faithfully. */
    assert_rb(proof_format(1, NULL, 0, path, PROOF_HASHES_MAX + 1, cp_text, cp_len, out, sizeof out, &len),
              RB_ERR_USAGE);
    assert_rb(proof_format(1, NULL, 0, NULL, 1, cp_text, cp_len, out, sizeof out, &len), RB_ERR_USAGE);
    assert_rb(proof_format(1, NULL, 0, path, 1, "not a checkpoint\n", 17, out, sizeof out, &len),
              RB_ERR_USAGE);
    assert_rb(proof_format(1, NULL, 0, path, 1, cp_text, cp_len - 1, out, sizeof out, &len), RB_ERR_USAGE);
    assert_rb(proof_format(1, NULL, 0, path, 1, cp_text, cp_len, out, 64, &len), RB_ERR_TOO_BIG);
}

static void proof_extra_data(void **state)
{
    (void)state;
    char cp_text[NOTE_TEXT_MAX];
    checkpoint_t sample = sample_checkpoint(1000);
    size_t cp_len, len;
    assert_ok(checkpoint_sign(&sample, sk, cp_text, &cp_len));
    merkle_hash_t path[PROOF_HASHES_MAX];
    memset(path, 0x42, sizeof path);
    uint8_t *extra = malloc(PROOF_EXTRA_MAX + 1), *decoded = malloc(PROOF_EXTRA_MAX + 3);
    char *out = malloc(PROOF_FILE_MAX + 64);
    assert_non_null(extra);
    assert_non_null(decoded);
    assert_non_null(out);
    for (size_t i = 0; i <= PROOF_EXTRA_MAX; i++)
        extra[i] = (uint8_t)(i * 31 + 7);
    tlog_proof_t proof;
    size_t n;

    /* A leaf in the extra line: written as base64 between the header and the index, read back as is. */
    assert_ok(proof_format(7, extra, 100, path, 3, cp_text, cp_len, out, PROOF_TEXT_MAX + 200, &len));
    char *enc = b64(extra, 100), head[256];
    sprintf(head, "c2sp.org/tlog-proof@v1\nextra %s\nindex 7\n", enc);
    assert_memory_equal(out, head, strlen(head));
    assert_ok(proof_parse(out, len, &proof));
    assert_ptr_equal(proof.extra, out + strlen("c2sp.org/tlog-proof@v1\nextra "));
    assert_int_equal(proof.extra_len, strlen(enc));
    assert_true(proof.index == 7);
    assert_int_equal(proof.n, 3);
    free(enc);

    /* The largest extra data with the longest path still fits PROOF_FILE_MAX. */
    assert_ok(proof_format(UINT64_MAX, extra, PROOF_EXTRA_MAX, path, PROOF_HASHES_MAX, cp_text, cp_len, out,
                           PROOF_FILE_MAX, &len));
    assert_true(len < PROOF_FILE_MAX);
    assert_ok(proof_parse(out, len, &proof));
    assert_int_equal(sodium_base642bin(decoded, PROOF_EXTRA_MAX + 3, proof.extra, proof.extra_len, NULL, &n,
                                       NULL, sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(n, PROOF_EXTRA_MAX);
    assert_memory_equal(decoded, extra, PROOF_EXTRA_MAX);
    assert_int_equal(proof.n, PROOF_HASHES_MAX);
    assert_int_equal(proof.checkpoint_len, cp_len);
    assert_rb(
        proof_format(1, extra, PROOF_EXTRA_MAX + 1, path, 1, cp_text, cp_len, out, PROOF_FILE_MAX + 64, &len),
        RB_ERR_USAGE);
    assert_rb(proof_format(1, extra, 100, path, 1, cp_text, cp_len, out, 150, &len), RB_ERR_TOO_BIG);

    /* Extra data one byte over the limit, written by hand, is refused by the parser. */
    assert_ok(proof_format(1, NULL, 0, path, 1, cp_text, cp_len, out, PROOF_FILE_MAX, &len));
    enc = b64(extra, PROOF_EXTRA_MAX + 1);
    char *line = malloc(strlen(enc) + 16);
    assert_non_null(line);
    sprintf(line, "@v1\nextra %s\n", enc);
    char *over = replace(out, "@v1\n", line);
    assert_rb(proof_parse(over, strlen(over), &proof), RB_ERR_MALFORMED);
    free(over);
    /* The control: the same at the limit parses. */
    free(enc);
    enc = b64(extra, PROOF_EXTRA_MAX);
    sprintf(line, "@v1\nextra %s\n", enc);
    over = replace(out, "@v1\n", line);
    assert_ok(proof_parse(over, strlen(over), &proof));
    free(over);
    /* The whole proof is bounded too, checkpoint included: PROOF_FILE_MAX bytes parse, one more not. */
    assert_ok(proof_format(1, NULL, 0, path, 1, cp_text, cp_len, out, PROOF_FILE_MAX, &len));
    memset(out + len, 'x', PROOF_FILE_MAX + 1 - len);
    assert_ok(proof_parse(out, PROOF_FILE_MAX, &proof));
    assert_int_equal(proof.checkpoint_len, PROOF_FILE_MAX - (len - cp_len));
    assert_rb(proof_parse(out, PROOF_FILE_MAX + 1, &proof), RB_ERR_MALFORMED);
    free(line);
    free(enc);
    free(extra);
    free(decoded);
    free(out);
}

static void malformed_proofs(void **state)
{
    (void)state;
    char cp_text[NOTE_TEXT_MAX], out[PROOF_TEXT_MAX];
    checkpoint_t sample = sample_checkpoint(1000);
    size_t cp_len, len;
    assert_ok(checkpoint_sign(&sample, sk, cp_text, &cp_len));
    merkle_hash_t path[PROOF_HASHES_MAX];
    memset(path, 0x42, sizeof path);
    assert_ok(proof_format(5, NULL, 0, path, 3, cp_text, cp_len, out, sizeof out, &len));
    char *hash = b64(path[0].bytes, MERKLE_HASH_BYTES);
    uint8_t zeros[33] = {0};
    char *h31 = b64(zeros, 31), *h33 = b64(zeros, 33), hash_line[64], extra_after[128];
    sprintf(hash_line, "%s\n", hash);
    sprintf(extra_after, "index 5\nextra AAAA\n");
    /* libsodium 1.0.18 decodes bytes above 0x7f in base64 as if they were letters (found by
     * tests/fuzz/note_fuzz.c): a hash line with one, or with a UTF-8 character, is another spelling. */
    char high[64], utf8[64];
    strcpy(high, hash_line);
    high[16] = (char)0xb9;
    strcpy(utf8, hash_line);
    utf8[16] = (char)0xc3;
    utf8[17] = (char)0xa9;

    const edit_t edits[] = {
        {"no header line", "c2sp.org/tlog-proof@v1\n", ""},
        {"other version", "@v1\n", "@v2\n"},
        {"header with a space", "@v1\n", "@v1 \n"},
        {"leading zero", "index 5\n", "index 05\n"},
        {"negative index", "index 5\n", "index -5\n"},
        {"no index", "index 5\n", "index \n"},
        {"no index line", "index 5\n", ""},
        {"two spaces", "index 5\n", "index  5\n"},
        {"capital", "index 5\n", "Index 5\n"},
        {"2^64", "index 5\n", "index 18446744073709551616\n"},
        {"index in hex", "index 5\n", "index 0x5\n"},
        {"empty extra", "@v1\n", "@v1\nextra \n"},
        {"extra not base64", "@v1\n", "@v1\nextra !!!!\n"},
        {"extra after index", "index 5\n", extra_after},
        {"31-byte hash", hash, h31},
        {"33-byte hash", hash, h33},
        {"hash without padding", hash_line, "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI\n"},
        {"hash with a space", hash_line, " QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n"},
        {"no blank line", "=\n\n" ORIGIN, "=\n" ORIGIN},
        {"CRLF", "@v1\n", "@v1\r\n"},
        {"hash with a byte above 0x7f", hash_line, high},
        {"hash with a UTF-8 character", hash_line, utf8},
    };
    int bad = 0;
    tlog_proof_t proof;
    assert_ok(proof_parse(out, len, &proof)); /* the control */
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        char *t = replace(out, edits[i].from, edits[i].to);
        rb_err rc = proof_parse(t, strlen(t), &proof);
        if (rc != RB_ERR_MALFORMED) {
            print_error("%s: %s\n", edits[i].what, rb_strerror(rc));
            bad++;
        }
        free(t);
    }
    assert_int_equal(bad, 0);

    /* More hashes than any tree of 2^64 leaves needs. */
    assert_ok(proof_format(5, NULL, 0, path, PROOF_HASHES_MAX, cp_text, cp_len, out, sizeof out, &len));
    char *more = replace(out, "index 5\n", "index 5\nQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n");
    assert_rb(proof_parse(more, strlen(more), &proof), RB_ERR_MALFORMED);
    free(more);
    /* Cut short: before the blank line, or right after it. */
    assert_ok(proof_format(5, NULL, 0, path, 3, cp_text, cp_len, out, sizeof out, &len));
    size_t blank = (size_t)(strstr(out, "=\n\n") - out) + 2;
    assert_rb(proof_parse(out, blank, &proof), RB_ERR_MALFORMED);
    assert_rb(proof_parse(out, blank + 1, &proof), RB_ERR_MALFORMED);
    assert_rb(proof_parse(out, strlen("c2sp.org/tlog-proof@v1"), &proof), RB_ERR_MALFORMED);
    assert_rb(proof_parse(out, 0, &proof), RB_ERR_MALFORMED);
    /* A NUL in the index line. */
    out[strlen("c2sp.org/tlog-proof@v1\nindex ")] = '\0';
    assert_rb(proof_parse(out, len, &proof), RB_ERR_MALFORMED);
    free(hash);
    free(h31);
    free(h33);
}

int main(void)
{
    if (rbcrypto_init() != RB_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_example_verifies),
        cmocka_unit_test(go_example_signs_alike),
        cmocka_unit_test(key_id_and_vkey_round_trip),
        cmocka_unit_test(bad_verifier_keys),
        cmocka_unit_test(sign_open_round_trip),
        cmocka_unit_test(wrong_key_unknown),
        cmocka_unit_test(bad_signature),
        cmocka_unit_test(foreign_signatures_skipped),
        cmocka_unit_test(extension_lines),
        cmocka_unit_test(malformed_checkpoints),
        cmocka_unit_test(size_limit),
        cmocka_unit_test(proof_round_trip),
        cmocka_unit_test(proof_extra_data),
        cmocka_unit_test(malformed_proofs),
    };
    return cmocka_run_group_tests_name("note", tests, setup, NULL);
}
