/* referral_rules_test.c -- the validation rules against every sample, and rule by rule.
 *
 * Every valid sample passes as its own kind (taken from its file name) and fails as either other kind.
 * Every invalid sample is refused for its one stated reason at exactly the path that
 * adapters/samples/README.md gives: by the JSON converter (unknown field, wrong type, unknown enum name)
 * or by the rules, with exactly one problem. The table below holds the paths, and the README must agree
 * with it row by row, so a refusal that moves to another path fails here. The rest changes one thing in
 * a valid sample, loaded afresh for each case, and expects exactly one problem at one path. */
#include <dirent.h>
#include <math.h>

#include "testutil.h"

#include "pbjson.h"
#include "referral_rules.h"

#define NOW_MS  1767225600000LL /* 2026-01-01T00:00:00Z: after every sample */
#define SAMPLES "adapters/samples"

/* --- helpers ------------------------------------------------------------------------------------------ */

static Rb__Kind kind_of(const char *file)
{
    if (strstr(file, "supplement") != NULL)
        return RB__KIND__KIND_SUPPLEMENT;
    if (strstr(file, "withdrawal") != NULL)
        return RB__KIND__KIND_WITHDRAWAL;
    return RB__KIND__KIND_REFERRAL;
}

static bool is_json(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".json") == 0;
}

/* Parses a sample file; NULL with the converter's error in err when it does not convert. Caller frees. */
static Rb__Referral *load(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *json = test_read_file(path, &len);
    if (json == NULL)
        fail_msg("cannot read %s", path);
    ProtobufCMessage *m = NULL;
    err[0] = '\0';
    rb_err rc = pbjson_parse(&rb__referral__descriptor, json, len, NULL, &m, err, errlen);
    free(json);
    return rc == RB_OK ? (Rb__Referral *)m : NULL;
}

/* A valid sample, to change in C for one rule. Caller frees with rb__referral__free_unpacked. */
static Rb__Referral *sample(const char *name)
{
    char path[512], err[256];
    Rb__Referral *r = load(test_path(path, sizeof path, SAMPLES "/valid/%s", name), err, sizeof err);
    if (r == NULL)
        fail_msg("%s: %s", path, err);
    return r;
}

/* Replaces a string field of a loaded message; free_unpacked frees the copy later. */
static void set_text(char **field, const char *value)
{
    if (*field != protobuf_c_empty_string)
        free(*field);
    *field = strdup(value);
    assert_non_null(*field);
}

/* A string of n copies of ch, for the caps. */
static void set_repeated(char **field, char ch, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, ch, n);
    s[n] = '\0';
    if (*field != protobuf_c_empty_string)
        free(*field);
    *field = s;
}

static void print_problems(const char *what, const referral_problems_t *p)
{
    for (size_t i = 0; i < p->count; i++)
        print_error("%s: %s: %s\n", what, p->items[i].path, p->items[i].message);
}

static void expect_ok(const Rb__Referral *r, Rb__Kind kind)
{
    referral_problems_t problems;
    rb_err rc = referral_validate(r, kind, NOW_MS, &problems);
    if (rc != RB_OK)
        print_problems("unexpected", &problems);
    assert_ok(rc);
    assert_int_equal(problems.count, 0);
}

/* Exactly one problem, at path. */
static void expect_one(const Rb__Referral *r, Rb__Kind kind, const char *path)
{
    referral_problems_t problems;
    assert_rb(referral_validate(r, kind, NOW_MS, &problems), RB_ERR_INVALID);
    if (problems.count != 1 || strcmp(problems.items[0].path, path) != 0) {
        print_problems("got", &problems);
        fail_msg("expected exactly one problem, at %s", path);
    }
}

static const Rb__Kind KINDS[] = {RB__KIND__KIND_REFERRAL, RB__KIND__KIND_SUPPLEMENT,
                                 RB__KIND__KIND_WITHDRAWAL};

/* --- the samples -------------------------------------------------------------------------------------- */

static void valid_samples_pass_as_their_kind_only(void **state)
{
    (void)state;
    DIR *d = opendir(SAMPLES "/valid");
    assert_non_null(d);
    size_t readme_len;
    char *readme = test_read_file(SAMPLES "/README.md", &readme_len);
    assert_non_null(readme);
    struct dirent *ent;
    int seen = 0, kinds[4] = {0};
    while ((ent = readdir(d)) != NULL) {
        if (!is_json(ent->d_name))
            continue;
        char path[512], row[300], err[256];
        Rb__Referral *r =
            load(test_path(path, sizeof path, SAMPLES "/valid/%s", ent->d_name), err, sizeof err);
        if (r == NULL)
            fail_msg("%s: %s", path, err);
        Rb__Kind kind = kind_of(ent->d_name);
        for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
            referral_problems_t problems;
            rb_err rc = referral_validate(r, KINDS[k], NOW_MS, &problems);
            if (KINDS[k] == kind && rc != RB_OK) {
                print_problems(path, &problems);
                fail_msg("%s refused", path);
            }
            if (KINDS[k] != kind && rc != RB_ERR_INVALID)
                fail_msg("%s passed as kind %d too", path, (int)KINDS[k]);
        }
        if (strstr(readme, test_path(row, sizeof row, "| `valid/%s` |", ent->d_name)) == NULL)
            fail_msg("%s is not in the README", path);
        rb__referral__free_unpacked(r, NULL);
        kinds[kind]++;
        seen++;
    }
    closedir(d);
    free(readme);
    assert_true(seen >= 8);
    assert_true(kinds[RB__KIND__KIND_REFERRAL] >= 6);
    assert_true(kinds[RB__KIND__KIND_SUPPLEMENT] >= 1);
    assert_true(kinds[RB__KIND__KIND_WITHDRAWAL] >= 1);
}

