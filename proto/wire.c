/* wire.c -- frame I/O and CURVE setup (see wire.h). */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "keyfile.h"
#include "rbcrypto.h"

uint32_t wire_frame_version(Rb__Frame__BodyCase body)
{
    return body == RB__FRAME__BODY_PROVE || body == RB__FRAME__BODY_PROOF ? 2 : 1;
}

rb_err wire_send(void *sock, const uint8_t *rid, size_t rid_len, Rb__Frame *f)
{
    /* Each frame as old as its body allows: a peer of version 1 reads every frame it knows. */
    f->version = wire_frame_version(f->body_case);
    size_t len = rb__frame__get_packed_size(f);
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, len) != 0)
        return RB_ERR_NOMEM;
    rb__frame__pack(f, zmq_msg_data(&msg));
    if (rid != NULL && zmq_send(sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) != (int)rid_len) {
        zmq_msg_close(&msg);
        return RB_ERR_IO;
    }
    if (zmq_msg_send(&msg, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return RB_ERR_IO;
    }
    return RB_OK;
}

rb_err wire_send_error(void *sock, const uint8_t *rid, size_t rid_len, Rb__ErrorCode code, const char *reason,
                       const uint8_t *message_id)
{
    Rb__Frame f = RB__FRAME__INIT;
    Rb__Error e = RB__ERROR__INIT;
    e.code = code;
    e.reason = (char *)reason;
    if (message_id != NULL)
        e.message_id = (ProtobufCBinaryData){16, (uint8_t *)message_id};
    f.body_case = RB__FRAME__BODY_ERROR;
    f.error = &e;
    return wire_send(sock, rid, rid_len, &f);
}

const char *wire_error_name(Rb__ErrorCode code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&rb__error_code__descriptor, (int)code);
    return v != NULL ? v->name : "ERROR_CODE_UNKNOWN";
}

static rb_err set_key(void *sock, int option, const uint8_t key[32])
{
    return zmq_setsockopt(sock, option, key, 32) == 0 ? RB_OK : RB_ERR_IO;
}

rb_err wire_curve_server(void *sock, const identity_t *me)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, WIRE_ZAP_DOMAIN, strlen(WIRE_ZAP_DOMAIN)) != 0)
        return RB_ERR_IO;
    return set_key(sock, ZMQ_CURVE_SECRETKEY, identity_box_sk(me));
}

rb_err wire_curve_client(void *sock, const identity_t *me, const card_t *server)
{
    rb_err rc = set_key(sock, ZMQ_CURVE_SERVERKEY, server->box_pk);
    if (rc == RB_OK)
        rc = set_key(sock, ZMQ_CURVE_PUBLICKEY, identity_card(me)->box_pk);
    if (rc == RB_OK)
        rc = set_key(sock, ZMQ_CURVE_SECRETKEY, identity_box_sk(me));
    return rc;
}

void wire_id_hex(const uint8_t id[16], char out[33])
{
    keyfile_hex(id, 16, out);
}

bool wire_endpoint_valid(const char *endpoint, bool listener)
{
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return false;
    const char *host = endpoint + 6, *colon = strrchr(host, ':');
    if (colon == NULL || colon == host)
        return false;
    if (listener && strcmp(colon + 1, "*") == 0)
        return true;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return errno == 0 && colon[1] >= '0' && colon[1] <= '9' && *end == '\0' && port >= 1 && port <= 65535;
}
