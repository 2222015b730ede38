/* pbjson.c -- JSON <-> protobuf-c by descriptor (see pbjson.h).
 *
 * Parsing reads the text with jansson (duplicate keys refused), then walks the JSON tree and the
 * message descriptor together, writing each value straight into the message's C struct at the offsets
 * the descriptor gives. The message is always consistent enough for protobuf_c_message_free_unpacked, so
 * any failure frees what was built and nothing leaks. The current field's path is kept in one buffer
 * that grows and shrinks with the walk, for error messages. jansson allocates through the wiping
 * allocator, because referral plaintext passes through its buffers. */
#include "pbjson.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbcrypto.h"

#define PATH_MAX_LEN 512
#define NAME_MAX_LEN 128

static pthread_once_t alloc_once = PTHREAD_ONCE_INIT;

static void install_allocator(void);

void pbjson_init(void)
{
    pthread_once(&alloc_once, install_allocator);
}

static void install_allocator(void)
{
    json_set_alloc_funcs(rbcrypto_wiping_malloc, rbcrypto_wiping_free);
}

typedef struct {
    ProtobufCAllocator *alloc; /* for everything put into the message */
    char path[PATH_MAX_LEN];   /* "$.federalAgents[0].name" while that field is read */
    size_t path_len;
    char *err; /* the caller's error buffer */
    size_t errlen;
    int depth; /* messages entered */
} parser_t;

static rb_err fail(parser_t *p, rb_err rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static rb_err fail(parser_t *p, rb_err rc, const char *fmt, ...)
{
    if (p->errlen == 0)
        return rc;
    int n = snprintf(p->err, p->errlen, "%s: ", p->path);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Appends ".name" or "[i]" to the path; returns the length to restore afterwards. */
static size_t path_push(parser_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(parser_t *p, const char *fmt, ...)
{
    size_t saved = p->path_len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->path + saved, sizeof p->path - saved, fmt, ap);
    va_end(ap);
    if (n > 0)
        p->path_len = saved + (size_t)n < sizeof p->path ? saved + (size_t)n : sizeof p->path - 1;
    return saved;
}

static void path_pop(parser_t *p, size_t saved)
{
    p->path_len = saved;
    p->path[saved] = '\0';
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

/* The proto3 JSON name: lowerCamelCase of the proto field name ("rd_number" -> "rdNumber"). */
static void json_name(const char *proto_name, char out[NAME_MAX_LEN])
{
    size_t o = 0;
    bool upper = false;
    for (const char *c = proto_name; *c != '\0' && o + 1 < NAME_MAX_LEN; c++) {
        if (*c == '_') {
            upper = true;
            continue;
        }
        out[o++] = upper && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        upper = false;
    }
    out[o] = '\0';
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc, const char *key)
{
    for (unsigned i = 0; i < desc->n_fields; i++) {
        char name[NAME_MAX_LEN];
        json_name(desc->fields[i].name, name);
        if (strcmp(name, key) == 0 || strcmp(desc->fields[i].name, key) == 0)
            return &desc->fields[i];
    }
    return NULL;
}

static size_t type_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static void *pb_alloc(parser_t *p, size_t n)
{
    return p->alloc->alloc(p->alloc->allocator_data, n ? n : 1);
}

/* An integer from a JSON integer, an integral number, or a string of decimal digits (as the mapping
 * allows), within [min, max] for signed fields or [0, umax] for unsigned ones. */
static rb_err read_integer(parser_t *p, const json_t *v, bool is_signed, int64_t min, int64_t max,
                           uint64_t umax, int64_t *s_out, uint64_t *u_out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (is_signed ? (i < min || i > max) : (i < 0 || (uint64_t)i > umax))
            return fail(p, RB_ERR_MALFORMED, "%" JSON_INTEGER_FORMAT " is out of range", i);
        *s_out = (int64_t)i;
        *u_out = (uint64_t)i;
        return RB_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) ||
            !(is_signed ? (d >= (double)min && d <= (double)max) : (d >= 0 && d <= (double)umax)))
            return fail(p, RB_ERR_MALFORMED, "%g is not an integer in range", d);
        *s_out = (int64_t)d;
        *u_out = (uint64_t)d;
        return RB_OK;
    }
    if (!json_is_string(v))
        return fail(p, RB_ERR_MALFORMED, "expected an integer, got %s", json_type_name(v));
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    if (is_signed) {
        long long i = strtoll(s, &end, 10);
        if (*s == '\0' || *end != '\0' || (*s != '-' && (*s < '0' || *s > '9')))
            return fail(p, RB_ERR_MALFORMED, "\"%.40s\" is not an integer", s);
        if (errno == ERANGE || i < min || i > max)
            return fail(p, RB_ERR_MALFORMED, "%.40s is out of range", s);
        *s_out = i;
    } else {
        unsigned long long u = strtoull(s, &end, 10);
        if (*s < '0' || *s > '9' || *end != '\0')
            return fail(p, RB_ERR_MALFORMED, "\"%.40s\" is not an unsigned integer", s);
        if (errno == ERANGE || u > umax)
            return fail(p, RB_ERR_MALFORMED, "%.40s is out of range", s);
        *u_out = u;
    }
    return RB_OK;
}

