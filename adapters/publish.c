/* publish.c -- the public transparency data (see publish.h, docs/PUBLISHING.md).
 *
 * Three steps. Each case (agency, RD number) becomes a record: the facts of its latest referral or
 * supplement, its status from the recipient's answers and any withdrawal. Records whose classes allow a
 * row go through the re-identification check (month and district, then quarter, then area, then
 * withheld); every record counts in the summary's tables for the groups it allows, with small cells
 * suppressed. Then the files are written from those, in a fixed order, and the manifest is signed. */
#include "publish.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"
#include "out.h"
#include "pbjson.h"
#include "rbcrypto.h"

#define MANIFEST_DOMAIN "referral-broker/v1/publication-manifest"
#define MANIFEST_FORMAT "referral-publish/v1"

/* The groups of Publication, in its field order; their names are the facts' keys. */
enum { G_TIME_PLACE, G_AGENCIES, G_INJURIES, G_CREDENTIALS, G_EVIDENCE, G_CHARGES, G_OUTCOME, GROUPS };
static const char *const group_names[GROUPS] = {"time_place", "agencies", "injuries", "credentials",
                                                "evidence",   "charges",  "outcome"};
enum { WITHHOLD = 0, AGGREGATE_ONLY = 1, DEIDENTIFIED = 2 };

/* j as JSON text (flags as json_dumps) in plain malloc'd memory, and j released. jansson allocates through
 * pbjson's wiping allocator (pbjson_init), whose blocks must not reach free(). */
static char *dump(json_t *j, size_t flags, size_t *len)
{
    char *text = j != NULL ? json_dumps(j, flags) : NULL;
    char *copy = text != NULL ? strdup(text) : NULL;
    pbjson_free(text);
    json_decref(j);
    if (len != NULL)
        *len = copy != NULL ? strlen(copy) : 0;
    return copy;
}

/* o's text, the caller's to free; NULL (and o's buffer freed) when any write to it failed, so that a
 * file is never published cut short. */
static char *finish(out_t *o, size_t *len)
{
    if (o->failed || o->buf == NULL) {
        free(o->buf);
        return NULL;
    }
    if (len != NULL)
        *len = o->len;
    return o->buf;
}

/* --- the facts kept when a referral is queued -------------------------------------------------------- */

static const char *agency_name(Rb__FederalAgency a)
{
    switch (a) {
    case RB__FEDERAL_AGENCY__FEDERAL_AGENCY_ICE_ERO:
        return "ICE ERO";
    case RB__FEDERAL_AGENCY__FEDERAL_AGENCY_ICE_HSI:
        return "ICE HSI";
    case RB__FEDERAL_AGENCY__FEDERAL_AGENCY_CBP:
        return "CBP";
    case RB__FEDERAL_AGENCY__FEDERAL_AGENCY_OTHER_FEDERAL:
        return "other federal"; /* agency_other is free text: never */
    default:
        return "unknown federal";
    }
}

static const char *category_name(Rb__ViolationCategory c)
{
    switch (c) {
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_FIREARM_DISCHARGE:
        return "firearm discharge";
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_USE_OF_FORCE:
        return "use of force";
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_UNLAWFUL_ENTRY:
        return "unlawful entry";
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_UNLAWFUL_DETENTION:
        return "unlawful detention";
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_PROPERTY_DAMAGE:
        return "property damage";
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_OBSTRUCTION:
        return "obstruction";
    case RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_CREDENTIAL_REFUSAL:
        return "credential refusal";
    default:
        return "other";
    }
}

static const char *credential_name(const Rb__Referral *r)
{
    for (size_t i = 0; i < r->n_federal_agents; i++) {
        const Rb__FederalAgent *a = r->federal_agents[i];
        if (!a->is_supervisor)
            continue;
        switch (a->credential_check ? a->credential_check->result : 0) {
        case RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_VERIFIED:
            return "verified";
        case RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_REFUSED:
            return "refused";
        case RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_NOT_POSSIBLE:
            return "not possible";
        default:
            return "not attempted";
        }
    }
    return "no supervisor identified";
}

/* Adds name to a JSON array of strings kept sorted and unique. */
static void add_sorted(json_t *array, const char *name)
{
    size_t i = 0;
    for (; i < json_array_size(array); i++) {
        int c = strcmp(json_string_value(json_array_get(array, i)), name);
        if (c == 0)
            return;
        if (c > 0)
            break;
    }
    json_array_insert_new(array, i, json_string(name));
}

