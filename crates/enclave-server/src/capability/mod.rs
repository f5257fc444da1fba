//! The capabilities behind the routes, each with the same shape: admit the call for the most
//! it can cost (or replay its stored response), run it, settle what it consumed, render.
//! Generation (chat, generate) runs through [`crate::pipeline`] on the same [`Bill`].

pub mod classify;
pub mod embed;
pub mod rerank;
pub mod summarize;
pub mod vectors;

use std::future::Future;

use axum::response::Response;
use enclave_store::{Capability, Units};
use serde_json::Value;

use crate::auth::Call;
use crate::billing::{Admission, Bill};
use crate::error::ApiError;

/// Admits a call of `capability` on `model` that may consume up to `max`, runs `work` (which
/// says what it consumed), settles that, and answers with `render`'s JSON. A call that fails
/// bills nothing; a retry under a finished call's Idempotency-Key gets its stored response.
pub async fn run_billed<T, W>(
    call: &Call,
    capability: Capability,
    model: &str,
    max: Units,
    work: W,
    render: impl FnOnce(T, &Units) -> Value,
) -> Result<Response, ApiError>
where
    W: Future<Output = Result<(T, Units), ApiError>>,
{
    let bill = match Bill::admit(call, capability, model, max).await? {
        Admission::Replay(response) => return Ok(response),
        Admission::Run(bill) => bill,
    };
    let (output, units) = work.await?;
    let settled = bill.settle(units).await?;
    let body = render(output, &units);
    Ok(settled.json(&body).await)
}
