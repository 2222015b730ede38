/* keyfile.c -- text armour and durable, atomic file writes for key and card files (see keyfile.h). */
#include "keyfile.h"
#include "rbcrypto.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

rb_err keyfile_armor(const char *label, const uint8_t *data, size_t len, char *text, size_t cap,
                     size_t *text_len)
{
    size_t llen = strlen(label);
    size_t b64 = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL); /* includes the NUL */
    if (llen + 1 + b64 + 1 > cap)
        return RB_ERR_TOO_BIG;
    memcpy(text, label, llen);
    text[llen] = '\n';
    sodium_bin2base64(text + llen + 1, b64, data, len, sodium_base64_VARIANT_ORIGINAL);
    size_t n = llen + 1 + (b64 - 1);
    text[n++] = '\n';
    text[n] = '\0';
    *text_len = n;
    return RB_OK;
}

rb_err keyfile_unarmor(const char *text, size_t text_len, char *label, size_t label_cap, uint8_t *data,
                       size_t cap, size_t *len)
{
    for (size_t i = 0; i < text_len; i++)
        if (text[i] != '\n' && (text[i] < 0x20 || text[i] > 0x7e))
            return RB_ERR_MALFORMED;
    const char *nl = memchr(text, '\n', text_len);
    if (nl == NULL || (size_t)(nl - text) >= label_cap)
        return RB_ERR_MALFORMED;
    size_t llen = (size_t)(nl - text);
    memcpy(label, text, llen);
    label[llen] = '\0';
    const char *b64 = nl + 1;
    size_t rest = text_len - llen - 1;
    if (rest < 2 || b64[rest - 1] != '\n' || memchr(b64, '\n', rest - 1) != NULL)
        return RB_ERR_MALFORMED;
    return keyfile_unbase64(b64, rest - 1, data, cap, len) == RB_OK ? RB_OK : RB_ERR_MALFORMED;
}

char *keyfile_base64(const uint8_t *data, size_t len)
{
    size_t b64 = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL); /* with its NUL */
    char *text = malloc(b64);
    if (text != NULL)
        sodium_bin2base64(text, b64, data, len, sodium_base64_VARIANT_ORIGINAL);
    return text;
}

rb_err keyfile_unbase64(const char *b64, size_t b64_len, uint8_t *out, size_t cap, size_t *len)
{
    if (b64_len / 4 * 3 > cap + 2)
        return RB_ERR_TOO_BIG;
    /* libsodium 1.0.18 takes bytes above 0x7f for base64 digits, so it cannot be the judge of the alphabet:
     * without this, a hash line with "\xb9" or a UTF-8 letter in it is another spelling of some hash. */
    for (size_t i = 0; i < b64_len; i++) {
        unsigned char c = (unsigned char)b64[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
              c == '/' || c == '='))
            return RB_ERR_MALFORMED;
    }
    /* libsodium refuses non-zero padding bits; the length check refuses missing or extra padding, so only
     * the one canonical spelling of each byte string is accepted. */
    if (sodium_base642bin(out, cap, b64, b64_len, NULL, len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        sodium_base64_ENCODED_LEN(*len, sodium_base64_VARIANT_ORIGINAL) - 1 != b64_len)
        return RB_ERR_MALFORMED;
    return RB_OK;
}

rb_err keyfile_read(const char *path, char *buf, size_t max, size_t *len, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return RB_ERR_IO;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        int e = S_ISREG(st->st_mode) ? errno : EINVAL;
        close(fd);
        errno = e;
        return RB_ERR_IO;
    }
    size_t n = 0;
    for (;;) {
        if (n == max) { /* full: one more byte means the file is too long */
            char extra;
            ssize_t r = read(fd, &extra, 1);
            close(fd);
            return r == 0 ? (*len = n, RB_OK) : RB_ERR_TOO_BIG;
        }
        ssize_t r = read(fd, buf + n, max - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return RB_ERR_IO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return RB_OK;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fsync of the folder holding at/name: at itself, or the parent of name when at is AT_FDCWD. */
static int fsync_folder(int at, const char *name)
{
    if (at != AT_FDCWD)
        return fsync(at);
    char copy[PATH_MAX];
    if (strlen(name) >= sizeof copy) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(copy, name);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

rb_err keyfile_write(const char *path, const void *data, size_t len, mode_t mode, bool force)
{
    return keyfile_write_at(AT_FDCWD, path, data, len, mode, force);
}

rb_err keyfile_write_at(int at, const char *name, const void *data, size_t len, mode_t mode, bool force)
{
    char tmp[PATH_MAX];
    uint32_t salt;
    rbcrypto_random(&salt, sizeof salt);
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%08x", name, (unsigned)salt) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return RB_ERR_IO;
    }
    struct stat st;
    if (!force && fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return RB_ERR_EXISTS;
    int fd = openat(at, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return RB_ERR_IO;
    /* open() applies the umask; the mode must be exactly what was asked (0600 for secrets). */
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlinkat(at, tmp, 0);
        errno = e;
        return RB_ERR_IO;
    }
    if (close(fd) != 0) {
        int e = errno;
        unlinkat(at, tmp, 0);
        errno = e;
        return RB_ERR_IO;
    }
    /* link() fails if the name exists, so a file that appeared meanwhile is never overwritten; rename()
     * replaces whatever is at the name, a symbolic link included, and never follows it. */
    int rc = force ? renameat(at, tmp, at, name) : linkat(at, tmp, at, name, 0);
    int e = errno;
    if (!force || rc != 0)
        unlinkat(at, tmp, 0);
    if (rc != 0) {
        errno = e;
        return e == EEXIST ? RB_ERR_EXISTS : RB_ERR_IO;
    }
    return fsync_folder(at, name) == 0 ? RB_OK : RB_ERR_IO;
}

void keyfile_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t keyfile_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void keyfile_hex(const uint8_t *bytes, size_t len, char *out)
{
    sodium_bin2hex(out, 2 * len + 1, bytes, len);
}

bool keyfile_unhex(const char *hex, uint8_t *out, size_t len)
{
    size_t n;
    const char *end;
    return strlen(hex) == 2 * len && sodium_hex2bin(out, len, hex, 2 * len, NULL, &n, &end) == 0 &&
           n == len && *end == '\0';
}