/* A district as published: letters, digits and dashes, at most 12; anything else is not a district. */
static const char *district_of(const Rb__Incident *in)
{
    const char *d = in ? in->district : "";
    size_t n = strlen(d);
    if (n == 0 || n > 12 || strspn(d, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") != n)
        return "unknown";
    return d;
}

/* "YYYY-MM" of an RFC 3339 time as the officer recorded it (local date), or "" when it is not one. */
static void month_of(const Rb__Incident *in, char out[8])
{
    const char *t = in ? in->occurred_at : "";
    out[0] = '\0';
    if (strlen(t) >= 7 && strspn(t, "0123456789") == 4 && t[4] == '-' && strspn(t + 5, "0123456789") >= 2 &&
        ((t[5] == '0' && t[6] >= '1') || (t[5] == '1' && t[6] <= '2')))
        snprintf(out, 8, "%.7s", t);
}

static void add_group_values(int g, const Rb__Referral *r, json_t *o)
{
    switch (g) {
    case G_TIME_PLACE: {
        char month[8];
        month_of(r->incident, month);
        json_object_set_new(o, "month", json_string(month[0] ? month : "unknown"));
        json_object_set_new(o, "district", json_string(district_of(r->incident)));
        break;
    }
    case G_AGENCIES: {
        json_t *a = json_array();
        for (size_t i = 0; i < r->n_federal_agents; i++)
            add_sorted(a, agency_name(r->federal_agents[i]->agency));
        if (json_array_size(a) == 0)
            add_sorted(a, "not identified");
        json_object_set_new(o, "agencies", a);
        break;
    }
    case G_INJURIES: {
        int injured = 0;
        bool death = false;
        for (size_t i = 0; i < r->n_civilians; i++) {
            const Rb__Civilian *c = r->civilians[i];
            injured += c->n_injuries > 0;
            for (size_t j = 0; j < c->n_injuries; j++)
                death |= c->injuries[j]->severity == RB__INJURY_SEVERITY__INJURY_SEVERITY_FATAL;
        }
        json_object_set_new(o, "injured", json_integer(injured));
        json_object_set_new(o, "death", json_boolean(death));
        json_object_set_new(o, "ems_called", json_boolean(r->medical != NULL && r->medical->ems_called));
        break;
    }
    case G_CREDENTIALS:
        json_object_set_new(o, "supervisor", json_string(credential_name(r)));
        break;
    case G_EVIDENCE: {
        int recordings = 0;
        for (size_t i = 0; i < r->n_evidence; i++)
            recordings += r->evidence[i]->kind == RB__EVIDENCE_KIND__EVIDENCE_KIND_BODY_WORN_CAMERA &&
                          r->evidence[i]->preservation_hold_at[0] != '\0';
        json_object_set_new(o, "recordings", json_integer(recordings));
        break;
    }
    case G_CHARGES: {
        json_t *a = json_array();
        for (size_t i = 0; r->incident != NULL && i < r->incident->n_categories; i++)
            add_sorted(a, category_name(r->incident->categories[i]));
        json_object_set_new(o, "categories", a);
        break;
    }
    default: /* the outcome is the recipient's answer, read from the store when publishing */
        break;
    }
}

char *publish_facts(const Rb__Referral *r)
{
    const Rb__Publication *p = r->publication;
    int cls[GROUPS] = {0};
    if (p != NULL) {
        int given[GROUPS] = {p->time_place, p->agencies, p->injuries, p->credentials,
                             p->evidence,   p->charges,  p->outcome};
        memcpy(cls, given, sizeof cls);
    }
    pbjson_init();
    json_t *o = json_object();
    for (int g = 0; g < GROUPS; g++) {
        int c = cls[g] >= WITHHOLD && cls[g] <= DEIDENTIFIED ? cls[g] : WITHHOLD;
        json_t *values = json_object();
        json_object_set_new(values, "class", json_integer(c));
        if (c != WITHHOLD)
            add_group_values(g, r, values);
        json_object_set_new(o, group_names[g], values);
    }
    return dump(o, JSON_COMPACT | JSON_SORT_KEYS, NULL);
}

/* --- records: one per case ----------------------------------------------------------------------------- */

typedef struct {
    json_t *facts; /* of the latest referral or supplement */
    int cls[GROUPS];
    const char *status; /* "pending", "accepted", "rejected", "withdrawn" */
    int days;           /* from the first queued to the first answer; -1 while unanswered */
    /* The row, after the re-identification check: */
    char period[16], place[64], agencies[160], categories[256];
    int level;     /* 0 month and district, 1 quarter and district, 2 quarter and area */
    bool has_row;  /* some group may be published as a row */
    bool withheld; /* by the re-identification check */
} record_t;

typedef struct {
    record_t *items;
    size_t n, cap;
    int unrecorded;
    /* the case being read */
    char agency[32], rd_number[32];
    bool open, withdrawn;
    json_t *facts;
    int answer;
    int64_t first_queued_ms, first_acked_ms;
} records_t;

static const char *statuses[] = {"pending", "accepted", "rejected", "withdrawn"};

static rb_err close_case(records_t *rs)
{
    if (!rs->open)
        return RB_OK;
    rs->open = false;
    if (rs->facts == NULL) {
        rs->unrecorded++;
        return RB_OK;
    }
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 64;
        record_t *bigger = realloc(rs->items, cap * sizeof *bigger);
        if (bigger == NULL)
            return RB_ERR_NOMEM;
        rs->items = bigger;
        rs->cap = cap;
    }
    record_t *r = &rs->items[rs->n++];
    memset(r, 0, sizeof *r);
    r->facts = rs->facts;
    rs->facts = NULL;
    for (int g = 0; g < GROUPS; g++)
        r->cls[g] =
            (int)json_integer_value(json_object_get(json_object_get(r->facts, group_names[g]), "class"));
    r->status = rs->withdrawn                                       ? statuses[3]
                : rs->answer == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ? statuses[1]
                : rs->answer == RB__ACK_STATUS__ACK_STATUS_REJECTED ? statuses[2]
                                                                    : statuses[0];
    r->days = rs->first_acked_ms > 0 && rs->first_acked_ms >= rs->first_queued_ms
                  ? (int)((rs->first_acked_ms - rs->first_queued_ms) / 86400000)
                  : -1;
    return RB_OK;
}

static rb_err take_sent(void *ctx, const astore_sent_t *s)
{
    records_t *rs = ctx;
    if (!rs->open || strcmp(rs->agency, s->agency) != 0 || strcmp(rs->rd_number, s->rd_number) != 0) {
        rb_err rc = close_case(rs);
        if (rc != RB_OK)
            return rc;
        snprintf(rs->agency, sizeof rs->agency, "%s", s->agency);
        snprintf(rs->rd_number, sizeof rs->rd_number, "%s", s->rd_number);
        rs->open = true;
        rs->withdrawn = false;
        rs->answer = 0;
        rs->first_queued_ms = s->queued_ms;
        rs->first_acked_ms = 0;
    }
    if (s->kind == RB__KIND__KIND_WITHDRAWAL) {
        rs->withdrawn = true;
    } else if (s->facts != NULL) {
        json_t *f = json_loads(s->facts, 0, NULL);
        if (f == NULL || !json_is_object(f)) {
            json_decref(f);
            return RB_ERR_MALFORMED;
        }
        json_decref(rs->facts);
        rs->facts = f; /* a supplement's facts replace the referral's */
    }
    if (s->ack_status != 0) {
        rs->answer = s->ack_status; /* the latest answer decides */
        if (rs->first_acked_ms == 0 || s->acked_ms < rs->first_acked_ms)
            rs->first_acked_ms = s->acked_ms;
    }
    return RB_OK;
}

static void records_free(records_t *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        json_decref(rs->items[i].facts);
    json_decref(rs->facts);
    free(rs->items);
}

static json_t *group(const record_t *r, int g)
{
    return json_object_get(r->facts, group_names[g]);
}

static const char *group_text(const record_t *r, int g, const char *key)
{
    const char *v = json_string_value(json_object_get(group(r, g), key));
    return v ? v : "";
}

static void join(json_t *array, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(array) && n < cap; i++) {
        int w =
            snprintf(out + n, cap - n, "%s%s", i ? "; " : "", json_string_value(json_array_get(array, i)));
        n += w > 0 ? (size_t)w : 0;
    }
}

/* "2025-09" -> "2025-Q3". */
static void quarter_of(const char *month, char out[16])
{
    if (strlen(month) == 7 && month[4] == '-') { /* month_of made it: months 01 to 12 */
        int m = (month[5] - '0') * 10 + (month[6] - '0');
        snprintf(out, 16, "%.4s-Q%c", month, (char)('0' + (m + 2) / 3));
    } else
        snprintf(out, 16, "%s", month);
}

