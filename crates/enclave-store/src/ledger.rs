//! The usage ledger: one append-only event per successful billable call, hash-chained per
//! tenant. Recording an event, advancing the chain head, adding to the daily roll-up and
//! settling the call's budget hold happen in one transaction, so either all of it is durable or
//! none of it is. The first statement takes the tenant's chain head for update, which orders
//! concurrent writers of one tenant on every node.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::budgets::finish_holds;
use crate::{
    col, now_ms, Capability, ModelType, Pico, Result, Store, StoreError, UnitPrices, Units,
};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A successful call to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub request_id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub capability: Capability,
    pub model: String,
    pub model_type: ModelType,
    pub units: Units,
    pub price_version: i64,
    pub prices: UnitPrices,
    /// The client's Idempotency-Key: at most one event per tenant carries a given key.
    pub idempotency_key: Option<String>,
    /// A hash of the request that carried the key, to tell a retry from a different request.
    pub request_fingerprint: Option<String>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedEvent {
    pub tenant_id: String,
    pub seq: i64,
    pub request_id: String,
    pub key_id: String,
    pub capability: String,
    pub model: String,
    pub model_type: String,
    pub units: Units,
    pub price_version: i64,
    pub prices: UnitPrices,
    pub cost_pico: Pico,
    pub created_ms: i64,
    pub prev_hash: String,
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Not part of the hash: it bills nothing, it only matches retries.
    #[serde(skip)]
    pub request_fingerprint: Option<String>,
}

impl RecordedEvent {
    /// The hash over the previous hash and every field of this event.
    pub fn compute_hash(&self) -> String {
        let u = &self.units;
        let p = &self.prices;
        let fields = [
            self.prev_hash.clone(),
            self.tenant_id.clone(),
            self.seq.to_string(),
            self.request_id.clone(),
            self.key_id.clone(),
            self.capability.clone(),
            self.model.clone(),
            self.model_type.clone(),
            u.input_tokens.to_string(),
            u.output_tokens.to_string(),
            u.search_units.to_string(),
            u.classifications.to_string(),
            self.price_version.to_string(),
            p.input_tokens.to_string(),
            p.output_tokens.to_string(),
            p.search_units.to_string(),
            p.classifications.to_string(),
            self.cost_pico.to_string(),
            self.created_ms.to_string(),
        ];
        // Events without a key hash exactly as they did before keys existed.
        let key = self.idempotency_key.iter().cloned();
        let mut hasher = Sha256::new();
        for field in fields.into_iter().chain(key) {
            // Length-prefixed, so no two different events share a byte string.
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            tenant_id: col(row, "tenant_id")?,
            seq: col(row, "seq")?,
            request_id: col(row, "request_id")?,
            key_id: col(row, "key_id")?,
            capability: col(row, "capability")?,
            model: col(row, "model")?,
            model_type: col(row, "model_type")?,
            units: Units {
                input_tokens: col(row, "input_tokens")?,
                output_tokens: col(row, "output_tokens")?,
                search_units: col(row, "search_units")?,
                classifications: col(row, "classifications")?,
            },
            price_version: col(row, "price_version")?,
            prices: UnitPrices {
                input_tokens: col(row, "input_price_pico")?,
                output_tokens: col(row, "output_price_pico")?,
                search_units: col(row, "search_price_pico")?,
                classifications: col(row, "classification_price_pico")?,
            },
            cost_pico: col(row, "cost_pico")?,
            created_ms: col(row, "created_ms")?,
            prev_hash: col(row, "prev_hash")?,
            hash: col(row, "hash")?,
            idempotency_key: col(row, "idempotency_key")?,
            request_fingerprint: col(row, "request_fingerprint")?,
        })
    }
}

const EVENT_COLUMNS: &str = "tenant_id, seq, request_id, key_id, capability, model, model_type, \
    input_tokens, output_tokens, search_units, classifications, price_version, input_price_pico, \
    output_price_pico, search_price_pico, classification_price_pico, cost_pico, created_ms, prev_hash, hash, \
    idempotency_key, request_fingerprint";

pub const MS_PER_DAY: i64 = 86_400_000;

/// One tenant's verification outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantVerification {
    pub tenant_id: String,
    pub events: i64,
    /// What is wrong, or `None` when the chain and the roll-ups check out.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub tenants: Vec<TenantVerification>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.tenants.iter().all(|t| t.problem.is_none())
    }
}

