/* referral_rules.c -- the validation rules (see referral_rules.h for what each kind must carry).
 *
 * Two passes. The first walks every string and list of the message through the protobuf-c descriptors,
 * so that no field, including one added to the schema later, escapes the size caps and the UTF-8 and
 * one-line checks. The second is one checker per part of the referral, in the order of the schema. Each
 * adds problems to the list with the field's JSON path and goes on, so that a sender learns everything
 * wrong at once; the list keeps the first REFERRAL_MAX_PROBLEMS. Formats are checked by hand (no regex
 * library): each is short and a small function says it more plainly than a pattern would. */
#include "referral_rules.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FUTURE_SLACK_MS (10 * 60 * 1000) /* clocks of records systems and receivers disagree a little */
#define PATH_CAP        128              /* = sizeof referral_problem_t.path */
#define NO_TIME         INT64_MIN        /* a time that is absent or does not parse */

typedef struct {
    referral_problems_t *out; /* where problems go */
    const Rb__Referral *r;    /* the referral being checked */
    Rb__Kind kind;            /* the envelope kind it travels as */
    int64_t now_ms;           /* the receiver's clock */
} checker_t;

/* --- small helpers ----------------------------------------------------------------------------------- */

static void add_problem(checker_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_problem(checker_t *c, const char *path, const char *fmt, ...)
{
    referral_problems_t *out = c->out;
    if (out->count == REFERRAL_MAX_PROBLEMS) {
        out->truncated = true;
        return;
    }
    referral_problem_t *p = &out->items[out->count++];
    snprintf(p->path, sizeof p->path, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->message, sizeof p->message, fmt, ap);
    va_end(ap);
}

/* A path from a format into buf, e.g. at(buf, "$.evidence[%zu].sha256", i); returns buf. */
static const char *at(char buf[PATH_CAP], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *at(char buf[PATH_CAP], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, PATH_CAP, fmt, ap);
    va_end(ap);
    return buf;
}

/* Strings from protobuf-c are never NULL, but a message built by hand may hold NULL for "". */
static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

static bool same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool upper(char ch)
{
    return ch >= 'A' && ch <= 'Z';
}

static bool digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool all_digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!digit(s[i]))
            return false;
    return true;
}

/* Two digits at s as a number, or -1. */
static int two(const char *s)
{
    return digit(s[0]) && digit(s[1]) ? (s[0] - '0') * 10 + (s[1] - '0') : -1;
}

/* --- times ------------------------------------------------------------------------------------------- */

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* Days from 1970-01-01 to a proleptic Gregorian date (the well-known days-from-civil arithmetic: years
 * counted from March so that the leap day falls at the end, in 400-year eras). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD" at the start of s, a date that exists. */
static bool parse_date(const char *s, int *year, int *month, int *day)
{
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? s[i] != '-' : !digit(s[i]))
            return false;
    *year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    *month = two(s + 5);
    *day = two(s + 8);
    return *month >= 1 && *month <= 12 && *day >= 1 && *day <= days_in_month(*year, *month);
}

bool referral_parse_time(const char *text, int64_t *unix_ms)
{
    int year, month, day;
    if (text == NULL || strlen(text) < 20 || !parse_date(text, &year, &month, &day) || text[10] != 'T' ||
        text[13] != ':' || text[16] != ':')
        return false;
    int hour = two(text + 11), minute = two(text + 14), second = two(text + 17);
    /* No leap second: a records system that writes :60 is wrong more often than it is precise. */
    if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59)
        return false;
    const char *p = text + 19;
    int64_t ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; digit(*p); p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (digits == 0 || digits > 9)
            return false;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh = two(p + 1); /* read no further than a short text goes */
        int om = oh >= 0 && p[3] == ':' ? two(p + 4) : -1;
        if (oh > 23 || om < 0 || om > 59)
            return false;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    *unix_ms = (seconds - (int64_t)offset_min * 60) * 1000 + ms;
    return true;
}

