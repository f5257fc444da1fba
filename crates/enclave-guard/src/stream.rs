//! Checks a streamed answer before any of it is sent. Text is released only once nothing in
//! it can still turn out to be part of a value a rule acts on: a window of recent text is held
//! back, and so is any unbroken run of characters touching the end (an address or token still
//! being written), an opened PEM block, a value that reaches the end, and a partly written
//! placeholder. A blocked value therefore never has a character sent.

use std::sync::Arc;

use crate::policy::{Action, Decided, Direction, Policy};
use crate::redact::{output_placeholder, Vault};

/// Bytes always held back: longer than any grouped value with separators (an IBAN of 34
/// characters in groups of four, a card wrapped over a line).
const WINDOW: usize = 64;
/// Released text kept as context for the next scan (`password for the test server is:` before
/// its value): longer than the credential pattern's longest look-back.
const CONTEXT: usize = 256;
/// An unbroken run is held at most this long; beyond it, the window alone applies.
const LONGEST_RUN: usize = 8192;

/// What one piece of the answer lets through.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Text that may be sent (possibly empty), with the policy's decisions on what it held;
    /// offsets count code points from the start of the answer.
    Text(String, Vec<Decided>),
    /// A rule blocks the answer; nothing of the value was released. Offsets as above.
    Blocked(Decided),
}

pub struct OutputScanner {
    policy: Arc<Policy>,
    /// Placeholders of the input's redacted values, put back in the released text.
    vault: Option<Arc<Vault>>,
    pending: String,
    context: String,
    /// Code points of the model's text released so far.
    released_chars: usize,
    /// Bytes always held back: [`WINDOW`], or the policy's longest term if longer.
    window: usize,
    /// Only built-in detectors: a value that spans whitespace (phone, card, IBAN, SSN, IP)
    /// carries digits, so a window without any holds a value only in its last unbroken run.
    digits_gate: bool,
}

impl OutputScanner {
    pub fn new(policy: Arc<Policy>, vault: Option<Arc<Vault>>) -> Self {
        Self {
            window: WINDOW.max(policy.longest_term() + 8),
            digits_gate: !policy.has_custom_detectors(),
            policy,
            vault: vault.filter(|v| !v.is_empty()),
            pending: String::new(),
            context: String::new(),
            released_chars: 0,
        }
    }

    pub fn push(&mut self, piece: &str) -> Step {
        self.pending.push_str(piece);
        self.step(false)
    }

    /// The rest of the answer, at its end.
    pub fn finish(&mut self) -> Step {
        self.step(true)
    }

    fn step(&mut self, last: bool) -> Step {
        let scanned = format!("{}{}", self.context, self.pending);
        let offset = self.context.len();
        let decided: Vec<Decided> = self
            .policy
            .scan(&scanned, Direction::Output)
            .into_iter()
            .filter(|d| d.finding.end > offset)
            .map(|mut d| {
                d.finding.start = d.finding.start.saturating_sub(offset);
                d.finding.end -= offset;
                d
            })
            .collect();
        if let Some(block) = decided.iter().find(|d| d.action == Action::Block) {
            let mut block = block.clone();
            self.to_chars(&mut block);
            return Step::Blocked(block);
        }
        let mut safe = if last {
            self.pending.len()
        } else {
            self.hold_from(&decided)
        };
        // A value that straddles the boundary is held whole (again, until none does).
        while let Some(d) = decided
            .iter()
            .find(|d| d.finding.start < safe && d.finding.end > safe)
        {
            safe = d.finding.start;
        }
        while !self.pending.is_char_boundary(safe) {
            safe -= 1;
        }
        let mut out = String::with_capacity(safe);
        let mut at = 0;
        let mut kept = Vec::new();
        for d in decided.into_iter().filter(|d| d.finding.end <= safe) {
            if d.action == Action::Redact && d.finding.start >= at {
                out.push_str(&self.pending[at..d.finding.start]);
                out.push_str(&output_placeholder(d.finding.kind));
                at = d.finding.end;
            }
            let mut d = d;
            self.to_chars(&mut d);
            kept.push(d);
        }
        out.push_str(&self.pending[at..safe]);
        let released: String = self.pending.drain(..safe).collect();
        self.released_chars += released.chars().count();
        self.context.push_str(&released);
        if self.context.len() > CONTEXT {
            let mut cut = self.context.len() - CONTEXT;
            while !self.context.is_char_boundary(cut) {
                cut += 1;
            }
            self.context.drain(..cut);
        }
        let out = match &self.vault {
            Some(vault) => vault.restore(&out),
            None => out,
        };
        Step::Text(out, kept)
    }

