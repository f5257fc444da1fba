"""Grounded chat through the official SDKs: documents in, computed citations out (v2 JSON and
SSE, v1 JSON and NDJSON), with the default chat model, whose answers are right often enough
for the citations to be checked."""

import cohere
import httpx
import pytest

from conftest import API_KEY, CHAT_MODEL, EMBED_MODEL, start_server

DOCS = [
    {"id": "100", "data": {"title": "Tall penguins", "snippet": "Emperor penguins are the tallest penguins. They can grow to 122 cm."}},
    {"id": "101", "data": {"title": "Penguin habitats", "snippet": "Emperor penguins only live in Antarctica."}},
    {"id": "102", "data": {"title": "Parental leave policy", "snippet": "Birth parents receive 20 weeks of paid leave."}},
]
QUESTION = [{"role": "user", "content": "How tall can emperor penguins grow, and where do they live?"}]
UNANSWERABLE = [{"role": "user", "content": "How many eggs does an emperor penguin lay each year?"}]


@pytest.fixture(scope="module")
def base_url():
    with start_server([CHAT_MODEL, EMBED_MODEL], extra=("--parallel", "2", "--ctx-size", "2048")) as (url, _):
        yield url


@pytest.fixture()
def co(base_url):
    return cohere.ClientV2(api_key=API_KEY, base_url=base_url, timeout=300)


@pytest.fixture()
def co_v1(base_url):
    return cohere.Client(api_key=API_KEY, base_url=base_url, timeout=300)


def check_citations(answer, citations, ids):
    assert citations, "a supported answer cites its documents"
    for c in citations:
        assert c.text == answer[c.start:c.end]
        assert c.sources, c
        for source in c.sources:
            assert source.id in ids


def test_v2_documents_are_cited_with_exact_offsets(co):
    r = co.chat(model=CHAT_MODEL, messages=QUESTION, documents=DOCS, temperature=0, max_tokens=80)
    answer = r.message.content[0].text
    assert "122" in answer and "Antarctica" in answer, answer
    check_citations(answer, r.message.citations, {"100", "101"})
    assert all(c.type == "TEXT_CONTENT" for c in r.message.citations)
    sources = {s.id: s for c in r.message.citations for s in c.sources}
    # The source echoes the caller's fields plus the id.
    assert sources["100"].document == {"id": "100", **DOCS[0]["data"]}
    assert sources["101"].document["snippet"] == DOCS[1]["data"]["snippet"]
    cited = " ".join(c.text for c in r.message.citations)
    assert "122" in cited and "Antarctica" in cited


def test_v2_string_documents_get_generated_ids(co):
    docs = [d["data"]["snippet"] for d in DOCS]
    r = co.chat(model=CHAT_MODEL, messages=QUESTION, documents=docs, temperature=0, max_tokens=80,
                citation_options={"mode": "fast"})
    check_citations(r.message.content[0].text, r.message.citations, {"doc:0", "doc:1"})
    source = r.message.citations[0].sources[0]
    assert source.document["text"] in docs


def test_v2_stream_interleaves_citations_after_the_cited_text(co):
    events = list(co.chat_stream(model=CHAT_MODEL, messages=QUESTION, documents=DOCS, temperature=0, max_tokens=80))
    types = [e.type for e in events]
    assert types[:2] == ["message-start", "content-start"] and types[-2:] == ["content-end", "message-end"]
    streamed = ""
    citations = []
    for e in events:
        if e.type == "content-delta":
            streamed += e.delta.message.content.text
        elif e.type == "citation-start":
            c = e.delta.message.citations  # one citation object, not a list
            assert c.end <= len(streamed), "a citation follows the text it cites"
            assert streamed[c.start:c.end] == c.text
            assert e.index == len(citations)
            citations.append(c)
        elif e.type == "citation-end":
            assert e.index == len(citations) - 1
    assert types.count("citation-start") == types.count("citation-end") >= 1
    whole = co.chat(model=CHAT_MODEL, messages=QUESTION, documents=DOCS, temperature=0, max_tokens=80)
    assert streamed == whole.message.content[0].text
    assert [(c.start, c.end) for c in citations] == [(c.start, c.end) for c in whole.message.citations]


def test_v2_unanswerable_question_cites_nothing(co):
    r = co.chat(model=CHAT_MODEL, messages=UNANSWERABLE, documents=DOCS, temperature=0, max_tokens=60)
    assert not r.message.citations, r.message.content[0].text


