/* envelope_test.c -- sealing and opening envelopes, and every way an envelope must be refused: each
 * single-bit flip, truncation, wrong recipient, a ciphertext lifted into another header, expired, revoked
 * and unknown keys, roles, bad versions, signatures and hashes, a body that is not a referral. */
#include <dirent.h>

#include "testutil.h"

#include "envelope.h"
#include "pbjson.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"

#define NOW    1760000000ULL /* seconds; cards are valid for a day from here */
#define NOW_MS ((int64_t)NOW * 1000 + 5000)
#define DAY    86400ULL

typedef struct {
    identity_t *police;  /* source "cpd-rms" */
    identity_t *intake;  /* sink "sao-intake" */
    identity_t *mallory; /* another trusted source */
    identity_t *other;   /* another sink */
    trust_t *trust;      /* holds all four cards */
    uint8_t *body;       /* a packed referral */
    size_t body_len;
} fixture_t;

static identity_t *new_identity(const char *name, card_role role, uint64_t created, uint64_t lifetime)
{
    identity_t *id;
    assert_ok(identity_generate(&id, name, role, "ILCPD0000", created, lifetime));
    return id;
}

static uint8_t *pack_referral(const char *rd, size_t *len)
{
    Rb__Referral r = RB__REFERRAL__INIT;
    r.schema_version = 1;
    r.agency_ori = "ILCPD0000";
    r.rd_number = (char *)rd;
    r.revision = 1;
    r.narrative = "R/O responded to a call of shots fired near the 6400 block of S. Kedzie Ave.";
    *len = rb__referral__get_packed_size(&r);
    uint8_t *buf = malloc(*len);
    rb__referral__pack(&r, buf);
    return buf;
}

static int setup(void **state)
{
    if (rbcrypto_init() != RB_OK)
        return -1;
    fixture_t *f = calloc(1, sizeof *f);
    f->police = new_identity("cpd-rms", CARD_ROLE_SOURCE, NOW, DAY);
    f->intake = new_identity("sao-intake", CARD_ROLE_SINK, NOW, DAY);
    f->mallory = new_identity("mallory-rms", CARD_ROLE_SOURCE, NOW, DAY);
    f->other = new_identity("other-intake", CARD_ROLE_SINK, NOW, DAY);
    assert_ok(trust_new(&f->trust));
    identity_t *all[] = {f->police, f->intake, f->mallory, f->other};
    for (size_t i = 0; i < 4; i++)
        assert_ok(trust_add(f->trust, identity_card(all[i])));
    f->body = pack_referral("JH512334", &f->body_len);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    identity_free(&f->police);
    identity_free(&f->intake);
    identity_free(&f->mallory);
    identity_free(&f->other);
    trust_free(&f->trust);
    free(f->body);
    free(f);
    return 0;
}

static uint8_t *seal(const identity_t *from, const identity_t *to, Rb__Kind kind, const uint8_t *body,
                     size_t body_len, size_t *len)
{
    envelope_params_t p = {.kind = kind, .created_ms = NOW_MS};
    msg_id_t id;
    uint8_t *env;
    assert_ok(envelope_seal(from, identity_card(to), &p, body, body_len, &id, &env, len));
    return env;
}

static uint8_t *seal_referral(fixture_t *f, size_t *len)
{
    return seal(f->police, f->intake, RB__KIND__KIND_REFERRAL, f->body, f->body_len, len);
}

