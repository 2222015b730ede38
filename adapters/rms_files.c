/* rms_files.c -- source connector: a drop folder of JSON exports from a police records system.
 *
 * inotify says when a file is closed or moved into DROP, and a scan every scan_ms catches whatever it
 * missed; each scan looks at the .json files in DROP. A file is read only once it has not changed for
 * stable_ms, so a file still being written is left alone; a writer that writes under another name and
 * renames is never read half-way, since names not ending in .json are never read. A valid referral is sealed and
 * queued by the runtime, then the file moves to DROP/sent/; an invalid one moves to DROP/rejected/ with
 * NAME.errors.txt beside it listing every problem. ACKs are written to DROP/acks/MESSAGE_ID.json. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "keyfile.h"
#include "log.h"
#include "wire.h"

#define MAX_EXPORT_BYTES (1024 * 1024)

struct connector {
    adapter_t *adapter;
    char drop[2048];
    int64_t stable_ms, scan_ms, next_scan_ms;
    int inotify_fd; /* tells of files closed or moved into DROP at once; -1 when unavailable */
    /* Exports inotify saw renamed into DROP, and not written since: complete, so taken without waiting
     * stable_ms. Kept until a scan takes them or finds them gone. */
    char **renamed;
    size_t n_renamed, cap_renamed;
};

#define RENAMED_MAX 100000 /* beyond it, an export waits stable_ms like any other */

