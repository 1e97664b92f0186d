#!/usr/bin/env bash
# Benchmark of `sluice proxy` (TCP mode) against a direct connection and HAProxy 2.6
# in TCP mode, side by side in one run, on loopback. Not a test: it prints figures.
#
#   scripts/bench-proxy.sh [SECONDS_PER_RUN] [ROUNDS]
#
# Upstream: nginx (Debian) answering a tiny keep-alive HTTP response, so wrk's
# request/response round trip is an echo round trip through each path.
#  * throughput and latency: wrk -c 50 and -c 500 keep-alive connections
#    (p50/p99 round-trip latency, requests/s); rounds interleave the three paths
#    so machine noise hits them alike; the best round of each is reported.
#  * memory: resident memory growth of the proxy process per idle proxied
#    connection, at 1,000 and 9,000 connections (a proxy holds two file
#    descriptors per connection and this machine allows 20,000 per process, so
#    ~9,900 is the ceiling for any single proxy process here).
# Needs: haproxy, nginx, wrk (apt-get install -y haproxy nginx-light wrk), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-3}

for tool in haproxy nginx wrk python3; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    echo "bench-proxy: $tool is missing: apt-get install -y haproxy nginx-light wrk" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin"

cargo build --release -q -p sluice
sluice=target/release/sluice

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 ($2) never opened" >&2; for f in "$work"/*.log "$work"/*.err; do echo "== $f" >&2; cat "$f" >&2; done; exit 1; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

up=$(free_port); sp=$(free_port); admin=$(free_port); hp=$(free_port)

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 19000; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$up; location / { return 200 "ok\n"; } }
}
CONF
nginx -c "$work/nginx.conf" -e "$work/nginx.err" & pids+=($!)

cat > "$work/haproxy.cfg" <<CONF
global
  maxconn 9800
defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend f
  bind 127.0.0.1:$hp
  default_backend b
backend b
  server s1 127.0.0.1:$up maxconn 9800
CONF
haproxy -f "$work/haproxy.cfg" -q & pids+=($!); hpid=$!

"$sluice" proxy --listen "127.0.0.1:$sp" --upstream "nginx=127.0.0.1:$up" --admin "127.0.0.1:$admin" --protocol tcp >"$work/sluice.log" 2>&1 & pids+=($!); spid=$!

wait_port "$up" nginx; wait_port "$hp" haproxy; wait_port "$sp" sluice

declare -A best_rps best_p50 best_p99
run_wrk() { # name port conns
  local out rps p50 p99
  out=$(wrk -t1 -c"$3" -d"${secs}s" --latency "http://127.0.0.1:$2/" 2>&1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "  $1 -c$3: $rps req/s, p50 $p50, p99 $p99" >&2
  local key="$1/$3"
  if [ -z "${best_rps[$key]:-}" ] || awk "BEGIN{exit !($rps > ${best_rps[$key]})}"; then
    best_rps[$key]=$rps; best_p50[$key]=$p50; best_p99[$key]=$p99
  fi
}

echo "bench-proxy: $rounds rounds of ${secs}s per path and connection count" >&2
for r in $(seq "$rounds"); do
  echo "round $r" >&2
  for c in 50 500; do
    run_wrk direct "$up" "$c"
    run_wrk sluice "$sp" "$c"
    run_wrk haproxy "$hp" "$c"
  done
done

idle() { # pid port count -> KiB per connection
  local before after
  sleep 1; before=$(rss_kib "$1")
  exec {fd}> >(python3 scripts/idle_conns.py 127.0.0.1 "$2" "$3" > "$work/idle.out")
  for _ in $(seq 600); do grep -q ready "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
  sleep 2; after=$(rss_kib "$1")
  exec {fd}>&-
  sleep 2
  awk -v a="$after" -v b="$before" -v n="$3" 'BEGIN { printf "%.2f", (a-b)/n }'
}

echo
echo "| path | conns | requests/s | p50 | p99 |"
echo "|---|---:|---:|---:|---:|"
for c in 50 500; do
  for p in direct sluice haproxy; do
    k="$p/$c"; echo "| $p | $c | ${best_rps[$k]} | ${best_p50[$k]} | ${best_p99[$k]} |"
  done
done
echo
echo "| proxy | idle conns | KiB per idle connection |"
echo "|---|---:|---:|"
for n in 1000 9000; do
  echo "| sluice | $n | $(idle "$spid" "$sp" "$n") |"
  echo "| haproxy | $n | $(idle "$hpid" "$hp" "$n") |"
done