/* The area a district belongs to in "D=AREA;D=AREA", or "citywide". */
static void area_of(const char *areas, const char *district, char *out, size_t cap)
{
    snprintf(out, cap, "citywide");
    size_t dl = strlen(district);
    for (const char *p = areas; p != NULL && *p != '\0';) {
        p += strspn(p, " ;");
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq != NULL && (size_t)(eq - p) == dl && strncmp(p, district, dl) == 0) {
            size_t an = len - (size_t)(eq + 1 - p);
            for (; an > 0 && eq[1] == ' '; an--)
                eq++;
            while (an > 0 && eq[an] == ' ')
                an--;
            snprintf(out, cap, "%.*s", (int)an, eq + 1);
            return;
        }
        p = end ? end + 1 : p + len;
    }
}

/* The row's period and place at r->level. */
static void set_row_key(record_t *r, const char *areas)
{
    r->period[0] = r->place[0] = '\0';
    if (r->cls[G_TIME_PLACE] != DEIDENTIFIED)
        return;
    const char *month = group_text(r, G_TIME_PLACE, "month"),
               *district = group_text(r, G_TIME_PLACE, "district");
    if (r->level == 0)
        snprintf(r->period, sizeof r->period, "%s", month);
    else
        quarter_of(month, r->period);
    if (r->level < 2)
        snprintf(r->place, sizeof r->place, "%s", district);
    else
        area_of(areas, district, r->place, sizeof r->place);
}

static int by_key(const void *a, const void *b)
{
    const record_t *x = *(const record_t *const *)a, *y = *(const record_t *const *)b;
    int c = strcmp(x->period, y->period);
    if (c == 0)
        c = strcmp(x->place, y->place);
    return c != 0 ? c : strcmp(x->agencies, y->agencies);
}

/* No published row may share its (period, place, agencies) with fewer than threshold rows: the rows at
 * level in smaller groups go one level coarser, or past the last are withheld. Sorted by key, a group is a
 * run; a run is counted whole before its rows move, and moving them leaves the runs after it as they are. */
static rb_err coarsen(records_t *rs, int level, int threshold, const char *areas)
{
    record_t **at = malloc((rs->n ? rs->n : 1) * sizeof(record_t *));
    if (at == NULL)
        return RB_ERR_NOMEM;
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++)
        if (rs->items[i].has_row && !rs->items[i].withheld && rs->items[i].level == level)
            at[n++] = &rs->items[i];
    qsort(at, n, sizeof(record_t *), by_key);
    for (size_t start = 0, end; start < n; start = end) {
        for (end = start + 1; end < n && by_key(&at[start], &at[end]) == 0; end++)
            ;
        for (size_t i = start; end - start < (size_t)threshold && i < end; i++) {
            if (++at[i]->level > 2)
                at[i]->withheld = true;
            else
                set_row_key(at[i], areas);
        }
    }
    free(at);
    return RB_OK;
}

static rb_err build_rows(records_t *rs, const publish_options_t *o, publish_report_t *rep)
{
    for (size_t i = 0; i < rs->n; i++) {
        record_t *r = &rs->items[i];
        for (int g = 0; g < GROUPS; g++)
            r->has_row |= r->cls[g] == DEIDENTIFIED;
        if (r->cls[G_AGENCIES] == DEIDENTIFIED)
            join(json_object_get(group(r, G_AGENCIES), "agencies"), r->agencies, sizeof r->agencies);
        if (r->cls[G_CHARGES] == DEIDENTIFIED)
            join(json_object_get(group(r, G_CHARGES), "categories"), r->categories, sizeof r->categories);
        set_row_key(r, o->areas);
    }
    for (int level = 0; level <= 2; level++)
        if (coarsen(rs, level, o->threshold, o->areas) != RB_OK)
            return RB_ERR_NOMEM;
    for (size_t i = 0; i < rs->n; i++) {
        const record_t *r = &rs->items[i];
        rep->rows += r->has_row && !r->withheld;
        rep->coarsened += r->has_row && !r->withheld && r->level > 0 && r->cls[G_TIME_PLACE] == DEIDENTIFIED;
        rep->withheld += r->has_row && r->withheld;
    }
    return RB_OK;
}

/* --- a row's fields ------------------------------------------------------------------------------------ */

enum {
    F_PERIOD,
    F_PLACE,
    F_AGENCIES,
    F_CATEGORIES,
    F_INJURED,
    F_INJURED_COUNT,
    F_EMS,
    F_DEATH,
    F_CREDENTIALS,
    F_RECORDINGS,
    F_STATUS,
    F_DAYS,
    FIELDS
};
static const char *const field_names[FIELDS] = {
    "period",     "place", "federal_agencies",       "categories",           "injured", "injured_count",
    "ems_called", "death", "supervisor_credentials", "recordings_preserved", "status",  "days_to_answer"};

static const char *yes_no(bool b)
{
    return b ? "yes" : "no";
}

/* Field f of a row as text; "" when its group is not published as a row. */
static void field_text(const record_t *r, int f, char *out, size_t cap)
{
    static const int group_of[FIELDS] = {G_TIME_PLACE,  G_TIME_PLACE, G_AGENCIES, G_CHARGES,
                                         G_INJURIES,    G_INJURIES,   G_INJURIES, G_INJURIES,
                                         G_CREDENTIALS, G_EVIDENCE,   G_OUTCOME,  G_OUTCOME};
    out[0] = '\0';
    if (r->cls[group_of[f]] != DEIDENTIFIED)
        return;
    json_t *g = group(r, group_of[f]);
    json_int_t injured = json_integer_value(json_object_get(g, "injured"));
    switch (f) {
    case F_PERIOD:
        snprintf(out, cap, "%s", r->period);
        break;
    case F_PLACE:
        snprintf(out, cap, "%s", r->place);
        break;
    case F_AGENCIES:
        snprintf(out, cap, "%s", r->agencies);
        break;
    case F_CATEGORIES:
        snprintf(out, cap, "%s", r->categories);
        break;
    case F_INJURED:
        snprintf(out, cap, "%s", yes_no(injured > 0));
        break;
    case F_INJURED_COUNT: /* a band, not the count: a count of 7 in a small place is a clue */
        snprintf(out, cap, "%s", injured == 0 ? "0" : injured == 1 ? "1" : injured <= 4 ? "2-4" : "5+");
        break;
    case F_EMS:
        snprintf(out, cap, "%s", yes_no(json_is_true(json_object_get(g, "ems_called"))));
        break;
    case F_DEATH:
        snprintf(out, cap, "%s", yes_no(json_is_true(json_object_get(g, "death"))));
        break;
    case F_CREDENTIALS:
        snprintf(out, cap, "%s", group_text(r, G_CREDENTIALS, "supervisor"));
        break;
    case F_RECORDINGS:
        snprintf(out, cap, "%lld", (long long)json_integer_value(json_object_get(g, "recordings")));
        break;
    case F_STATUS:
        snprintf(out, cap, "%s", r->status);
        break;
    default:
        if (r->days >= 0)
            snprintf(out, cap, "%d", r->days);
        break;
    }
}

