/* ledger_gen -- fills an initialised broker data directory with a ledger of a given size, for the ledger
 * verification benchmark (bench/ledger.sh), through the broker's own code: admin_execute for the signed
 * "adapter add" commands, store_event and the store's message bookkeeping for every event, and
 * ledger_checkpoint_now with the broker's key at its default cadence.
 *
 *   ledger_gen --data DIR --admin ADMIN.secret --events N [--checkpoint-events K]
 *
 * Two adapters with fresh keys (a police source and a prosecutor's intake sink) are registered, then
 * referrals flow as the broker records them: submitted (the source's real sealed and signed envelope),
 * delivered, confirmed, the sink's ACK submitted and acked, the ACK delivered and confirmed. The next batch
 * is sealed on every core while the main thread writes this one; writes go in large transactions, since the bench measures
 * verification, not the broker's commit path. The directory ends with N - 1 leaves (the last
 * "broker_stopped"), so that the "ledger_read" leaf of referral-audit export makes N. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "broker.h"
#include "client.h"
#include "envelope.h"
#include "identity.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"
#include "store.h"
#include "tool.h"

#define BATCH       4096 /* referral and ACK pairs sealed ahead, and written in one transaction */
#define PEER_SOURCE "tcp://127.0.0.1:41002"
#define PEER_SINK   "tcp://127.0.0.1:41003"
#define PEER_ADMIN  "tcp://127.0.0.1:41001"

typedef struct {
    uint8_t *env;
    size_t len;
    uint8_t sha256[RB_HASH_BYTES];
    Rb__Envelope *parsed; /* header bytes and signature for the ledger */
    Rb__Header *header;
} sealed_t;

typedef struct {
    sealed_t referral, ack;
} pair_t;

typedef struct {
    const identity_t *source, *sink;
    pair_t *pairs;
    size_t from, to;
    uint64_t first; /* the number of the first pair of the batch, for RD numbers and times */
    int64_t t0;
    rb_err rc;
} sealer_t;

static int64_t pair_time(int64_t t0, uint64_t k)
{
    return t0 + (int64_t)(k * 7); /* a millisecond per event */
}

static rb_err seal_one(const identity_t *from, const card_t *to, const envelope_params_t *p,
                       const uint8_t *body, size_t len, msg_id_t *id, sealed_t *out)
{
    rb_err rc = envelope_seal(from, to, p, body, len, id, &out->env, &out->len);
    if (rc != RB_OK)
        return rc;
    rbcrypto_sha256(out->env, out->len, out->sha256);
    out->parsed = rb__envelope__unpack(NULL, out->len, out->env);
    if (out->parsed == NULL || envelope_peek_header(out->env, out->len, &out->header) != RB_OK)
        return RB_ERR_MALFORMED;
    return RB_OK;
}

static void *seal_range(void *arg)
{
    sealer_t *s = arg;
    char narrative[1500];
    memset(narrative, 'x', sizeof narrative - 1);
    narrative[sizeof narrative - 1] = '\0';
    for (size_t i = s->from; i < s->to && s->rc == RB_OK; i++) {
        uint64_t k = s->first + i;
        int64_t t = pair_time(s->t0, k);
        char rd[16], intake[32];
        snprintf(rd, sizeof rd, "JH%06" PRIu64, k % 1000000);
        Rb__Referral r = RB__REFERRAL__INIT;
        r.schema_version = 1;
        r.agency_ori = (char *)identity_card(s->source)->agency;
        r.rd_number = rd;
        r.revision = 1;
        r.narrative = narrative;
        uint8_t body[2048], case_key[CASE_KEY_BYTES];
        size_t len = rb__referral__pack(&r, body);
        envelope_case_key(s->source, r.agency_ori, rd, case_key);
        envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .case_key = case_key, .created_ms = t};
        msg_id_t id, ack_id;
        pair_t *pr = &s->pairs[i];
        if ((s->rc = seal_one(s->source, identity_card(s->sink), &p, body, len, &id, &pr->referral)) != RB_OK)
            break;
        snprintf(intake, sizeof intake, "SAO-2026-%06" PRIu64, k % 1000000);
        Rb__AckBody a = RB__ACK_BODY__INIT;
        a.status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED;
        a.intake_reference = intake;
        a.received_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, pr->referral.sha256};
        a.decided_ms = t + 3;
        len = rb__ack_body__pack(&a, body);
        envelope_params_t q = {.kind = RB__KIND__KIND_ACK,
                               .ref = &id,
                               .case_key = case_key,
                               .ack_status = RB__ACK_STATUS__ACK_STATUS_ACCEPTED,
                               .created_ms = t + 3};
        s->rc = seal_one(s->sink, identity_card(s->source), &q, body, len, &ack_id, &pr->ack);
    }
    return NULL;
}

