#!/usr/bin/env bash
# Installs at scale: INSTALLS (10,000) tenants made by installs in one
# throwaway PostgreSQL (bench/with-postgres.sh), REPLICAS (3) gateways
# starting on it. benches/installs_scale.rs prints start to ready, RSS and
# how fast an install on one replica reaches the others.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/bench/with-postgres.sh" cargo bench --locked --manifest-path "$here/Cargo.toml" --bench installs_scale
