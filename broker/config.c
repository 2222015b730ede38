/* config.c -- broker settings from an INI file (see config.h); unknown sections and keys are errors, not
 * ignored, each named with its file and line (settings.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "settings.h"
#include "wire.h"

void config_defaults(broker_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen, sizeof cfg->listen, "tcp://127.0.0.1:7450");
    cfg->max_message_bytes = 1024 * 1024 + 64 * 1024;
    cfg->credit = 16;
    cfg->sessions_per_key = 8;
    cfg->checkpoint_interval_ms = 10 * 1000;
    cfg->checkpoint_events = 1000;
    cfg->heartbeat_ms = 5000;
    cfg->retry_base_ms = 2000;
    cfg->retry_max_ms = 5 * 60 * 1000;
    cfg->retry_limit = 12;
    cfg->ttl_ms = 14LL * 24 * 3600 * 1000;
    cfg->rotation_overlap_ms = 7LL * 24 * 3600 * 1000;
    cfg->ack_overdue_ms = 72LL * 3600 * 1000;
    cfg->key_expiry_warn_ms = 30LL * 86400000;
    cfg->key_expiry_final_warn_ms = 7LL * 86400000;
    snprintf(cfg->metrics_listen, sizeof cfg->metrics_listen, "127.0.0.1:9464");
}

static const struct {
    const char *section, *name;
    size_t offset;
    int64_t min, max;
} numbers[] = {
    {"broker", "max_message_bytes", offsetof(broker_config_t, max_message_bytes), 4096, 64LL << 20},
    {"broker", "credit", offsetof(broker_config_t, credit), 1, 10000},
    {"broker", "sessions_per_key", offsetof(broker_config_t, sessions_per_key), 1, 64},
    {"broker", "checkpoint_interval_ms", offsetof(broker_config_t, checkpoint_interval_ms), 100, 86400000},
    {"broker", "checkpoint_events", offsetof(broker_config_t, checkpoint_events), 1, 1000000},
    {"delivery", "heartbeat_ms", offsetof(broker_config_t, heartbeat_ms), 50, 600000},
    {"delivery", "retry_base_ms", offsetof(broker_config_t, retry_base_ms), 10, 86400000},
    {"delivery", "retry_max_ms", offsetof(broker_config_t, retry_max_ms), 10, 7LL * 86400000},
    {"delivery", "retry_limit", offsetof(broker_config_t, retry_limit), 1, 1000},
    {"delivery", "ttl_ms", offsetof(broker_config_t, ttl_ms), 1000, 366LL * 86400000},
    {"keys", "rotation_overlap_ms", offsetof(broker_config_t, rotation_overlap_ms), 1000, 366LL * 86400000},
    {"delivery", "ack_overdue_ms", offsetof(broker_config_t, ack_overdue_ms), 1000, 366LL * 86400000},
    {"keys", "expiry_warn_ms", offsetof(broker_config_t, key_expiry_warn_ms), 3600000, 366LL * 86400000},
    {"keys", "expiry_final_warn_ms", offsetof(broker_config_t, key_expiry_final_warn_ms), 3600000,
     366LL * 86400000},
};

/* One setting into cfg; false with why for a value out of range or an unknown key. */
static bool on_value(void *ctx, const char *section, const char *name, const char *value, char *why,
                     size_t whylen)
{
    broker_config_t *cfg = ctx;
    if (strcmp(section, "broker") == 0 && strcmp(name, "listen") == 0) {
        if (strlen(value) >= sizeof cfg->listen || !wire_endpoint_valid(value, true))
            return snprintf(why, whylen, "[broker] listen %s: %s", value, WIRE_ENDPOINT_FORM), false;
        snprintf(cfg->listen, sizeof cfg->listen, "%s", value);
        return true;
    }
    if (strcmp(section, "metrics") == 0 && strcmp(name, "listen") == 0) {
        if (!metrics_listen_valid(value))
            return snprintf(why, whylen, "[metrics] listen %s", METRICS_LISTEN_FORM), false;
        snprintf(cfg->metrics_listen, sizeof cfg->metrics_listen, "%s", value);
        return true;
    }
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (strcmp(section, numbers[i].section) != 0 || strcmp(name, numbers[i].name) != 0)
            continue;
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || *value == '\0' || *end != '\0' || v < numbers[i].min || v > numbers[i].max) {
            snprintf(why, whylen, "[%s] %s must be a whole number from %lld to %lld", section, name,
                     (long long)numbers[i].min, (long long)numbers[i].max);
            return false;
        }
        *(int64_t *)((char *)cfg + numbers[i].offset) = v;
        return true;
    }
    snprintf(why, whylen, "unknown setting [%s] %s", section, name);
    return false;
}

rb_err config_load(broker_config_t *cfg, const char *path, char *err, size_t errlen)
{
    static const char *const sections[] = {"broker", "delivery", "keys", "metrics", NULL};
    settings_t *s;
    rb_err rc = settings_load(&s, path, err, errlen);
    if (rc == RB_OK && (rc = settings_check_sections(s, sections, err, errlen)) == RB_OK)
        rc = settings_each(s, on_value, cfg, err, errlen);
    settings_free(&s);
    if (rc == RB_OK && cfg->key_expiry_final_warn_ms >= cfg->key_expiry_warn_ms) {
        snprintf(err, errlen, "%s: [keys] expiry_final_warn_ms must be below expiry_warn_ms (%lld)", path,
                 (long long)cfg->key_expiry_warn_ms);
        rc = RB_ERR_USAGE;
    }
    return rc;
}
