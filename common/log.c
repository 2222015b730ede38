/* log.c -- log lines in text or JSON (see log.h).
 *
 * The fields' printf format is read one field at a time: the key is taken from the format, each
 * conversion of the value is given its own argument (va_arg with the type its length modifier names) and
 * formatted by snprintf, and the value is then written escaped for the chosen form. A line is built in one
 * buffer of PIPE_BUF bytes and written with one write(2), so lines never mix, even between processes
 * appending to one pipe or file; a line too long for it loses its last fields, never its closing quote,
 * brace or newline. */
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define KEY_MAX   64
#define VALUE_MAX 1024
#define CLOSING   3 /* room kept for what ends a line: a value's quote, JSON's brace, the newline */

static log_level threshold = LOG_INFO;
static log_format form = LOG_TEXT;
static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const format_names[] = {"text", "json"};
static char context_key[KEY_MAX], context_value[VALUE_MAX];

void log_set_level(log_level level)
{
    threshold = level;
}

void log_set_format(log_format format)
{
    form = format;
}

static bool named(const char *name, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (name != NULL && strcmp(name, names[i]) == 0)
            return *out = i, true;
    return false;
}

bool log_level_named(const char *name, log_level *out)
{
    int i;
    if (!named(name, level_names, 4, &i))
        return false;
    *out = (log_level)i;
    return true;
}

bool log_format_named(const char *name, log_format *out)
{
    int i;
    if (!named(name, format_names, 2, &i))
        return false;
    *out = (log_format)i;
    return true;
}

void log_set_context(const char *key, const char *value)
{
    snprintf(context_key, sizeof context_key, "%s", key && value ? key : "");
    snprintf(context_value, sizeof context_value, "%s", key && value ? value : "");
}

typedef struct {
    char buf[PIPE_BUF];
    size_t len;
    size_t fields; /* written so far: every one after the first is preceded by a separator */
    bool full;     /* a piece did not fit: the rest of the line is left out */
} line_t;

static bool put(line_t *l, const char *s, size_t n)
{
    if (l->full || l->len + n > sizeof l->buf - CLOSING)
        return l->full = true, false;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is not one. The second byte's
 * range shuts out overlong forms, surrogates and code points past U+10FFFF. */
static size_t utf8_length(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n)
        return 0;
    unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    if (len > 1 && (s[1] < lo || s[1] > hi))
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* In text, a value is bare unless it holds a byte a reader would split on or misread. */
static bool needs_quotes(const char *v)
{
    const unsigned char *s = (const unsigned char *)v;
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= ' ' || s[i] == '"' || s[i] == '=' || s[i] == '\\' || s[i] == 0x7f)
            return true;
        size_t u = utf8_length(s + i, n - i);
        if (u == 0)
            return true;
        i += u - 1;
    }
    return n == 0;
}

/* Writes v as a JSON string, or in text as a bare word or a quoted string with C-style escapes. Control
 * bytes are escaped, and so is each byte that is not valid UTF-8 (as U+FFFD in JSON, which has no escape
 * for a byte). false when not even the opening quote fitted. */
static bool put_value(line_t *l, const char *v, bool json)
{
    bool quote = json || needs_quotes(v);
    if (quote && !put(l, "\"", 1))
        return false;
    const unsigned char *s = (const unsigned char *)v;
    size_t n = strlen(v);
    for (size_t i = 0; i < n && !l->full;) {
        char esc[8];
        const char *piece = esc;
        size_t u = utf8_length(s + i, n - i), len = 2;
        if (s[i] == '"' || s[i] == '\\')
            esc[0] = '\\', esc[1] = (char)s[i];
        else if (s[i] == '\n' || s[i] == '\r' || s[i] == '\t')
            esc[0] = '\\', esc[1] = (char)(s[i] == '\n' ? 'n' : s[i] == '\r' ? 'r' : 't');
        else if (s[i] < ' ' || s[i] == 0x7f)
            len = (size_t)snprintf(esc, sizeof esc, json ? "\\u%04x" : "\\x%02x", s[i]);
        else if (u == 0 && json)
            piece = "\\ufffd", len = 6;
        else if (u == 0)
            len = (size_t)snprintf(esc, sizeof esc, "\\x%02x", s[i]);
        else
            piece = v + i, len = u;
        put(l, piece, len);
        i += u ? u : 1;
    }
    if (quote)
        l->buf[l->len++] = '"'; /* CLOSING keeps room for it */
    return true;
}

