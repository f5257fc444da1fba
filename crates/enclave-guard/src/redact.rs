//! Redaction: each value replaced by a typed placeholder (`[CARD_1]`) before the model sees it,
//! and the values kept aside so the answer can carry them back to the caller where the policy
//! allows. The same value gets the same placeholder throughout one request.

use crate::finding::{Finding, Kind};

/// Placeholders and the values they stand for, for one request.
#[derive(Debug, Clone, Default)]
pub struct Vault {
    /// (placeholder, value) in the order made.
    entries: Vec<(String, String)>,
    /// value → its placeholder.
    by_value: std::collections::HashMap<String, String>,
    counts: std::collections::BTreeMap<Kind, usize>,
}

/// A text with its values replaced.
#[derive(Debug, Clone)]
pub struct Redacted {
    pub text: String,
    pub replaced: usize,
}

impl Vault {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn placeholder(&mut self, kind: Kind, value: &str) -> String {
        if let Some(p) = self.by_value.get(value) {
            return p.clone();
        }
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        let placeholder = format!("[{}_{}]", kind.as_str(), n);
        self.entries.push((placeholder.clone(), value.to_string()));
        self.by_value.insert(value.to_string(), placeholder.clone());
        placeholder
    }

    /// `text` with each finding (byte offsets, non-overlapping) replaced by its placeholder.
    pub fn redact(&mut self, text: &str, findings: &[&Finding]) -> Redacted {
        let mut sorted: Vec<&&Finding> = findings.iter().collect();
        sorted.sort_by_key(|f| f.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut replaced = 0;
        for f in sorted {
            if f.start < at || f.end > text.len() {
                continue;
            }
            out.push_str(&text[at..f.start]);
            let placeholder = self.placeholder(f.kind, &text[f.start..f.end]);
            out.push_str(&placeholder);
            at = f.end;
            replaced += 1;
        }
        out.push_str(&text[at..]);
        Redacted {
            text: out,
            replaced,
        }
    }

    /// The values put back in place of their placeholders.
    pub fn restore(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (placeholder, value) in &self.entries {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), value);
            }
        }
        out
    }

    /// The longest placeholder, so a stream can hold back a partly written one.
    pub fn longest_placeholder(&self) -> usize {
        self.entries.iter().map(|(p, _)| p.len()).max().unwrap_or(0)
    }
}

/// The placeholder an answer's own value becomes (not numbered: nothing to restore).
pub fn output_placeholder(kind: Kind) -> String {
    format!("[{}]", kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_restores() {
        let text = "card 4242 and 4242 again, mail a@b.co";
        let mut vault = Vault::default();
        let f1 = Finding::new("card", Kind::Card, 5, 9);
        let f2 = Finding::new("card", Kind::Card, 14, 18);
        let f3 = Finding::new("email", Kind::Email, 31, 37);
        let r = vault.redact(text, &[&f1, &f2, &f3]);
        assert_eq!(r.text, "card [CARD_1] and [CARD_1] again, mail [EMAIL_1]");
        assert_eq!(vault.restore(&r.text), text);
    }
}