static void csv_field(out_t *f, const char *v)
{
    out_printf(f, "\"");
    while (*v != '\0') { /* a quote is written twice */
        size_t plain = strcspn(v, "\"");
        out_printf(f, "%.*s", (int)plain, v);
        v += plain;
        if (*v == '"') {
            out_printf(f, "\"\"");
            v++;
        }
    }
    out_printf(f, "\"");
}

/* A row as a CSV line, which is also its sort key: rows are published in an order of their content only. */
static char *csv_line(const record_t *r)
{
    out_t line = {0}, *f = &line;
    for (int i = 0; i < FIELDS; i++) {
        char v[300];
        field_text(r, i, v, sizeof v);
        if (i)
            out_printf(f, ",");
        csv_field(f, v);
    }
    out_printf(f, "\r\n");
    return finish(&line, NULL);
}

typedef struct {
    char *line;
    const record_t *r;
} row_t;

static int by_line(const void *a, const void *b)
{
    return strcmp(((const row_t *)a)->line, ((const row_t *)b)->line);
}

/* The published rows, sorted; NULL when out of memory. */
static row_t *sorted_rows(const records_t *rs, size_t *n)
{
    row_t *rows = calloc(rs->n ? rs->n : 1, sizeof *rows);
    *n = 0;
    for (size_t i = 0; rows != NULL && i < rs->n; i++) {
        if (!rs->items[i].has_row || rs->items[i].withheld)
            continue;
        rows[*n].r = &rs->items[i];
        if ((rows[*n].line = csv_line(&rs->items[i])) == NULL) {
            for (size_t j = 0; j < *n; j++)
                free(rows[j].line);
            free(rows);
            return NULL;
        }
        (*n)++;
    }
    if (rows != NULL)
        qsort(rows, *n, sizeof *rows, by_line);
    return rows;
}

static void rows_free(row_t *rows, size_t n)
{
    for (size_t i = 0; rows != NULL && i < n; i++)
        free(rows[i].line);
    free(rows);
}

/* --- the summary: counts with small cells suppressed ----------------------------------------------------- */

#define MAX_SERIES 5

enum { SHOWN, UNDER, COMPLEMENT }; /* a summary cell: shown; hidden under the threshold; hidden beside one */

/* A label and its counts, one per series (tables have one), for the summary's tables and the charts. */
typedef struct {
    char label[64];
    int n[MAX_SERIES];
    int hidden; /* SHOWN, UNDER or COMPLEMENT */
} cell_t;

typedef struct {
    cell_t *cells;
    size_t n, cap;
    bool failed; /* out of memory: a count is missing */
} cells_t;

/* label's cell, added with zero counts if new; NULL when out of memory (and t->failed). */
static cell_t *cell_of(cells_t *t, const char *label)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->cells[i].label, label) == 0)
            return &t->cells[i];
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        cell_t *bigger = realloc(t->cells, cap * sizeof *bigger);
        if (bigger == NULL) {
            t->failed = true;
            return NULL;
        }
        t->cells = bigger;
        t->cap = cap;
    }
    cell_t *c = &t->cells[t->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->label, sizeof c->label, "%s", label);
    return c;
}

/* Counts one under label in series. */
static void tally(cells_t *t, const char *label, size_t series)
{
    cell_t *c = cell_of(t, label);
    if (c != NULL)
        c->n[series]++;
}

static int by_label(const void *a, const void *b)
{
    return strcmp(((const cell_t *)a)->label, ((const cell_t *)b)->label);
}

static void sort_cells(cells_t *t)
{
    if (t->n > 1)
        qsort(t->cells, t->n, sizeof t->cells[0], by_label);
}

/* Whether some hidden cell's count follows from the rest: each hidden cell is known to lie in [1, T-1]
 * (shown "<T") or in [T, sum] (shown "suppressed"), and together they make sum, the table's total less the
 * shown cells. A cell is given away when its bounds, narrowed by the others', meet. */
static bool recoverable(const cells_t *t, long long sum, int threshold)
{
    long long lo_all = 0, hi_all = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->cells[i].hidden != SHOWN) {
            lo_all += t->cells[i].hidden == UNDER ? 1 : threshold;
            hi_all += t->cells[i].hidden == UNDER ? threshold - 1 : sum;
        }
    for (size_t i = 0; i < t->n; i++) {
        if (t->cells[i].hidden == SHOWN)
            continue;
        long long lo = t->cells[i].hidden == UNDER ? 1 : threshold;
        long long hi = t->cells[i].hidden == UNDER ? threshold - 1 : sum;
        long long lo_others = lo_all - lo, hi_others = hi_all - hi;
        if ((sum - hi_others > lo ? sum - hi_others : lo) >= (sum - lo_others < hi ? sum - lo_others : hi))
            return true;
    }
    return false;
}

/* Counts under the threshold are hidden ("<T"); then, while the total and the shown counts would give one
 * of them back, the smallest shown count is hidden too ("suppressed"). When no count is left to hide, the
 * hidden cells are published only together, without their labels: returns true, with their sum. */
static bool suppress(cells_t *t, int threshold, long long *hidden_sum)
{
    long long sum = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->cells[i].n[0] > 0 && t->cells[i].n[0] < threshold) {
            t->cells[i].hidden = UNDER;
            sum += t->cells[i].n[0];
        }
    *hidden_sum = sum;
    while (sum > 0 && recoverable(t, sum, threshold)) {
        cell_t *next = NULL;
        for (size_t i = 0; i < t->n; i++)
            if (t->cells[i].hidden == SHOWN && t->cells[i].n[0] > 0 &&
                (next == NULL || t->cells[i].n[0] < next->n[0]))
                next = &t->cells[i];
        if (next == NULL)
            return true;
        next->hidden = COMPLEMENT;
        *hidden_sum = sum += next->n[0];
    }
    return false;
}

