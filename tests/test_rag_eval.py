"""Floors on the labelled grounded-answer set (eval/rag): retrieval recall@5 per retriever with the
default embedder and with nomic-embed-text-v1.5, on the main questions and on paraphrases, and — with the default chat model on a fixed fifth of the questions (every
question whose number is 1 mod 5) — citation precision and how rarely unanswerable questions are
cited. The full figures come from eval/rag/run.py and eval/rag/retrieval.py (docs/grounding.md)."""

import os
import sys

import pytest

from conftest import API_KEY, CHAT_MODEL, EMBED_MODEL, NOMIC_MODEL, start_server

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "eval", "rag"))
import retrieval  # noqa: E402
import run  # noqa: E402


@pytest.fixture(scope="module")
def base_url():
    with start_server([CHAT_MODEL, EMBED_MODEL, NOMIC_MODEL], extra=("--parallel", "1", "--ctx-size", "4096")) as (url, _):
        yield url


def test_retrieval_recall_at_5(base_url):
    figures = retrieval.evaluate(base_url, API_KEY)
    print(figures)
    # The default pipeline (fused, then reranked) and each retriever alone, on the main set.
    assert figures["recall@5_fused+rerank"] >= 0.95, figures
    assert figures["recall@5_fused"] >= 0.95, figures
    assert figures["recall@5_dense"] >= 0.93, figures
    assert figures["recall@5_lexical"] >= 0.90, figures
    # Paraphrased questions share almost no words with their passage: keyword search finds a
    # third, fusion alone two thirds; the rerank stage recovers what the embedder finds.
    assert figures["paraphrase_recall@5_fused+rerank"] >= 0.93, figures
    assert figures["paraphrase_recall@5_fused+rerank"] > figures["paraphrase_recall@5_fused"] + 0.2, figures
    assert figures["paraphrase_mrr@5_fused+rerank"] >= 0.8, figures


def test_retrieval_with_nomic_embed(base_url):
    figures = retrieval.evaluate(base_url, API_KEY, embed_model=NOMIC_MODEL)
    print(figures)
    assert figures["recall@5_fused+rerank"] >= 0.95, figures
    assert figures["recall@5_dense"] >= 0.95, figures
    assert figures["paraphrase_recall@5_fused+rerank"] >= 0.9, figures
    assert figures["paraphrase_mrr@5_dense"] >= 0.7, figures


def test_citation_precision_and_unanswerable_questions_on_a_fixed_fifth(base_url):
    ids = {q["id"] for q in run.load("questions.jsonl") if int(q["id"][1:]) % 5 == 1}
    figures = run.evaluate(base_url, API_KEY, CHAT_MODEL, ids=ids)
    print(figures)
    # Floors at or below today's figures on this fifth (precision 1.0 on 9 citations, 2 of its 3
    # unanswerable questions uncited, 8 of 11 answers cited); docs/grounding.md has the full
    # set's (precision 1.0 on 37 citations, 12 of 15 unanswerable questions uncited).
    assert figures["citation_precision"] >= 0.85, figures
    assert figures["unanswerable_uncited"] >= 0.6, figures
    assert figures["cited_answers"] >= 0.6, figures
