#!/usr/bin/env bash
# bench/pipeline.sh -- the full pipeline benchmark (issue #8, part 2; docs/PERFORMANCE.md, "Full pipeline").
#
# On 127.0.0.1, with fresh keys in a temporary directory: a real broker, a real police adapter on a drop
# folder (rms-files) and a real intake adapter on a SQLite intake database (intake-sqlite), as
# adapters/demo.sh starts them. PIPELINE_COUNT referrals made from the valid sample referrals, each under
# its own RD number, are dropped into the folder as a records system drops them (write NAME.json.part,
# rename to NAME.json); the run ends when every ACK has been written back into DROP/acks/.
#
# Measures referrals per second filed and ACKed (first drop to the last ACK file written), p50/p99 of each
# referral's drop (the time of its rename) to its ACK file's mtime, and the CPU seconds of each process.
# Checks the end state: every referral filed once in the intake database, every ACK ACCEPTED, nothing
# refused or rejected anywhere. Last stdout line: RESULT {...}.
#
#   BIN, BUILD            the tools and the build directory (default bin, build/release)
#   PIPELINE_COUNT        referrals (default 2000)
#   PIPELINE_RATE         drops per second (default 0: all at once, as after an outage of the records link)
#   PIPELINE_TIMEOUT_S    how long to wait for the last ACK (default 300)
#   PIPELINE_STABLE_MS, PIPELINE_SCAN_MS   the rms-files settings (default: the shipped defaults)
#   PIPELINE_PERF=DIR     also `perf record --call-graph dwarf` each of the three processes while the referrals flow, into
#                         DIR/{broker,source,sink}.data (perf report -i DIR/source.data)
#   PIPELINE_FSYNCS=1     also count each process's fsync and fdatasync calls (perf stat on the syscall
#                         tracepoints), printed per referral: robust to a busy machine, unlike the rate
#   PIPELINE_KEEP=DIR     copy the logs and databases into DIR before the temporary directory goes
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
BUILD=${BUILD:-build/release}
COUNT=${PIPELINE_COUNT:-2000}
RATE=${PIPELINE_RATE:-0}
TIMEOUT_S=${PIPELINE_TIMEOUT_S:-300}
STABLE_MS=${PIPELINE_STABLE_MS:-1000}
SCAN_MS=${PIPELINE_SCAN_MS:-500}
PERF=${PIPELINE_PERF:-}
FSYNCS=${PIPELINE_FSYNCS:-}
KEEP=${PIPELINE_KEEP:-}

die() {
    echo "pipeline: $*" >&2
    exit 1
}
[[ $COUNT =~ ^[1-9][0-9]*$ ]] || die "PIPELINE_COUNT must be a positive number"
[ "$COUNT" -le 100000 ] || die "PIPELINE_COUNT is at most 100000"

need=()
command -v jq >/dev/null || need+=(jq)
command -v sqlite3 >/dev/null || need+=(sqlite3)
[ -z "$PERF$FSYNCS" ] || command -v perf >/dev/null || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The tools are built only when missing, so that BIN may hold another commit's tools to compare with.
for tool in referral-broker referral-adapter referral-admin referral-keys; do
    [ -x "$BIN/$tool" ] || make -s BUILD="$BUILD" BIN="$BIN" "$BIN/$tool" >/dev/null
done
make -s BUILD="$BUILD" BIN="$BIN" "$BUILD/bench/pipeline_drop" >/dev/null

