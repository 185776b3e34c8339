//! Tunnel tokens. The relay keeps, per home server, a name, the SHA-256 of
//! its secret and the domains it may serve (`shop.example.com`, or
//! `*.home.example.com` for every name under it), in `DATA/tokens.json`
//! (0600). The token a home server is given is the secret and the
//! fingerprint of the relay's CA: the home server checks the relay by it,
//! so the secret never goes to an impostor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::TunnelError;

/// A token as a home server holds it: `SECRET.FINGERPRINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelToken {
    /// 32 random bytes, hex.
    pub secret: String,
    /// SHA-256 of the relay's CA certificate, hex.
    pub relay_ca: String,
}

impl TunnelToken {
    /// Reads `SECRET.FINGERPRINT`.
    pub fn parse(text: &str) -> Result<TunnelToken, TunnelError> {
        let bad = || {
            TunnelError::Token(
                "a tunnel token is two runs of 64 hex digits joined by a dot (`berth relay token add` prints one)"
                    .into(),
            )
        };
        let (secret, relay_ca) = text.trim().split_once('.').ok_or_else(bad)?;
        let hex64 = |part: &str| part.len() == 64 && part.chars().all(|c| c.is_ascii_hexdigit());
        if !hex64(secret) || !hex64(relay_ca) {
            return Err(bad());
        }
        Ok(TunnelToken {
            secret: secret.to_ascii_lowercase(),
            relay_ca: relay_ca.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for TunnelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.secret, self.relay_ca)
    }
}

/// SHA-256 of `secret`, hex: what the relay keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A home server the relay serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayToken {
    /// Its name (`home`).
    pub name: String,
    /// SHA-256 of its secret, hex.
    pub secret_sha256: String,
    /// Names it serves: exact, or `*.SUFFIX` for every name under SUFFIX.
    pub domains: Vec<String>,
}

impl RelayToken {
    /// Whether it serves `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.domains.iter().any(|pattern| matches(pattern, name))
    }
}

/// Whether `pattern` (exact or `*.SUFFIX`) covers `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        None => pattern == name,
    }
}

/// Whether two patterns could both cover one name.
pub fn overlap(a: &str, b: &str) -> bool {
    let wildcard_suffix = |pattern: &str| pattern.strip_prefix("*.").map(str::to_string);
    match (wildcard_suffix(a), wildcard_suffix(b)) {
        (None, None) => a == b,
        (Some(_), None) => matches(a, b),
        (None, Some(_)) => matches(b, a),
        (Some(x), Some(y)) => {
            x == y || x.ends_with(&format!(".{y}")) || y.ends_with(&format!(".{x}"))
        }
    }
}

/// Checks a domain pattern and gives it lowercase.
pub fn validate_pattern(pattern: &str) -> Result<String, TunnelError> {
    let (wildcard, name) = match pattern.trim().strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, pattern.trim()),
    };
    let name = berth_proto::validate_domain(name).map_err(TunnelError::Token)?;
    Ok(if wildcard { format!("*.{name}") } else { name })
}

/// The relay's tokens file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RelayTokens {
    /// Every home server's token.
    pub tokens: Vec<RelayToken>,
}

impl RelayTokens {
    /// The file in `data`.
    pub fn path(data: &Path) -> PathBuf {
        data.join("tokens.json")
    }

