#!/usr/bin/env bash
# Benchmark of `sluice proxy` against a direct connection and HAProxy 2.6, side
# by side in one run, on loopback. Not a test: it prints figures.
#
#   scripts/bench-proxy.sh [SECONDS_PER_RUN] [ROUNDS] [CONNECTION_COUNTS] [THREADS]
#
# CONNECTION_COUNTS defaults to "50 500 5000". THREADS, when given, is each
# proxy's thread count (sluice `--workers`, HAProxy `nbthread`); by default
# each runs its own default, one thread per core. Upstream: nginx (Debian)
# answering a tiny keep-alive HTTP response, so wrk's request/response round
# trip is an echo round trip through each path.
#  * TCP mode: direct vs `sluice proxy --protocol tcp` vs HAProxy `mode tcp`.
#  * HTTP mode: `sluice proxy --protocol http` vs HAProxy `mode http` with
#    `option idle-close-on-response` (both parse every request and response).
#    Rounds interleave all paths so machine noise hits them alike; the best
#    round of each is reported, and the socket errors (connect, read, write,
#    timeout) and non-2xx responses of all rounds are added up. A second
#    table pairs the rounds: every round's p99, the medians over the rounds,
#    and in how many rounds sluice was at least as fast and its p99 at most
#    HAProxy's (a difference smaller than the spread between rounds shows up
#    there as a split count).
#  * connection churn (50 connections, `Connection: close` on every request,
#    so every request opens a new connection through each path: the cost of
#    accepting, connecting upstream and closing, as in a reconnect storm),
#    in the same rounds and tables, on the rows "50, new conn. per request".
#  * switch under load (HTTP mode, 500 connections): halfway through a run,
#    sluice evacuates the upstream its connections are on (`Connection: close`
#    between exchanges; the clients reconnect to the other upstream), and
#    HAProxy is soft-stopped by a second HAProxy (`-sf`, the reload every
#    HAProxy user does); wrk's errors and non-2xx responses are what a client
#    sees of the switch.
#  * memory (measured first, on the fresh processes): resident memory growth of
#    the proxy process per idle proxied connection, at 1,000 and 9,000 connections (a proxy holds two file
#    descriptors per connection and this machine allows 20,000 per process, so
#    ~9,900 is the ceiling for any single proxy process here).
# Needs: haproxy, nginx, wrk (apt-get install -y haproxy nginx-light wrk), python3,
# curl, and an open-file limit of at least 12,000 (`ulimit -Hn`).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-3}
conns=${3:-50 500 5000}
threads=${4:-}
if [ -n "$threads" ] && ! [[ "$threads" =~ ^[1-9][0-9]*$ ]]; then
  echo "bench-proxy: THREADS (the fourth argument) must be a whole number of threads, 1 or more; got '$threads'" >&2
  exit 1
fi

for tool in haproxy nginx wrk python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    echo "bench-proxy: $tool is missing: apt-get install -y haproxy nginx-light wrk curl" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin"
# Each proxied connection holds two descriptors in the proxy; wrk and the
# idle-connection client hold one each.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  echo "bench-proxy: the open-file limit is $(ulimit -n); 5,000 proxied connections need 12,000 (raise the hard limit: /etc/security/limits.conf or LimitNOFILE)" >&2
  exit 1
fi

cargo build --release -q -p sluice
sluice=target/release/sluice

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 ($2) never opened" >&2; for f in "$work"/*.log "$work"/*.err; do echo "== $f" >&2; cat "$f" >&2; done; exit 1; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# wrk's latency (e.g. 785.00us, 2.70ms, 1.20s) in milliseconds.
ms() { awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); n = v + 0;
  if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
  printf "%.2f", n }'; }

up=$(free_port); admin=$(free_port); admin_http=$(free_port)
declare -A port=(
  [direct]=$up [sluice]=$(free_port) [haproxy]=$(free_port)
  [sluice-http]=$(free_port) [haproxy-http]=$(free_port)
)

# multi_accept: without it nginx takes one new connection per pass of its event
# loop. A proxy that dials nginx on a client's first request (HTTP mode, both
# proxies) then opens its 5,000 while nginx is already busy serving, and their
# first requests waited up to 2 s in nginx's backlog: rounds of a 1 s p99 that
# measured nginx's accept, not the proxy (docs/benchmarks.md).
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 19000; multi_accept on; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$up backlog=4096; location / { return 200 "ok\n"; } }
}
CONF
nginx -c "$work/nginx.conf" -e "$work/nginx.err" & pids+=($!)

# HAProxy's backlog defaults to its maxconn (capped by net.core.somaxconn).
cat > "$work/haproxy.cfg" <<CONF
global
  maxconn 9800