/// Appends one event to its tenant's chain and adds it to the day's roll-up, inside `tx`.
async fn append(
    tx: &mut Transaction<'_, Any>,
    event: NewEvent,
    created_ms: i64,
) -> Result<RecordedEvent> {
    let cost = event.prices.cost(&event.units)?;
    let head = sqlx::query(
        "UPDATE ledger_heads SET seq = seq + 1 WHERE tenant_id = $1 RETURNING seq, head_hash",
    )
    .bind(&event.tenant_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("tenant '{}'", event.tenant_id)))?;
    let mut recorded = RecordedEvent {
        tenant_id: event.tenant_id,
        seq: col(&head, "seq")?,
        request_id: event.request_id,
        key_id: event.key_id,
        capability: event.capability.as_str().to_string(),
        model: event.model,
        model_type: event.model_type.as_str().to_string(),
        units: event.units,
        price_version: event.price_version,
        prices: event.prices,
        cost_pico: cost,
        created_ms,
        prev_hash: col(&head, "head_hash")?,
        hash: String::new(),
        idempotency_key: event.idempotency_key,
        request_fingerprint: event.request_fingerprint,
    };
    recorded.hash = recorded.compute_hash();
    let r = &recorded;
    let inserted = sqlx::query(&format!(
            "INSERT INTO usage_events ({EVENT_COLUMNS}, day) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)"
        ))
        .bind(&r.tenant_id)
        .bind(r.seq)
        .bind(&r.request_id)
        .bind(&r.key_id)
        .bind(&r.capability)
        .bind(&r.model)
        .bind(&r.model_type)
        .bind(r.units.input_tokens)
        .bind(r.units.output_tokens)
        .bind(r.units.search_units)
        .bind(r.units.classifications)
        .bind(r.price_version)
        .bind(r.prices.input_tokens)
        .bind(r.prices.output_tokens)
        .bind(r.prices.search_units)
        .bind(r.prices.classifications)
        .bind(r.cost_pico)
        .bind(r.created_ms)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .bind(r.idempotency_key.as_deref())
        .bind(r.request_fingerprint.as_deref())
        .bind(created_ms.div_euclid(MS_PER_DAY))
        .execute(&mut **tx)
        .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Conflict(format!(
                "request {} is already recorded",
                r.request_id
            )))
        }
        other => other?,
    };
    sqlx::query("UPDATE ledger_heads SET head_hash = $1 WHERE tenant_id = $2")
        .bind(&r.hash)
        .bind(&r.tenant_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO usage_daily (tenant_id, key_id, capability, model, model_type, day, events, \
             input_tokens, output_tokens, search_units, classifications, cost_pico) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11) \
             ON CONFLICT (tenant_id, key_id, capability, model, model_type, day) DO UPDATE SET \
             events = usage_daily.events + 1, \
             input_tokens = usage_daily.input_tokens + excluded.input_tokens, \
             output_tokens = usage_daily.output_tokens + excluded.output_tokens, \
             search_units = usage_daily.search_units + excluded.search_units, \
             classifications = usage_daily.classifications + excluded.classifications, \
             cost_pico = usage_daily.cost_pico + excluded.cost_pico",
    )
    .bind(&r.tenant_id)
    .bind(&r.key_id)
    .bind(&r.capability)
    .bind(&r.model)
    .bind(&r.model_type)
    .bind(created_ms.div_euclid(MS_PER_DAY))
    .bind(r.units.input_tokens)
    .bind(r.units.output_tokens)
    .bind(r.units.search_units)
    .bind(r.units.classifications)
    .bind(r.cost_pico)
    .execute(&mut **tx)
    .await?;
    Ok(recorded)
}

