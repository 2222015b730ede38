#!/usr/bin/env python3
"""tests/vectors/schemas/make.py -- makes the databases of earlier schemas that schema_test upgrades.

Each database is made by the migrations of the commit that released its layout, read from git
(`git show COMMIT:FILE`, the `migrations[]` array; the broker's version 2 is that commit's LEDGER_SCHEMA),
run as sqldb_open ran them (each in a transaction that sets PRAGMA user_version), then given what a store of
that layout held: a queued referral and its parties (broker), an outbox and an inbox row (adapter), a filed
case (intake). Pages of 512 bytes and VACUUM keep each file a few KiB. Run from the repository root:
    python3 tests/vectors/schemas/make.py
It needs the commits in the clone's history; the files it writes are checked in, so tests do not."""
import os
import re
import sqlite3
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (file, commit that released the layout, versions to apply). Broker schema 4 and adapter schema 5
# were changed in place after their first release: every layout they had is kept (a, b, c).
FIXTURES = {
    "broker-v2": ("broker/store.c", "9e9b3ea", 2),
    "broker-v3": ("broker/store.c", "1c8f2fe", 3),
    "broker-v4a": ("broker/store.c", "e0ac73e", 4),  # envelopes still in messages, message_leaves, new indexes
    "broker-v4b": ("broker/store.c", "cf52001", 4),  # envelopes table; message_leaves; indexes not partial
    "broker-v4c": ("broker/store.c", "441f7f3", 4),  # partial indexes, without the two for status counts
    "broker-v4": ("broker/store.c", "c47cbe2", 4),   # the last layout of 4
    "adapter-v1": ("adapters/astore.c", "c588a6e", 1),
    "adapter-v2": ("adapters/astore.c", "9e9b3ea", 2),
    "adapter-v3": ("adapters/astore.c", "1c8f2fe", 3),
    "adapter-v4": ("adapters/astore.c", "7ce607f", 4),
    "adapter-v5a": ("adapters/astore.c", "752ede2", 5),  # without the meta table
    "adapter-v5": ("adapters/astore.c", "9a43364", 5),
    "intake-v1": ("adapters/intake_sqlite.c", "c588a6e", 1),
    "intake-v2": ("adapters/intake_sqlite.c", "9ba6e7b", 2),
    "intake-v3": ("adapters/intake_sqlite.c", "752ede2", 3),
}

TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[,(){}]')


def git_show(commit, path):
    return subprocess.run(["git", "show", f"{commit}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def c_strings(text, ledger_schema=None):
    """The elements of a C array of string literals (adjacent literals joined; LEDGER_SCHEMA resolved)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    items, cur = [], None
    for tok in TOKEN.findall(text):
        if tok.startswith('"'):
            cur = (cur or "") + bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        elif tok == "LEDGER_SCHEMA":
            cur = ledger_schema
        elif tok == "," and cur is not None:
            items.append(cur)
            cur = None
    if cur is not None:
        items.append(cur)
    return items


def migrations(path, commit):
    src = git_show(commit, path)
    body = re.search(r"migrations\[\] = \{(.*?)\n\};", src, re.S).group(1)
    ledger = None
    if "LEDGER_SCHEMA" in body:
        lsrc = git_show(commit, "broker/ledger.c")
        ledger = c_strings(re.search(r"LEDGER_SCHEMA\[\] =(.*?);\n", lsrc, re.S).group(1))[0]
    return c_strings(body, ledger)


def columns(db, table):
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def insert(db, table, row):
    """Inserts the values of row whose columns the table has (layouts differ in their columns)."""
    have = columns(db, table)
    cols = [c for c in row if c in have]
    db.execute(f"INSERT INTO {table}({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})",
               [row[c] for c in cols])


MSG_ID = bytes(range(1, 17))
ENVELOPE = b"envelope of a queued referral " * 10  # 300 bytes the test reads back


def fill_broker(db):
    for i, (name, role) in enumerate([("cpd-rms", 1), ("sao-intake", 2)], 1):
        key_id, curve = bytes([i]) * 16, bytes([i]) * 32
        insert(db, "parties", {"id": i, "name": name, "role": role, "agency": "ILCPD0000", "key_id": key_id,
                               "curve_key": curve, "card": b"card", "added_ms": 1000})
        if "party_keys" in [r[0] for r in db.execute("SELECT name FROM sqlite_schema")]:
            insert(db, "party_keys", {"key_id": key_id, "party": name, "curve_key": curve, "card": b"card",
                                      "added_ms": 1000})
    insert(db, "messages", {"message_id": MSG_ID, "envelope": ENVELOPE, "envelope_sha256": bytes(32),
                            "kind": 1, "sender": "cpd-rms", "recipient": "sao-intake", "case_key": b"case",
                            "created_ms": 1000, "received_ms": 2000, "submit_index": 7, "next_attempt_ms": 2000,
                            "sender_key_id": bytes([1]) * 16, "queued_ms": 2000})
    if "envelope" not in columns(db, "messages"):
        insert(db, "envelopes", {"message_id": MSG_ID, "envelope": ENVELOPE})


def fill_adapter(db):
    insert(db, "outbox", {"message_id": MSG_ID, "kind": 1, "envelope": ENVELOPE, "agency": "ILCPD0000",
                          "rd_number": "JH100001", "revision": 1, "queued_ms": 2000})
    insert(db, "inbox", {"message_id": bytes(range(17, 33)), "envelope": ENVELOPE, "received_ms": 3000})


def fill_intake(db):
    insert(db, "cases", {"intake_number": "SAO-2026-000001", "agency": "ILCPD0000", "rd_number": "JH100001",
                         "revision": 1, "opened_ms": 4000, "updated_ms": 4000})
    insert(db, "filings", {"message_id": MSG_ID.hex(), "intake_number": "SAO-2026-000001", "kind": "referral",
                           "revision": 1, "filed_ms": 4000})
    db.execute("INSERT INTO intake_counters VALUES(2026, 1)")


def make(name, path, commit, versions):
    out = os.path.join(HERE, name + ".db")
    if os.path.exists(out):
        os.remove(out)
    db = sqlite3.connect(out, isolation_level=None)
    db.execute("PRAGMA page_size=512")
    for v, sql in enumerate(migrations(path, commit)[:versions], 1):
        db.executescript(f"BEGIN; {sql}; PRAGMA user_version={v}; COMMIT;")
    fill = {"broker": fill_broker, "adapter": fill_adapter, "intake": fill_intake}[name.split("-")[0]]
    fill(db)
    db.execute("VACUUM")
    db.close()
    print(f"{name}.db: {commit} {path}, schema {versions}, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    for name, spec in FIXTURES.items():
        make(name, *spec)
