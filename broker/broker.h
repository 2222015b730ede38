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

/* Runs until *stop becomes non-zero (a signal handler sets it), then finishes the transaction in hand and
 * returns RB_OK. Returns an error at once when the socket cannot be bound. Borrows everything. */
rb_err broker_run(const broker_config_t *cfg, const identity_t *me, store_t *store,
                  const volatile sig_atomic_t *stop);

#endif