/* A time field: when set it must parse; when required it must be set. The time, or NO_TIME. */
static int64_t check_time(checker_t *c, const char *path, const char *text, bool required)
{
    int64_t ms;
    if (empty(text)) {
        if (required)
            add_problem(c, path, "required: a date and time (RFC 3339 with offset)");
        return NO_TIME;
    }
    if (!referral_parse_time(text, &ms)) {
        add_problem(c, path,
                    "not a valid RFC 3339 date and time with offset, e.g. 2025-10-04T21:40:00-05:00");
        return NO_TIME;
    }
    return ms;
}

static void check_not_future(checker_t *c, const char *path, int64_t t)
{
    if (t != NO_TIME && t > c->now_ms + FUTURE_SLACK_MS)
        add_problem(c, path, "in the future");
}

/* --- pass one: every string and every list ----------------------------------------------------------- */

/* Well-formed UTF-8: no stray continuation bytes, no overlong forms, no surrogates, nothing past
 * U+10FFFF. protobuf-c does not check this when it unpacks a body, and the receiver writes these strings
 * into JSON and SQLite. A sequence cut short ends at the terminating NUL, which is no continuation byte. */
static bool utf8_ok(const unsigned char *s)
{
    while (*s != '\0') {
        unsigned lead = *s;
        size_t len;
        uint32_t cp, min;
        if (lead < 0x80) {
            s++;
            continue;
        } else if ((lead & 0xE0) == 0xC0) {
            len = 2, cp = lead & 0x1F, min = 0x80;
        } else if ((lead & 0xF0) == 0xE0) {
            len = 3, cp = lead & 0x0F, min = 0x800;
        } else if ((lead & 0xF8) == 0xF0) {
            len = 4, cp = lead & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        s += len;
    }
    return true;
}

/* The cap of a string field, by its name in the schema, and whether it is free text (which may hold line
 * breaks and tabs). Keyed by name rather than by message because "description" means free text wherever
 * it appears. */
static size_t text_cap(const char *field, bool *free_text)
{
    static const char *const free_fields[] = {"description", "notes", "contact", "withdrawal_reason",
                                              "no_agent_identified_reason"};
    *free_text = true;
    if (strcmp(field, "narrative") == 0)
        return REFERRAL_NARRATIVE_MAX;
    for (size_t i = 0; i < sizeof free_fields / sizeof free_fields[0]; i++)
        if (strcmp(field, free_fields[i]) == 0)
            return REFERRAL_TEXT_MAX;
    *free_text = false;
    return strcmp(field, "storage_locator") == 0 ? REFERRAL_LOCATOR_MAX : REFERRAL_LINE_MAX;
}

static void check_text(checker_t *c, const char *path, const char *field, const char *s)
{
    if (s == NULL)
        return;
    bool free_text;
    size_t cap = text_cap(field, &free_text), n = strlen(s);
    if (n > cap) {
        add_problem(c, path, "longer than %zu bytes", cap);
        return;
    }
    if (!utf8_ok((const unsigned char *)s)) {
        add_problem(c, path, "not valid UTF-8");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool control = ch < 0x20 || ch == 0x7F;
        if (control && !(free_text && (ch == '\n' || ch == '\r' || ch == '\t'))) {
            add_problem(c, path,
                        free_text ? "contains a control character"
                                  : "contains a control character or line break: must be one line");
            return;
        }
    }
}

/* Appends to path (used up to len) and returns the new length, kept inside the buffer. */
static size_t append(char path[PATH_CAP], size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t append(char path[PATH_CAP], size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(path + len, PATH_CAP - len, fmt, ap);
    va_end(ap);
    len += n > 0 ? (size_t)n : 0;
    return len < PATH_CAP ? len : PATH_CAP - 1;
}

/* ".name" in the JSON form: lowerCamelCase of the proto name ("agency_ori" -> ".agencyOri"). */
static size_t append_json_name(char path[PATH_CAP], size_t len, const char *proto_name)
{
    len = append(path, len, ".");
    for (const char *p = proto_name; *p != '\0' && len < PATH_CAP - 1; p++) {
        if (*p == '_' && p[1] >= 'a' && p[1] <= 'z')
            path[len++] = (char)(*++p - 'a' + 'A');
        else if (*p != '_')
            path[len++] = *p;
    }
    path[len] = '\0';
    return len;
}

static bool check_message_texts(checker_t *c, const ProtobufCMessage *m, char path[PATH_CAP], size_t len);

/* One value of field f: a string to check, a message to walk into, or something else to leave. */
static bool check_value(checker_t *c, const ProtobufCFieldDescriptor *f, const void *value,
                        char path[PATH_CAP], size_t len)
{
    if (f->type == PROTOBUF_C_TYPE_STRING)
        check_text(c, path, f->name, value);
    else if (f->type == PROTOBUF_C_TYPE_MESSAGE && value != NULL)
        return check_message_texts(c, value, path, len);
    return true;
}

/* Checks every string in m and below it, and the length of every list. False when a list is too long. */
static bool check_message_texts(checker_t *c, const ProtobufCMessage *m, char path[PATH_CAP], size_t len)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    bool lists_ok = true;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        /* A oneof member that is not the one set shares its storage with one that is. */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        size_t flen = append_json_name(path, len, f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (n > REFERRAL_MAX_ITEMS) {
                add_problem(c, path, "more than %d entries", REFERRAL_MAX_ITEMS);
                lists_ok = false;
            } else if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const void *const *items = *(const void *const *const *)(base + f->offset);
                for (size_t k = 0; k < n; k++)
                    lists_ok &= check_value(c, f, items[k], path, append(path, flen, "[%zu]", k));
            }
        } else if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
            lists_ok &= check_value(c, f, *(const void *const *)(base + f->offset), path, flen);
        }
        path[len] = '\0';
    }
    return lists_ok;
}

