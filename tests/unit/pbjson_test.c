/* pbjson_test.c -- the JSON converter: round trips, the proto3 mapping of each field type, refusals with the
 * exact path of the field at fault, limits, and memory: every parse here goes through a counting
 * allocator, so each refusal also proves that nothing was left allocated.
 *
 * JSON in this file is written with single quotes for legibility; q() turns them into double quotes. */
#include "testutil.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>

#include "envelope.pb-c.h"
#include "pbjson.h"
#include "pbjson_types.pb-c.h"
#include "referral.pb-c.h"

/* A referral with every field of every message set (in the first element of each repeated field). */
static const char full_referral[] =
    "{'schemaVersion':1,'agencyOri':'ILCPD0000','rdNumber':'JH512334','revision':2,"
    "'references':{'messageId':'AZrN9sLsdJ2qRxzEW2x1Aw==','rdNumber':'JH512334','revision':1},"
    "'incident':{'occurredAt':'2025-10-04T21:40:00-05:00','endedAt':'2025-10-04T22:15:00-05:00',"
    "'address':'6400 S Kedzie Ave','beat':'0823','district':'008',"
    "'location':{'latitude':41.7764,'longitude':-87.7031},'summary':'Shooting during a vehicle stop',"
    "'categories':['VIOLATION_CATEGORY_FIREARM_DISCHARGE','VIOLATION_CATEGORY_USE_OF_FORCE']},"
    "'narrative':'R/O observed \\u00e9 \\\"quoted\\\" text.\\nSecond line.',"
    "'reportingOfficers':[{'name':'Officer A','starNumber':'12345','unit':'008th District'}],"
    "'federalAgents':[{'agentRef':'A1','agency':'FEDERAL_AGENCY_CBP','agencyOther':'-','name':'G. Haines',"
    "'badgeNumber':'BP-11873','isSupervisor':true,'credentialCheck':{'result':'CREDENTIAL_RESULT_REFUSED',"
    "'recordedOn':'E1','checkedAt':'2025-10-04T21:45:00-05:00','notes':'Refused twice'},"
    "'description':'Tall, grey face covering'},"
    "{'agentRef':'A2','agency':'FEDERAL_AGENCY_OTHER_FEDERAL','agencyOther':'FPS'}],"
    "'noAgentIdentifiedReason':'-',"
    "'civilians':[{'personRef':'P1','role':'CIVILIAN_ROLE_VICTIM','name':'Jane "
    "Roe','dateOfBirth':'1990-01-02',"
    "'injuries':[{'severity':'INJURY_SEVERITY_SERIOUS','description':'Gunshot "
    "wound'}],'contact':'312-555-0100'}],"
    "'medical':{'emsCalled':true,'emsCalledAt':'2025-10-04T21:41:00-05:00','emsArrivedAt':'2025-10-04T21:49:"
    "00-05:00',"
    "'emsUnit':'Ambulance 9','aid':[{'personRef':'P1','givenBy':'R/O "
    "12345','givenAt':'2025-10-04T21:42:00-05:00',"
    "'description':'Tourniquet'}],'transportedTo':'Mount Sinai'},"
    "'evidence':[{'evidenceId':'E1','kind':'EVIDENCE_KIND_BODY_WORN_CAMERA','description':'BWC of R/O',"
    "'bodyCamera':{'cameraId':'X6-001','officerStar':'12345','recordingStart':'2025-10-04T21:38:00-05:00',"
    "'recordingEnd':'2025-10-04T22:20:00-05:00'},'sha256':'n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=',"
    "'storageLocator':'evidence://bwc/X6-001/1','preservationHoldAt':'2025-10-05T08:00:00-05:00'}],"
    "'suggestedCharges':[{'ilcsCitation':'720 ILCS 5/9-1','description':'First degree murder',"
    "'agentRefs':['A1','A2']}],"
    "'approval':{'name':'Sgt "
    "B','starNumber':'2201','rank':'Sergeant','approvedAt':'2025-10-05T02:00:00-05:00'},"
    "'publication':{'timePlace':'PUBLICATION_CLASS_DEIDENTIFIED','agencies':'PUBLICATION_CLASS_DEIDENTIFIED',"
    "'injuries':'PUBLICATION_CLASS_AGGREGATE_ONLY','credentials':'PUBLICATION_CLASS_DEIDENTIFIED',"
    "'evidence':'PUBLICATION_CLASS_AGGREGATE_ONLY','charges':'PUBLICATION_CLASS_DEIDENTIFIED',"
    "'outcome':'PUBLICATION_CLASS_AGGREGATE_ONLY'},"
    "'withdrawalReason':'Duplicate of JH512300'}";

