#!/usr/bin/env bash
# Side-by-side generation benchmark: Enclave and llama.cpp's own llama-server, same GGUF, same
# threads, same client (`enclave bench generate`), in one run. llama-server is measured as it
# ships and with each of its n-gram speculation types in LLAMA_SPEC_TYPES; Enclave is compared
# with the default and with the best type of each run, and with llama-server tuned as Enclave
# runs (LLAMA_TUNED_ARGS: flash attention off, n-gram speculation). RUNS runs; the printed JSON
# holds every report, each run's ratios and their medians. llama-server is built once, outside the
# repository, from llama.cpp sources.
#
#   [WORKLOAD=chat|grounded|shared-docs] [RUNS=3] [ROUNDS=2] [LLAMA_SPEC_TYPES=ngram-simple,ngram-mod] \
#   scripts/bench-vs-llama-server.sh [MODEL] [PROMPT_TOKENS] [GEN_TOKENS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:-smollm2-135m-instruct}"
PROMPT_TOKENS="${2:-128}"
GEN_TOKENS="${3:-128}"
CONCURRENCY="${4:-1,4,8}"
THREADS="${THREADS:-$(nproc)}"
PARALLEL=8
WORKLOAD="${WORKLOAD:-chat}"
RUNS="${RUNS:-1}"
ROUNDS="${ROUNDS:-2}"
# ngram-mod won on the grounded workload here (ngram-simple, ngram-map-k and ngram-cache tried).
LLAMA_SPEC_TYPES="${LLAMA_SPEC_TYPES-ngram-mod}"
# llama-server tuned as Enclave runs by default: attention as matrix products (flash attention
# off; llama-server turns it on for CPUs), with its n-gram speculation. Empty skips it.
LLAMA_TUNED_ARGS="${LLAMA_TUNED_ARGS--fa off --spec-type ngram-mod}"
# Grounded prompts carry ~1,700 tokens of documents, instructions and question.
case "$WORKLOAD" in chat) PROMPT_ROOM=$PROMPT_TOKENS ;; *) PROMPT_ROOM=2048 ;; esac
CTX_PER_SEQ=$(( PROMPT_ROOM + GEN_TOKENS + 256 ))
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
      # Without build isolation pip reads the package's metadata with scikit-build-core instead
      # of first compiling its build tools (ninja, cmake) from source.
      python3 -m pip install -q scikit-build-core >&2
      python3 -m pip download --no-deps --no-binary :all: --no-build-isolation \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION:-0.3.36}" -d "$SDIST_DIR" >&2
      tar xzf "$SDIST_DIR"/llama_cpp_python-*.tar.gz -C "$SDIST_DIR" --strip-components=1
    fi
    SRC="$SDIST_DIR/vendor/llama.cpp"
  fi
  echo "building llama-server from $SRC into $BUILD_DIR (once)" >&2
  # Without AMX, as Enclave's own llama.cpp is built (scripts/c++-no-amx): its AMX kernel
  # crashes on the first pass on AMX CPUs.
  cmake -S "$SRC" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF \
    -DCMAKE_CXX_COMPILER_LAUNCHER="$PWD/scripts/c++-no-amx" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >&2
  cmake --build "$BUILD_DIR" --target llama-server -j "$THREADS" >&2
fi

PORT=$(( 20000 + RANDOM % 20000 ))
KEY="enclave-bench-key"
BENCH_DIR=$(mktemp -d)
COMMON=(--model "$MODEL" --workload "$WORKLOAD" --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS"
  --concurrency "$CONCURRENCY" --rounds "$ROUNDS" --api-key "$KEY" --json)
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$BENCH_DIR"' EXIT

# measure LABEL OUT COMMAND...: starts the server COMMAND on $PORT, waits for /health, runs the
# shared client against it, stops it, and writes the client's JSON to OUT.
measure() {
  local label=$1 out=$2
  shift 2
  "$@" >"$out.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 240); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  "$ENCLAVE" bench generate "${COMMON[@]}" --url "http://127.0.0.1:$PORT" --label "$label" >"$out"
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  echo "measured $label" >&2
}

LLAMA=("$SERVER_BIN" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -t "$THREADS" -tb "$THREADS"
  --parallel "$PARALLEL" -c $(( CTX_PER_SEQ * PARALLEL )) --no-webui)