/* Seals the pairs numbered first.. (up to needed) into pairs, on nthreads threads (join_batch waits). */
static void seal_batch(sealer_t *sealers, pthread_t *threads, size_t nthreads, const identity_t *source,
                       const identity_t *sink, pair_t *pairs, uint64_t first, uint64_t needed, int64_t t0)
{
    size_t n = first >= needed ? 0 : needed - first < BATCH ? (size_t)(needed - first) : BATCH;
    for (size_t i = 0; i < nthreads; i++) {
        sealers[i] = (sealer_t){.source = source,
                                .sink = sink,
                                .pairs = pairs,
                                .from = n * i / nthreads,
                                .to = n * (i + 1) / nthreads,
                                .first = first,
                                .t0 = t0};
        if (pthread_create(&threads[i], NULL, seal_range, &sealers[i]) != 0) {
            fprintf(stderr, "ledger_gen: cannot start a thread\n");
            exit(1);
        }
    }
}

static void join_batch(sealer_t *sealers, pthread_t *threads, size_t nthreads)
{
    for (size_t i = 0; i < nthreads; i++) {
        pthread_join(threads[i], NULL);
        if (sealers[i].rc != RB_OK) {
            fprintf(stderr, "ledger_gen: sealing: %s\n", rb_strerror(sealers[i].rc));
            exit(1);
        }
    }
}

static void sealed_free(sealed_t *s)
{
    free(s->env);
    if (s->parsed != NULL)
        rb__envelope__free_unpacked(s->parsed, NULL);
    if (s->header != NULL)
        rb__header__free_unpacked(s->header, NULL);
    memset(s, 0, sizeof *s);
}

typedef struct {
    store_t *store;
    const identity_t *broker;
    uint64_t target;           /* leaves to reach */
    uint64_t checkpoint_every; /* the broker's checkpoint_events */
    uint64_t last_checkpoint;
    uint64_t checkpoints;
} writer_t;

static void check(rb_err rc, const char *what)
{
    if (rc != RB_OK) {
        fprintf(stderr, "ledger_gen: %s: %s\n", what, rb_strerror(rc));
        exit(1);
    }
}

/* As the broker's 50 ms tick does once the log has grown by checkpoint_events leaves. */
static void maybe_checkpoint(writer_t *w, int64_t t, bool force)
{
    ledger_t *l = store_ledger(w->store);
    if (!force && ledger_size(l) - w->last_checkpoint < w->checkpoint_every)
        return;
    char note[NOTE_TEXT_MAX];
    size_t len;
    check(ledger_checkpoint_now(l, identity_card(w->broker), identity_sign_sk(w->broker), t, note, &len),
          "checkpoint");
    w->last_checkpoint = ledger_size(l);
    w->checkpoints++;
}

static void event(writer_t *w, Rb__LedgerEvent *e, int64_t t, const card_t *who, const char *peer,
                  uint64_t *index)
{
    e->at_ms = t;
    e->party = (char *)who->name;
    e->agency = (char *)who->agency;
    e->peer = (char *)peer;
    check(store_event(w->store, e, index), e->action);
    maybe_checkpoint(w, t, false);
}

/* What broker.c's record_submission and group commit store for one accepted SUBMIT. */
static void submitted(writer_t *w, const sealed_t *s, const card_t *who, const char *peer, int64_t t)
{
    const Rb__Header *h = s->header;
    char detail[160];
    snprintf(detail, sizeof detail, "kind=%d recipient=%s bytes=%zu", (int)h->kind, h->recipient, s->len);
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = ACTION_NAME(SUBMITTED);
    e.message_id = h->message_id;
    e.outcome = "ok";
    e.detail = detail;
    e.header = s->parsed->header;
    e.header_signature = s->parsed->header_signature;
    e.envelope_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, (uint8_t *)s->sha256};
    uint64_t index;
    event(w, &e, t, who, peer, &index);
    if (h->kind == RB__KIND__KIND_ACK) {
        e.action = ACTION_NAME(ACKED);
        e.message_id = h->ref_message_id;
        e.outcome = "accepted";
        e.envelope_sha256 = (ProtobufCBinaryData){0, NULL};
        event(w, &e, t, who, peer, NULL);
    }
    check(store_add_message(w->store, h, s->env, s->len, s->sha256, index, t), "store_add_message");
    if (h->kind == RB__KIND__KIND_ACK)
        check(store_acked(w->store, h->ref_message_id.data, (int)h->ack_status, h->message_id.data, t),
              "store_acked");
}

