#!/usr/bin/env bash
# Memory benchmark, one command: RSS of a release gateway process at idle,
# with 10,000 tenants loaded (and how long loading took), and peak RSS while
# 1 GiB streams up through it and 1 GiB streams down.
# The origin is the demo's sandbox in a separate process, so the measured
# process holds only the gateway. Needs curl. Ports 28080-29466 on loopback.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
bin=${PLEO_GATEWAY_BIN:-$here/target/release/pleo-gateway}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ready() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.05; done; return 1; }

# The origin: the shipped demo (its sandbox), moved to spare ports.
sed -e 's/127.0.0.1:8080/127.0.0.1:28080/' -e 's/127.0.0.1:9464/127.0.0.1:29464/' \
    -e 's/8901/28901/g' -e 's/8902/28902/g' \
    -e "s|file: sandbox/|file: $here/sandbox/|" -e "s|state_dir: ./state|state_dir: $work/origin-state|" \
    "$here/gateway.yaml" >"$work/origin.yaml"
"$bin" --config "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)
ready 29464

# The measured gateway: the demo's two API-key tenants, no sandbox of its own.
cat >"$work/gateway.yaml" <<YAML
listen: 127.0.0.1:28081
admin_listen: 127.0.0.1:29465
workers: 1
access_log: { format: off }
state_dir: $work/state
environments:
  staging: { base_url: http://127.0.0.1:28901 }
  production: { base_url: http://127.0.0.1:28902 }
limits: { max_request_body_bytes: 2147483648 }
tenants:
  globex: { environment: staging, auth: { model: integrated_api_key, key: { file: $here/sandbox/globex-api-key } } }
  initech: { environment: staging, auth: { model: standalone_api_key, key: { file: $here/sandbox/initech-api-key } } }
YAML
"$bin" --config "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
gw=$!
pids+=($gw)
ready 29465
sleep 1
idle=$(kib $gw VmRSS)

# Peak while 1 GiB streams up (reset the high-water mark first), then down.
echo 5 >"/proc/$gw/clear_refs"
head -c 1073741824 /dev/zero | curl -sf -X POST -H 'X-Pleo-Tenant: globex' -T - \
  -o "$work/up.json" http://127.0.0.1:28081/v2/upload
grep -q '"bytes":1073741824' "$work/up.json" || { echo "upload did not arrive whole: $(cat "$work/up.json")"; exit 1; }
up=$(kib $gw VmHWM)
echo 5 >"/proc/$gw/clear_refs"
got=$(curl -sf -H 'X-Pleo-Tenant: globex' -o /dev/null -w '%{size_download}' \
  http://127.0.0.1:28081/sandbox/bytes/1073741824)
[[ $got == 1073741824 ]] || { echo "download was $got bytes"; exit 1; }
down=$(kib $gw VmHWM)

# 10,000 tenants, pointed at a closed port so their credential checks end at once.
{
  echo "listen: 127.0.0.1:28082"
  echo "admin_listen: 127.0.0.1:29466"
  echo "workers: 1"
  echo "access_log: { format: off }"
  echo "state_dir: $work/state10k"
  echo "environments:"
  echo "  staging: { base_url: http://127.0.0.1:9 }"
  echo "  production: { base_url: http://127.0.0.1:9 }"
  echo "tenants:"
  for i in $(seq 0 9999); do
    printf '  t%d: { environment: staging, auth: { model: integrated_api_key, key: ik_tenant_%08d_0123456789 } }\n' "$i" "$i"
  done
} >"$work/10k.yaml"
start=$(date +%s%N)
"$bin" --config "$work/10k.yaml" >"$work/10k.log" 2>&1 &
big=$!
pids+=($big)
ready 29466
loaded_ms=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 2
many=$(kib $big VmRSS)

echo "| measurement | value | target |"
echo "| --- | ---: | ---: |"
echo "| RSS idle (2 tenants) | $(mib "$idle") MiB | <= 10 MiB |"
echo "| 10,000 tenants: start to ready | ${loaded_ms} ms | <= 300 ms |"
echo "| 10,000 tenants: RSS after load | $(mib "$many") MiB | <= 64 MiB |"
echo "| peak RSS, 1 GiB upload | $(mib "$up") MiB | <= 32 MiB |"
echo "| peak RSS, 1 GiB download | $(mib "$down") MiB | <= 32 MiB |"
