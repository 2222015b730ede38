/* admin.h -- signed admin commands, verified and executed by the broker.
 *
 * An admin party (a card with role admin, registered like an adapter) sends an AdminRequest: a serialised
 * AdminCommand and its Ed25519 signature. The broker checks the signature with the admin's card, refuses
 * commands older than five minutes or seen before (nonce), executes the command and records it, with its
 * signature and outcome, as an event: in the same transaction as the change it makes, or after a refusal. */
#ifndef ADMIN_H
#define ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "identity.h"
#include "store.h"
#include "wire.pb-c.h"

#define ADMIN_MAX_AGE_MS (5 * 60 * 1000)
#define ADMIN_MAX_BYTES  32768 /* a signed command, so that it always fits in its ledger leaf */

/* Whether a party has a connection open now (for status). */
typedef bool (*admin_connected_fn)(void *ctx, const char *name);

/* What commands need from the running broker. */
typedef struct {
    admin_connected_fn connected;
    void *ctx;
    int64_t rotation_overlap_ms; /* how long an old key stays valid after its successor is added */
    int64_t ack_overdue_ms;      /* a referral confirmed this long ago without an ACK is overdue */
    int64_t key_expiry_warn_ms;  /* status: a party's keys ending this soon need attention */
    const card_t *broker_card;   /* the broker's own, for status (its expiry) */
} admin_env_t;

/* Verifies and executes req from admin. *output (malloc'd, the caller frees it) is JSON on success or one
 * line saying why not. *changed is set when parties or keys changed (the broker reloads its trust).
 * Returns whether the command succeeded. A command that would leave no admin able to sign is refused. */
bool admin_execute(store_t *store, const party_t *admin, const char *peer, const Rb__AdminRequest *req,
                   int64_t now_ms, const admin_env_t *env, char **output, bool *changed);

/* Logs (key_expiring, warn; key_expired, error) each enabled party's keys and the broker's own whose end
 * comes within warn_ms, then within final_ms, or has come, at a moment in (since_ms, now_ms]: each crossing
 * once when called with consecutive intervals; since_ms 0 (at start) logs each key already inside a window
 * once. */
void admin_warn_keys(store_t *store, const card_t *broker, int64_t since_ms, int64_t now_ms, int64_t warn_ms,
                     int64_t final_ms);

#endif
