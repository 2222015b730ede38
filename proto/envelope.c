/* envelope.c -- seal, verify and open envelopes (see envelope.h for the order of checks).
 *
 * Protobuf parsing is made strict by unpack_strict(): a message must re-pack to exactly the bytes it came
 * from (canonical: no duplicated, reordered or padded fields) and hold no unknown fields at any depth.
 * Plaintext (the Inner payload, the InnerSigned and the body) only ever sits in secret memory or in
 * protobuf messages allocated with the wiping allocator. */
#include "envelope.h"

#include <stdlib.h>
#include <string.h>

#include "referral.pb-c.h"

static ProtobufCAllocator *wiping(void)
{
    return rbcrypto_wiping_allocator();
}

/* Unknown fields anywhere in the tree: a newer or forged format this build must not half-understand. */
static bool has_unknown_fields(const ProtobufCMessage *m)
{
    if (m->n_unknown_fields > 0)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (has_unknown_fields(items[j]))
                    return true;
        } else {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
            if (sub != NULL && has_unknown_fields(sub))
                return true;
        }
    }
    return false;
}

/* Unpacks bytes as desc, refusing anything but the canonical encoding of a message this build knows.
 * RB_ERR_MALFORMED (or RB_ERR_NOMEM) on failure, leaving *out NULL. */
static rb_err unpack_strict(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes, size_t len,
                            ProtobufCAllocator *alloc, ProtobufCMessage **out)
{
    *out = NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, alloc, len, bytes);
    if (m == NULL)
        return RB_ERR_MALFORMED;
    rb_err rc = RB_OK;
    if (has_unknown_fields(m) || protobuf_c_message_get_packed_size(m) != len) {
        rc = RB_ERR_MALFORMED;
    } else if (len > 0) {
        /* The copy is as secret as the message: wiped when it is plaintext (alloc is then the wiping
         * allocator). Not sodium_malloc: its mmap, mprotect and mlock per call cost more than the signature
         * check on every header the broker and referral-audit verify, and the message itself is not locked. */
        uint8_t *again = alloc != NULL ? rbcrypto_wiping_malloc(len) : malloc(len);
        if (again == NULL)
            rc = RB_ERR_NOMEM;
        else if (protobuf_c_message_pack(m, again) != len || memcmp(again, bytes, len) != 0)
            rc = RB_ERR_MALFORMED;
        if (alloc != NULL)
            rbcrypto_wiping_free(again);
        else
            free(again);
    }
    if (rc != RB_OK) {
        protobuf_c_message_free_unpacked(m, alloc);
        return rc;
    }
    *out = m;
    return RB_OK;
}

/* Packs m into a new buffer from alloc_fn (malloc or secret memory). NULL when out of memory. */
static uint8_t *pack_new(const ProtobufCMessage *m, bool secret, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = secret ? rbcrypto_secret_alloc(*len ? *len : 1) : malloc(*len ? *len : 1);
    if (buf != NULL)
        protobuf_c_message_pack(m, buf);
    return buf;
}

void envelope_new_id(msg_id_t *id, int64_t now_ms)
{
    uint64_t ms = (uint64_t)now_ms;
    for (int i = 0; i < 6; i++)
        id->bytes[i] = (uint8_t)(ms >> (40 - 8 * i));
    rbcrypto_random(id->bytes + 6, MSG_ID_BYTES - 6);
    id->bytes[6] = (uint8_t)(0x70 | (id->bytes[6] & 0x0f)); /* version 7 */
    id->bytes[8] = (uint8_t)(0x80 | (id->bytes[8] & 0x3f)); /* RFC 9562 variant */
}

void envelope_case_key(const identity_t *from, const char *agency, const char *rd_number,
                       uint8_t out[CASE_KEY_BYTES])
{
    static const char label[] = "referral-broker/v1/case-key";
    uint8_t subkey[32];
    /* The Ed25519 seed (first half of the secret key) keys a PRF under its own label, so the derived key
     * is independent of every signature the seed makes. */
    rbcrypto_prf(identity_sign_sk(from), 32, (const uint8_t *)label, sizeof label, subkey, sizeof subkey);
    size_t alen = strlen(agency), rlen = strlen(rd_number);
    uint8_t msg[256];
    size_t n = 0;
    if (alen + rlen + 1 <= sizeof msg) {
        memcpy(msg, agency, alen);
        msg[alen] = 0;
        memcpy(msg + alen + 1, rd_number, rlen);
        n = alen + 1 + rlen;
    }
    rbcrypto_prf(subkey, sizeof subkey, msg, n, out, CASE_KEY_BYTES);
    rbcrypto_wipe(subkey, sizeof subkey);
    rbcrypto_wipe(msg, sizeof msg);
}

