//! The built-in registry's upkeep.

use berth_proto::{
    BuildImage, BuiltImage, RegistryGc, RegistryListing, RegistryLogin, RegistryLoginInfo,
};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    /// `GET /v1/registry`.
    pub async fn registry_listing(&self) -> Result<RegistryListing> {
        self.json(self.request(Method::GET, &["v1", "registry"])?)
            .await
    }

    /// `POST /v1/apps/{app}/image`.
    pub async fn build_image(&self, app: &str, tag: Option<&str>) -> Result<BuiltImage> {
        let request = self
            .request(Method::POST, &["v1", "apps", app, "image"])?
            .json(&BuildImage {
                tag: tag.map(str::to_string),
            });
        self.json(request).await
    }

    /// `POST /v1/registry/gc`.
    pub async fn registry_gc(&self) -> Result<RegistryGc> {
        self.json(self.request(Method::POST, &["v1", "registry", "gc"])?)
            .await
    }

    /// `GET /v1/registry/logins`.
    pub async fn registry_logins(&self) -> Result<Vec<RegistryLoginInfo>> {
        self.json(self.request(Method::GET, &["v1", "registry", "logins"])?)
            .await
    }

    /// `POST /v1/registry/logins`.
    pub async fn registry_login(&self, login: &RegistryLogin) -> Result<()> {
        self.send(
            self.request(Method::POST, &["v1", "registry", "logins"])?
                .json(login),
        )
        .await?;
        Ok(())
    }

    /// `DELETE /v1/registry/logins/{host}`.
    pub async fn registry_logout(&self, host: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "registry", "logins", host])?)
            .await?;
        Ok(())
    }
}
