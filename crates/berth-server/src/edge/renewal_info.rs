//! Asking the ACME CA when to renew (ARI, RFC 9773): each certificate's
//! suggested window is fetched when it is installed and again when the CA's
//! `Retry-After` says, and can bring its renewal forward.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::certs::{AriState, CertManager};

/// How long the CA has to answer: a stuck connection must not hold up
/// every other certificate's renewal.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a window that could not be fetched is left before asking again.
const AFTER_FAILURE: Duration = Duration::from_secs(3600);

impl CertManager {
    /// Fetches the CA's renewal window for `name`'s certificate when it is
    /// due; the time of the next check, if the CA offers windows.
    pub(crate) async fn check_window(&self, name: &str) -> Option<SystemTime> {
        if self.without_ari.load(Ordering::Relaxed) {
            return None;
        }
        let certificate = self.desk.certificates.public_certificate(name)?;
        let now = SystemTime::now();
        let known = self.desk.status_of(name).ari;
        if let Some(ari) = &known
            && ari.certificate == certificate.not_before
            && ari.next_check > now
        {
            return Some(ari.next_check);
        }
        let leaf = certificate.key.cert.first()?;
        let fetched = tokio::time::timeout(ASK_TIMEOUT, self.client.renewal_window(leaf))
            .await
            .unwrap_or_else(|_| {
                Err(berth_tls::AcmeFailure::Unreachable(format!(
                    "no answer within {} s",
                    ASK_TIMEOUT.as_secs()
                )))
            });
        let mut statuses = self.desk.statuses();
        let status = statuses.entry(name.to_string()).or_default();
        match fetched {
            Ok(Some(window)) => {
                // The moment picked stays while the window does.
                let kept = known
                    .and_then(|ari| ari.window)
                    .filter(|(old, _)| old.start == window.start && old.end == window.end);
                let chosen = match kept {
                    Some((_, chosen)) => chosen,
                    None => window.choose(rand::random::<f64>()),
                };
                let next_check = now + window.check_again;
                tracing::debug!(name, ?window, "renewal window");
                status.ari = Some(AriState {
                    certificate: certificate.not_before,
                    window: Some((window, chosen)),
                    next_check,
                });
                Some(next_check)
            }
            Ok(None) => {
                tracing::info!("the ACME CA offers no renewal information (ARI)");
                self.without_ari.store(true, Ordering::Relaxed);
                None
            }
            Err(why) => {
                tracing::warn!(name, error = %why, "cannot fetch the renewal window");
                let next_check = now + AFTER_FAILURE;
                let window = known
                    .filter(|ari| ari.certificate == certificate.not_before)
                    .and_then(|ari| ari.window);
                status.ari = Some(AriState {
                    certificate: certificate.not_before,
                    window,
                    next_check,
                });
                Some(next_check)
            }
        }
    }

    /// Why `name`'s certificate is renewed before two thirds of its life,
    /// if it is: the CA's window says so.
    pub(crate) fn early_reason(
        &self,
        name: &str,
        had: Option<&berth_tls::PublicCertificate>,
    ) -> Option<String> {
        let had = had?;
        let ari = self.desk.status_of(name).ari?;
        let (window, _) = ari.window?;
        let life = had.not_after.duration_since(had.not_before).ok()?;
        let two_thirds = had.not_before + life * 2 / 3;
        if ari.certificate != had.not_before || SystemTime::now() >= two_thirds {
            return None;
        }
        let until = super::certs::humantime_date(window.end);
        Some(match window.explanation {
            Some(page) => format!("the CA's renewal window ends {until}: {page}"),
            None => format!("the CA's renewal window ends {until}"),
        })
    }
}
