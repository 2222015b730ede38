/* settings_test.c -- the one configuration scheme (broker/settings.h): how a table of settings reads a
 * file, that every table's defaults are values its own rows take, and that what the documentation says
 * of the settings is what the tables hold. The documentation checked: the manual pages (the tools'
 * --help, from $BIN), docs/ADAPTERS.md, docs/PUBLISHING.md and docs/PROTOCOL.md ("Broker settings"),
 * whose INI blocks must list exactly their sections' rows, the example configs of broker/dist and
 * adapters/dist, which list every setting, and every `[section] key` any document names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "adapter.h"
#include "config.h"
#include "connector.h"
#include "settings.h"
#include "testutil.h"

/* --- the mechanism ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t count;
    char name[9];
} sample_t;

static const setting_t sample_rows[] = {
    SETTING_INT_ROW("s", "count", sample_t, count, 1, 100, "7", "a count"),
    SETTING_TEXT_ROW("s", "name", sample_t, name, 1, NULL, NULL, "a name, required"),
    {0},
};

/* Applies text (an INI file) to a sample; err holds the message, "FILE: " cut off. */
static rb_err apply(const char *text, sample_t *out, char *err, size_t errlen)
{
    char *dir = test_mkdtemp(), path[600];
    test_write_file(test_path(path, sizeof path, "%s/s.ini", dir), text, strlen(text), 0600);
    settings_t *s;
    char full[700] = "";
    rb_err rc = settings_load(&s, path, full, sizeof full);
    static const setting_t *const tables[] = {sample_rows, NULL};
    if (rc == RB_OK && (rc = settings_check_sections(s, tables, full, sizeof full)) == RB_OK)
        rc = settings_apply(s, sample_rows, out, full, sizeof full);
    settings_free(&s);
    size_t cut = strncmp(full, path, strlen(path)) == 0 ? strlen(path) + 2 : 0;
    snprintf(err, errlen, "%s", full + (cut <= strlen(full) ? cut : 0));
    test_rmdir(&dir);
    return rc;
}

static void a_table_reads_a_file(void **state)
{
    (void)state;
    static const struct {
        const char *text, *says; /* says: NULL when it loads */
        int64_t count;
    } cases[] = {
        {"[s]\nname = x\n", NULL, 7},
        {"[s]\nname = x\ncount = 100\n", NULL, 100},
        {"[s]\nname = x\ncount = 3\ncount = 4\n", NULL, 4},
        {"[s]\nname = x\ncount = 101\n", "line 3: [s] count must be a whole number from 1 to 100", 0},
        {"[s]\nname = x\ncount = 5x\n", "line 3: [s] count must be a whole number from 1 to 100", 0},
        {"[s]\nname = x\ncont = 5\n", "line 3: unknown setting [s] cont", 0},
        {"[s]\nname = x\n[t]\ncount = 5\n", "line 3: unknown section [t]", 0},
        {"[s]\ncount = 5\n", "[s] name is required", 0},
        {"[s]\nname =\n", "line 2: [s] name is required", 0},
        {"[s]\nname = 123456789\n", "line 2: [s] name must be 1 to 8 characters", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sample_t got;
        char err[700];
        rb_err rc = apply(cases[i].text, &got, err, sizeof err);
        if (cases[i].says == NULL) {
            if (rc != RB_OK)
                fail_msg("%s: %s", cases[i].text, err);
            assert_int_equal(got.count, cases[i].count);
            assert_string_equal(got.name, "x");
        } else {
            assert_int_equal(rc, RB_ERR_USAGE);
            assert_string_equal(err, cases[i].says);
        }
    }
}

/* --- the tables --------------------------------------------------------------------------------------- */

/* Every table of the program: the broker's, the adapter's, each connector's; NULL-terminated. */
static const setting_t *const *all_tables(void)
{
    static const setting_t *tables[16];
    size_t n = 0;
    tables[n++] = config_settings;
    tables[n++] = adapter_settings;
    for (size_t i = 0; connectors[i] != NULL && n + 1 < sizeof tables / sizeof tables[0]; i++)
        tables[n++] = connectors[i]->settings;
    tables[n] = NULL;
    return tables;
}

static const setting_t *row_named(const char *section, const char *name)
{
    for (const setting_t *const *t = all_tables(); *t != NULL; t++)
        for (const setting_t *r = *t; r->name != NULL; r++)
            if (strcmp(r->section, section) == 0 && strcmp(r->name, name) == 0)
                return r;
    return NULL;
}

static bool section_known(const char *section)
{
    for (const setting_t *const *t = all_tables(); *t != NULL; t++)
        for (const setting_t *r = *t; r->name != NULL; r++)
            if (strcmp(r->section, section) == 0)
                return true;
    return false;
}

/* Each row's default, written in a file, is a value the row takes (and a required row has no default). */
static void defaults_are_values_their_rows_take(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), path[600];
    for (const setting_t *const *t = all_tables(); *t != NULL; t++) {
        for (const setting_t *r = *t; r->name != NULL; r++) {
            assert_non_null(r->help);
            assert_true(r->type == SETTING_INT || r->type == SETTING_TEXT);
            if (r->dflt == NULL || r->dflt[0] == '\0')
                continue;
            char text[300], err[700];
            int len = snprintf(text, sizeof text, "[%s]\n%s = %s\n", r->section, r->name, r->dflt);
            test_write_file(test_path(path, sizeof path, "%s/d.ini", dir), text, (size_t)len, 0600);
            settings_t *s;
            assert_ok(settings_load(&s, path, err, sizeof err));
            void *into = calloc(1, 64 * 1024);
            /* One row alone: its required neighbours are not in this file. */
            setting_t one[2] = {*r, {0}};
            rb_err rc = settings_apply(s, one, into, err, sizeof err);
            settings_free(&s);
            free(into);
            if (rc != RB_OK)
                fail_msg("the default of [%s] %s: %s", r->section, r->name, err);
        }
    }
    test_rmdir(&dir);
}

