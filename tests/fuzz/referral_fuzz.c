/* referral_fuzz.c -- libFuzzer target for JSON to referral (adapters/adapter.c adapter_accept_referral):
 * pbjson_parse into an Rb__Referral with the wiping allocator, then referral_validate (proto/referral_rules.c)
 * for the kind the adapter infers, and for the other kinds.
 *
 * The problem list must be well formed (RB_OK exactly when it is empty, each path a "$" path). A referral
 * the source accepts must be accepted by the sink too: its protobuf body unpacks to the very same bytes
 * and validates again, and so does its JSON form (format, parse: same bytes, still valid). The input is
 * the JSON itself, so the seeds are referrals as an RMS would post them. The facts a source keeps for
 * publication (adapters/publish.c) hold no text from the referral but a month and a district of a fixed
 * form: every other string is from the publisher's own vocabulary. Any broken promise aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pbjson.h"
#include "publish.h"
#include "rbcrypto.h"
#include "referral.pb-c.h"
#include "referral_rules.h"

#define NOW_MS 1900000000000LL /* 2030: every sample's times are in the past */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (rbcrypto_init() != RB_OK)
        abort();
    pbjson_init();
    return 0;
}

/* adapter.c kind_of: a referral names nothing earlier; a withdrawal says why. */
static Rb__Kind kind_of(const Rb__Referral *r)
{
    if (r->references == NULL)
        return RB__KIND__KIND_REFERRAL;
    return r->withdrawal_reason[0] != '\0' ? RB__KIND__KIND_WITHDRAWAL : RB__KIND__KIND_SUPPLEMENT;
}

static bool validate(const Rb__Referral *r, Rb__Kind kind)
{
    referral_problems_t p;
    rb_err rc = referral_validate(r, kind, NOW_MS, &p);
    if ((rc == RB_OK) != (p.count == 0 && !p.truncated) || (rc != RB_OK && rc != RB_ERR_INVALID) ||
        p.count > REFERRAL_MAX_PROBLEMS || (p.truncated && p.count != REFERRAL_MAX_PROBLEMS))
        abort();
    for (size_t i = 0; i < p.count; i++)
        if (p.items[i].path[0] != '$' || memchr(p.items[i].path, 0, sizeof p.items[i].path) == NULL ||
            memchr(p.items[i].message, 0, sizeof p.items[i].message) == NULL || p.items[i].message[0] == '\0')
            abort();
    return rc == RB_OK;
}

/* Every string in the facts: a month, a district (letters, digits, dashes, at most 12), or a word of the
 * publisher's vocabulary, which has no digits. */
static void facts_hold_no_text(json_t *j, const char *key)
{
    if (json_is_object(j)) {
        for (void *it = json_object_iter(j); it != NULL; it = json_object_iter_next(j, it))
            facts_hold_no_text(json_object_iter_value(it), json_object_iter_key(it));
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++)
            facts_hold_no_text(json_array_get(j, i), key);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        size_t n = strlen(s);
        bool month = strcmp(key, "month") == 0 && n == 7 && s[4] == '-' && strspn(s, "0123456789-") == 7;
        bool district = strcmp(key, "district") == 0 && n <= 12 &&
                        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") == n;
        bool word = n <= 24 && strspn(s, "abcdefghijklmnopqrstuvwxyzCBPIEROHS ") == n;
        if (!month && !district && !word)
            abort();
    }
}

static void check_facts(const Rb__Referral *r)
{
    char *facts = publish_facts(r);
    json_t *j = facts ? json_loads(facts, 0, NULL) : NULL;
    if (j == NULL || json_object_size(j) != 7)
        abort();
    facts_hold_no_text(j, "");
    json_decref(j);
    free(facts);
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    if (buf == NULL)
        abort();
    protobuf_c_message_pack(m, buf);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ProtobufCMessage *m;
    char err[256];
    if (pbjson_parse(&rb__referral__descriptor, (const char *)data, size, rbcrypto_wiping_allocator(), &m,
                     err, sizeof err) != RB_OK)
        return 0;
    Rb__Referral *r = (Rb__Referral *)m;
    Rb__Kind kind = kind_of(r);
    bool ok = validate(r, kind);
    validate(r, kind == RB__KIND__KIND_REFERRAL ? RB__KIND__KIND_SUPPLEMENT : RB__KIND__KIND_REFERRAL);
    validate(r, RB__KIND__KIND_ACK);
    if (ok) {
        check_facts(r);
        size_t len, len2;
        uint8_t *body = pack(m, &len);
        Rb__Referral *sink = rb__referral__unpack(NULL, len, body);
        if (sink == NULL || !validate(sink, kind))
            abort(); /* the sink refuses what the source sent */
        uint8_t *again = pack(&sink->base, &len2);
        if (len2 != len || memcmp(again, body, len) != 0)
            abort(); /* and its strict parser would: the body does not re-pack to itself */
        free(again);
        rb__referral__free_unpacked(sink, NULL);

        char *json;
        ProtobufCMessage *back;
        if (pbjson_format(m, 0, &json) != RB_OK ||
            pbjson_parse(&rb__referral__descriptor, json, strlen(json), NULL, &back, err, sizeof err) !=
                RB_OK ||
            !validate((Rb__Referral *)back, kind))
            abort(); /* its own JSON is not a valid referral */
        again = pack(back, &len2);
        if (len2 != len || memcmp(again, body, len) != 0)
            abort();
        free(again);
        pbjson_free(json);
        protobuf_c_message_free_unpacked(back, NULL);
        free(body);
    }
    protobuf_c_message_free_unpacked(m, rbcrypto_wiping_allocator());
    return 0;
}
