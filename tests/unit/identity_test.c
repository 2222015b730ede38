/* identity_test.c -- secret files: clear and passphrase round trips, wrong passphrase, file modes,
 * refusing to overwrite, tampering, and a secret file whose keys are not its card's. */
#include <sys/stat.h>

#include "testutil.h"

#include "identity.h"
#include "keyfile.h"
#include "rbcrypto.h"

#define NOW 1760000000ULL
/* The cheapest costs a file may ask for keep the suite fast; production files use the defaults. */
#define OPS RB_PWHASH_OPSLIMIT_MIN
#define MEM RB_PWHASH_MEMLIMIT_MIN

typedef struct {
    char *dir;
    identity_t *id;
    char path[512];
} fixture_t;

static int setup(void **state)
{
    if (rbcrypto_init() != RB_OK)
        return -1;
    fixture_t *f = calloc(1, sizeof *f);
    f->dir = test_mkdtemp();
    test_path(f->path, sizeof f->path, "%s/sao.secret", f->dir);
    if (identity_generate(&f->id, "sao-intake", CARD_ROLE_SINK, "IL016015A", NOW, 86400) != RB_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    identity_free(&f->id);
    test_rmdir(&f->dir);
    free(f);
    return 0;
}

static void assert_same_identity(const identity_t *a, const identity_t *b)
{
    assert_true(card_equal(identity_card(a), identity_card(b)));
    assert_memory_equal(identity_sign_sk(a), identity_sign_sk(b), RB_SIGN_SK_BYTES);
    assert_memory_equal(identity_box_sk(a), identity_box_sk(b), RB_BOX_SK_BYTES);
}

static void clear_round_trip(void **state)
{
    fixture_t *f = *state;
    identity_t *back;
    bool encrypted = true;
    assert_ok(identity_save(f->id, f->path, NULL, 0, 0, 0, false));
    assert_ok(identity_file_encrypted(f->path, &encrypted));
    assert_false(encrypted);
    assert_ok(identity_load(&back, f->path, NULL, 0));
    assert_same_identity(f->id, back);
    identity_free(&back);
    assert_null(back);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void passphrase_round_trip_and_wrong_passphrase(void **state)
{
    fixture_t *f = *state;
    identity_t *back = NULL;
    bool encrypted = false;
    assert_ok(identity_save(f->id, f->path, "correct horse", 13, OPS, MEM, false));
    assert_ok(identity_file_encrypted(f->path, &encrypted));
    assert_true(encrypted);
    assert_rb(identity_load(&back, f->path, "correct hors", 12), RB_ERR_BAD_PASSPHRASE);
    assert_null(back);
    assert_rb(identity_load(&back, f->path, NULL, 0), RB_ERR_BAD_PASSPHRASE);
    assert_ok(identity_load(&back, f->path, "correct horse", 13));
    assert_same_identity(f->id, back);
    identity_free(&back);
    /* The file names no secret in its label. */
    size_t len;
    char *text = test_read_file(f->path, &len);
    assert_non_null(strstr(text, "encrypted=argon2id"));
    free(text);
}

static void readable_by_others_refused(void **state)
{
    fixture_t *f = *state;
    identity_t *back = NULL;
    bool encrypted;
    assert_ok(identity_save(f->id, f->path, NULL, 0, 0, 0, false));
    assert_int_equal(chmod(f->path, 0644), 0);
    assert_rb(identity_load(&back, f->path, NULL, 0), RB_ERR_INSECURE_FILE);
    assert_rb(identity_file_encrypted(f->path, &encrypted), RB_ERR_INSECURE_FILE);
    assert_int_equal(chmod(f->path, 0640), 0);
    assert_rb(identity_load(&back, f->path, NULL, 0), RB_ERR_INSECURE_FILE);
    assert_int_equal(chmod(f->path, 0600), 0);
    assert_ok(identity_load(&back, f->path, NULL, 0));
    identity_free(&back);
}

static void overwrite_needs_force(void **state)
{
    fixture_t *f = *state;
    assert_ok(identity_save(f->id, f->path, NULL, 0, 0, 0, false));
    assert_rb(identity_save(f->id, f->path, "x", 1, OPS, MEM, false), RB_ERR_EXISTS);
    assert_ok(identity_save(f->id, f->path, "x", 1, OPS, MEM, true));
    identity_t *back;
    assert_ok(identity_load(&back, f->path, "x", 1));
    identity_free(&back);
    /* No temporary file is left behind. */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", f->dir);
    assert_int_equal(system(cmd), 0);
}

/* Every change to a clear secret file is refused, whatever error names it, or changes no key. */
static void tampering_refused(void **state)
{
    fixture_t *f = *state;
    assert_ok(identity_save(f->id, f->path, NULL, 0, 0, 0, false));
    size_t len;
    char *text = test_read_file(f->path, &len);
    char tampered[600];
    test_path(tampered, sizeof tampered, "%s/tampered.secret", f->dir);
    for (size_t i = 0; i < len; i++) {
        char *copy = malloc(len);
        memcpy(copy, text, len);
        copy[i] ^= 0x04;
        test_write_file(tampered, copy, len, 0600);
        identity_t *back = NULL;
        rb_err rc = identity_load(&back, tampered, NULL, 0);
        if (rc == RB_OK) {
            /* X25519 ignores the bits that clamping clears, so a change there leaves the same key: the
             * only change a clear file may absorb. */
            uint8_t a[RB_BOX_SK_BYTES], b[RB_BOX_SK_BYTES];
            memcpy(a, identity_box_sk(f->id), sizeof a);
            memcpy(b, identity_box_sk(back), sizeof b);
            a[0] &= 248, b[0] &= 248, a[31] = (a[31] & 127) | 64, b[31] = (b[31] & 127) | 64;
            if (memcmp(a, b, sizeof a) != 0 || !card_equal(identity_card(f->id), identity_card(back)) ||
                memcmp(identity_sign_sk(f->id), identity_sign_sk(back), RB_SIGN_SK_BYTES) != 0)
                fail_msg("changing byte %zu of the secret file went unnoticed", i);
            identity_free(&back);
        }
        assert_null(back);
        free(copy);
    }
    free(text);
}

/* A clear secret file whose card belongs to other keys: the keys must match the card. */
static void keys_not_matching_card_refused(void **state)
{
    fixture_t *f = *state;
    identity_t *other;
    assert_ok(identity_generate(&other, "sao-intake", CARD_ROLE_SINK, "IL016015A", NOW, 86400));
    char other_path[600];
    test_path(other_path, sizeof other_path, "%s/other.secret", f->dir);
    assert_ok(identity_save(f->id, f->path, NULL, 0, 0, 0, false));
    assert_ok(identity_save(other, other_path, NULL, 0, 0, 0, false));
    /* Decode both, put the other's box key into ours, re-armour with our label. */
    size_t len, olen, n, on;
    char *text = test_read_file(f->path, &len), *otext = test_read_file(other_path, &olen);
    char label[200], olabel[200];
    uint8_t packed[1024], opacked[1024];
    assert_ok(keyfile_unarmor(text, len, label, sizeof label, packed, sizeof packed, &n));
    assert_ok(keyfile_unarmor(otext, olen, olabel, sizeof olabel, opacked, sizeof opacked, &on));
    memcpy(packed + 72 + RB_SIGN_SK_BYTES, opacked + 72 + RB_SIGN_SK_BYTES, RB_BOX_SK_BYTES);
    char out[2048];
    size_t out_len;
    assert_ok(keyfile_armor(label, packed, n, out, sizeof out, &out_len));
    test_write_file(f->path, out, out_len, 0600);
    identity_t *back = NULL;
    assert_rb(identity_load(&back, f->path, NULL, 0), RB_ERR_KEY_MISMATCH);
    free(text);
    free(otext);
    identity_free(&other);
}

static void kdf_costs_bounded(void **state)
{
    fixture_t *f = *state;
    assert_rb(identity_save(f->id, f->path, "x", 1, 1, MEM, false), RB_ERR_USAGE);
    assert_rb(identity_save(f->id, f->path, "x", 1, OPS, RB_PWHASH_MEMLIMIT_MAX * 2, false), RB_ERR_USAGE);
    assert_int_equal(access(f->path, F_OK), -1); /* nothing written */
}

static void seeded_identities_are_deterministic(void **state)
{
    (void)state;
    uint8_t seed[32] = {7}, other_seed[32] = {8};
    identity_t *a, *b, *c;
    assert_ok(identity_from_seed(&a, seed, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW, 86400));
    assert_ok(identity_from_seed(&b, seed, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW, 86400));
    assert_ok(identity_from_seed(&c, other_seed, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW, 86400));
    assert_same_identity(a, b);
    assert_memory_not_equal(identity_card(a)->sign_pk, identity_card(c)->sign_pk, RB_SIGN_PK_BYTES);
    /* The two keys come from independent sub-seeds. */
    assert_memory_not_equal(identity_sign_sk(a), identity_box_sk(a), RB_BOX_SK_BYTES);
    identity_free(&a);
    identity_free(&b);
    identity_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(clear_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(passphrase_round_trip_and_wrong_passphrase, setup, teardown),
        cmocka_unit_test_setup_teardown(readable_by_others_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(overwrite_needs_force, setup, teardown),
        cmocka_unit_test_setup_teardown(tampering_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_not_matching_card_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(kdf_costs_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(seeded_identities_are_deterministic, setup, teardown),
    };
    return cmocka_run_group_tests_name("identity", tests, NULL, NULL);
}