/* --- the documentation ------------------------------------------------------------------------------ */

typedef struct {
    char section[32], name[64];
} pair_t;

typedef struct {
    pair_t items[512];
    size_t n;
} pairs_t;

static void add_pair(pairs_t *p, const char *section, const char *name, size_t name_len)
{
    assert_true(p->n < sizeof p->items / sizeof p->items[0]);
    snprintf(p->items[p->n].section, sizeof p->items[p->n].section, "%s", section);
    snprintf(p->items[p->n].name, sizeof p->items[p->n].name, "%.*s", (int)name_len, name);
    p->n++;
}

static bool has_pair(const pairs_t *p, const char *section, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->items[i].section, section) == 0 && strcmp(p->items[i].name, name) == 0)
            return true;
    return false;
}

static size_t name_len(const char *s)
{
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-");
}

/* One line of INI into pairs: "[section]", "key = value" or ";key = value" (a setting shown commented
 * out, at its default; "; text" is prose). */
static void ini_line(const char *line, char *section, size_t cap, pairs_t *p)
{
    line += strspn(line, " \t");
    if (line[0] == '[') {
        snprintf(section, cap, "%.*s", (int)name_len(line + 1), line + 1);
        return;
    }
    if (line[0] == ';')
        line++;
    size_t n = name_len(line);
    if (n > 0 && line[n + strspn(line + n, " \t")] == '=' && section[0] != '\0')
        add_pair(p, section, line, n);
}

/* The settings in file: the whole of it when it is a config, its ```ini blocks when it is Markdown. */
static void ini_pairs(const char *file, pairs_t *p)
{
    size_t len;
    char *text = test_read_file(file, &len);
    if (text == NULL)
        fail_msg("%s: cannot read it", file);
    bool markdown = strstr(file, ".md") != NULL, in_block = !markdown;
    char section[32] = "";
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (markdown && strncmp(line, "```", 3) == 0) {
            in_block = strncmp(line, "```ini", 6) == 0;
            section[0] = '\0';
        } else if (in_block) {
            ini_line(line, section, sizeof section, p);
        }
    }
    free(text);
}

