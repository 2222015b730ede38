/* testutil.h -- what every unit test shares: assert_ok, temporary directories, file helpers.
 *
 * Header-only so that each test program stays one file plus the library. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#ifdef __clang_analyzer__
/* cmocka's failures longjmp out of the test, but its header does not say so, and static analysis would
 * follow a failed assert_non_null or fail_msg on to the next line. Only the analyzer sees these. */
/* NOLINTNEXTLINE(readability-redundant-declaration): it adds noreturn to cmocka's declaration */
void _fail(const char *const file, const int line) __attribute__((noreturn));
#undef assert_non_null
#define assert_non_null(c) ((c) != NULL ? (void)0 : _fail(__FILE__, __LINE__))
#undef assert_true
#define assert_true(c) ((c) ? (void)0 : _fail(__FILE__, __LINE__))
#endif

#include "rb_error.h"

/* Fails the test with the error's name when rc is not RB_OK. */
#define assert_ok(rc)                                                                                        \
    do {                                                                                                     \
        rb_err rc_ = (rc);                                                                                   \
        if (rc_ != RB_OK)                                                                                    \
            fail_msg("%s returned %d: %s", #rc, (int)rc_, rb_strerror(rc_));                                 \
    } while (0)

/* Fails unless rc is the expected error, naming both. */
#define assert_rb(rc, want)                                                                                  \
    do {                                                                                                     \
        rb_err rc_ = (rc), want_ = (want);                                                                   \
        if (rc_ != want_)                                                                                    \
            fail_msg("%s returned \"%s\", expected \"%s\"", #rc, rb_strerror(rc_), rb_strerror(want_));      \
    } while (0)

/* A fresh directory under $TMPDIR for one test; remove it with test_rmdir. */
static inline char *test_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL)
        base = "/tmp";
    size_t cap = strlen(base) + 32;
    char *dir = malloc(cap);
    assert_non_null(dir);
    snprintf(dir, cap, "%s/rb-test-%s", base, "XXXXXX"); /* mkdtemp's template: it replaces the six X */
    assert_non_null(mkdtemp(dir));
    return dir;
}

static inline void test_rmdir(char **dir_p)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", *dir_p);
    assert_int_equal(system(cmd), 0);
    free(*dir_p);
    *dir_p = NULL;
}

/* printf into the caller's path buffer; returns it. */
static inline const char *test_path(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline const char *test_path(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return buf;
}

/* Whole file into a malloc'd buffer (NUL-terminated); NULL when it cannot be read. */
static inline char *test_read_file(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

static inline void test_write_file(const char *path, const void *data, size_t len, int mode)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, (mode_t)mode), 0);
}

#endif
