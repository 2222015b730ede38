/* publish_test.c -- the public transparency data (referral-publish, docs/PUBLISHING.md).
 *
 * Crafted small datasets go into a real adapter store the way the adapter writes it (the facts of a
 * parsed referral beside an outbox row, ACKs recorded on it), and publish_write turns them into files;
 * the planted-values test runs the whole path: real broker, rms-files and intake-sqlite adapters, the
 * referral-publish tool, and the page rendered in headless Chromium. */
#include <jansson.h>

#include "harness.h"
#include "pbjson.h"
#include "publish.h"

#define AS_OF  "2025-12-01"
#define DAY_MS 86400000LL

typedef struct {
    char *dir;
    astore_t *store;
    identity_t *me;
    int next_rd;
} fixture_t;

static fixture_t *fixture(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = test_mkdtemp();
    char path[700], err[256];
    assert_ok(astore_open(&f->store, test_path(path, sizeof path, "%s/adapter.db", f->dir), false, err,
                          sizeof err));
    assert_ok(
        identity_generate(&f->me, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", 1700000000, 10 * 365 * 86400ULL));
    f->next_rd = 100000;
    return f;
}

static void fixture_free(fixture_t **f_p)
{
    fixture_t *f = *f_p;
    astore_close(&f->store);
    identity_free(&f->me);
    test_rmdir(&f->dir);
    free(f);
    *f_p = NULL;
}

static const char *const class_names[] = {"PUBLICATION_CLASS_WITHHOLD", "PUBLICATION_CLASS_AGGREGATE_ONLY",
                                          "PUBLICATION_CLASS_DEIDENTIFIED"};

/* One referral queued as the adapter queues it (its facts from the parsed referral), answered with status
 * (0: not yet) after days. Every group has class cls. */
static void crafted(fixture_t *f, const char *month, const char *district, const char *agency, int cls,
                    int status, int days)
{
    char json[2048];
    int rd = f->next_rd++;
    const char *c = class_names[cls];
    int n = snprintf(
        json, sizeof json,
        "{\"schemaVersion\": 1, \"agencyOri\": \"ILCPD0000\", \"rdNumber\": \"JH%06d\", \"revision\": 1,"
        " \"incident\": {\"occurredAt\": \"%s-15T10:00:00-05:00\", \"district\": \"%s\","
        " \"categories\": [\"VIOLATION_CATEGORY_USE_OF_FORCE\"]},"
        " \"federalAgents\": [{\"agentRef\": \"A1\", \"agency\": \"FEDERAL_AGENCY_%s\", \"isSupervisor\": "
        "true,"
        " \"credentialCheck\": {\"result\": \"CREDENTIAL_RESULT_REFUSED\"}}],"
        " \"publication\": {\"timePlace\": \"%s\", \"agencies\": \"%s\", \"injuries\": \"%s\","
        " \"credentials\": \"%s\", \"evidence\": \"%s\", \"charges\": \"%s\", \"outcome\": \"%s\"}}",
        rd, month, district, agency, c, c, c, c, c, c, c);
    ProtobufCMessage *m;
    char problems[512];
    assert_ok(pbjson_parse(&rb__referral__descriptor, json, (size_t)n, NULL, &m, problems, sizeof problems));
    char *facts = publish_facts((const Rb__Referral *)m);
    assert_non_null(facts);
    protobuf_c_message_free_unpacked(m, NULL);
    msg_id_t id;
    rbcrypto_random(id.bytes, sizeof id.bytes);
    content_id_t content = {.agency = "ILCPD0000", .revision = 1};
    snprintf(content.rd_number, sizeof content.rd_number, "JH%06d", rd);
    uint8_t sha[RB_HASH_BYTES] = {0}, env[1] = {0};
    int64_t queued = 1760000000000LL;
    assert_ok(astore_outbox_add(f->store, &id, RB__KIND__KIND_REFERRAL, env, sizeof env, &content, sha,
                                "test", facts, queued));
    free(facts);
    if (status != 0)
        assert_ok(astore_outbox_acked(f->store, &id, status, "SAO-1", "{}", queued + days * DAY_MS + 1000));
}

static publish_report_t publish(fixture_t *f, const char *sub, int threshold, const char *areas)
{
    char out[700], err[512];
    publish_options_t o = {.threshold = threshold, .as_of = AS_OF, .areas = areas};
    publish_report_t rep;
    rb_err rc = publish_write(f->store, f->me, &o, test_path(out, sizeof out, "%s/%s", f->dir, sub), &rep,
                              err, sizeof err);
    if (rc != RB_OK)
        fail_msg("publish_write: %s", err);
    return rep;
}

static json_t *load_json(fixture_t *f, const char *sub, const char *name)
{
    char path[800];
    json_error_t e;
    json_t *j = json_load_file(test_path(path, sizeof path, "%s/%s/%s", f->dir, sub, name), 0, &e);
    if (j == NULL)
        fail_msg("%s: %s", path, e.text);
    return j;
}

/* summary.json's count at table.counts.label (or table.total when label is NULL), as text: "7" or "<5". */
static void summary_cell(json_t *summary, const char *table, const char *label, char *out, size_t cap)
{
    json_t *t = json_object_get(summary, table);
    json_t *v = label ? json_object_get(json_object_get(t, "counts"), label) : json_object_get(t, "total");
    if (json_is_integer(v))
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    else
        snprintf(out, cap, "%s", json_is_string(v) ? json_string_value(v) : "missing");
}

static void assert_cell(json_t *summary, const char *table, const char *label, const char *want)
{
    char got[32];
    summary_cell(summary, table, label, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("summary %s %s: %s, expected %s", table, label ? label : "total", got, want);
}

/* The rows of incidents.json whose field equals value. */
static int rows_with(json_t *incidents, const char *field, const char *value)
{
    int n = 0;
    json_t *rows = json_object_get(incidents, "rows");
    for (size_t i = 0; i < json_array_size(rows); i++) {
        const char *v = json_string_value(json_object_get(json_array_get(rows, i), field));
        n += v != NULL && strcmp(v, value) == 0;
    }
    return n;
}

/* Five share month, district and agency: published as they are. One alone in another district is widened
 * to the quarter, then to its area, and still alone there is withheld. */
static void lone_row_withheld(void **state)
{
    (void)state;
    fixture_t *f = fixture();
    for (int i = 0; i < 5; i++)
        crafted(f, "2025-09", "004", "CBP", 2, 1, 3);
    crafted(f, "2025-09", "011", "CBP", 2, 1, 3);
    publish_report_t rep = publish(f, "out", 5, NULL);
    assert_int_equal(rep.referrals, 6);
    assert_int_equal(rep.rows, 5);
    assert_int_equal(rep.coarsened, 0);
    assert_int_equal(rep.withheld, 1);
    json_t *rows = load_json(f, "out", "incidents.json");
    assert_int_equal(json_array_size(json_object_get(rows, "rows")), 5);
    assert_int_equal(rows_with(rows, "period", "2025-09"), 5);
    assert_int_equal(rows_with(rows, "place", "011"), 0);
    json_t *summary = load_json(f, "out", "summary.json");
    assert_int_equal(json_integer_value(json_object_get(summary, "rows_withheld")), 1);
    json_decref(rows);
    json_decref(summary);
    fixture_free(&f);
}

/* Three in July and two in August: each month alone is too few, the quarter is enough. Then three in 004
 * and two in 005 of one quarter: enough only as their area. */
static void rows_widened_to_quarter_then_area(void **state)
{
    (void)state;
    fixture_t *f = fixture();
    for (int i = 0; i < 3; i++)
        crafted(f, "2025-07", "004", "ICE_ERO", 2, 0, 0);
    for (int i = 0; i < 2; i++)
        crafted(f, "2025-08", "004", "ICE_ERO", 2, 0, 0);
    for (int i = 0; i < 3; i++)
        crafted(f, "2025-10", "007", "CBP", 2, 2, 10);
    for (int i = 0; i < 2; i++)
        crafted(f, "2025-11", "008", "CBP", 2, 2, 10);
    publish_report_t rep = publish(f, "out", 5, "007=Area 1; 008=Area 1;004=Area 2");
    assert_int_equal(rep.rows, 10);
    assert_int_equal(rep.coarsened, 10);
    assert_int_equal(rep.withheld, 0);
    json_t *rows = load_json(f, "out", "incidents.json");
    assert_int_equal(rows_with(rows, "period", "2025-Q3"), 5);
    assert_int_equal(rows_with(rows, "place", "004"), 5);
    assert_int_equal(rows_with(rows, "period", "2025-Q4"), 5);
    assert_int_equal(rows_with(rows, "place", "Area 1"), 5);
    assert_int_equal(rows_with(rows, "status", "rejected"), 5);
    assert_int_equal(rows_with(rows, "status", "pending"), 5);
    json_decref(rows);
    /* Without an area for them, the place widens to the whole city. */
    (void)publish(f, "citywide", 5, NULL);
    rows = load_json(f, "citywide", "incidents.json");
    assert_int_equal(rows_with(rows, "place", "citywide"), 5);
    json_decref(rows);
    fixture_free(&f);
}

/* 7, 1 and 6 by district: the 1 is hidden ("<5"), and so is the 6 ("suppressed"), else 14 - 7 - 6 gives the
 * 1 back. Cells that nothing can hide well enough are published only together, without their labels. */
static void small_counts_suppressed_with_complements(void **state)
{
    (void)state;
    fixture_t *f = fixture();
    for (int i = 0; i < 7; i++)
        crafted(f, "2025-09", "004", "CBP", 1, 1, 2);
    crafted(f, "2025-09", "005", "CBP", 1, 1, 2);
    for (int i = 0; i < 6; i++)
        crafted(f, "2025-10", "006", "ICE_HSI", 1, 0, 0);
    publish(f, "out", 5, NULL);
    json_t *s = load_json(f, "out", "summary.json");
    assert_cell(s, "by_district", NULL, "14");
    assert_cell(s, "by_district", "004", "7");
    assert_cell(s, "by_district", "005", "<5");
    assert_cell(s, "by_district", "006", "suppressed");
    assert_cell(s, "by_month", "2025-09", "8");
    assert_cell(s, "by_month", "2025-10", "6");
    assert_cell(s, "by_agency", "CBP", "8");
    assert_cell(s, "by_status", "pending", "6");
    assert_cell(s, "by_status", "accepted", "8");
    assert_cell(s, "by_status", "rejected", "0");
    assert_null(json_object_get(json_object_get(s, "by_district"), "suppressed_together"));
    json_decref(s);
    /* Aggregate-only: counted, never a row. */
    json_t *rows = load_json(f, "out", "incidents.json");
    assert_int_equal(json_array_size(json_object_get(rows, "rows")), 0);
    json_decref(rows);
    /* 1, 1 and 1: a total under the threshold is hidden, and three hidden ones would still be ones: they go
     * out together, unlabelled. */
    fixture_t *g = fixture();
    crafted(g, "2025-09", "001", "CBP", 1, 1, 2);
    crafted(g, "2025-09", "002", "CBP", 1, 1, 2);
    crafted(g, "2025-09", "003", "CBP", 1, 1, 2);
    publish(g, "five", 5, NULL);
    s = load_json(g, "five", "summary.json");
    assert_cell(s, "by_district", NULL, "<5");
    assert_cell(s, "by_district", "001", "missing");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s, "by_district"), "suppressed_together")), "<5");
    assert_string_equal(json_string_value(json_object_get(s, "referrals")), "<5");
    json_decref(s);
    /* With threshold 3 and a 4 beside them, the ones hidden with the 4 are each between 1 and 2, the 4
     * at least 3: nothing follows. */
    for (int i = 0; i < 4; i++)
        crafted(g, "2025-09", "009", "CBP", 1, 1, 2);
    publish(g, "three", 3, NULL);
    s = load_json(g, "three", "summary.json");
    assert_cell(s, "by_district", NULL, "7");
    assert_cell(s, "by_district", "001", "<3");
    assert_cell(s, "by_district", "002", "<3");
    assert_cell(s, "by_district", "003", "<3");
    assert_cell(s, "by_district", "009", "suppressed");
    json_decref(s);
    fixture_free(&g);
    fixture_free(&f);
}

