"""Tenants, keys, metering, budgets, rate limits and isolation on one node (SQLite), driven
through the admin API and the official SDKs."""

import subprocess
import time
import uuid

import cohere
import httpx
import openai

from accounts_client import admin, embed, ledger, new_key, new_tenant, usage_rows
from conftest import API_KEY, EMBED_MODEL, MODEL, enclave_bin


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_metered_calls_write_one_event_each_with_billing_headers(server):
    tenant = new_tenant(server, unique("acme"))
    _, key = new_key(server, tenant, name="app")
    co = cohere.ClientV2(api_key=key, base_url=server)
    billed = 0
    for text in ["a short sentence", "another one, a bit longer than the first"]:
        response = co.embed(model=EMBED_MODEL, texts=[text], input_type="search_document", embedding_types=["float"])
        billed += response.meta.billed_units.input_tokens
    chat = co.chat(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
    oai = openai.OpenAI(api_key=key, base_url=server + "/v1")
    oai_embedding = oai.embeddings.create(model=EMBED_MODEL, input="openai side")
    billed += oai_embedding.usage.prompt_tokens

    # Failed calls bill nothing.
    assert embed(server, key, texts=[]).status_code == 400
    assert httpx.post(server + "/v2/chat", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}).status_code == 404

    rows = usage_rows(server, "capability", tenant=tenant)
    by_capability = {row["capability"]: row for row in rows}
    assert by_capability["embed"]["events"] == 3
    assert by_capability["embed"]["input_tokens"] == billed
    assert by_capability["chat"]["events"] == 1
    assert by_capability["chat"]["input_tokens"] == chat.usage.billed_units.input_tokens
    assert by_capability["chat"]["output_tokens"] == chat.usage.billed_units.output_tokens
    # $0.10 per 1M embedded tokens, $0.15 / $0.60 per 1M chat tokens (the default price book).
    assert abs(by_capability["embed"]["cost_usd"] - billed * 0.10 / 1e6) < 1e-12
    events = ledger(server, tenant)
    assert len(events) == 4
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert all(e["model_type"] == "base" for e in events)

    raw = embed(server, key)
    assert raw.status_code == 200
    assert raw.headers["x-enclave-billed-units"] == f"input_tokens={raw.json()['meta']['billed_units']['input_tokens']}"
    assert float(raw.headers["x-enclave-cost-usd"]) > 0
    assert raw.headers["x-enclave-request-id"] in {e["request_id"] for e in ledger(server, tenant)}


def test_streams_bill_what_was_generated(server):
    tenant = new_tenant(server, unique("stream"))
    _, key = new_key(server, tenant)
    co = cohere.ClientV2(api_key=key, base_url=server)
    end = None
    for event in co.chat_stream(model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12):
        if event.type == "message-end":
            end = event
    assert end is not None
    events = ledger(server, tenant)
    assert len(events) == 1
    assert events[0]["units"]["output_tokens"] == end.delta.usage.billed_units.output_tokens

    # A client that goes away mid-stream is billed for what it was sent.
    with httpx.stream("POST", server + "/v2/chat", headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL, "stream": True, "max_tokens": 200,
                            "messages": [{"role": "user", "content": "Write a long story about the sea."}]}) as response:
        assert response.status_code == 200
        request_id = response.headers["x-enclave-request-id"]
        for i, _ in enumerate(response.iter_lines()):
            if i > 12:
                break
    deadline = time.time() + 10
    while time.time() < deadline:
        partial = [e for e in ledger(server, tenant) if e["request_id"] == request_id]
        if partial:
            break
        time.sleep(0.1)
    assert len(partial) == 1
    assert 0 < partial[0]["units"]["output_tokens"] < 200


def test_budgets_refuse_with_402_and_are_never_overspent(server):
    tenant = new_tenant(server, unique("budget"))
    # About a dozen small embed calls' worth at $0.10 per 1M tokens.
    key_id, key = new_key(server, tenant, budget_usd=0.000005, budget_period="daily")
    statuses = [embed(server, key).status_code for _ in range(40)]
    assert 200 in statuses and 402 in statuses
    assert set(statuses) <= {200, 402}
    refused = embed(server, key)
    assert refused.status_code == 402
    message = refused.json()["message"]
    assert "key budget exceeded" in message and "resets at" in message
    spent = sum(r["cost_usd"] for r in usage_rows(server, "key", key=API_KEY, tenant=tenant))
    assert 0 < spent <= 0.000005 + 1e-15
    assert len(ledger(server, tenant)) == statuses.count(200)
    listed = {k["id"]: k for k in admin(server, "GET", "/admin/keys", params={"tenant": tenant}).json()["keys"]}
    budget = listed[key_id]["budget"]
    assert budget["period"] == "daily" and budget["held_usd"] == 0
    assert abs(budget["spent_usd"] - spent) < 1e-12