/* Re-signs env's header, changed by mutate, with signer, around ciphertext (NULL: env's own). */
static uint8_t *reheader(const identity_t *signer, const uint8_t *env, size_t len,
                         void (*mutate)(Rb__Header *), const uint8_t *ciphertext, size_t ct_len,
                         size_t *out_len)
{
    Rb__Envelope *e = rb__envelope__unpack(NULL, len, env);
    assert_non_null(e);
    Rb__Header *h = rb__header__unpack(NULL, e->header.len, e->header.data);
    assert_non_null(h);
    if (ciphertext == NULL) {
        ciphertext = e->ciphertext.data;
        ct_len = e->ciphertext.len;
    }
    /* mutate changes a shallow copy, so that h frees only what unpack allocated */
    Rb__Header copy = *h;
    uint8_t hash[RB_HASH_BYTES];
    rbcrypto_sha256(ciphertext, ct_len, hash);
    copy.ciphertext_sha256.data = hash;
    if (mutate != NULL)
        mutate(&copy);
    uint8_t *out;
    assert_ok(envelope_pack(signer, &copy, ciphertext, ct_len, &out, out_len));
    rb__header__free_unpacked(h, NULL);
    rb__envelope__free_unpacked(e, NULL);
    return out;
}

static rb_err open_as(const identity_t *as, const trust_t *trust, const uint8_t *env, size_t len)
{
    envelope_opened_t o;
    rb_err rc = envelope_open(as, trust, env, len, &o);
    if (rc == RB_OK)
        envelope_opened_clear(&o);
    else
        assert_null(o.header);
    return rc;
}

static void referral_round_trip(void **state)
{
    fixture_t *f = *state;
    uint8_t case_key[CASE_KEY_BYTES], same[CASE_KEY_BYTES], other[CASE_KEY_BYTES];
    envelope_case_key(f->police, "ILCPD0000", "JH512334", case_key);
    envelope_case_key(f->police, "ILCPD0000", "JH512334", same);
    envelope_case_key(f->police, "ILCPD0000", "JH512335", other);
    assert_memory_equal(case_key, same, CASE_KEY_BYTES);
    assert_memory_not_equal(case_key, other, CASE_KEY_BYTES);

    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .case_key = case_key, .created_ms = NOW_MS};
    msg_id_t id;
    uint8_t *env;
    size_t len;
    assert_ok(envelope_seal(f->police, identity_card(f->intake), &p, f->body, f->body_len, &id, &env, &len));
    assert_int_equal(id.bytes[6] >> 4, 7); /* UUIDv7 */

    Rb__Header *h;
    card_t sender;
    assert_ok(envelope_verify_header(f->trust, env, len, &h, &sender));
    assert_string_equal(h->sender, "cpd-rms");
    assert_string_equal(h->recipient, "sao-intake");
    assert_memory_equal(h->message_id.data, id.bytes, MSG_ID_BYTES);
    assert_memory_equal(h->case_key.data, case_key, CASE_KEY_BYTES);
    assert_int_equal(h->created_ms, NOW_MS);
    rb__header__free_unpacked(h, NULL);

    envelope_opened_t o;
    assert_ok(envelope_open(f->intake, f->trust, env, len, &o));
    assert_int_equal(o.header->kind, RB__KIND__KIND_REFERRAL);
    assert_string_equal(o.sender.name, "cpd-rms");
    assert_int_equal(o.body_len, f->body_len);
    assert_memory_equal(o.body, f->body, f->body_len);
    assert_string_equal(((Rb__Referral *)o.message)->rd_number, "JH512334");
    uint8_t hash[RB_HASH_BYTES];
    rbcrypto_sha256(env, len, hash);
    assert_memory_equal(o.envelope_sha256, hash, RB_HASH_BYTES);
    envelope_opened_clear(&o);
    assert_null(o.header);
    free(env);
}

