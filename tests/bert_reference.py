"""An independent fp32 BERT / XLM-RoBERTa in numpy (the published architectures), used to check
Enclave's encoders against full precision: sentence embeddings (mean pooling, L2 norm) and the
logits of a sequence classifier (a cross-encoder) over a text pair (BERT's pooler and classifier,
or RoBERTa's two-layer head, on the first token)."""

import json
import math
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer, Tokenizer, processors

MINILM_DIR = Path(os.environ.get("ENCLAVE_HOME", Path.home() / ".enclave")) / "models" / "all-minilm-l6-v2"
_erf = np.vectorize(math.erf)


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


# DistilBERT's names for BERT's layer modules (DistilBERT is BERT without token types).
_DISTILBERT_MODULES = {
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def _distilbert_as_bert(config, weights):
    """DistilBERT's config and tensors under BERT's names, with a zero token-type embedding."""
    bert = dict(config, hidden_size=config["dim"], intermediate_size=config["hidden_dim"],
                num_hidden_layers=config["n_layers"], num_attention_heads=config["n_heads"],
                model_type="bert")
    renamed = {}
    for name, value in weights.items():
        name = name.removeprefix("distilbert.")
        if name.startswith("transformer.layer."):
            block, rest = name[len("transformer.layer."):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            name = f"encoder.layer.{block}.{_DISTILBERT_MODULES[module]}.{param}"
        renamed[name] = value
    renamed["embeddings.token_type_embeddings.weight"] = np.zeros((1, config["dim"]), dtype=np.float32)
    return bert, renamed


class Bert:
    def __init__(self, model_dir=MINILM_DIR):
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        self.weights = load_file(str(model_dir / "model.safetensors"))
        if config["model_type"] == "distilbert":
            config, self.weights = _distilbert_as_bert(config, self.weights)
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.roberta = config["model_type"] in ("xlm-roberta", "roberta")
        if config["model_type"] == "roberta":
            # English RoBERTa: GPT-2 byte-level BPE, `<s> a </s>` and `<s> a </s></s> b </s>`.
            self.tokenizer = ByteLevelBPETokenizer(str(model_dir / "vocab.json"), str(model_dir / "merges.txt"))
            self.tokenizer.post_processor = processors.RobertaProcessing(
                ("</s>", self.tokenizer.token_to_id("</s>")), ("<s>", self.tokenizer.token_to_id("<s>")))
            self.first_position = config.get("pad_token_id", 1) + 1
        elif self.roberta:
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            # RoBERTa numbers positions from padding_idx + 1.
            self.first_position = config.get("pad_token_id", 1) + 1
        else:
            self.tokenizer = BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=True)
            self.first_position = 0

    def _w(self, key):
        for name in (key, "bert." + key, "roberta." + key):
            if name in self.weights:
                return self.weights[name]
        raise KeyError(key)

    def _hidden_states(self, ids, type_ids):
        n = len(ids)
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[self.first_position:self.first_position + n]
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

    def embed(self, text, pooling="mean"):
        ids = self.tokenizer.encode(text).ids
        states = self._hidden_states(ids, [0] * len(ids))
        pooled = states[0] if pooling == "cls" else states.mean(0)
        return pooled / np.linalg.norm(pooled)

    def pair_logits(self, first, second, alter=None):
        """Logits for the pair as the model's tokenizer joins it (BERT: `[CLS] first [SEP]
        second [SEP]`, the second text in segment B; RoBERTa: `<s> first </s></s> second </s>`).
        `alter` may rewrite (ids, type_ids) first, to show what a misread pair would score."""
        encoding = self.tokenizer.encode(first, second)
        ids, types = encoding.ids, encoding.type_ids
        if alter is not None:
            ids, types = alter(ids, types)
        first = self._hidden_states(ids, types)[0]
        if self.roberta:
            dense, out = "classifier.dense.", "classifier.out_proj."
        else:
            dense, out = "pooler.dense.", "classifier."
        pooled = np.tanh(first @ self._w(dense + "weight").T + self._w(dense + "bias"))
        return pooled @ self._w(out + "weight").T + self._w(out + "bias")


def MiniLM():
    """The all-MiniLM-L6-v2 that Enclave pulls."""
    return Bert(MINILM_DIR)
