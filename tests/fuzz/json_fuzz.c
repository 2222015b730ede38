/* json_fuzz.c -- libFuzzer target for the JSON converter (proto/pbjson.h).
 *
 * The first byte picks the message type, types[(first - '0') % N_TYPES], so that the seeds read "0{...}"
 * for a Referral, and the mode: binary when its top bit is set, else JSON. JSON mode: the rest is parsed
 * as JSON; whatever parses must format, compact and pretty, to JSON that parses again into the very same
 * message (compared as packed protobuf bytes), and the compact text must format again to itself. Binary
 * mode: the rest is unpacked as protobuf, as a peer's message would be, and formatted: whatever the
 * bytes, that must not crash, leak, or fail for any reason but a string that is not UTF-8.
 * Any broken promise aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.pb-c.h"
#include "pbjson.h"
#include "pbjson_types.pb-c.h"
#include "referral.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* By the first byte: '0' a Referral, '1' an AckBody, '2' a Header, '3' a pbt.Types, '4' a pbt.Node. */
static const ProtobufCMessageDescriptor *const types[] = {
    &rb__referral__descriptor, &rb__ack_body__descriptor, &rb__header__descriptor,
    &pbt__types__descriptor,   &pbt__node__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* m packed into a malloc'd buffer of *len bytes. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    if (buf == NULL)
        abort();
    protobuf_c_message_pack(m, buf);
    return buf;
}

/* text must parse as desc into a message that packs to exactly want (want_len bytes). */
static void assert_parses_to(const ProtobufCMessageDescriptor *desc, const char *text, const uint8_t *want,
                             size_t want_len)
{
    ProtobufCMessage *m;
    char err[256];
    if (pbjson_parse(desc, text, strlen(text), NULL, &m, err, sizeof err) != RB_OK)
        abort(); /* our own output must parse */
    size_t len;
    uint8_t *got = pack(m, &len);
    if (len != want_len || memcmp(got, want, len) != 0)
        abort(); /* and mean the same */
    free(got);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void json_mode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len)
{
    ProtobufCMessage *m;
    char err[256];
    if (pbjson_parse(desc, json, len, NULL, &m, err, sizeof err) != RB_OK)
        return;
    size_t packed_len;
    uint8_t *packed = pack(m, &packed_len);
    char *compact, *pretty, *again;
    if (pbjson_format(m, 0, &compact) != RB_OK || pbjson_format(m, PBJSON_PRETTY, &pretty) != RB_OK)
        abort();
    assert_parses_to(desc, compact, packed, packed_len);
    assert_parses_to(desc, pretty, packed, packed_len);
    ProtobufCMessage *second;
    if (pbjson_parse(desc, compact, strlen(compact), NULL, &second, err, sizeof err) != RB_OK ||
        pbjson_format(second, 0, &again) != RB_OK || strcmp(compact, again) != 0)
        abort(); /* the canonical form is a fixed point */
    pbjson_free(again);
    pbjson_free(pretty);
    pbjson_free(compact);
    free(packed);
    protobuf_c_message_free_unpacked(second, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void binary_mode(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
    if (m == NULL)
        return;
    char *text;
    rb_err rc = pbjson_format(m, 0, &text);
    if (rc != RB_OK && rc != RB_ERR_MALFORMED && rc != RB_ERR_TOO_BIG)
        abort();
    pbjson_free(text);
    protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const ProtobufCMessageDescriptor *desc = types[(uint8_t)(data[0] - '0') % N_TYPES];
    if (data[0] & 0x80)
        binary_mode(desc, data + 1, size - 1);
    else
        json_mode(desc, (const char *)data + 1, size - 1);
    return 0;
}
