#!/usr/bin/env bash
# Scale: a config of N API-key tenants (default 100,000). Measures the time
# from start to /readyz 200, RSS once the start-up checks are done (and the
# high-water mark), and a reload where one tenant's key changed: the time
# from SIGHUP to "config reloaded". Pleo is a closed port here (the key
# checks fail fast); tests/it/reload.rs counts that a reload asks Pleo about
# the changed key only. Tenant resolution against 1,000 vs 100,000 tenants:
# `cargo bench --bench steps -- resolve_tenant`.
# usage: bench/scale.sh [tenants=100000]
set -euo pipefail
n=${1:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
w=${RESULTS_DIR:-$here/bench-results}/scale
rm -rf "$w" && mkdir -p "$w"
bin=${PLEO_GATEWAY_BIN:-$here/target/release/pleo-gateway}
[[ -x $bin ]] || (cd "$here" && cargo build --release -q)
python3 - "$n" "$w/gateway.yaml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("listen: 127.0.0.1:18080\nadmin_listen: 127.0.0.1:19464\naccess_log: { format: off }\n"
            "environments:\n  staging: { base_url: http://127.0.0.1:9 }\n  production: { base_url: http://127.0.0.1:9 }\n"
            "tenants:\n")
    for i in range(n):
        f.write(f"  t{i}:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: ik_scale_tenant_key_{i:07d} }}\n")
PY
cd "$w"
start=$(date +%s%N)
"$bin" --config gateway.yaml >gateway.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until curl -s -o /dev/null -w '%{http_code}' localhost:19464/readyz 2>/dev/null | grep -q 200; do sleep 0.01; done
ready=$(( ($(date +%s%N) - start) / 1000000 ))
until grep -q "credential check of API-key tenants done" gateway.log; do sleep 0.1; done
sleep 1
rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status)
hwm=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status)
sed -i 's/ik_scale_tenant_key_0000007/ik_scale_tenant_key_renewed/' gateway.yaml
lines=$(grep -c "config reloaded" gateway.log || true)
start=$(date +%s%N)
kill -HUP $pid
until [[ $(grep -c "config reloaded" gateway.log || true) -gt $lines ]]; do sleep 0.005; done
reload=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 1
after=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status)
hwm_reload=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status)
echo "tenants $n: ready ${ready} ms, RSS ${rss} MiB (high-water ${hwm} MiB), reload with one key changed ${reload} ms, then RSS ${after} MiB (high-water ${hwm_reload} MiB)" | tee result.txt
