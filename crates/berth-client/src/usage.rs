//! Usage, budgets and webhooks.

use berth_proto::{
    AddNotifyChannel, BudgetStatus, NotifyChannel, NotifyDelivery, SetBudget, UsageReport,
};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    /// `GET /v1/usage`.
    pub async fn usage(
        &self,
        app: Option<&str>,
        since: Option<u64>,
        until: Option<u64>,
        by: &str,
    ) -> Result<UsageReport> {
        let mut query = vec![("by", by.to_string())];
        if let Some(app) = app {
            query.push(("app", app.to_string()));
        }
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        if let Some(until) = until {
            query.push(("until", until.to_string()));
        }
        self.json(self.request(Method::GET, &["v1", "usage"])?.query(&query))
            .await
    }

    /// `GET /v1/budgets/{app}` (`*`: the server's).
    pub async fn budget(&self, app: &str) -> Result<BudgetStatus> {
        self.json(self.request(Method::GET, &["v1", "budgets", app])?)
            .await
    }

    /// `PUT /v1/budgets/{app}`.
    pub async fn set_budget(&self, app: &str, request: &SetBudget) -> Result<BudgetStatus> {
        self.json(
            self.request(Method::PUT, &["v1", "budgets", app])?
                .json(request),
        )
        .await
    }

    /// `POST /v1/budgets/{app}/resume`.
    pub async fn resume_budget(&self, app: &str) -> Result<BudgetStatus> {
        self.json(self.request(Method::POST, &["v1", "budgets", app, "resume"])?)
            .await
    }

    /// `GET /v1/notify`.
    pub async fn notify_channels(&self) -> Result<Vec<NotifyChannel>> {
        self.json(self.request(Method::GET, &["v1", "notify"])?)
            .await
    }

    /// `POST /v1/notify`.
    pub async fn add_notify_channel(&self, request: &AddNotifyChannel) -> Result<NotifyChannel> {
        self.json(self.request(Method::POST, &["v1", "notify"])?.json(request))
            .await
    }

    /// `DELETE /v1/notify/{id}`.
    pub async fn remove_notify_channel(&self, id: u64) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "notify", &id.to_string()])?)
            .await?;
        Ok(())
    }

    /// `GET /v1/notify/log`.
    pub async fn notify_log(&self) -> Result<Vec<NotifyDelivery>> {
        self.json(self.request(Method::GET, &["v1", "notify", "log"])?)
            .await
    }
}