/* Each invalid sample, the path its one fault is reported at, and whether the converter (JSON) or the
 * rules find it. README.md lists the same rows; the test below checks that it does. */
static const struct {
    const char *file;
    const char *path;
    bool by_converter;
} invalid[] = {
    {"unknown-field.json", "$.federalAgents[1].badgeNumbr", true},
    {"wrong-type.json", "$.revision", true},
    {"unknown-enum.json", "$.federalAgents[0].credentialCheck.result", true},
    {"missing-supervisor-credential-result.json", "$.federalAgents[0].credentialCheck.result", false},
    {"bad-rd-number.json", "$.rdNumber", false},
    {"bad-time.json", "$.incident.occurredAt", false},
    {"bodycam-without-hash.json", "$.evidence[0].sha256", false},
    {"injury-without-medical.json", "$.medical", false},
    {"no-agent-no-reason.json", "$.federalAgents", false},
    {"refused-not-on-bodycam.json", "$.federalAgents[0].credentialCheck.recordedOn", false},
    {"missing-narrative.json", "$.narrative", false},
    {"missing-approval.json", "$.approval", false},
    {"supplement-without-references.json", "$.references", false},
    {"withdrawal-without-reason.json", "$.withdrawalReason", false},
};
#define N_INVALID (sizeof invalid / sizeof invalid[0])

static void invalid_samples_refused_at_their_path(void **state)
{
    (void)state;
    size_t files = 0;
    DIR *d = opendir(SAMPLES "/invalid");
    assert_non_null(d);
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (!is_json(ent->d_name))
            continue;
        bool listed = false;
        for (size_t i = 0; i < N_INVALID; i++)
            listed |= strcmp(invalid[i].file, ent->d_name) == 0;
        if (!listed)
            fail_msg("%s/invalid/%s is not in the table", SAMPLES, ent->d_name);
        files++;
    }
    closedir(d);
    assert_int_equal(files, N_INVALID);

    for (size_t i = 0; i < N_INVALID; i++) {
        char path[512], err[256];
        test_path(path, sizeof path, SAMPLES "/invalid/%s", invalid[i].file);
        Rb__Referral *r = load(path, err, sizeof err);
        if (invalid[i].by_converter) {
            if (r != NULL)
                fail_msg("%s: the converter accepted it", path);
            size_t n = strlen(invalid[i].path);
            if (strncmp(err, invalid[i].path, n) != 0 || err[n] != ':')
                fail_msg("%s: refused as \"%s\", expected at %s", path, err, invalid[i].path);
            continue;
        }
        if (r == NULL)
            fail_msg("%s: %s", path, err);
        referral_problems_t problems;
        assert_rb(referral_validate(r, kind_of(invalid[i].file), NOW_MS, &problems), RB_ERR_INVALID);
        if (problems.count != 1 || strcmp(problems.items[0].path, invalid[i].path) != 0) {
            print_problems(path, &problems);
            fail_msg("%s: expected exactly one problem, at %s", path, invalid[i].path);
        }
        /* Refused whatever kind a tool takes it for: some infer the kind from the content. */
        for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++)
            assert_rb(referral_validate(r, KINDS[k], NOW_MS, &problems), RB_ERR_INVALID);
        rb__referral__free_unpacked(r, NULL);
    }
}

static void readme_gives_the_same_paths(void **state)
{
    (void)state;
    size_t len;
    char *readme = test_read_file(SAMPLES "/README.md", &len);
    assert_non_null(readme);
    for (size_t i = 0; i < N_INVALID; i++) {
        char row[300];
        test_path(row, sizeof row, "| `invalid/%s` | `%s` |", invalid[i].file, invalid[i].path);
        if (strstr(readme, row) == NULL)
            fail_msg("README.md has no row starting \"%s\"", row);
    }
    free(readme);
}

/* --- times -------------------------------------------------------------------------------------------- */

