#!/usr/bin/env bash
# units_test.sh -- the broker and the adapters as their systemd units run them, each as the user its unit
# names, in the directories its unit gives it; TAP.
#
# There is no systemd to run the units here, so the test does what systemd would from the installed unit
# files: reads User=, Group=, StateDirectory=, ReadWritePaths= and RestartPreventExitStatus= (with %i the
# instance), makes the users with the commands docs/OPERATIONS.md gives (into a staged passwd, so the host's
# stays untouched), makes the state directories as systemd makes them, and runs each program with setpriv
# under that uid and gid and with NOTIFY_SOCKET, a datagram socket the test binds, as systemd's is. Then:
# the broker and an adapter say READY=1 there once started; an adapter's user can read neither the
# broker's secret nor another adapter's key, store or folder; a config error exits with the status the
# units do not restart on. Changing users needs root: run as another user, those checks are skipped.
set -u
cd "$(dirname "$0")/../.."
BIN=$(realpath "${BIN:-bin}")
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
# The services' users must reach the staged root, as they reach / on a real host.
chmod 0755 "$work"

. tests/integration/tap.sh

root_check() { # root_check NAME COMMAND...: check, or skipped when the test cannot change users
    if [ "$(id -u)" = 0 ]; then
        check "$@"
    else
        n=$((n + 1))
        echo "ok $n - $1 # SKIP not root"
    fi
}

make --no-print-directory -s -o all BIN="$BIN" install DESTDIR="$work/stage" PREFIX=/usr/local >/dev/null ||
    exit 1
units=$work/stage/usr/local/lib/systemd/system
root=$work/root
etc=$root/etc/referral
var=$root/var/lib/referral
srv=$root/srv/referral

unit_setting() { # unit_setting UNIT INSTANCE KEY: KEY's value in the installed unit, %i as INSTANCE
    sed -n "s/^$3=//p" "$units/$1" | sed "s/%i/$2/g"
}
broker_unit() { unit_setting referral-broker.service "" "$1"; }
adapter_unit() { unit_setting referral-adapter@.service "$1" "$2"; }

units_as_docs_say() { # what an operator reads in the units, and what the rest of this test relies on
    local want
    for want in "Type=notify" "User=referral-broker" "Group=referral" "StateDirectory=referral/broker" \
        "RestartPreventExitStatus=2"; do
        grep -qx "$want" "$units/referral-broker.service" || { echo "referral-broker.service: no '$want'"; return 1; }
    done
    for want in "Type=notify" "User=referral-%i" "Group=referral" "StateDirectory=referral/%i" \
        "ReadWritePaths=-/srv/referral/%i" "RestartPreventExitStatus=2"; do
        grep -qx "$want" "$units/referral-adapter@.service" ||
            { echo "referral-adapter@.service: no '$want'"; return 1; }
    done
}
check "each unit runs as its own user, in its own directories, ready by sd_notify, not restarted on exit 2" \
    units_as_docs_say

# The users, as docs/OPERATIONS.md makes them, in the staged root's passwd and group.
uid_of() { awk -F: -v u="$1" '$1 == u { print $3 }' "$root/etc/passwd"; }
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$root/etc/group"; }
make_user() { # make_user NAME: the system user NAME, primary group referral, once
    [ -n "$(uid_of "$1")" ] ||
        useradd --prefix "$root" --system --gid referral --home-dir /nonexistent --shell /usr/sbin/nologin "$1"
}
identity() { # identity USER: setpriv's options for a unit's User= (its uid, group referral, no other groups)
    echo --reuid="$(uid_of "$1")" --regid="$(gid_of referral)" --clear-groups --inh-caps=-all
}
as() { # as USER COMMAND...: run as systemd runs a unit's ExecStart
    local user=$1
    shift
    # shellcheck disable=SC2046
    setpriv $(identity "$user") -- "$@"
}
own() { # own USER MODE DIR...: made as install -d -o USER -g referral -m MODE
    local user=$1 mode=$2
    shift 2
    install -d -o "$(uid_of "$user")" -g "$(gid_of referral)" -m "$mode" "$@"
}