static void delivered(writer_t *w, const Rb__Header *h, const card_t *to, const char *peer, int64_t t)
{
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = ACTION_NAME(DELIVERED);
    e.message_id = h->message_id;
    e.outcome = "sent";
    e.detail = "attempt=1";
    e.attempt = 1;
    check(store_attempted(w->store, h->message_id.data, t + 30000, 12), "store_attempted");
    event(w, &e, t, to, peer, NULL);
}

static void confirmed(writer_t *w, const Rb__Header *h, const card_t *by, const char *peer, int64_t t)
{
    Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
    e.action = ACTION_NAME(CONFIRMED);
    e.message_id = h->message_id;
    e.outcome = "ok";
    e.detail = "";
    check(store_confirmed(w->store, h->message_id.data, by->name, t), "store_confirmed");
    event(w, &e, t, by, peer, NULL);
}

/* "adapter add" signed by the admin and executed by the broker's own admin code. */
static void add_adapter(store_t *store, const identity_t *admin, const card_t *card)
{
    char text[CARD_TEXT_MAX + 1];
    text[card_to_text(card, text)] = '\0';
    char *args[] = {text};
    uint8_t nonce[16];
    rbcrypto_random(nonce, sizeof nonce);
    Rb__AdminCommand cmd = RB__ADMIN_COMMAND__INIT;
    cmd.command = "adapter add";
    cmd.n_args = 1;
    cmd.args = args;
    cmd.issued_ms = tool_now_ms();
    cmd.nonce = (ProtobufCBinaryData){sizeof nonce, nonce};
    Rb__AdminRequest req;
    check(admin_sign(admin, &cmd, &req), "admin_sign");
    party_t party;
    check(store_find_party(store, identity_card(admin)->name, &party), "the admin is not registered");
    admin_env_t env = {.rotation_overlap_ms = 86400000, .ack_overdue_ms = 0};
    char *output = NULL;
    bool changed;
    if (!admin_execute(store, &party, PEER_ADMIN, &req, tool_now_ms(), &env, &output, &changed)) {
        fprintf(stderr, "ledger_gen: adapter add refused: %s\n", output ? output : "?");
        exit(1);
    }
    free(output);
    admin_request_clear(&req);
}