/* --- formats ----------------------------------------------------------------------------------------- */

/* "JH512334": two capital letters, six digits. */
static bool rd_number_ok(const char *s)
{
    return strlen(s) == 8 && upper(s[0]) && upper(s[1]) && all_digits(s + 2, 6, 6);
}

/* "ILCPD0000": an NCIC ORI, two capital letters (the state) and seven capitals or digits. */
static bool ori_ok(const char *s)
{
    if (strlen(s) != 9 || !upper(s[0]) || !upper(s[1]))
        return false;
    for (size_t i = 2; i < 9; i++)
        if (!upper(s[i]) && !digit(s[i]))
            return false;
    return true;
}

/* "720 ILCS 5/12-3.05(e)(1)": chapter, "ILCS", act, "/", section (starting with a digit; then digits,
 * letters, ".", "-" and balanced parentheses for subsections). */
static bool ilcs_ok(const char *s)
{
    const char *p = s;
    size_t n = 0;
    while (digit(*p) && n < 4)
        p++, n++;
    if (n == 0 || strncmp(p, " ILCS ", 6) != 0)
        return false;
    p += 6;
    for (n = 0; digit(*p); p++)
        n++;
    if (n == 0 || *p++ != '/' || !digit(*p))
        return false;
    int depth = 0;
    for (; *p != '\0'; p++) {
        if (*p == '(') {
            depth++;
        } else if (*p == ')') {
            if (--depth < 0)
                return false;
        } else if (!digit(*p) && !upper(*p) && !(*p >= 'a' && *p <= 'z') && *p != '.' && *p != '-') {
            return false;
        }
    }
    return depth == 0;
}

/* An enum field must hold a value the schema defines (a body packed by another implementation may carry
 * any number), and when required not the unspecified zero. */
