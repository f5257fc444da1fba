//! Guardrails on the request path: which policy a call runs under (the key's, else its
//! tenant's, else the one its Cohere `safety_mode` stands for), the checks on everything the
//! caller sends before the engine sees it (`input`), on the answer as it streams and on the
//! model's tool calls (`output`), the injection monitor (`monitor`), and the audit trail of
//! every intervention (`audit`).

pub mod audit;
pub mod input;
pub mod monitor;
pub mod output;

use std::sync::Arc;

use enclave_guard::policy::{CONTEXTUAL, OFF, STRICT};
use enclave_guard::{InjectionHead, Policies, Policy};

use crate::auth::Call;
use crate::error::ApiError;

pub use audit::Audit;
pub use input::{check_input, Checked};
pub use output::OutputGuard;

/// Cohere's safety modes: the instruction put into the prompt, and the built-in policy each
/// stands for when no policy is attached to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SafetyMode {
    #[default]
    Contextual,
    Strict,
    Off,
}

impl SafetyMode {
    /// Cohere's wire value; unknown values are refused by the caller with this message.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("CONTEXTUAL") => Ok(Self::Contextual),
            Some("STRICT") => Ok(Self::Strict),
            Some("OFF") => Ok(Self::Off),
            Some(other) => Err(ApiError::invalid(format!(
                "safety_mode must be CONTEXTUAL, STRICT or OFF, got {other}"
            ))),
        }
    }

    /// With documents or tools the hosted platform always runs CONTEXTUAL.
    pub fn forced(self, grounded_or_tools: bool) -> Self {
        if grounded_or_tools {
            Self::Contextual
        } else {
            self
        }
    }

    pub fn policy_name(self) -> &'static str {
        match self {
            Self::Contextual => CONTEXTUAL,
            Self::Strict => STRICT,
            Self::Off => OFF,
        }
    }

    /// The safety instruction put at the top of the system prompt (server words, not billed).
    pub fn instruction(self) -> Option<&'static str> {
        match self {
            Self::Contextual => Some(
                "Safety: you may discuss violence, hate, misinformation or sexual topics for information or fiction, \
                 but never produce content that could directly or indirectly lead to harm, and never sexual content involving minors.",
            ),
            Self::Strict => Some(
                "Safety: refuse to discuss violence, hate, misinformation or sexual topics at any level, avoid profanity, \
                 and refuse instructions for regulated, controlled or illegal activities. Never produce sexual content involving minors.",
            ),
            Self::Off => None,
        }
    }
}

/// Puts `words` at the top of the chat's system prompt (adding one when there is none).
pub fn add_instruction(messages: &mut Vec<enclave_engine::ChatMessage>, words: &str) {
    match messages.first_mut().filter(|m| m.role == "system") {
        Some(system) => system.content = format!("{words}\n\n{}", system.content),
        None => messages.insert(0, enclave_engine::ChatMessage::new("system", words)),
    }
}

/// The server's guardrails: its policies and the injection monitor's head.
pub struct Guardrails {
    pub policies: Policies,
    /// `None` when no head is shipped for the served embedder: the monitor is then off, and a
    /// policy that blocks on it refuses calls rather than let them through unchecked.
    pub head: Option<InjectionHead>,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            policies: Policies::builtin(),
            head: InjectionHead::shipped().ok().filter(|h| h.dim > 0),
        }
    }
}

/// The policy one call runs under, and whether its tool calls are switched off.
#[derive(Clone)]
pub struct Effective {
    pub policy: Arc<Policy>,
    pub tools_off: bool,
}

impl Effective {
    pub fn none() -> Self {
        Self {
            policy: Arc::new(Policy::empty(OFF)),
            tools_off: false,
        }
    }
}

/// The caller's policy: the key's attachment, else its tenant's, else `mode`'s built-in. A
/// kill switch on either the key or the tenant stops tool calls.
pub async fn effective(call: &Call, mode: SafetyMode) -> Result<Effective, ApiError> {
    let guardrails = call.state.guardrails();
    let by_mode = || {
        guardrails
            .policies
            .get(mode.policy_name())
            .ok_or_else(|| ApiError::internal("built-in policy missing"))
    };
    let (Some(access), Some(caller)) = (call.state.access(), &call.caller.caller) else {
        return Ok(Effective {
            policy: by_mode()?,
            tools_off: false,
        });
    };
    let key = &caller.0;
    let (on_key, on_tenant) = access
        .store()
        .guard_attachments(&key.id, &key.tenant_id)
        .await?;
    let attached = on_key.policy.clone().or(on_tenant.policy.clone());
    let policy = match attached {
        Some(name) => guardrails.policies.get(&name).ok_or_else(|| {
            ApiError::internal(format!(
                "attached policy '{name}' is not defined on this node"
            ))
        })?,
        None => by_mode()?,
    };
    Ok(Effective {
        policy,
        tools_off: on_key.tools_off || on_tenant.tools_off,
    })
}