static void ack_round_trip_and_roles(void **state)
{
    fixture_t *f = *state;
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    ack.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
    ack.intake_reference = "SAO-2025-000123";
    ack.decided_ms = NOW_MS;
    uint8_t body[128];
    size_t body_len = rb__ack_body__pack(&ack, body);
    msg_id_t ref = {{1, 2, 3}}, id;
    envelope_params_t p = {.kind = RB__KIND__KIND_ACK,
                           .ref = &ref,
                           .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                           .created_ms = NOW_MS};
    uint8_t *env;
    size_t len;
    assert_ok(envelope_seal(f->intake, identity_card(f->police), &p, body, body_len, &id, &env, &len));
    envelope_opened_t o;
    assert_ok(envelope_open(f->police, f->trust, env, len, &o));
    assert_int_equal(o.header->ack_status, RB__ACK_STATUS__ACK_STATUS_ACCEPTED);
    assert_memory_equal(o.header->ref_message_id.data, ref.bytes, MSG_ID_BYTES);
    assert_string_equal(((Rb__AckBody *)o.message)->intake_reference, "SAO-2025-000123");
    envelope_opened_clear(&o);
    free(env);

    /* An ACK needs the message it answers, and only ACKs carry a status. */
    p.ref = NULL;
    assert_rb(envelope_seal(f->intake, identity_card(f->police), &p, body, body_len, &id, &env, &len),
              RB_ERR_USAGE);
    p.kind = RB__KIND__KIND_REFERRAL;
    assert_rb(envelope_seal(f->police, identity_card(f->intake), &p, body, body_len, &id, &env, &len),
              RB_ERR_USAGE);

    /* A police source may not acknowledge; an intake sink may not refer. */
    p = (envelope_params_t){.kind = RB__KIND__KIND_ACK,
                            .ref = &ref,
                            .ack_status = RB__ACK_STATUS__ACK_STATUS_REJECTED,
                            .created_ms = NOW_MS};
    assert_ok(envelope_seal(f->police, identity_card(f->intake), &p, body, body_len, &id, &env, &len));
    assert_rb(open_as(f->intake, f->trust, env, len), RB_ERR_NOT_ALLOWED);
    free(env);
    env = seal(f->intake, f->other, RB__KIND__KIND_REFERRAL, f->body, f->body_len, &len);
    assert_rb(open_as(f->other, f->trust, env, len), RB_ERR_NOT_ALLOWED);
    free(env);
}

/* An ACK's two statuses are one (header and signed body); the fields of AckBody version 2 travel in
 * InnerSigned version 2; an ACK of version 1, as f5a4222 sealed it (tests/vectors/envelopes/ack-v1.bin, from
 * seeded keys), still opens. */
static void ack_versions(void **state)
{
    fixture_t *f = *state;
    Rb__AckBody ack = RB__ACK_BODY__INIT;
    ack.status = RB__ACK_STATUS__ACK_STATUS_REJECTED;
    ack.decided_ms = NOW_MS;
    uint8_t body[512];
    size_t body_len = rb__ack_body__pack(&ack, body);
    msg_id_t ref = {{1, 2, 3}}, id;
    envelope_params_t p = {.kind = RB__KIND__KIND_ACK,
                           .ref = &ref,
                           .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                           .created_ms = NOW_MS};
    uint8_t *env;
    size_t len;
    assert_ok(envelope_seal(f->intake, identity_card(f->police), &p, body, body_len, &id, &env, &len));
    assert_rb(open_as(f->police, f->trust, env, len), RB_ERR_INNER_MISMATCH);
    free(env);

    ack.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
    ack.intake_reference = "SAO-2025-000123";
    ack.duplicate = true;
    ack.checkpoint = "referral-broker/ILCPD0000/broker-1\n2\nAAAA\n";
    body_len = rb__ack_body__pack(&ack, body);
    assert_ok(envelope_seal(f->intake, identity_card(f->police), &p, body, body_len, &id, &env, &len));
    envelope_opened_t o;
    assert_ok(envelope_open(f->police, f->trust, env, len, &o));
    assert_true(((Rb__AckBody *)o.message)->duplicate);
    assert_string_equal(((Rb__AckBody *)o.message)->checkpoint, ack.checkpoint);
    envelope_opened_clear(&o);
    free(env);

    uint8_t s1[32], s2[32];
    memset(s1, 1, sizeof s1);
    memset(s2, 2, sizeof s2);
    identity_t *source, *sink;
    trust_t *trust;
    assert_ok(
        identity_from_seed(&source, s1, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW, 100 * 365 * DAY));
    assert_ok(identity_from_seed(&sink, s2, "sao-intake", CARD_ROLE_SINK, "ILCCSAO00", NOW, 100 * 365 * DAY));
    assert_ok(trust_new(&trust));
    assert_ok(trust_add(trust, identity_card(sink)));
    env = (uint8_t *)test_read_file("tests/vectors/envelopes/ack-v1.bin", &len);
    assert_non_null(env);
    assert_ok(envelope_open(source, trust, env, len, &o));
    assert_int_equal(o.header->ack_status, RB__ACK_STATUS__ACK_STATUS_ACCEPTED);
    assert_string_equal(((Rb__AckBody *)o.message)->intake_reference, "SAO-2025-000001");
    assert_false(((Rb__AckBody *)o.message)->duplicate);
    envelope_opened_clear(&o);
    free(env);
    trust_free(&trust);
    identity_free(&source);
    identity_free(&sink);
}

