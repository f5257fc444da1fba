//! Admission and settlement of one billable call. [`Bill::admit`] checks the key's scopes,
//! claims the call's `Idempotency-Key` (a finished call's response is replayed instead), prices
//! the call from the book in effect, holds its largest possible cost against the key's and the
//! tenant's budgets and counts its input against tokens-per-minute. [`Bill::settle`] writes the
//! one usage event (which also turns the hold into spend) before the client sees success. A
//! bill dropped unsettled releases its hold and its key (the call failed: no event) — unless it
//! was marked as a stream that reached the client, in which case what was generated is billed
//! (the client went away) and what was sent becomes the key's stored response.

pub(crate) mod idempotency;
pub mod receipt;

use std::sync::Arc;

use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use enclave_store::{Capability, KeyRecord, ModelType, NewEvent, StoreError, UnitPrices, Units};

use crate::access::{Access, Caller};
use crate::auth::{Call, IdempotencyKey};
use crate::error::ApiError;
use idempotency::{Claimed, Claiming};
pub use receipt::{Receipt, REQUEST_ID};

/// What admission decided.
pub enum Admission {
    /// Run the call under this bill.
    Run(Bill),
    /// The call already succeeded under its Idempotency-Key: answer with its response.
    Replay(Response),
}

struct Pending {
    access: Arc<Access>,
    key: Arc<KeyRecord>,
    request_id: String,
    capability: Capability,
    model: String,
    model_type: ModelType,
    price_version: i64,
    prices: UnitPrices,
    /// The budgets the call was admitted under (owner id, period start).
    holds: Vec<(String, i64)>,
    /// Tokens counted against the key's tokens-per-minute at admission.
    counted_tokens: i64,
    /// Units to bill if the bill is dropped unsettled (a stream whose client went away).
    bill_on_drop: Option<Units>,
    /// The client's Idempotency-Key and request fingerprint, written with the event.
    idempotency: Option<IdempotencyKey>,
    claim: Option<Claimed>,
}

/// One billable call between admission and settlement.
pub struct Bill {
    /// `None` when the server runs without accounts (benchmarks of the bare engine path).
    /// Boxed: a bill travels by value through every stream's state.
    pending: Option<Box<Pending>>,
}

/// Whether the caller's key may use `capability` on `model` (403 naming what it may not); a
/// server without accounts checks nothing. Admission runs it; so may a route, earlier, before
/// work it should not do for a caller that will be refused.
pub fn check_scopes(call: &Call, capability: Capability, model: &str) -> Result<(), ApiError> {
    if call.state.access().is_none() {
        return Ok(());
    }
    let Some(Caller(key)) = &call.caller.caller else {
        return Err(ApiError::unauthorized());
    };
    if !key.scopes.allows_capability(capability) {
        return Err(ApiError::forbidden(format!(
            "this key may not use {}",
            capability.as_str()
        )));
    }
    call.caller.require_model(model)
}

