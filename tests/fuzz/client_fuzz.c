/* client_fuzz.c -- libFuzzer target for the frames a client takes from the broker (adapters/client/client.c):
 * WELCOME with its ledger update, RECEIPT with its leaf, tlog-proof and update, DELIVER and ERROR, checked
 * by the same calls client.c makes (witness_check_update, witness_check_proof, ledger_parse_leaf).
 *
 * The broker's key (a fixed seed) signs checkpoints of one reference ledger only: N_LEAVES real
 * LedgerEvent leaves. So whatever the client accepts must be true of that ledger: a checkpoint taken has a
 * size of at most N_LEAVES and the reference root of that size, a receipt's proof holds only for the
 * reference leaf at its index, and an update from a checkpoint held never shrinks it. Any other acceptance
 * aborts. The first byte picks the mode:
 *   even: the rest is a packed Frame, as it comes off the socket, with the held checkpoint picked by the
 *         second byte;
 *   odd:  bytes 1..4 pick the held checkpoint, the fresh size, the leaf and the frame kind; the target
 *         builds the true WELCOME or RECEIPT the broker would send, which must be accepted, then flips the
 *         bytes the rest names (position, xor mask) in its packed form and takes it again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"
#include "ledger.h"
#include "merkle.h"
#include "note.h"
#include "rbcrypto.h"
#include "wire.h"
#include "witness.h"

#define N_LEAVES 13 /* not a power of two: proofs have inner and border hashes */
#define NOW_MS   1760000000000LL

static identity_t *broker;
static uint8_t *leaves[N_LEAVES];
static size_t leaf_len[N_LEAVES];
static merkle_hash_t hashes[N_LEAVES], roots[N_LEAVES + 1];
static char notes[N_LEAVES + 1][NOTE_TEXT_MAX];
static checkpoint_t cps[N_LEAVES + 1];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    uint8_t seed[32] = {3};
    if (rbcrypto_init() != RB_OK || identity_from_seed(&broker, seed, "broker", CARD_ROLE_BROKER, "ILCCSAO00",
                                                       NOW_MS / 1000, 86400) != RB_OK)
        abort();
    for (size_t i = 0; i < N_LEAVES; i++) {
        uint8_t id[16] = {0x01, 0x9a, (uint8_t)i}, sha[RB_HASH_BYTES];
        char env[32];
        snprintf(env, sizeof env, "envelope %zu", i);
        rbcrypto_sha256((const uint8_t *)env, strlen(env), sha);
        Rb__LedgerEvent e = RB__LEDGER_EVENT__INIT;
        e.version = LEDGER_VERSION;
        e.index = i;
        e.at_ms = NOW_MS + (int64_t)i;
        e.action = "submitted";
        e.party = "cpd-rms";
        e.agency = "ILCPD0000";
        e.message_id = (ProtobufCBinaryData){sizeof id, id};
        e.outcome = "ok";
        e.envelope_sha256 = (ProtobufCBinaryData){sizeof sha, sha};
        leaf_len[i] = rb__ledger_event__get_packed_size(&e);
        if ((leaves[i] = malloc(leaf_len[i])) == NULL)
            abort();
        rb__ledger_event__pack(&e, leaves[i]);
        merkle_leaf_hash(leaves[i], leaf_len[i], &hashes[i]);
    }
    for (size_t n = 0; n <= N_LEAVES; n++) {
        size_t len;
        merkle_root(hashes, n, &roots[n]);
        ledger_origin(identity_card(broker), cps[n].origin);
        cps[n].size = n;
        cps[n].root = roots[n];
        if (checkpoint_sign(&cps[n], identity_sign_sk(broker), notes[n], &len) != RB_OK)
            abort();
    }
    return 0;
}

/* A checkpoint the broker's key signed is one of the reference ledger's. */
static void assert_true_checkpoint(const checkpoint_t *cp)
{
    if (cp->size > N_LEAVES || memcmp(cp->root.bytes, roots[cp->size].bytes, MERKLE_HASH_BYTES) != 0)
        abort();
}

/* client.c take_update: whether the update is taken, and into *held. */
static bool take_update(const checkpoint_t **held, checkpoint_t *slot, const Rb__LedgerUpdate *u)
{
    checkpoint_t fresh;
    char why[256];
    rb_err rc = witness_check_update(identity_card(broker), *held, u, &fresh, why, sizeof why);
    if (rc == RB_OK || rc == RB_ERR_HASH_MISMATCH || rc == RB_ERR_CONFLICT)
        assert_true_checkpoint(&fresh);
    if (rc == RB_OK && *held != NULL && fresh.size < (*held)->size)
        abort(); /* a shrinking ledger passed for an extension */
    if (rc != RB_OK && rc != RB_ERR_HASH_MISMATCH)
        return false;
    *slot = fresh;
    *held = slot;
    return true;
}

