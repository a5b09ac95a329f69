#!/usr/bin/env bash
# The refresh schedule under steady load, measured over 30 s: 2-second
# tokens, four clients, no request may fail, and the number of refreshes
# must match the schedule (refresh at expiry - lifetime/5 - jitter). It is a
# statistical run that takes half a minute, so it is not part of
# `cargo test`: it is an ignored test in tests/it/oauth.rs that this script
# runs explicitly, in release mode.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exec cargo test --release --locked --manifest-path "$here/Cargo.toml" --test it -- \
  --ignored --exact oauth::thirty_seconds_of_load_on_two_second_tokens_never_fails --nocapture
