"""Starts a real `enclave serve` with the small test model on an ephemeral loopback port."""

import contextlib
import os
import re
import subprocess
import threading
import time

import pytest

API_KEY = "sdk-test-key"
MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"


@contextlib.contextmanager
def start_server(models):
    """Runs `enclave serve` with `models` on a free loopback port; yields (base_url, api_key)."""
    binary = os.environ.get("ENCLAVE_BIN", "target/release/enclave")
    command = [binary, "serve", "--port", "0", "--api-key", API_KEY, "--parallel", "8", "--ctx-size", "1024"]
    for model in models:
        command += ["--model", model]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base_url = None
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            base_url = match.group(1)
            break
    if base_url is None:
        proc.kill()
        raise RuntimeError("enclave serve did not start: " + proc.stderr.read()[-2000:])
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        yield base_url, API_KEY
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server():
    with start_server([MODEL, EMBED_MODEL]) as (base_url, _):
        yield base_url


@pytest.fixture()
def co(server):
    import cohere

    return cohere.ClientV2(api_key=API_KEY, base_url=server)


@pytest.fixture()
def co_v1(server):
    import cohere

    return cohere.Client(api_key=API_KEY, base_url=server)


@pytest.fixture()
def oai(server):
    import openai

    return openai.OpenAI(api_key=API_KEY, base_url=server + "/v1")
