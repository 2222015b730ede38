/* settings.h -- an INI configuration (the broker's and each adapter's), read once into memory (inih) and
 * applied to a struct through declarative tables: each part of the program declares its settings as rows
 * (section, name, type, bounds, default, help, where the value goes), and any section or key no row names
 * is an error, so a typo in a config file is reported instead of silently ignored. Every error names the
 * file and the line ("FILE: line N: ..."): of the key, or of the header of an unknown section. */
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

/* The kind of a setting's value, which says how it is checked and stored. */
typedef enum {
    SETTING_INT,  /* a whole number from min to max, into an int64_t */
    SETTING_TEXT, /* text of min to max bytes, into a char array of max + 1 */
} setting_type;

/* One setting, a row of a declarative table that a part of the program keeps for its sections: a new
 * setting is one row. A table ends with a row without a name. The documentation is checked against the
 * tables (tests/system/settings_test.c). */
typedef struct {
    const char *section, *name;
    setting_type type;
    int64_t min, max; /* INT: the values allowed; TEXT: the lengths */
    const char *dflt; /* as a config would write it; NULL: required, "" for TEXT: none (optional) */
    size_t offset;    /* where the value goes in the struct the table fills */
    /* TEXT, optional: false for a value that is still wrong, writing why, which follows "[section] name "
     * in the error ("VALUE: not an endpoint: ...", "must be ..."). */
    bool (*valid)(const char *value, char *why, size_t whylen);
    const char *help; /* what it is for, in a line */
} setting_t;

/* A row for a field of struct type: an int64_t, or a char array (whose size bounds the length). */
#define SETTING_INT_ROW(section, name, type, field, min, max, dflt, help)                                    \
    {                                                                                                        \
        (section), (name), SETTING_INT, (min), (max), (dflt), offsetof(type, field), NULL, (help)            \
    }
#define SETTING_TEXT_ROW(section, name, type, field, min, dflt, valid, help)                                 \
    {                                                                                                        \
        (section), (name), SETTING_TEXT, (min), (int64_t)sizeof(((type *)NULL)->field) - 1, (dflt),          \
            offsetof(type, field), (valid), (help)                                                           \
    }

/* Fills into with the defaults of rows (a required row's: ""). */
void settings_defaults(const setting_t *rows, void *into);
/* Fills into with the defaults of rows, then with the file's values in their sections (settings in other
 * sections are left to other tables). RB_ERR_USAGE, err "FILE: line N: ...", for the first setting in the
 * file that no row names ("unknown setting [section] key") or whose value its row refuses; then "FILE:
 * [section] key is required" for a required row the file lacks. */
rb_err settings_apply(const settings_t *s, const setting_t *rows, void *into, char *err, size_t errlen);
/* RB_ERR_USAGE naming the first section (at its header's line) that no row of tables (NULL-terminated)
 * names. */
rb_err settings_check_sections(const settings_t *s, const setting_t *const *tables, char *err, size_t errlen);
/* Whether the file sets key in section: for a default that depends on another setting. */
bool settings_has(const settings_t *s, const char *section, const char *key);
/* Writes to err "FILE: line N: " (the line of key in section; "FILE: " when it is absent) and then the
 * message; returns RB_ERR_USAGE, for a caller's own checks of a value. */
rb_err settings_fail(const settings_t *s, const char *section, const char *key, char *err, size_t errlen,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
