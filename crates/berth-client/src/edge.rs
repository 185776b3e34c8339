//! `berth edge`: reading and setting an app's edge rules.

use berth_proto::{AppEdge, EdgeRuleSet};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    /// `GET /v1/apps/{app}/edge`.
    pub async fn edge(&self, app: &str) -> Result<AppEdge> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "edge"])?)
            .await
    }

    /// `PUT /v1/apps/{app}/edge`: replaces the rules set with `berth edge`.
    pub async fn set_edge(&self, app: &str, rules: &EdgeRuleSet) -> Result<AppEdge> {
        self.json(
            self.request(Method::PUT, &["v1", "apps", app, "edge"])?
                .json(rules),
        )
        .await
    }
}
