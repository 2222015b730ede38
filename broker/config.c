/* config.c -- broker settings from an INI file (see config.h); unknown keys are errors, not ignored. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

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

typedef struct {
    broker_config_t *cfg;
    char reason[200]; /* why the last value was refused */
} loader_t;

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

static int on_value(void *user, const char *section, const char *name, const char *value)
{
    loader_t *l = user;
    if (strcmp(section, "broker") == 0 && strcmp(name, "listen") == 0) {
        if (strlen(value) >= sizeof l->cfg->listen)
            return snprintf(l->reason, sizeof l->reason, "[broker] listen is too long"), 0;
        snprintf(l->cfg->listen, sizeof l->cfg->listen, "%s", value);
        return 1;
    }
    if (strcmp(section, "metrics") == 0 && strcmp(name, "listen") == 0) {
        if (!metrics_listen_valid(value))
            return snprintf(l->reason, sizeof l->reason, "[metrics] listen %s", METRICS_LISTEN_FORM), 0;
        snprintf(l->cfg->metrics_listen, sizeof l->cfg->metrics_listen, "%s", value);
        return 1;
    }
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (strcmp(section, numbers[i].section) != 0 || strcmp(name, numbers[i].name) != 0)
            continue;
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || *value == '\0' || *end != '\0' || v < numbers[i].min || v > numbers[i].max) {
            snprintf(l->reason, sizeof l->reason, "[%s] %s must be a whole number from %lld to %lld", section,
                     name, (long long)numbers[i].min, (long long)numbers[i].max);
            return 0;
        }
        *(int64_t *)((char *)l->cfg + numbers[i].offset) = v;
        return 1;
    }
    snprintf(l->reason, sizeof l->reason, "unknown setting [%s] %s", section, name);
    return 0;
}

rb_err config_load(broker_config_t *cfg, const char *path, char *err, size_t errlen)
{
    loader_t l = {.cfg = cfg};
    int rc = ini_parse(path, on_value, &l);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", path, rc == -1 ? strerror(errno) : "out of memory");
        return RB_ERR_IO;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s: line %d: %s", path, rc, l.reason[0] ? l.reason : "not a setting");
        return RB_ERR_USAGE;
    }
    if (cfg->key_expiry_final_warn_ms >= cfg->key_expiry_warn_ms) {
        snprintf(err, errlen, "%s: [keys] expiry_final_warn_ms must be below expiry_warn_ms (%lld)", path,
                 (long long)cfg->key_expiry_warn_ms);
        return RB_ERR_USAGE;
    }
    return RB_OK;
}