/* client.c check_receipt, without the envelope (the reference leaves stand for it). */
static bool take_receipt(const checkpoint_t **held, checkpoint_t *slot, const Rb__Receipt *r)
{
    if (r->ledger == NULL || !take_update(held, slot, r->ledger))
        return false;
    checkpoint_t cp;
    uint64_t index;
    char why[256];
    if (witness_check_proof(identity_card(broker), NULL, NULL, r->proof, strlen(r->proof), r->leaf.data,
                            r->leaf.len, &cp, &index, why, sizeof why) != RB_OK)
        return false;
    assert_true_checkpoint(&cp);
    if (index >= cp.size || r->leaf.len != leaf_len[index] ||
        memcmp(r->leaf.data, leaves[index], r->leaf.len) != 0)
        abort(); /* a proof held for a leaf that is not there */
    if (cp.size != (*held)->size || memcmp(cp.root.bytes, (*held)->root.bytes, MERKLE_HASH_BYTES) != 0)
        return false;
    Rb__LedgerEvent *e;
    if (ledger_parse_leaf(r->leaf.data, r->leaf.len, &e) != RB_OK || e->index != index)
        abort(); /* a reference leaf always parses, and names its own index */
    rb__ledger_event__free_unpacked(e, NULL);
    return true;
}

/* client.c take(): what each frame does to the client. true when a ledger update or receipt was taken. */
static bool take(const uint8_t *bytes, size_t len, const checkpoint_t *held)
{
    checkpoint_t slot;
    bool taken = false;
    Rb__Frame *f = rb__frame__unpack(NULL, len, bytes);
    if (f == NULL)
        return false;
    switch (f->body_case) {
    case RB__FRAME__BODY_WELCOME:
        taken = f->welcome->ledger != NULL && take_update(&held, &slot, f->welcome->ledger);
        break;
    case RB__FRAME__BODY_RECEIPT:
        taken = take_receipt(&held, &slot, f->receipt);
        break;
    case RB__FRAME__BODY_DELIVER: {
        uint8_t *env = malloc(f->deliver->envelope.len + 1);
        if (env == NULL)
            abort();
        if (f->deliver->envelope.len > 0)
            memcpy(env, f->deliver->envelope.data, f->deliver->envelope.len);
        free(env);
        break;
    }
    case RB__FRAME__BODY_ERROR: {
        char reason[256];
        snprintf(reason, sizeof reason, "%s %s", wire_error_name(f->error->code), f->error->reason);
        break;
    }
    default:
        break;
    }
    rb__frame__free_unpacked(f, NULL);
    return taken;
}

/* The held checkpoint picked by a byte: one of the reference ledger's, or none. */
static const checkpoint_t *pick_held(uint8_t b)
{
    unsigned h = b % (N_LEAVES + 2);
    return h > N_LEAVES ? NULL : &cps[h];
}

/* The packed frame (malloc'd) the broker sends for these: a WELCOME updating the client from `from`
 * leaves to `to`, or the RECEIPT of leaf index under the checkpoint of `to` leaves. */
static uint8_t *true_frame(uint64_t from, uint64_t to, uint64_t index, bool receipt, size_t *len)
{
    merkle_hash_t cons[PROOF_HASHES_MAX], path[PROOF_HASHES_MAX];
    size_t n_cons = 0, n_path = 0;
    if (from > 0 && merkle_consistency_proof(merkle_memory_subtree, hashes, from, to, cons, &n_cons) != RB_OK)
        abort();
    if (merkle_inclusion_proof(merkle_memory_subtree, hashes, to, index, path, &n_path) != RB_OK)
        abort();
    ProtobufCBinaryData cb[PROOF_HASHES_MAX];
    for (size_t i = 0; i < n_cons; i++)
        cb[i] = (ProtobufCBinaryData){MERKLE_HASH_BYTES, cons[i].bytes};
    char proof[PROOF_TEXT_MAX];
    size_t proof_len;
    if (proof_format(index, NULL, 0, path, n_path, notes[to], strlen(notes[to]), proof, sizeof proof,
                     &proof_len) != RB_OK)
        abort();
    Rb__LedgerUpdate u = RB__LEDGER_UPDATE__INIT;
    u.checkpoint = notes[to];
    u.old_size = from;
    u.n_consistency = n_cons;
    u.consistency = cb;
    Rb__Welcome w = RB__WELCOME__INIT;
    Rb__Receipt r = RB__RECEIPT__INIT;
    Rb__Frame f = RB__FRAME__INIT;
    f.version = 1;
    if (receipt) {
        r.leaf = (ProtobufCBinaryData){leaf_len[index], leaves[index]};
        r.proof = proof;
        r.ledger = &u;
        f.body_case = RB__FRAME__BODY_RECEIPT;
        f.receipt = &r;
    } else {
        w.broker = "broker";
        w.peer = "cpd-rms";
        w.heartbeat_ms = 1000;
        w.ledger = &u;
        f.body_case = RB__FRAME__BODY_WELCOME;
        f.welcome = &w;
    }
    *len = rb__frame__get_packed_size(&f);
    uint8_t *buf = malloc(*len);
    if (buf == NULL)
        abort();
    rb__frame__pack(&f, buf);
    return buf;
}

static void built(const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    const checkpoint_t *held = pick_held(data[0]);
    uint64_t from = held ? held->size : 0;
    uint64_t to = from + data[1] % (N_LEAVES - from + 1);
    if (to == 0)
        to = 1;
    size_t len;
    uint8_t *buf = true_frame(from, to, data[2] % to, data[3] & 1, &len);
    if (!take(buf, len, held))
        abort(); /* the true frame must be taken */
    for (size_t i = 4; i + 2 < size; i += 3)
        buf[((size_t)data[i] << 8 | data[i + 1]) % len] ^= data[i + 2];
    take(buf, len, held);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    if (data[0] & 1)
        built(data + 1, size - 1);
    else
        take(data + 2, size - 2, pick_held(data[1]));
    return 0;
}
