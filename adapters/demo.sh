#!/usr/bin/env bash
# adapters/demo.sh -- the end-to-end demonstration behind `make demo`.
#
# On loopback: creates identities for an operator, a police records adapter and the State's Attorney's
# intake adapter; starts a broker and registers both adapters with signed admin commands; starts the police
# adapter on a drop folder (rms-files) and the intake adapter on a SQLite intake database (intake-sqlite);
# drops every sample referral, valid and invalid, into the folder; waits for every ACK; prints what became
# of each file; shows rows of the intake database and the broker's status; exports the audit ledger, verifies
# and replays it and proves a referral's events from it; stops everything it started; and publishes the
# de-identified public data (build/demo/publish/index.html).
# Everything it made stays in build/demo/ (configs, keys, databases, folders, logs) to look at afterwards;
# each run starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
demo=build/demo
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -rf "$demo"
mkdir -p "$demo"/{keys,trust-police,trust-intake,logs}
step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

step "identities: an operator, the police records adapter (source), the intake adapter (sink)"
"$BIN/referral-keys" generate --name ops-admin --role admin --agency ILCPD0000 --out "$demo/keys/ops-admin" --no-passphrase | head -n 2
"$BIN/referral-keys" generate --name cpd-rms --role source --agency ILCPD0000 --out "$demo/keys/cpd-rms" --no-passphrase | head -n 2
"$BIN/referral-keys" generate --name sao-intake --role sink --agency ILCCSAO00 --out "$demo/keys/sao-intake" --no-passphrase | head -n 2
cp "$demo/keys/sao-intake.card" "$demo/trust-police/"
cp "$demo/keys/cpd-rms.card" "$demo/trust-intake/"

step "the broker, on a free loopback port"
"$BIN/referral-broker" init --data "$demo/broker" --name broker-1 --admin-card "$demo/keys/ops-admin.card"
"$BIN/referral-broker" run --data "$demo/broker" --listen 'tcp://127.0.0.1:*' --metrics 127.0.0.1:0 2>"$demo/logs/broker.log" &
pids+=($!)
for _ in $(seq 100); do grep -q 'event=broker_started' "$demo/logs/broker.log" && break; sleep 0.1; done
endpoint=$(grep -o 'listen=tcp://[0-9.:]*' "$demo/logs/broker.log" | head -n 1 | cut -d= -f2)
echo "broker listening on $endpoint"
admin=("$BIN/referral-admin" --broker "$endpoint" --broker-card "$demo/broker/broker.card" --as "$demo/keys/ops-admin.secret")
"${admin[@]}" adapter add --card "$demo/keys/cpd-rms.card"
"${admin[@]}" adapter add --card "$demo/keys/sao-intake.card"

step "the adapters: police on a drop folder, intake on a SQLite database"
cat >"$demo/police.ini" <<EOF
[adapter]
connector = rms-files
secret = $demo/keys/cpd-rms.secret
broker = $endpoint
broker_card = $demo/broker/broker.card
trust = $demo/trust-police
recipient = sao-intake
data = $demo/police-data
[rms-files]
drop = $demo/drop
stable_ms = 300
scan_ms = 100
; referral-publish (docs/PUBLISHING.md). The demo has six cases, so a threshold of 2 lets a few rows show;
; a real publication keeps the default of 5.
[publish]
threshold = 2
areas = 004=Area 2; 008=Area 1; 009=Area 1; 010=Area 4; 017=Area 1; 025=Area 5
EOF
cat >"$demo/intake.ini" <<EOF
[adapter]
connector = intake-sqlite
secret = $demo/keys/sao-intake.secret
broker = $endpoint
broker_card = $demo/broker/broker.card
trust = $demo/trust-intake
data = $demo/intake-data
[intake-sqlite]
database = $demo/intake.db
prefix = SAO
EOF
"$BIN/referral-adapter" --config "$demo/police.ini" 2>"$demo/logs/police.log" &
pids+=($!)
"$BIN/referral-adapter" --config "$demo/intake.ini" 2>"$demo/logs/intake.log" &
pids+=($!)
for _ in $(seq 100); do [ -d "$demo/drop/acks" ] && [ -f "$demo/intake.db" ] && break; sleep 0.1; done