/* One field; a field that cannot begin whole is left out, so the line stays well-formed. */
static void put_field(line_t *l, const char *key, const char *value, bool number)
{
    size_t start = l->len;
    bool json = form == LOG_JSON;
    if (l->fields > 0)
        put(l, json ? "," : " ", 1);
    bool ok = json ? put_value(l, key, true) && put(l, ":", 1) : put(l, key, strlen(key)) && put(l, "=", 1);
    ok = ok && (number ? put(l, value, strlen(value)) : put_value(l, value, json));
    if (!ok) {
        l->len = start;
        return;
    }
    l->fields++;
}

#pragma GCC diagnostic push
/* The format is a printf conversion rebuilt from the caller's format, which the compiler has checked. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

/* Formats the conversion at *fmt (just past its '%') into out, taking its argument(s) from ap, and moves
 * *fmt past it. *plain_integer when it was a decimal integer with no flag, width or precision (a JSON
 * number). false for a conversion this logger does not take: ap cannot be read any further then. */
/* NOLINTBEGIN(clang-analyzer-valist.Uninitialized): analysed alone, ap looks uninitialised; its only
 * caller, put_fields, passes emit's va_copy. */
static bool convert(const char **fmt, va_list *ap, char *out, size_t cap, bool *plain_integer)
{
    const char *p = *fmt;
    char spec[48] = "%";
    size_t n = 1;
    while (*p != '\0' && strchr("-+ #0", *p) != NULL && n < 8)
        spec[n++] = *p++;
    for (int part = 0; part < 2; part++) { /* width, then precision; a '*' becomes the number it takes */
        if (part == 1 && *p != '.')
            break;
        if (part == 1)
            spec[n++] = *p++;
        if (*p == '*') {
            int v = va_arg(*ap, int);
            p++;
            if (part == 1 && v < 0)
                spec[--n] = '\0'; /* a negative precision is as if none were given */
            else
                n += (size_t)snprintf(spec + n, sizeof spec - n, "%d", v);
        }
        while (isdigit((unsigned char)*p) && n < 32)
            spec[n++] = *p++;
    }
    bool bare = n == 1;
    enum { PLAIN, CHAR, SHORT, LONG, LONG_LONG, SIZE, MAX, PTRDIFF } size = PLAIN;
    if (p[0] == 'h' && p[1] == 'h')
        size = CHAR, p += 2;
    else if (p[0] == 'l' && p[1] == 'l')
        size = LONG_LONG, p += 2;
    else if (*p != '\0' && strchr("hlzjt", *p) != NULL)
        size = *p == 'h' ? SHORT : *p == 'l' ? LONG : *p == 'z' ? SIZE : *p == 'j' ? MAX : PTRDIFF, p++;
    char conv = *p;
    if (conv != '\0')
        p++;
    *fmt = p;
    *plain_integer = false;
    switch (conv) {
    case 'd':
    case 'i': {
        intmax_t v = size == LONG        ? va_arg(*ap, long)
                     : size == LONG_LONG ? va_arg(*ap, long long)
                     : size == SIZE      ? va_arg(*ap, ssize_t)
                     : size == MAX       ? va_arg(*ap, intmax_t)
                     : size == PTRDIFF   ? va_arg(*ap, ptrdiff_t)
                                         : va_arg(*ap, int);
        v = size == CHAR ? (signed char)v : size == SHORT ? (short)v : v;
        memcpy(spec + n, "jd", 3);
        snprintf(out, cap, spec, v);
        *plain_integer = bare;
        return true;
    }
    case 'o':
    case 'u':
    case 'x':
    case 'X': {
        uintmax_t v = size == LONG        ? va_arg(*ap, unsigned long)
                      : size == LONG_LONG ? va_arg(*ap, unsigned long long)
                      : size == SIZE      ? va_arg(*ap, size_t)
                      : size == MAX       ? va_arg(*ap, uintmax_t)
                      : size == PTRDIFF   ? (uintmax_t)va_arg(*ap, ptrdiff_t)
                                          : va_arg(*ap, unsigned);
        v = size == CHAR ? (unsigned char)v : size == SHORT ? (unsigned short)v : v;
        spec[n] = 'j', spec[n + 1] = conv, spec[n + 2] = '\0';
        snprintf(out, cap, spec, v);
        *plain_integer = bare && conv == 'u';
        return true;
    }
    case 'c':
    case 's':
    case 'p':
        if (size != PLAIN)
            return false;
        spec[n] = conv, spec[n + 1] = '\0';
        if (conv == 'c')
            /* NOLINTNEXTLINE(bugprone-branch-clone): the branches differ in va_arg's type, which it ignores */
            snprintf(out, cap, spec, va_arg(*ap, int));
        else if (conv == 'p')
            snprintf(out, cap, spec, va_arg(*ap, void *));
        else {
            const char *s = va_arg(*ap, const char *);
            snprintf(out, cap, spec, s ? s : "(null)");
        }
        return true;
    case 'e':
    case 'E':
    case 'f':
    case 'F':
    case 'g':
    case 'G':
        if (size != PLAIN && size != LONG)
            return false;
        spec[n] = conv, spec[n + 1] = '\0';
        snprintf(out, cap, spec, va_arg(*ap, double));
        return true;
    default:
        return false;
    }
}
/* NOLINTEND(clang-analyzer-valist.Uninitialized) */
#pragma GCC diagnostic pop

