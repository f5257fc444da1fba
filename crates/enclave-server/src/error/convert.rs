//! Every error source's conversion into [`ApiError`], in one place: the engine, the encoders,
//! the store, budgets, rate limits and key checks. Handlers use `?` and never pick statuses
//! for these themselves.

use axum::http::StatusCode;
use enclave_engine::encoder::EncoderError;
use enclave_engine::GeneratorError;
use enclave_store::money::pico_to_usd;
use enclave_store::reports::rfc3339;
use enclave_store::{now_ms, BudgetExceeded, RateLimited, StoreError};

use super::ApiError;
use crate::access::Refusal;

/// 429 for an engine whose queue is full: the client may retry in a second.
fn busy(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, err.to_string()).retry_after(1)
}

impl From<GeneratorError> for ApiError {
    fn from(err: GeneratorError) -> Self {
        match err {
            GeneratorError::QueueFull(_) => busy(err),
            GeneratorError::Stopped => ApiError::unavailable(err.to_string()),
            GeneratorError::ContextExceeded { .. }
            | GeneratorError::EmptyPrompt
            | GeneratorError::InvalidToken(_)
            | GeneratorError::Template(_) => ApiError::bad_request(err.to_string()),
            GeneratorError::Grammar(_) => ApiError::invalid(err),
        }
    }
}

impl From<EncoderError> for ApiError {
    fn from(err: EncoderError) -> Self {
        match err {
            EncoderError::Busy(_) => busy(err),
            EncoderError::Stopped => ApiError::unavailable(err.to_string()),
            EncoderError::EmptyInput { .. }
            | EncoderError::TooLong { .. }
            | EncoderError::InvalidToken(_) => ApiError::invalid(err),
            EncoderError::Engine(_) => ApiError::internal(err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            StoreError::Conflict(m) => ApiError::conflict(m),
            other => {
                tracing::error!("store error: {other}");
                ApiError::unavailable(
                    "the accounts database is unavailable; nothing was billed, try again",
                )
            }
        }
    }
}

impl From<BudgetExceeded> for ApiError {
    fn from(exceeded: BudgetExceeded) -> Self {
        let resets = match exceeded.resets_ms {
            Some(ms) => format!("; it resets at {}", rfc3339(ms)),
            None => "; it does not reset".to_string(),
        };
        ApiError::new(
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
}

/// The 429 for a rate limit, with `Retry-After` until the window resets.
impl From<RateLimited> for ApiError {
    fn from(limited: RateLimited) -> Self {
        let (what, limit, resets_ms) = match limited {
            RateLimited::Requests { limit, resets_ms } => ("requests", limit, resets_ms),
            RateLimited::Tokens { limit, resets_ms } => ("tokens", limit, resets_ms),
        };
        let wait_s = ((resets_ms - now_ms()).max(0) as u64).div_ceil(1000).max(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit exceeded: this key allows {limit} {what} per minute; it resets at {} (in {wait_s} s)",
                rfc3339(resets_ms)
            ),
        )
        .retry_after(wait_s)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unknown => ApiError::unauthorized(),
            Refusal::Revoked => ApiError::new(StatusCode::UNAUTHORIZED, "this API key was revoked"),
            Refusal::Expired => ApiError::new(StatusCode::UNAUTHORIZED, "this API key has expired"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let err = ApiError::from(GeneratorError::QueueFull(4));
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after, Some(1));
    }

    #[test]
    fn internal_detail_never_reaches_the_client() {
        let err = ApiError::from(EncoderError::Engine("ggml_abort at /src/x.c:12".into()));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message, "internal error");
    }
}