    /// Reads the tokens (none when there is no file yet).
    pub fn load(data: &Path) -> Result<RelayTokens, TunnelError> {
        let path = RelayTokens::path(data);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                TunnelError::Token(format!("{} is unreadable: {err}", path.display()))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(RelayTokens::default()),
            Err(err) => Err(TunnelError::Io(format!("{}: {err}", path.display()))),
        }
    }

    /// Writes the tokens, readable only by their owner.
    pub fn save(&self, data: &Path) -> Result<(), TunnelError> {
        std::fs::create_dir_all(data)
            .map_err(|err| TunnelError::Io(format!("{}: {err}", data.display())))?;
        // Written beside, then renamed over (see write_private): a running
        // relay reads either the old file or the new.
        let path = RelayTokens::path(data);
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        berth_tls::write_private(&path, &text)
            .map_err(|err| TunnelError::Io(format!("{}: {err}", path.display())))
    }

    /// Adds a home server named `name` serving `domains`; gives its
    /// secret. A name or a domain already given out is refused.
    pub fn add(&mut self, name: &str, domains: &[String]) -> Result<String, TunnelError> {
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(TunnelError::Token(format!(
                "`{name}` is not a token name: use lowercase letters, digits and `-`"
            )));
        }
        if self.tokens.iter().any(|token| token.name == name) {
            return Err(TunnelError::Token(format!(
                "a token named `{name}` exists; remove it first"
            )));
        }
        if domains.is_empty() {
            return Err(TunnelError::Token(
                "name at least one domain the home server may serve (--domain)".into(),
            ));
        }
        let mut patterns = Vec::new();
        for domain in domains {
            let pattern = validate_pattern(domain)?;
            let taken = self.tokens.iter().find_map(|token| {
                let other = token
                    .domains
                    .iter()
                    .find(|other| overlap(other, &pattern))?;
                Some((token, other))
            });
            if let Some((owner, other)) = taken {
                return Err(TunnelError::Token(format!(
                    "`{pattern}` is already served by the token `{}` (as `{other}`)",
                    owner.name
                )));
            }
            patterns.push(pattern);
        }
        let secret = hex::encode(rand::random::<[u8; 32]>());
        self.tokens.push(RelayToken {
            name: name.to_string(),
            secret_sha256: secret_hash(&secret),
            domains: patterns,
        });
        Ok(secret)
    }

    /// Removes the token `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|token| token.name != name);
        before != self.tokens.len()
    }

    /// The token whose secret is `secret`.
    pub fn by_secret(&self, secret: &str) -> Option<&RelayToken> {
        let hash = secret_hash(secret);
        self.tokens.iter().find(|token| {
            // Compared whole, in constant time for equal lengths.
            token.secret_sha256.len() == hash.len()
                && token
                    .secret_sha256
                    .bytes()
                    .zip(hash.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        })
    }

    /// The token that serves `name`: an exact domain before a wildcard.
    pub fn owner_of(&self, name: &str) -> Option<&RelayToken> {
        self.tokens
            .iter()
            .find(|token| token.domains.iter().any(|domain| domain == name))
            .or_else(|| self.tokens.iter().find(|token| token.serves(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_domains_and_no_two_share_one() {
        let mut tokens = RelayTokens::default();
        let secret = tokens
            .add(
                "home",
                &["Shop.Example.com".into(), "*.home.example.com".into()],
            )
            .unwrap();
        assert_eq!(tokens.by_secret(&secret).unwrap().name, "home");
        assert!(tokens.by_secret(&"0".repeat(64)).is_none());
        assert_eq!(tokens.owner_of("shop.example.com").unwrap().name, "home");
        assert_eq!(
            tokens.owner_of("api.home.example.com").unwrap().name,
            "home"
        );
        assert!(tokens.owner_of("home.example.com").is_none());
        assert!(tokens.owner_of("evil.example.com").is_none());
        assert!(tokens.owner_of("xhome.example.com").is_none());
        // Names under another token's wildcard, or wildcards over its names.
        assert!(
            tokens
                .add("other", &["api.home.example.com".into()])
                .is_err()
        );
        assert!(
            tokens
                .add("other", &["*.x.home.example.com".into()])
                .is_err()
        );
        assert!(tokens.add("other", &["*.example.com".into()]).is_err());
        let taken = tokens
            .add("other", &["shop.example.com".into()])
            .unwrap_err();
        assert!(
            taken
                .to_string()
                .contains("already served by the token `home`"),
            "{taken}"
        );
        assert!(tokens.add("home", &["b.example.com".into()]).is_err());
        assert!(tokens.add("Bad Name", &["b.example.com".into()]).is_err());
        assert!(tokens.add("x", &[]).is_err());
        assert!(tokens.add("x", &["not a domain".into()]).is_err());
        assert!(tokens.add("x", &["10.0.0.1".into()]).is_err());
        assert!(tokens.remove("home"));
        assert!(!tokens.remove("home"));
    }

    #[test]
    fn a_token_carries_the_relay_fingerprint() {
        let text = format!("{}.{}", "ab".repeat(32), "CD".repeat(32));
        let token = TunnelToken::parse(&text).unwrap();
        assert_eq!(token.relay_ca, "cd".repeat(32));
        assert_eq!(token.to_string(), text.to_ascii_lowercase());
        assert!(TunnelToken::parse("secret").is_err());
        assert!(TunnelToken::parse(&format!("{}.{}", "ab".repeat(31), "cd".repeat(32))).is_err());
        assert!(TunnelToken::parse(&format!("{}.{}", "zz".repeat(32), "cd".repeat(32))).is_err());
    }
}
