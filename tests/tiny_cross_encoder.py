"""Writes a small BertForSequenceClassification folder (config.json, vocab.txt,
model.safetensors) with seeded random weights: a cross-encoder in the exact layout Hugging Face
saves, for checking Enclave against the numpy reference. No trained cross-encoder ships in any
registry package, so the weights are random; the test compares numbers, not judgement."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

WORDS = """the a an of to in and or is are was be for on with by at from as how do does can what
which when where who why reset password account refund annual plan policy shipping standard
express days business order invoice paid late weather rain wind hills office kitchen security
settings email link forgot router factory wifi break room team year review monthly renew method
payment original purchase months unused full within after we our your it this that data
backup restore server key api rate limit budget cost price model token tokens search query
document relevant answer yes no""".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = list(".,?!'\"-:;()")


def write(folder, seed=7, hidden=128, heads=4, layers=2, intermediate=256, labels=("LABEL_0",)):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + PUNCTUATION + WORDS + ["##s", "##ing", "##ed", "##ly"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": 128,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {
        "bert.embeddings.word_embeddings.weight": normal(len(vocab), hidden, scale=0.5),
        "bert.embeddings.position_embeddings.weight": normal(128, hidden, scale=0.2),
        # Segment embeddings far apart, so reading the document in the wrong segment shows.
        "bert.embeddings.token_type_embeddings.weight": normal(2, hidden, scale=1.0),
        "bert.embeddings.LayerNorm.weight": 1 + normal(hidden, scale=0.05),
        "bert.embeddings.LayerNorm.bias": normal(hidden, scale=0.05),
        "bert.pooler.dense.weight": normal(hidden, hidden),
        "bert.pooler.dense.bias": normal(hidden),
        "classifier.weight": normal(len(labels), hidden, scale=0.5),
        "classifier.bias": normal(len(labels)),
    }
    for layer in range(layers):
        p = f"bert.encoder.layer.{layer}."
        for name, shape in [
            ("attention.self.query", (hidden, hidden)),
            ("attention.self.key", (hidden, hidden)),
            ("attention.self.value", (hidden, hidden)),
            ("attention.output.dense", (hidden, hidden)),
            ("intermediate.dense", (intermediate, hidden)),
            ("output.dense", (hidden, intermediate)),
        ]:
            tensors[p + name + ".weight"] = normal(*shape)
            tensors[p + name + ".bias"] = normal(shape[0], scale=0.02)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[p + norm + ".weight"] = 1 + normal(hidden, scale=0.05)
            tensors[p + norm + ".bias"] = normal(hidden, scale=0.05)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
