#!/usr/bin/env bash
# deployment_test.sh -- the example configs run as the systemd units run them, with JSON logs; TAP.
#
# Lays out /etc/referral, /var/lib/referral and /srv/referral under a temporary directory, makes the
# keys an operator would, and starts a broker and one adapter of each connector from the shipped
# examples (broker/dist/broker.conf, adapters/dist/*.conf: paths moved under the temporary directory,
# every commented default switched on, so that each setting is read), all with --log-format json, on
# loopback. One referral goes through the drop folder to the intake database, one through HTTP to the
# import folder; an invalid export and an unauthorised request with a hostile URL are turned away. Then
# every process is stopped with SIGTERM, as systemd stops it, and must exit 0; and every line each one
# logged must be one JSON object with ts, level and event, with adapter= and msg= on every line about a
# message, and with neither the HTTP token nor case content anywhere.
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

events() { # events LOG FILTER: the log's lines as JSON, through a jq filter (lines that do not parse: none)
    jq -R -c "fromjson? | $2" "$1"
}

root=$work/root
etc=$root/etc/referral
var=$root/var/lib/referral
srv=$root/srv/referral
textfiles=$root/var/lib/prometheus/node-exporter # the node exporter's textfile folder, for metrics_file
mkdir -p "$etc/keys" "$var" "$srv/sao-intake" "$work/logs" "$textfiles"
chmod 700 "$var"
token=t0k3n-for-the-deployment-test-$$
printf '%s\n' "$token" >"$etc/keys/cpd-http.token"
chmod 600 "$etc/keys/cpd-http.token"

install_config() { # install_config EXAMPLE: as an operator would, paths moved under $root, defaults on
    # (previous_secret is not a default: it names a file only a rotation leaves behind)
    sed -e "s|/etc/referral|$etc|g; s|/var/lib/referral|$var|g; s|/srv/referral|$srv|g" \
        -e "s|/var/lib/prometheus/node-exporter|$textfiles|g" \
        -e '/^;previous_secret/!s/^;\([a-z_]* = \)/\1/' -e "s|tcp://broker.example.org:7450|${endpoint:-}|" \
        -e 's|^listen = 127.0.0.1:8080$|listen = 127.0.0.1:0|' "$1" >"$etc/$(basename "$1")"
}

identities() {
    "$BIN/referral-keys" generate --name ops-admin --role admin --agency ILCPD0000 --out "$work/ops-admin" \
        --no-passphrase >/dev/null || return 1
    local name role agency
    while read -r name role agency; do
        "$BIN/referral-keys" generate --name "$name" --role "$role" --agency "$agency" --out "$etc/keys/$name" \
            --no-passphrase >/dev/null || return 1
    done <<EOF
cpd-rms source ILCPD0000
cpd-http source ILCPD0000
sao-intake sink ILCCSAO00
sao-files sink ILCCSAO00
EOF
    # Who trusts whom: each source its sink, each sink its source.
    local pair
    for pair in cpd-rms:sao-intake sao-intake:cpd-rms cpd-http:sao-files sao-files:cpd-http; do
        mkdir -p "$etc/trust/${pair%%:*}" && cp "$etc/keys/${pair#*:}.card" "$etc/trust/${pair%%:*}/" || return 1
    done
}
check "keys and trust directories laid out as docs/OPERATIONS.md says" identities

broker_log=$work/logs/broker.log
endpoint=
start_broker() {
    install_config broker/dist/broker.conf
    "$BIN/referral-broker" init --data "$var/broker" --name broker-1 --admin-card "$work/ops-admin.card" \
        >/dev/null || return 1
    cp "$var/broker/broker.card" "$etc/broker.card"
    "$BIN/referral-broker" run --data "$var/broker" --config "$etc/broker.conf" --listen 'tcp://127.0.0.1:*' \
        --log-format json 2>"$broker_log" &
    pids+=($!)
    broker_pid=$!
    until_true 20 grep -q '"event":"broker_started"' "$broker_log" || return 1
    endpoint=$(events "$broker_log" 'select(.event == "broker_started") | .listen' | tr -d '"')
    [ -n "$endpoint" ]
}
check "the broker starts from the example broker.conf with every setting given" start_broker

