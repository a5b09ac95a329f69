#!/usr/bin/env bash
# Prometheus for real: runs the shipped demo (gateway + offline sandbox) on
# spare loopback ports, sends traffic, checks /metrics with `promtool check
# metrics`, lets Debian's prometheus server scrape it, and reads
# pleo_gateway_requests_total back through Prometheus' HTTP API.
# Usage: .ci/prometheus-scrape.sh [path/to/pleo-gateway]   (default: target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/pleo-gateway}
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The demo config, moved to ports nothing else here uses, with absolute paths.
sed -e 's/127.0.0.1:8080/127.0.0.1:18080/' -e 's/127.0.0.1:9464/127.0.0.1:19464/' \
    -e 's/8901/18901/g' -e 's/8902/18902/g' \
    -e "s|file: sandbox/|file: $PWD/sandbox/|" -e "s|state_dir: ./state|state_dir: $work/state|" \
    gateway.yaml >"$work/gateway.yaml"
"$bin" --config "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:19464/readyz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:19464/readyz >/dev/null || { cat "$work/gateway.log"; exit 1; }

for tenant in acme globex initech; do
  for _ in 1 2 3; do curl -s -o /dev/null -H "X-Pleo-Tenant: $tenant" http://127.0.0.1:18080/v2/employees; done
done
curl -s -o /dev/null -H 'Authorization: Bearer legacy-openapi-token' http://127.0.0.1:18080/v2/employees

echo "== promtool check metrics"
curl -sf http://127.0.0.1:19464/metrics | promtool check metrics
echo "clean"

cat >"$work/prometheus.yml" <<YAML
global: { scrape_interval: 1s }
scrape_configs:
  - job_name: pleo-gateway
    static_configs: [{ targets: ['127.0.0.1:19464'] }]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:19090 >"$work/prometheus.log" 2>&1 &
pids+=($!)

echo "== query pleo_gateway_requests_total through Prometheus"
query='sum by (auth_model) (pleo_gateway_requests_total)'
for _ in $(seq 60); do
  answer=$(curl -s --get --data-urlencode "query=$query" http://127.0.0.1:19090/api/v1/query || true)
  if [[ $answer == *'"status":"success"'* && $answer == *integrated_api_key* && $answer == *oauth2* ]]; then
    echo "$answer"
    exit 0
  fi
  sleep 0.5
done
echo "Prometheus never returned the gateway's requests: ${answer:-no answer}"
tail -20 "$work/prometheus.log"
exit 1
