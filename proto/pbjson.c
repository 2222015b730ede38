/* pbjson.c -- JSON <-> protobuf-c by descriptor (see pbjson.h).
 *
 * Parsing: jansson reads the whole text into a tree (duplicate keys refused), then one recursive walk
 * follows the JSON tree and the message descriptor together, writing each value into the message's C
 * struct at the offset its field descriptor gives. Whatever is allocated is hung on the message at once,
 * so the message is always fit for protobuf_c_message_free_unpacked: any failure frees the whole partial
 * message from its root and nothing leaks. The path of the value being read ("$.federalAgents[1].name")
 * grows and shrinks in one buffer, for the error line.
 *
 * Formatting: the opposite walk builds a jansson tree holding exactly the fields protobuf-c's packer would
 * write, so JSON and binary agree on which fields are present; jansson then dumps it. Reals are dumped
 * with the fewest digits that read back to the very same value, which one precision must do for every
 * real in the message (jansson has one precision per dump), so 41.7764 stays 41.7764.
 *
 * Referral plaintext passes through jansson's buffers, so jansson allocates through rbcrypto's wiping
 * allocator. */
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

#define PATH_CAP 512 /* longer paths are cut short in error lines */
#define NAME_CAP 256 /* longest field name */
#define CLIP     64  /* most bytes of a key or enum name quoted in an error line */
#define DIGITS   17  /* significant digits that print any double exactly */

/* ---- jansson's allocator: rbcrypto's, which wipes each block when it is freed ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void install_allocator(void)
{
    json_set_alloc_funcs(rbcrypto_wiping_malloc, rbcrypto_wiping_free);
}

void pbjson_init(void)
{
    pthread_once(&init_once, install_allocator);
}

void pbjson_free(char *text)
{
    rbcrypto_wiping_free(text); /* jansson allocated it with rbcrypto_wiping_malloc */
}

/* ---- shared by both directions ---- */

/* The proto3 JSON name, as protoc computes it: each underscore dropped and the letter after it made
 * upper case ("rd_number" -> "rdNumber"). */
static void json_name(const char *proto_name, char out[NAME_CAP])
{
    size_t o = 0;
    bool upper = false;
    for (const char *c = proto_name; *c != '\0' && o + 1 < NAME_CAP; c++) {
        if (*c == '_') {
            upper = true;
            continue;
        }
        out[o++] = (char)(upper && *c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
        upper = false;
    }
    out[o] = '\0';
}

/* Size of one element of a repeated field of this type in protobuf-c's arrays. */
static size_t elem_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default: /* the 32-bit integers, float, and enums (C enums forced to int size) */
        return sizeof(uint32_t);
    }
}

/* Proto names of the integer and float types, by ProtobufCType, for range errors. */
static const char *const type_names[] = {"int32",  "sint32",  "sfixed32", "int64",   "sint64", "sfixed64",
                                         "uint32", "fixed32", "uint64",   "fixed64", "float"};

/* ---- parsing ---- */

typedef struct {
    ProtobufCAllocator *alloc; /* for everything hung on the message */
    char path[PATH_CAP];       /* path of the value being read, e.g. "$.federalAgents[1].name" */
    size_t path_len;           /* strlen(path) */
    char *err;                 /* the caller's error buffer */
    size_t errlen;             /* its size */
    int depth;                 /* messages entered */
} parser_t;

/* How many bytes of s to quote: at most CLIP, never ending inside a UTF-8 sequence. */
static int clip(const char *s)
{
    size_t n = strnlen(s, CLIP + 1);
    if (n > CLIP)
        for (n = CLIP; n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80;)
            n--;
    return (int)n;
}

/* Makes an error line safe to log: control characters become '?' (a key may hold a newline), and a UTF-8
 * sequence cut short by a full buffer is dropped. */
static void one_line(char *s)
{
    size_t n = strlen(s), lead = n;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            s[i] = '?';
    while (lead > 0 && n - lead < 3 && ((unsigned char)s[lead - 1] & 0xc0) == 0x80)
        lead--;
    unsigned char c = lead > 0 ? (unsigned char)s[lead - 1] : 0;
    if (c >= 0xc0 && n - (lead - 1) < (c >= 0xf0 ? 4u : c >= 0xe0 ? 3u : 2u))
        s[lead - 1] = '\0';
}

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
    one_line(p->err);
    return rc;
}

/* Appends ".key" or "[i]" to the path; returns the length that path_pop restores. */
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

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static void *pb_alloc(parser_t *p, size_t n)
{
    return p->alloc->alloc(p->alloc->allocator_data, n > 0 ? n : 1);
}