${threads:+  nbthread $threads}
defaults
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend f
  mode tcp
  bind 127.0.0.1:${port[haproxy]}
  default_backend b
backend b
  mode tcp
  server s1 127.0.0.1:$up maxconn 9800
frontend fh
  mode http
  option idle-close-on-response
  bind 127.0.0.1:${port[haproxy-http]}
  default_backend bh
backend bh
  mode http
  server s1 127.0.0.1:$up maxconn 9800
CONF
haproxy -f "$work/haproxy.cfg" -q & pids+=($!); hpid=$!

"$sluice" proxy --listen "127.0.0.1:${port[sluice]}" --upstream "nginx=127.0.0.1:$up" \
  --admin "127.0.0.1:$admin" --protocol tcp ${threads:+--workers "$threads"} >"$work/sluice.log" 2>&1 & pids+=($!); spid=$!
# Two upstreams naming the same nginx: the switch moves connections from one to the other.
"$sluice" proxy --listen "127.0.0.1:${port[sluice-http]}" --upstream "a=127.0.0.1:$up" \
  --upstream "b=127.0.0.1:$up" --admin "127.0.0.1:$admin_http" --protocol http \
  ${threads:+--workers "$threads"} >"$work/sluice-http.log" 2>&1 & pids+=($!)

for p in "${!port[@]}"; do wait_port "${port[$p]}" "$p"; done

