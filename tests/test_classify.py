"""Classify through the official SDK: accuracy on an intent set, response shape, bad examples."""

import json
from pathlib import Path

import cohere
import pytest

from conftest import EMBED_MODEL

DATA = json.loads((Path(__file__).parent / "data" / "intents.json").read_text())


def test_intent_accuracy_and_shape(co_v1):
    tests = DATA["tests"]
    response = co_v1.classify(
        model=EMBED_MODEL, inputs=[t["text"] for t in tests], examples=DATA["examples"],
    )
    predictions = [c.prediction for c in response.classifications]
    accuracy = sum(p == t["label"] for p, t in zip(predictions, tests)) / len(tests)
    assert accuracy >= 0.9, list(zip(predictions, [t["label"] for t in tests]))
    first = response.classifications[0]
    assert first.classification_type == "single-label"
    assert abs(sum(v.confidence for v in first.labels.values()) - 1.0) < 1e-4
    assert first.confidence == max(v.confidence for v in first.labels.values())
    assert response.meta.billed_units.classifications == len(tests)


@pytest.mark.parametrize(
    "examples, fragment",
    [
        ([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], "2 distinct labels"),
        ([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}, {"text": "c", "label": "y"}], "'y'"),
        ([{"text": "a", "label": "x"}, {"text": " ", "label": "x"}, {"text": "c", "label": "y"},
          {"text": "d", "label": "y"}], "examples[1]"),
    ],
)
def test_bad_examples_say_which(co_v1, examples, fragment):
    with pytest.raises(cohere.BadRequestError) as caught:
        co_v1.classify(model=EMBED_MODEL, inputs=["hello"], examples=examples)
    assert fragment in caught.value.body["message"]


def test_empty_inputs_are_refused(co_v1):
    with pytest.raises(cohere.BadRequestError):
        co_v1.classify(model=EMBED_MODEL, inputs=[], examples=DATA["examples"])
