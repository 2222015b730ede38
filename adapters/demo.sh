#!/usr/bin/env bash
# adapters/demo.sh -- the end-to-end demonstration behind `make demo`.
#
# Creates identities for a police records adapter (source) and the State's Attorney's intake adapter
# (sink), gives each a trust store holding the other's card, then for every sample referral: seals it on
# the police side, shows the clear header the broker would see, opens it on the intake side and prints a
# summary of what arrived. It ends by showing that invalid referrals and tampered envelopes are refused.
# Everything happens in a temporary directory that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
keys="$BIN/referral-keys"
envelope="$BIN/referral-envelope"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
b64hex() { base64 -d | od -An -tx1 | tr -d ' \n'; }
# JSON without the default values that the proto3 mapping leaves out, keys sorted, for comparing.
normal() { jq -S 'walk(if type == "object" then with_entries(select(.value | . != null and . != false and . != 0 and . != "" and . != [] and . != {})) else . end)' "$1"; }

step "identities (services run unattended, so their secret files have no passphrase; mode 0600)"
mkdir -p "$work/police/trust" "$work/intake/trust"
"$keys" generate --name cpd-rms --role source --agency ILCPD0000 --out "$work/police/cpd-rms" --no-passphrase
"$keys" generate --name sao-intake --role sink --agency ILCCSAO00 --out "$work/intake/sao-intake" --no-passphrase
cp "$work/police/cpd-rms.card" "$work/intake/trust/"
cp "$work/intake/sao-intake.card" "$work/police/trust/"
"$keys" show "$work/intake/sao-intake.card"

declare -A sent # RD number -> message id (hex) of the latest envelope sent for it
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

    step "$name: police seal a $kind for RD $rd"
    "$envelope" seal --from "$work/police/cpd-rms.secret" --to "$work/police/trust/sao-intake.card" \
        --kind "$kind" "${ref[@]}" <"$sample" >"$work/$name.env"
    echo "envelope: $(wc -c <"$work/$name.env") bytes; clear header (all the broker can read):"
    "$envelope" inspect <"$work/$name.env" | jq -c '{kind, sender, senderAgency, recipient, createdMs, messageId}'
    sent[$rd]=$("$envelope" inspect <"$work/$name.env" | jq -r .messageId | b64hex)

    echo "intake opens it:"
    "$envelope" open --as "$work/intake/sao-intake.secret" --trust "$work/intake/trust" \
        <"$work/$name.env" >"$work/$name.opened.json"
    jq -r '"  RD \(.rdNumber) revision \(.revision // 1): \(.incident.categories // [] | join(", "))",
           "  \(.federalAgents // [] | length) federal agent(s), \(.civilians // [] | length) civilian(s), \(.evidence // [] | length) evidence item(s), \(.suggestedCharges // [] | length) suggested charge(s)"' \
        "$work/$name.opened.json"
    if ! normal "$sample" | cmp -s - <(normal "$work/$name.opened.json"); then
        echo "MISMATCH: what arrived differs from what was sent" >&2
        exit 1
    fi
    echo "  arrived exactly as sent"
done

step "invalid referrals are refused before sealing, each with the field at fault"
for sample in adapters/samples/invalid/*.json; do
    if "$envelope" seal --from "$work/police/cpd-rms.secret" --to "$work/police/trust/sao-intake.card" \
        <"$sample" >/dev/null 2>"$work/refusal"; then
        echo "$(basename "$sample"): ACCEPTED, but it should have been refused" >&2
        exit 1
    fi
    echo "$(basename "$sample"): $(head -c 300 "$work/refusal" | tr '\n' ' ')"
done

step "a tampered envelope is refused"
first=$(ls "$work"/*.env | head -n 1)
cp "$first" "$work/tampered.env"
printf '\x01' | dd of="$work/tampered.env" bs=1 seek=100 conv=notrunc status=none
if "$envelope" open --as "$work/intake/sao-intake.secret" --trust "$work/intake/trust" \
    <"$work/tampered.env" >/dev/null 2>"$work/refusal"; then
    echo "tampered envelope ACCEPTED" >&2
    exit 1
fi
cat "$work/refusal"

step "an envelope for someone else is refused"
"$keys" generate --name other-intake --role sink --agency ILCCSAO00 --out "$work/other" --no-passphrase >/dev/null
if "$envelope" open --as "$work/other.secret" --trust "$work/intake/trust" <"$first" >/dev/null 2>"$work/refusal"; then
    echo "envelope opened by the wrong recipient" >&2
    exit 1
fi
cat "$work/refusal"

step "demo complete: every sample sealed, verified and opened; every bad input refused"
