#!/usr/bin/env bash
# Measures `sluice bench conn` itself: connections per second and memory
# per client, at 18k (one process, against mosquitto), 20k (two worker
# processes chosen automatically, against the hidden sink) and 100k
# (workers + --source-ips, against several sinks sharing one port with
# SO_REUSEPORT), next to a paho-mqtt fleet doing the 18k mosquitto run as a
# yardstick. Writes JSON summaries to $OUT and prints a Markdown table for
# docs/benchmarks.md.
#
#   scripts/bench-bench.sh            # everything
#   SKIP_100K=1 scripts/bench-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/bench-bench}
PY=${SLUICE_PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
cargo build --release -p sluice >&2
S=target/release/sluice

pids=()
port=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}
stop_all() { cleanup; pids=(); }

# Closed client sockets sit in TIME_WAIT for 60 s holding their ephemeral
# port; wait for them to clear so one run does not starve the next of ports
# (sluice's MQTT clients let the server close first; paho closes first).
wait_quiet() {
    for _ in $(seq 90); do
        [ "$(ss -tan state time-wait | wc -l)" -lt 2000 ] && return 0
        sleep 1
    done
}

# A fresh mosquitto on a free port, in $port. (Not run in a command
# substitution: the pids must reach this shell's cleanup.)
mosquitto_start() {
    local conf
    port=$(free_port)
    conf="$OUT/mosquitto-$port.conf"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n' "$port" >"$conf"
    mosquitto -c "$conf" >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$port"
}

# N sinks sharing one free port, in $port.
sinks_start() {
    local n=$1
    port=$(free_port)
    for _ in $(seq "$n"); do
        "$S" bench sink -p "$port" >/dev/null &
        pids+=($!)
    done
    wait_port "$port"
}

run() { # name, args… — one sluice bench conn run, summary to $OUT/name.json
    local name=$1
    shift
    wait_quiet
    echo "== $name: sluice bench conn $*" >&2
    "$S" bench conn -q "$@" --json "$OUT/$name.json" >&2
}

mosquitto_start
run mosquitto-18k -p "$port" -c 18000 -i 0 --duration 12
stop_all

mosquitto_start
wait_quiet
echo "== paho-18k: yardstick_paho_fleet.py -c 18000" >&2
"$PY" scripts/yardstick_paho_fleet.py -p "$port" -c 18000 >"$OUT/paho-18k.json"
cat "$OUT/paho-18k.json" >&2
stop_all

sinks_start 2
run sink-20k -p "$port" -c 20000 -i 0 --duration 12
stop_all

if [ -z "${SKIP_100K:-}" ]; then
    sinks_start 7
    run sink-100k -p "$port" -c 100000 -i 0 --source-ips 127.0.0.2-127.0.0.40 --duration 40
    stop_all
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| run | server | clients | processes | connected at end | all connected in | connections/s | connect p50 / p99 | peak RSS (sum) | memory per client |")
print("|---|---|---|---|---|---|---|---|---|---|")
rows = [("mosquitto-18k", "mosquitto 2.0"), ("sink-20k", "2 sinks"), ("sink-100k", "7 sinks, 39 source IPs")]
for name, server in rows:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        continue
    s = json.load(open(path))
    r = s["ramp"]
    print(f"| sluice bench conn | {server} | {s['clients']} | {s['workers']} | {s['connectedAtEnd']} | "
          f"{r['secs']:.2f} s | {r['connectionsPerSec']:.0f} | {s['connectMillis']['p50']:.1f} / {s['connectMillis']['p99']:.1f} ms | "
          f"{s['memory']['rssPeakBytes'] / 2**20:.0f} MiB | {s['memory']['bytesPerClient'] / 1024:.1f} KiB |")
p = os.path.join(out, "paho-18k.json")
if os.path.exists(p):
    y = json.load(open(p))
    print(f"| {y['client']} (yardstick) | mosquitto 2.0 | {y['clients']} | 1 | {y['connected']} | {y['secs']:.2f} s | "
          f"{y['connectionsPerSec']} | – | {y['rssPeakBytes'] / 2**20:.0f} MiB | {y['bytesPerClient'] / 1024:.1f} KiB |")
PY