static json_t *count_json(int n, bool hidden, int threshold)
{
    if (!hidden)
        return json_integer(n);
    char s[32];
    snprintf(s, sizeof s, "<%d", threshold);
    return json_string(s);
}

/* The table of one dimension over the records whose group g may at least be counted, suppressed:
 * {"total": N, "counts": {"label": N, "<T" or "suppressed"}} and, when the hidden cells could only be
 * published together, "suppressed_together": their sum; NULL when out of memory. */
static json_t *dimension(const records_t *rs, int g, const char *key, int threshold)
{
    cells_t t = {0};
    int total = 0;
    for (size_t s = 0; g == G_OUTCOME && s < sizeof statuses / sizeof statuses[0]; s++)
        cell_of(&t, statuses[s]); /* every status, zero or not */
    for (size_t i = 0; i < rs->n; i++) {
        const record_t *r = &rs->items[i];
        if (r->cls[g] < AGGREGATE_ONLY)
            continue;
        total++;
        json_t *v = json_object_get(group(r, g), key);
        if (g == G_OUTCOME)
            tally(&t, r->status, 0);
        else if (json_is_array(v))
            for (size_t j = 0; j < json_array_size(v); j++)
                tally(&t, json_string_value(json_array_get(v, j)), 0);
        else
            tally(&t, json_is_string(v) ? json_string_value(v) : "unknown", 0);
    }
    if (g != G_OUTCOME)
        sort_cells(&t);
    json_t *o = NULL;
    if (!t.failed) {
        long long hidden_sum;
        bool together = suppress(&t, threshold, &hidden_sum);
        json_t *counts = json_object();
        for (size_t i = 0; i < t.n; i++) {
            const cell_t *c = &t.cells[i];
            if (c->hidden == SHOWN)
                json_object_set_new(counts, c->label, json_integer(c->n[0]));
            else if (!together)
                json_object_set_new(counts, c->label,
                                    c->hidden == UNDER ? count_json(c->n[0], true, threshold)
                                                       : json_string("suppressed"));
        }
        o = json_object();
        json_object_set_new(o, "total", count_json(total, total > 0 && total < threshold, threshold));
        json_object_set_new(o, "counts", counts);
        if (together)
            json_object_set_new(o, "suppressed_together",
                                count_json((int)hidden_sum, hidden_sum < threshold, threshold));
    }
    free(t.cells);
    return o;
}

static json_t *summary_json(const records_t *rs, const publish_options_t *o, const publish_report_t *rep)
{
    static const struct {
        const char *name;
        int group;
        const char *key;
    } dims[] = {{"by_month", G_TIME_PLACE, "month"},
                {"by_district", G_TIME_PLACE, "district"},
                {"by_agency", G_AGENCIES, "agencies"},
                {"by_category", G_CHARGES, "categories"},
                {"by_status", G_OUTCOME, NULL}};
    json_t *s = json_object();
    json_object_set_new(s, "data_as_of", json_string(o->as_of));
    json_object_set_new(s, "threshold", json_integer(o->threshold));
    int counted = 0; /* a referral that publishes nothing is not even counted */
    for (size_t i = 0; i < rs->n; i++)
        for (int g = 0, any = 0; g < GROUPS && !any; g++)
            counted += any = rs->items[i].cls[g] >= AGGREGATE_ONLY;
    json_object_set_new(s, "referrals",
                        count_json(counted, counted > 0 && counted < o->threshold, o->threshold));
    json_object_set_new(s, "rows_published", json_integer(rep->rows));
    json_object_set_new(s, "rows_coarsened", json_integer(rep->coarsened));
    json_object_set_new(s, "rows_withheld", json_integer(rep->withheld));
    json_object_set_new(s, "referrals_without_facts", json_integer(rep->unrecorded));
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        json_t *table = dimension(rs, dims[d].group, dims[d].key, o->threshold);
        if (table == NULL) {
            json_decref(s);
            return NULL;
        }
        json_object_set_new(s, dims[d].name, table);
    }
    return s;
}

/* --- the files ------------------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    char *data;
    size_t len;
} file_t;

static char *rows_csv(const row_t *rows, size_t n, size_t *len)
{
    out_t out = {0}, *f = &out;
    for (int i = 0; i < FIELDS; i++)
        out_printf(f, "%s%s", i ? "," : "", field_names[i]);
    out_printf(f, "\r\n");
    for (size_t i = 0; i < n; i++)
        out_printf(f, "%s", rows[i].line);
    return finish(&out, len);
}

static char *rows_json(const row_t *rows, size_t n, const publish_options_t *o, size_t *len)
{
    json_t *doc = json_object(), *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_object();
        for (int f = 0; f < FIELDS; f++) {
            char v[300];
            field_text(rows[i].r, f, v, sizeof v);
            json_t *value = json_null();
            if (v[0] != '\0' && (f == F_AGENCIES || f == F_CATEGORIES)) {
                value = json_array();
                json_t *g = json_object_get(group(rows[i].r, f == F_AGENCIES ? G_AGENCIES : G_CHARGES),
                                            f == F_AGENCIES ? "agencies" : "categories");
                json_array_extend(value, g);
            } else if (v[0] != '\0' && (f == F_RECORDINGS || f == F_DAYS)) {
                value = json_integer(strtol(v, NULL, 10));
            } else if (v[0] != '\0') {
                value = json_string(v);
            }
            json_object_set_new(row, field_names[f], value);
        }
        json_array_append_new(list, row);
    }
    json_object_set_new(doc, "data_as_of", json_string(o->as_of));
    json_object_set_new(doc, "rows", list);
    return dump(doc, JSON_INDENT(2) | JSON_SORT_KEYS, len);
}

/* --- the page ------------------------------------------------------------------------------------------ */

static void html_text(out_t *f, const char *s)
{
    while (*s != '\0') {
        size_t plain = strcspn(s, "&<>\"");
        out_printf(f, "%.*s", (int)plain, s);
        s += plain;
        if (*s != '\0') {
            out_printf(f, "%s", *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : "&quot;");
            s++;
        }
    }
}

/* A horizontal bar chart: one bar per label, one segment per series, stacked. */
typedef struct {
    const char *title;
    const char *series[MAX_SERIES];
    const char *colors[MAX_SERIES];
    size_t n_series;
    cells_t bars;
} chart_t;