/* Where text names "[section] key" for a section some table has (after a backtick in Markdown, where
 * error messages quoted name keys that are wrong on purpose, or anywhere in a manual page), and the
 * lists "[section] a, b (note), c". "[publish] section" is the section itself. */
static void named_pairs(const char *text, bool markdown, pairs_t *p)
{
    for (const char *at = strchr(text, '['); at != NULL; at = strchr(at + 1, '[')) {
        char section[32];
        size_t n = name_len(at + 1);
        if ((markdown && (at == text || at[-1] != '`')) || at[1 + n] != ']' || at[2 + n] != ' ' ||
            n >= sizeof section)
            continue;
        snprintf(section, sizeof section, "%.*s", (int)n, at + 1);
        if (!section_known(section))
            continue;
        for (const char *w = at + n + 3;;) {
            size_t k = name_len(w);
            if (k == 0 || strncmp(w, "section", k) == 0)
                break;
            add_pair(p, section, w, k);
            w += k + strspn(w + k, " \n");
            while (*w == '(' && strchr(w, ')') != NULL) {
                w = strchr(w, ')') + 1;
                w += strspn(w, " \n");
            }
            if (*w != ',')
                break;
            w += 1 + strspn(w + 1, " \n");
        }
    }
}

/* The text of `$BIN/TOOL --help`, which make install turns into TOOL(1). Caller frees. */
static char *manual_page(const char *tool)
{
    const char *bin = getenv("BIN") != NULL ? getenv("BIN") : "bin";
    char command[600];
    snprintf(command, sizeof command, "%s/%s --help", bin, tool);
    FILE *f = popen(command, "r");
    assert_non_null(f);
    size_t cap = 64 * 1024, len = 0;
    char *text = calloc(1, cap);
    assert_non_null(text);
    size_t got;
    while (len + 1 < cap && (got = fread(text + len, 1, cap - 1 - len, f)) > 0)
        len += got;
    assert_int_equal(pclose(f), 0);
    return text;
}

/* Counts and prints what doc says that no row is, and, for each of sections (NULL-terminated; NULL: none),
 * every row of it that doc does not list. */
static int disagreements(const char *doc, const pairs_t *p, const char *const *sections)
{
    int n = 0;
    for (size_t i = 0; i < p->n; i++)
        if (row_named(p->items[i].section, p->items[i].name) == NULL) {
            print_message("# %s names [%s] %s, which is no setting\n", doc, p->items[i].section,
                          p->items[i].name);
            n++;
        }
    for (const char *const *s = sections; s != NULL && *s != NULL; s++)
        for (const setting_t *const *t = all_tables(); *t != NULL; t++)
            for (const setting_t *r = *t; r->name != NULL; r++)
                if (strcmp(r->section, *s) == 0 && !has_pair(p, r->section, r->name)) {
                    print_message("# %s does not list [%s] %s\n", doc, r->section, r->name);
                    n++;
                }
    return n;
}

static int check_ini(const char *file, const char *const *sections)
{
    pairs_t p = {.n = 0};
    ini_pairs(file, &p);
    return disagreements(file, &p, sections);
}

static int check_sink_example(const char *file, const char *const *sections)
{
    pairs_t p = {.n = 0};
    ini_pairs(file, &p);
    if (has_pair(&p, "adapter", "recipient")) {
        print_message("# %s, a sink's, lists [adapter] recipient\n", file);
        return 1;
    }
    add_pair(&p, "adapter", "recipient", strlen("recipient"));
    return disagreements(file, &p, sections);
}

