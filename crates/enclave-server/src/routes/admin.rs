//! The admin API under `/admin/`: tenants, keys, the price book, usage reports and ledger
//! verification. The platform admin (the bootstrap key) sees everything; a tenant admin key
//! manages its own tenant's keys and reads its own tenant's usage, and nothing else.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use enclave_store::money::{pico_to_usd, usd_to_pico};
use enclave_store::reports::{parse_time, rfc3339, to_csv};
use enclave_store::{
    BudgetSpec, Capability, GroupBy, KeyRecord, ModelType, NewKey, PriceRow, ReportQuery, Role,
    Scopes, StoreError, Tenant,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

fn forbidden(message: &str) -> ApiError {
    ApiError::forbidden(message)
}

fn require_platform_admin(admin: &AdminCaller) -> Result<(), ApiError> {
    if admin.is_platform_admin() {
        Ok(())
    } else {
        Err(forbidden("this route needs the platform admin key"))
    }
}

pub(crate) fn store(state: &AppState) -> Result<&enclave_store::Store, ApiError> {
    state
        .access()
        .map(|a| a.store())
        .ok_or_else(|| ApiError::not_found("this server runs without accounts"))
}

/// The tenant a request names (by id or name), or the caller's own when it names none. A
/// tenant admin naming any other tenant gets the same 404 as for a tenant that does not exist,
/// so tenants cannot be discovered by probing.
pub(crate) async fn visible_tenant(
    store: &enclave_store::Store,
    admin: &AdminCaller,
    requested: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match requested {
        None => Ok(admin.tenant_scope().map(str::to_string)),
        Some(name) => Ok(Some(named_tenant(store, admin, name).await?.id)),
    }
}

/// The tenant `name` (id or name) as this caller may see it; see [`visible_tenant`].
pub(crate) async fn named_tenant(
    store: &enclave_store::Store,
    admin: &AdminCaller,
    name: &str,
) -> Result<Tenant, ApiError> {
    let hidden = || ApiError::not_found(format!("tenant '{name}' not found"));
    let tenant = match store.find_tenant(name).await {
        Err(StoreError::NotFound(_)) => return Err(hidden()),
        other => other?,
    };
    // Compare the resolved id, never the requested string: a name can look like another
    // tenant's id.
    match admin.tenant_scope() {
        Some(own) if own != tenant.id => Err(hidden()),
        _ => Ok(tenant),
    }
}

fn budget_json(budget: Option<BudgetSpec>) -> Value {
    match budget {
        Some(b) => json!({ "usd": pico_to_usd(b.limit_pico), "period": b.period.as_str() }),
        None => Value::Null,
    }
}

fn tenant_json(tenant: &Tenant) -> Value {
    json!({ "id": tenant.id, "name": tenant.name, "created_at": rfc3339(tenant.created_ms) })
}

fn key_json(key: &KeyRecord) -> Value {
    json!({
        "id": key.id,
        "tenant": key.tenant_id,
        "tenant_name": key.tenant_name,
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role.as_str(),
        "scopes": key.scopes.names(),
        "rpm": key.rpm,
        "tpm": key.tpm,
        "budget": budget_json(key.budget),
        "expires_at": key.expires_ms.map(rfc3339),
        "revoked_at": key.revoked_ms.map(rfc3339),
        "created_at": rfc3339(key.created_ms),
        "groups": key.groups,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiJson(req): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    require_platform_admin(&admin)?;
    let budget = BudgetSpec::optional(req.budget_usd, req.budget_period.as_deref())
        .map_err(ApiError::from)?;
    let tenant = store(&state)?
        .create_tenant(&req.name, budget)
        .await
        .map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))).into_response())
}

