//! A Shuttle service with no HTTP: it prints a beat every half second,
//! with the greeting from its secrets, until it is stopped.

use std::net::SocketAddr;
use std::time::Duration;

use shuttle_runtime::SecretStore;

struct Ticker {
    greeting: String,
}

#[shuttle_runtime::async_trait]
impl shuttle_runtime::Service for Ticker {
    async fn bind(self, _addr: SocketAddr) -> Result<(), shuttle_runtime::Error> {
        let mut beat = 0u64;
        loop {
            beat += 1;
            println!("{} {beat}", self.greeting);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[shuttle_runtime::main]
async fn main(#[shuttle_runtime::Secrets] secrets: SecretStore) -> Result<Ticker, shuttle_runtime::Error> {
    Ok(Ticker {
        greeting: secrets
            .get("GREETING")
            .unwrap_or_else(|| "no greeting".into()),
    })
}