impl Bill {
    /// Admits a call that may consume up to `max` units of `capability` on `model`.
    pub async fn admit(
        call: &Call,
        capability: Capability,
        model: &str,
        max: Units,
    ) -> Result<Admission, ApiError> {
        let Some(access) = call.state.access() else {
            return Ok(Admission::Run(Self { pending: None }));
        };
        let Some(Caller(key)) = &call.caller.caller else {
            return Err(ApiError::unauthorized());
        };
        let sent_key = call.caller.idempotency_key()?;
        check_scopes(call, capability, model)?;
        let model_type = call.state.model_type(model);
        let (price_version, prices) = access.prices(capability, model, model_type);
        let max_cost = prices
            .cost(&max)
            .map_err(|_| ApiError::bad_request("this call is too large to price"))?;
        let request_id = call.request_id.clone();
        let claim = match sent_key {
            None => None,
            Some(sent) => {
                match idempotency::claim(
                    access.store(),
                    access.node_id(),
                    &key.tenant_id,
                    sent,
                    &request_id,
                )
                .await?
                {
                    Claiming::Run(claimed) => Some(claimed),
                    Claiming::Replay(response) => return Ok(Admission::Replay(response)),
                }
            }
        };
        // From here on, returning early drops the bill, which gives the key back.
        let mut bill = Self {
            pending: Some(Box::new(Pending {
                access: Arc::clone(access),
                key: Arc::clone(key),
                request_id: request_id.clone(),
                capability,
                model: model.to_string(),
                model_type,
                price_version,
                prices,
                holds: Vec::new(),
                counted_tokens: 0,
                bill_on_drop: None,
                idempotency: sent_key.cloned(),
                claim,
            })),
        };
        let budgets: Vec<(&'static str, &str, _)> = [
            key.budget.map(|b| ("key", key.id.as_str(), b)),
            key.tenant_budget
                .map(|b| ("tenant", key.tenant_id.as_str(), b)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(pending) = &mut bill.pending {
            if !budgets.is_empty() {
                pending.holds = access
                    .store()
                    .reserve(&request_id, max_cost, &budgets)
                    .await??
                    .holds;
            }
            pending.counted_tokens = max.input_tokens;
            access.add_tokens(key, max.input_tokens).await;
        }
        Ok(Admission::Run(bill))
    }

    /// From now on, dropping this bill unsettled bills `units` (what a stream generated so far).
    pub fn bill_on_drop(&mut self, units: Units) {
        if let Some(pending) = &mut self.pending {
            pending.bill_on_drop = Some(units);
        }
    }

    /// Marks the call as a stream of `content_type`: what it sends is what a retry gets.
    pub fn stream_as(&mut self, content_type: &'static str) {
        if let Some(claim) = self.pending.as_mut().and_then(|p| p.claim.as_mut()) {
            claim.content_type = content_type;
        }
    }

    /// Keeps what a stream sent, for retries under its Idempotency-Key.
    pub fn note_sent(&mut self, frame: &str) {
        if let Some(claim) = self.pending.as_mut().and_then(|p| p.claim.as_mut()) {
            claim.transcript.push_str(frame);
        }
    }

    /// The id the usage event will carry (empty without accounts).
    pub fn request_id(&self) -> &str {
        self.pending.as_ref().map_or("", |p| p.request_id.as_str())
    }

    /// Records the usage event for `units`; the call has succeeded only when this returns Ok.
    /// The write runs as its own task, so a caller that goes away meanwhile (a stream's client
    /// leaving after the last text) cannot cut it off half-way.
    pub async fn settle(mut self, units: Units) -> Result<Settled, ApiError> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(Settled::default());
        };
        let claim = pending.claim.take();
        let access = Arc::clone(&pending.access);
        let recorded = tokio::spawn(record(pending, units)).await;
        let receipt = match recorded {
            Ok(Ok(receipt)) => receipt,
            failed => {
                if let Some(claim) = claim {
                    claim.release(access.store()).await;
                }
                return Err(match failed {
                    Ok(Err(e)) => e.into(),
                    _ => ApiError::internal("the usage-recording task failed"),
                });
            }
        };
        Ok(Settled {
            receipt,
            claim: claim.map(|claim| (access, claim)),
        })
    }
}

/// A call whose usage is recorded: its receipt, and its Idempotency-Key if it holds one.
#[derive(Default)]
pub struct Settled {
    pub receipt: Receipt,
    claim: Option<(Arc<Access>, Claimed)>,
}

impl Settled {
    /// The JSON response with its billing headers, stored first for retries under the key.
    /// The body is serialized once, and copied only when it is kept.
    pub async fn json(self, body: &serde_json::Value) -> Response {
        const JSON: &str = "application/json";
        let text = body.to_string();
        let kept = self.claim.is_some().then(|| text.clone());
        let mut response = ([(header::CONTENT_TYPE, JSON)], text).into_response();
        self.receipt.apply(&mut response);
        if let Some(kept) = kept {
            self.keep(JSON, kept).await;
        }
        response
    }

    /// Stores a response for retries under the call's Idempotency-Key (if it has one); a
    /// stream passes everything it sent, its last frame included.
    pub async fn keep(self, content_type: &str, body: String) {
        if let Some((access, claim)) = self.claim {
            let headers: Vec<(HeaderName, String)> = self.receipt.headers();
            claim
                .complete(access.store(), content_type, &headers, body)
                .await;
        }
    }