static ProtobufCBinaryData bin(const void *p, size_t len)
{
    ProtobufCBinaryData b = {len, (uint8_t *)p};
    return b;
}

static bool kind_known(int kind)
{
    return kind >= RB__KIND__KIND_REFERRAL && kind <= RB__KIND__KIND_NOTICE;
}

rb_err envelope_pack(const identity_t *signer, const Rb__Header *header, const uint8_t *ciphertext,
                     size_t ciphertext_len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    size_t hlen;
    uint8_t *hbytes = pack_new(&header->base, false, &hlen);
    if (hbytes == NULL)
        return RB_ERR_NOMEM;
    uint8_t sig[RB_SIG_BYTES];
    rb_err rc = rbcrypto_sign(RB_DOMAIN_HEADER, hbytes, hlen, identity_sign_sk(signer), sig);
    if (rc == RB_OK) {
        Rb__Envelope env = RB__ENVELOPE__INIT;
        env.header = bin(hbytes, hlen);
        env.header_signature = bin(sig, sizeof sig);
        env.ciphertext = bin(ciphertext, ciphertext_len);
        if (protobuf_c_message_get_packed_size(&env.base) > ENVELOPE_MAX_BYTES)
            rc = RB_ERR_TOO_BIG;
        else if ((*out = pack_new(&env.base, false, out_len)) == NULL)
            rc = RB_ERR_NOMEM;
    }
    free(hbytes);
    return rc;
}

rb_err envelope_seal(const identity_t *from, const card_t *to, const envelope_params_t *params,
                     const uint8_t *body, size_t body_len, msg_id_t *id, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    bool is_ack = params->kind == RB__KIND__KIND_ACK;
    if (!kind_known(params->kind) || (is_ack && params->ref == NULL) ||
        (is_ack != (params->ack_status != RB__ACK_STATUS__ACK_STATUS_UNSPECIFIED)) || params->created_ms <= 0)
        return RB_ERR_USAGE;
    if (body_len > ENVELOPE_MAX_BYTES)
        return RB_ERR_TOO_BIG;
    const card_t *me = identity_card(from);
    envelope_new_id(id, params->created_ms);

    Rb__InnerSigned is = RB__INNER_SIGNED__INIT;
    is.version = is_ack ? ENVELOPE_ACK_VERSION : ENVELOPE_VERSION;
    is.message_id = bin(id->bytes, MSG_ID_BYTES);
    is.kind = params->kind;
    is.sender = (char *)me->name;
    is.sender_key_id = bin(me->key_id, RB_KEY_ID_BYTES);
    is.recipient = (char *)to->name;
    is.recipient_key_id = bin(to->key_id, RB_KEY_ID_BYTES);
    if (params->ref != NULL)
        is.ref_message_id = bin(params->ref->bytes, MSG_ID_BYTES);
    is.body = bin(body, body_len);

    rb_err rc = RB_ERR_NOMEM;
    uint8_t *inner_bytes = NULL, *ciphertext = NULL;
    size_t signed_len, inner_len = 0, ct_len = 0;
    uint8_t *signed_bytes = pack_new(&is.base, true, &signed_len);
    if (signed_bytes == NULL)
        goto done;
    uint8_t sig[RB_SIG_BYTES];
    rc = rbcrypto_sign(RB_DOMAIN_INNER, signed_bytes, signed_len, identity_sign_sk(from), sig);
    if (rc != RB_OK)
        goto done;
    Rb__Inner inner = RB__INNER__INIT;
    inner.signed_ = bin(signed_bytes, signed_len);
    inner.signature = bin(sig, sizeof sig);
    rc = RB_ERR_NOMEM;
    if ((inner_bytes = pack_new(&inner.base, true, &inner_len)) == NULL)
        goto done;
    ct_len = inner_len + RB_SEAL_OVERHEAD;
    if ((ciphertext = malloc(ct_len)) == NULL)
        goto done;
    if ((rc = rbcrypto_seal(inner_bytes, inner_len, to->box_pk, ciphertext)) != RB_OK)
        goto done;

    uint8_t ct_hash[RB_HASH_BYTES];
    rbcrypto_sha256(ciphertext, ct_len, ct_hash);
    Rb__Header h = RB__HEADER__INIT;
    h.version = ENVELOPE_VERSION;
    h.message_id = is.message_id;
    h.kind = params->kind;
    h.sender = (char *)me->name;
    h.sender_agency = (char *)me->agency;
    h.sender_key_id = is.sender_key_id;
    h.recipient = (char *)to->name;
    h.recipient_key_id = is.recipient_key_id;
    h.created_ms = params->created_ms;
    if (params->case_key != NULL)
        h.case_key = bin(params->case_key, CASE_KEY_BYTES);
    h.ciphertext_sha256 = bin(ct_hash, sizeof ct_hash);
    h.ref_message_id = is.ref_message_id;
    h.ack_status = params->ack_status;
    rc = envelope_pack(from, &h, ciphertext, ct_len, out, out_len);
done:
    rbcrypto_secret_free(signed_bytes);
    rbcrypto_secret_free(inner_bytes);
    free(ciphertext);
    return rc;
}