static void chart_svg(out_t *f, chart_t *c)
{
    sort_cells(&c->bars);
    out_printf(f, "<figure><figcaption>");
    html_text(f, c->title);
    out_printf(f, "</figcaption>\n");
    if (c->bars.n == 0) {
        out_printf(f, "<p class=\"none\">No published rows for this chart.</p></figure>\n");
        return;
    }
    int max = 1;
    for (size_t i = 0; i < c->bars.n; i++) {
        int sum = 0;
        for (size_t s = 0; s < c->n_series; s++)
            sum += c->bars.cells[i].n[s];
        max = sum > max ? sum : max;
    }
    const int label_w = 170, bar_w = 420, row_h = 24, legend_h = c->n_series > 1 ? 26 : 0;
    int height = legend_h + (int)c->bars.n * row_h + 6;
    int legend_w = (int)c->n_series * 110, width = label_w + (bar_w > legend_w ? bar_w : legend_w) + 60;
    out_printf(
        f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"",
        width, height);
    html_text(f, c->title);
    out_printf(f, "\">\n");
    for (size_t s = 0; c->n_series > 1 && s < c->n_series; s++) {
        int x = label_w + (int)s * 110;
        out_printf(f, "<rect x=\"%d\" y=\"6\" width=\"12\" height=\"12\" fill=\"%s\"/>", x, c->colors[s]);
        out_printf(f, "<text x=\"%d\" y=\"17\">", x + 16);
        html_text(f, c->series[s]);
        out_printf(f, "</text>\n");
    }
    for (size_t i = 0; i < c->bars.n; i++) {
        const cell_t *bar = &c->bars.cells[i];
        int y = legend_h + (int)i * row_h, x = label_w, sum = 0;
        out_printf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", label_w - 8, y + 16);
        html_text(f, bar->label);
        out_printf(f, "</text>");
        for (size_t s = 0; s < c->n_series; s++) {
            int w = bar->n[s] * bar_w / max;
            if (w > 0)
                out_printf(
                    f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>%d</title></rect>",
                    x, y + 3, w, row_h - 6, c->colors[s], bar->n[s]);
            x += w;
            sum += bar->n[s];
        }
        out_printf(f, "<text x=\"%d\" y=\"%d\">%d</text>\n", x + 6, y + 16, sum);
    }
    out_printf(f, "</svg></figure>\n");
}

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>Documented alleged violations by federal agents: referrals for prosecution</title>\n"
    "<style>\n"
    "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 "
    "1em;color:#1a1a1a;line-height:1.45}\n"
    "h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em}figure{margin:1.5em 0}\n"
    "figcaption{font-weight:bold;margin-bottom:.4em}svg{font-size:12px;max-width:100%}\n"
    "svg text{fill:#1a1a1a}table{border-collapse:collapse;font-size:12px;width:100%}\n"
    "th,td{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top}\n"
    "th{background:#f0f0f0}.none{color:#666;font-style:italic}.asof{color:#444}\n"
    "</style>\n</head>\n<body>\n";

static void page_intro(out_t *f, const publish_options_t *o, const publish_report_t *rep, size_t rows)
{
    out_printf(f, "%s",
               "<h1>Documented alleged violations by federal agents: referrals for prosecution</h1>\n");
    out_printf(f, "<p class=\"asof\">Data as of ");
    html_text(f, o->as_of);
    out_printf(f, ".</p>\n<h2>What this is</h2>\n");
    out_printf(
        f, "%s",
        "<p>Each row is one incident the police documented and referred to the State's Attorney for "
        "possible prosecution of federal agents. It shows only generalised facts: the month (or quarter) "
        "and police district (or area), the federal agencies involved, the categories of alleged "
        "violation, whether anyone was injured or died and whether EMS was called, whether the federal "
        "supervisor showed credentials, how many body-camera recordings were preserved, and the status "
        "of the referral at the State's Attorney with the days it took to answer.</p>\n");
    out_printf(
        f, "%s",
        "<p>It never shows names, badge or star numbers, case numbers, addresses, exact dates or times, "
        "narratives or any other free text. A referral's own publication settings decide which of its "
        "facts appear, and by default nothing does. ");
    out_printf(
        f,
        "Counts under %d are shown as &lt;%d, together with enough other counts that none can be worked "
        "out from the totals. Where fewer than %d published rows would share a period, place and agency, "
        "the period is widened to a quarter, then the place to an area; rows that would still stand out "
        "are left out. This publication has %zu rows; %d were widened and %d left out.</p>\n",
        o->threshold, o->threshold, o->threshold, rows, rep->coarsened, rep->withheld);
}

static char *page_html(const row_t *rows, size_t n, const publish_options_t *o, const publish_report_t *rep,
                       size_t *len)
{
    out_t out = {0}, *f = &out;
    chart_t *c = calloc(4, sizeof *c);
    if (c == NULL)
        return NULL;
    static const char *const status_colors[] = {"#8a8a8a", "#2e7d32", "#c62828", "#6a1b9a", "#cfcfcf"};
    c[0].title = "Referrals by period and status";
    c[0].n_series = 5;
    for (size_t s = 0; s < 5; s++) {
        c[0].series[s] = s < 4 ? statuses[s] : "not published";
        c[0].colors[s] = status_colors[s];
    }
    c[1].title = "Referrals by federal agency";
    c[2].title = "Referrals by police district or area";
    c[3].title = "Supervisors who refused to show credentials, by period";
    for (int i = 1; i < 4; i++) {
        c[i].n_series = 1;
        c[i].series[0] = "referrals";
        c[i].colors[0] = "#1565c0";
    }
    for (size_t i = 0; i < n; i++) {
        const record_t *r = rows[i].r;
        size_t s = 4;
        for (size_t k = 0; r->cls[G_OUTCOME] == DEIDENTIFIED && k < 4; k++)
            s = strcmp(r->status, statuses[k]) == 0 ? k : s;
        if (r->period[0] != '\0')
            tally(&c[0].bars, r->period, s);
        json_t *a = json_object_get(group(r, G_AGENCIES), "agencies");
        for (size_t k = 0; r->cls[G_AGENCIES] == DEIDENTIFIED && k < json_array_size(a); k++)
            tally(&c[1].bars, json_string_value(json_array_get(a, k)), 0);
        if (r->place[0] != '\0')
            tally(&c[2].bars, r->place, 0);
        if (r->period[0] != '\0' && r->cls[G_CREDENTIALS] == DEIDENTIFIED &&
            strcmp(group_text(r, G_CREDENTIALS, "supervisor"), "refused") == 0)
            tally(&c[3].bars, r->period, 0);
    }
    out_printf(f, "%s", page_head);
    page_intro(f, o, rep, n);
    out_printf(f, "<h2>Charts</h2>\n");
    for (int i = 0; i < 4; i++)
        chart_svg(f, &c[i]);
    out_printf(
        f, "%s",
        "<h2>The published rows</h2>\n<p>A blank cell is a fact this referral's settings do not publish. "
        "The same rows are in incidents.csv and incidents.json; counts including referrals published only in "
        "aggregate are in summary.json.</p>\n<table>\n<tr>");
    for (int i = 0; i < FIELDS; i++) {
        out_printf(f, "<th>");
        html_text(f, field_names[i]);
        out_printf(f, "</th>");
    }
    out_printf(f, "</tr>\n");
    for (size_t i = 0; i < n; i++) {
        out_printf(f, "<tr>");
        for (int k = 0; k < FIELDS; k++) {
            char v[300];
            field_text(rows[i].r, k, v, sizeof v);
            out_printf(f, "<td>");
            html_text(f, v);
            out_printf(f, "</td>");
        }
        out_printf(f, "</tr>\n");
    }
    out_printf(f, "%s",
               "</table>\n<p>Check these files against the police department's public key card: "
               "<code>referral-publish verify --dir DIR --card CARD</code> "
               "(MANIFEST.json).</p>\n</body>\n</html>\n");
    for (int i = 0; i < 4; i++) {
        out.failed |= c[i].bars.failed;
        free(c[i].bars.cells);
    }
    free(c);
    return finish(&out, len);
}

