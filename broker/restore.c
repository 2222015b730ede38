/* restore.c -- checking a backup and installing it as a broker's database (see restore.h).
 *
 * Everything is checked on a copy made inside the data directory, so that what was checked is byte for
 * byte what is installed, and the rename that installs it stays on one file system. The ledger checks are
 * the auditor's own (audit.c): a backup is trusted no more than an export handed to an auditor. */
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "audit.h"
#include "broker.h"
#include "identity.h"
#include "keyfile.h"
#include "rbcrypto.h"
#include "sqldb.h"
#include "store.h"
#include "wire.h"

#define BEFORE_RESTORE ".before-restore" /* suffix the replaced database keeps */

typedef struct {
    const char *from, *dir;
    char db[PATH_MAX], tmp[PATH_MAX], before[PATH_MAX];
    char *err;
    size_t errlen;
} restore_t;

#define problem(r, rc, ...) rb_explain((r)->err, (r)->errlen, (rc), __VA_ARGS__)

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* path with a suffix, in a buffer of the caller's. */
static const char *with(char out[PATH_MAX + 32], const char *path, const char *suffix)
{
    snprintf(out, PATH_MAX + 32, "%s%s", path, suffix);
    return out;
}

/* Whether another process holds a lock on the file: SQLite's locks are POSIX locks, and a running broker
 * holds its database's for as long as it runs. */
static bool locked_by_other(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    bool locked = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
    return locked;
}

/* Whether DIR/broker.db may be replaced: not at all without force, never under a running broker, and
 * never over an earlier broker.db.before-restore. */
static rb_err check_replaceable(restore_t *r, bool force)
{
    char wal[PATH_MAX + 32];
    if (!exists(r->db) && !exists(with(wal, r->db, "-wal")))
        return RB_OK;
    if (!force)
        return problem(r, RB_ERR_EXISTS,
                       "%s exists: a restore replaces a database only with --force (the old one is then kept "
                       "as %s)",
                       r->db, r->before);
    if (locked_by_other(r->db))
        return problem(r, RB_ERR_EXISTS, "%s is in use (a broker is running on %s): stop it first", r->db,
                       r->dir);
    if (exists(r->before))
        return problem(r, RB_ERR_EXISTS, "%s exists from an earlier restore: move it away first", r->before);
    return RB_OK;
}

