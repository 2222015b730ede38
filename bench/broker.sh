#!/usr/bin/env bash
# bench/broker.sh -- parts 1, 3 and 4 of `make bench` (docs/PERFORMANCE.md): the broker path, latency at a
# fixed rate, and the backlog, each against a fresh real broker on 127.0.0.1 driven by bench/loadgen.
#
#   BROKER_COUNT (20000)       referrals in the closed-loop run
#   BROKER_CONNECTIONS (16)    source connections (and as many sink connections submitting ACKs)
#   RATE (1000), RATE_SECONDS (20)  the fixed-rate run
#   BACKLOG (1000000)          referrals queued with the sink offline, then drained
#   BENCH_PARTS ("path rate backlog")  which parts to run
#   BROKER_WRAP                a command the broker runs under, to profile it: "perf record -g -o FILE" or
#                              "valgrind --tool=callgrind --callgrind-out-file=FILE" (instructions, repeatable)
# Last line: RESULT {json}.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
BUILD=${BUILD:-build/release}
count=${BROKER_COUNT:-20000}
connections=${BROKER_CONNECTIONS:-16}
rate=${RATE:-1000}
rate_seconds=${RATE_SECONDS:-20}
backlog=${BACKLOG:-1000000}
parts=${BENCH_PARTS:-path rate backlog}
loadgen=$BUILD/bench/loadgen
make --no-print-directory -s BUILD="$BUILD" BIN="$BIN" all "$loadgen"

work=$(mktemp -d /tmp/rb-bench-XXXXXX)
broker_pid=
stop_broker() {
    if [ -n "$broker_pid" ]; then
        kill "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
        broker_pid=
    fi
}
trap 'stop_broker; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

for who in ops-admin:admin cpd-rms:source sao-intake:sink; do
    "$BIN/referral-keys" generate --name "${who%%:*}" --role "${who##*:}" \
        --agency "$([ "${who##*:}" = sink ] && echo ILCCSAO00 || echo ILCPD0000)" \
        --out "$work/${who%%:*}" --no-passphrase >/dev/null
done
# As deployed, with more credit per receiver than the default 16: a well-tuned RabbitMQ consumer gets a
# prefetch to match. The load generator opens BROKER_CONNECTIONS connections (and a sink's two more) under
# each of its two keys, more than the default sessions_per_key an adapter needs.
cat >"$work/broker.conf" <<EOF
[broker]
credit = 256
sessions_per_key = $((connections + 2 > 64 ? 64 : connections + 2))
EOF

# A fresh broker in $work/NAME; sets broker_pid and endpoint.
start_broker() {
    local data=$work/$1
    rm -rf "$data"
    "$BIN/referral-broker" init --data "$data" --name broker-1 --admin-card "$work/ops-admin.card" >/dev/null
    ${BROKER_WRAP:-} "$BIN/referral-broker" run --data "$data" --config "$work/broker.conf" --listen 'tcp://127.0.0.1:*' \
        --metrics 127.0.0.1:0 2>"$work/$1.log" &
    broker_pid=$!
    for _ in $(seq 1200); do grep -q 'event=broker_started' "$work/$1.log" && break; sleep 0.05; done
    endpoint=$(grep -o 'listen=tcp://[0-9.:]*' "$work/$1.log" | head -n 1 | cut -d= -f2)
    [ -n "$endpoint" ] || { echo "broker did not start: $(tail -n 5 "$work/$1.log")" >&2; exit 1; }
    for card in cpd-rms sao-intake; do
        "$BIN/referral-admin" --broker "$endpoint" --broker-card "$data/broker.card" \
            --as "$work/ops-admin.secret" adapter add --card "$work/$card.card" >/dev/null
    done
    broker_card=$data/broker.card
}

# Runs loadgen MODE ARGS...; prints its result object.
load() {
    local mode=$1
    shift
    "$loadgen" --mode "$mode" --broker "$endpoint" --broker-card "$broker_card" --source "$work/cpd-rms.secret" \
        --sink "$work/sao-intake.secret" --broker-pid "$broker_pid" "$@" >"$work/load.out" 2>"$work/load.err" ||
        { echo "loadgen $mode failed: $(tail -n 5 "$work/load.err")" >&2; exit 1; }
    sed -n 's/^RESULT //p' "$work/load.out"
}

path=null latency=null fill=null drain=null
if [[ " $parts " == *" path "* ]]; then
    echo "broker path: $count referrals of 4 KiB, closed loop (ACK back at the source), $connections connections"
    start_broker path
    path=$(load closed --count "$count" --connections "$connections")
    stop_broker
    echo "  $(jq -r '"\(.closed_per_s) referrals/s closed; submit->receipt p50 \(.p50_receipt_ms) ms, p99 \(.p99_receipt_ms) ms, p99.9 \(.p999_receipt_ms) ms; broker CPU \(.broker_cpu_s_per_1000) s per 1,000"' <<<"$path")"
fi
if [[ " $parts " == *" rate "* ]]; then
    echo "latency at a fixed rate: $rate referrals/s offered for $rate_seconds s"
    start_broker rate
    latency=$(load rate --rate "$rate" --seconds "$rate_seconds" --connections "$connections")
    stop_broker
    echo "  $(jq -r '"submit->receipt p50 \(.p50_receipt_ms) ms, p99 \(.p99_receipt_ms) ms, p99.9 \(.p999_receipt_ms) ms, max \(.max_receipt_ms) ms"' <<<"$latency")"
fi
if [[ " $parts " == *" backlog "* ]]; then
    echo "backlog: $backlog referrals queued with the sink offline, then drained"
    start_broker backlog
    fill=$(load fill --count "$backlog" --connections "$connections")
    echo "  $(jq -r '"queued at \(.fill_per_s)/s; broker RSS \(.rss_mb_before) MB before, \(.rss_mb_after) MB after (peak \(.rss_mb_peak) MB)"' <<<"$fill")"
    echo "  broker database: $(du -m "$work/backlog/broker.db" | cut -f1) MB"
    drain=$(load drain --count "$backlog")
    echo "  $(jq -r '"drained at \(.drain_per_s)/s; broker RSS \(.rss_mb_after) MB (peak \(.rss_mb_peak) MB)"' <<<"$drain")"
    stop_broker
fi
echo "RESULT $(jq -cn --argjson path "$path" --argjson rate "$latency" --argjson fill "$fill" --argjson drain "$drain" \
    '{broker_path_per_s: $path.closed_per_s, broker_path_p50_receipt_ms: $path.p50_receipt_ms,
      broker_path_p99_receipt_ms: $path.p99_receipt_ms, broker_path_p999_receipt_ms: $path.p999_receipt_ms,
      broker_cpu_s_per_1000: $path.broker_cpu_s_per_1000, clients_cpu_s_per_1000: $path.clients_cpu_s_per_1000,
      broker_path_count: $path.count,
      broker_path_connections: $path.connections,
      p50_receipt_ms_at_1000: $rate.p50_receipt_ms, p99_receipt_ms_at_1000: $rate.p99_receipt_ms,
      p999_receipt_ms_at_1000: $rate.p999_receipt_ms, rate_offered_per_s: $rate.offered_per_s,
      backlog_count: $fill.count, backlog_fill_per_s: $fill.fill_per_s, rss_mb_before_backlog: $fill.rss_mb_before,
      rss_mb_1m_queued: $fill.rss_mb_after, rss_mb_peak_backlog: ([$fill.rss_mb_peak, $drain.rss_mb_peak] | max),
      drain_per_s: $drain.drain_per_s}')"