IFS=',' read -r -a SPEC_TYPES <<<"$LLAMA_SPEC_TYPES"
for run in $(seq 1 "$RUNS"); do
  measure llama-server "$BENCH_DIR/run$run.llama-server.json" "${LLAMA[@]}"
  for spec in "${SPEC_TYPES[@]}"; do
    measure "llama-server --spec-type $spec" "$BENCH_DIR/run$run.spec-$spec.json" "${LLAMA[@]}" --spec-type "$spec"
  done
  if [ -n "$LLAMA_TUNED_ARGS" ]; then
    # shellcheck disable=SC2086 # a word list on purpose.
    measure "llama-server $LLAMA_TUNED_ARGS" "$BENCH_DIR/run$run.tuned.json" "${LLAMA[@]}" $LLAMA_TUNED_ARGS
  fi
  # Enclave as its own process too, so both servers are measured the same way: with its key
  # check and metering on (a scratch database), as it serves in production.
  rm -rf "$BENCH_DIR/db" && mkdir -p "$BENCH_DIR/db"
  # shellcheck disable=SC2086 # ENCLAVE_SERVE_ENV / ENCLAVE_SERVE_ARGS are word lists on purpose.
  measure enclave "$BENCH_DIR/run$run.enclave.json" \
    env ${ENCLAVE_SERVE_ENV:-} "$ENCLAVE" serve --port "$PORT" --model "$MODEL" --api-key "$KEY" \
    --database-url "sqlite://$BENCH_DIR/db/enclave.db" \
    --parallel "$PARALLEL" --threads "$THREADS" --ctx-size "$CTX_PER_SEQ" ${ENCLAVE_SERVE_ARGS:-}
done

python3 - "$BENCH_DIR" "$RUNS" "$LLAMA_SPEC_TYPES" "$LLAMA_TUNED_ARGS" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
  "$(grep -o -m1 -w 'avx512f' /proc/cpuinfo || echo avx2-only)" <<'PY'
import json, statistics, sys
folder, runs, spec_types, tuned_args, cores, cpu, isa = sys.argv[1], int(sys.argv[2]), [t for t in sys.argv[3].split(",") if t], sys.argv[4], sys.argv[5], sys.argv[6].strip(), sys.argv[7]
load = lambda name: json.load(open(f"{folder}/{name}.json"))
METRICS = ("aggregate_tok_s", "decode_tok_s_per_stream", "ttft_ms_p50")

def ratios(ours, ref):
    out = []
    for a, b in zip(ours["levels"], ref["levels"]):
        out.append({"concurrency": a["concurrency"],
                    **{k: round(a[k] / b[k], 3) if b[k] else None for k in METRICS}})
    return out

def score(report):  # mean aggregate tok/s over the levels: how a spec type is ranked
    return statistics.mean(l["aggregate_tok_s"] for l in report["levels"])

reports, per_run = [], []
for run in range(1, runs + 1):
    ours, default = load(f"run{run}.enclave"), load(f"run{run}.llama-server")
    specs = {t: load(f"run{run}.spec-{t}") for t in spec_types}
    best = max(specs, key=lambda t: score(specs[t])) if specs else None
    tuned = load(f"run{run}.tuned") if tuned_args else None
    reports.append({"enclave": ours, "llama_server": default, "llama_server_spec": specs,
                    "llama_server_tuned": tuned})
    per_run.append({"best_spec_type": best,
                    "vs_default": ratios(ours, default),
                    "vs_best_spec": ratios(ours, specs[best]) if best else None,
                    "vs_tuned": ratios(ours, tuned) if tuned else None,
                    "cold_ttft_ms": {"enclave": ours.get("cold_ttft_ms"), "llama_server": default.get("cold_ttft_ms")},
                    "repeat_ttft_ratio": {"enclave": ours.get("repeat_ttft_ratio"),
                                          "llama_server": default.get("repeat_ttft_ratio")}})

def median_of(key):
    if per_run[0][key] is None:
        return None
    out = []
    for i, level in enumerate(per_run[0][key]):
        row = {"concurrency": level["concurrency"]}
        for m in METRICS:
            values = [r[key][i][m] for r in per_run if r[key][i][m] is not None]
            row[m] = round(statistics.median(values), 3) if values else None
        out.append(row)
    return out

print(json.dumps({
    "workload": reports[0]["enclave"].get("workload"),
    "model": reports[0]["enclave"]["model"],
    "machine": {"cores": cores, "cpu": cpu, "isa": isa},
    "runs": runs,
    "median_ratio_enclave_over_llama_server": median_of("vs_default"),
    "median_ratio_enclave_over_llama_server_best_spec": median_of("vs_best_spec"),
    "llama_server_tuned_args": tuned_args or None,
    "median_ratio_enclave_over_llama_server_tuned": median_of("vs_tuned"),
    "per_run": per_run,
    "reports": reports,
}, indent=2))
PY
