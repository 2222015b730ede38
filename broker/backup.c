/* backup.c -- the broker's side of the online backup (see backup.h).
 *
 * One state machine, advanced by backup_tick from the broker's loop:
 *
 *   requested --(tick: snapshot file and backup object made)--> copying --(last page)--> hashing --> done
 *        \______________________________ any error _________________________________________/--> failed
 *
 * "backup end", the idle timeout and backup_close delete the snapshot from any state. Copying runs
 * sqlite3_backup_step from the broker's own connection between its transactions; when the broker writes
 * through that connection meanwhile, SQLite updates the pages already copied, so the finished snapshot is
 * the database as of the last step: a consistent one. The snapshot is then switched to a rollback journal
 * so that it is one self-contained file. */
#include "backup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <sqlite3.h>

#include "keyfile.h"
#include "log.h"
#include "rbcrypto.h"

typedef enum { IDLE, REQUESTED, COPYING, HASHING, DONE, FAILED } backup_state;

static const char *const state_names[] = {"idle", "requested", "copying", "hashing", "done", "failed"};

/* The one backup of this broker process. */
static struct {
    backup_state state;
    char id[17];              /* 8 random bytes in hex */
    char dir[PATH_MAX];       /* DATA/backups */
    char path[PATH_MAX + 64]; /* DATA/backups/snapshot-ID.db */
    sqlite3 *dest;            /* the snapshot while copying */
    sqlite3_backup *copy;     /* SQLite's backup object while copying */
    int pages, pages_left;    /* of the source, as of the last step */
    int steps;                /* loop turns that copied */
    FILE *hashed;             /* the snapshot while hashing */
    rbcrypto_sha256_t hash;   /* while hashing */
    uint64_t bytes;           /* when done */
    uint8_t sha256[RB_HASH_BYTES];
    int64_t started_ms, finished_ms;
    int64_t touched_ms; /* the last command about it: the idle timeout counts from here */
    char error[160];    /* when failed: what went wrong, fixed words and an SQLite message */
    bool swept;         /* leftovers of an earlier run removed */
} bk;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* DATA/backups, from the database's own path (the broker's data directory is where broker.db is). */
static rb_err find_dir(store_t *store)
{
    const char *db = sqlite3_db_filename(store_db(store), "main");
    char copy[PATH_MAX];
    if (db == NULL || db[0] == '\0' || snprintf(copy, sizeof copy, "%s", db) >= (int)sizeof copy)
        return RB_ERR_USAGE;
    if (snprintf(bk.dir, sizeof bk.dir, "%s/%s", dirname(copy), BACKUP_DIR) >= (int)sizeof bk.dir)
        return RB_ERR_USAGE;
    return RB_OK;
}

/* Removes the snapshot file and the journal SQLite may have left beside it. */
static void remove_snapshot(const char *path)
{
    static const char *const sides[] = {"-journal", "-wal", "-shm"};
    char side[PATH_MAX + 80];
    unlink(path);
    for (size_t i = 0; i < sizeof sides / sizeof sides[0]; i++) {
        snprintf(side, sizeof side, "%s%s", path, sides[i]);
        unlink(side);
    }
}

/* Removes every snapshot file in DATA/backups: what a broker killed during a backup left behind. Only
 * names this module makes are touched. */
static void sweep(void)
{
    DIR *d = opendir(bk.dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX + 300];
        if (strncmp(e->d_name, "snapshot-", 9) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", bk.dir, e->d_name);
        if (unlink(path) == 0)
            log_info("backup_swept", "file=%s", e->d_name);
    }
    closedir(d);
}

/* Drops the current backup, whatever its state, and deletes its snapshot. */
static void discard(void)
{
    if (bk.copy != NULL)
        sqlite3_backup_finish(bk.copy);
    if (bk.dest != NULL)
        sqlite3_close_v2(bk.dest);
    if (bk.hashed != NULL)
        fclose(bk.hashed);
    bk.copy = NULL;
    bk.dest = NULL;
    bk.hashed = NULL;
    if (bk.path[0] != '\0')
        remove_snapshot(bk.path);
    bk.path[0] = '\0';
    bk.state = IDLE;
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(bk.error, sizeof bk.error, fmt, ap);
    va_end(ap);
    for (char *p = bk.error; *p; p++) /* it goes into JSON and a log line as is */
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = '\'';
    log_error("backup_failed", "id=%s error=\"%s\"", bk.id, bk.error);
    discard();
    bk.state = FAILED; /* until ended or idle: status says why */
}

