#!/usr/bin/env bash
# Builds Enclave and serves it on 127.0.0.1:8080 with the default chat model, pulling models on
# first start (with a progress bar). Extra arguments go to `enclave serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace --all-targets
exec "${CARGO_TARGET_DIR:-target}/release/enclave" serve "$@"