admin() { "$BIN/referral-admin" --broker "$endpoint" --broker-card "$etc/broker.card" --as "$work/ops-admin.secret" "$@"; }

declare -A adapter_pid
start_adapters() {
    local name
    for name in cpd-rms cpd-http sao-intake sao-files; do
        admin adapter add --card "$etc/keys/$name.card" >/dev/null || return 1
        install_config "adapters/dist/$name.conf"
    done
    sed -i 's/^recipient = sao-intake$/recipient = sao-files/' "$etc/cpd-http.conf"
    mkdir -p "$srv/sao-intake"
    for name in cpd-rms cpd-http sao-intake sao-files; do
        "$BIN/referral-adapter" run --config "$etc/$name.conf" --log-format json 2>"$work/logs/$name.log" &
        pids+=($!)
        adapter_pid[$name]=$!
    done
    for name in cpd-rms cpd-http sao-intake sao-files; do
        until_true 20 grep -q '"event":"connected"' "$work/logs/$name.log" || { echo "$name did not connect"; return 1; }
        # its metrics_file, for the node exporter
        grep -q "^referral_adapter_ledger_alarms{adapter=\"$name\"} 0$" "$textfiles/$name.prom" ||
            { echo "$name wrote no metrics file"; return 1; }
    done
}
check "an adapter of each connector starts from its example config and connects" start_adapters

http() { # http METHOD PATH TOKEN [BODY-FILE]: the status code of one HTTP/1.0 request to the rms-http adapter
    local port body_len=0
    port=$(events "$work/logs/cpd-http.log" 'select(.event == "http_listening") | .port')
    [ -n "${4:-}" ] && body_len=$(wc -c <"$4")
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s %s HTTP/1.0\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' \
        "$1" "$2" "$3" "$body_len" >&3
    [ -n "${4:-}" ] && cat "$4" >&3
    head -n 1 <&3 | cut -d' ' -f2
    exec 3<&-
}

referrals_flow() {
    local sample=adapters/samples/valid/01-fatal-shooting.json drop=$srv/cpd-rms
    cp "$sample" "$drop/01.json.part" && mv "$drop/01.json.part" "$drop/01.json"
    cp adapters/samples/invalid/bad-time.json "$drop/bad-time.json"
    [ "$(http POST /v1/referrals "$token" adapters/samples/valid/05-tear-gas-crowd.json)" = 202 ] ||
        { echo "POST was not accepted"; return 1; }
    [ "$(http GET '/v1/referrals/%22quoted%22%0Aevent=forged' wrong-token)" = 401 ] || return 1
    until_true 30 compgen -G "$drop/acks/*.json" >/dev/null || { echo "no ACK in the drop folder"; return 1; }
    until_true 30 compgen -G "$srv/sao-files/*.json" >/dev/null || { echo "nothing imported"; return 1; }
    until_true 30 test -f "$drop/rejected/bad-time.json" || return 1
    [ "$(sqlite3 "$srv/sao-intake/intake.db" 'SELECT count(*) FROM cases')" = 1 ] &&
        until_true 30 sh -c "'$BIN/referral-adapter' status --config '$etc/cpd-http.conf' | jq -e '.accepted == 1'"
}
check "referrals flow: drop folder to intake database, HTTP to import folder, both ACKed" referrals_flow

stop_all() { # SIGTERM, as systemctl stop sends it: each exits 0 and says it stopped
    local name status
    for name in cpd-rms cpd-http sao-intake sao-files; do
        kill -TERM "${adapter_pid[$name]}"
        wait "${adapter_pid[$name]}"
        status=$?
        [ "$status" = 0 ] || { echo "$name exited $status"; return 1; }
        grep -q '"event":"adapter_stopped"' "$work/logs/$name.log" || { echo "$name did not log its stop"; return 1; }
    done
    kill -TERM "$broker_pid"
    wait "$broker_pid"
    status=$?
    [ "$status" = 0 ] || { echo "the broker exited $status"; return 1; }
    grep -q '"event":"broker_stopped"' "$broker_log"
}
check "every process stops on SIGTERM with exit status 0" stop_all
pids=()

