/* pbjson.h -- one generic converter between JSON and any protobuf-c message (the proto3 JSON mapping).
 *
 * Driven only by the protobuf-c descriptors, so a field added to a .proto file needs no code here. Names
 * are lowerCamelCase (the proto name is accepted on input too), enums are their names, bytes are base64,
 * 64-bit integers are decimal strings, default values are left out on output. Input is strict: unknown
 * fields, wrong types, out-of-range numbers and a field given twice are refused with the path of the
 * field, e.g. "$.federalAgents[0].credentialCheck.result: unknown enum value \"MAYBE\" for
 * rb.CredentialResult". Error lines quote enum names and numbers, never the text of a string field. */
#ifndef PBJSON_H
#define PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "rb_error.h"

/* Largest JSON text accepted, and deepest nesting of messages (the outermost counts as one). */
#define PBJSON_MAX_BYTES (1024 * 1024)
#define PBJSON_MAX_DEPTH 32

/* Parses len bytes of JSON (no NUL needed) into a new message of type desc, allocated with allocator
 * (NULL: protobuf-c's default, or one whose free wipes, for plaintext referrals). On success the caller
 * owns *out and frees it with protobuf_c_message_free_unpacked(*out, allocator). On failure *out is NULL,
 * nothing is left allocated, err (errlen bytes, NUL-terminated when errlen > 0) holds one line naming the
 * path and the problem, and the result is RB_ERR_MALFORMED (not JSON, or JSON that does not fit the
 * schema), RB_ERR_TOO_BIG (over PBJSON_MAX_BYTES or PBJSON_MAX_DEPTH) or RB_ERR_NOMEM. Integers beyond
 * 2^63 - 1 must be given as strings (jansson reads no larger JSON integer). */
rb_err pbjson_parse(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                    ProtobufCAllocator *allocator, ProtobufCMessage **out, char *err, size_t errlen);

/* Writes msg (borrowed) as JSON, compact or (PBJSON_PRETTY) indented by two spaces, fields in
 * field-number order, exactly the fields protobuf-c would pack. On success *out is NUL-terminated and the
 * caller's, to free with pbjson_free. On failure *out is NULL and the result is RB_ERR_NOMEM,
 * RB_ERR_MALFORMED (a string that is not UTF-8, as unpacked bytes may hold) or RB_ERR_TOO_BIG (nested
 * deeper than PBJSON_MAX_DEPTH). */
#define PBJSON_PRETTY 1
rb_err pbjson_format(const ProtobufCMessage *msg, int flags, char **out);

/* Wipes (the text may be a referral) and frees text from pbjson_format; NULL is fine. */
void pbjson_free(char *text);

/* Makes jansson allocate through a wrapper that wipes each block before freeing it. pbjson_parse and
 * pbjson_format call it; any other code that uses jansson must call it before its first jansson call,
 * since a block from one allocator must never reach the other. Idempotent and thread-safe. */
void pbjson_init(void);

#endif