def test_v2_decline_option_withholds_unsupported_claims(base_url):
    # The question invites an invented figure; with on_unsupported=decline nothing unsupported is sent.
    body = {"model": CHAT_MODEL, "messages": UNANSWERABLE, "documents": DOCS, "temperature": 0, "max_tokens": 60,
            "on_unsupported": "decline"}
    r = httpx.post(base_url + "/v2/chat", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["grounding"]["unsupported"] == [] or out["grounding"]["withheld"]
    assert not out["message"].get("citations")
    text = out["message"]["content"][0]["text"]
    for claim in out["grounding"]["unsupported"]:
        assert claim["text"] not in text


def test_v2_citation_mode_off_returns_no_citations(co):
    r = co.chat(model=CHAT_MODEL, messages=QUESTION, documents=DOCS, temperature=0, max_tokens=80,
                citation_options={"mode": "OFF"})
    assert not r.message.citations


@pytest.mark.parametrize("documents,needle", [
    ([5], "documents[0]"),
    ([{"id": "a", "data": {"t": "x"}}, {"id": "a", "data": {"t": "y"}}], "'a'"),
    ([{"id": "a", "data": "not an object"}], "documents[0].data"),
    ([{"data": {}}], "no text"),
])
def test_v2_bad_documents_are_clear_400s(base_url, documents, needle):
    body = {"model": CHAT_MODEL, "messages": QUESTION, "documents": documents}
    r = httpx.post(base_url + "/v2/chat", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]


def test_v2_bad_citation_mode_is_a_400(base_url):
    body = {"model": CHAT_MODEL, "messages": QUESTION, "documents": DOCS, "citation_options": {"mode": "SOMETIMES"}}
    r = httpx.post(base_url + "/v2/chat", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 400 and "citation mode" in r.json()["message"]


def test_v1_documents_citations_and_documents(co_v1):
    docs = [{"id": d["id"], **d["data"]} for d in DOCS]
    r = co_v1.chat(model=CHAT_MODEL, message=QUESTION[0]["content"], documents=docs, temperature=0, max_tokens=80)
    assert r.citations, r.text
    for c in r.citations:
        assert r.text[c.start:c.end] == c.text
        assert set(c.document_ids) <= {"100", "101"}
    assert {d["id"] for d in r.documents} <= {"100", "101", "102"}
    assert any(d["id"] == "100" and d["title"] == "Tall penguins" for d in r.documents)


def test_v1_stream_sends_citation_events(co_v1):
    docs = [{"id": d["id"], **d["data"]} for d in DOCS]
    events = list(co_v1.chat_stream(model=CHAT_MODEL, message=QUESTION[0]["content"], documents=docs,
                                    temperature=0, max_tokens=80))
    kinds = [e.event_type for e in events]
    assert kinds[0] == "stream-start" and kinds[-1] == "stream-end"
    assert "citation-generation" in kinds
    text = "".join(e.text for e in events if e.event_type == "text-generation")
    for e in events:
        if e.event_type == "citation-generation":
            for c in e.citations:
                assert text[c.start:c.end] == c.text
    assert events[-1].response.citations


def test_documents_are_billed_as_input(co):
    plain = co.chat(model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=8)
    grounded = co.chat(model=CHAT_MODEL, messages=QUESTION, documents=DOCS, temperature=0, max_tokens=8)
    extra = grounded.usage.billed_units.input_tokens - plain.usage.billed_units.input_tokens
    # The documents' own text is billed; the server's grounding instructions are not.
    assert 40 <= extra <= 120, extra


def test_langchain_chat_cohere_returns_the_citations(base_url):
    """LangChain's ChatCohere (langchain-cohere, on cohere 5.x: the cohere5 suite runs this)."""
    langchain_cohere = pytest.importorskip("langchain_cohere")
    from langchain_core.documents import Document
    from langchain_core.messages import HumanMessage

    llm = langchain_cohere.ChatCohere(cohere_api_key=API_KEY, base_url=base_url, model=CHAT_MODEL,
                                      temperature=0, max_tokens=80)
    docs = [Document(page_content=d["data"]["snippet"], metadata={"id": d["id"]}) for d in DOCS]
    message = llm.invoke([HumanMessage(content=QUESTION[0]["content"])], documents=docs)
    answer = message.content
    citations = message.response_metadata.get("citations") or message.additional_kwargs.get("citations")
    assert citations, message
    for c in citations:
        assert answer[c.start:c.end] == c.text
        assert {s.id for s in c.sources} <= {"100", "101"}


POLICY = """# Travel and Expense Policy

Version 4.0, effective 1 January 2024.

## Meals
The daily meal allowance is $75 in the United States and €60 in Europe.

## Claims
Expense claims must be submitted within 45 days of the trip end date.
"""


def test_collections_ground_the_chat_and_citations_point_into_the_stored_document(base_url, co):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    made = httpx.post(base_url + "/v1/collections", json={"name": "grounded-policies"}, headers=headers, timeout=60)
    assert made.status_code == 200, made.text
    cid = made.json()["id"]
    added = httpx.post(f"{base_url}/v1/collections/{cid}/documents", headers=headers, timeout=120, json={
        "documents": [{"id": "travel-2024", "title": "Travel policy", "text": POLICY},
                      {"id": "penguins", "title": "Penguins", "text": DOCS[0]["data"]["snippet"]}]})
    assert added.status_code == 200, added.text
    question = [{"role": "user", "content": "Within how many days must expense claims be submitted?"}]
    body = {"model": CHAT_MODEL, "messages": question, "collections": ["grounded-policies"], "temperature": 0,
            "max_tokens": 60}
    r = httpx.post(base_url + "/v2/chat", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    answer = out["message"]["content"][0]["text"]
    assert "45" in answer, answer
    citations = out["message"]["citations"]
    assert citations, out
    for c in citations:
        assert answer[c["start"]:c["end"]] == c["text"]
        for s in c["sources"]:
            assert s["document_id"] == "travel-2024" and s["title"] == "Travel policy"
            assert POLICY[s["start"]:s["end"]] == s["span"]["text"]
    # The same through the SDK (v2) and v1: the extension field rides along as extra body.
    sdk = co.chat(model=CHAT_MODEL, messages=question, temperature=0, max_tokens=60,
                  request_options={"additional_body_parameters": {"collections": [cid]}})
    assert sdk.message.citations and "45" in sdk.message.content[0].text
    # Another tenant cannot ground a chat in this collection.
    tenant = httpx.post(base_url + "/admin/tenants", json={"name": "outsider-grounded"}, headers=headers, timeout=60)
    key = httpx.post(base_url + "/admin/keys", json={"tenant": tenant.json()["id"]}, headers=headers, timeout=60)
    outsider = {"Authorization": f"Bearer {key.json()['key']}"}
    r = httpx.post(base_url + "/v2/chat", json=body, headers=outsider, timeout=300)
    assert r.status_code == 404, r.text
