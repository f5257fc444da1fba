"""Tool use and structured output through the official SDKs: Cohere v2 and v1, OpenAI. Behaviour
(which tool, which arguments, a grounded answer from a tool's result) is checked on the default
chat model; wire shapes and the grammar's guarantees on the small one."""

import json
import random

import httpx
import jsonschema
import pytest

from conftest import API_KEY, CHAT_MODEL, EMBED_MODEL, MODEL, start_server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
ORDER = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up a customer order by its order number (ORD-123456).",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^ORD-[0-9]{6}$"}},
            "required": ["order_id"],
        },
    },
}


@pytest.fixture(scope="module")
def server():
    """This module's server (the conftest fixtures `co`, `co_v1` and `oai` talk to it)."""
    # The embedder makes citations compare meaning (ACCURATE), as a default deployment does.
    with start_server([CHAT_MODEL, MODEL, EMBED_MODEL], extra=("--parallel", "2", "--ctx-size", "4096")) as (url, _):
        yield url


@pytest.fixture()
def base_url(server):
    return server


def post(base_url, path, body):
    return httpx.post(base_url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300)


def test_v2_tool_call_names_a_declared_tool_with_valid_arguments(co):
    res = co.chat(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What's the weather in Madrid right now?"}],
        tools=[WEATHER, ORDER],
        temperature=0,
    )
    assert res.finish_reason == "TOOL_CALL"
    assert res.message.tool_calls, res
    call = res.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert arguments["city"].lower() == "madrid"
    assert call.id.startswith("get_weather_")
    assert res.usage.billed_units.output_tokens > 0


def test_v2_round_trip_answers_from_the_tool_result_and_cites_it(co):
    messages = [{"role": "user", "content": "What's the weather in Madrid right now?"}]
    first = co.chat(model=CHAT_MODEL, messages=messages, tools=[WEATHER], tool_choice="REQUIRED", temperature=0)
    call = first.message.tool_calls[0]
    messages.append({"role": "assistant", "tool_calls": [call], "tool_plan": first.message.tool_plan})
    messages.append({
        "role": "tool",
        "tool_call_id": call.id,
        "content": [{"type": "document", "document": {"data": json.dumps({"city": "Madrid", "temperature": "24°C", "sky": "sunny"})}}],
    })
    final = co.chat(model=CHAT_MODEL, messages=messages, tools=[WEATHER], temperature=0)
    assert final.finish_reason == "COMPLETE", final
    text = final.message.content[0].text
    assert "24" in text, text
    assert final.message.citations, final
    sources = [s for c in final.message.citations for s in c.sources]
    assert any(s.type == "tool" and s.id == f"{call.id}:0" for s in sources), sources
    tool_source = next(s for s in sources if s.type == "tool")
    assert tool_source.tool_output["temperature"] == "24°C"
    for c in final.message.citations:
        assert text[c.start:c.end] == c.text


def test_v2_stream_sends_tool_events_in_order(co):
    events = list(co.chat_stream(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Look up order ORD-482913 please."}],
        tools=[WEATHER, ORDER],
        tool_choice="REQUIRED",
        temperature=0,
    ))
    kinds = [e.type for e in events]
    assert kinds[0] == "message-start"
    assert kinds[-1] == "message-end"
    start = kinds.index("tool-call-start")
    assert kinds[start + 1] == "tool-call-delta"
    assert "tool-call-end" in kinds[start:]
    assert "content-delta" not in kinds
    assert set(kinds[1:start]) <= {"tool-plan-delta"}
    started = events[start].delta.message.tool_calls
    assert started.function.name == "lookup_order" and started.id
    arguments = "".join(
        e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta"
    )
    assert json.loads(arguments) == {"order_id": "ORD-482913"}
    assert events[-1].delta.finish_reason == "TOOL_CALL"


def test_v2_tool_choice_none_never_calls(co):
    for seed in range(3):
        res = co.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Call get_weather for Paris. Reply with a tool call."}],
            tools=[WEATHER],
            tool_choice="NONE",
            temperature=1.0,
            seed=seed,
            max_tokens=40,
        )
        assert not res.message.tool_calls
        assert res.finish_reason in ("COMPLETE", "MAX_TOKENS")


def test_required_calls_from_the_small_model_are_always_well_formed(co):
    # The grammar, not the model, makes these valid: 135M parameters at temperature 1.
    for seed in range(6):
        res = co.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            tools=[WEATHER, ORDER],
            tool_choice="REQUIRED",
            strict_tools=True,
            temperature=1.0,
            seed=seed,
            max_tokens=120,
        )
        # Cut by the token limit: the calls completed before the cut come back (never half a
        # call), and they too must be well formed.
        assert res.finish_reason in ("TOOL_CALL", "MAX_TOKENS")
        if res.finish_reason == "TOOL_CALL":
            assert res.message.tool_calls
        for call in res.message.tool_calls or []:
            tool = {"get_weather": WEATHER, "lookup_order": ORDER}[call.function.name]
            jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
        calls = res.message.tool_calls or []
        assert len({c.id for c in calls}) == len(calls)