/* How many values hidden cell `at` can take, over every way of filling the hidden cells within what their
 * marks say ("<T": 1 to T-1, "suppressed": T or more) that adds up to the total less the shown counts: by
 * brute force, independent of how publish.c reasons. */
static void fill(const int *lo, const int *hi, int n, int i, int left, int *vals, bool seen[][64])
{
    if (i == n) {
        if (left == 0)
            for (int k = 0; k < n; k++)
                seen[k][vals[k]] = true;
        return;
    }
    for (int v = lo[i]; v <= hi[i] && v <= left; v++) {
        vals[i] = v;
        fill(lo, hi, n, i + 1, left - v, vals, seen);
    }
}

static uint32_t xorshift(uint32_t x)
{
    x ^= x << 13;
    x ^= x >> 17;
    return x ^ (x << 5);
}

/* Random small tables by district, threshold 3: no hidden count may follow from the total and the rest. */
static void suppression_never_gives_a_count_back(void **state)
{
    (void)state;
    uint32_t seed = 20251201; /* xorshift32: the same 40 tables every run, so a failure repeats */
    for (int round = 0; round < 40; round++) {
        fixture_t *f = fixture();
        static const char *const districts[] = {"001", "002", "003", "004", "005"};
        for (int d = 0; d < 5; d++)
            for (int k = (int)((seed = xorshift(seed)) % 9); k > 0; k--)
                crafted(f, "2025-09", districts[d], "CBP", 1, 1, 1);
        publish(f, "out", 3, NULL);
        json_t *s = load_json(f, "out", "summary.json");
        json_t *t = json_object_get(s, "by_district"), *counts = json_object_get(t, "counts");
        if (!json_is_integer(json_object_get(t, "total"))) { /* under the threshold: nothing to give back */
            json_decref(s);
            fixture_free(&f);
            continue;
        }
        int left = (int)json_integer_value(json_object_get(t, "total")), lo[5], hi[5], n = 0, vals[5];
        for (int d = 0; d < 5; d++) {
            json_t *c = json_object_get(counts, districts[d]);
            if (json_is_integer(c)) {
                left -= (int)json_integer_value(c);
            } else if (json_is_string(c)) {
                bool under = strcmp(json_string_value(c), "<3") == 0;
                lo[n] = under ? 1 : 3;
                hi[n++] = under ? 2 : 40;
            }
        }
        bool seen[5][64] = {{false}};
        fill(lo, hi, n, 0, left, vals, seen);
        for (int k = 0; k < n; k++) {
            int values = 0;
            for (int v = 0; v < 64; v++)
                values += seen[k][v];
            if (values == 1)
                fail_msg("round %d: hidden cell %d of %d can only be one value", round, k, n);
        }
        json_decref(s);
        fixture_free(&f);
    }
}