static void time_parser(void **state)
{
    (void)state;
    int64_t ms;
    assert_true(referral_parse_time("1970-01-01T00:00:00Z", &ms));
    assert_int_equal(ms, 0);
    assert_true(referral_parse_time("2025-10-04T21:40:00-05:00", &ms));
    assert_int_equal(ms, 1759632000000LL);
    assert_true(referral_parse_time("2025-10-05T02:40:00Z", &ms)); /* the same instant */
    assert_int_equal(ms, 1759632000000LL);
    assert_true(referral_parse_time("2025-10-05T02:40:00.250+00:00", &ms));
    assert_int_equal(ms, 1759632000250LL);
    assert_true(referral_parse_time("2025-10-05T02:40:00.123456789Z", &ms)); /* kept to the millisecond */
    assert_int_equal(ms, 1759632000123LL);
    assert_true(referral_parse_time("2025-10-05T08:10:00+05:30", &ms));
    assert_int_equal(ms, 1759632000000LL);
    assert_true(referral_parse_time("2024-02-29T12:00:00Z", &ms)); /* leap year */
    assert_true(referral_parse_time("2000-02-29T12:00:00Z", &ms)); /* leap century */
    assert_true(referral_parse_time("1969-12-31T23:59:59Z", &ms));
    assert_int_equal(ms, -1000);
    assert_true(referral_parse_time("2025-12-31T23:59:59.999-06:00", &ms)); /* into the next UTC year */
    assert_int_equal(ms, 1767247199999LL);

    static const char *const bad[] = {
        "",
        "2025-10-04",
        "2025-10-04T21:40:00",       /* no offset */
        "2025-10-04 21:40:00-05:00", /* space */
        "2025-10-04t21:40:00z",      /* lower case */
        "2025-02-29T12:00:00Z",      /* not a leap year */
        "1900-02-29T12:00:00Z",      /* nor is 1900 */
        "2025-02-30T12:00:00-06:00",
        "2025-09-31T12:00:00-05:00",
        "2025-13-01T00:00:00Z",
        "2025-00-10T00:00:00Z",
        "2025-10-00T00:00:00Z",
        "2025-10-04T24:00:00Z",
        "2025-10-04T21:60:00Z",
        "2025-10-04T21:40:60Z",
        "2025-10-04T21:40:00-0500",
        "2025-10-04T21:40:00-05",
        "2025-10-04T21:40:00-0", /* short texts must not be read past their end */
        "2025-10-04T21:40:00+",
        "2025-10-04T21:40:00.",
        "2025-10-04T21:40:00+24:00",
        "2025-10-04T21:40:00-05:60",
        "2025-10-04T21:40:00.Z",
        "2025-10-04T21:40:00.1234567890Z", /* more than nanoseconds */
        "2025-10-04T21:40:00Zjunk",
        "2025-10-04T21:40:00-05:00 ",
        "+2025-10-04T21:40:00Z",
        "25-10-04T21:40:00Z",
        "2025-1O-04T21:40:00Z", /* letter O */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms = 42;
        if (referral_parse_time(bad[i], &ms))
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(ms, 42); /* untouched on failure */
    }
    assert_false(referral_parse_time(NULL, &ms));
}

static void times_in_order(void **state)
{
    (void)state;
    Rb__Referral *r = sample("01-fatal-shooting.json");
    set_text(&r->approval->approved_at, "2025-10-04T21:00:00-05:00"); /* before the shooting */
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.approval.approvedAt");
    set_text(&r->approval->approved_at, "2026-01-02T00:00:00Z"); /* after NOW_MS */
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.approval.approvedAt");
    set_text(&r->approval->approved_at, "2025-12-31T18:09:00-06:00"); /* within the ten minutes' slack */
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    set_text(&r->approval->approved_at, "2025-10-05T10:20:00-05:00");

    set_text(&r->incident->ended_at, "2025-10-04T21:39:59-05:00");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.endedAt");
    set_text(&r->incident->ended_at, "");
    expect_ok(r, RB__KIND__KIND_REFERRAL); /* endedAt is optional */

    set_text(&r->evidence[1]->body_camera->recording_end, "2025-10-04T21:41:49-05:00");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].bodyCamera.recordingEnd");
    set_text(&r->evidence[1]->body_camera->recording_end, "2025-10-04T22:40:00-05:00");

    set_text(&r->medical->ems_arrived_at, "2025-10-04T21:41:00-05:00");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical.emsArrivedAt");
    set_text(&r->medical->ems_arrived_at, "2025-10-04T21:51:00-05:00");

    set_text(&r->federal_agents[0]->credential_check->checked_at, "2025-10-04T21:47");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].credentialCheck.checkedAt");
    set_text(&r->federal_agents[0]->credential_check->checked_at, "2025-10-04T21:47:00-05:00");

    /* Seen from before it happened, the incident is in the future (and so is its approval). */
    int64_t occurred;
    assert_true(referral_parse_time(r->incident->occurred_at, &occurred));
    referral_problems_t problems;
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, occurred - 3600 * 1000, &problems),
              RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.incident.occurredAt");
    assert_string_equal(problems.items[1].path, "$.approval.approvedAt");
    rb__referral__free_unpacked(r, NULL);
}

