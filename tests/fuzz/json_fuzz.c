/* json_fuzz.c -- libFuzzer target for the JSON converter.
 *
 * Any bytes are parsed as a Referral (or, by the first byte, an AckBody or a Header). Whatever parses must
 * format back to JSON that parses again into the very same message: compared as packed protobuf bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.pb-c.h"
#include "pbjson.h"
#include "referral.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    static const ProtobufCMessageDescriptor *const types[] = {
        &rb__referral__descriptor, &rb__ack_body__descriptor, &rb__header__descriptor};
    if (size == 0)
        return 0;
    const ProtobufCMessageDescriptor *desc = types[data[0] % 3];
    ProtobufCMessage *first, *second;
    char err[256];
    if (pbjson_parse(desc, (const char *)data + 1, size - 1, NULL, &first, err, sizeof err) != RB_OK)
        return 0;
    char *text;
    if (pbjson_format(first, 0, &text) != RB_OK)
        abort();
    if (pbjson_parse(desc, text, strlen(text), NULL, &second, err, sizeof err) != RB_OK)
        abort(); /* our own output must parse */
    size_t la, lb;
    uint8_t *a = pack(first, &la), *b = pack(second, &lb);
    if (la != lb || memcmp(a, b, la) != 0)
        abort(); /* and mean the same */
    free(a);
    free(b);
    pbjson_free(text);
    protobuf_c_message_free_unpacked(first, NULL);
    protobuf_c_message_free_unpacked(second, NULL);
    return 0;
}