/* Every field of pbt.Types but the oneof's other members, in the canonical form pbjson_format writes. */
static const char full_types[] =
    "{'fInt32':-2147483648,'fSint32':2147483647,'fSfixed32':-7,'fUint32':4294967295,'fFixed32':7,"
    "'fInt64':'-9223372036854775808','fSint64':'9223372036854775807','fSfixed64':'-1',"
    "'fUint64':'18446744073709551615','fFixed64':'1','fFloat':0.1,'fDouble':41.7764,'fBool':true,"
    "'fString':'caf\xc3\xa9','fBytes':'AAEC/w==','fEnum':'COLOR_NEGATIVE','fInner':{'label':'in','count':3},"
    "'rInt32':[1,-1],'rSint32':[-2,2],'rSfixed32':[3],'rUint32':[4],'rFixed32':[5],'rInt64':['6','-6'],"
    "'rSint64':['-7'],'rSfixed64':['8'],'rUint64':['9'],'rFixed64':['10'],'rFloat':[1.5,-0.0,'Infinity'],"
    "'rDouble':['NaN','-Infinity',1e300,-0.0],'rBool':[true,false],'rString':['a',''],'rBytes':['','/w=='],"
    "'rEnum':['COLOR_RED','COLOR_UNSPECIFIED'],'rInner':[{'label':'x','count':-1},{}],'cInt64':'5',"
    "'node':{'child':{'name':'leaf'},'name':'root'}}";

/* Text with each ' made ", in a buffer the caller frees. */
static char *q(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *c = s; *c != '\0'; c++)
        if (*c == '\'')
            *c = '"';
    return s;
}

/* An allocator that counts live blocks and marks its own, so a block freed that it did not allocate (or
 * freed twice) fails the test. */
#define BLOCK_MAGIC 0x70626a736f6e2121ULL

static void *counting_alloc(void *data, size_t size)
{
    uint64_t *block = malloc(16 + size);
    assert_non_null(block);
    block[0] = BLOCK_MAGIC;
    ++*(long *)data;
    return block + 2;
}

static void counting_free(void *data, void *ptr)
{
    if (ptr == NULL)
        return;
    uint64_t *block = (uint64_t *)ptr - 2;
    if (block[0] != BLOCK_MAGIC)
        fail_msg("a block the allocator did not give was freed through it");
    block[0] = 0;
    --*(long *)data;
    free(block);
}

typedef struct {
    long live;                /* blocks allocated and not yet freed */
    ProtobufCAllocator alloc; /* counting_alloc over live */
    ProtobufCMessage *msg;    /* the parsed message, or NULL */
    char err[512];            /* pbjson_parse's error line */
} result_t;

/* Parses text (single-quoted JSON) as desc into res. */
static rb_err parse(const ProtobufCMessageDescriptor *desc, const char *text, result_t *res)
{
    res->alloc = (ProtobufCAllocator){counting_alloc, counting_free, &res->live};
    char *json = q(text);
    rb_err rc = pbjson_parse(desc, json, strlen(json), &res->alloc, &res->msg, res->err, sizeof res->err);
    free(json);
    if (rc != RB_OK)
        assert_int_equal(res->live, 0); /* a refusal leaves nothing allocated */
    return rc;
}

static void free_result(result_t *res)
{
    protobuf_c_message_free_unpacked(res->msg, &res->alloc);
    res->msg = NULL;
    assert_int_equal(res->live, 0); /* everything was the allocator's, and free_unpacked found it all */
}

/* Parsing text (single quotes) as desc must fail with rc and exactly the error line want. */
static void assert_refused_as(const ProtobufCMessageDescriptor *desc, const char *text, rb_err rc,
                              const char *want)
{
    result_t res = {0};
    rb_err got = parse(desc, text, &res);
    if (got == RB_OK) {
        free_result(&res);
        fail_msg("accepted: %s", text);
    }
    assert_null(res.msg);
    if (got != rc || strcmp(res.err, want) != 0)
        fail_msg("refused with %s \"%s\", expected %s \"%s\"", rb_strerror(got), res.err, rb_strerror(rc),
                 want);
}

static void assert_refused(const char *text, const char *want)
{
    assert_refused_as(&rb__referral__descriptor, text, RB_ERR_MALFORMED, want);
}

static void assert_types_refused(const char *text, const char *want)
{
    assert_refused_as(&pbt__types__descriptor, text, RB_ERR_MALFORMED, want);
}

