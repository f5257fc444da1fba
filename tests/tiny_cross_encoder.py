"""Writes a small cross-encoder folder with seeded random weights, in the exact layout Hugging
Face saves: a BertForSequenceClassification (config.json, vocab.txt, model.safetensors) or an
XLMRobertaForSequenceClassification (config.json, a SentencePiece Unigram tokenizer.json,
model.safetensors). It is for checking Enclave against the numpy reference: no trained
cross-encoder ships in any registry package, so the weights are random and the tests compare
numbers, not judgement."""

import json
import string
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

WORDS = """the a an of to in and or is are was be for on with by at from as how do does can what
which when where who why reset password account refund annual plan policy shipping standard
express days business order invoice paid late weather rain wind hills office kitchen security
settings email link forgot router factory wifi break room team year review monthly renew method
payment original purchase months unused full within after we our your it this that data
backup restore server key api rate limit budget cost price model token tokens search query
document relevant answer yes no""".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = list(".,?!'\"-:;()")


def nfkc_charsmap():
    """SentencePiece's compiled NFKC normalization table (what XLM-R's tokenizer.json carries as its
    `Precompiled` normalizer), taken from a throwaway SentencePiece model."""
    import io

    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["password reset", "shipping days"] * 20), model_writer=model,
        vocab_size=20, hard_vocab_limit=False, normalization_rule_name="nmt_nfkc", minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def write_unigram_tokenizer(path):
    """XLM-R's tokenizer shape: fairseq's four specials first, pieces with scores, <mask> last,
    and XLM-R's normalizer (NFKC from a precompiled table, runs of spaces merged)."""
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -6.0)]
    pieces += [("\u2581" + w, -3.0 - 0.001 * i) for i, w in enumerate(WORDS)]
    characters = string.ascii_lowercase + string.ascii_uppercase + "".join(PUNCTUATION)
    pieces += [(c, -8.0 - 0.001 * i) for i, c in enumerate(characters)]
    pieces += [("ing", -4.6), ("ed", -4.7), ("<mask>", 0.0)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(nfkc_charsmap()), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer.save(str(path))
    return len(pieces)


def write_byte_level_bpe(folder, as_json):
    """English RoBERTa's tokenizer files: GPT-2 byte-level BPE as `vocab.json` + `merges.txt`
    (and, `as_json`, the same in a `tokenizer.json` as fast tokenizers save it), trained on the
    fixture's words, with RoBERTa's specials first (<s>=0, <pad>=1, </s>=2)."""
    from tokenizers import ByteLevelBPETokenizer
    tokenizer = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS[i:i + 12]) for i in range(0, len(WORDS), 6)] * 4
    tokenizer.train_from_iterator(corpus, vocab_size=600, min_frequency=1,
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer.save_model(str(folder))
    if as_json:
        tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer.get_vocab_size()


def write(folder, family="bert", seed=7, hidden=128, heads=4, layers=2, intermediate=256, labels=("LABEL_0",),
          classifier=True, pooling=None, bpe_json=False):
    """`classifier=False` writes the same model as a sentence encoder (`BertModel` /
    `XLMRobertaModel`; `family="distilbert"` writes one as `DistilBertModel`); `pooling` ("mean"
    or "cls") adds sentence-transformers' 1_Pooling."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    roberta = family in ("xlm-roberta", "roberta")
    if family == "roberta":
        vocab_size = write_byte_level_bpe(folder, bpe_json)
    elif roberta:
        vocab_size = write_unigram_tokenizer(folder / "tokenizer.json")
    else:
        vocab = SPECIALS + PUNCTUATION + WORDS + ["##s", "##ing", "##ed", "##ly"]
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        vocab_size = len(vocab)
    # RoBERTa numbers positions from pad_token_id + 1 = 2.
    positions = 130 if roberta else 128
    config = {
        "architectures": [{"xlm-roberta": "XLMRoberta", "roberta": "Roberta"}.get(family, "Bert")
                          + ("ForSequenceClassification" if classifier else "Model")],
        "model_type": family,
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": positions,
        "type_vocab_size": 1 if roberta else 2,
        "pad_token_id": 1 if roberta else 0,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if pooling:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
        }))
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    prefix = "roberta." if roberta else "bert."
    tensors = {
        prefix + "embeddings.word_embeddings.weight": normal(vocab_size, hidden, scale=0.5),
        prefix + "embeddings.position_embeddings.weight": normal(positions, hidden, scale=0.2),
        # Segment embeddings far apart, so reading the document in the wrong segment shows.
        prefix + "embeddings.token_type_embeddings.weight": normal(1 if roberta else 2, hidden, scale=1.0),
        prefix + "embeddings.LayerNorm.weight": 1 + normal(hidden, scale=0.05),
        prefix + "embeddings.LayerNorm.bias": normal(hidden, scale=0.05),
    }
    if roberta:
        tensors.update({
            "classifier.dense.weight": normal(hidden, hidden),
            "classifier.dense.bias": normal(hidden),
            "classifier.out_proj.weight": normal(len(labels), hidden, scale=0.5),
            "classifier.out_proj.bias": normal(len(labels)),
        })
    else:
        tensors.update({
            "bert.pooler.dense.weight": normal(hidden, hidden),
            "bert.pooler.dense.bias": normal(hidden),
            "classifier.weight": normal(len(labels), hidden, scale=0.5),
            "classifier.bias": normal(len(labels)),
        })
    for layer in range(layers):
        p = f"{prefix}encoder.layer.{layer}."
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
    if family == "distilbert":
        config, tensors = as_distilbert(config, tensors)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# Hugging Face's DistilBERT names for BERT's layer modules.
DISTILBERT_MODULES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def as_distilbert(config, tensors):
    """The same sentence encoder as DistilBertModel saves it: DistilBERT's config keys and tensor
    names, no token-type embeddings, no pooler or classifier."""
    distil_config = {
        "architectures": ["DistilBertModel"], "model_type": "distilbert",
        "vocab_size": config["vocab_size"], "dim": config["hidden_size"],
        "hidden_dim": config["intermediate_size"], "n_layers": config["num_hidden_layers"],
        "n_heads": config["num_attention_heads"],
        "max_position_embeddings": config["max_position_embeddings"],
        "activation": "gelu", "sinusoidal_pos_embds": False, "pad_token_id": 0,
    }
    renamed = {}
    for name, value in tensors.items():
        if not name.startswith("bert.") or "token_type" in name or "pooler" in name:
            continue
        name = name[len("bert."):]
        if name.startswith("encoder.layer."):
            block, rest = name[len("encoder.layer."):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            name = f"transformer.layer.{block}.{DISTILBERT_MODULES[module]}.{param}"
        renamed["distilbert." + name] = value
    return distil_config, renamed
