//! IPv4 and IPv6 addresses.

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;

use super::context::{names, VERSION_WORDS};
use crate::finding::{Finding, Kind};

static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)")
        .expect("ipv4 pattern")
});

/// Hex groups and colons; parsed by the standard library to keep only real addresses.
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%[0-9a-z]+)?",
    )
    .expect("ipv6 pattern")
});

const ADDRESS_WORDS: &[&str] = &[
    "ip",
    "address",
    "host",
    "localhost",
    "loopback",
    "bind",
    "listen",
    "adresse",
    "dirección",
];

pub(crate) fn ips(text: &str, found: &mut Vec<Finding>) {
    for m in IPV4.find_iter(text) {
        let octets_ok = m.as_str().split('.').all(|o| {
            o.parse::<u16>().is_ok_and(|v| v <= 255) && !(o.len() > 1 && o.starts_with('0'))
        });
        let bytes = text.as_bytes();
        // Part of a longer dotted number (a 5-part version) or after a `v`.
        let longer = text[m.end()..].starts_with('.')
            && bytes.get(m.end() + 1).is_some_and(u8::is_ascii_digit)
            || (m.start() > 0 && bytes[m.start() - 1] == b'.')
            || (m.start() > 0 && matches!(bytes[m.start() - 1], b'v' | b'V'));
        if octets_ok && !longer && !names(text, m.start(), 24, VERSION_WORDS) {
            found.push(Finding::new("ipv4", Kind::Ip, m.start(), m.end()));
        }
    }
    for m in IPV6.find_iter(text) {
        let value = m.as_str().trim_end_matches(':');
        let value = value.split('%').next().unwrap_or(value);
        let bytes = text.as_bytes();
        let glued = (m.start() > 0 && (bytes[m.start() - 1].is_ascii_alphanumeric()))
            || text[m.start() + value.len()..].starts_with(|c: char| c.is_ascii_alphanumeric());
        if glued || value.parse::<Ipv6Addr>().is_err() {
            continue;
        }
        // `::1` and other very short forms only where the text speaks of addresses.
        let groups = value.split(':').filter(|g| !g.is_empty()).count();
        if groups < 2 && !names(text, m.start(), 32, ADDRESS_WORDS) {
            continue;
        }
        let end = m.start() + value.len();
        found.push(Finding::new("ipv6", Kind::Ip, m.start(), end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        ips(text, &mut found);
        found.iter().map(|f| &text[f.start..f.end]).collect()
    }

    #[test]
    fn addresses() {
        assert_eq!(values("from 203.0.113.9."), vec!["203.0.113.9"]);
        assert_eq!(
            values("peer fe80::1ff:fe23:4567:890a up"),
            vec!["fe80::1ff:fe23:4567:890a"]
        );
        assert_eq!(values("[2001:db8::1]:443"), vec!["2001:db8::1"]);
        assert_eq!(values("bind to ::1 only"), vec!["::1"]);
        assert!(values("MAC 00:1A:2B:3C:4D:5E").is_empty());
        assert!(values("at 12:30:45").is_empty());
        assert!(values("256.1.1.1").is_empty());
    }
}
