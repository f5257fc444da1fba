//! What a settled call was billed, and the response headers that tell the client.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use enclave_store::money::pico_to_usd;
use enclave_store::{RecordedEvent, Units};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-enclave-request-id");
pub const BILLED_UNITS: HeaderName = HeaderName::from_static("x-enclave-billed-units");
pub const COST_USD: HeaderName = HeaderName::from_static("x-enclave-cost-usd");
pub const PRICE_VERSION: HeaderName = HeaderName::from_static("x-enclave-price-version");
/// Set on a response replayed for a repeated `Idempotency-Key`.
pub const REPLAYED: HeaderName = HeaderName::from_static("x-enclave-idempotent-replay");

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

    /// The billing headers (none without accounts).
    pub fn headers(&self) -> Vec<(HeaderName, String)> {
        if self.request_id.is_empty() {
            return Vec::new();
        }
        vec![
            (REQUEST_ID, self.request_id.clone()),
            (BILLED_UNITS, self.units_header()),
            (COST_USD, format!("{:.12}", pico_to_usd(self.cost_pico))),
            (PRICE_VERSION, self.price_version.to_string()),
        ]
    }

    /// Adds the billing headers to `response`.
    pub fn apply(&self, response: &mut Response) {
        let headers = response.headers_mut();
        for (name, value) in self.headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
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
