"""An independent fp32 BERT in numpy (the published architecture), used to check Enclave's
encoders against full precision: sentence embeddings (mean pooling, L2 norm) and the logits of
a sequence classifier (a cross-encoder) over a text pair (pooler and classifier on [CLS])."""

import json
import math
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import BertWordPieceTokenizer

MINILM_DIR = Path(os.environ.get("ENCLAVE_HOME", Path.home() / ".enclave")) / "models" / "all-minilm-l6-v2"
_erf = np.vectorize(math.erf)


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class Bert:
    def __init__(self, model_dir=MINILM_DIR):
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.weights = load_file(str(model_dir / "model.safetensors"))
        self.tokenizer = BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=True)

    def _w(self, key):
        return self.weights.get(key, self.weights.get("bert." + key))

    def _hidden_states(self, ids, type_ids):
        n = len(ids)
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[:n]
             + self._w("embeddings.token_type_embeddings.weight")[type_ids])
        x = _layer_norm(x, self._w("embeddings.LayerNorm.weight"), self._w("embeddings.LayerNorm.bias"), self.eps)
        dim = x.shape[1] // self.heads
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def linear(h, name):
                return h @ self._w(p + name + ".weight").T + self._w(p + name + ".bias")

            def split(h):
                return h.reshape(n, self.heads, dim).transpose(1, 0, 2)

            q = split(linear(x, "attention.self.query"))
            k = split(linear(x, "attention.self.key"))
            v = split(linear(x, "attention.self.value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(dim)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(1, 0, 2).reshape(n, self.heads * dim)
            x = _layer_norm(x + linear(attended, "attention.output.dense"),
                            self._w(p + "attention.output.LayerNorm.weight"),
                            self._w(p + "attention.output.LayerNorm.bias"), self.eps)
            h = linear(x, "intermediate.dense")
            h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
            x = _layer_norm(x + linear(h, "output.dense"),
                            self._w(p + "output.LayerNorm.weight"), self._w(p + "output.LayerNorm.bias"), self.eps)
        return x

    def embed(self, text):
        ids = self.tokenizer.encode(text).ids
        pooled = self._hidden_states(ids, [0] * len(ids)).mean(0)
        return pooled / np.linalg.norm(pooled)

    def pair_logits(self, first, second, type_ids=None):
        """Logits for `[CLS] first [SEP] second [SEP]`, the second text in segment B (or in the
        segments given by `type_ids`)."""
        encoding = self.tokenizer.encode(first, second)
        types = encoding.type_ids if type_ids is None else type_ids(encoding)
        cls = self._hidden_states(encoding.ids, types)[0]
        pooled = np.tanh(cls @ self._w("pooler.dense.weight").T + self._w("pooler.dense.bias"))
        return pooled @ self.weights["classifier.weight"].T + self.weights["classifier.bias"]


def MiniLM():
    """The all-MiniLM-L6-v2 that Enclave pulls."""
    return Bert(MINILM_DIR)
