//! Checking an answer as it streams: text goes out as it comes (or, when unsupported claims are
//! withheld, one checked unit at a time), and each citation follows the text it cites.

use crate::grounding::{Citation, Embedder, Grounder, Grounding, Passage, Verdict, DECLINE_TEXT};
use crate::units::{Unit, UnitSplitter};

/// What to do with a claim no source supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unsupported {
    /// Send it, and report it.
    #[default]
    Flag,
    /// Leave it out; an answer left with no supported claim becomes [`DECLINE_TEXT`].
    Withhold,
}

/// A piece of checked output, in the order it is to be sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    Text(String),
    /// Cites text already sent (offsets in code points of the text sent).
    Cite(Citation),
}

/// Checks one answer against its passages as it is generated.
pub struct AnswerChecker {
    grounder: Grounder,
    embedder: Option<Box<dyn Embedder + Send>>,
    unsupported: Unsupported,
    splitter: UnitSplitter,
    /// The answer as generated, in code points.
    generated: Vec<char>,
    /// Generated code points already sent or dropped.
    consumed: usize,
    /// Code points sent.
    sent: usize,
    grounding: Grounding,
    /// Whether any withheld claim was left out.
    withheld: bool,
}

impl AnswerChecker {
    pub fn new(
        passages: &[Passage],
        unsupported: Unsupported,
        embedder: Option<Box<dyn Embedder + Send>>,
    ) -> Self {
        Self {
            grounder: Grounder::new(passages),
            embedder,
            unsupported,
            splitter: UnitSplitter::default(),
            generated: Vec::new(),
            consumed: 0,
            sent: 0,
            grounding: Grounding::default(),
            withheld: false,
        }
    }

    /// The question being answered (see [`Grounder::set_question`]).
    pub fn set_question(&mut self, question: &str) {
        self.grounder.set_question(question);
    }

    /// Takes generated text; returns what may be sent now.
    pub fn push(&mut self, text: &str) -> Vec<Checked> {
        self.generated.extend(text.chars());
        let mut out = Vec::new();
        if self.unsupported == Unsupported::Flag {
            out.push(Checked::Text(text.to_string()));
            self.consumed = self.generated.len();
            self.sent = self.generated.len();
        }
        for unit in self.splitter.push(text) {
            self.unit(unit, &mut out);
        }
        out.retain(|c| !matches!(c, Checked::Text(t) if t.is_empty()));
        out
    }

    /// The answer is complete: returns the rest to send.
    pub fn finish(&mut self) -> Vec<Checked> {
        let mut out = Vec::new();
        for unit in self.splitter.finish() {
            self.unit(unit, &mut out);
        }
        if self.unsupported == Unsupported::Withhold {
            let has_claim = self.grounding.claims.iter().any(|c| c.supported);
            if self.withheld && !has_claim && !self.grounding.declined {
                let lead = if self.sent > 0 { " " } else { "" };
                out.push(Checked::Text(format!("{lead}{DECLINE_TEXT}")));
                self.sent += lead.len() + DECLINE_TEXT.chars().count();
                self.grounding.declined = true;
            }
            // Trailing space or markup after the last unit.
            if self.consumed < self.generated.len() && !self.withheld_last() {
                out.push(Checked::Text(
                    self.generated[self.consumed..].iter().collect(),
                ));
            }
            self.consumed = self.generated.len();
        }
        out.retain(|c| !matches!(c, Checked::Text(t) if t.is_empty()));
        out
    }

    /// What the check found.
    pub fn grounding(&self) -> &Grounding {
        &self.grounding
    }

    /// Whether unsupported claims were left out of the answer.
    pub fn withheld(&self) -> bool {
        self.withheld
    }

    fn withheld_last(&self) -> bool {
        self.grounding.claims.last().is_some_and(|c| !c.supported)
    }

