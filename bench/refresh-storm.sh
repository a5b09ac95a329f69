#!/usr/bin/env bash
# A refresh storm on the shared store: TENANTS (1,000) OAuth tenants whose
# tokens all expire within one minute, REPLICAS (3) gateways on one
# throwaway PostgreSQL (bench/with-postgres.sh). benches/refresh_storm.rs
# prints token calls, store round trips per refresh and the p99 ratio.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/bench/with-postgres.sh" cargo bench --locked --manifest-path "$here/Cargo.toml" --bench refresh_storm