/* --- the manifest ---------------------------------------------------------------------------------------- */

/* What the signature covers: the format, the signer's card (name, agency, key id), and "SHA256  NAME" for
 * each file in name order (the lines sha256sum -c reads). */
static char *manifest_text(const card_t *signer, const char *const *names, const char (*hashes)[65], size_t n)
{
    out_t out = {0}, *f = &out;
    char key_id[2 * RB_KEY_ID_BYTES + 1];
    keyfile_hex(signer->key_id, RB_KEY_ID_BYTES, key_id);
    out_printf(f, "%s\nsigner %s\nagency %s\nkey %s\n", MANIFEST_FORMAT, signer->name, signer->agency,
               key_id);
    for (size_t i = 0; i < n; i++)
        out_printf(f, "%s  %s\n", hashes[i], names[i]);
    return finish(&out, NULL);
}

static void sha256_hex(const char *data, size_t len, char hex[65])
{
    uint8_t h[RB_HASH_BYTES];
    rbcrypto_sha256((const uint8_t *)data, len, h);
    keyfile_hex(h, sizeof h, hex);
}

static char *manifest_json(const identity_t *signer, file_t *files, size_t n, size_t *len)
{
    const card_t *card = identity_card(signer);
    const char *names[8];
    char hashes[8][65];
    json_t *listed = json_object();
    for (size_t i = 0; i < n; i++) { /* files are in name order */
        names[i] = files[i].name;
        sha256_hex(files[i].data, files[i].len, hashes[i]);
        json_object_set_new(listed, files[i].name, json_string(hashes[i]));
    }
    char *text = manifest_text(card, names, (const char(*)[65])hashes, n);
    uint8_t sig[RB_SIG_BYTES];
    char key_id[2 * RB_KEY_ID_BYTES + 1], sig_hex[2 * RB_SIG_BYTES + 1];
    if (text == NULL || rbcrypto_sign(MANIFEST_DOMAIN, (const uint8_t *)text, strlen(text),
                                      identity_sign_sk(signer), sig) != RB_OK) {
        free(text);
        json_decref(listed);
        return NULL;
    }
    free(text);
    keyfile_hex(card->key_id, RB_KEY_ID_BYTES, key_id);
    keyfile_hex(sig, sizeof sig, sig_hex);
    json_t *m = json_object();
    json_object_set_new(m, "format", json_string(MANIFEST_FORMAT));
    json_object_set_new(m, "signer", json_string(card->name));
    json_object_set_new(m, "agency", json_string(card->agency));
    json_object_set_new(m, "key_id", json_string(key_id));
    json_object_set_new(m, "files", listed);
    json_object_set_new(m, "signature", json_string(sig_hex));
    return dump(m, JSON_INDENT(2) | JSON_SORT_KEYS, len);
}

/* Public files: 0644 whatever the umask, readable by all and writable by the owner only. */
static rb_err write_file(const char *dir, const char *name, const char *data, size_t len, char *err,
                         size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (keyfile_write(path, data, len, 0644, true) != RB_OK) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RB_ERR_IO;
    }
    return RB_OK;
}

static bool date_ok(const char *d)
{
    return d != NULL && strlen(d) == 10 && strspn(d, "0123456789") == 4 && d[4] == '-' &&
           strspn(d + 5, "0123456789") == 2 && d[7] == '-' && strspn(d + 8, "0123456789") == 2;
}

rb_err publish_write(astore_t *store, const identity_t *signer, const publish_options_t *o, const char *dir,
                     publish_report_t *report, char *err, size_t errlen)
{
    pbjson_init();
    memset(report, 0, sizeof *report);
    if (!date_ok(o->as_of)) {
        snprintf(err, errlen, "the data-as-of date must be YYYY-MM-DD");
        return RB_ERR_USAGE;
    }
    if (o->threshold < 2) {
        snprintf(err, errlen, "the suppression threshold must be at least 2");
        return RB_ERR_USAGE;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return RB_ERR_IO;
    }
    records_t rs = {0};
    rb_err rc = astore_each_sent(store, take_sent, &rs);
    if (rc == RB_OK)
        rc = close_case(&rs);
    if (rc != RB_OK) {
        snprintf(err, errlen, "reading the store: %s",
                 rc == RB_ERR_MALFORMED ? "a referral's facts are not JSON" : rb_strerror(rc));
        records_free(&rs);
        return rc;
    }
    report->referrals = (int)rs.n;
    report->unrecorded = rs.unrecorded;
    size_t n_rows = 0;
    row_t *rows = build_rows(&rs, o, report) == RB_OK ? sorted_rows(&rs, &n_rows) : NULL;
    /* In name order: the manifest lists them so. */
    file_t files[5] = {{.name = "incidents.csv"},
                       {.name = "incidents.json"},
                       {.name = "index.html"},
                       {.name = "summary.json"},
                       {.name = "MANIFEST.json"}};
    if (rows != NULL) {
        files[0].data = rows_csv(rows, n_rows, &files[0].len);
        files[1].data = rows_json(rows, n_rows, o, &files[1].len);
        files[2].data = page_html(rows, n_rows, o, report, &files[2].len);
        files[3].data = dump(summary_json(&rs, o, report), JSON_INDENT(2) | JSON_SORT_KEYS, &files[3].len);
        files[4].data = manifest_json(signer, files, 4, &files[4].len);
    }
    rc = RB_OK;
    for (size_t i = 0; i < 5 && rc == RB_OK; i++)
        if (files[i].data == NULL) {
            snprintf(err, errlen, "out of memory (or signing failed) making %s", files[i].name);
            rc = RB_ERR_NOMEM;
        }
    /* The manifest last: it is written only once every file it names is. */
    for (size_t i = 0; i < 5 && rc == RB_OK; i++)
        rc = write_file(dir, files[i].name, files[i].data, files[i].len, err, errlen);
    for (size_t i = 0; i < 5; i++)
        free(files[i].data);
    rows_free(rows, n_rows);
    records_free(&rs);
    return rc;
}

