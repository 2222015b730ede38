/* frame_fuzz.c -- libFuzzer target for the broker's frame handler, with every component real.
 *
 * One broker (broker_open) runs for the whole fuzzing run on a SQLite store in a temporary directory and a
 * CURVE ROUTER on 127.0.0.1; three DEALERs, a source, a sink and an admin with registered keys, connect
 * through the ZAP handshake and say HELLO, so that each has a session. Each input is one frame: its first
 * byte picks the connection, the rest goes to broker_feed as if the ROUTER had received it, and the answer
 * goes out on the real socket. Identities come from fixed seeds so that the checked-in corpus stays valid
 * (FRAME_FUZZ_SEEDS=DIR writes it: HELLO, SUBMIT of a sealed referral, CONFIRM, HEARTBEAT, ADMIN_REQUEST).
 *
 * Checked after every input: every answer is a well-formed version 1 frame; every message the store took
 * is an envelope whose header verifies against the registered cards and names as sender the party whose
 * connection sent it. Every 512 inputs and at the end: the database passes PRAGMA integrity_check and the
 * ledger holds as many leaves as it says. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "broker.h"
#include "client.h"
#include "envelope.h"
#include "ledger.h"
#include "log.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"
#include "wire.h"

#define CREATED  1700000000ULL            /* the cards' creation: fixed, so the seeds stay valid */
#define LIFETIME (100ULL * 365 * 86400)   /* and long enough to stay valid */
#define SEALED   (1760000000000LL + 5000) /* when the seed envelopes say they were made */
#define PARTIES  3

static const char *const rids[PARTIES] = {"source", "sink", "admin"};
static identity_t *me, *ids[PARTIES];
static trust_t *trust;
static store_t *store;
static broker_t *broker;
static broker_config_t cfg;
static void *ctx, *dealers[PARTIES];
static char dir[512];
static int64_t messages_seen; /* rowid of the last message checked */
static unsigned long inputs;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what)
{
    fprintf(stderr, "frame_fuzz: %s\n", what);
    abort();
}

static int64_t query(const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(store), sql, -1, &st, NULL) != SQLITE_OK)
        die(sql);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static void check_store(void)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(store), "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
        die("PRAGMA integrity_check failed");
    sqlite3_finalize(st);
    if ((uint64_t)query("SELECT count(*) FROM ledger_leaves") != ledger_size(store_ledger(store)))
        die("the ledger's size is not its number of leaves");
}

static void finish(void)
{
    if (broker == NULL)
        return;
    check_store();
    fprintf(stderr, "frame_fuzz: %lu inputs, %lld messages stored, %llu ledger leaves\n", inputs,
            (long long)query("SELECT count(*) FROM messages"),
            (unsigned long long)ledger_size(store_ledger(store)));
    for (int i = 0; i < PARTIES; i++)
        zmq_close(dealers[i]);
    zmq_ctx_term(ctx);
    broker_close(&broker, RB_OK);
    store_close(&store);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "frame_fuzz: could not remove %s\n", dir);
}

/* Every answer waiting on every connection must be a well-formed frame of ours. */
static void drain(void)
{
    for (int i = 0; i < PARTIES; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, dealers[i], ZMQ_DONTWAIT) >= 0) {
            Rb__Frame *f = rb__frame__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            if (f == NULL || f->body_case == RB__FRAME__BODY__NOT_SET ||
                f->version != wire_frame_version(f->body_case) || zmq_msg_more(&m))
                die("the broker sent something that is not a frame");
            rb__frame__free_unpacked(f, NULL);
        }
        zmq_msg_close(&m);
    }
}

/* Every message stored since the last look was validly sealed by the party whose connection sent it. */
static void check_messages(int party)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(store),
                           "SELECT m.rowid, e.envelope, m.sender FROM messages m "
                           "JOIN envelopes e USING (message_id) WHERE m.rowid > ?",
                           -1, &st, NULL) != SQLITE_OK)
        die("select messages");
    sqlite3_bind_int64(st, 1, messages_seen);
    while (sqlite3_step(st) == SQLITE_ROW) {
        messages_seen = sqlite3_column_int64(st, 0);
        Rb__Header *h;
        card_t sender;
        if (envelope_verify_header(trust, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), &h,
                                   &sender) != RB_OK)
            die("a message was stored whose header does not verify");
        bool ours = strcmp(h->sender, identity_card(ids[party])->name) == 0 &&
                    strcmp((const char *)sqlite3_column_text(st, 2), h->sender) == 0;
        rb__header__free_unpacked(h, NULL);
        if (!ours)
            die("a message was stored under another sender than the connection's party");
    }
    sqlite3_finalize(st);
}