static void check_enum(checker_t *c, const char *path, const ProtobufCEnumDescriptor *desc, int value,
                       bool required)
{
    if (protobuf_c_enum_descriptor_get_value(desc, value) == NULL)
        add_problem(c, path, "not a defined %s value", desc->name);
    else if (required && value == 0)
        add_problem(c, path, "required: a %s", desc->name);
}

static void require_text(checker_t *c, const char *path, const char *text)
{
    if (empty(text))
        add_problem(c, path, "required");
}

/* --- cross-references -------------------------------------------------------------------------------- */

static const Rb__EvidenceItem *find_evidence(const Rb__Referral *r, const char *id)
{
    for (size_t i = 0; i < r->n_evidence && !empty(id); i++)
        if (same(r->evidence[i]->evidence_id, id))
            return r->evidence[i];
    return NULL;
}

static bool agent_exists(const Rb__Referral *r, const char *ref)
{
    for (size_t i = 0; i < r->n_federal_agents && !empty(ref); i++)
        if (same(r->federal_agents[i]->agent_ref, ref))
            return true;
    return false;
}

static bool civilian_exists(const Rb__Referral *r, const char *ref)
{
    for (size_t i = 0; i < r->n_civilians && !empty(ref); i++)
        if (same(r->civilians[i]->person_ref, ref))
            return true;
    return false;
}

static bool any_injury(const Rb__Referral *r)
{
    for (size_t i = 0; i < r->n_civilians; i++)
        if (r->civilians[i]->n_injuries > 0)
            return true;
    return false;
}

/* The local reference ("A1", "P2", "E3") of entry i of a list whose references so far are refs[0..i):
 * set, and unique in its list. */
static void check_local_ref(checker_t *c, const char *path, const char *ref, const char *const *refs,
                            size_t i, const char *example)
{
    if (empty(ref)) {
        add_problem(c, path, "required: a reference such as %s", example);
        return;
    }
    for (size_t j = 0; j < i; j++)
        if (same(refs[j], ref)) {
            add_problem(c, path, "used by an earlier entry: must be unique");
            return;
        }
}

/* Recordings are what a court asks for by hash: body-worn, in-car and civilian video. */
static bool is_recording(int kind)
{
    return kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA ||
           kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_DASH_CAMERA ||
           kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_CIVILIAN_VIDEO;
}

/* --- pass two: one checker per part ------------------------------------------------------------------ */

static void check_identity(checker_t *c)
{
    const Rb__Referral *r = c->r;
    bool follows = c->kind == RB__KIND__KIND_SUPPLEMENT || c->kind == RB__KIND__KIND_WITHDRAWAL;
    if (r->schema_version != 1)
        add_problem(c, "$.schemaVersion", "must be 1 (the schema version this receiver knows)");
    if (!ori_ok(r->agency_ori))
        add_problem(c, "$.agencyOri", "required: an ORI, two capital letters then seven capitals or digits");
    if (!rd_number_ok(r->rd_number))
        add_problem(c, "$.rdNumber", "required: an RD number, two capital letters then six digits");
    if (!follows && r->revision != 1)
        add_problem(c, "$.revision", "must be 1 for an original referral");
    if (follows && r->revision < 2)
        add_problem(c, "$.revision", "must be 2 or more for a supplement or withdrawal");

    const Rb__ReferralRef *ref = r->references;
    if (!follows && ref != NULL)
        add_problem(c, "$.references", "only supplements and withdrawals reference an earlier referral");
    if (follows && ref == NULL)
        add_problem(c, "$.references", "required: the referral this one follows");
    if (ref != NULL && follows) {
        /* The message id is a help to the receiver when the sender knows it; RD number and revision name
         * the earlier referral in any case, also to a person reading the file. */
        if (ref->message_id.len != 0 && ref->message_id.len != 16)
            add_problem(c, "$.references.messageId", "must be 16 bytes when given");
        if (!same(ref->rd_number, r->rd_number))
            add_problem(c, "$.references.rdNumber", "required: must equal rdNumber (the same case)");
        if (ref->revision < 1 || ref->revision >= r->revision)
            add_problem(c, "$.references.revision", "required: at least 1 and lower than revision");
    }
    if (c->kind == RB__KIND__KIND_WITHDRAWAL)
        require_text(c, "$.withdrawalReason", r->withdrawal_reason);
    else if (!empty(r->withdrawal_reason))
        add_problem(c, "$.withdrawalReason", "only a withdrawal has a withdrawal reason");
}

