//! Queries over stored lines: by time, source, level, `--where`
//! conditions, a regular expression, and full-text search; the same
//! filters decide which live lines a follower gets.

use berth_proto::{LogLine, LogStream};

use crate::filter::Condition;
use crate::{LogError, LogStore, StoredLine, format_micros, level_rank};

/// A regular expression over a line's message and fields (`--grep`).
#[derive(Debug, Clone)]
pub struct Grep {
    pattern: String,
    regex: regex::Regex,
}

impl Grep {
    /// Compiles `pattern`: a clear error when it is not a regular expression.
    pub fn new(pattern: &str) -> Result<Grep, LogError> {
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|err| LogError::BadQuery(format!("--grep {pattern}: {err}")))?;
        Ok(Grep {
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// Whether `text` has a match.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// A query over stored lines.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The app.
    pub app: String,
    /// Only lines at or after this time (unix microseconds).
    pub since_micros: Option<i64>,
    /// Only lines before this time (unix microseconds).
    pub until_micros: Option<i64>,
    /// Only lines of this process group.
    pub process: Option<String>,
    /// Only lines of this instance.
    pub instance: Option<String>,
    /// Only lines of instances whose id starts with this.
    pub instance_prefix: Option<String>,
    /// Only lines at this level or more severe (`trace` … `error`).
    pub min_level: Option<String>,
    /// Only lines whose message or fields match this.
    pub grep: Option<Grep>,
    /// Only lines where all of these hold (`--where`).
    pub conditions: Vec<Condition>,
    /// Only lines with these words (SQLite FTS5 query syntax: words,
    /// `"a phrase"`, `prefix*`, `AND`, `OR`, `NOT`). Stored lines only:
    /// a follower's live lines are not searched.
    pub search: Option<String>,
    /// Only lines whose id is above this.
    pub after_id: Option<i64>,
    /// At most this many lines: the newest ones (the oldest with
    /// `oldest`), returned oldest first.
    pub limit: u32,
    /// Take the oldest matching lines, not the newest (a drain reading on
    /// from its cursor).
    pub oldest: bool,
}

impl LogQuery {
    /// Whether a live line passes this query's filters.
    pub fn matches(&self, stored: &StoredLine) -> bool {
        let line = &stored.line;
        if line.app != self.app {
            return false;
        }
        if self.after_id.is_some_and(|after| stored.id <= after) {
            return false;
        }
        if self
            .process
            .as_ref()
            .is_some_and(|process| &line.process != process)
        {
            return false;
        }
        if self
            .instance
            .as_ref()
            .is_some_and(|instance| &line.instance != instance)
        {
            return false;
        }
        if self
            .instance_prefix
            .as_ref()
            .is_some_and(|prefix| !line.instance.starts_with(prefix.as_str()))
        {
            return false;
        }
        if let Some(min) = &self.min_level {
            let wanted = level_rank(min).unwrap_or(0);
            match line.level.as_deref().and_then(level_rank) {
                Some(rank) if rank >= wanted => {}
                _ => return false,
            }
        }
        if let Some(grep) = &self.grep {
            let in_fields = line
                .fields
                .as_ref()
                .is_some_and(|fields| grep.is_match(&fields.to_string()));
            if !grep.is_match(&line.message) && !in_fields {
                return false;
            }
        }
        self.conditions
            .iter()
            .all(|condition| condition.matches(stored))
    }

    /// The query as SQL, with its values.
    fn sql(&self) -> Result<(String, Vec<rusqlite::types::Value>), LogError> {
        let mut sql = String::from(
            "SELECT id, at, app, process, instance, release, stream, level, message, fields, colored FROM logs WHERE app = ?1",
        );
        let mut values: Vec<rusqlite::types::Value> = vec![self.app.clone().into()];
        let mut bind = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
            values.push(value);
            sql.push_str(&clause.replace("?N", &format!("?{}", values.len())));
        };
        if let Some(since) = self.since_micros {
            bind(&mut sql, " AND at >= ?N", since.into());
        }
        if let Some(until) = self.until_micros {
            bind(&mut sql, " AND at < ?N", until.into());
        }
        if let Some(after) = self.after_id {
            bind(&mut sql, " AND id > ?N", after.into());
        }
        if let Some(process) = &self.process {
            bind(&mut sql, " AND process = ?N", process.clone().into());
        }
        if let Some(instance) = &self.instance {
            bind(&mut sql, " AND instance = ?N", instance.clone().into());
        }
        if let Some(prefix) = &self.instance_prefix {
            let escaped = prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            bind(
                &mut sql,
                " AND instance LIKE ?N ESCAPE '\\'",
                format!("{escaped}%").into(),
            );
        }
        if let Some(level) = &self.min_level {
            let rank = level_rank(level).ok_or_else(|| {
                LogError::BadQuery(format!(
                    "unknown level `{level}` (use trace, debug, info, warn or error)"
                ))
            })?;
            bind(&mut sql, " AND level_rank >= ?N", i64::from(rank).into());
        }
        if let Some(grep) = &self.grep {
            bind(
                &mut sql,
                " AND (message REGEXP ?N OR (fields IS NOT NULL AND fields REGEXP ?N))",
                grep.pattern.clone().into(),
            );
        }
        if let Some(search) = &self.search {
            bind(
                &mut sql,
                " AND id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?N)",
                search.clone().into(),
            );
        }
        for condition in &self.conditions {
            let clause = condition.sql(&mut values);
            sql.push_str(" AND ");
            sql.push_str(&clause);
        }
        values.push(i64::from(self.limit.max(1)).into());
        let sql = format!(
            "SELECT * FROM ({sql} ORDER BY id {} LIMIT ?{}) ORDER BY id",
            if self.oldest { "ASC" } else { "DESC" },
            values.len()
        );
        Ok((sql, values))
    }
}

impl LogStore {
    /// Stored lines matching `query`, oldest first.
    pub fn query(&self, query: &LogQuery) -> Result<Vec<StoredLine>, LogError> {
        let (sql, values) = query.sql()?;
        self.run_query(&sql, values)
            .map_err(|err| match (&query.search, &err) {
                // A plain SQLITE_ERROR here is the search text's (an
                // unterminated string, an FTS5 syntax error): the SQL is ours.
                (Some(search), rusqlite::Error::SqliteFailure(failure, Some(message)))
                    if failure.extended_code == 1 =>
                {
                    LogError::BadQuery(format!("--search {search}: {message}"))
                }
                _ => LogError::Sqlite(err),
            })
    }

