/* card_test.c -- identity cards: making, text round trip, tampering, validity window, field rules. */
#include <sys/stat.h>

#include "testutil.h"

#include "card.h"
#include "rbcrypto.h"

#define NOW 1760000000ULL /* 2025-10-09 */

/* A card for cpd-rms created at `created`; its signing secret into ssk when not NULL. */
static void make_card_at(card_t *card, card_role role, uint64_t created, uint8_t *ssk_out)
{
    uint8_t spk[RB_SIGN_PK_BYTES], ssk[RB_SIGN_SK_BYTES], bpk[RB_BOX_PK_BYTES], bsk[RB_BOX_SK_BYTES];
    rbcrypto_sign_keypair(spk, ssk);
    rbcrypto_box_keypair(bpk, bsk);
    assert_ok(card_make(card, "cpd-rms", role, "ILCPD0000", spk, bpk, created, created + 86400, ssk));
    if (ssk_out != NULL)
        memcpy(ssk_out, ssk, sizeof ssk);
}

static void make_card(card_t *card, card_role role)
{
    make_card_at(card, role, NOW, NULL);
}

static int setup(void **state)
{
    (void)state;
    return rbcrypto_init() == RB_OK ? 0 : -1;
}

static void text_round_trip(void **state)
{
    (void)state;
    card_t card, back;
    make_card(&card, CARD_ROLE_SOURCE);
    char text[CARD_TEXT_MAX];
    size_t len = card_to_text(&card, text);
    assert_true(len > 0);
    assert_non_null(
        strstr(text, "referral-broker card v1: name=cpd-rms role=source agency=ILCPD0000 keyid="));
    assert_ok(card_from_text(&back, text, len));
    assert_true(card_equal(&card, &back));
    assert_string_equal(back.name, "cpd-rms");
    assert_int_equal(back.role, CARD_ROLE_SOURCE);
    assert_int_equal(back.expires, NOW + 86400);
}

/* Any change to any byte of the text, label included, must be refused. */
static void every_byte_change_refused(void **state)
{
    (void)state;
    card_t card, back;
    make_card(&card, CARD_ROLE_SINK);
    char text[CARD_TEXT_MAX];
    size_t len = card_to_text(&card, text);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char copy[CARD_TEXT_MAX];
            memcpy(copy, text, len);
            copy[i] = (char)(copy[i] ^ (1 << bit));
            rb_err rc = card_from_text(&back, copy, len);
            if (rc == RB_OK)
                fail_msg("flipping bit %d of byte %zu went unnoticed", bit, i);
        }
    }
    assert_rb(card_from_text(&back, text, len - 1), RB_ERR_BAD_CARD); /* truncated */
}

/* A packed card re-signed by another key is refused: the key id and signature no longer agree. */
static void packed_tampering_refused(void **state)
{
    (void)state;
    card_t card, back;
    make_card(&card, CARD_ROLE_SOURCE);
    uint8_t packed[CARD_PACKED_MAX];
    size_t n = card_pack(&card, packed);
    assert_ok(card_unpack(&back, packed, n));
    packed[5] = CARD_ROLE_ADMIN; /* promote itself */
    assert_rb(card_unpack(&back, packed, n), RB_ERR_BAD_CARD);
    packed[5] = CARD_ROLE_SOURCE;
    packed[4] = 2;
    assert_rb(card_unpack(&back, packed, n), RB_ERR_BAD_VERSION);
    packed[4] = 1;
    assert_rb(card_unpack(&back, packed, n + 1), RB_ERR_BAD_CARD); /* trailing byte */
    assert_rb(card_unpack(&back, packed, 10), RB_ERR_BAD_CARD);
}

static void validity_window(void **state)
{
    (void)state;
    card_t card;
    make_card(&card, CARD_ROLE_SOURCE);
    assert_rb(card_valid_at(&card, NOW - 1), RB_ERR_KEY_EXPIRED);
    assert_ok(card_valid_at(&card, NOW));
    assert_ok(card_valid_at(&card, NOW + 86399));
    assert_rb(card_valid_at(&card, NOW + 86400), RB_ERR_KEY_EXPIRED);
}

