/* log.c -- key=value log lines (see log.h). One fprintf per line, so lines from one process never mix. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static log_level threshold = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level)
{
    threshold = level;
}

static void emit(log_level level, const char *event, const char *extra, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void emit(log_level level, const char *event, const char *extra, const char *fmt, va_list ap)
{
    char fields[1024], stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    vsnprintf(fields, sizeof fields, fmt, ap);
    fprintf(stderr, "%s.%03ldZ level=%s event=%s%s%s%s\n", stamp, ts.tv_nsec / 1000000, names[level], event,
            extra, fields[0] ? " " : "", fields);
}

void log_at(log_level level, const char *event, const char *fmt, ...)
{
    if (level < threshold)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, "", fmt, ap);
    va_end(ap);
}

void log_security(const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(LOG_WARN, event, " security=1", fmt, ap);
    va_end(ap);
}
