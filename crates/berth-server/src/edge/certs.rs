//! Certificates from the ACME CA for custom domains and `APP.SUFFIX`
//! names: issued when a domain is added or an app created, renewed at two
//! thirds of their lifetime, retried with backoff
//! (with jitter, so many domains do not retry at once), and every issuance,
//! renewal and failure written to the app's event log.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use berth_store::{EventKind, Store};
use berth_tls::{AcmeClient, AcmeFailure, Certificates};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The store is looked at again at least this often: a deploy that names a
/// new domain in berth.toml does not wake the manager as `domains add` does,
/// and renewals fall due while nothing happens.
const RECHECK: Duration = Duration::from_secs(5);
/// The first retry after a failure; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// A certificate this close to expiry that cannot renew is a warning event.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// How often the webhooks are told again of a certificate still expiring.
const EXPIRY_RETELL: Duration = Duration::from_secs(24 * 3600);

/// Where a domain's certificate stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct CertStatus {
    /// Why the last attempt failed.
    pub(crate) last_error: Option<String>,
    /// Failures in a row.
    pub(crate) failures: u32,
    /// Not tried again before this.
    pub(crate) next_attempt: Option<SystemTime>,
    /// The CA's renewal window for the certificate now served (ARI).
    pub(crate) ari: Option<AriState>,
    /// When the webhooks were last told it is expiring.
    pub(crate) expiry_told: Option<SystemTime>,
}

/// What the CA's renewal information (RFC 9773) said of a certificate.
#[derive(Debug, Clone)]
pub(crate) struct AriState {
    /// The certificate it is about (its start of validity).
    pub(crate) certificate: SystemTime,
    /// The window, and the moment picked in it (kept while the window
    /// stays); `None` while the CA could not be asked.
    pub(crate) window: Option<(berth_tls::RenewalWindow, SystemTime)>,
    /// When to ask the CA again.
    pub(crate) next_check: SystemTime,
}

/// What the API holds: the state of each domain's certificate, and a way
/// to have a new domain looked at now.
#[derive(Clone)]
pub(crate) struct CertDesk {
    pub(crate) certificates: Arc<Certificates>,
    /// Whether a name's certificate comes from the ACME CA.
    pub(crate) public: berth_tls::NameFilter,
    pub(crate) status: Arc<RwLock<HashMap<String, CertStatus>>>,
    pub(crate) wake: Arc<Notify>,
    /// The CA's directory, when certificates come from one.
    pub(crate) directory: Option<String>,
    /// Apps' names are `APP.SUFFIX`.
    pub(crate) suffix: String,
}

