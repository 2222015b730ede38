/* settings.h -- an adapter's INI configuration, read once into memory (inih) and looked up by section
 * and key. Each part of the program declares the keys it knows; any other key is an error, so a typo in
 * a config file is reported instead of silently ignored. */
#ifndef SETTINGS_H
#define SETTINGS_H

#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"

typedef struct settings settings_t;

/* Reads path. On failure *out is NULL and err says why (with the line number for syntax errors). */
rb_err settings_load(settings_t **out, const char *path, char *err, size_t errlen);
void settings_free(settings_t **s_p);

/* The value of key in section, or dflt when absent. Borrowed until settings_free. */
const char *settings_get(const settings_t *s, const char *section, const char *key, const char *dflt);
/* A whole number within [min, max]; RB_ERR_USAGE with err naming the key otherwise. */
rb_err settings_int(const settings_t *s, const char *section, const char *key, int64_t dflt, int64_t min,
                    int64_t max, int64_t *out, char *err, size_t errlen);
/* RB_ERR_USAGE naming the first key of section that is not in known (NULL-terminated). */
rb_err settings_check(const settings_t *s, const char *section, const char *const *known, char *err,
                      size_t errlen);
/* RB_ERR_USAGE naming the first section that is not in known. */
rb_err settings_check_sections(const settings_t *s, const char *const *known, char *err, size_t errlen);

#endif