/* --- identity, kinds and references ------------------------------------------------------------------- */

static void kinds_and_references(void **state)
{
    (void)state;
    Rb__Referral *r = sample("01-fatal-shooting.json");
    referral_problems_t problems;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    /* An original as a supplement: revision 1 and no reference. */
    assert_rb(referral_validate(r, RB__KIND__KIND_SUPPLEMENT, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.revision");
    assert_string_equal(problems.items[1].path, "$.references");
    expect_one(r, (Rb__Kind)RB__KIND__KIND_ACK, "$");

    Rb__ReferralRef ref = RB__REFERRAL_REF__INIT;
    uint8_t id[16] = {0};
    ref.rd_number = r->rd_number;
    ref.revision = 2;
    r->references = &ref;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.references"); /* an original references nothing */
    r->revision = 2;
    expect_one(r, RB__KIND__KIND_SUPPLEMENT, "$.references.revision"); /* must be lower */
    ref.revision = 1;
    expect_ok(r, RB__KIND__KIND_SUPPLEMENT);
    ref.message_id.data = id;
    ref.message_id.len = 15;
    expect_one(r, RB__KIND__KIND_SUPPLEMENT, "$.references.messageId");
    ref.message_id.len = 16;
    expect_ok(r, RB__KIND__KIND_SUPPLEMENT);
    ref.rd_number = "JH512335"; /* another case */
    expect_one(r, RB__KIND__KIND_SUPPLEMENT, "$.references.rdNumber");
    ref.rd_number = "";
    expect_one(r, RB__KIND__KIND_SUPPLEMENT, "$.references.rdNumber");
    ref.rd_number = r->rd_number;
    expect_one(r, RB__KIND__KIND_WITHDRAWAL, "$.withdrawalReason");
    set_text(&r->withdrawal_reason, "Entered in error.");
    expect_one(r, RB__KIND__KIND_SUPPLEMENT, "$.withdrawalReason"); /* only a withdrawal has one */
    expect_ok(r, RB__KIND__KIND_WITHDRAWAL);
    r->references = NULL;
    r->revision = 1;
    set_text(&r->withdrawal_reason, "");

    r->schema_version = 2;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.schemaVersion");
    r->schema_version = 1;
    rb__referral__free_unpacked(r, NULL);
}

static void identifier_formats(void **state)
{
    (void)state;
    Rb__Referral *r = sample("02-night-raid-south-shore.json");
    static const char *const good_ori[] = {"ILCPD0000", "IL0160000", "ILCCSAO00"};
    static const char *const bad_ori[] = {"",          "ILCPD000",  "ILCPD00000",
                                          "ilCPD0000", "I1CPD0000", "ILCPD-000"};
    static const char *const bad_rd[] = {"",         "JH51233",  "JH5123345", "jh512334",
                                         "J1512334", "JH51233A", "JH-51233"};
    for (size_t i = 0; i < sizeof good_ori / sizeof good_ori[0]; i++) {
        set_text(&r->agency_ori, good_ori[i]);
        expect_ok(r, RB__KIND__KIND_REFERRAL);
    }
    for (size_t i = 0; i < sizeof bad_ori / sizeof bad_ori[0]; i++) {
        set_text(&r->agency_ori, bad_ori[i]);
        expect_one(r, RB__KIND__KIND_REFERRAL, "$.agencyOri");
    }
    set_text(&r->agency_ori, "ILCPD0000");
    for (size_t i = 0; i < sizeof bad_rd / sizeof bad_rd[0]; i++) {
        set_text(&r->rd_number, bad_rd[i]);
        expect_one(r, RB__KIND__KIND_REFERRAL, "$.rdNumber");
    }
    set_text(&r->rd_number, "JH520871");

    set_text(&r->incident->beat, "421");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.beat");
    set_text(&r->incident->beat, "");
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    set_text(&r->incident->district, "0004");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.district");
    set_text(&r->incident->district, "4");
    expect_ok(r, RB__KIND__KIND_REFERRAL);

    r->incident->location->latitude = 91;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.location.latitude");
    r->incident->location->latitude = 41.7586;
    r->incident->location->longitude = -180.5;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.location.longitude");
    r->incident->location->longitude = NAN;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.location.longitude");
    r->incident->location->longitude = -87.5584;

    set_text(&r->civilians[0]->date_of_birth, "1958-02-30");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[0].dateOfBirth");
    set_text(&r->civilians[0]->date_of_birth, "06/02/1958");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[0].dateOfBirth");
    set_text(&r->civilians[0]->date_of_birth, "1958-06-02T00:00:00Z");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[0].dateOfBirth");
    set_text(&r->civilians[0]->date_of_birth, "1958-06-02");

    static const char *const good_ilcs[] = {"720 ILCS 5/9-1", "720 ILCS 5/12-3.05(e)(1)",
                                            "625 ILCS 5/11-1402", "720 ILCS 5/24-1.1", "720 ILCS 5/31-4(a)"};
    static const char *const bad_ilcs[] = {"",
                                           "720 ILCS",
                                           "ILCS 5/9-1",
                                           "720 ILCS 5/",
                                           "720 ILCS /9-1",
                                           "720 ILCS 5/9-1(",
                                           "720 ILCS 5/9-1)(a",
                                           "720 ilcs 5/9-1",
                                           "720  ILCS 5/9-1",
                                           "720 ILCS 5/9 1",
                                           "72000 ILCS 5/9-1",
                                           "720 ILCS 5/a9",
                                           "Murder"};
    for (size_t i = 0; i < sizeof good_ilcs / sizeof good_ilcs[0]; i++) {
        set_text(&r->suggested_charges[0]->ilcs_citation, good_ilcs[i]);
        expect_ok(r, RB__KIND__KIND_REFERRAL);
    }
    for (size_t i = 0; i < sizeof bad_ilcs / sizeof bad_ilcs[0]; i++) {
        set_text(&r->suggested_charges[0]->ilcs_citation, bad_ilcs[i]);
        expect_one(r, RB__KIND__KIND_REFERRAL, "$.suggestedCharges[0].ilcsCitation");
    }
    rb__referral__free_unpacked(r, NULL);
}

/* --- agents and their credentials --------------------------------------------------------------------- */

static void credential_checks(void **state)
{
    (void)state;
    Rb__Referral *r = sample("01-fatal-shooting.json");
    Rb__FederalAgent *sup = r->federal_agents[0];

    /* VERIFIED means the officer recorded the name and the badge number. */
    set_text(&sup->badge_number, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].badgeNumber");
    set_text(&sup->badge_number, "ERO-40417");
    set_text(&sup->name, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].name");
    set_text(&sup->name, "Marcus Whitfield");

    /* The recording must be a body-worn camera item of this referral. */
    set_text(&sup->credential_check->recorded_on, "E9");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].credentialCheck.recordedOn");
    set_text(&sup->credential_check->recorded_on, "E4"); /* a doorbell camera */
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].credentialCheck.recordedOn");
    set_text(&sup->credential_check->recorded_on, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].credentialCheck.recordedOn");
    /* NOT_POSSIBLE and NOT_ATTEMPTED may have no recording; when they name one, it must be a body camera. */
    sup->credential_check->result = RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_NOT_POSSIBLE;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    set_text(&sup->credential_check->recorded_on, "E3");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].credentialCheck.recordedOn");
    set_text(&sup->credential_check->recorded_on, "E1");
    sup->credential_check->result = RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_UNSPECIFIED;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].credentialCheck.result");
    sup->credential_check->result = RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_VERIFIED;

    /* The shooter's refusal is on E2; an agent who is not the supervisor needs no check at all. */
    r->federal_agents[1]->credential_check->result = RB__CREDENTIAL_RESULT__CREDENTIAL_RESULT_UNSPECIFIED;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    Rb__CredentialCheck *check = r->federal_agents[1]->credential_check;
    r->federal_agents[1]->credential_check = NULL;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    r->federal_agents[1]->is_supervisor = true; /* but a supervisor does */
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[1].credentialCheck");
    r->federal_agents[1]->is_supervisor = false;
    r->federal_agents[1]->credential_check = check;
    rb__referral__free_unpacked(r, NULL);
}

