# tap.sh -- sourced by the shell tests: `check NAME COMMAND...` prints one TAP line, ok when the command
# succeeds, else not ok followed by what the command printed; `until_true` waits for a condition. Needs
# $work, the test's temporary directory.
n=0

check() {
    local name=$1
    shift
    n=$((n + 1))
    if "$@" >"$work/out" 2>&1; then
        echo "ok $n - $name"
    else
        echo "not ok $n - $name"
        sed 's/^/# /' "$work/out"
    fi
}

until_true() { # until_true SECONDS COMMAND...: polls the command until it succeeds or time is up
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}
