#!/usr/bin/env bash
# bench/run.sh -- `make bench`: every part of the benchmark in one run on this machine, a table of the
# figures, and bench/results/latest.json (docs/PERFORMANCE.md says what each figure is and how it is made).
#
#   RABBITMQ=1     also runs the RabbitMQ reference (bench/rabbitmq.sh installs and starts its own server)
#   BENCH_QUICK=1  smaller counts everywhere: a check that every part runs, not figures to keep
# Each part's own knobs are in its script. Parts: limit (bench/limit.c), broker path, fixed rate and backlog
# (bench/broker.sh), full pipeline (bench/pipeline.sh), ledger verify (bench/ledger.sh), RabbitMQ.
set -euo pipefail
cd "$(dirname "$0")/.."
export BIN=${BIN:-bin} BUILD=${BUILD:-build/release}
if [ -n "${BENCH_QUICK:-}" ]; then
    export BROKER_COUNT=${BROKER_COUNT:-2000} RATE_SECONDS=${RATE_SECONDS:-5} BACKLOG=${BACKLOG:-20000}
    export PIPELINE_COUNT=${PIPELINE_COUNT:-200} LEDGER_EVENTS=${LEDGER_EVENTS:-50000}
    export RABBITMQ_COUNT=${RABBITMQ_COUNT:-2000}
fi
# RabbitMQ gets the same number of connections a side as the broker path.
export RABBITMQ_CONNECTIONS=${RABBITMQ_CONNECTIONS:-${BROKER_CONNECTIONS:-16}}
out=bench/results/latest.json
mkdir -p bench/results
logs=$(mktemp -d /tmp/rb-bench-logs-XXXXXX)
trap 'rm -rf "$logs"' EXIT
make --no-print-directory -s BUILD="$BUILD" BIN="$BIN" all "$BUILD/bench/limit" "$BUILD/bench/loadgen"

# Runs a part, showing its lines as they come; its RESULT object is left in $logs/NAME.json.
part() {
    local name=$1
    shift
    echo
    echo "== $name"
    "$@" 2>&1 | tee "$logs/$name.log" | grep -v '^RESULT '
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "bench: $name failed (exit $rc)" >&2; exit 1; }
    sed -n 's/^RESULT //p' "$logs/$name.log" | tail -n 1 >"$logs/$name.json"
    [ -s "$logs/$name.json" ] || { echo "bench: $name printed no RESULT" >&2; exit 1; }
}

started=$(date +%s)
part limit "$BUILD/bench/limit" --dir "${TMPDIR:-/tmp}" --cores "$(nproc)"
part broker bench/broker.sh
part pipeline bench/pipeline.sh
part ledger bench/ledger.sh
echo null >"$logs/rabbitmq.json"
if [ -n "${RABBITMQ:-}" ]; then
    part rabbitmq bench/rabbitmq.sh
fi

jq -n --slurpfile limit "$logs/limit.json" --slurpfile broker "$logs/broker.json" \
    --slurpfile pipeline "$logs/pipeline.json" --slurpfile ledger "$logs/ledger.json" \
    --slurpfile rabbitmq "$logs/rabbitmq.json" \
    --arg commit "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --arg dirty "$(git status --porcelain --untracked-files=no 2>/dev/null | head -c 1)" \
    --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
    --argjson cores "$(nproc)" --argjson seconds "$(($(date +%s) - started))" \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg quick "${BENCH_QUICK:-}" '
    ($limit[0]) as $l | ($broker[0]) as $b | ($pipeline[0]) as $p | ($ledger[0]) as $g | ($rabbitmq[0]) as $r |
    {
      git_commit: $commit, git_dirty: ($dirty != ""), date: $date, cores: $cores, cpu: $cpu,
      quick: ($quick != ""), seconds: $seconds,
      broker_path_per_s: $b.broker_path_per_s,
      broker_path_limit_per_s: $l.broker_path_limit_per_s,
      broker_path_fraction_of_limit: (if $b.broker_path_per_s then $b.broker_path_per_s / $l.broker_path_limit_per_s else null end),
      rabbitmq_per_s: (if $r then $r.rabbitmq_per_s else null end),
      broker_path_ratio_to_rabbitmq: (if $r and $r.rabbitmq_per_s then $b.broker_path_per_s / $r.rabbitmq_per_s else null end),
      pipeline_per_s: $p.pipeline_per_s,
      pipeline_limit_per_s: $l.pipeline_limit_per_s,
      pipeline_fraction_of_limit: (if $p.pipeline_per_s then $p.pipeline_per_s / $l.pipeline_limit_per_s else null end),
      p99_receipt_ms_at_1000: $b.p99_receipt_ms_at_1000,
      p999_receipt_ms_at_1000: $b.p999_receipt_ms_at_1000,
      rss_mb_1m_queued: $b.rss_mb_1m_queued,
      drain_per_s: $b.drain_per_s,
      ledger_verify_1m_s: $g.ledger_verify_1m_s,
      ledger_verify_1m_sigs_s: $g.ledger_verify_1m_sigs_s,
      parts: {limit: $l, broker: $b, pipeline: $p, ledger: $g, rabbitmq: $r}
    }' >"$out"

echo
echo "== summary ($(jq -r '"\(.cores) cores, commit \(.git_commit[0:12])\(if .git_dirty then "+changes" else "" end), \(.seconds) s"' "$out"))"
jq -r '
  def f(x): if x == null then "not run" elif (x | type) == "number" then (x * 100 | round / 100 | tostring) else x end;
  def pct(x): if x == null then "" else " (\(x * 100 | round)% of it)" end;
  "broker path             \(f(.broker_path_per_s)) referrals/s closed; limit \(f(.broker_path_limit_per_s))/s\(pct(.broker_path_fraction_of_limit))",
  "  submit->receipt       p50 \(f(.parts.broker.broker_path_p50_receipt_ms)) ms, p99 \(f(.parts.broker.broker_path_p99_receipt_ms)) ms, p99.9 \(f(.parts.broker.broker_path_p999_receipt_ms)) ms; broker CPU \(f(.parts.broker.broker_cpu_s_per_1000)) s per 1,000",
  "RabbitMQ, same load     \(f(.rabbitmq_per_s))/s\(if .broker_path_ratio_to_rabbitmq then "; broker path = \(f(.broker_path_ratio_to_rabbitmq)) x RabbitMQ" else "" end)",
  "full pipeline           \(f(.pipeline_per_s)) referrals/s filed and ACKed; limit \(f(.pipeline_limit_per_s))/s\(pct(.pipeline_fraction_of_limit)); file->ACK p50 \(f(.parts.pipeline.pipeline_p50_ms)) ms, p99 \(f(.parts.pipeline.pipeline_p99_ms)) ms",
  "at 1,000/s offered      submit->receipt p50 \(f(.parts.broker.p50_receipt_ms_at_1000)) ms, p99 \(f(.p99_receipt_ms_at_1000)) ms, p99.9 \(f(.p999_receipt_ms_at_1000)) ms",
  "backlog of \(f(.parts.broker.backlog_count))   broker RSS \(f(.parts.broker.rss_mb_before_backlog)) MB before, \(f(.rss_mb_1m_queued)) MB queued; drain \(f(.drain_per_s))/s",
  "ledger verify           \(f(.ledger_verify_1m_s)) s without signatures, \(f(.ledger_verify_1m_sigs_s)) s with (\(f(.parts.ledger.ledger_events)) events)"
' "$out"
echo "written: $out"
