-- A client's Idempotency-Key on a billable call: at most one event per tenant and key, so a
-- retried call (after a lost answer) is billed once. The fingerprint (a hash of the request)
-- tells a true retry from a different request sent under a reused key.
ALTER TABLE usage_events ADD COLUMN idempotency_key TEXT;
ALTER TABLE usage_events ADD COLUMN request_fingerprint TEXT;
CREATE UNIQUE INDEX usage_events_idempotency ON usage_events (tenant_id, idempotency_key);
