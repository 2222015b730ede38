/* raw_peer.h -- a hostile client for tests: a bare ZeroMQ DEALER that chooses its own routing id, holds as
 * many connections as it likes and sends any frame, or any bytes, under any registered key; and what a test
 * reads of the broker process from outside (its memory, its descriptors, its /metrics).
 *
 * The client library (adapters/client/client.c) always behaves; these do not have to. */
#ifndef RAW_PEER_H
#define RAW_PEER_H

#include <errno.h>
#include <zmq.h>

#include "harness.h"

/* The ZeroMQ context of the running test's raw peers. */
static void *zctx;

/* A DEALER connected to the broker: CURVE as who (NULL: no CURVE at all) expecting the server key server_pk;
 * rcvhwm and sndhwm (0: ZeroMQ's defaults) bound what waits in it; routing_id, when not NULL, is the id it
 * asks the broker's ROUTER to know it by (a well-behaved client lets the ROUTER pick one). */
static inline void *raw_peer_as(harness_t *h, const identity_t *who, const uint8_t *server_pk, int rcvhwm,
                                int sndhwm, const char *routing_id)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    assert_non_null(s);
    int zero = 0;
    assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
    if (rcvhwm > 0) {
        int small = 4096;
        assert_int_equal(zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm), 0);
        assert_int_equal(zmq_setsockopt(s, ZMQ_RCVBUF, &small, sizeof small), 0);
    }
    if (sndhwm > 0)
        assert_int_equal(zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm), 0);
    if (routing_id != NULL)
        assert_int_equal(zmq_setsockopt(s, ZMQ_ROUTING_ID, routing_id, strlen(routing_id)), 0);
    if (who != NULL) {
        card_t server = h->broker;
        memcpy(server.box_pk, server_pk, sizeof server.box_pk);
        assert_ok(wire_curve_client(s, who, &server));
    }
    assert_int_equal(zmq_connect(s, h->endpoint), 0);
    return s;
}

static inline void *raw_peer(harness_t *h, const identity_t *who, const uint8_t *server_pk, int rcvhwm,
                             int sndhwm)
{
    return raw_peer_as(h, who, server_pk, rcvhwm, sndhwm, NULL);
}

/* Sends f; false when ZeroMQ would block (the peer's queue to the broker is full). */
static inline bool raw_send(void *s, Rb__Frame *f)
{
    f->version = f->version ? f->version : WIRE_VERSION;
    size_t len = rb__frame__get_packed_size(f);
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    rb__frame__pack(f, buf);
    int rc = zmq_send(s, buf, len, ZMQ_DONTWAIT);
    free(buf);
    if (rc < 0 && errno != EAGAIN)
        fail_msg("zmq_send: %s", zmq_strerror(errno));
    return rc >= 0;
}

static inline void raw_bytes(void *s, const void *data, size_t len)
{
    assert_int_equal(zmq_send(s, data, len, 0), (int)len);
}

/* The next frame the broker sent, or NULL when none came within timeout_ms. */
static inline Rb__Frame *raw_recv(void *s, int timeout_ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&m, s, 0) >= 0);
    Rb__Frame *f = rb__frame__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
    assert_non_null(f); /* whatever it is sent, the broker answers with frames */
    zmq_msg_close(&m);
    return f;
}

/* The next frame of this kind within timeout_ms, others skipped; NULL when none came. */
static inline Rb__Frame *raw_expect(void *s, Rb__Frame__BodyCase kind, int timeout_ms)
{
    int64_t deadline = harness_deadline(timeout_ms);
    for (Rb__Frame *f; harness_ms() < deadline;) {
        if ((f = raw_recv(s, 50)) == NULL)
            continue;
        if (f->body_case == kind)
            return f;
        rb__frame__free_unpacked(f, NULL);
    }
    return NULL;
}

static inline void send_hello(void *s, uint32_t credit)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Hello hello = RB__HELLO__INIT;
    hello.credit = credit;
    f.body_case = RB__FRAME__BODY_HELLO;
    f.hello = &hello;
    assert_true(raw_send(s, &f));
}

static inline void send_heartbeat(void *s)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Heartbeat hb = RB__HEARTBEAT__INIT;
    f.body_case = RB__FRAME__BODY_HEARTBEAT;
    f.heartbeat = &hb;
    raw_send(s, &f);
}

static inline bool send_submit(void *s, const uint8_t *env, size_t len)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Submit sub = RB__SUBMIT__INIT;
    sub.envelope = (ProtobufCBinaryData){len, (uint8_t *)env};
    f.body_case = RB__FRAME__BODY_SUBMIT;
    f.submit = &sub;
    return raw_send(s, &f);
}

static inline bool send_confirm(void *s, const uint8_t id[MSG_ID_BYTES])
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Confirm c = RB__CONFIRM__INIT;
    c.message_id = (ProtobufCBinaryData){MSG_ID_BYTES, (uint8_t *)id};
    f.body_case = RB__FRAME__BODY_CONFIRM;
    f.confirm = &c;
    return raw_send(s, &f);
}

/* --- the broker from outside ------------------------------------------------------------------------- */

/* The value of one series on the broker's /metrics (0 when absent). */
static inline double metric(harness_t *h, const char *series)
{
    char *head, *body;
    assert_int_equal(harness_http(harness_metrics_port(h), "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                                  &head, &body),
                     200);
    double v = 0;
    size_t n = strlen(series);
    /* The body starts at a line, so a series at its very start counts too. */
    for (char *p = body; (p = strstr(p, series)) != NULL; p += n)
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            v = strtod(p + n + 1, NULL);
    free(head);
    free(body);
    return v;
}

/* Waits up to timeout_ms for a metric to reach want (the registry follows the loop). */
static inline double metric_at_least(harness_t *h, const char *series, double want, int timeout_ms)
{
    int64_t deadline = harness_ms() + timeout_ms;
    double v;
    while ((v = metric(h, series)) < want && harness_ms() < deadline)
        harness_sleep_ms(50);
    return v;
}

#endif
