/* merkle_test.c -- RFC 6962 hashing and proofs: every published test vector (tests/vectors/merkle), and
 * proofs this module generates for every shape of tree up to 40 leaves verified and tampered with. */
#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>

#include "testutil.h"

#include "merkle.h"
#include "pbjson.h"

#define MAX_PROOF 64

/* A base64 hash; false unless it decodes to exactly 32 bytes (the vectors also hold wrong lengths). */
static bool hash_of(json_t *v, merkle_hash_t *out)
{
    const char *s = json_string_value(v);
    size_t n;
    return s != NULL &&
           sodium_base642bin(out->bytes, sizeof out->bytes + 1, s, strlen(s), NULL, &n, NULL,
                             sodium_base64_VARIANT_ORIGINAL) == 0 &&
           n == MERKLE_HASH_BYTES;
}

/* Whether the vector file says the verifier must refuse it. */
static bool wants_error(const char *path)
{
    size_t len;
    char *text = test_read_file(path, &len);
    assert_non_null(text);
    bool want = strstr(text, "\"wantErr\": true") != NULL;
    free(text);
    return want;
}

/* Runs one vector file; returns whether it behaved as wantErr says. */
static bool run_vector(const char *path, bool consistency)
{
    bool want_err = wants_error(path);
    json_error_t jerr;
    json_t *c = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (c == NULL) /* an index or size beyond 2^63: out of range for the ledger, so refused */
        return want_err && strstr(jerr.text, "too big integer") != NULL;
    json_t *proof_json = json_object_get(c, "proof");
    merkle_hash_t proof[MAX_PROOF];
    size_t n = json_array_size(proof_json);
    bool well_formed = n <= MAX_PROOF;
    for (size_t i = 0; well_formed && i < n; i++)
        well_formed = hash_of(json_array_get(proof_json, i), &proof[i]);
    rb_err rc = RB_ERR_MALFORMED;
    if (consistency) {
        merkle_hash_t r1, r2;
        uint64_t size1 = (uint64_t)json_integer_value(json_object_get(c, "size1"));
        uint64_t size2 = (uint64_t)json_integer_value(json_object_get(c, "size2"));
        const char *raw1 = json_string_value(json_object_get(c, "root1"));
        const char *raw2 = json_string_value(json_object_get(c, "root2"));
        if (well_formed && hash_of(json_object_get(c, "root1"), &r1) &&
            hash_of(json_object_get(c, "root2"), &r2))
            rc = merkle_verify_consistency(size1, size2, &r1, &r2, proof, n);
        /* A few cases put placeholders that are not hashes where the roots are only compared, never hashed
         * (equal, non-zero sizes); our roots are always 32 bytes, so these are judged on the text. */
        else if (well_formed && n == 0 && size1 == size2 && size1 > 0 && raw1 && raw2)
            rc = strcmp(raw1, raw2) == 0 ? RB_OK : RB_ERR_HASH_MISMATCH;
    } else {
        merkle_hash_t leaf, root;
        json_int_t index = json_integer_value(json_object_get(c, "leafIdx"));
        if (well_formed && index >= 0 && hash_of(json_object_get(c, "leafHash"), &leaf) &&
            hash_of(json_object_get(c, "root"), &root))
            rc = merkle_verify_inclusion((uint64_t)index,
                                         (uint64_t)json_integer_value(json_object_get(c, "treeSize")), &leaf,
                                         proof, n, &root);
    }
    json_decref(c);
    bool ok = (rc != RB_OK) == want_err;
    if (!ok)
        print_error("%s: %s, but wantErr is %s\n", path, rb_strerror(rc), want_err ? "true" : "false");
    return ok;
}

static void published_vectors(void **state)
{
    (void)state;
    pbjson_init(); /* jansson allocates through the project's allocator */
    FILE *list = popen("find tests/vectors/merkle -name '*.json' | sort", "r");
    assert_non_null(list);
    char path[1024];
    int cases = 0, bad = 0, refused = 0;
    while (fgets(path, sizeof path, list) != NULL) {
        path[strcspn(path, "\n")] = '\0';
        bool consistency = strstr(path, "/consistency/") != NULL;
        bad += !run_vector(path, consistency);
        cases++;
        refused += wants_error(path);
    }
    pclose(list);
    assert_int_equal(bad, 0);
    assert_true(cases >= 196); /* every published case, happy and refused */
    assert_true(refused > 100);
}

/* An empty leaf as a receipt carries it: an empty protobuf bytes field has no data pointer. Found by
 * tests/fuzz/client_fuzz.c (memcpy from NULL, undefined behaviour that SANITIZE=1 turns into a failure). */
