"""Small helpers for the accounts tests: the admin API and metered calls over plain HTTP."""

import httpx

from conftest import API_KEY, EMBED_MODEL


def admin(base, method, path, key=API_KEY, **kwargs):
    return httpx.request(method, base + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)


def new_tenant(base, name, **fields):
    response = admin(base, "POST", "/admin/tenants", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def new_key(base, tenant, admin_key=API_KEY, **fields):
    response = admin(base, "POST", "/admin/keys", key=admin_key, json={"tenant": tenant, **fields})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["key"]


def embed(base, key, texts=("hello world",), client=None):
    """One Cohere v2 embed call; returns the response."""
    send = client or httpx
    return send.post(
        base + "/v2/embed",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": EMBED_MODEL, "texts": list(texts), "input_type": "search_document", "embedding_types": ["float"]},
        timeout=60,
    )


def usage_rows(base, group_by, key=API_KEY, **params):
    response = admin(base, "GET", "/admin/usage", key=key, params={"group_by": group_by, **params})
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def ledger(base, tenant):
    """Every event of a tenant, in chain order."""
    events, after = [], 0
    while True:
        response = admin(base, "GET", "/admin/usage/events", params={"tenant": tenant, "after": after, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["events"]
        if len(page["events"]) < 1000:
            return events
        after = page["next_after"]
