/* settings.c -- INI settings held in memory (see settings.h).
 *
 * inih does not pass line numbers to the handler in Debian's build, so the file is fed to it through a
 * reader that counts lines and notes where each [section] header is: every setting keeps its own line and
 * its section's, for the errors. */
#include "settings.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *section, *key, *value;
    int line, section_line; /* where the setting is, and its section's header */
} entry_t;

struct settings {
    entry_t *items; /* in file order */
    size_t n, cap;
    char *path;       /* for errors */
    FILE *file;       /* while loading */
    int line;         /* while loading: the line last read */
    int section_line; /* while loading: the line of the last [section] header */
    bool mid_line;    /* while loading: the last chunk read did not end a line */
};

static char *read_line(char *buf, int size, void *stream)
{
    settings_t *s = stream;
    if (fgets(buf, size, s->file) == NULL)
        return NULL;
    if (!s->mid_line) {
        s->line++;
        const char *p = buf + strspn(buf, " \t");
        if (*p == '[')
            s->section_line = s->line;
    }
    size_t n = strlen(buf);
    s->mid_line = n > 0 && buf[n - 1] != '\n';
    return buf;
}

static int on_value(void *user, const char *section, const char *key, const char *value)
{
    settings_t *s = user;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        entry_t *grown = realloc(s->items, cap * sizeof *grown);
        if (grown == NULL)
            return 0;
        s->items = grown;
        s->cap = cap;
    }
    entry_t *e = &s->items[s->n];
    e->section = strdup(section);
    e->key = strdup(key);
    e->value = strdup(value);
    e->line = s->line;
    e->section_line = s->section_line;
    if (e->section == NULL || e->key == NULL || e->value == NULL) {
        free(e->section);
        free(e->key);
        free(e->value);
        return 0;
    }
    s->n++;
    return 1;
}

rb_err settings_load(settings_t **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    settings_t *s = calloc(1, sizeof *s);
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return RB_ERR_NOMEM;
    }
    if ((s->file = fopen(path, "r")) == NULL) {
        snprintf(err, errlen, "%s: cannot read the config: %s", path, strerror(errno));
        settings_free(&s);
        return RB_ERR_IO;
    }
    int rc = ini_parse_stream(read_line, s, on_value, s);
    fclose(s->file);
    s->file = NULL;
    if (rc < 0) { /* inih: -2 out of memory */
        snprintf(err, errlen, "%s: out of memory reading the config", path);
        settings_free(&s);
        return RB_ERR_NOMEM;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s: line %d: not a setting (write key = value under a [section])", path, rc);
        settings_free(&s);
        return RB_ERR_USAGE;
    }
    *out = s;
    return RB_OK;
}

void settings_free(settings_t **s_p)
{
    settings_t *s = s_p ? *s_p : NULL;
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].section);
        free(s->items[i].key);
        free(s->items[i].value);
    }
    free(s->items);
    free(s->path);
    free(s);
    *s_p = NULL;
}

/* The entry of section and key that counts: the last one, as in most INI readers. */
static const entry_t *find(const settings_t *s, const char *section, const char *key)
{
    const entry_t *found = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].section, section) == 0 && strcmp(s->items[i].key, key) == 0)
            found = &s->items[i];
    return found;
}

bool settings_has(const settings_t *s, const char *section, const char *key)
{
    return find(s, section, key) != NULL;
}

static rb_err fail_at(const settings_t *s, int line, char *err, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));
static rb_err fail_at(const settings_t *s, int line, char *err, size_t errlen, const char *fmt, va_list ap)
{
    int n = line > 0 ? snprintf(err, errlen, "%s: line %d: ", s->path, line)
                     : snprintf(err, errlen, "%s: ", s->path);
    if (n >= 0 && (size_t)n < errlen)
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    return RB_ERR_USAGE;
}

