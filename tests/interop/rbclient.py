"""rbclient.py -- a Referral Broker client written from docs/ and proto/ alone (issue #18).

It exists to keep the wire and the documents from drifting apart: every byte it makes or checks comes
from docs/KEYS.md (cards, secret files, envelopes, the order of opening checks), docs/PROTOCOL.md
(frames, dialogue) and docs/LEDGER.md (leaves, notes, Merkle proofs, receipts), never from the C
sources. Where this file and the C programs disagree, one of them or the documents is wrong.

Needs Debian's python3-nacl, python3-zmq, python3-protobuf, and the classes protoc --python_out makes
from proto/*.proto on the import path (tests/integration/python_client_test.sh does that).
"""
import base64
import hashlib
import os
import re
import struct
import time
import warnings

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.signing
import zmq
from google.protobuf.message import DecodeError

import envelope_pb2
import ledger_pb2
import referral_pb2
import wire_pb2

# --- small helpers -------------------------------------------------------------------------------


class Refused(Exception):
    """Something the documents say must be refused. `error` is the documents' name for it (KEYS.md's
    opening table: 'malformed', 'unknown sender', ...; 'bad receipt' for receipts, 'bad ack' for what
    check_ack refuses)."""

    def __init__(self, error, detail=""):
        super().__init__(f"{error}: {detail}" if detail else error)
        self.error = error


class LedgerAlarm(Refused):
    """A correctly signed checkpoint that does not extend the one held (LEDGER.md section 6, Alarms), or
    another party's checkpoint not of our ledger (LEDGER.md, Cross-witnessing)."""


def sha256(data):
    return hashlib.sha256(data).digest()


def now_ms():
    return int(time.time() * 1000)


def b64(data):
    return base64.b64encode(data).decode("ascii")


def b64dec(text):
    """Standard base64 with padding, canonical spelling only (LEDGER.md conventions, KEYS.md cards): a
    second spelling of the same bytes would let a byte change go unnoticed."""
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not base64: {e}") from None
    if b64(data) != text:
        raise ValueError("base64 not in its canonical spelling")
    return data


def strict_parse(cls, data, what):
    """KEYS.md "Strict parsing": the bytes must be exactly what re-serialising the decoded message
    gives (fields in order, once each, shortest varints, no defaults written) with no unknown field at
    any depth. Dropping unknown fields before re-serialising makes any of them show as a difference."""
    msg = cls()
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise Refused("malformed", f"{what} does not parse: {e}") from None
    if warned:
        # python3-protobuf only warns of some malformed input ("Unexpected end-group tag").
        raise Refused("malformed", f"{what} does not parse: {warned[0].message}")
    canon = cls()
    canon.CopyFrom(msg)
    canon.DiscardUnknownFields()
    if canon.SerializeToString() != bytes(data):
        raise Refused("malformed", f"{what} is not in canonical form")
    return msg


# --- keys and cards (KEYS.md) --------------------------------------------------------------------

LABEL_CARD = b"referral-broker/v1/card"
LABEL_HEADER = b"referral-broker/v1/header"
LABEL_INNER = b"referral-broker/v1/inner"

ROLE_SOURCE, ROLE_SINK, ROLE_BROKER, ROLE_ADMIN = 1, 2, 3, 4
ROLE_NAMES = {ROLE_SOURCE: "source", ROLE_SINK: "sink", ROLE_BROKER: "broker", ROLE_ADMIN: "admin"}
# Which kinds a card's role may send (KEYS.md, opening step 7).
ROLE_KINDS = {
    ROLE_SOURCE: {envelope_pb2.KIND_REFERRAL, envelope_pb2.KIND_SUPPLEMENT, envelope_pb2.KIND_WITHDRAWAL},
    ROLE_SINK: {envelope_pb2.KIND_ACK},
    ROLE_BROKER: {envelope_pb2.KIND_NOTICE},
    ROLE_ADMIN: set(),
}
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
ORI_RE = re.compile(r"[A-Z]{2}[A-Z0-9]{7}\Z")


def labelled(label, message):
    """Every signature but a checkpoint's covers label || 0x00 || message (KEYS.md), so none can be
    replayed for another purpose."""
    return label + b"\x00" + message


def verify_sig(public_key, label, message, signature):
    try:
        nacl.signing.VerifyKey(public_key).verify(labelled(label, message), bytes(signature))
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


def key_id(sign_pk):
    return sha256(sign_pk)[:8]


def fingerprint(card):
    """SHA-256 of sign_pk || box_pk, 64 hex digits in groups of four (KEYS.md)."""
    h = sha256(card.sign_pk + card.box_pk).hex()
    return " ".join(h[i:i + 4] for i in range(0, 64, 4))