static bool bytes_len(ProtobufCBinaryData b, size_t want)
{
    return b.len == want;
}

static bool optional_id(ProtobufCBinaryData b)
{
    return b.len == 0 || b.len == MSG_ID_BYTES;
}

/* The header's own rules, before any key is looked up. */
static rb_err check_header_format(const Rb__Header *h)
{
    if (h->version != ENVELOPE_VERSION)
        return RB_ERR_BAD_VERSION;
    bool is_ack = h->kind == RB__KIND__KIND_ACK;
    bool ok = kind_known(h->kind) && bytes_len(h->message_id, MSG_ID_BYTES) && card_name_ok(h->sender) &&
              card_agency_ok(h->sender_agency) && bytes_len(h->sender_key_id, RB_KEY_ID_BYTES) &&
              card_name_ok(h->recipient) && bytes_len(h->recipient_key_id, RB_KEY_ID_BYTES) &&
              h->created_ms > 0 && (h->case_key.len == 0 || h->case_key.len == CASE_KEY_BYTES) &&
              bytes_len(h->ciphertext_sha256, RB_HASH_BYTES) && optional_id(h->ref_message_id) &&
              (!is_ack || h->ref_message_id.len == MSG_ID_BYTES) &&
              (is_ack ? (h->ack_status == RB__ACK_STATUS__ACK_STATUS_ACCEPTED ||
                         h->ack_status == RB__ACK_STATUS__ACK_STATUS_REJECTED)
                      : h->ack_status == RB__ACK_STATUS__ACK_STATUS_UNSPECIFIED);
    return ok ? RB_OK : RB_ERR_MALFORMED;
}

/* Police systems send referrals; the intake system answers; the broker sends key notices. Nobody else
 * signs messages. */
static bool role_may_send(uint8_t role, Rb__Kind kind)
{
    return kind == RB__KIND__KIND_ACK      ? role == CARD_ROLE_SINK
           : kind == RB__KIND__KIND_NOTICE ? role == CARD_ROLE_BROKER
                                           : role == CARD_ROLE_SOURCE;
}

rb_err envelope_verify_signed_header(const trust_t *trust, const uint8_t *header, size_t len,
                                     const uint8_t sig[RB_SIG_BYTES], Rb__Header **out, card_t *sender)
{
    *out = NULL;
    ProtobufCMessage *m;
    rb_err rc = unpack_strict(&rb__header__descriptor, header, len, NULL, &m);
    if (rc != RB_OK)
        return rc;
    Rb__Header *h = (Rb__Header *)m;
    const card_t *card = NULL;
    if ((rc = check_header_format(h)) == RB_OK) {
        card = trust_find_key(trust, h->sender_key_id.data);
        if (card == NULL || strcmp(card->name, h->sender) != 0 || strcmp(card->agency, h->sender_agency) != 0)
            rc = RB_ERR_UNKNOWN_SENDER;
    }
    if (rc == RB_OK && !role_may_send(card->role, h->kind))
        rc = RB_ERR_NOT_ALLOWED;
    if (rc == RB_OK)
        rc = trust_check(trust, card, (uint64_t)(h->created_ms / 1000));
    if (rc == RB_OK && rbcrypto_verify(RB_DOMAIN_HEADER, header, len, sig, card->sign_pk) != RB_OK)
        rc = RB_ERR_BAD_SIGNATURE;
    if (rc != RB_OK) {
        rb__header__free_unpacked(h, NULL);
        return rc;
    }
    *sender = *card;
    *out = h;
    return RB_OK;
}

