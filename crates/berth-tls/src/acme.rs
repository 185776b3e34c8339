//! Certificates from an ACME CA (RFC 8555): Let's Encrypt by default, or
//! any directory (`--acme-directory`), with `instant-acme`.
//!
//! Each name is validated with HTTP-01 (the router answers
//! `/.well-known/acme-challenge/TOKEN` from [`Challenges`]), and with
//! TLS-ALPN-01 (the HTTPS listener presents a validation certificate to a
//! client that asks for `acme-tls/1`) when HTTP-01 fails — port 80 blocked,
//! say. The account key is kept in `DATA/tls/acme/` (0600) and reused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where certificates come from and who asks.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The directory URL.
    pub directory: String,
    /// The contact address given to the CA, if any.
    pub email: Option<String>,
    /// A root to trust for the directory's own HTTPS (a private CA's), in
    /// place of the public roots.
    pub ca_root: Option<PathBuf>,
}

/// Answers to challenges in progress, read by the router and the TLS
/// listener.
#[derive(Default)]
pub struct Challenges {
    http: RwLock<HashMap<String, String>>,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Challenges {
    /// The key authorization for an HTTP-01 `token`, while its challenge runs.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        read(&self.http).get(token).cloned()
    }

    /// The TLS-ALPN-01 validation certificate for `name`, while its
    /// challenge runs.
    pub fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.alpn).get(name).cloned()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a certificate could not be had, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeFailure {
    /// The CA could not be reached (or answered nonsense): tried again later.
    Unreachable(String),
    /// The CA refused: its problem document's type and detail.
    Refused {
        /// `urn:ietf:params:acme:error:…`.
        kind: String,
        /// What it said.
        detail: String,
    },
    /// The CA could not validate the name with any challenge.
    Challenge(String),
    /// The CA limits how often it issues: tried again after its window.
    RateLimited(String),
}

impl std::fmt::Display for AcmeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcmeFailure::Unreachable(why) => write!(f, "the CA cannot be reached: {why}"),
            AcmeFailure::Refused { kind, detail } => write!(f, "the CA refused: {detail} ({kind})"),
            AcmeFailure::Challenge(why) => {
                write!(f, "the CA could not validate the name: {why}")
            }
            AcmeFailure::RateLimited(why) => write!(f, "the CA rate-limits this name: {why}"),
        }
    }
}

