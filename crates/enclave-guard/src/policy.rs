//! Policies: named sets of checks, each with an action and the direction it applies to, the
//! injection monitor's threshold, size limits, whether redacted values come back in the
//! answer, and which tool calls may run. Built-in policies stand for Cohere's safety modes;
//! more are read from a TOML file at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::detect::{CustomDetector, Detectors};
use crate::finding::{Finding, Kind};
use crate::tools::{ArgumentRule, ToolPolicy};

/// What a check does when it finds something; ordered from mildest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    /// Recorded in the audit trail; the text goes on unchanged.
    Flag,
    /// The value is replaced by a typed placeholder.
    Redact,
    /// The request (input) or the answer (output) is stopped.
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// Which text a check reads: the caller's (and its documents' and tools' results), or the
/// model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Input,
    Output,
    #[default]
    Both,
}

impl Direction {
    pub fn covers(self, other: Direction) -> bool {
        self == Direction::Both || self == other
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
            Direction::Both => "both",
        }
    }

    pub fn parse(name: &str) -> Option<Direction> {
        match name {
            "input" => Some(Direction::Input),
            "output" => Some(Direction::Output),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file: {0}")]
    Parse(String),
    #[error("policy '{policy}': {reason}")]
    Invalid { policy: String, reason: String },
}

/// One check of a policy: built-in value types, or a custom pattern or term list.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kinds: Vec<Kind>,
    pub custom: Option<CustomDetector>,
    pub action: Action,
    pub direction: Direction,
}

/// A finding with what the policy does about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub finding: Finding,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub rules: Vec<Rule>,
    /// The injection monitor on input: a score at or above `threshold` takes `action`.
    pub injection: Option<(f32, Action)>,
    /// Longest input text, in characters, before the `Size` finding's action applies.
    pub max_input_chars: Option<(usize, Action)>,
    /// Whether values redacted from the input are put back into the answer for the caller.
    pub restore: bool,
    pub tools: ToolPolicy,
}

impl Policy {
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rules: Vec::new(),
            injection: None,
            max_input_chars: None,
            restore: false,
            tools: ToolPolicy::default(),
        }
    }

    /// Whether any check reads text in `direction` (so the scan can be skipped).
    pub fn checks(&self, direction: Direction) -> bool {
        self.rules.iter().any(|r| r.direction.covers(direction))
            || (direction == Direction::Input
                && (self.injection.is_some() || self.max_input_chars.is_some()))
    }

    pub fn wants_monitor(&self, direction: Direction) -> bool {
        direction == Direction::Input && self.injection.is_some()
    }

    /// The deterministic findings of `text` in `direction` and what to do about each; values
    /// no rule names are left out. Byte offsets.
    pub fn scan(&self, text: &str, direction: Direction) -> Vec<Decided> {
        let rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.direction.covers(direction))
            .collect();
        let mut out = Vec::new();
        if rules.iter().any(|r| !r.kinds.is_empty()) {
            // Filtered by the policy's kinds before overlaps are resolved.
            for finding in Detectors.scan_raw(text) {
                let action = rules
                    .iter()
                    .filter(|r| r.kinds.contains(&finding.kind))
                    .map(|r| r.action)
                    .max();
                if let Some(action) = action.filter(|a| *a != Action::Allow) {
                    out.push(Decided { finding, action });
                }
            }
        }
        for rule in rules.iter().filter(|r| r.action != Action::Allow) {
            if let Some(custom) = &rule.custom {
                let mut found = Vec::new();
                custom.scan(text, &mut found);
                out.extend(found.into_iter().map(|finding| Decided {
                    finding,
                    action: rule.action,
                }));
            }
        }
        let mut out = merge_overlaps(out);
        if out.len() > MAX_FINDINGS {
            // Past the bound the rest of the text is one finding with the strictest action
            // found, so nothing the policy acts on slips through uncounted.
            let action = strictest(&out);
            let from = out[MAX_FINDINGS].finding.start;
            out.truncate(MAX_FINDINGS);
            let mut rest = Finding::new("too_many_values", Kind::Size, from, text.len());
            rest.score = 1.0;
            out.push(Decided {
                finding: rest,
                action,
            });
        }
        if direction == Direction::Input {
            if let Some((max, action)) = self.max_input_chars {
                let chars = text.chars().count();
                if chars > max {
                    let finding = Finding::new("size", Kind::Size, 0, text.len());
                    out.push(Decided { finding, action });
                }
            }
        }
        out.sort_by_key(|d| d.finding.start);
        out
    }

    /// Whether any rule has its own patterns or terms (whose values may span anything).
    pub fn has_custom_detectors(&self) -> bool {
        self.rules.iter().any(|r| r.custom.is_some())
    }

    /// The longest literal a term list can match, so the stream holds back at least that much.
    pub fn longest_term(&self) -> usize {
        self.rules
            .iter()
            .filter_map(|r| r.custom.as_ref())
            .map(CustomDetector::longest_literal)
            .max()
            .unwrap_or(0)
    }

    /// The monitor's verdict on a score, when the policy runs it.
    pub fn judge_injection(&self, score: f32, start: usize, end: usize) -> Option<Decided> {
        let (threshold, action) = self.injection?;
        (score >= threshold && action != Action::Allow).then(|| {
            let mut finding = Finding::new("injection_monitor", Kind::Injection, start, end);
            finding.score = score;
            Decided { finding, action }
        })
    }
}

