#!/usr/bin/env bash
# tests/valgrind.sh -- runs tests with every process they start from $BIN under valgrind's memcheck, and
# fails on any invalid access, uninitialised read or definite/indirect leak in any of those processes.
#
# The tests are not changed: they run with BIN pointing at a directory of wrappers, one per tool, that exec
# valgrind on the real tool (exec keeps the pid, so the tests' signals reach the tool). Each process writes
# its report to $BUILD/valgrind/logs/vg.PID; -q leaves a report empty unless it found something, so the
# check at the end is "every report is empty". "Still reachable" and "possibly lost" blocks (libzmq's and
# libsodium's process-lifetime allocations) are not shown and do not fail. A process the test kills with
# SIGKILL has no leak check, but its invalid accesses are reported when they happen.
# RB_TIMEOUT_SCALE tells the harness to wait longer: the tools run some twenty times slower.
set -u
cd "$(dirname "$0")/.."
real_bin=$(cd "${BIN:-bin}" && pwd)
vg="${BUILD:-build/release}/valgrind"
rm -rf "$vg"
mkdir -p "$vg/bin" "$vg/logs"
logs=$(cd "$vg/logs" && pwd)
for tool in "$real_bin"/referral-*; do
    cat >"$vg/bin/$(basename "$tool")" <<WRAP
#!/bin/sh
exec valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \\
    --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-fds=no \\
    --log-file='$logs/vg.%p' '$tool' "\$@"
WRAP
    chmod 0755 "$vg/bin/$(basename "$tool")"
done
start=$(date +%s)
BIN="$vg/bin" BUILD="$vg" RB_TIMEOUT_SCALE="${RB_TIMEOUT_SCALE:-4}" tests/run.sh "$@"
rc=$?
reports=$(find "$logs" -name 'vg.*' -size +0 | sort)
echo "valgrind: $(find "$logs" -name 'vg.*' | wc -l) processes, $(echo "$reports" | grep -c .) with a report," \
    "$(($(date +%s) - start)) s"
for r in $reports; do
    echo "--- $r"
    head -n 60 "$r"
done
[ "$rc" = 0 ] && [ -z "$reports" ]
