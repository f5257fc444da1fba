//! Policies on the model's actions: which tools may be called, which need a person's approval,
//! and deterministic checks of a call's arguments (ceilings, patterns, allowed values).

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// A check of one argument of one tool, addressed by a dotted path into the arguments
/// (`amount`, `recipient.iban`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentRule {
    pub tool: String,
    pub path: String,
    pub max: Option<f64>,
    pub min: Option<f64>,
    /// The whole value (as text) must match.
    pub pattern: Option<String>,
    pub one_of: Option<Vec<Value>>,
    #[serde(skip)]
    compiled: Option<Regex>,
}

/// What a policy says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallVerdict {
    Allow,
    /// Never returned as a call to execute.
    Deny(String),
    /// Returned to the caller as waiting for a person's approval, not as a call to execute.
    Approval(String),
}

#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    /// When set, only these tools may be called.
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
    pub approval: Vec<String>,
    pub arguments: Vec<ArgumentRule>,
}

impl ToolPolicy {
    pub fn new(
        allow: Option<Vec<String>>,
        deny: Vec<String>,
        approval: Vec<String>,
        mut arguments: Vec<ArgumentRule>,
    ) -> Result<Self, String> {
        for rule in &mut arguments {
            if let Some(pattern) = &rule.pattern {
                let anchored = format!("^(?:{pattern})$");
                rule.compiled = Some(Regex::new(&anchored).map_err(|e| {
                    format!(
                        "tools.argument '{}.{}': bad pattern: {e}",
                        rule.tool, rule.path
                    )
                })?);
            }
            if rule.path.is_empty() {
                return Err(format!("tools.argument for '{}' needs a path", rule.tool));
            }
        }
        Ok(Self {
            allow,
            deny,
            approval,
            arguments,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_none()
            && self.deny.is_empty()
            && self.approval.is_empty()
            && self.arguments.is_empty()
    }

    /// The verdict on a call of `tool` with `arguments` (a JSON object).
    pub fn check(&self, tool: &str, arguments: &Value) -> CallVerdict {
        if self.deny.iter().any(|t| t == tool) {
            return CallVerdict::Deny(format!("tool '{tool}' is denied by policy"));
        }
        if let Some(allow) = &self.allow {
            if !allow.iter().any(|t| t == tool) {
                return CallVerdict::Deny(format!(
                    "tool '{tool}' is not in the policy's allowed tools"
                ));
            }
        }
        for rule in self.arguments.iter().filter(|r| r.tool == tool) {
            if let Some(reason) = rule.breaks(arguments) {
                return CallVerdict::Deny(reason);
            }
        }
        if self.approval.iter().any(|t| t == tool) {
            return CallVerdict::Approval(format!("tool '{tool}' needs a person's approval"));
        }
        CallVerdict::Allow
    }
}

impl ArgumentRule {
    /// Why `arguments` break this rule, if they do. A missing value breaks a rule that sets a
    /// bound: an unchecked call never passes for a checked one.
    fn breaks(&self, arguments: &Value) -> Option<String> {
        let name = format!("{}.{}", self.tool, self.path);
        let value = self
            .path
            .split('.')
            .try_fold(arguments, |v, key| v.get(key));
        let Some(value) = value else {
            return Some(format!(
                "argument '{name}' is missing, and the policy checks it"
            ));
        };
        if self.max.is_some() || self.min.is_some() {
            let Some(n) = value
                .as_f64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            else {
                return Some(format!("argument '{name}' must be a number"));
            };
            if !n.is_finite() {
                return Some(format!("argument '{name}' must be a finite number"));
            }
            if self.max.is_some_and(|max| n > max) {
                return Some(format!("argument '{name}' is above the policy's ceiling"));
            }
            if self.min.is_some_and(|min| n < min) {
                return Some(format!("argument '{name}' is below the policy's floor"));
            }
        }
        if let Some(regex) = &self.compiled {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !regex.is_match(&text) {
                return Some(format!(
                    "argument '{name}' does not match the policy's pattern"
                ));
            }
        }
        if let Some(allowed) = &self.one_of {
            if !allowed.contains(value) {
                return Some(format!(
                    "argument '{name}' is not one of the policy's allowed values"
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn denies_approves_and_checks_arguments() {
        let rule: ArgumentRule =
            serde_json::from_value(json!({"tool": "pay", "path": "amount", "max": 100}))
                .expect("rule");
        let recipients: ArgumentRule =
            serde_json::from_value(json!({"tool": "pay", "path": "to.name", "one_of": ["ACME"]}))
                .expect("rule");
        let policy = ToolPolicy::new(
            None,
            vec!["rm".into()],
            vec!["pay".into()],
            vec![rule, recipients],
        )
        .expect("policy");
        assert!(matches!(
            policy.check("rm", &json!({})),
            CallVerdict::Deny(_)
        ));
        assert!(matches!(
            policy.check("pay", &json!({"amount": 500, "to": {"name": "ACME"}})),
            CallVerdict::Deny(_)
        ));
        assert!(matches!(
            policy.check("pay", &json!({"amount": 50, "to": {"name": "Eve"}})),
            CallVerdict::Deny(_)
        ));
        assert!(matches!(
            policy.check("pay", &json!({"amount": 50, "to": {"name": "ACME"}})),
            CallVerdict::Approval(_)
        ));
        assert_eq!(policy.check("search", &json!({})), CallVerdict::Allow);
        // "NaN" compares false both ways: it must not pass a ceiling.
        assert!(matches!(
            policy.check("pay", &json!({"amount": "NaN", "to": {"name": "ACME"}})),
            CallVerdict::Deny(_)
        ));
    }
}
