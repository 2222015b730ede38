#!/usr/bin/env bash
# tests/run.sh -- runs every test the Makefile names and prints one closing line "N passed, N failed".
#
# Arguments are test programs (cmocka groups printing TAP), "fuzz:PROGRAM" (a libFuzzer target run for
# FUZZ_SECONDS on its checked-in corpus) and "format:" (clang-format check of every C source). Each runs
# under a hard timeout; a program that crashes, times out or exits non-zero without reporting a failure
# counts as one failure more, so a crash can never pass for success.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
failures=()
out_dir="${BUILD:-build/release}/test-logs"
mkdir -p "$out_dir"

record() { # record NAME RESULT(0|1) LOGFILE
    if [ "$2" = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$1 (log: $3)")
    fi
}

run_tap() { # a cmocka program: count its ok / not ok lines
    local prog=$1 name log rc ok bad
    name=$(basename "$prog")
    log="$out_dir/$name.log"
    CMOCKA_MESSAGE_OUTPUT=tap timeout -k 5 "${TEST_TIMEOUT:-600}" "$prog" >"$log" 2>&1
    rc=$?
    ok=$(grep -c '^ok ' "$log")
    bad=$(grep -c '^not ok ' "$log")
    passed=$((passed + ok))
    failed=$((failed + bad))
    grep '^not ok ' "$log" | sed "s|^|$name: |"
    # CI shows only the end of what this prints: the summary carries each failure with the "# " lines
    # cmocka wrote around it (the assertion and its message), at most 8 of them before and 8 after.
    [ "$bad" -gt 0 ] && failures+=("$name: $bad failed (log: $log)
$(awk '/^# / { if (after > 0) { print "      " $0; after-- } else ctx[n++ % 8] = $0; next }
       /^not ok / { for (i = (n > 8 ? n - 8 : 0); i < n; i++) print "      " ctx[i % 8]; n = 0
                    print "    " $0; after = 8; next }
       { n = 0; after = 0 }' "$log")")
    if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then
        record "$name exited $rc without reporting a failure" 1 "$log"
        echo "$name: exited $rc"
        tail -n 20 "$log"
    fi
    echo "$name: $ok passed, $bad failed"
}

run_fuzz() { # a libFuzzer target: a few seconds from the seed corpus must find nothing
    local prog=$1 name log corpus work
    name=$(basename "$prog")
    log="$out_dir/$name.log"
    corpus="tests/fuzz/corpus/$name"
    work=$(mktemp -d)
    timeout -k 5 300 "$prog" -max_total_time="${FUZZ_SECONDS:-4}" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$out_dir/$name-" "$work" "$corpus" >"$log" 2>&1
    local rc=$?
    rm -rf "$work"
    record "fuzz $name" "$rc" "$log"
    echo "fuzz $name: $([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc)") $(grep -o 'Done [0-9]* runs' "$log")"
}

run_format() { # every C source as clang-format would write it
    local log="$out_dir/format.log" files
    files=$(find common keys proto ledger broker adapters tests bench -name '*.[ch]' 2>/dev/null)
    # shellcheck disable=SC2086
    clang-format --style=file --dry-run --Werror $files >"$log" 2>&1
    local rc=$?
    record "format (run 'make format')" "$rc" "$log"
    echo "format: $([ $rc = 0 ] && echo ok || echo "FAILED: run 'make format'")"
}

for t in "$@"; do
    case "$t" in
    fuzz:*) run_fuzz "${t#fuzz:}" ;;
    format:) run_format ;;
    *) run_tap "$t" ;;
    esac
done

if [ ${#failures[@]} -gt 0 ]; then
    echo
    echo "failures:"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
