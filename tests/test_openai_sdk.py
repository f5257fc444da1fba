"""The official `openai` SDK, unmodified, against a real Enclave server."""

import threading
import time

import httpx
import openai
import pytest

from conftest import API_KEY, MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion(oai):
    response = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < usage.completion_tokens <= 32


def test_chat_completion_stream(oai):
    stream = oai.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=32, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].usage.completion_tokens > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])


def test_completions(oai):
    response = oai.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert response.choices[0].text.strip()
    assert response.usage.completion_tokens <= 8


def test_models_list(oai):
    assert MODEL in [m.id for m in oai.models.list()]


def test_errors_use_openai_shapes(oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=MODEL, messages=QUESTION, temperature=7)
    assert "temperature" in caught.value.message


def test_eight_concurrent_streams(oai):
    results = [None] * 8

    def run(i):
        stream = oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Write one sentence about the number {i}."}],
            max_tokens=32, temperature=0, stream=True, stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        results[i] = (text, chunks[-1].usage)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for text, usage in results:
        assert text.strip()
        assert 0 < usage.completion_tokens <= 32


def test_disconnect_frees_the_slot(server):
    body = {
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 900, "stream": True, "ignore_eos": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server + "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
            assert client.get(server + "/ready").json()["models"][0]["active"] >= 1
        # The stream is closed; the server notices and frees the sequence.
        deadline = time.time() + 20
        while client.get(server + "/ready").json()["models"][0]["active"] != 0:
            assert time.time() < deadline, "slot not freed"
            time.sleep(0.05)
