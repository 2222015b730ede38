/* audit.c -- opening, writing, verifying and replaying ledger exports (see audit.h).
 *
 * A JSON-lines export is loaded into an in-memory SQLite ledger through ledger_append_leaf, so both forms
 * are verified by the same code, and a JSON-lines file whose leaves are out of order or altered fails
 * while loading with its line number. Verification never trusts stored hashes: it recomputes the tree
 * from the leaf bytes with a merkle_frontier_t, one pass, constant memory. */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envelope.h"
#include "keyfile.h"
#include "pbjson.h"
#include "rbcrypto.h"
#include "sqldb.h"
#include "trust.h"
#include "wire.h"

/* --- opening ------------------------------------------------------------------------------------------ */

static rb_err load_card(audit_export_t *x, char *err, size_t errlen)
{
    char *text;
    rb_err rc = ledger_get_meta(x->ledger, "broker_card", &text);
    if (rc == RB_OK && text == NULL)
        rc = RB_ERR_MALFORMED;
    if (rc == RB_OK)
        rc = card_from_text(&x->broker, text, strlen(text));
    if (rc != RB_OK)
        snprintf(err, errlen, "the export has no valid broker card: %s", rb_strerror(rc));
    free(text);
    return rc;
}

/* The leaf as JSON, the way audit_write puts it on its line: its fields, then index and leaf. */
static json_t *leaf_line(uint64_t index, const uint8_t *leaf, size_t len)
{
    Rb__LedgerEvent *e;
    char *fields = NULL, *b64 = NULL;
    json_t *o = NULL;
    json_error_t jerr;
    if (ledger_parse_leaf(leaf, len, &e) != RB_OK)
        return NULL;
    if (pbjson_format(&e->base, 0, &fields) == RB_OK && (o = json_loads(fields, 0, &jerr)) != NULL &&
        (b64 = keyfile_base64(leaf, len)) != NULL) {
        /* The line's index is a JSON number (the proto3 mapping would make it a string). */
        json_object_set_new(o, "index", json_integer((json_int_t)index));
        json_object_set_new(o, "leaf", json_string(b64));
    }
    rb__ledger_event__free_unpacked(e, NULL);
    pbjson_free(fields);
    free(b64);
    return o;
}

/* Whether a line's decoded fields are those of its leaf: an edit of either one is caught on its line. */
static bool fields_match(json_t *line, const uint8_t *leaf, size_t len)
{
    json_t *want = leaf_line((uint64_t)json_integer_value(json_object_get(line, "index")), leaf, len);
    bool same = want != NULL && json_equal(want, line);
    json_decref(want);
    return same;
}

/* One JSON line into the in-memory ledger. */
static rb_err load_line(audit_export_t *x, const char *line, size_t len, char *what, size_t whatlen)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    rb_err rc = RB_ERR_MALFORMED;
    const char *card = json_string_value(json_object_get(o, "brokerCard"));
    const char *note = json_string_value(json_object_get(o, "checkpoint"));
    const char *leaf = json_string_value(json_object_get(o, "leaf"));
    json_t *index = json_object_get(o, "index");
    if (!json_is_object(o)) {
        snprintf(what, whatlen, "not a JSON object");
    } else if (card != NULL) {
        rc = ledger_set_meta(x->ledger, "broker_card", card);
    } else if (note != NULL) {
        checkpoint_t cp;
        if ((rc = checkpoint_parse(note, strlen(note), &cp)) != RB_OK)
            snprintf(what, whatlen, "not a checkpoint note");
        else
            rc = ledger_add_checkpoint(x->ledger, note, cp.size, 0);
    } else if (leaf != NULL && json_is_integer(index)) {
        uint8_t *bytes = malloc(LEDGER_LEAF_MAX);
        size_t n;
        if (bytes == NULL) {
            rc = RB_ERR_NOMEM;
        } else if ((rc = keyfile_unbase64(leaf, strlen(leaf), bytes, LEDGER_LEAF_MAX, &n)) != RB_OK) {
            snprintf(what, whatlen, "leaf is not canonical base64 of at most %d bytes", LEDGER_LEAF_MAX);
        } else {
            if ((uint64_t)json_integer_value(index) != ledger_size(x->ledger)) {
                snprintf(what, whatlen, "index %" JSON_INTEGER_FORMAT " where leaf %" PRIu64 " belongs",
                         json_integer_value(index), ledger_size(x->ledger));
                rc = RB_ERR_MALFORMED;
            } else if ((rc = ledger_append_leaf(x->ledger, bytes, n)) != RB_OK) {
                snprintf(what, whatlen, "leaf %" PRIu64 ": %s", ledger_size(x->ledger), rb_strerror(rc));
            } else if (!fields_match(o, bytes, n)) {
                snprintf(what, whatlen, "leaf %" PRIu64 ": the decoded fields on the line are not the leaf's",
                         ledger_size(x->ledger) - 1);
                rc = RB_ERR_MALFORMED;
            }
        }
        free(bytes);
    } else {
        snprintf(what, whatlen, "neither brokerCard, checkpoint nor index and leaf");
    }
    json_decref(o);
    return rc;
}