/* pbjson_format(m) with flags must be exactly want (single quotes). */
static void assert_formats_as(const ProtobufCMessage *m, int flags, const char *want)
{
    char *text, *w = q(want);
    assert_ok(pbjson_format(m, flags, &text));
    if (strcmp(text, w) != 0)
        fail_msg("formatted as\n%s\nexpected\n%s", text, w);
    pbjson_free(text);
    free(w);
}

/* Parsing text as desc gives what parsing canonical gives (compared packed), and formats as canonical. */
static void assert_same_as(const ProtobufCMessageDescriptor *desc, const char *text, const char *canonical)
{
    result_t a = {0}, b = {0};
    assert_ok(parse(desc, text, &a));
    assert_ok(parse(desc, canonical, &b));
    size_t la = protobuf_c_message_get_packed_size(a.msg), lb = protobuf_c_message_get_packed_size(b.msg);
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    protobuf_c_message_pack(a.msg, pa);
    protobuf_c_message_pack(b.msg, pb);
    if (la != lb || memcmp(pa, pb, la) != 0)
        fail_msg("%s\nand\n%s\ndiffer", text, canonical);
    assert_formats_as(a.msg, 0, canonical);
    free(pa);
    free(pb);
    free_result(&a);
    free_result(&b);
}

/* JSON -> message -> JSON -> message: the two messages pack to the same bytes, and the second JSON
 * formats again to itself. Returns the first message's compact JSON, for pbjson_free. */
static char *round_trip(const ProtobufCMessageDescriptor *desc, const char *text)
{
    result_t a = {0}, b = {0};
    char *first, *second;
    assert_ok(parse(desc, text, &a));
    assert_ok(pbjson_format(a.msg, 0, &first));
    assert_ok(pbjson_parse(desc, first, strlen(first), NULL, &b.msg, b.err, sizeof b.err));
    size_t la = protobuf_c_message_get_packed_size(a.msg), lb = protobuf_c_message_get_packed_size(b.msg);
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    protobuf_c_message_pack(a.msg, pa);
    protobuf_c_message_pack(b.msg, pb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    assert_ok(pbjson_format(b.msg, 0, &second));
    assert_string_equal(first, second);
    pbjson_free(second);
    free(pa);
    free(pb);
    protobuf_c_message_free_unpacked(b.msg, NULL);
    free_result(&a);
    return first;
}

/* Every field of desc is a key of obj, and so on down the first element of repeated messages; fields of
 * a oneof are skipped (only one can be set). */
static void assert_every_field(const ProtobufCMessageDescriptor *desc, const json_t *obj, const char *path)
{
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            continue;
        char name[128];
        size_t o = 0;
        for (const char *c = f->name; *c != '\0'; c++) /* lowerCamelCase, worked out apart from pbjson */
            if (*c != '_')
                name[o++] = (char)(c > f->name && c[-1] == '_' ? toupper((unsigned char)*c) : *c);
        name[o] = '\0';
        const json_t *v = json_object_get(obj, name);
        if (v == NULL)
            fail_msg("%s.%s is not set", path, name);
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->descriptor == desc) /* a recursive one may end */
            continue;
        char sub[512];
        snprintf(sub, sizeof sub, "%s.%s", path, name);
        assert_every_field(f->descriptor, json_is_array(v) ? json_array_get(v, 0) : v, sub);
    }
}

static void full_referral_round_trip(void **state)
{
    (void)state;
    char *text = round_trip(&rb__referral__descriptor, full_referral);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    assert_every_field(&rb__referral__descriptor, root, "$");
    json_decref(root);
    pbjson_free(text);

    result_t res = {0};
    assert_ok(parse(&rb__referral__descriptor, full_referral, &res));
    Rb__Referral *r = (Rb__Referral *)res.msg;
    assert_string_equal(r->rd_number, "JH512334");
    assert_string_equal(r->narrative, "R/O observed \xc3\xa9 \"quoted\" text.\nSecond line.");
    assert_int_equal(r->incident->n_categories, 2);
    assert_int_equal(r->incident->categories[1], RB__VIOLATION_CATEGORY__VIOLATION_CATEGORY_USE_OF_FORCE);
    assert_true(r->federal_agents[0]->is_supervisor);
    assert_int_equal(r->n_federal_agents, 2);
    assert_int_equal(r->evidence[0]->sha256.len, 32);
    assert_int_equal(r->evidence[0]->sha256.data[0], 0x9f);
    assert_true(r->incident->location->latitude == 41.7764);
    assert_string_equal(r->suggested_charges[0]->agent_refs[1], "A2");
    /* Pretty output: two-space indentation, reals as short as they read back exactly. */
    char *pretty;
    assert_ok(pbjson_format(res.msg, PBJSON_PRETTY, &pretty));
    assert_non_null(strstr(pretty, "{\n  \"schemaVersion\": 1,\n  \"agencyOri\": \"ILCPD0000\","));
    assert_non_null(strstr(pretty, "\n      \"latitude\": 41.7764,\n      \"longitude\": -87.7031\n"));
    pbjson_free(pretty);
    free_result(&res);
}