/* The incident's time, or NO_TIME when absent or unreadable. */
static int64_t check_incident(checker_t *c, bool required)
{
    const Rb__Incident *in = c->r->incident;
    char path[PATH_CAP];
    if (in == NULL) {
        if (required)
            add_problem(c, "$.incident", "required: when and where it happened");
        return NO_TIME;
    }
    int64_t start = check_time(c, "$.incident.occurredAt", in->occurred_at, true);
    int64_t end = check_time(c, "$.incident.endedAt", in->ended_at, false);
    check_not_future(c, "$.incident.occurredAt", start);
    if (start != NO_TIME && end != NO_TIME && end < start)
        add_problem(c, "$.incident.endedAt", "before occurredAt");
    require_text(c, "$.incident.address", in->address);
    /* Chicago beats are four digits ("0823"), districts up to three ("008"); other agencies' are similar
     * enough that anything else is an export fault. */
    if (!empty(in->beat) && !all_digits(in->beat, 4, 4))
        add_problem(c, "$.incident.beat", "must be four digits");
    if (!empty(in->district) && !all_digits(in->district, 1, 3))
        add_problem(c, "$.incident.district", "must be one to three digits");
    if (in->location != NULL) {
        double lat = in->location->latitude, lon = in->location->longitude;
        if (!isfinite(lat) || lat < -90 || lat > 90)
            add_problem(c, "$.incident.location.latitude", "must be between -90 and 90");
        if (!isfinite(lon) || lon < -180 || lon > 180)
            add_problem(c, "$.incident.location.longitude", "must be between -180 and 180");
    }
    if (in->n_categories == 0)
        add_problem(c, "$.incident.categories", "required: at least one category");
    for (size_t i = 0; i < in->n_categories; i++)
        check_enum(c, at(path, "$.incident.categories[%zu]", i), &rb__violation_category__descriptor,
                   (int)in->categories[i], true);
    return start;
}

static void check_officers(checker_t *c, bool required)
{
    const Rb__Referral *r = c->r;
    char path[PATH_CAP];
    if (required && r->n_reporting_officers == 0)
        add_problem(c, "$.reportingOfficers", "required: at least the primary reporting officer");
    for (size_t i = 0; i < r->n_reporting_officers; i++) {
        require_text(c, at(path, "$.reportingOfficers[%zu].name", i), r->reporting_officers[i]->name);
        require_text(c, at(path, "$.reportingOfficers[%zu].starNumber", i),
                     r->reporting_officers[i]->star_number);
    }
}

/* The executive order asks officers to verify the supervisor's name and badge number and to record the
 * attempt, refusals included, on their body-worn cameras. */
