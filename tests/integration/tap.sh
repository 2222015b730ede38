# tap.sh -- sourced by the shell tests: `check NAME COMMAND...` prints one TAP line, ok when the command
# succeeds, else not ok followed by what the command printed. Needs $work, the test's temporary directory.
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