static void every_type_round_trip(void **state)
{
    (void)state;
    char *text = round_trip(&pbt__types__descriptor, full_types);
    char *want = q(full_types);
    assert_string_equal(text, want); /* the canonical form formats to itself */
    free(want);
    json_t *root = json_loads(text, 0, NULL);
    assert_every_field(&pbt__types__descriptor, root, "$");
    json_decref(root);
    pbjson_free(text);

    result_t res = {0};
    assert_ok(parse(&pbt__types__descriptor, full_types, &res));
    Pbt__Types *t = (Pbt__Types *)res.msg;
    assert_int_equal(t->f_int32, INT32_MIN);
    assert_int_equal(t->f_uint32, UINT32_MAX);
    assert_true(t->f_int64 == INT64_MIN);
    assert_true(t->f_sint64 == INT64_MAX);
    assert_true(t->f_uint64 == UINT64_MAX);
    assert_true(t->f_float == 0.1f);
    assert_int_equal(t->f_enum, PBT__COLOR__COLOR_NEGATIVE);
    assert_true(isinf(t->r_float[2]) && t->r_float[2] > 0);
    assert_true(isnan(t->r_double[0]));
    assert_true(t->r_double[3] == 0 && signbit(t->r_double[3]));
    assert_int_equal(t->n_r_bytes, 2);
    assert_int_equal(t->r_bytes[0].len, 0);
    assert_int_equal(t->choice_case, PBT__TYPES__CHOICE_C_INT64);
    assert_string_equal(t->node->child->name, "leaf");
    free_result(&res);
}

static void bytes_are_base64(void **state)
{
    (void)state;
    /* Standard or URL-safe, padded or not, in; standard and padded out. */
    assert_same_as(&pbt__types__descriptor, "{'fBytes':'-_8'}", "{'fBytes':'+/8='}");
    assert_same_as(&pbt__types__descriptor, "{'fBytes':'-_8='}", "{'fBytes':'+/8='}");
    assert_same_as(&pbt__types__descriptor, "{'fBytes':'+/8'}", "{'fBytes':'+/8='}");
    assert_same_as(&pbt__types__descriptor, "{'rBytes':['AQ','AQI','AQID']}",
                   "{'rBytes':['AQ==','AQI=','AQID']}");
    assert_same_as(&rb__header__descriptor, "{'caseKey':'_-_-_-_-_-_-_-_-_-_-_w'}",
                   "{'caseKey':'/+/+/+/+/+/+/+/+/+/+/w=='}");
    assert_types_refused("{'fBytes':'not base64!'}", "$.fBytes: not base64");
    assert_types_refused("{'rBytes':['AQ==','AQ=']}", "$.rBytes[1]: not base64");
    assert_types_refused("{'fBytes':12}", "$.fBytes: expected a base64 string, got number");
}

static void int64_is_a_string(void **state)
{
    (void)state;
    assert_same_as(&rb__header__descriptor, "{'createdMs':1760000000123}", "{'createdMs':'1760000000123'}");
    assert_same_as(&rb__header__descriptor, "{'createdMs':'-5'}", "{'createdMs':'-5'}");
    assert_same_as(&pbt__types__descriptor, "{'fUint64':'018446744073709551615'}",
                   "{'fUint64':'18446744073709551615'}");
    assert_same_as(&pbt__types__descriptor, "{'fInt64':-9223372036854775808,'fFixed64':9223372036854775807}",
                   "{'fInt64':'-9223372036854775808','fFixed64':'9223372036854775807'}");
    /* 32-bit integers are numbers, but a string holding an integer is accepted, as the mapping allows. */
    assert_same_as(&pbt__types__descriptor, "{'fInt32':'-12','fUint32':'7','fSint32':1e3}",
                   "{'fInt32':-12,'fSint32':1000,'fUint32':7}");
    assert_types_refused("{'fInt64':'12x'}", "$.fInt64: expected a number, got string");
    assert_types_refused("{'fInt64':' 12'}", "$.fInt64: expected a number, got string");
    assert_types_refused("{'fInt64':'+12'}", "$.fInt64: expected a number, got string");
    assert_types_refused("{'fInt64':''}", "$.fInt64: expected a number, got string");
    assert_types_refused("{'fInt64':'-'}", "$.fInt64: expected a number, got string");
}

