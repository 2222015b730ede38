/* broker.h -- the broker: one ROUTER socket over CURVE, one loop, state in SQLite.
 *
 * broker_run owns everything until it returns: the ZeroMQ context, the ROUTER, the ZAP handler that
 * admits registered parties, the store, and the loop that verifies submissions, commits them in groups
 * before answering receipts, delivers to recipients with credit, redelivers with backoff, dead-letters,
 * routes ACKs back and sends heartbeats. docs/PROTOCOL.md describes the dialogue. */
#ifndef BROKER_H
#define BROKER_H

#include <signal.h>

#include "config.h"
#include "identity.h"
#include "rb_error.h"
#include "store.h"

/* The files of a data directory. */
#define BROKER_SECRET "broker.secret"
#define BROKER_CARD   "broker.card"
#define BROKER_DB     "broker.db"

typedef struct broker broker_t;

/* Runs until *stop becomes non-zero (a signal handler sets it), then finishes the transaction in hand and
 * returns RB_OK. Returns an error at once when the socket cannot be bound. Borrows everything. */
rb_err broker_run(const broker_config_t *cfg, const identity_t *me, store_t *store,
                  const volatile sig_atomic_t *stop);

/* broker_run in parts, for tests that drive the loop themselves (tests/fuzz/frame_fuzz.c). broker_open
 * binds and starts (on failure *out is NULL); broker_step is one turn of the loop (waiting for the sockets
 * until the next timer is due, a second at most); broker_close commits what is in hand, records the stop unless why is
 * RB_ERR_HASH_MISMATCH, and frees everything. */
rb_err broker_open(broker_t **out, const broker_config_t *cfg, const identity_t *me, store_t *store);
rb_err broker_step(broker_t *b);
void broker_close(broker_t **b_p, rb_err why);
/* The endpoint the ROUTER bound (the port the system picked for "*"). */
const char *broker_endpoint(const broker_t *b);
/* Handles data as one frame from the connection with routing id rid, exactly as if the ROUTER had
 * received it, and commits: the reply goes out on the real socket. The connection must have spoken
 * through the socket before (ZAP admitted it and it has a session): RB_ERR_USAGE otherwise. */
rb_err broker_feed(broker_t *b, const uint8_t *rid, size_t rid_len, const uint8_t *data, size_t len);

#endif