/* verify_header, keeping the unpacked envelope for open. */
static rb_err verify(const trust_t *trust, const uint8_t *env, size_t len, Rb__Envelope **env_out,
                     Rb__Header **header_out, card_t *sender)
{
    *env_out = NULL;
    *header_out = NULL;
    if (len > ENVELOPE_MAX_BYTES)
        return RB_ERR_TOO_BIG;
    ProtobufCMessage *m;
    rb_err rc = unpack_strict(&rb__envelope__descriptor, env, len, NULL, &m);
    if (rc != RB_OK)
        return rc;
    Rb__Envelope *e = (Rb__Envelope *)m;
    Rb__Header *h = NULL;
    if (!bytes_len(e->header_signature, RB_SIG_BYTES) || e->ciphertext.len < RB_SEAL_OVERHEAD) {
        rc = RB_ERR_MALFORMED;
        goto fail;
    }
    if ((rc = envelope_verify_signed_header(trust, e->header.data, e->header.len, e->header_signature.data,
                                            &h, sender)) != RB_OK)
        goto fail;
    uint8_t ct_hash[RB_HASH_BYTES];
    rbcrypto_sha256(e->ciphertext.data, e->ciphertext.len, ct_hash);
    if (!rbcrypto_equal(ct_hash, h->ciphertext_sha256.data, RB_HASH_BYTES)) {
        rc = RB_ERR_HASH_MISMATCH;
        goto fail;
    }
    *env_out = e;
    *header_out = h;
    return RB_OK;
fail:
    if (h != NULL)
        rb__header__free_unpacked(h, NULL);
    rb__envelope__free_unpacked(e, NULL);
    return rc;
}

rb_err envelope_verify_header(const trust_t *trust, const uint8_t *env, size_t len, Rb__Header **header,
                              card_t *sender)
{
    Rb__Envelope *e;
    rb_err rc = verify(trust, env, len, &e, header, sender);
    if (rc == RB_OK)
        rb__envelope__free_unpacked(e, NULL);
    return rc;
}

rb_err envelope_peek_header(const uint8_t *env, size_t len, Rb__Header **header)
{
    *header = NULL;
    Rb__Envelope *e = rb__envelope__unpack(NULL, len, env);
    if (e != NULL)
        *header = rb__header__unpack(NULL, e->header.len, e->header.data);
    if (e != NULL)
        rb__envelope__free_unpacked(e, NULL);
    if (*header != NULL && (*header)->message_id.len != MSG_ID_BYTES) {
        rb__header__free_unpacked(*header, NULL);
        *header = NULL;
    }
    return *header != NULL ? RB_OK : RB_ERR_MALFORMED;
}

rb_err envelope_peek_id(const uint8_t *env, size_t len, msg_id_t *id)
{
    Rb__Header *h;
    rb_err rc = envelope_peek_header(env, len, &h);
    if (rc == RB_OK) {
        memcpy(id->bytes, h->message_id.data, MSG_ID_BYTES);
        rb__header__free_unpacked(h, NULL);
    }
    return rc;
}