adapters="cpd-rms sao-intake"
endpoint=
layout() { # users, /etc/referral, the state and exchange folders, keys: as the docs and the units say
    mkdir -p "$root/etc" && touch "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow" &&
        groupadd --prefix "$root" --system referral || return 1
    local name user
    make_user "$(broker_unit User)" || return 1
    for name in $adapters; do make_user "$(adapter_unit "$name" User)" || return 1; done
    install -d -m 0755 "$root/var/lib" "$root/srv" && install -d -g "$(gid_of referral)" -m 0750 "$etc" "$etc/keys" \
        "$etc/trust" || return 1
    # StateDirectory=: the innermost folder the unit's user's, mode StateDirectoryMode=, its parents root's.
    own "$(broker_unit User)" "$(broker_unit StateDirectoryMode)" "$root/var/lib/$(broker_unit StateDirectory)" ||
        return 1
    "$BIN/referral-keys" generate --name ops-admin --role admin --agency ILCPD0000 --out "$work/ops-admin" \
        --no-passphrase >/dev/null || return 1
    for name in $adapters; do
        user=$(adapter_unit "$name" User)
        own "$user" "$(adapter_unit "$name" StateDirectoryMode)" "$root/var/lib/$(adapter_unit "$name" StateDirectory)" &&
            own "$user" 0700 "$root$(adapter_unit "$name" ReadWritePaths | sed "s/^-//")" || return 1
        "$BIN/referral-keys" generate --name "$name" --role "$([ "$name" = cpd-rms ] && echo source || echo sink)" \
            --agency ILCPD0000 --out "$etc/keys/$name" --no-passphrase >/dev/null &&
            chown "$(uid_of "$user")" "$etc/keys/$name.secret" || return 1
    done
    install -d -g "$(gid_of referral)" -m 0750 "$etc/trust/cpd-rms" "$etc/trust/sao-intake" &&
        install -m 0644 "$etc/keys/sao-intake.card" "$etc/trust/cpd-rms/" &&
        install -m 0644 "$etc/keys/cpd-rms.card" "$etc/trust/sao-intake/"
}
root_check "the users, directories and keys laid out as docs/OPERATIONS.md says" layout

notify() { # notify NAME: a datagram socket like systemd's, printing what arrives until READY=1 (30 s at most)
    local sock=$work/$1.notify
    /usr/bin/python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)  # systemd lets any service user send to its socket
s.settimeout(30)
try:
    while True:
        m = s.recv(4096).decode()
        print(m, flush=True)
        if "READY=1" in m.split("\n"):
            break
except socket.timeout:
    sys.exit(1)
' "$sock" >"$work/$1.said" &
    notify_pid=$!
    until_true 10 test -S "$sock"
}

broker_started() { # the broker's ExecStart as its unit runs it: READY=1 once it listens
    as "$(broker_unit User)" "$BIN/referral-broker" init --data "$var/broker" --name broker-1 \
        --admin-card "$work/ops-admin.card" >/dev/null || return 1
    install -m 0644 "$var/broker/broker.card" "$etc/broker.card" &&
        sed -e "s|/etc/referral|$etc|g; s|/var/lib/referral|$var|g" broker/dist/broker.conf >"$etc/broker.conf" &&
        chgrp "$(gid_of referral)" "$etc/broker.conf" && chmod 0640 "$etc/broker.conf" || return 1
    notify broker || return 1
    # setpriv itself in the background (not the function), so that the pid kept is the program's
    # shellcheck disable=SC2046
    NOTIFY_SOCKET=$work/broker.notify setpriv $(identity "$(broker_unit User)") -- "$BIN/referral-broker" run --data "$var/broker" \
        --config "$etc/broker.conf" --listen 'tcp://127.0.0.1:*' --metrics off 2>"$work/broker.log" &
    pids+=($!)
    wait "$notify_pid" || { echo "no READY=1 from the broker"; cat "$work/broker.log"; return 1; }
    grep -q 'event=broker_started' "$work/broker.log" || return 1
    endpoint=$(sed -n 's/.*event=broker_started .*listen=\([^ ]*\) .*/\1/p' "$work/broker.log")
}
root_check "the broker, run as its unit's user, says READY=1 to NOTIFY_SOCKET once it listens" broker_started

adapter_config() { # adapter_config NAME: its example config, paths moved under the staged root, mode 0640
    sed -e "s|/etc/referral|$etc|g; s|/var/lib/referral|$var|g; s|/srv/referral|$srv|g" \
        -e "s|tcp://broker.example.org:7450|$endpoint|" "adapters/dist/$1.conf" >"$etc/$1.conf" &&
        chgrp "$(gid_of referral)" "$etc/$1.conf" && chmod 0640 "$etc/$1.conf"
}

