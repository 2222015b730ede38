/* referral_rules_test.c -- the validation rules against every sample: each valid sample passes, each
 * invalid one is refused for its one stated reason at its exact path (adapters/samples/README.md), and
 * the trickier rules and the time parser are checked one by one. */
#include <dirent.h>

#include "testutil.h"

#include "pbjson.h"
#include "referral_rules.h"

#define NOW_MS 1767225600000LL /* 2026-01-01T00:00:00Z: after every sample */

static Rb__Kind kind_of(const char *file)
{
    if (strstr(file, "supplement") != NULL)
        return RB__KIND__KIND_SUPPLEMENT;
    if (strstr(file, "withdrawal") != NULL)
        return RB__KIND__KIND_WITHDRAWAL;
    return RB__KIND__KIND_REFERRAL;
}

/* Parses a sample; on failure returns the converter's error in err. */
static Rb__Referral *load(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *json = test_read_file(path, &len);
    if (json == NULL)
        fail_msg("cannot read %s", path);
    ProtobufCMessage *m = NULL;
    rb_err rc = pbjson_parse(&rb__referral__descriptor, json, len, NULL, &m, err, errlen);
    free(json);
    return rc == RB_OK ? (Rb__Referral *)m : NULL;
}

static void print_problems(const char *file, const referral_problems_t *p)
{
    for (size_t i = 0; i < p->count; i++)
        print_error("%s: %s: %s\n", file, p->items[i].path, p->items[i].message);
}

static void valid_samples_pass(void **state)
{
    (void)state;
    DIR *d = opendir("adapters/samples/valid");
    assert_non_null(d);
    struct dirent *ent;
    int seen = 0, kinds[4] = {0};
    while ((ent = readdir(d)) != NULL) {
        if (strstr(ent->d_name, ".json") == NULL)
            continue;
        char path[512], err[256];
        Rb__Referral *r =
            load(test_path(path, sizeof path, "adapters/samples/valid/%s", ent->d_name), err, sizeof err);
        if (r == NULL)
            fail_msg("%s: %s", path, err);
        referral_problems_t problems;
        Rb__Kind kind = kind_of(ent->d_name);
        if (referral_validate(r, kind, NOW_MS, &problems) != RB_OK) {
            print_problems(path, &problems);
            fail_msg("%s refused", path);
        }
        rb__referral__free_unpacked(r, NULL);
        kinds[kind]++;
        seen++;
    }
    closedir(d);
    assert_true(seen >= 6);
    assert_true(kinds[RB__KIND__KIND_SUPPLEMENT] >= 1);
    assert_true(kinds[RB__KIND__KIND_WITHDRAWAL] >= 1);
}

/* Each invalid sample, the path its one fault is reported at, and whether the converter (JSON) or the
 * rules find it. Must agree with adapters/samples/README.md. */
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
};

static void invalid_samples_refused_at_their_path(void **state)
{
    (void)state;
    size_t files = 0;
    DIR *d = opendir("adapters/samples/invalid");
    assert_non_null(d);
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL)
        files += strstr(ent->d_name, ".json") != NULL;
    closedir(d);
    assert_int_equal(files, sizeof invalid / sizeof invalid[0]); /* every file is in the table */

    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        char path[512], err[256];
        test_path(path, sizeof path, "adapters/samples/invalid/%s", invalid[i].file);
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
        rb__referral__free_unpacked(r, NULL);
    }
}