static void enums_by_name_or_number(void **state)
{
    (void)state;
    assert_same_as(
        &rb__referral__descriptor,
        "{'federalAgents':[{'agency':3}],'incident':{'categories':[1,'VIOLATION_CATEGORY_USE_OF_FORCE']}}",
        "{'incident':{'categories':['VIOLATION_CATEGORY_FIREARM_DISCHARGE','VIOLATION_CATEGORY_USE_"
        "OF_FORCE']},'federalAgents':[{'agency':'FEDERAL_AGENCY_CBP'}]}");
    assert_same_as(&pbt__types__descriptor, "{'fEnum':-1}", "{'fEnum':'COLOR_NEGATIVE'}");
    assert_refused(
        "{'federalAgents':[{'credentialCheck':{'result':'MAYBE'}}]}",
        "$.federalAgents[0].credentialCheck.result: unknown enum value \"MAYBE\" for rb.CredentialResult");
    assert_refused("{'incident':{'categories':[1,99]}}",
                   "$.incident.categories[1]: unknown enum value 99 for rb.ViolationCategory");
    assert_refused(
        "{'federalAgents':[{'agency':'federal_agency_cbp'}]}",
        "$.federalAgents[0].agency: unknown enum value \"federal_agency_cbp\" for rb.FederalAgency");
    assert_refused("{'federalAgents':[{'agency':true}]}",
                   "$.federalAgents[0].agency: expected a rb.FederalAgency name or integer, got boolean");
    assert_refused("{'federalAgents':[{'agency':3.0}]}",
                   "$.federalAgents[0].agency: expected a rb.FederalAgency name or integer, got number");
    assert_types_refused("{'fEnum':4294967297}", "$.fEnum: unknown enum value 4294967297 for pbt.Color");

    /* A value this schema does not know (from a newer sender) is written as its number. */
    Pbt__Types t = PBT__TYPES__INIT;
    t.f_enum = 42;
    assert_formats_as(&t.base, 0, "{'fEnum':42}");
}

static void unknown_fields_refused_with_path(void **state)
{
    (void)state;
    assert_refused("{'rdNumber':'JH512334','rdNumbr':'JH512334'}", "$.rdNumbr: unknown field");
    assert_refused("{'federalAgents':[{'agentRef':'A1'},{'agentRef':'A2','badgeNumbr':'7'}]}",
                   "$.federalAgents[1].badgeNumbr: unknown field");
    assert_refused("{'incident':{'location':{'lat':1}}}", "$.incident.location.lat: unknown field");
    assert_refused("{'Narrative':'x'}", "$.Narrative: unknown field");
    /* Keys are quoted safely: control characters become '?', long ones are cut at 64 bytes. */
    assert_refused("{'a\\nb':1}", "$.a?b: unknown field");
    char long_key[120], want[120];
    memset(long_key, 0, sizeof long_key);
    memset(want, 0, sizeof want);
    snprintf(long_key, sizeof long_key, "{'%080d':1}", 0);    /* an 80-character key */
    snprintf(want, sizeof want, "$.%064d: unknown field", 0); /* quoted as its first 64 */
    assert_refused(long_key, want);
}

static void wrong_types_refused_with_path(void **state)
{
    (void)state;
    assert_refused("{'revision':'one'}", "$.revision: expected a number, got string");
    assert_refused("{'revision':true}", "$.revision: expected a number, got boolean");
    assert_refused("{'rdNumber':512334}", "$.rdNumber: expected a string, got number");
    assert_refused("{'reportingOfficers':{'name':'x'}}",
                   "$.reportingOfficers: expected an array, got object");
    assert_refused("{'suggestedCharges':[{'agentRefs':['A1',null]}]}",
                   "$.suggestedCharges[0].agentRefs[1]: expected a string, got null");
    assert_refused("{'incident':[]}", "$.incident: expected a rb.Incident object, got array");
    assert_refused("{'federalAgents':[{'isSupervisor':'yes'}]}",
                   "$.federalAgents[0].isSupervisor: expected true or false, got string");
    assert_refused("{'federalAgents':[{'isSupervisor':1}]}",
                   "$.federalAgents[0].isSupervisor: expected true or false, got number");
    assert_refused("{'incident':{'location':{'latitude':'north'}}}",
                   "$.incident.location.latitude: expected a number, got string");
    assert_refused("[]", "$: expected a rb.Referral object, got array");
}

