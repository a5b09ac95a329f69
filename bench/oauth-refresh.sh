#!/usr/bin/env bash
# Latency across OAuth token refreshes, one command: the demo's managed OAuth
# tenant (acme) under steady wrk load, once with 15-minute tokens (no refresh
# in the window) and once with 3-second tokens (a refresh every ~2.5 s in the
# window). Prints p50/p99 of both windows, the refreshes seen, and the p99
# ratio (target: <= 1.2). Gateway and sandbox share the process, as in the
# demo; both windows pay that equally. Needs wrk and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-20}
CONNS=${CONNS:-4}
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
bin=$here/target/release/pleo-gateway
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

refreshes() { curl -s http://127.0.0.1:39464/metrics | awk '/^pleo_gateway_token_refresh_total\{result="success"\}/ { print $2 }'; }
# wrk's "--latency" distribution line for a percentile, in microseconds.
pct() {
  awk -v p="$2" '$1 == p {
    v = $2; u = v; gsub(/[0-9.]/, "", u); n = v + 0
    if (u == "us") n = n; else if (u == "ms") n = n * 1000; else if (u == "s") n = n * 1000000
    printf "%.0f", n }' "$1"
}

run() { # $1: token lifetime
  rm -rf "$work/state"
  sed -e 's/127.0.0.1:8080/127.0.0.1:38080/' -e 's/127.0.0.1:9464/127.0.0.1:39464/' \
      -e 's/8901/38901/g' -e 's/8902/38902/g' \
      -e "s|file: sandbox/|file: $here/sandbox/|" -e "s|state_dir: ./state|state_dir: $work/state|" \
      -e "s|  production: 127.0.0.1:38902|  production: 127.0.0.1:38902\n  access_token_ttl: $1|" \
      "$here/gateway.yaml" >"$work/gateway.yaml"
  echo "workers: 1" >>"$work/gateway.yaml"
  echo "access_log: { format: off }" >>"$work/gateway.yaml"
  RUST_LOG=warn "$bin" --config "$work/gateway.yaml" >"$work/gateway-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do curl -sf http://127.0.0.1:39464/readyz >/dev/null && break; sleep 0.05; done
  # Warm up (pools, first refresh), then measure.
  wrk -t1 -c"$CONNS" -d2s -H 'X-Pleo-Tenant: acme' http://127.0.0.1:38080/v2/employees >/dev/null
  local before; before=$(refreshes)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'X-Pleo-Tenant: acme' \
    http://127.0.0.1:38080/v2/employees >"$work/wrk-$1.txt"
  local after; after=$(refreshes)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  local rps; rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$work/wrk-$1.txt")
  local errors; errors=$(awk '/Non-2xx|Socket errors/ { print }' "$work/wrk-$1.txt")
  [[ -z $errors ]] || { echo "errors in the $1 window: $errors"; exit 1; }
  echo "$1 $rps $(pct "$work/wrk-$1.txt" 50%) $(pct "$work/wrk-$1.txt" 99%) $((${after%.*} - ${before%.*}))"
}

long=$(run 15m)
short=$(run 3s)
echo "| token lifetime | req/s | p50 µs | p99 µs | refreshes in the ${DURATION} s window |"
echo "| --- | ---: | ---: | ---: | ---: |"
for r in "$long" "$short"; do
  read -r ttl rps p50 p99 n <<<"$r"
  echo "| $ttl | $rps | $p50 | $p99 | $n |"
done
read -r _ _ _ p99_long _ <<<"$long"
read -r _ _ _ p99_short _ <<<"$short"
awk -v a="$p99_short" -v b="$p99_long" 'BEGIN { printf "p99 with refreshes / without: %.2f (target <= 1.2)\n", a / b }'
