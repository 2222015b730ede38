#!/usr/bin/env bash
# adapters/demo.sh -- the end-to-end demonstration behind `make demo`.
#
# Creates identities for an operator, a police records adapter (source) and the State's Attorney's intake
# adapter (sink); starts a broker on a free loopback port and registers both adapters with signed admin
# commands; seals every sample referral on the police side and submits it (each answered by a signed
# receipt); lets the intake receive, store, confirm, open, validate and acknowledge each one; lets the
# police receive the signed ACKs; shows the broker's status; and shows that invalid referrals, tampered
# envelopes and misaddressed ones are refused. Everything lives in a temporary directory and every
# process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
work=$(mktemp -d)
broker_pid=
cleanup() {
    if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
b64hex() { base64 -d | od -An -tx1 | tr -d ' \n'; }
# JSON without the default values that the proto3 mapping leaves out, keys sorted, for comparing.
normal() { jq -S 'walk(if type == "object" then with_entries(select(.value | . != null and . != false and . != 0 and . != "" and . != [] and . != {})) else . end)' "$1"; }

step "identities: an operator, the police records adapter, the intake adapter"
mkdir -p "$work/police/trust" "$work/police/inbox" "$work/intake/trust" "$work/intake/inbox"
"$BIN/referral-keys" generate --name ops-admin --role admin --agency ILCPD0000 --out "$work/ops-admin" --no-passphrase
"$BIN/referral-keys" generate --name cpd-rms --role source --agency ILCPD0000 --out "$work/police/cpd-rms" --no-passphrase
"$BIN/referral-keys" generate --name sao-intake --role sink --agency ILCCSAO00 --out "$work/intake/sao-intake" --no-passphrase
cp "$work/police/cpd-rms.card" "$work/intake/trust/"
cp "$work/intake/sao-intake.card" "$work/police/trust/"

step "the broker: data directory, then running on a free loopback port"
"$BIN/referral-broker" init --data "$work/broker" --name broker-1 --admin-card "$work/ops-admin.card"
"$BIN/referral-broker" run --data "$work/broker" --listen 'tcp://127.0.0.1:*' 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 100); do grep -q 'event=broker_started' "$work/broker.log" && break; sleep 0.1; done
endpoint=$(grep -o 'listen=tcp://[0-9.:]*' "$work/broker.log" | head -n 1 | cut -d= -f2)
echo "broker listening on $endpoint"
card="$work/broker/broker.card"
admin=("$BIN/referral-admin" --broker "$endpoint" --broker-card "$card" --as "$work/ops-admin.secret")
peer=(--broker "$endpoint" --broker-card "$card")

step "the operator registers both adapters (signed admin commands)"
"${admin[@]}" adapter add --card "$work/police/cpd-rms.card"
"${admin[@]}" adapter add --card "$work/intake/sao-intake.card"

step "the police seal every sample referral and submit it; each is answered by a signed receipt"
declare -A sent # RD number -> message id (hex) of the latest envelope sent for it
envelopes=()
for sample in adapters/samples/valid/*.json; do
    name=$(basename "$sample" .json)
    kind=referral
    case "$name" in
    *supplement*) kind=supplement ;;
    *withdrawal*) kind=withdrawal ;;
    esac
    rd=$(jq -r .rdNumber "$sample")
    ref=()
    if [ "$kind" != referral ] && [ -n "${sent[$rd]:-}" ]; then ref=(--ref "${sent[$rd]}"); fi
    "$BIN/referral-envelope" seal --from "$work/police/cpd-rms.secret" --to "$work/police/trust/sao-intake.card" \
        --kind "$kind" "${ref[@]}" <"$sample" >"$work/$name.env"
    sent[$rd]=$("$BIN/referral-envelope" inspect <"$work/$name.env" | jq -r .messageId | b64hex)
    envelopes+=("$work/$name.env")
done
echo "clear header of the first one (all the broker can read):"
"$BIN/referral-envelope" inspect <"${envelopes[0]}" | jq -c '{kind, sender, senderAgency, recipient, createdMs}'
"$BIN/referral-peer" submit "${peer[@]}" --as "$work/police/cpd-rms.secret" "${envelopes[@]}" | sed "s|$work/||"

step "the intake receives each, stores it, confirms it, validates it and answers with a signed ACK"
"$BIN/referral-peer" receive "${peer[@]}" --as "$work/intake/sao-intake.secret" --out "$work/intake/inbox" \
    --count "${#envelopes[@]}" --ack --trust "$work/intake/trust"

step "the police receive the ACKs"
"$BIN/referral-peer" receive "${peer[@]}" --as "$work/police/cpd-rms.secret" --out "$work/police/inbox" \
    --count "${#envelopes[@]}" --ack --trust "$work/police/trust" | grep -v '^received'

step "what arrived is exactly what was sent"
for env in "${envelopes[@]}"; do
    name=$(basename "$env" .env)
    id=$("$BIN/referral-envelope" inspect <"$env" | jq -r .messageId | b64hex)
    "$BIN/referral-envelope" open --as "$work/intake/sao-intake.secret" --trust "$work/intake/trust" \
        <"$work/intake/inbox/$id.env" >"$work/$name.json" 2>/dev/null
    if ! normal "adapters/samples/valid/$name.json" | cmp -s - <(normal "$work/$name.json"); then
        echo "$name: MISMATCH between what was sent and what arrived" >&2
        exit 1
    fi
    jq -r --arg n "$name" '"  \($n): RD \(.rdNumber) rev \(.revision), \(.federalAgents // [] | length) agent(s), \(.evidence // [] | length) evidence item(s)"' "$work/$name.json"
done

step "broker status"
"${admin[@]}" status | jq -c '.[] | select(.role != "admin") | {name, connected, queued, inFlight, awaitingAck, deadLetters}'

step "invalid referrals are refused before sealing, each with the field at fault"
for sample in adapters/samples/invalid/*.json; do
    if "$BIN/referral-envelope" seal --from "$work/police/cpd-rms.secret" --to "$work/police/trust/sao-intake.card" \
        <"$sample" >/dev/null 2>"$work/refusal"; then
        echo "$(basename "$sample"): ACCEPTED, but it should have been refused" >&2
        exit 1
    fi
    echo "$(basename "$sample"): $(tail -n +2 "$work/refusal" | head -n 1 | sed 's/^ *//')$(head -n 1 "$work/refusal" | grep -o '\$\..*' || true)"
done

step "a tampered envelope is refused by the broker"
cp "${envelopes[0]}" "$work/tampered.env"
printf '\x01' | dd of="$work/tampered.env" bs=1 seek=100 conv=notrunc status=none
if "$BIN/referral-peer" submit "${peer[@]}" --as "$work/police/cpd-rms.secret" "$work/tampered.env" | sed "s|$work/||"; then
    echo "tampered envelope ACCEPTED" >&2
    exit 1
fi

step "an envelope for someone else cannot be opened"
"$BIN/referral-keys" generate --name other-intake --role sink --agency ILCCSAO00 --out "$work/other" --no-passphrase >/dev/null
if "$BIN/referral-envelope" open --as "$work/other.secret" --trust "$work/intake/trust" <"${envelopes[0]}" >/dev/null 2>"$work/refusal"; then
    echo "envelope opened by the wrong recipient" >&2
    exit 1
fi
cat "$work/refusal"

step "stopping the broker (SIGTERM)"
kill -TERM "$broker_pid"
wait "$broker_pid"
broker_pid=
grep -c 'event=' "$work/broker.log" | sed 's/^/broker log lines: /'

step "demo complete: every sample sealed, submitted, receipted, delivered once, opened and acknowledged"
