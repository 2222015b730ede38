#!/usr/bin/env bash
# layers_test.sh -- the layers the build enforces (docs/ARCHITECTURE.md, "Layers"); TAP.
#
# The Makefile gives each layer's code only its own headers and those of the layers below it, and links
# the layers' libraries top first. This test shows that the fence holds: a header of a layer above, or of
# the sibling program, cannot be included from below (and can from where it belongs, so the probe itself
# works); and no library calls a function defined in a layer above it, which a link alone may not catch
# when the caller's program pulls the callee in anyway.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build/release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. tests/integration/tap.sh

flavor=()
[ "$(basename "$BUILD")" = sanitize ] && flavor=(SANITIZE=1)
make_var() { # the value of a Makefile variable, for the flavor under test (its generated headers)
    make --no-print-directory -s -f Makefile -f - "${flavor[@]}" "print-$1" <<<'print-%: ; @echo $($*)'
}
layers=($(make_var LAYERS))
dir_of() { make_var "dir_$1"; }

probe() { # probe LAYER HEADER: does `#include "HEADER"` compile with LAYER's include flags?
    printf '#include "%s"\n' "$2" | cc -std=c11 -D_DEFAULT_SOURCE $(make_var "INC_$1") $(make_var PKG_CFLAGS) \
        -fsyntax-only -x c - 2>"$work/probe.err"
}

first_header() { (cd "$(dir_of "$1")" && ls -- *.h | head -n 1); }

upward_includes_fail() {
    local i j bad=0 lower upper header
    for ((i = 0; i < ${#layers[@]}; i++)); do
        lower=${layers[i]}
        for ((j = i + 1; j < ${#layers[@]}; j++)); do
            upper=${layers[j]}
            header=$(first_header "$upper")
            if probe "$lower" "$header"; then
                echo "$lower's code can include $header, of $upper above it"
                bad=1
            fi
            probe "$upper" "$header" || { echo "$upper cannot include its own $header:"; cat "$work/probe.err"; bad=1; }
        done
    done
    # broker and adapters are the programs' code side by side: the loop above fenced adapters from broker.
    if probe adapters "$(first_header broker)"; then
        echo "adapters' code can include $(first_header broker), of broker"
        bad=1
    fi
    [ "$bad" = 0 ]
}

calls_stay_below() {
    local i j bad=0 lib sym owner
    for l in "${layers[@]}"; do
        [ -f "$BUILD/lib/lib$l.a" ] || { echo "$BUILD/lib/lib$l.a is not built: run make"; return 1; }
        nm --defined-only -g "$BUILD/lib/lib$l.a" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u >"$work/def.$l"
    done
    for ((i = 0; i < ${#layers[@]}; i++)); do
        lib=${layers[i]}
        nm -u -A "$BUILD/lib/lib$lib.a" 2>/dev/null | awk '{ print $NF, $1 }' | sort -u >"$work/undef"
        while read -r sym where; do
            for ((j = i + 1; j < ${#layers[@]}; j++)); do
                owner=${layers[j]}
                if grep -qxF "$sym" "$work/def.$owner"; then
                    where=${where%:}
                    echo "${where##*/} calls $sym, defined in lib$owner.a above it"
                    bad=1
                fi
            done
        done <"$work/undef"
    done
    [ "$bad" = 0 ]
}

echo "1..2"
check "no layer can include a header of a layer above it, or of its sibling program" upward_includes_fail
check "no layer's library calls a function of a layer above it" calls_stay_below
