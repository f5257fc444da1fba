"""Summarize through the official SDK: one pass, map-reduce over a text longer than the
context, and bad input."""

import cohere
import pytest

from conftest import MODEL

ARTICLE = (
    "The city council approved a new budget on Tuesday that doubles spending on public transport. "
    "The plan adds twelve electric bus lines, extends the tram network to the northern districts and "
    "lowers monthly passes to twenty dollars. Council members said the goal is to cut traffic and air "
    "pollution by a third within five years. Opponents argued that the plan raises property taxes and "
    "that the tram extension will disrupt local shops during construction, which is expected to last "
    "two years. The mayor promised compensation for affected businesses and said the first bus lines "
    "will open next spring. "
)


def test_summarize_short_text(co_v1):
    response = co_v1.summarize(text=ARTICLE, model=MODEL, length="short", temperature=0)
    assert response.summary.strip()
    assert len(response.summary) < len(ARTICLE)
    assert response.meta.billed_units.output_tokens > 0
    assert response.meta.billed_units.input_tokens > 100


def test_summarize_map_reduces_text_longer_than_the_context(co_v1, co):
    # About 2,600 tokens: several times the 1,024-token context of the test server.
    long_text = ARTICLE * 25
    assert len(co.tokenize(text=long_text, model=MODEL).tokens) > 2500
    response = co_v1.summarize(text=long_text, model=MODEL, length="medium", format="bullets", temperature=0)
    assert response.summary.strip()
    # Every chunk and the final reduce were billed.
    assert response.meta.billed_units.input_tokens > 2500


def test_summarize_bad_input(co_v1):
    with pytest.raises(cohere.BadRequestError):
        co_v1.summarize(text="   ", model=MODEL)
    with pytest.raises(cohere.BadRequestError):
        co_v1.summarize(text=ARTICLE, model=MODEL, length="tiny")
    with pytest.raises(cohere.BadRequestError):
        co_v1.summarize(text=ARTICLE, model=MODEL, temperature=9)
