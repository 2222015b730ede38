/* out.h -- a growing text buffer written with printf: admin replies and the metrics page are built with it.
 *
 * Start from out_t o = {0}. A failed allocation sets failed and drops the rest, so callers write freely and
 * check once at the end; buf (malloc'd, NUL-terminated once anything was written) is then the caller's. */
#ifndef OUT_H
#define OUT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *buf; /* growing output */
    size_t len, cap;
    bool failed;
} out_t;

void out_printf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string: quotes, backslashes and control characters escaped. */
void out_string(out_t *o, const char *s);

#endif
