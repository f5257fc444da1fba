"""The `enclave` command line: one-shot chat streams an answer; models lists the catalog."""

import os
import subprocess

from conftest import MODEL

BINARY = os.environ.get("ENCLAVE_BIN", "target/release/enclave")


def test_chat_one_shot():
    result = subprocess.run(
        [BINARY, "chat", "--model", MODEL, "--temperature", "0", "--max-tokens", "32",
         "What is the capital of France?"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_models_lists_the_catalog():
    result = subprocess.run([BINARY, "models"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "pulled" in lines[MODEL] and "not pulled" not in lines[MODEL]
    assert {"qwen2.5-coder-1.5b-instruct", "gemma-3-270m"} <= set(lines)


def test_pull_of_an_unknown_model_fails_clearly():
    result = subprocess.run([BINARY, "pull", "no-such-model"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "smollm2-135m-instruct" in result.stderr
