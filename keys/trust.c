/* trust.c -- the trust store (see trust.h). A store holds tens of cards, so lookups are linear scans. */
#include "trust.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    card_t card;         /* checked when added */
    bool revoked;        /* refused for what it signed from revoked_at on */
    uint64_t revoked_at; /* Unix second */
    uint64_t retires_at; /* 0, or when a rotation ended its validity before its card's expiry */
} trust_entry_t;

struct trust {
    trust_entry_t *entries; /* count used of cap */
    size_t count;
    size_t cap;
};

rb_err trust_new(trust_t **out)
{
    *out = calloc(1, sizeof **out);
    return *out == NULL ? RB_ERR_NOMEM : RB_OK;
}

void trust_free(trust_t **trust_p)
{
    if (trust_p != NULL && *trust_p != NULL) {
        free((*trust_p)->entries);
        free(*trust_p);
        *trust_p = NULL;
    }
}

size_t trust_count(const trust_t *trust)
{
    return trust->count;
}

static trust_entry_t *find_entry(const trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES])
{
    for (size_t i = 0; i < trust->count; i++)
        if (memcmp(trust->entries[i].card.key_id, key_id, RB_KEY_ID_BYTES) == 0)
            return &trust->entries[i];
    return NULL;
}

rb_err trust_add(trust_t *trust, const card_t *card)
{
    for (size_t i = 0; i < trust->count; i++) {
        const card_t *held = &trust->entries[i].card;
        bool same_key = memcmp(held->key_id, card->key_id, RB_KEY_ID_BYTES) == 0 ||
                        memcmp(held->sign_pk, card->sign_pk, RB_SIGN_PK_BYTES) == 0;
        if (same_key)
            return card_equal(held, card) ? RB_OK : RB_ERR_CONFLICT;
    }
    if (trust->count == trust->cap) {
        size_t cap = trust->cap ? 2 * trust->cap : 8;
        trust_entry_t *grown = realloc(trust->entries, cap * sizeof *grown);
        if (grown == NULL)
            return RB_ERR_NOMEM;
        trust->entries = grown;
        trust->cap = cap;
    }
    trust_entry_t *e = &trust->entries[trust->count++];
    memset(e, 0, sizeof *e);
    e->card = *card;
    return RB_OK;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

rb_err trust_load_dir(trust_t **out, const char *dir, char *err, size_t errlen)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return RB_ERR_IO;
    }
    /* Sorted, so that the same directory always loads the same way and errors name the same file. */
    char **names = NULL;
    size_t n = 0, cap = 0;
    rb_err rc = RB_OK;
    struct dirent *ent;
    while (rc == RB_OK && (ent = readdir(d)) != NULL) {
        if (!has_suffix(ent->d_name, ".card"))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *grown);
            if (grown == NULL) {
                rc = RB_ERR_NOMEM;
                break;
            }
            names = grown;
        }
        if ((names[n] = strdup(ent->d_name)) == NULL)
            rc = RB_ERR_NOMEM;
        else
            n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof *names, by_name);

    trust_t *trust = NULL;
    if (rc == RB_OK)
        rc = trust_new(&trust);
    for (size_t i = 0; rc == RB_OK && i < n; i++) {
        char path[4096];
        card_t card;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = card_read_file(&card, path);
        if (rc == RB_OK)
            rc = trust_add(trust, &card);
        if (rc != RB_OK)
            snprintf(err, errlen, "%s: %s", path, rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
    }
    if (rc == RB_ERR_NOMEM)
        snprintf(err, errlen, "%s: %s", dir, rb_strerror(rc));
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc != RB_OK)
        trust_free(&trust);
    *out = trust;
    return rc;
}

rb_err trust_revoke(trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES], uint64_t at_s)
{
    trust_entry_t *e = find_entry(trust, key_id);
    if (e == NULL)
        return RB_ERR_UNKNOWN_SENDER;
    /* Two revocations of one key: the earlier time stands (a compromise found to be older). */
    if (!e->revoked || at_s < e->revoked_at)
        e->revoked_at = at_s;
    e->revoked = true;
    return RB_OK;
}

rb_err trust_retire(trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES], uint64_t at_s)
{
    trust_entry_t *e = find_entry(trust, key_id);
    if (e == NULL)
        return RB_ERR_UNKNOWN_SENDER;
    if (e->retires_at == 0 || at_s < e->retires_at)
        e->retires_at = at_s;
    return RB_OK;
}

bool trust_revoked(const trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES])
{
    const trust_entry_t *e = find_entry(trust, key_id);
    return e != NULL && e->revoked;
}

/* Whether the entry's key may be used for something signed at Unix second t. */
static rb_err entry_usable(const trust_entry_t *e, uint64_t t)
{
    if (e->revoked && t >= e->revoked_at)
        return RB_ERR_KEY_REVOKED;
    if (e->retires_at != 0 && t >= e->retires_at)
        return RB_ERR_KEY_EXPIRED;
    return card_valid_at(&e->card, t);
}

const card_t *trust_find_key(const trust_t *trust, const uint8_t key_id[RB_KEY_ID_BYTES])
{
    const trust_entry_t *e = find_entry(trust, key_id);
    return e == NULL ? NULL : &e->card;
}

const card_t *trust_find_name(const trust_t *trust, const char *name, uint64_t t)
{
    const card_t *best = NULL;
    for (size_t i = 0; i < trust->count; i++) {
        const trust_entry_t *e = &trust->entries[i];
        if (strcmp(e->card.name, name) != 0 || entry_usable(e, t) != RB_OK)
            continue;
        if (best == NULL || e->card.created > best->created)
            best = &e->card;
    }
    return best;
}

const card_t *trust_find_signer(const trust_t *trust, const char *name, uint64_t t, const char *domain,
                                const uint8_t *msg, size_t len, const uint8_t sig[RB_SIG_BYTES])
{
    for (size_t i = 0; i < trust->count; i++) {
        const trust_entry_t *e = &trust->entries[i];
        if (strcmp(e->card.name, name) == 0 && entry_usable(e, t) == RB_OK &&
            rbcrypto_verify(domain, msg, len, sig, e->card.sign_pk) == RB_OK)
            return &e->card;
    }
    return NULL;
}

rb_err trust_check(const trust_t *trust, const card_t *card, uint64_t t)
{
    const trust_entry_t *e = find_entry(trust, card->key_id);
    if (e == NULL || !card_equal(&e->card, card))
        return RB_ERR_UNKNOWN_SENDER;
    return entry_usable(e, t);
}