/* Whether s is a decimal integer: an optional minus sign, then digits only. */
static bool is_decimal(const char *s)
{
    s += *s == '-';
    if (*s == '\0')
        return false;
    while (*s >= '0' && *s <= '9')
        s++;
    return *s == '\0';
}

/* d with the fewest digits that read back as d, for error lines. */
static void print_real(char *text, size_t cap, double d)
{
    for (int n = 1; n <= DIGITS; n++) {
        snprintf(text, cap, "%.*g", n, d);
        if (strtod(text, NULL) == d)
            return;
    }
}

/* An integer field takes a JSON integer, an integral number (1e3) or a string holding a decimal integer
 * (the mapping writes 64-bit integers so); it is read as sign and magnitude, then checked against the
 * range of the field's type. */
static rb_err read_integer(parser_t *p, const ProtobufCFieldDescriptor *f, const json_t *v, void *slot)
{
    bool neg, huge = false;
    uint64_t mag;
    char text[48]; /* the value as given, for a range error */
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        neg = i < 0;
        mag = neg ? 0 - (uint64_t)i : (uint64_t)i;
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, i);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        print_real(text, sizeof text, d);
        if (d != trunc(d))
            return fail(p, RB_ERR_MALFORMED, "%s is not an integer", text);
        neg = d < 0;
        huge = fabs(d) >= 18446744073709551616.0; /* 2^64: no cast to uint64_t from here on */
        mag = huge ? UINT64_MAX : (uint64_t)fabs(d);
    } else if (json_is_string(v) && is_decimal(json_string_value(v))) {
        const char *s = json_string_value(v);
        neg = *s == '-';
        errno = 0;
        mag = strtoull(s + neg, NULL, 10);
        huge = errno == ERANGE;
        snprintf(text, sizeof text, "\"%.*s\"", clip(s), s);
    } else {
        return fail(p, RB_ERR_MALFORMED, "expected a number, got %s", type_of(v));
    }
    uint64_t max;
    bool is_signed = true;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        max = INT32_MAX;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        max = INT64_MAX;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        max = UINT32_MAX, is_signed = false;
        break;
    default:
        max = UINT64_MAX, is_signed = false;
        break;
    }
    /* A signed type reaches one further below zero than above; an unsigned one takes only "-0". */
    uint64_t limit = !neg ? max : is_signed ? max + 1 : 0;
    if (huge || mag > limit)
        return fail(p, RB_ERR_MALFORMED, "%s is out of range for %s", text, type_names[f->type]);
    /* Two's complement: the bits of the value, whichever integer type the field has. */
    uint64_t bits = neg ? 0 - mag : mag;
    if (elem_size(f->type) == sizeof(uint64_t))
        *(uint64_t *)slot = bits;
    else
        *(uint32_t *)slot = (uint32_t)bits;
    return RB_OK;
}

/* A float or double: a JSON number, or "NaN", "Infinity" or "-Infinity". */
static rb_err read_real(parser_t *p, const ProtobufCFieldDescriptor *f, const json_t *v, void *slot)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    double d;
    if (json_is_number(v))
        d = json_number_value(v);
    else if (strcmp(s, "NaN") == 0)
        d = NAN;
    else if (strcmp(s, "Infinity") == 0)
        d = INFINITY;
    else if (strcmp(s, "-Infinity") == 0)
        d = -INFINITY;
    else
        return fail(p, RB_ERR_MALFORMED, "expected a number, got %s", type_of(v));
    if (f->type == PROTOBUF_C_TYPE_DOUBLE) {
        *(double *)slot = d;
        return RB_OK;
    }
    float x = (float)d; /* rounds to the nearest float; the writer checks its digits the same way */
    if (isinf(x) && !isinf(d)) {
        char text[40];
        print_real(text, sizeof text, d);
        return fail(p, RB_ERR_MALFORMED, "%s is out of range for float", text);
    }
    *(float *)slot = x;
    return RB_OK;
}