static void agents_and_their_references(void **state)
{
    (void)state;
    Rb__Referral *r = sample("02-night-raid-south-shore.json");
    Rb__FederalAgent *a3 = r->federal_agents[2];

    a3->agency = RB__FEDERAL_AGENCY__FEDERAL_AGENCY_OTHER_FEDERAL;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[2].agencyOther");
    set_text(&a3->agency_other, "Federal Protective Service");
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    a3->agency = RB__FEDERAL_AGENCY__FEDERAL_AGENCY_CBP;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[2].agencyOther");
    set_text(&a3->agency_other, "");
    a3->agency = RB__FEDERAL_AGENCY__FEDERAL_AGENCY_UNSPECIFIED;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[2].agency");
    a3->agency = RB__FEDERAL_AGENCY__FEDERAL_AGENCY_UNKNOWN;

    set_text(&a3->agent_ref, "A2");
    set_text(&r->suggested_charges[0]->agent_refs[0], "A2"); /* so that no charge names a missing agent */
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[2].agentRef"); /* the later one is at fault */
    set_text(&r->suggested_charges[0]->agent_refs[0], "A3");
    set_text(&a3->agent_ref, "");
    /* Empty, and so the charge against A3 names nobody. */
    referral_problems_t problems;
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.federalAgents[2].agentRef");
    assert_string_equal(problems.items[1].path, "$.suggestedCharges[0].agentRefs[0]");
    set_text(&a3->agent_ref, "A3");

    set_text(&r->suggested_charges[1]->agent_refs[1], "A7");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.suggestedCharges[1].agentRefs[1]");
    set_text(&r->suggested_charges[1]->agent_refs[1], "A2");
    size_t n = r->suggested_charges[2]->n_agent_refs;
    r->suggested_charges[2]->n_agent_refs = 0;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.suggestedCharges[2].agentRefs");
    r->suggested_charges[2]->n_agent_refs = n;

    set_text(&r->civilians[3]->person_ref, "P1");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[3].personRef");
    set_text(&r->civilians[3]->person_ref, "P4");
    r->civilians[2]->role = RB__CIVILIAN_ROLE__CIVILIAN_ROLE_UNSPECIFIED;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[2].role");
    r->civilians[2]->role = RB__CIVILIAN_ROLE__CIVILIAN_ROLE_DETAINED;

    /* No agent could be identified: allowed with a reason, and then no charge can name one. */
    size_t agents = r->n_federal_agents, charges = r->n_suggested_charges;
    r->n_federal_agents = 0;
    r->n_suggested_charges = 0;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents");
    set_text(&r->no_agent_identified_reason,
             "The agents had left in unmarked vehicles before officers arrived.");
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    r->n_federal_agents = agents;
    expect_ok(r, RB__KIND__KIND_REFERRAL); /* both is allowed: agents identified, others not */
    r->n_suggested_charges = charges;
    rb__referral__free_unpacked(r, NULL);
}

