//! What the distribution spec allows as a repository name, a tag and a
//! digest, checked before any of them becomes part of a path.

use std::fmt;

use crate::RegistryError;

/// The longest repository name the spec allows.
const MAX_NAME: usize = 255;

/// A repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` components
/// joined by `/`. No component is `.` or `..`, so it is a safe path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl RepoName {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<RepoName, RegistryError> {
        let invalid = || RegistryError::NameInvalid(name.chars().take(300).collect());
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(invalid());
        }
        for component in name.split('/') {
            if !valid_component(component) {
                return Err(invalid());
            }
        }
        Ok(RepoName(name.to_string()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+` runs separated by `.`, `_`, `__` or any number of `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut at = 0;
    while at < bytes.len() {
        if alnum(bytes[at]) {
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len() && !alnum(bytes[at]) {
            at += 1;
        }
        let separator = &component[start..at];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(dashes || separator == "." || separator == "_" || separator == "__") {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A sha256 digest, `sha256:` and 64 lower-case hex digits (the only
/// algorithm this registry stores).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Checks `text`.
    pub fn parse(text: &str) -> Result<Digest, RegistryError> {
        let invalid = || RegistryError::DigestInvalid(text.chars().take(100).collect());
        let (algorithm, hex) = text.split_once(':').ok_or_else(invalid)?;
        if algorithm != "sha256" {
            return Err(RegistryError::Unsupported(format!(
                "digest algorithm `{}` (only sha256)",
                algorithm.chars().take(20).collect::<String>()
            )));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        Ok(Digest(text.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    /// From a finished hasher.
    pub(crate) fn from_hasher(hasher: sha2::Sha256) -> Digest {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, a safe file name.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec_and_never_climb() {
        for good in ["hello", "library/hello", "a-b/c.d/e__f", "a---b", "0app"] {
            assert!(RepoName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "Hello", "../x", "a/../b", "a//b", "/a", "a/", ".", "a.", "-a", "a_-b", "a___b",
            "a b", "a\0b", "a%2fb",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_and_digests_follow_the_spec() {
        assert!(valid_tag("v1.0_rc-2") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
        let digest = Digest::of(b"hello");
        assert_eq!(
            digest.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(digest.as_str()).unwrap(), digest);
        assert!(matches!(
            Digest::parse("md5:abc"),
            Err(RegistryError::Unsupported(_))
        ));
        for bad in [
            "sha256:ABC",
            "sha256:../../etc",
            "sha256",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
