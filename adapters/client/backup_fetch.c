/* backup_fetch.c -- the admin's side of the online backup (see backup_fetch.h; the broker's is backup.c):
 * asks the broker for a snapshot, waits for it, reads it chunk by chunk into a temporary file, checks it,
 * and puts it in place.
 *
 * Every request is a signed admin command, ledgered by the broker: who copied the database, and when, is
 * in the audit trail. The status is polled with a growing pause so that a long copy costs few of them. */
#include "backup_fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "keyfile.h"
#include "rbcrypto.h"
#include "sqldb.h"

#define NO_PROGRESS_MS 60000 /* a copy whose page count has not moved for this long has stalled */

typedef struct {
    client_t *client;
    const identity_t *admin;
    int timeout_ms;
    char *err;
    size_t errlen;
} fetch_t;

#define problem(f, rc, ...) rb_explain((f)->err, (f)->errlen, (rc), __VA_ARGS__)

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends "backup VERB ARGS" and parses the JSON answer into *reply (the caller's, json_decref). A refusal is
 * RB_ERR_CONFLICT with the broker's words in err. */
static rb_err ask(fetch_t *f, const char *command, const char *const *args, size_t n_args, json_t **reply)
{
    bool ok;
    char *output;
    *reply = NULL;
    rb_err rc = client_admin(f->client, f->admin, command, args, n_args, f->timeout_ms, &ok, &output);
    if (rc != RB_OK)
        return problem(f, rc, "%s: no answer from the broker", command);
    if (!ok) {
        problem(f, RB_ERR_CONFLICT, "%s refused: %s", command, output);
        free(output);
        return RB_ERR_CONFLICT;
    }
    json_error_t jerr;
    *reply = json_loads(output, 0, &jerr);
    free(output);
    if (!json_is_object(*reply)) {
        json_decref(*reply);
        *reply = NULL;
        return problem(f, RB_ERR_MALFORMED, "%s: the broker's answer is not what this tool expects", command);
    }
    return RB_OK;
}

static void pause_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls "backup status" until the snapshot is done: *bytes and sha256 (hex) as the broker gives them. */
static rb_err wait_done(fetch_t *f, const char *id, uint64_t *bytes, char sha256[2 * RB_HASH_BYTES + 1])
{
    const char *args[] = {id};
    int64_t pause = 50, last_progress = -1, moved_ms = mono_ms();
    for (;;) {
        json_t *r;
        rb_err rc = ask(f, "backup status", args, 1, &r);
        if (rc != RB_OK)
            return rc;
        const char *state = json_string_value(json_object_get(r, "state"));
        const char *hash = json_string_value(json_object_get(r, "sha256"));
        json_t *size = json_object_get(r, "bytes");
        /* Copying counts pages down, hashing counts bytes up: either moving is progress. */
        int64_t progress = json_integer_value(json_object_get(r, "bytesHashed")) -
                           json_integer_value(json_object_get(r, "pagesLeft"));
        if (state != NULL && strcmp(state, "done") == 0 && json_is_integer(size) && hash != NULL &&
            strlen(hash) == 2 * RB_HASH_BYTES) {
            *bytes = (uint64_t)json_integer_value(size);
            memcpy(sha256, hash, 2 * RB_HASH_BYTES + 1);
            json_decref(r);
            return RB_OK;
        }
        if (state == NULL || strcmp(state, "failed") == 0) {
            const char *error = json_string_value(json_object_get(r, "error"));
            problem(f, RB_ERR_IO, "the broker's backup failed: %s", error ? error : "(no reason given)");
            json_decref(r);
            return RB_ERR_IO;
        }
        json_decref(r);
        if (progress != last_progress) {
            last_progress = progress;
            moved_ms = mono_ms();
        } else if (mono_ms() - moved_ms > NO_PROGRESS_MS) {
            return problem(f, RB_ERR_IO, "the broker's backup made no progress for %d s",
                           NO_PROGRESS_MS / 1000);
        }
        pause_ms(pause);
        pause = pause < 1000 ? pause * 2 : 1000;
    }
}

/* Reads the snapshot into fd, hashing what it writes. */
static rb_err read_all(fetch_t *f, const char *id, int fd, uint64_t bytes, uint8_t sha256[RB_HASH_BYTES])
{
    uint8_t *chunk = malloc(BACKUP_CHUNK_MAX);
    if (chunk == NULL)
        return problem(f, RB_ERR_NOMEM, "out of memory");
    rbcrypto_sha256_t h;
    rbcrypto_sha256_init(&h);
    rb_err rc = RB_OK;
    for (uint64_t offset = 0; rc == RB_OK && offset < bytes;) {
        char offset_text[24];
        snprintf(offset_text, sizeof offset_text, "%" PRIu64, offset);
        const char *args[] = {id, offset_text};
        json_t *r;
        if ((rc = ask(f, "backup read", args, 2, &r)) != RB_OK)
            break;
        const char *data = json_string_value(json_object_get(r, "data"));
        size_t len = 0;
        if (data == NULL || (uint64_t)json_integer_value(json_object_get(r, "offset")) != offset ||
            keyfile_unbase64(data, strlen(data), chunk, BACKUP_CHUNK_MAX, &len) != RB_OK || len == 0)
            rc = problem(f, RB_ERR_MALFORMED, "backup read at %" PRIu64 ": not a chunk of the snapshot",
                         offset);
        else if (write(fd, chunk, len) != (ssize_t)len)
            rc = problem(f, RB_ERR_IO, "writing the backup: %s", strerror(errno));
        rbcrypto_sha256_update(&h, chunk, len);
        offset += len;
        json_decref(r);
    }
    rbcrypto_sha256_final(&h, sha256);
    free(chunk);
    return rc;
}

/* PRAGMA integrity_check on the copy, and what it holds, for the summary. */
static rb_err check_copy(fetch_t *f, const char *path, backup_fetched_t *out)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    rb_err rc = RB_OK;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "PRAGMA integrity_check(1)", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        rc = problem(f, RB_ERR_MALFORMED, "the copy does not open as a database: %s",
                     db ? sqlite3_errmsg(db) : "out of memory");
    else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
        rc = problem(f, RB_ERR_MALFORMED, "the copy fails PRAGMA integrity_check: %s",
                     (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc == RB_OK &&
        (sqldb_int(sqldb_prepare(db, "SELECT count(*) FROM ledger_leaves", ""), &out->ledger_leaves) !=
             RB_OK ||
         sqldb_int(sqldb_prepare(db, "SELECT count(*) FROM messages", ""), &out->messages) != RB_OK))
        rc = problem(f, RB_ERR_MALFORMED, "the copy is not a broker database: %s", sqlite3_errmsg(db));
    sqlite3_close_v2(db);
    return rc;
}

/* The directory holding path, made durable after a link into it. */
static void sync_dir_of(const char *path)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

rb_err backup_fetch(client_t *client, const identity_t *admin, const char *path, int timeout_ms,
                    backup_fetched_t *out, char *err, size_t errlen)
{
    fetch_t f = {client, admin, timeout_ms, err, errlen};
    memset(out, 0, sizeof *out);
    int64_t started = mono_ms();
    if (access(path, F_OK) == 0)
        return problem(&f, RB_ERR_EXISTS, "%s exists: a backup never replaces a file", path);
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= (int)sizeof tmp)
        return problem(&f, RB_ERR_USAGE, "%s: path too long", path);
    /* The temporary file first (mode 0600): a directory it cannot be made in fails before the broker works. */
    int fd = mkstemp(tmp);
    if (fd < 0)
        return problem(&f, RB_ERR_IO, "%s: %s", tmp, strerror(errno));
    json_t *r;
    rb_err rc = ask(&f, "backup start", NULL, 0, &r);
    const char *id = rc == RB_OK ? json_string_value(json_object_get(r, "backup")) : NULL;
    if (rc == RB_OK && (id == NULL || strlen(id) != 16))
        rc = problem(&f, RB_ERR_MALFORMED, "backup start: the broker's answer has no backup id");
    else if (rc == RB_OK)
        memcpy(out->id, id, 17);
    json_decref(r);
    if (rc != RB_OK) {
        close(fd);
        unlink(tmp);
        return rc;
    }

    char want_hex[2 * RB_HASH_BYTES + 1];
    uint8_t got[RB_HASH_BYTES];
    rc = wait_done(&f, out->id, &out->bytes, want_hex);
    if (rc == RB_OK)
        rc = read_all(&f, out->id, fd, out->bytes, got);
    if (rc == RB_OK && fsync(fd) != 0)
        rc = problem(&f, RB_ERR_IO, "%s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == RB_OK)
        rc = problem(&f, RB_ERR_IO, "%s: %s", tmp, strerror(errno));
    if (rc == RB_OK) {
        char got_hex[2 * RB_HASH_BYTES + 1];
        keyfile_hex(got, RB_HASH_BYTES, got_hex);
        if (strcmp(got_hex, want_hex) != 0)
            rc = problem(&f, RB_ERR_HASH_MISMATCH, "the copy's SHA-256 is %s, the broker's snapshot's %s",
                         got_hex, want_hex);
        memcpy(out->sha256, got_hex, sizeof got_hex);
    }
    if (rc == RB_OK)
        rc = check_copy(&f, tmp, out);
    /* link, not rename: a file that appeared at path meanwhile is never replaced. */
    if (rc == RB_OK && link(tmp, path) != 0)
        rc = problem(&f, errno == EEXIST ? RB_ERR_EXISTS : RB_ERR_IO, "%s: %s", path, strerror(errno));
    unlink(tmp);
    if (rc == RB_OK)
        sync_dir_of(path);
    /* The snapshot is deleted on the broker whatever happened here; a failure to end it is only untidy
     * (the broker deletes it after BACKUP_IDLE_MS). */
    const char *args[] = {out->id};
    char keep[512];
    snprintf(keep, sizeof keep, "%s", err);
    if (ask(&f, "backup end", args, 1, &r) == RB_OK)
        json_decref(r);
    snprintf(err, errlen, "%s", keep);
    out->ms = mono_ms() - started;
    return rc;
}
