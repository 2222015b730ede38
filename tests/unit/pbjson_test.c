/* pbjson_test.c -- the JSON converter: round trips, the proto3 mapping of each type, and refusals with
 * the exact path of the field at fault. */
#include "testutil.h"

#include "envelope.pb-c.h"
#include "pbjson.h"
#include "referral.pb-c.h"

static const char full_referral[] =
    "{\"schemaVersion\":1,\"agencyOri\":\"ILCPD0000\",\"rdNumber\":\"JH512334\",\"revision\":2,"
    "\"references\":{\"messageId\":\"AZrN9sLsdJ2qRxzEW2x1Aw==\",\"rdNumber\":\"JH512334\",\"revision\":1},"
    "\"incident\":{\"occurredAt\":\"2025-10-04T21:40:00-05:00\",\"address\":\"6400 S Kedzie Ave\","
    "\"beat\":\"0823\",\"district\":\"008\",\"location\":{\"latitude\":41.7764,\"longitude\":-87.7031},"
    "\"categories\":[\"VIOLATION_CATEGORY_FIREARM_DISCHARGE\",\"VIOLATION_CATEGORY_USE_OF_FORCE\"]},"
    "\"narrative\":\"R/O observed \\u00e9 \\\"quoted\\\" text.\","
    "\"reportingOfficers\":[{\"name\":\"Officer A\",\"starNumber\":\"12345\",\"unit\":\"008\"}],"
    "\"federalAgents\":[{\"agentRef\":\"A1\",\"agency\":\"FEDERAL_AGENCY_CBP\",\"isSupervisor\":true,"
    "\"credentialCheck\":{\"result\":\"CREDENTIAL_RESULT_REFUSED\",\"recordedOn\":\"E1\"}},"
    "{\"agentRef\":\"A2\",\"agency\":\"FEDERAL_AGENCY_OTHER_FEDERAL\",\"agencyOther\":\"FPS\"}],"
    "\"evidence\":[{\"evidenceId\":\"E1\",\"kind\":\"EVIDENCE_KIND_BODY_WORN_CAMERA\","
    "\"sha256\":\"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\"}],"
    "\"suggestedCharges\":[{\"ilcsCitation\":\"720 ILCS 5/9-1\",\"agentRefs\":[\"A1\",\"A2\"]}],"
    "\"publication\":{\"timePlace\":\"PUBLICATION_CLASS_DEIDENTIFIED\",\"outcome\":\"PUBLICATION_CLASS_"
    "AGGREGATE_ONLY\"}}";

typedef struct {
    ProtobufCMessage *msg;
    char err[256];
} result_t;

static rb_err parse(const ProtobufCMessageDescriptor *desc, const char *json, result_t *res)
{
    return pbjson_parse(desc, json, strlen(json), NULL, &res->msg, res->err, sizeof res->err);
}

static void free_result(result_t *res)
{
    if (res->msg != NULL)
        protobuf_c_message_free_unpacked(res->msg, NULL);
    res->msg = NULL;
}

