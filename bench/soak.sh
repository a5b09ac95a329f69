#!/usr/bin/env bash
# A bounded soak of the release binary (benches/soak.rs): SOAK_SECONDS
# (default 600) at full load with upstream resets, token-endpoint 5xx and
# slow clients mixed in. Fails on any unexpected outcome, RSS growth over 5%
# after warm-up, or a drift in open file descriptors. The report goes to
# $RESULTS_DIR/soak.txt (default bench-results/, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-$PWD/bench-results}
export SOAK_SECONDS=${SOAK_SECONDS:-600}
cargo build --release --locked
PLEO_GATEWAY_BIN=$PWD/target/release/pleo-gateway cargo bench --locked --bench soak
