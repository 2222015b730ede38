"""interop_test.py BIN -- rbclient.py (written from the documents alone) against the real programs; TAP.

Starts a real referral-broker on a loopback port the system picks, the project's own police adapter
(rms-files) and intake adapter (intake-sqlite), and registers every party with referral-admin, as
docs/OPERATIONS.md tells an operator. The Python client is a source (ILPYT0000) whose referrals the
intake files (or refuses: another agency's) and ACKs, each ACK checked and its checkpoint cross-witnessed
with PROVE; and a sink that opens the police adapter's referral and ACKs it, with its own checkpoint.
Everything lives in one temporary directory; every process is stopped, and the directory removed, even on
failure. Run by tests/integration/python_client_test.sh, which puts the protoc classes on the path.
"""
import base64
import ctypes
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

from google.protobuf import json_format

import envelope_pb2
import ledger_pb2
import rbclient as rb
import referral_pb2
import wire_pb2

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "bin"))
# Generous: a loaded CI machine, a sanitizer build; RB_TIMEOUT_SCALE stretches it further (valgrind).
WAIT = 60 * max(1, int(os.environ.get("RB_TIMEOUT_SCALE", "1") or 1))
SOURCE_SAMPLE = "adapters/samples/valid/02-night-raid-south-shore.json"   # the Python source sends it
POLICE_SAMPLE = "adapters/samples/valid/01-fatal-shooting.json"           # the police adapter sends it


class Abort(Exception):
    """A check failed: the ones after it build on it, so the run stops there."""