declare -A best_rps best_p99 errors round_p99 round_rps
# wrk NAME PORT CONNS [SECONDS] -> its output on stdout; with close=1, every
# request asks for `Connection: close` (a new connection per request).
close=
wrk_run() {
  local header=(); [ -n "$close" ] && header=(-H "Connection: close")
  wrk -t1 -c"$3" -d"${4:-$secs}s" --latency "${header[@]}" "http://127.0.0.1:$2/" 2>&1
}
churn_conns=50
# The key of a run's figures: the path and the connection count, "close-" first
# for the churn runs.
key() { echo "$1/${close:+close-}$2"; }
# The connection count as the tables show it.
label() { case $1 in close-*) echo "${1#close-}, new conn. per request" ;; *) echo "$1" ;; esac; }
# The socket errors plus non-2xx/3xx responses in wrk's output.
wrk_errors() { awk '/Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
  /Non-2xx/ { n += $NF } END { print n + 0 }' <<<"$1"; }
run_wrk() { # name conns
  local out rps p50 p99 err key; key=$(key "$1" "$2")
  out=$(wrk_run "$1" "${port[$1]}" "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  err=$(wrk_errors "$out")
  echo "  $1 -c$2${close:+ (Connection: close)}: $rps req/s, p50 $p50, p99 $p99, errors $err $(grep -E 'Socket errors|Non-2xx' <<<"$out" | tr -s ' \n' ' ')" >&2
  errors[$key]=$(( ${errors[$key]:-0} + err ))
  round_p99[$key]="${round_p99[$key]:+${round_p99[$key]}, }$(ms "$p99")"
  round_rps[$key]="${round_rps[$key]:+${round_rps[$key]}, }$rps"
  if [ -z "${best_rps[$key]:-}" ] || awk "BEGIN{exit !($rps > ${best_rps[$key]})}"; then
    best_rps[$key]=$rps; best_p99[$key]=$p99
  fi
}

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

# Idle memory first, on fresh processes: after the load rounds the allocators
# reuse freed memory and the growth reads near zero.
declare -A idle_kib
for n in 1000 9000; do
  idle_kib[sluice/$n]=$(idle "$spid" "${port[sluice]}" "$n")
  idle_kib[haproxy/$n]=$(idle "$hpid" "${port[haproxy]}" "$n")
  echo "idle $n: sluice ${idle_kib[sluice/$n]} KiB, haproxy ${idle_kib[haproxy/$n]} KiB per connection" >&2
done

paths="direct sluice haproxy sluice-http haproxy-http"
echo "bench-proxy: $rounds rounds of ${secs}s per path and connection count ($conns, and $churn_conns with a new connection per request), threads per proxy: ${threads:-the default, one per core}" >&2
for r in $(seq "$rounds"); do
  echo "round $r" >&2
  for c in $conns; do
    for p in $paths; do run_wrk "$p" "$c"; done
  done
  close=1
  for p in $paths; do run_wrk "$p" "$churn_conns"; done
  close=
done

# The switch under load: wrk for 3*secs, the switch after secs.
admin_url="http://127.0.0.1:$admin_http"
switch() { # name -> "req/s p99 errors"
  local w
  if [ "$1" = sluice-http ]; then
    # Every client starts on upstream a.
    curl -fsS -XPUT "$admin_url/upstreams/b" -d '{"serving": false}' >/dev/null
  fi
  wrk_run "$1" "${port[$1]}" 500 $((3 * secs)) > "$work/switch.out" & w=$!
  sleep "$secs"
  if [ "$1" = sluice-http ]; then
    # Evacuate a: each client gets `Connection: close` and reconnects to b.
    curl -fsS -XPUT "$admin_url/upstreams/b" -d '{"serving": true}' >/dev/null
    curl -fsS -XPOST "$admin_url/upstreams/a/evacuation" \
      -d '{"conn_evict_rate": 1000, "wait_takeover": 0, "wait_health_check": 0}' >/dev/null
  else
    haproxy -f "$work/haproxy.cfg" -q -sf "$hpid" >"$work/haproxy2.log" 2>&1 & echo $! > "$work/haproxy2.pid"
  fi
  wait "$w" || true
  local out; out=$(cat "$work/switch.out")
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out") $(wrk_errors "$out")"
}
echo "switch under load" >&2
sw_sluice=$(switch sluice-http)
echo "  sluice evacuation: $sw_sluice" >&2
sw_haproxy=$(switch haproxy-http)
echo "  haproxy soft-stop: $sw_haproxy" >&2
pids+=("$(cat "$work/haproxy2.pid")")

row() { # mode sluice-path haproxy-path key-suffix (conns, or close-conns)
  local s="$2/$4" h="$3/$4"
  printf '| %s | %s | %s | %s | %.2f× | %s | %s | %s | %s | %s |\n' "$1" "$(label "$4")" \
    "${best_rps[$s]}" "${best_rps[$h]}" "$(awk "BEGIN{print ${best_rps[$s]} / ${best_rps[$h]}}")" \
    "$(ms "${best_p99[$s]}") ms" "$(ms "${best_p99[$h]}") ms" "${errors[$s]}" "${errors[$h]}" \
    "${best_rps[direct/$4]}"
}
echo
echo "| mode | conns | sluice req/s | HAProxy req/s | ratio | sluice p99 | HAProxy p99 | sluice errors | HAProxy errors | direct req/s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in $conns "close-$churn_conns"; do row tcp sluice haproxy "$c"; done
for c in $conns "close-$churn_conns"; do row http sluice-http haproxy-http "$c"; done
# Every round, paired: a round ran both proxies back to back, so comparing
# round by round cancels the slow drift of a shared host, and the medians
# and the rounds won say what the best rounds alone cannot (whether a
# difference is larger than the spread between rounds).
paired() { # mode sluice-path haproxy-path key-suffix (conns, or close-conns)
  local s="$2/$4" h="$3/$4"
  awk -v sr="${round_rps[$s]}" -v hr="${round_rps[$h]}" -v sp="${round_p99[$s]}" -v hp="${round_p99[$h]}" \
      -v mode="$1" -v c="$(label "$4")" '
    function median(list, a, n, i, j, t) {
      n = split(list, a, ", ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    BEGIN {
      n = split(sr, a, ", "); split(hr, b, ", "); split(sp, x, ", "); split(hp, y, ", ")
      for (i = 1; i <= n; i++) { faster += (a[i] + 0 >= b[i] + 0); tighter += (x[i] + 0 <= y[i] + 0) }
      printf "| %s, %s | %s | %s | %.2f× | %d of %d | %.2f / %.2f | %d of %d |\n", mode, c, sp, hp,
        median(sr) / median(hr), faster, n, median(sp), median(hp), tighter, n
    }'
}
echo
echo "| mode, conns | sluice p99 per round (ms) | HAProxy p99 per round (ms) | median req/s ratio | rounds sluice ≥ HAProxy req/s | median p99 sluice / HAProxy (ms) | rounds sluice p99 ≤ HAProxy's |"
echo "|---|---|---|---:|---:|---:|---:|"
for c in $conns "close-$churn_conns"; do paired tcp sluice haproxy "$c"; done
for c in $conns "close-$churn_conns"; do paired http sluice-http haproxy-http "$c"; done
echo
echo "| switch under load (http, 500 conns, $((3 * secs)) s) | req/s | p99 | errors |"
echo "|---|---:|---:|---:|"
read -r a b c <<<"$sw_sluice"; echo "| sluice evacuation (1,000/s) | $a | $(ms "$b") ms | $c |"
read -r a b c <<<"$sw_haproxy"; echo "| HAProxy soft-stop (-sf) | $a | $(ms "$b") ms | $c |"
echo
echo "| proxy | idle conns | KiB per idle connection |"
echo "|---|---:|---:|"
for n in 1000 9000; do
  echo "| sluice | $n | ${idle_kib[sluice/$n]} |"
  echo "| haproxy | $n | ${idle_kib[haproxy/$n]} |"
done
