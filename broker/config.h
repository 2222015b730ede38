/* config.h -- the broker's settings: defaults, then an INI file (inih), then command-line overrides. Each
 * setting is one row of config_settings (config.c): section, name, bounds, default, help and its field
 * below; broker/dist/broker.conf and docs/PROTOCOL.md ("Broker settings") list them for operators. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "rb_error.h"
#include "settings.h"

typedef struct {
    char listen[256];               /* ZeroMQ endpoint the ROUTER binds */
    int64_t max_message_bytes;      /* largest frame accepted */
    int64_t credit;                 /* most deliveries in flight to one peer, whatever it asks */
    int64_t sessions_per_key;       /* most sessions one key holds at once; a new one evicts its oldest */
    int64_t checkpoint_interval_ms; /* a ledger checkpoint at least this often while events arrive, */
    int64_t checkpoint_events;      /* or after this many events, whichever first (and every commit) */
    int64_t heartbeat_ms;           /* idle interval; silence for 3 means the peer is gone */
    int64_t retry_base_ms;          /* wait for a CONFIRM after the first delivery; doubles each attempt */
    int64_t retry_max_ms;           /* longest wait between attempts */
    int64_t retry_limit;            /* attempts before a message is dead-lettered */
    int64_t ttl_ms;                 /* age after which an undelivered message is dead-lettered */
    int64_t ack_overdue_ms;         /* a referral confirmed this long ago without an ACK is overdue */
    char metrics_listen[64];        /* HOST:PORT of the Prometheus endpoint (port 0: any), or "off" */
    int64_t rotation_overlap_ms;    /* how long a party's old key stays valid once its new key is added */
    int64_t key_expiry_warn_ms;     /* warn (log, status) when a party's or the broker's keys end this soon */
    int64_t key_expiry_final_warn_ms; /* and once more when they end this soon (below the first) */
} broker_config_t;

void config_defaults(broker_config_t *cfg);
/* The settings, one row each (settings.h), ending with a row without a name. */
extern const setting_t config_settings[];

/* Reads an INI file: the defaults, then its values. RB_ERR_USAGE with err naming the line for an unknown key or
 * bad value; RB_ERR_IO when the file cannot be read. */
rb_err config_load(broker_config_t *cfg, const char *path, char *err, size_t errlen);

#endif
