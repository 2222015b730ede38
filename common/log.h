/* log.h -- one log event a line on stderr: time, level, a short event name, then key=value fields.
 *
 *   text: ts=2026-11-25T07:40:00.123Z level=info event=submitted adapter=cpd-rms msg=01a2... index=17
 *   json: {"ts":"2026-11-25T07:40:00.123Z","level":"info","event":"submitted","adapter":"cpd-rms",...}
 *
 * Callers write the fields as a printf format in the text form, one key=CONVERSION per field separated by
 * spaces: log_info("submitted", "adapter=%s msg=%s index=%llu", name, hex, index). The logger reads the
 * keys from the format and formats each value on its own, so it can quote and escape values for either
 * form: a value holding a space, quote, backslash, '=' or control byte is written "quoted" with C-style
 * escapes in text and as a JSON string in JSON, so no value can break its line or forge another field. A
 * value that is one plain integer conversion (%d %u %lld %zu, no flag or width) is a JSON number. A field
 * whose value comes out empty is left out (for optional fields: msg=%s with ""). Write key=%s, never
 * key=\"%s\": the logger quotes. A template in double quotes is unwrapped, which only a literal value
 * with spaces needs.
 *
 * Names used everywhere: adapter= the party's name (the peer in the broker; the adapter itself, added to
 * every line by log_set_context, in an adapter), msg= a message id in hex (on ACK lines the referral's),
 * ack= an ACK's own id, reason= and error= causes in words. Every line about a message has msg= and
 * adapter=.
 *
 * Levels are filtered before formatting. Security events (authentication, revocation, refused frames)
 * go through log_security (a warning with security=1) so they can be found and counted. Ids and hashes
 * only: callers never pass case content or secrets. */
#ifndef LOG_H
#define LOG_H

#include <stdbool.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
typedef enum { LOG_TEXT, LOG_JSON } log_format;

void log_set_level(log_level level);
void log_set_format(log_format format);
/* The level or format named by name ("debug", "info", "warn", "error"; "text", "json"); false when the
 * name is none of them. For the tools' --log-level and --log-format. */
bool log_level_named(const char *name, log_level *out);
bool log_format_named(const char *name, log_format *out);
/* A field written on every line after event= (one at most; key NULL removes it). Both strings are
 * copied; a key or value too long is cut. */
void log_set_context(const char *key, const char *value);

void log_at(log_level level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A warning marked security=1. */
void log_security(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(event, ...) log_at(LOG_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...)  log_at(LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...)  log_at(LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_at(LOG_ERROR, event, __VA_ARGS__)

#endif
