/* connector.h -- the one interface between the adapter runtime and what it connects to.
 *
 * A connector is a table of functions. A source connector (a police records system) finds new referrals
 * in its poll() and hands each to adapter_accept_referral(), and hears of ACKs in on_ack(). A sink
 * connector (the State's Attorney's intake) files each opened, valid referral in file(). Its settings are
 * rows of the same kind as the broker's. Writing a new connector is one new file with one such table, and
 * one line in connectors.c. docs/ADAPTERS.md. */
#ifndef CONNECTOR_H
#define CONNECTOR_H

#include <stddef.h>

#include "card.h"
#include "envelope.h"
#include "rb_error.h"
#include "referral.pb-c.h"
#include "settings.h"
#include "sqldb.h"

typedef struct adapter adapter_t;     /* the runtime (adapter.h) */
typedef struct connector connector_t; /* a connector's own state */

typedef struct {
    const char *name; /* as in the config: connector = rms-files */
    card_role role;   /* CARD_ROLE_SOURCE or CARD_ROLE_SINK: the adapter's card must match */
    /* Its [name] section's settings, one row each (settings.h), ending with a row without a name; the
     * runtime refuses any other key and fills a struct of settings_size bytes from them. */
    const setting_t *settings;
    size_t settings_size;
    /* Optional: checks across its settings, each already within its own bounds (cfg names the lines),
     * wherever the config is read; may set a default that depends on another setting. */
    rb_err (*check)(void *settings, const settings_t *cfg, char *err, size_t errlen);
    /* Sets up from its settings (borrowed for the call). On failure err says why. */
    rb_err (*open)(connector_t **out, adapter_t *adapter, const void *settings, char *err, size_t errlen);
    /* Source: look for new referrals; called on every turn of the loop. */
    void (*poll)(connector_t *c);
    /* Source: the ACK for one of our referrals arrived (ack_json is the AckBody as JSON). May be told twice
     * after a crash. An error keeps the ACK in the inbox, to be told again later. */
    rb_err (*on_ack)(connector_t *c, const msg_id_t *referral, const char *ack_json);
    /* Sink: files a valid referral that arrived as message id from sender, the card its signatures were
     * verified with (the runtime has checked that the referral is of sender's agency); writes the intake
     * reference (at most cap bytes). Must record who sent it, and be idempotent by message id: after a crash
     * the same message may be filed again. */
    rb_err (*file)(connector_t *c, const msg_id_t *id, Rb__Kind kind, const Rb__Referral *r,
                   const card_t *sender, char *intake_reference, size_t cap, char *err, size_t errlen);
    /* Optional: makes durable what file() or on_ack() did since the last call. The runtime calls it before
     * it commits its own record of those messages, so a connector may batch them in one transaction of its
     * own; an error undoes the runtime's record, and the messages are handed over again later. */
    rb_err (*flush)(connector_t *c);
    void (*close)(connector_t **c);
} connector_ops_t;

/* Every connector this build knows, NULL-terminated (connectors.c). */
extern const connector_ops_t *const connectors[];
/* The intake-sqlite connector's database schema (sqldb.h), which tests pin. */
extern const sqldb_schema_t intake_sqlite_schema;

#endif