static void check_credential(checker_t *c, size_t i, const Rb__FederalAgent *a)
{
    char path[PATH_CAP];
    const Rb__CredentialCheck *cc = a->credential_check;
    if (cc == NULL) {
        if (a->is_supervisor)
            add_problem(c, at(path, "$.federalAgents[%zu].credentialCheck", i),
                        "required for the supervisor: the attempt to verify credentials");
        return;
    }
    check_enum(c, at(path, "$.federalAgents[%zu].credentialCheck.result", i),
               &rb__credential_result__descriptor, (int)cc->result, a->is_supervisor);
    check_time(c, at(path, "$.federalAgents[%zu].credentialCheck.checkedAt", i), cc->checked_at, false);

    bool verified = cc->result == RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_VERIFIED;
    bool witnessed = verified || cc->result == RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_REFUSED;
    const Rb__EvidenceItem *e = find_evidence(c->r, cc->recorded_on);
    at(path, "$.federalAgents[%zu].credentialCheck.recordedOn", i);
    if (empty(cc->recorded_on)) {
        if (witnessed)
            add_problem(c, path,
                        "required: the evidenceId of the body-worn camera item that recorded the check");
    } else if (e == NULL) {
        add_problem(c, path, "names no evidenceId in this referral");
    } else if (e->kind != RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA) {
        add_problem(c, path, "must name a body-worn camera item");
    }
    /* VERIFIED means, by its definition, that the officer recorded the name and the badge number. */
    if (verified && empty(a->name))
        add_problem(c, at(path, "$.federalAgents[%zu].name", i), "required when credentials were verified");
    if (verified && empty(a->badge_number))
        add_problem(c, at(path, "$.federalAgents[%zu].badgeNumber", i),
                    "required when credentials were verified");
}

static void check_agents(checker_t *c, bool required)
{
    const Rb__Referral *r = c->r;
    char path[PATH_CAP];
    if (required && r->n_federal_agents == 0 && empty(r->no_agent_identified_reason))
        add_problem(c, "$.federalAgents", "required: at least one agent, or noAgentIdentifiedReason");
    const char *refs[REFERRAL_MAX_ITEMS];
    for (size_t i = 0; i < r->n_federal_agents; i++) {
        const Rb__FederalAgent *a = r->federal_agents[i];
        refs[i] = a->agent_ref;
        check_local_ref(c, at(path, "$.federalAgents[%zu].agentRef", i), a->agent_ref, refs, i, "A1");
        check_enum(c, at(path, "$.federalAgents[%zu].agency", i), &rb__federal_agency__descriptor,
                   (int)a->agency, true);
        bool other = a->agency == RB__FEDERAL_AGENCY__FEDERAL_AGENCY_OTHER_FEDERAL;
        if (other && empty(a->agency_other))
            add_problem(c, at(path, "$.federalAgents[%zu].agencyOther", i),
                        "required when agency is FEDERAL_AGENCY_OTHER_FEDERAL");
        if (!other && !empty(a->agency_other))
            add_problem(c, at(path, "$.federalAgents[%zu].agencyOther", i),
                        "only for agency FEDERAL_AGENCY_OTHER_FEDERAL");
        check_credential(c, i, a);
    }
}

static void check_civilians(checker_t *c)
{
    const Rb__Referral *r = c->r;
    char path[PATH_CAP];
    const char *refs[REFERRAL_MAX_ITEMS];
    for (size_t i = 0; i < r->n_civilians; i++) {
        const Rb__Civilian *p = r->civilians[i];
        refs[i] = p->person_ref;
        check_local_ref(c, at(path, "$.civilians[%zu].personRef", i), p->person_ref, refs, i, "P1");
        check_enum(c, at(path, "$.civilians[%zu].role", i), &rb__civilian_role__descriptor, (int)p->role,
                   true);
        int y, m, d;
        if (!empty(p->date_of_birth) &&
            (strlen(p->date_of_birth) != 10 || !parse_date(p->date_of_birth, &y, &m, &d)))
            add_problem(c, at(path, "$.civilians[%zu].dateOfBirth", i), "must be a date, YYYY-MM-DD");
        for (size_t j = 0; j < p->n_injuries; j++)
            check_enum(c, at(path, "$.civilians[%zu].injuries[%zu].severity", i, j),
                       &rb__injury_severity__descriptor, (int)p->injuries[j]->severity, true);
    }
}

/* The order asks officers to call EMS at once and render aid to anyone hurt, so an injury without a
 * medical section is a referral that leaves out whether they did. */
