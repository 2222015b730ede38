/* card_fuzz.c -- libFuzzer target for card and key certification parsing (keys/card.c).
 *
 * Readers accept a card or certification only in the one form a writer produces, so everything that
 * parses must write back to the very same bytes. And since only fixed-seed keys in this target sign, a
 * certification that checks must be the true one between the two cards it names. The first byte picks
 * what the rest is: 0 a card's text, 1 a packed card, 2 a certification's text, 3 a packed certification;
 * each parsed certification is also checked as a rotation from the "old" card to the "new" one, and each
 * parsed card as the new card of the true certification. Any other outcome aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "card.h"
#include "identity.h"
#include "rbcrypto.h"

#define NOW 1760000000ULL

static identity_t *old_id, *new_id;
static card_cert_t truth;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    uint8_t seed_old[32] = {6}, seed_new[32] = {7};
    if (rbcrypto_init() != RB_OK ||
        identity_from_seed(&old_id, seed_old, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW, 86400) !=
            RB_OK ||
        identity_from_seed(&new_id, seed_new, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", NOW + 60, 86400) !=
            RB_OK ||
        card_certify(identity_card(old_id), identity_sign_sk(old_id), identity_card(new_id), &truth) != RB_OK)
        abort();
    return 0;
}

static void check_card(const card_t *card)
{
    if (card_cert_check(&truth, identity_card(old_id), card) == RB_OK &&
        !card_equal(card, identity_card(new_id)))
        abort(); /* the old key vouched for a card it never certified */
}

static void check_cert(const card_cert_t *cert)
{
    if (card_cert_check(cert, identity_card(old_id), identity_card(new_id)) == RB_OK &&
        memcmp(cert, &truth, sizeof truth) != 0)
        abort(); /* a second certification of the same rotation: Ed25519 signatures are unique */
    if (card_cert_check(cert, identity_card(new_id), identity_card(old_id)) == RB_OK)
        abort(); /* backwards */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    card_t card;
    card_cert_t cert;
    char out[CARD_TEXT_MAX];
    uint8_t packed[CARD_PACKED_MAX];
    switch (data[0] % 4) {
    case 0:
        if (card_from_text(&card, text, len) == RB_OK) {
            if (card_to_text(&card, out) != len || memcmp(out, text, len) != 0)
                abort();
            check_card(&card);
        }
        break;
    case 1:
        if (card_unpack(&card, data + 1, len) == RB_OK) {
            if (card_pack(&card, packed) != len || memcmp(packed, data + 1, len) != 0)
                abort();
            check_card(&card);
        }
        break;
    case 2:
        if (card_cert_from_text(&cert, text, len) == RB_OK) {
            if (card_cert_to_text(&cert, out) != len || memcmp(out, text, len) != 0)
                abort();
            check_cert(&cert);
        }
        break;
    default:
        if (card_cert_unpack(&cert, data + 1, len) == RB_OK) {
            card_cert_pack(&cert, packed);
            if (len != CARD_CERT_PACKED || memcmp(packed, data + 1, len) != 0)
                abort();
            check_cert(&cert);
        }
        break;
    }
    return 0;
}
