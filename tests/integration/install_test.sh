#!/usr/bin/env bash
# install_test.sh -- `make install` and `make uninstall` as a packager and an operator would use them,
# printing TAP.
#
# Stages an install with DESTDIR and checks that every tool, manual page, example config and systemd
# unit is in place with its mode; that the installed tools print their manual-page --help and the pages
# render without a groff warning; that the units pass `systemd-analyze verify` (which needs no running
# systemd) and rate as well hardened by `systemd-analyze security --offline`; that the example configs
# name every setting the code knows; and that uninstall takes everything away again.
# The tools come from BIN (bin/ or the sanitizer build's); make is told not to rebuild them.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. tests/integration/tap.sh

tools=$(for f in */referral-*.c; do basename "$f" .c; done | sort)
examples=$(for f in broker/dist/*.conf adapters/dist/*.conf; do basename "$f"; done)
units="referral-broker.service referral-adapter@.service"

install_into() { # install_into DESTDIR PREFIX
    make --no-print-directory -s -o all BIN="$BIN" install DESTDIR="$1" PREFIX="$2" >/dev/null
}

stage=$work/stage
staged() { # every file where it belongs, with its mode, and nothing else
    install_into "$stage" /usr/local || return 1
    local want="$work/want" p=$stage/usr/local
    {
        for t in $tools; do
            echo "755 $p/bin/$t"
            echo "644 $p/share/man/man1/$t.1"
        done
        for e in $examples; do echo "644 $p/share/doc/referral-broker/examples/$e"; done
        for u in $units; do echo "644 $p/lib/systemd/system/$u"; done
    } | sort >"$want"
    find "$stage" -type f -printf '%m %p\n' | sort | diff "$want" - || return 1
    grep -q '^ExecStart=/usr/local/bin/referral-broker run ' "$p/lib/systemd/system/referral-broker.service" &&
        grep -q '^ExecStart=/usr/local/bin/referral-adapter run --config /etc/referral/%i.conf$' \
            "$p/lib/systemd/system/referral-adapter@.service" &&
        ! grep -l '@BINDIR@' "$p"/lib/systemd/system/*
}
check "make install DESTDIR puts every tool, page, example and unit in place with its mode" staged

manual_help() { # each installed tool: --help exits 0 with every section of a manual page
    for t in $tools; do
        "$stage/usr/local/bin/$t" --help >"$work/help" || { echo "$t --help failed"; return 1; }
        for section in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS FILES "EXIT STATUS" EXAMPLES; do
            grep -qx "$section" "$work/help" || { echo "$t --help has no $section"; return 1; }
        done
        grep -q "^    $t - " "$work/help" || { echo "$t --help: NAME does not name it"; return 1; }
    done
}
check "every installed tool prints a manual-page --help" manual_help

pages_render() { # groff warns of nothing, and the NAME line is what whatis shows
    for t in $tools; do
        local page=$stage/usr/local/share/man/man1/$t.1
        groff -man -Tutf8 -ww -z "$page" || { echo "$t.1: groff warns"; return 1; }
        lexgrog "$page" | grep -q "\"$t - " || { echo "$t.1: no NAME for whatis"; return 1; }
        "$stage/usr/local/bin/$t" --help | grep -q -- '--help' || return 1
    done
}
check "the manual pages render without warnings and name their tool" pages_render

units_hardened() { # the unit files as the issue asks for them
    local d=$stage/usr/local/lib/systemd/system
    for u in $units; do
        for line in Group=referral ConfigurationDirectory=referral NoNewPrivileges=yes \
            ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes ProtectKernelTunables=yes \
            ProtectKernelModules=yes ProtectKernelLogs=yes "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" \
            MemoryDenyWriteExecute=yes SystemCallFilter=@system-service CapabilityBoundingSet= UMask=0077 \
            Restart=on-failure KillSignal=SIGTERM; do
            grep -qx "$line" "$d/$u" || { echo "$u: no '$line'"; return 1; }
        done
    done
}
check "both units run in group referral (each as its own user: units_test.sh), with the hardening options" units_hardened

# systemd-analyze verify checks that ExecStart names an executable and that man: pages exist, so this
# install is to a real prefix (no DESTDIR), its pages on MANPATH.
prefix=$work/prefix
verify_units() {
    install_into "" "$prefix" || return 1
    local d=$prefix/lib/systemd/system
    ln -s referral-adapter@.service "$d/referral-adapter@cpd-rms.service"
    MANPATH=$prefix/share/man: systemd-analyze verify "$d/referral-broker.service" \
        "$d/referral-adapter@cpd-rms.service" >"$work/verify" 2>&1
    local rc=$?
    cat "$work/verify"
    [ "$rc" = 0 ] && [ ! -s "$work/verify" ]
}
check "systemd-analyze verify finds nothing wrong in either unit" verify_units

exposure() { # 0 (locked down) to 100 (exposed); systemd rates 2.0 and below OK
    for u in referral-broker.service referral-adapter@cpd-rms.service; do
        systemd-analyze security --offline=yes --threshold=20 "$prefix/lib/systemd/system/$u" |
            grep 'Overall exposure' || return 1
    done
}
check "systemd-analyze security rates both units OK (exposure 2.0 or less)" exposure

# The example configs are the reference an operator starts from: each setting the code reads is in them.
every_setting() {
    local missing=0 key
    for key in $(grep -oE '\{"(broker|delivery|[a-z]+)", "[a-z_]+", offsetof' broker/config.c |
        cut -d'"' -f4) $(grep -oE 'strcmp\(name, "[a-z_]+"\)' broker/config.c | cut -d'"' -f2); do
        grep -qE "^;?$key = " broker/dist/broker.conf || { echo "broker.conf lacks $key"; missing=1; }
    done
    for key in $(sed -n '/adapter_keys\[\] = {/,/};/p' adapters/adapter.c | grep -oE '"[a-z_]+"' | tr -d '"'); do
        for f in adapters/dist/*.conf; do
            grep -qE "^;?$key = " "$f" || [ "$key" = recipient ] || { echo "$f lacks $key"; missing=1; }
        done
    done
    local c connector
    for c in adapters/rms_files.c adapters/rms_http.c adapters/intake_files.c adapters/intake_sqlite.c; do
        connector=$(grep -oE '\.name = "[a-z-]+"' "$c" | cut -d'"' -f2)
        f=$(grep -lx "connector = $connector" adapters/dist/*.conf) || { echo "no example for $connector"; return 1; }
        for key in $(grep -oE 'settings\[\] = \{[^}]*\}' "$c" | grep -oE '"[a-z_]+"' | tr -d '"'); do
            grep -qE "^;?$key = " "$f" || { echo "$f lacks [$connector] $key"; missing=1; }
        done
    done
    [ "$missing" = 0 ]
}
check "the example configs name every broker, adapter and connector setting" every_setting

uninstalled() {
    make --no-print-directory -s BIN="$BIN" uninstall DESTDIR="$stage" PREFIX=/usr/local &&
        [ -z "$(find "$stage" -type f)" ] &&
        make --no-print-directory -s BIN="$BIN" uninstall PREFIX="$prefix" &&
        [ -z "$(find "$prefix" -type f)" ] || { find "$stage" "$prefix" -type f; return 1; }
}
check "make uninstall removes every file install wrote" uninstalled

echo "1..$n"
