/* client.h -- the client library adapters and admin tools use to talk to the broker.
 *
 * It owns one DEALER socket over CURVE (our X25519 key from our identity, the broker's from its card),
 * says HELLO, keeps the connection alive with heartbeats and says HELLO again when the broker has been
 * silent for three intervals (ZeroMQ reconnects underneath by itself, with backoff). Calls block for at
 * most the timeout they are given. Deliveries that arrive while waiting for a receipt are kept, in order,
 * for client_receive. */
#ifndef CLIENT_H
#define CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "identity.h"
#include "note.h"
#include "rb_error.h"
#include "wire.pb-c.h"

typedef struct client client_t;

/* The wall clock, in Unix ms, that the client and the adapters stamp envelopes and stores with.
 * RB_TEST_CLOCK_OFFSET_MS in the environment (read once; a whole number of ms within a year, else ignored)
 * moves it by that much: a test hook with which the fault runs start an adapter whose clock has jumped
 * (docs/TESTING.md); the adapter logs a warning when it is set. */
int64_t client_clock_ms(void);
#define CLIENT_CLOCK_OFFSET_MAX_MS (366LL * 86400 * 1000)

/* Connects to endpoint as me, expecting the broker of broker_card, and waits up to timeout_ms for the
 * WELCOME. credit: deliveries we accept in flight (0 for a party that only submits). checkpoint: the
 * latest ledger checkpoint the caller holds from this broker (NULL if none), which every checkpoint the
 * broker sends must extend. On failure *out is NULL and err says why (no answer: not registered, wrong
 * broker key, or broker down). */
rb_err client_connect(client_t **out, const char *endpoint, const identity_t *me, const card_t *broker_card,
                      uint32_t credit, const char *checkpoint, int timeout_ms, char *err, size_t errlen);
void client_close(client_t **client_p);

/* What the broker said to a submission. */
typedef struct {
    uint64_t ledger_index; /* receipt: the index of the "submitted" leaf */
    int64_t broker_ms;     /* receipt: when the broker stored it */
    Rb__ErrorCode code;    /* refusal */
    bool accepted;         /* a verified receipt; otherwise code and reason say why not */
    char reason[256];
    char proof[PROOF_TEXT_MAX]; /* receipt: the tlog-proof, to keep */
} client_result_t;

/* Submits an envelope and waits for its receipt or its refusal. A receipt is verified: the leaf is this
 * envelope's "submitted" event (message id and envelope hash), included under a checkpoint signed with the
 * broker's key that extends the one held. RB_ERR_IO when nothing came within timeout_ms;
 * RB_ERR_BAD_SIGNATURE (reason says what) for a receipt that does not verify. */
rb_err client_submit(client_t *c, const uint8_t *env, size_t len, int timeout_ms, client_result_t *result);

/* client_submit for up to CLIENT_BATCH_MAX envelopes at once: all are sent without waiting, so that one
 * group commit at the broker answers them together, and their answers taken as they come, each checked as
 * client_submit checks its one. results[i] and errors[i] are envs[i]'s: errors[i] is what client_submit
 * would have returned for it (RB_ERR_IO: no answer within timeout_ms; RB_ERR_MALFORMED: the broker sent an
 * ERROR without a message id, which cannot be told apart while several wait). Returns the first of
 * errors[] that is not RB_OK, or RB_OK. */
#define CLIENT_BATCH_MAX 64
rb_err client_submit_all(client_t *c, const uint8_t *const *envs, const size_t *lens, size_t n,
                         int timeout_ms, client_result_t *results, rb_err *errors);

/* Waits up to timeout_ms for a delivery. On RB_OK *env (malloc'd, the caller frees it) holds the
 * envelope, *attempt the broker's attempt number. RB_ERR_IO on timeout. */
rb_err client_receive(client_t *c, int timeout_ms, uint8_t **env, size_t *len, uint32_t *attempt);

/* Tells the broker a delivered envelope is safely stored. */
rb_err client_confirm(client_t *c, const uint8_t message_id[16]);

/* Signs an admin command for sending (the broker checks it in admin.c): fills req with malloc'd bytes,
 * freed by admin_request_clear. client_admin does both; tools that write requests of their own use these. */
rb_err admin_sign(const identity_t *admin, const Rb__AdminCommand *cmd, Rb__AdminRequest *req);
void admin_request_clear(Rb__AdminRequest *req);

/* Sends a signed admin command and waits for the reply. *output is malloc'd (the caller frees it). */
rb_err client_admin(client_t *c, const identity_t *admin, const char *command, const char *const *args,
                    size_t n_args, int timeout_ms, bool *ok, char **output);

/* Asks the broker (protocol version 2) to prove that its tree of old_size leaves is a prefix of its tree of
 * new_size leaves, both within its latest checkpoint: the RFC 9162 consistency proof, *n hashes, unchecked
 * (merkle_verify_consistency checks it against the roots the caller holds). RB_ERR_BAD_VERSION when the
 * broker speaks version 1, RB_ERR_USAGE when it refuses the sizes (it has no such tree: for sizes the caller
 * holds signed checkpoints of, evidence of another ledger), RB_ERR_IO without an answer; why says which. */
rb_err client_prove(client_t *c, uint64_t old_size, uint64_t new_size, int timeout_ms,
                    merkle_hash_t proof[PROOF_HASHES_MAX], size_t *n, char *why, size_t whylen);

/* The protocol version the broker said it speaks in its WELCOME (1 when it did not say). */
uint32_t client_protocol(const client_t *c);

/* The broker's ledger as this client checked it: the latest verified checkpoint, and alarms. */
typedef struct {
    bool holds;               /* a checkpoint is held */
    char note[NOTE_TEXT_MAX]; /* the latest, as signed */
    uint64_t size;
    unsigned alarms; /* checkpoints that did not verify or did not extend the one held */
    char alarm[256]; /* what the last alarm was */
} client_ledger_t;
const client_ledger_t *client_ledger(const client_t *c);

/* The last ERROR the broker sent that was not about a submission (e.g. DISABLED), or 0. */
Rb__ErrorCode client_last_error(const client_t *c, const char **reason);

#endif
