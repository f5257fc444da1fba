-- Tenants, keys, budgets, the price book, the usage ledger and its roll-ups.
-- Portable SQL: the same statements run on SQLite and PostgreSQL. Money is integer
-- pico-dollars (1e-12 USD); times are Unix milliseconds; days are days since 1970-01-01 (UTC).

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rpm BIGINT,
    tpm BIGINT,
    expires_ms BIGINT,
    revoked_ms BIGINT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- One budget per key or tenant (owner_id is the key's or the tenant's id).
CREATE TABLE budgets (
    owner_id TEXT PRIMARY KEY,
    limit_pico BIGINT NOT NULL,
    period TEXT NOT NULL
);

CREATE TABLE budget_periods (
    owner_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    spent_pico BIGINT NOT NULL,
    reserved_pico BIGINT NOT NULL,
    PRIMARY KEY (owner_id, period_start_ms)
);

-- Money held for calls in flight; settled or released when the call ends, swept when expired.
CREATE TABLE reservations (
    request_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    amount_pico BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (request_id, owner_id)
);
CREATE INDEX reservations_expiry ON reservations (expires_ms);

CREATE TABLE price_versions (
    version BIGINT PRIMARY KEY,
    effective_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    note TEXT NOT NULL
);

CREATE TABLE prices (
    version BIGINT NOT NULL REFERENCES price_versions(version),
    capability TEXT NOT NULL,
    model TEXT NOT NULL,
    model_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    pico_per_unit BIGINT NOT NULL,
    PRIMARY KEY (version, capability, model, model_type, unit)
);

-- The head of each tenant's hash chain: the last sequence number and its hash.
CREATE TABLE ledger_heads (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    seq BIGINT NOT NULL,
    head_hash TEXT NOT NULL
);

-- Append-only: one row per successful billable call.
CREATE TABLE usage_events (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    request_id TEXT NOT NULL UNIQUE,
    key_id TEXT NOT NULL,
    capability TEXT NOT NULL,
    model TEXT NOT NULL,
    model_type TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    search_units BIGINT NOT NULL,
    classifications BIGINT NOT NULL,
    price_version BIGINT NOT NULL,
    input_price_pico BIGINT NOT NULL,
    output_price_pico BIGINT NOT NULL,
    search_price_pico BIGINT NOT NULL,
    classification_price_pico BIGINT NOT NULL,
    cost_pico BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    day BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX usage_events_time ON usage_events (created_ms);

-- Daily roll-ups written in the same transaction as each event, so reports never scan events.
CREATE TABLE usage_daily (
    tenant_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    capability TEXT NOT NULL,
    model TEXT NOT NULL,
    model_type TEXT NOT NULL,
    day BIGINT NOT NULL,
    events BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    search_units BIGINT NOT NULL,
    classifications BIGINT NOT NULL,
    cost_pico BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key_id, capability, model, model_type, day)
);
CREATE INDEX usage_daily_day ON usage_daily (day);

-- Shared per-key rate windows (PostgreSQL mode; one node keeps them in memory).
CREATE TABLE rate_windows (
    key_id TEXT NOT NULL,
    window_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (key_id, window_ms)
);