static void each_field_once(void **state)
{
    (void)state;
    assert_refused("{'rdNumber':'A','rd_number':'B'}", "$.rd_number: given twice, also as rdNumber");
    assert_refused("{'rd_number':'A','rdNumber':'B'}", "$.rd_number: given twice, also as rdNumber");
    assert_refused("{'federalAgents':[{'badge_number':'1','badgeNumber':'1'}]}",
                   "$.federalAgents[0].badge_number: given twice, also as badgeNumber");
    assert_refused("{'rdNumber':'A','rdNumber':'B'}",
                   "$: not JSON: duplicate object key near '\"rdNumber\"' at line 1 column 26");
    assert_refused("{'incident':{'beat':'1','beat':'1'}}",
                   "$: not JSON: duplicate object key near '\"beat\"' at line 1 column 30");
    /* Oneof: one member at most. */
    assert_types_refused("{'cString':'a','cInt64':'1'}",
                         "$.cInt64: cString is already set, and only one field of their oneof may be");
    assert_types_refused("{'cInner':{'label':'a'},'cEnum':'COLOR_RED'}",
                         "$.cEnum: cInner is already set, and only one field of their oneof may be");
    assert_same_as(&pbt__types__descriptor, "{'cString':null,'cInt64':'1'}", "{'cInt64':'1'}");
    assert_same_as(&pbt__types__descriptor, "{'cInner':{}}", "{'cInner':{}}");
    /* A refusal inside a oneof member frees what the member held (the counting allocator checks). */
    assert_types_refused("{'cInner':{'label':'a','nope':1}}", "$.cInner.nope: unknown field");
    assert_types_refused("{'rInner':[{'label':'a'},{'label':'b','count':'x'}]}",
                         "$.rInner[1].count: expected a number, got string");
    /* A oneof member is present even when it holds its type's default, as protobuf-c packs it. */
    assert_same_as(&pbt__types__descriptor, "{'cString':''}", "{'cString':''}");
    assert_same_as(&pbt__types__descriptor, "{'c_enum':0}", "{'cEnum':'COLOR_UNSPECIFIED'}");
}

static void snake_case_accepted(void **state)
{
    (void)state;
    assert_same_as(&rb__referral__descriptor,
                   "{'rd_number':'JH512334','federal_agents':[{'agent_ref':'A1','is_supervisor':true,"
                   "'credential_check':{'recorded_on':'E1'}}],'no_agent_identified_reason':'x'}",
                   "{'rdNumber':'JH512334','federalAgents':[{'agentRef':'A1','isSupervisor':true,"
                   "'credentialCheck':{'recordedOn':'E1'}}],'noAgentIdentifiedReason':'x'}");
    assert_same_as(&pbt__types__descriptor, "{'f_int32':1,'r_inner':[{'label':'a'}]}",
                   "{'fInt32':1,'rInner':[{'label':'a'}]}");
}

static void defaults_omitted(void **state)
{
    (void)state;
    /* Zero, empty, false and null are the defaults, and not written; an empty message is still present. */
    assert_same_as(
        &pbt__types__descriptor,
        "{'fInt32':0,'fInt64':'0','fUint64':0,'fFloat':0,'fDouble':-0.0,'fBool':false,'fString':'',"
        "'fBytes':'','fEnum':'COLOR_UNSPECIFIED','fInner':null,'rInt32':[],'rString':null,"
        "'node':{'child':{}}}",
        "{'node':{'child':{}}}");
    assert_same_as(&rb__referral__descriptor,
                   "{'revision':0,'narrative':null,'federalAgents':[],'incident':{}}", "{'incident':{}}");
    assert_same_as(&rb__referral__descriptor, "{}", "{}");
    /* Elements of repeated fields are all written, defaults too. */
    assert_same_as(&pbt__types__descriptor, "{'rInt32':[0,0],'rString':['',''],'rInner':[{}]}",
                   "{'rInt32':[0,0],'rString':['',''],'rInner':[{}]}");
}