/* Bytes: base64, standard or URL-safe, padded or not. */
static rb_err read_bytes(parser_t *p, const json_t *v, ProtobufCBinaryData *out)
{
    static const int variants[] = {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                                   sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    if (!json_is_string(v))
        return fail(p, RB_ERR_MALFORMED, "expected a base64 string, got %s", type_of(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v), cap = len / 4 * 3 + 3;
    if ((out->data = pb_alloc(p, cap)) == NULL) /* hung on the message at once, like everything */
        return fail(p, RB_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        const char *end;
        if (sodium_base642bin(out->data, cap, s, len, NULL, &out->len, &end, variants[i]) == 0 &&
            end == s + len)
            return RB_OK;
    }
    out->len = 0;
    return fail(p, RB_ERR_MALFORMED, "not base64");
}

static rb_err read_message(parser_t *p, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                           ProtobufCMessage **slot);

/* One value of field f (one element, for a repeated field) into slot, which holds zeros or the default. */
static rb_err read_value(parser_t *p, const ProtobufCFieldDescriptor *f, const json_t *v, void *slot)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        return read_real(p, f, v, slot);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return fail(p, RB_ERR_MALFORMED, "expected true or false, got %s", type_of(v));
        *(protobuf_c_boolean *)slot = json_is_true(v);
        return RB_OK;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(v)) {
            const char *name = json_string_value(v);
            if ((ev = protobuf_c_enum_descriptor_get_value_by_name(ed, name)) == NULL)
                return fail(p, RB_ERR_MALFORMED, "unknown enum value \"%.*s\" for %s", clip(name), name,
                            ed->name);
        } else if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            if (i < INT32_MIN || i > INT32_MAX ||
                (ev = protobuf_c_enum_descriptor_get_value(ed, (int)i)) == NULL)
                return fail(p, RB_ERR_MALFORMED, "unknown enum value %" JSON_INTEGER_FORMAT " for %s", i,
                            ed->name);
        } else {
            return fail(p, RB_ERR_MALFORMED, "expected a %s name or integer, got %s", ed->name, type_of(v));
        }
        *(int *)slot = ev->value;
        return RB_OK;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v))
            return fail(p, RB_ERR_MALFORMED, "expected a string, got %s", type_of(v));
        size_t len = json_string_length(v); /* jansson has refused \u0000, so strlen agrees */
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
        return read_message(p, f->descriptor, v, slot);
    default:
        return read_integer(p, f, v, slot);
    }
}

static rb_err read_repeated(parser_t *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                            const json_t *v)
{
    if (!json_is_array(v))
        return fail(p, RB_ERR_MALFORMED, "expected an array, got %s", type_of(v));
    size_t n = json_array_size(v), size = elem_size(f->type);
    if (n == 0)
        return RB_OK;
    uint8_t *items = pb_alloc(p, n * size);
    if (items == NULL)
        return fail(p, RB_ERR_NOMEM, "out of memory");
    /* Zeroed elements (NULL strings, bytes and messages) are safe to free, so all n count at once. */
    memset(items, 0, n * size);
    *(void **)((char *)m + f->offset) = items;
    *(size_t *)((char *)m + f->quantifier_offset) = n;
    for (size_t i = 0; i < n; i++) {
        size_t saved = path_push(p, "[%zu]", i);
        rb_err rc = read_value(p, f, json_array_get(v, i), items + i * size);
        if (rc != RB_OK)
            return rc;
        path_pop(p, saved);
    }
    return RB_OK;
}

/* The field named key (either spelling) of desc; NULL when there is none. */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc, const char *key)
{
    for (unsigned i = 0; i < desc->n_fields; i++) {
        char name[NAME_CAP];
        json_name(desc->fields[i].name, name);
        if (strcmp(name, key) == 0 || strcmp(desc->fields[i].name, key) == 0)
            return &desc->fields[i];
    }
    return NULL;
}

/* Field f of m from v (not null). */
static rb_err read_field(parser_t *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const json_t *v)
{
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return read_repeated(p, m, f, v);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *oneof_case = (uint32_t *)(base + f->quantifier_offset);
        if (*oneof_case != 0) {
            char other[NAME_CAP];
            json_name(protobuf_c_message_descriptor_get_field(m->descriptor, *oneof_case)->name, other);
            return fail(p, RB_ERR_MALFORMED, "%s is already set, and only one field of their oneof may be",
                        other);
        }
        /* Selected before reading, so that free_unpacked frees what the read hangs on the union. */
        *oneof_case = f->id;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
               f->type != PROTOBUF_C_TYPE_MESSAGE) {
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1; /* proto2 optional: has_ flag */
    }
    return read_value(p, f, v, base + f->offset);
}