    fn unit(&mut self, unit: Unit, out: &mut Vec<Checked>) {
        let embedder = self.embedder.as_deref().map(|e| e as &dyn Embedder);
        let verdict = self.grounder.check(&self.generated, unit, embedder);
        if self.unsupported == Unsupported::Withhold {
            if matches!(verdict, Verdict::Unsupported(_)) {
                // Dropped with the space before it.
                self.consumed = unit.end;
                self.withheld = true;
                self.grounding.add(verdict);
                return;
            }
            // Sent with whatever preceded it since the last unit (leading space trimmed at the
            // start of the answer); offsets shift by what was dropped before it.
            let mut from = self.consumed;
            if self.sent == 0 {
                while from < unit.start && self.generated[from].is_whitespace() {
                    from += 1;
                }
            }
            let piece: String = self.generated[from..unit.end].iter().collect();
            let shift = self.sent as isize - from as isize;
            self.sent += unit.end - from;
            self.consumed = unit.end;
            out.push(Checked::Text(piece));
            let verdict = match verdict {
                Verdict::Supported(mut claim, mut citation) => {
                    let at = |i: usize| (i as isize + shift) as usize;
                    claim.start = at(claim.start);
                    claim.end = at(claim.end);
                    citation.start = at(citation.start);
                    citation.end = at(citation.end);
                    Verdict::Supported(claim, citation)
                }
                other => other,
            };
            self.push_verdict(verdict, out);
        } else {
            self.push_verdict(verdict, out);
        }
    }

    fn push_verdict(&mut self, verdict: Verdict, out: &mut Vec<Checked>) {
        if let Verdict::Supported(_, citation) = &verdict {
            out.push(Checked::Cite(citation.clone()));
        }
        self.grounding.add(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passages() -> Vec<Passage> {
        vec![Passage {
            text: "Meals are reimbursed up to $85 per day. Hotels in London cost up to $250 per night.".into(),
        }]
    }

    fn run(checker: &mut AnswerChecker, answer: &str) -> (String, Vec<Citation>) {
        let mut text = String::new();
        let mut cites = Vec::new();
        let mut outs = Vec::new();
        for piece in answer.split_inclusive(' ') {
            outs.extend(checker.push(piece));
        }
        outs.extend(checker.finish());
        for o in outs {
            match o {
                Checked::Text(t) => text.push_str(&t),
                Checked::Cite(c) => {
                    // A citation only ever follows the text it cites.
                    assert!(c.end <= text.chars().count());
                    cites.push(c);
                }
            }
        }
        (text, cites)
    }

    fn slice(text: &str, start: usize, end: usize) -> String {
        text.chars().skip(start).take(end - start).collect()
    }

    #[test]
    fn flagging_sends_everything_and_cites_what_is_supported() {
        let mut checker = AnswerChecker::new(&passages(), Unsupported::Flag, None);
        let answer =
            "Hotels in Paris cost up to $400 per night. Meals are reimbursed up to $85 per day.";
        let (text, cites) = run(&mut checker, answer);
        assert_eq!(text, answer);
        assert_eq!(cites.len(), 1);
        assert_eq!(slice(&text, cites[0].start, cites[0].end), cites[0].text);
        assert_eq!(checker.grounding().groundedness(), Some(0.5));
    }

    #[test]
    fn withholding_drops_unsupported_claims_and_keeps_offsets_true() {
        let mut checker = AnswerChecker::new(&passages(), Unsupported::Withhold, None);
        let (text, cites) = run(
            &mut checker,
            "Hotels in Paris cost up to $400 per night. Meals are reimbursed up to $85 per day.",
        );
        assert_eq!(text, "Meals are reimbursed up to $85 per day.");
        assert_eq!(cites.len(), 1);
        assert_eq!(slice(&text, cites[0].start, cites[0].end), cites[0].text);
        assert!(checker.withheld());
    }

    #[test]
    fn withholding_everything_declines() {
        let mut checker = AnswerChecker::new(&passages(), Unsupported::Withhold, None);
        let (text, cites) = run(&mut checker, "Hotels in Paris cost up to $400 per night.");
        assert_eq!(text, DECLINE_TEXT);
        assert!(cites.is_empty());
        assert!(checker.grounding().is_decline());
    }
}