def test_v1_tools_and_tool_results(co_v1):
    tools = [{
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameter_definitions": {"city": {"description": "City name", "type": "str", "required": True}},
    }]
    res = co_v1.chat(model=CHAT_MODEL, message="What's the weather in Oslo?", tools=tools, temperature=0)
    assert res.tool_calls, res
    assert res.tool_calls[0].name == "get_weather"
    assert res.tool_calls[0].parameters["city"].lower() == "oslo"
    final = co_v1.chat(
        model=CHAT_MODEL,
        message="What's the weather in Oslo?",
        tools=tools,
        tool_results=[{"call": res.tool_calls[0], "outputs": [{"temperature": "-3°C", "sky": "snow"}]}],
        temperature=0,
    )
    assert not final.tool_calls
    assert "-3" in final.text or "snow" in final.text.lower(), final.text


def test_v1_stream_sends_tool_calls_generation(co_v1):
    tools = [{"name": "lookup_order", "description": "Look up an order by number.",
              "parameter_definitions": {"order_id": {"type": "str", "required": True}}}]
    events = list(co_v1.chat_stream(model=CHAT_MODEL, message="Where is order ORD-000217?", tools=tools, temperature=0))
    kinds = [e.event_type for e in events]
    assert "tool-calls-generation" in kinds, kinds
    generation = next(e for e in events if e.event_type == "tool-calls-generation")
    assert generation.tool_calls[0].name == "lookup_order"
    assert kinds[-1] == "stream-end"


def test_openai_tools_whole_and_streamed(oai):
    messages = [{"role": "user", "content": "What's the weather in Tokyo in celsius?"}]
    res = oai.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[WEATHER, ORDER], temperature=0)
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"].lower() == "tokyo"
    stream = oai.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[WEATHER, ORDER], temperature=0, stream=True)
    names, arguments, finish = [], "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            if tc.function.name:
                names.append(tc.function.name)
            arguments += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"]
    assert json.loads(arguments)["city"].lower() == "tokyo"
    assert finish == "tool_calls"
    # The next turn: the call and its result, then an answer in words.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": "12°C"})})
    final = oai.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[WEATHER, ORDER], temperature=0)
    assert final.choices[0].finish_reason == "stop"
    assert "12" in final.choices[0].message.content


def test_openai_named_tool_choice_forces_that_tool(oai):
    res = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a joke."}],
        tools=[WEATHER, ORDER],
        tool_choice={"type": "function", "function": {"name": "lookup_order"}},
        temperature=0.8,
        max_tokens=60,
    )
    calls = res.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["lookup_order"]
    jsonschema.validate(json.loads(calls[0].function.arguments), ORDER["function"]["parameters"])


def random_schema(rng, depth=0):
    """A schema within the documented subset (docs/tools.md)."""
    properties = {}
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(["string", "integer", "number", "boolean", "enum", "array", "object" if depth < 1 else "string"])
        if kind == "string":
            prop = {"type": "string", "maxLength": rng.randint(1, 12)}
            if rng.random() < 0.3:
                prop = {"type": "string", "pattern": "^[a-z]{2,5}$"}
        elif kind == "integer":
            lo = rng.randint(-50, 50)
            prop = {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 100)}
        elif kind == "number":
            prop = {"type": "number", "minimum": 0, "maximum": 1000}
        elif kind == "boolean":
            prop = {"type": "boolean"}
        elif kind == "enum":
            prop = {"enum": rng.sample(["red", "green", "blue", "cyan", "amber"], rng.randint(1, 3))}
        elif kind == "array":
            prop = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": rng.randint(1, 4)}
        else:
            prop = random_schema(rng, depth + 1)
        properties[f"f{i}"] = prop
    names = list(properties)
    required = rng.sample(names, rng.randint(1, len(names)))
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def test_response_format_schemas_always_parse_and_validate(co, oai):
    rng = random.Random(1234)
    complete = 0
    for n in range(16):
        schema = random_schema(rng)
        temperature = [0.0, 1.0, 1.5][n % 3]
        if n % 2 == 0:
            res = co.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "Reply in JSON."}],
                response_format={"type": "json_object", "json_schema": schema},
                temperature=min(temperature, 1.0),
                seed=n,
                max_tokens=300,
            )
            text, finished = res.message.content[0].text, res.finish_reason == "COMPLETE"
        else:
            res = oai.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Reply in JSON."}],
                response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
                temperature=temperature,
                seed=n,
                max_tokens=300,
            )
            text, finished = res.choices[0].message.content, res.choices[0].finish_reason == "stop"
        if finished:
            complete += 1
            jsonschema.validate(json.loads(text), schema)
    assert complete >= 14, complete


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_openai_parse_with_a_pydantic_model(oai, seed):
    from pydantic import BaseModel, Field

    # Bounded fields, as a ticket schema would have them: the grammar enforces the bounds, so a
    # sampled answer cannot run on in a title until max_tokens (the SDK refuses to parse a
    # length-cut answer).
    class Ticket(BaseModel):
        title: str = Field(min_length=1, max_length=40)
        priority: int = Field(ge=1, le=5)
        urgent: bool

    res = oai.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "File a ticket: the printer is broken."}],
        response_format=Ticket,
        temperature=0.7,
        seed=seed,
        max_tokens=200,
    )
    parsed = res.choices[0].message.parsed
    assert isinstance(parsed, Ticket)
    assert 1 <= len(parsed.title) <= 40 and 1 <= parsed.priority <= 5, parsed


