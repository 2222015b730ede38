/* log.h -- key=value log lines on stderr: time, level, a short event name, then fields.
 *
 *   2026-11-25T07:40:00.123Z level=info event=submitted adapter=cpd-rms msg=01a2... seq=17
 *
 * Levels are filtered before formatting. Security events (authentication, revocation, refused frames)
 * go through log_security so they can be found and counted. Ids and hashes only: callers never pass
 * case content or secrets. */
#ifndef LOG_H
#define LOG_H

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level level);
void log_at(log_level level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A warning marked security=1. */
void log_security(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(event, ...) log_at(LOG_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...)  log_at(LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...)  log_at(LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_at(LOG_ERROR, event, __VA_ARGS__)

#endif
