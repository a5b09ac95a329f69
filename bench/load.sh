#!/usr/bin/env bash
# One command: the gateway beside direct, nginx and haproxy in the shared wrk
# harness (../shared/bench), http and https origins, 32 and 1 connections.
# Results land in bench-results/ (git-ignored). Extra env is passed through
# (e.g. ROUNDS=1, ORIGINS=http).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_HARNESS:-$here/../shared/bench}
cargo build --release --locked --manifest-path "$here/Cargo.toml"
bash "$harness/setup.sh"
mkdir -p "$here/bench-results"
export RESULTS_DIR=${RESULTS_DIR:-$here/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
GATEWAY_CMD="$here/bench/gateway-wrapper.sh" GATEWAY_NAME=pleo-gateway exec bash "$harness/run.sh" "$@"
