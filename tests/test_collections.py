"""Collections over HTTP and the CLI: create, ingest (JSON and files, a corrupt PDF among them),
search with offsets into the document, acl groups, tenant isolation, forgetting that holds after
a restart and across two nodes on PostgreSQL, and billing in the ledger."""

import os
import subprocess
import tempfile
import time
import zipfile

import httpx
import pytest

from accounts_client import admin, ledger, new_key, new_tenant
from conftest import API_KEY, EMBED_MODEL, enclave_bin, launch, start_server, stop
from test_multinode import postgres_url  # noqa: F401  (fixture)

TRAVEL = """# Travel and Expense Policy

Version 4.0, effective 1 January 2024.

## Meals
The daily meal allowance is $75 in the United States and €60 in Europe.

## Hotels
| Location | Nightly limit |
|---|---|
| London, New York, Zurich | $275 |
| Other major cities | $190 |
"""
LEAVE = "Birth parents receive 20 weeks of paid leave. Secondary caregivers receive 5 weeks."
BOARD = "The board's travel budget for 2025 is $1.2 million and is confidential."


def call(base, method, path, key, **kwargs):
    return httpx.request(method, base + path, headers={"Authorization": f"Bearer {key}"}, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def server():
    with start_server([EMBED_MODEL]) as (base, _):
        yield base


@pytest.fixture(scope="module")
def tenant(server):
    tenant = new_tenant(server, "rag-" + str(time.time_ns()))
    _, staff = new_key(server, tenant, groups=["staff"])
    _, board = new_key(server, tenant, groups=["board"])
    return tenant, staff, board


def make_collection(base, key, name):
    r = call(base, "POST", "/v1/collections", key, json={"name": name})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def add(base, key, cid, documents):
    r = call(base, "POST", f"/v1/collections/{cid}/documents", key, json={"documents": documents})
    assert r.status_code == 200, r.text
    return r.json()["documents"]


def search(base, key, cid, query, **fields):
    r = call(base, "POST", f"/v1/collections/{cid}/search", key, json={"query": query, **fields})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_search_finds_the_span_with_offsets_into_the_document(server, tenant):
    _, staff, _ = tenant
    cid = make_collection(server, staff, "policies")
    rows = add(server, staff, cid, [
        {"id": "travel-2024", "title": "Travel policy", "text": TRAVEL, "metadata": {"year": 2024}},
        {"id": "leave", "title": "Parental leave", "text": LEAVE},
    ])
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["chunks"] >= 1 for r in rows)
    for retriever in ("fused", "lexical", "dense"):
        results = search(server, staff, cid, "hotel limit in London", retriever=retriever, top_k=3)
        assert results[0]["document_id"] == "travel-2024", (retriever, results)
    top = search(server, staff, cid, "How many weeks of leave do birth parents get?")[0]
    assert top["document_id"] == "leave"
    assert LEAVE[top["start"]:top["end"]] == top["text"]
    hit = search(server, staff, cid, "meal allowance Europe", filter={"year": 2024})[0]
    assert TRAVEL[hit["start"]:hit["end"]] == hit["text"] and "€60" in hit["text"]
    assert search(server, staff, cid, "meal allowance Europe", filter={"year": 2023}) == []


def test_the_rerank_stage_orders_by_similarity_and_can_be_turned_off_or_named(server, tenant):
    _, staff, _ = tenant
    cid = make_collection(server, staff, "rerank")
    add(server, staff, cid, [
        {"id": "travel", "title": "Travel policy", "text": TRAVEL},
        {"id": "leave", "title": "Parental leave", "text": LEAVE},
        {"id": "board", "title": "Board budget", "text": BOARD},
    ])
    query = "How many weeks of leave do birth parents get?"
    reranked = search(server, staff, cid, query, top_k=3)
    fused = search(server, staff, cid, query, top_k=3, rerank=False)
    dense = search(server, staff, cid, query, top_k=3, retriever="dense", rerank=False)
    assert reranked[0]["document_id"] == "leave"
    # Without a cross-encoder served, the stage scores by the embeddings' cosine: the fused
    # candidates come back in the dense retriever's order, with its scores.
    assert [r["document_id"] for r in reranked] == [r["document_id"] for r in dense]
    assert reranked[0]["score"] == pytest.approx(dense[0]["score"], abs=1e-4)
    # Fusion scores are reciprocal ranks, far below a cosine.
    assert fused[0]["score"] < 0.1 < reranked[0]["score"]
    named = search(server, staff, cid, query, top_k=3, rerank_model=EMBED_MODEL)
    assert named[0]["document_id"] == "leave" and 0.5 < named[0]["score"] <= 1.0
    r = call(server, "POST", f"/v1/collections/{cid}/search", staff,
             json={"query": query, "rerank_model": "no-such-model"})
    assert r.status_code == 404, r.text
    r = call(server, "POST", f"/v1/collections/{cid}/search", staff, json={"query": query, "rerank": "yes"})
    assert r.status_code in (400, 422), r.text