pub async fn list_tenants(
    State(state): State<AppState>,
    admin: AdminCaller,
) -> Result<Json<Value>, ApiError> {
    let tenants = store(&state)?
        .list_tenants()
        .await
        .map_err(ApiError::from)?;
    let visible: Vec<Value> = tenants
        .iter()
        .filter(|t| admin.tenant_scope().is_none_or(|scope| scope == t.id))
        .map(tenant_json)
        .collect();
    Ok(Json(json!({ "tenants": visible })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    budget_usd: f64,
    budget_period: Option<String>,
}

/// `PUT /admin/tenants/{id}/budget`.
pub async fn set_tenant_budget(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(tenant): Path<String>,
    ApiJson(req): ApiJson<SetBudget>,
) -> Result<Json<Value>, ApiError> {
    require_platform_admin(&admin)?;
    let store = store(&state)?;
    let tenant = store.find_tenant(&tenant).await.map_err(ApiError::from)?;
    let budget = BudgetSpec::from_usd(req.budget_usd, req.budget_period.as_deref())
        .map_err(ApiError::from)?;
    store
        .set_tenant_budget(&tenant.id, budget)
        .await
        .map_err(ApiError::from)?;
    if let Some(access) = state.access() {
        access.forget_keys();
    }
    Ok(Json(
        json!({ "tenant": tenant.id, "budget": budget_json(Some(budget)) }),
    ))
}

/// Scopes as a list of names, or as `{"capabilities": [...], "models": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ScopesInput {
    Names(Vec<String>),
    Parts(Scopes),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    tenant: String,
    name: Option<String>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    scopes: Option<ScopesInput>,
    role: Option<String>,
    /// RFC 3339 time or date after which the key stops working.
    expires_at: Option<String>,
    /// Groups the key belongs to (collection documents with an acl are visible to these).
    groups: Option<Vec<String>>,
}

pub async fn create_key(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let tenant = named_tenant(store, &admin, &req.tenant).await?;
    let role = match req.role.as_deref() {
        None => Role::Member,
        Some(name) => Role::parse(name).ok_or_else(|| {
            ApiError::invalid(format!(
                "role must be member, tenant_admin or admin, got '{name}'"
            ))
        })?,
    };
    if role == Role::Admin
        && !(admin.is_platform_admin() && tenant.name == enclave_store::accounts::SYSTEM_TENANT)
    {
        return Err(forbidden(
            "admin keys are made by the platform admin in the system tenant only",
        ));
    }
    let scopes = match req.scopes {
        None => Scopes::default(),
        Some(ScopesInput::Names(names)) => Scopes::parse(&names).map_err(ApiError::from)?,
        Some(ScopesInput::Parts(parts)) => parts,
    };
    let expires_ms = req
        .expires_at
        .as_deref()
        .map(|t| parse_time(t, false))
        .transpose()
        .map_err(ApiError::from)?;
    let new = NewKey {
        tenant_id: tenant.id.clone(),
        name: req.name.unwrap_or_default(),
        role,
        scopes,
        rpm: req.rpm,
        tpm: req.tpm,
        expires_ms,
        budget: BudgetSpec::optional(req.budget_usd, req.budget_period.as_deref())
            .map_err(ApiError::from)?,
        secret: None,
    };
    let (mut key, secret) = store.create_key(new).await.map_err(ApiError::from)?;
    if let Some(groups) = req.groups.filter(|g| !g.is_empty()) {
        key = store.set_key_groups(&key.id, None, &groups).await?;
    }
    let mut body = key_json(&key);
    body["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct KeyFilter {
    tenant: Option<String>,
}

pub async fn list_keys(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiQuery(filter): ApiQuery<KeyFilter>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let tenant = visible_tenant(store, &admin, filter.tenant.as_deref()).await?;
    let keys = store
        .list_keys(tenant.as_deref())
        .await
        .map_err(ApiError::from)?;
    let mut listed = Vec::with_capacity(keys.len());
    for key in &keys {
        let mut item = key_json(key);
        if let Some(budget) = key.budget {
            let (spent, held) = store
                .budget_state(&key.id, budget.period)
                .await
                .map_err(ApiError::from)?;
            item["budget"]["spent_usd"] = json!(pico_to_usd(spent));
            item["budget"]["held_usd"] = json!(pico_to_usd(held));
        }
        listed.push(item);
    }
    Ok(Json(json!({ "keys": listed })))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = store(&state)?
        .revoke_key(&id, admin.tenant_scope())
        .await
        .map_err(ApiError::from)?;
    if let Some(access) = state.access() {
        access.forget_keys();
    }
    Ok(Json(key_json(&key)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetGroups {
    groups: Vec<String>,
}

/// Replaces the groups of a key (of the caller's tenant, for a tenant admin).
pub async fn set_key_groups(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetGroups>,
) -> Result<Json<Value>, ApiError> {
    let key = store(&state)?
        .set_key_groups(&id, admin.tenant_scope(), &req.groups)
        .await?;
    if let Some(access) = state.access() {
        access.forget_keys();
    }
    Ok(Json(key_json(&key)))
}

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
    key: Option<String>,
    format: Option<String>,
}

pub async fn usage(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let group_by = GroupBy::parse_list(
        q.group_by
            .as_deref()
            .unwrap_or("tenant,capability,model,model_type"),
    )
    .map_err(ApiError::from)?;
    let tenant = visible_tenant(store, &admin, q.tenant.as_deref()).await?;
    let query = ReportQuery {
        group_by: group_by.clone(),
        from_ms: q
            .from
            .as_deref()
            .map(|t| parse_time(t, false))
            .transpose()
            .map_err(ApiError::from)?,
        to_ms: q
            .to
            .as_deref()
            .map(|t| parse_time(t, true))
            .transpose()
            .map_err(ApiError::from)?,
        tenant_id: tenant,
        key_id: q.key.clone(),
    };
    let rows = store.report(&query).await.map_err(ApiError::from)?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(json!({ "rows": rows })).into_response()),
        Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&rows, &group_by),
        )
            .into_response()),
        Some(other) => Err(ApiError::invalid(format!(
            "format must be json or csv, got '{other}'"
        ))),
    }
}

