"""Three `enclave serve` nodes sharing one PostgreSQL database under concurrent load, and a node
killed with SIGKILL in the middle of metered load. PostgreSQL runs at 127.0.0.1:5432 here and in
CI (override with ENCLAVE_TEST_POSTGRES)."""

import os
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from accounts_client import admin, embed, ledger, new_key, new_tenant, usage_rows
from conftest import EMBED_MODEL, enclave_bin, launch, stop

ADMIN_URL = os.environ.get("ENCLAVE_TEST_POSTGRES", "postgres://root@127.0.0.1:5432/postgres")


def psql(sql):
    subprocess.run(["psql", ADMIN_URL, "-qc", sql], check=True, capture_output=True)


@pytest.fixture()
def postgres_url():
    name = "enclave_e2e_" + uuid.uuid4().hex[:12]
    psql(f"CREATE DATABASE {name}")
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture()
def three_nodes(postgres_url):
    procs, urls = [], []
    try:
        for _ in range(3):
            proc, url = launch([EMBED_MODEL], postgres_url, extra=["--threads", "1"])
            procs.append(proc)
            urls.append(url)
        yield urls, postgres_url
    finally:
        for proc in procs:
            stop(proc)


def verify(database_url):
    done = subprocess.run([enclave_bin(), "usage", "verify", "--database-url", database_url],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def wait_until(done, workers, seconds=180):
    """Waits for `done()`, failing (instead of hanging) when the load threads die or time runs out."""
    deadline = time.time() + seconds
    while not done():
        assert any(w.is_alive() for w in workers), "every load thread stopped"
        assert time.time() < deadline, "the load made no progress"
        time.sleep(0.05)


def wait_for_fresh_minute(margin=20):
    """Rate windows are whole minutes: start a burst early in one."""
    if time.time() % 60 > 60 - margin:
        time.sleep(61 - time.time() % 60)


def test_three_nodes_meter_exactly_and_enforce_limits_together(three_nodes):
    nodes, database_url = three_nodes
    tenant = new_tenant(nodes[0], "multi-" + uuid.uuid4().hex[:6])
    plain_id, plain = new_key(nodes[1], tenant, name="plain")
    budget_id, budgeted = new_key(nodes[2], tenant, name="budget", budget_usd=0.000005, budget_period="daily")
    rate_id, limited = new_key(nodes[0], tenant, name="rate", rpm=10)
    client = httpx.Client(timeout=60)

    def call(i):
        node = nodes[i % 3]
        if i % 7 == 3:  # bad input: must not be metered
            return "bad", embed(node, plain, texts=[], client=client).status_code
        return "good", embed(node, plain, texts=[f"sentence number {i}"], client=client).status_code

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(90)))
    ok = sum(1 for kind, status in results if status == 200)
    assert all(status == 200 for kind, status in results if kind == "good"), results
    assert all(status == 400 for kind, status in results if kind == "bad"), results

    # Budget: concurrent calls on all nodes never spend past it.
    with ThreadPoolExecutor(12) as pool:
        budget_statuses = list(pool.map(lambda i: embed(nodes[i % 3], budgeted, client=client).status_code, range(45)))
    assert set(budget_statuses) <= {200, 402}, budget_statuses
    assert budget_statuses.count(402) > 0 and budget_statuses.count(200) > 0

    # Rate limit: 10 per minute across all three nodes together.
    wait_for_fresh_minute()
    with ThreadPoolExecutor(12) as pool:
        rate_statuses = list(pool.map(lambda i: embed(nodes[i % 3], limited, client=client).status_code, range(30)))
    assert rate_statuses.count(200) == 10, rate_statuses
    assert rate_statuses.count(429) == 20

    by_key = {row["key"]: row for row in usage_rows(nodes[1], "key", tenant=tenant)}
    assert by_key[plain_id]["events"] == ok
    assert by_key[budget_id]["events"] == budget_statuses.count(200)
    assert by_key[budget_id]["cost_usd"] <= 0.000005 + 1e-15
    assert by_key[rate_id]["events"] == 10
    assert len(ledger(nodes[2], tenant)) == ok + budget_statuses.count(200) + 10

    # A revocation on one node is refused by the others within a second.
    revoked_id, revoked = new_key(nodes[0], tenant, name="soon revoked")
    assert all(embed(node, revoked, client=client).status_code == 200 for node in nodes)
    assert admin(nodes[0], "DELETE", f"/admin/keys/{revoked_id}").status_code == 200
    time.sleep(1.0)
    assert [embed(node, revoked, client=client).status_code for node in nodes] == [401, 401, 401]

    code, output = verify(database_url)
    assert code == 0, output


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_mid_load_loses_no_usage(backend, postgres_url):
    """Clients send each call with an Idempotency-Key and retry it until they get an answer, as a
    careful client does: the ledger then holds exactly one event per call, whatever the crash."""
    with tempfile.TemporaryDirectory() as home:
        database_url = f"sqlite://{home}/enclave.db" if backend == "sqlite" else postgres_url
        proc, base = launch([EMBED_MODEL], database_url)
        tenant = new_tenant(base, "crash-" + uuid.uuid4().hex[:6])
        _, key = new_key(base, tenant)
        received, broken = {}, []
        lock = threading.Lock()
        target = {"base": base}
        stop_load = threading.Event()

        def load(worker):
            client = httpx.Client(timeout=30)
            call = 0
            while not stop_load.is_set():
                call += 1
                intent = f"w{worker}-c{call}"
                while True:  # retry this call until it is answered
                    try:
                        response = client.post(
                            target["base"] + "/v2/embed",
                            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": intent},
                            json={"model": EMBED_MODEL, "texts": [f"crash test {intent}"],
                                  "input_type": "search_document", "embedding_types": ["float"]})
                    except httpx.HTTPError:
                        with lock:
                            broken.append(intent)
                        time.sleep(0.05)
                        continue
                    if response.status_code == 409 and "still running" in response.text:
                        # The call is still claimed (its node may have just died): wait, retry.
                        time.sleep(0.2)
                        continue
                    assert response.status_code == 200, response.text
                    with lock:
                        received[intent] = response.headers["x-enclave-request-id"]
                    break

        # Daemons: a failing assertion below must not leave the test process waiting on them.
        workers = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
        for w in workers:
            w.start()
        wait_until(lambda: len(received) >= 40, workers)
        proc.kill()  # SIGKILL: no shutdown, no flush
        proc.wait()
        time.sleep(0.5)
        proc, target["base"] = launch([EMBED_MODEL], database_url)
        before_restart = len(received)
        wait_until(lambda: len(received) >= before_restart + 20, workers)
        stop_load.set()
        for w in workers:
            w.join()
        try:
            events = ledger(target["base"], tenant)
            code, output = verify(database_url)
        finally:
            stop(proc)
        assert code == 0, output
        print(f"{backend}: {len(received)} calls answered, {len(broken)} broken connections retried, {len(events)} events")
        assert broken, "the kill should have cut some calls off"
        # Exactly one event per call, carrying the request id the client was finally answered with.
        assert len(events) == len(received)
        assert {e["idempotency_key"]: e["request_id"] for e in events} == received