/* The backup file into r->tmp (0600, in the data directory), synced. */
static rb_err copy_in(restore_t *r)
{
    int in = open(r->from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return problem(r, RB_ERR_IO, "%s: %s", r->from, strerror(errno));
    snprintf(r->tmp, sizeof r->tmp, "%s/%s.restore-XXXXXX", r->dir, BROKER_DB);
    int out = mkstemp(r->tmp);
    if (out < 0) {
        close(in);
        r->tmp[0] = '\0';
        return problem(r, RB_ERR_IO, "%s: %s", r->dir, strerror(errno));
    }
    static uint8_t buf[1 << 16];
    ssize_t n;
    rb_err rc = RB_OK;
    while (rc == RB_OK && (n = read(in, buf, sizeof buf)) != 0)
        if (n < 0 || write(out, buf, (size_t)n) != n)
            rc = problem(r, RB_ERR_IO, "copying %s: %s", r->from, strerror(errno));
    if (rc == RB_OK && fsync(out) != 0)
        rc = problem(r, RB_ERR_IO, "%s: %s", r->tmp, strerror(errno));
    close(in);
    if (close(out) != 0 && rc == RB_OK)
        rc = problem(r, RB_ERR_IO, "%s: %s", r->tmp, strerror(errno));
    return rc;
}

/* The copy and whatever SQLite left beside it. */
static void remove_tmp(restore_t *r)
{
    char side[PATH_MAX + 32];
    if (r->tmp[0] == '\0')
        return;
    unlink(r->tmp);
    unlink(with(side, r->tmp, "-wal"));
    unlink(with(side, r->tmp, "-shm"));
    unlink(with(side, r->tmp, "-journal"));
}

/* PRAGMA integrity_check, then a schema version this build knows. */
static rb_err check_database(restore_t *r, restore_summary_t *out)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char found[400] = "";
    rb_err rc = RB_OK;
    int step = SQLITE_DONE;
    if (sqlite3_open_v2(r->tmp, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "PRAGMA integrity_check(5)", -1, &st, NULL) != SQLITE_OK)
        rc = problem(r, RB_ERR_MALFORMED, "%s fails the integrity check: %s", r->from,
                     db ? sqlite3_errmsg(db) : "out of memory");
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 0);
        size_t used = strlen(found);
        snprintf(found + used, sizeof found - used, "%s%s", used ? "; " : "", line ? line : "");
    }
    if (rc == RB_OK && (step != SQLITE_DONE || strcmp(found, "ok") != 0))
        rc = problem(r, RB_ERR_MALFORMED, "%s fails the integrity check: %s", r->from,
                     step != SQLITE_DONE ? sqlite3_errmsg(db) : found);
    sqlite3_finalize(st);
    int64_t version = 0, messages;
    if (rc == RB_OK && sqldb_int(sqldb_prepare(db, "PRAGMA user_version", ""), &version) != RB_OK)
        rc = problem(r, RB_ERR_MALFORMED, "%s: no schema version: %s", r->from, sqlite3_errmsg(db));
    if (rc == RB_OK && version > STORE_SCHEMA_VERSION)
        rc = problem(r, RB_ERR_BAD_VERSION,
                     "%s has schema version %" PRId64
                     ", newer than this broker knows (%d): restore it with the "
                     "broker that made it",
                     r->from, version, STORE_SCHEMA_VERSION);
    if (rc == RB_OK && (version < 1 || sqldb_int(sqldb_prepare(db, "SELECT count(*) FROM messages", ""),
                                                 &messages) != RB_OK))
        rc = problem(r, RB_ERR_MALFORMED, "%s is not a broker database (schema version %" PRId64 ")", r->from,
                     version);
    out->schema_version = (int)version;
    sqlite3_close_v2(db);
    return rc;
}

/* The card the ledger names must be the data directory's, when it has one: a backup of another broker
 * would run under a key that never signed its checkpoints. */
static rb_err check_card(restore_t *r, const card_t *ledger_card)
{
    char path[PATH_MAX + 32], key_id[2 * RB_KEY_ID_BYTES + 1];
    card_key_id_hex(ledger_card->key_id, key_id);
    snprintf(path, sizeof path, "%s/%s", r->dir, BROKER_CARD);
    card_t card;
    rb_err rc;
    if (exists(path)) {
        if ((rc = card_read_file(&card, path)) != RB_OK)
            return problem(r, rc, "%s: %s", path, rb_strerror(rc));
        if (!card_equal(&card, ledger_card))
            return problem(r, RB_ERR_KEY_MISMATCH,
                           "%s is the card of %s, but the backup's ledger was signed by %s (key id %s): this "
                           "backup belongs to another broker",
                           path, card.name, ledger_card->name, key_id);
    }
    snprintf(path, sizeof path, "%s/%s", r->dir, BROKER_SECRET);
    bool encrypted = true;
    if (exists(path) && (rc = identity_file_encrypted(path, &encrypted)) != RB_OK)
        return problem(r, rc, "%s: %s", path, rb_strerror(rc));
    if (exists(path) && !encrypted) {
        identity_t *me;
        if ((rc = identity_load(&me, path, NULL, 0)) != RB_OK)
            return problem(r, rc, "%s: %s", path, rb_strerror(rc));
        bool same = card_equal(identity_card(me), ledger_card);
        identity_free(&me);
        if (!same)
            return problem(
                r, RB_ERR_KEY_MISMATCH,
                "%s holds another key than the one that signed the backup's ledger (%s, key id %s)", path,
                ledger_card->name, key_id);
    }
    return RB_OK;
}

