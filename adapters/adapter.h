/* adapter.h -- the adapter runtime: one identity, one connector, one local store, one broker connection.
 *
 * adapter_run loops until stopped: it lets a source connector find new referrals (each is validated,
 * sealed and written to the outbox before the connector is told it was taken), submits the outbox to the
 * broker until each envelope has its signed receipt, stores every delivery in the inbox before confirming
 * it, and processes the inbox: a sink files each valid referral through its connector and answers with a
 * signed ACK (queued in the same outbox), a source records the ACKs for its referrals. The broker may be
 * down at any time: everything waits in the store and flows when it is back. */
#ifndef ADAPTER_H
#define ADAPTER_H

#include <signal.h>
#include <stddef.h>

#include "astore.h"
#include "connector.h"
#include "publish.h"
#include "rb_error.h"
#include "settings.h"

/* The settings of an adapter's [adapter] and [publish] sections, one row each (settings.h), ending with a
 * row without a name; each connector has its own (connector.h). */
extern const setting_t adapter_settings[];

/* Sets up from a config file (see docs/ADAPTERS.md). On failure *out is NULL and err says why. */
rb_err adapter_open(adapter_t **out, const char *config_path, char *err, size_t errlen);
void adapter_close(adapter_t **a_p);
/* Runs until *stop is set. */
rb_err adapter_run(adapter_t *a, const volatile sig_atomic_t *stop);

/* For source connectors: validates, seals and queues a referral given as proto3 JSON; source names where
 * it came from. RB_OK with *id its message id: new, or the one the same referral already went under (the
 * same export twice is one referral). Otherwise problems (cap bytes) lists every problem, one per line
 * with its field path: RB_ERR_MALFORMED (not a referral), RB_ERR_INVALID (breaks a rule), RB_ERR_CONFLICT
 * (a different referral was already sent with this agency, RD number and revision: send a supplement). */
rb_err adapter_accept_referral(adapter_t *a, const char *json, size_t len, const char *source, msg_id_t *id,
                               char *problems, size_t cap);

/* The adapter's store, for connectors that answer status queries. Borrowed. */
astore_t *adapter_store(adapter_t *a);

/* `referral-adapter status`: counts by state, or one message's history, printed to stdout. */
rb_err adapter_status(const char *config_path, const char *message_id_hex, char *err, size_t errlen);

/* `referral-publish`: the public transparency data of a source's referrals into dir (publish.h), with the
 * threshold and areas of the config's [publish] section. Reads the store without locking it. */
rb_err adapter_publish(const char *config_path, const char *dir, const char *as_of, publish_report_t *report,
                       char *err, size_t errlen);

#endif
