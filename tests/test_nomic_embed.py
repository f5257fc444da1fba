"""nomic-embed-text-v1.5 (nomic-bert, a ready GGUF) served by Enclave against an independent
fp32 numpy forward pass of the same file, with the task prefix each input_type implies."""

import cohere
import httpx
import numpy as np
import pytest

from conftest import NOMIC_MODEL, start_server
from nomic_reference import NomicBert

SENTENCES = [
    "hello world",
    "A man is eating food.",
    "The quarterly invoice from the supplier was paid late because finance had not approved it.",
    "Retrieval augmented generation combines a search step with a language model: the system first "
    "finds the passages most relevant to a question in a large collection of documents, then hands "
    "those passages to the model as context so that its answer can quote and cite them instead of "
    "relying only on what it memorised during training, which reduces hallucinations noticeably.",
]
INPUT_TYPES = ["search_query", "search_document"]


def cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def nomic():
    """(base_url, api_key, embeddings by input_type) from a server running the f32 GGUF."""
    extra = ("--encoder-engine", "llama", "--encoder-precision", "f32")
    with start_server([NOMIC_MODEL], extra=extra) as (base_url, key):
        co = cohere.ClientV2(api_key=key, base_url=base_url)
        vectors = {kind: co.embed(model=NOMIC_MODEL, texts=SENTENCES, input_type=kind,
                                  embedding_types=["float"]).embeddings.float_
                   for kind in INPUT_TYPES}

        def tokenize(text):
            response = httpx.post(base_url + "/v1/tokenize", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": NOMIC_MODEL, "text": text}, timeout=30)
            response.raise_for_status()
            return response.json()["tokens"]

        yield tokenize, vectors


@pytest.fixture(scope="module")
def reference():
    return NomicBert()


def test_served_embeddings_match_fp32_reference_with_task_prefix(nomic, reference):
    """Measured: 1 - cosine <= 5e-8 (llama.cpp f32 vs numpy). The floor 0.9999 also fails the
    8-bit weights (cosine 0.9982-0.9991 here), the prefix left out (<= 0.97) and [CLS] pooling
    (<= 0.97)."""
    tokenize, vectors = nomic
    for kind in INPUT_TYPES:
        for text, ours in zip(SENTENCES, vectors[kind]):
            prefixed = f"{kind}: {text}"
            ids = tokenize(prefixed)
            # The server's tokenizer agrees with an independent WordPiece over the GGUF vocabulary.
            assert ids == reference.wordpiece_ids(prefixed), prefixed
            assert len(ours) == reference.width
            assert abs(np.linalg.norm(ours) - 1) < 1e-4
            assert cos(ours, reference.embed_ids(ids)) >= 0.9999, (kind, text)


def test_input_type_prefix_changes_the_embedding(nomic):
    """The same text as a query and as a document: measured cosine 0.84-0.97."""
    _, vectors = nomic
    for text, query, document in zip(SENTENCES, vectors["search_query"], vectors["search_document"]):
        assert cos(query, document) < 0.999, text
