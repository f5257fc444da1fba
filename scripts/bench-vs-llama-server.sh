#!/usr/bin/env bash
# Side-by-side generation benchmark: Enclave and llama.cpp's own llama-server, same GGUF, same
# threads, same client (`enclave bench generate`), one run. Prints one JSON object with both reports
# and the ratios. llama-server is built once, outside the repository, from the llama.cpp sources the
# llama-cpp-sys-2 crate vendors in cargo's registry.
#
#   scripts/bench-vs-llama-server.sh [MODEL] [PROMPT_TOKENS] [GEN_TOKENS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:-smollm2-135m-instruct}"
PROMPT_TOKENS="${2:-128}"
GEN_TOKENS="${3:-128}"
CONCURRENCY="${4:-1,4,8}"
THREADS="${THREADS:-$(nproc)}"
PARALLEL=8
CTX_PER_SEQ=$(( PROMPT_TOKENS + GEN_TOKENS + 256 ))
export ENCLAVE_HOME="${ENCLAVE_HOME:-$HOME/.enclave}"
BUILD_DIR="${LLAMA_SERVER_BUILD:-$ENCLAVE_HOME/build/llama-server}"

cargo build --release --workspace --all-targets >&2
ENCLAVE="${CARGO_TARGET_DIR:-target}/release/enclave"
GGUF=$("$ENCLAVE" pull "$MODEL" | sed -n 's/.* ready at //p')

SERVER_BIN="$BUILD_DIR/bin/llama-server"
if [ ! -x "$SERVER_BIN" ]; then
  # The llama-cpp-sys-2 crate vendors llama.cpp without the tools' sources; when they are missing,
  # the full tree comes from the llama-cpp-python source package on PyPI.
  SRC=$(ls -d "$HOME"/.cargo/registry/src/*/llama-cpp-sys-2-*/llama.cpp 2>/dev/null | sort -V | tail -1)
  if [ -z "$SRC" ] || ! ls "$SRC"/tools/server/*.cpp >/dev/null 2>&1; then
    SDIST_DIR="$ENCLAVE_HOME/build/llama-cpp-src"
    if [ ! -d "$SDIST_DIR/vendor/llama.cpp" ]; then
      mkdir -p "$SDIST_DIR"
      python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION:-0.3.36}" -d "$SDIST_DIR" >&2
      tar xzf "$SDIST_DIR"/llama_cpp_python-*.tar.gz -C "$SDIST_DIR" --strip-components=1
    fi
    SRC="$SDIST_DIR/vendor/llama.cpp"
  fi
  echo "building llama-server from $SRC into $BUILD_DIR (once)" >&2
  cmake -S "$SRC" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >&2
  cmake --build "$BUILD_DIR" --target llama-server -j "$THREADS" >&2
fi

PORT=$(( 20000 + RANDOM % 20000 ))
KEY="enclave-bench-key"
BENCH_DB=$(mktemp -d)
COMMON=(--model "$MODEL" --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS" --concurrency "$CONCURRENCY"
  --api-key "$KEY" --json)
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$BENCH_DB"' EXIT

# measure LABEL LOG COMMAND...: starts the server COMMAND on $PORT, waits for /health, runs the
# shared client against it, stops it, and prints the client's JSON.
measure() {
  local label=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  "$ENCLAVE" bench generate "${COMMON[@]}" --url "http://127.0.0.1:$PORT" --label "$label"
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

LLAMA_JSON=$(measure llama-server /tmp/llama-server-bench.log \
  "$SERVER_BIN" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -t "$THREADS" -tb "$THREADS" \
  --parallel "$PARALLEL" -c $(( CTX_PER_SEQ * PARALLEL )) --no-webui)
# Enclave as its own process too, so both servers are measured the same way: with its key check
# and metering on (a scratch database), as it serves in production.
# shellcheck disable=SC2086 # ENCLAVE_SERVE_ENV / ENCLAVE_SERVE_ARGS are word lists on purpose.
ENCLAVE_JSON=$(measure enclave /tmp/enclave-bench.log \
  env ${ENCLAVE_SERVE_ENV:-} "$ENCLAVE" serve --port "$PORT" --model "$MODEL" --api-key "$KEY" \
  --database-url "sqlite://$BENCH_DB/enclave.db" \
  --parallel "$PARALLEL" --threads "$THREADS" --ctx-size "$CTX_PER_SEQ" ${ENCLAVE_SERVE_ARGS:-})

python3 - "$ENCLAVE_JSON" "$LLAMA_JSON" <<'PY'
import json, sys
ours, ref = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ratios = []
for a, b in zip(ours["levels"], ref["levels"]):
    ratio = lambda k: round(a[k] / b[k], 3) if b[k] else None
    ratios.append({"concurrency": a["concurrency"],
                   "aggregate_tok_s": ratio("aggregate_tok_s"),
                   "decode_tok_s_per_stream": ratio("decode_tok_s_per_stream"),
                   "ttft_ms_p50": ratio("ttft_ms_p50")})
print(json.dumps({"enclave": ours, "llama_server": ref, "ratio_enclave_over_llama_server": ratios}, indent=2))
PY
