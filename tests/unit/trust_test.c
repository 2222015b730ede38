/* trust_test.c -- trust stores: loading a directory, a bad card naming its file, conflicts, lookups by
 * name across key rotation, expiry and revocation. */
#include "testutil.h"

#include "identity.h"
#include "rbcrypto.h"
#include "trust.h"

#define NOW 1760000000ULL
#define DAY 86400ULL

static int setup(void **state)
{
    (void)state;
    return rbcrypto_init() == RB_OK ? 0 : -1;
}

static card_t new_card(const char *name, card_role role, uint64_t created, uint64_t lifetime)
{
    identity_t *id;
    assert_ok(identity_generate(&id, name, role, "ILCPD0000", created, lifetime));
    card_t card = *identity_card(id);
    identity_free(&id);
    return card;
}

static void load_directory(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), path[512], err[512];
    card_t a = new_card("cpd-rms", CARD_ROLE_SOURCE, NOW, DAY),
           b = new_card("sao-intake", CARD_ROLE_SINK, NOW, DAY);
    assert_ok(card_write_file(&a, test_path(path, sizeof path, "%s/cpd-rms.card", dir), false));
    assert_ok(card_write_file(&b, test_path(path, sizeof path, "%s/sao-intake.card", dir), false));
    test_write_file(test_path(path, sizeof path, "%s/README", dir), "not a card", 10, 0644);
    trust_t *trust;
    assert_ok(trust_load_dir(&trust, dir, err, sizeof err));
    assert_int_equal(trust_count(trust), 2);
    const card_t *found = trust_find_key(trust, b.key_id);
    assert_non_null(found);
    assert_string_equal(found->name, "sao-intake");
    assert_ok(trust_check(trust, &a, NOW + 10));
    trust_free(&trust);
    assert_null(trust);

    /* One damaged card fails the load and the error names it. */
    test_write_file(test_path(path, sizeof path, "%s/broken.card", dir), "referral-broker card v1: x\nAAAA\n",
                    32, 0644);
    assert_rb(trust_load_dir(&trust, dir, err, sizeof err), RB_ERR_BAD_CARD);
    assert_null(trust);
    assert_non_null(strstr(err, "broken.card"));
    test_rmdir(&dir);

    assert_rb(trust_load_dir(&trust, "/nonexistent/trust", err, sizeof err), RB_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/trust"));
}

static void conflicts(void **state)
{
    (void)state;
    trust_t *trust;
    assert_ok(trust_new(&trust));
    card_t a = new_card("cpd-rms", CARD_ROLE_SOURCE, NOW, DAY);
    assert_ok(trust_add(trust, &a));
    assert_ok(trust_add(trust, &a)); /* the same card again is harmless */
    card_t forged = a;
    strcpy(forged.name, "cpd-rms2"); /* same keys, another name */
    assert_rb(trust_add(trust, &forged), RB_ERR_CONFLICT);
    assert_int_equal(trust_count(trust), 1);
    trust_free(&trust);
}

static void rotation_expiry_revocation(void **state)
{
    (void)state;
    trust_t *trust;
    assert_ok(trust_new(&trust));
    card_t old = new_card("cpd-rms", CARD_ROLE_SOURCE, NOW, 30 * DAY);
    card_t rotated = new_card("cpd-rms", CARD_ROLE_SOURCE, NOW + 20 * DAY, 365 * DAY);
    assert_ok(trust_add(trust, &old));
    assert_ok(trust_add(trust, &rotated));
    assert_true(card_equal(trust_find_name(trust, "cpd-rms", NOW + DAY), &old));
    assert_true(card_equal(trust_find_name(trust, "cpd-rms", NOW + 25 * DAY), &rotated)); /* newest wins */
    assert_null(trust_find_name(trust, "cpd-rms", NOW - 1));
    assert_null(trust_find_name(trust, "nobody", NOW + DAY));

    assert_rb(trust_check(trust, &old, NOW + 31 * DAY), RB_ERR_KEY_EXPIRED);
    /* A rotation's overlap ends the old key before its card expires. */
    assert_ok(trust_retire(trust, old.key_id, NOW + 22 * DAY));
    assert_ok(trust_check(trust, &old, NOW + 22 * DAY - 1));
    assert_rb(trust_check(trust, &old, NOW + 22 * DAY), RB_ERR_KEY_EXPIRED);
    /* A compromise from day 22 on: what the key signed before stays good, what it signed since is not. */
    assert_false(trust_revoked(trust, rotated.key_id));
    assert_ok(trust_revoke(trust, rotated.key_id, NOW + 40 * DAY));
    assert_ok(trust_revoke(trust, rotated.key_id, NOW + 22 * DAY)); /* the earlier time stands */
    assert_ok(trust_revoke(trust, rotated.key_id, NOW + 30 * DAY));
    assert_true(trust_revoked(trust, rotated.key_id));
    assert_ok(trust_check(trust, &rotated, NOW + 21 * DAY));
    assert_rb(trust_check(trust, &rotated, NOW + 22 * DAY), RB_ERR_KEY_REVOKED);
    assert_true(card_equal(trust_find_name(trust, "cpd-rms", NOW + 21 * DAY), &rotated));
    assert_true(card_equal(trust_find_name(trust, "cpd-rms", NOW + 22 * DAY - 1), &rotated));
    assert_null(trust_find_name(trust, "cpd-rms", NOW + 25 * DAY)); /* old retired, new revoked */
    assert_rb(trust_retire(trust, (const uint8_t *)"12345678", NOW), RB_ERR_UNKNOWN_SENDER);

    card_t stranger = new_card("cpd-rms", CARD_ROLE_SOURCE, NOW, DAY);
    assert_rb(trust_check(trust, &stranger, NOW), RB_ERR_UNKNOWN_SENDER);
    assert_rb(trust_revoke(trust, stranger.key_id, NOW), RB_ERR_UNKNOWN_SENDER);
    trust_free(&trust);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(load_directory),
        cmocka_unit_test(conflicts),
        cmocka_unit_test(rotation_expiry_revocation),
    };
    return cmocka_run_group_tests_name("trust", tests, setup, NULL);
}
