//! The local CA: an ECDSA P-256 key and a self-signed CA certificate in
//! `DATA/tls/` (the key 0600), made on first use and kept, so a root
//! trusted once stays trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::TlsError;

/// How long a certificate of the local CA is valid.
const LEAF_DAYS: i64 = 90;

/// berth's own certificate authority.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    certificate_der: CertificateDer<'static>,
}

fn crypto(err: impl std::fmt::Display) -> TlsError {
    TlsError::Crypto(err.to_string())
}

/// The CA's parameters: the same each time, so that the stored key signs
/// as the stored certificate's subject.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "berth local CA");
    name.push(DnType::OrganizationName, "berth");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl LocalCa {
    /// The CA in `dir` (`ca-key.pem`, `ca.pem`), made there if missing.
    pub fn open_or_create(dir: &Path) -> Result<LocalCa, TlsError> {
        let key_path = dir.join("ca-key.pem");
        let cert_path = dir.join("ca.pem");
        let io = |what, path: &PathBuf| {
            let path = path.clone();
            move |source| TlsError::Io { what, path, source }
        };
        if key_path.exists() && cert_path.exists() {
            let key_pem =
                std::fs::read_to_string(&key_path).map_err(io("cannot read", &key_path))?;
            let certificate_pem =
                std::fs::read_to_string(&cert_path).map_err(io("cannot read", &cert_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(crypto)?;
            let certificate_der = pem_to_der(&certificate_pem)?;
            return Ok(LocalCa {
                issuer: Issuer::new(ca_params(), key),
                certificate_pem,
                certificate_der,
            });
        }
        std::fs::create_dir_all(dir).map_err(io("cannot create", &dir.to_path_buf()))?;
        let key = KeyPair::generate().map_err(crypto)?;
        let mut params = ca_params();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let certificate = params.self_signed(&key).map_err(crypto)?;
        write_private(&key_path, &key.serialize_pem()).map_err(io("cannot write", &key_path))?;
        std::fs::write(&cert_path, certificate.pem()).map_err(io("cannot write", &cert_path))?;
        Ok(LocalCa {
            issuer: Issuer::new(ca_params(), key),
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().clone(),
        })
    }

    /// The CA's certificate, PEM: what a client trusts.
    pub fn root_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A new certificate for `name`, signed by the CA, as PEM: the chain
    /// (leaf first) and the PKCS#8 key — for a program that reads files.
    pub fn issue_pem(&self, name: &str) -> Result<(String, String), TlsError> {
        self.issue_pem_for(&[name.to_string()], LEAF_DAYS)
    }

    /// A certificate for several names (DNS names or IP addresses) lasting
    /// `days`, as PEM: the chain and the PKCS#8 key.
    pub fn issue_pem_for(&self, names: &[String], days: i64) -> Result<(String, String), TlsError> {
        let (certificate, key) = self.leaf(names, days)?;
        Ok((
            format!("{}{}", certificate.pem(), self.certificate_pem),
            key.serialize_pem(),
        ))
    }

    /// A new certificate for `name`, signed by the CA, with its chain.
    pub fn issue(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let (certificate, key) = self.leaf(&[name.to_string()], LEAF_DAYS)?;
        certified_key(
            vec![certificate.der().clone(), self.certificate_der.clone()],
            key.serialize_der(),
        )
    }

    fn leaf(&self, names: &[String], days: i64) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
        let key = KeyPair::generate().map_err(crypto)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(crypto)?;
        let mut subject = DistinguishedName::new();
        subject.push(
            DnType::CommonName,
            names.first().map_or("berth", String::as_str),
        );
        params.distinguished_name = subject;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(days);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(&key, &self.issuer).map_err(crypto)?;
        Ok((certificate, key))
    }
}

/// A chain and its PKCS#8 key, ready for rustls.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    pkcs8_key: Vec<u8>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key));
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(crypto)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The self-signed certificate of TLS-ALPN-01 (RFC 8737): for `name`,
/// with the critical acmeIdentifier extension holding `digest` (the
/// SHA-256 of the key authorization).
pub(crate) fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(crypto)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let certificate = params.self_signed(&key).map_err(crypto)?;
    certified_key(vec![certificate.der().clone()], key.serialize_der())
}

/// The chain and key of PEM text, for rustls.
pub(crate) fn certified_key_from_pem(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(crypto)?;
    if chain.is_empty() {
        return Err(TlsError::Crypto("no certificate in the chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(crypto)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(crypto)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(crypto)
}

/// Writes `text` to `path`, readable by its owner alone (mode 0600, also
/// when the file was there with another): into a new file beside it,
/// synced, then renamed over it, so a crash or a full disk leaves the old
/// text whole rather than an empty file.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file", path.display())))?;
    let mut fresh_name = std::ffi::OsString::from(".");
    fresh_name.push(name);
    // Unique to this process and call: two writers never share it.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    fresh_name.push(format!(".{}.{write}.new", std::process::id()));
    let fresh = path.with_file_name(fresh_name);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&fresh)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&fresh, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_replaced_whole_and_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old, and readable by all").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A path that cannot be written leaves what was there.
        assert!(write_private(&dir.path().join("missing/token"), "x").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn the_ca_is_kept_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::open_or_create(dir.path()).unwrap();
        let again = LocalCa::open_or_create(dir.path()).unwrap();
        assert_eq!(first.root_pem(), again.root_pem());
        assert!(first.root_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let issued = again.issue("shop.localhost").unwrap();
        assert_eq!(issued.cert.len(), 2, "the leaf and the CA");
    }
}
