"""An independent fp32 nomic-bert (nomic-embed-text-v1.5) in numpy, read from the GGUF file that
Enclave pulls, used to check Enclave's served embeddings against full precision.

The forward pass is the one llama.cpp runs for LLM_ARCH_NOMIC_BERT: token embedding plus the
token-type-0 row, LayerNorm; per layer a fused QKV projection (no biases), NeoX rotary position
embedding over the whole head, bidirectional softmax attention, output projection, residual and
LayerNorm (post-norm); a SwiGLU MLP, down(silu(gate(x)) * up(x)), residual and LayerNorm; then
mean pooling over all tokens ([CLS] and [SEP] included) and L2 normalisation.

Token ids come from the caller (the server's /v1/tokenize, which leaves out the specials);
`embed_ids` wraps them in the GGUF's [CLS] … [SEP]. `wordpiece_ids` tokenizes independently
(Hugging Face's BERT WordPiece over the GGUF's vocabulary), to check those ids. The model
expects a task prefix (`search_query: `, `search_document: ` …) at the start of the text."""

import math
import os
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from tokenizers import BertWordPieceTokenizer

NOMIC_GGUF = (Path(os.environ.get("ENCLAVE_HOME", Path.home() / ".enclave")) / "models"
              / "nomic-embed-text-v1.5" / "nomic-embed-text-v1.5.f16.gguf")


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _field(reader, key):
    return reader.fields[key].contents()


class NomicBert:
    def __init__(self, path=NOMIC_GGUF):
        reader = GGUFReader(str(path))
        arch = _field(reader, "general.architecture")
        assert arch == "nomic-bert", arch
        self.width = int(_field(reader, f"{arch}.embedding_length"))
        self.layers = int(_field(reader, f"{arch}.block_count"))
        self.heads = int(_field(reader, f"{arch}.attention.head_count"))
        self.eps = float(_field(reader, f"{arch}.attention.layer_norm_epsilon"))
        self.rope_base = float(_field(reader, f"{arch}.rope.freq_base"))
        assert not _field(reader, f"{arch}.attention.causal")
        self.cls = int(_field(reader, "tokenizer.ggml.bos_token_id"))
        self.sep = int(_field(reader, "tokenizer.ggml.seperator_token_id"))
        # llama.cpp stores BERT's vocabulary with `▁` before word starts and without the `##`
        # of continuations; special tokens ([CLS], [unused0] …) stay as they are.
        vocab = {}
        for i, token in enumerate(_field(reader, "tokenizer.ggml.tokens")):
            if token.startswith("\u2581"):
                token = token[1:]
            elif not (token.startswith("[") and token.endswith("]")):
                token = "##" + token
            vocab.setdefault(token, i)
        self.tokenizer = BertWordPieceTokenizer(vocab, lowercase=True)
        # GGUF lists dims innermost first; the reader's arrays are already in numpy (row-major)
        # order, so a [in, out] GGUF matrix reads as (out, in), like a torch Linear weight.
        self.weights = {}
        for tensor in reader.tensors:
            shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
            self.weights[tensor.name] = np.asarray(tensor.data, dtype=np.float32).reshape(shape)

    def _w(self, name):
        return self.weights[name]

    def _rope(self, x):
        """NeoX rotary embedding over the full head dim: x is (heads, n, dim); the pair of
        element i is element i + dim/2, rotated by position * base^(-2i/dim)."""
        n, dim = x.shape[1], x.shape[2]
        half = dim // 2
        inv_freq = self.rope_base ** (-np.arange(half, dtype=np.float64) * 2 / dim)
        angles = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]
        cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)

    def hidden_states(self, ids):
        ids = np.asarray(ids)
        n = len(ids)
        x = self._w("token_embd.weight")[ids] + self._w("token_types.weight")[0]
        x = _layer_norm(x, self._w("token_embd_norm.weight"), self._w("token_embd_norm.bias"), self.eps)
        dim = self.width // self.heads
        for layer in range(self.layers):
            p = f"blk.{layer}."
            qkv = x @ self._w(p + "attn_qkv.weight").T
            q, k, v = (qkv[:, i * self.width:(i + 1) * self.width].reshape(n, self.heads, dim).transpose(1, 0, 2)
                       for i in range(3))
            q, k = self._rope(q), self._rope(k)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(dim)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(1, 0, 2).reshape(n, self.width)
            x = _layer_norm(x + attended @ self._w(p + "attn_output.weight").T,
                            self._w(p + "attn_output_norm.weight"), self._w(p + "attn_output_norm.bias"), self.eps)
            gate = x @ self._w(p + "ffn_gate.weight").T
            up = x @ self._w(p + "ffn_up.weight").T
            h = gate / (1 + np.exp(-gate)) * up
            x = _layer_norm(x + h @ self._w(p + "ffn_down.weight").T,
                            self._w(p + "layer_output_norm.weight"), self._w(p + "layer_output_norm.bias"), self.eps)
        return x

    def wordpiece_ids(self, text):
        """`text` tokenized by BERT's (uncased) WordPiece, without [CLS] and [SEP]."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def embed_ids(self, ids, pooling="mean"):
        """The embedding of `ids` (a tokenized text without specials), wrapped in [CLS] … [SEP]."""
        states = self.hidden_states([self.cls, *ids, self.sep])
        pooled = states[0] if pooling == "cls" else states.mean(0)
        return pooled / np.linalg.norm(pooled)
