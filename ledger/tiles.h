/* tiles.h -- exports the audit ledger as a C2SP tlog-tiles directory (c2sp.org/tlog-tiles), so that any
 * static web server can publish it and existing tlog clients can fetch entries and compute proofs.
 *
 * The layout: dir/checkpoint; hash tiles dir/tile/<L>/<N>[.p/<W>], where a level-L tile holds up to 256
 * hashes of tree level 8*L; entry bundles dir/tile/entries/<N>[.p/<W>], each leaf as a big-endian uint16
 * length and its bytes. Only the rightmost tile of a level is partial (".p/<W>", 1 <= W <= 255). */
#ifndef TILES_H
#define TILES_H

#include <stdint.h>

#include "ledger.h"
#include "rb_error.h"

#define TILES_WIDTH    256  /* hashes per full tile, leaves per full entry bundle */
#define TILES_HEIGHT   8    /* tree levels per tile level: log2(TILES_WIDTH) */
#define TILES_ENTRIES  (-1) /* the "level" that names entry bundles in tiles_path */
#define TILES_PATH_MAX 64   /* the longest relative path, NUL included */

/* The path of a tile relative to the log's directory: "tile/<level>/<N>" for a full tile (width 0 or
 * TILES_WIDTH), "tile/<level>/<N>.p/<width>" for a partial one; level TILES_ENTRIES names an entry bundle
 * ("tile/entries/..."). N is written in 3-digit elements, all but the last prefixed with "x"
 * (1234067: "x001/x234/067"). */
void tiles_path(char out[TILES_PATH_MAX], int level, uint64_t n, unsigned width);

/* Writes the tree of the first `size` leaves of l as a C2SP tlog-tiles directory under dir (created if
 * missing): dir/checkpoint (the given signed checkpoint note, whose size must equal `size`), the hash
 * tiles dir/tile/<L>/<N>[.p/<W>] and the entry bundles dir/tile/entries/<N>[.p/<W>].
 * The checkpoint is written last, so a directory with one holds everything it covers. RB_ERR_EXISTS when
 * dir/checkpoint already exists; RB_ERR_USAGE when the checkpoint does not parse, its size is not `size`
 * or `size` exceeds the ledger's; RB_ERR_HASH_MISMATCH when its root is not the stored tree's, or a stored
 * leaf hash disagrees with its leaf (the database was altered). */
rb_err tiles_export(ledger_t *l, uint64_t size, const char *checkpoint, const char *dir);

#endif