class Card:
    """A parsed, verified card: the packed layout of KEYS.md "Card"."""

    def __init__(self, packed):
        self.packed = bytes(packed)
        p = self.packed
        if len(p) < 97 or p[:4] != b"RBCD":
            raise Refused("malformed", "not a packed card")
        if p[4] != 1 or p[6] != 1 or p[7] != 1 or p[5] not in ROLE_NAMES:
            raise Refused("malformed", "card version, role or algorithm")
        self.role = p[5]
        self.key_id, self.sign_pk, self.box_pk = p[8:16], p[16:48], p[48:80]
        self.created, self.expires = struct.unpack_from("<QQ", p, 80)
        n = p[96]
        if not 1 <= n <= 64 or len(p) != 97 + n + 1 + 9 + 64 or p[97 + n] != 9:
            raise Refused("malformed", "card name or agency length, or bytes after the signature")
        try:
            self.name = p[97:97 + n].decode("ascii")
            self.agency = p[98 + n:107 + n].decode("ascii")
        except UnicodeDecodeError:
            raise Refused("malformed", "card name or agency not ASCII") from None
        if not NAME_RE.match(self.name) or not ORI_RE.match(self.agency):
            raise Refused("malformed", "card name or agency ORI")
        if self.key_id != key_id(self.sign_pk) or self.expires <= self.created:
            raise Refused("malformed", "card key id or validity")
        if not verify_sig(self.sign_pk, LABEL_CARD, p[:107 + n], p[107 + n:]):
            raise Refused("malformed", "card self-signature does not verify")

    def text(self):
        """The two-line file: a label line for people, then the packed card in base64, each ending in a
        newline."""
        return (f"referral-broker card v1: name={self.name} role={ROLE_NAMES[self.role]} "
                f"agency={self.agency} keyid={self.key_id.hex()}\n{b64(self.packed)}\n")

    def usable_at(self, seconds):
        return self.created <= seconds < self.expires


def pack_card(sign_sk, box_pk, role, name, agency, created, expires):
    sign_pk = bytes(sign_sk.verify_key)
    body = (b"RBCD" + bytes([1, role, 1, 1]) + key_id(sign_pk) + sign_pk + box_pk +
            struct.pack("<QQ", created, expires) + bytes([len(name)]) + name.encode("ascii") +
            bytes([9]) + agency.encode("ascii"))
    return body + sign_sk.sign(labelled(LABEL_CARD, body)).signature


def parse_card_text(text):
    """A card file: exactly the two lines a writer would produce, so that no byte can change unnoticed."""
    lines = text.split("\n")
    if len(lines) != 3 or lines[2] != "":
        raise Refused("malformed", "a card file is two lines, each ending in a newline")
    try:
        card = Card(b64dec(lines[1]))
    except ValueError as e:
        raise Refused("malformed", f"card: {e}") from None
    if card.text() != text:
        raise Refused("malformed", "card label line is not the one its packed card gives")
    return card


def read_card(path):
    with open(path, encoding="ascii") as f:
        return parse_card_text(f.read())


class Identity:
    """One party's keys: Ed25519 for signing, X25519 for sealing and for CURVE (KEYS.md)."""

    def __init__(self, sign_sk, box_sk, card):
        self.sign_sk, self.box_sk, self.card = sign_sk, box_sk, card

    @classmethod
    def generate(cls, name, role, agency, days=1):
        sign_sk = nacl.signing.SigningKey.generate()
        box_sk = nacl.public.PrivateKey.generate()
        # A minute in the past: a clock a little behind ours still finds the card valid.
        created = int(time.time()) - 60
        card = Card(pack_card(sign_sk, bytes(box_sk.public_key), role, name, agency, created,
                              created + days * 86400))
        return cls(sign_sk, box_sk, card)

    @classmethod
    def from_secret_file(cls, path):
        """A secret key file without passphrase (KEYS.md "Secret key file"): RBSK header, then
        Ed25519 secret (seed || public) || X25519 secret || packed card, all checked against the card."""
        with open(path, encoding="ascii") as f:
            lines = f.read().split("\n")
        if len(lines) != 3 or lines[2] != "":
            raise Refused("malformed", "a secret file is two lines")
        p = b64dec(lines[1])
        if p[:4] != b"RBSK" or p[4] != 1 or p[5] != 0 or p[6] != 0 or p[7] != 0 or any(p[16:72]):
            raise Refused("malformed", "not an unencrypted version-1 secret file")
        seed, ed_pk, x_sk = p[72:104], p[104:136], p[136:168]
        card = Card(p[168:])
        sign_sk = nacl.signing.SigningKey(seed)
        box_sk = nacl.public.PrivateKey(x_sk)
        if (bytes(sign_sk.verify_key) != ed_pk or ed_pk != card.sign_pk or
                bytes(box_sk.public_key) != card.box_pk or p[8:16] != card.key_id):
            raise Refused("malformed", "secret keys do not match the card")
        want = (f"referral-broker secret key v1: keyid={card.key_id.hex()} name={card.name} "
                f"encrypted=none")
        if lines[0] != want:
            raise Refused("malformed", "secret file label line")
        return cls(sign_sk, box_sk, card)

    @property
    def name(self):
        return self.card.name

    def sign(self, label, message):
        return self.sign_sk.sign(labelled(label, message)).signature

    def case_key(self, agency, rd_number):
        """KEYS.md: BLAKE2b-128(key = BLAKE2b-256(key = Ed25519 seed, label || 0x00), agency || 0x00 ||
        RD number): the same for every envelope about one case from this sender, opaque to others."""
        raw = nacl.encoding.RawEncoder
        k = nacl.hash.blake2b(b"referral-broker/v1/case-key\x00", digest_size=32, key=bytes(self.sign_sk),
                              encoder=raw)
        return nacl.hash.blake2b(agency.encode() + b"\x00" + rd_number.encode(), digest_size=16, key=k,
                                 encoder=raw)