def test_bad_documents_are_reported_per_row_and_never_abort_the_batch(server, tenant):
    _, staff, _ = tenant
    cid = make_collection(server, staff, "mixed")
    rows = add(server, staff, cid, [
        {"id": "fine", "text": "A perfectly good document about expense claims."},
        {"id": "empty", "text": "   "},
        {"id": "bad id/with slash", "text": "x"},
        {"text": 5},
        {"id": "unknown-field", "text": "x", "colour": "red"},
    ])
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "error"], rows
    assert search(server, staff, cid, "expense claims")[0]["document_id"] == "fine"


def test_acl_groups_decide_what_a_key_sees(server, tenant):
    tenant_id, staff, board = tenant
    cid = make_collection(server, board, "board-room")
    add(server, board, cid, [{"id": "board-budget", "text": BOARD, "acl": ["board"]},
                             {"id": "public", "text": "The office opens at 8:00 on weekdays."}])
    assert {r["document_id"] for r in search(server, board, cid, "board travel budget")} == {"board-budget", "public"}
    assert {r["document_id"] for r in search(server, staff, cid, "board travel budget")} == {"public"}
    # A key with no groups sees only documents without an acl.
    _, nobody = new_key(server, tenant_id)
    assert all(r["document_id"] != "board-budget" for r in search(server, nobody, cid, "board travel budget confidential"))


