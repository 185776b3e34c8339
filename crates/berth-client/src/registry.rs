//! The built-in registry's upkeep.

use berth_proto::{RegistryGc, RegistryListing};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    /// `GET /v1/registry`.
    pub async fn registry_listing(&self) -> Result<RegistryListing> {
        self.json(self.request(Method::GET, &["v1", "registry"])?)
            .await
    }

    /// `POST /v1/registry/gc`.
    pub async fn registry_gc(&self) -> Result<RegistryGc> {
        self.json(self.request(Method::POST, &["v1", "registry", "gc"])?)
            .await
    }
}