/* The replayed ledger must give every message the state the table says. */
static rb_err check_replay(restore_t *r, audit_export_t *x)
{
    char *report = NULL, why[600];
    size_t len = 0;
    int problems = 0;
    FILE *f = open_memstream(&report, &len);
    if (f == NULL)
        return problem(r, RB_ERR_NOMEM, "out of memory");
    rb_err rc = audit_replay(x, r->tmp, f, &problems, why, sizeof why);
    fclose(f);
    if (rc != RB_OK) {
        problem(r, rc, "%s: %s", r->from, why);
    } else if (problems > 0) {
        const char *first = strstr(report, "difference: ");
        if (first == NULL)
            first = strstr(report, "impossible: ");
        size_t n = first ? strcspn(first, "\n") : 0;
        rc =
            problem(r, RB_ERR_INVALID, "%s: the messages table disagrees with the ledger (%d problems): %.*s",
                    r->from, problems, (int)n, first ? first : "");
    }
    free(report);
    return rc;
}

/* Every stored envelope must hash to what its "submitted" leaf recorded: the table is not signed, the
 * ledger is, and an altered envelope would otherwise be delivered. A discarded message's envelope is gone
 * (store_discard): its state was checked against its "discarded" leaf by the replay, and it is never
 * delivered. */
static rb_err check_envelopes(restore_t *r, audit_export_t *x, int schema_version)
{
    /* A backup from a broker before schema 4 has the envelopes in the messages table (it is migrated after). */
    sqlite3_stmt *st =
        sqldb_prepare(x->db,
                      schema_version >= 4 ? "SELECT m.message_id, e.envelope, m.submit_index, m.state FROM "
                                            "messages m JOIN envelopes e USING (message_id)"
                                          : "SELECT message_id, envelope, submit_index, state FROM messages",
                      "");
    if (st == NULL)
        return problem(r, RB_ERR_MALFORMED, "%s: cannot read the messages: %s", r->from,
                       sqlite3_errmsg(x->db));
    rb_err rc = RB_OK;
    int step;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        char hex[33] = "?";
        const uint8_t *id = sqlite3_column_blob(st, 0);
        bool id_ok = sqlite3_column_bytes(st, 0) == MSG_ID_BYTES;
        if (id_ok)
            wire_id_hex(id, hex);
        const unsigned char *state = sqlite3_column_text(st, 3);
        if (sqlite3_column_bytes(st, 1) == 0 && state != NULL &&
            message_state_of((const char *)state) == STATE_DISCARDED)
            continue;
        uint8_t sha256[RB_HASH_BYTES], *leaf = NULL;
        size_t leaf_len;
        rbcrypto_sha256(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), sha256);
        uint64_t index = (uint64_t)sqlite3_column_int64(st, 2);
        Rb__LedgerEvent *e = NULL;
        bool same = id_ok && ledger_leaf(x->ledger, index, &leaf, &leaf_len) == RB_OK &&
                    ledger_parse_leaf(leaf, leaf_len, &e) == RB_OK &&
                    ledger_action_of(e->action) == ACTION_SUBMITTED && e->message_id.len == MSG_ID_BYTES &&
                    memcmp(e->message_id.data, id, MSG_ID_BYTES) == 0 &&
                    e->envelope_sha256.len == RB_HASH_BYTES &&
                    memcmp(e->envelope_sha256.data, sha256, RB_HASH_BYTES) == 0;
        if (!same)
            rc = problem(r, RB_ERR_INVALID,
                         "%s: message %s: the stored envelope is not the one its submitted leaf %" PRIu64
                         " names (altered or corrupted)",
                         r->from, hex, index);
        if (e != NULL)
            rb__ledger_event__free_unpacked(e, NULL);
        free(leaf);
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = problem(r, RB_ERR_MALFORMED, "%s: reading the messages: %s", r->from, sqlite3_errmsg(x->db));
    sqlite3_finalize(st);
    return rc;
}

static rb_err latest_checkpoint(void *ctx, uint64_t size, int64_t at_ms, const char *note)
{
    restore_summary_t *out = ctx;
    checkpoint_t cp;
    if (checkpoint_parse(note, strlen(note), &cp) != RB_OK)
        return RB_ERR_MALFORMED;
    char *root = keyfile_base64(cp.root.bytes, MERKLE_HASH_BYTES);
    if (root == NULL)
        return RB_ERR_NOMEM;
    snprintf(out->checkpoint_root, sizeof out->checkpoint_root, "%s", root);
    free(root);
    out->checkpoint_size = size;
    out->checkpoint_ms = at_ms;
    return RB_OK;
}

