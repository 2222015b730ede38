#!/usr/bin/env bash
# rabbitmq.sh -- part 6 of `make bench`, run only with RABBITMQ=1: the broker path's closed loop through a
# RabbitMQ of its own (bench/rabbitmq_load.c: durable quorum queues, persistent messages, publisher
# confirms, per-message consumer acks), for the ratio to the broker path. docs/PERFORMANCE.md, "RabbitMQ
# reference".
#
# Installs rabbitmq-server and librabbitmq-dev when missing, with no service started by the package (a
# fresh install's rabbitmq-server and epmd units are disabled). Its own node lives in a temporary
# directory (data, logs, config, Erlang cookie), listens on 127.0.0.1 only, on ports the system picks
# (AMQP, Erlang distribution, epmd), has no plugins, and is stopped with its epmd on exit.
#
# Env: BIN, BUILD (as every part); RABBITMQ_COUNT (20000) referrals, RABBITMQ_CONNECTIONS (8) publishing
# connections a side, RABBITMQ_WINDOW (1) unconfirmed publishes per connection, RABBITMQ_WIDE_WINDOW (16)
# a second run with that window (0: none), RABBITMQ_PREFETCH (256) per consumer.
# Last line: RESULT {json}.
set -euo pipefail

BIN=${BIN:-bin}
BUILD=${BUILD:-build/release}
COUNT=${RABBITMQ_COUNT:-20000}
CONNECTIONS=${RABBITMQ_CONNECTIONS:-8}
WINDOW=${RABBITMQ_WINDOW:-1}
WIDE_WINDOW=${RABBITMQ_WIDE_WINDOW:-16}
PREFETCH=${RABBITMQ_PREFETCH:-256}
BOOT_TIMEOUT=120
LOAD=$BUILD/bench/rabbitmq_load

die() {
    echo "rabbitmq.sh: $*" >&2
    exit 1
}
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

# The package's postinst would start a system rabbitmq on 0.0.0.0:5672 (and epmd on *:4369): a
# policy-rc.d that denies every start keeps it down while installing (unless the machine already has
# one), then the units a fresh install enabled are disabled (and stopped, under a running systemd).
install_packages() {
    local missing=() p units=
    for p in rabbitmq-server librabbitmq-dev; do
        installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    installed rabbitmq-server || units=rabbitmq-server.service
    installed erlang-base || units="$units epmd.service epmd.socket"
    echo "installing Debian packages: ${missing[*]}"
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# bench/rabbitmq.sh: no service starts while it installs rabbitmq-server\nexit 101\n' |
            $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
        policy=/usr/sbin/policy-rc.d
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
    if [ -n "$policy" ]; then
        $sudo rm -f "$policy"
        policy=
    fi
    if [ -n "$units" ]; then
        if [ -d /run/systemd/system ]; then
            $sudo systemctl disable --now -q $units
        else
            $sudo systemctl disable -q $units 2>/dev/null || true
            $sudo update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
        fi
    fi
}

alive() {
    local p
    for p; do
        kill -0 "$p" 2>/dev/null && return 0
    done
    return 1
}

work= server_pid= epmd_pid= load_pid= policy=
cleanup() {
    local rc=$? beam= i
    trap - EXIT INT TERM
    [ -z "$policy" ] || $sudo rm -f "$policy"
    if [ -n "$load_pid" ]; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ]; then
        beam=$(cat "$work/rabbit.pid" 2>/dev/null || true)
        kill -TERM "$server_pid" 2>/dev/null || true # the start script turns this into a clean stop
        for ((i = 0; i < 600; i++)); do
            alive $server_pid $beam || break
            sleep 0.1
        done
        for p in $beam $server_pid; do
            kill -KILL "$p" 2>/dev/null && echo "rabbitmq.sh: killed $p, which did not stop" >&2
        done
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "$epmd_pid" ]; then
        kill -TERM "$epmd_pid" 2>/dev/null || true
        wait "$epmd_pid" 2>/dev/null || true
    fi
    [ -z "$work" ] || rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_packages
make -s BUILD="$BUILD" BIN="$BIN" "$LOAD" || die "cannot build $LOAD"
if pgrep -x beam.smp >/dev/null; then
    echo "rabbitmq.sh: note: another Erlang VM (beam.smp) is running and shares the cores" >&2
fi

