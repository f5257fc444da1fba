//! Content terms of a text: the words and numbers that carry its meaning, normalised so that an
//! answer's wording can be matched against a document's ("reimbursed" ~ "reimburses",
//! "1,500" ~ "1500"), each with its position in code points.

use std::collections::HashSet;
use std::sync::OnceLock;

/// One content term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The normalised form terms are compared by.
    pub key: String,
    /// Code-point offsets of the term in the text it came from.
    pub start: usize,
    pub end: usize,
    /// A number or a name: a claim naming one must find it in its source, not just similar words.
    pub specific: bool,
}

/// Words that carry no claim of their own.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "either",
    "etc",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "however",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "may",
    "me",
    "might",
    "more",
    "most",
    "must",
    "my",
    "no",
    "nor",
    "not",
    "now",
    // Synonyms of "now": they restate when, never what.
    "currently",
    "presently",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "out",
    "over",
    "own",
    "per",
    "same",
    "shall",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "thus",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "would",
    "yes",
    "you",
    "your",
    "yours",
    "according",
    "document",
    "documents",
    "mentioned",
    "stated",
    "states",
    "state",
    "says",
    "say",
    "said",
    "based",
    "provided",
    "given",
    "following",
    "listed",
];

fn is_stopword(word: &str) -> bool {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| STOPWORDS.iter().copied().collect())
        .contains(word)
}

/// A light, symmetric English stemmer: good enough to equate inflections, never applied to
/// numbers.
fn stem(word: &str) -> String {
    let n = word.chars().count();
    let strip = |suffix: &str, keep: &str| -> Option<String> {
        word.strip_suffix(suffix)
            .map(|base| format!("{base}{keep}"))
    };
    if n > 4 {
        if let Some(s) = strip("ies", "y") {
            return s;
        }
    }
    if n > 5 {
        if let Some(s) = strip("ing", "") {
            return s;
        }
    }
    if n > 4 {
        if let Some(s) = strip("ed", "") {
            return s;
        }
    }
    if n > 3
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

/// Normalised number text: thousands separators and a trailing `.0`/`.00` dropped.
fn number_key(raw: &str) -> String {
    let plain: String = raw.chars().filter(|c| *c != ',').collect();
    match plain.split_once('.') {
        Some((whole, frac)) if frac.chars().all(|c| c == '0') => whole.to_string(),
        _ => plain,
    }
}

/// The content terms of `text`, in order. A capitalised word that does not begin a sentence is
/// taken for a name.
pub fn terms(text: &str) -> Vec<Term> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut at_sentence_start = true;
    while i < chars.len() {
        let c = chars[i];
        if !c.is_alphanumeric() {
            if matches!(c, '.' | '!' | '?' | '\n' | ':') {
                at_sentence_start = true;
            }
            i += 1;
            continue;
        }
        let start = i;
        let numeric_start = c.is_ascii_digit();
        // A run of letters and digits; inside a number, `,` and `.` followed by a digit belong to it.
        while i < chars.len() {
            let ch = chars[i];
            if ch.is_alphanumeric() {
                i += 1;
            } else if numeric_start
                && matches!(ch, ',' | '.')
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())
                && chars[i - 1].is_ascii_digit()
            {
                i += 2;
            } else {
                break;
            }
        }
        let raw: String = chars[start..i].iter().collect();
        let has_digit = raw.chars().any(|ch| ch.is_ascii_digit());
        let lower = raw.to_lowercase();
        let first_upper = raw.chars().next().is_some_and(char::is_uppercase);
        let key = if has_digit {
            number_key(&lower)
        } else if is_stopword(&lower) || lower.chars().count() < 2 {
            at_sentence_start = false;
            continue;
        } else {
            stem(&lower)
        };
        let acronym = raw.chars().count() > 1 && raw.chars().all(|ch| !ch.is_lowercase());
        out.push(Term {
            key,
            start,
            end: i,
            specific: has_digit || acronym || (first_upper && !at_sentence_start),
        });
        at_sentence_start = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        terms(text).into_iter().map(|t| t.key).collect()
    }

    #[test]
    fn numbers_normalise_and_words_stem() {
        assert_eq!(
            keys("Meals are reimbursed up to $1,500.00 per day."),
            ["meal", "reimburs", "1500", "day"]
        );
        assert_eq!(keys("The meal is reimbursed"), ["meal", "reimburs"]);
        assert_eq!(
            keys("3.5% of 14-day policies"),
            ["3.5", "14", "day", "policy"]
        );
    }

    #[test]
    fn offsets_are_code_points() {
        let text = "Prämie: 250 € für Zürich.";
        let found = terms(text);
        let chars: Vec<char> = text.chars().collect();
        for t in &found {
            let slice: String = chars[t.start..t.end].iter().collect();
            assert!(!slice.is_empty());
        }
        let zurich = found.iter().find(|t| t.key == "zürich").expect("zürich");
        assert!(zurich.specific);
        assert_eq!(
            chars[zurich.start..zurich.end].iter().collect::<String>(),
            "Zürich"
        );
    }

    #[test]
    fn names_inside_a_sentence_are_specific_and_sentence_starts_are_not() {
        let found = terms("Employees travelling to Japan need approval. Approval comes from HR.");
        let specific: Vec<&str> = found
            .iter()
            .filter(|t| t.specific)
            .map(|t| t.key.as_str())
            .collect();
        assert_eq!(specific, ["japan", "hr"]);
    }
}