/* A message of type desc from obj, hung on *slot as soon as it exists. */
static rb_err read_message(parser_t *p, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                           ProtobufCMessage **slot)
{
    if (!json_is_object(obj))
        return fail(p, RB_ERR_MALFORMED, "expected a %s object, got %s", desc->name, type_of(obj));
    if (p->depth == PBJSON_MAX_DEPTH)
        return fail(p, RB_ERR_TOO_BIG, "nested deeper than %d messages", PBJSON_MAX_DEPTH);
    ProtobufCMessage *m = pb_alloc(p, desc->sizeof_message);
    if (m == NULL)
        return fail(p, RB_ERR_NOMEM, "out of memory");
    desc->message_init(m);
    *slot = m;
    p->depth++;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t saved = path_push(p, ".%.*s", clip(key), key);
        const ProtobufCFieldDescriptor *f = find_field(desc, key);
        if (f == NULL)
            return fail(p, RB_ERR_MALFORMED, "unknown field");
        /* jansson refused duplicate keys; the one other way to give a field twice is both spellings. */
        char name[NAME_CAP];
        json_name(f->name, name);
        if (strcmp(key, name) != 0 && json_object_get(obj, name) != NULL)
            return fail(p, RB_ERR_MALFORMED, "given twice, also as %s", name);
        if (!json_is_null(v)) { /* null: the default, left as message_init set it */
            rb_err rc = read_field(p, m, f, v);
            if (rc != RB_OK)
                return rc;
        }
        path_pop(p, saved);
    }
    p->depth--;
    return RB_OK;
}

/* What protobuf_c_message_free_unpacked(m, NULL) frees with. */
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
    pbjson_init();
    *out = NULL;
    parser_t p = {.alloc = allocator != NULL ? allocator : &plain_allocator,
                  .path = "$",
                  .path_len = 1,
                  .err = err,
                  .errlen = errlen};
    if (errlen > 0)
        err[0] = '\0';
    if (len > PBJSON_MAX_BYTES)
        return fail(&p, RB_ERR_TOO_BIG, "over %d bytes", PBJSON_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(&p, json_error_code(&jerr) == json_error_out_of_memory ? RB_ERR_NOMEM : RB_ERR_MALFORMED,
                    "not JSON: %s at line %d column %d", jerr.text, jerr.line, jerr.column);
    ProtobufCMessage *m = NULL;
    rb_err rc = read_message(&p, desc, root, &m);
    json_decref(root);
    if (rc != RB_OK) {
        protobuf_c_message_free_unpacked(m, p.alloc); /* NULL is fine */
        return rc;
    }
    *out = m;
    return RB_OK;
}

/* ---- formatting ---- */

#define ALL_DIGITS (((1u << (DIGITS + 1)) - 1) & ~1u) /* bits 1 to DIGITS */

typedef struct {
    uint32_t digits; /* bit n set: every real so far reads back exactly when printed with n digits */
    rb_err rc;       /* why the tree could not be built; RB_OK with a NULL tree means out of memory */
    int depth;       /* messages entered */
} writer_t;

/* Whether protobuf-c would pack field f of m; JSON and binary then agree on which fields are present. */
static bool is_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    const void *slot = base + f->offset, *quantifier = base + f->quantifier_offset;
    bool pointer = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE;
    const void *ptr = pointer ? *(const void *const *)slot : NULL;
    bool oneof = (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)quantifier > 0;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (oneof && *(const uint32_t *)quantifier != f->id)
        return false;
    if (oneof || f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (pointer)
            return ptr != NULL && ptr != f->default_value;
        return oneof || *(const protobuf_c_boolean *)quantifier;
    }
    switch (f->type) { /* proto3 without a label: present unless zero, as protobuf-c judges zero */
    case PROTOBUF_C_TYPE_STRING:
        return ptr != NULL && *(const char *)ptr != '\0';
    case PROTOBUF_C_TYPE_MESSAGE:
        return ptr != NULL;
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)slot)->len > 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)slot != 0; /* so -0.0 is not packed, nor written */
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)slot != 0;
    default: {
        static const uint8_t zero[sizeof(uint64_t)];
        return memcmp(slot, zero, elem_size(f->type)) != 0;
    }
    }
}

/* Clears the precisions with which d (a float, if is_float) would not read back as itself, and those that
 * would print it with an exponent where 17 digits do not ("1e2" for 100). */
static void note_real(writer_t *w, double d, bool is_float)
{
    char text[40];
    snprintf(text, sizeof text, "%.*g", DIGITS, d);
    bool plain = strchr(text, 'e') == NULL;
    for (int n = 1; n <= DIGITS; n++) {
        snprintf(text, sizeof text, "%.*g", n, d);
        double back = strtod(text, NULL);
        if ((is_float ? (float)back != (float)d : back != d) || (plain && strchr(text, 'e') != NULL))
            w->digits &= ~(1u << n);
    }
}