/* Parsing json as a Referral must fail with this error text exactly. */
static void assert_refused(const char *json, const char *want)
{
    result_t res = {0};
    rb_err rc = parse(&rb__referral__descriptor, json, &res);
    if (rc == RB_OK) {
        free_result(&res);
        fail_msg("accepted: %s", json);
    }
    assert_null(res.msg);
    if (strcmp(res.err, want) != 0)
        fail_msg("error \"%s\", expected \"%s\"", res.err, want);
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

static void round_trip(void **state)
{
    (void)state;
    result_t a = {0}, b = {0};
    assert_ok(parse(&rb__referral__descriptor, full_referral, &a));
    Rb__Referral *r = (Rb__Referral *)a.msg;
    assert_string_equal(r->rd_number, "JH512334");
    assert_int_equal(r->references->message_id.len, 16);
    assert_int_equal(r->incident->n_categories, 2);
    assert_int_equal(r->incident->categories[1], RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_USE_OF_FORCE);
    assert_true(r->federal_agents[0]->is_supervisor);
    assert_string_equal(r->narrative, "R/O observed \xc3\xa9 \"quoted\" text.");
    assert_int_equal(r->evidence[0]->sha256.len, 32);
    assert_true(r->incident->location->latitude == 41.7764);

    char *text;
    assert_ok(pbjson_format(a.msg, 0, &text));
    assert_ok(parse(&rb__referral__descriptor, text, &b));
    size_t la, lb;
    uint8_t *pa = pack(a.msg, &la), *pb = pack(b.msg, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    /* Compact output of the canonical form is stable: formatting again gives the same text. */
    char *again;
    assert_ok(pbjson_format(b.msg, 0, &again));
    assert_string_equal(text, again);
    pbjson_free(again);
    pbjson_free(text);
    assert_ok(pbjson_format(a.msg, PBJSON_PRETTY, &text));
    assert_non_null(strstr(text, "\n  \"agencyOri\": \"ILCPD0000\""));
    pbjson_free(text);
    free(pa);
    free(pb);
    free_result(&a);
    free_result(&b);
}

static void mapping_of_types(void **state)
{
    (void)state;
    result_t res = {0};
    /* 64-bit integers: strings out, strings or numbers in. Bytes: base64 in any common variant. */
    assert_ok(
        parse(&rb__header__descriptor,
              "{\"version\":1,\"createdMs\":\"1760000000123\",\"messageId\":\"AZrN9sLsdJ2qRxzEW2x1Aw\","
              "\"caseKey\":\"_-_-_-_-_-_-_-_-_-_-_w==\",\"kind\":4,\"ackStatus\":\"ACK_STATUS_REJECTED\"}",
              &res));
    Rb__Header *h = (Rb__Header *)res.msg;
    assert_int_equal(h->created_ms, 1760000000123LL);
    assert_int_equal(h->message_id.len, 16);
    assert_int_equal(h->case_key.len, 16);
    assert_int_equal(h->case_key.data[0], 0xff);
    assert_int_equal(h->kind, RB__KIND__KIND_ACK);
    char *text;
    assert_ok(pbjson_format(res.msg, 0, &text));
    assert_string_equal(text,
                        "{\"version\":1,\"messageId\":\"AZrN9sLsdJ2qRxzEW2x1Aw==\",\"kind\":\"KIND_ACK\","
                        "\"createdMs\":\"1760000000123\",\"caseKey\":\"/+/+/+/+/+/+/+/+/+/+/w==\","
                        "\"ackStatus\":\"ACK_STATUS_REJECTED\"}");
    pbjson_free(text);
    free_result(&res);

    assert_ok(parse(&rb__header__descriptor, "{\"createdMs\":-5,\"version\":\"7\"}", &res));
    assert_int_equal(((Rb__Header *)res.msg)->created_ms, -5);
    assert_int_equal(((Rb__Header *)res.msg)->version, 7);
    free_result(&res);

    /* Defaults are left out; null means the default; snake_case names are accepted. */
    assert_ok(parse(&rb__referral__descriptor,
                    "{\"revision\":0,\"rd_number\":\"JH512334\",\"narrative\":null,\"federalAgents\":[],"
                    "\"incident\":{\"location\":{\"latitude\":0}}}",
                    &res));
    assert_ok(pbjson_format(res.msg, 0, &text));
    assert_string_equal(text, "{\"rdNumber\":\"JH512334\",\"incident\":{\"location\":{}}}");
    pbjson_free(text);
    free_result(&res);
}

static void unknown_fields_refused_with_path(void **state)
{
    (void)state;
    assert_refused("{\"rdNumbr\":\"JH512334\"}", "$.rdNumbr: unknown field");
    assert_refused("{\"federalAgents\":[{\"agentRef\":\"A1\"},{\"agentRef\":\"A2\",\"badgeNumbr\":\"7\"}]}",
                   "$.federalAgents[1].badgeNumbr: unknown field");
    assert_refused("{\"incident\":{\"location\":{\"lat\":1}}}", "$.incident.location.lat: unknown field");
}

static void wrong_types_refused_with_path(void **state)
{
    (void)state;
    assert_refused("{\"revision\":\"one\"}", "$.revision: \"one\" is not an unsigned integer");
    assert_refused("{\"rdNumber\":512334}", "$.rdNumber: expected a string, got integer");
    assert_refused("{\"reportingOfficers\":{\"name\":\"x\"}}",
                   "$.reportingOfficers: expected an array, got object");
    assert_refused("{\"incident\":[]}", "$.incident: expected an object (rb.Incident), got array");
    assert_refused("{\"federalAgents\":[{\"isSupervisor\":\"yes\"}]}",
                   "$.federalAgents[0].isSupervisor: expected true or false, got string");
    assert_refused("{\"evidence\":[{\"sha256\":\"not base64!\"}]}", "$.evidence[0].sha256: not valid base64");
    assert_refused("{\"incident\":{\"location\":{\"latitude\":\"north\"}}}",
                   "$.incident.location.latitude: expected a number, got string");
    assert_refused("[]", "$: expected an object (rb.Referral), got array");
}

static void enums(void **state)
{
    (void)state;
    assert_refused("{\"federalAgents\":[{\"credentialCheck\":{\"result\":\"CREDENTIAL_RESULT_MAYBE\"}}]}",
                   "$.federalAgents[0].credentialCheck.result: unknown value \"CREDENTIAL_RESULT_MAYBE\" for "
                   "rb.CredentialResult");
    assert_refused("{\"incident\":{\"categories\":[1,99]}}",
                   "$.incident.categories[1]: unknown value 99 for rb.ViolationCategory");
    assert_refused("{\"federalAgents\":[{\"agency\":true}]}",
                   "$.federalAgents[0].agency: expected a rb.FederalAgency name, got boolean");
}

static void ranges(void **state)
{
    (void)state;
    assert_refused("{\"revision\":-1}", "$.revision: -1 is out of range");
    assert_refused("{\"revision\":4294967296}", "$.revision: 4294967296 is out of range");
    assert_refused("{\"revision\":1.5}", "$.revision: 1.5 is not an integer in range");
    result_t res = {0};
    rb_err rc = parse(&rb__header__descriptor, "{\"createdMs\":\"9223372036854775808\"}", &res);
    assert_rb(rc, RB_ERR_MALFORMED);
    assert_string_equal(res.err, "$.createdMs: 9223372036854775808 is out of range");
    rc = parse(&rb__header__descriptor, "{\"createdMs\":\"12x\"}", &res);
    assert_rb(rc, RB_ERR_MALFORMED);
    assert_string_equal(res.err, "$.createdMs: \"12x\" is not an integer");
}

static void duplicates_and_syntax(void **state)
{
    (void)state;
    assert_refused("{\"rdNumber\":\"A\",\"rd_number\":\"B\"}", "$.rd_number: given twice");
    result_t res = {0};
    assert_rb(parse(&rb__referral__descriptor, "{\"rdNumber\":\"A\",\"rdNumber\":\"B\"}", &res),
              RB_ERR_MALFORMED);
    assert_non_null(strstr(res.err, "duplicate object key"));
    assert_rb(parse(&rb__referral__descriptor, "{\"rdNumber\":", &res), RB_ERR_MALFORMED);
    assert_true(strncmp(res.err, "$: not JSON: ", 13) == 0);
    assert_rb(parse(&rb__referral__descriptor, "{} trailing", &res), RB_ERR_MALFORMED);
    assert_null(res.msg);
}

static void size_limit(void **state)
{
    (void)state;
    size_t n = PBJSON_MAX_BYTES + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    ProtobufCMessage *m;
    char err[128];
    assert_rb(pbjson_parse(&rb__referral__descriptor, big, n, NULL, &m, err, sizeof err), RB_ERR_TOO_BIG);
    /* spaces alone are not JSON */
    assert_rb(pbjson_parse(&rb__referral__descriptor, big + 1, n - 2, NULL, &m, err, sizeof err),
              RB_ERR_MALFORMED);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(mapping_of_types),
        cmocka_unit_test(unknown_fields_refused_with_path),
        cmocka_unit_test(wrong_types_refused_with_path),
        cmocka_unit_test(enums),
        cmocka_unit_test(ranges),
        cmocka_unit_test(duplicates_and_syntax),
        cmocka_unit_test(size_limit),
    };
    return cmocka_run_group_tests_name("pbjson", tests, NULL, NULL);
}
