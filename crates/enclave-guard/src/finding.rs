//! What a detector found: a typed span of the checked text.

use serde::Serialize;

/// The kinds of value the detectors find; `as_str` is the wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
    UsSsn,
    Ip,
    Secret,
    /// A policy's own regular expression matched.
    Pattern,
    /// A policy's term list matched.
    Term,
    /// Text longer than the policy allows.
    Size,
    /// The injection monitor's score passed the policy's threshold.
    Injection,
}

impl Kind {
    pub const PII: [Kind; 7] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Iban,
        Kind::UsSsn,
        Kind::Ip,
        Kind::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Card => "CARD",
            Kind::Iban => "IBAN",
            Kind::UsSsn => "US_SSN",
            Kind::Ip => "IP",
            Kind::Secret => "SECRET",
            Kind::Pattern => "PATTERN",
            Kind::Term => "TERM",
            Kind::Size => "SIZE",
            Kind::Injection => "INJECTION",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        let others = [Kind::Pattern, Kind::Term, Kind::Size, Kind::Injection];
        Kind::PII
            .into_iter()
            .chain(others)
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

/// One finding: `start..end` are byte offsets into the checked text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The detector that found it (`email`, `card`, `aws_access_key`, `pattern:<name>`, ...).
    pub detector: String,
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    /// 1.0 for deterministic detectors; the monitor's probability otherwise.
    pub score: f32,
}

impl Finding {
    pub fn new(detector: impl Into<String>, kind: Kind, start: usize, end: usize) -> Self {
        Self {
            detector: detector.into(),
            kind,
            start,
            end,
            score: 1.0,
        }
    }

    pub fn overlaps(&self, other: &Finding) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Byte offsets of `text` turned into code-point offsets (what the API reports), for offsets
/// given in ascending or any order.
pub fn char_offsets(text: &str, byte: usize) -> usize {
    let byte = byte.min(text.len());
    text.char_indices().take_while(|(i, _)| *i < byte).count()
}

/// Many byte offsets of `text` turned into code-point offsets in one pass over the text.
pub fn char_offsets_all(text: &str, bytes: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bytes.len()).collect();
    order.sort_by_key(|&i| bytes[i]);
    let mut out = vec![0; bytes.len()];
    let mut chars = text.char_indices().enumerate().peekable();
    let mut count = 0;
    for i in order {
        let byte = bytes[i].min(text.len());
        while let Some((_, (at, _))) = chars.peek() {
            if *at >= byte {
                break;
            }
            chars.next();
            count += 1;
        }
        out[i] = count;
    }
    out
}