int main(int argc, char **argv)
{
    const char *data = NULL, *admin_path = NULL;
    uint64_t events = 1000000, checkpoint_every = 1000;
    static const struct option opts[] = {{"data", required_argument, NULL, 'd'},
                                         {"admin", required_argument, NULL, 'a'},
                                         {"events", required_argument, NULL, 'n'},
                                         {"checkpoint-events", required_argument, NULL, 'c'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'd')
            data = optarg;
        else if (c == 'a')
            admin_path = optarg;
        else if (c == 'n')
            events = strtoull(optarg, NULL, 10);
        else if (c == 'c')
            checkpoint_every = strtoull(optarg, NULL, 10);
        else
            return 2;
    }
    if (data == NULL || admin_path == NULL || events < 100 || checkpoint_every == 0) {
        fprintf(stderr, "usage: ledger_gen --data DIR --admin ADMIN.secret --events N (>= 100) "
                        "[--checkpoint-events K]\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", data, BROKER_SECRET);
    identity_t *broker = xload_identity(path, NULL), *admin = xload_identity(admin_path, NULL);
    identity_t *source, *sink;
    uint64_t now_s = (uint64_t)(tool_now_ms() / 1000);
    check(identity_generate(&source, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", now_s, 365 * 86400),
          "identity");
    check(identity_generate(&sink, "sao-intake", CARD_ROLE_SINK, "ILSAO0000", now_s, 365 * 86400),
          "identity");
    snprintf(path, sizeof path, "%s/%s", data, BROKER_DB);
    store_t *store;
    if (store_open(&store, path, false, err, sizeof err) != RB_OK) {
        fprintf(stderr, "ledger_gen: %s\n", err);
        return 1;
    }
    /* Room for "broker_stopped", and for the "ledger_read" leaf the export adds. */
    writer_t w = {
        .store = store, .broker = broker, .target = events - 2, .checkpoint_every = checkpoint_every};
    add_adapter(store, admin, identity_card(source));
    add_adapter(store, admin, identity_card(sink));
    w.last_checkpoint = 2; /* init's checkpoint */

    int64_t t0 = tool_now_ms() + 1000;
    const card_t *src = identity_card(source), *snk = identity_card(sink);
    check(store_begin(store), "begin");
    Rb__LedgerEvent start = RB__LEDGER_EVENT__INIT;
    start.action = ACTION_NAME(BROKER_STARTED);
    start.outcome = "ok";
    start.detail = "listen=tcp://127.0.0.1:41000";
    start.at_ms = t0;
    check(store_event(store, &start, NULL), "broker_started");
    maybe_checkpoint(&w, t0, true);
    check(store_commit(store), "commit");

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nthreads = cores < 1 ? 1 : cores > 8 ? 8 : (size_t)cores;
    pair_t *pairs[2] = {calloc(BATCH, sizeof(pair_t)), calloc(BATCH, sizeof(pair_t))};
    sealer_t *sealers = calloc(nthreads, sizeof *sealers);
    pthread_t *threads = calloc(nthreads, sizeof *threads);
    if (pairs[0] == NULL || pairs[1] == NULL || sealers == NULL || threads == NULL)
        check(RB_ERR_NOMEM, "memory");
    int64_t t = t0;
    uint64_t k = 0;
    ledger_t *l = store_ledger(store);
    uint64_t needed = w.target / 7 + 1; /* pairs: seven leaves each */
    seal_batch(sealers, threads, nthreads, source, sink, pairs[0], 0, needed, t0);
    join_batch(sealers, threads, nthreads);
    /* The last pair written may end part way: stopped brokers leave messages in flight too. A "submitted"
     * ACK and its "acked" are one step, as in the broker's transaction; the end leaves room for them. The
     * next batch is sealed while this one is written. */
    for (int cur = 0; k < needed && ledger_size(l) + 2 < w.target; cur = !cur) {
        seal_batch(sealers, threads, nthreads, source, sink, pairs[!cur], k + BATCH, needed, t0);
        check(store_begin(store), "begin");
        for (size_t i = 0; i < BATCH && k < needed && ledger_size(l) + 2 < w.target; i++, k++) {
            pair_t *p = &pairs[cur][i];
            t = pair_time(t0, k);
            /* Each step only while it fits: the export's leaf makes the last one. */
            submitted(&w, &p->referral, src, PEER_SOURCE, t);
            if (ledger_size(l) < w.target)
                delivered(&w, p->referral.header, snk, PEER_SINK, t + 1);
            if (ledger_size(l) < w.target)
                confirmed(&w, p->referral.header, snk, PEER_SINK, t + 2);
            /* The ACK is delivered and confirmed only if it was submitted (the end can fall between). */
            bool acked = ledger_size(l) + 1 < w.target;
            if (acked)
                submitted(&w, &p->ack, snk, PEER_SINK, t + 3);
            if (acked && ledger_size(l) < w.target)
                delivered(&w, p->ack.header, src, PEER_SOURCE, t + 5);
            if (acked && ledger_size(l) < w.target)
                confirmed(&w, p->ack.header, src, PEER_SOURCE, t + 6);
        }
        check(store_commit(store), "commit");
        for (size_t i = 0; i < BATCH; i++) {
            sealed_free(&pairs[cur][i].referral);
            sealed_free(&pairs[cur][i].ack);
        }
        join_batch(sealers, threads, nthreads);
        fprintf(stderr, "\rledger_gen: %" PRIu64 " leaves ", ledger_size(l));
    }
    for (size_t i = 0; i < BATCH; i++) {
        sealed_free(&pairs[0][i].referral);
        sealed_free(&pairs[0][i].ack);
        sealed_free(&pairs[1][i].referral);
        sealed_free(&pairs[1][i].ack);
    }
    check(store_begin(store), "begin");
    while (ledger_size(l) < w.target) {
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        e.action = ACTION_NAME(DISCONNECTED);
        e.outcome = "ok";
        e.detail = "closed";
        event(&w, &e, ++t + 7, src, PEER_SOURCE, NULL);
    }
    Rb__LedgerEvent stop = RB__LEDGER_EVENT__INIT;
    stop.action = ACTION_NAME(BROKER_STOPPED);
    stop.outcome = "ok";
    stop.at_ms = t + 8;
    check(store_event(store, &stop, NULL), "broker_stopped");
    maybe_checkpoint(&w, t + 8, true);
    check(store_commit(store), "commit");
    fprintf(stderr, "\n");
    printf("ledger_gen: %" PRIu64 " leaves, %" PRIu64 " referrals, %" PRIu64 " checkpoints\n", ledger_size(l),
           k, w.checkpoints + 1);
    store_close(&store);
    free(pairs[0]);
    free(pairs[1]);
    free(sealers);
    free(threads);
    identity_free(&source);
    identity_free(&sink);
    identity_free(&admin);
    identity_free(&broker);
    return 0;
}