static rb_err fail_line(const settings_t *s, int line, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static rb_err fail_line(const settings_t *s, int line, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rb_err rc = fail_at(s, line, err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

rb_err settings_fail(const settings_t *s, const char *section, const char *key, char *err, size_t errlen,
                     const char *fmt, ...)
{
    const entry_t *e = find(s, section, key);
    va_list ap;
    va_start(ap, fmt);
    rb_err rc = fail_at(s, e != NULL ? e->line : 0, err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* The row of tables that names section (and key, unless NULL), or NULL. */
static const setting_t *row_of(const setting_t *rows, const char *section, const char *key)
{
    for (; rows->name != NULL; rows++)
        if (strcmp(rows->section, section) == 0 && (key == NULL || strcmp(rows->name, key) == 0))
            return rows;
    return NULL;
}

/* A value into its place in into; false with why when the row refuses it. */
static bool put(const setting_t *r, const char *value, void *into, char *why, size_t whylen)
{
    char *at = (char *)into + r->offset;
    if (r->type == SETTING_INT) {
        char *end;
        errno = 0;
        long long n = strtoll(value, &end, 10);
        if (errno != 0 || *value == '\0' || *end != '\0' || n < r->min || n > r->max)
            return snprintf(why, whylen, "[%s] %s must be a whole number from %lld to %lld", r->section,
                            r->name, (long long)r->min, (long long)r->max),
                   false;
        int64_t v = n;
        memcpy(at, &v, sizeof v);
        return true;
    }
    size_t len = strlen(value);
    char reason[256];
    if (len == 0 && r->dflt == NULL)
        return snprintf(why, whylen, "[%s] %s is required", r->section, r->name), false;
    if ((int64_t)len < r->min || (int64_t)len > r->max)
        return snprintf(why, whylen, "[%s] %s must be %lld to %lld characters", r->section, r->name,
                        (long long)r->min, (long long)r->max),
               false;
    if (r->valid != NULL && !r->valid(value, reason, sizeof reason))
        return snprintf(why, whylen, "[%s] %s %s", r->section, r->name, reason), false;
    memcpy(at, value, len + 1);
    return true;
}

/* Defaults are the program's own, checked by the tests: stored without the checks of a value. */
void settings_defaults(const setting_t *rows, void *into)
{
    for (const setting_t *r = rows; r->name != NULL; r++) {
        const char *dflt = r->dflt != NULL ? r->dflt : "";
        if (r->type == SETTING_INT) {
            int64_t v = strtoll(dflt, NULL, 10);
            memcpy((char *)into + r->offset, &v, sizeof v);
        } else {
            memcpy((char *)into + r->offset, dflt, strlen(dflt) + 1);
        }
    }
}

rb_err settings_apply(const settings_t *s, const setting_t *rows, void *into, char *err, size_t errlen)
{
    settings_defaults(rows, into);
    for (size_t i = 0; i < s->n; i++) {
        const entry_t *e = &s->items[i];
        if (row_of(rows, e->section, NULL) == NULL)
            continue;
        const setting_t *r = row_of(rows, e->section, e->key);
        char why[512];
        if (r == NULL)
            return fail_line(s, e->line, err, errlen, "unknown setting [%s] %s", e->section, e->key);
        if (!put(r, e->value, into, why, sizeof why))
            return fail_line(s, e->line, err, errlen, "%s", why);
    }
    for (const setting_t *r = rows; r->name != NULL; r++)
        if (r->dflt == NULL && find(s, r->section, r->name) == NULL)
            return fail_line(s, 0, err, errlen, "[%s] %s is required", r->section, r->name);
    return RB_OK;
}

rb_err settings_check_sections(const settings_t *s, const setting_t *const *tables, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->n; i++) {
        bool known = false;
        for (const setting_t *const *t = tables; *t != NULL && !known; t++)
            known = row_of(*t, s->items[i].section, NULL) != NULL;
        if (!known)
            return fail_line(s, s->items[i].section_line, err, errlen, "unknown section [%s]",
                             s->items[i].section);
    }
    return RB_OK;
}
