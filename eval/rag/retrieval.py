"""Retrieval evaluation: ingests eval/rag/documents.jsonl into a fresh collection of a running
Enclave server and prints recall@5 per retriever as JSON.

recall@5: over the answerable questions' gold spans, the share found in the top 5 results — a
result finds a span when it is a chunk of the span's document whose offsets overlap it. mrr@5:
the mean of 1/rank of the first result that finds each span (0 when none of the 5 does), which
tells retrievers apart when both find nearly everything.

    python eval/rag/retrieval.py --base-url http://127.0.0.1:8080 --api-key KEY [--embed-model M]
"""

import argparse
import json
import os
import time

import httpx

from run import load

# Each retriever alone, then the default pipeline: fused, its best candidates reranked.
RETRIEVERS = {
    "lexical": {"retriever": "lexical", "rerank": False},
    "dense": {"retriever": "dense", "rerank": False},
    "fused": {"retriever": "fused", "rerank": False},
    "fused+rerank": {"retriever": "fused"},
}


def headers(api_key):
    return {"Authorization": f"Bearer {api_key}"}


def ingest(client, base_url, api_key, embed_model=None):
    """A fresh collection holding the evaluation documents; returns (id, seconds)."""
    body = {"name": f"eval-{time.time_ns()}"}
    if embed_model:
        body["embed_model"] = embed_model
    r = client.post(base_url + "/v1/collections", json=body, headers=headers(api_key))
    r.raise_for_status()
    cid = r.json()["id"]
    docs = [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in load("documents.jsonl")]
    started = time.time()
    r = client.post(f"{base_url}/v1/collections/{cid}/documents", json={"documents": docs}, headers=headers(api_key))
    r.raise_for_status()
    assert all(row["status"] == "ok" for row in r.json()["documents"]), r.text
    return cid, time.time() - started


# The main set's answerable questions, and paraphrases worded to share almost no words with
# their passage (they tell a strong embedder from a weak one and from keyword search).
QUESTION_SETS = {"": "questions.jsonl", "paraphrase_": "paraphrases.jsonl"}


def recall_at(client, base_url, api_key, cid, retriever, k=5, questions="questions.jsonl"):
    documents = {d["id"]: d for d in load("documents.jsonl")}
    found = total = 0
    reciprocal = 0.0
    misses = []
    for q in load(questions):
        if not q["answerable"]:
            continue
        r = client.post(f"{base_url}/v1/collections/{cid}/search", headers=headers(api_key),
                        json={"query": q["question"], "top_k": k, **RETRIEVERS[retriever]})
        r.raise_for_status()
        results = r.json()["results"]
        for g in q["gold"]:
            start = documents[g["document_id"]]["text"].index(g["span"])
            end = start + len(g["span"])
            total += 1
            ranks = [i for i, x in enumerate(results)
                     if x["document_id"] == g["document_id"] and x["start"] < end and start < x["end"]]
            found += bool(ranks)
            reciprocal += 1 / (ranks[0] + 1) if ranks else 0.0
            if not ranks:
                misses.append(q["id"])
    return found / total, reciprocal / total, misses


def evaluate(base_url, api_key, embed_model=None, k=5):
    with httpx.Client(timeout=600) as client:
        cid, seconds = ingest(client, base_url, api_key, embed_model)
        figures = {"embed_model": embed_model or "default", "k": k, "ingest_seconds": round(seconds, 2)}
        for prefix, questions in QUESTION_SETS.items():
            for retriever in RETRIEVERS:
                recall, mrr, misses = recall_at(client, base_url, api_key, cid, retriever, k, questions)
                figures[f"{prefix}recall@{k}_{retriever}"] = round(recall, 4)
                figures[f"{prefix}mrr@{k}_{retriever}"] = round(mrr, 4)
                figures[f"{prefix}misses_{retriever}"] = misses
        client.delete(f"{base_url}/v1/collections/{cid}", headers=headers(api_key))
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default=os.environ.get("ENCLAVE_API_KEY", ""))
    parser.add_argument("--embed-model")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(evaluate(args.base_url, args.api_key, args.embed_model, args.k), indent=2))


if __name__ == "__main__":
    main()
