//! A policy's own detectors: named regular expressions and term lists.

use regex::{Regex, RegexBuilder};

use crate::finding::{Finding, Kind};

#[derive(Debug, thiserror::Error)]
#[error("pattern '{name}' is not a valid regular expression: {reason}")]
pub struct CustomError {
    pub name: String,
    pub reason: String,
}

/// Largest compiled pattern a policy may carry (bounds memory and matching time).
const MAX_PATTERN_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub enum CustomDetector {
    Pattern {
        name: String,
        regex: Regex,
    },
    /// Whole-word, case-insensitive terms (one alternation, matched in linear time).
    Terms {
        name: String,
        regex: Regex,
        /// Bytes of the longest term.
        longest: usize,
    },
}

/// Compiles a policy's pattern within the size bound, naming it in the error.
fn compile(name: &str, pattern: &str) -> Result<Regex, CustomError> {
    RegexBuilder::new(pattern)
        .size_limit(MAX_PATTERN_BYTES)
        .build()
        .map_err(|e| CustomError {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

impl CustomDetector {
    pub fn pattern(name: &str, pattern: &str) -> Result<Self, CustomError> {
        let regex = compile(name, pattern)?;
        Ok(Self::Pattern {
            name: name.to_string(),
            regex,
        })
    }

    pub fn terms(name: &str, terms: &[String]) -> Result<Self, CustomError> {
        // A word boundary only at an edge that is a word character (`C++`, `$ACME` match too).
        let edge = |c: Option<char>| match c {
            Some(c) if c.is_alphanumeric() || c == '_' => r"\b",
            _ => "",
        };
        let alternation = terms
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(|t| {
                let (first, last) = (t.chars().next(), t.chars().next_back());
                format!("{}{}{}", edge(first), regex::escape(t), edge(last))
            })
            .collect::<Vec<_>>()
            .join("|");
        let longest = terms.iter().map(|t| t.trim().len()).max().unwrap_or(0);
        let regex = compile(name, &format!(r"(?i)(?:{alternation})"))?;
        Ok(Self::Terms {
            name: name.to_string(),
            regex,
            longest,
        })
    }

    /// The longest text a term list matches (0 for patterns, whose length is unbounded).
    pub fn longest_literal(&self) -> usize {
        match self {
            Self::Terms { longest, .. } => *longest,
            Self::Pattern { .. } => 0,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Pattern { name, .. } | Self::Terms { name, .. } => name,
        }
    }

    pub fn scan(&self, text: &str, found: &mut Vec<Finding>) {
        let (regex, kind, detector) = match self {
            Self::Pattern { name, regex } => (regex, Kind::Pattern, format!("pattern:{name}")),
            Self::Terms { name, regex, .. } => (regex, Kind::Term, format!("terms:{name}")),
        };
        for m in regex.find_iter(text) {
            if m.start() < m.end() {
                found.push(Finding::new(detector.clone(), kind, m.start(), m.end()));
            }
        }
    }
}