static rb_err read_double(parser_t *p, const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return RB_OK;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s != NULL && strcmp(s, "NaN") == 0)
        *out = NAN;
    else if (s != NULL && strcmp(s, "Infinity") == 0)
        *out = INFINITY;
    else if (s != NULL && strcmp(s, "-Infinity") == 0)
        *out = -INFINITY;
    else
        return fail(p, RB_ERR_MALFORMED, "expected a number, got %s", json_type_name(v));
    return RB_OK;
}

static rb_err read_bytes(parser_t *p, const json_t *v, ProtobufCBinaryData *out)
{
    if (!json_is_string(v))
        return fail(p, RB_ERR_MALFORMED, "expected base64 bytes, got %s", json_type_name(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v), n;
    uint8_t *buf = pb_alloc(p, len / 4 * 3 + 3);
    if (buf == NULL)
        return fail(p, RB_ERR_NOMEM, "out of memory");
    static const int variants[] = {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                                   sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        const char *end;
        if (sodium_base642bin(buf, len / 4 * 3 + 3, s, len, NULL, &n, &end, variants[i]) == 0 &&
            end == s + len) {
            out->data = buf;
            out->len = n;
            return RB_OK;
        }
    }
    p->alloc->free(p->alloc->allocator_data, buf);
    return fail(p, RB_ERR_MALFORMED, "not valid base64");
}

static rb_err parse_message(parser_t *p, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                            ProtobufCMessage **out);

/* One value of field f (one element, for repeated fields) into slot. */
static rb_err read_value(parser_t *p, const ProtobufCFieldDescriptor *f, const json_t *v, void *slot)
{
    int64_t s = 0;
    uint64_t u = 0;
    rb_err rc = RB_OK;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((rc = read_integer(p, v, true, INT32_MIN, INT32_MAX, 0, &s, &u)) == RB_OK)
            *(int32_t *)slot = (int32_t)s;
        return rc;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((rc = read_integer(p, v, false, 0, 0, UINT32_MAX, &s, &u)) == RB_OK)
            *(uint32_t *)slot = (uint32_t)u;
        return rc;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((rc = read_integer(p, v, true, INT64_MIN, INT64_MAX, 0, &s, &u)) == RB_OK)
            *(int64_t *)slot = s;
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = read_integer(p, v, false, 0, 0, UINT64_MAX, &s, &u)) == RB_OK)
            *(uint64_t *)slot = u;
        return rc;
    case PROTOBUF_C_TYPE_FLOAT: {
        double d;
        if ((rc = read_double(p, v, &d)) != RB_OK)
            return rc;
        if (isfinite(d) && (d > 3.4028234663852886e38 || d < -3.4028234663852886e38))
            return fail(p, RB_ERR_MALFORMED, "%g is out of range for a float", d);
        *(float *)slot = (float)d;
        return RB_OK;
    }
    case PROTOBUF_C_TYPE_DOUBLE:
        return read_double(p, v, (double *)slot);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return fail(p, RB_ERR_MALFORMED, "expected true or false, got %s", json_type_name(v));
        *(protobuf_c_boolean *)slot = json_is_true(v);
        return RB_OK;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(v))
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
        else if (json_is_integer(v) && json_integer_value(v) >= INT32_MIN &&
                 json_integer_value(v) <= INT32_MAX)
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)json_integer_value(v));
        else
            return fail(p, RB_ERR_MALFORMED, "expected a %s name, got %s", ed->name, json_type_name(v));
        if (ev == NULL) {
            if (json_is_string(v))
                return fail(p, RB_ERR_MALFORMED, "unknown value \"%.60s\" for %s", json_string_value(v),
                            ed->name);
            return fail(p, RB_ERR_MALFORMED, "unknown value %" JSON_INTEGER_FORMAT " for %s",
                        json_integer_value(v), ed->name);
        }
        *(int *)slot = ev->value;
        return RB_OK;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v))
            return fail(p, RB_ERR_MALFORMED, "expected a string, got %s", json_type_name(v));
        size_t len = json_string_length(v);
        char *copy = pb_alloc(p, len + 1);
        if (copy == NULL)
            return fail(p, RB_ERR_NOMEM, "out of memory");
        memcpy(copy, json_string_value(v), len + 1);
        *(char **)slot = copy;
        return RB_OK;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return read_bytes(p, v, slot);
    case PROTOBUF_C_TYPE_MESSAGE:
        return parse_message(p, f->descriptor, v, slot);
    }
    return fail(p, RB_ERR_MALFORMED, "unsupported field type");
}