/* --- EMS, aid and evidence ---------------------------------------------------------------------------- */

static void medical_rules(void **state)
{
    (void)state;
    Rb__Referral *r = sample("05-tear-gas-crowd.json");
    Rb__Medical *med = r->medical;

    med->ems_called = false;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical.emsCalled"); /* yet a time and unit are recorded */
    med->ems_called = true;
    set_text(&med->ems_called_at, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical.emsCalledAt");
    set_text(&med->ems_called_at, "2025-10-24T15:12:00-05:00");

    set_text(&med->aid[1]->person_ref, "P3");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical.aid[1].personRef");
    set_text(&med->aid[1]->person_ref, "P2");
    set_text(&med->aid[2]->given_by, "Ambulance 57");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical.aid[2].givenBy");
    set_text(&med->aid[2]->given_by, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical.aid[2].givenBy");
    set_text(&med->aid[2]->given_by, "EMS");

    r->civilians[1]->injuries[0]->severity = RB__INJURY_SEVERITY__INJURY_SEVERITY_UNSPECIFIED;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[1].injuries[0].severity");
    r->civilians[1]->injuries[0]->severity = RB__INJURY_SEVERITY__INJURY_SEVERITY_SERIOUS;

    /* Without injuries a medical section is optional; with one it is required. */
    r->medical = NULL;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.medical");
    size_t n0 = r->civilians[0]->n_injuries, n1 = r->civilians[1]->n_injuries;
    r->civilians[0]->n_injuries = r->civilians[1]->n_injuries = 0;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    r->civilians[0]->n_injuries = n0;
    r->civilians[1]->n_injuries = n1;
    r->medical = med;
    rb__referral__free_unpacked(r, NULL);
}

static void evidence_rules(void **state)
{
    (void)state;
    Rb__Referral *r = sample("01-fatal-shooting.json");
    Rb__EvidenceItem *cam = r->evidence[1], *casings = r->evidence[2], *doorbell = r->evidence[3];

    set_text(&casings->evidence_id, "E1");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[2].evidenceId");
    set_text(&casings->evidence_id, "E3");

    cam->sha256.len = 31;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].sha256");
    cam->sha256.len = 32;
    set_text(&cam->preservation_hold_at, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].preservationHoldAt");
    set_text(&cam->preservation_hold_at, "2025-10-05T08:15:00-05:00");
    set_text(&cam->storage_locator, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].storageLocator");
    set_text(&cam->storage_locator, "evidence.com:CPD/JH512334/X6039B7-E2.mp4");
    set_text(&cam->body_camera->camera_id, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].bodyCamera.cameraId");
    set_text(&cam->body_camera->camera_id, "X6039B7");
    set_text(&cam->body_camera->officer_star, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].bodyCamera.officerStar");
    set_text(&cam->body_camera->officer_star, "9931");
    set_text(&cam->body_camera->recording_start, "");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].bodyCamera.recordingStart");
    set_text(&cam->body_camera->recording_start, "2025-10-04T21:41:50-05:00");

    /* The block travels with its kind: required for a body camera, refused on anything else. */
    Rb__BodyCamera *block = cam->body_camera;
    cam->body_camera = NULL;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[1].bodyCamera");
    doorbell->body_camera = block;
    cam->body_camera = NULL;
    referral_problems_t problems;
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.evidence[1].bodyCamera");
    assert_string_equal(problems.items[1].path, "$.evidence[3].bodyCamera");
    cam->body_camera = block;
    doorbell->body_camera = NULL;

    /* Other recordings need their hash too; a photograph or object may have one, of 32 bytes. */
    doorbell->sha256.len = 0;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[3].sha256");
    doorbell->sha256.len = 32;
    casings->sha256 = doorbell->sha256;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    casings->sha256.len = 20;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[2].sha256");
    casings->sha256.len = 0;
    casings->sha256.data = NULL;
    casings->kind = RB__EVIDENCE_KIND__EVIDENCE_KIND_DASH_CAMERA; /* a recording: hash and hold required */
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.evidence[2].sha256");
    assert_string_equal(problems.items[1].path, "$.evidence[2].preservationHoldAt");
    casings->kind = RB__EVIDENCE_KIND__EVIDENCE_KIND_PHYSICAL;
    rb__referral__free_unpacked(r, NULL);
}

