/* frames.c -- from a message on the ROUTER to the handler of its frame.
 *
 * take_message finds or makes the connection's session; handle_frame checks what every frame must pass
 * (the key still admitted, the size, the protobuf, the version, HELLO first) and hands the frame to the
 * handler the table of (frame, role) names. A frame no row allows is refused as unexpected. */
#include "broker_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "log.h"

/* The refusal of a SUBMIT, CONFIRM, ADMIN_REQUEST or PROVE before HELLO: the client library says HELLO and
 * sends it again on reading it (adapters/client.c). */
#define HELLO_FIRST                                                                                          \
    "HELLO first: a connection says HELLO before it submits, confirms, administers or asks a proof"

bool version_known(const Rb__Frame *f)
{
    return f->version >= wire_frame_version(f->body_case) && f->version <= WIRE_VERSION;
}

/* Answers PROVE: the consistency of two sizes of the ledger, both within the latest checkpoint, for a source
 * checking a checkpoint a sink's ACK carried against its own. */
static void send_proof(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre)
{
    (void)pre;
    const Rb__Prove *p = f->prove;
    merkle_hash_t hashes[PROOF_HASHES_MAX];
    ProtobufCBinaryData proof[PROOF_HASHES_MAX];
    size_t n = 0;
    if (p->old_size == 0 || p->old_size > p->new_size || p->new_size > b->checkpoint_size) {
        char why[160];
        snprintf(why, sizeof why,
                 "PROVE needs 0 < old_size <= new_size <= %llu, the latest checkpoint's size",
                 (unsigned long long)b->checkpoint_size);
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, why, NULL);
        return;
    }
    if (p->old_size < p->new_size &&
        ledger_consistency_proof(store_ledger(b->store), p->old_size, p->new_size, hashes, &n) != RB_OK) {
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_STORAGE,
                     "the broker could not read its ledger: retry later", NULL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        proof[i] = (ProtobufCBinaryData){MERKLE_HASH_BYTES, hashes[i].bytes};
    Rb__Frame r = RB__FRAME__INIT;
    Rb__Proof reply = RB__PROOF__INIT;
    reply.old_size = p->old_size;
    reply.new_size = p->new_size;
    reply.n_consistency = n;
    reply.consistency = proof;
    r.body_case = RB__FRAME__BODY_PROOF;
    r.proof = &reply;
    send_frame(b, s, &r);
}

/* Answers HELLO with WELCOME: the session may now submit, confirm and be delivered to (with credit). */
static void say_welcome(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre)
{
    (void)pre;
    s->hello = true;
    s->protocol = f->hello->protocol;
    s->credit = f->hello->credit > b->cfg->credit ? b->cfg->credit : f->hello->credit;
    s->ledger_size = f->hello->ledger_size;
    /* One receiver per party: a new one (an adapter restarted) replaces any older connection. */
    for (size_t i = 0; s->credit > 0 && i < MAX_SESSIONS; i++) {
        session_t *o = &b->sessions[i];
        if (o != s && o->used && o->credit > 0 && strcmp(o->party.card.name, s->party.card.name) == 0)
            drop_session(b, o, "replaced by a new connection", METRICS_CLOSE_REPLACED);
    }
    Rb__Frame w = RB__FRAME__INIT;
    Rb__Welcome welcome = RB__WELCOME__INIT;
    welcome.broker = (char *)identity_card(b->me)->name;
    welcome.peer = s->party.card.name;
    welcome.heartbeat_ms = (uint32_t)b->cfg->heartbeat_ms;
    welcome.protocol = WIRE_VERSION;
    ledger_update_t *u = malloc(sizeof *u);
    if (u != NULL && ledger_update(b, s, u) == RB_OK)
        welcome.ledger = &u->update;
    w.body_case = RB__FRAME__BODY_WELCOME;
    w.welcome = &welcome;
    send_frame(b, s, &w);
    free(u);
    log_info("hello", "adapter=%s peer=%s credit=%lld", s->party.card.name, s->peer, (long long)s->credit);
}

/* Runs an admin command and answers it; what it changed in parties and keys takes effect at once. */
static void run_admin_command(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre)
{
    (void)pre;
    char *output = NULL;
    bool changed = false;
    admin_env_t env = {.connected = is_connected,
                       .ctx = b,
                       .rotation_overlap_ms = b->cfg->rotation_overlap_ms,
                       .ack_overdue_ms = b->cfg->ack_overdue_ms,
                       .key_expiry_warn_ms = b->cfg->key_expiry_warn_ms,
                       .broker_card = identity_card(b->me)};
    bool ok =
        admin_execute(b->store, &s->party, s->peer, f->admin_request, now_ms(), &env, &output, &changed);
    b->notices_due_ms = 0; /* a discard, too, leaves a notice for its sender (store_discard) */
    if (changed) {
        if (reload_trust(b) != RB_OK)
            log_error("trust_reload_failed", "after=admin");
        revalidate_sessions(b);
        /* Before the reply: whatever the admin's peers submit next is queued after the notice, so adapters
         * learn of a new key before they see it. */
        send_notices(b);
    }
    Rb__Frame r = RB__FRAME__INIT;
    Rb__AdminReply reply = RB__ADMIN_REPLY__INIT;
    reply.ok = ok;
    reply.output = output ? output : "";
    r.body_case = RB__FRAME__BODY_ADMIN_REPLY;
    r.admin_reply = &reply;
    send_frame(b, s, &r);
    free(output);
}