static rb_err count_messages(restore_t *r, audit_export_t *x, restore_summary_t *out)
{
    sqlite3_stmt *st = sqldb_prepare(
        x->db,
        "SELECT coalesce(sum(state = 'queued' AND attempts = 0), 0), coalesce(sum(state = 'queued' AND "
        "attempts > 0), 0), coalesce(sum(state = 'confirmed'), 0), coalesce(sum(state = 'dead'), 0), "
        "coalesce(sum(state = 'confirmed' AND kind != 4 AND ack_status IS NULL), 0), "
        "(SELECT count(*) FROM parties) FROM messages",
        "");
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return problem(r, RB_ERR_MALFORMED, "%s: cannot count the messages: %s", r->from,
                       sqlite3_errmsg(x->db));
    }
    int64_t *fields[] = {&out->queued, &out->in_flight,    &out->confirmed,
                         &out->dead,   &out->awaiting_ack, &out->parties};
    for (int i = 0; i < 6; i++)
        *fields[i] = sqlite3_column_int64(st, i);
    sqlite3_finalize(st);
    return RB_OK;
}

/* The ledger (every leaf, signature and checkpoint), the broker's card, the replay, the envelopes. */
static rb_err check_ledger(restore_t *r, restore_summary_t *out)
{
    audit_export_t x;
    char why[600];
    audit_stats_t stats;
    rb_err rc = audit_open(&x, r->tmp, why, sizeof why);
    if (rc != RB_OK)
        return problem(r, RB_ERR_INVALID, "%s: the ledger cannot be read: %s", r->from, why);
    out->broker = x.broker;
    if ((rc = audit_verify(&x, true, &stats, why, sizeof why)) != RB_OK)
        rc = problem(r, RB_ERR_INVALID, "%s: the ledger does not verify: %s", r->from, why);
    out->ledger_size = ledger_size(x.ledger);
    out->signatures = stats.signatures;
    if (rc == RB_OK)
        rc = check_card(r, &x.broker);
    if (rc == RB_OK)
        rc = check_replay(r, &x);
    if (rc == RB_OK)
        rc = check_envelopes(r, &x, out->schema_version);
    if (rc == RB_OK && ledger_each_checkpoint(x.ledger, latest_checkpoint, out) != RB_OK)
        rc = problem(r, RB_ERR_INVALID, "%s: a checkpoint does not parse", r->from);
    if (rc == RB_OK)
        rc = count_messages(r, &x, out);
    audit_close(&x);
    return rc;
}

/* This build's schema, by the broker's own open (which also takes and drops its lock). */
static rb_err migrate(restore_t *r)
{
    store_t *store;
    char why[512], wal[PATH_MAX + 32];
    rb_err rc = store_open(&store, r->tmp, false, why, sizeof why);
    if (rc != RB_OK)
        return problem(r, rc, "%s: the broker cannot open it: %s", r->from, why);
    store_close(&store);
    /* Closing checkpoints the WAL into the file and removes it; a WAL left over would stay behind. */
    if (exists(with(wal, r->tmp, "-wal")))
        return problem(r, RB_ERR_IO, "%s: the database kept a write-ahead log after closing", r->tmp);
    return RB_OK;
}

/* Moves the old database (and its write-ahead log, which belongs to it) aside, then the copy in. */
static rb_err install(restore_t *r, restore_summary_t *out)
{
    char wal[PATH_MAX + 32], before_wal[PATH_MAX + 32];
    with(wal, r->db, "-wal");
    with(before_wal, r->before, "-wal");
    /* Run as root for a service user's data directory (sudo referral-broker restore): the database is the
     * directory owner's, or the broker, run as that user, could not open it. Before anything is moved: a
     * refusal here leaves the directory as it was. */
    struct stat st;
    if (stat(r->dir, &st) == 0 && st.st_uid != geteuid() && chown(r->tmp, st.st_uid, st.st_gid) != 0)
        return problem(r, RB_ERR_IO, "%s: giving it to the owner of %s: %s", r->tmp, r->dir, strerror(errno));
    if (exists(r->db) || exists(wal)) {
        char shm[PATH_MAX + 32];
        if ((exists(r->db) && rename(r->db, r->before) != 0) || (exists(wal) && rename(wal, before_wal) != 0))
            return problem(r, RB_ERR_IO, "moving %s aside: %s", r->db, strerror(errno));
        unlink(with(shm, r->db, "-shm"));
        out->replaced = true;
    }
    if (rename(r->tmp, r->db) != 0)
        return problem(r, RB_ERR_IO, "%s: %s", r->db, strerror(errno));
    /* r->tmp stays named: remove_tmp takes the files SQLite left beside it (its -shm) */
    int fd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return RB_OK;
}

