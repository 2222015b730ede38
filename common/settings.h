/* settings.h -- an INI configuration (the broker's and each adapter's), read once into memory (inih) and
 * looked up by section and key. Each part of the program declares the sections and keys it knows; any
 * other is an error, so a typo in a config file is reported instead of silently ignored. Every error names
 * the file and the line ("FILE: line N: ..."): of the key, or of the header of an unknown section. */
#ifndef SETTINGS_H
#define SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"

typedef struct settings settings_t;

/* Reads path. On failure *out is NULL and err says why: RB_ERR_IO (the file cannot be read) or
 * RB_ERR_USAGE (a line that is not a setting, with its number). */
rb_err settings_load(settings_t **out, const char *path, char *err, size_t errlen);
void settings_free(settings_t **s_p);

/* The value of key in section, or dflt when absent. Borrowed until settings_free. */
const char *settings_get(const settings_t *s, const char *section, const char *key, const char *dflt);
/* A whole number within [min, max]; RB_ERR_USAGE with err naming the key and its line otherwise. */
rb_err settings_int(const settings_t *s, const char *section, const char *key, int64_t dflt, int64_t min,
                    int64_t max, int64_t *out, char *err, size_t errlen);
/* RB_ERR_USAGE naming the first section (at its header's line) that is not in known (NULL-terminated). */
rb_err settings_check_sections(const settings_t *s, const char *const *known, char *err, size_t errlen);
/* RB_ERR_USAGE naming the first key of section that is not in known (NULL-terminated). */
rb_err settings_check(const settings_t *s, const char *section, const char *const *known, char *err,
                      size_t errlen);
/* Calls check on every setting in file order; the first that returns false (writing why) stops it:
 * RB_ERR_USAGE, err "FILE: line N: why". */
typedef bool (*settings_check_fn)(void *ctx, const char *section, const char *key, const char *value,
                                  char *why, size_t whylen);
rb_err settings_each(const settings_t *s, settings_check_fn check, void *ctx, char *err, size_t errlen);
/* Writes to err "FILE: line N: " (the line of key in section; "FILE: " when it is absent) and then the
 * message; returns RB_ERR_USAGE, for a caller's own checks of a value. */
rb_err settings_fail(const settings_t *s, const char *section, const char *key, char *err, size_t errlen,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
