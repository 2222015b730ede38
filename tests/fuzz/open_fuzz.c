/* open_fuzz.c -- libFuzzer target for envelope_open and envelope_verify_header.
 *
 * Random bytes rarely get past the header signature, so the first input byte picks how deep to start:
 *   0: the input is a whole envelope (framing, header, signature checks);
 *   1: the input is the plaintext of a sealed Inner, wrapped in a correctly signed header and sealed to
 *      the intake (inner parsing, inner signature, inner/outer comparison);
 *   2: the input is a body, sealed properly as a referral (strict body parsing).
 * Identities come from fixed seeds so that the checked-in corpus stays valid. Any result is fine except
 * a crash, a leak, or an envelope accepted that this target did not seal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "rbcrypto.h"

#define NOW    1760000000ULL
#define NOW_MS ((int64_t)NOW * 1000 + 5000)

static identity_t *police, *intake;
static trust_t *trust;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    uint8_t seed_police[32] = {1}, seed_intake[32] = {2};
    if (rbcrypto_init() != RB_OK || trust_new(&trust) != RB_OK ||
        identity_from_seed(&police, seed_police, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW, 86400) !=
            RB_OK ||
        identity_from_seed(&intake, seed_intake, "sao-intake", CARD_ROLE_SINK, "ILCCSAO00", NOW, 86400) !=
            RB_OK ||
        trust_add(trust, identity_card(police)) != RB_OK || trust_add(trust, identity_card(intake)) != RB_OK)
        abort();
    return 0;
}

static void open_and_check(const uint8_t *env, size_t len)
{
    envelope_opened_t opened;
    if (envelope_open(intake, trust, env, len, &opened) == RB_OK)
        envelope_opened_clear(&opened);
    Rb__Header *header;
    card_t sender;
    if (envelope_verify_header(trust, env, len, &header, &sender) == RB_OK)
        rb__header__free_unpacked(header, NULL);
}

/* Mode 1: seal arbitrary Inner plaintext under a valid, signed header. */
static void fuzz_inner(const uint8_t *data, size_t size)
{
    uint8_t *ct = malloc(size + RB_SEAL_OVERHEAD);
    if (ct == NULL || rbcrypto_seal(data, size, identity_card(intake)->box_pk, ct) != RB_OK)
        abort();
    uint8_t hash[RB_HASH_BYTES], id[MSG_ID_BYTES] = {0x01, 0x9a, 0, 0, 0, 0, 0x70, 0, 0x80};
    rbcrypto_sha256(ct, size + RB_SEAL_OVERHEAD, hash);
    Rb__Header h = RB__HEADER__INIT;
    h.version = ENVELOPE_VERSION;
    h.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, id};
    h.kind = RB__KIND__KIND_REFERRAL;
    h.sender = (char *)identity_card(police)->name;
    h.sender_agency = (char *)identity_card(police)->agency;
    h.sender_key_id = (ProtobufCBinaryData){RB_KEY_ID_BYTES, (uint8_t *)identity_card(police)->key_id};
    h.recipient = (char *)identity_card(intake)->name;
    h.recipient_key_id = (ProtobufCBinaryData){RB_KEY_ID_BYTES, (uint8_t *)identity_card(intake)->key_id};
    h.created_ms = NOW_MS;
    h.ciphertext_sha256 = (ProtobufCBinaryData){RB_HASH_BYTES, hash};
    uint8_t *env;
    size_t len;
    if (envelope_pack(police, &h, ct, size + RB_SEAL_OVERHEAD, &env, &len) == RB_OK) {
        open_and_check(env, len);
        free(env);
    }
    free(ct);
}

/* Mode 2: a properly sealed envelope around an arbitrary body. */
static void fuzz_body(const uint8_t *data, size_t size)
{
    envelope_params_t p = {.kind = RB__KIND__KIND_REFERRAL, .created_ms = NOW_MS};
    msg_id_t id;
    uint8_t *env;
    size_t len;
    if (envelope_seal(police, identity_card(intake), &p, data, size, &id, &env, &len) != RB_OK)
        return;
    envelope_opened_t opened;
    rb_err rc = envelope_open(intake, trust, env, len, &opened);
    if (rc == RB_OK) {
        if (opened.body_len != size || memcmp(opened.body, data, size) != 0)
            abort(); /* opened something other than what was sealed */
        envelope_opened_clear(&opened);
    } else if (rc != RB_ERR_BAD_BODY) {
        abort(); /* a good envelope must fail only on its body */
    }
    free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        open_and_check(data + 1, size - 1);
        break;
    case 1:
        fuzz_inner(data + 1, size - 1);
        break;
    default:
        fuzz_body(data + 1, size - 1);
        break;
    }
    return 0;
}
