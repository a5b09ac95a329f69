#!/usr/bin/env bash
# Installs at scale: INSTALLS (10,000) tenants made by installs in one
# PostgreSQL database, REPLICAS (3) gateways starting on it (a
# throwaway Debian PostgreSQL, as the postgres user when run as root).
# benches/installs_scale.rs prints start to ready, RSS and how fast an
# install on one replica reaches the others.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as=()
if [[ $(id -u) == 0 ]]; then chown postgres "$work"; as=(runuser -u postgres --); fi
cleanup() { "${as[@]}" "$bin/pg_ctl" stop -m immediate -D "$work/data" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo bench-pw >"$work/pw"; chmod 644 "$work/pw"
"${as[@]}" "$bin/initdb" -D "$work/data" -U postgres --auth=scram-sha-256 --pwfile "$work/pw" --no-sync >/dev/null
"${as[@]}" "$bin/pg_ctl" start -w -D "$work/data" -l "$work/server.log" \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null
export PLEO_GATEWAY_DATABASE_URL="postgres://postgres:bench-pw@127.0.0.1:$port/postgres?sslmode=disable"
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
export PLEO_GATEWAY_BIN=${PLEO_GATEWAY_BIN:-$here/target/release/pleo-gateway}
cargo bench --locked --manifest-path "$here/Cargo.toml" --bench installs_scale
