/* limit.c -- part 7 of `make bench`: what the design costs per referral on this machine, measured from the
 * libsodium and SQLite primitives it is made of, and the rates that cost allows (docs/PERFORMANCE.md, "The
 * limit", gives the model: which primitives, how many of each, and why).
 *
 *   limit [--dir DIR] [--cores N] [--batch G]
 * DIR holds the scratch SQLite file (the file system the broker's data would be on); N the cores the parties
 * share (2); G the referrals one group commit carries (64). Last line: RESULT {json}. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "identity.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"
#include "sqldb.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(rb_err rc, const char *what)
{
    if (rc != RB_OK) {
        fprintf(stderr, "limit: %s: %s\n", what, rb_strerror(rc));
        exit(1);
    }
}

/* Runs op until at least 0.3 s have passed; microseconds per call. */
typedef void (*op_fn)(void *ctx, size_t i);
static double per_call_us(op_fn op, void *ctx)
{
    size_t n = 0, batch = 1;
    double t0 = now_s(), t;
    do {
        for (size_t i = 0; i < batch; i++)
            op(ctx, n + i);
        n += batch;
        batch *= 2;
    } while ((t = now_s() - t0) < 0.3);
    return t * 1e6 / (double)n;
}

/* --- crypto ------------------------------------------------------------------------------------------------ */

typedef struct {
    identity_t *source, *sink;
    uint8_t header[320], sig[RB_SIG_BYTES], big[4096], *env;
    size_t env_len;
    uint8_t *ack;
    size_t ack_len;
    trust_t *trust_sink, *trust_source;
    uint8_t digest[RB_HASH_BYTES];
} crypto_t;

static void op_verify(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    check(rbcrypto_verify("bench", c->header, sizeof c->header, c->sig, identity_card(c->source)->sign_pk),
          "verify");
}

static void op_sign(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    check(rbcrypto_sign("bench", c->header, sizeof c->header, identity_sign_sk(c->source), c->sig), "sign");
}

static void op_sha256_4k(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    rbcrypto_sha256(c->big, sizeof c->big, c->digest);
}

static void op_sha256_node(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    rbcrypto_sha256(c->big, 65, c->digest); /* an RFC 6962 node: 0x01 || left || right */
}

/* crypto_box_seal and its opening, of 4 KiB and of an ACK's 256 bytes */
static uint8_t boxed[4096 + RB_SEAL_OVERHEAD], opened[4096];
static void box_seal(crypto_t *c, size_t len)
{
    check(rbcrypto_seal(c->big, len, identity_card(c->sink)->box_pk, boxed), "box seal");
}
static void box_open(crypto_t *c, size_t len)
{
    check(rbcrypto_seal_open(boxed, len + RB_SEAL_OVERHEAD, identity_card(c->sink)->box_pk,
                             identity_box_sk(c->sink), opened),
          "box open");
}
static void op_box_seal_4k(void *ctx, size_t i)
{
    (void)i;
    box_seal(ctx, 4096);
}
static void op_box_open_4k(void *ctx, size_t i)
{
    (void)i;
    box_open(ctx, 4096);
}
static void op_box_seal_ack(void *ctx, size_t i)
{
    (void)i;
    box_seal(ctx, 256);
}
static void op_box_open_ack(void *ctx, size_t i)
{
    (void)i;
    box_open(ctx, 256);
}

static uint8_t *referral_body(size_t size, size_t *len)
{
    static char narrative[8192];
    memset(narrative, 'x', size - 900);
    narrative[size - 900] = '\0';
    Rb__Referral r = RB__REFERRAL__INIT;
    r.schema_version = 1;
    r.agency_ori = "ILCPD0000";
    r.rd_number = "BN00000001";
    r.revision = 1;
    r.narrative = narrative;
    *len = rb__referral__get_packed_size(&r);
    uint8_t *body = malloc(*len);
    rb__referral__pack(&r, body);
    return body;
}

static void op_seal_referral(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    size_t len, env_len;
    uint8_t *body = referral_body(4096, &len), *env;
    msg_id_t id;
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = (int64_t)time(NULL) * 1000};
    check(envelope_seal(c->source, identity_card(c->sink), &p, body, len, &id, &env, &env_len), "seal");
    free(body);
    free(env);
}

static void op_open_referral(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    envelope_opened_t o;
    check(envelope_open(c->sink, c->trust_sink, c->env, c->env_len, &o), "open");
    envelope_opened_clear(&o);
}

static void op_verify_header(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    Rb__Header *h;
    card_t sender;
    check(envelope_verify_header(c->trust_sink, c->env, c->env_len, &h, &sender), "verify header");
    rb__header__free_unpacked(h, NULL);
}