/// Most findings one text yields; the rest of the text becomes one finding (bounds the work
/// and the audit rows an attacker-sized text can cause).
pub const MAX_FINDINGS: usize = 1000;

/// Overlapping decisions become one over their union, with the strictest action (its finding's
/// kind named), so a redaction never leaves part of a value behind.
fn merge_overlaps(mut found: Vec<Decided>) -> Vec<Decided> {
    found.sort_by_key(|d| (d.finding.start, std::cmp::Reverse(d.finding.end)));
    let mut merged: Vec<Decided> = Vec::with_capacity(found.len());
    for d in found {
        match merged.last_mut() {
            Some(last) if last.finding.overlaps(&d.finding) => {
                let end = last.finding.end.max(d.finding.end);
                let rank = |x: &Decided| {
                    (
                        x.action,
                        x.finding.kind == Kind::Secret,
                        x.finding.end - x.finding.start,
                    )
                };
                if rank(&d) > rank(last) {
                    let start = last.finding.start;
                    *last = d;
                    last.finding.start = start;
                }
                last.finding.end = end;
            }
            _ => merged.push(d),
        }
    }
    merged
}

/// Decisions on `text` as the API and CLI report them: code-point offsets (converted in one
/// pass), detector, type, score and action.
pub fn findings_json(text: &str, decided: &[Decided]) -> Vec<serde_json::Value> {
    let bytes: Vec<usize> = decided
        .iter()
        .flat_map(|d| [d.finding.start, d.finding.end])
        .collect();
    let chars = crate::finding::char_offsets_all(text, &bytes);
    decided
        .iter()
        .zip(chars.chunks(2))
        .map(|(d, at)| {
            serde_json::json!({
                "detector": d.finding.detector,
                "type": d.finding.kind.as_str(),
                "start": at[0],
                "end": at[1],
                "score": d.finding.score,
                "action": d.action.as_str(),
            })
        })
        .collect()
}

/// The strictest action of a set of decisions.
pub fn strictest(decided: &[Decided]) -> Action {
    decided
        .iter()
        .map(|d| d.action)
        .max()
        .unwrap_or(Action::Allow)
}

/// Every policy a server knows, by name: the built-ins and those read at start.
#[derive(Debug, Clone)]
pub struct Policies {
    by_name: BTreeMap<String, Arc<Policy>>,
}

/// Built-in policy names; `contextual`, `strict` and `off` are Cohere's safety modes.
pub const CONTEXTUAL: &str = "contextual";
pub const STRICT: &str = "strict";
pub const OFF: &str = "off";

impl Default for Policies {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Policies {
    /// `off` checks nothing; `contextual` (the default) flags likely injections and keeps
    /// credentials out of answers; `strict` redacts personal data both ways, blocks
    /// credentials in requests and injections.
    pub fn builtin() -> Self {
        let mut by_name = BTreeMap::new();
        by_name.insert(OFF.to_string(), Arc::new(Policy::empty(OFF)));
        let mut contextual = Policy::empty(CONTEXTUAL);
        contextual.injection = Some((default_injection_threshold(), Action::Flag));
        contextual.rules.push(Rule {
            kinds: vec![Kind::Secret],
            custom: None,
            action: Action::Redact,
            direction: Direction::Output,
        });
        by_name.insert(CONTEXTUAL.to_string(), Arc::new(contextual));
        let mut strict = Policy::empty(STRICT);
        strict.injection = Some((default_injection_threshold(), Action::Block));
        strict.rules.push(Rule {
            kinds: Kind::PII
                .iter()
                .copied()
                .filter(|k| *k != Kind::Secret)
                .collect(),
            custom: None,
            action: Action::Redact,
            direction: Direction::Both,
        });
        strict.rules.push(Rule {
            kinds: vec![Kind::Secret],
            custom: None,
            action: Action::Block,
            direction: Direction::Both,
        });
        by_name.insert(STRICT.to_string(), Arc::new(strict));
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Policy>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_name.values()
    }