static void send_hello(void *sock, uint32_t credit)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Hello hello = RB__HELLO__INIT;
    hello.credit = credit;
    f.body_case = RB__FRAME__BODY_HELLO;
    f.hello = &hello;
    if (wire_send(sock, NULL, 0, &f) != RB_OK)
        die("send HELLO");
}

static void write_seed(const char *seeds, const char *name, int party, Rb__Frame *f)
{
    f->version = WIRE_VERSION;
    size_t len = rb__frame__get_packed_size(f);
    uint8_t *buf = malloc(len + 1);
    buf[0] = (uint8_t)party;
    rb__frame__pack(f, buf + 1);
    char path[700];
    snprintf(path, sizeof path, "%s/%s", seeds, name);
    FILE *out = fopen(path, "wb");
    if (out == NULL || fwrite(buf, 1, len + 1, out) != len + 1 || fclose(out) != 0)
        die(path);
    free(buf);
}

static void write_seeds(const char *seeds)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Hello hello = RB__HELLO__INIT;
    hello.credit = 4;
    f.body_case = RB__FRAME__BODY_HELLO;
    f.hello = &hello;
    write_seed(seeds, "hello-sink", 1, &f);
    hello.credit = 0;
    write_seed(seeds, "hello-source", 0, &f);

    Rb__Referral r = RB__REFERRAL__INIT;
    r.schema_version = 1;
    r.agency_ori = "ILCPD0000";
    r.rd_number = "JH512334";
    r.revision = 1;
    r.narrative = "R/O observed a vehicle stop at 26th and Kedzie.";
    uint8_t body[1024];
    size_t body_len = rb__referral__pack(&r, body);
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = SEALED};
    msg_id_t id;
    uint8_t *env;
    size_t env_len;
    if (envelope_seal(ids[0], identity_card(ids[1]), &p, body, body_len, &id, &env, &env_len) != RB_OK)
        die("seal");
    Rb__Submit submit = RB__SUBMIT__INIT;
    submit.envelope = (ProtobufCBinaryData){env_len, env};
    f.body_case = RB__FRAME__BODY_SUBMIT;
    f.submit = &submit;
    write_seed(seeds, "submit-referral", 0, &f);
    free(env);

    Rb__Confirm confirm = RB__CONFIRM__INIT;
    confirm.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, id.bytes};
    f.body_case = RB__FRAME__BODY_CONFIRM;
    f.confirm = &confirm;
    write_seed(seeds, "confirm", 1, &f);

    Rb__Heartbeat hb = RB__HEARTBEAT__INIT;
    f.body_case = RB__FRAME__BODY_HEARTBEAT;
    f.heartbeat = &hb;
    write_seed(seeds, "heartbeat", 0, &f);

    Rb__AdminCommand cmd = RB__ADMIN_COMMAND__INIT;
    uint8_t nonce[16] = {7};
    cmd.command = "status";
    cmd.issued_ms = SEALED;
    cmd.nonce = (ProtobufCBinaryData){sizeof nonce, nonce};
    Rb__AdminRequest req = RB__ADMIN_REQUEST__INIT;
    if (admin_sign(ids[2], &cmd, &req) != RB_OK)
        die("admin_sign");
    f.body_case = RB__FRAME__BODY_ADMIN_REQUEST;
    f.admin_request = &req;
    write_seed(seeds, "admin-status", 2, &f);
    admin_request_clear(&req);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const names[PARTIES] = {"cpd-rms", "sao-intake", "ops-admin"};
    static const card_role roles[PARTIES] = {CARD_ROLE_SOURCE, CARD_ROLE_SINK, CARD_ROLE_ADMIN};
    static const char *const agencies[PARTIES] = {"ILCPD0000", "ILCCSAO00", "ILCPD0000"};
    uint8_t seed[32] = {9};
    if (rbcrypto_init() != RB_OK ||
        identity_from_seed(&me, seed, "broker-1", CARD_ROLE_BROKER, "ILCPD0000", CREATED, LIFETIME) !=
            RB_OK ||
        trust_new(&trust) != RB_OK)
        die("init");
    for (int i = 0; i < PARTIES; i++) {
        seed[0] = (uint8_t)(10 + i);
        if (identity_from_seed(&ids[i], seed, names[i], roles[i], agencies[i], CREATED, LIFETIME) != RB_OK ||
            trust_add(trust, identity_card(ids[i])) != RB_OK)
            die("identities");
    }
    if (getenv("FRAME_FUZZ_SEEDS") != NULL) {
        write_seeds(getenv("FRAME_FUZZ_SEEDS"));
        exit(0);
    }
    log_set_level(LOG_ERROR); /* a refusal a frame is the common case here, not news */

    snprintf(dir, sizeof dir, "%s/frame-fuzz-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(dir) == NULL)
        die("mkdtemp");
    char db[600], err[256], text[CARD_TEXT_MAX], note[NOTE_TEXT_MAX];
    size_t note_len;
    snprintf(db, sizeof db, "%s/broker.db", dir);
    int64_t now = (int64_t)CREATED * 1000 + 1000;
    if (store_open(&store, db, true, err, sizeof err) != RB_OK || store_begin(store) != RB_OK ||
        store_record_card(store, identity_card(me), "the broker's own card", now) != RB_OK)
        die(err);
    for (int i = 0; i < PARTIES; i++)
        if (store_add_party(store, identity_card(ids[i]), now) != RB_OK)
            die("store_add_party");
    card_to_text(identity_card(me), text);
    if (ledger_set_meta(store_ledger(store), "broker_card", text) != RB_OK ||
        ledger_checkpoint_now(store_ledger(store), identity_card(me), identity_sign_sk(me), now, note,
                              &note_len) != RB_OK ||
        store_commit(store) != RB_OK)
        die("store");

    config_defaults(&cfg);
    snprintf(cfg.listen, sizeof cfg.listen, "tcp://127.0.0.1:*");
    snprintf(cfg.metrics_listen, sizeof cfg.metrics_listen, "off");
    cfg.heartbeat_ms = 3600000; /* no session is forgotten as silent while fuzzing */
    if (broker_open(&broker, &cfg, me, store) != RB_OK)
        die("broker_open");
    atexit(finish);

    ctx = zmq_ctx_new();
    for (int i = 0; i < PARTIES; i++) {
        dealers[i] = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        if (dealers[i] == NULL || zmq_setsockopt(dealers[i], ZMQ_ROUTING_ID, rids[i], strlen(rids[i])) != 0 ||
            zmq_setsockopt(dealers[i], ZMQ_LINGER, &zero, sizeof zero) != 0 ||
            wire_curve_client(dealers[i], ids[i], identity_card(me)) != RB_OK ||
            zmq_connect(dealers[i], broker_endpoint(broker)) != 0)
            die("connect");
        send_hello(dealers[i], i == 1 ? 4 : 0);
    }
    /* Through the handshake and the HELLO: each connection has its session and its WELCOME. */
    for (int welcomed = 0, turns = 0; welcomed < PARTIES; turns++) {
        if (turns > 400 || broker_step(broker) != RB_OK)
            die("no WELCOME");
        for (int i = 0; i < PARTIES; i++) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, dealers[i], ZMQ_DONTWAIT) >= 0)
                welcomed++;
            zmq_msg_close(&m);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int party = data[0] % PARTIES;
    if (broker_feed(broker, (const uint8_t *)rids[party], strlen(rids[party]), data + 1, size - 1) != RB_OK)
        die("the connection's session is gone");
    inputs++;
    /* Now and then a turn of the real loop (deliveries, timers), woken by a real frame. */
    if (inputs % 64 == 0) {
        Rb__Frame f = RB__FRAME__INIT;
        Rb__Heartbeat hb = RB__HEARTBEAT__INIT;
        f.body_case = RB__FRAME__BODY_HEARTBEAT;
        f.heartbeat = &hb;
        if (wire_send(dealers[party], NULL, 0, &f) != RB_OK || broker_step(broker) != RB_OK)
            die("broker_step");
    }
    drain();
    check_messages(party);
    if (inputs % 512 == 0)
        check_store();
    return 0;
}
