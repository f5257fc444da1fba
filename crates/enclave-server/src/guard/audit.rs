//! The audit trail of one call: every intervention (block, redaction, flag, denied tool call)
//! with where it was and what was done — never the value that was found.

use enclave_guard::char_offsets_all;
use enclave_guard::policy::{Decided, Direction};
use enclave_store::{now_ms, AuditEvent};

use crate::auth::Call;
use crate::state::AppState;

/// Most events one call records (a text of thousands of values is one intervention, not
/// thousands of rows).
const MAX_EVENTS: usize = 256;

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

    /// Decisions on `text` (byte offsets, reported as code points, converted in one pass).
    pub fn add_all(&mut self, direction: Direction, source: &str, decided: &[Decided], text: &str) {
        let bytes: Vec<usize> = decided
            .iter()
            .flat_map(|d| [d.finding.start, d.finding.end])
            .collect();
        let chars = char_offsets_all(text, &bytes);
        for (d, pair) in decided.iter().zip(chars.chunks(2)) {
            let mut d = d.clone();
            d.finding.start = pair[0];
            d.finding.end = pair[1];
            self.add_chars(direction, source, &d);
        }
    }

    /// A decision whose offsets are already code points.
    pub fn add_chars(&mut self, direction: Direction, source: &str, decided: &Decided) {
        let f = &decided.finding;
        let event = self.event(
            direction,
            source,
            &f.detector,
            f.kind.as_str(),
            decided.action.as_str(),
            (f.start, f.end),
            f.score,
        );
        self.push(event);
    }

    /// A tool call a policy stopped (`action`: `block` or `approval`).
    pub fn add_call(&mut self, tool: &str, detector: &str, action: &str) {
        let source = format!("tool_call:{tool}");
        let event = self.event(
            Direction::Output,
            &source,
            detector,
            "TOOL_CALL",
            action,
            (0, 0),
            1.0,
        );
        self.push(event);
    }

    /// Bounded per call: past [`MAX_EVENTS`], one event says more were not recorded.
    fn push(&mut self, mut event: AuditEvent) {
        if self.events.len() > MAX_EVENTS {
            return;
        }
        if self.events.len() == MAX_EVENTS {
            event.detector.push_str(":more_events_not_recorded");
        }
        self.events.push(event);
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        direction: Direction,
        source: &str,
        detector: &str,
        kind: &str,
        action: &str,
        (start, end): (usize, usize),
        score: f32,
    ) -> AuditEvent {
        AuditEvent {
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
        }
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
