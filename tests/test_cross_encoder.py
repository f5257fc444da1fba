"""A user-supplied cross-encoder (a BertForSequenceClassification folder) as a rerank model:
its scores match the fp32 numpy reference reading the document in segment B, it is listed as
a cross-encoder, and it refuses what it cannot do."""

import math

import cohere
import numpy as np
import pytest
import httpx

import tiny_cross_encoder
from bert_reference import Bert
from conftest import API_KEY, EMBED_MODEL, start_server

QUERY = "how do I reset my password?"
DOCUMENTS = [
    "Open settings, choose security, click forgot password and follow the link we email you.",
    "Annual plans can be refunded in full within days of purchase.",
    "Standard shipping takes business days; express is faster.",
    "The office wifi password is in the break room.",
    "We restore the router to factory settings after a reset.",
    "",
    "Rate limit and budget settings are per api key. " * 30,
]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    folder = tiny_cross_encoder.write(tmp_path_factory.mktemp("models") / "tiny-reranker")
    with start_server([str(folder), EMBED_MODEL]) as (base_url, _):
        yield base_url, Bert(folder)


def test_scores_match_the_reference_with_the_document_in_segment_b(reranker):
    base_url, reference = reranker
    co = cohere.ClientV2(api_key=API_KEY, base_url=base_url)
    response = co.rerank(model="tiny-reranker", query=QUERY, documents=DOCUMENTS)
    ours = {r.index: r.relevance_score for r in response.results}
    assert sorted(ours) == list(range(len(DOCUMENTS)))
    # The long document is cut to the model's 128 tokens, like the reference's pair truncation.
    expected = {}
    misread = {}
    for i, doc in enumerate(DOCUMENTS):
        reference.tokenizer.enable_truncation(128, strategy="only_second")
        expected[i] = sigmoid(float(reference.pair_logits(QUERY, doc)[0]))
        # The same pair with every token in segment A, as llama.cpp's BERT graph alone reads it.
        misread[i] = sigmoid(float(reference.pair_logits(QUERY, doc, type_ids=lambda e: [0] * len(e.ids))[0]))
    for i in ours:
        assert abs(ours[i] - expected[i]) < 0.02, (i, ours[i], expected[i])
    assert max(abs(misread[i] - expected[i]) for i in ours) > 0.1, "the segments should matter for this model"
    # Ranked as the reference ranks them, wherever its scores are apart by more than int8 noise.
    for i in ours:
        for j in ours:
            if expected[i] > expected[j] + 0.03:
                assert ours[i] > ours[j], (i, j)
    assert response.meta.billed_units.search_units == 1


def test_listed_as_a_cross_encoder_and_default_rerank_model(reranker):
    base_url, _ = reranker
    headers = {"Authorization": f"Bearer {API_KEY}"}
    entry = httpx.get(f"{base_url}/v1/models/tiny-reranker", headers=headers, timeout=30).json()
    assert entry["endpoints"] == ["rerank"]
    assert entry["rerank_scorer"] == "cross-encoder"
    assert entry["labels"] == ["LABEL_0"]
    listed = httpx.get(f"{base_url}/v1/models?endpoint=rerank", headers=headers, timeout=30).json()
    assert {"tiny-reranker", EMBED_MODEL} <= {m["name"] for m in listed["models"]}
    # v1 may omit the model: a served cross-encoder is the default reranker.
    v1 = cohere.Client(api_key=API_KEY, base_url=base_url)
    named = cohere.ClientV2(api_key=API_KEY, base_url=base_url).rerank(
        model="tiny-reranker", query=QUERY, documents=DOCUMENTS[:3])
    default = v1.rerank(query=QUERY, documents=DOCUMENTS[:3])
    assert [r.index for r in default.results] == [r.index for r in named.results]
    assert np.allclose([r.relevance_score for r in default.results],
                       [r.relevance_score for r in named.results], atol=1e-6)


def test_refuses_to_embed(reranker):
    base_url, _ = reranker
    co = cohere.ClientV2(api_key=API_KEY, base_url=base_url)
    with pytest.raises(cohere.errors.BadRequestError) as err:
        co.embed(model="tiny-reranker", texts=["hello"], input_type="search_query", embedding_types=["float"])
    assert "cross-encoder" in str(err.value.body)
    # Embedding still works with the embedding model beside it.
    ok = co.embed(model=EMBED_MODEL, texts=["hello"], input_type="search_query", embedding_types=["float"])
    assert len(ok.embeddings.float_[0]) == 384