static rb_err read_repeated(parser_t *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                            const json_t *v)
{
    if (!json_is_array(v))
        return fail(p, RB_ERR_MALFORMED, "expected an array, got %s", json_type_name(v));
    size_t n = json_array_size(v), size = type_size(f);
    if (n == 0)
        return RB_OK;
    uint8_t *items = pb_alloc(p, n * size);
    if (items == NULL)
        return fail(p, RB_ERR_NOMEM, "out of memory");
    memset(items, 0, n * size);
    /* Count only what was read, so that a failure midway frees exactly the elements that exist. */
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    *(void **)((char *)m + f->offset) = items;
    for (size_t i = 0; i < n; i++) {
        size_t saved = path_push(p, "[%zu]", i);
        rb_err rc = read_value(p, f, json_array_get(v, i), items + i * size);
        if (rc != RB_OK)
            return rc;
        path_pop(p, saved);
        *count = i + 1;
    }
    return RB_OK;
}

static rb_err read_field(parser_t *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const json_t *v)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return read_repeated(p, m, f, v);
    void *slot = (char *)m + f->offset;
    rb_err rc = read_value(p, f, v, slot);
    if (rc != RB_OK)
        return rc;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
             f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
    return RB_OK;
}

static rb_err parse_message(parser_t *p, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                            ProtobufCMessage **out)
{
    *out = NULL;
    if (!json_is_object(obj))
        return fail(p, RB_ERR_MALFORMED, "expected an object (%s), got %s", desc->name, json_type_name(obj));
    if (p->depth >= PBJSON_MAX_DEPTH)
        return fail(p, RB_ERR_MALFORMED, "nested more than %d messages deep", PBJSON_MAX_DEPTH);
    ProtobufCMessage *m = pb_alloc(p, desc->sizeof_message);
    if (m == NULL)
        return fail(p, RB_ERR_NOMEM, "out of memory");
    desc->message_init(m);
    p->depth++;
    rb_err rc = RB_OK;
    const char *key;
    json_t *v;
    uint8_t seen[512] = {0}; /* by field index: each field once, under either of its names */
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t saved = path_push(p, ".%s", key);
        const ProtobufCFieldDescriptor *f = find_field(desc, key);
        if (f == NULL) {
            rc = fail(p, RB_ERR_MALFORMED, "unknown field");
            break;
        }
        size_t index = (size_t)(f - desc->fields);
        if (index >= sizeof seen || seen[index]) {
            rc = fail(p, RB_ERR_MALFORMED, "given twice");
            break;
        }
        seen[index] = 1;
        if (json_is_null(v)) { /* the default */
            path_pop(p, saved);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)((char *)m + f->quantifier_offset) != 0) {
            rc = fail(p, RB_ERR_MALFORMED, "another member of its oneof is already set");
            break;
        }
        if ((rc = read_field(p, m, f, v)) != RB_OK)
            break;
        path_pop(p, saved);
    }
    p->depth--;
    if (rc != RB_OK) {
        protobuf_c_message_free_unpacked(m, p->alloc);
        return rc;
    }
    *out = m;
    return RB_OK;
}

/* What protobuf_c_message_free_unpacked(m, NULL) frees with: malloc and free. */
static void *plain_alloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void plain_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

static ProtobufCAllocator plain_allocator = {plain_alloc, plain_free, NULL};