work=$(mktemp -d /tmp/rabbitmq-bench.XXXXXX)
ports=$("$LOAD" --free-ports 3) || die "no free loopback ports"
read -r amqp_port dist_port epmd_port <<<"$(echo $ports)"
cat >"$work/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp_port
loopback_users.guest = true
log.console = false
log.file.level = warning
EOF
echo '[].' >"$work/enabled_plugins"
: >"$work/rabbitmq-env.conf"

# HOME holds the node's Erlang cookie; the rest keeps the node off /etc/rabbitmq and /var/lib/rabbitmq.
export HOME=$work \
    RABBITMQ_NODENAME=bench$$@localhost \
    RABBITMQ_CONF_ENV_FILE=$work/rabbitmq-env.conf \
    RABBITMQ_CONFIG_FILE=$work/rabbitmq.conf \
    RABBITMQ_ADVANCED_CONFIG_FILE=$work/advanced.config \
    RABBITMQ_ENABLED_PLUGINS_FILE=$work/enabled_plugins \
    RABBITMQ_PLUGINS_EXPAND_DIR=$work/plugins \
    RABBITMQ_MNESIA_BASE=$work/mnesia \
    RABBITMQ_LOG_BASE=$work/log \
    RABBITMQ_PID_FILE=$work/rabbit.pid \
    RABBITMQ_DIST_PORT=$dist_port \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_EPMD_PORT=$epmd_port
epmd -address 127.0.0.1 -port "$epmd_port" &
epmd_pid=$!
server=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server 2>/dev/null | tail -1)
[ -x "$server" ] || die "no rabbitmq-server start script under /usr/lib/rabbitmq"
(cd "$work" && exec "$server" >"$work/server.out" 2>&1) &
server_pid=$!

echo "starting RabbitMQ on 127.0.0.1:$amqp_port (distribution $dist_port, epmd $epmd_port)"
t0=$SECONDS
until (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -20 "$work/server.out" "$work"/log/*.log >&2 2>/dev/null || true
        die "rabbitmq-server exited while starting"
    fi
    [ $((SECONDS - t0)) -lt "$BOOT_TIMEOUT" ] || die "rabbitmq-server not listening after ${BOOT_TIMEOUT}s"
    sleep 0.2
done
echo "RabbitMQ up in $((SECONDS - t0))s"

# The node's CPU seconds so far (utime + stime of the Erlang VM).
beam_cpu_s() {
    awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / tck }' "/proc/$(cat "$work/rabbit.pid")/stat"
}

# One run of the load with window $1, in the background so a signal stops it at once: its table on stdout,
# its RESULT object in $result.
run_load() {
    local cpu0 cpu1 out=$work/load.out
    cpu0=$(beam_cpu_s)
    "$LOAD" --port "$amqp_port" --count "$COUNT" --connections "$CONNECTIONS" --window "$1" \
        --prefetch "$PREFETCH" >"$out" &
    load_pid=$!
    wait "$load_pid" || {
        load_pid=
        cat "$out"
        tail -20 "$work"/log/*.log >&2 2>/dev/null || true
        die "the load with window $1 failed"
    }
    load_pid=
    cpu1=$(beam_cpu_s)
    grep -v '^RESULT ' "$out"
    result=$(sed -n 's/^RESULT //p' "$out" | tail -1)
    result=$(jq -c --argjson c0 "$cpu0" --argjson c1 "$cpu1" \
        '. + {rabbitmq_cpu_s_per_1000: ((($c1 - $c0) * 1000 / .rabbitmq_count) * 1000 | round / 1000)}' <<<"$result")
    printf '  %-34s %12s\n' "RabbitMQ CPU s per 1,000 referrals" "$(jq .rabbitmq_cpu_s_per_1000 <<<"$result")"
}

run_load "$WINDOW"
main=$result
if [ "$WIDE_WINDOW" -gt 0 ] && [ "$WIDE_WINDOW" != "$WINDOW" ]; then
    run_load "$WIDE_WINDOW"
    main=$(jq -c --argjson w "$result" '. + {rabbitmq_wide_window: $w.rabbitmq_window,
        rabbitmq_wide_window_per_s: $w.rabbitmq_per_s, rabbitmq_wide_window_confirm_p99_ms: $w.rabbitmq_confirm_p99_ms}' \
        <<<"$main")
fi
echo "RESULT $main"
