//! E-mail addresses and phone numbers.

use std::sync::LazyLock;

use regex::Regex;

use super::context::{after_code_group, names, REFERENCE_WORDS};
use crate::finding::{Finding, Kind};

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9](?:[a-z0-9._%+\-]{0,63})@[a-z0-9](?:[a-z0-9\-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,62}[a-z0-9])?)*\.[a-z]{2,24}\b")
        .expect("email pattern")
});

pub(crate) fn emails(text: &str, found: &mut Vec<Finding>) {
    for m in EMAIL.find_iter(text) {
        // A local part glued to a word (`x@y` inside a path or handle run) is still an address.
        found.push(Finding::new("email", Kind::Email, m.start(), m.end()));
    }
}

/// International numbers: `+` or `00`, a country code, then groups. Separators include one
/// line break between groups.
static INTERNATIONAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:\+|(?-u:\b)00)[1-9][0-9]{0,2}(?:(?:[ .\-]|[ \t]{0,4}\r?\n[ \t]{0,4})?\(?[0-9]{1,5}\)?){1,6}",
    )
    .expect("international phone pattern")
});

/// North American numbers with separators: `(415) 555-0132`, `415-555-0132`, `415.555.0132`.
static NANP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\([0-9]{3}\)[ .\-]?|(?-u:\b)[0-9]{3}[.\-])[0-9]{3}[.\-][0-9]{4}(?-u:\b)")
        .expect("nanp pattern")
});

/// National numbers with a trunk 0 and separated groups: `020 7946 0958`, `01 42 68 53 00`.
static TRUNK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?-u:\b)0[0-9]{1,4}(?:(?:[ .\-/]|[ \t]{0,4}\r?\n[ \t]{0,4})[0-9]{2,8}){1,4}(?-u:\b)",
    )
    .expect("trunk pattern")
});

/// Grouped national numbers without a trunk 0 (`912 345 678`), taken only where the text
/// says phone.
static SPOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)[1-9][0-9]{1,3}(?:[ .\-][0-9]{2,4}){2,3}(?-u:\b)")
        .expect("spoken phone pattern")
});

/// Words that say a nearby number is a phone number.
const PHONE_WORDS: &[&str] = &[
    "phone",
    "tel",
    "call",
    "mobile",
    "cell",
    "fax",
    "whatsapp",
    "sms",
    "text me",
    "reach",
    "contact",
    "ring",
    "dial",
    "número",
    "numero",
    "telefon",
    "téléphone",
    "portable",
    "handy",
    "teléfono",
    "móvil",
    "cellulare",
    "telefoon",
    "telefone",
    "電話",
    "电话",
    "手机",
    "携帯",
    "☎",
    "📞",
];

pub(crate) fn phones(text: &str, found: &mut Vec<Finding>) {
    for m in INTERNATIONAL.find_iter(text) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        let leading = if m.as_str().starts_with("00") { 2 } else { 0 };
        let end = trim_open_paren(text, m.start(), m.end());
        let continues_code = !m.as_str().starts_with('+') && after_code_group(text, m.start());
        if (8..=15).contains(&(digits - leading)) && !continues_code && !glued(text, m.start(), end)
        {
            found.push(Finding::new("phone", Kind::Phone, m.start(), end));
        }
    }
    for m in NANP.find_iter(text) {
        let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
        // Area and exchange codes never start with 0 or 1.
        let plausible = digits[0] >= b'2' && digits[3] >= b'2';
        if plausible
            && !glued(text, m.start(), m.end())
            && !names(text, m.start(), 24, REFERENCE_WORDS)
        {
            found.push(Finding::new("phone", Kind::Phone, m.start(), m.end()));
        }
    }
    spoken_phones(text, found);
    for m in TRUNK.find_iter(text) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        let spoken_of = names(text, m.start(), 40, PHONE_WORDS);
        let date_like = m.as_str().contains('.') && digits <= 8;
        // `000-12-3456` is shaped like an SSN, not a trunk number, unless the text says phone.
        let ssn_shaped = m.as_str().len() == 11
            && m.as_str().as_bytes()[3] == b'-'
            && m.as_str().as_bytes()[6] == b'-';
        if (9..=12).contains(&digits)
            && !date_like
            && (!ssn_shaped || spoken_of)
            && !after_code_group(text, m.start())
            && !glued(text, m.start(), m.end())
            && (spoken_of || !names(text, m.start(), 24, REFERENCE_WORDS))
        {
            found.push(Finding::new("phone", Kind::Phone, m.start(), m.end()));
        }
    }
}

/// Grouped numbers the text names as phone numbers.
fn spoken_phones(text: &str, found: &mut Vec<Finding>) {
    for m in SPOKEN.find_iter(text) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (9..=11).contains(&digits)
            && names(text, m.start(), 40, PHONE_WORDS)
            && !after_code_group(text, m.start())
            && !glued(text, m.start(), m.end())
        {
            found.push(Finding::new("phone", Kind::Phone, m.start(), m.end()));
        }
    }
}

/// A trailing `(` with nothing after it belongs to the text, not the number.
fn trim_open_paren(text: &str, start: usize, mut end: usize) -> usize {
    while end > start && matches!(text.as_bytes()[end - 1], b'(' | b' ' | b'-' | b'.') {
        end -= 1;
    }
    end
}

/// A number glued to letters, digits or version dots on either side is part of something else.
fn glued(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    // Only Latin letters and digits join: CJK text runs straight into numbers.
    let joins = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let dotted =
        text[end..].starts_with('.') && text[end + 1..].starts_with(|c: char| c.is_ascii_digit());
    joins(before) || joins(after) || dotted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone_values(text: &str) -> Vec<&str> {
        crate::Detectors
            .scan_kinds(text, &[Kind::Phone])
            .iter()
            .map(|f| &text[f.start..f.end])
            .collect()
    }

    #[test]
    fn phone_formats() {
        assert_eq!(
            phone_values("call +1 (415) 555-0132."),
            vec!["+1 (415) 555-0132"]
        );
        assert_eq!(phone_values("Tel: 020 7946 0958"), vec!["020 7946 0958"]);
        assert_eq!(
            phone_values("Téléphone : 01 42 68 53 00"),
            vec!["01 42 68 53 00"]
        );
        assert_eq!(
            phone_values("ring (415) 555-0132 now"),
            vec!["(415) 555-0132"]
        );
        assert_eq!(phone_values("+81 3-1234-5678"), vec!["+81 3-1234-5678"]);
        assert!(phone_values("on 01.02.2024").is_empty());
        assert!(phone_values("ISBN 978-3-16-148410-0").is_empty());
    }
}