/* Who may send a frame. */
typedef enum { ANY_PARTY, ADAPTER, ADMIN } sender_t;

typedef void handler_fn(broker_t *b, session_t *s, const Rb__Frame *f, verified_t *pre);

/* The frames a broker takes, whom from, and what handles each; a frame no row allows is refused as
 * unexpected. A frame marked hello_first is refused before HELLO whoever sends it (HELLO_FIRST). */
static const struct {
    Rb__Frame__BodyCase frame;
    sender_t from;
    bool hello_first;
    handler_fn *handle; /* NULL: nothing to do but note that the peer spoke (last_rx_ms) */
} handlers[] = {
    {RB__FRAME__BODY_HELLO, ANY_PARTY, false, say_welcome},
    {RB__FRAME__BODY_HEARTBEAT, ANY_PARTY, false, NULL},
    {RB__FRAME__BODY_SUBMIT, ADAPTER, true, handle_submit},
    {RB__FRAME__BODY_CONFIRM, ADAPTER, true, handle_confirm},
    {RB__FRAME__BODY_PROVE, ANY_PARTY, true, send_proof},
    {RB__FRAME__BODY_ADMIN_REQUEST, ADMIN, true, run_admin_command},
};

/* Refuses a frame that needs HELLO first, named by its message id when it has one, so that a client can
 * tell which submission to send again after HELLO. */
static void refuse_before_hello(broker_t *b, session_t *s, const Rb__Frame *f)
{
    msg_id_t id;
    bool named = f->body_case == RB__FRAME__BODY_SUBMIT
                     ? envelope_peek_id(f->submit->envelope.data, f->submit->envelope.len, &id) == RB_OK
                     : f->body_case == RB__FRAME__BODY_CONFIRM &&
                           f->confirm->message_id.len == MSG_ID_BYTES &&
                           (memcpy(id.bytes, f->confirm->message_id.data, MSG_ID_BYTES), true);
    refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_UNEXPECTED, HELLO_FIRST, named ? id.bytes : NULL);
}

void handle_frame(broker_t *b, session_t *s, const uint8_t *data, size_t len, verified_t *pre)
{
    int64_t t = now_ms();
    s->last_rx_ms = t;
    /* Its key expired or retired since it connected (a disable or a revocation closed the session at once):
     * this frame and every one after it get an error and nothing else. */
    if (t >= s->admitted_until_ms) {
        drop_session(b, s, "its key expired or retired", METRICS_CLOSE_DISABLED);
        refuse_unsessioned(b, s->rid, s->rid_len, &s->party, RB__ERROR_CODE__ERROR_CODE_DISABLED,
                           "this party is disabled, or the key it connected with is revoked or retired",
                           s->peer);
        return;
    }
    if ((int64_t)len > b->cfg->max_message_bytes) {
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_TOO_BIG, "frame over the broker's size limit", NULL);
        return;
    }
    Rb__Frame *f = rb__frame__unpack(NULL, len, data);
    if (f == NULL || f->body_case == RB__FRAME__BODY__NOT_SET) {
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, "not a frame", NULL);
    } else if (!version_known(f)) {
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_UNSUPPORTED_VERSION,
                     "protocol versions 1 to 3 only, and PROVE is of version 2 or later", NULL);
    } else {
        sender_t from = s->party.card.role == CARD_ROLE_ADMIN ? ADMIN : ADAPTER;
        size_t n = sizeof handlers / sizeof handlers[0], row = n;
        bool hello_first = false;
        for (size_t i = 0; i < n; i++)
            if (handlers[i].frame == f->body_case) {
                hello_first |= handlers[i].hello_first;
                if (row == n && (handlers[i].from == ANY_PARTY || handlers[i].from == from))
                    row = i;
            }
        if (hello_first && !s->hello)
            refuse_before_hello(b, s, f);
        else if (row == n)
            refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_UNEXPECTED, "this party may not send this frame",
                         NULL);
        else if (handlers[row].handle != NULL)
            handlers[row].handle(b, s, f, pre);
    }
    if (f != NULL)
        rb__frame__free_unpacked(f, NULL);
}

void take_message(broker_t *b, const uint8_t *rid, size_t rid_len, const char *user, const char *peer,
                  const uint8_t *data, size_t len, bool one_part, verified_t *pre)
{
    session_t *s = rid_len <= RID_MAX ? find_session(b, rid, rid_len) : NULL;
    /* The ROUTER gives a routing id to one live connection at a time: another key under a session's id means
     * the session's own connection is gone and a new one chose that id. The new one is never the old party. */
    if (s != NULL && (user == NULL || strcmp(user, s->user) != 0)) {
        log_security("routing_id_reused", "adapter=%s peer=%s new_peer=%s", s->party.card.name, s->peer,
                     peer ? peer : "?");
        drop_session(b, s, "another key's connection came under its routing id: its own is gone",
                     METRICS_CLOSE_STALE);
        s = NULL;
    }
    if (s == NULL && (s = open_session(b, rid, rid_len, user, peer)) == NULL)
        return;
    if (!one_part) {
        s->last_rx_ms = now_ms();
        refuse_frame(b, s, RB__ERROR_CODE__ERROR_CODE_MALFORMED, "one frame per message, in one part", NULL);
        return;
    }
    handle_frame(b, s, data, len, pre);
}
