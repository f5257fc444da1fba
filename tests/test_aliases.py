"""Code written for Cohere's hosted API runs unchanged: its public model names resolve to the
served models, the listing shows them, and the ledger records the model that really ran."""

import cohere
import httpx

from accounts_client import ledger, new_key, new_tenant
from conftest import API_KEY, EMBED_MODEL, MODEL


def test_the_sdk_works_with_cohere_model_names(server):
    tenant = new_tenant(server, "aliases-" + cohere.__version__)
    _, key = new_key(server, tenant)
    co = cohere.ClientV2(api_key=key, base_url=server)
    chat = co.chat(model="command-r", messages=[{"role": "user", "content": "What is the capital of France?"}],
                   max_tokens=16, temperature=0)
    assert "Paris" in chat.message.content[0].text
    embedded = co.embed(model="embed-english-v3.0", texts=["hello world"], input_type="search_document",
                        embedding_types=["float"])
    assert len(embedded.embeddings.float_[0]) == 384
    reranked = co.rerank(model="rerank-v3.5", query="capital of France",
                         documents=["Paris is the capital of France.", "Bananas are yellow."])
    assert len(reranked.results) == 2
    # The ledger names the models that ran, not the aliases; with no cross-encoder served, the
    # default reranker is the embedder (a chat model judges only when named).
    models = [event["model"] for event in ledger(server, tenant)]
    assert models == [MODEL, EMBED_MODEL, EMBED_MODEL]


def test_models_lists_aliases_and_the_default_per_endpoint(server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    listed = httpx.get(server + "/v1/models", headers=headers, params={"page_size": 1000}).json()["models"]
    aliases = {m["name"]: m.get("alias_of") for m in listed}
    assert aliases["command-r"] == MODEL
    assert aliases["embed-english-v3.0"] == EMBED_MODEL
    assert aliases[MODEL] is None
    for endpoint, default in [("chat", MODEL), ("embed", EMBED_MODEL)]:
        only = httpx.get(server + "/v1/models", headers=headers,
                         params={"default_only": "true", "endpoint": endpoint}).json()["models"]
        assert [m["name"] for m in only] == [default]
    one = httpx.get(server + "/v1/models/command-r-plus", headers=headers).json()
    assert one["alias_of"] == MODEL and "chat" in one["endpoints"]