static rb_err load_jsonl(audit_export_t *x, FILE *f, char *err, size_t errlen)
{
    rb_err rc = sqldb_exec(x->db, LEDGER_SCHEMA);
    if (rc == RB_OK)
        rc = ledger_open(&x->ledger, x->db);
    if (rc == RB_OK)
        rc = sqldb_exec(x->db, "BEGIN");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long number = 0;
    while (rc == RB_OK && (n = getline(&line, &cap, f)) > 0) {
        char what[200] = "";
        number++;
        if ((rc = load_line(x, line, (size_t)n, what, sizeof what)) != RB_OK)
            snprintf(err, errlen, "line %ld: %s", number, what[0] ? what : rb_strerror(rc));
    }
    free(line);
    if (rc == RB_OK)
        rc = sqldb_exec(x->db, "COMMIT");
    return rc;
}

rb_err audit_open(audit_export_t *x, const char *path, char *err, size_t errlen)
{
    memset(x, 0, sizeof *x);
    pbjson_init();
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    char magic[16] = "";
    bool is_sqlite =
        fread(magic, 1, sizeof magic, f) == sizeof magic && memcmp(magic, "SQLite format 3", 16) == 0;
    rewind(f);
    rb_err rc;
    if (is_sqlite) {
        rc = sqlite3_open_v2(path, &x->db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK ? RB_OK : RB_ERR_IO;
        if (rc == RB_OK && (rc = ledger_open(&x->ledger, x->db)) != RB_OK)
            snprintf(err, errlen, "%s: not a ledger export (%s)", path, rb_strerror(rc));
    } else {
        rc = sqlite3_open(":memory:", &x->db) == SQLITE_OK ? load_jsonl(x, f, err, errlen) : RB_ERR_NOMEM;
    }
    fclose(f);
    if (rc == RB_OK)
        rc = load_card(x, err, errlen);
    if (rc != RB_OK)
        audit_close(x);
    return rc;
}

void audit_close(audit_export_t *x)
{
    ledger_close(&x->ledger);
    sqlite3_close_v2(x->db);
    x->db = NULL;
}

/* --- writing ----------------------------------------------------------------------------------------- */

typedef struct {
    uint64_t *sizes; /* checkpoints, smallest first */
    char **notes;
    size_t n, cap;
} checkpoints_t;

static rb_err collect_checkpoint(void *ctx, uint64_t size, int64_t at_ms, const char *note)
{
    (void)at_ms;
    checkpoints_t *c = ctx;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint64_t *sizes = realloc(c->sizes, cap * sizeof *sizes);
        if (sizes != NULL)
            c->sizes = sizes;
        char **notes = realloc(c->notes, cap * sizeof *notes);
        if (notes != NULL)
            c->notes = notes;
        if (sizes == NULL || notes == NULL)
            return RB_ERR_NOMEM;
        c->cap = cap;
    }
    if ((c->notes[c->n] = strdup(note)) == NULL)
        return RB_ERR_NOMEM;
    c->sizes[c->n++] = size;
    return RB_OK;
}

static void checkpoints_free(checkpoints_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->notes[i]);
    free(c->notes);
    free(c->sizes);
    memset(c, 0, sizeof *c);
}

typedef struct {
    ledger_t *out;      /* SQLite form */
    FILE *f;            /* JSON-lines form */
    checkpoints_t *cps; /* for JSON lines: written after the leaf that reaches their size */
    size_t next_cp;
} writer_t;

/* Writes o as one line and drops it (jansson allocates through the wiping allocator, see pbjson_init). */
static rb_err write_line(FILE *f, json_t *o)
{
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    rb_err rc = line == NULL ? RB_ERR_NOMEM : fprintf(f, "%s\n", line) < 0 ? RB_ERR_IO : RB_OK;
    rbcrypto_wiping_free(line);
    json_decref(o);
    return rc;
}

static rb_err write_checkpoints_upto(writer_t *w, uint64_t size)
{
    rb_err rc = RB_OK;
    for (; rc == RB_OK && w->next_cp < w->cps->n && w->cps->sizes[w->next_cp] <= size; w->next_cp++)
        rc = write_line(w->f, json_pack("{s:s}", "checkpoint", w->cps->notes[w->next_cp]));
    return rc;
}

static rb_err write_leaf(void *ctx, uint64_t index, const uint8_t *leaf, size_t len)
{
    writer_t *w = ctx;
    if (w->out != NULL)
        return ledger_append_leaf(w->out, leaf, len);
    rb_err rc = write_line(w->f, leaf_line(index, leaf, len));
    return rc == RB_OK ? write_checkpoints_upto(w, index + 1) : rc;
}

