//! `berth logs` and `berth events`: stored and followed.

use berth_proto::{EventInfo, LogLine};
use reqwest::Method;
use serde::Serialize;

use crate::{Client, NdjsonStream, Result};

/// Filters for log queries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogFilter {
    /// RFC 3339 time or a duration back from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Process group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// Instance id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Only the tasks of this job execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution: Option<i64>,
    /// Minimum level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Lines before this: RFC 3339 time or a duration back from now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// A regular expression to find in the message or fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grep: Option<String>,
    /// Conditions on level, source and fields (`level>=warn user_id=42`).
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Full-text search (FTS5 syntax).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// At most this many past lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Client {
    /// `GET /v1/apps/{app}/logs`.
    pub async fn logs(&self, app: &str, filter: &LogFilter) -> Result<Vec<LogLine>> {
        self.json(
            self.request(Method::GET, &["v1", "apps", app, "logs"])?
                .query(filter),
        )
        .await
    }

    /// `GET /v1/apps/{app}/logs?follow=true`.
    pub async fn follow_logs(
        &self,
        app: &str,
        filter: &LogFilter,
    ) -> Result<NdjsonStream<LogLine>> {
        let request = self
            .request(Method::GET, &["v1", "apps", app, "logs"])?
            .query(filter)
            .query(&[("follow", "true")]);
        self.stream(request).await
    }

    /// `GET /v1/apps/{app}/events`.
    pub async fn events(&self, app: &str, limit: u32) -> Result<Vec<EventInfo>> {
        self.json(
            self.request(Method::GET, &["v1", "apps", app, "events"])?
                .query(&[("limit", limit)]),
        )
        .await
    }

    /// `GET /v1/apps/{app}/events?follow=true`.
    pub async fn follow_events(&self, app: &str, limit: u32) -> Result<NdjsonStream<EventInfo>> {
        let request = self
            .request(Method::GET, &["v1", "apps", app, "events"])?
            .query(&[("limit", limit.to_string()), ("follow", "true".into())]);
        self.stream(request).await
    }
}

impl Client {
    /// `GET /v1/apps/{app}/drains`.
    pub async fn drains(&self, app: &str) -> Result<Vec<berth_proto::DrainInfo>> {
        self.json(self.request(Method::GET, &["v1", "apps", app, "drains"])?)
            .await
    }

    /// `POST /v1/apps/{app}/drains`.
    pub async fn add_drain(
        &self,
        app: &str,
        request: &berth_proto::AddDrain,
    ) -> Result<berth_proto::DrainInfo> {
        self.json(
            self.request(Method::POST, &["v1", "apps", app, "drains"])?
                .json(request),
        )
        .await
    }

    /// `DELETE /v1/apps/{app}/drains/{id}`.
    pub async fn remove_drain(&self, app: &str, id: i64) -> Result<()> {
        self.send(self.request(
            Method::DELETE,
            &["v1", "apps", app, "drains", &id.to_string()],
        )?)
        .await?;
        Ok(())
    }
}