pub(crate) fn failure(err: instant_acme::Error) -> AcmeFailure {
    match err {
        instant_acme::Error::Api(problem) => {
            let kind = problem.r#type.clone().unwrap_or_default();
            let detail = problem.to_string();
            if kind.ends_with(":rateLimited") {
                AcmeFailure::RateLimited(detail)
            } else if kind.ends_with(":connection")
                || kind.ends_with(":unauthorized")
                || kind.ends_with(":dns")
                || kind.ends_with(":incorrectResponse")
                || kind.ends_with(":tls")
            {
                AcmeFailure::Challenge(detail)
            } else {
                AcmeFailure::Refused { kind, detail }
            }
        }
        other => AcmeFailure::Unreachable(other.to_string()),
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The chain, PEM, leaf first.
    pub chain_pem: String,
    /// Its key, PKCS#8 PEM.
    pub key_pem: String,
}

/// An ACME client for one directory, with its account.
pub struct AcmeClient {
    settings: AcmeSettings,
    dir: PathBuf,
    account: tokio::sync::OnceCell<Account>,
    challenges: Arc<Challenges>,
}

impl AcmeClient {
    /// A client keeping its account in `dir`, answering challenges through
    /// `challenges`.
    pub fn new(settings: AcmeSettings, dir: &Path, challenges: Arc<Challenges>) -> AcmeClient {
        AcmeClient {
            settings,
            dir: dir.to_path_buf(),
            account: tokio::sync::OnceCell::new(),
            challenges,
        }
    }

    /// The directory URL.
    pub fn directory(&self) -> &str {
        &self.settings.directory
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeFailure> {
        match &self.settings.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        }
        .map_err(failure)
    }

    /// The account: stored credentials for this directory, or a new one.
    pub(crate) async fn account(&self) -> Result<&Account, AcmeFailure> {
        self.account
            .get_or_try_init(|| async {
                let path = self.dir.join(format!(
                    "account-{}.json",
                    crate::short_hash(&self.settings.directory)
                ));
                if let Ok(text) = std::fs::read_to_string(&path)
                    && let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&text)
                {
                    return self
                        .builder()?
                        .from_credentials(credentials)
                        .await
                        .map_err(failure);
                }
                let contact = self
                    .settings
                    .email
                    .as_ref()
                    .map(|email| format!("mailto:{email}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.settings.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(failure)?;
                let text = serde_json::to_string(&credentials)
                    .map_err(|err| AcmeFailure::Unreachable(err.to_string()))?;
                std::fs::create_dir_all(&self.dir)
                    .and_then(|()| crate::ca::write_private(&path, &text))
                    .map_err(|err| {
                        AcmeFailure::Unreachable(format!(
                            "cannot keep the account in {}: {err}",
                            path.display()
                        ))
                    })?;
                Ok(account)
            })
            .await
    }

    /// A certificate for `name`: HTTP-01 first, TLS-ALPN-01 if that fails.
    /// A renewal names the certificate it replaces (`replacing`), which the
    /// CA may count in its favour (RFC 9773 §5).
    pub async fn issue(
        &self,
        name: &str,
        replacing: Option<&CertificateDer<'_>>,
    ) -> Result<Issued, AcmeFailure> {
        let replaces = replacing.and_then(crate::ari::replaced);
        match self
            .issue_with(name, ChallengeType::Http01, &replaces)
            .await
        {
            Err(AcmeFailure::Challenge(http)) => {
                tracing::info!(name, why = %http, "HTTP-01 failed; trying TLS-ALPN-01");
                self.issue_with(name, ChallengeType::TlsAlpn01, &replaces)
                    .await
                    .map_err(|err| match err {
                        AcmeFailure::Challenge(alpn) => {
                            AcmeFailure::Challenge(format!("HTTP-01: {http}; TLS-ALPN-01: {alpn}"))
                        }
                        other => other,
                    })
            }
            other => other,
        }
    }

    async fn issue_with(
        &self,
        name: &str,
        kind: ChallengeType,
        replaces: &Option<CertificateIdentifier<'static>>,
    ) -> Result<Issued, AcmeFailure> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(name.to_string())];
        let plain = NewOrder::new(&identifiers);
        let replacing = replaces
            .as_ref()
            .map(|replaced| NewOrder::new(&identifiers).replaces(replaced.clone()));
        // A CA without ARI, or one that will not take this replacement
        // (already replaced, say), gets a plain order.
        let mut order = match replacing {
            Some(replacing) => match account.new_order(&replacing).await {
                Ok(order) => order,
                Err(err) => {
                    tracing::debug!(name, error = %err, "order as a replacement refused");
                    account.new_order(&plain).await.map_err(failure)?
                }
            },
            None => account.new_order(&plain).await.map_err(failure)?,
        };
        let mut answered = Vec::new();
        let outcome = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(failure)?;
                if authorization.status == AuthorizationStatus::Valid {
                    continue;
                }
                let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
                    AcmeFailure::Challenge(format!("the CA offers no {kind:?} challenge"))
                })?;
                let key_authorization = challenge.key_authorization();
                match kind {
                    ChallengeType::TlsAlpn01 => {
                        let certificate =
                            crate::ca::alpn_certificate(name, key_authorization.digest().as_ref())
                                .map_err(|err| AcmeFailure::Unreachable(err.to_string()))?;
                        write(&self.challenges.alpn).insert(name.to_string(), certificate);
                    }
                    _ => {
                        write(&self.challenges.http).insert(
                            challenge.token.clone(),
                            key_authorization.as_str().to_string(),
                        );
                        answered.push(challenge.token.clone());
                    }
                }
                challenge.set_ready().await.map_err(failure)?;
                tracing::info!(name, challenge = ?kind, "challenge ready");
            }
            // The authorizations say at once when a challenge failed; some
            // CAs leave the order pending a while after.
            wait_for_authorizations(&mut order).await?;
            let retries = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .timeout(Duration::from_secs(90));
            let status = order.poll_ready(&retries).await.map_err(failure)?;
            tracing::info!(name, challenge = ?kind, ?status, "the CA validated the order");
            if status != OrderStatus::Ready {
                return Err(AcmeFailure::Challenge(order_problem(&mut order).await));
            }
            let key_pem = order.finalize().await.map_err(failure)?;
            let chain_pem = order.poll_certificate(&retries).await.map_err(failure)?;
            Ok(Issued { chain_pem, key_pem })
        }
        .await;
        for token in answered {
            write(&self.challenges.http).remove(&token);
        }
        write(&self.challenges.alpn).remove(name);
        outcome
    }
}

/// How long the CA may take to validate a name.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until every authorization of `order` is valid, or fails with the
/// CA's words for the first that is not.
async fn wait_for_authorizations(order: &mut instant_acme::Order) -> Result<(), AcmeFailure> {
    let deadline = tokio::time::Instant::now() + VALIDATION_TIMEOUT;
    let mut delay = Duration::from_millis(200);
    loop {
        let mut pending = false;
        let mut problems = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(failure)?;
            let state = authorization.refresh().await.map_err(failure)?;
            match state.status {
                AuthorizationStatus::Valid => {}
                AuthorizationStatus::Pending => pending = true,
                _ => problems.extend(
                    state
                        .challenges
                        .iter()
                        .filter_map(|challenge| challenge.error.as_ref())
                        .map(ToString::to_string),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(AcmeFailure::Challenge(problems.join("; ")));
        }
        if !pending {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AcmeFailure::Challenge(format!(
                "the CA did not finish validating within {} s",
                VALIDATION_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}

/// What the CA says went wrong with a failed order's challenges.
async fn order_problem(order: &mut instant_acme::Order) -> String {
    let mut said = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                said.push(problem.to_string());
            }
        }
    }
    if said.is_empty() {
        "the order failed with no reason given".into()
    } else {
        said.join("; ")
    }
}