static void op_seal_ack(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    Rb__AckBody a = RB__ACK_BODY__INIT;
    a.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
    a.intake_reference = "SAO-2026-000001";
    uint8_t body[128], *env;
    size_t len = rb__ack_body__pack(&a, body), env_len;
    msg_id_t id, ref = {{1}};
    envelope_params_t p = {.kind = RB__KIND__KIND_ACK,
                           .ref = &ref,
                           .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                           .created_ms = (int64_t)time(NULL) * 1000};
    check(envelope_seal(c->sink, identity_card(c->source), &p, body, len, &id, &env, &env_len), "seal ACK");
    if (c->ack == NULL) {
        c->ack = env;
        c->ack_len = env_len;
    } else {
        free(env);
    }
}

static void op_open_ack(void *ctx, size_t i)
{
    crypto_t *c = ctx;
    (void)i;
    envelope_opened_t o;
    check(envelope_open(c->source, c->trust_source, c->ack, c->ack_len, &o), "open ACK");
    envelope_opened_clear(&o);
}

/* --- SQLite: the statements' shapes the broker and adapters run, on a real file, WAL, synchronous=FULL --- */

typedef struct {
    sqlite3 *db;
    uint8_t blob[4096];
    size_t base; /* keys already used */
} sql_t;

static void op_insert_4k(void *ctx, size_t i)
{
    sql_t *s = ctx;
    uint64_t key[2] = {s->base + i, 0};
    check(sqldb_run(sqldb_prepare(s->db,
                                  "INSERT INTO msgs(id, body, state, attempts, next) VALUES(?, ?, 'q', 0, ?)",
                                  "bbi", key, 16, s->blob, 4096, (int64_t)i)),
          "insert 4 KiB");
}

static void op_insert_leaf(void *ctx, size_t i)
{
    sql_t *s = ctx;
    uint64_t key[2] = {s->base + i, 1};
    check(sqldb_run(sqldb_prepare(s->db, "INSERT INTO leaves(leaf) VALUES(?)", "b", s->blob, 400)),
          "insert leaf");
    check(sqldb_run(sqldb_prepare(s->db, "INSERT INTO msg_leaves(id, leaf) VALUES(?, ?)", "bi", key, 16,
                                  (int64_t)(s->base + i))),
          "insert leaf index");
}

static void op_update(void *ctx, size_t i)
{
    sql_t *s = ctx;
    uint64_t key[2] = {i % s->base, 0};
    check(sqldb_run(sqldb_prepare(s->db, "UPDATE msgs SET attempts = attempts + 1, next = ? WHERE id = ?",
                                  "ib", (int64_t)i, key, 16)),
          "update");
}

static void op_select(void *ctx, size_t i)
{
    sql_t *s = ctx;
    uint64_t key[2] = {i % s->base, 0};
    int64_t n;
    check(sqldb_int(sqldb_prepare(s->db, "SELECT attempts FROM msgs WHERE id = ?", "b", key, 16), &n),
          "select");
}

static void op_commit(void *ctx, size_t i)
{
    sql_t *s = ctx;
    uint64_t key[2] = {i, 2};
    check(sqldb_exec(s->db, "BEGIN IMMEDIATE"), "begin");
    check(sqldb_run(sqldb_prepare(s->db, "INSERT INTO msg_leaves(id, leaf) VALUES(?, ?)", "bi", key, 16,
                                  (int64_t)i)),
          "insert");
    check(sqldb_exec(s->db, "COMMIT"), "commit");
}

/* op inside one transaction, committed after: the statement's own cost, without the fsync. */
static double in_transaction_us(sql_t *s, op_fn op)
{
    check(sqldb_exec(s->db, "BEGIN IMMEDIATE"), "begin");
    double us = per_call_us(op, s);
    check(sqldb_exec(s->db, "COMMIT"), "commit");
    return us;
}

