/* tiles.c -- the ledger as a C2SP tlog-tiles directory (see tiles.h).
 *
 * Tile hashes come from the stored tree (ledger_node), not from re-hashing: the published tiles are then
 * exactly the tree the ledger signs checkpoints of. Level-0 hashes are still compared with the leaves as
 * they are read for the entry bundles, which costs one SHA-256 a leaf and keeps an altered database from
 * publishing tiles that disagree with their own entries. */
#include "tiles.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_SUFFIX ".tmp"

void tiles_path(char out[TILES_PATH_MAX], int level, uint64_t n, unsigned width)
{
    unsigned groups[7]; /* 2^64 has 20 decimal digits */
    int k = 0;
    do {
        groups[k++] = (unsigned)(n % 1000);
        n /= 1000;
    } while (n > 0);
    int pos = level == TILES_ENTRIES ? snprintf(out, TILES_PATH_MAX, "tile/entries/")
                                     : snprintf(out, TILES_PATH_MAX, "tile/%d/", level);
    while (--k > 0)
        pos += snprintf(out + pos, TILES_PATH_MAX - (size_t)pos, "x%03u/", groups[k]);
    pos += snprintf(out + pos, TILES_PATH_MAX - (size_t)pos, "%03u", groups[0]);
    if (width > 0 && width < TILES_WIDTH)
        snprintf(out + pos, TILES_PATH_MAX - (size_t)pos, ".p/%u", width);
}

typedef struct {
    ledger_t *l;
    uint64_t size;
    uint64_t next;    /* the leaf index the scan expects next */
    char *path, *tmp; /* dir + "/" + a relative path, and that + TMP_SUFFIX */
    size_t dir_len;   /* where the relative path starts in both, after the '/' */
    uint8_t *bundle;  /* the entry bundle being filled */
    size_t bundle_len, bundle_cap;
    merkle_hash_t hashes[TILES_WIDTH];
} export_t;

/* Creates every missing directory above the file named by path; failures show when the file is opened. */
static void make_parents(char *path)
{
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/' || p[-1] == '/')
            continue;
        *p = '\0';
        (void)mkdir(path, 0755);
        *p = '/';
    }
}

/* Writes dir/rel through a temporary file and a rename, so that a web server serving dir while an export
 * runs never shows half a tile. Nothing is fsynced: the export can be redone from the database, and the
 * checkpoint, written last, is what tells a reader the directory is complete. */
static rb_err write_file(export_t *e, const char *rel, const void *data, size_t len)
{
    size_t rel_len = strlen(rel);
    memcpy(e->path + e->dir_len, rel, rel_len + 1);
    memcpy(e->tmp + e->dir_len, rel, rel_len);
    memcpy(e->tmp + e->dir_len + rel_len, TMP_SUFFIX, sizeof TMP_SUFFIX);
    /* The tiles are public (a web server serves them): readable by all, but never writable by others,
     * which fopen() would leave them under a umask of 000. */
    int fd = open(e->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
        make_parents(e->tmp);
        fd = open(e->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    }
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        return RB_ERR_IO;
    }
    bool ok = fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(e->tmp, e->path) == 0)
        return RB_OK;
    unlink(e->tmp);
    return RB_ERR_IO;
}

static rb_err write_tile(export_t *e, int level, uint64_t n, unsigned width, const void *data, size_t len)
{
    char rel[TILES_PATH_MAX];
    tiles_path(rel, level, n, width);
    return write_file(e, rel, data, len);
}