static void check_medical(checker_t *c)
{
    const Rb__Referral *r = c->r;
    const Rb__Medical *med = r->medical;
    char path[PATH_CAP];
    if (med == NULL) {
        if (any_injury(r))
            add_problem(c, "$.medical", "required when anyone is injured: EMS called and aid rendered");
        return;
    }
    int64_t called = check_time(c, "$.medical.emsCalledAt", med->ems_called_at, med->ems_called);
    int64_t arrived = check_time(c, "$.medical.emsArrivedAt", med->ems_arrived_at, false);
    if (called != NO_TIME && arrived != NO_TIME && arrived < called)
        add_problem(c, "$.medical.emsArrivedAt", "before emsCalledAt");
    if (!med->ems_called &&
        (!empty(med->ems_called_at) || !empty(med->ems_arrived_at) || !empty(med->ems_unit)))
        add_problem(c, "$.medical.emsCalled", "false, but an EMS time or unit is recorded");
    for (size_t i = 0; i < med->n_aid; i++) {
        const Rb__AidRendered *aid = med->aid[i];
        if (!civilian_exists(r, aid->person_ref))
            add_problem(c, at(path, "$.medical.aid[%zu].personRef", i), "must name a civilian's personRef");
        if (!same(aid->given_by, "EMS") && !all_digits(aid->given_by ? aid->given_by : "", 1, 8))
            add_problem(c, at(path, "$.medical.aid[%zu].givenBy", i),
                        "required: an officer's star number or EMS");
        check_time(c, at(path, "$.medical.aid[%zu].givenAt", i), aid->given_at, false);
    }
}

static void check_body_camera(checker_t *c, size_t i, const Rb__EvidenceItem *e)
{
    char path[PATH_CAP];
    const Rb__BodyCamera *cam = e->body_camera;
    if (e->kind != RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA) {
        if (cam != NULL)
            add_problem(c, at(path, "$.evidence[%zu].bodyCamera", i), "only for body-worn camera items");
        return;
    }
    if (cam == NULL) {
        add_problem(c, at(path, "$.evidence[%zu].bodyCamera", i), "required for a body-worn camera item");
        return;
    }
    require_text(c, at(path, "$.evidence[%zu].bodyCamera.cameraId", i), cam->camera_id);
    require_text(c, at(path, "$.evidence[%zu].bodyCamera.officerStar", i), cam->officer_star);
    int64_t start =
        check_time(c, at(path, "$.evidence[%zu].bodyCamera.recordingStart", i), cam->recording_start, true);
    int64_t end =
        check_time(c, at(path, "$.evidence[%zu].bodyCamera.recordingEnd", i), cam->recording_end, true);
    if (start != NO_TIME && end != NO_TIME && end < start)
        add_problem(c, at(path, "$.evidence[%zu].bodyCamera.recordingEnd", i), "before recordingStart");
}

/* Recordings must be preserved and identifiable by hash, as the order's preservation duty asks. */
static void check_evidence(checker_t *c)
{
    const Rb__Referral *r = c->r;
    char path[PATH_CAP];
    const char *refs[REFERRAL_MAX_ITEMS];
    for (size_t i = 0; i < r->n_evidence; i++) {
        const Rb__EvidenceItem *e = r->evidence[i];
        refs[i] = e->evidence_id;
        check_local_ref(c, at(path, "$.evidence[%zu].evidenceId", i), e->evidence_id, refs, i, "E1");
        check_enum(c, at(path, "$.evidence[%zu].kind", i), &rb__evidence_kind__descriptor, (int)e->kind,
                   true);
        bool recording = is_recording(e->kind);
        if ((recording || e->sha256.len != 0) && e->sha256.len != 32)
            add_problem(c, at(path, "$.evidence[%zu].sha256", i),
                        recording ? "required for a recording: the SHA-256 of the file (32 bytes)"
                                  : "must be 32 bytes");
        if (recording)
            require_text(c, at(path, "$.evidence[%zu].storageLocator", i), e->storage_locator);
        check_time(c, at(path, "$.evidence[%zu].preservationHoldAt", i), e->preservation_hold_at, recording);
        check_body_camera(c, i, e);
    }
}

