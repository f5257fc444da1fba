//! Guardrail state: the policy attached to a tenant or a key, the per-owner tool kill switch,
//! and the audit trail of interventions (never the values found, only where and what).

use sqlx::Row;

use crate::{col, now_ms, Result, Store, StoreError};

/// What is attached to one tenant or key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    pub policy: Option<String>,
    pub tools_off: bool,
}

/// One intervention, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub request_id: String,
    pub route: String,
    pub policy: String,
    pub direction: String,
    /// Which text: `message:N`, `document:<id>`, `answer`, `tool_call:<name>`, `text`.
    pub source: String,
    pub detector: String,
    pub kind: String,
    pub action: String,
    pub start: i64,
    pub end: i64,
    /// Detector confidence in thousandths (1000 for deterministic detectors).
    pub score_milli: i64,
    pub created_ms: i64,
}

/// Filters of an audit query; the tenant is always set by the caller's scope.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Attaches `policy` (or none) and sets the tool kill switch for a tenant or key of
    /// `tenant_id`; the owner must exist and belong to that tenant.
    pub async fn set_guard_attachment(
        &self,
        owner_id: &str,
        tenant_id: &str,
        attachment: &Attachment,
    ) -> Result<()> {
        let owned = sqlx::query(
            "SELECT 1 AS one FROM tenants WHERE id = $1 AND id = $2 \
             UNION ALL SELECT 1 AS one FROM api_keys WHERE id = $1 AND tenant_id = $2",
        )
        .bind(owner_id)
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        if owned.is_none() {
            return Err(StoreError::NotFound(format!("tenant or key '{owner_id}'")));
        }
        sqlx::query(
            "INSERT INTO guard_attachments (owner_id, tenant_id, policy, tools_off, updated_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner_id) DO UPDATE SET \
             policy = excluded.policy, tools_off = excluded.tools_off, updated_ms = excluded.updated_ms",
        )
        .bind(owner_id)
        .bind(tenant_id)
        .bind(attachment.policy.clone())
        .bind(i64::from(attachment.tools_off))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The tenant a key belongs to.
    pub async fn key_tenant(&self, key_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE id = $1")
            .bind(key_id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => col(&row, "tenant_id"),
            None => Err(StoreError::NotFound(format!("key '{key_id}'"))),
        }
    }

    /// The attachments of a key and of its tenant, in that order.
    pub async fn guard_attachments(
        &self,
        key_id: &str,
        tenant_id: &str,
    ) -> Result<(Attachment, Attachment)> {
        let rows = sqlx::query(
            "SELECT owner_id, policy, tools_off FROM guard_attachments WHERE owner_id = $1 OR owner_id = $2",
        )
        .bind(key_id)
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        let mut key = Attachment::default();
        let mut tenant = Attachment::default();
        for row in rows {
            let owner: String = col(&row, "owner_id")?;
            let attachment = Attachment {
                policy: row.try_get::<Option<String>, _>("policy")?,
                tools_off: col::<i64>(&row, "tools_off")? != 0,
            };
            if owner == key_id {
                key = attachment;
            } else {
                tenant = attachment;
            }
        }
        Ok((key, tenant))
    }

    /// Records interventions, all or none.
    pub async fn record_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO guard_events (id, tenant_id, key_id, request_id, route, policy, direction, source, \
                 detector, kind, action, start_cp, end_cp, score_milli, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&e.id)
            .bind(&e.tenant_id)
            .bind(&e.key_id)
            .bind(&e.request_id)
            .bind(&e.route)
            .bind(&e.policy)
            .bind(&e.direction)
            .bind(&e.source)
            .bind(&e.detector)
            .bind(&e.kind)
            .bind(&e.action)
            .bind(e.start)
            .bind(e.end)
            .bind(e.score_milli)
            .bind(e.created_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Recorded interventions, newest first.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, key_id, request_id, route, policy, direction, source, detector, kind, action, \
             start_cp, end_cp, score_milli, created_ms FROM guard_events \
             WHERE ($1 = '' OR tenant_id = $1) AND ($2 = '' OR key_id = $2) AND ($3 = '' OR request_id = $3) \
             AND created_ms >= $4 ORDER BY created_ms DESC, id DESC LIMIT $5",
        )
        .bind(q.tenant_id.clone().unwrap_or_default())
        .bind(q.key_id.clone().unwrap_or_default())
        .bind(q.request_id.clone().unwrap_or_default())
        .bind(q.since_ms.unwrap_or(0))
        .bind(q.limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: col(row, "id")?,
                    tenant_id: col(row, "tenant_id")?,
                    key_id: col(row, "key_id")?,
                    request_id: col(row, "request_id")?,
                    route: col(row, "route")?,
                    policy: col(row, "policy")?,
                    direction: col(row, "direction")?,
                    source: col(row, "source")?,
                    detector: col(row, "detector")?,
                    kind: col(row, "kind")?,
                    action: col(row, "action")?,
                    start: col(row, "start_cp")?,
                    end: col(row, "end_cp")?,
                    score_milli: col(row, "score_milli")?,
                    created_ms: col(row, "created_ms")?,
                })
            })
            .collect()
    }
}
