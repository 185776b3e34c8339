//! Alerts that leave the machine: events are queued in the store's outbox
//! for every webhook that asks for them, and a deliverer POSTs what is due
//! — JSON signed with HMAC-SHA256 over `TIMESTAMP.BODY` (the
//! `Berth-Signature: t=…,v1=…` header, as Stripe signs), or Slack's body —
//! retrying with backoff. Whoever raised the event never waits for it.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::NotifyFormat;
use berth_store::{DueDelivery, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Tries before a delivery is given up.
const MAX_ATTEMPTS: u32 = 8;
/// Deliveries in flight at once.
const BATCH: usize = 16;
/// How long a claimed delivery is not due again (longer than a try).
const LEASE: Duration = Duration::from_secs(60);

/// Queues events and wakes the deliverer.
pub(crate) struct Notifier {
    store: Arc<Store>,
    wake: Notify,
}

/// The signature header of `body` sent at unix second `timestamp`.
pub(crate) fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The body `delivery` is sent with, in its webhook's format.
fn body_of(delivery: &DueDelivery) -> String {
    let payload: serde_json::Value = serde_json::from_str(&delivery.body).unwrap_or_default();
    match delivery.channel.format {
        NotifyFormat::Json => serde_json::json!({
            "id": delivery.id,
            "event": delivery.event,
            "app": delivery.app,
            "at": delivery.at,
            "message": payload["message"],
            "data": payload["data"],
        })
        .to_string(),
        NotifyFormat::Slack => serde_json::json!({
            "text": format!(
                "[berth] {} {}: {}",
                delivery.app,
                delivery.event,
                payload["message"].as_str().unwrap_or_default()
            ),
        })
        .to_string(),
    }
}

/// When to try again after `attempts` failed tries (`None`: give up).
fn retry_after(attempts: u32) -> Option<Duration> {
    (attempts < MAX_ATTEMPTS).then(|| {
        Duration::from_secs(5 * 2u64.pow(attempts.saturating_sub(1).min(10)))
            .min(Duration::from_secs(3600))
    })
}

impl Notifier {
    /// A notifier over `store`'s outbox.
    pub(crate) fn new(store: Arc<Store>) -> Arc<Notifier> {
        Arc::new(Notifier {
            store,
            wake: Notify::new(),
        })
    }

    /// Has the deliverer look for due deliveries now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers what is due until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            .use_preconfigured_tls(
                (*crate::drains::deliver::tls_config(None).unwrap_or_else(|_| {
                    Arc::new(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth(),
                    )
                }))
                .clone(),
            )
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "webhooks cannot be sent");
                return;
            }
        };
        // Each delivery is its own task, at most one per webhook at a time
        // and BATCH in all: a webhook that does not answer holds up no
        // other. A claimed delivery is leased, so it is sent once.
        let busy: Arc<std::sync::Mutex<std::collections::HashSet<u64>>> = Arc::default();
        loop {
            let room = BATCH.saturating_sub(lock(&busy).len());
            let claimed = if room == 0 {
                Vec::new()
            } else {
                let store = self.store.clone();
                let busy_now: Vec<u64> = lock(&busy).iter().copied().collect();
                match tokio::task::spawn_blocking(move || {
                    store.claim_due_deliveries(
                        berth_store::now_unix(),
                        room,
                        LEASE.as_secs(),
                        &busy_now,
                    )
                })
                .await
                {
                    Ok(Ok(claimed)) => claimed,
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "cannot read due notifications");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            };
            for delivery in claimed {
                lock(&busy).insert(delivery.channel.id);
                let (client, store, busy, notifier) = (
                    client.clone(),
                    self.store.clone(),
                    busy.clone(),
                    self.clone(),
                );
                tokio::spawn(async move {
                    let outcome = post(&client, &delivery).await;
                    let channel = delivery.channel.id;
                    let _ = tokio::task::spawn_blocking(move || record(&store, &delivery, outcome))
                        .await;
                    lock(&busy).remove(&channel);
                    notifier.wake.notify_one();
                });
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The JSON payload an event is queued with: its message and data.
pub(crate) fn payload(message: &str, data: serde_json::Value) -> String {
    serde_json::json!({ "message": message, "data": data }).to_string()
}

/// Records how a try of `delivery` went, with its next try if it failed.
fn record(store: &Store, delivery: &DueDelivery, outcome: Result<(), String>) {
    // The claim counted this try.
    let attempts = delivery.attempts;
    let recorded = match &outcome {
        Ok(()) => store.record_delivery(delivery.id, Ok(())),
        Err(error) => {
            let retry_at =
                retry_after(attempts).map(|after| berth_store::now_unix() + after.as_secs());
            tracing::warn!(delivery = delivery.id, webhook = delivery.channel.id, error = %error, "a webhook delivery failed");
            store.record_delivery(delivery.id, Err((error.as_str(), retry_at)))
        }
    };
    if let Err(err) = recorded {
        tracing::error!(error = %err, "cannot record a webhook delivery");
    }
}

/// POSTs one delivery; `Err` with why when it did not get a 2xx.
async fn post(client: &reqwest::Client, delivery: &DueDelivery) -> Result<(), String> {
    let body = body_of(delivery);
    let timestamp = berth_store::now_unix();
    let answer = client
        .post(&delivery.channel.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Berth-Event", &delivery.event)
        .header("Berth-Delivery", delivery.id.to_string())
        .header(
            "Berth-Signature",
            signature(&delivery.channel.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|err| {
            // Without the URL: a Slack webhook's URL is its credential.
            if err.is_timeout() {
                format!("no answer within {}s", TIMEOUT.as_secs())
            } else {
                format!("cannot reach it: {}", err.without_url())
            }
        })?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("it answered {}", answer.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_the_timestamp_and_body() {
        // Computed with: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn retries_back_off_and_give_up() {
        assert_eq!(retry_after(1), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(3), Some(Duration::from_secs(20)));
        assert_eq!(retry_after(MAX_ATTEMPTS), None);
    }
}
