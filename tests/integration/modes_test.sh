#!/usr/bin/env bash
# modes_test.sh -- what the tools create that holds case content or keys is private whatever the umask; TAP.
#
# Under umask 000 and then 022, as a careless operator's shell would have it, runs every tool that writes
# files the way an operator does: keys, a broker (init, run), a police adapter on rms-files and the intake
# adapter on intake-sqlite and then intake-files, referrals through them, a backup and a ledger export with
# referral-admin, a restore, referral-audit's exports, an envelope opened with referral-envelope, and the
# public data of referral-publish. Then `find -perm /077` over everything that holds keys or case content
# (databases with their -wal and -shm while the processes run, data directories, drop folder, ACKs, imports,
# backups, exports, plaintext) must list nothing; cards and the public data may be read by all, but written
# by their owner only. Last, files an older version left too open are tightened at the next start, said so
# in the log, and a drop folder the operator shares with a group gets group-readable ACKs, never more. BIN
# names the directory holding the tools.
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

private() { # private PATH...: nothing under the paths that group or others may use (cards are public)
    local open
    open=$(find "$@" ! -name '*.card' -perm /077 -printf '%m %p\n' 2>&1)
    [ -z "$open" ] || { echo "open to group or others:"; echo "$open"; return 1; }
    find "$@" >>"$checked"
}

public() { # public PATH...: readable by all, writable by the owner only
    local open
    open=$(find "$@" \( -perm /022 -o ! -perm -444 \) -printf '%m %p\n' 2>&1)
    [ -z "$open" ] || { echo "not readable by all, or writable by others:"; echo "$open"; return 1; }
    find "$@" >>"$checked"
}

drop() { # drop R SAMPLE NAME: as a records system writes an export, under another name and renamed
    cp "$2" "$1/drop/$3.part" && mv "$1/drop/$3.part" "$1/drop/$3"
}

start() { # start R NAME LOG COMMAND...: a process in the background, its pid in R/NAME.pid
    local r=$1 name=$2 log=$3
    shift 3
    "$@" 2>"$log" &
    pids+=($!)
    echo $! >"$r/$name.pid"
}

stop() { # stop R NAME: SIGTERM, and it must exit 0
    local pid status
    pid=$(cat "$1/$2.pid")
    kill -TERM "$pid" && wait "$pid"
    status=$?
    [ "$status" = 0 ] || { echo "$2 exited $status"; return 1; }
}

adapter_config() { # adapter_config R NAME CONNECTOR SECTION-LINES
    local r=$1 name=$2 recipient=
    [ "$name" = cpd-rms ] && recipient="recipient = sao-intake"
    cat >"$r/$name-$3.conf" <<EOF
[adapter]
connector = $3
secret = $r/keys/$name.secret
broker = $(cat "$r/endpoint")
broker_card = $r/broker/broker.card
trust = $r/trust-$name
data = $r/$name-$3-data
$recipient
$4
EOF
}

start_adapter() { # start_adapter R NAME CONNECTOR: runs it and waits until it is connected
    start "$1" "$2" "$1/$2-$3.log" "$BIN/referral-adapter" --config "$1/$2-$3.conf"
    until_true 20 grep -q 'event=connected' "$1/$2-$3.log" || { cat "$1/$2-$3.log"; return 1; }
}

acks_are() { [ "$(find "$1/drop/acks" -name '*.json' 2>/dev/null | wc -l)" = "$2" ]; } # acks_are R COUNT

