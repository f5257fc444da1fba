//! The deterministic detectors. Each is a pattern that finds candidates plus a check that
//! only real values pass (checksums, issuer prefixes, valid ranges, the context a credential
//! is named in), so look-alikes — order numbers, ISBNs, versions, UUIDs, hashes — are left
//! alone. Values may wrap over a line break between groups and sit inside punctuation.

mod contact;
mod context;
mod custom;
mod financial;
mod network;
mod secrets;

pub use custom::{CustomDetector, CustomError};

use crate::finding::{Finding, Kind};

/// Separators allowed between the digit groups of a card, account or phone number: a space,
/// dash or dot, or a line break with the spaces around it.
pub(crate) const GROUP_SEP: &str = r"(?:[ \-]|[ \t]{0,4}\r?\n[ \t]{0,4})";

/// The built-in detectors, compiled once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Detectors;

impl Detectors {
    /// Every built-in finding in `text`, by start; of overlapping ones, a secret wins over what
    /// it contains, otherwise the longer.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        resolve_overlaps(self.scan_raw(text))
    }

    /// Every built-in finding, overlapping ones included (a policy filters them by kind before
    /// it resolves overlaps, so a kind it ignores never hides one it acts on).
    pub fn scan_raw(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        // Secrets first: a password inside a URL (`postgres://app:PASSWORD@db`) is a secret, not
        // the local part of an address.
        secrets::find(text, &mut found);
        contact::emails(text, &mut found);
        financial::cards(text, &mut found);
        financial::ibans(text, &mut found);
        financial::ssns(text, &mut found);
        network::ips(text, &mut found);
        contact::phones(text, &mut found);
        found
    }

    /// Findings of the given kinds only.
    pub fn scan_kinds(&self, text: &str, kinds: &[Kind]) -> Vec<Finding> {
        let mut found = self.scan_raw(text);
        found.retain(|f| kinds.contains(&f.kind));
        resolve_overlaps(found)
    }
}

/// Of overlapping findings keeps one: a secret over what it contains, otherwise the longer.
/// Sorted by start and swept once (attacker-sized texts hold many findings).
pub(crate) fn resolve_overlaps(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        match kept.last_mut() {
            Some(last) if last.overlaps(&f) => {
                let rank = |x: &Finding| (x.kind == Kind::Secret, x.end - x.start);
                if rank(&f) > rank(last) {
                    *last = f;
                }
            }
            _ => kept.push(f),
        }
    }
    kept
}

/// The digits of `s` with the byte offset of each in `s`.
pub(crate) fn digits_at(s: &str) -> Vec<(usize, u8)> {
    s.bytes()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(i, b)| (i, b - b'0'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        Detectors
            .scan(text)
            .into_iter()
            .map(|f| (f.kind, text[f.start..f.end].to_string()))
            .collect()
    }

    #[test]
    fn finds_each_kind_in_punctuation() {
        let text = "Mail (ana.lopez+hr@corp.example.org), card 4242-4242-4242-4242; \
                    IBAN DE89 3704 0044 0532 0130 00. SSN 123-45-6789, host 10.0.4.17, \
                    call +44 20 7946 0958.";
        let found = kinds(text);
        assert!(
            found.contains(&(Kind::Email, "ana.lopez+hr@corp.example.org".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&(Kind::Card, "4242-4242-4242-4242".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&(Kind::Iban, "DE89 3704 0044 0532 0130 00".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&(Kind::UsSsn, "123-45-6789".into())),
            "{found:?}"
        );
        assert!(found.contains(&(Kind::Ip, "10.0.4.17".into())), "{found:?}");
        assert!(
            found.contains(&(Kind::Phone, "+44 20 7946 0958".into())),
            "{found:?}"
        );
    }

    #[test]
    fn finds_values_wrapped_over_a_line() {
        let found = kinds("card: 4111 1111\n1111 1111 ok");
        assert_eq!(found, vec![(Kind::Card, "4111 1111\n1111 1111".into())]);
    }

    #[test]
    fn leaves_look_alikes_alone() {
        for text in [
            "card ending **** **** **** 4242",
            "order 1234 5678 9012 3456 shipped",
            "ISBN 978-3-16-148410-0",
            "build 10.0.19045.3693",
            "version 1.2.3.4 released",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
            "SSN-like 000-12-3456 and 666-12-3456",
            "IBAN DE88 3704 0044 0532 0130 00 has a bad check",
            "octets 999.10.10.10",
            "at 12:30:45 on 2024-03-15",
            "see RFC 5322 and ISO 27001:2022",
        ] {
            assert!(kinds(text).is_empty(), "{text}: {:?}", kinds(text));
        }
    }
}
