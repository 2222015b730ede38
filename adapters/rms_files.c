/* rms_files.c -- source connector: a drop folder of JSON exports from a police records system.
 *
 * inotify says when a file is closed or moved into DROP, and a scan every scan_ms catches whatever it
 * missed; each scan looks at the .json files in DROP. A file is read only once it has not changed for
 * stable_ms, so a file still being written is left alone; a writer that writes under another name and
 * renames is never read half-way, since names not ending in .json are never read. A valid referral is sealed and
 * queued by the runtime, then the file moves to DROP/sent/; an invalid one moves to DROP/rejected/ with
 * NAME.errors.txt beside it listing every problem. ACKs are written to DROP/acks/MESSAGE_ID.json.
 *
 * Whoever may write DROP may put anything there, so nothing in it is trusted: an export is opened without
 * following a symbolic link and without waiting (a FIFO would wait for a writer), and read only if the
 * descriptor opened is a regular file of at most MAX_EXPORT_BYTES; what was seen of the name before the
 * open decides nothing. Anything else under an export's name (a link, a FIFO, a folder, a socket) is moved
 * to rejected/ unread, as the link itself. Every move and write goes through DROP and its folders held
 * open, never through a link, and never over a file already there. What the adapter makes in DROP is its
 * own (folders 0700, files 0600) unless the operator shares DROP with a group (docs/ADAPTERS.md), whatever
 * the umask. */
#define _GNU_SOURCE /* renameat2 and RENAME_NOREPLACE */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "fsmode.h"
#include "keyfile.h"
#include "log.h"
#include "wire.h"

#define MAX_EXPORT_BYTES (1024 * 1024)

/* Its [rms-files] section (the rows below). */
typedef struct {
    char drop[2048];
    int64_t stable_ms, scan_ms;
} rms_files_conf_t;

struct connector {
    adapter_t *adapter;
    rms_files_conf_t conf;
    mode_t folder_mode; /* of a folder the adapter makes in DROP: 0700, or shared as DROP is with its group */
    mode_t file_mode;   /* of a file it writes there (ACKs, problems, exports taken): 0600, or 0640 */
    int64_t next_scan_ms;
    int inotify_fd; /* tells of files closed or moved into DROP at once; -1 when unavailable */
    /* Exports inotify saw renamed into DROP, and not written since: complete, so taken without waiting
     * stable_ms. Kept until a scan takes them or finds them gone. */
    char **renamed;
    size_t n_renamed, cap_renamed;
};

#define RENAMED_MAX 100000 /* beyond it, an export waits stable_ms like any other */