    /// Where held-back text starts in `pending`.
    fn hold_from(&self, decided: &[Decided]) -> usize {
        let text = &self.pending;
        let mut safe = text.len().saturating_sub(self.window);
        if self.digits_gate && !text.as_bytes()[safe..].iter().any(u8::is_ascii_digit) {
            // Prose streams as it comes; only the run below is held.
            safe = text.len();
        }
        // The unbroken run at the end may still be a value being written.
        let run_start = text.rfind(char::is_whitespace).map_or(0, |i| {
            i + text[i..].chars().next().map_or(1, char::len_utf8)
        });
        if text.len() - run_start <= LONGEST_RUN {
            safe = safe.min(run_start);
        }
        // An opened key block is held until it closes (up to a bound: a block is a few KB).
        if let Some(begin) = text.rfind("-----BEGIN") {
            if !text[begin..].contains("-----END") && text.len() - begin <= LONGEST_RUN {
                safe = safe.min(begin);
            }
        }
        // A value reaching the end may go on.
        for d in decided {
            if d.finding.end >= text.len() {
                safe = safe.min(d.finding.start);
            }
        }
        // A placeholder being written (`[CARD_`) is held until it closes.
        if let Some(vault) = &self.vault {
            let reach = vault.longest_placeholder();
            if let Some(open) = text.rfind('[') {
                if !text[open..].contains(']') && text.len() - open <= reach {
                    safe = safe.min(open);
                }
            }
        }
        safe
    }