static void reals(void **state)
{
    (void)state;
    assert_same_as(&pbt__types__descriptor, "{'fFloat':'NaN','fDouble':'-Infinity'}",
                   "{'fFloat':'NaN','fDouble':'-Infinity'}");
    assert_same_as(&pbt__types__descriptor, "{'fDouble':1,'rDouble':[2e-3,1E2]}",
                   "{'fDouble':1.0,'rDouble':[0.002,100.0]}");
    /* One precision serves the whole message: 0.1 + 0.2 needs 17 digits, so 0.5 is still exact. */
    assert_same_as(&pbt__types__descriptor, "{'rDouble':[0.30000000000000004,0.5]}",
                   "{'rDouble':[0.30000000000000004,0.5]}");
    /* A float is written with the digits that read back as the same float, not as the double it widens to. */
    assert_same_as(&pbt__types__descriptor, "{'fFloat':3.14159274}", "{'fFloat':3.1415927}");
    assert_same_as(&pbt__types__descriptor, "{'fFloat':3.4028235e38}", "{'fFloat':3.4028235e38}");
    assert_types_refused("{'fFloat':3.5e38}", "$.fFloat: 3.5e+38 is out of range for float");
    assert_types_refused("{'fDouble':'1.5'}", "$.fDouble: expected a number, got string");
    assert_types_refused("{'fDouble':'nan'}", "$.fDouble: expected a number, got string");
    assert_types_refused("{'rFloat':[1,[]]}", "$.rFloat[1]: expected a number, got array");
}

static void out_of_range_integers(void **state)
{
    (void)state;
    assert_refused("{'revision':-1}", "$.revision: -1 is out of range for uint32");
    assert_refused("{'revision':4294967296}", "$.revision: 4294967296 is out of range for uint32");
    assert_refused("{'revision':1.5}", "$.revision: 1.5 is not an integer");
    assert_types_refused("{'fInt32':2147483648}", "$.fInt32: 2147483648 is out of range for int32");
    assert_types_refused("{'fSfixed32':-2147483649}",
                         "$.fSfixed32: -2147483649 is out of range for sfixed32");
    assert_types_refused("{'rSint32':[1,'-2147483649']}",
                         "$.rSint32[1]: \"-2147483649\" is out of range for sint32");
    assert_types_refused("{'fFixed32':-1}", "$.fFixed32: -1 is out of range for fixed32");
    assert_types_refused("{'fInt64':'9223372036854775808'}",
                         "$.fInt64: \"9223372036854775808\" is out of range for int64");
    assert_types_refused("{'fSint64':'-9223372036854775809'}",
                         "$.fSint64: \"-9223372036854775809\" is out of range for sint64");
    assert_types_refused("{'fUint64':'18446744073709551616'}",
                         "$.fUint64: \"18446744073709551616\" is out of range for uint64");
    assert_types_refused("{'fUint64':'99999999999999999999999'}",
                         "$.fUint64: \"99999999999999999999999\" is out of range for uint64");
    assert_types_refused("{'fFixed64':'-1'}", "$.fFixed64: \"-1\" is out of range for fixed64");
    /* Integral reals: 2^63 is past int64 but within uint64; 2^64 is past both. */
    assert_types_refused("{'fInt64':9223372036854775808.0}",
                         "$.fInt64: 9.223372036854776e+18 is out of range for int64");
    assert_same_as(&pbt__types__descriptor, "{'fUint64':9223372036854775808.0}",
                   "{'fUint64':'9223372036854775808'}");
    assert_types_refused("{'fUint64':1.8446744073709552e19}",
                         "$.fUint64: 1.8446744073709552e+19 is out of range for uint64");
    assert_types_refused("{'fInt32':-1e300}", "$.fInt32: -1e+300 is out of range for int32");
    /* jansson itself reads no JSON integer past 2^63 - 1: such uint64 values must be strings. */
    assert_refused_as(&pbt__types__descriptor, "{'fUint64':18446744073709551615}", RB_ERR_MALFORMED,
                      "$: not JSON: too big integer near '18446744073709551615' at line 1 column 31");
    assert_same_as(&pbt__types__descriptor, "{'fUint32':'-0','fInt32':-0}", "{}");
}

static void not_json(void **state)
{
    (void)state;
    assert_refused("{'rdNumber':", "$: not JSON: unexpected token near end of file at line 1 column 12");
    assert_refused("{} x", "$: not JSON: end of file expected near 'x' at line 1 column 4");
    assert_refused("", "$: not JSON: '[' or '{' expected near end of file at line 1 column 0");
    assert_refused(
        "{'narrative':'\\u0000'}",
        "$: not JSON: \\u0000 is not allowed without JSON_ALLOW_NUL near '\"\\u0000\"' at line 1 column 21");
    assert_refused("{'narrative':'\xff'}",
                   "$: not JSON: unable to decode byte 0xff near '\"' at line 1 column 14");
    assert_refused("{'narrative':'a\nb'}", "$: not JSON: unexpected newline near '\"a' at line 1 column 15");

    /* Not NUL-terminated: only len bytes are read. */
    ProtobufCMessage *m;
    char err[128];
    assert_ok(pbjson_parse(&rb__referral__descriptor, "{}garbage", 2, NULL, &m, err, sizeof err));
    protobuf_c_message_free_unpacked(m, NULL);
    /* A small error buffer gets a cut, NUL-terminated line; none at all is fine too. */
    assert_rb(pbjson_parse(&rb__referral__descriptor, "[]", 2, NULL, &m, err, 8), RB_ERR_MALFORMED);
    assert_string_equal(err, "$: expe");
    assert_null(m);
    assert_rb(pbjson_parse(&rb__referral__descriptor, "[]", 2, NULL, &m, NULL, 0), RB_ERR_MALFORMED);
}

