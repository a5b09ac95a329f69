#!/usr/bin/env bash
# Runs "$@" with PLEO_GATEWAY_DATABASE_URL pointing at a throwaway
# PostgreSQL (Debian's package: initdb into a temporary directory, as the
# postgres user when run as root) and PLEO_GATEWAY_BIN at the release
# binary, built first. The database is stopped and removed at exit.
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
"$@"
