#!/usr/bin/env bash
# tools_test.sh -- drives referral-keys and referral-envelope the way an operator would, printing TAP.
#
# Each check runs the real tools in a temporary directory and looks at exit codes, files, modes and the
# one-line errors. BIN names the directory holding the tools (bin/ or the sanitizer build's).
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
keys="$BIN/referral-keys"
envelope="$BIN/referral-envelope"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. tests/integration/tap.sh

exits() { # exits CODE COMMAND...: the command exits with CODE and says why in one line on stderr
    local want=$1 rc
    shift
    "$@" >/dev/null 2>"$work/err" </dev/null
    rc=$?
    [ "$rc" = "$want" ] || { echo "exit $rc, expected $want: $(cat "$work/err")"; return 1; }
    [ "$want" = 0 ] || [ "$(wc -l <"$work/err")" -ge 1 ] || { echo "no message on stderr"; return 1; }
}

printf 'correct horse battery staple\n' >"$work/pass"
chmod 600 "$work/pass"
mkdir -p "$work/police-trust" "$work/intake-trust"
sample=$(ls adapters/samples/valid/*.json | head -n 1)

generate_both() {
    "$keys" generate --name cpd-rms --role source --agency ILCPD0000 --out "$work/cpd" \
        --passphrase-file "$work/pass" &&
        "$keys" generate --name sao-intake --role sink --agency ILCCSAO00 --out "$work/sao" --no-passphrase &&
        cp "$work/cpd.card" "$work/intake-trust/" && cp "$work/sao.card" "$work/police-trust/" &&
        [ "$(stat -c %a "$work/cpd.secret")" = 600 ] && [ "$(stat -c %a "$work/sao.secret")" = 600 ] &&
        head -n 1 "$work/cpd.secret" | grep -q 'encrypted=argon2id' &&
        head -n 1 "$work/sao.secret" | grep -q 'encrypted=none'
}
check "generate writes 0600 secrets, encrypted unless --no-passphrase" generate_both

check "generate refuses to overwrite without --force" exits 2 "$keys" generate --name cpd-rms --role source \
    --agency ILCPD0000 --out "$work/sao" --no-passphrase
check "a repeated option is refused" exits 2 "$keys" generate --name a --name b --role source \
    --agency ILCPD0000 --out "$work/x" --no-passphrase
check "a bad agency is refused" exits 2 "$keys" generate --name a --role source --agency il --out "$work/x" \
    --no-passphrase
check "--help exits 0" exits 0 "$keys" --help
check "envelope --help exits 0" exits 0 "$envelope" seal --help

show_card() {
    "$keys" show "$work/cpd.card" | grep -q '^role *source$' &&
        [ "$("$keys" fingerprint "$work/cpd.card" | wc -c)" = 80 ] &&
        "$keys" verify-card "$work/cpd.card" | grep -q 'good card for cpd-rms'
}
check "show, fingerprint and verify-card read a card" show_card

tamper() { # tamper FILE OFFSET: flips one bit of one byte
    local byte
    byte=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "\\$(printf '%03o' $((byte ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
cp "$work/cpd.card" "$work/tampered.card"
tamper "$work/tampered.card" 120
check "verify-card refuses a tampered card" exits 1 "$keys" verify-card "$work/tampered.card"

seal() { "$envelope" seal --from "$work/cpd.secret" --passphrase-file "$work/pass" --to "$work/sao.card" "$@"; }
open_env() { "$envelope" open --as "$work/sao.secret" --trust "$work/intake-trust" "$@"; }

round_trip() {
    seal <"$sample" >"$work/env" &&
        "$envelope" inspect <"$work/env" | jq -e '.sender == "cpd-rms" and .recipient == "sao-intake"' >/dev/null &&
        open_env --out "$work/opened.json" <"$work/env" 2>"$work/verified" &&
        grep -q '^verified: message [0-9a-f]\{32\} from cpd-rms' "$work/verified" &&
        [ "$(jq -r .rdNumber "$work/opened.json")" = "$(jq -r .rdNumber "$sample")" ]
}
check "seal, inspect and open a sample referral" round_trip

wrong_passphrase() {
    printf 'wrong\n' >"$work/wrong"
    chmod 600 "$work/wrong"
    "$envelope" seal --from "$work/cpd.secret" --passphrase-file "$work/wrong" --to "$work/sao.card" \
        <"$sample" 2>&1 >/dev/null | grep -q 'wrong passphrase'
}
check "a wrong passphrase is refused by name" wrong_passphrase

check "a secret file readable by others is refused" bash -c "cp -p '$work/sao.secret' '$work/loose.secret' &&
    chmod 644 '$work/loose.secret' &&
    ! '$envelope' open --as '$work/loose.secret' --trust '$work/intake-trust' <'$work/env' >/dev/null 2>'$work/e' &&
    grep -q 'readable by group or others' '$work/e'"

invalid_refused() {
    local f
    for f in adapters/samples/invalid/*.json; do
        if seal <"$f" >/dev/null 2>"$work/e"; then echo "$f was sealed"; return 1; fi
        grep -q '\$\.' "$work/e" || { echo "$f: no field path in: $(cat "$work/e")"; return 1; }
    done
}
check "every invalid sample is refused with a field path" invalid_refused

tampered_envelope() {
    cp "$work/env" "$work/bad.env"
    tamper "$work/bad.env" 40
    ! open_env <"$work/bad.env" >/dev/null 2>"$work/e" && grep -q 'envelope refused' "$work/e"
}
check "a tampered envelope is refused" tampered_envelope

passwd_changes() {
    printf 'a new passphrase\n' >"$work/pass2"
    chmod 600 "$work/pass2"
    "$keys" passwd "$work/cpd.secret" --passphrase-file "$work/pass" --new-passphrase-file "$work/pass2" &&
        "$envelope" seal --from "$work/cpd.secret" --passphrase-file "$work/pass2" --to "$work/sao.card" \
            <"$sample" >/dev/null &&
        ! seal <"$sample" >/dev/null 2>&1
}
check "passwd re-encrypts under the new passphrase" passwd_changes

echo "1..$n"