/* The INI blocks of the documents, and the example configs, that list a whole table. */
static void documents_list_every_setting(void **state)
{
    (void)state;
    static const char *const adapters[] = {"adapter",      "rms-files",     "rms-http",
                                           "intake-files", "intake-sqlite", NULL};
    static const char *const publish[] = {"publish", NULL};
    static const char *const broker[] = {"broker", "delivery", "metrics", "keys", NULL};
    /* A sink's example leaves out what only a source has: recipient, and [publish]. */
    static const struct {
        const char *file;
        const char *const sections[4];
        bool sink;
    } examples[] = {
        {"adapters/dist/cpd-rms.conf", {"adapter", "rms-files", "publish", NULL}, false},
        {"adapters/dist/cpd-http.conf", {"adapter", "rms-http", "publish", NULL}, false},
        {"adapters/dist/sao-files.conf", {"adapter", "intake-files", NULL}, true},
        {"adapters/dist/sao-intake.conf", {"adapter", "intake-sqlite", NULL}, true},
    };
    int n = check_ini("docs/ADAPTERS.md", adapters) + check_ini("docs/PUBLISHING.md", publish) +
            check_ini("docs/PROTOCOL.md", broker) + check_ini("broker/dist/broker.conf", broker) +
            check_ini("docs/OPERATIONS.md", NULL) + check_ini("docs/KEYS.md", NULL) +
            check_ini("docs/TESTING.md", NULL) + check_ini("README.md", NULL);
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++)
        n += examples[i].sink ? check_sink_example(examples[i].file, examples[i].sections)
                              : check_ini(examples[i].file, examples[i].sections);
    assert_int_equal(n, 0);
    /* Every connector has its section in docs/ADAPTERS.md, above. */
    for (size_t i = 0; connectors[i] != NULL; i++) {
        bool listed = false;
        for (size_t k = 0; adapters[k] != NULL; k++)
            listed = listed || strcmp(adapters[k], connectors[i]->name) == 0;
        if (!listed)
            fail_msg("connector %s: add its section to this test and to docs/ADAPTERS.md",
                     connectors[i]->name);
    }
}

/* Every `[section] key` the documents name is a setting. */
static void documents_name_only_settings(void **state)
{
    (void)state;
    static const char *const docs[] = {"README.md",           "docs/ADAPTERS.md", "docs/ARCHITECTURE.md",
                                       "docs/KEYS.md",        "docs/LEDGER.md",   "docs/OPERATIONS.md",
                                       "docs/PERFORMANCE.md", "docs/PROTOCOL.md", "docs/PUBLISHING.md",
                                       "docs/TESTING.md"};
    int n = 0;
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        size_t len;
        char *text = test_read_file(docs[i], &len);
        assert_non_null(text);
        pairs_t p = {.n = 0};
        named_pairs(text, true, &p);
        n += disagreements(docs[i], &p, NULL);
        free(text);
    }
    assert_int_equal(n, 0);
}

/* The manual pages: what they name is a setting, and the adapter's and publish's list their sections. */
static void manual_pages_agree(void **state)
{
    (void)state;
    static const char *const adapter[] = {"adapter", NULL};
    static const char *const publish[] = {"publish", NULL};
    static const struct {
        const char *tool;
        const char *const *lists; /* sections whose every setting the page names */
    } pages[] = {
        {"referral-broker", NULL},
        {"referral-adapter", adapter},
        {"referral-publish", publish},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        char *text = manual_page(pages[i].tool);
        pairs_t p = {.n = 0};
        named_pairs(text, false, &p);
        char doc[64];
        snprintf(doc, sizeof doc, "%s(1)", pages[i].tool);
        n += disagreements(doc, &p, NULL);
        /* A listed section's settings are named in the page, in a list or in prose. */
        for (const char *const *s = pages[i].lists; s != NULL && *s != NULL; s++)
            for (const setting_t *const *t = all_tables(); *t != NULL; t++)
                for (const setting_t *r = *t; r->name != NULL; r++) {
                    if (strcmp(r->section, *s) != 0)
                        continue;
                    bool found = false;
                    for (const char *at = strstr(text, r->name); at != NULL && !found;
                         at = strstr(at + 1, r->name))
                        found = (at == text || name_len(at - 1) == 0) && name_len(at) == strlen(r->name);
                    if (!found) {
                        print_message("# %s does not name [%s] %s\n", doc, r->section, r->name);
                        n++;
                    }
                }
        free(text);
    }
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_table_reads_a_file),         cmocka_unit_test(defaults_are_values_their_rows_take),
        cmocka_unit_test(documents_list_every_setting), cmocka_unit_test(documents_name_only_settings),
        cmocka_unit_test(manual_pages_agree),
    };
    return cmocka_run_group_tests_name("settings", tests, NULL, NULL);
}