rb_err pbjson_parse(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                    ProtobufCAllocator *allocator, ProtobufCMessage **out, char *err, size_t errlen)
{
    pthread_once(&alloc_once, install_allocator);
    *out = NULL;
    parser_t p = {.path = "$", .path_len = 1, .err = err, .errlen = errlen};
    if (errlen > 0)
        err[0] = '\0';
    if (allocator == NULL)
        allocator = &plain_allocator;
    p.alloc = allocator;
    if (len > PBJSON_MAX_BYTES)
        return fail(&p, RB_ERR_TOO_BIG, "over %d bytes", PBJSON_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(&p, RB_ERR_MALFORMED, "not JSON: %s at line %d column %d", jerr.text, jerr.line,
                    jerr.column);
    rb_err rc = parse_message(&p, desc, root, out);
    json_decref(root);
    return rc;
}

/* Whether field f of m holds its default value, which the proto3 mapping leaves out. */
static bool is_default(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)(base + f->quantifier_offset) == 0;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) != f->id;
    const void *slot = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING)
        return !*(const protobuf_c_boolean *)(base + f->quantifier_offset);
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *str = *(char *const *)slot;
        return str == NULL || str[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)slot)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)slot == NULL;
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)slot;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)slot == 0 && !signbit(*(const float *)slot);
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)slot == 0 && !signbit(*(const double *)slot);
    default: {
        static const uint8_t zero[8];
        return memcmp(slot, zero, type_size(f)) == 0;
    }
    }
}

static json_t *format_message(const ProtobufCMessage *m);

static json_t *format_double(double d)
{
    if (isnan(d))
        return json_string("NaN");
    if (isinf(d))
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

/* One value (one element, for repeated fields) of field f at slot, as JSON; NULL when out of memory. */
static json_t *format_value(const ProtobufCFieldDescriptor *f, const void *slot)
{
    char num[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)slot);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)slot);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)slot);
        return json_string(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)slot);
        return json_string(num);
    case PROTOBUF_C_TYPE_FLOAT:
        return format_double(*(const float *)slot);
    case PROTOBUF_C_TYPE_DOUBLE:
        return format_double(*(const double *)slot);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)slot);
    case PROTOBUF_C_TYPE_ENUM: {
        int value = *(const int *)slot;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, value);
        return ev != NULL ? json_string(ev->name) : json_integer(value); /* a value from a newer schema */
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *str = *(char *const *)slot;
        return json_string(str != NULL ? str : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = slot;
        size_t cap = sodium_base64_ENCODED_LEN(b->len, sodium_base64_VARIANT_ORIGINAL);
        char *text = rbcrypto_wiping_malloc(cap);
        if (text == NULL)
            return NULL;
        sodium_bin2base64(text, cap, b->data, b->len, sodium_base64_VARIANT_ORIGINAL);
        json_t *j = json_string(text);
        rbcrypto_wiping_free(text);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return format_message(*(ProtobufCMessage *const *)slot);
    }
    return NULL;
}

static json_t *format_field(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return format_value(f, base + f->offset);
    json_t *array = json_array();
    size_t n = *(const size_t *)(base + f->quantifier_offset), size = type_size(f);
    const uint8_t *items = *(const uint8_t *const *)(base + f->offset);
    for (size_t i = 0; array != NULL && i < n; i++)
        if (json_array_append_new(array, format_value(f, items + i * size)) != 0) {
            json_decref(array);
            array = NULL;
        }
    return array;
}

static json_t *format_message(const ProtobufCMessage *m)
{
    json_t *obj = json_object();
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    for (unsigned i = 0; obj != NULL && i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (is_default(m, f))
            continue;
        char name[NAME_MAX_LEN];
        json_name(f->name, name);
        if (json_object_set_new(obj, name, format_field(m, f)) != 0) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

rb_err pbjson_format(const ProtobufCMessage *msg, int flags, char **out)
{
    pthread_once(&alloc_once, install_allocator);
    json_t *root = format_message(msg);
    *out = root != NULL ? json_dumps(root, (flags & PBJSON_PRETTY ? JSON_INDENT(2) : JSON_COMPACT) |
                                               JSON_REAL_PRECISION(17))
                        : NULL;
    json_decref(root);
    return *out != NULL ? RB_OK : RB_ERR_NOMEM;
}

void pbjson_free(char *text)
{
    rbcrypto_wiping_free(text); /* jansson allocated it with rbcrypto_wiping_malloc */
}
