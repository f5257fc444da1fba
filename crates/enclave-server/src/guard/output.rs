//! Checks on what the model produces: its text, through the hold-back scanner (so no
//! character of a blocked or redacted value is ever sent), the placeholders of redacted input
//! values put back where the policy allows, and its tool calls against the policy's tool rules
//! and the kill switch. A stopped answer ends with the `Blocked` finish reason.

use std::sync::Arc;

use enclave_engine::tools::ToolCall;
use enclave_guard::policy::{Action, Direction};
use enclave_guard::{CallVerdict, OutputScanner, Step};

use super::{Audit, Checked, Effective};
use crate::state::AppState;

/// Why an answer was stopped (sent to the caller with the finish reason).
#[derive(Debug, Clone)]
pub struct Blocked(pub String);

pub struct OutputGuard {
    scanner: Option<OutputScanner>,
    effective: Effective,
    pub audit: Audit,
    state: AppState,
}

impl OutputGuard {
    /// The output side of a call's policy; `None` when it checks nothing on the way out.
    pub fn new(effective: Effective, checked: Checked, state: AppState) -> Option<Self> {
        let policy = &effective.policy;
        let scans = policy.checks(Direction::Output) || checked.vault.is_some();
        if !scans && policy.tools.is_empty() && !effective.tools_off {
            return None;
        }
        let scanner = scans.then(|| OutputScanner::new(Arc::clone(policy), checked.vault));
        Some(Self {
            scanner,
            effective,
            audit: checked.audit,
            state,
        })
    }

    /// The part of the answer that may be sent now.
    pub fn push(&mut self, text: &str) -> Result<String, Blocked> {
        match &mut self.scanner {
            Some(scanner) => {
                let step = scanner.push(text);
                self.take(step)
            }
            None => Ok(text.to_string()),
        }
    }

    /// The rest of the answer, at its end.
    pub fn finish(&mut self) -> Result<String, Blocked> {
        match &mut self.scanner {
            Some(scanner) => {
                let step = scanner.finish();
                self.take(step)
            }
            None => Ok(String::new()),
        }
    }

    /// A whole answer: what may be returned of it, and why it stopped if it did.
    pub fn whole(&mut self, text: &str) -> (String, Option<Blocked>) {
        let mut out = match self.push(text) {
            Ok(part) => part,
            Err(blocked) => return (String::new(), Some(blocked)),
        };
        match self.finish() {
            Ok(rest) => out.push_str(&rest),
            Err(blocked) => return (out, Some(blocked)),
        }
        (out, None)
    }

    fn take(&mut self, step: Step) -> Result<String, Blocked> {
        match step {
            Step::Text(text, decided) => {
                for d in decided.iter().filter(|d| d.action != Action::Allow) {
                    self.audit.add_chars(Direction::Output, "answer", d);
                }
                Ok(text)
            }
            Step::Blocked(d) => {
                self.audit.add_chars(Direction::Output, "answer", &d);
                Err(Blocked(format!(
                    "the answer was stopped by guardrail policy '{}': {} (request {})",
                    self.effective.policy.name,
                    d.finding.kind.as_str(),
                    self.audit.request_id()
                )))
            }
        }
    }

    /// Whether `call` may be returned as a call to execute: the kill switch, the policy's tool
    /// rules, and its output checks on the arguments (a blocked value stops the call; a
    /// redacted one is replaced inside the arguments' JSON).
    pub fn call(&mut self, call: &mut ToolCall) -> Result<(), Blocked> {
        let policy = &self.effective.policy.name;
        if self.effective.tools_off {
            self.audit.add_call(&call.name, "kill_switch", "block");
            return Err(Blocked(format!(
                "tool calls are switched off for this key or tenant; '{}' was not called",
                call.name
            )));
        }
        let source = format!("tool_call:{}", call.name);
        let found = self
            .effective
            .policy
            .scan(&call.arguments, Direction::Output);
        self.audit
            .add_all(Direction::Output, &source, &found, &call.arguments);
        if let Some(d) = found.iter().find(|d| d.action == Action::Block) {
            return Err(Blocked(format!(
                "guardrail policy '{policy}': the arguments of '{}' carry a {}",
                call.name,
                d.finding.kind.as_str()
            )));
        }
        let mut redacted = call.arguments.clone();
        for d in found.iter().rev().filter(|d| d.action == Action::Redact) {
            let placeholder = enclave_guard::redact::output_placeholder(d.finding.kind);
            redacted.replace_range(d.finding.start..d.finding.end, &placeholder);
        }
        if redacted != call.arguments {
            if serde_json::from_str::<serde_json::Value>(&redacted).is_err() {
                return Err(Blocked(format!(
                    "guardrail policy '{policy}': the arguments of '{}' could not be redacted",
                    call.name
                )));
            }
            call.arguments = redacted;
        }
        let arguments = serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
        match self.effective.policy.tools.check(&call.name, &arguments) {
            CallVerdict::Allow => Ok(()),
            CallVerdict::Deny(reason) => {
                self.audit.add_call(&call.name, "tool_policy", "block");
                Err(Blocked(format!("guardrail policy '{policy}': {reason}")))
            }
            CallVerdict::Approval(reason) => {
                self.audit.add_call(&call.name, "tool_policy", "approval");
                Err(Blocked(format!(
                    "guardrail policy '{policy}': {reason}; the call is pending approval and was not returned for execution (request {})",
                    self.audit.request_id()
                )))
            }
        }
    }

    /// Records what was found; run when the answer ends.
    pub async fn record(&mut self) {
        self.audit.record(&self.state).await;
    }
}
