//! Custom domains on the wire, and what a valid one is.

use serde::{Deserialize, Serialize};

/// A custom domain and the app that serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainInfo {
    /// The name (`www.example.org`).
    pub name: String,
    /// The app that serves it.
    pub app: String,
    /// Whether the app's berth.toml names it (`[http_service] domains`);
    /// else it was added with `berth domains add`.
    pub from_spec: bool,
    /// When it was added (RFC 3339).
    pub created_at: String,
    /// Served with berth's own CA's certificate even when the server has
    /// an ACME CA (`berth domains add --tls internal`).
    #[serde(default)]
    pub tls_internal: bool,
}

/// The answer of `GET /v1/domains/{name}/check`: whether the name can be
/// served over HTTPS, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainCheck {
    /// The name.
    pub name: String,
    /// The app that serves it.
    pub app: String,
    /// The addresses the name resolves to, from this machine.
    pub resolves_to: Vec<String>,
    /// Whether one of them is this machine's.
    pub points_here: bool,
    /// Where its certificate comes from: `acme` (and the directory) or
    /// `berth's own CA`; `none` without HTTPS.
    pub issuer: String,
    /// When its certificate expires (RFC 3339), when it has one.
    pub expires: Option<String>,
    /// When its certificate from the ACME CA is renewed (RFC 3339), and
    /// why then: at two thirds of its life, or in the CA's renewal window
    /// (ARI, RFC 9773).
    #[serde(default)]
    pub renews: Option<String>,
    /// Why it has no certificate (or cannot renew it), as the CA or the
    /// challenge said.
    pub problem: Option<String>,
    /// When berth tries again (RFC 3339).
    pub next_attempt: Option<String>,
}

/// Body of `POST /v1/apps/{app}/domains`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddDomain {
    /// The name to serve.
    pub name: String,
    /// Serve it with berth's own CA's certificate, never the ACME CA's
    /// (a LAN name, a name the CA cannot reach).
    #[serde(default)]
    pub tls_internal: bool,
}

/// Top-level names no public CA issues for: reserved (RFC 2606, RFC 6761,
/// RFC 8375) or private by convention.
const PRIVATE_SUFFIXES: &[&str] = &[
    "localhost",
    "local",
    "lan",
    "home",
    "internal",
    "intranet",
    "corp",
    "private",
    "test",
    "invalid",
    "example",
    "home.arpa",
];

/// Whether a public CA could issue a certificate for `name`: a DNS name of
/// two labels or more, not an IP address, not under a reserved or private
/// top-level name (`*.localhost`, `*.lan`, `*.internal`, `*.home.arpa`, …).
/// Other names berth serves get its own CA's certificates.
pub fn publicly_certifiable(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<std::net::IpAddr>().is_ok() || !name.contains('.') {
        return false;
    }
    !PRIVATE_SUFFIXES
        .iter()
        .any(|suffix| name == *suffix || name.ends_with(&format!(".{suffix}")))
}

/// Checks a domain name and gives it in the form berth keeps: lowercase,
/// without a trailing dot. A DNS name of at least two labels, each 1 to 63
/// letters, digits or `-` (not at either end), at most 253 in all; not an
/// IP address, not under `localhost` (those are `APP.localhost` already),
/// no wildcard (that needs DNS-01, which berth does not do), and
/// international names in their `xn--` form.
pub fn validate_domain(name: &str) -> Result<String, String> {
    let trimmed = name.trim().trim_end_matches('.');
    let lower = trimmed.to_ascii_lowercase();
    let bad = |why: &str| Err(format!("`{name}` is not a domain berth can serve: {why}"));
    if lower.is_empty() {
        return bad("it is empty");
    }
    if !lower.is_ascii() {
        return bad("write an international name in its ASCII (xn--) form");
    }
    if lower.starts_with("*.") {
        return bad(
            "wildcard names need DNS-01 challenges, which berth does not do; add each name",
        );
    }
    if lower.parse::<std::net::IpAddr>().is_ok() || lower.starts_with('[') {
        return bad("it is an IP address; certificates and routing need a name");
    }
    if lower.len() > 253 {
        return bad("it is longer than 253 characters");
    }
    let labels: Vec<&str> = lower.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels, such as example.org");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return bad("each label between dots must be 1 to 63 characters");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad("labels hold only letters, digits and `-`");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with `-`");
        }
    }
    let top = labels[labels.len() - 1];
    if top.chars().all(|c| c.is_ascii_digit()) {
        return bad("its last label is all digits");
    }
    if top == "localhost" {
        return bad("names under localhost are APP.localhost already");
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_kept_lowercase_without_the_root_dot() {
        assert_eq!(
            validate_domain("WWW.Example.org.").unwrap(),
            "www.example.org"
        );
        assert_eq!(
            validate_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn only_names_a_public_ca_can_reach_are_public() {
        for public in ["www.example.org", "shop.example.com", "a.b.co.uk"] {
            assert!(publicly_certifiable(public), "{public}");
        }
        for private in [
            "shop.localhost",
            "nas.lan",
            "printer.home.arpa",
            "db.internal",
            "intranet",
            "10.0.0.1",
            "::1",
            "foo.test",
        ] {
            assert!(!publicly_certifiable(private), "{private}");
        }
    }

    #[test]
    fn each_bad_domain_says_why() {
        for (name, why) in [
            ("", "empty"),
            ("example", "two labels"),
            ("bad_name.example.org", "letters, digits"),
            ("-www.example.org", "start or end"),
            ("*.example.org", "wildcard"),
            ("127.0.0.1", "IP address"),
            ("shop.localhost", "APP.localhost"),
            ("bücher.example", "xn--"),
            ("a..example.org", "1 to 63"),
            ("example.123", "all digits"),
        ] {
            let err = validate_domain(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
        let long = format!("{}.org", "a".repeat(64));
        assert!(validate_domain(&long).unwrap_err().contains("1 to 63"));
    }
}
