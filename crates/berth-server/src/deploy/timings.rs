//! How long deploys and builds take, by app and outcome, for `/metrics`
//! (since the server started); and a failed deploy, queued for the
//! webhooks that ask for `deploy.failed`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the buckets of deploy and build durations, in seconds
/// (the last bucket, `+Inf`, is implied).
pub const DEPLOY_BOUNDS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
];

/// Durations observed under one label set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Counts per [`DEPLOY_BOUNDS`] bucket and one for longer (not cumulative).
    pub buckets: Vec<u64>,
    /// The sum, in seconds.
    pub sum: f64,
}

impl Observed {
    fn observe(&mut self, took: Duration) {
        if self.buckets.len() != DEPLOY_BOUNDS.len() + 1 {
            self.buckets = vec![0; DEPLOY_BOUNDS.len() + 1];
        }
        let seconds = took.as_secs_f64();
        let bucket = DEPLOY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DEPLOY_BOUNDS.len());
        self.buckets[bucket] += 1;
        self.sum += seconds;
    }
}

/// Deploys by (app, outcome) and builds by app.
#[derive(Debug, Default)]
pub struct Timings {
    deploys: Mutex<BTreeMap<(String, &'static str), Observed>>,
    builds: Mutex<BTreeMap<String, Observed>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Timings {
    /// A deploy of `app` ended (`succeeded` or `failed`) after `took`.
    pub(crate) fn deploy(&self, app: &str, outcome: &'static str, took: Duration) {
        lock(&self.deploys)
            .entry((app.to_string(), outcome))
            .or_default()
            .observe(took);
    }

    /// A build of `app` took `took`.
    pub(crate) fn build(&self, app: &str, took: Duration) {
        lock(&self.builds)
            .entry(app.to_string())
            .or_default()
            .observe(took);
    }

    /// Deploys so far, by (app, outcome).
    pub fn deploys(&self) -> BTreeMap<(String, &'static str), Observed> {
        lock(&self.deploys).clone()
    }

    /// Builds so far, by app.
    pub fn builds(&self) -> BTreeMap<String, Observed> {
        lock(&self.builds).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_buckets_per_app_and_outcome() {
        let timings = Timings::default();
        timings.deploy("shop", "succeeded", Duration::from_secs(3));
        timings.deploy("shop", "succeeded", Duration::from_secs(4000));
        timings.deploy("shop", "failed", Duration::from_millis(500));
        timings.build("shop", Duration::from_secs(45));
        let deploys = timings.deploys();
        let ok = &deploys[&("shop".to_string(), "succeeded")];
        assert_eq!(ok.buckets[1], 1, "≤ 5 s");
        assert_eq!(*ok.buckets.last().unwrap(), 1, "over an hour");
        assert_eq!(ok.sum, 4003.0);
        assert_eq!(deploys[&("shop".to_string(), "failed")].buckets[0], 1);
        assert_eq!(timings.builds()["shop"].buckets[4], 1, "≤ 60 s");
    }
}
