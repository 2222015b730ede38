#!/usr/bin/env bash
# bench/ledger.sh -- part 5 of the benchmark (issue #8): referral-audit verify of a ledger export of
# LEDGER_EVENTS leaves (default 1,000,000), without and with signature checks.
#
# A broker data directory is made with the real tools (referral-keys, referral-broker init) and filled by
# bench/ledger_gen.c through the broker's own store, admin and ledger code; referral-audit export writes
# the auditor's export (SQLite, its default), then verify is timed. LEDGER_JSONL=1 also times the
# JSON-lines form of the same ledger. Env: BIN (tools), BUILD (build dir), LEDGER_EVENTS,
# LEDGER_CHECKPOINT_EVENTS (the broker's checkpoint_events, default 1000), LEDGER_JSONL.
set -euo pipefail

BIN=${BIN:-bin}
BUILD=${BUILD:-build/release}
EVENTS=${LEDGER_EVENTS:-1000000}
CP_EVENTS=${LEDGER_CHECKPOINT_EVENTS:-1000}
JSONL=${LEDGER_JSONL:-0}

die() {
    echo "ledger.sh: $*" >&2
    exit 1
}
[[ $EVENTS =~ ^[0-9]+$ && $EVENTS -ge 100 ]] || die "LEDGER_EVENTS must be a number >= 100"

make --no-print-directory -s BUILD="$BUILD" BIN="$BIN" "$BUILD/bench/ledger_gen" "$BIN/referral-audit" \
    "$BIN/referral-broker" "$BIN/referral-keys" >&2 || die "build failed"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

echo "ledger: $EVENTS events, a checkpoint every $CP_EVENTS, $(nproc) cores"
"$BIN/referral-keys" generate --name ops-admin --role admin --agency ILCPD0000 --out "$tmp/ops-admin" --no-passphrase \
    >/dev/null || die "referral-keys generate failed"
"$BIN/referral-broker" init --data "$tmp/data" --name broker-1 --admin-card "$tmp/ops-admin.card" \
    >/dev/null || die "referral-broker init failed"

t=$(now)
"$BUILD/bench/ledger_gen" --data "$tmp/data" --admin "$tmp/ops-admin.secret" --events "$EVENTS" \
    --checkpoint-events "$CP_EVENTS" || die "ledger_gen failed"
gen_s=$(since "$t")

t=$(now)
"$BIN/referral-audit" export --data "$tmp/data" --out "$tmp/ledger.sqlite" >/dev/null || die "export failed"
export_s=$(since "$t")
bytes=$(stat -c %s "$tmp/ledger.sqlite")

# One timed verify (elapsed, and cpu: user + system, which a machine shared with other work inflates
# less): its output must say every leaf was verified.
verify() {
    local file=$1 out TIMEFORMAT='%R %U %S'
    shift
    if ! { time "$BIN/referral-audit" verify --ledger "$file" --broker-card "$tmp/data/broker.card" "$@" \
        >"$tmp/out" 2>"$tmp/err"; } 2>"$tmp/time"; then
        die "verify $* of $file failed: $(cat "$tmp/out" "$tmp/err")"
    fi
    out=$(cat "$tmp/out")
    read -r elapsed user sys <"$tmp/time"
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    [[ $out == "verified: $EVENTS leaves,"* ]] || die "verify $* of $file: unexpected output: $out"
    echo "  $out" >&2
}

verify "$tmp/ledger.sqlite" --no-signatures
nosig_s=$elapsed nosig_cpu=$cpu
verify "$tmp/ledger.sqlite"
sig_s=$elapsed sig_cpu=$cpu

jsonl_nosig=null jsonl_sig=null jsonl_bytes=null
if [[ $JSONL == 1 ]]; then
    # The same leaves and checkpoints: the ledger_read leaf of this second export comes after them.
    "$BIN/referral-audit" export --data "$tmp/data" --out "$tmp/ledger.jsonl" --format jsonl >/dev/null ||
        die "jsonl export failed"
    jsonl_bytes=$(stat -c %s "$tmp/ledger.jsonl")
    EVENTS=$((EVENTS + 1))
    verify "$tmp/ledger.jsonl" --no-signatures
    jsonl_nosig=$elapsed jsonl_nosig_cpu=$cpu
    verify "$tmp/ledger.jsonl"
    jsonl_sig=$elapsed jsonl_sig_cpu=$cpu
    EVENTS=$((EVENTS - 1))
fi

printf '%-44s %12s %12s\n' "step ($EVENTS events)" "seconds" "cpu seconds"
printf '%-44s %12s\n' "generate (ledger_gen)" "$gen_s"
printf '%-44s %12s\n' "referral-audit export (sqlite, $((bytes / 1048576)) MiB)" "$export_s"
printf '%-44s %12s %12s\n' "verify --no-signatures (sqlite)" "$nosig_s" "$nosig_cpu"
printf '%-44s %12s %12s\n' "verify (sqlite)" "$sig_s" "$sig_cpu"
if [[ $JSONL == 1 ]]; then
    printf '%-44s %12s %12s\n' "verify --no-signatures (jsonl, $((jsonl_bytes / 1048576)) MiB)" "$jsonl_nosig" \
        "$jsonl_nosig_cpu"
    printf '%-44s %12s %12s\n' "verify (jsonl)" "$jsonl_sig" "$jsonl_sig_cpu"
fi
echo "RESULT {\"ledger_verify_1m_s\": $nosig_s, \"ledger_verify_1m_sigs_s\": $sig_s, \"ledger_events\": $EVENTS," \
    "\"ledger_export_bytes\": $bytes, \"ledger_generate_s\": $gen_s, \"ledger_export_s\": $export_s," \
    "\"ledger_verify_1m_cpu_s\": $nosig_cpu, \"ledger_verify_1m_sigs_cpu_s\": $sig_cpu," \
    "\"ledger_verify_jsonl_s\": $jsonl_nosig, \"ledger_verify_jsonl_sigs_s\": $jsonl_sig}" | tr -s ' '