    /// Runs a query built by [`LogQuery::sql`].
    fn run_query(
        &self,
        sql: &str,
        values: Vec<rusqlite::types::Value>,
    ) -> rusqlite::Result<Vec<StoredLine>> {
        let conn = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let run = || -> rusqlite::Result<Vec<StoredLine>> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
                let stream: String = row.get(6)?;
                let fields: Option<String> = row.get(9)?;
                Ok(StoredLine {
                    id: row.get(0)?,
                    line: LogLine {
                        at: format_micros(row.get(1)?),
                        app: row.get(2)?,
                        process: row.get(3)?,
                        instance: row.get(4)?,
                        release: row.get(5)?,
                        stream: LogStream::from(stream.as_str()),
                        level: row.get(7)?,
                        message: row.get(8)?,
                        fields: fields.and_then(|text| serde_json::from_str(&text).ok()),
                        colored: row.get(10)?,
                    },
                })
            })?;
            rows.collect()
        };
        run()
    }
}

/// Registers `REGEXP` (`text REGEXP pattern`) on `conn`, with each
/// statement's pattern compiled once.
pub(crate) fn add_regexp(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "regexp",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| {
            let regex: std::sync::Arc<regex::Regex> = context.get_or_create_aux(
                0,
                |value| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                    let pattern = value.as_str()?;
                    Ok(regex::RegexBuilder::new(pattern)
                        .size_limit(1 << 20)
                        .build()?)
                },
            )?;
            let text = context.get_raw(1);
            Ok(match text {
                rusqlite::types::ValueRef::Text(bytes) => {
                    regex.is_match(&String::from_utf8_lossy(bytes))
                }
                _ => false,
            })
        },
    )
}

impl LogStore {
    /// Up to `limit` stored lines of `app` after id `after`, oldest first
    /// (what a drain sends next).
    pub fn read_after(
        &self,
        app: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredLine>, LogError> {
        let query = LogQuery {
            app: app.to_string(),
            after_id: Some(after),
            limit,
            oldest: true,
            ..LogQuery::default()
        };
        let (sql, values) = query.sql()?;
        self.run_query(&sql, values).map_err(LogError::Sqlite)
    }

    /// The id of the newest stored line of any app (0 when none).
    pub fn last_id(&self) -> Result<i64, LogError> {
        let conn = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM logs", [], |row| {
                row.get(0)
            })?,
        )
    }

    /// How many stored lines of `app` come after id `after`, and, when more
    /// than `keep` do, the id after which only the newest `keep` are left.
    pub fn backlog(
        &self,
        app: &str,
        after: i64,
        keep: u64,
    ) -> Result<(u64, Option<i64>), LogError> {
        let conn = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count: i64 = conn.query_row(
            "SELECT COUNT(*) FROM logs WHERE app = ?1 AND id > ?2",
            rusqlite::params![app, after],
            |row| row.get(0),
        )?;
        let count = count.max(0) as u64;
        if count <= keep {
            return Ok((count, None));
        }
        let skip_to: i64 = conn.query_row(
            "SELECT id FROM logs WHERE app = ?1 AND id > ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3",
            rusqlite::params![app, after, keep as i64],
            |row| row.get(0),
        )?;
        Ok((count, Some(skip_to)))
    }
}
