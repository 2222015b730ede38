/* metrics.h -- the broker's Prometheus endpoint: a registry of counters, gauges and histograms, served as
 * text (exposition format 0.0.4) at GET /metrics by libmicrohttpd on a thread of its own, with GET /healthz
 * (200 while that thread answers) and GET /readyz (200 once the broker has started and while its loop reads
 * the store, 503 with the reason otherwise).
 *
 * The broker's loop is the only writer: it counts events through the hooks below as they happen and, at
 * most once a second, copies the store's per-adapter counts into the registry (metrics_refresh). The HTTP
 * thread only renders what the registry holds and never touches the store. Every hook does nothing when
 * the registry is NULL (metrics off), so the loop calls them unconditionally. docs/OPERATIONS.md lists
 * every metric. */
#ifndef METRICS_H
#define METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.h"
#include "envelope.pb-c.h"
#include "rb_error.h"
#include "store.h"
#include "wire.pb-c.h"

typedef struct metrics metrics_t;

/* What a [metrics] listen value must look like, for error messages. */
#define METRICS_LISTEN_FORM                                                                                  \
    "must be off, or ADDRESS:PORT with a numeric IPv4 address, e.g. 127.0.0.1:9464 (port 0: the system "     \
    "picks one)"

/* Whether text is a valid listen value: "off", or ADDRESS:PORT (see METRICS_LISTEN_FORM). */
bool metrics_listen_valid(const char *text);

/* Binds address (a [metrics] listen value) and starts serving. "off": *out is NULL and RB_OK. Logs metrics_listening with the address
 * actually bound (the port the system picked for port 0), or metrics_bind_failed with the reason, and then
 * returns RB_ERR_IO (RB_ERR_USAGE for a malformed value), *out NULL. The registry is the caller's: stop it
 * with metrics_stop. */
rb_err metrics_start(metrics_t **out, const char *address);
/* Stops the HTTP thread, closes the socket and frees the registry; NULL is fine; nulls *m_p. */
void metrics_stop(metrics_t **m_p);

/* The registry as Prometheus text: *text (malloc'd, NUL-terminated) is the caller's. RB_ERR_NOMEM. */
rb_err metrics_render(metrics_t *m, char **text, size_t *len);

/* What GET /readyz answers at now_ms: NULL when ready, else why not (a constant string, one line). */
const char *metrics_readiness(metrics_t *m, int64_t now_ms);

/* A monotonic clock in seconds, for the time a SUBMIT arrives (works with metrics off too). */
double metrics_clock(void);

/* --- hooks for the broker's loop ----------------------------------------------------------------------- */

/* A submission committed and its receipt sent: counts it by sender and kind and observes the receipt
 * latency since arrived (metrics_clock()). For an ACK, also counts it by outcome and observes the end to
 * end latency: from the referral's arrival (read from store) to committed_ms, when the ACK was committed. */
void metrics_receipted(metrics_t *m, store_t *store, const Rb__Header *h, double arrived,
                       int64_t committed_ms);
/* A DELIVER sent to adapter; attempt > 1 is a retry. */
void metrics_delivered(metrics_t *m, const char *adapter, int attempt);
void metrics_confirmed(metrics_t *m, const char *adapter);
/* A frame from party refused with code. */
void metrics_refused(metrics_t *m, const char *party, Rb__ErrorCode code);
/* A CURVE client key the ZAP handler turned away. */
void metrics_handshake_refused(metrics_t *m);
/* Why a frame was dropped without an ERROR: it came from a connection with no session (every session
 * taken), or could not be sent (the peer's queue is full, or its connection is gone). */
typedef enum {
    METRICS_DROP_NO_SESSION,
    METRICS_DROP_PEER_FULL,
    METRICS_DROP_PEER_GONE,
    METRICS_DROP_REASONS
} metrics_drop_t;
void metrics_dropped(metrics_t *m, metrics_drop_t why);
/* Why the broker closed a session (docs/PROTOCOL.md, "Sessions"). */
typedef enum {
    METRICS_CLOSE_SILENT,   /* nothing from it for three heartbeat intervals */
    METRICS_CLOSE_REPLACED, /* its party said HELLO with credit on a newer connection */
    METRICS_CLOSE_GONE,     /* a DELIVER could not be sent: its connection closed or it does not read */
    METRICS_CLOSE_EVICTED,  /* its key opened more sessions than [broker] sessions_per_key: the oldest goes */
    METRICS_CLOSE_DISABLED, /* its party disabled, its key revoked, retired or expired */
    METRICS_CLOSE_STALE,    /* another key's connection came under its routing id: its own was gone */
    METRICS_CLOSE_REASONS
} metrics_close_t;
/* A session of party opened, or closed (why). */
void metrics_session_opened(metrics_t *m, const char *party);
void metrics_session_closed(metrics_t *m, const char *party, metrics_close_t why);
void metrics_dead_lettered(metrics_t *m, size_t n);
/* The broker listens and its ledger verified (consistent with its last checkpoint): /readyz may say ready
 * once the loop has read the store. */
void metrics_started(metrics_t *m);
/* A checkpoint of size leaves signed and committed at at_ms: the age reported is counted from it. */
void metrics_checkpointed(metrics_t *m, int64_t at_ms, uint64_t size);
/* Reads every adapter's counts (store_counts with ack_overdue_ms), whether it is connected, and the ledger
 * size into the registry, with when the broker's own key expires; does nothing when the last read was under a second ago. A failed read keeps the
 * previous values (and logs). */
void metrics_refresh(metrics_t *m, store_t *store, int64_t now_ms, int64_t ack_overdue_ms,
                     int64_t broker_key_end_ms, admin_connected_fn connected, void *ctx);

#endif