/* One leaf into the current entry bundle and level-0 tile; both are written when full or at the end. */
static rb_err on_leaf(void *ctx, uint64_t index, const uint8_t *leaf, size_t len)
{
    export_t *e = ctx;
    if (index != e->next)
        return RB_ERR_MALFORMED; /* a gap in ledger_leaves */
    if (len > LEDGER_LEAF_MAX)
        return RB_ERR_TOO_BIG; /* a bundle's length prefix has two bytes */
    merkle_hash_t hash;
    unsigned i = (unsigned)(index % TILES_WIDTH);
    rb_err rc = ledger_node(e->l, 0, index, &e->hashes[i]);
    if (rc != RB_OK)
        return rc;
    merkle_leaf_hash(leaf, len, &hash);
    if (memcmp(hash.bytes, e->hashes[i].bytes, MERKLE_HASH_BYTES) != 0)
        return RB_ERR_HASH_MISMATCH;
    if (e->bundle_len + 2 + len > e->bundle_cap) {
        size_t cap = e->bundle_cap ? e->bundle_cap : 65536;
        while (e->bundle_len + 2 + len > cap)
            cap *= 2;
        uint8_t *grown = realloc(e->bundle, cap);
        if (grown == NULL)
            return RB_ERR_NOMEM;
        e->bundle = grown;
        e->bundle_cap = cap;
    }
    e->bundle[e->bundle_len++] = (uint8_t)(len >> 8);
    e->bundle[e->bundle_len++] = (uint8_t)len;
    memcpy(e->bundle + e->bundle_len, leaf, len);
    e->bundle_len += len;
    e->next++;
    if (i + 1 == TILES_WIDTH || e->next == e->size) {
        uint64_t n = index / TILES_WIDTH;
        rc = write_tile(e, 0, n, i + 1, e->hashes, (size_t)(i + 1) * MERKLE_HASH_BYTES);
        if (rc == RB_OK)
            rc = write_tile(e, TILES_ENTRIES, n, i + 1, e->bundle, e->bundle_len);
        e->bundle_len = 0;
        if (rc != RB_OK)
            return rc;
    }
    return RB_OK;
}

/* The tiles of levels 1 and up: each hash is a stored node of tree level 8 * level. */
static rb_err upper_tiles(export_t *e)
{
    for (int level = 1; level * TILES_HEIGHT < 64; level++) {
        uint64_t count = e->size >> (level * TILES_HEIGHT);
        for (uint64_t n = 0; n * TILES_WIDTH < count; n++) {
            uint64_t left = count - n * TILES_WIDTH;
            unsigned width = left >= TILES_WIDTH ? TILES_WIDTH : (unsigned)left;
            for (unsigned i = 0; i < width; i++) {
                rb_err rc = ledger_node(e->l, level * TILES_HEIGHT, n * TILES_WIDTH + i, &e->hashes[i]);
                if (rc != RB_OK)
                    return rc;
            }
            rb_err rc = write_tile(e, level, n, width, e->hashes, (size_t)width * MERKLE_HASH_BYTES);
            if (rc != RB_OK)
                return rc;
        }
    }
    return RB_OK;
}

rb_err tiles_export(ledger_t *l, uint64_t size, const char *checkpoint, const char *dir)
{
    size_t note_len = strlen(checkpoint);
    checkpoint_t cp;
    if (checkpoint_parse(checkpoint, note_len, &cp) != RB_OK || cp.size != size || size > ledger_size(l))
        return RB_ERR_USAGE;
    merkle_hash_t root;
    rb_err rc = ledger_root(l, size, &root);
    if (rc != RB_OK)
        return rc;
    if (memcmp(root.bytes, cp.root.bytes, MERKLE_HASH_BYTES) != 0)
        return RB_ERR_HASH_MISMATCH;

    export_t *e = calloc(1, sizeof *e);
    size_t dir_len = strlen(dir), cap = dir_len + 1 + TILES_PATH_MAX + sizeof TMP_SUFFIX;
    char *path = malloc(cap), *tmp = malloc(cap);
    if (e == NULL || path == NULL || tmp == NULL) {
        free(e);
        free(path);
        free(tmp);
        return RB_ERR_NOMEM;
    }
    memcpy(path, dir, dir_len);
    memcpy(tmp, dir, dir_len);
    path[dir_len] = tmp[dir_len] = '/';
    *e = (export_t){.l = l, .size = size, .path = path, .tmp = tmp, .dir_len = dir_len + 1};
    /* Checked before anything is written, so that a finished export is never overwritten in part. */
    struct stat st;
    strcpy(path + dir_len + 1, "checkpoint");
    if (lstat(path, &st) == 0)
        rc = RB_ERR_EXISTS;

    if (rc == RB_OK && size > 0) {
        rc = ledger_each_leaf(l, 0, size, on_leaf, e);
        if (rc == RB_OK && e->next != size)
            rc = RB_ERR_MALFORMED; /* leaves missing at the end */
    }
    if (rc == RB_OK)
        rc = upper_tiles(e);
    if (rc == RB_OK)
        rc = write_file(e, "checkpoint", checkpoint, note_len);
    free(e->bundle);
    free(e->path);
    free(e->tmp);
    free(e);
    return rc;
}