round() { # round UMASK: every tool under that umask, in R=$work/uUMASK
    local u=$1 r=$work/u$1
    umask "$u"
    mkdir -p "$r/keys" "$r/trust-cpd-rms" "$r/trust-sao-intake" "$r/sao"
    checked=$work/checked-$u

    keys() {
        local line name role agency
        for line in ops-admin:admin:ILCPD0000 cpd-rms:source:ILCPD0000 sao-intake:sink:ILCCSAO00; do
            IFS=: read -r name role agency <<<"$line"
            "$BIN/referral-keys" generate --name "$name" --role "$role" --agency "$agency" --out "$r/keys/$name" \
                --no-passphrase >/dev/null || return 1
        done
        cp "$r/keys/sao-intake.card" "$r/trust-cpd-rms/" && cp "$r/keys/cpd-rms.card" "$r/trust-sao-intake/" &&
            private "$r/keys/"*.secret && public "$r/keys/"*.card
    }
    check "umask $u: referral-keys: secrets private, cards public" keys

    broker() {
        "$BIN/referral-broker" init --data "$r/broker" --name broker-1 --admin-card "$r/keys/ops-admin.card" \
            >/dev/null || return 1
        printf '[metrics]\nlisten = 127.0.0.1:0\n[delivery]\nheartbeat_ms = 200\n' >"$r/broker.conf"
        start "$r" broker "$r/broker.log" "$BIN/referral-broker" run --data "$r/broker" --config "$r/broker.conf" \
            --listen 'tcp://127.0.0.1:*'
        until_true 20 grep -q 'event=broker_started' "$r/broker.log" || { cat "$r/broker.log"; return 1; }
        sed -n 's/.*event=broker_started.* listen=\([^ ]*\).*/\1/p' "$r/broker.log" >"$r/endpoint"
        local name
        for name in cpd-rms sao-intake; do
            "$BIN/referral-admin" --broker "$(cat "$r/endpoint")" --broker-card "$r/broker/broker.card" \
                --as "$r/keys/ops-admin.secret" adapter add --card "$r/keys/$name.card" >/dev/null || return 1
        done
        private "$r/broker" && public "$r/broker/broker.card"
    }
    check "umask $u: referral-broker init and run: data directory, broker.db and its WAL private" broker

    adapters() {
        adapter_config "$r" cpd-rms rms-files "$(printf '[rms-files]\ndrop = %s/drop\nstable_ms = 200\nscan_ms = 50' "$r")"
        adapter_config "$r" sao-intake intake-sqlite "$(printf '[intake-sqlite]\ndatabase = %s/sao/intake.db' "$r")"
        start_adapter "$r" cpd-rms rms-files && start_adapter "$r" sao-intake intake-sqlite || return 1
        drop "$r" adapters/samples/valid/01-fatal-shooting.json 01.json
        drop "$r" adapters/samples/invalid/bad-time.json bad-time.json
        until_true 30 acks_are "$r" 1 || { echo "no ACK"; return 1; }
        until_true 10 test -f "$r/drop/rejected/bad-time.json.errors.txt" || { echo "not rejected"; return 1; }
        # While both run: the databases' -wal and -shm exist, and are checked with them.
        ls "$r/sao/intake.db-wal" "$r/cpd-rms-rms-files-data/adapter.db-wal" >/dev/null &&
            private "$r/cpd-rms-rms-files-data" "$r/sao-intake-intake-sqlite-data" "$r/drop" "$r/sao/"intake.db* \
                "$r/broker"
    }
    check "umask $u: referral-adapter: adapter.db, intake.db, drop folder, ACKs, rejections private" adapters

    files_sink() {
        stop "$r" sao-intake || return 1
        adapter_config "$r" sao-intake intake-files "$(printf '[intake-files]\nout = %s/out' "$r")"
        start_adapter "$r" sao-intake intake-files || return 1
        drop "$r" adapters/samples/valid/02-night-raid-south-shore.json 02.json
        until_true 30 acks_are "$r" 2 || { echo "no second ACK"; return 1; }
        # The referral and who sent it (ID.json, ID.filing)
        [ "$(ls "$r/out" | wc -l)" = 2 ] && private "$r/out" "$r/sao-intake-intake-files-data" "$r/drop"
    }
    check "umask $u: intake-files: the import folder and the referrals in it private" files_sink

    admin_files() {
        local admin=("$BIN/referral-admin" --broker "$(cat "$r/endpoint")" --broker-card "$r/broker/broker.card"
            --as "$r/keys/ops-admin.secret")
        "${admin[@]}" backup --out "$r/backup.db" >/dev/null &&
            "${admin[@]}" export-ledger --out "$r/ledger.jsonl" >/dev/null || return 1
        "$BIN/referral-broker" restore --from "$r/backup.db" --data "$r/restored" >/dev/null || return 1
        private "$r/backup.db" "$r/ledger.jsonl" "$r/restored" "$r/broker"
    }
    check "umask $u: referral-admin backup and export-ledger, referral-broker restore: private" admin_files

    plaintext() {
        local cpd="$r/keys/cpd-rms.secret" sao="$r/keys/sao-intake.secret"
        "$BIN/referral-envelope" seal --from "$cpd" --to "$r/keys/sao-intake.card" \
            <adapters/samples/valid/03-clash-detentions.json >"$r/envelope.bin" || return 1
        "$BIN/referral-envelope" open --as "$sao" --trust "$r/trust-sao-intake" --out "$r/opened.json" \
            <"$r/envelope.bin" 2>/dev/null || { echo "open --out failed"; return 1; }
        grep -q JH523718 "$r/opened.json" && private "$r/opened.json" || return 1
        # Standard output into a file others may read: refused before a byte of plaintext is written.
        "$BIN/referral-envelope" open --as "$sao" --trust "$r/trust-sao-intake" <"$r/envelope.bin" \
            >"$r/opened-stdout.json" 2>"$r/err"
        local rc=$?
        [ "$rc" = 2 ] || { echo "open > a file others can read: exit $rc"; return 1; }
        grep -q -- '--out' "$r/err" && [ ! -s "$r/opened-stdout.json" ] || { cat "$r/err"; return 1; }
        # Into a pipe, as ever.
        "$BIN/referral-envelope" open --as "$sao" --trust "$r/trust-sao-intake" <"$r/envelope.bin" 2>/dev/null |
            grep -q JH523718
    }
    check "umask $u: referral-envelope open: the plaintext private, never into a file others can read" plaintext

    audit_files() {
        stop "$r" cpd-rms && stop "$r" sao-intake && stop "$r" broker || return 1
        "$BIN/referral-audit" export --data "$r/broker" --out "$r/audit.db" >/dev/null &&
            "$BIN/referral-audit" export --data "$r/broker" --out "$r/audit.jsonl" --format jsonl >/dev/null || return 1
        "$BIN/referral-audit" export --data "$r/broker" --out "$r/tiles" --format tiles >/dev/null || return 1
        private "$r/audit.db" "$r/audit.jsonl" "$r/broker" "$r/cpd-rms-rms-files-data" "$r/sao/"intake.db* &&
            public "$r/tiles"
    }
    check "umask $u: referral-audit exports private (tiles public), every store private after a stop" audit_files

    published() {
        "$BIN/referral-publish" --config "$r/cpd-rms-rms-files.conf" --out "$r/public" --as-of 2026-01-31 \
            >/dev/null && public "$r/public"
    }
    check "umask $u: referral-publish: the public data readable by all, writable by its owner only" published

    echo "# umask $u: $(sort -u "$checked" | wc -l) files and folders checked"
}

