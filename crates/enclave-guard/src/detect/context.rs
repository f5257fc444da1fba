//! Words before a candidate that say what it is: a credential, or not a personal value at all.

/// Up to `n` bytes of `text` before `at`, lower-cased, on a character boundary.
pub(crate) fn before(text: &str, at: usize, n: usize) -> String {
    let mut from = at.saturating_sub(n);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..at].to_lowercase()
}

/// Whether any of `words` occurs in the `n` bytes before `at`.
pub(crate) fn names(text: &str, at: usize, n: usize, words: &[&str]) -> bool {
    let window = before(text, at, n);
    words.iter().any(|w| window.contains(w))
}

/// Words that say a number is a version, a build or a document reference, not an address.
pub(crate) const VERSION_WORDS: &[&str] = &[
    "version",
    "build",
    "release",
    "firmware",
    "kernel",
    "v.",
    "ver ",
    "ver.",
    "update",
    "patch",
    "driver",
    "os ",
    "sdk",
    "section",
    "§",
    "chapter",
    "clause",
    "oid",
    "versión",
    "versione",
    "versão",
    "wersja",
    "バージョン",
    "版本",
    "構建",
    "构建",
    "빌드",
    "버전",
];

/// Whether the token before `at` is a four-character group of capitals and digits, as in a
/// grouped account number (`DE89 3704 …`): what follows is that number's next group.
pub(crate) fn after_code_group(text: &str, at: usize) -> bool {
    let before = text[..at].trim_end_matches(' ');
    if before.len() + 1 != at && before.len() + 2 != at {
        return false;
    }
    let token: String = before
        .chars()
        .rev()
        .take_while(|c| !c.is_whitespace())
        .collect();
    token.chars().count() == 4
        && token
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Words that say a number is a reference of some kind rather than a phone number.
pub(crate) const REFERENCE_WORDS: &[&str] = &[
    "isbn",
    "issn",
    "order",
    "invoice",
    "tracking",
    "sku",
    "part",
    "ref",
    "ticket",
    "case",
    "serial",
    "rfc",
    "iso",
    "section",
    "error",
    "code",
    "version",
    "build",
    "batch",
    "lot",
    "account no",
    "po ",
    "item",
    "article",
    "model",
    "commande",
    "bestell",
    "pedido",
    "rechnung",
    "facture",
    "factura",
];