step "the records system drops every sample export, valid and invalid, into $demo/drop"
valid=$(ls adapters/samples/valid/*.json | wc -l)
for f in adapters/samples/valid/*.json adapters/samples/invalid/*.json; do
    cp "$f" "$demo/drop/$(basename "$f").part" && mv "$demo/drop/$(basename "$f").part" "$demo/drop/$(basename "$f")"
done
printf 'waiting for %d ACKs' "$valid"
for _ in $(seq 600); do
    [ "$(ls "$demo/drop/acks" | wc -l)" -ge "$valid" ] && break
    printf '.'
    sleep 0.1
done
echo
for _ in $(seq 100); do # and every invalid export moved aside
    compgen -G "$demo/drop/*.json" >/dev/null || break
    sleep 0.1
done
if [ "$(ls "$demo/drop/acks" | wc -l)" -lt "$valid" ]; then
    echo "not every referral was acknowledged: see $demo/logs" >&2
    exit 1
fi

step "what became of each export"
printf '%-44s %-34s %-10s %s\n' FILE "MESSAGE ID" STATE "INTAKE NUMBER / REASON (SECONDS TO ACK)"
sqlite3 -separator ' ' "$demo/police-data/adapter.db" \
    "SELECT source, lower(hex(message_id)), CASE ack_status WHEN 1 THEN 'ACCEPTED' WHEN 2 THEN 'REJECTED' ELSE 'waiting' END,
            coalesce(intake_reference, '-'), printf('(%.2f s)', (acked_ms - queued_ms) / 1000.0)
     FROM outbox WHERE kind != 4 ORDER BY source" |
    while read -r file id state number secs; do printf '%-44s %-34s %-10s %s %s\n' "$file" "$id" "$state" "$number" "$secs"; done
for f in "$demo"/drop/rejected/*.errors.txt; do
    name=$(basename "$f" .errors.txt)
    printf '%-44s %-34s %-10s %s\n' "$name" "-" "REFUSED" "$(head -n 1 "$f" | cut -c1-90)"
done

step "rows of the intake database ($demo/intake.db)"
sqlite3 -header -column "$demo/intake.db" \
    "SELECT intake_number, rd_number, revision, status, substr(address, 1, 28) AS address FROM cases ORDER BY intake_number;"
echo
sqlite3 -header -column "$demo/intake.db" \
    "SELECT intake_number, agent_ref, agency, is_supervisor, credential_result FROM federal_agents
     WHERE is_supervisor = 1 ORDER BY intake_number LIMIT 6;"

step "broker and adapter status"
"${admin[@]}" status || [ $? -eq 1 ] # 1: something needs attention, said on stderr
echo "police adapter: $("$BIN/referral-adapter" status --config "$demo/police.ini")"
echo "intake adapter: $("$BIN/referral-adapter" status --config "$demo/intake.ini")"

step "the audit ledger: exported by the operator while the broker runs (each page read is itself ledgered)"
"${admin[@]}" export-ledger --out "$demo/ledger-online.jsonl"

step "stopping everything (SIGTERM)"
cleanup
pids=()

step "the auditor: export on the broker host, verify, replay against the broker's tables, prove"
"$BIN/referral-audit" export --data "$demo/broker" --out "$demo/ledger.jsonl" --format jsonl
"$BIN/referral-audit" export --data "$demo/broker" --out "$demo/ledger.sqlite"
"$BIN/referral-audit" verify --ledger "$demo/ledger.jsonl" --broker-card "$demo/broker/broker.card"
"$BIN/referral-audit" verify --ledger "$demo/ledger.sqlite" --broker-card "$demo/broker/broker.card"
"$BIN/referral-audit" replay --ledger "$demo/ledger.sqlite" --data "$demo/broker"
first=$(sqlite3 "$demo/police-data/adapter.db" "SELECT lower(hex(message_id)) FROM outbox WHERE kind = 1 ORDER BY queued_ms LIMIT 1")
echo "history of referral $first:"
"$BIN/referral-audit" history --ledger "$demo/ledger.sqlite" "$first"
"$BIN/referral-audit" prove --ledger "$demo/ledger.sqlite" "$first" --out "$demo/proofs" | head -n 1 | while read -r proof; do
    "$BIN/referral-audit" check-proof --proof "$proof" --broker-card "$demo/broker/broker.card"
done
echo "the broker's checkpoint key, for tlog tools: $("$BIN/referral-audit" verifier-key --broker-card "$demo/broker/broker.card")"
step "public data: de-identified, small counts suppressed, signed by the police adapter (docs/PUBLISHING.md)"
"$BIN/referral-publish" --config "$demo/police.ini" --out "$demo/publish" --as-of "$(date -u +%F)"
"$BIN/referral-publish" verify --dir "$demo/publish" --card "$demo/keys/cpd-rms.card"
echo "the page: $(pwd)/$demo/publish/index.html (and incidents.csv, incidents.json, summary.json, MANIFEST.json)"
echo "done in $(($(date +%s) - started)) s; everything is in $demo (configs, keys, databases, folders, logs)"
