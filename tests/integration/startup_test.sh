#!/usr/bin/env bash
# startup_test.sh -- an operator's mistakes at start-up, typed as docs/OPERATIONS.md's commands; TAP.
#
# Each check runs the real tools with one mistake (a missing or misspelt config, an uninitialised or
# foreign data directory, an expired card, a port in use, a stray SIGHUP, a restore as root) and looks
# at the exit status (2 for every config or usage error of both daemons), the one line on stderr, the
# logs, and what was left on disk: a start that fails leaves no database and writes no ledger leaf.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

. tests/integration/tap.sh

fails() { # fails CODE PATTERN COMMAND...: exits CODE, saying one line on stderr that matches PATTERN (ERE)
    local want=$1 pattern=$2 rc
    shift 2
    timeout 30 "$@" >/dev/null 2>"$work/err" </dev/null
    rc=$?
    [ "$rc" = "$want" ] || { echo "exit $rc, expected $want: $(cat "$work/err")"; return 1; }
    [ "$(wc -l <"$work/err")" = 1 ] || { echo "not one line:"; cat "$work/err"; return 1; }
    grep -Eq -- "$pattern" "$work/err" || { echo "no /$pattern/ in: $(cat "$work/err")"; return 1; }
}

keys() { "$BIN/referral-keys" generate --no-passphrase "$@" >/dev/null; }
keys --name ops-admin --role admin --agency ILCPD0000 --out "$work/ops-admin"
keys --name cpd-rms --role source --agency ILCPD0000 --out "$work/cpd-rms"
keys --name sao-intake --role sink --agency ILCCSAO00 --out "$work/sao-intake"
mkdir -p "$work/trust" "$work/drop"
cp "$work/sao-intake.card" "$work/trust/"
broker="$BIN/referral-broker"
adapter="$BIN/referral-adapter"
"$broker" init --data "$work/b1" --name broker-1 --admin-card "$work/ops-admin.card" >/dev/null

# --- the broker ---------------------------------------------------------------------------------------

mkdir "$work/empty"
check "run on an uninitialised data directory says to run init" \
    fails 2 "^referral-broker: $work/empty: not a broker's data directory \(no broker.secret\): .*referral-broker init" \
    "$broker" run --data "$work/empty"

printf '[broker]\ncredit = 16\n\n[delivry]\nretry_limit = 5\nttl_ms = 100000\n' >"$work/misspelt.conf"
check "a misspelt section is named, at its own line" \
    fails 2 "^referral-broker: $work/misspelt.conf: line 4: unknown section \[delivry\]$" \
    "$broker" run --data "$work/b1" --config "$work/misspelt.conf"
printf '[broker]\ncredit = 0\nsessions_per_key = 999\n' >"$work/values.conf"
check "the first bad value is named with its own line" \
    fails 2 "^referral-broker: $work/values.conf: line 2: \[broker\] credit must be a whole number from 1 to 10000$" \
    "$broker" run --data "$work/b1" --config "$work/values.conf"
check "--listen without tcp:// says what an endpoint looks like" \
    fails 2 "^referral-broker: --listen 127.0.0.1:7450: not an endpoint: write tcp://HOST:PORT" \
    "$broker" run --data "$work/b1" --listen 127.0.0.1:7450
printf '[broker]\nlisten = 127.0.0.1:7450\n' >"$work/listen.conf"
check "[broker] listen without tcp:// is named with its line" \
    fails 2 "^referral-broker: $work/listen.conf: line 2: \[broker\] listen 127.0.0.1:7450: not an endpoint: write tcp://HOST:PORT" \
    "$broker" run --data "$work/b1" --config "$work/listen.conf"

# A card made two days ago for one day (python3-nacl; the packed layout of docs/KEYS.md).
expired_card() { # expired_card NAME ROLE(1 source, 2 sink, 3 broker, 4 admin) AGENCY OUT
    /usr/bin/python3 - "$@" <<'EOF'
import base64, hashlib, struct, sys, time
import nacl.public, nacl.signing
name, role, agency, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sk = nacl.signing.SigningKey.generate()
pk = bytes(sk.verify_key)
kid = hashlib.sha256(pk).digest()[:8]
created = int(time.time()) - 2 * 86400
body = (b"RBCD" + bytes([1, role, 1, 1]) + kid + pk + bytes(nacl.public.PrivateKey.generate().public_key) +
        struct.pack("<QQ", created, created + 86400) + bytes([len(name)]) + name.encode() + bytes([9]) +
        agency.encode())
packed = body + sk.sign(b"referral-broker/v1/card\x00" + body).signature
roles = {1: "source", 2: "sink", 3: "broker", 4: "admin"}
with open(out, "w") as f:
    f.write(f"referral-broker card v1: name={name} role={roles[role]} agency={agency} keyid={kid.hex()}\n"
            f"{base64.b64encode(packed).decode()}\n")
EOF
}
expired_init() {
    expired_card old-admin 4 ILCPD0000 "$work/old-admin.card" || return 1
    fails 1 "^referral-broker: $work/old-admin.card: the card expired on [0-9-]+T[0-9:]+Z" \
        "$broker" init --data "$work/b-expired" --name broker-x --admin-card "$work/old-admin.card" || return 1
    [ ! -e "$work/b-expired" ] || { echo "init left $work/b-expired behind"; return 1; }
}
check "init refuses an expired admin card, and creates nothing" expired_init