tmp=$(mktemp -d)
pids=()
perf_pids=()
cleanup() {
    set +e
    for pid in "${perf_pids[@]}"; do kill -INT "$pid" 2>/dev/null; done
    for pid in "${perf_pids[@]}"; do wait "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP" && cp -r "$tmp"/logs "$tmp"/police-data "$tmp"/intake-data "$tmp"/intake.db* "$KEEP"/ 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp"/{keys,trust-police,trust-intake,logs,staging}

# The referrals: the valid sample referrals (not the supplement and withdrawal, which follow one of them)
# in turn, each copy under its own RD number, so each is a referral of its own.
printf 'preparing %d referrals from adapters/samples/valid\n' "$COUNT"
jq -c -n --argjson n "$COUNT" '[inputs | select(.references == null)] as $s
    | range(0; $n) as $i | $s[$i % ($s | length)] | .rdNumber = "PB" + ((1000000 + $i) | tostring | .[1:])' \
    adapters/samples/valid/0[1-6]-*.json |
    awk -v d="$tmp/staging" '{ f = sprintf("%s/export-%06d.json", d, NR); print > f; close(f) }'
[ "$(ls "$tmp/staging" | wc -l)" -eq "$COUNT" ] || die "could not prepare $COUNT referrals"

"$BIN/referral-keys" generate --name ops-admin --role admin --agency ILCPD0000 --out "$tmp/keys/ops-admin" --no-passphrase >/dev/null
"$BIN/referral-keys" generate --name cpd-rms --role source --agency ILCPD0000 --out "$tmp/keys/cpd-rms" --no-passphrase >/dev/null
"$BIN/referral-keys" generate --name sao-intake --role sink --agency ILCCSAO00 --out "$tmp/keys/sao-intake" --no-passphrase >/dev/null
cp "$tmp/keys/sao-intake.card" "$tmp/trust-police/"
cp "$tmp/keys/cpd-rms.card" "$tmp/trust-intake/"

# Waits up to $2 tenths of a second for the command $1 to succeed.
wait_for() {
    for _ in $(seq "$2"); do eval "$1" && return 0; sleep 0.1; done
    return 1
}

"$BIN/referral-broker" init --data "$tmp/broker" --name broker-1 --admin-card "$tmp/keys/ops-admin.card" >/dev/null
"$BIN/referral-broker" run --data "$tmp/broker" --listen 'tcp://127.0.0.1:*' --metrics 127.0.0.1:0 2>"$tmp/logs/broker.log" &
broker_pid=$!
pids+=("$broker_pid")
wait_for "grep -q 'event=broker_started' '$tmp/logs/broker.log'" 100 || die "the broker did not start: $(tail -n 3 "$tmp/logs/broker.log")"
endpoint=$(grep -o 'listen=tcp://[0-9.:]*' "$tmp/logs/broker.log" | head -n 1 | cut -d= -f2)
admin=("$BIN/referral-admin" --broker "$endpoint" --broker-card "$tmp/broker/broker.card" --as "$tmp/keys/ops-admin.secret")
"${admin[@]}" adapter add --card "$tmp/keys/cpd-rms.card" >/dev/null
"${admin[@]}" adapter add --card "$tmp/keys/sao-intake.card" >/dev/null

cat >"$tmp/police.ini" <<EOF
[adapter]
connector = rms-files
secret = $tmp/keys/cpd-rms.secret
broker = $endpoint
broker_card = $tmp/broker/broker.card
trust = $tmp/trust-police
recipient = sao-intake
data = $tmp/police-data
[rms-files]
drop = $tmp/drop
stable_ms = $STABLE_MS
scan_ms = $SCAN_MS
EOF
cat >"$tmp/intake.ini" <<EOF
[adapter]
connector = intake-sqlite
secret = $tmp/keys/sao-intake.secret
broker = $endpoint
broker_card = $tmp/broker/broker.card
trust = $tmp/trust-intake
data = $tmp/intake-data
[intake-sqlite]
database = $tmp/intake.db
prefix = SAO
EOF
"$BIN/referral-adapter" --config "$tmp/police.ini" 2>"$tmp/logs/police.log" &
source_pid=$!
pids+=("$source_pid")
"$BIN/referral-adapter" --config "$tmp/intake.ini" 2>"$tmp/logs/intake.log" &
sink_pid=$!
pids+=("$sink_pid")
wait_for "grep -q 'event=connected' '$tmp/logs/police.log' && grep -q 'event=connected' '$tmp/logs/intake.log'" 100 ||
    die "the adapters did not connect: $(tail -n 2 "$tmp/logs/police.log" "$tmp/logs/intake.log")"

if [ -n "$PERF" ]; then
    mkdir -p "$PERF"
    for p in broker:$broker_pid source:$source_pid sink:$sink_pid; do
        perf record --call-graph dwarf,16384 -F 499 -q -o "$PERF/${p%%:*}.data" -p "${p#*:}" 2>/dev/null &
        perf_pids+=($!)
    done
    sleep 0.5
fi

if [ -n "$FSYNCS" ]; then
    for p in broker:$broker_pid source:$source_pid sink:$sink_pid; do
        perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -o "$tmp/${p%%:*}.fsyncs" \
            -p "${p#*:}" 2>/dev/null &
        perf_pids+=($!)
    done
    sleep 0.5
fi

# CPU seconds (user + system) a process has used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}
cpu0=("$(cpu_s "$broker_pid")" "$(cpu_s "$source_pid")" "$(cpu_s "$sink_pid")")

printf 'dropping %d referrals into the watched folder (%s)\n' "$COUNT" "$([ "$RATE" = 0 ] && echo "all at once" || echo "$RATE/s")"
"$BUILD/bench/pipeline_drop" "$tmp/staging" "$tmp/drop" "$tmp/dropped.txt" "$RATE"
deadline=$((SECONDS + TIMEOUT_S))
acks=0
polls=0
while :; do
    acks=$(find "$tmp/drop/acks" -name '*.json' | wc -l)
    [ "$acks" -ge "$COUNT" ] && break
    if [ $SECONDS -ge $deadline ]; then
        die "only $acks of $COUNT ACKs after ${TIMEOUT_S}s (PIPELINE_KEEP=DIR keeps the logs)"
    fi
    [ $((++polls % 25)) -ne 0 ] || printf '  %d/%d ACKs\n' "$acks" "$COUNT"
    sleep 0.2
done
printf '  %d/%d ACKs\n' "$acks" "$COUNT"

for pid in "${perf_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
for pid in "${perf_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
perf_pids=()
cpu1=("$(cpu_s "$broker_pid")" "$(cpu_s "$source_pid")" "$(cpu_s "$sink_pid")")
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()

# The end state: every referral filed once, every ACK an acceptance, nothing refused or rejected.
q() { sqlite3 "$1" "$2"; }
filed=$(q "$tmp/intake.db" "SELECT count(*) FROM filings")
cases=$(q "$tmp/intake.db" "SELECT count(DISTINCT rd_number) FROM cases WHERE rd_number LIKE 'PB%'")
accepted=$(q "$tmp/police-data/adapter.db" "SELECT count(*) FROM outbox WHERE kind != 4 AND ack_status = 1")
refused=$(q "$tmp/police-data/adapter.db" "SELECT count(*) FROM outbox WHERE refused IS NOT NULL")
refused_in=$(q "$tmp/intake-data/adapter.db" "SELECT count(*) FROM inbox WHERE state != 'filed'")
rejected=$(find "$tmp/drop/rejected" -type f | wc -l)
left=$(find "$tmp/drop" -maxdepth 1 -name '*.json*' | wc -l)
printf 'end state: %s filed (%s cases), %s ACKs accepted, %s refused at the source, %s inbox rows not filed, %s rejected, %s left in the folder\n' \
    "$filed" "$cases" "$accepted" "$refused" "$refused_in" "$rejected" "$left"
[ "$filed" -eq "$COUNT" ] && [ "$cases" -eq "$COUNT" ] && [ "$accepted" -eq "$COUNT" ] && [ "$refused" -eq 0 ] &&
    [ "$refused_in" -eq 0 ] && [ "$rejected" -eq 0 ] && [ "$left" -eq 0 ] || die "the end state is wrong (PIPELINE_KEEP=DIR keeps the logs)"

# Each referral: its file's drop time, its message id (the outbox row names the file), its ACK file's mtime.
q "$tmp/police-data/adapter.db" "SELECT source, lower(hex(message_id)) FROM outbox WHERE kind != 4" | tr '|' ' ' >"$tmp/ids.txt"
find "$tmp/drop/acks" -name '*.json' -printf '%f %T@\n' >"$tmp/acked.txt"
awk 'FILENAME == ARGV[1] { drop[$1] = $2; next }
     FILENAME == ARGV[2] { id[$2] = $1; next }
     { m = $1; sub(/\.json$/, "", m); printf "%.3f %.3f %.3f\n", drop[id[m]] / 1e6, $2 * 1000, $2 * 1000 - drop[id[m]] / 1e6 }' \
    "$tmp/dropped.txt" "$tmp/ids.txt" "$tmp/acked.txt" >"$tmp/latency.txt"
[ "$(wc -l <"$tmp/latency.txt")" -eq "$COUNT" ] || die "could not match every ACK to its file"
read -r first_drop last_ack < <(awk 'NR == 1 || $1 < f { f = $1 } NR == 1 || $2 > l { l = $2 } END { printf "%.3f %.3f\n", f, l }' "$tmp/latency.txt")
per_s=$(awk -v n="$COUNT" -v f="$first_drop" -v l="$last_ack" 'BEGIN { printf "%.1f", n / ((l - f) / 1000) }')
# Nearest rank: the smallest latency at least p of all are at or below.
pct() { cut -d' ' -f3 "$tmp/latency.txt" | sort -g | awk -v p="$1" -v n="$COUNT" '{ a[NR] = $1 } END { r = int(p * n + 0.999999); if (r < 1) r = 1; printf "%.1f", a[r] }'; }
p50=$(pct 0.50)
p99=$(pct 0.99)
drop_s=$(awk '{ if (NR == 1 || $2 < f) f = $2; if ($2 > l) l = $2 } END { printf "%.2f", (l - f) / 1e9 }' "$tmp/dropped.txt")
cpu() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
cpu_broker=$(cpu "${cpu0[0]}" "${cpu1[0]}")
cpu_source=$(cpu "${cpu0[1]}" "${cpu1[1]}")
cpu_sink=$(cpu "${cpu0[2]}" "${cpu1[2]}")
wall_s=$(awk -v f="$first_drop" -v l="$last_ack" 'BEGIN { printf "%.2f", (l - f) / 1000 }')

printf '\n%-44s %s\n' "referrals" "$COUNT (dropped in ${drop_s} s)"
printf '%-44s %s\n' "first drop to last ACK written" "$wall_s s"
printf '%-44s %s\n' "referrals filed and ACKed per second" "$per_s"
printf '%-44s %s / %s ms\n' "drop -> ACK file written, p50 / p99" "$p50" "$p99"
printf '%-44s %s / %s / %s s\n' "CPU seconds: broker / source / sink" "$cpu_broker" "$cpu_source" "$cpu_sink"
printf '%-44s %s (%s cores)\n' "load average (1 min) at the end" "$(cut -d' ' -f1 /proc/loadavg)" "$(nproc)"
[ -z "$PERF" ] || printf '%-44s %s\n' "profiles" "$PERF/{broker,source,sink}.data"
if [ -n "$FSYNCS" ]; then
    syncs() { awk -F, -v n="$COUNT" '$3 ~ /fsync|fdatasync/ { s += $1 } END { printf "%.2f", s / n }' "$tmp/$1.fsyncs"; }
    printf '%-44s %s / %s / %s\n' "fsync+fdatasync per referral: broker / source / sink" "$(syncs broker)" "$(syncs source)" "$(syncs sink)"
fi
printf 'RESULT {"pipeline_per_s": %s, "pipeline_p50_ms": %s, "pipeline_p99_ms": %s, "pipeline_count": %s, "pipeline_cpu_s_broker": %s, "pipeline_cpu_s_source": %s, "pipeline_cpu_s_sink": %s}\n' \
    "$per_s" "$p50" "$p99" "$COUNT" "$cpu_broker" "$cpu_source" "$cpu_sink"
