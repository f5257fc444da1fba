"""Starts a real `enclave serve` with the small test model on an ephemeral loopback port."""

import contextlib
import os
import re
import subprocess
import tempfile
import threading
import time

import pytest

API_KEY = "sdk-test-key"
MODEL = "smollm2-135m-instruct"
# The default chat model, for suites where answers must be right.
CHAT_MODEL = "qwen2.5-coder-1.5b-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
# The packaged retrieval embedder trained with task prefixes (scripts/test.sh pulls it).
NOMIC_MODEL = "nomic-embed-text-v1.5"


def enclave_bin():
    return os.environ.get("ENCLAVE_BIN", "target/release/enclave")


def launch(models, database_url, extra=()):
    """Starts `enclave serve` on a free loopback port; returns (process, base_url)."""
    command = [enclave_bin(), "serve", "--port", "0", "--api-key", API_KEY, "--database-url", database_url]
    # Small defaults for the test model; a suite may pass its own.
    for flag, value in (("--parallel", "8"), ("--ctx-size", "1024")):
        if flag not in extra:
            command += [flag, value]
    command += list(extra)
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
    # Keep draining both pipes so the server never blocks on a full one.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, base_url


@contextlib.contextmanager
def start_server(models, database_url=None, extra=()):
    """Runs `enclave serve` with `models` (a fresh SQLite database unless one is given);
    yields (base_url, api_key)."""
    with tempfile.TemporaryDirectory() as home:
        url = database_url or f"sqlite://{home}/enclave.db"
        proc, base_url = launch(models, url, extra)
        try:
            yield base_url, API_KEY
        finally:
            stop(proc)


def stop(proc):
    """Stops a server politely, then firmly."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server_db():
    """The SQLite database of the session's server."""
    with tempfile.TemporaryDirectory() as home:
        yield f"sqlite://{home}/enclave.db"


@pytest.fixture(scope="session")
def server(server_db):
    with start_server([MODEL, EMBED_MODEL], database_url=server_db) as (base_url, _):
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