class TrustStore:
    """The cards a party believes (KEYS.md "Trust store"); this client keeps no retirements or
    revocations, as nobody rotates or revokes a key in its tests."""

    def __init__(self, cards=()):
        self.cards = list(cards)

    def add(self, card):
        self.cards.append(card)

    def by_key_id(self, kid):
        return next((c for c in self.cards if c.key_id == kid), None)

    def newest(self, name):
        """To seal to a name: the newest card of that name usable now."""
        now = int(time.time())
        usable = [c for c in self.cards if c.name == name and c.usable_at(now)]
        if not usable:
            raise Refused("unknown recipient", name)
        return max(usable, key=lambda c: c.created)


# --- envelopes (KEYS.md "Envelope") --------------------------------------------------------------

BODY_TYPES = {
    envelope_pb2.KIND_REFERRAL: referral_pb2.Referral,
    envelope_pb2.KIND_SUPPLEMENT: referral_pb2.Referral,
    envelope_pb2.KIND_WITHDRAWAL: referral_pb2.Referral,
    envelope_pb2.KIND_ACK: envelope_pb2.AckBody,
    envelope_pb2.KIND_NOTICE: envelope_pb2.KeyNotice,
}
MAX_ENVELOPE = 1 << 20


def uuid7():
    """48-bit big-endian Unix milliseconds, version nibble 7, RFC 9562 variant, random bits."""
    b = bytearray(now_ms().to_bytes(6, "big") + os.urandom(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)


def inner_version(kind):
    """KEYS.md "ACKs", Versions: a writer puts 2 on ACKs (their body may hold AckBody's fields of version
    2) and 1 on every other kind, so that a sink reading version 1 only still opens our referrals."""
    return 2 if kind == envelope_pb2.KIND_ACK else 1


def seal(me, to, kind, body, case_key=b"", ref_message_id=b"", ack_status=0, message_id=None, version=None):
    """Seals a serialised body from `me` (Identity) to `to` (Card); returns the envelope's bytes.
    `version` overrides InnerSigned's, for tests of what an opener refuses."""
    mid = message_id or uuid7()
    signed = envelope_pb2.InnerSigned(
        version=inner_version(kind) if version is None else version, message_id=mid, kind=kind,
        sender=me.name, sender_key_id=me.card.key_id, recipient=to.name, recipient_key_id=to.key_id,
        ref_message_id=ref_message_id, body=body).SerializeToString()
    inner = envelope_pb2.Inner(signed=signed, signature=me.sign(LABEL_INNER, signed)).SerializeToString()
    ciphertext = nacl.public.SealedBox(nacl.public.PublicKey(to.box_pk)).encrypt(inner)
    header = envelope_pb2.Header(
        version=1, message_id=mid, kind=kind, sender=me.name, sender_agency=me.card.agency,
        sender_key_id=me.card.key_id, recipient=to.name, recipient_key_id=to.key_id,
        created_ms=now_ms(), case_key=case_key, ciphertext_sha256=sha256(ciphertext),
        ref_message_id=ref_message_id, ack_status=ack_status).SerializeToString()
    return envelope_pb2.Envelope(header=header, header_signature=me.sign(LABEL_HEADER, header),
                                 ciphertext=ciphertext).SerializeToString()


def seal_referral(me, to, referral):
    """A Referral as the first revision of its case (a referral with references would be a supplement
    or a withdrawal, ADAPTERS.md "Kinds"), with this sender's case key."""
    return seal(me, to, envelope_pb2.KIND_REFERRAL, referral.SerializeToString(),
                case_key=me.case_key(referral.agency_ori, referral.rd_number))


class Opened:
    """An opened envelope: its header (message and bytes), the sender's card, InnerSigned and body."""

    def __init__(self, data, header_bytes, header, card, signed, body):
        self.envelope, self.header_bytes, self.header = data, header_bytes, header
        self.sender_card, self.signed, self.body = card, signed, body


def header_fields_ok(h):
    """Opening step 5: every field well formed (lengths, names, kind, status only on ACKs)."""
    is_ack = h.kind == envelope_pb2.KIND_ACK
    return (len(h.message_id) == 16 and h.kind in BODY_TYPES and NAME_RE.match(h.sender) and
            ORI_RE.match(h.sender_agency) and len(h.sender_key_id) == 8 and NAME_RE.match(h.recipient) and
            len(h.recipient_key_id) == 8 and h.created_ms > 0 and len(h.case_key) in (0, 16) and
            len(h.ciphertext_sha256) == 32 and len(h.ref_message_id) in ((16,) if is_ack else (0, 16)) and
            (h.ack_status in (1, 2) if is_ack else h.ack_status == 0))


def open_envelope(me, trust, data):
    """Opens an envelope addressed to `me`, making KEYS.md's checks in KEYS.md's order; raises Refused
    with the table's error name at the first that fails."""
    if len(data) > MAX_ENVELOPE:                                                # 1
        raise Refused("too big")
    env = strict_parse(envelope_pb2.Envelope, data, "Envelope")                 # 2
    if len(env.header_signature) != 64 or len(env.ciphertext) < 48:
        raise Refused("malformed", "signature or ciphertext length")
    h = strict_parse(envelope_pb2.Header, env.header, "Header")                 # 3
    if h.version != 1:                                                          # 4
        raise Refused("bad version")
    if not header_fields_ok(h):                                                 # 5
        raise Refused("malformed", "header fields")
    card = trust.by_key_id(h.sender_key_id)                                     # 6
    if card is None or card.name != h.sender or card.agency != h.sender_agency:
        raise Refused("unknown sender")
    if h.kind not in ROLE_KINDS[card.role]:                                     # 7
        raise Refused("not allowed")
    if not card.usable_at(h.created_ms // 1000):                                # 8
        raise Refused("key expired")
    if not verify_sig(card.sign_pk, LABEL_HEADER, env.header, env.header_signature):  # 9
        raise Refused("bad header signature")
    if sha256(env.ciphertext) != h.ciphertext_sha256:                           # 10
        raise Refused("hash mismatch")
    if h.recipient != me.name or h.recipient_key_id != me.card.key_id:          # 11
        raise Refused("wrong recipient")
    try:                                                                        # 12
        inner_bytes = nacl.public.SealedBox(me.box_sk).decrypt(env.ciphertext)
    except nacl.exceptions.CryptoError:
        raise Refused("decryption failed") from None
    inner = strict_parse(envelope_pb2.Inner, inner_bytes, "Inner")              # 13
    if not verify_sig(card.sign_pk, LABEL_INNER, inner.signed, inner.signature):  # 14
        raise Refused("bad inner signature")
    s = strict_parse(envelope_pb2.InnerSigned, inner.signed, "InnerSigned")     # 15
    if s.version not in ((1, 2) if h.kind == envelope_pb2.KIND_ACK else (1,)):
        raise Refused("bad version", f"InnerSigned version {s.version} on kind {h.kind}")
    if (s.message_id, s.kind, s.sender, s.sender_key_id, s.recipient, s.recipient_key_id,  # 16
            s.ref_message_id) != (h.message_id, h.kind, h.sender, h.sender_key_id, h.recipient,
                                  h.recipient_key_id, h.ref_message_id):
        raise Refused("inner/outer mismatch")
    try:                                                                        # 17
        body = strict_parse(BODY_TYPES[h.kind], s.body, "body")
    except Refused as e:
        raise Refused("body not valid", str(e)) from None
    if h.kind == envelope_pb2.KIND_ACK:
        # The broker ledgers the header's status and we act on the body's: they must say one thing.
        if body.status != h.ack_status:
            raise Refused("inner/outer mismatch", "the ACK's body status is not its header's")
        # Fields 6 and 7 came with version 2: a version-1 ACK holding them is not what it says it is.
        if s.version == 1 and (body.duplicate or body.checkpoint):
            raise Refused("body not valid", "an ACK of version 1 with fields of version 2")
    return Opened(bytes(data), bytes(env.header), h, card, s, body)


def build_ack(me, referral, status, intake_reference="", problems=(), duplicate=False, checkpoint=None):
    """The signed answer to an opened referral (KEYS.md "ACKs"): version 2, sealed to the key that signed
    the referral, naming it in ref_message_id, with the hash of the envelope exactly as received and
    `checkpoint`, the latest Checkpoint we hold (None: we hold none), for the source to cross-witness.
    Returns the ACK envelope's bytes. The one place an ACK is built, so a field added later goes here."""
    body = envelope_pb2.AckBody(status=status, intake_reference=intake_reference,
                                received_sha256=sha256(referral.envelope), decided_ms=now_ms(),
                                duplicate=duplicate, checkpoint=checkpoint.text if checkpoint else "")
    for path, message in problems:
        body.problems.add(path=path, message=message)
    return seal(me, referral.sender_card, envelope_pb2.KIND_ACK, body.SerializeToString(),
                ref_message_id=referral.header.message_id, ack_status=status)


class AckTaken:
    """What check_ack concluded: the body; whether it repeats the answer on record (nothing to change);
    what cross-witnessing found: None (no checkpoint carried), "unavailable" (a broker of protocol 1),
    "one ledger", or "alarm" with the ledger alarm's reason in `alarm`."""

    def __init__(self, body, repeat, witness, alarm=None):
        self.body, self.repeat, self.witness, self.alarm = body, repeat, witness, alarm


def check_ack(ack, outbox, answers, held, key, prove):
    """KEYS.md "What the receiver of an ACK checks", steps 2 to 6 in its order (open_envelope made step
    1). `outbox` maps the message ids of the referrals we sent to their envelopes' bytes; `answers` maps
    them to the (status, intake reference) on record; `held` is our latest checkpoint; `prove(old, new)`
    asks our broker for a consistency proof (PROVE), None when it speaks protocol 1 and cannot. Raises
    Refused for an ACK not to take; returns AckTaken. The one place an ACK is checked, so a rule added
    later goes here."""
    h, body = ack.header, ack.body
    sent = outbox.get(h.ref_message_id)                                         # 2
    if sent is None:
        raise Refused("bad ack", "ACK for a referral this adapter did not send")
    to = envelope_pb2.Header.FromString(envelope_pb2.Envelope.FromString(sent).header).recipient
    if ack.sender_card.name != to:                                              # 3
        # By name, not key id: after a rotation the recipient may answer with its new key.
        raise Refused("bad ack", f"the acker {ack.sender_card.name} is not the referral's recipient {to}")
    if body.received_sha256 != sha256(sent):                                    # 4
        raise Refused("bad ack", "received_sha256 differs")
    first = answers.get(h.ref_message_id)                                       # 5
    if first is not None and first != (body.status, body.intake_reference):
        raise Refused("bad ack", f"a second ACK with another answer: the first {first} stands")
    taken = AckTaken(body, first is not None, None)
    if body.checkpoint:                                                         # 6
        if prove is None:
            # A broker of protocol 1 cannot prove: taken unchecked (an adapter logs it once).
            taken.witness = "unavailable"
        else:
            try:
                cross_witness(body.checkpoint, held, key, prove)
                taken.witness = "one ledger"
            except LedgerAlarm as e:
                # Still taken: it is the sink's own signed answer; the two checkpoints are the evidence.
                taken.witness, taken.alarm = "alarm", str(e)
    return taken


# --- the ledger: notes, checkpoints, Merkle proofs, receipts (LEDGER.md) -------------------------


def leaf_hash(leaf):
    return sha256(b"\x00" + leaf)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def verify_inclusion(index, size, leaf_h, path, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_h
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 section 2.1.4.2: the tree of size2 extends the tree of size1."""
    proof = list(proof)
    if size1 > size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    if not proof:
        return False
    if size1 & (size1 - 1) == 0:
        proof.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == root1 and sr == root2


class NoteKey:
    """A signed-note verifier key (LEDGER.md section 5): a name and an Ed25519 key."""

    def __init__(self, name, public_key):
        self.name, self.public_key = name, bytes(public_key)
        self.id = sha256(name.encode() + b"\n\x01" + self.public_key)[:4]

    @classmethod
    def of_broker(cls, card):
        """The broker's key: name referral-broker/<ORI>/<name>, the card's Ed25519 key."""
        return cls(f"referral-broker/{card.agency}/{card.name}", card.sign_pk)

    @classmethod
    def parse(cls, vkey):
        """name+hex key id+base64(0x01 || key), the form transparency tools take."""
        name, kid, k = vkey.split("+", 2)   # the name has no "+", base64 may
        raw = b64dec(k)
        key = cls(name, raw[1:])
        if raw[0] != 1 or len(raw) != 33 or key.id.hex() != kid:
            raise ValueError("verifier key does not match its key id")
        return key

    def vkey(self):
        return self.name + "+" + self.id.hex() + "+" + b64(b"\x01" + self.public_key)


def open_note(text, key):
    """Returns the body of a signed note if a signature line of `key` verifies over it (every line of
    that key must; lines of other keys are ignored, witnesses may add theirs)."""
    raw = text.encode("utf-8")
    if len(raw) > 4096 or any((c < 0x20 and c != 0x0A) or c == 0x7F for c in raw):
        raise Refused("bad note", "too long, or a control character")
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise Refused("bad note", "no blank line before the signatures")
    body, lines = text[:cut + 1], text[cut + 2:-1].split("\n")
    good = 0
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014":
            raise Refused("bad note", f"not a signature line: {line!r}")
        try:
            sig = b64dec(parts[2])
        except ValueError as e:
            raise Refused("bad note", str(e)) from None
        if len(sig) < 5:
            raise Refused("bad note", "short signature")
        if parts[1] != key.name or sig[:4] != key.id:
            continue
        try:
            nacl.signing.VerifyKey(key.public_key).verify(body.encode("utf-8"), sig[4:])
        except (nacl.exceptions.BadSignatureError, ValueError):
            raise Refused("bad note", "a signature by the broker's key does not verify") from None
        good += 1
    if good == 0:
        raise Refused("bad note", "no signature by the broker's key")
    return body


class Checkpoint:
    def __init__(self, text, size, root):
        self.text, self.size, self.root = text, size, root


def open_checkpoint(text, key):
    """A tlog-checkpoint: origin (the key's name), size, base64 root; no extension lines."""
    lines = open_note(text, key).split("\n")
    if len(lines) != 4 or lines[0] != key.name or not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
        raise Refused("bad note", "not a checkpoint of this log")
    try:
        root = b64dec(lines[2])
    except ValueError as e:
        raise Refused("bad note", str(e)) from None
    if len(root) != 32:
        raise Refused("bad note", "root is not 32 bytes")
    return Checkpoint(text, int(lines[1]), root)


def parse_tlog_proof(text):
    """c2sp.org/tlog-proof@v1: the first line, an optional `extra` line, `index N`, the inclusion path
    (one base64 hash a line), a blank line, the checkpoint verbatim."""
    cut = text.find("\n\n")
    if cut < 0:
        raise Refused("bad receipt", "proof has no blank line")
    lines = text[:cut].split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1":
        raise Refused("bad receipt", "not a tlog-proof@v1")
    lines = lines[1:]
    if lines and lines[0].startswith("extra "):
        lines = lines[1:]
    if not lines or not re.fullmatch(r"index (0|[1-9][0-9]*)", lines[0]):
        raise Refused("bad receipt", "no index line")
    try:
        path = [b64dec(x) for x in lines[1:]]
    except ValueError as e:
        raise Refused("bad receipt", f"inclusion path: {e}") from None
    if any(len(p) != 32 for p in path):
        raise Refused("bad receipt", "a path hash is not 32 bytes")
    return int(lines[0][6:]), path, text[cut + 2:]


def as_text(value, what):
    """Tampering tests hand in bytes that may not be UTF-8: that is a refusal like any other."""
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("bad receipt", f"{what} is not UTF-8") from None


def check_update(held, checkpoint, old_size, consistency, key):
    """A LedgerUpdate (PROTOCOL.md, LEDGER.md section 6 step 1) against the checkpoint held (or None).
    Returns the new checkpoint to hold."""
    cp = open_checkpoint(as_text(checkpoint, "checkpoint"), key)
    held_size = held.size if held else 0
    if old_size != held_size:
        # The broker does not know what we hold: the update proves nothing (a new HELLO is due).
        raise Refused("bad receipt", f"the update is from size {old_size}, we hold {held_size}")
    if held is None:
        if consistency:
            raise Refused("bad receipt", "a consistency proof from nothing")
        return cp
    if cp.size < held.size:
        raise LedgerAlarm("ledger alarm", "the ledger shrank")
    if not verify_consistency(held.size, cp.size, held.root, cp.root, consistency):
        raise LedgerAlarm("ledger alarm", "the ledger was rewritten")
    return cp


def cross_witness(theirs, held, key, prove):
    """LEDGER.md "Cross-witnessing": `theirs` (a checkpoint's note text, from another party's signed ACK)
    and `held` (our latest Checkpoint) are of one ledger: equal roots at equal sizes, else the broker's
    consistency proof from the smaller tree to the larger verifies against the two roots, both signed by
    its key. `prove(old, new)` returns the proof's hashes (PROVE). Raises LedgerAlarm when they are not of
    one ledger; returns nothing. Pure but for `prove`, so a tampered pair can be tried without harm."""
    try:
        cp = open_checkpoint(as_text(theirs, "checkpoint"), key)
    except Refused as e:
        # Not ours to refuse the answer for: the broker may have shown the sink something else (KEYS.md).
        raise LedgerAlarm("ledger alarm", f"the checkpoint the recipient held is not our broker's: {e}") \
            from None
    small, large = sorted((cp, held), key=lambda c: c.size)

    def alarm(why):
        return LedgerAlarm("ledger alarm", f"the recipient's checkpoint of {cp.size} leaves and ours of "
                           f"{held.size} are not of one ledger ({why}): the broker's key signs two ledgers "
                           "(a fork, or a broker restored or copied)")
    if small.size == large.size:
        if small.root != large.root:
            raise alarm("equal sizes, other roots")
        return
    try:
        proof = prove(small.size, large.size)
    except BrokerError as e:
        if e.code != wire_pb2.ERROR_CODE_MALFORMED:
            raise       # not an answer about the sizes: try again later, the ACK not yet taken
        # Both sizes were signed by its key: a broker that cannot prove them keeps another ledger.
        raise alarm(f"the broker cannot prove them: {e.reason}") from None
    if not verify_consistency(small.size, large.size, small.root, large.root, proof):
        raise alarm("the broker's consistency proof does not verify")


def check_receipt(held, leaf, proof, update, sent_envelope, key):
    """LEDGER.md section 6, steps 1-4: the RECEIPT of `sent_envelope` (bytes as sent in SUBMIT).
    `update` is (checkpoint, old_size, consistency). Returns (checkpoint to hold, LedgerEvent).
    Pure: nothing changes unless it returns, so a tampered copy can be tried without harm."""
    cp = check_update(held, *update, key)                                       # 1
    index, path, note = parse_tlog_proof(as_text(proof, "proof"))               # 2
    pcp = open_checkpoint(note, key)
    if (pcp.size, pcp.root) != (cp.size, cp.root):
        raise Refused("bad receipt", "the proof's checkpoint is not the update's")
    leaf = bytes(leaf)
    if not verify_inclusion(index, cp.size, leaf_hash(leaf), path, cp.root):  # 3
        raise Refused("bad receipt", f"leaf not included at index {index} of {cp.size}")
    try:                                                                        # 4
        ev = strict_parse(ledger_pb2.LedgerEvent, leaf, "leaf")
    except Refused as e:
        raise Refused("bad receipt", str(e)) from None
    env = envelope_pb2.Envelope.FromString(sent_envelope)
    h = envelope_pb2.Header.FromString(env.header)
    want = (1, "submitted", h.message_id, sha256(sent_envelope), index, env.header, env.header_signature,
            h.sender, h.sender_agency, "ok")
    got = (ev.version, ev.action, ev.message_id, ev.envelope_sha256, ev.index, ev.header,
           ev.header_signature, ev.party, ev.agency, ev.outcome)
    if len(leaf) > 65535 or got != want:
        raise Refused("bad receipt", "the leaf is not the submitted event of this envelope")
    return cp, ev


# --- the connection (PROTOCOL.md) ----------------------------------------------------------------


class BrokerError(Exception):
    def __init__(self, err):
        name = wire_pb2.ErrorCode.Name(err.code) if err.code in wire_pb2.ErrorCode.values() else err.code
        super().__init__(f"ERROR {name}: {err.reason}")
        self.code, self.reason, self.message_id = err.code, err.reason, err.message_id


class Client:
    """One party's connection: a DEALER over CURVE (its X25519 key is its CURVE key, the broker's from
    its card), HELLO first, heartbeats when idle, and every RECEIPT and LedgerUpdate checked."""

    def __init__(self, endpoint, me, broker_card, credit=0, held=None, timeout_ms=30000, hello=True):
        self.me, self.broker_card, self.credit = me, broker_card, credit
        self.key = NoteKey.of_broker(broker_card)
        self.held = held            # the latest checkpoint proved to this connection
        self.timeout_ms = timeout_ms
        self.deliveries = []        # Deliver frames not yet taken
        self.idle = lambda: None    # run while waiting for an answer (to keep other connections alive)
        self.heartbeat_ms = 5000
        self.heartbeats_sent = self.heartbeats_received = 0
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.curve_secretkey = bytes(me.box_sk)
        self.sock.curve_publickey = me.card.box_pk
        self.sock.curve_serverkey = broker_card.box_pk
        self.sock.connect(endpoint)
        self.last_sent = 0.0
        self.proofs = []            # (old_size, new_size) of every PROOF checked, for tests to see
        # hello=False: only for tests of what the broker does before HELLO.
        self.welcome = self.hello() if hello else None

    def close(self):
        self.sock.close(0)

    def send(self, version=None, **body):
        """One frame with the version that introduced its body (`version` overrides it, for tests)."""
        (name, msg), = body.items()
        f = wire_pb2.Frame(version=frame_version(name) if version is None else version)
        getattr(f, name).SetInParent()      # an empty body (HEARTBEAT, HELLO 0 0) is still the body
        getattr(f, name).MergeFrom(msg)
        self.sock.send(f.SerializeToString())
        self.last_sent = time.monotonic()

    def recv(self, timeout_ms):
        """One frame from the broker, or None. DELIVERs are queued for next_delivery, HEARTBEATs
        counted (ours go out by the clock, not in answer), an ERROR raised."""
        if not self.sock.poll(timeout_ms):
            return None
        parts = self.sock.recv_multipart()
        if len(parts) != 1:
            raise Refused("malformed", "a message of more than one part")
        f = wire_pb2.Frame.FromString(parts[0])
        kind = f.WhichOneof("body")
        if kind is None or f.version != frame_version(kind):
            raise Refused("malformed", "frame version or body")
        if kind == "error":
            raise BrokerError(f.error)
        if kind == "deliver":
            self.deliveries.append(f.deliver)
        elif kind == "heartbeat":
            self.heartbeats_received += 1
        return f

    def heartbeat_if_quiet(self):
        """PROTOCOL.md: a side that has sent nothing for heartbeat_ms sends HEARTBEAT; three intervals of
        silence and the broker forgets the connection."""
        if time.monotonic() - self.last_sent >= self.heartbeat_ms / 1000:
            self.send(heartbeat=wire_pb2.Heartbeat())
            self.heartbeats_sent += 1

    def pump(self, timeout_ms=0):
        """Reads what has come, and sends HEARTBEAT when we have been quiet."""
        self.heartbeat_if_quiet()
        deadline = time.monotonic() + timeout_ms / 1000
        while self.recv(max(0, int((deadline - time.monotonic()) * 1000))) is not None:
            pass

    def wait_for(self, kind):
        deadline = time.monotonic() + self.timeout_ms / 1000
        while time.monotonic() < deadline:
            f = self.recv(100)
            if f is not None and f.WhichOneof("body") == kind:
                return getattr(f, kind)
            self.heartbeat_if_quiet()
            self.idle()
        raise TimeoutError(f"no {kind.upper()} from the broker in {self.timeout_ms} ms")

    def hello(self):
        """HELLO, always first; WELCOME names the broker and us, and proves its checkpoint extends ours."""
        self.send(hello=wire_pb2.Hello(credit=self.credit, ledger_size=self.held.size if self.held else 0))
        w = self.wait_for("welcome")
        if w.broker != self.broker_card.name or w.peer != self.me.name or w.heartbeat_ms == 0:
            raise Refused("bad welcome", f"broker {w.broker!r}, peer {w.peer!r}, heartbeat {w.heartbeat_ms}")
        if not w.HasField("ledger"):
            raise Refused("bad welcome", "no LedgerUpdate")
        self.held = check_update(self.held, w.ledger.checkpoint, w.ledger.old_size,
                                 list(w.ledger.consistency), self.key)
        self.heartbeat_ms = w.heartbeat_ms
        return w

    def prover(self):
        """What check_ack needs to cross-witness: PROVE, or None from a broker of protocol 1
        (WELCOME.protocol absent), which cannot prove."""
        return self.prove if self.welcome.protocol >= 2 else None

    def prove(self, old_size, new_size):
        """PROVE old_size new_size: the consistency proof's hashes, for the caller to check against the
        two roots it holds (the broker signs nothing for it). ERROR is raised as BrokerError."""
        self.send(prove=wire_pb2.Prove(old_size=old_size, new_size=new_size))
        p = self.wait_for("proof")
        if (p.old_size, p.new_size) != (old_size, new_size) or any(len(h) != 32 for h in p.consistency):
            raise Refused("malformed", f"PROOF of {p.old_size} {p.new_size} for PROVE {old_size} {new_size}")
        self.proofs.append((old_size, new_size))
        return list(p.consistency)

    def submit(self, envelope):
        """SUBMIT, then the RECEIPT checked in full; returns (receipt frame, LedgerEvent). The checkpoint
        held before is kept in self.previous, for the caller to see what the receipt proved from."""
        self.send(submit=wire_pb2.Submit(envelope=envelope))
        r = self.wait_for("receipt")
        if not r.HasField("ledger"):
            raise Refused("bad receipt", "no LedgerUpdate")
        self.previous = self.held
        self.held, ev = check_receipt(self.held, r.leaf, r.proof, update_of(r), envelope, self.key)
        return r, ev

    def confirm(self, message_id):
        self.send(confirm=wire_pb2.Confirm(message_id=message_id))

    def next_delivery(self, timeout_s):
        """The next DELIVER."""
        deadline = time.monotonic() + timeout_s
        while not self.deliveries:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no DELIVER for {self.me.name} in {timeout_s} s")
            self.pump(100)
            self.idle()
        return self.deliveries.pop(0)


def frame_version(body):
    """PROTOCOL.md "Versions": a frame's version is the protocol version that introduced its body."""
    return 2 if body in ("prove", "proof") else 1


def update_of(receipt):
    u = receipt.ledger
    return (u.checkpoint, u.old_size, list(u.consistency))