def test_other_tenants_get_404_for_everything(server, tenant):
    _, staff, _ = tenant
    cid = make_collection(server, staff, "private")
    add(server, staff, cid, [{"id": "secret", "text": "The launch date is 3 March."}])
    _, outsider = new_key(server, new_tenant(server, "other-" + str(time.time_ns())))
    for method, path, body in [
        ("POST", f"/v1/collections/{cid}/search", {"query": "launch date"}),
        ("POST", f"/v1/collections/{cid}/documents", {"documents": [{"text": "planted"}]}),
        ("DELETE", f"/v1/collections/{cid}/documents/secret", None),
        ("DELETE", f"/v1/collections/{cid}", None),
        ("POST", "/v1/collections/private/search", {"query": "launch date"}),
    ]:
        r = call(server, method, path, outsider, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert all(c["id"] != cid for c in call(server, "GET", "/v1/collections", outsider).json()["collections"])
    assert search(server, staff, cid, "launch date")[0]["document_id"] == "secret"


def test_duplicate_names_conflict_and_bad_input_is_a_clear_400(server, tenant):
    _, staff, _ = tenant
    make_collection(server, staff, "dupe")
    assert call(server, "POST", "/v1/collections", staff, json={"name": "dupe"}).status_code == 409
    assert call(server, "POST", "/v1/collections", staff, json={"name": ""}).status_code == 400
    cid = make_collection(server, staff, "bounds")
    for body in [{"query": ""}, {"query": "x", "top_k": 0}, {"query": "x", "top_k": 101}, {"query": "x", "retriever": "magic"}]:
        assert call(server, "POST", f"/v1/collections/{cid}/search", staff, json=body).status_code == 400, body
    assert call(server, "POST", f"/v1/collections/{cid}/documents", staff, json={"documents": []}).status_code == 400


def test_ingest_and_search_are_billed(server, tenant):
    tenant_id, staff, _ = tenant
    cid = make_collection(server, staff, "billed")
    before = len(ledger(server, tenant_id))
    add(server, staff, cid, [{"id": "one", "text": LEAVE}])
    search(server, staff, cid, "leave")
    events = ledger(server, tenant_id)[before:]
    kinds = [(e["capability"], e["units"]) for e in events]
    assert kinds[0][0] == "embed" and kinds[0][1]["input_tokens"] > 10, kinds
    assert kinds[1][0] == "search" and kinds[1][1]["search_units"] == 1, kinds
    assert len(kinds) == 2


def docx_bytes(paragraphs):
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    xml = ('<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
           f'wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>')
    path = tempfile.mktemp(suffix=".docx")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("word/document.xml", xml)
    with open(path, "rb") as f:
        return f.read()


def pdf_bytes(text):
    """A minimal valid one-page PDF showing `text`."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_cli_ingests_a_mixed_folder_and_reports_the_corrupt_pdf(server, tenant):
    _, staff, _ = tenant
    env = {**os.environ, "ENCLAVE_URL": server, "ENCLAVE_API_KEY": staff}
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(f"{folder}/policies/hr")
        files = {
            "policies/travel.md": TRAVEL.encode(),
            "policies/hr/leave.txt": LEAVE.encode(),
            "policies/notes.html": b"<h1>Office</h1><p>The office opens at <b>8:00</b> on weekdays.</p>",
            "policies/rates.csv": b"city,limit\nLondon,$275\nParis,$190\n",
            "policies/records.json": b'[{"system": "LedgerFlow", "owner": "Finance"}]',
            "policies/handbook.docx": docx_bytes(["Handbook", "Laptops are replaced every 36 months."]),
            "policies/safety.pdf": pdf_bytes("Hard hats are required on site at all times."),
            "policies/broken.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog broken",
            "policies/image.png": b"\x89PNG\r\n",
        }
        for name, data in files.items():
            with open(f"{folder}/{name}", "wb") as f:
                f.write(data)
        done = subprocess.run([enclave_bin(), "ingest", f"{folder}/policies", "--collection", "cli-docs"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "broken.pdf: error" in out and "unreadable PDF" in out, out
        assert "image.png: skipped" in out, out
        assert "7 stored" in out, out
        listed = subprocess.run([enclave_bin(), "collections", "list"], env=env, capture_output=True, text=True, timeout=60)
        assert "cli-docs" in listed.stdout
        found = subprocess.run([enclave_bin(), "search", "--collection", "cli-docs", "how often are laptops replaced"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert found.returncode == 0 and "handbook.docx" in found.stdout.splitlines()[0], found.stdout
        found = subprocess.run([enclave_bin(), "search", "--collection", "cli-docs", "hard hats on site"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert "safety.pdf" in found.stdout.splitlines()[0], found.stdout


def test_forgetting_holds_after_a_restart():
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite://{home}/enclave.db"
        proc, base = launch([EMBED_MODEL], url)
        try:
            cid = make_collection(base, API_KEY, "forget-me")
            add(base, API_KEY, cid, [{"id": "keep", "text": LEAVE}, {"id": "gone", "text": BOARD}])
            r = call(base, "DELETE", f"/v1/collections/{cid}/documents/gone", API_KEY)
            assert r.status_code == 200, r.text
            receipt = r.json()
            assert receipt["document_id"] == "gone" and receipt["removed"]["chunks"] >= 1 and receipt["removed_at"]
            assert call(base, "DELETE", f"/v1/collections/{cid}/documents/gone", API_KEY).status_code == 404
            assert all(h["document_id"] != "gone" for h in search(base, API_KEY, cid, "board travel budget confidential"))
        finally:
            stop(proc)
        proc, base = launch([EMBED_MODEL], url)
        try:
            hits = search(base, API_KEY, cid, "board travel budget confidential")
            assert hits and all(h["document_id"] != "gone" for h in hits)
            assert search(base, API_KEY, cid, "weeks of paid leave")[0]["document_id"] == "keep"
        finally:
            stop(proc)
        # The text is gone from the database file itself, not only from the index.
        with open(f"{home}/enclave.db", "rb") as f:
            assert b"1.2 million" not in f.read()


def test_two_nodes_on_postgres_see_ingest_and_forget_within_a_second(postgres_url):  # noqa: F811
    procs = []
    try:
        for _ in range(2):
            proc, base = launch([EMBED_MODEL], postgres_url, extra=["--threads", "1"])
            procs.append((proc, base))
        (_, a), (_, b) = procs
        cid = make_collection(a, API_KEY, "shared")
        add(a, API_KEY, cid, [{"id": "board", "text": BOARD}, {"id": "leave", "text": LEAVE}])
        deadline = time.time() + 1.5
        while not search(b, API_KEY, cid, "board travel budget"):
            assert time.time() < deadline, "node b never saw the ingest"
            time.sleep(0.05)
        assert call(b, "DELETE", f"/v1/collections/{cid}/documents/board", API_KEY).status_code == 200
        deadline = time.time() + 1.5
        while any(h["document_id"] == "board" for h in search(a, API_KEY, cid, "board travel budget")):
            assert time.time() < deadline, "node a still finds the forgotten document"
            time.sleep(0.05)
    finally:
        for proc, _ in procs:
            stop(proc)


def test_kill_9_during_ingest_leaves_each_document_whole_or_absent():
    import signal
    import sqlite3
    import threading

    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite://{home}/enclave.db"
        proc, base = launch([EMBED_MODEL], url)
        cid = make_collection(base, API_KEY, "crash")
        long_text = "\n\n".join(f"Paragraph {i}: " + "expense claims travel meals hotels " * 30 for i in range(12))

        def load():
            for batch in range(20):
                docs = [{"id": f"d{batch}-{i}", "text": long_text} for i in range(10)]
                try:
                    call(base, "POST", f"/v1/collections/{cid}/documents", API_KEY, json={"documents": docs})
                except httpx.HTTPError:
                    return

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        worker.join(timeout=60)
        db = sqlite3.connect(f"{home}/enclave.db")
        documents = {row[0] for row in db.execute("SELECT id FROM collection_documents WHERE collection_id = ?", (cid,))}
        chunked = dict(db.execute("SELECT document_id, COUNT(*) FROM collection_chunks WHERE collection_id = ? "
                                  "GROUP BY document_id", (cid,)).fetchall())
        db.close()
        assert documents, "some documents were stored before the kill"
        assert set(chunked) == documents, "a chunk without its document or a document without its chunks"
        assert len(set(chunked.values())) == 1, chunked  # the same text: every stored one is whole
        proc, base = launch([EMBED_MODEL], url)
        try:
            hits = search(base, API_KEY, cid, "expense claims travel", top_k=100)
            assert {h["document_id"] for h in hits} <= documents
        finally:
            stop(proc)