logs_are_json() { # each line one object with ts, level and event, whatever the values held
    local log lines objects
    for log in "$work"/logs/*.log; do
        lines=$(wc -l <"$log")
        objects=$(jq -R -c 'fromjson | select(type == "object" and (.ts | test("^[0-9-]{10}T[0-9:.]{12}Z$"))
                                     and (.level | IN("debug", "info", "warn", "error")) and (.event | length > 0))' \
            "$log" | wc -l)
        [ "$lines" -gt 2 ] && [ "$lines" = "$objects" ] || { echo "$log: $objects objects in $lines lines"; return 1; }
    done
}
check "every log line of every process is one JSON object with ts, level and event" logs_are_json

messages_named() {
    local log bad
    for log in "$work"/logs/*.log; do
        bad=$(events "$log" 'select(has("msg") and (has("adapter") | not))')
        [ -z "$bad" ] || { echo "$log: a line about a message without adapter=: $bad"; return 1; }
    done
    # The events of one referral, each with both names.
    local want log_event
    for log_event in broker:submitted broker:delivered broker:confirmed cpd-rms:queued cpd-rms:receipted \
        cpd-rms:acked sao-intake:received sao-intake:filed cpd-http:export_taken sao-files:filed; do
        want=$(events "$work/logs/${log_event%%:*}.log" \
            "select(.event == \"${log_event#*:}\" and (.msg | test(\"^[0-9a-f]{32}$\")) and (.adapter | length > 0))")
        [ -n "$want" ] || { echo "no ${log_event#*:} line with msg and adapter in ${log_event%%:*}.log"; return 1; }
    done
}
check "every line about a message names the message (msg=) and the adapter (adapter=)" messages_named

hostile_values_intact() {
    # The URL decoded by the HTTP server holds quotes, a newline and "event=": one field, still.
    events "$work/logs/cpd-http.log" 'select(.event == "http_unauthorised") | .url' |
        grep -qxF '"/v1/referrals/\"quoted\"\nevent=forged"' || { events "$work/logs/cpd-http.log" .; return 1; }
    [ -z "$(events "$work/logs/cpd-http.log" 'select(.event == "forged")')" ] &&
        events "$work/logs/cpd-rms.log" 'select(.event == "export_rejected") | .reason' | grep -q ' '
}
check "values with quotes, newlines and spaces stay inside their field" hostile_values_intact

nothing_secret() {
    ! grep -rF -e "$token" -e "R/O Alvarez" -e "R/O Haddad" -e "JH512334" "$work/logs"
}
check "no log holds the HTTP token or case content" nothing_secret

bad_log_options() {
    "$BIN/referral-broker" run --data "$var/broker" --log-format xml 2>"$work/err"
    [ $? = 2 ] && grep -q -- '--log-format must be text or json' "$work/err" || return 1
    "$BIN/referral-adapter" run --config "$etc/cpd-rms.conf" --log-level loud 2>"$work/err"
    [ $? = 2 ] && grep -q -- '--log-level must be debug, info, warn or error' "$work/err" || return 1
    "$BIN/referral-adapter" status --config "$etc/cpd-rms.conf" --log-format json 2>"$work/err"
    [ $? = 2 ]
}
check "a bad --log-format or --log-level is refused with exit status 2" bad_log_options

bad_admin_numbers() { # once read with atoi and sscanf: "abc" was a timeout of 0 ms, "2026-1-5" a date
    admin --timeout-ms abc status 2>"$work/err"
    [ $? = 2 ] && grep -q -- '--timeout-ms must be a number of milliseconds' "$work/err" || return 1
    admin --since 2026-1-5T08:00:00Z --reason test key revoke 0011223344556677 2>"$work/err"
    [ $? = 2 ] && grep -q -- '--since must be a UTC time' "$work/err"
}
check "referral-admin refuses a --timeout-ms or --since it cannot read whole, with exit status 2" bad_admin_numbers

echo "1..$n"
