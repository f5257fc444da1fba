-- A billable call sent with an Idempotency-Key is claimed here before it runs, so a concurrent
-- duplicate is refused instead of running too, and a retry after success is answered with the
-- stored first response instead of running the model again. `status` is NULL while the call
-- runs; a failed call deletes its claim so the client may retry. `node_id` names the process
-- running the call: a claim whose node stopped beating (it died) is taken over by a retry.
CREATE TABLE idempotent_calls (
    tenant_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    request_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    claimed_ms BIGINT NOT NULL,
    status BIGINT,
    content_type TEXT,
    headers TEXT,
    body TEXT,
    PRIMARY KEY (tenant_id, idempotency_key)
);

-- Each serving process beats here every few seconds while it runs.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    seen_ms BIGINT NOT NULL
);
