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

/* The broker's bind endpoint; why as settings.h's setting_t valid. */
static bool valid_listen(const char *value, char *why, size_t whylen)
{
    if (wire_endpoint_valid(value, true))
        return true;
    snprintf(why, whylen, "%s: %s", value, WIRE_ENDPOINT_FORM);
    return false;
}

static bool valid_metrics_listen(const char *value, char *why, size_t whylen)
{
    if (metrics_listen_valid(value))
        return true;
    snprintf(why, whylen, "%s", METRICS_LISTEN_FORM);
    return false;
}

#define INT_ROW(section, name, field, min, max, dflt, help)                                                  \
    SETTING_INT_ROW(section, name, broker_config_t, field, min, max, dflt, help)

const setting_t config_settings[] = {
    SETTING_TEXT_ROW("broker", "listen", broker_config_t, listen, 1, "tcp://127.0.0.1:7450", valid_listen,
                     "the ZeroMQ endpoint the ROUTER binds"),
    INT_ROW("broker", "max_message_bytes", max_message_bytes, 4096, 64LL << 20, "1114112",
            "the largest frame accepted"),
    INT_ROW("broker", "credit", credit, 1, 10000, "16",
            "the most deliveries in flight to one peer, whatever it asks"),
    INT_ROW("broker", "sessions_per_key", sessions_per_key, 1, 64, "8",
            "the most sessions one key holds at once; a new one evicts its oldest"),
    INT_ROW("broker", "checkpoint_interval_ms", checkpoint_interval_ms, 100, 86400000, "10000",
            "a ledger checkpoint at least this often while events arrive"),
    INT_ROW("broker", "checkpoint_events", checkpoint_events, 1, 1000000, "1000",
            "or after this many events, whichever first"),
    INT_ROW("delivery", "heartbeat_ms", heartbeat_ms, 50, 600000, "5000",
            "the idle interval; silence for 3 means the peer is gone"),
    INT_ROW("delivery", "retry_base_ms", retry_base_ms, 10, 86400000, "2000",
            "the wait for a CONFIRM after the first delivery; doubles each attempt"),
    INT_ROW("delivery", "retry_max_ms", retry_max_ms, 10, 7LL * 86400000, "300000",
            "the longest wait between attempts"),
    INT_ROW("delivery", "retry_limit", retry_limit, 1, 1000, "12",
            "attempts before a message is dead-lettered"),
    INT_ROW("delivery", "ttl_ms", ttl_ms, 1000, 366LL * 86400000, "1209600000",
            "the age after which an undelivered message is dead-lettered"),
    INT_ROW("delivery", "ack_overdue_ms", ack_overdue_ms, 1000, 366LL * 86400000, "259200000",
            "a referral confirmed this long ago without an ACK is overdue"),
    SETTING_TEXT_ROW("metrics", "listen", broker_config_t, metrics_listen, 1, "127.0.0.1:9464",
                     valid_metrics_listen, "HOST:PORT of the Prometheus endpoint (port 0: any), or off"),
    INT_ROW("keys", "rotation_overlap_ms", rotation_overlap_ms, 1000, 366LL * 86400000, "604800000",
            "how long a party's old key stays valid once its new key is added"),
    INT_ROW("keys", "expiry_warn_ms", key_expiry_warn_ms, 3600000, 366LL * 86400000, "2592000000",
            "warn when a party's or the broker's keys end this soon"),
    INT_ROW("keys", "expiry_final_warn_ms", key_expiry_final_warn_ms, 3600000, 366LL * 86400000, "604800000",
            "and once more when they end this soon (below the first)"),
    {0},
};

void config_defaults(broker_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    settings_defaults(config_settings, cfg);
}

rb_err config_load(broker_config_t *cfg, const char *path, char *err, size_t errlen)
{
    static const setting_t *const tables[] = {config_settings, NULL};
    settings_t *s;
    rb_err rc = settings_load(&s, path, err, errlen);
    if (rc == RB_OK && (rc = settings_check_sections(s, tables, err, errlen)) == RB_OK)
        rc = settings_apply(s, config_settings, cfg, err, errlen);
    settings_free(&s);
    if (rc == RB_OK && cfg->key_expiry_final_warn_ms >= cfg->key_expiry_warn_ms) {
        snprintf(err, errlen, "%s: [keys] expiry_final_warn_ms must be below expiry_warn_ms (%lld)", path,
                 (long long)cfg->key_expiry_warn_ms);
        rc = RB_ERR_USAGE;
    }
    return rc;
}
