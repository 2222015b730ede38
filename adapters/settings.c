/* settings.c -- INI settings held in memory (see settings.h). */
#include "settings.h"

#include <errno.h>
#include <ini.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *section, *key, *value;
} entry_t;

struct settings {
    entry_t *items; /* in file order */
    size_t n, cap;
};

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
    if (s == NULL)
        return RB_ERR_NOMEM;
    int rc = ini_parse(path, on_value, s);
    if (rc != 0) {
        if (rc == -1)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        else
            snprintf(err, errlen, "%s: line %d: not a setting", path, rc);
        settings_free(&s);
        return rc == -1 ? RB_ERR_IO : RB_ERR_USAGE;
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
    free(s);
    *s_p = NULL;
}

const char *settings_get(const settings_t *s, const char *section, const char *key, const char *dflt)
{
    const char *found = dflt;
    for (size_t i = 0; i < s->n; i++) /* the last one wins, as in most INI readers */
        if (strcmp(s->items[i].section, section) == 0 && strcmp(s->items[i].key, key) == 0)
            found = s->items[i].value;
    return found;
}

rb_err settings_int(const settings_t *s, const char *section, const char *key, int64_t dflt, int64_t min,
                    int64_t max, int64_t *out, char *err, size_t errlen)
{
    const char *v = settings_get(s, section, key, NULL);
    if (v == NULL) {
        *out = dflt;
        return RB_OK;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || *v == '\0' || *end != '\0' || n < min || n > max) {
        snprintf(err, errlen, "[%s] %s must be a whole number from %lld to %lld", section, key,
                 (long long)min, (long long)max);
        return RB_ERR_USAGE;
    }
    *out = n;
    return RB_OK;
}

static bool listed(const char *name, const char *const *known)
{
    for (; *known != NULL; known++)
        if (strcmp(name, *known) == 0)
            return true;
    return false;
}

rb_err settings_check(const settings_t *s, const char *section, const char *const *known, char *err,
                      size_t errlen)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].section, section) == 0 && !listed(s->items[i].key, known)) {
            snprintf(err, errlen, "unknown setting [%s] %s", section, s->items[i].key);
            return RB_ERR_USAGE;
        }
    return RB_OK;
}

rb_err settings_check_sections(const settings_t *s, const char *const *known, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->n; i++)
        if (!listed(s->items[i].section, known)) {
            snprintf(err, errlen, "unknown section [%s]", s->items[i].section);
            return RB_ERR_USAGE;
        }
    return RB_OK;
}