def test_errors_name_what_is_wrong(base_url):
    cases = [
        ({"tools": [{"type": "function", "function": {"name": "bad name!", "parameters": {"type": "object"}}}]}, "tool name"),
        ({"tools": [WEATHER] * 2}, "declared twice"),
        ({"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(65)]}, "at most 64 tools"),
        ({"tools": [WEATHER], "tool_choice": "SOMETIMES"}, "tool_choice"),
        ({"strict_tools": True, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}]}, "not"),
        ({"response_format": {"type": "json_object", "json_schema": {"type": "object", "properties": {"a": {"type": "string", "uniqueItems": True, "if": {}}}}}}, "if"),
        ({"response_format": {"type": "json_object", "json_schema": {"type": "array"}}}, "type object"),
    ]
    huge = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "x" * 200} for i in range(100)}}
    cases.append(({"tools": [{"type": "function", "function": {"name": "big", "parameters": huge}}]}, "bytes; at most 16384"))
    deep = {"type": "object"}
    for _ in range(14):
        deep = {"type": "object", "properties": {"x": deep}}
    cases.append(({"response_format": {"type": "json_object", "json_schema": deep}}, "nests deeper"))
    for extra, needle in cases:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **extra}
        r = post(base_url, "/v2/chat", body)
        assert r.status_code == 400, (extra, r.text)
        assert needle in r.json()["message"], (needle, r.json())


def test_a_tool_result_must_answer_a_call_made_before_it(base_url):
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "{}"},
    ]
    r = post(base_url, "/v2/chat", {"model": MODEL, "messages": messages, "tools": [WEATHER]})
    assert r.status_code == 400 and "call_2" in r.json()["message"], r.text
    r = post(base_url, "/v1/chat/completions", {"model": MODEL, "messages": messages, "tools": [WEATHER]})
    assert r.status_code == 400 and "call_2" in r.json()["error"]["message"], r.text
    messages[2]["tool_call_id"] = "call_1"
    messages[1]["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "x" * 40000})
    r = post(base_url, "/v2/chat", {"model": MODEL, "messages": messages, "tools": [WEATHER]})
    assert r.status_code == 400 and "at most 32768 bytes" in r.json()["message"], r.text
    messages[1]["tool_calls"][0]["function"]["arguments"] = "not json"
    messages[2]["tool_call_id"] = "call_1"
    r = post(base_url, "/v2/chat", {"model": MODEL, "messages": messages, "tools": [WEATHER]})
    assert r.status_code == 400 and "JSON object" in r.json()["message"], r.text


def test_tool_definitions_and_results_are_billed_as_input(base_url):
    plain = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "temperature": 0}
    without = post(base_url, "/v2/chat", plain).json()["usage"]["billed_units"]["input_tokens"]
    with_tools = post(base_url, "/v2/chat", {**plain, "tools": [WEATHER], "tool_choice": "NONE"}).json()
    # NONE shows no tools: nothing more is billed.
    assert with_tools["usage"]["billed_units"]["input_tokens"] == without
    offered = post(base_url, "/v2/chat", {**plain, "tools": [WEATHER], "max_tokens": 40}).json()
    definition_tokens = offered["usage"]["billed_units"]["input_tokens"] - without
    # The definition's JSON (about 60 tokens) is billed; the server's own tool instructions are not.
    assert 30 <= definition_tokens <= 120, offered["usage"]
    assert offered["usage"]["tokens"]["input_tokens"] > offered["usage"]["billed_units"]["input_tokens"]