impl CertDesk {
    /// Every name's status, to change.
    pub(crate) fn statuses(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, CertStatus>> {
        self.status
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When `name`'s certificate from the CA is renewed, and why then.
    pub(crate) fn renewal_plan(&self, name: &str) -> Option<String> {
        let certificate = self.certificates.public_certificate(name)?;
        let window = self
            .status_of(name)
            .ari
            .filter(|ari| ari.certificate == certificate.not_before)
            .and_then(|ari| ari.window);
        let at = berth_tls::renewal_time(
            certificate.not_before,
            certificate.not_after,
            window.as_ref().map(|(window, chosen)| (window, *chosen)),
            SystemTime::now(),
        );
        let why = match window {
            Some((window, _)) => format!(
                "in the CA's renewal window {} to {}",
                humantime_date(window.start),
                humantime_date(window.end)
            ),
            None => "at two thirds of its life".into(),
        };
        Some(format!("{} ({why})", humantime_date(at)))
    }

    /// The app's own name, when its certificate comes from the ACME CA.
    pub(crate) fn acme_app_name(&self, app: &str) -> Option<String> {
        let name = format!("{app}.{}", self.suffix);
        (self.public)(&name).then_some(name)
    }

    pub(crate) fn status_of(&self, name: &str) -> CertStatus {
        self.status
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

/// Obtains and renews the certificates of custom domains.
pub(crate) struct CertManager {
    pub(crate) client: AcmeClient,
    pub(crate) desk: CertDesk,
    pub(crate) store: Arc<Store>,
    /// What berth serves: the names to certify.
    pub(crate) routes: tokio::sync::watch::Receiver<Arc<berth_router::RouteTable>>,
    /// Apps' names are `APP.SUFFIX`.
    pub(crate) suffix: String,
    /// The CA answered that it offers no renewal information.
    pub(crate) without_ari: std::sync::atomic::AtomicBool,
}

impl CertManager {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            let mut next = SystemTime::now() + RECHECK;
            let names = super::names::acme_names(&self.routes.borrow().clone(), &self.suffix);
            for (app, name) in names {
                if let Some(check) = self.check_window(&name).await {
                    next = next.min(check);
                }
                let due = self.due(&name);
                if due <= SystemTime::now() {
                    tokio::select! {
                        () = self.obtain(&app, &name) => {}
                        () = shutdown.cancelled() => return,
                    }
                    next = next.min(self.due(&name));
                } else {
                    next = next.min(due);
                }
            }
            let wait = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(200));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.desk.wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// When `name` next needs the CA: now without a certificate, at two
    /// thirds of its lifetime with one or sooner in the CA's renewal
    /// window; never before a failure's backoff.
    pub(crate) fn due(&self, name: &str) -> SystemTime {
        let status = self.desk.status_of(name);
        let renewal = match self.desk.certificates.public_certificate(name) {
            Some(certificate) => {
                let window = status
                    .ari
                    .as_ref()
                    .filter(|ari| ari.certificate == certificate.not_before)
                    .and_then(|ari| ari.window.as_ref())
                    .map(|(window, chosen)| (window, *chosen));
                berth_tls::renewal_time(
                    certificate.not_before,
                    certificate.not_after,
                    window,
                    SystemTime::now(),
                )
            }
            None => SystemTime::UNIX_EPOCH,
        };
        match status.next_attempt {
            Some(retry) => renewal.max(retry),
            None => renewal,
        }
    }

    async fn obtain(&self, app: &str, name: &str) {
        let had = self.desk.certificates.public_certificate(name);
        let early = self.early_reason(name, had.as_ref());
        let outcome = self
            .client
            .issue(name, had.as_ref().and_then(|had| had.key.cert.first()))
            .await;
        let mut statuses = self.desk.statuses();
        let status = statuses.entry(name.to_string()).or_default();
        let installed = outcome
            .map_err(|failure| failure.to_string())
            .and_then(|issued| {
                self.desk
                    .certificates
                    .install(name, &issued)
                    .map_err(|err| err.to_string())
            });
        match installed {
            Ok(certificate) => {
                *status = CertStatus::default();
                let until = humantime_date(certificate.not_after);
                let (kind, verb) = match (&had, &early) {
                    (Some(_), Some(why)) => {
                        (EventKind::CertRenewed, format!("renewed early ({why})"))
                    }
                    (Some(_), None) => (EventKind::CertRenewed, "renewed".to_string()),
                    (None, _) => (EventKind::CertIssued, "issued".to_string()),
                };
                tracing::info!(name, until, "certificate {verb}");
                let _ = self.store.record_event(
                    app,
                    kind,
                    &format!(
                        "certificate for {name} {verb} by {}, valid until {until}",
                        self.client.directory()
                    ),
                );
            }
            Err(why) => {
                status.failures += 1;
                let rate_limited =
                    why.starts_with(&AcmeFailure::RateLimited(String::new()).to_string());
                let mut backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (status.failures - 1).min(16))
                    .min(MAX_BACKOFF);
                if rate_limited {
                    backoff = backoff.max(Duration::from_secs(3600));
                }
                let retry = SystemTime::now() + jittered(backoff, rand::random::<f64>());
                status.next_attempt = Some(retry);
                status.last_error = Some(why.clone());
                tracing::warn!(name, error = %why, "no certificate");
                let _ = self.store.record_event(
                    app,
                    EventKind::CertFailed,
                    &format!(
                        "no certificate for {name}: {why}; trying again at {}",
                        humantime_date(retry)
                    ),
                );
                if let Some(had) = had
                    && had
                        .not_after
                        .duration_since(SystemTime::now())
                        .is_ok_and(|left| left < EXPIRY_WARNING)
                {
                    let message = format!(
                        "the certificate for {name} expires at {} and cannot be renewed: {why}",
                        humantime_date(had.not_after)
                    );
                    let _ = self
                        .store
                        .record_event(app, EventKind::CertExpiring, &message);
                    // The webhooks hear of it once a day, not at every try.
                    let now = SystemTime::now();
                    if status.expiry_told.is_none_or(|told| {
                        now.duration_since(told).unwrap_or_default() >= EXPIRY_RETELL
                    }) {
                        status.expiry_told = Some(now);
                        let body = serde_json::json!({
                            "message": message,
                            "data": {
                                "domain": name,
                                "expires": humantime_date(had.not_after),
                                "error": why,
                            },
                        })
                        .to_string();
                        if let Err(err) =
                            self.store.enqueue_notification("cert.expiring", app, &body)
                        {
                            tracing::warn!(name, error = %err, "cannot queue a certificate warning for the webhooks");
                        }
                    }
                }
            }
        }
    }
}

/// `backoff` ±10% by `random` (0 to 1), so that domains that failed
/// together do not retry together.
fn jittered(backoff: Duration, random: f64) -> Duration {
    backoff.mul_f64(0.9 + random.clamp(0.0, 1.0) * 0.2)
}

/// RFC 3339, to the second.
pub(crate) fn humantime_date(at: SystemTime) -> String {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_either_way() {
        let backoff = Duration::from_secs(100);
        assert_eq!(jittered(backoff, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(backoff, 1.0), Duration::from_secs(110));
        assert_eq!(jittered(backoff, 0.5), Duration::from_secs(100));
    }
}
