//! Webhooks (`berth notify add`) and the outbox of deliveries to them: an
//! event is written once per matching webhook, and a deliverer sends what
//! is due, retrying with backoff.

use berth_proto::{NotifyDelivery, NotifyFormat, notify_event_matches};
use rusqlite::{Connection, params};

use crate::*;

/// A webhook as stored, its secret included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRow {
    /// Its id.
    pub id: u64,
    /// Where it posts.
    pub url: String,
    /// Event patterns; empty: all.
    pub events: Vec<String>,
    /// The body's shape.
    pub format: NotifyFormat,
    /// The HMAC-SHA256 key bodies are signed with.
    pub secret: String,
}

/// A delivery due now, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// Its id.
    pub id: u64,
    /// The webhook.
    pub channel: NotifyRow,
    /// The event.
    pub event: String,
    /// The app, or `*`.
    pub app: String,
    /// When it happened, RFC 3339.
    pub at: String,
    /// The event's JSON payload.
    pub body: String,
    /// This try's number (the claim counted it).
    pub attempts: u32,
}

fn format_text(format: NotifyFormat) -> &'static str {
    match format {
        NotifyFormat::Json => "json",
        NotifyFormat::Slack => "slack",
    }
}

fn channel_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<NotifyRow> {
    let events: String = row.get(first + 2)?;
    let format: String = row.get(first + 3)?;
    Ok(NotifyRow {
        id: row.get::<_, i64>(first)? as u64,
        url: row.get(first + 1)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        format: if format == "slack" {
            NotifyFormat::Slack
        } else {
            NotifyFormat::Json
        },
        secret: row.get(first + 4)?,
    })
}

impl Store {
    /// Adds a webhook.
    pub fn add_notify_channel(
        &self,
        url: &str,
        events: &[String],
        format: NotifyFormat,
        secret: &str,
    ) -> Result<NotifyRow> {
        let id = self.write(|tx| {
            tx.execute(
                "INSERT INTO notify_channels (url, events, format, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    url,
                    serde_json::to_string(events).unwrap_or_else(|_| "[]".into()),
                    format_text(format),
                    secret,
                    now_rfc3339()
                ],
            )?;
            Ok(tx.last_insert_rowid() as u64)
        })?;
        Ok(NotifyRow {
            id,
            url: url.to_string(),
            events: events.to_vec(),
            format,
            secret: secret.to_string(),
        })
    }

    /// Every webhook.
    pub fn notify_channels(&self) -> Result<Vec<NotifyRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, url, events, format, secret FROM notify_channels ORDER BY id",
        )?;
        let rows = stmt.query_map([], |row| channel_row(row, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a webhook and its deliveries.
    pub fn remove_notify_channel(&self, id: u64) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM notify_channels WHERE id = ?1", [id as i64])? == 0 {
                return Err(StoreError::NotFound(format!("webhook {id}")));
            }
            Ok(())
        })
    }

    /// Queues `event` for every webhook that asks for it; returns how many.
    pub fn enqueue_notification(&self, event: &str, app: &str, body: &str) -> Result<usize> {
        self.write(|tx| enqueue_in(tx, event, app, body))
    }

    /// Claims up to `limit` deliveries due at unix second `now`: of each
    /// webhook its oldest pending one (so a webhook gets its events in
    /// order), none of `busy` webhooks. A claim counts as a try and is not
    /// due again for `lease` seconds, so it is not sent twice while its try
    /// runs; a server that stops during a try sends it again after the
    /// lease (receivers deduplicate on the delivery id).
    pub fn claim_due_deliveries(
        &self,
        now: u64,
        limit: usize,
        lease: u64,
        busy: &[u64],
    ) -> Result<Vec<DueDelivery>> {
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        self.write(|tx| {
            let claimed = {
                let mut stmt = tx.prepare_cached(
                    "SELECT d.id, d.event, d.app, d.at, d.body, d.attempts + 1, c.id, c.url, c.events, c.format, c.secret
                     FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY channel ORDER BY id) AS turn
                           FROM notify_deliveries WHERE status = 'pending') d
                     JOIN notify_channels c ON c.id = d.channel
                     WHERE d.turn = 1 AND d.next_at <= ?1 AND d.channel NOT IN (SELECT value FROM json_each(?3))
                     ORDER BY d.id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now as i64, limit as i64, busy], |row| {
                    Ok(DueDelivery {
                        id: row.get::<_, i64>(0)? as u64,
                        event: row.get(1)?,
                        app: row.get(2)?,
                        at: row.get(3)?,
                        body: row.get(4)?,
                        attempts: row.get(5)?,
                        channel: channel_row(row, 6)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            for delivery in &claimed {
                tx.execute(
                    "UPDATE notify_deliveries SET next_at = ?2, attempts = attempts + 1 WHERE id = ?1",
                    params![delivery.id as i64, (now + lease) as i64],
                )?;
            }
            Ok(claimed)
        })
    }

    /// Records a try: `delivered`, or the failure with the next try at
    /// `retry_at` (`None`: give up, `failed`).
    pub fn record_delivery(
        &self,
        id: u64,
        outcome: std::result::Result<(), (&str, Option<u64>)>,
    ) -> Result<()> {
        self.write(|tx| {
            match outcome {
                Ok(()) => tx.execute(
                    "UPDATE notify_deliveries SET status = 'delivered', last_error = NULL WHERE id = ?1 AND status = 'pending'",
                    [id as i64],
                )?,
                Err((error, Some(retry_at))) => tx.execute(
                    "UPDATE notify_deliveries SET last_error = ?2, next_at = ?3 WHERE id = ?1 AND status = 'pending'",
                    params![id as i64, error, retry_at as i64],
                )?,
                Err((error, None)) => tx.execute(
                    "UPDATE notify_deliveries SET status = 'failed', last_error = ?2 WHERE id = ?1 AND status = 'pending'",
                    params![id as i64, error],
                )?,
            };
            // The log keeps the last thousand.
            tx.execute(
                "DELETE FROM notify_deliveries WHERE status != 'pending' AND id <= (SELECT MAX(id) FROM notify_deliveries) - 1000",
                [],
            )?;
            Ok(())
        })
    }

    /// The latest deliveries, newest first.
    pub fn notify_deliveries(&self, limit: usize) -> Result<Vec<NotifyDelivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, channel, event, app, at, status, attempts, last_error FROM notify_deliveries ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(NotifyDelivery {
                id: row.get::<_, i64>(0)? as u64,
                channel: row.get::<_, i64>(1)? as u64,
                event: row.get(2)?,
                app: row.get(3)?,
                at: row.get(4)?,
                status: row.get(5)?,
                attempts: row.get(6)?,
                last_error: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Queues `event` in `tx` for every webhook that asks for it.
pub(crate) fn enqueue_in(tx: &Connection, event: &str, app: &str, body: &str) -> Result<usize> {
    let channels = {
        let mut stmt =
            tx.prepare_cached("SELECT id, url, events, format, secret FROM notify_channels")?;
        let rows = stmt.query_map([], |row| channel_row(row, 0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let mut queued = 0;
    for channel in channels.iter().filter(|channel| {
        channel.events.is_empty()
            || channel
                .events
                .iter()
                .any(|pattern| notify_event_matches(pattern, event))
    }) {
        tx.execute(
            "INSERT INTO notify_deliveries (channel, event, app, at, body, status, next_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
            params![channel.id as i64, event, app, now_rfc3339(), body, now_unix() as i64],
        )?;
        queued += 1;
    }
    Ok(queued)
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
