#!/usr/bin/env bash
# How long evacuations take on this machine: the timing figures the tests
# (proxy_evacuation, proxy_drain) print but no longer assert, because a loaded
# machine only makes them longer and a test must not fail for that. Not a test:
# it prints figures, and says when one is outside what an idle machine gives.
#
#   scripts/bench-evacuation.sh [ROUNDS]
#
# Expected on an idle 2-core machine (docs/benchmarks.md): 500 clients evicted
# at 100/s in 4.99-5.3 s (the pacer's 500 slots span 4.99 s); a SIGTERM drain of
# 41 clients with a 3 s delay at 20/s in 5.0-5.5 s.
# Needs: mosquitto (scripts/install-test-deps installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}

for round in $(seq "$rounds"); do
  out=$(cargo test --release -q -p sluice --test proxy_evacuation --test proxy_drain \
    -- --nocapture 2>&1) || { echo "$out" >&2; exit 1; }
  evac=$(grep -o 'evicted 500 at 100/s in [0-9.]*m\?s' <<<"$out" | awk '{print $NF}')
  drain=$(grep -o 'drain took [0-9.]*m\?s' <<<"$out" | awk '{print $NF}')
  verdict=ok
  awk -v e="$evac" -v d="$drain" 'BEGIN {
      e += 0; d += 0; exit !(e >= 4.0 && e <= 7.0 && d >= 4.9 && d <= 8.0) }' || verdict="slow (machine busy?)"
  echo "round $round: evacuation of 500 at 100/s ${evac}, drain ${drain}: ${verdict}"
done
