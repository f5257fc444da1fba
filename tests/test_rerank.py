"""Rerank through the official SDK: v1/v2 shapes, billing, bad input, and retrieval quality of
each scorer on a labelled set (nDCG@10 against the embedding order)."""

import json
import math
import random
from pathlib import Path

import cohere
import pytest

from conftest import EMBED_MODEL, MODEL

EVAL = json.loads((Path(__file__).parent / "data" / "rerank_eval.json").read_text())["queries"]


def shuffled(query_index, documents):
    """A fixed per-query shuffle, so no scorer profits from the file's order."""
    order = list(range(len(documents)))
    random.Random(query_index).shuffle(order)
    return [documents[i] for i in order]


def ndcg_at_10(ranked_relevances, all_relevances):
    def dcg(rels):
        return sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(rels[:10]))

    ideal = dcg(sorted(all_relevances, reverse=True))
    return dcg(ranked_relevances) / ideal if ideal else 0.0


def mean_ndcg(co, model):
    scores = []
    for qi, item in enumerate(EVAL):
        docs = shuffled(qi, item["documents"])
        response = co.rerank(model=model, query=item["query"], documents=[d["text"] for d in docs])
        ranked = [docs[r.index]["relevance"] for r in response.results]
        scores.append(ndcg_at_10(ranked, [d["relevance"] for d in docs]))
    return sum(scores) / len(scores)


@pytest.fixture(scope="module")
def quality(server):
    co = cohere.ClientV2(api_key="sdk-test-key", base_url=server)
    figures = {"embedding-cosine": mean_ndcg(co, EMBED_MODEL), "llm-judge": mean_ndcg(co, MODEL)}
    print("\nrerank nDCG@10:", json.dumps(figures))
    return figures


def test_scorers_rank_relevant_documents_first(quality):
    # Both scorers must be far better than a random order (about 0.5 on this set).
    assert quality["embedding-cosine"] > 0.8
    assert quality["llm-judge"] > 0.6


def test_v2_rerank_shape_and_billing(co):
    documents = [d["text"] for d in EVAL[0]["documents"]]
    response = co.rerank(model=EMBED_MODEL, query=EVAL[0]["query"], documents=documents, top_n=3)
    assert len(response.results) == 3
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert response.results[0].index == 0
    assert response.meta.billed_units.search_units == 1


def test_v1_rerank_objects_rank_fields_and_return_documents(co_v1):
    documents = [{"title": "Passwords", "body": d["text"]} for d in EVAL[0]["documents"]]
    response = co_v1.rerank(
        model=EMBED_MODEL, query=EVAL[0]["query"], documents=documents,
        rank_fields=["body"], return_documents=True,
    )
    assert response.results[0].index == 0
    assert response.results[0].document.body == documents[0]["body"]


def test_long_documents_score_by_their_best_chunk(co):
    filler = "The weather report mentions rain and wind in the northern hills. " * 60
    answer = EVAL[0]["documents"][0]["text"]
    response = co.rerank(model=EMBED_MODEL, query=EVAL[0]["query"], documents=[filler, filler + answer])
    assert response.results[0].index == 1


def test_rerank_bad_input(co):
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model=EMBED_MODEL, query="", documents=["a"])
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model=EMBED_MODEL, query="q", documents=[])
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model=EMBED_MODEL, query="q", documents=["a"], top_n=0)
    with pytest.raises(cohere.NotFoundError):
        co.rerank(model="no-such-reranker", query="q", documents=["a"])