def test_tenant_budgets_cover_all_their_keys(server):
    tenant = new_tenant(server, unique("tb"), budget_usd=0.000003, budget_period="monthly")
    _, first = new_key(server, tenant)
    _, second = new_key(server, tenant)
    statuses = [embed(server, k).status_code for _ in range(15) for k in (first, second)]
    assert 402 in statuses
    assert "tenant budget exceeded" in embed(server, first).json()["message"]
    spent = sum(r["cost_usd"] for r in usage_rows(server, "tenant", tenant=tenant))
    assert spent <= 0.000003 + 1e-15


def test_rate_limits_answer_429_with_retry_after(server):
    tenant = new_tenant(server, unique("rate"))
    _, key = new_key(server, tenant, rpm=3)
    # Stay inside one minute window.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    statuses = [embed(server, key).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = embed(server, key)
    assert limited.status_code == 429
    assert "3 requests per minute" in limited.json()["message"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # OpenAI routes answer in OpenAI's shape.
    oai = httpx.post(server + "/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                     json={"model": EMBED_MODEL, "input": "x"})
    assert oai.status_code == 429 and oai.json()["error"]["type"] == "rate_limit_error"


def test_scopes_expiry_and_revocation(server):
    tenant = new_tenant(server, unique("scope"))
    _, embed_only = new_key(server, tenant, scopes=["embed"])
    assert embed(server, embed_only).status_code == 200
    chat = httpx.post(server + "/v2/chat", headers={"Authorization": f"Bearer {embed_only}"},
                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert chat.status_code == 403 and "chat" in chat.json()["message"]
    _, other_model = new_key(server, tenant, scopes=["model:some-other-model"])
    assert embed(server, other_model).status_code == 403

    _, expired = new_key(server, tenant, expires_at="2020-01-01T00:00:00Z")
    response = embed(server, expired)
    assert response.status_code == 401 and "expired" in response.json()["message"]

    key_id, key = new_key(server, tenant)
    assert embed(server, key).status_code == 200
    assert admin(server, "DELETE", f"/admin/keys/{key_id}").status_code == 200
    response = embed(server, key)
    assert response.status_code == 401 and "revoked" in response.json()["message"]
    listed = admin(server, "GET", "/admin/keys", params={"tenant": tenant}).json()["keys"]
    assert all("key" not in k for k in listed)
    assert {k["id"]: k["revoked_at"] is not None for k in listed}[key_id]


def test_bad_admin_input_gets_clear_errors(server):
    assert admin(server, "POST", "/admin/tenants", json={"name": ""}).status_code == 400
    name = unique("dup")
    new_tenant(server, name)
    assert admin(server, "POST", "/admin/tenants", json={"name": name}).status_code == 409
    assert admin(server, "POST", "/admin/keys", json={"tenant": "no-such-tenant"}).status_code == 404
    tenant = new_tenant(server, unique("bad"))
    for body, words in [
        ({"rpm": 0}, "rpm"),
        ({"budget_usd": -1}, "budget_usd"),
        ({"budget_usd": 1, "budget_period": "weekly"}, "budget_period"),
        ({"scopes": ["teleport"]}, "teleport"),
        ({"expires_at": "soon"}, "soon"),
        ({"colour": "red"}, "colour"),
    ]:
        response = admin(server, "POST", "/admin/keys", json={"tenant": tenant, **body})
        assert response.status_code == 400, (body, response.text)
        assert words in response.json()["message"], response.text
    assert admin(server, "GET", "/admin/usage", params={"group_by": "colour"}).status_code == 400
    assert admin(server, "GET", "/admin/usage", params={"from": "yesterday"}).status_code == 400
    # Malformed query strings answer in the Cohere shape too.
    bad_query = admin(server, "GET", "/admin/usage/events", params={"tenant": "x", "limit": "many"})
    assert bad_query.status_code == 400 and "limit" in bad_query.json()["message"]
    assert admin(server, "GET", "/admin/usage", key="not-a-key").status_code == 401


def test_price_book_versions_apply_to_new_calls(server):
    tenant = new_tenant(server, unique("prices"))
    _, key = new_key(server, tenant)
    before = embed(server, key)
    response = admin(server, "POST", "/admin/prices", json={
        "note": "test: embed for one model at $1 per 1M tokens",
        "prices": [{"capability": "embed", "model": EMBED_MODEL, "unit": "input_tokens", "usd_per_million": 1.0}],
    })
    assert response.status_code == 201, response.text
    version = response.json()["version"]
    after = embed(server, key)
    assert int(after.headers["x-enclave-price-version"]) == version > int(before.headers["x-enclave-price-version"])
    tokens = after.json()["meta"]["billed_units"]["input_tokens"]
    assert abs(float(after.headers["x-enclave-cost-usd"]) - tokens * 1.0 / 1e6) < 1e-12
    book = admin(server, "GET", "/admin/prices").json()["versions"]
    assert book[-1]["version"] == version
    bad = admin(server, "POST", "/admin/prices", json={"prices": [{"capability": "embed", "unit": "bytes", "usd_per_million": 1}]})
    assert bad.status_code == 400


def test_tenant_isolation_on_every_admin_and_data_route(server):
    a = new_tenant(server, unique("a"))
    b = new_tenant(server, unique("b"))
    a_admin_id, a_admin = new_key(server, a, role="tenant_admin")
    b_key_id, b_key = new_key(server, b)
    a_member_id, a_member = new_key(server, a)
    assert embed(server, a_member).status_code == 200
    assert embed(server, b_key).status_code == 200

    # A tenant admin manages its own tenant only.
    assert admin(server, "POST", "/admin/tenants", key=a_admin, json={"name": unique("x")}).status_code == 403
    tenants = admin(server, "GET", "/admin/tenants", key=a_admin).json()["tenants"]
    assert [t["id"] for t in tenants] == [a]
    assert admin(server, "POST", "/admin/keys", key=a_admin, json={"tenant": b}).status_code == 404
    created = admin(server, "POST", "/admin/keys", key=a_admin, json={"tenant": a, "name": "by tenant admin"})
    assert created.status_code == 201
    assert admin(server, "POST", "/admin/keys", key=a_admin, json={"tenant": a, "role": "admin"}).status_code == 403
    assert admin(server, "GET", "/admin/keys", key=a_admin, params={"tenant": b}).status_code == 404
    own_keys = admin(server, "GET", "/admin/keys", key=a_admin).json()["keys"]
    assert {k["tenant"] for k in own_keys} == {a}
    assert admin(server, "DELETE", f"/admin/keys/{b_key_id}", key=a_admin).status_code == 404
    assert embed(server, b_key).status_code == 200, "B's key still works"
    assert admin(server, "GET", "/admin/usage", key=a_admin, params={"tenant": b}).status_code == 404
    # Other tenants look the same as tenants that do not exist: nothing to probe.
    assert admin(server, "GET", "/admin/usage", key=a_admin, params={"tenant": "no-such"}).status_code == 404
    rows = usage_rows(server, "tenant,key", key=a_admin)
    assert {r["tenant"] for r in rows} == {a}
    assert admin(server, "GET", "/admin/usage/events", key=a_admin, params={"tenant": b}).status_code == 404
    assert len(admin(server, "GET", "/admin/usage/events", key=a_admin).json()["events"]) == 1
    assert admin(server, "GET", "/admin/usage/verify", key=a_admin).status_code == 403
    assert admin(server, "POST", "/admin/prices", key=a_admin,
                 json={"prices": [{"capability": "chat", "unit": "input_tokens", "usd_per_million": 0}]}).status_code == 403
    assert admin(server, "PUT", f"/admin/tenants/{b}/budget", key=a_admin, json={"budget_usd": 0}).status_code == 403

    # A member key reaches no admin route at all.
    for method, path in [("GET", "/admin/tenants"), ("GET", "/admin/keys"), ("GET", "/admin/usage"),
                         ("GET", "/admin/usage/events"), ("GET", "/admin/prices"), ("POST", "/admin/keys"),
                         ("DELETE", f"/admin/keys/{a_member_id}"), ("GET", "/admin/usage/verify")]:
        response = admin(server, method, path, key=a_member, json={"tenant": a} if method == "POST" else None)
        assert response.status_code == 403, (method, path, response.text)

    # Each tenant's calls land in its own ledger only.
    assert len(ledger(server, a)) == 1 and len(ledger(server, b)) == 2
    assert ledger(server, a)[0]["key_id"] == a_member_id


def test_reports_export_csv_and_the_cli_verifies_the_ledger(server, server_db):
    tenant = new_tenant(server, unique("csv"))
    _, key = new_key(server, tenant)
    assert embed(server, key).status_code == 200
    csv = admin(server, "GET", "/admin/usage", params={"group_by": "tenant,capability,day", "format": "csv", "tenant": tenant})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "tenant,capability,day,events,input_tokens,output_tokens,search_units,classifications,cost_usd"
    assert lines[1].startswith(f"{tenant},embed,{time.strftime('%Y-%m-%d', time.gmtime())},1,")
    verify = subprocess.run([enclave_bin(), "usage", "verify", "--database-url", server_db],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ledger verified" in verify.stdout
    report = subprocess.run([enclave_bin(), "usage", "--database-url", server_db, "--tenant", tenant],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "embed" in report.stdout and "total cost" in report.stdout
    assert admin(server, "GET", "/admin/usage/verify").json()["ok"] is True


def test_cli_verbs_manage_tenants_and_keys_of_a_running_server(server, server_db):
    def enclave(*args):
        done = subprocess.run([enclave_bin(), *args, "--database-url", server_db],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    name = unique("cli")
    tenant_id = enclave("tenants", "create", name, "--budget-usd", "5").split("\t")[0]
    assert name in enclave("tenants", "list")
    created = enclave("keys", "create", "--tenant", name, "--name", "from-cli", "--rpm", "100", "--scope", "embed")
    fields = dict(line.split(":", 1) for line in created.strip().splitlines())
    key_id, secret = fields["id"].strip(), fields["key"].strip()
    assert secret.startswith("ek_")
    listed = enclave("keys", "list", "--tenant", tenant_id)
    assert key_id in listed and "active" in listed and secret not in listed
    # The running server takes the new key at once, and refuses it within a second of revocation.
    assert embed(server, secret).status_code == 200
    enclave("keys", "revoke", key_id)
    time.sleep(1.0)
    assert embed(server, secret).status_code == 401
    assert "revoked" in enclave("keys", "list", "--tenant", name)
    bad = subprocess.run([enclave_bin(), "keys", "create", "--tenant", name, "--scope", "teleport",
                          "--database-url", server_db], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "teleport" in bad.stderr


def test_idempotency_keys_bill_a_retried_call_once(server):
    tenant = new_tenant(server, unique("idem"))
    _, key = new_key(server, tenant)
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "order-42"}
    body = {"model": EMBED_MODEL, "texts": ["retry me"], "input_type": "search_query", "embedding_types": ["float"]}
    first = httpx.post(server + "/v2/embed", headers=headers, json=body)
    again = httpx.post(server + "/v2/embed", headers=headers, json=body)
    assert first.status_code == again.status_code == 200
    assert again.json()["embeddings"] == first.json()["embeddings"]
    assert again.headers["x-enclave-request-id"] == first.headers["x-enclave-request-id"]
    assert len(ledger(server, tenant)) == 1
    assert ledger(server, tenant)[0]["idempotency_key"] == "order-42"
    # The same key with another request (other texts, or another capability) is a conflict, so a
    # reused key can never buy an unbilled call; a fresh key is a new call.
    other = httpx.post(server + "/v2/embed", headers=headers, json={**body, "texts": ["something else entirely"]})
    assert other.status_code == 409 and "different request" in other.json()["message"]
    rerank = httpx.post(server + "/v2/rerank", headers=headers,
                        json={"model": EMBED_MODEL, "query": "q", "documents": ["a", "b"]})
    assert rerank.status_code == 409 and "order-42" in rerank.json()["message"]
    headers["Idempotency-Key"] = "order-43"
    assert httpx.post(server + "/v2/embed", headers=headers, json=body).status_code == 200
    assert len(ledger(server, tenant)) == 2
    headers["Idempotency-Key"] = "x" * 300
    assert httpx.post(server + "/v2/embed", headers=headers, json=body).status_code == 400
    # The OpenAI SDK sends the header through extra_headers.
    oai = openai.OpenAI(api_key=key, base_url=server + "/v1")
    for _ in range(2):
        oai.embeddings.create(model=EMBED_MODEL, input="once", extra_headers={"Idempotency-Key": "oai-1"})
    assert len(ledger(server, tenant)) == 3
