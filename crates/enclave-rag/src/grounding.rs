//! Checking an answer against its sources. Small models do not cite reliably, so citations are
//! computed: each claim unit of the answer (sentence, clause, list item) is aligned to the
//! source sentence that supports it by the content words and numbers they share, helped by
//! embedding similarity when an embedder is at hand. A claim is cited only when it is
//! supported, and never when it names a number or a name its source does not contain. Claims
//! that no source supports are reported, so a caller can flag or withhold them.

use std::collections::{HashMap, HashSet};

use crate::terms::terms;
use crate::units::{units, Unit};

/// Share of a claim's content weight its source must contain to support it.
const SUPPORT: f32 = 0.5;
/// With embedding similarity of at least [`MEANING`], a lower lexical share suffices.
const SUPPORT_WITH_MEANING: f32 = 0.3;
const MEANING: f32 = 0.72;
/// A unit with less content weight than this claims nothing ("Yes.", "Here is the answer:").
const MIN_CLAIM_WEIGHT: f32 = 2.0;
/// Weight of a number or name, against 1 for another content word.
const SPECIFIC_WEIGHT: f32 = 2.0;
/// Weight of a term found next to the supporting sentence rather than in it.
const NEAR_WEIGHT: f32 = 0.5;
/// Share of a claim's weight in terms the question asks about and no document mentions at
/// which the claim is taken to answer what the documents do not say (a restated verb of the
/// question, "commits", weighs less in a long claim than "electricity" in a short one).
const UNKNOWN_SHARE: f32 = 0.12;
/// Weight of a claim's term that the question names, against its own weight.
const ASKED_WEIGHT: f32 = 0.25;
/// Candidate sentences per claim that are compared by meaning.
const CANDIDATES: usize = 3;

/// Phrases that decline on their own.
const DECLINES: &[&str] = &[
    "cannot answer",
    "can't answer",
    "unable to answer",
    "unable to find",
    "no information",
    "i don't know",
    "i do not know",
    "not able to answer",
];
/// Phrases that decline when they speak of the documents ("the documents do not say"), not of
/// the world ("filters are not covered").
const DECLINES_ABOUT_SOURCES: &[&str] = &[
    "do not say",
    "does not say",
    "don't say",
    "doesn't say",
    "do not mention",
    "does not mention",
    "not mentioned",
    "do not provide",
    "does not provide",
    "not provided",
    "not specified",
    "do not specify",
    "does not specify",
    "do not contain",
    "does not contain",
    "don't contain",
    "doesn't contain",
    "not stated",
    "do not state",
    "does not state",
    "not covered",
    "do not cover",
    "does not cover",
    "no mention",
    "not include",
    "not found",
];
/// Words that show a phrase speaks of the sources.
const SOURCE_WORDS: &[&str] = &[
    "document",
    "text",
    "context",
    "source",
    "information",
    "passage",
];

/// Whether a unit says the documents do not answer.
fn is_decline(lower: &str) -> bool {
    DECLINES.iter().any(|d| lower.contains(d))
        || (DECLINES_ABOUT_SOURCES.iter().any(|d| lower.contains(d))
            && SOURCE_WORDS.iter().any(|w| lower.contains(w)))
}

/// The weight of the claim's terms that `keys` holds.
fn weight_in(weights: &HashMap<&str, (f32, bool)>, keys: &HashSet<String>) -> f32 {
    weights
        .iter()
        .filter(|(k, _)| keys.contains(**k))
        .map(|(_, (w, _))| w)
        .sum()
}

/// The sentence a declined answer reads.
pub const DECLINE_TEXT: &str = "The documents do not say.";

/// Computes sentence embeddings (normalised) for meaning comparison; `None` if it cannot.
pub trait Embedder {
    fn embed(&self, texts: &[String]) -> Option<Vec<Vec<f32>>>;
}

/// One source text an answer may cite: a document's fields as the model read them, or a chunk.
#[derive(Debug, Clone)]
pub struct Passage {
    pub text: String,
}