    /// The built-ins plus the policies of a TOML document (`[[policy]]` tables); a name used
    /// twice, or a built-in's name, is refused.
    pub fn with_toml(mut self, document: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(document).map_err(|e| PolicyError::Parse(e.to_string()))?;
        for raw in file.policy {
            let policy = raw.compile()?;
            if self.by_name.contains_key(&policy.name) {
                return Err(PolicyError::Invalid {
                    policy: policy.name,
                    reason: "a policy of this name is already defined".into(),
                });
            }
            self.by_name.insert(policy.name.clone(), Arc::new(policy));
        }
        Ok(self)
    }
}

/// The threshold the built-ins use: the shipped head's operating point, chosen by
/// cross-validation on the training split (docs/guardrails.md); 0.5 without a head.
pub fn default_injection_threshold() -> f32 {
    crate::InjectionHead::shipped().map_or(0.5, |h| h.threshold)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(default)]
    restore: bool,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    pattern: Vec<RawPattern>,
    #[serde(default)]
    terms: Vec<RawTerms>,
    injection: Option<RawInjection>,
    max_input_chars: Option<usize>,
    #[serde(default = "block")]
    size_action: Action,
    #[serde(default)]
    tools: RawTools,
}

fn block() -> Action {
    Action::Block
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    types: Vec<String>,
    action: Action,
    #[serde(default)]
    direction: Direction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    name: String,
    regex: String,
    action: Action,
    #[serde(default)]
    direction: Direction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerms {
    name: String,
    terms: Vec<String>,
    action: Action,
    #[serde(default)]
    direction: Direction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInjection {
    threshold: f32,
    action: Action,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTools {
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    approval: Vec<String>,
    #[serde(default)]
    argument: Vec<ArgumentRule>,
}

impl RawPolicy {
    fn compile(self) -> Result<Policy, PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            policy: self.name.clone(),
            reason,
        };
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(invalid(
                "a policy name is 1-64 letters, digits, '-' or '_'".into(),
            ));
        }
        let mut policy = Policy::empty(&self.name);
        policy.restore = self.restore;
        for rule in &self.rule {
            let kinds = rule
                .types
                .iter()
                .map(|t| Kind::parse(t).filter(|k| Kind::PII.contains(k)).ok_or_else(|| {
                    invalid(format!("unknown type '{t}' (one of EMAIL, PHONE, CARD, IBAN, US_SSN, IP, SECRET)"))
                }))
                .collect::<Result<Vec<_>, _>>()?;
            policy.rules.push(Rule {
                kinds,
                custom: None,
                action: rule.action,
                direction: rule.direction,
            });
        }
        for p in &self.pattern {
            let custom =
                CustomDetector::pattern(&p.name, &p.regex).map_err(|e| invalid(e.to_string()))?;
            policy.rules.push(Rule {
                kinds: Vec::new(),
                custom: Some(custom),
                action: p.action,
                direction: p.direction,
            });
        }
        for t in &self.terms {
            let custom =
                CustomDetector::terms(&t.name, &t.terms).map_err(|e| invalid(e.to_string()))?;
            policy.rules.push(Rule {
                kinds: Vec::new(),
                custom: Some(custom),
                action: t.action,
                direction: t.direction,
            });
        }
        if let Some(injection) = &self.injection {
            if !(0.0..=1.0).contains(&injection.threshold) {
                return Err(invalid(
                    "injection.threshold must be between 0 and 1".into(),
                ));
            }
            policy.injection = Some((injection.threshold, injection.action));
        }
        policy.max_input_chars = self.max_input_chars.map(|n| (n, self.size_action));
        policy.tools = ToolPolicy::new(
            self.tools.allow.clone(),
            self.tools.deny.clone(),
            self.tools.approval.clone(),
            self.tools.argument.clone(),
        )
        .map_err(invalid)?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_policy_file() {
        let policies = Policies::builtin()
            .with_toml(
                r#"
[[policy]]
name = "payments"
restore = true
[[policy.rule]]
types = ["CARD", "IBAN"]
action = "redact"
[[policy.terms]]
name = "codenames"
terms = ["Project Falcon"]
action = "block"
direction = "output"
[policy.injection]
threshold = 0.7
action = "block"
[policy.tools]
deny = ["delete_account"]
approval = ["wire_transfer"]
[[policy.tools.argument]]
tool = "wire_transfer"
path = "amount"
max = 10000
"#,
            )
            .expect("valid file");
        let p = policies.get("payments").expect("defined");
        assert!(p.restore);
        let found = p.scan(
            "pay 4242 4242 4242 4242 for Project Falcon",
            Direction::Output,
        );
        assert_eq!(found.len(), 2);
        assert_eq!(strictest(&found), Action::Block);
        let found = p.scan(
            "pay 4242 4242 4242 4242 for Project Falcon",
            Direction::Input,
        );
        assert_eq!(strictest(&found), Action::Redact);
        assert!(Policies::builtin()
            .with_toml("[[policy]]\nname = \"strict\"")
            .is_err());
        assert!(Policies::builtin()
            .with_toml(
                "[[policy]]\nname = \"x\"\n[[policy.rule]]\ntypes=[\"NAME\"]\naction=\"block\""
            )
            .is_err());
    }
}