static const setting_t settings[] = {
    SETTING_TEXT_ROW("rms-files", "drop", rms_files_conf_t, drop, 1, NULL, NULL,
                     "the folder the records system writes into"),
    SETTING_INT_ROW("rms-files", "stable_ms", rms_files_conf_t, stable_ms, 0, 3600000, "1000",
                    "a file written in place is read only once unchanged this long"),
    SETTING_INT_ROW("rms-files", "scan_ms", rms_files_conf_t, scan_ms, 10, 3600000, "500",
                    "how often the folder is scanned"),
    {0},
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* DROP's folder sub, open (never through a link); -1 with err saying what is there instead. */
static int open_folder(connector_t *c, int drop, const char *sub, char *err, size_t errlen)
{
    int fd = openat(drop, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 && fstatat(drop, sub, &st, AT_SYMLINK_NOFOLLOW) == 0)
        snprintf(err, errlen, "%s/%s: %s, not a folder: remove it (rms-files makes the folder at start)",
                 c->conf.drop, sub, S_ISLNK(st.st_mode) ? "a symbolic link" : "something else");
    else if (fd < 0)
        snprintf(err, errlen, "%s/%s: %s", c->conf.drop, sub, strerror(errno));
    return fd;
}

/* DROP, and its folders sent/, rejected/ and acks/: made when missing, tightened when open to others. What
 * DROP's group may do decides folder_mode and file_mode. */
static rb_err make_folders(connector_t *c, char *err, size_t errlen)
{
    mode_t drop_mode;
    /* Owner and group (set by the operator, who may share DROP with the records system), never others. */
    rb_err rc = fsmode_dir(c->conf.drop, 0700, 02770, &drop_mode, err, errlen);
    if (rc != RB_OK)
        return rc;
    c->folder_mode = 0700 | (drop_mode & 02070);
    c->file_mode = 0600 | (drop_mode & 0040);
    int drop = open(c->conf.drop, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (drop < 0) {
        snprintf(err, errlen, "%s: %s", c->conf.drop, strerror(errno));
        return RB_ERR_IO;
    }
    static const char *const subs[] = {"sent", "rejected", "acks"};
    for (size_t i = 0; rc == RB_OK && i < sizeof subs / sizeof subs[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", c->conf.drop, subs[i]);
        bool made = mkdirat(drop, subs[i], 0700) == 0;
        int fd = open_folder(c, drop, subs[i], err, errlen);
        if (fd < 0) {
            rc = RB_ERR_IO;
        } else if (made && fchmod(fd, c->folder_mode) != 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            rc = RB_ERR_IO;
        } else if (!made) {
            rc = fsmode_restrict(fd, path, 02770, err, errlen);
        }
        if (fd >= 0)
            close(fd);
    }
    close(drop);
    return rc;
}

static rb_err rms_open(connector_t **out, adapter_t *a, const void *conf, char *err, size_t errlen)
{
    connector_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RB_ERR_NOMEM;
    c->adapter = a;
    c->conf = *(const rms_files_conf_t *)conf;
    rb_err rc = make_folders(c, err, errlen);
    if (rc != RB_OK) {
        free(c);
        return rc;
    }
    /* Without inotify (a network file system, a full watch table) the periodic scan still finds
     * everything, only later. */
    c->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (c->inotify_fd >= 0 &&
        inotify_add_watch(c->inotify_fd, c->conf.drop, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
        close(c->inotify_fd);
        c->inotify_fd = -1;
    }
    if (c->inotify_fd < 0)
        log_warn("inotify_unavailable", "drop=%s fallback=scan scan_ms=%lld", c->conf.drop,
                 (long long)c->conf.scan_ms);
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

/* Moves DROP/name to DROP/sub/name, never over what is there (a suffix keeps both): the entry itself, a
 * symbolic link as the link. moved receives sub/NAME as moved; false (logged) when it could not be. */
static bool move_to(connector_t *c, int drop, const char *name, const char *sub, char *moved, size_t cap)
{
    char err[4200];
    int to = open_folder(c, drop, sub, err, sizeof err);
    if (to < 0) {
        log_error("move_failed", "file=%s to=%s error=%s", name, sub, err);
        return false;
    }
    int rc = -1, e = 0;
    for (int i = 0; rc != 0 && i < 1000; i++) {
        char *as = moved + snprintf(moved, cap, "%s/", sub);
        size_t left = cap - (size_t)(as - moved);
        if (i == 0)
            snprintf(as, left, "%s", name);
        else
            snprintf(as, left, "%s.%d", name, i);
        rc = renameat2(drop, name, to, as, RENAME_NOREPLACE);
        if (rc != 0 && errno == EINVAL) { /* no RENAME_NOREPLACE here (NFS): only a look before the move */
            struct stat st;
            if (fstatat(to, as, &st, AT_SYMLINK_NOFOLLOW) == 0)
                errno = EEXIST;
            else
                rc = renameat(drop, name, to, as);
        }
        e = errno;
        if (rc != 0 && e != EEXIST)
            break;
    }
    if (rc != 0)
        log_error("move_failed", "file=%s to=%s error=%s", name, sub, strerror(e));
    close(to);
    return rc == 0;
}

/* What became of one export of a batch: moved once the batch is committed. */
typedef struct {
    char name[256];
    rb_err rc;
    msg_id_t id;
    const char *not_file; /* what is under the export's name when it is not a regular file, else NULL */
    char problems[4096];
} taken_t;

/* What kind of entry mode is, for a refused one. */
static const char *kind_of(mode_t mode)
{
    return S_ISLNK(mode)    ? "symbolic link"
           : S_ISFIFO(mode) ? "FIFO"
           : S_ISDIR(mode)  ? "directory"
           : S_ISSOCK(mode) ? "socket"
           : S_ISCHR(mode)  ? "character device"
           : S_ISBLK(mode)  ? "block device"
                            : "special file";
}

/* Reads DROP/name through one descriptor, the one checked: O_NOFOLLOW, so a link is refused, not
 * followed; O_NONBLOCK, so that a FIFO swapped in since the scan looked does not hang the adapter. */
static void take_file(connector_t *c, int drop, taken_t *t)
{
    t->rc = RB_ERR_IO; /* until read: tried again next scan */
    t->problems[0] = '\0';
    int fd = openat(drop, t->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        if (errno == ELOOP)
            t->not_file = kind_of(S_IFLNK);
        return;
    }
    if (fstat(fd, &st) != 0) {
        close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        t->not_file = kind_of(st.st_mode);
        close(fd);
        return;
    }
    /* Taken into the adapter's keeping: as private as what it writes here, when the file is its own. */
    if ((st.st_mode & 07777 & ~c->file_mode) != 0)
        (void)fchmod(fd, st.st_mode & c->file_mode);
    /* One byte past the limit tells a file that grew after the fstat. */
    char *json = st.st_size <= MAX_EXPORT_BYTES ? malloc(MAX_EXPORT_BYTES + 1) : NULL;
    size_t len = 0;
    ssize_t r = json != NULL ? 1 : -1;
    while (r != 0 && len <= MAX_EXPORT_BYTES) {
        r = read(fd, json + len, MAX_EXPORT_BYTES + 1 - len);
        if (r < 0 && errno != EINTR)
            break;
        len += r > 0 ? (size_t)r : 0;
    }
    close(fd);
    if (st.st_size > MAX_EXPORT_BYTES || len > MAX_EXPORT_BYTES)
        t->rc = RB_ERR_TOO_BIG;
    else if (r == 0)
        t->rc =
            adapter_accept_referral(c->adapter, json, len, t->name, &t->id, t->problems, sizeof t->problems);
    free(json);
}

/* Writes DROP/moved.errors.txt: why the export was rejected. */
static void write_problems(connector_t *c, int drop, const char *moved, const char *problems)
{
    char err[4200], name[300];
    const char *slash = strchr(moved, '/');
    int to = open_folder(c, drop, "rejected", err, sizeof err);
    snprintf(name, sizeof name, "%s.errors.txt", slash + 1);
    if (to < 0 || keyfile_write_at(to, name, problems, strlen(problems), c->file_mode, true) != RB_OK)
        log_error("problems_not_written", "file=%s error=%s", moved, to < 0 ? err : strerror(errno));
    if (to >= 0)
        close(to);
}

/* Tells the records system: sent/ once the referral is committed to the outbox, rejected/ with the reasons. */
static void settle(connector_t *c, int drop, taken_t *t)
{
    char moved[600];
    rb_err rc = t->rc;
    if (t->not_file != NULL) {
        snprintf(t->problems, sizeof t->problems,
                 "$: not a regular file: a %s, never read; the records system must write each export into "
                 "the drop folder as a file of its own\n",
                 t->not_file);
        bool ok = move_to(c, drop, t->name, "rejected", moved, sizeof moved);
        if (ok)
            write_problems(c, drop, moved, t->problems);
        log_security("export_not_a_file", "file=%s type=%s moved_to=%s advice=%s", t->name, t->not_file,
                     ok ? moved : "",
                     "not read: exports must be regular files written into the drop folder; find out who put "
                     "this there");
    } else if (rc == RB_OK) {
        move_to(c, drop, t->name, "sent", moved, sizeof moved);
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
        if (move_to(c, drop, t->name, "rejected", moved, sizeof moved))
            write_problems(c, drop, moved, problems);
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
    c->next_scan_ms = t + c->conf.scan_ms;
    int drop = open(c->conf.drop, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (drop < 0)
        return; /* gone for now: looked at again next scan */
    /* In name order: records systems number their exports, and a supplement should follow its referral. */
    struct dirent **names;
    int n = scandir(c->conf.drop, &names, is_export, by_name), taken = 0;
    taken_t *batch = n > 0 ? malloc(BATCH * sizeof *batch) : NULL;
    bool *keep = calloc(c->n_renamed + 1, sizeof *keep);
    if (c->n_renamed > 0)
        qsort(c->renamed, c->n_renamed, sizeof *c->renamed, by_string);
    astore_t *store = adapter_store(c->adapter);
    bool storing = batch != NULL && keep != NULL && astore_begin(store) == RB_OK;
    for (int i = 0; i < n; i++) {
        char *name = names[i]->d_name;
        /* The entry itself, not what a link names. Its type and age tell what to try; take_file decides
         * on the descriptor it reads, since the entry may have changed by then. */
        struct stat st;
        bool seen = fstatat(drop, name, &st, AT_SYMLINK_NOFOLLOW) == 0, regular = seen && S_ISREG(st.st_mode);
        int64_t age = seen ? t - ((int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000) : -1;
        char **renamed =
            c->n_renamed ? bsearch(&name, c->renamed, c->n_renamed, sizeof name, by_string) : NULL;
        /* A regular file not renamed in waits until stable (perhaps still being written); anything else
         * under an export's name is refused at once. */
        if (storing && taken < BATCH && seen && (!regular || renamed != NULL || age >= c->conf.stable_ms) &&
            strlen(name) < sizeof batch->name) {
            taken_t *e = &batch[taken++];
            snprintf(e->name, sizeof e->name, "%s", name);
            e->not_file = regular ? NULL : kind_of(st.st_mode);
            if (regular)
                take_file(c, drop, e);
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
    if (storing && astore_commit(store) != RB_OK) {
        astore_rollback(store);
        log_error("exports_not_stored", "count=%d", taken); /* left in the folder: taken again */
        for (int i = 0; i < taken; i++)
            if (batch[i].rc == RB_OK)
                batch[i].rc = RB_ERR_IO;
    }
    for (int i = 0; i < taken; i++)
        settle(c, drop, &batch[i]);
    free(batch);
    close(drop);
}

static rb_err rms_on_ack(connector_t *c, const msg_id_t *referral, const char *ack_json)
{
    char hex[33], name[40], err[4200];
    wire_id_hex(referral->bytes, hex);
    snprintf(name, sizeof name, "%s.json", hex);
    int drop = open(c->conf.drop, O_RDONLY | O_DIRECTORY | O_CLOEXEC), acks = -1;
    if (drop < 0)
        snprintf(err, sizeof err, "%s: %s", c->conf.drop, strerror(errno));
    else
        acks = open_folder(c, drop, "acks", err, sizeof err);
    rb_err rc = RB_ERR_IO;
    if (acks >= 0 &&
        (rc = keyfile_write_at(acks, name, ack_json, strlen(ack_json), c->file_mode, true)) != RB_OK)
        snprintf(err, sizeof err, "%s", rc == RB_ERR_IO ? strerror(errno) : rb_strerror(rc));
    if (rc != RB_OK)
        log_error("ack_write_failed", "msg=%s error=%s", hex, err);
    if (acks >= 0)
        close(acks);
    if (drop >= 0)
        close(drop);
    return rc;
}

const connector_ops_t rms_files_connector = {
    .name = "rms-files",
    .role = CARD_ROLE_SOURCE,
    .settings = settings,
    .settings_size = sizeof(rms_files_conf_t),
    .open = rms_open,
    .poll = rms_poll,
    .on_ack = rms_on_ack,
    .close = rms_close,
};