def die_with_parent():
    """Runs in each child before exec: killed with the driver even if the driver is killed outright."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class World:
    """The temporary directory and the processes started in it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rb-python-client.")
        self.procs = {}
        self.clients = []

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def tool(self, *args, stdin=b"", ok=True, accept=(0,)):
        """Runs a tool to completion, keeping the Python connections alive meanwhile; its standard output,
        or (ok=False) its exit status and standard error; an exit status not in accept raises with its
        standard error."""
        p = subprocess.Popen([os.path.join(BIN, args[0])] + list(args[1:]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        deadline, first = time.monotonic() + WAIT, stdin
        while True:
            try:
                out, err = p.communicate(first, timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                first = None        # given once; communicate goes on writing it
                if time.monotonic() > deadline:
                    p.kill()
                    p.wait()
                    raise TimeoutError(f"{args[0]} {args[1]} did not finish in {WAIT} s") from None
                self.pump()
        if not ok:
            return p.returncode, err.decode()
        if p.returncode not in accept:
            raise RuntimeError(f"{' '.join(args[:3])} exited {p.returncode}: {err.decode().strip()}")
        return out.decode()

    def start(self, name, *args):
        log = open(self.path(f"{name}.log"), "w")
        self.procs[name] = subprocess.Popen([os.path.join(BIN, args[0])] + list(args[1:]), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=log, preexec_fn=die_with_parent)
        log.close()

    def log_events(self, name):
        """The JSON log of a process started with --log-format json, as dicts."""
        with open(self.path(f"{name}.log")) as f:
            return [json.loads(line) for line in f if line.startswith("{")]

    def stop(self, name):
        """SIGTERM, as systemd stops it; its exit status."""
        p = self.procs.pop(name)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(WAIT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return f"did not stop on SIGTERM within {WAIT} s"

    def connect(self, *args, **kw):
        """A Python connection, kept alive (heartbeats) whenever another waits."""
        c = rb.Client(*args, **kw)
        c.idle = lambda: self.pump(skip=c)
        self.clients.append(c)
        return c

    def pump(self, skip=None):
        """Keeps the Python connections alive (heartbeats) while we wait on something else. Never the one
        waiting for an answer (skip), whose answer pump would take."""
        for c in self.clients:
            if c is not skip:
                c.pump(20)

    def until(self, what, cond):
        deadline = time.monotonic() + WAIT
        while True:
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {WAIT} s")
            self.pump()
            time.sleep(0.03)

    def cleanup(self):
        for c in self.clients:
            c.close()
        for p in self.procs.values():
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


n = 0


def check(name, fn, *args):
    """One TAP line: ok when fn returns, else not ok with what went wrong, and the run stops."""
    global n
    n += 1
    try:
        result = fn(*args)
    except Exception:  # any failure of the check is the check's result
        print(f"not ok {n} - {name}")
        for line in traceback.format_exc().rstrip().split("\n"):
            print(f"# {line}")
        raise Abort() from None
    print(f"ok {n} - {name}", flush=True)
    return result


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def must_refuse(what, fn, *args, **kw):
    """fn must raise Refused; its error name."""
    try:
        fn(*args, **kw)
    except rb.Refused as e:
        return e.error
    raise AssertionError(f"{what} was accepted")


def flips(data, w):
    """Every copy of data with one byte changed (one bit flipped: text stays ASCII where it was); the
    Python connections are kept alive meanwhile."""
    for i in range(len(data)):
        if i % 64 == 0:
            w.pump()
        b = bytearray(data)
        b[i] ^= 1
        yield bytes(b)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


# --- 1. the documents' examples ------------------------------------------------------------------


def doc_examples():
    """LEDGER.md's and KEYS.md's examples are real: the checkpoints verify with the verifier key shown,
    the C2SP example verifies, leaf 64 hashes as said, the JSON line's fields are its leaf's."""
    ledger = read("docs/LEDGER.md")
    blocks = re.findall(r"```\n(.*?)```", ledger, re.S)
    c2sp_key = rb.NoteKey.parse(re.search(r"`(example\.com/foo\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+)`", ledger)[1])
    c2sp_note = re.search(r"`(This is an example message\..*?\\n)`", ledger)[1].replace("\\n", "\n")
    expect(rb.open_note(c2sp_note, c2sp_key) == "This is an example message.\n", "the C2SP example")
    key = rb.NoteKey.parse(re.search(r"`(referral-broker/ILCPD0000/broker-1\+[0-9a-f]{8}\+[^`]+)`", ledger)[1])
    sizes = []
    for block in blocks:
        if block.startswith(key.name + "\n"):                      # section 5's checkpoint
            sizes.append(rb.open_checkpoint(block, key).size)
        elif block.startswith("c2sp.org/tlog-proof@v1\n"):         # section 6's receipt proof
            index, path, note = rb.parse_tlog_proof(block)
            cp = rb.open_checkpoint(note, key)
            sizes.append(cp.size)
            expect(len(path) == (cp.size - 1).bit_length() and index < cp.size, "the proof's path length")
        elif block.startswith("{"):                                # section 7's JSON lines
            for line in block.splitlines():
                obj = json.loads(line)
                if "checkpoint" in obj:
                    sizes.append(rb.open_checkpoint(obj["checkpoint"], key).size)
                else:
                    leaf = base64.b64decode(obj.pop("leaf"))
                    ev = rb.strict_parse(ledger_pb2.LedgerEvent, leaf, "JSON example leaf")
                    # index is a JSON number there, the leaf's own field a proto3 JSON string
                    fields = json_format.MessageToDict(ev)
                    expect(obj.pop("index") == int(fields.pop("index", 0)) == ev.index, "the JSON line's index")
                    expect(fields == obj, f"the JSON line's fields: {obj}")
        elif "1 version = 1" in block:                             # section 2's leaf 64
            leaf = bytes.fromhex(" ".join(re.match(r"((?:[0-9a-f]{2} )+)", l)[1] for l in block.splitlines()))
            ev = rb.strict_parse(ledger_pb2.LedgerEvent, leaf, "leaf 64")
            expect((ev.index, ev.action, len(leaf)) == (64, "broker_stopped", 31), "leaf 64's fields")
            want = re.search(r"hashes to `([0-9a-f]{8})…([0-9a-f]{8})`", ledger)
            h = rb.leaf_hash(leaf).hex()
            expect(h.startswith(want[1]) and h.endswith(want[2]), f"leaf 64 hashes to {h}")
    expect(sorted(sizes) == [3, 8, 65], f"checkpoints of sizes 3, 8 and 65 in LEDGER.md, found {sizes}")
    # KEYS.md's key certification: 88 bytes, its label line naming the key ids it holds.
    keys = read("docs/KEYS.md")
    label, text = re.search(r"```\n(referral-broker key certification v1: [^\n]*)\n([^\n]*)\n```", keys).groups()
    cert = rb.b64dec(text)
    expect(len(cert) == 88 and cert[:8] == b"RBKC\x01\x00\x00\x00", "the certification's layout")
    expect(label == f"referral-broker key certification v1: old={cert[8:16].hex()} new={cert[16:24].hex()}",
           "the certification's label line")


# --- 2. identities, the broker, the adapters -----------------------------------------------------


def identities(w, s):
    """The project's parties made with referral-keys; the Python ones made here, exactly as KEYS.md
    says, and checked by the project's own tool."""
    for name, role, agency in (("ops-admin", "admin", "ILCPD0000"), ("cpd-rms", "source", "ILCPD0000"),
                               ("sao-intake", "sink", "ILCCSAO00")):
        w.tool("referral-keys", "generate", "--name", name, "--role", role, "--agency", agency,
               "--out", w.path(name), "--no-passphrase")
    s.source = rb.Identity.generate("pyt-source", rb.ROLE_SOURCE, "ILPYT0000")
    s.sink = rb.Identity.generate("pyt-intake", rb.ROLE_SINK, "ILPYTSAO0")
    for who in (s.source, s.sink):
        path = w.path(f"{who.name}.card")
        with open(path, "w") as f:
            f.write(who.card.text())
        out = w.tool("referral-keys", "verify-card", path)
        expect(f"good card for {who.name}" in out, f"verify-card: {out}")
        expect(w.tool("referral-keys", "fingerprint", path).strip() == rb.fingerprint(who.card),
               "referral-keys fingerprint differs from KEYS.md's")
    # The project's card and secret file read back byte for byte (the reader rebuilds both lines).
    s.police = rb.Identity.from_secret_file(w.path("cpd-rms.secret"))
    expect(s.police.card.packed == rb.read_card(w.path("cpd-rms.card")).packed, "cpd-rms.secret's card")
    s.intake_card = rb.read_card(w.path("sao-intake.card"))
    s.intake = rb.Identity.from_secret_file(w.path("sao-intake.secret"))   # to make what it would send


def header_variants(w, s):
    """KEYS.md opening steps 4, 5 and 7, field by field: the project's opener (referral-envelope open)
    and this client's open the same headers and refuse the same ones, the client at the step KEYS.md
    names."""
    body = json_format.Parse(read(SOURCE_SAMPLE), referral_pb2.Referral()).SerializeToString()
    good = envelope_pb2.Envelope.FromString(
        rb.seal(s.source, s.intake_card, envelope_pb2.KIND_REFERRAL, body, case_key=b"k" * 16))
    ack = dict(kind=envelope_pb2.KIND_ACK, ref_message_id=b"r" * 16, ack_status=1)
    variants = [
        ("the genuine header", {}, None), ("no case key", dict(case_key=b""), None),
        ("version 2", dict(version=2), "bad version"), ("a message id of 15 bytes", dict(message_id=b"m" * 15), "malformed"),
        ("kind 0", dict(kind=0), "malformed"), ("kind 6", dict(kind=6), "malformed"),
        ("a sender name in capitals", dict(sender="PYT-source"), "malformed"),
        ("a sender name of 65 characters", dict(sender="p" * 65), "malformed"),
        ("a sender agency in lower case", dict(sender_agency="ilpyt0000"), "malformed"),
        ("a sender key id of 7 bytes", dict(sender_key_id=b"k" * 7), "malformed"),
        ("a recipient name in capitals", dict(recipient="SAO-intake"), "malformed"),
        ("a recipient key id of 9 bytes", dict(recipient_key_id=b"k" * 9), "malformed"),
        ("created_ms 0", dict(created_ms=0), "malformed"), ("created_ms -1", dict(created_ms=-1), "malformed"),
        ("a case key of 15 bytes", dict(case_key=b"k" * 15), "malformed"),
        ("a ciphertext hash of 31 bytes", dict(ciphertext_sha256=b"h" * 31), "malformed"),
        ("a referenced message id of 15 bytes", dict(ref_message_id=b"r" * 15), "malformed"),
        ("an ACK status on a referral", dict(ack_status=1), "malformed"),
        ("an ACK without a referenced message", dict(ack, ref_message_id=b""), "malformed"),
        ("an ACK without a status", dict(ack, ack_status=0), "malformed"),
        ("an ACK status of 3", dict(ack, ack_status=3), "malformed"),
        ("an ACK from a source", ack, "not allowed"),
    ]
    for name, fields, want in variants:
        h = envelope_pb2.Header.FromString(good.header)
        for k, v in fields.items():
            setattr(h, k, v)
        hb = h.SerializeToString()
        env = envelope_pb2.Envelope(header=hb, header_signature=s.source.sign(rb.LABEL_HEADER, hb),
                                    ciphertext=good.ciphertext).SerializeToString()
        opened_alike(w, name, env, s.intake, s.source.card, "sao-intake.secret", want)


def opened_alike(w, name, env, opener, trust_card, as_secret, want):
    """This client's open_envelope gives KEYS.md's error `want` (None: opens), and referral-envelope open
    refuses exactly when it does."""
    try:
        rb.open_envelope(opener, rb.TrustStore([trust_card]), env)
        py = None
    except rb.Refused as e:
        py = e.error
    trust = w.path(f"trust-{trust_card.name}")
    if not os.path.isdir(trust):
        os.mkdir(trust)
        shutil.copy(w.path(f"{trust_card.name}.card"), trust)
    rc, err = w.tool("referral-envelope", "open", "--as", w.path(as_secret), "--trust", trust, stdin=env,
                     ok=False)
    expect(py == want, f"{name}: this client says {py}, KEYS.md {want}")
    expect((rc == 0) == (want is None) and (rc == 0 or "envelope refused" in err),
           f"{name}: referral-envelope open exited {rc}: {err.strip()}")


def inner_variants(w, s):
    """KEYS.md opening steps 15 and 17 and "ACKs", Versions: InnerSigned version 1 for any kind, 2 for an
    ACK only; an ACK of version 1 holding fields 6 or 7 refused; an ACK's body status must be its
    header's. Each ACK is the Python sink's, opened as the project's police source (cpd-rms)."""
    body = dict(status=envelope_pb2.ACK_STATUS_ACCEPTED, intake_reference="PYT-1", received_sha256=b"h" * 32,
                decided_ms=rb.now_ms(), duplicate=True, checkpoint="a checkpoint")
    variants = [
        ("an ACK of version 2 with duplicate and checkpoint", {}, 2, 1, None),
        ("an ACK of version 1 without fields 6 and 7", dict(duplicate=False, checkpoint=""), 1, 1, None),
        ("an ACK of version 1 with duplicate", dict(checkpoint=""), 1, 1, "body not valid"),
        ("an ACK of version 1 with a checkpoint", dict(duplicate=False), 1, 1, "body not valid"),
        ("an ACK of version 3", {}, 3, 1, "bad version"),
        ("an ACK whose body says REJECTED, its header ACCEPTED", dict(status=2, duplicate=False), 2, 1,
         "inner/outer mismatch"),
        # Both wrong: the statuses are compared first (KEYS.md, step 17).
        ("an ACK of version 1 with duplicate, its body REJECTED, its header ACCEPTED", dict(status=2), 1, 1,
         "inner/outer mismatch"),
    ]
    for name, fields, version, header_status, want in variants:
        b = envelope_pb2.AckBody(**dict(body, **fields))
        env = rb.seal(s.sink, s.police.card, envelope_pb2.KIND_ACK, b.SerializeToString(),
                      ref_message_id=b"r" * 16, ack_status=header_status, version=version)
        opened_alike(w, name, env, s.police, s.sink.card, "cpd-rms.secret", want)
    referral = json_format.Parse(read(SOURCE_SAMPLE), referral_pb2.Referral()).SerializeToString()
    for version, want in ((1, None), (2, "bad version")):
        env = rb.seal(s.source, s.intake_card, envelope_pb2.KIND_REFERRAL, referral, version=version)
        opened_alike(w, f"a referral of version {version}", env, s.intake, s.source.card, "sao-intake.secret",
                     want)


def start_broker(w, s):
    w.tool("referral-broker", "init", "--data", w.path("broker"), "--name", "broker-1",
           "--admin-card", w.path("ops-admin.card"))
    # A heartbeat of a second, so that the Python connections must keep themselves alive with HEARTBEATs
    # (three silent intervals and the broker forgets them) within a run of a few seconds.
    with open(w.path("broker.conf"), "w") as f:
        f.write("[delivery]\nheartbeat_ms = 1000\n")
    w.start("broker", "referral-broker", "run", "--data", w.path("broker"), "--config", w.path("broker.conf"),
            "--listen", "tcp://127.0.0.1:*", "--metrics", "off", "--log-format", "json")
    started = w.until("the broker's broker_started line",
                      lambda: [e for e in w.log_events("broker") if e.get("event") == "broker_started"])
    s.endpoint = started[0]["listen"]
    s.broker_card = rb.read_card(w.path("broker", "broker.card"))
    expect(s.broker_card.role == rb.ROLE_BROKER, "broker.card's role")


def admin(w, s, *args, accept=(0,)):
    return w.tool("referral-admin", "--broker", s.endpoint, "--broker-card", w.path("broker", "broker.card"),
                  "--as", w.path("ops-admin.secret"), *args, accept=accept)


def register(w, s):
    """referral-admin adapter add --card, for the project's cards and the Python-made ones alike."""
    for name, role in (("cpd-rms", "source"), ("sao-intake", "sink"), ("pyt-source", "source"),
                       ("pyt-intake", "sink")):
        out = json.loads(admin(w, s, "adapter", "add", "--card", w.path(f"{name}.card")))
        expect(out == {"added": name, "role": role}, f"adapter add: {out}")


def start_adapters(w, s):
    """The police adapter sends to the Python sink, the intake adapter takes the Python source's
    referrals: each trusts the other side's card (OPERATIONS.md, "Adding an agency")."""
    for trust, card in (("police-trust", "pyt-intake"), ("intake-trust", "pyt-source")):
        os.mkdir(w.path(trust))
        shutil.copy(w.path(f"{card}.card"), w.path(trust))
    common = (f"broker = {s.endpoint}\nbroker_card = {w.path('broker', 'broker.card')}\n")
    with open(w.path("police.ini"), "w") as f:
        f.write(f"[adapter]\nconnector = rms-files\nsecret = {w.path('cpd-rms.secret')}\n{common}"
                f"trust = {w.path('police-trust')}\nrecipient = pyt-intake\ndata = {w.path('police-data')}\n"
                f"[rms-files]\ndrop = {w.path('drop')}\nstable_ms = 300\nscan_ms = 100\n")
    with open(w.path("intake.ini"), "w") as f:
        f.write(f"[adapter]\nconnector = intake-sqlite\nsecret = {w.path('sao-intake.secret')}\n{common}"
                f"trust = {w.path('intake-trust')}\ndata = {w.path('intake-data')}\n"
                f"[intake-sqlite]\ndatabase = {w.path('intake.db')}\nprefix = SAO\n")
    for name in ("police", "intake"):
        w.start(name, "referral-adapter", "run", "--config", w.path(f"{name}.ini"), "--log-format", "json")
    for name in ("police", "intake"):
        w.until(f"the {name} adapter's connected line",
                lambda: any(e.get("event") == "connected" for e in w.log_events(name)))


# --- 3. the Python source ------------------------------------------------------------------------


def source_hello(w, s):
    s.src = w.connect(s.endpoint, s.source, s.broker_card, credit=1, timeout_ms=WAIT * 1000)
    expect(s.src.held is not None and s.src.welcome.ledger.old_size == 0, "WELCOME's checkpoint")
    expect(s.src.welcome.protocol == 3, f"WELCOME's protocol is {s.src.welcome.protocol}, PROTOCOL.md says 3")
    s.outbox, s.answers = {}, {}    # what the Python source sent, and the answers on record (check_ack)


def seal_to_intake(s, referral):
    """A referral sealed to the intake's newest card, kept in the outbox (as an adapter does before
    submitting) for check_ack; its message id."""
    env = rb.seal_referral(s.source, rb.TrustStore([s.intake_card]).newest("sao-intake"), referral)
    mid = envelope_pb2.Header.FromString(envelope_pb2.Envelope.FromString(env).header).message_id
    s.outbox[mid] = env
    return env, mid


def take_ack(w, s):
    """The next ACK delivered to the Python source: opened, checked (KEYS.md, "What the receiver of an ACK
    checks"), its answer put on record if it is the first, and CONFIRMed."""
    d = s.src.next_delivery(WAIT)
    ack = rb.open_envelope(s.source, rb.TrustStore([s.intake_card]), d.envelope)
    taken = rb.check_ack(ack, s.outbox, s.answers, s.src.held, s.src.key, s.src.prover())
    s.answers.setdefault(ack.header.ref_message_id, (taken.body.status, taken.body.intake_reference))
    s.src.confirm(ack.header.message_id)
    w.until("the broker records the CONFIRM of the ACK",
            lambda: message_state(w, s, ack.header.message_id)["state"] == "confirmed")
    return ack, taken


def source_submit(w, s):
    referral = json_format.Parse(read(SOURCE_SAMPLE), referral_pb2.Referral())
    referral.agency_ori = s.source.card.agency   # the intake takes a referral from its sender's agency only
    s.referral = referral
    s.sent, _ = seal_to_intake(s, referral)
    s.sent_header = envelope_pb2.Header.FromString(envelope_pb2.Envelope.FromString(s.sent).header)
    s.receipt, ev = s.src.submit(s.sent)
    # The receipt proved consistency from the WELCOME's checkpoint to a larger one.
    expect(s.src.previous.size < s.src.held.size and ev.index < s.src.held.size, "a receipt from a larger tree")
    s.receipt_from = s.src.previous


def receipt_tampering(w, s):
    """The verification can fail: the genuine receipt passes, and each one-byte change is refused."""
    r, key = s.receipt, s.src.key
    genuine = dict(leaf=r.leaf, proof=r.proof.encode(), update=rb.update_of(r), sent=s.sent)

    def verify(**changed):  # check_receipt of the genuine receipt with some parts changed
        a = dict(genuine, **changed)
        return rb.check_receipt(s.receipt_from, a["leaf"], a["proof"], a["update"], a["sent"], key)
    verify()
    note, old, cons = genuine["update"]
    tried = 0
    for bad in flips(r.leaf, w):
        tried += must_refuse("an altered leaf", verify, leaf=bad) is not None
    for bad in flips(genuine["proof"], w):
        tried += must_refuse("an altered proof", verify, proof=bad) is not None
    for bad in flips(note.encode(), w):
        tried += must_refuse("an altered checkpoint", verify, update=(bad, old, cons)) is not None
    for i, h in enumerate(cons):
        for bad in flips(h, w):
            tried += must_refuse("an altered consistency proof", verify,
                                 update=(note, old, cons[:i] + [bad] + cons[i + 1:])) is not None
    for other in (old - 1, old + 1):
        must_refuse("another old_size", verify, update=(note, other, cons))
    # The same referral sealed again is another envelope, and this receipt is not its receipt.
    must_refuse("another envelope", verify, sent=rb.seal_referral(s.source, s.intake_card, s.referral))
    expect(len(cons) > 0 and tried > 1000, f"only {tried} alterations tried")
    print(f"# {tried} one-byte alterations of the receipt refused")


def filings(w, sql, *args):
    """Rows of the intake database (ADAPTERS.md, intake-sqlite: filings and cases), [] before it exists."""
    db = sqlite3.connect(f"file:{w.path('intake.db')}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:     # not created yet
        return []
    finally:
        db.close()


def intake_filed(w, s):
    """The intake database has the filing, with the sender as the intake verified it."""
    mid = s.sent_header.message_id.hex()
    row, = w.until(f"filing of {mid} in the intake database", lambda: filings(
        w, "SELECT f.intake_number, f.kind, f.revision, c.agency, c.rd_number, c.status, f.sender, "
        "f.sender_agency, f.sender_key_id FROM filings f JOIN cases c USING (intake_number) "
        "WHERE f.message_id = ?", mid))
    want = ("KIND_REFERRAL", 1, "ILPYT0000", s.referral.rd_number, "open", "pyt-source", "ILPYT0000",
            s.source.card.key_id.hex())
    expect(row[1:] == want, f"filing row {row}")
    s.intake_number = row[0]


def message_state(w, s, mid):
    return json.loads(admin(w, s, "message", "show", mid.hex()))["message"]


def source_gets_ack(w, s):
    """The intake's ACK comes to the Python source: version 2, opened (both signatures) and checked."""
    ack, taken = take_ack(w, s)
    body = taken.body
    expect(ack.signed.version == 2 and body.status == envelope_pb2.ACK_STATUS_ACCEPTED and
           body.intake_reference == s.intake_number and not body.duplicate and not taken.repeat,
           f"ACK {json_format.MessageToDict(body)}")
    expect(message_state(w, s, s.sent_header.message_id)["ackStatus"] == 1, "the referral's ackStatus")
    s.ack, s.ack_taken = ack, taken


def source_cross_witnesses(w, s):
    """LEDGER.md "Cross-witnessing": the intake's ACK carries the checkpoint it held (from before our
    referral was stored, so smaller than ours); the source had the broker PROVE the smaller tree a prefix
    of the larger and checked the PROOF against the two roots."""
    theirs = rb.open_checkpoint(s.ack.body.checkpoint, s.src.key)
    ours = s.src.held
    expect(theirs.size < ours.size, f"the intake's checkpoint of {theirs.size} is not older than ours")
    expect(s.src.proofs == [(theirs.size, ours.size)] and s.ack_taken.witness == "one ledger",
           f"PROVEs {s.src.proofs}, cross-witnessing: {s.ack_taken.witness} {s.ack_taken.alarm}")
    print(f"# PROVE {theirs.size} {ours.size}: one ledger")
    s.theirs, s.proof = theirs, s.src.prove(theirs.size, ours.size)


def cross_witness_tampering(w, s):
    """The cross-witness verification can fail: with the broker's genuine PROOF, our root altered in any
    one byte, any proof hash altered, a hash more or less; an equal size with another root; a broker that
    cannot prove the sizes; a checkpoint not signed by the broker's key: each a ledger alarm."""
    theirs, ours, proof = s.ack.body.checkpoint, s.src.held, s.proof

    def verify(held=ours, hashes=proof, note=theirs, prove=None):
        rb.cross_witness(note, held, s.src.key, prove or (lambda old, new: list(hashes)))

    def alarm(what, **changed):
        expect(must_refuse(what, verify, **changed) == "ledger alarm", f"{what}: not a ledger alarm")
    verify()
    tried = 0
    for bad in flips(ours.root, w):
        alarm("our root altered", held=rb.Checkpoint(ours.text, ours.size, bad))
        tried += 1
    for i, h in enumerate(proof):
        for bad in flips(h, w):
            alarm("a proof hash altered", hashes=proof[:i] + [bad] + proof[i + 1:])
            tried += 1
    alarm("a proof hash less", hashes=proof[:-1])
    alarm("a proof hash more", hashes=proof + [proof[0]])
    alarm("an equal size with another root", held=rb.Checkpoint(ours.text, s.theirs.size, ours.root))

    def cannot(old, new):
        raise rb.BrokerError(wire_pb2.Error(code=wire_pb2.ERROR_CODE_MALFORMED, reason="PROVE needs ..."))
    alarm("a broker that cannot prove", prove=cannot)
    alarm("a checkpoint not signed by the broker's key", note=theirs.replace("\n\n", "\n\nX", 1))
    expect(len(proof) > 0 and tried == 32 * (1 + len(proof)), f"only {tried} alterations tried")
    print(f"# {tried} one-byte alterations of the root and the proof refused")


def prove_refusals(w, s):
    """PROTOCOL.md, PROVE and "Errors": PROVE as a version-1 frame is refused UNSUPPORTED_VERSION, sizes it
    cannot prove MALFORMED, with the reason the document gives."""
    past = s.src.held.size + 1000       # beyond any checkpoint the broker has signed
    for version, old, new, code in ((1, 1, 2, "UNSUPPORTED_VERSION"), (2, 0, 1, "MALFORMED"),
                                    (2, 2, 1, "MALFORMED"), (2, 1, past, "MALFORMED")):
        s.src.send(version=version, prove=wire_pb2.Prove(old_size=old, new_size=new))
        e = refusal(s.src, "proof")
        expect(wire_pb2.ErrorCode.Name(e.code) == "ERROR_CODE_" + code, f"PROVE {old} {new} v{version}: {e}")
        expect(code != "MALFORMED" or e.reason.startswith("PROVE needs 0 < old_size <= new_size <= "),
               f"reason: {e.reason}")


def refusal(c, kind):
    """The ERROR the broker answers instead of `kind`."""
    try:
        got = c.wait_for(kind)
    except rb.BrokerError as e:
        return e
    raise AssertionError(f"{kind.upper()} instead of an ERROR: {got}")


def ack_checks(w, s):
    """KEYS.md "What the receiver of an ACK checks", steps 2 to 5, each refusing once: an ACK for a message
    we did not send, from another party than its recipient, about other bytes, with another answer than
    the one on record; and taking the intake's ACK again, or the same answer from a new key of the
    recipient (the acker is checked by name), as a repeat."""
    delivered = rb.Opened(s.sent, None, s.sent_header, s.source.card, None, s.referral)
    rotated = rb.Identity.generate("sao-intake", rb.ROLE_SINK, s.intake_card.agency)
    trust = rb.TrustStore([s.intake_card, rotated.card, s.sink.card])
    ok, no = envelope_pb2.ACK_STATUS_ACCEPTED, envelope_pb2.ACK_STATUS_REJECTED

    def check(ack=None, by=rotated, status=ok, reference=s.intake_number, of=delivered, outbox=s.outbox):
        if ack is None:
            problems = [("$.narrative", "not ours")] if status == no else []
            ack = rb.open_envelope(s.source, trust, rb.build_ack(by, of, status, reference, problems))
        return rb.check_ack(ack, outbox, s.answers, s.src.held, s.src.key, None)
    expect(check(s.ack).repeat and check().repeat, "the same answer again is a repeat")
    other_bytes = rb.Opened(s.sent + b"x", None, s.sent_header, s.source.card, None, s.referral)
    for what, kw, why in (("for a message we did not send", dict(outbox={}), "ACK for a referral this"),
                          ("from another sink", dict(by=s.sink), "the acker pyt-intake is not"),
                          ("about other bytes", dict(of=other_bytes), "received_sha256 differs"),
                          ("with another intake reference", dict(reference="SAO-2099-999999"), "a second ACK"),
                          ("with another status", dict(status=no, reference=""), "a second ACK")):
        try:
            check(**kw)
            raise AssertionError(f"an ACK {what} was taken")
        except rb.Refused as e:     # refused at the step KEYS.md gives it, not at another
            expect(e.error == "bad ack" and str(e).startswith(f"bad ack: {why}"), f"an ACK {what}: {e}")


def hello_first(w, s):
    """PROTOCOL.md: on a fresh connection a SUBMIT before HELLO is refused UNEXPECTED with the envelope's
    message id, and a PROVE too; after HELLO the same envelope gets its receipt. It repeats our first
    referral's body byte for byte (a duplicate: the next test)."""
    env, mid = seal_to_intake(s, s.referral)
    c = w.connect(s.endpoint, s.source, s.broker_card, held=s.src.held, timeout_ms=WAIT * 1000, hello=False)
    try:
        c.send(submit=wire_pb2.Submit(envelope=env))
        e = refusal(c, "receipt")
        expect(e.code == wire_pb2.ERROR_CODE_UNEXPECTED and e.message_id == mid and
               e.reason.startswith("HELLO first: "), f"SUBMIT before HELLO: {e} ({e.message_id.hex()})")
        c.send(prove=wire_pb2.Prove(old_size=1, new_size=1))
        e = refusal(c, "proof")
        expect(e.code == wire_pb2.ERROR_CODE_UNEXPECTED, f"PROVE before HELLO: {e}")
        c.welcome = c.hello()
        r, ev = c.submit(env)
        expect(ev.message_id == mid, "the receipt's leaf")
    finally:
        c.close()
        w.clients.remove(c)
    s.repeat_mid = mid


def duplicate_acked(w, s):
    """ADAPTERS.md "Content identity": the repeat of our first referral's body is not filed again, and is
    answered ACCEPTED with the intake number it was filed under and duplicate: true."""
    ack, taken = take_ack(w, s)
    b = taken.body
    expect(ack.header.ref_message_id == s.repeat_mid and b.status == envelope_pb2.ACK_STATUS_ACCEPTED and
           b.duplicate and b.intake_reference == s.intake_number and not taken.repeat and
           taken.witness == "one ledger", f"ACK {json_format.MessageToDict(b)}: {taken.witness} {taken.alarm}")
    expect(filings(w, "SELECT message_id FROM filings WHERE intake_number = ?", s.intake_number) ==
           [(s.sent_header.message_id.hex(),)], "filed again")


def other_agency_rejected(w, s):
    """ADAPTERS.md "One agency's cases": a referral from the Python source naming another agency than its
    card's is REJECTED by the intake with a problem at $.agencyOri, and not filed."""
    referral = json_format.Parse(read(SOURCE_SAMPLE), referral_pb2.Referral())
    referral.rd_number = "JH517903"     # a case of its own: only the agency is wrong
    expect(referral.agency_ori != s.source.card.agency, "the sample names the Python source's agency")
    env, mid = seal_to_intake(s, referral)
    s.src.submit(env)
    ack, taken = take_ack(w, s)
    b = taken.body
    expect(ack.header.ref_message_id == mid and b.status == envelope_pb2.ACK_STATUS_REJECTED and
           "$.agencyOri" in [p.path for p in b.problems], f"ACK {json_format.MessageToDict(b)}")
    print(f"# {' '.join(p.path + ': ' + p.message for p in b.problems)}")
    expect(filings(w, "SELECT 1 FROM filings WHERE message_id = ?", mid.hex()) == [] and
           filings(w, "SELECT 1 FROM cases WHERE agency = ?", referral.agency_ori) == [], "filed")


# --- 4. the Python sink --------------------------------------------------------------------------


def sink_hello(w, s):
    """The sink starts from the checkpoint the source holds: WELCOME must prove consistency from it."""
    held = s.src.held
    s.snk = w.connect(s.endpoint, s.sink, s.broker_card, credit=4, held=held, timeout_ms=WAIT * 1000)
    expect(s.snk.welcome.ledger.old_size == held.size > 0, "WELCOME's old_size")


def sink_receives(w, s):
    """The police adapter's referral, opened with every check of KEYS.md, then CONFIRMed."""
    drop = w.path("drop")
    w.until("the drop folder", lambda: os.path.isdir(drop))
    name = os.path.basename(POLICE_SAMPLE)
    shutil.copy(os.path.join(ROOT, POLICE_SAMPLE), os.path.join(drop, name + ".part"))
    os.rename(os.path.join(drop, name + ".part"), os.path.join(drop, name))
    d = s.snk.next_delivery(WAIT)
    expect(d.attempt >= 1, "DELIVER's attempt")
    opened = rb.open_envelope(s.sink, rb.TrustStore([s.police.card]), d.envelope)
    h, sent = opened.header, json_format.Parse(read(POLICE_SAMPLE), referral_pb2.Referral())
    expect(h.kind == envelope_pb2.KIND_REFERRAL and h.sender == "cpd-rms", "kind and sender")
    expect(opened.body == sent, "the body is not the sample the records system exported")
    expect(h.case_key == s.police.case_key(sent.agency_ori, sent.rd_number), "the case key is not KEYS.md's")
    s.snk.confirm(h.message_id)
    w.until("the broker records the CONFIRM",
            lambda: message_state(w, s, h.message_id)["state"] == "confirmed")
    s.delivered = opened


def sink_acks(w, s):
    """The Python sink's signed ACK (version 2, with the checkpoint it holds), receipted; the police adapter
    records it where ADAPTERS.md says, and cross-witnesses the checkpoint without a ledger alarm."""
    carried = s.snk.held
    ack = rb.build_ack(s.sink, s.delivered, envelope_pb2.ACK_STATUS_ACCEPTED, "PYT-2026-000001",
                       checkpoint=carried)
    s.snk.submit(ack)
    mid = s.delivered.header.message_id.hex()
    path = os.path.join(w.path("drop"), "acks", f"{mid}.json")
    w.until(f"drop/acks/{mid}.json", lambda: os.path.exists(path))
    with open(path) as f:
        got = json.load(f)
    want = {"status": "ACK_STATUS_ACCEPTED", "intakeReference": "PYT-2026-000001",
            "receivedSha256": rb.b64(rb.sha256(s.delivered.envelope)), "checkpoint": carried.text}
    expect({k: got.get(k) for k in want} == want and int(got["decidedMs"]) > 0, f"the ACK file: {got}")
    status = json.loads(w.tool("referral-adapter", "status", "--config", w.path("police.ini")))
    expect(status["accepted"] == 1 and status["awaitingAck"] == 0 and status["ledgerAlarms"] == 0,
           f"referral-adapter status: {status}")


def opening_tampering(w, s):
    """The opening checks can fail: each one-byte change of the delivered envelope is refused."""
    trust, seen = rb.TrustStore([s.police.card]), {}
    for bad in flips(s.delivered.envelope, w):
        err = must_refuse("an altered envelope", rb.open_envelope, s.sink, trust, bad)
        seen[err] = seen.get(err, 0) + 1
    print(f"# {len(s.delivered.envelope)} alterations refused: {seen}")
    expect(must_refuse("another recipient", rb.open_envelope, s.source, trust, s.delivered.envelope) ==
           "wrong recipient", "opened by another")


def heartbeats(w, s):
    """HEARTBEATs both ways keep the Python connections: after at least three intervals of a second the
    broker still counts both connected."""
    w.until("HEARTBEATs both ways on both connections",
            lambda: all(c.heartbeats_sent >= 3 and c.heartbeats_received >= 3 for c in w.clients))
    # status exits 1 when something needs attention (the test cards expire within a day): its JSON all the same
    status = json.loads(admin(w, s, "status", "--json", accept=(0, 1)))
    connected = {a["name"]: a["connected"] for a in status["adapters"]}
    expect(connected["pyt-source"] and connected["pyt-intake"], f"connected: {connected}")


# --- 5. the end ----------------------------------------------------------------------------------


def stop_and_audit(w, s):
    """Every process stops on SIGTERM with status 0; the auditor verifies the ledger, whose submitted
    and acked leaves hold the headers the Python client signed."""
    for c in w.clients:
        c.close()
    w.clients = []
    for name in ("police", "intake", "broker"):
        rc = w.stop(name)
        expect(rc == 0, f"{name} exited {rc}")
    ledger = w.path("ledger.jsonl")
    w.tool("referral-audit", "export", "--data", w.path("broker"), "--out", ledger, "--format", "jsonl")
    w.tool("referral-audit", "verify", "--ledger", ledger, "--broker-card", w.path("broker", "broker.card"))
    with open(ledger) as f:
        events = [ledger_pb2.LedgerEvent.FromString(base64.b64decode(o["leaf"]))
                  for o in map(json.loads, f) if "leaf" in o]
    seen = {(e.action, e.party, e.outcome) for e in events}
    for want in (("submitted", "pyt-source", "ok"), ("submitted", "pyt-intake", "ok"),
                 ("acked", "pyt-intake", "accepted"), ("acked", "sao-intake", "accepted"),
                 ("acked", "sao-intake", "rejected"), ("confirmed", "pyt-intake", "ok"),
                 ("confirmed", "pyt-source", "ok")):
        expect(want in seen, f"no {want} leaf")


def main():
    w, s = World(), type("State", (), {})()
    # SIGTERM (run.sh's timeout) ends the run through the finally below, like any failure.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        check("the examples in LEDGER.md and KEYS.md verify with this client's code", doc_examples)
        check("Python-made cards pass referral-keys verify-card and fingerprint; a referral-keys card and "
              "secret file read back byte for byte", identities, w, s)
        check("malformed headers, field by field: referral-envelope open and this client refuse the same ones",
              header_variants, w, s)
        check("InnerSigned version 1 for any kind and 2 for ACKs only; a version-1 ACK with fields 6 or 7, or "
              "whose two statuses differ, refused: referral-envelope open and this client alike", inner_variants,
              w, s)
        check("referral-broker init and run on a loopback port the system picks", start_broker, w, s)
        check("referral-admin adapter add --card registers the project's and the Python-made cards",
              register, w, s)
        check("the project's police (rms-files) and intake (intake-sqlite) adapters connect",
              start_adapters, w, s)
        check("Python source: HELLO, then WELCOME with the broker's signed checkpoint", source_hello, w, s)
        check("Python source: SUBMIT of a sealed referral; the RECEIPT proves its submitted leaf under a "
              "signed checkpoint consistent with the one held", source_submit, w, s)
        check("a receipt with any one byte of leaf, proof, checkpoint or consistency proof altered is refused",
              receipt_tampering, w, s)
        check("the project's intake adapter files the Python referral in its database", intake_filed, w, s)
        check("the intake's ACK (version 2) reaches the Python source, which takes it after every check of "
              "KEYS.md: ACCEPTED, under the intake number filed; CONFIRMed", source_gets_ack, w, s)
        check("the checkpoint in the intake's ACK is cross-witnessed: PROVE (a version-2 frame), and the "
              "PROOF verifies against the two roots", source_cross_witnesses, w, s)
        check("cross-witnessing can fail: an altered root or proof, an equal size with another root, a broker "
              "that cannot prove, a checkpoint not the broker's: each a ledger alarm", cross_witness_tampering,
              w, s)
        check("PROVE as a version-1 frame is refused UNSUPPORTED_VERSION, sizes it cannot prove MALFORMED",
              prove_refusals, w, s)
        check("the ACK checks refuse an ACK for a message not sent, from another sink, about other bytes, or "
              "with another answer; a repeat, or a new key of the recipient, is taken", ack_checks, w, s)
        check("a SUBMIT (or PROVE) before HELLO is refused ERROR UNEXPECTED naming the envelope's message id; "
              "after HELLO the same envelope gets its receipt", hello_first, w, s)
        check("the repeat of a referral's body is ACKed ACCEPTED, duplicate, under the intake number it was "
              "filed under, and not filed again", duplicate_acked, w, s)
        check("a referral naming another agency than its sender's card is REJECTED with a problem at "
              "$.agencyOri, and not filed", other_agency_rejected, w, s)
        check("Python sink: HELLO holding a checkpoint; WELCOME proves consistency from it", sink_hello, w, s)
        check("Python sink: the police adapter's referral opens with every check of KEYS.md, its body is the "
              "exported sample and its case key KEYS.md's; CONFIRMed", sink_receives, w, s)
        check("Python sink: its signed ACK (version 2, with its checkpoint) is receipted, and the police adapter "
              "records it (acks/ID.json, status) without a ledger alarm", sink_acks, w, s)
        check("an envelope with any one byte altered is refused by the opening checks", opening_tampering, w, s)
        check("HEARTBEATs both ways keep both Python connections up", heartbeats, w, s)
        check("every process stops on SIGTERM with status 0; referral-audit verifies the ledger",
              stop_and_audit, w, s)
    except Abort:
        return 1
    finally:
        w.cleanup()
        print(f"1..{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