impl Store {
    /// Writes one usage event and settles the call's budget holds (`holds`: the budgets it was
    /// admitted under, from its [`crate::Reservation`]), durably and atomically.
    pub async fn record(&self, event: NewEvent, holds: &[(String, i64)]) -> Result<RecordedEvent> {
        let mut tx = self.pool().begin().await?;
        let recorded = append(&mut tx, event, now_ms()).await?;
        finish_holds(
            &mut tx,
            &recorded.request_id,
            Some((recorded.cost_pico, holds)),
        )
        .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Appends many events, each with its own time, in one transaction: usage metered
    /// elsewhere being imported, and the report benchmark. No budget holds are involved.
    pub async fn record_batch(&self, events: Vec<(NewEvent, i64)>) -> Result<usize> {
        let count = events.len();
        let mut tx = self.pool().begin().await?;
        for (event, created_ms) in events {
            append(&mut tx, event, created_ms).await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// The event a request id names, if it was recorded.
    pub async fn event_by_request_id(&self, request_id: &str) -> Result<Option<RecordedEvent>> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(RecordedEvent::from_row).transpose()
    }

    /// The tenant's event that carries a client's Idempotency-Key, if any.
    pub async fn event_by_idempotency_key(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<RecordedEvent>> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(RecordedEvent::from_row).transpose()
    }

    /// Events of one tenant in chain order, from sequence number `after` on (at most `limit`).
    pub async fn events(
        &self,
        tenant_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// Re-walks every tenant's chain: each event's hash, its link to the one before, gapless
    /// sequence numbers up to the chain head, and roll-ups that add up to the events.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let heads =
            sqlx::query("SELECT tenant_id, seq, head_hash FROM ledger_heads ORDER BY tenant_id")
                .fetch_all(self.pool())
                .await?;
        let mut report = VerifyReport {
            tenants: Vec::new(),
        };
        for head in &heads {
            let tenant_id: String = col(head, "tenant_id")?;
            let head_seq: i64 = col(head, "seq")?;
            let head_hash: String = col(head, "head_hash")?;
            let (events, problem) = self.verify_tenant(&tenant_id, head_seq, &head_hash).await?;
            report.tenants.push(TenantVerification {
                tenant_id,
                events,
                problem,
            });
        }
        Ok(report)
    }

    async fn verify_tenant(
        &self,
        tenant_id: &str,
        head_seq: i64,
        head_hash: &str,
    ) -> Result<(i64, Option<String>)> {
        const PAGE: i64 = 5_000;
        let mut prev_hash = GENESIS_HASH.to_string();
        let mut seq = 0;
        let mut totals = Units::default();
        let mut cost_total: i128 = 0;
        loop {
            let page = self.events(tenant_id, seq, PAGE).await?;
            for event in &page {
                if event.seq != seq + 1 {
                    return Ok((seq, Some(format!("event {} is missing", seq + 1))));
                }
                if event.prev_hash != prev_hash {
                    return Ok((
                        seq,
                        Some(format!("event {} does not link to event {seq}", event.seq)),
                    ));
                }
                if event.compute_hash() != event.hash {
                    return Ok((seq, Some(format!("event {} was altered", event.seq))));
                }
                if event.prices.cost(&event.units).ok() != Some(event.cost_pico) {
                    return Ok((seq, Some(format!("event {} has a wrong cost", event.seq))));
                }
                totals.input_tokens += event.units.input_tokens;
                totals.output_tokens += event.units.output_tokens;
                totals.search_units += event.units.search_units;
                totals.classifications += event.units.classifications;
                cost_total += i128::from(event.cost_pico);
                prev_hash = event.hash.clone();
                seq = event.seq;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        if seq != head_seq || prev_hash != head_hash {
            return Ok((
                seq,
                Some(format!(
                    "the chain ends at event {seq} but its head says {head_seq}"
                )),
            ));
        }
        let rollup = sqlx::query(
            "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) AS events, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(search_units), 0) AS BIGINT) AS search_units, \
             CAST(COALESCE(SUM(classifications), 0) AS BIGINT) AS classifications, \
             CAST(COALESCE(SUM(cost_pico), 0) AS BIGINT) AS cost_pico \
             FROM usage_daily WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await?;
        let rolled = Units {
            input_tokens: col(&rollup, "input_tokens")?,
            output_tokens: col(&rollup, "output_tokens")?,
            search_units: col(&rollup, "search_units")?,
            classifications: col(&rollup, "classifications")?,
        };
        let rolled_events: i64 = col(&rollup, "events")?;
        let rolled_cost: i64 = col(&rollup, "cost_pico")?;
        if rolled != totals || rolled_events != seq || i128::from(rolled_cost) != cost_total {
            return Ok((
                seq,
                Some("the daily roll-ups do not add up to the events".into()),
            ));
        }
        Ok((seq, None))
    }
}