    /// Byte offsets within `pending` → code points from the start of the answer.
    fn to_chars(&self, d: &mut Decided) {
        let start = crate::finding::char_offsets(&self.pending, d.finding.start);
        let end = crate::finding::char_offsets(&self.pending, d.finding.end);
        d.finding.start = self.released_chars + start;
        d.finding.end = self.released_chars + end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policies;

    fn run(policy: &str, pieces: &[&str]) -> (String, Option<Decided>) {
        let policy = Policies::builtin().get(policy).expect("policy");
        let mut scanner = OutputScanner::new(policy, None);
        let mut out = String::new();
        for piece in pieces {
            match scanner.push(piece) {
                Step::Text(t, _) => out.push_str(&t),
                Step::Blocked(d) => return (out, Some(d)),
            }
        }
        match scanner.finish() {
            Step::Text(t, _) => out.push_str(&t),
            Step::Blocked(d) => return (out, Some(d)),
        }
        (out, None)
    }

    #[test]
    fn redacts_a_value_split_over_pieces() {
        let pieces = [
            "Write to ",
            "jo",
            "hn.",
            "smith@",
            "exam",
            "ple.com",
            " today. ",
            "Bye.",
        ];
        let (out, blocked) = run("strict", &pieces);
        assert!(blocked.is_none());
        assert_eq!(out, "Write to [EMAIL] today. Bye.");
    }

    #[test]
    fn blocks_before_any_character_of_the_value() {
        let mut pieces = vec!["Here is the key: ", "AKIA"];
        pieces.extend(["IOSF", "ODNN", "7EXA", "MPLE", " done"]);
        let (out, blocked) = run("strict", &pieces);
        assert!(blocked.is_some());
        assert!(!out.contains("AKIA"), "{out}");
    }

    #[test]
    fn restores_a_placeholder_split_over_pieces() {
        let mut vault = Vault::default();
        let text = "card 4242 4242 4242 4242";
        let finding = crate::Finding::new("card", crate::Kind::Card, 5, text.len());
        vault.redact(text, &[&finding]);
        let policy = Policies::builtin().get("off").expect("policy");
        let mut scanner = OutputScanner::new(policy, Some(Arc::new(vault)));
        let mut out = String::new();
        for piece in ["Your card ", "[CA", "RD_", "1] is saved", "."] {
            if let Step::Text(t, _) = scanner.push(piece) {
                assert!(!t.contains('['), "a partial placeholder left: {t}");
                out.push_str(&t);
            }
        }
        if let Step::Text(t, _) = scanner.finish() {
            out.push_str(&t);
        }
        assert_eq!(out, "Your card 4242 4242 4242 4242 is saved.");
    }

    /// The stream's output equals the whole answer's for every way of cutting it in two, and a
    /// few ways of cutting it into many pieces.
    #[test]
    fn a_stream_says_what_the_whole_answer_says() {
        let texts = [
            "Mail ana.lopez@corp.example.de or call +44 20 7946 0958 today.",
            "Card 4111 1111\n1111 1111 and IBAN DE89 3704 0044 0532 0130 00; done.",
            "The password for the staging server is: q8Zr2VbN4mK7xT1pL9sD3fGh ok",
            "Key AKIAIOSFODNN7EXAMPLE then -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY----- end",
        ];
        // What was sent and whether (and for what) it was stopped. A stream may stop a value
        // earlier in its writing than the whole answer's check does, and may have sent prose
        // before it: a stopped stream sends a beginning of the answer that ends before the
        // value, and stops for the same kind.
        let agrees =
            |text: &str, streamed: (String, Option<Decided>), whole: &(String, Option<Decided>)| {
                match (&streamed.1, &whole.1) {
                    (None, None) => streamed.0 == whole.0,
                    (Some(s), Some(w)) => {
                        s.finding.kind == w.finding.kind
                            && text.starts_with(&streamed.0)
                            && streamed.0.chars().count() <= w.finding.start
                    }
                    _ => false,
                }
            };
        for text in texts {
            let whole = run("strict", &[text]);
            let bytes: Vec<usize> = (1..text.len())
                .filter(|i| text.is_char_boundary(*i))
                .collect();
            for &cut in &bytes {
                let streamed = run("strict", &[&text[..cut], &text[cut..]]);
                assert!(
                    agrees(text, streamed.clone(), &whole),
                    "cut at {cut}: {streamed:?} vs {whole:?}"
                );
            }
            for step in [1usize, 3, 7] {
                let mut pieces = Vec::new();
                let mut at = 0;
                while at < text.len() {
                    let mut end = (at + step).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    pieces.push(&text[at..end]);
                    at = end;
                }
                let streamed = run("strict", &pieces);
                assert!(
                    agrees(text, streamed.clone(), &whole),
                    "pieces of {step}: {streamed:?}"
                );
            }
        }
    }

    #[test]
    fn overlapping_rules_leave_nothing_of_either_value() {
        let policies = Policies::builtin()
            .with_toml(
                "[[policy]]\nname = \"p\"\n[[policy.rule]]\ntypes = [\"CARD\"]\naction = \"redact\"\n\
                 [[policy.pattern]]\nname = \"emp\"\nregex = \"EMP-[0-9]{4}\"\naction = \"redact\"\n",
            )
            .expect("policy");
        let policy = policies.get("p").expect("policy");
        let mut scanner = OutputScanner::new(policy, None);
        let mut out = match scanner.push("id EMP-4111 1111 1111 1111 end") {
            Step::Text(t, _) => t,
            Step::Blocked(_) => String::new(),
        };
        if let Step::Text(t, _) = scanner.finish() {
            out.push_str(&t);
        }
        assert!(!out.contains("1111"), "{out}");
    }

    #[test]
    fn plain_text_passes_unchanged() {
        let text = "The quarterly report shows revenue grew 12% to 4.2 million across 3 regions.";
        let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(run("strict", &refs), (text.to_string(), None));
    }
}
