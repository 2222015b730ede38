/* pbjson.h -- one generic converter between JSON and any protobuf-c message (the proto3 JSON mapping).
 *
 * Driven only by the protobuf-c descriptors, so a field added to a .proto file needs no code here. Names
 * are lowerCamelCase (the proto name is accepted on input too), enums are their names, bytes are base64,
 * 64-bit integers are decimal strings, default values are left out on output. Input is strict: unknown
 * fields, wrong types, out-of-range numbers and duplicate keys are refused with the path of the field,
 * e.g. "$.federalAgents[0].credentialCheck.result: unknown value \"MAYBE\" for rb.CredentialResult". */
#ifndef PBJSON_H
#define PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "rb_error.h"

/* Largest JSON text accepted, and deepest nesting of messages. */
#define PBJSON_MAX_BYTES (1024 * 1024)
#define PBJSON_MAX_DEPTH 32

/* Parses len bytes of JSON (no NUL needed) into a new message of type desc, allocated with allocator
 * (NULL: protobuf-c's default); the caller frees it with protobuf_c_message_free_unpacked(*out,
 * allocator). On failure *out is NULL, err (errlen bytes) holds one line naming the path and the problem,
 * and the result is RB_ERR_MALFORMED (not JSON, or JSON that does not fit the schema), RB_ERR_TOO_BIG or
 * RB_ERR_NOMEM. */
rb_err pbjson_parse(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                    ProtobufCAllocator *allocator, ProtobufCMessage **out, char *err, size_t errlen);

/* Writes msg as JSON, compact or (PBJSON_PRETTY) indented by two spaces, fields in field-number order.
 * *out is NUL-terminated and the caller's, to free with pbjson_free. */
#define PBJSON_PRETTY 1
rb_err pbjson_format(const ProtobufCMessage *msg, int flags, char **out);
/* Wipes (the text may be a referral) and frees; NULL is fine. */
void pbjson_free(char *text);

/* Makes jansson allocate through the wiping allocator. pbjson_parse and pbjson_format call it; any other
 * code that uses jansson must call it first, since memory from one allocator must not reach the other. */
void pbjson_init(void);

#endif