static void check_charges(checker_t *c)
{
    const Rb__Referral *r = c->r;
    char path[PATH_CAP];
    for (size_t i = 0; i < r->n_suggested_charges; i++) {
        const Rb__Charge *ch = r->suggested_charges[i];
        if (!ilcs_ok(ch->ilcs_citation ? ch->ilcs_citation : ""))
            add_problem(c, at(path, "$.suggestedCharges[%zu].ilcsCitation", i),
                        "required: an ILCS citation such as 720 ILCS 5/12-3.05");
        if (ch->n_agent_refs == 0)
            add_problem(c, at(path, "$.suggestedCharges[%zu].agentRefs", i),
                        "required: the agents it is suggested against");
        for (size_t j = 0; j < ch->n_agent_refs; j++)
            if (!agent_exists(r, ch->agent_refs[j]))
                add_problem(c, at(path, "$.suggestedCharges[%zu].agentRefs[%zu]", i, j),
                            "must name an agent's agentRef");
    }
}

static void check_approval(checker_t *c, int64_t occurred)
{
    const Rb__SupervisorApproval *a = c->r->approval;
    if (a == NULL) {
        add_problem(c, "$.approval", "required: the supervisor who approved sending it");
        return;
    }
    require_text(c, "$.approval.name", a->name);
    require_text(c, "$.approval.starNumber", a->star_number);
    int64_t approved = check_time(c, "$.approval.approvedAt", a->approved_at, true);
    if (approved != NO_TIME && occurred != NO_TIME && approved < occurred)
        add_problem(c, "$.approval.approvedAt", "before the incident occurred");
    else
        check_not_future(c, "$.approval.approvedAt", approved);
}

static void check_publication(checker_t *c, bool required)
{
    const Rb__Publication *p = c->r->publication;
    if (p == NULL) {
        if (required)
            add_problem(c, "$.publication", "required: what may be published, for each group of fields");
        return;
    }
    const ProtobufCEnumDescriptor *d = &rb__publication_class__descriptor;
    check_enum(c, "$.publication.timePlace", d, (int)p->time_place, false);
    check_enum(c, "$.publication.agencies", d, (int)p->agencies, false);
    check_enum(c, "$.publication.injuries", d, (int)p->injuries, false);
    check_enum(c, "$.publication.credentials", d, (int)p->credentials, false);
    check_enum(c, "$.publication.evidence", d, (int)p->evidence, false);
    check_enum(c, "$.publication.charges", d, (int)p->charges, false);
    check_enum(c, "$.publication.outcome", d, (int)p->outcome, false);
}

rb_err referral_validate(const Rb__Referral *r, Rb__Kind kind, int64_t now_ms, referral_problems_t *out)
{
    memset(out, 0, sizeof *out);
    checker_t c = {out, r, kind, now_ms};
    if (kind != RB__KIND__KIND_REFERRAL && kind != RB__KIND__KIND_SUPPLEMENT &&
        kind != RB__KIND__KIND_WITHDRAWAL)
        add_problem(&c, "$", "a referral travels only as a referral, supplement or withdrawal");
    char path[PATH_CAP] = "$";
    if (!check_message_texts(&c, &r->base, path, 1))
        return RB_ERR_INVALID; /* a list over the cap: the cross-reference checks below are quadratic */

    bool content = kind != RB__KIND__KIND_WITHDRAWAL; /* what a withdrawal may leave out */
    check_identity(&c);
    int64_t occurred = check_incident(&c, content);
    if (content)
        require_text(&c, "$.narrative", r->narrative);
    check_officers(&c, content);
    check_agents(&c, content);
    check_civilians(&c);
    check_medical(&c);
    check_evidence(&c);
    check_charges(&c);
    check_approval(&c, occurred);
    check_publication(&c, content);
    return out->count == 0 ? RB_OK : RB_ERR_INVALID;
}
