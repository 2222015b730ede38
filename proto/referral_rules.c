/* referral_rules.c -- the validation rules (see referral_rules.h for what they are for).
 *
 * One checker per part of the referral, in the order of the schema. Each adds problems to the list with
 * the field's JSON path and goes on, so that a sender learns everything wrong at once. Paths are built
 * with printf formats as the walk goes; the list keeps the first REFERRAL_MAX_PROBLEMS problems. */
#include "referral_rules.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FUTURE_SLACK_MS (10 * 60 * 1000)

typedef struct {
    referral_problems_t *out;
    const Rb__Referral *r;
    Rb__Kind kind;
    int64_t now_ms;
} checker_t;

static void problem(checker_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(checker_t *c, const char *path, const char *fmt, ...)
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

/* A path from a format, e.g. at(buf, "$.evidence[%zu].sha256", i). */
static const char *at(char buf[128], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *at(char buf[128], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, 128, fmt, ap);
    va_end(ap);
    return buf;
}

static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

static bool all_digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool upper(char ch)
{
    return ch >= 'A' && ch <= 'Z';
}

static bool digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Two digits at s as a number, or -1. */
static int two(const char *s)
{
    return digit(s[0]) && digit(s[1]) ? (s[0] - '0') * 10 + (s[1] - '0') : -1;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool parse_date(const char *s, int *year, int *month, int *day)
{
    if (!digit(s[0]) || !digit(s[1]) || !digit(s[2]) || !digit(s[3]) || s[4] != '-' || s[7] != '-')
        return false;
    *year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    *month = two(s + 5);
    *day = two(s + 8);
    return *month >= 1 && *month <= 12 && *day >= 1 && *day <= days_in_month(*year, *month);
}

bool referral_parse_time(const char *text, int64_t *unix_ms)
{
    int year, month, day;
    size_t n = strlen(text);
    if (n < 20 || !parse_date(text, &year, &month, &day) || text[10] != 'T' || text[13] != ':' ||
        text[16] != ':')
        return false;
    int hour = two(text + 11), minute = two(text + 14), second = two(text + 17);
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
        int oh = two(p + 1), om = p[3] == ':' ? two(p + 4) : -1;
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
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

/* A time field: when set it must parse; when required it must be set. The time, or INT64_MIN. */
static int64_t check_time(checker_t *c, const char *path, const char *text, bool required)
{
    int64_t ms;
    if (empty(text)) {
        if (required)
            problem(c, path, "required: a date and time (RFC 3339 with offset)");
        return INT64_MIN;
    }
    if (!referral_parse_time(text, &ms)) {
        problem(c, path, "not a valid RFC 3339 date and time with offset, e.g. 2025-10-04T21:40:00-05:00");
        return INT64_MIN;
    }
    return ms;
}

static void require_text(checker_t *c, const char *path, const char *text)
{
    if (empty(text))
        problem(c, path, "required");
}

/* An enum field must hold a value the schema defines, and (when required) not the unspecified zero. */
static void check_enum(checker_t *c, const char *path, const ProtobufCEnumDescriptor *desc, int value,
                       bool required)
{
    if (protobuf_c_enum_descriptor_get_value(desc, value) == NULL)
        problem(c, path, "not a defined %s value", desc->name);
    else if (required && value == 0)
        problem(c, path, "required: a %s", desc->name);
}

static bool rd_number_ok(const char *s)
{
    return strlen(s) == 8 && upper(s[0]) && upper(s[1]) && all_digits(s + 2, 6, 6);
}

static bool ori_ok(const char *s)
{
    if (strlen(s) != 9 || !upper(s[0]) || !upper(s[1]))
        return false;
    for (size_t i = 2; i < 9; i++)
        if (!upper(s[i]) && !digit(s[i]))
            return false;
    return true;
}

/* "720 ILCS 5/12-3.05(e)(1)": chapter, "ILCS", act, "/", section (digits, letters, . - and parentheses). */
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
    for (; *p != '\0'; p++)
        if (!digit(*p) && !upper(*p) && !(*p >= 'a' && *p <= 'z') && !strchr(".-()", *p))
            return false;
    return true;
}

static bool is_recording(int kind)
{
    return kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA ||
           kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_DASH_CAMERA ||
           kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_CIVILIAN_VIDEO;
}

static const Rb__EvidenceItem *find_evidence(const Rb__Referral *r, const char *id)
{
    for (size_t i = 0; i < r->n_evidence; i++)
        if (!empty(id) && strcmp(r->evidence[i]->evidence_id, id) == 0)
            return r->evidence[i];
    return NULL;
}

static bool agent_exists(const Rb__Referral *r, const char *ref)
{
    for (size_t i = 0; i < r->n_federal_agents; i++)
        if (!empty(ref) && strcmp(r->federal_agents[i]->agent_ref, ref) == 0)
            return true;
    return false;
}

static bool civilian_exists(const Rb__Referral *r, const char *ref)
{
    for (size_t i = 0; i < r->n_civilians; i++)
        if (!empty(ref) && strcmp(r->civilians[i]->person_ref, ref) == 0)
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

static void check_identity(checker_t *c)
{
    const Rb__Referral *r = c->r;
    bool follows = c->kind != RB__KIND__KIND_REFERRAL;
    if (r->schema_version != 1)
        problem(c, "$.schemaVersion", "must be 1 (the schema version this receiver knows)");
    if (!ori_ok(r->agency_ori))
        problem(c, "$.agencyOri", "required: an ORI, two capital letters then seven capitals or digits");
    if (!rd_number_ok(r->rd_number))
        problem(c, "$.rdNumber", "required: an RD number, two capital letters then six digits");
    if (!follows && r->revision != 1)
        problem(c, "$.revision", "must be 1 for an original referral");
    if (follows && r->revision < 2)
        problem(c, "$.revision", "must be 2 or more for a supplement or withdrawal");

    const Rb__ReferralRef *ref = r->references;
    if (!follows && ref != NULL)
        problem(c, "$.references", "only supplements and withdrawals reference an earlier referral");
    if (follows && ref == NULL)
        problem(c, "$.references", "required: the referral this one follows");
    if (ref != NULL) {
        if (ref->message_id.len != 0 && ref->message_id.len != 16)
            problem(c, "$.references.messageId", "must be 16 bytes when given");
        if (strcmp(ref->rd_number, r->rd_number) != 0)
            problem(c, "$.references.rdNumber", "must equal rdNumber (the same case)");
        if (ref->revision < 1 || ref->revision >= r->revision)
            problem(c, "$.references.revision", "must be at least 1 and lower than revision");
    }
    if (c->kind == RB__KIND__KIND_WITHDRAWAL)
        require_text(c, "$.withdrawalReason", r->withdrawal_reason);
    else if (!empty(r->withdrawal_reason))
        problem(c, "$.withdrawalReason", "only a withdrawal has a withdrawal reason");
}

/* The incident's time, or INT64_MIN when unknown. */
static int64_t check_incident(checker_t *c, bool required)
{
    const Rb__Incident *in = c->r->incident;
    char path[128];
    if (in == NULL) {
        if (required)
            problem(c, "$.incident", "required: when and where it happened");
        return INT64_MIN;
    }
    int64_t start = check_time(c, "$.incident.occurredAt", in->occurred_at, true);
    int64_t end = check_time(c, "$.incident.endedAt", in->ended_at, false);
    if (start != INT64_MIN && start > c->now_ms + FUTURE_SLACK_MS)
        problem(c, "$.incident.occurredAt", "in the future");
    if (start != INT64_MIN && end != INT64_MIN && end < start)
        problem(c, "$.incident.endedAt", "before occurredAt");
    require_text(c, "$.incident.address", in->address);
    if (!empty(in->beat) && !all_digits(in->beat, 4, 4))
        problem(c, "$.incident.beat", "must be four digits");
    if (!empty(in->district) && !all_digits(in->district, 1, 3))
        problem(c, "$.incident.district", "must be one to three digits");
    if (in->location != NULL) {
        double lat = in->location->latitude, lon = in->location->longitude;
        if (!isfinite(lat) || lat < -90 || lat > 90)
            problem(c, "$.incident.location.latitude", "must be between -90 and 90");
        if (!isfinite(lon) || lon < -180 || lon > 180)
            problem(c, "$.incident.location.longitude", "must be between -180 and 180");
    }
    if (in->n_categories == 0)
        problem(c, "$.incident.categories", "required: at least one category");
    for (size_t i = 0; i < in->n_categories; i++)
        check_enum(c, at(path, "$.incident.categories[%zu]", i), &rb__violation_category__descriptor,
                   (int)in->categories[i], true);
    return start;
}

static void check_officers(checker_t *c, bool required)
{
    const Rb__Referral *r = c->r;
    char path[128];
    if (required && r->n_reporting_officers == 0)
        problem(c, "$.reportingOfficers", "required: at least the primary reporting officer");
    for (size_t i = 0; i < r->n_reporting_officers; i++) {
        require_text(c, at(path, "$.reportingOfficers[%zu].name", i), r->reporting_officers[i]->name);
        require_text(c, at(path, "$.reportingOfficers[%zu].starNumber", i),
                     r->reporting_officers[i]->star_number);
    }
}

static void check_credential(checker_t *c, size_t i, const Rb__FederalAgent *a)
{
    char path[128];
    const Rb__CredentialCheck *cc = a->credential_check;
    if (cc == NULL) {
        if (a->is_supervisor)
            problem(c, at(path, "$.federalAgents[%zu].credentialCheck", i),
                    "required for the supervisor: the attempt to verify credentials");
        return;
    }
    check_enum(c, at(path, "$.federalAgents[%zu].credentialCheck.result", i),
               &rb__credential_result__descriptor, (int)cc->result, a->is_supervisor);
    check_time(c, at(path, "$.federalAgents[%zu].credentialCheck.checkedAt", i), cc->checked_at, false);
    bool witnessed = cc->result == RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_VERIFIED ||
                     cc->result == RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_REFUSED;
    const Rb__EvidenceItem *e = find_evidence(c->r, cc->recorded_on);
    at(path, "$.federalAgents[%zu].credentialCheck.recordedOn", i);
    if (witnessed && e == NULL)
        problem(c, path, "required: the evidenceId of the body-worn camera item that recorded the check");
    else if (!empty(cc->recorded_on) &&
             (e == NULL || e->kind != RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA))
        problem(c, path, "must name a body-worn camera item in evidence");
}

static void check_agents(checker_t *c, bool required)
{
    const Rb__Referral *r = c->r;
    char path[128];
    if (required && r->n_federal_agents == 0 && empty(r->no_agent_identified_reason))
        problem(c, "$.federalAgents", "required: at least one agent, or noAgentIdentifiedReason");
    for (size_t i = 0; i < r->n_federal_agents; i++) {
        const Rb__FederalAgent *a = r->federal_agents[i];
        at(path, "$.federalAgents[%zu].agentRef", i);
        if (empty(a->agent_ref))
            problem(c, path, "required: a reference such as A1");
        for (size_t j = 0; j < i && !empty(a->agent_ref); j++)
            if (strcmp(r->federal_agents[j]->agent_ref, a->agent_ref) == 0)
                problem(c, path, "used by another agent");
        check_enum(c, at(path, "$.federalAgents[%zu].agency", i), &rb__federal_agency__descriptor,
                   (int)a->agency, true);
        bool other = a->agency == RB__FEDERAL_AGENCY__FEDERAL_AGENCY_OTHER_FEDERAL;
        if (other && empty(a->agency_other))
            problem(c, at(path, "$.federalAgents[%zu].agencyOther", i),
                    "required when agency is OTHER_FEDERAL");
        if (!other && !empty(a->agency_other))
            problem(c, at(path, "$.federalAgents[%zu].agencyOther", i), "only for agency OTHER_FEDERAL");
        check_credential(c, i, a);
    }
}

static void check_civilians_and_medical(checker_t *c)
{
    const Rb__Referral *r = c->r;
    char path[128];
    for (size_t i = 0; i < r->n_civilians; i++) {
        const Rb__Civilian *p = r->civilians[i];
        at(path, "$.civilians[%zu].personRef", i);
        if (empty(p->person_ref))
            problem(c, path, "required: a reference such as P1");
        for (size_t j = 0; j < i && !empty(p->person_ref); j++)
            if (strcmp(r->civilians[j]->person_ref, p->person_ref) == 0)
                problem(c, path, "used by another civilian");
        check_enum(c, at(path, "$.civilians[%zu].role", i), &rb__civilian_role__descriptor, (int)p->role,
                   true);
        int y, m, d;
        if (!empty(p->date_of_birth) &&
            (strlen(p->date_of_birth) != 10 || !parse_date(p->date_of_birth, &y, &m, &d)))
            problem(c, at(path, "$.civilians[%zu].dateOfBirth", i), "must be a date, YYYY-MM-DD");
        for (size_t j = 0; j < p->n_injuries; j++)
            check_enum(c, at(path, "$.civilians[%zu].injuries[%zu].severity", i, j),
                       &rb__injury_severity__descriptor, (int)p->injuries[j]->severity, true);
    }
    const Rb__Medical *med = r->medical;
    if (med == NULL) {
        if (any_injury(r))
            problem(c, "$.medical", "required when anyone is injured: EMS called and aid rendered");
        return;
    }
    int64_t called = check_time(c, "$.medical.emsCalledAt", med->ems_called_at, med->ems_called);
    int64_t arrived = check_time(c, "$.medical.emsArrivedAt", med->ems_arrived_at, false);
    if (called != INT64_MIN && arrived != INT64_MIN && arrived < called)
        problem(c, "$.medical.emsArrivedAt", "before emsCalledAt");
    for (size_t i = 0; i < med->n_aid; i++) {
        const Rb__AidRendered *aid = med->aid[i];
        if (!civilian_exists(r, aid->person_ref))
            problem(c, at(path, "$.medical.aid[%zu].personRef", i), "must name a civilian's personRef");
        require_text(c, at(path, "$.medical.aid[%zu].givenBy", i), aid->given_by);
        check_time(c, at(path, "$.medical.aid[%zu].givenAt", i), aid->given_at, false);
    }
}

static void check_evidence(checker_t *c)
{
    const Rb__Referral *r = c->r;
    char path[128];
    for (size_t i = 0; i < r->n_evidence; i++) {
        const Rb__EvidenceItem *e = r->evidence[i];
        at(path, "$.evidence[%zu].evidenceId", i);
        if (empty(e->evidence_id))
            problem(c, path, "required: a reference such as E1");
        for (size_t j = 0; j < i && !empty(e->evidence_id); j++)
            if (strcmp(r->evidence[j]->evidence_id, e->evidence_id) == 0)
                problem(c, path, "used by another evidence item");
        check_enum(c, at(path, "$.evidence[%zu].kind", i), &rb__evidence_kind__descriptor, (int)e->kind,
                   true);
        bool recording = is_recording(e->kind);
        if ((recording || e->sha256.len != 0) && e->sha256.len != 32)
            problem(c, at(path, "$.evidence[%zu].sha256", i),
                    recording ? "required for a recording: the SHA-256 of the file (32 bytes)"
                              : "must be 32 bytes");
        if (recording)
            require_text(c, at(path, "$.evidence[%zu].storageLocator", i), e->storage_locator);
        check_time(c, at(path, "$.evidence[%zu].preservationHoldAt", i), e->preservation_hold_at, recording);
        const Rb__BodyCamera *cam = e->body_camera;
        if (e->kind != RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA) {
            if (cam != NULL)
                problem(c, at(path, "$.evidence[%zu].bodyCamera", i), "only for body-worn camera items");
            continue;
        }
        if (cam == NULL) {
            problem(c, at(path, "$.evidence[%zu].bodyCamera", i), "required for a body-worn camera item");
            continue;
        }
        require_text(c, at(path, "$.evidence[%zu].bodyCamera.cameraId", i), cam->camera_id);
        require_text(c, at(path, "$.evidence[%zu].bodyCamera.officerStar", i), cam->officer_star);
        int64_t start = check_time(c, at(path, "$.evidence[%zu].bodyCamera.recordingStart", i),
                                   cam->recording_start, true);
        int64_t end =
            check_time(c, at(path, "$.evidence[%zu].bodyCamera.recordingEnd", i), cam->recording_end, true);
        if (start != INT64_MIN && end != INT64_MIN && end < start)
            problem(c, at(path, "$.evidence[%zu].bodyCamera.recordingEnd", i), "before recordingStart");
    }
}

static void check_charges(checker_t *c)
{
    const Rb__Referral *r = c->r;
    char path[128];
    for (size_t i = 0; i < r->n_suggested_charges; i++) {
        const Rb__Charge *ch = r->suggested_charges[i];
        if (!ilcs_ok(ch->ilcs_citation))
            problem(c, at(path, "$.suggestedCharges[%zu].ilcsCitation", i),
                    "required: an ILCS citation such as 720 ILCS 5/12-3.05");
        if (ch->n_agent_refs == 0)
            problem(c, at(path, "$.suggestedCharges[%zu].agentRefs", i),
                    "required: the agents it is suggested against");
        for (size_t j = 0; j < ch->n_agent_refs; j++)
            if (!agent_exists(r, ch->agent_refs[j]))
                problem(c, at(path, "$.suggestedCharges[%zu].agentRefs[%zu]", i, j),
                        "must name an agent's agentRef");
    }
}

static void check_approval(checker_t *c, int64_t occurred)
{
    const Rb__SupervisorApproval *a = c->r->approval;
    if (a == NULL) {
        problem(c, "$.approval", "required: the supervisor who approved sending it");
        return;
    }
    require_text(c, "$.approval.name", a->name);
    require_text(c, "$.approval.starNumber", a->star_number);
    int64_t approved = check_time(c, "$.approval.approvedAt", a->approved_at, true);
    if (approved != INT64_MIN && occurred != INT64_MIN && approved < occurred)
        problem(c, "$.approval.approvedAt", "before the incident occurred");
}

static void check_publication(checker_t *c, bool required)
{
    const Rb__Publication *p = c->r->publication;
    if (p == NULL) {
        if (required)
            problem(c, "$.publication", "required: what may be published, for each group of fields");
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
    bool content = kind != RB__KIND__KIND_WITHDRAWAL; /* what a withdrawal may leave out */
    if (kind != RB__KIND__KIND_REFERRAL && kind != RB__KIND__KIND_SUPPLEMENT &&
        kind != RB__KIND__KIND_WITHDRAWAL)
        problem(&c, "$", "a referral travels only as a referral, supplement or withdrawal");
    check_identity(&c);
    int64_t occurred = check_incident(&c, content);
    if (content)
        require_text(&c, "$.narrative", r->narrative);
    if (strlen(r->narrative) > REFERRAL_NARRATIVE_MAX)
        problem(&c, "$.narrative", "longer than %d bytes", REFERRAL_NARRATIVE_MAX);
    check_officers(&c, content);
    check_agents(&c, content);
    check_civilians_and_medical(&c);
    check_evidence(&c);
    check_charges(&c);
    check_approval(&c, occurred);
    check_publication(&c, content);
    return out->count == 0 ? RB_OK : RB_ERR_INVALID;
}
