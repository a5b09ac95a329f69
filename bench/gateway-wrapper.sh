#!/usr/bin/env bash
# Plugs pleo-gateway into the shared load harness (../shared/bench/run.sh):
# translates the harness's GATEWAY_* contract into a gateway.yaml and execs the
# release binary in the foreground. Every tenant's credential goes to the
# harness origin; bearer tenants are oauth2, basic ones integrated API keys.
set -euo pipefail
: "${GATEWAY_LISTEN:?}" "${GATEWAY_UPSTREAM:?}" "${GATEWAY_TENANTS_TSV:?}" "${GATEWAY_WORKDIR:?}"
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${PLEO_GATEWAY_BIN:-$here/target/release/pleo-gateway}
w=$GATEWAY_WORKDIR
ca=""
if [[ $GATEWAY_UPSTREAM == https://* ]]; then ca=", ca_file: ${GATEWAY_UPSTREAM_CA:?}"; fi
admin_port=$((${GATEWAY_PORT:?} + 100))
{
  echo "listen: $GATEWAY_LISTEN"
  echo "admin_listen: 127.0.0.1:$admin_port"
  echo "workers: ${GATEWAY_WORKERS:-1}"
  echo "environments:"
  echo "  staging: { base_url: $GATEWAY_UPSTREAM$ca }"
  echo "  production: { base_url: $GATEWAY_UPSTREAM$ca }"
  echo "access_log: { format: off }   # nginx and haproxy in the harness log nothing either"
  echo "tenant_from:"
  echo "  - header: ${GATEWAY_TENANT_HEADER:-X-Pleo-Tenant}"
  echo "tenants:"
  while IFS=$'\t' read -r name kind secret; do
    [[ -z $name || $name == \#* ]] && continue
    printf '%s' "$secret" >"$w/$name.secret"
    case $kind in
      bearer) model=oauth2 field=access_token env=production ;;
      basic) model=integrated_api_key field=key env=staging ;;
      *) echo "unknown scheme $kind" >&2; exit 1 ;;
    esac
    echo "  $name:"
    echo "    environment: $env"
    echo "    auth: { model: $model, $field: { file: $name.secret } }"
  done <"$GATEWAY_TENANTS_TSV"
  # More top-level keys for one measurement (bench/ab.sh's idle mode raises limits.max_connections).
  if [[ -n ${GATEWAY_EXTRA_YAML:-} ]]; then printf '%s\n' "$GATEWAY_EXTRA_YAML"; fi
} >"$w/gateway.yaml"
# No per-request logging (the harness measures the proxy, not a log writer):
# access_log is off above and events are warnings only.
export RUST_LOG=${RUST_LOG:-warn}
exec "$bin" --config "$w/gateway.yaml"
