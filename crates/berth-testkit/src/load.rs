//! A bounded load generator for tests that deploy under traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A bounded load generator: `workers` loops of keep-alive GETs through the router.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    bodies: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a load run saw.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed (any error or non-200).
    pub failed: u64,
    /// How many times each body was seen.
    pub bodies: std::collections::BTreeMap<String, u64>,
    /// The first failures, described.
    pub failures: Vec<String>,
}

impl Load {
    /// Starts `workers` loops sending `GET path` to `APP.localhost` via `router`.
    pub fn start(router: SocketAddr, app: &str, path: &str, workers: usize) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            bodies: Arc::new(Mutex::new(Default::default())),
            failures: Arc::new(Mutex::new(Vec::new())),
            workers: Vec::new(),
        };
        crate::crypto_ready();
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(workers)
            .build()
            .expect("client");
        let url = format!("http://{router}{path}");
        let host = format!("{app}.localhost");
        let workers = (0..workers)
            .map(|_| {
                let (stop, ok, failed, bodies, failures) = (
                    load.stop.clone(),
                    load.ok.clone(),
                    load.failed.clone(),
                    load.bodies.clone(),
                    load.failures.clone(),
                );
                let (client, url, host) = (client.clone(), url.clone(), host.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let result = client.get(&url).header("host", &host).send().await;
                        let outcome = match result {
                            Ok(response) if response.status() == 200 => match response.text().await
                            {
                                Ok(body) => Ok(body),
                                Err(err) => Err(format!("body: {err}")),
                            },
                            Ok(response) => {
                                let status = response.status();
                                Err(format!(
                                    "{status}: {}",
                                    response.text().await.unwrap_or_default()
                                ))
                            }
                            Err(err) => Err(format!("request: {err}")),
                        };
                        match outcome {
                            Ok(body) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *bodies.lock().expect("bodies").entry(body).or_default() += 1;
                            }
                            Err(description) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut failures = failures.lock().expect("failures");
                                if failures.len() < 10 {
                                    failures.push(description);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load { workers, ..load }
    }

    /// Requests answered so far.
    pub fn ok_so_far(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the load and reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
        LoadReport {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bodies: self.bodies.lock().expect("bodies").clone(),
            failures: self.failures.lock().expect("failures").clone(),
        }
    }
}
