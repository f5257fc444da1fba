#!/usr/bin/env bash
# Everything CI runs: build, lint, Rust tests, then the official Python SDKs against a real server.
# Model tests run one at a time: two llama.cpp processes on two cores slow each other ~10x.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export ENCLAVE_HOME="${ENCLAVE_HOME:-$HOME/.enclave}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --all-targets
"$TARGET_DIR/release/enclave" pull smollm2-135m-instruct
"$TARGET_DIR/release/enclave" pull all-minilm-l6-v2

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --test-threads 1
else
  cargo test --release --workspace -- --test-threads 1
fi

# The SDK suites: a virtualenv with the official clients.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
ENCLAVE_BIN="$(cd "$TARGET_DIR" && pwd)/release/enclave" .venv/bin/python -m pytest -q tests