/* Whether s is UTF-8 as jansson takes it (no overlong forms, surrogates, or values past U+10FFFF); asked
 * only after jansson refused a string, to tell bad text from a lack of memory. */
static bool is_utf8(const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c != 0;) {
        unsigned lead = *c++, n = lead < 0x80 ? 0 : lead < 0xc2 ? 4 : lead < 0xe0 ? 1 : lead < 0xf0 ? 2 : 3;
        if (n == 4 || lead > 0xf4)
            return false;
        uint32_t cp = lead & (0x7fu >> n);
        for (unsigned i = 0; i < n; i++, c++) {
            if ((*c & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*c & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp < 0xe000))
            return false;
    }
    return true;
}

static json_t *write_message(writer_t *w, const ProtobufCMessage *m);

/* One value of field f (one element, for a repeated field) at slot, as JSON; NULL on failure. */
static json_t *write_value(writer_t *w, const ProtobufCFieldDescriptor *f, const void *slot)
{
    char text[24];
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
        snprintf(text, sizeof text, "%" PRId64, *(const int64_t *)slot);
        return json_string(text);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(text, sizeof text, "%" PRIu64, *(const uint64_t *)slot);
        return json_string(text);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        bool is_float = f->type == PROTOBUF_C_TYPE_FLOAT;
        double d = is_float ? *(const float *)slot : *(const double *)slot;
        if (isnan(d))
            return json_string("NaN");
        if (isinf(d))
            return json_string(d > 0 ? "Infinity" : "-Infinity");
        note_real(w, d, is_float);
        return json_real(d);
    }
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)slot);
    case PROTOBUF_C_TYPE_ENUM: {
        int value = *(const int *)slot;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, value);
        return ev != NULL ? json_string(ev->name) : json_integer(value); /* a value from a newer schema */
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        json_t *j = json_string(s != NULL ? s : "");
        if (j == NULL && s != NULL && !is_utf8(s))
            w->rc = RB_ERR_MALFORMED;
        return j;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = slot;
        size_t cap = sodium_base64_ENCODED_LEN(b->len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = rbcrypto_wiping_malloc(cap);
        if (b64 == NULL)
            return NULL;
        sodium_bin2base64(b64, cap, b->data, b->len, sodium_base64_VARIANT_ORIGINAL);
        json_t *j = json_string(b64);
        rbcrypto_wiping_free(b64);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)slot;
        return sub != NULL ? write_message(w, sub) : json_object(); /* a NULL required message packs empty */
    }
    }
    return NULL;
}

static json_t *write_field(writer_t *w, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return write_value(w, f, base + f->offset);
    json_t *array = json_array();
    size_t n = *(const size_t *)(base + f->quantifier_offset), size = elem_size(f->type);
    const uint8_t *items = *(const uint8_t *const *)(base + f->offset);
    for (size_t i = 0; array != NULL && i < n; i++)
        if (json_array_append_new(array, write_value(w, f, items + i * size)) != 0) {
            json_decref(array);
            array = NULL;
        }
    return array;
}

static json_t *write_message(writer_t *w, const ProtobufCMessage *m)
{
    if (w->depth == PBJSON_MAX_DEPTH) {
        w->rc = RB_ERR_TOO_BIG;
        return NULL;
    }
    w->depth++;
    json_t *obj = json_object();
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    for (unsigned i = 0; obj != NULL && i < desc->n_fields; i++) { /* fields are in number order */
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (!is_present(m, f))
            continue;
        char name[NAME_CAP];
        json_name(f->name, name);
        if (json_object_set_new(obj, name, write_field(w, m, f)) != 0) { /* also when the value is NULL */
            json_decref(obj);
            obj = NULL;
        }
    }
    w->depth--;
    return obj;
}

rb_err pbjson_format(const ProtobufCMessage *msg, int flags, char **out)
{
    pbjson_init();
    *out = NULL;
    writer_t w = {.digits = ALL_DIGITS};
    json_t *root = write_message(&w, msg);
    if (root == NULL)
        return w.rc != RB_OK ? w.rc : RB_ERR_NOMEM;
    int digits = 1;
    while (digits < DIGITS && !(w.digits & 1u << digits))
        digits++;
    size_t style = flags & PBJSON_PRETTY ? JSON_INDENT(2) : JSON_COMPACT;
    *out = json_dumps(root, style | JSON_REAL_PRECISION(digits));
    json_decref(root);
    return *out != NULL ? RB_OK : RB_ERR_NOMEM;
}
