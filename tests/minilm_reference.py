"""An independent fp32 all-MiniLM-L6-v2 in numpy (the model's published architecture: BERT,
mean pooling, L2 norm), used to check Enclave's embeddings against full precision."""

import math
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import BertWordPieceTokenizer

MODEL_DIR = Path(os.environ.get("ENCLAVE_HOME", Path.home() / ".enclave")) / "models" / "all-minilm-l6-v2"
_erf = np.vectorize(math.erf)


class MiniLM:
    def __init__(self, model_dir=MODEL_DIR):
        self.weights = load_file(str(model_dir / "model.safetensors"))
        self.tokenizer = BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=True)

    def _w(self, key):
        return self.weights.get(key, self.weights.get("bert." + key))

    @staticmethod
    def _layer_norm(x, w, b, eps=1e-12):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w + b

    def embed(self, text):
        ids = self.tokenizer.encode(text).ids
        n, heads, dim = len(ids), 12, 32
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[:n]
             + self._w("embeddings.token_type_embeddings.weight")[0])
        x = self._layer_norm(x, self._w("embeddings.LayerNorm.weight"), self._w("embeddings.LayerNorm.bias"))
        for layer in range(6):
            p = f"encoder.layer.{layer}."

            def linear(h, name):
                return h @ self._w(p + name + ".weight").T + self._w(p + name + ".bias")

            def split(h):
                return h.reshape(n, heads, dim).transpose(1, 0, 2)

            q = split(linear(x, "attention.self.query"))
            k = split(linear(x, "attention.self.key"))
            v = split(linear(x, "attention.self.value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(dim)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(1, 0, 2).reshape(n, heads * dim)
            x = self._layer_norm(x + linear(attended, "attention.output.dense"),
                                 self._w(p + "attention.output.LayerNorm.weight"),
                                 self._w(p + "attention.output.LayerNorm.bias"))
            h = linear(x, "intermediate.dense")
            h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
            x = self._layer_norm(x + linear(h, "output.dense"),
                                 self._w(p + "output.LayerNorm.weight"), self._w(p + "output.LayerNorm.bias"))
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)
