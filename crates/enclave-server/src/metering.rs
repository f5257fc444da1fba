//! Admission and settlement of one billable call. [`Bill::admit`] checks the key's scopes and
//! tokens-per-minute, prices the call from the book in effect, and holds its largest possible
//! cost against the key's and the tenant's budgets. [`Bill::settle`] writes the one usage event
//! (which also turns the hold into spend) before the client sees success. A bill dropped
//! unsettled releases its hold (the call failed: no event) — unless it was marked as a stream
//! that reached the client, in which case what was generated is billed (the client went away).

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use enclave_store::money::pico_to_usd;
use enclave_store::reports::rfc3339;
use enclave_store::{
    now_ms, BudgetExceeded, Capability, KeyRecord, ModelType, NewEvent, RateLimited, RecordedEvent,
    UnitPrices, Units,
};

use crate::access::{Access, Caller};
use crate::auth::MaybeCaller;
use crate::error::{ApiError, Family};
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-enclave-request-id");
pub const BILLED_UNITS: HeaderName = HeaderName::from_static("x-enclave-billed-units");
pub const COST_USD: HeaderName = HeaderName::from_static("x-enclave-cost-usd");
pub const PRICE_VERSION: HeaderName = HeaderName::from_static("x-enclave-price-version");

/// What a settled call was billed.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub request_id: String,
    pub units: Units,
    pub cost_pico: i64,
    pub price_version: i64,
}

impl Receipt {
    /// `input_tokens=12,output_tokens=30`: the meters that are not zero.
    pub fn units_header(&self) -> String {
        let u = &self.units;
        [
            ("input_tokens", u.input_tokens),
            ("output_tokens", u.output_tokens),
            ("search_units", u.search_units),
            ("classifications", u.classifications),
        ]
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(name, n)| format!("{name}={n}"))
        .collect::<Vec<_>>()
        .join(",")
    }

    /// A JSON response carrying the billing headers.
    pub fn json(&self, body: serde_json::Value) -> Response {
        let mut response = axum::Json(body).into_response();
        self.apply(&mut response);
        response
    }

    /// Adds the billing headers to `response`.
    pub fn apply(&self, response: &mut Response) {
        if self.request_id.is_empty() {
            return;
        }
        let headers = response.headers_mut();
        let values = [
            (REQUEST_ID, self.request_id.clone()),
            (BILLED_UNITS, self.units_header()),
            (COST_USD, format!("{:.12}", pico_to_usd(self.cost_pico))),
            (PRICE_VERSION, self.price_version.to_string()),
        ];
        for (name, value) in values {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
}

struct Pending {
    access: Arc<Access>,
    key: Arc<KeyRecord>,
    family: Family,
    request_id: String,
    capability: Capability,
    model: String,
    model_type: ModelType,
    price_version: i64,
    prices: UnitPrices,
    /// The budgets the call was admitted under (owner id, period start).
    holds: Vec<(String, i64)>,
    /// Units to bill if the bill is dropped unsettled (a stream whose client went away).
    bill_on_drop: Option<Units>,
    idempotency_key: Option<String>,
    fingerprint: Option<String>,
}

/// One billable call between admission and settlement.
pub struct Bill {
    /// `None` when the server runs without accounts (benchmarks of the bare engine path), or
    /// when the call repeats one already billed.
    pending: Option<Pending>,
    /// The earlier call's receipt, when this one repeats it under the same Idempotency-Key.
    replay: Option<Receipt>,
}

impl From<&RecordedEvent> for Receipt {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            request_id: event.request_id.clone(),
            units: event.units,
            cost_pico: event.cost_pico,
            price_version: event.price_version,
        }
    }
}

fn budget_error(family: Family, exceeded: &BudgetExceeded) -> ApiError {
    let resets = match exceeded.resets_ms {
        Some(ms) => format!("; it resets at {}", rfc3339(ms)),
        None => "; it does not reset".to_string(),
    };
    ApiError::new(
        family,
        StatusCode::PAYMENT_REQUIRED,
        format!(
            "{} budget exceeded: this call may cost up to ${:.6}, and ${:.6} of the {} limit of ${:.6} is spent or held{resets}",
            exceeded.owner,
            pico_to_usd(exceeded.needed_pico),
            pico_to_usd(exceeded.spent_pico + exceeded.reserved_pico),
            exceeded.period.as_str(),
            pico_to_usd(exceeded.limit_pico),
        ),
    )
}