/// A span of a passage that supports a claim (code points into the passage's text).
#[derive(Debug, Clone, PartialEq)]
pub struct CitedSpan {
    pub passage: usize,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A supported span of the answer and the passages' spans that support it.
#[derive(Debug, Clone, PartialEq)]
pub struct Citation {
    /// Code points into the answer: `text == answer[start:end]`.
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub sources: Vec<CitedSpan>,
}

/// One claim of the answer and whether its sources support it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub supported: bool,
    /// The share of its content its best source holds (0–1).
    pub support: f32,
}

/// What one unit of the answer turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Claims nothing.
    Filler,
    /// Says the documents do not answer.
    Decline,
    Supported(Claim, Citation),
    Unsupported(Claim),
}

/// The check of a whole answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grounding {
    pub citations: Vec<Citation>,
    pub claims: Vec<Claim>,
    /// Whether the answer says the documents do not answer and claims nothing they support.
    pub declined: bool,
}

impl Grounding {
    /// Adds one unit's verdict.
    pub fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Filler => {}
            Verdict::Decline => self.declined = true,
            Verdict::Supported(claim, citation) => {
                self.claims.push(claim);
                self.citations.push(citation);
            }
            Verdict::Unsupported(claim) => self.claims.push(claim),
        }
    }

    /// The share of the answer's claims its sources support; `None` when it makes no claim.
    pub fn groundedness(&self) -> Option<f32> {
        if self.claims.is_empty() {
            return None;
        }
        let supported = self.claims.iter().filter(|c| c.supported).count();
        Some(supported as f32 / self.claims.len() as f32)
    }

    pub fn unsupported(&self) -> impl Iterator<Item = &Claim> {
        self.claims.iter().filter(|c| !c.supported)
    }

    /// Declined: it says so and cites nothing.
    pub fn is_decline(&self) -> bool {
        self.declined && self.citations.is_empty()
    }
}

struct Sentence {
    start: usize,
    end: usize,
    keys: HashSet<String>,
    negated: bool,
    /// For a table row, the table's first (header) row.
    header: Option<usize>,
    /// For a table row whose first cell is a range of numbers ("Below 99.0% but at least
    /// 95.0%", "10-49 employees", "Above 500"), that range.
    range: Option<(f64, f64)>,
}

/// Words before a number that make it a range's upper or lower end.
const UPPER_BOUND_WORDS: &[&str] = &["below", "under", "less than", "up to", "fewer than"];
const LOWER_BOUND_WORDS: &[&str] = &["above", "over", "more than", "at least", "exceeding"];

/// The range a table row's first cell states, if it states one.
fn row_range(row: &str) -> Option<(f64, f64)> {
    let cell = row.trim_start().strip_prefix('|')?.split('|').next()?;
    let values: Vec<f64> = terms(cell)
        .iter()
        .filter_map(|t| t.key.parse::<f64>().ok())
        .collect();
    let lower = cell.to_lowercase();
    match values.as_slice() {
        [a, b, ..] => Some((a.min(*b), a.max(*b))),
        [x] if UPPER_BOUND_WORDS.iter().any(|w| lower.contains(w)) => Some((f64::MIN, *x)),
        [x] if LOWER_BOUND_WORDS.iter().any(|w| lower.contains(w)) => Some((*x, f64::MAX)),
        _ => None,
    }
}

/// Words that turn a statement around: a claim and its source must agree on them.
const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nor",
    "cannot",
    "can't",
    "won't",
    "isn't",
    "aren't",
    "doesn't",
    "don't",
    "didn't",
    "wasn't",
    "weren't",
    "excluded",
    "excludes",
    "without",
    "neither",
    "prohibited",
    "forbidden",
];

/// Whether a text says something is not so.
fn negated(text: &str) -> bool {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .any(|w| NEGATIONS.contains(&w))
}

struct PreparedPassage {
    chars: Vec<char>,
    sentences: Vec<Sentence>,
    /// Marked superseded (or otherwise out of date) in its opening lines.
    stale: bool,
}

/// Words in a document's opening lines that mark it out of date.
const STALE_MARKS: &[&str] = &[
    "superseded",
    "obsolete",
    "no longer in effect",
    "archived",
    "replaced by",
];
/// Words of a question or claim that ask about earlier versions.
const ASKS_FOR_OLD: &[&str] = &[
    "superseded",
    "previous",
    "former",
    "earlier",
    "prior",
    "old ",
    "older",
    "used to",
    "obsolete",
];

