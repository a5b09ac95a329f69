#!/usr/bin/env bash
# The property tests (tests/it/properties.rs) at scale: PROPTEST_CASES cases per
# property (default 1,000,000), release build. Prints each property's count.
# CI runs the same properties with 256 cases.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${PROPTEST_CASES:-1000000}
start=$(date +%s)
PROPTEST_CASES=$cases cargo test --release --locked --test it -- properties:: --nocapture --test-threads 2 2>&1 |
  grep -E '^property |^test result'
echo "$cases cases per property in $(( $(date +%s) - start )) s"
