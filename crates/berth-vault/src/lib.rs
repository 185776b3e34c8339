//! The secrets vault: values encrypted at rest, never listed.
//!
//! A 32-byte master key lives in one file in the data dir (mode 0600), made
//! on first use. Each app gets its own encryption key and digest key,
//! derived from the master with HKDF-SHA256, so a value sealed for one app
//! cannot be opened as another's. A sealed value is XChaCha20-Poly1305 over
//! the value with a random 24-byte nonce, and the app and secret name as
//! associated data: a sealed value moved to another name fails to open.
//!
//! Sealed values are text (`v1:` + hex of nonce and ciphertext) so the store
//! keeps them in ordinary columns. The digest is a keyed hash (HMAC-SHA256,
//! first 12 hex digits): it tells whether a value changed without letting
//! anyone who reads the store test guesses against it.
//!
//! Decrypted values are [`Zeroizing`] strings, wiped when dropped.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
pub use zeroize::Zeroizing;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const SEALED_PREFIX: &str = "v1:";

/// What can go wrong with the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file cannot be read or made.
    #[error("secrets key {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but is not a key.
    #[error("secrets key {path} is damaged: it must hold {KEY_BYTES} bytes, it holds {found}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Its length.
        found: usize,
    },
    /// A sealed value could not be opened: damaged, moved, or sealed under another key.
    #[error(
        "secret `{name}` of `{app}` cannot be decrypted (sealed under another key, or damaged)"
    )]
    Open {
        /// The app.
        app: String,
        /// The secret.
        name: String,
    },
}

/// The vault over one master key.
pub struct Vault {
    master: Zeroizing<[u8; KEY_BYTES]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault { .. }")
    }
}

