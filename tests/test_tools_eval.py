"""Floors on the labelled tool-call set (eval/tools) with the default chat model, constrained, on
a fixed part of it: every odd-numbered request a tool fits and every request none fits. The full
figures, with and without constraints, come from eval/tools/run.py (docs/tools.md)."""

import importlib.util
import os

import pytest

from conftest import API_KEY, CHAT_MODEL, start_server

# Loaded under its own name: eval/rag has a run.py too.
_spec = importlib.util.spec_from_file_location(
    "tools_eval_run", os.path.join(os.path.dirname(__file__), "..", "eval", "tools", "run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


@pytest.fixture(scope="module")
def base_url():
    with start_server([CHAT_MODEL], extra=("--parallel", "1", "--ctx-size", "4096")) as (url, _):
        yield url


def test_constrained_tool_calls_parse_and_choose_well(base_url):
    ids = {c["id"] for c in run.load_cases() if c["tool"] is None or int(c["id"][1:]) % 2 == 1}
    figures = run.evaluate(base_url, API_KEY, CHAT_MODEL, modes=("constrained",), ids=ids)
    print(figures)
    constrained = figures["constrained"]
    # By construction: every answer is text or calls to declared tools that parse.
    assert constrained["parse_rate"] == 1.0, figures
    assert constrained["invented_tools"] == 0, figures
    # Floors below this build's figures on this part (docs/tools.md has the full set's).
    assert constrained["tool_selection_accuracy"] >= 0.8, figures
    assert constrained["argument_exact_match"] >= 0.85, figures
    assert constrained["no_tool_accuracy"] >= 0.5, figures
