/* rb_error_test.c -- every error value has its own words, and out-of-range values are handled. */
#include "testutil.h"

static void every_error_has_a_distinct_message(void **state)
{
    (void)state;
    for (int i = 0; i < RB_ERR__COUNT; i++) {
        const char *msg = rb_strerror((rb_err)i);
        assert_non_null(msg);
        if (strcmp(msg, "unknown error") == 0)
            fail_msg("error %d has no message", i);
        for (int j = 0; j < i; j++)
            if (strcmp(msg, rb_strerror((rb_err)j)) == 0)
                fail_msg("errors %d and %d share the message \"%s\"", i, j, msg);
    }
    assert_string_equal(rb_strerror(RB_ERR__COUNT), "unknown error");
    assert_string_equal(rb_strerror((rb_err)-1), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_error_has_a_distinct_message),
    };
    return cmocka_run_group_tests_name("rb_error", tests, NULL, NULL);
}
