//! Credentials: provider keys by their documented shapes, PEM private keys, JWTs, and
//! random-looking tokens where the text names them as a credential.

use std::sync::LazyLock;

use regex::Regex;

use crate::finding::{Finding, Kind};

/// (detector, pattern) of keys whose shape alone says what they are.
const PROVIDER_KEYS: &[(&str, &str)] = &[
    (
        "pem_private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    ),
    // A key block cut off before its END line (a token limit, or told to leave it off).
    (
        "pem_private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----\s*[A-Za-z0-9+/=]{16,}(?:\s*[A-Za-z0-9+/=]{16,})*",
    ),
    (
        "aws_access_key",
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b",
    ),
    (
        "github_token",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b",
    ),
    ("github_token", r"\bgithub_pat_[A-Za-z0-9_]{60,255}\b"),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_\-]{20,}\b"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}\b"),
    (
        "slack_webhook",
        r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}",
    ),
    (
        "stripe_key",
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}\b",
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    (
        "openai_key",
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,}",
    ),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("twilio_key", r"\bSK[0-9a-f]{32}\b"),
    (
        "sendgrid_key",
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}",
    ),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{34,}\b"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    ),
    (
        "url_credentials",
        r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:([^\s:/@]{6,})@",
    ),
];

static PROVIDERS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    PROVIDER_KEYS
        .iter()
        .map(|(name, pattern)| (*name, Regex::new(pattern).expect("provider pattern")))
        .collect()
});

/// A value after a word that names a credential: `password: X`, `api_key="X"`, `token X`,
/// `Bearer X`, `the password is X`, and the same words in other languages.
static NAMED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)(?:password|passwd|passphrase|pwd|secret|token|api[_\-. ]?key|apikey|access[_\-. ]?key|"#,
        r#"auth[_\-]?key|client[_\-. ]?secret|private[_\-. ]?key|credentials?|bearer|authorization|"#,
        r#"aws_secret_access_key|passwort|kennwort|mot de passe|contraseña|senha|clave|wachtwoord|"#,
        r#"hasło|haslo|heslo|lösenord|пароль|パスワード|密码|口令|密碼|토큰|비밀번호|كلمة المرور|şifre|mật khẩu)"#,
        // A few words may come between the name and the value ("the password for the test
        // server is …"), then a separator.
        r#"[^\n]{0,48}?(?:[ \t]{0,8}\r?\n?[ \t]{0,8}(?:[:=：]|=>|:=|\b(?:is|are|lautet|ist|est|es|è|é|era|wynosi|je|är|er|on|was)\b|は|是|为|為|는|은)[ \t]{0,8}\r?\n?[ \t]{0,8}){1,3}"#,
        r#"(?:bearer[ \t]{1,8})?["'`「『]?"#,
        r#"([A-Za-z0-9+/=_\-.~!@#$%^&*]{16,})"#
    ))
    .expect("named credential pattern")
});

pub(crate) fn find(text: &str, found: &mut Vec<Finding>) {
    for (name, pattern) in PROVIDERS.iter() {
        for c in pattern.captures_iter(text) {
            // Where the pattern marks a part (the password inside a URL), that part is the value.
            let Some(m) = c.get(1).or_else(|| c.get(0)) else {
                continue;
            };
            // A template's placeholder (`${DB_PASSWORD}`, `<password>`) holds no secret.
            if m.as_str().starts_with(['$', '<', '{', '%', '*']) {
                continue;
            }
            found.push(Finding::new(*name, Kind::Secret, m.start(), m.end()));
        }
    }
    for c in NAMED.captures_iter(text) {
        let Some(m) = c.get(1) else { continue };
        let value = m.as_str().trim_end_matches(['.', ',', '!', '"', '\'']);
        if random_looking(value) {
            found.push(Finding::new(
                "named_credential",
                Kind::Secret,
                m.start(),
                m.start() + value.len(),
            ));
        }
    }
}

/// Mixed letters and digits with enough entropy: not a word, a date or a path.
fn random_looking(value: &str) -> bool {
    // Paths and addresses (`/v1/users`, `api.example.com/v1`) are not credentials.
    let path_like = value.starts_with('/')
        || value.contains("://")
        || (value.contains('/') && value.contains('.'));
    if value.len() < 16 || path_like {
        return false;
    }
    let lower = value.bytes().any(|b| b.is_ascii_lowercase());
    let upper = value.bytes().any(|b| b.is_ascii_uppercase());
    let digit = value.bytes().any(|b| b.is_ascii_digit());
    let classes = [lower, upper, digit].iter().filter(|x| **x).count();
    classes >= 2 && digit && entropy(value) >= 3.3
}

/// Shannon entropy in bits per byte.
fn entropy(value: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in value.bytes() {
        counts[b as usize] += 1;
    }
    let n = value.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        find(text, &mut found);
        found.iter().map(|f| &text[f.start..f.end]).collect()
    }

    #[test]
    fn provider_keys_and_named_tokens() {
        assert_eq!(
            values("key AKIAIOSFODNN7EXAMPLE."),
            vec!["AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            values("export API_KEY=\"q8Zr2VbN4mK7xT1pL9sD3fGh\""),
            vec!["q8Zr2VbN4mK7xT1pL9sD3fGh"]
        );
        assert!(values("your API key is in the dashboard").is_empty());
        assert!(values("request id 7f3a9c2e1b4d5a6f8e9d0c1b").is_empty());
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(values(pem), vec![pem]);
    }
}