impl Vault {
    /// Opens the vault whose key is at `key_path`, making the key (mode 0600)
    /// if the file does not exist.
    pub fn open_or_create(key_path: &Path) -> Result<Vault, VaultError> {
        let key_error = |source| VaultError::KeyFile {
            path: key_path.to_path_buf(),
            source,
        };
        match std::fs::read(key_path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let master: [u8; KEY_BYTES] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| VaultError::BadKey {
                            path: key_path.to_path_buf(),
                            found: bytes.len(),
                        })?;
                // Tighten a key file someone loosened.
                let _ = std::fs::set_permissions(key_path, std::fs::Permissions::from_mode(0o600));
                Ok(Vault {
                    master: Zeroizing::new(master),
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut master = Zeroizing::new([0u8; KEY_BYTES]);
                rand::rng().fill_bytes(master.as_mut());
                if let Some(parent) = key_path.parent() {
                    std::fs::create_dir_all(parent).map_err(key_error)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(key_path)
                    .map_err(key_error)?;
                file.write_all(master.as_ref()).map_err(key_error)?;
                file.sync_all().map_err(key_error)?;
                Ok(Vault { master })
            }
            Err(err) => Err(key_error(err)),
        }
    }

    fn derive(&self, purpose: &str, app: &str) -> Zeroizing<[u8; KEY_BYTES]> {
        let hkdf = Hkdf::<Sha256>::new(Some(b"berth vault v1"), self.master.as_ref());
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        let info = format!("{purpose}\0{app}");
        hkdf.expand(info.as_bytes(), key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    fn cipher(&self, app: &str) -> XChaCha20Poly1305 {
        let key = self.derive("encrypt", app);
        XChaCha20Poly1305::new_from_slice(key.as_ref()).expect("the key is 32 bytes")
    }

    /// Encrypts `value` as secret `name` of `app`.
    pub fn seal(&self, app: &str, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(app, name);
        let ciphertext = self
            .cipher(app)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        let mut sealed =
            String::with_capacity(SEALED_PREFIX.len() + 2 * (nonce.len() + ciphertext.len()));
        sealed.push_str(SEALED_PREFIX);
        sealed.push_str(&hex::encode(nonce));
        sealed.push_str(&hex::encode(ciphertext));
        sealed
    }

    /// Decrypts what [`Vault::seal`] made for the same app and name.
    pub fn open(
        &self,
        app: &str,
        name: &str,
        sealed: &str,
    ) -> Result<Zeroizing<String>, VaultError> {
        let fail = || VaultError::Open {
            app: app.to_string(),
            name: name.to_string(),
        };
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(fail)?;
        let bytes = hex::decode(body).map_err(|_| fail())?;
        if bytes.len() < NONCE_BYTES {
            return Err(fail());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let aad = associated_data(app, name);
        let plain = self
            .cipher(app)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| fail())?;
        let plain = Zeroizing::new(plain);
        let text = std::str::from_utf8(&plain).map_err(|_| fail())?;
        Ok(Zeroizing::new(text.to_string()))
    }

    /// A short keyed digest of `value` for `app`: equal values give equal
    /// digests; the digest does not reveal the value.
    pub fn digest(&self, app: &str, value: &str) -> String {
        let key = self.derive("digest", app);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length works");
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        hex::encode(&tag[..6])
    }

    /// A bearer token of `app` for `purpose`: stable for the key file, the
    /// app and the purpose, and unguessable without the key (an HMAC).
    pub fn token(&self, app: &str, purpose: &str) -> String {
        let key = self.derive("token", app);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length works");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A random password of `length` characters from `[A-Za-z0-9]`, for
    /// generated credentials (database roles, Redis).
    pub fn generate_password(length: usize) -> Zeroizing<String> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let mut password = Zeroizing::new(String::with_capacity(length));
        while password.len() < length {
            // 62 * 4 = 248: reject the top bytes so every character is equally likely.
            let byte = (rng.next_u32() & 0xff) as u8;
            if byte < 248 {
                password.push(ALPHABET[(byte % 62) as usize] as char);
            }
        }
        password
    }
}

fn associated_data(app: &str, name: &str) -> Vec<u8> {
    format!("{app}\0{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open_or_create(&dir.path().join("secrets.key")).unwrap();
        (dir, vault)
    }

    #[test]
    fn sealed_values_open_only_for_their_app_and_name() {
        let (_dir, vault) = vault();
        let sealed = vault.seal("shop", "API_KEY", "sk_live_123");
        assert!(!sealed.contains("sk_live_123"));
        assert_eq!(
            *vault.open("shop", "API_KEY", &sealed).unwrap(),
            "sk_live_123"
        );
        assert!(vault.open("blog", "API_KEY", &sealed).is_err());
        assert!(vault.open("shop", "OTHER", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert!(vault.open("shop", "API_KEY", &tampered).is_err());
    }

    #[test]
    fn the_same_value_seals_differently_each_time() {
        let (_dir, vault) = vault();
        assert_ne!(vault.seal("a", "K", "v"), vault.seal("a", "K", "v"));
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        let (dir, vault) = vault();
        let path = dir.path().join("secrets.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = vault.seal("a", "K", "value");
        let reopened = Vault::open_or_create(&path).unwrap();
        assert_eq!(*reopened.open("a", "K", &sealed).unwrap(), "value");
        let other_dir = tempfile::tempdir().unwrap();
        let other = Vault::open_or_create(&other_dir.path().join("k")).unwrap();
        assert!(other.open("a", "K", &sealed).is_err());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, b"short").unwrap();
        let err = Vault::open_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn digests_tell_changes_without_the_value() {
        let (_dir, vault) = vault();
        let digest = vault.digest("a", "hunter22");
        assert_eq!(digest.len(), 12);
        assert_eq!(digest, vault.digest("a", "hunter22"));
        assert_ne!(digest, vault.digest("a", "hunter23"));
        assert_ne!(digest, vault.digest("b", "hunter22"));
        assert_ne!(
            digest,
            hex::encode(&<Sha256 as sha2::Digest>::digest(b"hunter22")[..6])
        );
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let one = Vault::generate_password(32);
        let two = Vault::generate_password(32);
        assert_eq!(one.len(), 32);
        assert!(one.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(*one, *two);
    }
}
