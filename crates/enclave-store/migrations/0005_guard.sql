-- Guardrails: which policy a tenant or key runs under (and its tool kill switch), and the
-- audit trail of every intervention. The trail never holds the value that was found: only
-- where it was (code-point offsets into the checked text), what it was and what was done.

CREATE TABLE guard_attachments (
    owner_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    policy TEXT,
    tools_off BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE guard_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    route TEXT NOT NULL,
    policy TEXT NOT NULL,
    direction TEXT NOT NULL,
    source TEXT NOT NULL,
    detector TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    start_cp BIGINT NOT NULL,
    end_cp BIGINT NOT NULL,
    score_milli BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX guard_events_tenant ON guard_events (tenant_id, created_ms);
CREATE INDEX guard_events_request ON guard_events (request_id);
