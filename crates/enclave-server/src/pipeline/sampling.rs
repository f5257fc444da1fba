//! Sampling fields as a request carries them, checked against the family's documented bounds
//! before anything runs, then fitted to the model's context once the prompt is tokenized.

use enclave_engine::SamplingParams;

use crate::error::ApiError;

/// Sampling fields as a request carries them, before validation.
#[derive(Debug, Default, Clone)]
pub struct SamplingInput {
    pub temperature: Option<f64>,
    pub k: Option<i64>,
    pub p: Option<f64>,
    pub seed: Option<u64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub max_tokens: Option<i64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

/// Each API family's documented bounds and defaults.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub temperature_max: f64,
    pub penalty_min: f64,
    pub penalty_max: f64,
    pub default_temperature: f64,
    pub default_p: f64,
    pub max_stops: usize,
}

pub const COHERE_BOUNDS: Bounds = Bounds {
    temperature_max: 5.0,
    penalty_min: 0.0,
    penalty_max: 1.0,
    default_temperature: 0.3,
    default_p: 0.75,
    max_stops: 5,
};

pub const OPENAI_BOUNDS: Bounds = Bounds {
    temperature_max: 2.0,
    penalty_min: -2.0,
    penalty_max: 2.0,
    default_temperature: 1.0,
    default_p: 1.0,
    max_stops: 4,
};

/// Longest stop sequence accepted, in bytes.
const MAX_STOP_LEN: usize = 256;

fn in_range(name: &str, value: f64, min: f64, max: f64) -> Result<f64, ApiError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "{name} must be between {min} and {max}, got {value}"
        )))
    }
}

/// Sampling that passed its bounds; `max_tokens` is checked against the context later.
#[derive(Debug, Clone)]
pub struct CheckedSampling {
    /// `None`: as many as the context leaves.
    pub max_tokens: Option<u32>,
    params: SamplingParams,
}

impl SamplingInput {
    pub fn check(self, bounds: Bounds) -> Result<CheckedSampling, ApiError> {
        let max_tokens = match self.max_tokens {
            None => None,
            Some(n) if n < 1 => {
                return Err(ApiError::invalid(format!(
                    "max_tokens must be at least 1, got {n}"
                )))
            }
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let temperature = in_range(
            "temperature",
            self.temperature.unwrap_or(bounds.default_temperature),
            0.0,
            bounds.temperature_max,
        )?;
        let top_p = in_range("p (top_p)", self.p.unwrap_or(bounds.default_p), 0.0, 1.0)?;
        let top_k = match self.k.unwrap_or(0) {
            k @ 0..=500 => k as u32,
            k => {
                return Err(ApiError::invalid(format!(
                    "k (top_k) must be between 0 and 500, got {k}"
                )))
            }
        };
        let penalty = |name: &str, v: Option<f64>| {
            in_range(
                name,
                v.unwrap_or(0.0),
                bounds.penalty_min,
                bounds.penalty_max,
            )
        };
        let frequency_penalty = penalty("frequency_penalty", self.frequency_penalty)?;
        let presence_penalty = penalty("presence_penalty", self.presence_penalty)?;
        if self.stop.len() > bounds.max_stops {
            return Err(ApiError::invalid(format!(
                "at most {} stop sequences are allowed, got {}",
                bounds.max_stops,
                self.stop.len()
            )));
        }
        if let Some(bad) = self
            .stop
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
        {
            return Err(ApiError::invalid(format!(
                "stop sequences must be 1 to {MAX_STOP_LEN} bytes long, got {bad:?}"
            )));
        }
        Ok(CheckedSampling {
            max_tokens,
            params: SamplingParams {
                temperature: temperature as f32,
                top_k,
                top_p: top_p as f32,
                seed: self.seed,
                frequency_penalty: frequency_penalty as f32,
                presence_penalty: presence_penalty as f32,
                max_tokens: 0,
                stop: self.stop,
                ignore_eos: self.ignore_eos,
                constraint: None,
            },
        })
    }
}

impl CheckedSampling {
    /// The engine's parameters for a prompt of `prompt_len` tokens in a context of `context`.
    pub fn fit(self, prompt_len: u32, context: u32) -> Result<SamplingParams, ApiError> {
        if prompt_len >= context {
            return Err(ApiError::bad_request(format!(
                "too many tokens: the prompt has {prompt_len} tokens, the model's context is {context}"
            )));
        }
        let remaining = context - prompt_len;
        let max_tokens = match self.max_tokens {
            None => remaining,
            Some(n) if n > remaining => {
                return Err(ApiError::bad_request(format!(
                    "too many tokens: max_tokens {n} plus the prompt's {prompt_len} tokens exceeds the model's context of {context} tokens (at most {remaining} left)"
                )))
            }
            Some(n) => n,
        };
        Ok(SamplingParams {
            max_tokens,
            ..self.params
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_before_the_context() {
        let input = SamplingInput {
            temperature: Some(2.5),
            ..SamplingInput::default()
        };
        assert!(input.clone().check(COHERE_BOUNDS).is_ok());
        assert!(input.check(OPENAI_BOUNDS).is_err());
        let checked = SamplingInput {
            max_tokens: Some(100),
            ..SamplingInput::default()
        }
        .check(COHERE_BOUNDS)
        .expect("valid");
        assert_eq!(checked.clone().fit(10, 200).expect("fits").max_tokens, 100);
        assert!(checked.fit(150, 200).is_err());
    }
}