/* --- verifying --------------------------------------------------------------------------------------------- */

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len + 65536 > cap) {
            char *bigger = realloc(buf, cap = *len + 65536 * 4);
            if (bigger == NULL)
                break;
            buf = bigger;
        }
        size_t got = fread(buf + *len, 1, cap - *len, f);
        *len += got;
        if (got == 0)
            break;
    }
    bool ok = !ferror(f) && buf != NULL;
    fclose(f);
    if (!ok) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Lowercase only, as written: any change to the manifest's bytes must fail. */
static bool canonical_hex(const uint8_t sig[RB_SIG_BYTES], const char *hex)
{
    char again[2 * RB_SIG_BYTES + 1];
    keyfile_hex(sig, RB_SIG_BYTES, again);
    return strcmp(again, hex) == 0;
}

rb_err publish_verify(const char *dir, const card_t *card, char *err, size_t errlen)
{
    pbjson_init();
    char path[4096];
    snprintf(path, sizeof path, "%s/MANIFEST.json", dir);
    json_error_t jerr;
    json_t *m = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (m == NULL) {
        snprintf(err, errlen, "%s: %s", path, jerr.text);
        return RB_ERR_MALFORMED;
    }
    const char *format = json_string_value(json_object_get(m, "format"));
    const char *signer = json_string_value(json_object_get(m, "signer"));
    const char *agency = json_string_value(json_object_get(m, "agency"));
    const char *key_id = json_string_value(json_object_get(m, "key_id"));
    char card_key_id[2 * RB_KEY_ID_BYTES + 1];
    keyfile_hex(card->key_id, RB_KEY_ID_BYTES, card_key_id);
    const char *sig_hex = json_string_value(json_object_get(m, "signature"));
    json_t *listed = json_object_get(m, "files");
    uint8_t sig[RB_SIG_BYTES];
    rb_err rc = RB_OK;
    if (format == NULL || strcmp(format, MANIFEST_FORMAT) != 0 || signer == NULL || agency == NULL ||
        key_id == NULL || sig_hex == NULL || !json_is_object(listed) || json_object_size(listed) > 8 ||
        !keyfile_unhex(sig_hex, sig, sizeof sig) || !canonical_hex(sig, sig_hex)) {
        snprintf(err, errlen, "%s: not a %s manifest", path, MANIFEST_FORMAT);
        rc = RB_ERR_MALFORMED;
    } else if (strcmp(signer, card->name) != 0 || strcmp(agency, card->agency) != 0 ||
               strcmp(key_id, card_key_id) != 0) {
        snprintf(err, errlen, "%s: signed by %s of %s with key %s, not by the card given (%s of %s, key %s)",
                 path, signer, agency, key_id, card->name, card->agency, card_key_id);
        rc = RB_ERR_BAD_SIGNATURE;
    }
    /* Every file in the directory is listed... */
    DIR *d = rc == RB_OK ? opendir(dir) : NULL;
    if (rc == RB_OK && d == NULL) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        rc = RB_ERR_IO;
    }
    for (struct dirent *e; d != NULL && rc == RB_OK && (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.' && strcmp(e->d_name, "MANIFEST.json") != 0 &&
            json_object_get(listed, e->d_name) == NULL) {
            snprintf(err, errlen, "%s/%s: not in the manifest", dir, e->d_name);
            rc = RB_ERR_HASH_MISMATCH;
        }
    if (d != NULL)
        closedir(d);
    /* ...and each listed file has its hash. The iteration goes in the file's order; the signed text wants
     * name order, which is how publish_write lists them (jansson sorts keys), and is checked below. */
    const char *names[8];
    char hashes[8][65];
    size_t n = 0;
    for (void *it = json_object_iter(listed); rc == RB_OK && it != NULL;
         it = json_object_iter_next(listed, it)) {
        const char *key = json_object_iter_key(it);
        json_t *value = json_object_iter_value(it);
        size_t len;
        snprintf(path, sizeof path, "%s/%s", dir, key);
        char *data = strchr(key, '/') == NULL ? read_all(path, &len) : NULL;
        if (data == NULL) {
            snprintf(err, errlen, "%s: listed in the manifest but missing or unreadable", path);
            rc = RB_ERR_HASH_MISMATCH;
            break;
        }
        names[n] = key;
        sha256_hex(data, len, hashes[n]);
        free(data);
        if (!json_is_string(value) || strcmp(hashes[n], json_string_value(value)) != 0) {
            snprintf(err, errlen,
                     "%s: its SHA-256 is not the one the manifest gives (changed since published)", path);
            rc = RB_ERR_HASH_MISMATCH;
        }
        n++;
    }
    for (size_t i = 1; rc == RB_OK && i < n; i++)
        if (strcmp(names[i - 1], names[i]) >= 0) {
            snprintf(err, errlen, "%s/MANIFEST.json: files not in name order", dir);
            rc = RB_ERR_MALFORMED;
        }
    char *text = rc == RB_OK ? manifest_text(card, names, (const char(*)[65])hashes, n) : NULL;
    if (rc == RB_OK && text == NULL)
        rc = RB_ERR_NOMEM;
    if (rc == RB_OK &&
        rbcrypto_verify(MANIFEST_DOMAIN, (const uint8_t *)text, strlen(text), sig, card->sign_pk) != RB_OK) {
        snprintf(err, errlen, "%s/MANIFEST.json: the signature does not verify with %s's card", dir,
                 card->name);
        rc = RB_ERR_BAD_SIGNATURE;
    }
    free(text);
    json_decref(m);
    return rc;
}