round 000
round 022

tightened() { # an older version's files, too open, tightened at the next start, and the log says which
    local r=$work/u022
    chmod 644 "$r/broker/broker.db" "$r/cpd-rms-rms-files-data/adapter.db"
    chmod 755 "$r/cpd-rms-rms-files-data"
    chmod 666 "$r/sao/intake.db"
    start "$r" broker "$r/broker-2.log" "$BIN/referral-broker" run --data "$r/broker" --config "$r/broker.conf" \
        --listen "$(cat "$r/endpoint")"
    until_true 20 grep -q 'event=broker_started' "$r/broker-2.log" || { cat "$r/broker-2.log"; return 1; }
    start_adapter "$r" cpd-rms rms-files || return 1
    adapter_config "$r" sao-intake intake-sqlite "$(printf '[intake-sqlite]\ndatabase = %s/sao/intake.db' "$r")"
    start_adapter "$r" sao-intake intake-sqlite || return 1
    grep -q "event=mode_tightened path=$r/broker/broker.db was=0644 now=0600" "$r/broker-2.log" &&
        grep -q "event=mode_tightened adapter=cpd-rms path=$r/cpd-rms-rms-files-data was=0755 now=0700" \
            "$r/cpd-rms-rms-files.log" &&
        grep -q "path=$r/cpd-rms-rms-files-data/adapter.db was=0644 now=0600" "$r/cpd-rms-rms-files.log" ||
        { grep -h mode_tightened "$r"/*.log; return 1; }
    # The intake database is the intake system's: its group may keep reading it, others may not.
    grep -q "path=$r/sao/intake.db was=0666 now=0660" "$r/sao-intake-intake-sqlite.log" &&
        [ "$(stat -c %a "$r/sao/intake.db")" = 660 ] || { grep -h mode_tightened "$r"/*.log; return 1; }
    private "$r/broker" "$r/cpd-rms-rms-files-data"
}
check "files left too open by an older version are tightened at the next start, each logged" tightened

shared_drop() { # the operator shares the drop folder with the records system's group (setgid, 2770)
    local r=$work/u022 ack
    stop "$r" cpd-rms || return 1
    chmod 2777 "$r/drop" && rm -r "$r/drop/acks"
    start_adapter "$r" cpd-rms rms-files || return 1
    grep -q "path=$r/drop was=2777 now=2770" "$r/cpd-rms-rms-files.log" || { grep mode_tightened "$r"/*.log; return 1; }
    [ "$(stat -c %a "$r/drop/acks")" = 2770 ] || { stat -c '%a %n' "$r/drop/acks"; return 1; }
    drop "$r" adapters/samples/valid/04-supervisor-refuses-credentials.json 04.json
    until_true 30 acks_are "$r" 1 || { echo "no ACK"; return 1; }
    ack=$(find "$r/drop/acks" -name '*.json')
    [ "$(stat -c %a "$ack" "$r/drop/sent/04.json")" = "$(printf '640\n640')" ] || { stat -c '%a %n' "$ack" "$r/drop/sent/04.json"; return 1; }
}
check "a drop folder shared with a group: the adapter's folders and files there are the group's to read, never others'" \
    shared_drop

stop_all() {
    local r=$work/u022
    stop "$r" cpd-rms && stop "$r" sao-intake && stop "$r" broker && pids=()
}
check "every process stops on SIGTERM with exit status 0" stop_all

echo "1..$n"
