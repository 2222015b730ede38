/* keyfile.h -- the text armour and the careful file I/O shared by card and secret key files.
 *
 * Both files are one labelled line of printable ASCII, then the standard base64 of a packed binary struct
 * on one line (docs/KEYS.md). The label repeats a few fields for people reading the file; readers rebuild
 * it from the decoded struct and refuse the file unless both lines are byte for byte what a writer would
 * produce, so no byte of the file can change unnoticed. */
#ifndef KEYFILE_H
#define KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "rb_error.h"

/* Longest key file any reader accepts; larger files are refused before they are read. */
#define KEYFILE_MAX_BYTES 4096

/* Writes "label\nbase64(data)\n" into text (cap bytes). RB_ERR_TOO_BIG when it does not fit. */
rb_err keyfile_armor(const char *label, const uint8_t *data, size_t len, char *text, size_t cap,
                     size_t *text_len);
/* Splits text into its label line (copied into label, label_cap bytes, NUL-terminated) and the decoded
 * bytes (into data, cap bytes). RB_ERR_MALFORMED when the text is not exactly two lines of printable
 * ASCII, or the base64 is not canonical. */
rb_err keyfile_unarmor(const char *text, size_t text_len, char *label, size_t label_cap, uint8_t *data,
                       size_t cap, size_t *len);

/* Reads a whole file of at most max bytes into buf (caller's, max bytes); *st receives its status.
 * RB_ERR_IO (errno set) when it cannot be read, RB_ERR_TOO_BIG when it is longer. */
rb_err keyfile_read(const char *path, char *buf, size_t max, size_t *len, struct stat *st);
/* Writes a file durably and atomically: a temporary file in the same directory (mode given, O_EXCL),
 * fsync, then link (refusing with RB_ERR_EXISTS if path exists, unless force, then rename), then fsync of
 * the directory. On failure nothing is left behind and an existing file is untouched. */
rb_err keyfile_write(const char *path, const void *data, size_t len, mode_t mode, bool force);
/* keyfile_write of name in the folder open on at (or AT_FDCWD), through no symbolic link: a folder held
 * open cannot be swapped for a link to another between the check and the write. */
rb_err keyfile_write_at(int at, const char *name, const void *data, size_t len, mode_t mode, bool force);

/* Little-endian integers in packed structs. */
void keyfile_put_u64(uint8_t *p, uint64_t v);
uint64_t keyfile_get_u64(const uint8_t *p);

/* Standard base64 (RFC 4648 section 4, padded) of len bytes: malloc'd, NUL-terminated, the caller's to
 * free; NULL when out of memory. */
char *keyfile_base64(const uint8_t *data, size_t len);
/* Decodes b64_len characters of canonical standard base64 into out (cap bytes): RB_ERR_MALFORMED for any
 * other spelling (whitespace, missing padding, non-zero padding bits), RB_ERR_TOO_BIG when it does not fit. */
rb_err keyfile_unbase64(const char *b64, size_t b64_len, uint8_t *out, size_t cap, size_t *len);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void keyfile_hex(const uint8_t *bytes, size_t len, char *out);

/* Exactly 2*len hex digits into len bytes; false for anything else. */
bool keyfile_unhex(const char *hex, uint8_t *out, size_t len);

#endif