/// Aligns answers to a fixed set of passages.
pub struct Grounder {
    passages: Vec<PreparedPassage>,
    /// Embeddings of source sentences already compared, by (passage, sentence).
    embedded: HashMap<(usize, usize), Vec<f32>>,
    /// Content terms of the question that no passage contains: what the documents do not speak
    /// of. A claim weighted enough with them is not supported, however well the rest matches
    /// ("the electricity allowance is $40" from a policy that only has a $40 internet
    /// allowance).
    unknown_asked: HashSet<String>,
    /// Numbers the question names: a claim may restate them without a source naming them
    /// ("for a $30,000 purchase, three quotes": the policy gives a range).
    asked_numbers: HashSet<String>,
    /// Their values, to find the table row whose range holds them.
    asked_values: Vec<f64>,
    /// Every content term of the question.
    asked_keys: HashSet<String>,
    /// The question asks about earlier versions: out-of-date documents may support claims.
    wants_old: bool,
}

/// A source sentence's lexical support for a claim.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    passage: usize,
    sentence: usize,
    coverage: f32,
    direct: f32,
}

impl Grounder {
    pub fn new(passages: &[Passage]) -> Self {
        let passages = passages
            .iter()
            .map(|p| {
                let chars: Vec<char> = p.text.chars().collect();
                let sentences = units(&p.text)
                    .into_iter()
                    .map(|u| {
                        let text: String = chars[u.start..u.end].iter().collect();
                        Sentence {
                            start: u.start,
                            end: u.end,
                            keys: terms(&text).into_iter().map(|t| t.key).collect(),
                            negated: negated(&text),
                            header: None,
                            range: row_range(&text),
                        }
                    })
                    .collect::<Vec<_>>();
                let mut sentences = sentences;
                let mut table_start = None;
                for (i, sentence) in sentences.iter_mut().enumerate() {
                    let row = chars.get(sentence.start) == Some(&'|');
                    table_start = match (row, table_start) {
                        (false, _) => None,
                        (true, None) => Some(i),
                        (true, start) => start,
                    };
                    sentence.header = table_start.filter(|&h| h != i);
                }
                let opening: String = chars.iter().take(400).collect::<String>().to_lowercase();
                let stale = STALE_MARKS.iter().any(|m| opening.contains(m));
                PreparedPassage {
                    chars,
                    sentences,
                    stale,
                }
            })
            .collect();
        Self {
            passages,
            embedded: HashMap::new(),
            unknown_asked: HashSet::new(),
            asked_numbers: HashSet::new(),
            asked_values: Vec::new(),
            asked_keys: HashSet::new(),
            wants_old: false,
        }
    }

    /// The question the answer responds to (see `unknown_asked`).
    pub fn set_question(&mut self, question: &str) {
        let lower = format!("{} ", question.to_lowercase());
        self.wants_old = ASKS_FOR_OLD.iter().any(|w| lower.contains(w));
        let asked: Vec<String> = terms(question).into_iter().map(|t| t.key).collect();
        self.asked_keys = asked.iter().cloned().collect();
        let is_number = |k: &String| k.chars().any(|c| c.is_ascii_digit());
        self.asked_numbers = asked.iter().filter(|k| is_number(k)).cloned().collect();
        self.asked_values = self
            .asked_numbers
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect();
        self.unknown_asked = asked
            .into_iter()
            .filter(|k| !is_number(k))
            .filter(|k| {
                !self
                    .passages
                    .iter()
                    .any(|p| p.sentences.iter().any(|s| s.keys.contains(k)))
            })
            .collect();
    }

    /// Checks a whole answer.
    pub fn ground(&mut self, answer: &str, embedder: Option<&dyn Embedder>) -> Grounding {
        let chars: Vec<char> = answer.chars().collect();
        let mut grounding = Grounding::default();
        for unit in units(answer) {
            grounding.add(self.check(&chars, unit, embedder));
        }
        grounding
    }