static void empty_leaf_without_data(void **state)
{
    (void)state;
    merkle_hash_t from_null, from_empty;
    static const uint8_t nothing[1];
    merkle_leaf_hash(NULL, 0, &from_null);
    merkle_leaf_hash(nothing, 0, &from_empty);
    assert_memory_equal(from_null.bytes, from_empty.bytes, MERKLE_HASH_BYTES);
}

static void known_roots(void **state)
{
    (void)state;
    merkle_hash_t root, leaf;
    char hex[65];
    merkle_root(NULL, 0, &root);
    sodium_bin2hex(hex, sizeof hex, root.bytes, 32);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    merkle_leaf_hash((const uint8_t *)"", 0, &leaf); /* RFC 6962 test: the empty leaf */
    sodium_bin2hex(hex, sizeof hex, leaf.bytes, 32);
    assert_string_equal(hex, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
}

static void generated_proofs_verify(void **state)
{
    (void)state;
    enum { N = 40 };
    merkle_hash_t leaves[N], roots[N + 1], proof[MAX_PROOF];
    for (int i = 0; i < N; i++) {
        uint8_t data[2] = {(uint8_t)i, 0x5a};
        merkle_leaf_hash(data, sizeof data, &leaves[i]);
    }
    for (uint64_t size = 0; size <= N; size++)
        merkle_root(leaves, size, &roots[size]);
    for (uint64_t size = 1; size <= N; size++) {
        for (uint64_t i = 0; i < size; i++) {
            size_t n;
            assert_ok(merkle_inclusion_proof(merkle_memory_subtree, leaves, size, i, proof, &n));
            assert_ok(merkle_verify_inclusion(i, size, &leaves[i], proof, n, &roots[size]));
            if (i + 1 < size)
                assert_true(merkle_verify_inclusion(i + 1, size, &leaves[i], proof, n, &roots[size]) !=
                            RB_OK);
            if (n > 0) {
                proof[n - 1].bytes[7] ^= 1;
                assert_rb(merkle_verify_inclusion(i, size, &leaves[i], proof, n, &roots[size]),
                          RB_ERR_HASH_MISMATCH);
            }
        }
        for (uint64_t m = 1; m <= size; m++) {
            size_t n;
            assert_ok(merkle_consistency_proof(merkle_memory_subtree, leaves, m, size, proof, &n));
            assert_ok(merkle_verify_consistency(m, size, &roots[m], &roots[size], proof, n));
            if (m < size)
                assert_true(merkle_verify_consistency(m, size, &roots[m], &roots[m], proof, n) != RB_OK);
        }
    }
    size_t n;
    assert_rb(merkle_inclusion_proof(merkle_memory_subtree, leaves, 4, 4, proof, &n), RB_ERR_USAGE);
    assert_rb(merkle_consistency_proof(merkle_memory_subtree, leaves, 5, 4, proof, &n), RB_ERR_USAGE);
}

typedef struct {
    const merkle_hash_t *leaves;
    int merges;
} merges_t;

/* Every subtree the frontier closes must be the complete subtree it names. */
static void check_merge(void *ctx, int level, uint64_t index, const merkle_hash_t *hash)
{
    merges_t *m = ctx;
    merkle_hash_t want;
    merkle_root(m->leaves + (index << level), (uint64_t)1 << level, &want);
    assert_memory_equal(want.bytes, hash->bytes, MERKLE_HASH_BYTES);
    m->merges++;
}

static void frontier_matches_roots(void **state)
{
    (void)state;
    enum { N = 300 };
    merkle_hash_t leaves[N], want, got;
    merkle_frontier_t f = {0};
    merges_t m = {leaves, 0};
    merkle_frontier_root(&f, &got);
    merkle_root(leaves, 0, &want);
    assert_memory_equal(want.bytes, got.bytes, MERKLE_HASH_BYTES);
    for (int i = 0; i < N; i++) {
        uint8_t data[2] = {(uint8_t)i, (uint8_t)(i >> 8)};
        merkle_leaf_hash(data, sizeof data, &leaves[i]);
        merkle_frontier_append(&f, &leaves[i], check_merge, &m);
        merkle_frontier_root(&f, &got);
        merkle_root(leaves, (uint64_t)i + 1, &want);
        assert_memory_equal(want.bytes, got.bytes, MERKLE_HASH_BYTES);
    }
    assert_int_equal(m.merges, N - __builtin_popcount(N)); /* all but the right edge: one per set bit of N */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(published_vectors),       cmocka_unit_test(known_roots),
        cmocka_unit_test(empty_leaf_without_data), cmocka_unit_test(generated_proofs_verify),
        cmocka_unit_test(frontier_matches_roots),
    };
    return cmocka_run_group_tests_name("merkle", tests, NULL, NULL);
}