/* NOLINTNEXTLINE(readability-non-const-parameter): err is written through r.err, which the check misses */
rb_err restore_backup(const char *from, const char *dir, bool force, restore_summary_t *out, char *err,
                      size_t errlen)
{
    restore_t r = {.from = from, .dir = dir, .err = err, .errlen = errlen};
    memset(out, 0, sizeof *out);
    if (snprintf(r.db, sizeof r.db, "%s/%s", dir, BROKER_DB) >= (int)sizeof r.db ||
        snprintf(r.before, sizeof r.before, "%s%s", r.db, BEFORE_RESTORE) >= (int)sizeof r.before)
        return problem(&r, RB_ERR_USAGE, "--data path is too long");
    rb_err rc = check_replaceable(&r, force); /* before the long checks, and again after them */
    if (rc != RB_OK)
        return rc;
    bool made_dir = mkdir(dir, 0700) == 0;
    if (!made_dir && errno != EEXIST)
        return problem(&r, RB_ERR_IO, "%s: %s", dir, strerror(errno));
    rc = copy_in(&r);
    if (rc == RB_OK)
        rc = check_database(&r, out);
    if (rc == RB_OK)
        rc = check_ledger(&r, out);
    if (rc == RB_OK)
        rc = migrate(&r);
    if (rc == RB_OK)
        rc = check_replaceable(&r, force);
    if (rc == RB_OK)
        rc = install(&r, out);
    remove_tmp(&r);
    if (rc != RB_OK && made_dir)
        rmdir(dir);
    return rc;
}

void restore_print(const restore_summary_t *s, const char *from, const char *dir, FILE *out)
{
    char key_id[2 * RB_KEY_ID_BYTES + 1], when[32] = "", path[PATH_MAX + 32];
    card_key_id_hex(s->broker.key_id, key_id);
    time_t t = (time_t)(s->checkpoint_ms / 1000);
    struct tm tm;
    if (s->checkpoint_ms > 0 && gmtime_r(&t, &tm) != NULL)
        strftime(when, sizeof when, ", signed %Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(out, "restored %s/%s from %s\n", dir, BROKER_DB, from);
    fprintf(out, "  broker    %s (%s), key id %s\n", s->broker.name, s->broker.agency, key_id);
    fprintf(out,
            "  ledger    %" PRIu64 " leaves verified (%" PRIu64 " signatures); latest checkpoint %" PRIu64
            " leaves, root %s%s\n",
            s->ledger_size, s->signatures, s->checkpoint_size, s->checkpoint_root, when);
    fprintf(out,
            "  messages  %" PRId64 " queued, %" PRId64 " delivered awaiting CONFIRM, %" PRId64
            " confirmed (%" PRId64 " awaiting an ACK), %" PRId64 " dead letters\n",
            s->queued, s->in_flight, s->confirmed, s->awaiting_ack, s->dead);
    fprintf(out, "  parties   %" PRId64 " registered\n", s->parties);
    fprintf(out, "  schema    version %d, now %d\n", s->schema_version, STORE_SCHEMA_VERSION);
    if (s->replaced)
        fprintf(out, "  previous  kept as %s/%s%s\n", dir, BROKER_DB, BEFORE_RESTORE);
    snprintf(path, sizeof path, "%s/%s", dir, BROKER_SECRET);
    if (!exists(path))
        fprintf(out, "next: copy %s and %s of this broker into %s (out of band), then run it\n",
                BROKER_SECRET, BROKER_CARD, dir);
}