static void time_parser(void **state)
{
    (void)state;
    int64_t ms;
    assert_true(referral_parse_time("1970-01-01T00:00:00Z", &ms));
    assert_int_equal(ms, 0);
    assert_true(referral_parse_time("2025-10-04T21:40:00-05:00", &ms));
    assert_int_equal(ms, 1759632000000LL);
    assert_true(referral_parse_time("2025-10-05T02:40:00.250+00:00", &ms));
    assert_int_equal(ms, 1759632000250LL);
    assert_true(referral_parse_time("2024-02-29T12:00:00Z", &ms)); /* leap year */
    static const char *const bad[] = {
        "",
        "2025-10-04",
        "2025-10-04T21:40:00",       /* no offset */
        "2025-10-04 21:40:00-05:00", /* space */
        "2025-02-29T12:00:00Z",      /* not a leap year */
        "2025-02-30T25:00:00-06:00",
        "2025-13-01T00:00:00Z",
        "2025-10-04T24:00:00Z",
        "2025-10-04T21:60:00Z",
        "2025-10-04T21:40:00-0500",
        "2025-10-04T21:40:00.Z",
        "2025-10-04T21:40:00Zjunk",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (referral_parse_time(bad[i], &ms))
            fail_msg("accepted \"%s\"", bad[i]);
}

/* A sample to change in C for the rules the sample files do not show. */
static Rb__Referral *base(void)
{
    char err[256];
    Rb__Referral *r = load("adapters/samples/valid/01-fatal-shooting.json", err, sizeof err);
    if (r == NULL)
        fail_msg("%s", err);
    return r;
}

static void expect_one(const Rb__Referral *r, Rb__Kind kind, const char *path)
{
    referral_problems_t problems;
    assert_rb(referral_validate(r, kind, NOW_MS, &problems), RB_ERR_INVALID);
    if (problems.count != 1 || strcmp(problems.items[0].path, path) != 0) {
        print_problems("base", &problems);
        fail_msg("expected exactly one problem, at %s", path);
    }
}

static void kinds_and_references(void **state)
{
    (void)state;
    Rb__Referral *r = base();
    referral_problems_t problems;
    assert_ok(referral_validate(r, RB__KIND__KIND_REFERRAL, NOW_MS, &problems));
    /* An original as a supplement: revision 1 and no reference. */
    assert_rb(referral_validate(r, RB__KIND__KIND_SUPPLEMENT, NOW_MS, &problems), RB_ERR_INVALID);
    assert_int_equal(problems.count, 2);
    assert_string_equal(problems.items[0].path, "$.revision");
    assert_string_equal(problems.items[1].path, "$.references");

    Rb__ReferralRef ref = RB__REFERRAL_REF__INIT;
    ref.rd_number = r->rd_number;
    ref.revision = 2;
    r->references = &ref;
    r->revision = 2;
    expect_one(r, RB__KIND__KIND_SUPPLEMENT, "$.references.revision"); /* must be lower */
    ref.revision = 1;
    assert_ok(referral_validate(r, RB__KIND__KIND_SUPPLEMENT, NOW_MS, &problems));
    expect_one(r, RB__KIND__KIND_WITHDRAWAL, "$.withdrawalReason");
    r->references = NULL;
    r->revision = 1;
    rb__referral__free_unpacked(r, NULL);
}

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
    approval.name = "Sgt. M. Example";
    approval.star_number = "1234";
    approval.approved_at = "2025-10-06T09:00:00-05:00";
    w.approval = &approval;
    referral_problems_t problems;
    assert_ok(referral_validate(&w, RB__KIND__KIND_WITHDRAWAL, NOW_MS, &problems));
    /* The same as an original referral misses nearly everything. */
    assert_rb(referral_validate(&w, RB__KIND__KIND_REFERRAL, NOW_MS, &problems), RB_ERR_INVALID);
    assert_true(problems.count >= 6);
}

static void values_beyond_the_schema(void **state)
{
    (void)state;
    /* A body sealed by another implementation may carry enum numbers this schema does not define. */
    Rb__Referral *r = base();
    r->federal_agents[0]->agency = (Rb__FederalAgency)99;
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.federalAgents[0].agency");
    r->federal_agents[0]->agency = RB__FEDERAL_AGENCY__FEDERAL_AGENCY_ICE_ERO;
    rb__referral__free_unpacked(r, NULL);
}

static void times_in_order(void **state)
{
    (void)state;
    Rb__Referral *r = base();
    char *saved = r->approval->approved_at;
    r->approval->approved_at = "2020-01-01T00:00:00Z";
    expect_one(r, RB__KIND__KIND_REFERRAL, "$.approval.approvedAt");
    r->approval->approved_at = saved;
    referral_problems_t problems;
    /* Seen from before it happened, the incident is in the future. */
    int64_t occurred;
    assert_true(referral_parse_time(r->incident->occurred_at, &occurred));
    assert_rb(referral_validate(r, RB__KIND__KIND_REFERRAL, occurred - 3600 * 1000, &problems),
              RB_ERR_INVALID);
    assert_string_equal(problems.items[0].path, "$.incident.occurredAt");
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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_samples_pass),
        cmocka_unit_test(invalid_samples_refused_at_their_path),
        cmocka_unit_test(time_parser),
        cmocka_unit_test(kinds_and_references),
        cmocka_unit_test(withdrawal_needs_little),
        cmocka_unit_test(values_beyond_the_schema),
        cmocka_unit_test(times_in_order),
        cmocka_unit_test(problem_list_is_bounded),
    };
    return cmocka_run_group_tests_name("referral_rules", tests, NULL, NULL);
}
