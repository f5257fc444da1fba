//! What a call is billed for and what it costs. Money is integer pico-dollars (1e-12 USD), so a
//! price of $0.0375 per million tokens is exactly 37,500 pico-dollars per token.

use serde::{Deserialize, Serialize};

use crate::StoreError;

pub type Pico = i64;

pub const PICO_PER_USD: f64 = 1e12;

pub fn pico_to_usd(pico: Pico) -> f64 {
    pico as f64 / PICO_PER_USD
}

/// Converts dollars to pico-dollars; `None` for negative, non-finite or absurd amounts.
pub fn usd_to_pico(usd: f64) -> Option<Pico> {
    let pico = (usd * PICO_PER_USD).round();
    (usd.is_finite() && usd >= 0.0 && pico < 9.0e18).then_some(pico as Pico)
}

/// The billable capabilities, each with its own meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Chat,
    Generate,
    Embed,
    Rerank,
    Classify,
    Summarize,
    /// Collection searches and ingestion's retrieval side (search units).
    Search,
    /// Guardrail checks (`/v1/guard/check`, `/v1/moderations`): one classification per
    /// 1,000 characters started.
    Guard,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Self::Chat,
        Self::Generate,
        Self::Embed,
        Self::Rerank,
        Self::Classify,
        Self::Summarize,
        Self::Search,
        Self::Guard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Generate => "generate",
            Self::Embed => "embed",
            Self::Rerank => "rerank",
            Self::Classify => "classify",
            Self::Summarize => "summarize",
            Self::Search => "search",
            Self::Guard => "guard",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Base models ship with Enclave; custom ones are trained on a tenant's data and priced apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Base,
    Custom,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Custom => "custom",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "base" => Some(Self::Base),
            "custom" => Some(Self::Custom),
            _ => None,
        }
    }
}

/// The meters of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Units {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub search_units: i64,
    pub classifications: i64,
}

impl Units {
    /// Token meters (chat, generate, summarize; embed uses input only).
    pub fn tokens(input_tokens: i64, output_tokens: i64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            ..Self::default()
        }
    }

    pub fn search_units(search_units: i64) -> Self {
        Self {
            search_units,
            ..Self::default()
        }
    }

    pub fn classifications(classifications: i64) -> Self {
        Self {
            classifications,
            ..Self::default()
        }
    }
}

/// Pico-dollars per unit of each meter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPrices {
    pub input_tokens: Pico,
    pub output_tokens: Pico,
    pub search_units: Pico,
    pub classifications: Pico,
}

impl UnitPrices {
    /// The exact cost of `units`; an error rather than a wrapped number on overflow.
    pub fn cost(&self, units: &Units) -> Result<Pico, StoreError> {
        let parts = [
            (units.input_tokens, self.input_tokens),
            (units.output_tokens, self.output_tokens),
            (units.search_units, self.search_units),
            (units.classifications, self.classifications),
        ];
        parts
            .iter()
            .try_fold(0i64, |sum, (n, price)| {
                n.checked_mul(*price).and_then(|c| sum.checked_add(c))
            })
            .ok_or_else(|| StoreError::Invalid("cost overflows".into()))
    }
}

/// The unit names used in the price book.
pub const UNITS: [&str; 4] = [
    "input_tokens",
    "output_tokens",
    "search_units",
    "classifications",
];

impl UnitPrices {
    pub fn set(&mut self, unit: &str, pico: Pico) -> bool {
        let slot = match unit {
            "input_tokens" => &mut self.input_tokens,
            "output_tokens" => &mut self.output_tokens,
            "search_units" => &mut self.search_units,
            "classifications" => &mut self.classifications,
            _ => return false,
        };
        *slot = pico;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_in_pico_dollars() {
        let prices = UnitPrices {
            input_tokens: 37_500,
            output_tokens: 150_000,
            ..Default::default()
        };
        let units = Units {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..Default::default()
        };
        assert_eq!(prices.cost(&units).expect("cost"), 187_500_000_000);
        assert_eq!(pico_to_usd(187_500_000_000), 0.1875);
        assert_eq!(usd_to_pico(0.0375 / 1e6), Some(37_500));
        assert_eq!(usd_to_pico(-1.0), None);
        let huge = Units {
            input_tokens: i64::MAX,
            ..Default::default()
        };
        assert!(prices.cost(&huge).is_err());
    }
}
