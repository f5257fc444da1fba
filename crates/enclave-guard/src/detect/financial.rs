//! Payment cards (Luhn and issuer prefixes), IBANs (mod-97 and per-country length) and US
//! Social Security numbers (valid ranges).

use std::sync::LazyLock;

use regex::Regex;

use super::context::names;
use super::{digits_at, GROUP_SEP};
use crate::finding::{Finding, Kind};

/// A run of 12–19 digits, grouped or not.
static CARD_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?-u:\b)[0-9](?:{GROUP_SEP}?[0-9]){{11,22}}(?-u:\b)"
    ))
    .expect("card pattern")
});

pub(crate) fn cards(text: &str, found: &mut Vec<Finding>) {
    for m in CARD_RUN.find_iter(text) {
        let run = m.as_str();
        let digits = digits_at(run);
        // Starts: the first digit and each digit after a separator; lengths end at a group end.
        let group_start = |i: usize| i == 0 || digits[i].0 != digits[i - 1].0 + 1;
        let group_end = |i: usize| i + 1 == digits.len() || digits[i + 1].0 != digits[i].0 + 1;
        let mut from = 0;
        'starts: while from < digits.len() {
            if group_start(from) {
                for len in [16, 15, 19, 14, 13, 18, 17] {
                    let last = from + len - 1;
                    if last < digits.len() && group_end(last) {
                        let number: Vec<u8> = digits[from..=last].iter().map(|d| d.1).collect();
                        if luhn(&number) && issuer(&number) {
                            found.push(Finding::new(
                                "card",
                                Kind::Card,
                                m.start() + digits[from].0,
                                m.start() + digits[last].0 + 1,
                            ));
                            from = last + 1;
                            continue 'starts;
                        }
                    }
                }
            }
            from += 1;
        }
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the number starts like a card of a real issuer with that length.
fn issuer(d: &[u8]) -> bool {
    let prefix = |n: usize| d.iter().take(n).fold(0u32, |a, &x| a * 10 + u32::from(x));
    let len = d.len();
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => (51..=55).contains(&prefix(2)) && len == 16,
        2 => (2221..=2720).contains(&prefix(4)) && len == 16,
        3 => {
            let two = prefix(2);
            ((two == 34 || two == 37) && len == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len))
                || ((two == 36 || two == 38 || (300..=305).contains(&prefix(3)))
                    && (14..=19).contains(&len))
        }
        6 => {
            (prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// A country code, check digits, then 11–30 letters and digits in groups of four.
static IBAN_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?-u:\b)[A-Z]{{2}}[0-9]{{2}}(?:{GROUP_SEP}?[A-Z0-9]){{11,30}}"
    ))
    .expect("iban pattern")
});

/// IBAN lengths of the countries that use it.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VG", 24),
    ("XK", 20),
];

pub(crate) fn ibans(text: &str, found: &mut Vec<Finding>) {
    for m in IBAN_RUN.find_iter(text) {
        let run = m.as_str();
        let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| run.starts_with(c)) else {
            continue;
        };
        // The country's length of letters and digits, wherever the run goes on after it.
        let chars: Vec<(usize, u8)> = run
            .bytes()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_alphanumeric())
            .collect();
        if chars.len() < len {
            continue;
        }
        let value: Vec<u8> = chars[..len].iter().map(|c| c.1).collect();
        let end = m.start() + chars[len - 1].0 + 1;
        let next = text[end..].chars().next();
        // A value that runs straight on into more letters or digits is something else.
        let runs_on = next.is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.get(len).is_some_and(|c| c.0 == chars[len - 1].0 + 1);
        if !runs_on && mod97(&value) {
            found.push(Finding::new("iban", Kind::Iban, m.start(), end));
        }
    }
}

fn mod97(iban: &[u8]) -> bool {
    let mut remainder: u32 = 0;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

static SSN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?-u:\b)([0-9]{3})([- ])([0-9]{2})([- ])([0-9]{4})(?-u:\b)|(?-u:\b)([0-9]{9})(?-u:\b)",
    )
    .expect("ssn pattern")
});

const SSN_WORDS: &[&str] = &["ssn", "social security", "soc. sec", "tin", "taxpayer"];

pub(crate) fn ssns(text: &str, found: &mut Vec<Finding>) {
    for c in SSN.captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        let (area, group, serial) = match (c.get(1), c.get(3), c.get(5), c.get(6)) {
            (Some(a), Some(g), Some(s), _) => {
                // One separator style per number.
                if c.get(2).map(|x| x.as_str()) != c.get(4).map(|x| x.as_str()) {
                    continue;
                }
                (a.as_str(), g.as_str(), s.as_str())
            }
            (_, _, _, Some(bare)) if names(text, m.start(), 40, SSN_WORDS) => {
                let b = bare.as_str();
                (&b[..3], &b[3..5], &b[5..])
            }
            _ => continue,
        };
        let area_ok = area != "000" && area != "666" && !area.starts_with('9');
        if area_ok && group != "00" && serial != "0000" && !dashed_on(text, m.start(), m.end()) {
            found.push(Finding::new("us_ssn", Kind::UsSsn, m.start(), m.end()));
        }
    }
}

/// A number that is one part of a longer dashed code (`978-123-45-6789`) is not an SSN.
fn dashed_on(text: &str, start: usize, end: usize) -> bool {
    let before = &text.as_bytes()[..start];
    let after = &text.as_bytes()[end..];
    let digit_joined = |b: &[u8]| b.len() >= 2 && b[0] == b'-' && b[1].is_ascii_digit();
    digit_joined(after)
        || (before.len() >= 2
            && before[before.len() - 1] == b'-'
            && before[before.len() - 2].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_issuers() {
        let d = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<u8>>();
        assert!(luhn(&d("4242424242424242")) && issuer(&d("4242424242424242")));
        assert!(luhn(&d("378282246310005")) && issuer(&d("378282246310005")));
        assert!(!luhn(&d("4242424242424241")));
        assert!(mod97(b"GB82WEST12345698765432"));
        assert!(!mod97(b"GB83WEST12345698765432"));
    }

    #[test]
    fn amex_grouped_and_iban_compact() {
        let mut found = Vec::new();
        cards("Amex 3782 822463 10005.", &mut found);
        assert_eq!(found.len(), 1);
        let mut found = Vec::new();
        ibans("IBAN: GB82WEST12345698765432, thanks", &mut found);
        assert_eq!(found.len(), 1);
    }
}