/// `GET /admin/usage/verify`: re-walks every tenant's hash chain.
pub async fn verify(
    State(state): State<AppState>,
    admin: AdminCaller,
) -> Result<Json<Value>, ApiError> {
    require_platform_admin(&admin)?;
    let report = store(&state)?.verify().await.map_err(ApiError::from)?;
    Ok(Json(
        json!({ "ok": report.ok(), "tenants": report.tenants }),
    ))
}

pub async fn prices(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, ApiError> {
    let book = store(&state)?.price_book().await.map_err(ApiError::from)?;
    let versions: Vec<Value> = book
        .versions
        .iter()
        .map(|v| {
            let rows: Vec<Value> = v
                .rows
                .iter()
                .map(|r| {
                    json!({
                        "capability": r.capability,
                        "model": r.model,
                        "model_type": r.model_type,
                        "unit": r.unit,
                        "usd_per_million": pico_to_usd(r.pico_per_unit) * 1e6,
                    })
                })
                .collect();
            json!({
                "version": v.version,
                "effective_at": rfc3339(v.effective_ms),
                "created_at": rfc3339(v.created_ms),
                "note": v.note,
                "prices": rows,
            })
        })
        .collect();
    Ok(Json(json!({ "versions": versions })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    capability: String,
    model: Option<String>,
    model_type: Option<String>,
    unit: String,
    usd_per_million: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrices {
    effective_at: Option<String>,
    note: Option<String>,
    prices: Vec<PriceInput>,
}

/// `POST /admin/prices`: a new version of the book, the given prices laid over the newest.
pub async fn add_prices(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiJson(req): ApiJson<NewPrices>,
) -> Result<Response, ApiError> {
    require_platform_admin(&admin)?;
    if req.prices.is_empty() || req.prices.len() > 1000 {
        return Err(ApiError::invalid("prices must hold 1 to 1000 entries"));
    }
    let mut rows = Vec::with_capacity(req.prices.len());
    for (i, p) in req.prices.iter().enumerate() {
        let capability = Capability::parse(&p.capability).ok_or_else(|| {
            ApiError::invalid(format!(
                "prices[{i}].capability '{}' is not a capability",
                p.capability
            ))
        })?;
        let model_type = match p.model_type.as_deref() {
            None => ModelType::Base,
            Some(name) => ModelType::parse(name).ok_or_else(|| {
                ApiError::invalid(format!("prices[{i}].model_type must be base or custom"))
            })?,
        };
        let pico_per_unit = usd_to_pico(p.usd_per_million / 1e6).ok_or_else(|| {
            ApiError::invalid(format!(
                "prices[{i}].usd_per_million must be a non-negative amount"
            ))
        })?;
        rows.push(PriceRow {
            capability,
            model: p
                .model
                .clone()
                .unwrap_or_else(|| enclave_store::prices::ANY_MODEL.into()),
            model_type,
            unit: p.unit.clone(),
            pico_per_unit,
        });
    }
    let effective_ms = req
        .effective_at
        .as_deref()
        .map(|t| parse_time(t, false))
        .transpose()
        .map_err(ApiError::from)?;
    let store = store(&state)?;
    let version = store
        .add_price_version(effective_ms, req.note.as_deref().unwrap_or(""), &rows)
        .await
        .map_err(ApiError::from)?;
    if let Some(access) = state.access() {
        access.refresh_prices().await.map_err(ApiError::from)?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "version": version.version, "effective_at": rfc3339(version.effective_ms) })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    tenant: Option<String>,
    /// Sequence number to continue after (0: from the start).
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/usage/events`: one tenant's ledger in chain order, with each event's hash, so
/// an auditor can re-check the bill line by line.
pub async fn events(
    State(state): State<AppState>,
    admin: AdminCaller,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let tenant = visible_tenant(store, &admin, q.tenant.as_deref())
        .await?
        .ok_or_else(|| ApiError::invalid("tenant is required"))?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 10000"));
    }
    let events = store
        .events(&tenant, q.after.unwrap_or(0), limit)
        .await
        .map_err(ApiError::from)?;
    let next_after = events.last().map(|e| e.seq);
    Ok(Json(json!({ "events": events, "next_after": next_after })))
}