/* The acceptance test: no single-bit change anywhere in an envelope goes unnoticed. */
static void every_bit_flip_refused(void **state)
{
    fixture_t *f = *state;
    size_t len;
    uint8_t *env = seal_referral(f, &len);
    uint8_t *copy = malloc(len);
    size_t counts[RB_ERR__COUNT] = {0};
    for (size_t i = 0; i < len * 8; i++) {
        memcpy(copy, env, len);
        copy[i / 8] ^= (uint8_t)(1u << (i % 8));
        rb_err rc = open_as(f->intake, f->trust, copy, len);
        if (rc == RB_OK)
            fail_msg("flipping bit %zu of byte %zu was not detected", i % 8, i / 8);
        counts[rc]++;
    }
    /* Flips land in the framing, the header, the signature and the ciphertext alike. */
    assert_true(counts[RB_ERR_MALFORMED] > 0);
    assert_true(counts[RB_ERR_BAD_SIGNATURE] > 0);
    assert_true(counts[RB_ERR_HASH_MISMATCH] > 0);
    assert_ok(open_as(f->intake, f->trust, env, len));
    free(copy);
    free(env);
}

static void truncated_and_oversize_refused(void **state)
{
    fixture_t *f = *state;
    size_t len;
    uint8_t *env = seal_referral(f, &len);
    for (size_t n = 0; n < len; n++)
        if (open_as(f->intake, f->trust, env, n) == RB_OK)
            fail_msg("a prefix of %zu of %zu bytes was accepted", n, len);
    assert_rb(open_as(f->intake, f->trust, env, ENVELOPE_MAX_BYTES + 1), RB_ERR_TOO_BIG);
    uint8_t *huge = calloc(1, ENVELOPE_MAX_BYTES);
    msg_id_t id;
    uint8_t *out;
    size_t out_len;
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = NOW_MS};
    assert_rb(
        envelope_seal(f->police, identity_card(f->intake), &p, huge, ENVELOPE_MAX_BYTES, &id, &out, &out_len),
        RB_ERR_TOO_BIG);
    free(huge);
    free(env);
}

static void wrong_recipient_refused(void **state)
{
    fixture_t *f = *state;
    size_t len, other_len, forged_len;
    uint8_t *env = seal_referral(f, &len);
    assert_rb(open_as(f->other, f->trust, env, len), RB_ERR_WRONG_RECIPIENT);
    /* A header naming the intake around a ciphertext sealed to someone else does not decrypt. */
    uint8_t *to_other = seal(f->police, f->other, RB__KIND__KIND_REFERRAL, f->body, f->body_len, &other_len);
    Rb__Envelope *e = rb__envelope__unpack(NULL, other_len, to_other);
    uint8_t *forged = reheader(f->police, env, len, NULL, e->ciphertext.data, e->ciphertext.len, &forged_len);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_DECRYPT);
    rb__envelope__free_unpacked(e, NULL);
    free(forged);
    free(to_other);
    free(env);
}

