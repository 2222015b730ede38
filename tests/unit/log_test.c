/* log_test.c -- log lines in both forms: exact text lines, JSON that parses back to the same values,
 * escaping of values that could break a line, levels, the context field, and lines too long to fit.
 *
 * Each test points stderr (fd 2) at a file while it logs, then reads the file back. */
#include "testutil.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <unistd.h>

#include "log.h"

typedef struct {
    char *dir;
    char path[600];
    int saved_stderr;
} capture_t;

static void capture_start(capture_t *c)
{
    c->dir = test_mkdtemp();
    test_path(c->path, sizeof c->path, "%s/stderr", c->dir);
    int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    c->saved_stderr = dup(STDERR_FILENO);
    assert_true(c->saved_stderr >= 0);
    assert_true(dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
}

/* Restores stderr and the logger's defaults; returns what was written (caller frees). */
static char *capture_stop(capture_t *c)
{
    dup2(c->saved_stderr, STDERR_FILENO);
    close(c->saved_stderr);
    log_set_format(LOG_TEXT);
    log_set_level(LOG_INFO);
    log_set_context(NULL, NULL);
    size_t len;
    char *out = test_read_file(c->path, &len);
    assert_non_null(out);
    test_rmdir(&c->dir);
    return out;
}

/* The line after its "ts=... " prefix, which changes with the clock; checks the prefix's shape. */
static const char *after_stamp(const char *line)
{
    assert_memory_equal(line, "ts=", 3);
    const char *space = strchr(line, ' ');
    assert_non_null(space);
    assert_int_equal(space - line, 3 + 24); /* 2026-11-25T07:40:00.123Z */
    assert_int_equal(space[-1], 'Z');
    return space + 1;
}

static char *next_line(char **cursor)
{
    char *line = *cursor, *nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    *cursor = nl + 1;
    return line;
}

static void text_lines_quote_only_what_needs_it(void **state)
{
    (void)state;
    capture_t c;
    capture_start(&c);
    log_info("submitted", "adapter=%s msg=%s index=%llu", "cpd-rms", "01a2b3", 17ULL);
    log_warn("frame_refused", "adapter=%s reason=%s", "cpd rms", "say \"hi\"\\now\nlevel=error event=forged");
    log_error("odd", "tab=%s bell=%s eq=%s bad=%s utf8=%s", "a\tb", "x\ay", "k=v", "\xff\xc3(", "Dürer");
    log_info("empty", "msg=%s reason=%s attempt=%d", "", "kept", 3);
    log_info("literal", "detail=\"two words\" via=http pct=%d%%", 50);
    log_info("ids", "hex=%08x width=%*d cut=%.3s ch=%c size=%zu neg=%lld", 0xbeefu, 4, 7, "abcdef", 'q',
             (size_t)42, -5LL);
    char *out = capture_stop(&c), *cursor = out;
    assert_string_equal(after_stamp(next_line(&cursor)),
                        "level=info event=submitted adapter=cpd-rms msg=01a2b3 index=17");
    assert_string_equal(after_stamp(next_line(&cursor)),
                        "level=warn event=frame_refused adapter=\"cpd rms\" "
                        "reason=\"say \\\"hi\\\"\\\\now\\nlevel=error event=forged\"");
    assert_string_equal(after_stamp(next_line(&cursor)),
                        "level=error event=odd tab=\"a\\tb\" bell=\"x\\x07y\" eq=\"k=v\" bad=\"\\xff\\xc3(\" "
                        "utf8=Dürer");
    assert_string_equal(after_stamp(next_line(&cursor)), "level=info event=empty reason=kept attempt=3");
    assert_string_equal(after_stamp(next_line(&cursor)),
                        "level=info event=literal detail=\"two words\" via=http pct=50%");
    assert_string_equal(after_stamp(next_line(&cursor)),
                        "level=info event=ids hex=0000beef width=\"   7\" cut=abc ch=q size=42 neg=-5");
    assert_string_equal(cursor, "");
    free(out);
}

static void json_lines_parse_back_to_the_same_values(void **state)
{
    (void)state;
    const char *nasty = "say \"hi\"\\now\nlevel=error\x01}{\"event\":\"forged\"";
    capture_t c;
    capture_start(&c);
    log_set_format(LOG_JSON);
    log_set_context("adapter", "sao-intake");
    log_info("received", "msg=%s attempt=%u duplicate=%d", "0a0b", 2u, 1);
    log_security("envelope_refused", "msg=%s reason=%s bad=%s", "0c0d", nasty, "\xff\xe2\x82");
    log_info("counts", "hex=%x padded=%03d negative=%d id=%s", 255u, 7, -4, "");
    char *out = capture_stop(&c), *cursor = out;

    json_error_t err;
    json_t *o = json_loads(next_line(&cursor), 0, &err);
    if (o == NULL)
        fail_msg("line 1 is not JSON: %s", err.text);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o, "event")), "received");
    assert_string_equal(json_string_value(json_object_get(o, "adapter")), "sao-intake");
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "0a0b");
    assert_true(json_is_integer(json_object_get(o, "attempt")));
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "duplicate")), 1);
    const char *ts = json_string_value(json_object_get(o, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(json_object_size(o), 7);
    json_decref(o);

    o = json_loads(next_line(&cursor), 0, &err);
    if (o == NULL)
        fail_msg("line 2 is not JSON: %s", err.text);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
    assert_int_equal(json_integer_value(json_object_get(o, "security")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "reason")), nasty);
    assert_string_equal(json_string_value(json_object_get(o, "bad")),
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* one U+FFFD a byte */
    assert_null(json_object_get(o, "forged"));
    json_decref(o);

    o = json_loads(next_line(&cursor), 0, &err);
    if (o == NULL)
        fail_msg("line 3 is not JSON: %s", err.text);
    assert_string_equal(json_string_value(json_object_get(o, "hex")), "ff"); /* hex stays text */
    assert_string_equal(json_string_value(json_object_get(o, "padded")), "007");
    assert_int_equal(json_integer_value(json_object_get(o, "negative")), -4);
    assert_null(json_object_get(o, "id")); /* empty: left out */
    json_decref(o);
    assert_string_equal(cursor, "");
    free(out);
}

static void levels_filter_but_security_always_shows(void **state)
{
    (void)state;
    log_level level;
    log_format format;
    assert_true(log_level_named("warn", &level));
    assert_int_equal(level, LOG_WARN);
    assert_false(log_level_named("verbose", &level));
    assert_false(log_level_named(NULL, &level));
    assert_true(log_format_named("json", &format));
    assert_int_equal(format, LOG_JSON);
    assert_false(log_format_named("xml", &format));

    capture_t c;
    capture_start(&c);
    log_set_level(LOG_ERROR);
    log_debug("d", "n=%d", 1);
    log_info("i", "n=%d", 2);
    log_warn("w", "n=%d", 3);
    log_security("s", "n=%d", 4);
    log_error("e", "n=%d", 5);
    log_set_level(LOG_DEBUG);
    log_debug("d", "n=%d", 6);
    char *out = capture_stop(&c), *cursor = out;
    assert_string_equal(after_stamp(next_line(&cursor)), "level=warn event=s security=1 n=4");
    assert_string_equal(after_stamp(next_line(&cursor)), "level=error event=e n=5");
    assert_string_equal(after_stamp(next_line(&cursor)), "level=debug event=d n=6");
    assert_string_equal(cursor, "");
    free(out);
}

/* Values far longer than a line: the line is cut between or inside values, never left unclosed. */
static void an_overlong_line_stays_one_whole_line(void **state)
{
    (void)state;
    char big[3000];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_t c;
    capture_start(&c);
    log_set_format(LOG_JSON);
    for (int i = 0; i < 3; i++)
        log_info("big", "a=%s b=%s c=%s n=%d", big, big, big, i);
    log_set_format(LOG_TEXT);
    log_info("big", "a=%s b=%s", big, big);
    char *out = capture_stop(&c), *cursor = out;
    for (int i = 0; i < 3; i++) {
        char *line = next_line(&cursor);
        assert_true(strlen(line) < PIPE_BUF);
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (o == NULL)
            fail_msg("a cut line is not JSON: %s", err.text);
        assert_string_equal(json_string_value(json_object_get(o, "event")), "big");
        const char *a = json_string_value(json_object_get(o, "a"));
        assert_non_null(a);
        assert_true(strlen(a) > 1000 && strspn(a, "\"") == strlen(a));
        assert_null(json_object_get(o, "n"));
        json_decref(o);
    }
    char *text = next_line(&cursor);
    assert_true(strlen(text) < PIPE_BUF);
    assert_int_equal(text[strlen(text) - 1], '"');
    assert_string_equal(cursor, "");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_lines_quote_only_what_needs_it),
        cmocka_unit_test(json_lines_parse_back_to_the_same_values),
        cmocka_unit_test(levels_filter_but_security_always_shows),
        cmocka_unit_test(an_overlong_line_stays_one_whole_line),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
