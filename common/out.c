/* out.c -- a growing text buffer written with printf (see out.h). */
#include "out.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void out_printf(out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if (o->buf != NULL && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *grown = realloc(o->buf, cap);
        if (grown == NULL) {
            o->failed = true;
            return;
        }
        o->buf = grown;
        o->cap = cap;
    }
}

void out_string(out_t *o, const char *s)
{
    out_printf(o, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            out_printf(o, "\\%c", *p);
        else if (*p == '\n')
            out_printf(o, "\\n");
        else if (*p < 0x20)
            out_printf(o, "\\u%04x", *p);
        else
            out_printf(o, "%c", *p);
    }
    out_printf(o, "\"");
}