static const char *const settings[] = {"drop", "stable_ms", "scan_ms", NULL};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rb_err make_dir(const char *base, const char *sub, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", base, sub[0] ? "/" : "", sub);
    if (mkdir(path, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    return RB_OK;
}

static rb_err rms_open(connector_t **out, adapter_t *a, const settings_t *cfg, char *err, size_t errlen)
{
    connector_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    c->adapter = a;
    const char *drop = settings_get(cfg, "rms-files", "drop", NULL);
    rb_err rc = RB_OK;
    if (drop == NULL) {
        snprintf(err, errlen, "[rms-files] drop is required");
        rc = RB_ERR_USAGE;
    } else {
        snprintf(c->drop, sizeof c->drop, "%s", drop);
    }
    if (rc == RB_OK)
        rc = settings_int(cfg, "rms-files", "stable_ms", 1000, 0, 3600000, &c->stable_ms, err, errlen);
    if (rc == RB_OK)
        rc = settings_int(cfg, "rms-files", "scan_ms", 500, 10, 3600000, &c->scan_ms, err, errlen);
    static const char *const subdirs[] = {"", "sent", "rejected", "acks"};
    for (size_t i = 0; rc == RB_OK && i < 4; i++)
        rc = make_dir(c->drop, subdirs[i], err, errlen);
    if (rc != RB_OK) {
        free(c);
        return rc;
    }
    /* Without inotify (a network file system, a full watch table) the periodic scan still finds
     * everything, only later. */
    c->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (c->inotify_fd >= 0 && inotify_add_watch(c->inotify_fd, c->drop, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
        close(c->inotify_fd);
        c->inotify_fd = -1;
    }
    if (c->inotify_fd < 0)
        log_warn("inotify_unavailable", "drop=%s fallback=scan scan_ms=%lld", c->drop, (long long)c->scan_ms);
    *out = c;
    return RB_OK;
}

static void rms_close(connector_t **c)
{
    if ((*c)->inotify_fd >= 0)
        close((*c)->inotify_fd);
    for (size_t i = 0; i < (*c)->n_renamed; i++)
        free((*c)->renamed[i]);
    free((*c)->renamed);
    free(*c);
    *c = NULL;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

/* An export renamed into DROP is complete; one written in place is not, until stable_ms says so. */
static void note_event(connector_t *c, const struct inotify_event *e)
{
    if (e->len == 0 || e->name[0] == '.' || !has_suffix(e->name, ".json"))
        return;
    for (size_t i = 0; i < c->n_renamed; i++) {
        if (strcmp(c->renamed[i], e->name) == 0) {
            free(c->renamed[i]);
            c->renamed[i] = c->renamed[--c->n_renamed];
            break;
        }
    }
    if (!(e->mask & IN_MOVED_TO) || c->n_renamed == RENAMED_MAX)
        return;
    if (c->n_renamed == c->cap_renamed) {
        size_t cap = c->cap_renamed ? 2 * c->cap_renamed : 64;
        char **grown = realloc(c->renamed, cap * sizeof *grown);
        if (grown == NULL)
            return;
        c->renamed = grown;
        c->cap_renamed = cap;
    }
    if ((c->renamed[c->n_renamed] = strdup(e->name)) != NULL)
        c->n_renamed++;
}

/* Whether inotify reported anything since the last call (the events are drained; a scan reads the rest). */
static bool drop_changed(connector_t *c)
{
    bool changed = false;
    char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while (c->inotify_fd >= 0 && (n = read(c->inotify_fd, events, sizeof events)) > 0) {
        changed = true;
        for (ssize_t at = 0; at < n;) {
            const struct inotify_event *e = (const struct inotify_event *)(events + at);
            note_event(c, e);
            at += (ssize_t)(sizeof *e + e->len);
        }
    }
    return changed;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Forgets the renamed exports a scan took or did not find. */
static void forget_renamed(connector_t *c, const bool *keep)
{
    size_t kept = 0;
    for (size_t i = 0; i < c->n_renamed; i++) {
        if (keep[i])
            c->renamed[kept++] = c->renamed[i];
        else
            free(c->renamed[i]);
    }
    c->n_renamed = kept;
}

/* Moves DROP/name to DROP/sub/name, never over an existing file (a suffix keeps both). */
static void move_to(connector_t *c, const char *name, const char *sub, char *moved, size_t cap)
{
    char from[4096];
    snprintf(from, sizeof from, "%s/%s", c->drop, name);
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(moved, cap, "%s/%s/%s", c->drop, sub, name);
        else
            snprintf(moved, cap, "%s/%s/%s.%d", c->drop, sub, name, i);
        struct stat st;
        if (stat(moved, &st) != 0 && rename(from, moved) == 0)
            return;
    }
    log_error("move_failed", "file=%s to=%s", name, sub);
}

/* What became of one export of a batch: moved once the batch is committed. */
typedef struct {
    char name[256];
    rb_err rc;
    msg_id_t id;
    char problems[4096];
} taken_t;

static void take_file(connector_t *c, taken_t *t)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", c->drop, t->name);
    t->rc = RB_ERR_IO;
    t->problems[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    char *json = malloc(MAX_EXPORT_BYTES + 1);
    size_t len = json ? fread(json, 1, MAX_EXPORT_BYTES + 1, f) : 0;
    fclose(f);
    if (json == NULL)
        return;
    t->rc = len > MAX_EXPORT_BYTES ? RB_ERR_TOO_BIG
                                   : adapter_accept_referral(c->adapter, json, len, t->name, &t->id,
                                                             t->problems, sizeof t->problems);
    free(json);
}

/* Tells the records system: sent/ once the referral is committed to the outbox, rejected/ with the reasons. */
static void settle(connector_t *c, taken_t *t)
{
    char moved[4096];
    rb_err rc = t->rc;
    if (rc == RB_OK) {
        move_to(c, t->name, "sent", moved, sizeof moved);
        char hex[33];
        wire_id_hex(t->id.bytes, hex);
        log_info("export_taken", "file=%s msg=%s", t->name, hex);
    } else if (rc == RB_ERR_MALFORMED || rc == RB_ERR_INVALID || rc == RB_ERR_CONFLICT ||
               rc == RB_ERR_TOO_BIG) {
        char *problems = t->problems;
        size_t cap = sizeof t->problems;
        if (rc == RB_ERR_TOO_BIG)
            snprintf(problems, cap, "$: the export is larger than %d bytes\n", MAX_EXPORT_BYTES);
        if (problems[0] != '\0' && problems[strlen(problems) - 1] != '\n')
            strncat(problems, "\n", cap - strlen(problems) - 1);
        move_to(c, t->name, "rejected", moved, sizeof moved);
        char errors[4200];
        snprintf(errors, sizeof errors, "%s.errors.txt", moved);
        keyfile_write(errors, problems, strlen(problems), 0640, true);
        log_warn("export_rejected", "file=%s reason=%s", t->name, rb_strerror(rc));
    } else {
        log_error("export_deferred", "file=%s error=%s", t->name,
                  rb_strerror(rc)); /* tried again next scan */
    }
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_export(const struct dirent *e)
{
    return e->d_name[0] != '.' && has_suffix(e->d_name, ".json");
}

/* Exports taken in one transaction of the outbox (one fsync), between two turns of the loop's other work. */
#define BATCH 64

static void rms_poll(connector_t *c)
{
    int64_t t = now_ms();
    bool changed = drop_changed(c);
    if (t < c->next_scan_ms && !changed)
        return;
    c->next_scan_ms = t + c->scan_ms;
    /* In name order: records systems number their exports, and a supplement should follow its referral. */
    struct dirent **names;
    int n = scandir(c->drop, &names, is_export, by_name), taken = 0;
    taken_t *batch = n > 0 ? malloc(BATCH * sizeof *batch) : NULL;
    bool *keep = calloc(c->n_renamed + 1, sizeof *keep);
    if (c->n_renamed > 0)
        qsort(c->renamed, c->n_renamed, sizeof *c->renamed, by_string);
    astore_t *store = adapter_store(c->adapter);
    bool open = batch != NULL && keep != NULL && astore_begin(store) == RB_OK;
    for (int i = 0; i < n; i++) {
        char path[4096], *name = names[i]->d_name;
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", c->drop, name);
        int64_t age = stat(path, &st) == 0
                          ? t - ((int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000)
                          : -1;
        char **renamed =
            c->n_renamed ? bsearch(&name, c->renamed, c->n_renamed, sizeof name, by_string) : NULL;
        /* Unless renamed in, not yet stable: perhaps still being written. */
        if (open && taken < BATCH && (renamed != NULL || age >= c->stable_ms) && S_ISREG(st.st_mode) &&
            strlen(name) < sizeof batch->name) {
            snprintf(batch[taken].name, sizeof batch->name, "%s", name);
            take_file(c, &batch[taken++]);
        } else if (renamed != NULL && keep != NULL) {
            keep[renamed - c->renamed] = true;
        }
        if (taken == BATCH && i + 1 < n)
            c->next_scan_ms = 0; /* more to take on the next turn */
        free(names[i]);
    }
    if (n > 0)
        free(names);
    if (keep != NULL)
        forget_renamed(c, keep);
    free(keep);
    if (open && astore_commit(store) != RB_OK) {
        astore_rollback(store);
        log_error("exports_not_stored", "count=%d", taken); /* left in the folder: taken again */
        for (int i = 0; i < taken; i++)
            if (batch[i].rc == RB_OK)
                batch[i].rc = RB_ERR_IO;
    }
    for (int i = 0; i < taken; i++)
        settle(c, &batch[i]);
    free(batch);
}

static rb_err rms_on_ack(connector_t *c, const msg_id_t *referral, const char *ack_json)
{
    char hex[33], path[4200];
    wire_id_hex(referral->bytes, hex);
    snprintf(path, sizeof path, "%s/acks/%s.json", c->drop, hex);
    rb_err rc = keyfile_write(path, ack_json, strlen(ack_json), 0640, true);
    if (rc != RB_OK)
        log_error("ack_write_failed", "msg=%s error=%s", hex,
                  rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
    return rc;
}

const connector_ops_t rms_files_connector = {
    .name = "rms-files",
    .role = CARD_ROLE_SOURCE,
    .settings = settings,
    .open = rms_open,
    .poll = rms_poll,
    .on_ack = rms_on_ack,
    .close = rms_close,
};