static bool same_bytes(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* Everything the inner signature binds must be what the header says. */
static bool inner_matches(const Rb__InnerSigned *is, const Rb__Header *h)
{
    return is->kind == h->kind && same_bytes(is->message_id, h->message_id) &&
           strcmp(is->sender, h->sender) == 0 && same_bytes(is->sender_key_id, h->sender_key_id) &&
           strcmp(is->recipient, h->recipient) == 0 &&
           same_bytes(is->recipient_key_id, h->recipient_key_id) &&
           same_bytes(is->ref_message_id, h->ref_message_id);
}

rb_err envelope_open(const identity_t *as, const trust_t *trust, const uint8_t *env, size_t len,
                     envelope_opened_t *out)
{
    memset(out, 0, sizeof *out);
    Rb__Envelope *e;
    rb_err rc = verify(trust, env, len, &e, &out->header, &out->sender);
    if (rc != RB_OK)
        return rc;
    const Rb__Header *h = out->header;
    const card_t *me = identity_card(as);
    uint8_t *clear = NULL;
    Rb__Inner *inner = NULL;
    Rb__InnerSigned *is = NULL;
    ProtobufCMessage *m;
    if (strcmp(h->recipient, me->name) != 0 ||
        memcmp(h->recipient_key_id.data, me->key_id, RB_KEY_ID_BYTES) != 0) {
        rc = RB_ERR_WRONG_RECIPIENT;
        goto done;
    }
    size_t clear_len = e->ciphertext.len - RB_SEAL_OVERHEAD;
    if ((clear = rbcrypto_secret_alloc(clear_len ? clear_len : 1)) == NULL) {
        rc = RB_ERR_NOMEM;
        goto done;
    }
    rc = rbcrypto_seal_open(e->ciphertext.data, e->ciphertext.len, me->box_pk, identity_box_sk(as), clear);
    if (rc != RB_OK)
        goto done;
    if ((rc = unpack_strict(&rb__inner__descriptor, clear, clear_len, wiping(), &m)) != RB_OK)
        goto done;
    inner = (Rb__Inner *)m;
    if (!bytes_len(inner->signature, RB_SIG_BYTES) ||
        rbcrypto_verify(RB_DOMAIN_INNER, inner->signed_.data, inner->signed_.len, inner->signature.data,
                        out->sender.sign_pk) != RB_OK) {
        rc = RB_ERR_BAD_INNER_SIG;
        goto done;
    }
    if ((rc = unpack_strict(&rb__inner_signed__descriptor, inner->signed_.data, inner->signed_.len, wiping(),
                            &m)) != RB_OK)
        goto done;
    is = (Rb__InnerSigned *)m;
    if (is->version != ENVELOPE_VERSION &&
        !(is->version == ENVELOPE_ACK_VERSION && h->kind == RB__KIND__KIND_ACK)) {
        rc = RB_ERR_BAD_VERSION;
        goto done;
    }
    if (!inner_matches(is, h)) {
        rc = RB_ERR_INNER_MISMATCH;
        goto done;
    }
    const ProtobufCMessageDescriptor *body_desc = h->kind == RB__KIND__KIND_ACK ? &rb__ack_body__descriptor
                                                  : h->kind == RB__KIND__KIND_NOTICE
                                                      ? &rb__key_notice__descriptor
                                                      : &rb__referral__descriptor;
    rc = unpack_strict(body_desc, is->body.data, is->body.len, wiping(), &out->message);
    if (rc == RB_ERR_MALFORMED)
        rc = RB_ERR_BAD_BODY;
    if (rc != RB_OK)
        goto done;
    if (h->kind == RB__KIND__KIND_ACK) {
        const Rb__AckBody *ack = (const Rb__AckBody *)out->message;
        /* The header's status is what the broker ledgers, the body's what the source acts on: they are one. */
        if (ack->status != h->ack_status) {
            rc = RB_ERR_INNER_MISMATCH;
            goto done;
        }
        /* Version 1's layout has no such fields: one that holds them is not version 1. */
        if (is->version == ENVELOPE_VERSION && (ack->duplicate || ack->checkpoint[0] != '\0')) {
            rc = RB_ERR_BAD_BODY;
            goto done;
        }
    }
    out->body_len = is->body.len;
    if ((out->body = rbcrypto_secret_alloc(is->body.len ? is->body.len : 1)) == NULL) {
        rc = RB_ERR_NOMEM;
        goto done;
    }
    if (is->body.len > 0)
        memcpy(out->body, is->body.data, is->body.len);
    rbcrypto_sha256(env, len, out->envelope_sha256);
done:
    if (is != NULL)
        rb__inner_signed__free_unpacked(is, wiping());
    if (inner != NULL)
        rb__inner__free_unpacked(inner, wiping());
    rbcrypto_secret_free(clear);
    rb__envelope__free_unpacked(e, NULL);
    if (rc != RB_OK)
        envelope_opened_clear(out);
    return rc;
}

void envelope_opened_clear(envelope_opened_t *opened)
{
    if (opened->header != NULL)
        rb__header__free_unpacked(opened->header, NULL);
    if (opened->message != NULL)
        protobuf_c_message_free_unpacked(opened->message, wiping());
    rbcrypto_secret_free(opened->body);
    memset(opened, 0, sizeof *opened);
}