    /// Checks one unit of an answer (`answer` as code points).
    pub fn check(
        &mut self,
        answer: &[char],
        unit: Unit,
        embedder: Option<&dyn Embedder>,
    ) -> Verdict {
        let text: String = answer[unit.start..unit.end].iter().collect();
        let lower = text.to_lowercase();
        if is_decline(&lower) {
            return Verdict::Decline;
        }
        let found = terms(&text);
        let mut weights: HashMap<&str, (f32, bool)> = HashMap::new();
        for t in &found {
            let w = if t.specific { SPECIFIC_WEIGHT } else { 1.0 };
            let entry = weights.entry(t.key.as_str()).or_insert((0.0, false));
            entry.0 = entry.0.max(w);
            entry.1 |= t.specific;
        }
        let raw_total: f32 = weights.values().map(|(w, _)| w).sum();
        if raw_total < MIN_CLAIM_WEIGHT {
            return Verdict::Filler;
        }
        // Terms that restate the question prove little: "Error code E4 on the H2 means …"
        // matches the FAQ's own question line better than its answer. What a source must
        // support is mostly what the claim adds.
        for (key, (w, _)) in weights.iter_mut() {
            if self.asked_keys.contains(*key) {
                *w *= ASKED_WEIGHT;
            }
        }
        let total: f32 = weights.values().map(|(w, _)| w).sum();
        let mut candidates = self.candidates(&weights, total);
        // A claim is about its subject, roughly its first content term: where some passage
        // names it, only places that name it can support the claim (so "penguins lay 20
        // weeks of leave" is not supported by a leave policy that says "20 weeks of leave").
        if let Some(subject) = found.first().map(|t| t.key.as_str()) {
            // A subject restated from the question may be named anywhere in the passage (a
            // FAQ names it in its question line, the answer line after it).
            // Which passages name it, found once rather than once per candidate sentence.
            let asked = self.asked_keys.contains(subject);
            let passage_names: Vec<bool> = self
                .passages
                .iter()
                .map(|p| asked && p.sentences.iter().any(|s| s.keys.contains(subject)))
                .collect();
            let naming: Vec<Candidate> = candidates
                .iter()
                .copied()
                .filter(|c| passage_names[c.passage] || self.window_keys(*c).contains(subject))
                .collect();
            if !naming.is_empty() {
                candidates = naming;
            }
        }
        // A document marked superseded supports nothing unless earlier versions are asked about:
        // stating an old policy's figure as fact is the near-duplicate mistake to catch.
        let claim_lower = format!("{} ", lower);
        let allow_stale = self.wants_old || ASKS_FOR_OLD.iter().any(|w| claim_lower.contains(w));
        if !allow_stale {
            candidates.retain(|c| !self.passages[c.passage].stale);
        }
        candidates.sort_by(|a, b| {
            b.coverage
                .total_cmp(&a.coverage)
                .then(b.direct.total_cmp(&a.direct))
        });
        candidates.truncate(CANDIDATES);
        let meaning = self.meaning(&text, &candidates, embedder);
        let claim = |supported: bool, support: f32| Claim {
            start: unit.start,
            end: unit.end,
            text: text.clone(),
            supported,
            support,
        };
        // The best candidate by lexical support, lifted by meaning where it is known.
        let Some((best, similarity)) = candidates
            .iter()
            .zip(meaning.iter())
            .map(|(c, m)| (*c, *m))
            .max_by(|(a, ma), (b, mb)| {
                let score = |c: &Candidate, m: &Option<f32>| c.coverage + 0.3 * m.unwrap_or(0.0);
                score(a, ma).total_cmp(&score(b, mb))
            })
        else {
            return Verdict::Unsupported(claim(false, 0.0));
        };
        let mut chosen = vec![best];
        // A number or name the claim states that lies next to the main source rather than in
        // it ("…for the periods below:" / "- Motor: 5 years."): the neighbour that holds it is
        // cited too, so the citation points at the fact.
        let sentences = &self.passages[best.passage].sentences;
        for (key, (_, specific)) in &weights {
            if !specific || sentences[best.sentence].keys.contains(*key) {
                continue;
            }
            let neighbour = [best.sentence.wrapping_sub(1), best.sentence + 1]
                .into_iter()
                .find(|&i| sentences.get(i).is_some_and(|s| s.keys.contains(*key)));
            if let Some(i) = neighbour {
                if !chosen
                    .iter()
                    .any(|c| c.passage == best.passage && c.sentence == i)
                {
                    chosen.push(Candidate {
                        sentence: i,
                        ..best
                    });
                }
            }
        }
        let mut covered = self.window_keys(best);
        // The main source must support the claim by itself; a second may only add what it
        // names besides (a figure from another document).
        let support = weight_in(&weights, &covered) / total;
        // A claim drawing on two places (two documents, or two parts of one) cites both.
        let missing: Vec<&str> = weights
            .keys()
            .copied()
            .filter(|k| !covered.contains(*k))
            .collect();
        if !missing.is_empty() {
            if let Some(second) = self.best_for(&missing, &weights, best, allow_stale) {
                covered.extend(self.window_keys(second));
                chosen.push(second);
            }
        }
        let names_all_specifics = weights
            .iter()
            .filter(|(_, (_, specific))| *specific)
            .all(|(k, _)| covered.contains(*k) || self.asked_numbers.contains(*k));
        // Weighed at full weight: naming what the documents never mention is the point here.
        let unknown: f32 = weights
            .iter()
            .filter(|(k, _)| self.unknown_asked.contains(**k))
            .map(|(_, (w, _))| w / ASKED_WEIGHT)
            .sum();
        let names_the_unknown = unknown >= UNKNOWN_SHARE * raw_total;
        // "Filters are covered" is not supported by "filters are not covered".
        let primary = &self.passages[best.passage].sentences[best.sentence];
        let agrees = primary.negated == negated(&text);
        let supported = names_all_specifics
            && !names_the_unknown
            && agrees
            && !self.is_wrong_row(best)
            && (support >= SUPPORT
                || (support >= SUPPORT_WITH_MEANING && similarity.is_some_and(|s| s >= MEANING)));
        if !supported {
            return Verdict::Unsupported(claim(false, support));
        }
        let mut span = (usize::MAX, 0);
        for t in found.iter().filter(|t| covered.contains(&t.key)) {
            span = (span.0.min(t.start), span.1.max(t.end));
        }
        let (start, end) = (unit.start + span.0, unit.start + span.1);
        chosen.sort_by_key(|c| (c.passage, c.sentence));
        let sources = chosen
            .iter()
            .map(|c| {
                let passage = &self.passages[c.passage];
                let s = &passage.sentences[c.sentence];
                CitedSpan {
                    passage: c.passage,
                    start: s.start,
                    end: s.end,
                    text: passage.chars[s.start..s.end].iter().collect(),
                }
            })
            .collect();
        Verdict::Supported(
            claim(true, support),
            Citation {
                start,
                end,
                text: answer[start..end].iter().collect(),
                sources,
            },
        )
    }

