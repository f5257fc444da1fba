"""Grounded-answer evaluation: asks each question of eval/rag/questions.jsonl through a running
Enclave server's /v2/chat with documents, and prints JSON figures:

- citation_precision: share of citations (on answerable questions) whose source span overlaps a
  gold span of the question;
- answer_accuracy: share of answerable questions whose answer states every expected fact;
- cited_answers: share of answerable questions with at least one citation;
- unanswerable_uncited: share of unanswerable questions answered with no citation (the target
  is at least 3 of 4), and unanswerable_declined: share that say the documents do not say.

By default the documents are ingested into a fresh collection and each question is asked with
`collections` (retrieval picks the chunks, as in production); with `--direct`, each question
instead gets its gold documents plus those sharing most words with it (the near-duplicate
versions among them), `--documents` in all, passed as `documents`.

    python eval/rag/run.py --base-url http://127.0.0.1:8080 --api-key KEY [--limit N] [--direct]
"""

import argparse
import json
import os
import random
import re
import sys
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
WORD = re.compile(r"[a-z0-9]+")


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def words(text):
    return set(WORD.findall(text.lower())) - {"the", "a", "an", "of", "to", "in", "is", "for", "and", "what", "how"}


def pick_documents(question, documents, count):
    """Gold documents first, then those sharing most words with the question."""
    by_id = {d["id"]: d for d in documents}
    chosen = [g["document_id"] for g in question["gold"]]
    q = words(question["question"])
    ranked = sorted(documents, key=lambda d: -len(q & words(d["title"] + " " + d["text"])))
    for d in ranked:
        if len(chosen) >= count:
            break
        if d["id"] not in chosen:
            chosen.append(d["id"])
    random.Random(question["id"]).shuffle(chosen)
    return [by_id[i] for i in dict.fromkeys(chosen)]


def gold_ranges(question, by_id):
    out = []
    for g in question["gold"]:
        text = by_id[g["document_id"]]["text"]
        start = text.index(g["span"])
        out.append((g["document_id"], start, start + len(g["span"])))
    return out


def ask(client, base_url, api_key, model, question, docs, mode, collection=None):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question["question"]}],
        "temperature": 0,
        "max_tokens": 120,
        "citation_options": {"mode": mode},
    }
    if collection:
        body["collections"] = [collection]
    else:
        body["documents"] = [{"id": d["id"], "data": {"title": d["title"], "text": d["text"]}} for d in docs]
    r = client.post(base_url + "/v2/chat", json=body, headers={"Authorization": f"Bearer {api_key}"})
    r.raise_for_status()
    return r.json()


def cited_span(source):
    """(document id, start, end) of a citation source in its stored document, or None."""
    if "document_id" in source:
        return source["document_id"], source["start"], source["end"]
    span = source.get("span") or {}
    if span.get("field") == "text":
        return source["id"], span["start"], span["end"]
    return None


def evaluate(base_url, api_key, model, limit=None, documents_per_question=4, mode="ACCURATE", ids=None, log=None,
             direct=False):
    documents = load("documents.jsonl")
    questions = load("questions.jsonl")
    if ids:
        questions = [q for q in questions if q["id"] in ids]
    if limit:
        questions = questions[:limit]
    by_id = {d["id"]: d for d in documents}
    cites = precise = answered = accurate = cited_answers = 0
    unanswerable = uncited = declined = 0
    groundedness = []
    started = time.time()
    with httpx.Client(timeout=600) as client:
        collection = None
        if not direct:
            from retrieval import ingest
            collection, _ = ingest(client, base_url, api_key)
        for q in questions:
            docs = pick_documents(q, documents, documents_per_question)
            out = ask(client, base_url, api_key, model, q, docs, mode, collection)
            answer = out["message"]["content"][0]["text"]
            citations = out["message"].get("citations") or []
            grounding = out.get("grounding") or {}
            if grounding.get("groundedness") is not None:
                groundedness.append(grounding["groundedness"])
            hits = []
            if q["answerable"]:
                answered += 1
                gold = gold_ranges(q, by_id)
                ok_facts = all(f.lower() in answer.lower() for f in q["facts"])
                accurate += ok_facts
                cited_answers += bool(citations)
                for c in citations:
                    cites += 1
                    hit = False
                    for s in c["sources"]:
                        at = cited_span(s)
                        if at is None:
                            continue
                        hit |= any(doc == at[0] and at[1] < end and start < at[2] for doc, start, end in gold)
                    precise += hit
                    hits.append(hit)
            else:
                unanswerable += 1
                uncited += not citations
                declined += bool(grounding.get("declined"))
            if log:
                log(json.dumps({"id": q["id"], "answer": answer, "citations": len(citations), "precise": hits,
                                "cited": [c["text"] for c in citations],
                                "sources": [[cited_span(s) for s in c["sources"]] for c in citations],
                                "groundedness": grounding.get("groundedness")}))
    return {
        "model": model,
        "mode": mode,
        "questions": len(questions),
        "documents": "direct" if direct else "collection",
        "citation_precision": round(precise / cites, 4) if cites else None,
        "citations": cites,
        "answer_accuracy": round(accurate / answered, 4) if answered else None,
        "cited_answers": round(cited_answers / answered, 4) if answered else None,
        "unanswerable_uncited": round(uncited / unanswerable, 4) if unanswerable else None,
        "unanswerable_declined": round(declined / unanswerable, 4) if unanswerable else None,
        "mean_groundedness": round(sum(groundedness) / len(groundedness), 4) if groundedness else None,
        "seconds": round(time.time() - started, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default=os.environ.get("ENCLAVE_API_KEY", ""))
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--mode", default="ACCURATE")
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    figures = evaluate(args.base_url, args.api_key, args.model, args.limit, args.documents, args.mode, log=log,
                       direct=args.direct)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
