/* tiles_test.c -- the tlog-tiles export: trees of 70,000 leaves, of 1,000 and of exactly 256 * 256 are
 * exported, then read back from disk by code that knows only the specification (c2sp.org/tlog-tiles):
 * file names, full and partial widths, entry bundles against the stored leaves, every tile hash against
 * the leaves, and the root against the signed checkpoint. Also the refusals. */
#include <dirent.h>
#include <sqlite3.h>

#include "testutil.h"

#include "ledger.h"
#include "merkle.h"
#include "note.h"
#include "tiles.h"

#define ORIGIN "test/log"
#define BIG    70000

typedef struct {
    sqlite3 *db;
    ledger_t *l;
} tree_t;

static uint8_t pk[RB_SIGN_PK_BYTES], sk[RB_SIGN_SK_BYTES];
static tree_t big; /* BIG leaves, shared by the tests that only read it */

/* A ledger of n leaves in memory. Leaf i is the same in every tree, so that prefixes can be compared. */
static void build(tree_t *t, uint64_t n)
{
    assert_int_equal(sqlite3_open(":memory:", &t->db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(t->db, LEDGER_SCHEMA, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(t->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_ok(ledger_open(&t->l, t->db));
    for (uint64_t i = 0; i < n; i++) {
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        char detail[32];
        snprintf(detail, sizeof detail, "event %llu", (unsigned long long)i);
        e.action = "test";
        e.at_ms = 1700000000000 + (int64_t)i;
        e.detail = detail;
        uint64_t index;
        assert_ok(ledger_append(t->l, &e, &index));
        assert_int_equal(index, i);
    }
    assert_int_equal(sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

static void destroy(tree_t *t)
{
    ledger_close(&t->l);
    sqlite3_close(t->db);
}

static void sign(uint64_t size, const merkle_hash_t *root, char note[NOTE_TEXT_MAX])
{
    checkpoint_t cp = {.origin = ORIGIN, .size = size, .root = *root};
    size_t len;
    assert_ok(checkpoint_sign(&cp, sk, note, &len));
}

/* Signs the stored tree's root at size and exports it. */
static rb_err export(ledger_t *l, uint64_t size, const char *dir, char note[NOTE_TEXT_MAX])
{
    merkle_hash_t root;
    assert_ok(ledger_root(l, size, &root));
    sign(size, &root, note);
    return tiles_export(l, size, note, dir);
}

/* The specification's name for tile n (level -1: entry bundle), written independently of tiles_path: the
 * decimal number left-padded to whole groups of three digits, every group but the last as "x<ddd>/". */
static void spec_name(char *out, size_t cap, int level, uint64_t n, unsigned width)
{
    char digits[32], padded[40];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    int pad = (3 - len % 3) % 3;
    snprintf(padded, sizeof padded, "%.*s%s", pad, "00", digits);
    size_t pos = level < 0 ? (size_t)snprintf(out, cap, "tile/entries/")
                           : (size_t)snprintf(out, cap, "tile/%d/", level);
    for (size_t g = 0; g < strlen(padded); g += 3) {
        bool last = g + 3 == strlen(padded);
        pos +=
            (size_t)snprintf(out + pos, cap - pos, "%s%.3s%s", last ? "" : "x", padded + g, last ? "" : "/");
    }
    if (width != 0)
        snprintf(out + pos, cap - pos, ".p/%u", width);
}

static uint8_t *read_rel(const char *dir, const char *rel, size_t *len)
{
    char path[1024];
    return (uint8_t *)test_read_file(test_path(path, sizeof path, "%s/%s", dir, rel), len);
}

static bool exists(const char *dir, const char *rel)
{
    char path[1024];
    struct stat st;
    return stat(test_path(path, sizeof path, "%s/%s", dir, rel), &st) == 0;
}

/* Regular files under path, recursively. */
static size_t count_files(const char *path)
{
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char sub[1024];
        struct stat st;
        assert_int_equal(lstat(test_path(sub, sizeof sub, "%s/%s", path, de->d_name), &st), 0);
        n += S_ISDIR(st.st_mode) ? count_files(sub) : S_ISREG(st.st_mode) ? 1 : 0;
    }
    closedir(d);
    return n;
}

/* Reads an export of the first size leaves of l back from disk and checks all of it against the spec. */
static void check_export(ledger_t *l, uint64_t size, const char *dir, const char *note)
{
    size_t len;
    char *text = (char *)read_rel(dir, "checkpoint", &len);
    assert_non_null(text);
    assert_string_equal(text, note);
    checkpoint_t cp;
    assert_ok(checkpoint_open(text, len, ORIGIN, pk, &cp));
    assert_int_equal(cp.size, size);
    free(text);
    size_t files = 1;

    /* Entry bundles: exactly the stored leaf bytes, each behind its big-endian length. */
    merkle_hash_t *leaves = malloc((size ? size : 1) * sizeof *leaves);
    assert_non_null(leaves);
    for (uint64_t n = 0; n * 256 < size; n++) {
        unsigned width = size - n * 256 >= 256 ? 256 : (unsigned)(size - n * 256);
        char rel[128];
        spec_name(rel, sizeof rel, -1, n, width == 256 ? 0 : width);
        uint8_t *bundle = read_rel(dir, rel, &len);
        if (bundle == NULL)
            fail_msg("missing %s", rel);
        files++;
        size_t pos = 0;
        for (unsigned i = 0; i < width; i++) {
            uint64_t index = n * 256 + i;
            uint8_t *leaf;
            size_t leaf_len;
            assert_ok(ledger_leaf(l, index, &leaf, &leaf_len));
            assert_true(pos + 2 <= len);
            size_t entry_len = (size_t)bundle[pos] << 8 | bundle[pos + 1];
            assert_int_equal(entry_len, leaf_len);
            assert_true(pos + 2 + entry_len <= len);
            assert_memory_equal(bundle + pos + 2, leaf, leaf_len);
            merkle_leaf_hash(bundle + pos + 2, entry_len, &leaves[index]);
            pos += 2 + entry_len;
            free(leaf);
        }
        assert_int_equal(pos, len); /* nothing after the last entry */
        free(bundle);
    }

    /* Hash tiles: hash i of tile n at level L is MTH of leaves [(256n + i) * 256^L, + 256^L). */
    for (int level = 0; level < 8 && size >> (8 * level) > 0; level++) {
        uint64_t count = size >> (8 * level), span = (uint64_t)1 << (8 * level);
        for (uint64_t n = 0; n * 256 < count; n++) {
            unsigned width = count - n * 256 >= 256 ? 256 : (unsigned)(count - n * 256);
            if (width < 256) /* only the rightmost tile of a level, with the spec's width */
                assert_int_equal(width, (size / span) % 256);
            char rel[128];
            spec_name(rel, sizeof rel, level, n, width == 256 ? 0 : width);
            uint8_t *tile = read_rel(dir, rel, &len);
            if (tile == NULL)
                fail_msg("missing %s", rel);
            files++;
            assert_int_equal(len, (size_t)width * MERKLE_HASH_BYTES);
            for (unsigned i = 0; i < width; i++) {
                merkle_hash_t want;
                merkle_root(leaves + (n * 256 + i) * span, span, &want);
                assert_memory_equal(tile + (size_t)i * MERKLE_HASH_BYTES, want.bytes, MERKLE_HASH_BYTES);
            }
            free(tile);
        }
    }
    assert_int_equal(count_files(dir), files); /* nothing else: no empty partial tile, no temporary file */

    /* The root recomputed from the level-0 tiles, as a client would. */
    merkle_hash_t *from_tiles = malloc((size ? size : 1) * sizeof *from_tiles);
    assert_non_null(from_tiles);
    for (uint64_t n = 0; n * 256 < size; n++) {
        unsigned width = size - n * 256 >= 256 ? 256 : (unsigned)(size - n * 256);
        char rel[128];
        spec_name(rel, sizeof rel, 0, n, width == 256 ? 0 : width);
        uint8_t *tile = read_rel(dir, rel, &len);
        assert_non_null(tile);
        memcpy(from_tiles + n * 256, tile, len);
        free(tile);
    }
    merkle_hash_t root;
    merkle_root(from_tiles, size, &root);
    assert_memory_equal(root.bytes, cp.root.bytes, MERKLE_HASH_BYTES);
    free(from_tiles);
    free(leaves);
}

static int setup(void **state)
{
    (void)state;
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 7 + 1);
    rbcrypto_sign_seed_keypair(seed, pk, sk);
    build(&big, BIG);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    destroy(&big);
    return 0;
}

static void paths_follow_the_spec(void **state)
{
    (void)state;
    char got[TILES_PATH_MAX], want[128];
    tiles_path(got, 0, 1234067, 0);
    assert_string_equal(got, "tile/0/x001/x234/067");
    tiles_path(got, 2, 0, TILES_WIDTH);
    assert_string_equal(got, "tile/2/000");
    tiles_path(got, 1, 5, 17);
    assert_string_equal(got, "tile/1/005.p/17");
    tiles_path(got, TILES_ENTRIES, 1000, 112);
    assert_string_equal(got, "tile/entries/x001/000.p/112");
    tiles_path(got, 63, 999, 255);
    assert_string_equal(got, "tile/63/999.p/255");
    tiles_path(got, TILES_ENTRIES, UINT64_MAX, 1);
    assert_string_equal(got, "tile/entries/x018/x446/x744/x073/x709/x551/615.p/1");
    uint64_t n = 1;
    for (int i = 0; i < 2000; i++, n = n * 6364136223846793005u + 1442695040888963407u) {
        uint64_t v = i < 1000 ? (uint64_t)i * 1001 : n >> (i % 64);
        int level = i % 9 - 1;
        unsigned width = (unsigned)(i % 256);
        tiles_path(got, level, v, width);
        spec_name(want, sizeof want, level, v, width);
        assert_string_equal(got, want);
    }
}

static void exports_70000(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), note[NOTE_TEXT_MAX], log[1100];
    test_path(log, sizeof log, "%s/new/log", dir); /* created, parents too */
    assert_ok(export(big.l, BIG, log, note));
    check_export(big.l, BIG, log, note);
    /* The specification's own example: 273 full level-0 tiles and one of 112, one full level-1 tile and
     * one of 17, one level-2 tile of 1. */
    assert_true(exists(log, "tile/0/272") && exists(log, "tile/0/273.p/112") && !exists(log, "tile/0/273"));
    assert_true(exists(log, "tile/1/000") && exists(log, "tile/1/001.p/17") && !exists(log, "tile/1/001"));
    assert_true(exists(log, "tile/2/000.p/1") && !exists(log, "tile/2/000") && !exists(log, "tile/3"));
    assert_true(exists(log, "tile/entries/272") && exists(log, "tile/entries/273.p/112"));
    /* A second export into the same directory is refused and changes nothing. */
    char other[NOTE_TEXT_MAX];
    assert_rb(export(big.l, BIG, log, other), RB_ERR_EXISTS);
    assert_rb(export(big.l, 1000, log, other), RB_ERR_EXISTS);
    check_export(big.l, BIG, log, note);
    test_rmdir(&dir);
}

static void exports_1000_and_empty(void **state)
{
    (void)state;
    tree_t t;
    build(&t, 1000);
    char *dir = test_mkdtemp(), note[NOTE_TEXT_MAX], log[1100];
    test_path(log, sizeof log, "%s/1000", dir);
    assert_ok(export(t.l, 1000, log, note));
    check_export(t.l, 1000, log, note);
    assert_true(exists(log, "tile/0/002") && exists(log, "tile/0/003.p/232"));
    assert_true(exists(log, "tile/1/000.p/3") && !exists(log, "tile/2"));
    assert_true(exists(log, "tile/entries/003.p/232"));
    /* A prefix of a bigger ledger: the same leaves give the same files, byte for byte. */
    test_path(log, sizeof log, "%s/prefix", dir);
    assert_ok(export(big.l, 1000, log, note));
    check_export(big.l, 1000, log, note);
    char cmd[2400];
    assert_int_equal(system(test_path(cmd, sizeof cmd, "diff -r '%s/1000' '%s/prefix'", dir, dir)), 0);
    /* The empty tree: only the checkpoint. */
    test_path(log, sizeof log, "%s/empty", dir);
    assert_ok(export(t.l, 0, log, note));
    check_export(t.l, 0, log, note);
    assert_false(exists(log, "tile"));
    destroy(&t);
    test_rmdir(&dir);
}

static void exports_256_squared(void **state)
{
    (void)state;
    tree_t t;
    build(&t, 256 * 256);
    char *dir = test_mkdtemp(), note[NOTE_TEXT_MAX], log[1100];
    test_path(log, sizeof log, "%s/log", dir);
    assert_ok(export(t.l, 256 * 256, log, note));
    check_export(t.l, 256 * 256, log, note);
    /* Full tiles everywhere but level 2, and no partial tile of width 0. */
    assert_true(exists(log, "tile/0/255") && !exists(log, "tile/0/256.p"));
    assert_true(exists(log, "tile/1/000") && !exists(log, "tile/1/001.p") && !exists(log, "tile/1/000.p"));
    assert_true(exists(log, "tile/2/000.p/1"));
    assert_true(exists(log, "tile/entries/255") && !exists(log, "tile/entries/256.p"));
    destroy(&t);
    test_rmdir(&dir);
}

static void refusals(void **state)
{
    (void)state;
    tree_t t;
    build(&t, 300);
    char *dir = test_mkdtemp(), note[NOTE_TEXT_MAX], log[1100];
    test_path(log, sizeof log, "%s/log", dir);
    merkle_hash_t root;
    assert_ok(ledger_root(t.l, 300, &root));
    sign(300, &root, note);
    assert_rb(tiles_export(t.l, 299, note, log), RB_ERR_USAGE); /* the checkpoint is of another size */
    assert_rb(tiles_export(t.l, 300, "not a note", log), RB_ERR_USAGE);
    assert_ok(ledger_root(t.l, 299, &root));
    sign(300, &root, note);
    assert_rb(tiles_export(t.l, 300, note, log), RB_ERR_HASH_MISMATCH); /* not this tree's root */
    sign(301, &root, note);
    assert_rb(tiles_export(t.l, 301, note, log), RB_ERR_USAGE); /* beyond the ledger */
    assert_false(exists(log, "checkpoint"));
    /* A leaf altered in the database no longer matches its stored hash. */
    assert_int_equal(
        sqlite3_exec(t.db, "UPDATE ledger_leaves SET leaf = x'0801' WHERE idx = 7", NULL, NULL, NULL),
        SQLITE_OK);
    assert_rb(export(t.l, 300, log, note), RB_ERR_HASH_MISMATCH);
    assert_false(exists(log, "checkpoint"));
    destroy(&t);
    test_rmdir(&dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(paths_follow_the_spec),
        cmocka_unit_test(exports_70000),
        cmocka_unit_test(exports_1000_and_empty),
        cmocka_unit_test(exports_256_squared),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests_name("tiles", tests, setup, teardown);
}