static void field_rules(void **state)
{
    (void)state;
    assert_true(card_name_ok("sao-intake"));
    assert_true(card_name_ok("cpd.rms_2"));
    assert_false(card_name_ok(""));
    assert_false(card_name_ok("-rms"));
    assert_false(card_name_ok("CPD"));
    assert_false(card_name_ok("cpd rms"));
    char long_name[CARD_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[CARD_NAME_MAX + 1] = '\0';
    assert_false(card_name_ok(long_name));
    assert_true(card_agency_ok("ILCPD0000"));
    assert_false(card_agency_ok("IL0000000X"));
    assert_false(card_agency_ok("I1CPD0000"));
    assert_false(card_agency_ok("ilcpd0000"));
    card_role role;
    assert_true(card_role_parse("admin", &role));
    assert_int_equal(role, CARD_ROLE_ADMIN);
    assert_false(card_role_parse("root", &role));

    card_t card;
    uint8_t spk[RB_SIGN_PK_BYTES], ssk[RB_SIGN_SK_BYTES], bpk[RB_BOX_PK_BYTES], bsk[RB_BOX_SK_BYTES];
    rbcrypto_sign_keypair(spk, ssk);
    rbcrypto_box_keypair(bpk, bsk);
    assert_rb(card_make(&card, "Bad Name", CARD_ROLE_SOURCE, "ILCPD0000", spk, bpk, NOW, NOW + 1, ssk),
              RB_ERR_USAGE);
    assert_rb(card_make(&card, "ok", CARD_ROLE_SOURCE, "ILCPD0000", spk, bpk, NOW, NOW, ssk), RB_ERR_USAGE);
}

static void file_round_trip(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), path[512];
    card_t card, back;
    make_card(&card, CARD_ROLE_SOURCE);
    test_path(path, sizeof path, "%s/cpd.card", dir);
    assert_ok(card_write_file(&card, path, false));
    assert_rb(card_write_file(&card, path, false), RB_ERR_EXISTS);
    assert_ok(card_write_file(&card, path, true));
    assert_ok(card_read_file(&back, path));
    assert_true(card_equal(&card, &back));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    test_path(path, sizeof path, "%s/missing.card", dir);
    assert_rb(card_read_file(&back, path), RB_ERR_IO);
    test_rmdir(&dir);
}

static void fingerprint_format(void **state)
{
    (void)state;
    card_t card;
    make_card(&card, CARD_ROLE_SOURCE);
    char fp[CARD_FINGERPRINT_MAX];
    card_fingerprint(&card, fp);
    assert_int_equal(strlen(fp), 64 + 15);
    assert_int_equal(fp[4], ' ');
}

/* Rotation: the old key certifies the new card; nothing else passes for that certification. */
static void rotation_certification(void **state)
{
    (void)state;
    card_t old, next, stranger, other_role;
    uint8_t old_sk[RB_SIGN_SK_BYTES], next_sk[RB_SIGN_SK_BYTES];
    make_card_at(&old, CARD_ROLE_SOURCE, NOW, old_sk);
    make_card_at(&next, CARD_ROLE_SOURCE, NOW + 100, next_sk);
    make_card_at(&stranger, CARD_ROLE_SOURCE, NOW + 100, NULL);
    make_card_at(&other_role, CARD_ROLE_SINK, NOW + 100, NULL);
    card_cert_t cert, back;
    assert_ok(card_certify(&old, old_sk, &next, &cert));
    assert_ok(card_cert_check(&cert, &old, &next));
    assert_rb(card_cert_check(&cert, &old, &stranger), RB_ERR_USAGE); /* another new key */
    assert_rb(card_cert_check(&cert, &next, &next), RB_ERR_USAGE);
    /* Certified by the new key itself (what a thief of only the new key could make): refused. */
    assert_ok(card_certify(&old, next_sk, &next, &back));
    assert_rb(card_cert_check(&back, &old, &next), RB_ERR_BAD_SIGNATURE);
    assert_rb(card_certify(&old, old_sk, &other_role, &back),
              RB_ERR_USAGE);                                            /* role changes are not rotation */
    assert_rb(card_certify(&next, next_sk, &old, &back), RB_ERR_USAGE); /* nor going back in time */

    char text[CARD_TEXT_MAX];
    size_t len = card_cert_to_text(&cert, text);
    assert_non_null(strstr(text, "referral-broker key certification v1: old="));
    assert_ok(card_cert_from_text(&back, text, len));
    assert_memory_equal(&back, &cert, sizeof cert);
    /* Every byte of the text matters: the label is rebuilt, the signature checked. */
    for (size_t i = 0; i < len; i++) {
        char changed[CARD_TEXT_MAX];
        memcpy(changed, text, len);
        changed[i] ^= 0x01;
        if (card_cert_from_text(&back, changed, len) == RB_OK)
            assert_int_not_equal(card_cert_check(&back, &old, &next), RB_OK);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_round_trip),
        cmocka_unit_test(every_byte_change_refused),
        cmocka_unit_test(packed_tampering_refused),
        cmocka_unit_test(validity_window),
        cmocka_unit_test(field_rules),
        cmocka_unit_test(file_round_trip),
        cmocka_unit_test(fingerprint_format),
        cmocka_unit_test(rotation_certification),
    };
    return cmocka_run_group_tests_name("card", tests, setup, NULL);
}