/* requested -> copying: the snapshot file (0600, in a 0700 directory) and SQLite's backup object. */
static void begin_copy(store_t *store)
{
    int fd = -1;
    if (mkdir(bk.dir, 0700) != 0 && errno != EEXIST) {
        fail("cannot create the backups directory: %s", strerror(errno));
        return;
    }
    sweep();
    snprintf(bk.path, sizeof bk.path, "%s/snapshot-%s.db", bk.dir, bk.id);
    /* SQLite would create the file 0644; made here first, it stays 0600, and so does its journal. */
    if (chmod(bk.dir, 0700) != 0 || (fd = open(bk.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        fail("cannot create the snapshot file: %s", strerror(errno));
        return;
    }
    close(fd);
    /* No fsync of the snapshot: it is read back at once, and a crash leaves only a file to sweep; an fsync
     * of a large file would stall the broker's loop. */
    if (sqlite3_open_v2(bk.path, &bk.dest, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_exec(bk.dest, "PRAGMA synchronous=OFF", NULL, NULL, NULL) != SQLITE_OK ||
        (bk.copy = sqlite3_backup_init(bk.dest, "main", store_db(store), "main")) == NULL) {
        fail("cannot start the copy: %s", bk.dest ? sqlite3_errmsg(bk.dest) : "out of memory");
        return;
    }
    bk.state = COPYING;
    log_info("backup_started", "id=%s file=%s", bk.id, bk.path);
}

/* copying -> hashing: the snapshot made a file of its own (rollback journal, not WAL) and closed. */
static void end_copy(void)
{
    int rc = sqlite3_backup_finish(bk.copy);
    bk.copy = NULL;
    if (rc != SQLITE_OK) {
        fail("the copy did not finish: %s", sqlite3_errstr(rc));
        return;
    }
    if (sqlite3_exec(bk.dest, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        fail("cannot make the snapshot self-contained: %s", sqlite3_errmsg(bk.dest));
        return;
    }
    sqlite3_close_v2(bk.dest);
    bk.dest = NULL;
    if ((bk.hashed = fopen(bk.path, "rb")) == NULL) {
        fail("cannot read the snapshot back: %s", strerror(errno));
        return;
    }
    rbcrypto_sha256_init(&bk.hash);
    bk.bytes = 0;
    bk.state = HASHING;
}

/* One bounded step a loop turn: the broker's latency grows by the time to copy BACKUP_STEP_PAGES pages. */
static void copy_some(void)
{
    int rc = sqlite3_backup_step(bk.copy, BACKUP_STEP_PAGES);
    bk.steps++;
    bk.pages = sqlite3_backup_pagecount(bk.copy);
    bk.pages_left = sqlite3_backup_remaining(bk.copy);
    if (rc == SQLITE_DONE)
        end_copy();
    else if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) /* busy: again next turn */
        fail("copying: %s", sqlite3_errstr(rc));
}

static void hash_some(void)
{
    static uint8_t buf[64 * 1024];
    size_t n = 0;
    for (size_t done = 0; done < BACKUP_HASH_BYTES && (n = fread(buf, 1, sizeof buf, bk.hashed)) > 0;
         done += n) {
        rbcrypto_sha256_update(&bk.hash, buf, n);
        bk.bytes += n;
    }
    if (n > 0)
        return; /* more next turn */
    bool failed = ferror(bk.hashed);
    fclose(bk.hashed);
    bk.hashed = NULL;
    if (failed) {
        fail("reading the snapshot back failed");
        return;
    }
    rbcrypto_sha256_final(&bk.hash, bk.sha256);
    bk.finished_ms = wall_ms();
    bk.state = DONE;
    char hex[2 * RB_HASH_BYTES + 1];
    keyfile_hex(bk.sha256, RB_HASH_BYTES, hex);
    log_info("backup_done", "id=%s bytes=%" PRIu64 " pages=%d steps=%d ms=%lld sha256=%s", bk.id, bk.bytes,
             bk.pages, bk.steps, (long long)(bk.finished_ms - bk.started_ms), hex);
}

void backup_tick(store_t *store)
{
    if (!bk.swept) {
        bk.swept = true;
        if (find_dir(store) == RB_OK)
            sweep();
    }
    if (bk.state == IDLE)
        return;
    if (wall_ms() - bk.touched_ms > BACKUP_IDLE_MS) {
        log_warn("backup_abandoned", "id=%s state=%s idle_ms=%d", bk.id, state_names[bk.state],
                 BACKUP_IDLE_MS);
        discard();
        return;
    }
    if (bk.state == REQUESTED)
        begin_copy(store);
    if (bk.state == COPYING)
        copy_some();
    else if (bk.state == HASHING)
        hash_some();
}

int64_t backup_deadline(void)
{
    if (!bk.swept || bk.state == REQUESTED || bk.state == COPYING || bk.state == HASHING)
        return 0;
    return bk.state == IDLE ? INT64_MAX : bk.touched_ms + BACKUP_IDLE_MS + 1;
}

void backup_close(void)
{
    if (bk.state != IDLE)
        log_warn("backup_abandoned", "id=%s state=%s reason=\"the broker is stopping\"", bk.id,
                 state_names[bk.state]);
    discard();
}

/* --- admin commands ---------------------------------------------------------------------------------------- */

static rb_err status(out_t *out)
{
    if (bk.state == DONE) {
        char hex[2 * RB_HASH_BYTES + 1];
        keyfile_hex(bk.sha256, RB_HASH_BYTES, hex);
        return out_printf(out,
                          "{\"backup\": \"%s\", \"state\": \"done\", \"bytes\": %" PRIu64
                          ", \"sha256\": \"%s\", \"pages\": %d, \"ms\": %lld}",
                          bk.id, bk.bytes, hex, bk.pages, (long long)(bk.finished_ms - bk.started_ms)),
               RB_OK;
    }
    if (bk.state == FAILED)
        return out_printf(out, "{\"backup\": \"%s\", \"state\": \"failed\", \"error\": \"%s\"}", bk.id,
                          bk.error),
               RB_OK;
    return out_printf(out,
                      "{\"backup\": \"%s\", \"state\": \"%s\", \"pages\": %d, \"pagesLeft\": %d, "
                      "\"bytesHashed\": %" PRIu64 "}",
                      bk.id, state_names[bk.state], bk.pages, bk.pages_left,
                      bk.state == HASHING ? bk.bytes : 0),
           RB_OK;
}

/* "backup read ID OFFSET": up to BACKUP_CHUNK_MAX bytes of the finished snapshot, base64. */
static rb_err read_chunk(const char *offset_text, out_t *out)
{
    if (bk.state != DONE)
        return out_printf(out, "backup %s is %s, not done: nothing to read yet", bk.id,
                          state_names[bk.state]),
               RB_ERR_USAGE;
    char *end;
    errno = 0;
    unsigned long long offset = strtoull(offset_text, &end, 10);
    if (errno != 0 || *end != '\0' || offset_text[0] == '\0' || offset_text[0] == '-' || offset > bk.bytes)
        return out_printf(out, "backup read ID OFFSET: OFFSET from 0 to %" PRIu64, bk.bytes), RB_ERR_USAGE;
    size_t want = bk.bytes - offset < BACKUP_CHUNK_MAX ? (size_t)(bk.bytes - offset) : BACKUP_CHUNK_MAX;
    uint8_t *buf = malloc(want ? want : 1);
    int fd = open(bk.path, O_RDONLY | O_CLOEXEC);
    ssize_t got = buf != NULL && fd >= 0 ? pread(fd, buf, want, (off_t)offset) : -1;
    if (fd >= 0)
        close(fd);
    char *b64 = got == (ssize_t)want ? keyfile_base64(buf, want) : NULL;
    free(buf);
    if (b64 == NULL)
        return out_printf(out, "backup %s: the snapshot cannot be read", bk.id), RB_ERR_IO;
    out_printf(out, "{\"backup\": \"%s\", \"offset\": %llu, \"length\": %zu, \"data\": \"%s\"}", bk.id,
               offset, want, b64);
    free(b64);
    return RB_OK;
}

rb_err backup_command(store_t *store, const char *command, char *const *argv, size_t argc, int64_t now_ms,
                      out_t *out)
{
    if (strcmp(command, "backup start") == 0 && argc == 0) {
        if (bk.state == REQUESTED || bk.state == COPYING || bk.state == HASHING || bk.state == DONE)
            return out_printf(
                       out,
                       "backup %s is %s: one backup at a time (it is deleted %d s after its last command)",
                       bk.id, state_names[bk.state], BACKUP_IDLE_MS / 1000),
                   RB_ERR_CONFLICT;
        if (find_dir(store) != RB_OK)
            return out_printf(out, "the broker cannot tell where its data directory is"), RB_ERR_IO;
        uint8_t raw[8];
        rbcrypto_random(raw, sizeof raw);
        keyfile_hex(raw, sizeof raw, bk.id);
        bk.state = REQUESTED;
        bk.pages = bk.pages_left = bk.steps = 0;
        bk.error[0] = '\0';
        bk.started_ms = bk.touched_ms = now_ms;
        return out_printf(out, "{\"backup\": \"%s\", \"state\": \"requested\"}", bk.id), RB_OK;
    }
    bool is_status = strcmp(command, "backup status") == 0 && argc == 1;
    bool is_read = strcmp(command, "backup read") == 0 && argc == 2;
    bool is_end = strcmp(command, "backup end") == 0 && argc == 1;
    if (!is_status && !is_read && !is_end)
        return out_printf(
                   out,
                   "unknown command or wrong arguments: %s (backup start | status ID | read ID OFFSET | "
                   "end ID)",
                   command),
               RB_ERR_USAGE;
    if (bk.state == IDLE || strcmp(argv[0], bk.id) != 0)
        return out_printf(out, "no backup %.20s under way (deleted after %d s unused?)", argv[0],
                          BACKUP_IDLE_MS / 1000),
               RB_ERR_CONFLICT;
    bk.touched_ms = now_ms;
    if (is_status)
        return status(out);
    if (is_read)
        return read_chunk(argv[1], out);
    log_info("backup_ended", "id=%s state=%s", bk.id, state_names[bk.state]);
    discard();
    return out_printf(out, "{\"ended\": \"%s\"}", argv[0]), RB_OK;
}