static void append(char *value, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (n > VALUE_MAX - 1 - *len)
        n = VALUE_MAX - 1 - *len;
    memcpy(value + *len, s, n);
    *len += n;
    value[*len] = '\0';
}

/* The fields of fmt: "key=TEMPLATE key=TEMPLATE ...", a template running to the next space, or written
 * in double quotes (then it may hold spaces). */
static void put_fields(line_t *l, const char *fmt, va_list *ap)
{
    const char *p = fmt;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *field = p;
        char key[KEY_MAX] = "", value[VALUE_MAX] = "", piece[VALUE_MAX];
        size_t k = 0, v = 0;
        while (*p != '\0' && *p != '=' && *p != ' ')
            if (k < sizeof key - 1)
                key[k++] = *p++, key[k] = '\0';
            else
                p++;
        if (*p != '=') /* a word without a key: keep it, under a name that says so */
            p = field, snprintf(key, sizeof key, "unkeyed");
        else
            p++;
        bool quoted = *p == '"', conversion_only = true, integer = false;
        int conversions = 0;
        if (quoted)
            p++;
        while (*p != '\0' && *p != (quoted ? '"' : ' ')) {
            if (p[0] == '%' && p[1] != '%') {
                p++;
                if (!convert(&p, ap, piece, sizeof piece, &integer)) {
                    put_field(l, "unformatted", field, false);
                    return;
                }
                conversions++;
                append(value, &v, piece);
            } else {
                char c[2] = {*p, '\0'};
                p += p[0] == '%' ? 2 : 1;
                conversion_only = false;
                append(value, &v, c);
            }
        }
        if (quoted && *p == '"')
            p++;
        if (v > 0)
            put_field(l, key, value, conversion_only && conversions == 1 && integer);
    }
}

static void emit(log_level level, const char *event, bool security, const char *fmt, va_list ap)
{
    line_t l = {.len = 0};
    char stamp[40];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
    if (form == LOG_JSON)
        put(&l, "{", 1);
    put_field(&l, "ts", stamp, false);
    put_field(&l, "level", level_names[level], false);
    put_field(&l, "event", event, false);
    if (security)
        put_field(&l, "security", "1", true);
    if (context_key[0] != '\0')
        put_field(&l, context_key, context_value, false);
    va_list args;
    va_copy(args, ap);
    put_fields(&l, fmt, &args);
    va_end(args);
    if (form == LOG_JSON)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    for (size_t off = 0; off < l.len;) {
        ssize_t w = write(STDERR_FILENO, l.buf + off, l.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* nowhere left to say so */
        off += (size_t)w;
    }
}

void log_at(log_level level, const char *event, const char *fmt, ...)
{
    if (level < threshold)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, false, fmt, ap);
    va_end(ap);
}

void log_security(const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(LOG_WARN, event, true, fmt, ap);
    va_end(ap);
}