static void as_mallory(Rb__Header *h)
{
    static const char mallory[] = "mallory-rms";
    h->sender = (char *)mallory;
}

static uint8_t mallory_key_id[RB_KEY_ID_BYTES];
static void with_mallory_key(Rb__Header *h)
{
    as_mallory(h);
    h->sender_key_id.data = mallory_key_id;
}

static uint8_t new_message_id[MSG_ID_BYTES] = {0x01, 0x9a, 0, 0, 0, 0, 0x70, 0, 0x80};
static void with_new_message_id(Rb__Header *h)
{
    h->message_id.data = new_message_id;
}

/* A ciphertext taken out of one envelope and put in another is refused. */
static void lifted_inner_refused(void **state)
{
    fixture_t *f = *state;
    size_t len, forged_len;
    uint8_t *env = seal_referral(f, &len);
    /* Mallory, a trusted source, presents the police's sealed referral as her own. */
    memcpy(mallory_key_id, identity_card(f->mallory)->key_id, RB_KEY_ID_BYTES);
    uint8_t *forged = reheader(f->mallory, env, len, with_mallory_key, NULL, 0, &forged_len);
    Rb__Header *h;
    card_t sender;
    assert_ok(envelope_verify_header(f->trust, forged, forged_len, &h, &sender)); /* her header is good */
    rb__header__free_unpacked(h, NULL);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_BAD_INNER_SIG);
    free(forged);
    /* The sender's own ciphertext replayed under a new message id. */
    forged = reheader(f->police, env, len, with_new_message_id, NULL, 0, &forged_len);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_INNER_MISMATCH);
    free(forged);
    free(env);
}

static void set_version_2(Rb__Header *h)
{
    h->version = 2;
}

static void drop_ciphertext_hash(Rb__Header *h)
{
    static uint8_t zero[RB_HASH_BYTES];
    h->ciphertext_sha256.data = zero;
}

static void header_checks(void **state)
{
    fixture_t *f = *state;
    size_t len, forged_len;
    uint8_t *env = seal_referral(f, &len);

    uint8_t *forged = reheader(f->police, env, len, set_version_2, NULL, 0, &forged_len);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_BAD_VERSION);
    free(forged);
    /* Signed by Mallory while claiming to be the police. */
    forged = reheader(f->mallory, env, len, NULL, NULL, 0, &forged_len);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_BAD_SIGNATURE);
    free(forged);
    /* Mallory's key id under the police's name. */
    memcpy(mallory_key_id, identity_card(f->mallory)->key_id, RB_KEY_ID_BYTES);
    forged = reheader(f->mallory, env, len, as_mallory, NULL, 0, &forged_len);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_UNKNOWN_SENDER);
    free(forged);
    forged = reheader(f->police, env, len, drop_ciphertext_hash, NULL, 0, &forged_len);
    assert_rb(open_as(f->intake, f->trust, forged, forged_len), RB_ERR_HASH_MISMATCH);
    free(forged);
    free(env);
}

static void key_validity(void **state)
{
    fixture_t *f = *state;
    size_t len;
    uint8_t *env = seal_referral(f, &len);

    trust_t *strangers;
    assert_ok(trust_new(&strangers));
    assert_ok(trust_add(strangers, identity_card(f->intake)));
    assert_rb(open_as(f->intake, strangers, env, len), RB_ERR_UNKNOWN_SENDER);
    trust_free(&strangers);

    /* Revoked from a minute after it was sealed: what it signed before stays good; from before: refused. */
    assert_ok(trust_revoke(f->trust, identity_card(f->police)->key_id, NOW + 60));
    assert_ok(open_as(f->intake, f->trust, env, len));
    assert_ok(trust_revoke(f->trust, identity_card(f->police)->key_id, NOW - 60));
    assert_rb(open_as(f->intake, f->trust, env, len), RB_ERR_KEY_REVOKED);
    free(env);

    /* Signed after the key expired, or before it existed. */
    identity_t *expired = new_identity("old-rms", CARD_ROLE_SOURCE, NOW - 2 * DAY, DAY);
    identity_t *future = new_identity("new-rms", CARD_ROLE_SOURCE, NOW + DAY, DAY);
    assert_ok(trust_add(f->trust, identity_card(expired)));
    assert_ok(trust_add(f->trust, identity_card(future)));
    env = seal(expired, f->intake, RB__KIND__KIND_REFERRAL, f->body, f->body_len, &len);
    assert_rb(open_as(f->intake, f->trust, env, len), RB_ERR_KEY_EXPIRED);
    free(env);
    env = seal(future, f->intake, RB__KIND__KIND_REFERRAL, f->body, f->body_len, &len);
    assert_rb(open_as(f->intake, f->trust, env, len), RB_ERR_KEY_EXPIRED);
    free(env);
    identity_free(&expired);
    identity_free(&future);
}

