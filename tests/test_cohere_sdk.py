"""The official `cohere` SDK, unmodified, against a real Enclave server: 7.x from
tests/requirements.txt, and the newest 5.x (which LangChain and LlamaIndex pin) from
tests/requirements-cohere5.txt."""

import cohere
import pytest

from conftest import API_KEY, MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_v2_chat(co):
    response = co.chat(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    text = response.message.content[0].text
    assert "Paris" in text
    assert response.finish_reason in ("COMPLETE", "MAX_TOKENS")
    usage = response.usage
    assert 0 < usage.billed_units.input_tokens < usage.tokens.input_tokens
    assert 0 < usage.billed_units.output_tokens <= 32
    assert usage.billed_units.output_tokens == usage.tokens.output_tokens


def test_v2_chat_stream_event_order(co):
    events = list(co.chat_stream(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0))
    types = [e.type for e in events]
    assert types[:2] == ["message-start", "content-start"]
    assert types[-2:] == ["content-end", "message-end"]
    assert set(types[2:-2]) == {"content-delta"}
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    assert "Paris" in text
    end = events[-1]
    assert end.delta.finish_reason in ("COMPLETE", "MAX_TOKENS")
    assert end.delta.usage.billed_units.output_tokens > 0
    # The streamed answer is the same as the non-streamed one (greedy decoding).
    whole = co.chat(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    assert whole.message.content[0].text == text


def test_v2_chat_system_message_and_stop_sequence(co):
    response = co.chat(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Count from 1 to 10, separated by commas."},
        ],
        max_tokens=64,
        temperature=0,
        stop_sequences=["5"],
    )
    assert response.finish_reason == "STOP_SEQUENCE"
    text = response.message.content[0].text
    assert "4" in text and "5" not in text


def test_v1_chat_and_stream(co_v1):
    response = co_v1.chat(message="What is the capital of France?", model=MODEL, max_tokens=32, temperature=0)
    assert "Paris" in response.text
    assert response.meta.billed_units.output_tokens > 0
    assert [h.role for h in response.chat_history] == ["USER", "CHATBOT"]

    events = list(
        co_v1.chat_stream(
            message="What is the capital of France?",
            model=MODEL,
            preamble="Answer briefly.",
            chat_history=[{"role": "USER", "message": "Hello"}, {"role": "CHATBOT", "message": "Hi!"}],
            max_tokens=32,
            temperature=0,
        )
    )
    assert events[0].event_type == "stream-start"
    assert events[-1].event_type == "stream-end"
    streamed = "".join(e.text for e in events if e.event_type == "text-generation")
    assert streamed and events[-1].response.text == streamed


def test_v1_generate(co_v1):
    response = co_v1.generate(prompt="The capital of France is", model=MODEL, max_tokens=8, temperature=0)
    assert response.generations[0].text.strip()


def test_tokenize_detokenize_round_trip(co):
    text = "Enclave keeps every token on your own hardware."
    tokens = co.tokenize(text=text, model=MODEL)
    assert len(tokens.tokens) > 5
    assert co.detokenize(tokens=tokens.tokens, model=MODEL).text == text


def test_models_list_and_get(co):
    names = [m.name for m in co.models.list().models]
    assert MODEL in names
    model = co.models.get(MODEL)
    assert "chat" in model.endpoints and model.context_length > 0


def test_check_api_key(server):
    # The SDK's check_api_key() is disabled in 5.x and 7.x, so the route is called as Cohere documents it.
    import httpx

    good = httpx.post(server + "/v1/check-api-key", headers={"Authorization": f"Bearer {API_KEY}"})
    bad = httpx.post(server + "/v1/check-api-key", headers={"Authorization": "Bearer nope"})
    assert good.json()["valid"] is True and bad.json()["valid"] is False


def test_unknown_model_is_not_found(co):
    with pytest.raises(cohere.NotFoundError) as caught:
        co.chat(model="no-such-chat-model", messages=QUESTION)
    assert MODEL in caught.value.body["message"]


def test_bad_requests(co):
    with pytest.raises(cohere.BadRequestError):
        co.chat(model=MODEL, messages=[])
    with pytest.raises(cohere.BadRequestError) as caught:
        co.chat(model=MODEL, messages=QUESTION, max_tokens=1_000_000)
    assert "too many tokens" in caught.value.body["message"]
    with pytest.raises(cohere.BadRequestError):
        co.chat(model=MODEL, messages=QUESTION, temperature=42)


def test_wrong_key_is_unauthorized(server):
    client = cohere.ClientV2(api_key="not-the-key", base_url=server)
    with pytest.raises(cohere.UnauthorizedError):
        client.chat(model=MODEL, messages=QUESTION)