adapter_started() { # an adapter's ExecStart as its unit runs it: READY=1 once its store and folder are open
    local name
    for name in $adapters; do
        adapter_config "$name" || return 1
        "$BIN/referral-admin" --broker "$endpoint" --broker-card "$etc/broker.card" --as "$work/ops-admin.secret" \
            adapter add --card "$etc/keys/$name.card" >/dev/null || return 1
    done
    notify cpd-rms || return 1
    # shellcheck disable=SC2046
    NOTIFY_SOCKET=$work/cpd-rms.notify setpriv $(identity "$(adapter_unit cpd-rms User)") -- "$BIN/referral-adapter" run \
        --config "$etc/cpd-rms.conf" 2>"$work/cpd-rms.log" &
    pids+=($!)
    wait "$notify_pid" || { echo "no READY=1 from cpd-rms"; cat "$work/cpd-rms.log"; return 1; }
    grep -q 'event=adapter_started' "$work/cpd-rms.log"
}
root_check "an adapter, run as its unit's user, says READY=1 once started" adapter_started

broker_secret_closed() { # what a compromised or misconfigured adapter would try: the broker's key
    local user name
    for name in $adapters; do
        user=$(adapter_unit "$name" User)
        if as "$user" cat "$var/broker/broker.secret" >/dev/null 2>&1; then
            echo "$user can read broker.secret"
            return 1
        fi
        if as "$user" sqlite3 -readonly "$var/broker/broker.db" 'SELECT 1' >/dev/null 2>&1; then
            echo "$user can read broker.db"
            return 1
        fi
    done
    # The adapter itself pointed at the broker's secret, as an operator's typo would.
    sed "s|^secret = .*|secret = $var/broker/broker.secret|" "$etc/cpd-rms.conf" >"$etc/wrong.conf" &&
        chmod 0644 "$etc/wrong.conf" || return 1
    # (Which words it says is the start-up messages' business; here: it stops at once, naming the file.)
    as "$(adapter_unit cpd-rms User)" timeout 10 "$BIN/referral-adapter" run --config "$etc/wrong.conf" \
        2>"$work/wrong.err"
    local rc=$?
    [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q "broker/broker.secret: " "$work/wrong.err" &&
        ! grep -q adapter_started "$work/wrong.err" || { echo "exit $rc"; cat "$work/wrong.err"; return 1; }
}
root_check "an adapter's unit user cannot read the broker's secret or database" broker_secret_closed

other_adapter_closed() { # cpd-rms's user against sao-intake's key, store and intake folder
    local user other
    user=$(adapter_unit cpd-rms User)
    other=$(adapter_unit sao-intake ReadWritePaths | sed "s/^-//")
    as "$user" cat "$etc/keys/sao-intake.secret" >/dev/null 2>&1 && { echo "$user reads sao-intake.secret"; return 1; }
    as "$user" ls "$var/sao-intake" >/dev/null 2>&1 && { echo "$user reads sao-intake's store"; return 1; }
    as "$user" touch "$root$other/planted" 2>/dev/null && { echo "$user writes $other"; return 1; }
    # and its own, all of which it needs
    as "$user" cat "$etc/keys/cpd-rms.secret" >/dev/null && as "$user" ls "$var/cpd-rms" >/dev/null &&
        as "$user" touch "$srv/cpd-rms/own" && as "$user" cat "$etc/cpd-rms.conf" >/dev/null
}
root_check "an adapter's unit user cannot read another adapter's key or store, nor write its folder" \
    other_adapter_closed

config_error_stays_down() { # a mistyped setting: the exit status the units do not restart on
    local prevent
    prevent=$(adapter_unit x RestartPreventExitStatus)
    [ -n "$prevent" ] && [ "$prevent" = "$(broker_unit RestartPreventExitStatus)" ] ||
        { echo "RestartPreventExitStatus: '$prevent'"; return 1; }
    printf '[broker]\nlisten = tcp://127.0.0.1:0\nlsten = x\n' >"$work/typo.conf"
    "$BIN/referral-broker" run --data "$var/broker" --config "$work/typo.conf" 2>/dev/null
    [ $? = "$prevent" ] || { echo "the broker's config error exits other than $prevent"; return 1; }
    printf '[adapter]\nconector = rms-files\n' >"$work/typo.conf"
    "$BIN/referral-adapter" run --config "$work/typo.conf" 2>/dev/null
    [ $? = "$prevent" ] || { echo "the adapter's config error exits other than $prevent"; return 1; }
}
check "a config error exits with the status the units do not restart on" config_error_stays_down

echo "1..$n"
