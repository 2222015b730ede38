/* wire.h -- frames on the ZeroMQ sockets, shared by the broker and the client library.
 *
 * One ZeroMQ message part per Frame (proto/wire.proto); a ROUTER prefixes the peer's routing id. CURVE
 * uses each party's X25519 key from its card, so one card names a party for both sealing and transport. */
#ifndef WIRE_H
#define WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "card.h"
#include "identity.h"
#include "rb_error.h"
#include "wire.pb-c.h"

#define WIRE_VERSION    3 /* the highest protocol version spoken: frames of versions 1 to 3 are taken */
#define WIRE_ZAP_DOMAIN "referral-broker"

/* The protocol version that introduced a frame body: 2 for PROVE and PROOF, 1 for the others. */
uint32_t wire_frame_version(Rb__Frame__BodyCase body);
/* Packs and sends f, with the version of its body; rid (rid_len bytes) first when sending from a ROUTER,
 * NULL from a DEALER. Never blocks: RB_ERR_IO when the peer cannot take it now (gone, or its queue full). */
rb_err wire_send(void *sock, const uint8_t *rid, size_t rid_len, Rb__Frame *f);
/* Convenience senders. */
rb_err wire_send_error(void *sock, const uint8_t *rid, size_t rid_len, Rb__ErrorCode code, const char *reason,
                       const uint8_t *message_id);
const char *wire_error_name(Rb__ErrorCode code);

/* CURVE on a socket: as the server with our keys, or as a client of a server card. */
rb_err wire_curve_server(void *sock, const identity_t *me);
rb_err wire_curve_client(void *sock, const identity_t *me, const card_t *server);

/* Lowercase hex of a message id (33 bytes with the NUL). */
/* Whether endpoint is one the broker listens on or a client connects to: tcp://HOST:PORT (PORT 1 to 65535,
 * or * for a listener that lets the system pick). ZeroMQ itself answers other forms with "Invalid
 * argument", or takes them (ipc://, inproc://) where no peer would ever be. */
bool wire_endpoint_valid(const char *endpoint, bool listener);
#define WIRE_ENDPOINT_FORM "not an endpoint: write tcp://HOST:PORT (as tcp://127.0.0.1:7450)"
void wire_id_hex(const uint8_t id[16], char out[33]);

#endif