static void limits(void **state)
{
    (void)state;
    /* Size: the limit itself is fine, a byte more is not. */
    size_t n = PBJSON_MAX_BYTES + 1;
    char *big = malloc(n), err[256];
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 2] = '}';
    ProtobufCMessage *m;
    assert_ok(pbjson_parse(&rb__referral__descriptor, big, n - 1, NULL, &m, err, sizeof err));
    protobuf_c_message_free_unpacked(m, NULL);
    assert_rb(pbjson_parse(&rb__referral__descriptor, big, n, NULL, &m, err, sizeof err), RB_ERR_TOO_BIG);
    assert_string_equal(err, "$: over 1048576 bytes");
    assert_null(m);
    free(big);

    /* Depth: PBJSON_MAX_DEPTH messages, the outermost included, and not one more. */
    char deep[1024] = "", path[1024] = "$";
    for (int i = 1; i < PBJSON_MAX_DEPTH; i++)
        strcat(deep, "{'child':");
    strcat(deep, "{'name':'leaf'}");
    for (int i = 1; i < PBJSON_MAX_DEPTH; i++)
        strcat(deep, "}");
    result_t res = {0};
    assert_ok(parse(&pbt__node__descriptor, deep, &res));
    char deeper[1100], want[1200];
    snprintf(deeper, sizeof deeper, "{'child':%s}", deep);
    for (int i = 0; i < PBJSON_MAX_DEPTH; i++)
        strcat(path, ".child");
    snprintf(want, sizeof want, "%s: nested deeper than %d messages", path, PBJSON_MAX_DEPTH);
    assert_refused_as(&pbt__node__descriptor, deeper, RB_ERR_TOO_BIG, want);

    /* pbjson_format has the same limit, for messages unpacked from binary. */
    char *text;
    assert_ok(pbjson_format(res.msg, 0, &text));
    pbjson_free(text);
    Pbt__Node top = PBT__NODE__INIT;
    top.child = (Pbt__Node *)res.msg;
    assert_rb(pbjson_format(&top.base, 0, &text), RB_ERR_TOO_BIG);
    assert_null(text);
    free_result(&res);
}

static void format_refuses_bad_utf8(void **state)
{
    (void)state;
    /* protobuf-c does not check UTF-8 when it unpacks, so a peer can send any bytes as a string. */
    Rb__Officer o = RB__OFFICER__INIT;
    o.name = "caf\xc3";
    char *text;
    assert_rb(pbjson_format(&o.base, 0, &text), RB_ERR_MALFORMED);
    assert_null(text);
    o.name = "\xed\xa0\x80"; /* a surrogate */
    assert_rb(pbjson_format(&o.base, 0, &text), RB_ERR_MALFORMED);
    o.name = "caf\xc3\xa9 \xf0\x9f\x98\x80";
    assert_formats_as(&o.base, 0, "{'name':'caf\xc3\xa9 \xf0\x9f\x98\x80'}");
    pbjson_free(NULL);
}

static void jansson_allocates_through_the_wiper(void **state)
{
    (void)state;
    pbjson_init();
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    assert_true(m != malloc && f != free);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_referral_round_trip),
        cmocka_unit_test(every_type_round_trip),
        cmocka_unit_test(bytes_are_base64),
        cmocka_unit_test(int64_is_a_string),
        cmocka_unit_test(enums_by_name_or_number),
        cmocka_unit_test(unknown_fields_refused_with_path),
        cmocka_unit_test(wrong_types_refused_with_path),
        cmocka_unit_test(each_field_once),
        cmocka_unit_test(snake_case_accepted),
        cmocka_unit_test(defaults_omitted),
        cmocka_unit_test(reals),
        cmocka_unit_test(out_of_range_integers),
        cmocka_unit_test(not_json),
        cmocka_unit_test(limits),
        cmocka_unit_test(format_refuses_bad_utf8),
        cmocka_unit_test(jansson_allocates_through_the_wiper),
    };
    return cmocka_run_group_tests_name("pbjson", tests, NULL, NULL);
}