rb_err audit_write(ledger_t *l, uint64_t size, const char *broker_card, audit_format_t format,
                   const char *path, char *err, size_t errlen)
{
    pbjson_init();
    /* Made here, never over a file that exists, and 0600 whatever the umask (SQLite would make it 0644): it
     * is the whole ledger, for an auditor to be handed, not for everyone on the host to read. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        snprintf(err, errlen, "%s exists: an export never replaces a file", path);
        return RB_ERR_EXISTS;
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    checkpoints_t cps = {0};
    writer_t w = {.cps = &cps};
    sqlite3 *db = NULL;
    rb_err rc = ledger_each_checkpoint(l, collect_checkpoint, &cps);
    while (cps.n > 0 && cps.sizes[cps.n - 1] > size) {
        free(cps.notes[--cps.n]);
    }
    /* JSON lines go through the descriptor made; SQLite opens the file again by its name. */
    if (format != AUDIT_SQLITE)
        w.f = fdopen(fd, "w");
    if (w.f == NULL)
        close(fd);
    if (rc == RB_OK && format == AUDIT_SQLITE) {
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK ? RB_OK : RB_ERR_IO;
        if (rc == RB_OK)
            rc = sqldb_exec(db, LEDGER_SCHEMA);
        if (rc == RB_OK)
            rc = sqldb_exec(db, "BEGIN");
        if (rc == RB_OK)
            rc = ledger_open(&w.out, db);
        if (rc == RB_OK)
            rc = ledger_set_meta(w.out, "broker_card", broker_card);
        for (size_t i = 0; rc == RB_OK && i < cps.n; i++)
            rc = ledger_add_checkpoint(w.out, cps.notes[i], cps.sizes[i], 0);
    } else if (rc == RB_OK) {
        if (w.f == NULL)
            rc = RB_ERR_IO;
        if (rc == RB_OK)
            rc = write_line(w.f, json_pack("{s:s}", "brokerCard", broker_card));
        if (rc == RB_OK)
            rc = write_checkpoints_upto(&w, 0);
    }
    if (rc == RB_OK)
        rc = ledger_each_leaf(l, 0, size, write_leaf, &w);
    if (rc == RB_OK && w.out != NULL && ledger_size(w.out) != size)
        rc = RB_ERR_MALFORMED;
    if (rc == RB_OK && db != NULL)
        rc = sqldb_exec(db, "COMMIT");
    if (w.f != NULL && fclose(w.f) != 0)
        rc = RB_ERR_IO;
    ledger_close(&w.out);
    if (db != NULL)
        sqlite3_close_v2(db);
    checkpoints_free(&cps);
    if (rc != RB_OK) {
        snprintf(err, errlen, "%s: export failed: %s", path, rb_strerror(rc));
        unlink(path);
    }
    return rc;
}

/* --- verification ------------------------------------------------------------------------------------ */

/* One leaf of a batch: read in order, parsed and hashed in parallel, then checked in order. */
typedef struct {
    uint64_t index;
    size_t offset, len; /* its bytes in the batch's arena */
    bool has_stored;    /* the export stores its leaf hash (ledger_nodes level 0) */
    merkle_hash_t stored, hash;
    Rb__LedgerEvent *e; /* NULL when it is not a canonical leaf (parse_rc says why) */
    rb_err parse_rc;
    rb_err header_rc; /* of its signed header's check, made in parallel (flush_headers) */
} item_t;

typedef struct {
    audit_export_t *x;
    bool signatures;
    item_t *items; /* the batch */
    size_t n_items;
    uint8_t *arena;
    size_t arena_len, arena_cap;
    item_t **jobs; /* leaves of the batch whose signed header is yet to be checked */
    size_t n_jobs;
    item_t *current;
    audit_stats_t *stats;
    char *why;
    size_t whylen;
    trust_t *trust;         /* every card registered so far */
    merkle_frontier_t tree; /* recomputed */
    checkpoints_t cps;
    size_t next_cp;
    char origin[NOTE_NAME_MAX + 1];
    bool initialising;      /* still in the leading run of registrations that init writes */
    bool after_admin_ok;    /* the previous leaf was an admin command that succeeded */
    uint64_t verified_size; /* the size of the last checkpoint verified */
} verifier_t;

#define PROBLEM_IN(why, whylen, ...) (snprintf((why), (whylen), __VA_ARGS__), RB_ERR_INVALID)
#define PROBLEM(v, ...)              PROBLEM_IN((v)->why, (v)->whylen, __VA_ARGS__)

static rb_err check_checkpoints(verifier_t *v)
{
    for (; v->next_cp < v->cps.n && v->cps.sizes[v->next_cp] == v->tree.size; v->next_cp++) {
        const char *note = v->cps.notes[v->next_cp];
        checkpoint_t cp;
        rb_err rc = checkpoint_open(note, strlen(note), v->origin, v->x->broker.sign_pk, &cp);
        if (rc != RB_OK)
            return PROBLEM(v, "checkpoint of size %" PRIu64 ": not signed by the broker's key %s (%s)",
                           v->tree.size, v->origin, rb_strerror(rc));
        if (cp.size != v->tree.size)
            return PROBLEM(v, "checkpoint filed under size %" PRIu64 " says size %" PRIu64, v->tree.size,
                           cp.size);
        merkle_hash_t root;
        merkle_frontier_root(&v->tree, &root);
        if (memcmp(root.bytes, cp.root.bytes, MERKLE_HASH_BYTES) != 0) {
            char want[65], found[65];
            keyfile_hex(root.bytes, 32, want);
            keyfile_hex(cp.root.bytes, 32, found);
            return PROBLEM(v,
                           "checkpoint of size %" PRIu64
                           ": root hash expected %s (recomputed from the leaves), "
                           "found %s: a leaf from %" PRIu64 " on was altered",
                           v->tree.size, want, found, v->verified_size);
        }
        v->stats->checkpoints++;
        v->verified_size = v->tree.size;
    }
    return RB_OK;
}

