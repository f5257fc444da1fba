//! Admin routes of the guardrails: the policies a node knows, attaching one (and the tool
//! kill switch) to a tenant or a key, and the audit trail, with the same tenant isolation as
//! usage: a tenant admin sees and changes only its own tenant.

use axum::extract::{Path, State};
use axum::Json;
use enclave_store::{Attachment, AuditQuery};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{named_tenant, store, visible_tenant};
use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

pub async fn policies(State(state): State<AppState>, _admin: AdminCaller) -> Json<Value> {
    let policies: Vec<Value> = state
        .guardrails()
        .policies
        .all()
        .map(|p| {
            json!({
                "name": p.name,
                "input": p.checks(enclave_guard::Direction::Input),
                "output": p.checks(enclave_guard::Direction::Output),
                "injection": p.injection.map(|(t, a)| json!({"threshold": t, "action": a.as_str()})),
                "restore": p.restore,
                "tool_rules": !p.tools.is_empty(),
            })
        })
        .collect();
    Json(json!({ "policies": policies }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetGuard {
    /// A policy name, or null to detach.
    policy: Option<String>,
    #[serde(default)]
    tools_off: bool,
}

fn attachment(state: &AppState, req: SetGuard) -> Result<Attachment, ApiError> {
    if let Some(name) = &req.policy {
        if state.guardrails().policies.get(name).is_none() {
            let known: Vec<&String> = state.guardrails().policies.names().collect();
            return Err(ApiError::invalid(format!(
                "unknown policy '{name}'; defined: {known:?}"
            )));
        }
    }
    Ok(Attachment {
        policy: req.policy,
        tools_off: req.tools_off,
    })
}

fn attachment_json(owner: &str, a: &Attachment) -> Json<Value> {
    Json(json!({ "owner": owner, "policy": a.policy, "tools_off": a.tools_off }))
}

pub async fn set_tenant_guard(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(tenant): Path<String>,
    ApiJson(req): ApiJson<SetGuard>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let tenant = named_tenant(store, &admin, &tenant).await?;
    let a = attachment(&state, req)?;
    store
        .set_guard_attachment(&tenant.id, &tenant.id, &a)
        .await?;
    Ok(attachment_json(&tenant.id, &a))
}

pub async fn set_key_guard(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<SetGuard>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let hidden = || ApiError::not_found(format!("key '{key}' not found"));
    let tenant = store.key_tenant(&key).await.map_err(|_| hidden())?;
    if admin.tenant_scope().is_some_and(|own| own != tenant) {
        return Err(hidden());
    }
    let a = attachment(&state, req)?;
    store.set_guard_attachment(&key, &tenant, &a).await?;
    Ok(attachment_json(&key, &a))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    tenant: Option<String>,
    key: Option<String>,
    request_id: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let tenant_id = visible_tenant(store, &admin, q.tenant.as_deref()).await?;
    let since_ms = q
        .since
        .as_deref()
        .map(|t| enclave_store::reports::parse_time(t, false))
        .transpose()
        .map_err(ApiError::from)?;
    let events = store
        .audit_events(&AuditQuery {
            tenant_id,
            key_id: q.key,
            request_id: q.request_id,
            since_ms,
            limit: q.limit.unwrap_or(100),
        })
        .await?;
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "tenant_id": e.tenant_id, "key_id": e.key_id, "request_id": e.request_id,
                "route": e.route, "policy": e.policy, "direction": e.direction, "source": e.source,
                "detector": e.detector, "type": e.kind, "action": e.action, "start": e.start,
                "end": e.end, "score": e.score_milli as f64 / 1000.0,
                "created": enclave_store::reports::rfc3339(e.created_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}