/* What a class allows: withheld groups appear nowhere, not even counted; the default is to withhold. */
static void publication_class_decides(void **state)
{
    (void)state;
    fixture_t *f = fixture();
    for (int i = 0; i < 5; i++)
        crafted(f, "2025-09", "004", "CBP", 2, 1, 1);
    for (int i = 0; i < 5; i++)
        crafted(f, "2025-09", "006", "ICE_HSI", 0, 1, 1);
    publish_report_t rep = publish(f, "out", 5, NULL);
    assert_int_equal(rep.rows, 5);
    json_t *s = load_json(f, "out", "summary.json");
    assert_int_equal(json_integer_value(json_object_get(s, "referrals")), 5);
    assert_cell(s, "by_district", NULL, "5");
    assert_cell(s, "by_district", "006", "missing");
    assert_cell(s, "by_agency", "ICE HSI", "missing");
    json_decref(s);
    /* A referral without publication settings keeps no values at all. */
    ProtobufCMessage *m;
    char problems[256];
    const char *bare = "{\"schemaVersion\": 1, \"incident\": {\"district\": \"004\", \"occurredAt\": "
                       "\"2025-09-01T00:00:00-05:00\"}, \"narrative\": \"PLANT\"}";
    assert_ok(
        pbjson_parse(&rb__referral__descriptor, bare, strlen(bare), NULL, &m, problems, sizeof problems));
    char *facts = publish_facts((const Rb__Referral *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    assert_string_equal(facts,
                        "{\"agencies\":{\"class\":0},\"charges\":{\"class\":0},\"credentials\":{\"class\":0},"
                        "\"evidence\":{\"class\":0},\"injuries\":{\"class\":0},\"outcome\":{\"class\":0},"
                        "\"time_place\":{\"class\":0}}");
    free(facts);
    fixture_free(&f);
}

static void same_store_same_bytes(void **state)
{
    (void)state;
    fixture_t *f = fixture();
    for (int i = 0; i < 12; i++)
        crafted(f, i % 2 ? "2025-09" : "2025-10", i % 3 ? "004" : "005", i % 4 ? "CBP" : "ICE_ERO",
                2 - (i % 5 == 0), i % 3, i);
    publish(f, "a", 3, "004=South;005=South");
    publish(f, "b", 3, "004=South;005=South");
    char cmd[1600];
    assert_int_equal(system(test_path(cmd, sizeof cmd, "diff -r '%s/a' '%s/b'", f->dir, f->dir)), 0);
    /* And a page that is whole: four charts and the table. */
    size_t len;
    char *html = test_read_file(test_path(cmd, sizeof cmd, "%s/a/index.html", f->dir), &len);
    assert_non_null(html);
    int figures = 0;
    for (const char *p = html; (p = strstr(p, "<figure>")) != NULL; p++)
        figures++;
    assert_int_equal(figures, 4);
    assert_non_null(strstr(html, "Data as of " AS_OF));
    assert_null(strstr(html, "<script"));
    free(html);
    fixture_free(&f);
}

/* Flips one byte of the file at path (data, len: its content), checks verify fails, puts it back. */
static void change_caught(const char *dir, const card_t *card, const char *path, char *data, size_t len,
                          size_t i)
{
    char err[512];
    data[i] ^= 0x20;
    test_write_file(path, data, len, 0644);
    if (publish_verify(dir, card, err, sizeof err) == RB_OK)
        fail_msg("%s: byte %zu changed and the manifest still verifies", path, i);
    data[i] ^= 0x20;
    test_write_file(path, data, len, 0644);
}

/* The manifest holds for the files as written, and fails after any byte of any file changes, a file is
 * added or removed, or another card is given. */
static void manifest_verifies_and_catches_changes(void **state)
{
    (void)state;
    fixture_t *f = fixture();
    for (int i = 0; i < 6; i++)
        crafted(f, "2025-09", "004", "CBP", 2, 1, 3);
    publish(f, "out", 5, NULL);
    char dir[700], path[800], err[512];
    test_path(dir, sizeof dir, "%s/out", f->dir);
    const card_t *card = identity_card(f->me);
    if (publish_verify(dir, card, err, sizeof err) != RB_OK)
        fail_msg("%s", err);
    static const char *const names[] = {"incidents.csv", "incidents.json", "index.html", "summary.json",
                                        "MANIFEST.json"};
    for (size_t k = 0; k < 5; k++) {
        size_t len;
        char *data = test_read_file(test_path(path, sizeof path, "%s/%s", dir, names[k]), &len);
        assert_non_null(data);
        /* Every byte of the manifest, every 13th byte of the others, and their last. */
        for (size_t i = 0; i < len; i += k == 4 ? 1 : 13)
            change_caught(dir, card, path, data, len, i);
        change_caught(dir, card, path, data, len, len - 1);
        free(data);
    }
    assert_ok(publish_verify(dir, card, err, sizeof err));
    test_write_file(test_path(path, sizeof path, "%s/extra.html", dir), "x", 1, 0644);
    assert_rb(publish_verify(dir, card, err, sizeof err), RB_ERR_HASH_MISMATCH);
    assert_non_null(strstr(err, "extra.html: not in the manifest"));
    unlink(path);
    test_path(path, sizeof path, "%s/summary.json", dir);
    char moved[820];
    assert_int_equal(rename(path, test_path(moved, sizeof moved, "%s/moved", f->dir)), 0);
    assert_rb(publish_verify(dir, card, err, sizeof err), RB_ERR_HASH_MISMATCH);
    assert_int_equal(rename(moved, path), 0);
    identity_t *other;
    assert_ok(identity_generate(&other, "cpd-rms", CARD_ROLE_SOURCE, "ILCPD0000", 1700000000, 86400));
    assert_rb(publish_verify(dir, identity_card(other), err, sizeof err), RB_ERR_BAD_SIGNATURE);
    identity_free(&other);
    assert_ok(publish_verify(dir, card, err, sizeof err));
    fixture_free(&f);
}

/* Headless Chromium (Debian's, installed when missing) renders the page without an error, and a screenshot
 * is left under the build folder for people to look at. */
static void page_renders_in_chromium(const char *page, const char *dir)
{
    char cmd[4000];
    assert_int_equal(
        system("command -v chromium >/dev/null || apt-get install -y chromium >/dev/null 2>&1 || "
               "{ apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1; }"),
        0);
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build/release";
    char shot[700];
    test_path(shot, sizeof shot, "%s/publish", build);
    mkdir(shot, 0755);
    test_path(shot, sizeof shot, "%s/publish/index.png", build);
    unlink(shot);
    /* The background-networking flags keep Chromium from calling out; the page itself must need nothing. */
    const char *flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                        "--disable-background-networking --disable-component-update --disable-sync "
                        "--enable-logging=stderr --v=0 --window-size=1100,2600";
    test_path(cmd, sizeof cmd,
              "timeout 120 chromium %s --user-data-dir='%s/chrome' --screenshot='%s' 'file://%s/index.html' "
              ">'%s/chrome.out' 2>&1 && timeout 120 chromium %s --user-data-dir='%s/chrome' --dump-dom "
              "'file://%s/index.html' >'%s/dom.html' 2>'%s/chrome-dom.out'",
              flags, dir, shot, page, dir, flags, dir, page, dir, dir);
    if (system(cmd) != 0) {
        test_path(cmd, sizeof cmd, "tail -n 30 '%s/chrome.out' >&2", dir);
        (void)!system(cmd);
        fail_msg("chromium did not render %s/index.html", page);
    }
    struct stat st;
    assert_int_equal(stat(shot, &st), 0);
    assert_true(st.st_size > 10000);
    size_t len;
    char *png = test_read_file(shot, &len);
    assert_non_null(png);
    assert_memory_equal(png, "\x89PNG", 4);
    free(png);
    /* The page's own messages (console errors, failed loads) are the lines naming it. */
    test_path(cmd, sizeof cmd,
              "grep -h -E 'CONSOLE|Uncaught|net::ERR|Failed to load' '%s/chrome.out' '%s/chrome-dom.out' >&2",
              dir, dir);
    assert_int_not_equal(system(cmd), 0);
    test_path(cmd, sizeof cmd,
              "grep -c '<svg' '%s/dom.html' | grep -qx '[1-9][0-9]*' && grep -q '<table>' '%s/dom.html'", dir,
              dir);
    assert_int_equal(system(cmd), 0);
    print_message("# screenshot of the page: %s\n", shot);
}

/* Every sample, with a distinctive value planted in every identifying and free-text field and every group
 * allowed, goes through real adapters; none of those values, nor RD numbers, star numbers, exact times,
 * coordinates or evidence hashes, reaches the published files or the facts the source keeps. */
static void planted_values_never_published(void **state)
{
    (void)state;
    harness_t *h = harness_start(NULL);
    int src = harness_adapter(h), snk = harness_adapter(h);
    harness_adapter_start(h, src, "rms-files");
    harness_adapter_start(h, snk, "intake-sqlite");
    char cmd[4000];
    /* Each sample twice, the twin under another RD number (JH5... -> JH9...), so that with threshold 2 every
     * case has a row. */
    test_path(cmd, sizeof cmd,
              "mkdir -p '%s/drop' && for f in adapters/samples/valid/*.json; do b=$(basename $f); "
              "jq -f tests/system/publish_plant.jq $f >'%s/'$b && cp '%s/'$b '%s/drop/'$b.part && "
              "mv '%s/drop/'$b.part '%s/drop/'$b && jq '.rdNumber |= sub(\"^JH5\"; \"JH9\") | "
              "if .references then .references.rdNumber |= sub(\"^JH5\"; \"JH9\") else . end' '%s/'$b "
              ">'%s/drop/twin-'$b.part && mv '%s/drop/twin-'$b.part '%s/drop/twin-'$b || exit 1; done",
              h->dir, h->dir, h->dir, h->dir, h->dir, h->dir, h->dir, h->dir, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    harness_wait_count(h, "drop/acks", ".json", 16, 30000);
    harness_adapter_stop(h, src, SIGTERM);
    harness_adapter_stop(h, snk, SIGTERM);
    /* What identifies someone but has a fixed form, so was not replaced by a plant: RD numbers, star numbers,
     * dates of birth, beats, exact times, coordinates, evidence hashes. */
    test_path(
        cmd, sizeof cmd,
        "jq -r '[.rdNumber, (.. | objects | (.starNumber?, .officerStar?, .dateOfBirth?, .beat?)"
        " | select(. != null and . != \"\")), (.. | strings | "
        "select(test(\"^[0-9]{4}-[0-9]{2}-[0-9]{2}T\"))),"
        " (.incident.location // {} | .[] | tostring), (.evidence // [] | .[] | .sha256 // empty)] | .[]' "
        "'%s/drop/sent/'*.json | sort -u >'%s/needles.txt' && test $(wc -l <'%s/needles.txt') -gt 40",
        h->dir, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    /* Threshold 2: each case and its twin make a row each, so that every field is written somewhere. */
    FILE *cfg = fopen(h->adapters[src].config, "a");
    assert_non_null(cfg);
    fputs("[publish]\nthreshold = 2\n", cfg);
    assert_int_equal(fclose(cfg), 0);
    test_path(
        cmd, sizeof cmd,
        "'%s/referral-publish' --config '%s' --out '%s/publish' --as-of 2025-11-30 >'%s/publish.out' 2>&1 "
        "|| { cat '%s/publish.out' >&2; exit 1; }",
        h->bin, h->adapters[src].config, h->dir, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    test_path(cmd, sizeof cmd, "grep -q '^%s/publish: 12 rows published' '%s/publish.out'", h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    /* Nothing planted in any file, nor in the facts kept in the store. */
    test_path(cmd, sizeof cmd,
              "sqlite3 '%s/adapter-%d-data/adapter.db' 'SELECT facts FROM outbox WHERE facts IS NOT NULL' "
              ">'%s/facts.txt' && test $(wc -l <'%s/facts.txt') = 16",
              h->dir, src, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    test_path(cmd, sizeof cmd, "grep -r -a -l PLANT '%s/publish' '%s/facts.txt' >&2", h->dir, h->dir);
    assert_int_not_equal(system(cmd), 0);
    test_path(cmd, sizeof cmd, "grep -q PLANT-narrative '%s/drop/sent/'*.json", h->dir); /* the plant took */
    assert_int_equal(system(cmd), 0);
    test_path(cmd, sizeof cmd,
              "grep -a -F -f '%s/needles.txt' '%s/publish/incidents.csv' '%s/publish/incidents.json' "
              "'%s/publish/summary.json' '%s/publish/index.html' '%s/facts.txt' >&2",
              h->dir, h->dir, h->dir, h->dir, h->dir, h->dir);
    assert_int_not_equal(system(cmd), 0);
    /* The tool verifies what it wrote. */
    test_path(cmd, sizeof cmd,
              "'%s/referral-publish' verify --dir '%s/publish' --card '%s/trust-sink/cpd.card' >/dev/null",
              h->bin, h->dir, h->dir);
    assert_int_equal(system(cmd), 0);
    char page[700];
    page_renders_in_chromium(test_path(page, sizeof page, "%s/publish", h->dir), h->dir);
    harness_stop(&h);
}

int main(void)
{
    assert_ok(rbcrypto_init());
    pbjson_init(); /* this test reads the files with jansson too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lone_row_withheld),
        cmocka_unit_test(rows_widened_to_quarter_then_area),
        cmocka_unit_test(small_counts_suppressed_with_complements),
        cmocka_unit_test(suppression_never_gives_a_count_back),
        cmocka_unit_test(publication_class_decides),
        cmocka_unit_test(same_store_same_bytes),
        cmocka_unit_test(manifest_verifies_and_catches_changes),
        cmocka_unit_test_teardown(planted_values_never_published, harness_teardown),
    };
    return cmocka_run_group_tests_name("publish", tests, NULL, NULL);
}