static bool same_bytes(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* The signed header of a "submitted" or "acked" leaf, against the cards registered before it. Read only:
 * it runs on every core at once (flush_headers). */
static rb_err check_header(const trust_t *trust, uint64_t i, const Rb__LedgerEvent *e, char *why,
                           size_t whylen)
{
    if (e->header_signature.len != RB_SIG_BYTES)
        return PROBLEM_IN(why, whylen, "leaf %" PRIu64 " (%s): no header signature", i, e->action);
    Rb__Header *h;
    card_t sender;
    rb_err rc = envelope_verify_signed_header(trust, e->header.data, e->header.len, e->header_signature.data,
                                              &h, &sender);
    if (rc != RB_OK)
        return PROBLEM_IN(why, whylen,
                          "leaf %" PRIu64 " (%s): the sender's signed header does not verify: %s", i,
                          e->action, rb_strerror(rc));
    bool acked = ledger_action_of(e->action) == ACTION_ACKED;
    const char *want_outcome = h->ack_status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? "accepted" : "rejected";
    if (!same_bytes(acked ? h->ref_message_id : h->message_id, e->message_id))
        rc = PROBLEM_IN(why, whylen, "leaf %" PRIu64 " (%s): message id is not the one in the signed header",
                        i, e->action);
    else if (strcmp(sender.name, e->party) != 0)
        rc = PROBLEM_IN(why, whylen,
                        "leaf %" PRIu64 " (%s): party expected %s (the header's signer), found %s", i,
                        e->action, sender.name, e->party);
    else if (acked && (h->kind != RB__KIND__KIND_ACK || strcmp(e->outcome, want_outcome) != 0))
        rc = PROBLEM_IN(why, whylen,
                        "leaf %" PRIu64 " (acked): outcome expected %s (from the signed ACK), found %s", i,
                        want_outcome, e->outcome);
    else if (!acked && trust_revoked(trust, sender.key_id))
        rc = PROBLEM_IN(why, whylen,
                        "leaf %" PRIu64 " (submitted): accepted after the sender's key was revoked", i);
    rb__header__free_unpacked(h, NULL);
    return rc;
}

/* A rotated key: registered on an admin's command, certified by a registered key of the same party. */
static rb_err check_key_added(verifier_t *v, uint64_t i, const Rb__LedgerEvent *e)
{
    card_t card;
    card_cert_t cert;
    const card_t *old;
    if (card_unpack(&card, e->card.data, e->card.len) != RB_OK ||
        card_cert_unpack(&cert, e->certification.data, e->certification.len) != RB_OK)
        return PROBLEM(v, "leaf %" PRIu64 " (key_added): the card or its certification does not parse", i);
    if ((old = trust_find_key(v->trust, cert.old_key_id)) == NULL ||
        card_cert_check(&cert, old, &card) != RB_OK ||
        trust_check(v->trust, old, (uint64_t)(e->at_ms / 1000)) != RB_OK)
        return PROBLEM(v,
                       "leaf %" PRIu64
                       " (key_added): %s: the new card is not certified by a key of the party "
                       "valid then",
                       i, card.name);
    if (trust_add(v->trust, &card) != RB_OK ||
        trust_retire(v->trust, cert.old_key_id, (uint64_t)(e->retires_ms / 1000)) != RB_OK)
        return PROBLEM(v, "leaf %" PRIu64 " (key_added): %s: key registered twice", i, card.name);
    v->stats->signatures += 2;
    return RB_OK;
}

static rb_err flush_headers(verifier_t *v);

static rb_err check_event(verifier_t *v, uint64_t i, const Rb__LedgerEvent *e)
{
    ledger_action_t a = ledger_action_of(e->action);
    if (a == ACTION_COUNT)
        return PROBLEM(v, "leaf %" PRIu64 " (%s): unknown action", i, e->action);
    const ledger_action_row_t *row = &ledger_actions[a];
    bool registration = row->signature == SIGNED_CARD;
    /* The headers waiting for their check are checked against the cards as they are before this change. */
    if (registration || row->signature == SIGNED_CERT || a == ACTION_KEY_REVOKED) {
        rb_err rc = flush_headers(v);
        if (rc != RB_OK)
            return rc;
    }
    bool after_admin = v->after_admin_ok;
    v->after_admin_ok = a == ACTION_ADMIN && strcmp(e->outcome, "ok") == 0;
    if ((row->rules & AFTER_ADMIN) && !after_admin && !(registration && v->initialising))
        return PROBLEM(v, "leaf %" PRIu64 " (%s): without an admin command right before it", i, e->action);
    if (row->signature == SIGNED_CERT)
        return check_key_added(v, i, e);
    if (registration) {
        card_t card;
        if (card_unpack(&card, e->card.data, e->card.len) != RB_OK)
            return PROBLEM(
                v, "leaf %" PRIu64 " (party_registered): the card does not parse or is not self-signed", i);
        if (i == 0 && !card_equal(&card, &v->x->broker))
            return PROBLEM(v, "leaf 0: expected the broker's own card (%s), found the card of %s",
                           v->x->broker.name, card.name);
        if (trust_add(v->trust, &card) != RB_OK)
            return PROBLEM(v, "leaf %" PRIu64 " (party_registered): %s: name or key registered twice", i,
                           card.name);
        v->stats->signatures++;
    } else if (i == 0) {
        return PROBLEM(v, "leaf 0: expected the broker's own card, found a %s event", e->action);
    }
    v->initialising = v->initialising && registration;
    if (!v->signatures)
        return RB_OK;
    if (row->signature == SIGNED_SENDER) {
        v->jobs[v->n_jobs++] = v->current; /* checked in parallel: flush_headers */
        return RB_OK;
    }
    if (row->signature == SIGNED_ADMIN && v->after_admin_ok) {
        const card_t *admin = trust_find_name(v->trust, e->party, (uint64_t)(e->at_ms / 1000));
        if (admin == NULL || admin->role != CARD_ROLE_ADMIN)
            return PROBLEM(v, "leaf %" PRIu64 " (admin): %s is not a registered admin", i, e->party);
        if (e->admin_signature.len != RB_SIG_BYTES ||
            trust_find_signer(v->trust, e->party, (uint64_t)(e->at_ms / 1000), RB_DOMAIN_ADMIN,
                              e->admin_command.data, e->admin_command.len, e->admin_signature.data) == NULL)
            return PROBLEM(v,
                           "leaf %" PRIu64 " (admin): the command's signature does not verify with any key "
                           "%s held then",
                           i, e->party);
        v->stats->signatures++;
    }
    if (a == ACTION_KEY_REVOKED &&
        (e->key_id.len != RB_KEY_ID_BYTES ||
         trust_revoke(v->trust, e->key_id.data, (uint64_t)(e->since_ms / 1000)) != RB_OK))
        return PROBLEM(v, "leaf %" PRIu64 " (key_revoked): not a registered key", i);
    return RB_OK;
}

/* Runs fn over [0, n) split across every core: the calling thread takes the first slice. */
typedef void (*slice_fn)(verifier_t *v, size_t from, size_t to);

typedef struct {
    verifier_t *v;
    slice_fn fn;
    size_t from, to;
} slice_t;

#define THREADS_MAX 16

static void *run_slice(void *arg)
{
    slice_t *s = arg;
    s->fn(s->v, s->from, s->to);
    return NULL;
}

static void parallel(verifier_t *v, slice_fn fn, size_t n)
{
    slice_t slices[THREADS_MAX];
    pthread_t threads[THREADS_MAX];
    bool started[THREADS_MAX] = {false};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t k = cores < 1 ? 1 : cores > THREADS_MAX ? THREADS_MAX : (size_t)cores;
    if (n < 64 * k)
        k = 1; /* not worth a thread */
    for (size_t i = 0; i < k; i++) {
        slices[i].v = v;
        slices[i].fn = fn;
        slices[i].from = n * i / k;
        slices[i].to = n * (i + 1) / k;
    }
    for (size_t i = 1; i < k; i++)
        started[i] = pthread_create(&threads[i], NULL, run_slice, &slices[i]) == 0;
    run_slice(&slices[0]);
    for (size_t i = 1; i < k; i++) {
        if (started[i])
            pthread_join(threads[i], NULL);
        else
            run_slice(&slices[i]);
    }
}

static void check_headers_slice(verifier_t *v, size_t from, size_t to)
{
    char why[600]; /* scratch: the message of a failure is made again in order (flush_headers) */
    for (size_t j = from; j < to; j++)
        v->jobs[j]->header_rc = check_header(v->trust, v->jobs[j]->index, v->jobs[j]->e, why, sizeof why);
}

/* Checks the signed headers waiting, on every core (the cards do not change meanwhile); the first that
 * fails, in leaf order, is the problem, its message made again here. */
static rb_err flush_headers(verifier_t *v)
{
    parallel(v, check_headers_slice, v->n_jobs);
    size_t n = v->n_jobs;
    v->n_jobs = 0;
    for (size_t j = 0; j < n; j++)
        if (v->jobs[j]->header_rc != RB_OK)
            return check_header(v->trust, v->jobs[j]->index, v->jobs[j]->e, v->why, v->whylen);
    v->stats->signatures += n;
    return RB_OK;
}

static void parse_slice(verifier_t *v, size_t from, size_t to)
{
    for (size_t j = from; j < to; j++) {
        item_t *it = &v->items[j];
        const uint8_t *leaf = v->arena + it->offset;
        it->parse_rc = ledger_parse_leaf(leaf, it->len, &it->e);
        merkle_leaf_hash(leaf, it->len, &it->hash);
    }
}

/* Each event freed by the thread that parsed it: malloc frees fastest into its own arena. */
static void free_slice(verifier_t *v, size_t from, size_t to)
{
    for (size_t j = from; j < to; j++)
        if (v->items[j].e != NULL)
            rb__ledger_event__free_unpacked(v->items[j].e, NULL);
}

/* The checks of one leaf that need the leaves before it, in order. */
static rb_err verify_item(verifier_t *v, item_t *it)
{
    uint64_t index = it->index;
    if (index != v->tree.size)
        return PROBLEM(v, "leaf %" PRIu64 " is missing (the next stored leaf is %" PRIu64 ")", v->tree.size,
                       index);
    if (it->parse_rc != RB_OK)
        return PROBLEM(v, "leaf %" PRIu64 ": not a canonical version-1 LedgerEvent (%s)", index,
                       rb_strerror(it->parse_rc));
    if (it->e->index != index)
        return PROBLEM(v, "leaf %" PRIu64 ": its index field says %" PRIu64 " (moved or reordered)", index,
                       it->e->index);
    v->current = it;
    rb_err rc = check_event(v, index, it->e);
    if (rc != RB_OK)
        return rc;
    /* An export's stored tree names the altered leaf exactly; the checkpoints catch it regardless. */
    if (it->has_stored && memcmp(it->hash.bytes, it->stored.bytes, MERKLE_HASH_BYTES) != 0)
        return PROBLEM(
            v, "leaf %" PRIu64 ": its bytes do not hash to the leaf hash stored with the export (altered)",
            index);
    merkle_frontier_append(&v->tree, &it->hash, NULL, NULL);
    v->stats->leaves++;
    return check_checkpoints(v);
}

/* Parses and hashes the batch on every core, checks it in order, then its signed headers on every core.
 * A problem found in order is reported only after the headers before it, which may hold an earlier one. */
static rb_err verify_batch(verifier_t *v)
{
    parallel(v, parse_slice, v->n_items);
    rb_err rc = RB_OK;
    for (size_t j = 0; rc == RB_OK && j < v->n_items; j++)
        rc = verify_item(v, &v->items[j]);
    rb_err headers = flush_headers(v);
    if (headers != RB_OK)
        rc = headers;
    parallel(v, free_slice, v->n_items);
    v->n_items = 0;
    v->arena_len = 0;
    return rc;
}

#define BATCH_LEAVES 8192
#define LEVEL0_END   ((int64_t)1 << 48) /* ledger_nodes ids below it are the leaf hashes (ledger.c) */

/* Adds one leaf to the batch, with its stored hash if the export has one (nodes steps through the leaf
 * hashes in index order beside the leaves: one pass, no lookup per leaf). */
static rb_err add_item(verifier_t *v, uint64_t index, const uint8_t *leaf, size_t len, sqlite3_stmt *nodes,
                       int *node_step)
{
    if (v->arena_len + len > v->arena_cap) {
        size_t cap = (v->arena_cap ? v->arena_cap * 2 : 1 << 22) + len;
        uint8_t *arena = realloc(v->arena, cap);
        if (arena == NULL)
            return RB_ERR_NOMEM;
        v->arena = arena;
        v->arena_cap = cap;
    }
    item_t *it = &v->items[v->n_items++];
    memset(it, 0, sizeof *it);
    it->index = index;
    it->offset = v->arena_len;
    it->len = len;
    if (len > 0)
        memcpy(v->arena + v->arena_len, leaf, len);
    v->arena_len += len;
    while (*node_step == SQLITE_ROW && sqlite3_column_int64(nodes, 0) < (int64_t)index)
        *node_step = sqlite3_step(nodes);
    if (*node_step == SQLITE_ROW && sqlite3_column_int64(nodes, 0) == (int64_t)index &&
        sqlite3_column_bytes(nodes, 1) == MERKLE_HASH_BYTES) {
        it->has_stored = true;
        memcpy(it->stored.bytes, sqlite3_column_blob(nodes, 1), MERKLE_HASH_BYTES);
    }
    return RB_OK;
}

static rb_err verify_leaves(verifier_t *v)
{
    sqlite3_stmt *leaves =
        sqldb_prepare(v->x->db, "SELECT idx, leaf FROM ledger_leaves WHERE idx >= 0 ORDER BY idx", "");
    sqlite3_stmt *nodes = sqldb_prepare(
        v->x->db, "SELECT id, hash FROM ledger_nodes WHERE id >= 0 AND id < ? ORDER BY id", "i", LEVEL0_END);
    rb_err rc = leaves != NULL && nodes != NULL ? RB_OK : RB_ERR_IO;
    int step = SQLITE_DONE, node_step = nodes != NULL ? sqlite3_step(nodes) : SQLITE_DONE;
    while (rc == RB_OK && (step = sqlite3_step(leaves)) == SQLITE_ROW) {
        rc = add_item(v, (uint64_t)sqlite3_column_int64(leaves, 0), sqlite3_column_blob(leaves, 1),
                      (size_t)sqlite3_column_bytes(leaves, 1), nodes, &node_step);
        if (rc == RB_OK && v->n_items == BATCH_LEAVES)
            rc = verify_batch(v);
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    if (rc == RB_OK && node_step != SQLITE_ROW && node_step != SQLITE_DONE)
        rc = RB_ERR_IO;
    if (rc == RB_OK)
        rc = verify_batch(v);
    sqlite3_finalize(leaves);
    sqlite3_finalize(nodes);
    return rc;
}

rb_err audit_verify(audit_export_t *x, bool signatures, audit_stats_t *stats, char *why, size_t whylen)
{
    memset(stats, 0, sizeof *stats);
    verifier_t v = {
        .x = x, .signatures = signatures, .stats = stats, .why = why, .whylen = whylen, .initialising = true};
    ledger_origin(&x->broker, v.origin);
    v.items = calloc(BATCH_LEAVES, sizeof *v.items);
    v.jobs = calloc(BATCH_LEAVES, sizeof(item_t *));
    rb_err rc = v.items != NULL && v.jobs != NULL ? trust_new(&v.trust) : RB_ERR_NOMEM;
    if (rc == RB_OK)
        rc = ledger_each_checkpoint(x->ledger, collect_checkpoint, &v.cps);
    if (rc == RB_OK)
        rc = check_checkpoints(&v); /* a checkpoint of the empty tree, if any */
    if (rc == RB_OK)
        rc = verify_leaves(&v);
    if (rc == RB_OK && v.next_cp < v.cps.n)
        rc = PROBLEM(&v, "checkpoint of size %" PRIu64 ": beyond the %" PRIu64 " leaves of the export",
                     v.cps.sizes[v.next_cp], v.tree.size);
    if (rc == RB_OK && v.cps.n == 0)
        rc = PROBLEM(&v, "no checkpoint: nothing in the export is signed by the broker");
    if (rc == RB_OK)
        stats->uncovered = v.tree.size - v.cps.sizes[v.cps.n - 1];
    if (rc != RB_OK && rc != RB_ERR_INVALID)
        snprintf(why, whylen, "reading the export: %s", rb_strerror(rc));
    trust_free(&v.trust);
    checkpoints_free(&v.cps);
    free(v.items);
    free(v.jobs);
    free(v.arena);
    return rc;
}

/* --- replay ---------------------------------------------------------------------------------------------- */

typedef struct {
    sqlite3 *db; /* in memory: one row per message, its state as the events so far make it */
    FILE *out;
    int problems;
} replayer_t;

static void flag(replayer_t *r, uint64_t index, const char *what, const uint8_t *id)
{
    char hex[33] = "-";
    if (id != NULL)
        wire_id_hex(id, hex);
    fprintf(r->out, "impossible: leaf %" PRIu64 ": %s (message %s)\n", index, what, hex);
    r->problems++;
}

/* The message's state: false when it was never submitted. */
static bool replay_state(replayer_t *r, const uint8_t *id, char state[16], int *attempts)
{
    sqlite3_stmt *st = sqldb_prepare(r->db, "SELECT state, attempts FROM msgs WHERE id = ?", "b", id, 16);
    bool found = st != NULL && sqlite3_step(st) == SQLITE_ROW;
    if (found) {
        snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 0));
        *attempts = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    return found;
}

/* Moves the leaf's message as the action's row of ledger_events.h says, and flags a move it does not allow. */
static rb_err replay_move(replayer_t *r, uint64_t index, const Rb__LedgerEvent *e, ledger_action_t a)
{
    const ledger_action_row_t *row = &ledger_actions[a];
    const uint8_t *id = e->message_id.len == 16 ? e->message_id.data : NULL;
    char state[16] = "", what[96];
    int attempts = 0;
    bool known = id != NULL && replay_state(r, id, state, &attempts);
    if (!known && !(row->from & FROM_NEW)) {
        flag(r, index, "an event about a message never submitted", id);
    } else if (known && !ledger_moves(a, message_state_of(state))) {
        snprintf(what, sizeof what, "%s while the message is %s", e->action, state);
        flag(r, index, what, id);
    } else if (row->rules & AFTER_DELIVERY && attempts == 0) {
        snprintf(what, sizeof what, "%s before any delivery", e->action);
        flag(r, index, what, id);
    }
    rb_err rc = RB_OK;
    if (!known && id != NULL && row->from & FROM_NEW) {
        Rb__Header *h = rb__header__unpack(NULL, e->header.len, e->header.data);
        if (h == NULL)
            flag(r, index, "submitted without a readable header", id);
        else
            rc = sqldb_run(sqldb_prepare(
                r->db,
                "INSERT INTO msgs(id, kind, sender, recipient, submitted_ms, first_leaf, state) "
                "VALUES(?, ?, ?, ?, ?, ?, ?)",
                "bittiit", id, 16, (int64_t)h->kind, h->sender, h->recipient, e->at_ms, (int64_t)index,
                message_states[row->to]));
        if (h != NULL)
            rb__header__free_unpacked(h, NULL);
    } else if (known && !(row->from & FROM_NEW)) {
        int64_t n = row->rules & NEW_ATTEMPTS ? 0 : attempts + (row->rules & COUNTS_ATTEMPT ? 1 : 0);
        rc = sqldb_run(sqldb_prepare(r->db, "UPDATE msgs SET state = ?, attempts = ? WHERE id = ?", "tib",
                                     row->to == STATE_SAME ? state : message_states[row->to], n, id, 16));
        if (rc == RB_OK && a == ACTION_ACKED) /* on the referral it answers */
            rc = sqldb_run(sqldb_prepare(r->db, "UPDATE msgs SET ack_status = ?, acked_ms = ? WHERE id = ?",
                                         "iib", (int64_t)(strcmp(e->outcome, "accepted") == 0 ? 1 : 2),
                                         e->at_ms, id, 16));
    }
    return rc;
}

static rb_err replay_leaf(void *ctx, uint64_t index, const uint8_t *leaf, size_t len)
{
    replayer_t *r = ctx;
    Rb__LedgerEvent *e;
    rb_err rc = ledger_parse_leaf(leaf, len, &e);
    if (rc != RB_OK)
        return rc;
    ledger_action_t a = ledger_action_of(e->action);
    if (a == ACTION_COUNT) {
        char what[96];
        snprintf(what, sizeof what, "unknown action %.60s", e->action);
        flag(r, index, what, e->message_id.len == 16 ? e->message_id.data : NULL);
    } else if (ledger_actions[a].from != 0) {
        rc = replay_move(r, index, e, a);
    }
    rb__ledger_event__free_unpacked(e, NULL);
    return rc;
}

static void print_totals(replayer_t *r)
{
    sqlite3_stmt *st = sqldb_prepare(
        r->db,
        "SELECT count(*), sum(kind IN (1, 2, 3)), sum(kind = 4), sum(state = 'confirmed'),"
        " sum(state = 'dead'), sum(state = 'queued'), sum(ack_status = 1),"
        " sum(ack_status = 2), sum(kind IN (1, 2, 3) AND state = 'confirmed' AND ack_status IS NULL)"
        " FROM msgs",
        "");
    if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
        fprintf(r->out,
                "messages %d (referrals and follow-ups %d, ACKs %d): confirmed %d, dead letters %d, not yet "
                "delivered or confirmed %d; accepted %d, rejected %d, delivered and awaiting an ACK %d\n",
                sqlite3_column_int(st, 0), sqlite3_column_int(st, 1), sqlite3_column_int(st, 2),
                sqlite3_column_int(st, 3), sqlite3_column_int(st, 4), sqlite3_column_int(st, 5),
                sqlite3_column_int(st, 6), sqlite3_column_int(st, 7), sqlite3_column_int(st, 8));
    sqlite3_finalize(st);
    int64_t n = 0;
    sqldb_int(sqldb_prepare(r->db, "SELECT count(*) FROM msgs WHERE acked_ms IS NOT NULL", ""), &n);
    fprintf(r->out, "time to ACK (%lld ACKed):", (long long)n);
    static const int percents[] = {50, 90, 99, 100};
    for (size_t i = 0; n > 0 && i < sizeof percents / sizeof percents[0]; i++) {
        int64_t ms = 0;
        sqldb_int(sqldb_prepare(r->db,
                                "SELECT acked_ms - submitted_ms FROM msgs WHERE acked_ms IS NOT NULL "
                                "ORDER BY acked_ms - submitted_ms LIMIT 1 OFFSET ?",
                                "i", (int64_t)((n - 1) * percents[i] / 100)),
                  &ms);
        fprintf(r->out, " p%d %.3f s", percents[i], (double)ms / 1000.0);
    }
    fprintf(r->out, "\n");
}

/* Every difference between the replayed states and the broker's messages table. */
static rb_err compare(replayer_t *r, const char *broker_db, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    char *uri = sqlite3_mprintf("file:%s?mode=ro", broker_db);
    int ok = uri != NULL && sqlite3_exec(r->db, "PRAGMA trusted_schema=OFF", NULL, NULL, NULL) == SQLITE_OK;
    rb_err rc = ok && sqldb_run(sqldb_prepare(r->db, "ATTACH DATABASE ? AS broker", "t", uri)) == RB_OK
                    ? RB_OK
                    : RB_ERR_IO;
    sqlite3_free(uri);
    if (rc == RB_OK)
        st = sqldb_prepare(
            r->db,
            "SELECT coalesce(m.id, b.message_id), m.state, b.state, m.attempts, b.attempts, m.ack_status,"
            " b.ack_status FROM msgs m FULL JOIN broker.messages b ON b.message_id = m.id "
            "WHERE m.id IS NULL OR b.message_id IS NULL OR m.state != b.state OR m.attempts != b.attempts"
            " OR m.ack_status IS NOT b.ack_status ORDER BY 1",
            "");
    if (rc == RB_OK && st == NULL)
        rc = RB_ERR_IO;
    int step = SQLITE_DONE;
    while (rc == RB_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        char hex[33] = "?";
        if (sqlite3_column_bytes(st, 0) == 16)
            wire_id_hex(sqlite3_column_blob(st, 0), hex);
        fprintf(r->out,
                "difference: message %s: ledger says %s, %d attempts, ACK %d; broker says %s, %d attempts, "
                "ACK %d\n",
                hex, sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "(absent)",
                sqlite3_column_int(st, 3), sqlite3_column_int(st, 5),
                sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "(absent)",
                sqlite3_column_int(st, 4), sqlite3_column_int(st, 6));
        r->problems++;
    }
    if (rc == RB_OK && step != SQLITE_DONE)
        rc = RB_ERR_IO;
    sqlite3_finalize(st);
    if (rc != RB_OK)
        snprintf(err, errlen,
                 "%s: cannot read the broker's tables (is the broker running? compare a stopped "
                 "broker or a backup): %s",
                 broker_db, sqlite3_errmsg(r->db));
    return rc;
}

rb_err audit_replay(audit_export_t *x, const char *broker_db, FILE *out, int *problems, char *err,
                    size_t errlen)
{
    replayer_t r = {.out = out};
    rb_err rc =
        sqlite3_open_v2(":memory:", &r.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                        NULL) == SQLITE_OK
            ? RB_OK
            : RB_ERR_NOMEM;
    if (rc == RB_OK)
        rc = sqldb_exec(r.db,
                        "CREATE TABLE msgs(id BLOB PRIMARY KEY, kind INTEGER, sender TEXT, recipient TEXT,"
                        " submitted_ms INTEGER, first_leaf INTEGER, state TEXT NOT NULL DEFAULT 'queued',"
                        " attempts INTEGER NOT NULL DEFAULT 0, ack_status INTEGER, acked_ms INTEGER)");
    if (rc == RB_OK)
        rc = ledger_each_leaf(x->ledger, 0, UINT64_MAX, replay_leaf, &r);
    if (rc == RB_OK)
        print_totals(&r);
    else
        snprintf(err, errlen, "replaying the ledger: %s", rb_strerror(rc));
    if (rc == RB_OK && broker_db != NULL)
        rc = compare(&r, broker_db, err, errlen);
    if (rc == RB_OK)
        fprintf(out, "%d problem%s\n", r.problems, r.problems == 1 ? "" : "s");
    *problems = r.problems;
    sqlite3_close(r.db);
    return rc;
}
