//! The audit trail of one call: every intervention (block, redaction, flag, denied tool call)
//! with where it was and what was done — never the value that was found.

use enclave_guard::char_offsets;
use enclave_guard::policy::{Decided, Direction};
use enclave_store::{now_ms, AuditEvent};

use crate::auth::Call;
use crate::state::AppState;

/// Events gathered while a call runs, recorded together.
#[derive(Debug, Clone)]
pub struct Audit {
    tenant_id: String,
    key_id: String,
    request_id: String,
    route: &'static str,
    policy: String,
    events: Vec<AuditEvent>,
}

impl Audit {
    pub fn new(call: &Call, route: &'static str, policy: &str) -> Self {
        let (tenant_id, key_id) = call
            .caller
            .caller
            .as_ref()
            .map(|c| (c.0.tenant_id.clone(), c.0.id.clone()))
            .unwrap_or_default();
        Self {
            tenant_id,
            key_id,
            request_id: call.request_id.clone(),
            route,
            policy: policy.to_string(),
            events: Vec::new(),
        }
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// A decision on `text` (byte offsets, reported as code points).
    pub fn add(&mut self, direction: Direction, source: &str, decided: &Decided, text: &str) {
        let mut d = decided.clone();
        d.finding.start = char_offsets(text, d.finding.start);
        d.finding.end = char_offsets(text, d.finding.end);
        self.add_chars(direction, source, &d);
    }

    /// A decision whose offsets are already code points.
    pub fn add_chars(&mut self, direction: Direction, source: &str, decided: &Decided) {
        let f = &decided.finding;
        self.push(
            direction,
            source,
            &f.detector,
            f.kind.as_str(),
            decided.action.as_str(),
            (f.start, f.end),
            f.score,
        );
    }

    /// A tool call a policy stopped (`action`: `block` or `approval`).
    pub fn add_call(&mut self, tool: &str, detector: &str, action: &str) {
        self.push(
            Direction::Output,
            &format!("tool_call:{tool}"),
            detector,
            "TOOL_CALL",
            action,
            (0, 0),
            1.0,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        direction: Direction,
        source: &str,
        detector: &str,
        kind: &str,
        action: &str,
        (start, end): (usize, usize),
        score: f32,
    ) {
        self.events.push(AuditEvent {
            id: format!("gev_{}", uuid::Uuid::new_v4().simple()),
            tenant_id: self.tenant_id.clone(),
            key_id: self.key_id.clone(),
            request_id: self.request_id.clone(),
            route: self.route.to_string(),
            policy: self.policy.clone(),
            direction: direction.as_str().to_string(),
            source: source.to_string(),
            detector: detector.to_string(),
            kind: kind.to_string(),
            action: action.to_string(),
            start: start as i64,
            end: end as i64,
            score_milli: (score.clamp(0.0, 1.0) * 1000.0).round() as i64,
            created_ms: now_ms(),
        });
    }

    /// Writes the events (all or none). A failure is logged: the intervention itself already
    /// happened, and the caller's answer does not wait on the trail.
    pub async fn record(&mut self, state: &AppState) {
        let events = std::mem::take(&mut self.events);
        if events.is_empty() || self.tenant_id.is_empty() {
            return;
        }
        let Some(access) = state.access() else { return };
        if let Err(e) = access.store().record_audit(&events).await {
            tracing::error!(
                "recording {} guard events of {} failed: {e}",
                events.len(),
                self.request_id
            );
        }
    }
}