/* --- what a withdrawal needs -------------------------------------------------------------------------- */

static void withdrawal_needs_little(void **state)
{
    (void)state;
    Rb__Referral w = RB__REFERRAL__INIT;
    Rb__ReferralRef ref = RB__REFERRAL_REF__INIT;
    Rb__SupervisorApproval approval = RB__SUPERVISOR_APPROVAL__INIT;
    w.schema_version = 1;
    w.agency_ori = "ILCPD0000";
    w.rd_number = "JH512334";
    w.revision = 3;
    ref.rd_number = "JH512334";
    ref.revision = 2;
    w.references = &ref;
    w.withdrawal_reason = "Duplicate of a referral sent under another RD number.";
    approval.name = "Theresa Kowalczyk";
    approval.star_number = "1207";
    approval.approved_at = "2025-10-06T09:00:00-05:00";
    w.approval = &approval;
    expect_ok(&w, RB__KIND__KIND_WITHDRAWAL);
    w.approval = NULL;
    expect_one(&w, RB__KIND__KIND_WITHDRAWAL, "$.approval"); /* somebody must have decided it */
    w.approval = &approval;
    /* The same as a supplement misses nearly everything. */
    referral_problems_t problems;
    assert_rb(referral_validate(&w, RB__KIND__KIND_SUPPLEMENT, NOW_MS, &problems), RB_ERR_INVALID);
    assert_true(problems.count >= 6);
    /* What a withdrawal does carry is checked all the same. */
    Rb__Incident incident = RB__INCIDENT__INIT;
    Rb__ViolationCategory categories[] = {RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_UNLAWFUL_DETENTION};
    incident.categories = categories;
    incident.n_categories = 1;
    incident.occurred_at = "2025-10-04T21:40:00";
    incident.address = "6400 S Kedzie Ave";
    w.incident = &incident;
    expect_one(&w, RB__KIND__KIND_WITHDRAWAL, "$.incident.occurredAt");
}

/* --- text, lists and values beyond the schema --------------------------------------------------------- */

static void text_caps_and_encoding(void **state)
{
    (void)state;
    Rb__Referral *r = sample("01-fatal-shooting.json");

    set_repeated(&r->reporting_officers[1]->name, 'x', REFERRAL_LINE_MAX);
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    set_repeated(&r->reporting_officers[1]->name, 'x', REFERRAL_LINE_MAX + 1);
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.reportingOfficers[1].name");
    set_text(&r->reporting_officers[1]->name, "Kathleen Brennan");

    set_repeated(&r->narrative, 'n', REFERRAL_NARRATIVE_MAX);
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    set_repeated(&r->narrative, 'n', REFERRAL_NARRATIVE_MAX + 1);
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.narrative");
    set_text(&r->narrative,
             "R/O arrived at 2141 hrs.\r\nThe driver was slumped over the wheel.\n\tEMS called.");
    expect_ok(r, RB__KIND__KIND_REFERRAL); /* free text may hold line breaks and tabs */

    set_repeated(&r->federal_agents[1]->description, 'd', REFERRAL_TEXT_MAX + 1);
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[1].description");
    set_repeated(&r->evidence[0]->storage_locator, 'l', REFERRAL_LOCATOR_MAX);
    set_text(&r->federal_agents[1]->description, "Male, about 30, black balaclava");
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    set_repeated(&r->evidence[0]->storage_locator, 'l', REFERRAL_LOCATOR_MAX + 1);
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.evidence[0].storageLocator");
    set_text(&r->evidence[0]->storage_locator, "evidence.com:CPD/JH512334/X6039A1-E1.mp4");

    /* Names and numbers are one line. */
    set_text(&r->civilians[1]->name, "Denise\nCarter");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[1].name");
    set_text(&r->civilians[1]->name, "Denise\x1b[2JCarter");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[1].name");
    set_text(&r->civilians[1]->name, "Denise Carter\x7f");
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.civilians[1].name");
    set_text(&r->civilians[1]->name, "Dénise Peña-Carter 张"); /* UTF-8 is welcome */
    expect_ok(r, RB__KIND__KIND_REFERRAL);

    /* Not UTF-8: a Latin-1 byte, an overlong slash, a surrogate, past U+10FFFF, a cut sequence. */
    static const char *const bad[] = {"Pe\xf1\x61", /* "Pe\xf1a" would read as one escape */
                                      "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "Pe\xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_text(&r->incident->summary, bad[i]);
        expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.summary");
    }
    set_text(&r->incident->summary, "Fatal shooting");

    /* Repeated strings are checked too (and here the reference then names no agent either). */
    set_text(&r->suggested_charges[0]->agent_refs[0], "A2\n");
    referral_problems_t problems;
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.suggestedCharges[0].agentRefs[0]");
    assert_string_equal(problems.items[1].path, "$.suggestedCharges[0].agentRefs[0]");
    set_text(&r->suggested_charges[0]->agent_refs[0], "A2");

    /* No message quotes the content. */
    set_text(&r->approval->name, "Theresa\nKowalczyk");
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_null(strstr(problems.items[0].message, "Theresa"));
    assert_string_equal(problems.items[0].path, "$.approval.name");
    rb__referral__free_unpacked(r, NULL);
}