    /// Whether `c` is a table row for a range that does not hold a number the question names,
    /// while another row of the same table does: the answer read the wrong row ("at 97%
    /// uptime the credit is 10%", from the row for 99.0–99.95%).
    fn is_wrong_row(&self, c: Candidate) -> bool {
        let sentences = &self.passages[c.passage].sentences;
        let row = &sentences[c.sentence];
        let (Some((low, high)), Some(header)) = (row.range, row.header) else {
            return false;
        };
        let holds = |(low, high): (f64, f64), value: f64| low <= value && value <= high;
        self.asked_values.iter().any(|&value| {
            !holds((low, high), value)
                && sentences.iter().any(|other| {
                    other.header == Some(header) && other.range.is_some_and(|r| holds(r, value))
                })
        })
    }

    /// Every source sentence with its share of the claim's weight (in it, or next to it).
    fn candidates(&self, weights: &HashMap<&str, (f32, bool)>, total: f32) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (p, passage) in self.passages.iter().enumerate() {
            for (i, sentence) in passage.sentences.iter().enumerate() {
                let direct: f32 = weights
                    .iter()
                    .filter(|(k, _)| sentence.keys.contains(**k))
                    .map(|(_, (w, _))| w)
                    .sum();
                if direct == 0.0 {
                    continue;
                }
                let window = self.window_keys(Candidate {
                    passage: p,
                    sentence: i,
                    coverage: 0.0,
                    direct: 0.0,
                });
                let near: f32 = weights
                    .iter()
                    .filter(|(k, _)| !sentence.keys.contains(**k) && window.contains(**k))
                    .map(|(_, (w, _))| w * NEAR_WEIGHT)
                    .sum();
                out.push(Candidate {
                    passage: p,
                    sentence: i,
                    coverage: (direct + near) / total,
                    direct,
                });
            }
        }
        out
    }

    /// The terms a supporting sentence brings: its own, its neighbours' and its passage's
    /// heading (the first unit, e.g. the title).
    fn window_keys(&self, c: Candidate) -> HashSet<String> {
        let sentences = &self.passages[c.passage].sentences;
        let mut keys = HashSet::new();
        let header = sentences.get(c.sentence).and_then(|s| s.header);
        for i in [0, c.sentence.saturating_sub(1), c.sentence, c.sentence + 1]
            .into_iter()
            .chain(header)
        {
            if let Some(s) = sentences.get(i) {
                keys.extend(s.keys.iter().cloned());
            }
        }
        keys
    }

    /// The sentence (other than `first`) that holds most of the weight of `missing` terms, if
    /// it holds a number or name the claim states (common words alone never pull in a second
    /// source).
    fn best_for(
        &self,
        missing: &[&str],
        weights: &HashMap<&str, (f32, bool)>,
        first: Candidate,
        allow_stale: bool,
    ) -> Option<Candidate> {
        let mut best: Option<(Candidate, f32)> = None;
        for (p, passage) in self.passages.iter().enumerate() {
            if passage.stale && !allow_stale {
                continue;
            }
            for (i, sentence) in passage.sentences.iter().enumerate() {
                if p == first.passage && i == first.sentence {
                    continue;
                }
                let held: Vec<&&str> = missing
                    .iter()
                    .filter(|k| sentence.keys.contains(**k))
                    .collect();
                let weight: f32 = held.iter().map(|k| weights[**k].0).sum();
                let specific = held.iter().any(|k| weights[**k].1);
                if specific && weight > best.map_or(0.0, |b| b.1) {
                    let candidate = Candidate {
                        passage: p,
                        sentence: i,
                        coverage: 0.0,
                        direct: weight,
                    };
                    best = Some((candidate, weight));
                }
            }
        }
        best.map(|(c, _)| c)
    }

    /// Cosine similarity of the claim to each candidate, where an embedder can tell.
    fn meaning(
        &mut self,
        claim: &str,
        candidates: &[Candidate],
        embedder: Option<&dyn Embedder>,
    ) -> Vec<Option<f32>> {
        let none = vec![None; candidates.len()];
        let Some(embedder) = embedder else {
            return none;
        };
        let mut texts = vec![claim.to_string()];
        let mut fresh = Vec::new();
        for c in candidates {
            if !self.embedded.contains_key(&(c.passage, c.sentence)) {
                let passage = &self.passages[c.passage];
                let s = &passage.sentences[c.sentence];
                texts.push(passage.chars[s.start..s.end].iter().collect());
                fresh.push((c.passage, c.sentence));
            }
        }
        let Some(vectors) = embedder.embed(&texts) else {
            return none;
        };
        if vectors.len() != texts.len() {
            return none;
        }
        let mut vectors = vectors.into_iter();
        let Some(claim_vector) = vectors.next() else {
            return none;
        };
        for (key, vector) in fresh.into_iter().zip(vectors) {
            self.embedded.insert(key, vector);
        }
        candidates
            .iter()
            .map(|c| {
                self.embedded
                    .get(&(c.passage, c.sentence))
                    .map(|v| v.iter().zip(&claim_vector).map(|(a, b)| a * b).sum())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passages() -> Vec<Passage> {
        vec![
            Passage {
                text: "title: Travel and Expense Policy (2024)\ntext: Meals are reimbursed up to $85 per day in Europe. Hotels in London may cost up to $250 per night. Economy class is required for flights under 6 hours.".into(),
            },
            Passage {
                text: "title: Parental leave\ntext: Birth parents receive 20 weeks of paid leave. Other parents receive 12 weeks.".into(),
            },
        ]
    }

    fn slice(text: &str, start: usize, end: usize) -> String {
        text.chars().skip(start).take(end - start).collect()
    }

    #[test]
    fn supported_claims_cite_the_sentence_that_holds_them() {
        let mut g = Grounder::new(&passages());
        let answer = "Under the policy, meals are reimbursed up to $85 per day. Birth parents get 20 weeks of paid leave.";
        let grounding = g.ground(answer, None);
        assert_eq!(grounding.citations.len(), 2, "{grounding:?}");
        for c in &grounding.citations {
            assert_eq!(slice(answer, c.start, c.end), c.text);
        }
        assert_eq!(grounding.citations[0].sources[0].passage, 0);
        assert!(grounding.citations[0].sources[0].text.contains("$85"));
        assert_eq!(grounding.citations[1].sources[0].passage, 1);
        assert_eq!(grounding.groundedness(), Some(1.0));
    }

    #[test]
    fn a_claim_with_a_number_or_name_its_source_lacks_is_unsupported() {
        let mut g = Grounder::new(&passages());
        let grounding = g.ground("Meals are reimbursed up to $95 per day in Europe. Meals in Japan are reimbursed up to $85 per day.", None);
        assert!(grounding.citations.is_empty(), "{grounding:?}");
        assert_eq!(grounding.unsupported().count(), 2);
        assert_eq!(grounding.groundedness(), Some(0.0));
    }

    #[test]
    fn a_claim_about_one_thing_is_not_supported_by_facts_about_another() {
        let mut g = Grounder::new(&[
            Passage { text: "title: Tall penguins\nsnippet: Emperor penguins are the tallest penguins. They can grow to 122 cm.".into() },
            Passage { text: "title: Parental leave policy\nsnippet: Birth parents receive 20 weeks of paid leave.".into() },
        ]);
        let grounding = g.ground(
            "Emperor penguins lay 20 weeks of paid leave each year.",
            None,
        );
        assert!(grounding.citations.is_empty(), "{grounding:?}");
        let grounding = g.ground("Emperor penguins can grow to 122 cm.", None);
        assert_eq!(grounding.citations.len(), 1, "{grounding:?}");
    }

    #[test]
    fn a_claim_that_turns_its_source_around_is_unsupported() {
        let mut g = Grounder::new(&[Passage {
            text:
                "HEPA and carbon filters are consumable items and are not covered by this warranty."
                    .into(),
        }]);
        assert!(g
            .ground("HEPA filters are covered by the warranty.", None)
            .citations
            .is_empty());
        let g2 = g.ground("HEPA filters are not covered by the warranty.", None);
        assert_eq!(g2.citations.len(), 1, "{g2:?}");
    }

    #[test]
    fn a_claim_about_what_the_question_asks_and_no_document_mentions_is_unsupported() {
        let mut g = Grounder::new(&[Passage {
            text: "Remote employees receive a monthly internet allowance of $40.".into(),
        }]);
        let claim = "The monthly electricity allowance is $40.";
        g.set_question("What monthly electricity allowance do remote employees get?");
        assert!(g.ground(claim, None).citations.is_empty());
        assert_eq!(
            g.ground("The monthly internet allowance is $40.", None)
                .citations
                .len(),
            1
        );
    }

    #[test]
    fn a_superseded_document_supports_claims_only_about_earlier_versions() {
        let mut g = Grounder::new(&[
            Passage { text: "title: Travel policy v3 (2022, superseded)\ntext: The daily meal allowance is $65.".into() },
            Passage { text: "title: Travel policy v4 (2024, current)\ntext: The daily meal allowance is $75.".into() },
        ]);
        assert!(g
            .ground("The daily meal allowance is $65.", None)
            .citations
            .is_empty());
        let current = g.ground("The daily meal allowance is $75.", None);
        assert_eq!(current.citations[0].sources[0].passage, 1);
        g.set_question("What was the meal allowance under the previous policy?");
        assert_eq!(
            g.ground("The daily meal allowance was $65.", None)
                .citations
                .len(),
            1
        );
    }

    #[test]
    fn a_table_row_is_read_with_its_header_row() {
        let text = "title: UG-12\ntext: Indicative base rates:\n| Mine type | Indicative base rate |\n| Underground gold | 0.55% |\n| Underground copper | 0.65% |\n| Underground coal | 0.80% |";
        let mut g = Grounder::new(&[Passage { text: text.into() }]);
        let grounding = g.ground(
            "The indicative base rate for an underground coal mine is 0.80%.",
            None,
        );
        assert_eq!(grounding.citations.len(), 1, "{grounding:?}");
        assert_eq!(
            grounding.citations[0].sources[0].text,
            "| Underground coal | 0.80% |"
        );
    }

    #[test]
    fn the_answer_line_is_cited_not_the_line_that_restates_the_question() {
        let faq = "# Helios H2 Customer Support FAQ\n\n**Q: My thermostat shows error code E4. What does it mean?**\nA: E4 means the thermostat has lost power from the C-wire. Check that the C-wire is firmly seated.\n";
        let passages = [Passage { text: faq.into() }];
        let mut g = Grounder::new(&passages);
        g.set_question("What does error code E4 on the Helios H2 thermostat mean?");
        let answer = "Error code E4 on the Helios H2 thermostat means the thermostat has lost power from the C-wire.";
        let grounding = g.ground(answer, None);
        let cited: Vec<&str> = grounding
            .citations
            .iter()
            .flat_map(|c| c.sources.iter().map(|s| s.text.as_str()))
            .collect();
        assert!(
            cited.iter().any(|t| t.contains("lost power")),
            "{grounding:?}"
        );
        assert!(
            !cited.iter().any(|t| t.contains("What does it mean")),
            "{cited:?}"
        );
    }

    #[test]
    fn a_row_whose_range_misses_the_asked_number_does_not_support() {
        let table = "Service credits:\n\n| Monthly Uptime Percentage | Service credit |\n|---|---|\n| Below 99.95% but at least 99.0% | 10% |\n| Below 99.0% but at least 95.0% | 25% |\n| Below 95.0% | 50% |\n";
        let passages = [Passage { text: table.into() }];
        let mut g = Grounder::new(&passages);
        g.set_question("If uptime was only 97% in a month, what service credit applies?");
        let wrong = g.ground("The service credit is 10%.", None);
        assert!(wrong.claims.iter().all(|c| !c.supported), "{wrong:?}");
        let right = g.ground("The service credit is 25%.", None);
        assert!(right.claims.iter().all(|c| c.supported), "{right:?}");
        g.set_question("At 90% uptime, what is the credit?");
        let open_ended = g.ground("The service credit is 50%.", None);
        assert!(
            open_ended.claims.iter().all(|c| c.supported),
            "{open_ended:?}"
        );
        let wrong = g.ground("The service credit is 25%.", None);
        assert!(wrong.claims.iter().all(|c| !c.supported), "{wrong:?}");
    }

    #[test]
    fn numbers_from_the_question_may_be_restated() {
        let mut g = Grounder::new(&[Passage {
            text: "Purchases between $25,000 and $100,000 require three written quotes.".into(),
        }]);
        let claim = "A purchase of $30,000 requires three written quotes.";
        assert!(g.ground(claim, None).citations.is_empty());
        g.set_question("How many quotes does a $30,000 purchase need?");
        assert_eq!(g.ground(claim, None).citations.len(), 1);
    }

    #[test]
    fn declines_and_filler_cite_nothing() {
        let mut g = Grounder::new(&passages());
        let grounding = g.ground(
            "Sure. The documents do not say what the per diem in Japan is.",
            None,
        );
        assert!(grounding.is_decline());
        assert_eq!(grounding.groundedness(), None);
    }

    #[test]
    fn a_claim_from_two_documents_cites_both() {
        let mut g = Grounder::new(&passages());
        let grounding = g.ground("Hotels in London cost up to $250 per night and birth parents receive 20 weeks of leave.", None);
        assert_eq!(grounding.citations.len(), 1, "{grounding:?}");
        let sources: Vec<usize> = grounding.citations[0]
            .sources
            .iter()
            .map(|s| s.passage)
            .collect();
        assert_eq!(sources, [0, 1]);
    }
}
