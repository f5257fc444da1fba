"""Speculative decoding from the prompt and prefix reuse across requests, through the real
server and the official SDK: greedy answers are the same with both on (the default) and both
off; concurrent requests that share (or only partly share) a long prefix keep to their own
document; `/ready` reports what was saved."""

import concurrent.futures

import httpx
import openai
import pytest

from conftest import API_KEY, MODEL, start_server

HANDBOOK = (
    "Section 1: The finance team must review every open invoice each Monday and send a short "
    "summary to the regional director. Section 2: The security team must rotate the shared "
    "access credentials once a quarter, as required by the insurance policy. Section 3: The "
    "support team must answer each priority ticket within two business days. Section 4: "
    "Exceptions need written approval from the compliance officer and are recorded in register "
    "104-27."
)
# A second tenant's private document that begins like the handbook and then differs: a request
# reusing the shared beginning must not be changed by what follows it.
PRIVATE = HANDBOOK[:300] + " Private note: the vault code is 7731-ALPHA and the payroll key is x9."

# Each request asks for a document to be copied again from one of its sentences on (a raw
# completion: small models copy confidently, so the answer does not hang on the last bits of
# logits, which llama.cpp's kernels change with the batch's shape).
REQUESTS = [
    (HANDBOOK, "Section 2: The"),
    (HANDBOOK, "Section 1: The"),
    (HANDBOOK, "Section 3: The"),
    (PRIVATE, "Section 1: The"),
    (HANDBOOK, "Section 2: The security"),
    (PRIVATE, "Section 2: The"),
]


def ask(client, document, start):
    response = client.completions.create(
        model=MODEL,
        prompt=f"Text: {document}\n\nThe same text again, word for word: {start}",
        # Within the copied text: past the document's end a small model's margins are thin.
        max_tokens=32,
        temperature=0,
    )
    return response.choices[0].text, response.usage


def client_for(base_url):
    return openai.OpenAI(api_key=API_KEY, base_url=base_url + "/v1", max_retries=0)


def one_at_a_time(base_url):
    client = client_for(base_url)
    return [ask(client, *r) for r in REQUESTS]


def all_at_once(base_url):
    client = client_for(base_url)
    with concurrent.futures.ThreadPoolExecutor(len(REQUESTS)) as pool:
        return list(pool.map(lambda r: ask(client, *r), REQUESTS))


def engine_counters(base_url):
    ready = httpx.get(base_url + "/ready", timeout=30).json()
    return next(m for m in ready["models"] if m["name"] == MODEL)["engine"]


@pytest.fixture(scope="module")
def plain_server():
    with start_server([MODEL], extra=["--draft-max", "0", "--no-prefix-reuse"]) as (base_url, _):
        yield base_url


@pytest.fixture(scope="module")
def fast_server():
    with start_server([MODEL]) as (base_url, _):
        yield base_url


def test_greedy_answers_are_the_same_with_speculation_and_reuse_on_and_off(plain_server, fast_server):
    # One at a time, so each answer's batches do not depend on what else runs: token for token.
    expected = one_at_a_time(plain_server)
    for round_ in range(2):
        got = one_at_a_time(fast_server)
        for (want, _), (have, usage), (_, start) in zip(expected, got, REQUESTS):
            assert have == want, f"round {round_}: {start}"
        if round_ == 1:
            # The second round starts from the first round's cells.
            assert all(u.prompt_tokens_details.cached_tokens > 50 for _, u in got), [
                u.prompt_tokens_details.cached_tokens for _, u in got
            ]


def test_concurrent_requests_sharing_a_prefix_keep_to_their_own_document(fast_server):
    # All at once: later requests start from cells of the shared beginning that another
    # request (possibly over the other document) computed. Nothing past that beginning may
    # cross: answers over the handbook never carry the private note's values.
    for _ in range(2):
        for (text, _), (document, start) in zip(all_at_once(fast_server), REQUESTS):
            if document is HANDBOOK:
                assert "7731" not in text and "x9" not in text, text
            # Still copying its own document.
            assert text[:30] in document, (start, text)


def test_ready_reports_what_speculation_and_reuse_saved(plain_server, fast_server):
    all_at_once(fast_server)
    saved = engine_counters(fast_server)
    assert saved["drafted_tokens"] > 0 and saved["accepted_tokens"] > 0, saved
    assert 0 < saved["acceptance_rate"] <= 1, saved
    # Copying answers: fewer forward passes than tokens.
    assert saved["decode_steps"] < saved["generated_tokens"], saved
    assert saved["reused_prompt_tokens"] > 0 and 0 < saved["prefix_reuse_rate"] < 1, saved
    # The pass costs guesses are weighed against: sizes timed before serving (until the first
    # request arrives) and as served, smallest first.
    assert saved["calibrated"] is True, saved
    costs = saved["pass_costs"]
    assert len(costs) >= 2, costs
    assert all(c["rows"] >= 1 and c["ms"] > 0 and c["ms_per_row"] > 0 for c in costs), costs
    assert [c["rows"] for c in costs] == sorted(c["rows"] for c in costs), costs
    one_at_a_time(plain_server)
    none = engine_counters(plain_server)
    assert none["drafted_tokens"] == 0 and none["reused_prompt_tokens"] == 0, none
    assert none["generated_tokens"] > 0, none
