#!/usr/bin/env bash
# How common HTTP/2 clients take sluice's two-phase GOAWAY: each client runs
# at full speed through `sluice proxy --protocol http` to two nginx h2c
# upstreams while upstream a is evacuated (every connection on it gets
# GOAWAY(2^31-1) + PING, then GOAWAY(last stream id)). Prints each client's
# own summary: what it counted as failed is a client limit (the streams
# were refused before the server saw them, RFC 9113 §6.8), not a lost
# request. Yardstick in the same run: `sluice bench conn --protocol h2`,
# which retries unprocessed calls as gRPC clients do.
#
# Usage: scripts/goaway-clients.sh [SECONDS] [CONNECTIONS]
#        (H2LOAD_REQUESTS: the count of the h2load -n run, default 150000)
# Needs: nginx, h2load (nghttp2-client), oha (cargo install oha), a built
# target/release/sluice (or SLUICE=path).
set -euo pipefail
SECONDS_RUN=${1:-8}
CONNS=${2:-50}
SLUICE=${SLUICE:-target/release/sluice}
for p in nginx h2load oha "$SLUICE"; do
  command -v "$p" >/dev/null || { echo "missing $p (scripts/install-test-deps installs the tools; cargo build --release builds sluice)" >&2; exit 1; }
done
dir=$(mktemp -d /tmp/goaway-clients.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
A=$(port); B=$(port)
cat > "$dir/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $dir/nginx.pid;
error_log $dir/error.log warn; worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http { access_log off; client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  keepalive_requests 100000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$A http2; location / { return 200 "ok a\n"; } }
  server { listen 127.0.0.1:$B http2; location / { return 200 "ok b\n"; } }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf" & pids+=($!)

run() { # NAME COMMAND...: one client run against a fresh proxy, upstream a evacuated after 2 s
  local name=$1; shift
  local listen admin; listen=$(port); admin=$(port)
  "$SLUICE" proxy --listen "127.0.0.1:$listen" --admin "$admin" --protocol http \
    --upstream "a=127.0.0.1:$A" --upstream "b=127.0.0.1:$B" 2>"$dir/proxy-$name.log" & local proxy=$!
  pids+=($proxy)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
  local cmd=("${@//LISTEN_PORT/$listen}")
  cmd=("${cmd[@]//LISTEN/127.0.0.1:$listen}")
  "${cmd[@]}" >"$dir/$name.out" 2>&1 & local tool=$!
  sleep 2
  curl -sf -XPOST "http://127.0.0.1:$admin/upstreams/a/evacuation" \
    -d '{"conn_evict_rate": 200, "wait_health_check": 0}' >/dev/null
  wait "$tool" || true
  local goaways
  goaways=$(curl -sf "http://127.0.0.1:$admin/metrics" | awk '/^sluice_evictions_total\{.*upstream="a"/ {s+=$NF} END {print s+0}')
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  echo "== $name ($goaways connections evicted from a)"
  grep -E "$GREP" "$dir/$name.out" || cat "$dir/$name.out"
}
GREP='^requests:|^status codes:|Success rate|Total:|\[[0-9]+\] |Error distribution|^ +\[|requests +[0-9]|h2 requests|disconnects|goaway'
# h2load by duration (-D) and by count (-n: streams it never got to finish
# are then reported as failed).
run h2load-D h2load -c "$CONNS" -m 10 -D "$SECONDS_RUN" "http://LISTEN/"
run h2load-n h2load -c "$CONNS" -m 10 -n "${H2LOAD_REQUESTS:-150000}" "http://LISTEN/"
run oha-http2 oha --no-tui --http2 -c "$CONNS" -p 10 -z "${SECONDS_RUN}s" "http://LISTEN/"
run sluice-bench-h2 "$SLUICE" bench conn --protocol h2 -q -c "$CONNS" --http-interval-ms 0 \
  --duration "$SECONDS_RUN" -p LISTEN_PORT
