/* note.h -- the ledger's text formats, as the C2SP specifications define them, so that existing
 * transparency-log tools can check what the broker signs:
 *   - signed-note v1.0.0 (c2sp.org/signed-note): a text body, a blank line, signature lines
 *     "— <key name> <base64(key ID || signature)>", Ed25519 (signature type 0x01);
 *   - tlog-checkpoint v1.0.0 (c2sp.org/tlog-checkpoint): the body "<origin>\n<size>\n<base64 root>\n";
 *   - tlog-proof@v1 (c2sp.org/tlog-proof): "c2sp.org/tlog-proof@v1\n", optional "extra <base64>\n",
 *     "index <N>\n", one base64 hash a line, a blank line, then the signed checkpoint.
 * docs/LEDGER.md gives every byte. Parsing is strict: anything the specifications do not allow is
 * refused with RB_ERR_MALFORMED. */
#ifndef NOTE_H
#define NOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "merkle.h"
#include "rb_error.h"
#include "rbcrypto.h"

#define NOTE_NAME_MAX     128  /* a key name / log origin */
#define NOTE_KEY_ID_BYTES 4    /* the key ID before each signature */
#define NOTE_TEXT_MAX     4096 /* the largest checkpoint note accepted, signatures included */
#define NOTE_VKEY_MAX     (NOTE_NAME_MAX + 64)
#define PROOF_HASHES_MAX  64 /* an inclusion path in a tree of up to 2^64 leaves */
#define PROOF_TEXT_MAX    (NOTE_TEXT_MAX + 64 + PROOF_HASHES_MAX * 45) /* a proof without extra data */
#define PROOF_EXTRA_MAX   65535 /* extra data: at most one ledger leaf */
#define PROOF_FILE_MAX    (PROOF_TEXT_MAX + 8 + 4 * ((PROOF_EXTRA_MAX + 2) / 3)) /* a proof with extra data */

/* A tree head: the log's origin (also the key name that signs it), its size and root hash. */
typedef struct {
    char origin[NOTE_NAME_MAX + 1];
    uint64_t size;
    merkle_hash_t root;
} checkpoint_t;

/* A key name is non-empty, at most NOTE_NAME_MAX bytes, printable ASCII without spaces or '+'. */
bool note_name_ok(const char *name);

/* Key ID: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || Ed25519 public key). */
void note_key_id(const char *name, const uint8_t pk[RB_SIGN_PK_BYTES], uint8_t id[NOTE_KEY_ID_BYTES]);

/* The verifier key "<name>+<8 hex digits of the key ID>+<base64(0x01 || public key)>" into out
 * (NOTE_VKEY_MAX bytes). RB_ERR_USAGE for a bad name. */
rb_err note_verifier_key(const char *name, const uint8_t pk[RB_SIGN_PK_BYTES], char out[NOTE_VKEY_MAX]);
/* Parses a verifier key, checking the key ID against name and key. RB_ERR_MALFORMED otherwise. */
rb_err note_parse_verifier_key(const char *text, char name[NOTE_NAME_MAX + 1], uint8_t pk[RB_SIGN_PK_BYTES]);

/* Formats the checkpoint and signs it as a note by the key named cp->origin: out receives the whole
 * note (NUL-terminated; NOTE_TEXT_MAX bytes), *len its length. */
rb_err checkpoint_sign(const checkpoint_t *cp, const uint8_t sk[RB_SIGN_SK_BYTES], char out[NOTE_TEXT_MAX],
                       size_t *len);
/* Parses a signed checkpoint and checks it carries a valid signature by the key (name, pk), where name
 * must equal the origin. Signature lines of other keys are skipped, as the specification asks.
 * RB_ERR_MALFORMED: not a note or not a checkpoint; RB_ERR_UNKNOWN_SENDER: no signature line of this key;
 * RB_ERR_BAD_SIGNATURE: such a line whose signature does not verify. */
rb_err checkpoint_open(const char *text, size_t len, const char *name, const uint8_t pk[RB_SIGN_PK_BYTES],
                       checkpoint_t *out);
/* Parses a signed checkpoint without checking any signature (to show one, or to find its size). */
rb_err checkpoint_parse(const char *text, size_t len, checkpoint_t *out);

/* A parsed tlog-proof. extra (base64, not decoded; NULL when absent) and checkpoint point into the text
 * given to proof_parse. */
typedef struct {
    const char *extra;
    size_t extra_len;
    uint64_t index;
    merkle_hash_t path[PROOF_HASHES_MAX];
    size_t n;
    const char *checkpoint;
    size_t checkpoint_len;
} tlog_proof_t;

/* Formats a tlog-proof into out (cap bytes: PROOF_TEXT_MAX suffice without extra data, PROOF_FILE_MAX with
 * it; NUL-terminated), with an "extra" line when extra_len > 0 (the ledger puts the leaf there, so that the
 * proof is self-contained). */
rb_err proof_format(uint64_t index, const uint8_t *extra, size_t extra_len, const merkle_hash_t *path,
                    size_t n, const char *checkpoint, size_t checkpoint_len, char *out, size_t cap,
                    size_t *len);
/* Parses one (at most PROOF_FILE_MAX bytes). The checkpoint is not checked here. */
rb_err proof_parse(const char *text, size_t len, tlog_proof_t *out);

#endif