# --- a start that fails writes nothing to the ledger (item 6) ------------------------------------------

leaves() { sqlite3 "file:$1/broker.db?mode=ro" 'SELECT count(*) FROM ledger_leaves'; }
start_b1() {
    "$broker" run --data "$work/b1" --listen 'tcp://127.0.0.1:*' --metrics 127.0.0.1:0 2>"$work/b1.log" &
    b1_pid=$!
    pids+=("$b1_pid")
    until_true 20 grep -q 'event=broker_started' "$work/b1.log" || { cat "$work/b1.log"; return 1; }
    endpoint=$(grep -o 'event=broker_started.*' "$work/b1.log" | grep -o 'listen=[^ ]*' | head -n1 | cut -d= -f2)
    endpoint=${endpoint//\"/}
    metrics_port=$(grep -o 'event=metrics_listening address=127.0.0.1:[0-9]*' "$work/b1.log" | cut -d: -f2)
    [ -n "$endpoint" ] && [ -n "$metrics_port" ]
}
check "a broker starts" start_b1

failed_starts() {
    "$broker" init --data "$work/b2" --name broker-2 --admin-card "$work/ops-admin.card" >/dev/null || return 1
    local before i
    before=$(leaves "$work/b2")
    for i in 1 2 3 4 5; do
        "$broker" run --data "$work/b2" --listen "$endpoint" --metrics off 2>/dev/null
        "$broker" run --data "$work/b2" --listen 'tcp://127.0.0.1:*' --metrics "127.0.0.1:$metrics_port" 2>/dev/null
    done
    [ "$(leaves "$work/b2")" = "$before" ] || { echo "ledger $before -> $(leaves "$work/b2") leaves"; return 1; }
}
check "ten failed starts (listen port, metrics port in use) append no ledger leaf" failed_starts
port_in_use() { # the log's error line names the port, and the process exits 3: restarted, it may pass
    "$broker" run --data "$work/b2" --listen "$endpoint" --metrics off 2>"$work/err"
    [ $? = 3 ] && grep -q "level=error event=bind_failed listen=$endpoint error=\"Address already in use\"" "$work/err" ||
        { cat "$work/err"; return 1; }
    "$broker" run --data "$work/b2" --listen 'tcp://127.0.0.1:*' --metrics "127.0.0.1:$metrics_port" 2>"$work/err"
    [ $? = 3 ] && grep -q "level=error event=metrics_bind_failed address=127.0.0.1:$metrics_port error=\"Address already in use\"" "$work/err" ||
        { cat "$work/err"; return 1; }
}
check "a port in use: exit 3 (the units restart on it), the error line names it" port_in_use

# --- SIGHUP (item 7) -----------------------------------------------------------------------------------

broker_hangup() {
    kill -HUP "$b1_pid"
    until_true 10 grep -q 'event=hangup_ignored' "$work/b1.log" || { echo "no hangup_ignored"; return 1; }
    sleep 0.5
    kill -0 "$b1_pid" 2>/dev/null || { echo "the broker died of SIGHUP"; return 1; }
}
check "SIGHUP: the broker logs hangup_ignored and carries on" broker_hangup

admin=("$BIN/referral-admin" --broker "$endpoint" --broker-card "$work/b1/broker.card")
"${admin[@]}" --as "$work/ops-admin.secret" adapter add --card "$work/cpd-rms.card" >/dev/null

# --- the adapter ---------------------------------------------------------------------------------------

write_conf() { # write_conf FILE [SED-SCRIPT]: a valid rms-files config, edited by the sed script
    cat >"$1" <<EOF
[adapter]
connector = rms-files
secret = $work/cpd-rms.secret
broker = $endpoint
broker_card = $work/b1/broker.card
trust = $work/trust
recipient = sao-intake
data = $work/cpd-data

[rms-files]
drop = $work/drop
EOF
    [ $# -lt 2 ] || sed -i "$2" "$1"
}
no_store() { [ ! -e "$work/cpd-data/adapter.db" ] || { echo "adapter.db left behind"; return 1; }; }

missing_config() {
    fails 2 "^referral-adapter: $work/missing.conf: cannot read the config: No such file or directory$" \
        "$adapter" run --config "$work/missing.conf"
}
check "run --config MISSING says so (it segfaulted)" missing_config

misspelt_adapter_section() {
    write_conf "$work/a.conf" 's/^\[adapter\]$/[adaptr]/'
    fails 2 "^referral-adapter: $work/a.conf: line 1: unknown section \[adaptr\]$" "$adapter" run --config "$work/a.conf" &&
        no_store
}
check "a misspelt [adapter] is reported as a section at its line" misspelt_adapter_section
unknown_setting() {
    write_conf "$work/a.conf" 's/^recipient/recipent/'
    fails 2 "^referral-adapter: $work/a.conf: line 7: unknown setting \[adapter\] recipent$" \
        "$adapter" run --config "$work/a.conf"
}
check "an unknown setting is named with its file and line" unknown_setting
bad_connector_setting() {
    write_conf "$work/a.conf" 's|^drop = .*|drop = /nonexistent/drop|'
    fails 2 "/nonexistent/drop" "$adapter" run --config "$work/a.conf" && no_store
}
check "a bad connector setting: one line, and no database created" bad_connector_setting
adapter_endpoint() {
    write_conf "$work/a.conf" 's|^broker = .*|broker = 127.0.0.1:7450|'
    fails 2 "^referral-adapter: $work/a.conf: line 4: \[adapter\] broker 127.0.0.1:7450: not an endpoint: write tcp://HOST:PORT" \
        "$adapter" run --config "$work/a.conf" && no_store
}
check "an adapter's broker without tcp:// is named with its line" adapter_endpoint

missing_secret() {
    write_conf "$work/a.conf" "s|^secret = .*|secret = $work/nothing.secret|"
    fails 2 "^referral-adapter: $work/nothing.secret: No such file or directory$" "$adapter" run --config "$work/a.conf"
}
check "a missing secret is named, without blaming passphrases" missing_secret
encrypted_secret() {
    printf 'a passphrase\n' >"$work/pass" && chmod 600 "$work/pass"
    "$BIN/referral-keys" generate --name cpd-rms --role source --agency ILCPD0000 --out "$work/enc" \
        --passphrase-file "$work/pass" >/dev/null || return 1
    write_conf "$work/a.conf" "s|^secret = .*|secret = $work/enc.secret|"
    fails 2 "^referral-adapter: $work/enc.secret: .*--no-passphrase" "$adapter" run --config "$work/a.conf"
}
check "a passphrase-protected secret says an adapter needs --no-passphrase" encrypted_secret

adapter_hangup() {
    write_conf "$work/a.conf"
    "$adapter" run --config "$work/a.conf" 2>"$work/a.log" &
    local pid=$!
    pids+=("$pid")
    until_true 20 grep -q 'event=connected' "$work/a.log" || { cat "$work/a.log"; return 1; }
    kill -HUP "$pid"
    until_true 10 grep -q 'event=hangup_ignored' "$work/a.log" || { echo "no hangup_ignored"; return 1; }
    kill -0 "$pid" 2>/dev/null || { echo "the adapter died of SIGHUP"; return 1; }
    kill -TERM "$pid"
    wait "$pid" || { echo "exit $? after SIGTERM"; return 1; }
    grep -q 'event=adapter_stopped' "$work/a.log"
}
check "SIGHUP: an adapter logs hangup_ignored and carries on; SIGTERM stops it" adapter_hangup

# Every setting is checked whenever a config is read, against its one row (bounds, type): a connector's
# value out of range was missed by `status` (only the adapter's start read it), and a [publish] value by
# `run` (only referral-publish read it, perhaps months later).
status_checks_connector() {
    write_conf "$work/a.conf" 's|^drop = .*|&\nstable_ms = -1|'
    fails 2 "^referral-adapter: $work/a.conf: line 12: \[rms-files\] stable_ms must be a whole number from 0 to 3600000$" \
        "$adapter" status --config "$work/a.conf"
}
check "status refuses a connector setting out of range, naming its line" status_checks_connector
run_checks_publish() {
    write_conf "$work/a.conf" 's|^drop = .*|&\n\n[publish]\nthreshold = 1|'
    fails 2 "^referral-adapter: $work/a.conf: line 14: \[publish\] threshold must be a whole number from 2 to 1000000$" \
        "$adapter" run --config "$work/a.conf"
}
check "run refuses a [publish] setting out of range, naming its line" run_checks_publish

# --- connecting with the wrong key or card -------------------------------------------------------------

two_days=$((2 * 86400 * 1000))
expired_adapter_key() {
    # a key of one day, and a clock two days on
    keys --name cpd-rms --role source --agency ILCPD0000 --out "$work/short" --days 1 || return 1
    write_conf "$work/a.conf" "s|^secret = .*|secret = $work/short.secret|"
    RB_TEST_CLOCK_OFFSET_MS=$two_days "$adapter" run --config "$work/a.conf" 2>"$work/expired.log" &
    local pid=$!
    pids+=("$pid")
    until_true 15 grep -q 'event=broker_unreachable.*expired' "$work/expired.log" ||
        { echo "no connect_failed naming the expiry:"; cat "$work/expired.log"; return 1; }
    kill "$pid"
    wait "$pid"
}
check "an expired adapter key: broker_unreachable says expired" expired_adapter_key

expired_admin_key() {
    keys --name ops-admin --role admin --agency ILCPD0000 --out "$work/short-admin" --days 1 || return 1
    RB_TEST_CLOCK_OFFSET_MS=$two_days fails 2 "^referral-admin: our key \(ops-admin, [0-9a-f]{16}\) expired on [0-9-]+T[0-9:]+Z: rotate it" \
        "${admin[@]}" --as "$work/short-admin.secret" status
}
check "an expired admin key says expired" expired_admin_key

refused_key() {
    # an admin key the broker does not know: refused at the handshake, named by its sealing key in the log
    keys --name ops-admin --role admin --agency ILCPD0000 --out "$work/other-admin" || return 1
    fails 2 "the broker refused our key \(ops-admin, [0-9a-f]{16}\) at the handshake: not registered, disabled, revoked or retired" \
        "${admin[@]}" --as "$work/other-admin.secret" --timeout-ms 3000 status || return 1
    local key
    key=$("$BIN/referral-keys" show "$work/other-admin.card" | awk '/^sealing key/ {print $3}')
    until_true 5 grep -q "event=handshake_refused.*sealing_key=$key" "$work/b1.log" ||
        { grep handshake_refused "$work/b1.log"; return 1; }
}
check "a key the broker refuses: the tool says so, and handshake_refused names its sealing key" refused_key

wrong_broker_card() { # another broker's card: the handshake cannot complete
    fails 2 "connected, but the handshake did not complete within 3000 ms: is broker_card the card of the broker listening there\?" \
        "$BIN/referral-admin" --broker "$endpoint" --broker-card "$work/sao-intake.card" \
        --as "$work/ops-admin.secret" --timeout-ms 3000 status
}
check "a wrong broker card is told from a refused key and a closed port" wrong_broker_card

closed_port() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fails 2 "nothing answered within 2000 ms \(connection refused or unreachable\): is the broker running" \
        "$BIN/referral-admin" --broker "tcp://127.0.0.1:$port" --broker-card "$work/b1/broker.card" \
        --as "$work/ops-admin.secret" --timeout-ms 2000 status
}
check "a closed port says nothing answered" closed_port

stop_b1() {
    kill -TERM "$b1_pid"
    wait "$b1_pid" || { echo "exit $?"; return 1; }
    grep -q 'event=broker_stopped' "$work/b1.log"
}
check "after a SIGHUP, SIGTERM still stops the broker cleanly" stop_b1

# --- restore as root -----------------------------------------------------------------------------------

restore_as_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "not root: skipped"
        return 0
    fi
    # the service user's data directory, restored by root from a copy of a stopped broker's database
    mkdir -p "$work/restored" && chmod 700 "$work/restored" && chown nobody:nogroup "$work/restored" ||
        return 1
    cp "$work/b1/broker.card" "$work/restored/" && chown nobody:nogroup "$work/restored/broker.card" &&
        sqlite3 "$work/b1/broker.db" ".backup '$work/backup.db'" || return 1
    "$broker" restore --from "$work/backup.db" --data "$work/restored" >/dev/null || return 1
    local f
    for f in "$work/restored"/broker.db "$work/restored"/broker.db-wal; do
        [ -e "$f" ] || continue
        [ "$(stat -c %U "$f")" = nobody ] || { echo "$f is owned by $(stat -c %U "$f")"; return 1; }
    done
}
check "restore run as root leaves the database to the data directory's owner" restore_as_root

echo "1..$n"