static void body_must_be_a_referral(void **state)
{
    fixture_t *f = *state;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x07, 0x01};
    size_t len;
    uint8_t *env = seal(f->police, f->intake, RB__KIND__KIND_REFERRAL, junk, sizeof junk, &len);
    assert_rb(open_as(f->intake, f->trust, env, len), RB_ERR_BAD_BODY);
    free(env);
    /* A field this schema does not have (number 99) is refused, not carried along unread. */
    static const uint8_t unknown[] = {0x98, 0x06, 0x01};
    env = seal(f->police, f->intake, RB__KIND__KIND_REFERRAL, unknown, sizeof unknown, &len);
    assert_rb(open_as(f->intake, f->trust, env, len), RB_ERR_BAD_BODY);
    free(env);
}

/* Every sample referral survives JSON -> protobuf -> envelope -> open -> JSON unchanged. */
static void samples_round_trip(void **state)
{
    fixture_t *f = *state;
    const char *dir = "adapters/samples/valid";
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *ent;
    int seen = 0;
    while ((ent = readdir(d)) != NULL) {
        size_t n = strlen(ent->d_name);
        if (n < 6 || strcmp(ent->d_name + n - 5, ".json") != 0)
            continue;
        char path[512], err[256];
        size_t json_len, body_len, len;
        char *json = test_read_file(test_path(path, sizeof path, "%s/%s", dir, ent->d_name), &json_len);
        assert_non_null(json);
        ProtobufCMessage *m;
        rb_err rc = pbjson_parse(&rb__referral__descriptor, json, json_len, NULL, &m, err, sizeof err);
        if (rc != RB_OK)
            fail_msg("%s: %s", path, err);
        body_len = protobuf_c_message_get_packed_size(m);
        uint8_t *body = malloc(body_len + 1);
        protobuf_c_message_pack(m, body);
        uint8_t *env = seal(f->police, f->intake, RB__KIND__KIND_REFERRAL, body, body_len, &len);
        envelope_opened_t o;
        assert_ok(envelope_open(f->intake, f->trust, env, len, &o));
        assert_int_equal(o.body_len, body_len);
        assert_memory_equal(o.body, body, body_len);
        char *before, *after;
        assert_ok(pbjson_format(m, 0, &before));
        assert_ok(pbjson_format(o.message, 0, &after));
        assert_string_equal(before, after);
        pbjson_free(before);
        pbjson_free(after);
        envelope_opened_clear(&o);
        protobuf_c_message_free_unpacked(m, NULL);
        free(body);
        free(env);
        free(json);
        seen++;
    }
    closedir(d);
    assert_true(seen >= 6);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(referral_round_trip),
        T(ack_round_trip_and_roles),
        T(every_bit_flip_refused),
        T(truncated_and_oversize_refused),
        T(wrong_recipient_refused),
        T(lifted_inner_refused),
        T(header_checks),
        T(key_validity),
        T(body_must_be_a_referral),
        T(samples_round_trip),
        T(ack_versions),
    };
    return cmocka_run_group_tests_name("envelope", tests, NULL, NULL);
}