    /// The transcript a stream's claim has collected (empty without a key).
    pub fn take_transcript(&mut self) -> String {
        self.claim
            .as_mut()
            .map(|(_, claim)| std::mem::take(&mut claim.transcript))
            .unwrap_or_default()
    }
}

/// Attempts at writing one usage event before the call is given up as failed.
const RECORD_ATTEMPTS: u32 = 3;

/// Writes the event, retrying transient database errors; an attempt that finds the event
/// already there (an earlier attempt committed but its answer was lost) has succeeded.
async fn record(pending: Box<Pending>, units: Units) -> Result<Receipt, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write_event(&pending, units).await {
            Err(StoreError::Database(e)) if attempt < RECORD_ATTEMPTS => {
                tracing::warn!("recording usage failed (attempt {attempt}), retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
            Err(StoreError::Conflict(conflict)) => {
                let store = pending.access.store();
                if let Some(event) = store.event_by_request_id(&pending.request_id).await? {
                    return Ok(Receipt::from(&event));
                }
                release_holds(&pending).await;
                return billed_before(&pending)
                    .await?
                    .ok_or(StoreError::Conflict(conflict));
            }
            Err(e) => {
                release_holds(&pending).await;
                return Err(e);
            }
            Ok(receipt) => return Ok(receipt),
        }
    }
}

/// The event of the same request under the same Idempotency-Key, written by a node that died
/// before it stored its response (this call took its claim over): the call is not billed again.
async fn billed_before(pending: &Pending) -> Result<Option<Receipt>, StoreError> {
    let Some(sent) = &pending.idempotency else {
        return Ok(None);
    };
    let event = pending
        .access
        .store()
        .event_by_idempotency_key(&pending.key.tenant_id, &sent.key)
        .await?;
    Ok(event
        .filter(|e| e.request_fingerprint.as_deref() == Some(sent.fingerprint.as_str()))
        .map(|e| Receipt::from(&e)))
}

async fn release_holds(pending: &Pending) {
    if pending.holds.is_empty() {
        return;
    }
    if let Err(e) = pending.access.store().release(&pending.request_id).await {
        tracing::warn!("releasing the hold of {} failed: {e}", pending.request_id);
    }
}

async fn write_event(pending: &Pending, units: Units) -> Result<Receipt, StoreError> {
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
        idempotency_key: pending.idempotency.as_ref().map(|i| i.key.clone()),
        request_fingerprint: pending.idempotency.as_ref().map(|i| i.fingerprint.clone()),
    };
    let recorded = pending.access.store().record(event, &pending.holds).await?;
    let counted = units.input_tokens + units.output_tokens - pending.counted_tokens;
    pending.access.add_tokens(&pending.key, counted).await;
    Ok(Receipt {
        request_id: recorded.request_id,
        units,
        cost_pico: recorded.cost_pico,
        price_version: recorded.price_version,
    })
}

impl Drop for Bill {
    fn drop(&mut self) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("a bill was dropped outside the runtime; its hold expires on its own");
            return;
        };
        runtime.spawn(async move {
            let request_id = pending.request_id.clone();
            let access = Arc::clone(&pending.access);
            let claim = pending.claim.take();
            match pending.bill_on_drop {
                Some(units) => match record(pending, units).await {
                    // What the client was sent is what a retry gets.
                    Ok(receipt) => {
                        if let Some(mut claim) = claim {
                            let sent = std::mem::take(&mut claim.transcript);
                            let content_type = claim.content_type;
                            let settled = Settled {
                                receipt,
                                claim: Some((access, claim)),
                            };
                            settled.keep(content_type, sent).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!("billing the interrupted stream {request_id} failed: {e}");
                        if let Some(claim) = claim {
                            claim.release(access.store()).await;
                        }
                    }
                },
                None => {
                    release_holds(&pending).await;
                    access
                        .add_tokens(&pending.key, -pending.counted_tokens)
                        .await;
                    if let Some(claim) = claim {
                        claim.release(access.store()).await;
                    }
                }
            }
        });
    }
}
