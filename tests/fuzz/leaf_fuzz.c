/* leaf_fuzz.c -- libFuzzer target for ledger leaves and exported ledgers (ledger/ledger.c, ledger/audit.c).
 *
 * The first byte picks the mode:
 *   even: the rest is a leaf. ledger_parse_leaf accepts only canonical bytes, so a leaf that parses packs
 *         back to itself; and the JSON form an export puts on its line (pbjson_format) parses back
 *         (pbjson_parse) to an event that packs to the very same leaf, which is what lets audit_open
 *         compare a line's fields with its leaf.
 *   odd:  the rest is a JSON-lines export, written to a file and opened with audit_open, as referral-audit
 *         does, then verified (tree and checkpoints; audit_verify without envelope signatures). The broker
 *         key (a fixed seed) signs checkpoints of one reference ledger only, so an export that verifies
 *         under the reference broker card holds exactly the reference leaves up to its last checkpoint.
 * Any broken promise aborts. The export file lives in a private directory under /dev/shm (or $TMPDIR). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "identity.h"
#include "ledger.h"
#include "pbjson.h"
#include "rbcrypto.h"

#define N_LEAVES 9
#define NOW_MS   1760000000000LL

static identity_t *broker, *source;
static uint8_t *leaves[N_LEAVES];
static size_t leaf_len[N_LEAVES];
static char dir[256], path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

/* The reference ledger's event i; the caller packs it (ledger_append sets version and index alike). It
 * starts as a broker's ledger does: the broker's card, then a party present at its first start. */
static void reference_event(size_t i, Rb__LedgerEvent *e, uint8_t id[16], uint8_t card[CARD_PACKED_MAX])
{
    static const char *const actions[] = {"disconnected", "broker_started", "ledger_read"};
    memset(id, 0, 16);
    id[0] = 0x01;
    id[1] = (uint8_t)i;
    rb__ledger_event__init(e);
    e->version = LEDGER_VERSION;
    e->index = i;
    e->at_ms = NOW_MS + (int64_t)i;
    e->outcome = "ok";
    if (i < 2) {
        e->action = "party_registered";
        e->card = (ProtobufCBinaryData){card_pack(identity_card(i == 0 ? broker : source), card), card};
        return;
    }
    e->action = (char *)actions[i % 3];
    e->party = "cpd-rms";
    e->agency = "ILCPD0000";
    e->message_id = (ProtobufCBinaryData){16, id};
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    uint8_t seed[32] = {3}, seed_source[32] = {1};
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                       : getenv("TMPDIR")            ? getenv("TMPDIR")
                                                     : "/tmp";
    snprintf(dir, sizeof dir, "%s/leaf_fuzz.XXXXXX", base);
    if (rbcrypto_init() != RB_OK || mkdtemp(dir) == NULL ||
        identity_from_seed(&broker, seed, "broker", CARD_ROLE_BROKER, "ILCCSAO00", NOW_MS / 1000, 86400) !=
            RB_OK ||
        identity_from_seed(&source, seed_source, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW_MS / 1000,
                           86400) != RB_OK)
        abort();
    snprintf(path, sizeof path, "%s/export.jsonl", dir);
    atexit(cleanup);
    pbjson_init();
    for (size_t i = 0; i < N_LEAVES; i++) {
        Rb__LedgerEvent e;
        uint8_t id[16], card[CARD_PACKED_MAX];
        reference_event(i, &e, id, card);
        leaf_len[i] = rb__ledger_event__get_packed_size(&e);
        if ((leaves[i] = malloc(leaf_len[i])) == NULL)
            abort();
        rb__ledger_event__pack(&e, leaves[i]);
    }
    return 0;
}

static void leaf_mode(const uint8_t *leaf, size_t len)
{
    Rb__LedgerEvent *e;
    if (ledger_parse_leaf(leaf, len, &e) != RB_OK)
        return;
    size_t n = rb__ledger_event__get_packed_size(e);
    uint8_t *again = malloc(n + 1);
    if (again == NULL || n != len || rb__ledger_event__pack(e, again) != len || memcmp(again, leaf, len) != 0)
        abort(); /* parsed a leaf that is not canonical */
    char *json;
    rb_err rc = pbjson_format(&e->base, 0, &json);
    if (rc == RB_OK) {
        ProtobufCMessage *back;
        char err[256];
        if (pbjson_parse(&rb__ledger_event__descriptor, json, strlen(json), NULL, &back, err, sizeof err) !=
            RB_OK)
            abort();
        if (protobuf_c_message_get_packed_size(back) != len || protobuf_c_message_pack(back, again) != len ||
            memcmp(again, leaf, len) != 0)
            abort(); /* the JSON line means another leaf */
        protobuf_c_message_free_unpacked(back, NULL);
    } else if (rc != RB_ERR_MALFORMED) {
        abort(); /* only a string that is not UTF-8 has no JSON form */
    }
    pbjson_free(json);
    free(again);
    rb__ledger_event__free_unpacked(e, NULL);
}

static rb_err last_checkpoint(void *ctx, uint64_t size, int64_t at_ms, const char *note)
{
    (void)at_ms;
    (void)note;
    uint64_t *last = ctx;
    if (size > *last)
        *last = size;
    return RB_OK;
}

static rb_err same_leaf(void *ctx, uint64_t index, const uint8_t *leaf, size_t len)
{
    (void)ctx;
    if (index >= N_LEAVES || len != leaf_len[index] || memcmp(leaf, leaves[index], len) != 0)
        abort(); /* a checkpoint signed by the broker covers a leaf it never had */
    return RB_OK;
}

static void export_mode(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    audit_export_t x;
    char err[256];
    if (audit_open(&x, path, err, sizeof err) != RB_OK)
        return;
    audit_stats_t stats;
    uint64_t last = 0;
    if (audit_verify(&x, false, &stats, err, sizeof err) == RB_OK &&
        card_equal(&x.broker, identity_card(broker))) {
        if (ledger_each_checkpoint(x.ledger, last_checkpoint, &last) != RB_OK ||
            ledger_each_leaf(x.ledger, 0, last, same_leaf, NULL) != RB_OK)
            abort();
    }
    audit_close(&x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        export_mode(data + 1, size - 1);
    else
        leaf_mode(data + 1, size - 1);
    return 0;
}
