-- A client's Idempotency-Key on a billable call: at most one event per tenant and key, so a
-- retried call (after a lost answer) is billed once.
ALTER TABLE usage_events ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX usage_events_idempotency ON usage_events (tenant_id, idempotency_key);