int main(int argc, char **argv)
{
    const char *dir = "/tmp";
    double cores = 2, batch = 64;
    static const struct option opts[] = {
        {"dir", 1, 0, 'd'}, {"cores", 1, 0, 'c'}, {"batch", 1, 0, 'g'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'd')
            dir = optarg;
        else if (o == 'c')
            cores = strtod(optarg, NULL);
        else if (o == 'g')
            batch = strtod(optarg, NULL);
        else
            return fprintf(stderr, "usage: limit [--dir DIR] [--cores N] [--batch G]\n"), 2;
    }
    if (!(cores >= 1 && batch >= 1))
        return fprintf(stderr, "limit: --cores and --batch take a number, at least 1\n"), 2;
    check(rbcrypto_init(), "libsodium");
    crypto_t c = {0};
    check(identity_generate(&c.source, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", (uint64_t)time(NULL),
                            86400 * 365),
          "identity");
    check(identity_generate(&c.sink, "sao-intake", CARD_ROLE_SINK, "ILCCSAO00", (uint64_t)time(NULL),
                            86400 * 365),
          "identity");
    check(trust_new(&c.trust_sink), "trust");
    check(trust_new(&c.trust_source), "trust");
    check(trust_add(c.trust_sink, identity_card(c.source)), "trust");
    check(trust_add(c.trust_source, identity_card(c.sink)), "trust");
    rbcrypto_random(c.header, sizeof c.header);
    rbcrypto_random(c.big, sizeof c.big);
    op_sign(&c, 0);
    size_t len;
    uint8_t *body = referral_body(4096, &len);
    msg_id_t id;
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = (int64_t)time(NULL) * 1000};
    check(envelope_seal(c.source, identity_card(c.sink), &p, body, len, &id, &c.env, &c.env_len), "seal");
    free(body);
    op_seal_ack(&c, 0);

    double verify = per_call_us(op_verify, &c), sign = per_call_us(op_sign, &c);
    double sha4k = per_call_us(op_sha256_4k, &c), node = per_call_us(op_sha256_node, &c);
    double verify_header = per_call_us(op_verify_header, &c);
    double box_seal_4k = per_call_us(op_box_seal_4k, &c);
    op_box_seal_4k(&c, 0);
    double box_open_4k = per_call_us(op_box_open_4k, &c), box_seal_ack = per_call_us(op_box_seal_ack, &c);
    op_box_seal_ack(&c, 0);
    double box_open_ack = per_call_us(op_box_open_ack, &c);
    /* An envelope is sealed with two signatures (the inner content, the clear header), one crypto_box_seal
     * and a hash, and opened with two verifications, one crypto_box_seal_open and a hash: from the primitives.
     * The envelope code as built is measured too, to show what it adds. */
    double seal = 2 * sign + box_seal_4k + sha4k, open = 2 * verify + box_open_4k + sha4k;
    double seal_ack = 2 * sign + box_seal_ack + node, open_ack = 2 * verify + box_open_ack + node;
    double built_seal = per_call_us(op_seal_referral, &c), built_open = per_call_us(op_open_referral, &c);
    double built_seal_ack = per_call_us(op_seal_ack, &c), built_open_ack = per_call_us(op_open_ack, &c);

    char path[512], err[256];
    snprintf(path, sizeof path, "%s/rb-limit-%d.db", dir, (int)getpid());
    static const sqldb_step_t steps[] = {
        {.sql = "CREATE TABLE msgs(id BLOB PRIMARY KEY, body BLOB, state TEXT, attempts INT, next INT);"
                "CREATE INDEX msgs_next ON msgs(state, next);"
                "CREATE TABLE leaves(idx INTEGER PRIMARY KEY, leaf BLOB);"
                "CREATE TABLE msg_leaves(id BLOB, leaf INT, PRIMARY KEY(id, leaf)) WITHOUT ROWID;"}};
    static const sqldb_schema_t schema = {"bench", steps, 1};
    sql_t s = {.base = 0};
    check(sqldb_open(&s.db, path, SQLDB_CREATE | SQLDB_EXCLUSIVE, &schema, err, sizeof err), err);
    sqldb_keep_statements(s.db);
    rbcrypto_random(s.blob, sizeof s.blob);
    double insert_4k = in_transaction_us(&s, op_insert_4k);
    int64_t rows;
    check(sqldb_int(sqldb_prepare(s.db, "SELECT count(*) FROM msgs", ""), &rows), "count");
    s.base = (size_t)rows;
    double leaf = in_transaction_us(&s, op_insert_leaf);
    double update = in_transaction_us(&s, op_update), select = in_transaction_us(&s, op_select);
    double commit = per_call_us(op_commit, &s);
    sqldb_close(s.db);
    char wal[600], shm[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    unlink(path), unlink(wal), unlink(shm);

    /* The broker, per referral closed: two header verifications (the referral's and the ACK's), both
     * envelopes hashed (4 KiB and the ACK, taken as a node hash), seven ledger leaves each hashed with about
     * one tree node, a checkpoint signed per group commit; the referral and ACK rows, seven leaves with their
     * message index, five updates (two attempts, two confirms, the ACK), four look-ups (two duplicate checks,
     * the ACK's referral, a delivery's next), and three commits per group (submissions, deliveries to each
     * side). The clients: each of the two receipts is a checkpoint verification and about 30 proof hashes. */
    double broker_crypto = 2 * verify + sha4k + node + 14 * node + sign / batch;
    double broker_sql = 2 * insert_4k + 7 * leaf + 5 * update + 4 * select + 3 * commit / batch;
    double broker = broker_crypto + broker_sql;
    double clients = 2 * (verify + 30 * node);
    /* SQLite has one writer: its share runs on one core, whatever the cores. */
    double path_limit = cores * 1e6 / (broker + clients);
    if (path_limit > 1e6 / broker_sql)
        path_limit = 1e6 / broker_sql;
    double broker_only = cores * 1e6 / broker;
    if (broker_only > 1e6 / broker_sql)
        broker_only = 1e6 / broker_sql;
    /* The full pipeline adds both adapters: the police adapter seals the referral and opens the ACK; the
     * intake adapter opens the referral and seals the ACK; each stores what it handles (a 4 KiB row, an
     * ACK row, three updates, three commits per group) and the intake files the case (four rows). */
    double adapters = seal + open + seal_ack + open_ack +
                      2 * (insert_4k + leaf + 3 * update + 3 * commit / batch) + 4 * leaf;
    double pipeline_limit = cores * 1e6 / (broker + clients + adapters);
    printf("primitive                          us\n");
    printf("ed25519 verify (320 B)        %8.2f\nheader verify, as built       %8.2f\ned25519 sign           "
           "       "
           "%8.2f\nsha256 4 KiB                  %8.2f\nsha256 node (65 B)            %8.2f\n",
           verify, verify_header, sign, sha4k, node);
    printf("crypto_box_seal 4 KiB         %8.2f\ncrypto_box_seal_open 4 KiB    %8.2f\ncrypto_box_seal 256 B  "
           "       "
           "%8.2f\ncrypto_box_seal_open 256 B    %8.2f\n",
           box_seal_4k, box_open_4k, box_seal_ack, box_open_ack);
    printf("envelope, from the primitives / as built: seal referral %.1f / %.1f, open referral %.1f / %.1f, "
           "seal ACK "
           "%.1f / %.1f, open ACK %.1f / %.1f\n",
           seal, built_seal, open, built_open, seal_ack, built_seal_ack, open_ack, built_open_ack);
    printf("sqlite insert 4 KiB row       %8.2f\nsqlite insert leaf + index    %8.2f\nsqlite update by key   "
           "       "
           "%8.2f\nsqlite select by key          %8.2f\nsqlite commit (fsync)         %8.2f\n",
           insert_4k, leaf, update, select, commit);
    printf("per referral: broker %.1f us (crypto %.1f, SQLite %.1f), clients %.1f us, adapters %.1f us\n",
           broker, broker_crypto, broker_sql, clients, adapters);
    printf("limits on %.0f cores: broker path %.0f/s (broker alone %.0f/s), full pipeline %.0f/s\n", cores,
           path_limit, broker_only, pipeline_limit);
    printf("RESULT {\"cores\": %.0f, \"group\": %.0f, \"verify_us\": %.2f, \"header_verify_us\": %.2f, "
           "\"sign_us\": %.2f, \"sha256_4k_us\": %.2f, \"sha256_node_us\": %.3f, \"seal_us\": %.2f, "
           "\"open_us\": %.2f, "
           "\"seal_ack_us\": %.2f, \"open_ack_us\": %.2f, \"built_seal_us\": %.2f, \"built_open_us\": %.2f, "
           "\"built_seal_ack_us\": %.2f, \"built_open_ack_us\": %.2f, \"sqlite_insert_4k_us\": %.2f, "
           "\"sqlite_leaf_us\": %.2f, "
           "\"sqlite_update_us\": %.2f, \"sqlite_select_us\": %.2f, \"sqlite_commit_us\": %.1f, "
           "\"broker_us_per_referral\": %.1f, \"broker_sql_us_per_referral\": %.1f, "
           "\"clients_us_per_referral\": %.1f, "
           "\"adapters_us_per_referral\": %.1f, \"broker_path_limit_per_s\": %.0f, "
           "\"broker_path_limit_broker_alone_per_s\": %.0f, \"pipeline_limit_per_s\": %.0f}\n",
           cores, batch, verify, verify_header, sign, sha4k, node, seal, open, seal_ack, open_ack, built_seal,
           built_open, built_seal_ack, built_open_ack, insert_4k, leaf, update, select, commit, broker,
           broker_sql, clients, adapters, path_limit, broker_only, pipeline_limit);
    identity_free(&c.source);
    identity_free(&c.sink);
    trust_free(&c.trust_sink);
    trust_free(&c.trust_source);
    free(c.env);
    free(c.ack);
    return 0;
}
