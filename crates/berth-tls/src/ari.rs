//! ACME Renewal Information (RFC 9773): the CA's suggested window for
//! renewing a certificate, which can bring a renewal forward (a CA that
//! must revoke certificates early says so here) but never puts it off past
//! two thirds of the certificate's lifetime.

use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use rustls::pki_types::CertificateDer;

use crate::acme::{AcmeClient, AcmeFailure, failure};

/// How often a window is fetched again, whatever the CA's `Retry-After`
/// says: at least a minute apart, at most a day (RFC 9773 §4.3.2).
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// See [`MIN_CHECK_INTERVAL`].
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The CA's suggested renewal window for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this…
    pub start: SystemTime,
    /// …and no later than this.
    pub end: SystemTime,
    /// When to ask again (the CA's `Retry-After`, kept within a minute and
    /// a day).
    pub check_again: Duration,
    /// A page that says why the window is what it is, if the CA gave one.
    pub explanation: Option<String>,
}

impl RenewalWindow {
    /// A uniformly random moment in the window, `random` from 0 to 1
    /// (RFC 9773 §4.2: so that the CA's clients do not all come at once).
    pub fn choose(&self, random: f64) -> SystemTime {
        let span = self.end.duration_since(self.start).unwrap_or_default();
        self.start + span.mul_f64(random.clamp(0.0, 1.0))
    }
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// at two thirds of its lifetime, or at `chosen` in the CA's window if that
/// is sooner — but, unless the whole window has passed (the CA wants it
/// replaced now), not within the first third of its life, so that a window
/// around a short-lived certificate cannot renew it again and again.
pub fn renewal_time(
    not_before: SystemTime,
    not_after: SystemTime,
    window: Option<(&RenewalWindow, SystemTime)>,
    now: SystemTime,
) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    let two_thirds = not_before + life * 2 / 3;
    let Some((window, chosen)) = window else {
        return two_thirds;
    };
    if window.end <= now {
        return now;
    }
    two_thirds.min(chosen.max(not_before + life / 3))
}

impl AcmeClient {
    /// The CA's renewal window for the certificate `leaf`; `None` when the
    /// CA does not offer ARI.
    pub async fn renewal_window(
        &self,
        leaf: &CertificateDer<'_>,
    ) -> Result<Option<RenewalWindow>, AcmeFailure> {
        let id = CertificateIdentifier::try_from(leaf).map_err(AcmeFailure::Unreachable)?;
        let account = self.account().await?;
        let (info, retry_after) = match account.renewal_info(&id).await {
            Ok(answer) => answer,
            Err(instant_acme::Error::Unsupported(_)) => return Ok(None),
            Err(err) => return Err(failure(err)),
        };
        let at = |moment: time::OffsetDateTime| {
            let seconds = moment.unix_timestamp().max(0) as u64;
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
        };
        Ok(Some(RenewalWindow {
            start: at(info.suggested_window.start),
            end: at(info.suggested_window.end),
            check_again: retry_after.clamp(MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL),
            explanation: info.explanation_url,
        }))
    }
}

/// The identifier an order that replaces `leaf` names (RFC 9773 §5).
pub(crate) fn replaced(leaf: &CertificateDer<'_>) -> Option<CertificateIdentifier<'static>> {
    CertificateIdentifier::try_from(leaf)
        .ok()
        .map(CertificateIdentifier::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(days: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * days
    }

    fn window(start: u32, end: u32) -> RenewalWindow {
        RenewalWindow {
            start: at(start),
            end: at(end),
            check_again: MIN_CHECK_INTERVAL,
            explanation: None,
        }
    }

    #[test]
    fn without_a_window_renewal_is_at_two_thirds() {
        assert_eq!(renewal_time(at(0), at(90), None, at(1)), at(60));
    }

    #[test]
    fn a_window_brings_renewal_forward_but_never_puts_it_off() {
        let early = window(30, 32);
        let chosen = early.choose(0.5);
        assert_eq!(chosen, at(31));
        assert_eq!(
            renewal_time(at(0), at(90), Some((&early, chosen)), at(1)),
            at(31)
        );
        let late = window(70, 80);
        assert_eq!(
            renewal_time(at(0), at(90), Some((&late, late.choose(0.0))), at(1)),
            at(60)
        );
    }

    #[test]
    fn a_window_that_has_passed_means_now_and_one_around_now_waits_a_third() {
        let passed = window(5, 6);
        assert_eq!(
            renewal_time(at(0), at(90), Some((&passed, at(5))), at(10)),
            at(10)
        );
        let around = window(0, 20);
        assert_eq!(
            renewal_time(at(0), at(90), Some((&around, at(1))), at(2)),
            at(30)
        );
    }

    #[test]
    fn the_chosen_moment_stays_inside_the_window() {
        let span = window(10, 20);
        assert_eq!(span.choose(0.0), at(10));
        assert_eq!(span.choose(1.0), at(20));
        assert_eq!(span.choose(7.0), at(20));
    }
}