static void long_lists_are_refused_before_the_rest(void **state)
{
    (void)state;
    Rb__Referral *r = sample("01-fatal-shooting.json");
    Rb__ViolationCategory *saved = r->incident->categories;
    size_t n = r->incident->n_categories;
    Rb__ViolationCategory many[REFERRAL_MAX_ITEMS + 1];
    for (size_t i = 0; i < REFERRAL_MAX_ITEMS + 1; i++)
        many[i] = RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_OTHER;
    r->incident->categories = many;
    r->incident->n_categories = REFERRAL_MAX_ITEMS;
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    r->incident->n_categories = REFERRAL_MAX_ITEMS + 1;
    set_text(&r->rd_number, "bad"); /* not reported: the rules stop at the long list */
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.categories");
    r->incident->categories = saved;
    r->incident->n_categories = n;
    rb__referral__free_unpacked(r, NULL);
}

static void values_beyond_the_schema(void **state)
{
    (void)state;
    /* A body packed by another implementation may carry enum numbers this schema does not define. */
    Rb__Referral *r = sample("01-fatal-shooting.json");
    r->federal_agents[0]->agency = (Rb__FederalAgency)99;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].agency");
    r->federal_agents[0]->agency = RB__FEDERAL_AGENCY__FEDERAL_AGENCY_ICE_ERO;
    r->incident->categories[1] = (Rb__ViolationCategory)-1;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.incident.categories[1]");
    r->incident->categories[1] = RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_USE_OF_FORCE;
    r->publication->outcome = (Rb__PublicationClass)7;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.publication.outcome");
    r->publication->outcome = RB__PUBLICATION_CLASS__PUBLICATION_CLASS_WITHHOLD; /* the default is fine */
    expect_ok(r, RB__KIND__KIND_REFERRAL);
    rb__referral__free_unpacked(r, NULL);
}

static void problem_list_is_bounded(void **state)
{
    (void)state;
    Rb__Referral r = RB__REFERRAL__INIT;
    Rb__Charge charge = RB__CHARGE__INIT, *charges[1] = {&charge};
    char *refs[40];
    for (size_t i = 0; i < 40; i++)
        refs[i] = "nobody";
    charge.ilcs_citation = "720 ILCS 5/9-1";
    charge.agent_refs = refs;
    charge.n_agent_refs = 40;
    r.suggested_charges = charges;
    r.n_suggested_charges = 1;
    referral_problems_t problems;
    assert_rb(referral_validate(&r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, REFERRAL_MAX_PROBLEMS);
    assert_true(problems.truncated);
    /* And reset by the next call. */
    Rb__Referral *ok = sample("04-supervisor-refuses-credentials.json");
    assert_ok(referral_validate(ok, RB__KIND__KIND_REFERRAL, NOW_MS, &problems));
    assert_int_equal(problems.count, 0);
    assert_false(problems.truncated);
    rb__referral__free_unpacked(ok, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_samples_pass_as_their_kind_only),
        cmocka_unit_test(invalid_samples_refused_at_their_path),
        cmocka_unit_test(readme_gives_the_same_paths),
        cmocka_unit_test(time_parser),
        cmocka_unit_test(times_in_order),
        cmocka_unit_test(kinds_and_references),
        cmocka_unit_test(identifier_formats),
        cmocka_unit_test(credential_checks),
        cmocka_unit_test(agents_and_their_references),
        cmocka_unit_test(medical_rules),
        cmocka_unit_test(evidence_rules),
        cmocka_unit_test(withdrawal_needs_little),
        cmocka_unit_test(text_caps_and_encoding),
        cmocka_unit_test(long_lists_are_refused_before_the_rest),
        cmocka_unit_test(values_beyond_the_schema),
        cmocka_unit_test(problem_list_is_bounded),
    };
    return cmocka_run_group_tests_name("referral_rules", tests, NULL, NULL);
}