/// The 429 for a rate limit, with `Retry-After` until the window resets.
pub fn rate_error(family: Family, limited: RateLimited) -> ApiError {
    let (what, limit, resets_ms) = match limited {
        RateLimited::Requests { limit, resets_ms } => ("requests", limit, resets_ms),
        RateLimited::Tokens { limit, resets_ms } => ("tokens", limit, resets_ms),
    };
    let wait_s = ((resets_ms - now_ms()).max(0) as u64).div_ceil(1000).max(1);
    let mut error = ApiError::new(
        family,
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "rate limit exceeded: this key allows {limit} {what} per minute; it resets at {} (in {wait_s} s)",
            rfc3339(resets_ms)
        ),
    );
    error.retry_after = Some(wait_s);
    error
}

pub fn store_error(family: Family, err: enclave_store::StoreError) -> ApiError {
    tracing::error!("store error: {err}");
    let mut error = ApiError::new(
        family,
        StatusCode::SERVICE_UNAVAILABLE,
        "the accounts database is unavailable; nothing was billed, try again",
    );
    error.retry_after = Some(1);
    error
}

impl Bill {
    /// Admits a call that may consume up to `max` units of `capability` on `model`.
    pub async fn admit(
        state: &AppState,
        caller: &MaybeCaller,
        family: Family,
        capability: Capability,
        model: &str,
        max: Units,
    ) -> Result<Self, ApiError> {
        let Some(access) = state.access() else {
            return Ok(Self {
                pending: None,
                replay: None,
            });
        };
        let Some(Caller(key)) = &caller.caller else {
            return Err(ApiError::unauthorized(family));
        };
        let idempotency_key = caller.idempotency_key(family)?;
        if !key.scopes.allows_capability(capability) {
            return Err(ApiError::new(
                family,
                StatusCode::FORBIDDEN,
                format!("this key may not use {}", capability.as_str()),
            ));
        }
        if !key.scopes.allows_model(model) {
            return Err(ApiError::new(
                family,
                StatusCode::FORBIDDEN,
                format!("this key may not use model '{model}'"),
            ));
        }
        if let Some(idempotency_key) = idempotency_key {
            let earlier = access
                .store()
                .event_by_idempotency_key(&key.tenant_id, idempotency_key)
                .await
                .map_err(|e| store_error(family, e))?;
            if let Some(event) = earlier {
                if event.request_fingerprint != caller.fingerprint {
                    return Err(reused_key(family, idempotency_key));
                }
                // Already billed: run the call again, bill nothing, answer with the first receipt.
                return Ok(Self {
                    pending: None,
                    replay: Some(Receipt::from(&event)),
                });
            }
        }
        let model_type = state.model_type(model);
        let (price_version, prices) = access.prices(capability, model, model_type);
        let max_cost = prices
            .cost(&max)
            .map_err(|_| ApiError::bad_request(family, "this call is too large to price"))?;
        let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
        let budgets: Vec<(&'static str, &str, _)> = [
            key.budget.map(|b| ("key", key.id.as_str(), b)),
            key.tenant_budget
                .map(|b| ("tenant", key.tenant_id.as_str(), b)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let holds = if budgets.is_empty() {
            Vec::new()
        } else {
            access
                .store()
                .reserve(&request_id, max_cost, &budgets)
                .await
                .map_err(|e| store_error(family, e))?
                .map_err(|exceeded| budget_error(family, &exceeded))?
                .holds
        };
        Ok(Self {
            pending: Some(Pending {
                access: Arc::clone(access),
                key: Arc::clone(key),
                family,
                request_id,
                capability,
                model: model.to_string(),
                model_type,
                price_version,
                prices,
                holds,
                bill_on_drop: None,
                idempotency_key: idempotency_key.map(str::to_string),
                fingerprint: caller.fingerprint.clone(),
            }),
            replay: None,
        })
    }

    /// From now on, dropping this bill unsettled bills `units` (what a stream generated so far).
    pub fn bill_on_drop(&mut self, units: Units) {
        if let Some(pending) = &mut self.pending {
            pending.bill_on_drop = Some(units);
        }
    }

    /// The id the usage event will carry (empty without accounts).
    pub fn request_id(&self) -> &str {
        match (&self.pending, &self.replay) {
            (Some(pending), _) => &pending.request_id,
            (None, Some(replay)) => &replay.request_id,
            (None, None) => "",
        }
    }

    /// The call failed after all: dropping the bill bills nothing and releases its hold.
    pub fn cancel(&mut self) {
        if let Some(pending) = &mut self.pending {
            pending.bill_on_drop = None;
        }
    }

    /// Records the usage event for `units`; the call has succeeded only when this returns Ok.
    /// The write runs as its own task, so a caller that goes away meanwhile (a stream's client
    /// leaving after the last text) cannot cut it off half-way.
    pub async fn settle(mut self, units: Units) -> Result<Receipt, ApiError> {
        let Some(pending) = self.pending.take() else {
            return Ok(self.replay.take().unwrap_or_default());
        };
        let family = pending.family;
        match tokio::spawn(record(pending, units)).await {
            Ok(Err(enclave_store::StoreError::Conflict(message))) => {
                Err(ApiError::new(family, StatusCode::CONFLICT, message))
            }
            Ok(done) => done.map_err(|e| store_error(family, e)),
            Err(_) => Err(ApiError::internal(family, "recording usage failed")),
        }
    }
}

/// Attempts at writing one usage event before the call is given up as failed.
const RECORD_ATTEMPTS: u32 = 3;

/// Writes the event, retrying transient database errors; an attempt that finds the event
/// already there (an earlier attempt committed but its answer was lost) has succeeded.
async fn record(pending: Pending, units: Units) -> Result<Receipt, enclave_store::StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write_event(&pending, units).await {
            Err(enclave_store::StoreError::Database(e)) if attempt < RECORD_ATTEMPTS => {
                tracing::warn!("recording usage failed (attempt {attempt}), retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
            Err(enclave_store::StoreError::Conflict(conflict)) => {
                return already_recorded(&pending)
                    .await?
                    .ok_or(enclave_store::StoreError::Conflict(conflict));
            }
            Err(e) => {
                if !pending.holds.is_empty() {
                    if let Err(release) = pending.access.store().release(&pending.request_id).await
                    {
                        tracing::warn!("releasing a budget hold failed: {release}");
                    }
                }
                return Err(e);
            }
            Ok(receipt) => return Ok(receipt),
        }
    }
}

/// After a conflict: the event of this call (an earlier attempt committed but its answer was
/// lost), or of a concurrent call with the same Idempotency-Key — then this call's hold goes back.
async fn already_recorded(pending: &Pending) -> Result<Option<Receipt>, enclave_store::StoreError> {
    let store = pending.access.store();
    if let Some(event) = store.event_by_request_id(&pending.request_id).await? {
        return Ok(Some(Receipt::from(&event)));
    }
    if !pending.holds.is_empty() {
        if let Err(e) = store.release(&pending.request_id).await {
            tracing::warn!("releasing the hold of {} failed: {e}", pending.request_id);
        }
    }
    let Some(key) = &pending.idempotency_key else {
        return Ok(None);
    };
    match store
        .event_by_idempotency_key(&pending.key.tenant_id, key)
        .await?
    {
        Some(event) if event.request_fingerprint == pending.fingerprint => {
            Ok(Some(Receipt::from(&event)))
        }
        Some(_) => Err(enclave_store::StoreError::Conflict(reused_key_message(key))),
        None => Ok(None),
    }
}

fn reused_key_message(key: &str) -> String {
    format!("Idempotency-Key '{key}' was already used for a different request")
}

fn reused_key(family: Family, key: &str) -> ApiError {
    ApiError::new(family, StatusCode::CONFLICT, reused_key_message(key))
}

async fn write_event(
    pending: &Pending,
    units: Units,
) -> Result<Receipt, enclave_store::StoreError> {
    let event = NewEvent {
        request_id: pending.request_id.clone(),
        tenant_id: pending.key.tenant_id.clone(),
        key_id: pending.key.id.clone(),
        capability: pending.capability,
        model: pending.model.clone(),
        model_type: pending.model_type,
        units,
        price_version: pending.price_version,
        prices: pending.prices,
        idempotency_key: pending.idempotency_key.clone(),
        request_fingerprint: pending.fingerprint.clone(),
    };
    let recorded = pending.access.store().record(event, &pending.holds).await?;
    pending
        .access
        .add_tokens(&pending.key, units.input_tokens + units.output_tokens)
        .await;
    Ok(Receipt {
        request_id: recorded.request_id,
        units,
        cost_pico: recorded.cost_pico,
        price_version: recorded.price_version,
    })
}

impl Drop for Bill {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        if pending.bill_on_drop.is_none() && pending.holds.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("a bill was dropped outside the runtime; its hold expires on its own");
            return;
        };
        runtime.spawn(async move {
            let request_id = pending.request_id.clone();
            match pending.bill_on_drop {
                Some(units) => {
                    if let Err(e) = record(pending, units).await {
                        tracing::error!("billing the interrupted stream {request_id} failed: {e}");
                    }
                }
                None => {
                    if let Err(e) = pending.access.store().release(&request_id).await {
                        tracing::warn!("releasing the hold of {request_id} failed: {e}");
                    }
                }
            }
        });
    }
}
