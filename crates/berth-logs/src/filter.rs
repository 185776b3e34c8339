//! `berth logs --where`: conditions on a line's level, source and
//! structured fields, such as `level>=warn user_id=42 path~/api`.
//!
//! An expression is terms separated by spaces (all must hold). A term is a
//! field, an operator and a value: `=` `!=` `>` `>=` `<` `<=`, or `~`
//! (contains, ignoring case). Values with spaces are quoted (`msg~"timed
//! out"`). `level` compares by severity; `process`, `instance`, `stream`,
//! `release` and `message` (or `msg`) are the line's own; any other name
//! is a field of a JSON or logfmt line, nested ones with dots (`http.status`).
//! A number compares as a number (`status>=500`), anything else as text.
//! A line without the field matches only `!=`.
//!
//! Each condition is evaluated twice, the same way: as SQL for stored lines
//! and in Rust for live ones ([`Condition::matches`]).

use serde_json::Value;

use crate::{LogError, StoredLine, level_rank};

/// How a field is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `~`: contains, ignoring case.
    Contains,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Contains => "~",
        }
    }

    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => ordering == Equal,
            Op::Ne => ordering != Equal,
            Op::Gt => ordering == Greater,
            Op::Ge => ordering != Less,
            Op::Lt => ordering == Less,
            Op::Le => ordering != Greater,
            Op::Contains => false,
        }
    }
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The level, by severity.
    Level,
    /// A column of the line's own: `process`, `instance`, `stream`, `message`.
    Column(&'static str),
    /// The release version.
    Release,
    /// A structured field, by its path (`user_id`, `http.status`).
    Structured(Vec<String>),
}

/// One term of a `--where` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// What it looks at.
    pub field: Field,
    /// How.
    pub op: Op,
    /// The value compared with, as written.
    pub value: String,
}

/// Parses a `--where` expression.
pub fn parse_where(text: &str) -> Result<Vec<Condition>, LogError> {
    let mut conditions = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (condition, after) = parse_term(rest)?;
        conditions.push(condition);
        rest = after.trim_start();
    }
    if conditions.is_empty() {
        return Err(bad("an empty --where expression".into()));
    }
    Ok(conditions)
}

fn bad(message: String) -> LogError {
    LogError::BadQuery(message)
}

fn parse_term(text: &str) -> Result<(Condition, &str), LogError> {
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-@".contains(c)))
        .unwrap_or(text.len());
    let name = &text[..name_end];
    let term = text.split_whitespace().next().unwrap_or(text);
    if name.is_empty() {
        return Err(bad(format!(
            "`{term}`: a condition starts with a field name (as in level>=warn or user_id=42)"
        )));
    }
    let after_name = &text[name_end..];
    let operator_end = after_name
        .find(|c: char| !"=!<>~".contains(c))
        .unwrap_or(after_name.len());
    let op = match &after_name[..operator_end] {
        "=" | "==" => Op::Eq,
        "!=" => Op::Ne,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        "~" => Op::Contains,
        "" => {
            return Err(bad(format!(
                "`{term}` has no operator (use = != > >= < <= or ~)"
            )));
        }
        other => {
            return Err(bad(format!(
                "unknown operator `{other}` in `{term}` (use = != > >= < <= or ~)"
            )));
        }
    };
    let (value, rest) = parse_value(&after_name[operator_end..], term)?;
    let field = field(name)?;
    if field == Field::Level && op != Op::Contains && level_rank(&value).is_none() {
        return Err(bad(format!(
            "unknown level `{value}` in `{term}` (use trace, debug, info, warn or error)"
        )));
    }
    Ok((Condition { field, op, value }, rest))
}

fn parse_value<'a>(text: &'a str, term: &str) -> Result<(String, &'a str), LogError> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                '"' => return Ok((value, &quoted[at + 1..])),
                other => value.push(other),
            }
        }
        return Err(bad(format!("an unclosed quote in `{term}`")));
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    if end == 0 {
        return Err(bad(format!("`{term}` has no value")));
    }
    Ok((text[..end].to_string(), &text[end..]))
}

fn field(name: &str) -> Result<Field, LogError> {
    Ok(match name {
        "level" => Field::Level,
        "process" => Field::Column("process"),
        "instance" => Field::Column("instance"),
        "stream" => Field::Column("stream"),
        "message" | "msg" => Field::Column("message"),
        "release" => Field::Release,
        path => {
            let parts: Vec<String> = path.split('.').map(str::to_string).collect();
            if parts.iter().any(String::is_empty) {
                return Err(bad(format!("`{path}` is not a field name")));
            }
            Field::Structured(parts)
        }
    })
}

impl Condition {
    /// This condition as SQL over the `logs` table, its values appended to
    /// `values` (numbered from their position there).
    pub(crate) fn sql(&self, values: &mut Vec<rusqlite::types::Value>) -> String {
        let mut bind = |value: rusqlite::types::Value| {
            values.push(value);
            format!("?{}", values.len())
        };
        let number = self.value.parse::<f64>().ok().filter(|n| n.is_finite());
        match &self.field {
            Field::Level => match self.op {
                Op::Contains => format!(
                    "instr(lower(COALESCE(level, '')), lower({})) > 0",
                    bind(self.value.clone().into())
                ),
                op => {
                    let rank = i64::from(level_rank(&self.value).unwrap_or(0));
                    let rank = bind(rank.into());
                    match op {
                        Op::Ne => format!("(level_rank IS NULL OR level_rank != {rank})"),
                        op => format!("level_rank {} {rank}", op.sql()),
                    }
                }
            },
            Field::Release => {
                let value = match self.op {
                    Op::Contains => bind(self.value.clone().into()),
                    _ => bind(number.unwrap_or(f64::NAN).into()),
                };
                self.compare("release", &value, None)
            }
            Field::Column(column) => {
                let value = bind(self.value.clone().into());
                self.compare(column, &value, None)
            }
            Field::Structured(path) => {
                let path = bind(json_path(path).into());
                let extracted = format!("json_extract(fields, {path})");
                let (value, numeric) = match number.filter(|_| self.op != Op::Contains) {
                    Some(number) => (bind(number.into()), Some(())),
                    None => (bind(self.value.clone().into()), None),
                };
                // JSON's true and false are text here, as in the line.
                let as_text = format!(
                    "(CASE json_type(fields, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST({extracted} AS TEXT) END)"
                );
                let expression = match (numeric, self.op) {
                    (_, Op::Contains) => as_text,
                    // A number written as a string in the line ("42")
                    // compares as the number.
                    (Some(()), _) => format!(
                        "(CASE WHEN json_type(fields, {path}) IN ('integer', 'real', 'text') THEN CAST({extracted} AS REAL) END)"
                    ),
                    (None, _) => as_text,
                };
                self.compare(&expression, &value, Some(&extracted))
            }
        }
    }

    /// `left OP value`, with `!=` also true where the field is missing
    /// (`present` is NULL).
    fn compare(&self, left: &str, value: &str, present: Option<&str>) -> String {
        match self.op {
            Op::Contains => {
                format!("instr(lower(CAST({left} AS TEXT)), lower(CAST({value} AS TEXT))) > 0")
            }
            Op::Ne => format!(
                "({} IS NULL OR {left} IS NULL OR {left} != {value})",
                present.unwrap_or(left)
            ),
            op => format!("{left} {} {value}", op.sql()),
        }
    }

    /// Whether a live line passes, as the SQL of the same condition would decide.
    pub fn matches(&self, stored: &StoredLine) -> bool {
        let line = &stored.line;
        let number = self.value.parse::<f64>().ok().filter(|n| n.is_finite());
        match &self.field {
            Field::Level => match self.op {
                Op::Contains => contains(line.level.as_deref().unwrap_or(""), &self.value),
                op => {
                    let wanted = level_rank(&self.value).unwrap_or(0);
                    match line.level.as_deref().and_then(level_rank) {
                        Some(rank) => op.holds(rank.cmp(&wanted)),
                        None => op == Op::Ne,
                    }
                }
            },
            Field::Release => match self.op {
                Op::Contains => contains(&line.release.to_string(), &self.value),
                op => number
                    .and_then(|number| (line.release as f64).partial_cmp(&number))
                    .is_some_and(|ordering| op.holds(ordering)),
            },
            Field::Column(column) => {
                let text = match *column {
                    "process" => line.process.as_str(),
                    "instance" => line.instance.as_str(),
                    "stream" => line.stream.as_str(),
                    _ => line.message.as_str(),
                };
                self.text_holds(text)
            }
            Field::Structured(path) => {
                let found = line
                    .fields
                    .as_ref()
                    .and_then(|fields| path.iter().try_fold(fields, |at, key| at.get(key)))
                    .filter(|value| !value.is_null());
                let Some(found) = found else {
                    return self.op == Op::Ne;
                };
                let text = match found {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                if self.op == Op::Contains {
                    return contains(&text, &self.value);
                }
                match number {
                    Some(number) => {
                        let value = match found {
                            Value::Number(n) => n.as_f64(),
                            Value::String(text) => Some(sqlite_real(text)),
                            _ => None,
                        };
                        match value.and_then(|value| value.partial_cmp(&number)) {
                            Some(ordering) => self.op.holds(ordering),
                            None => self.op == Op::Ne,
                        }
                    }
                    None => self.text_holds(&text),
                }
            }
        }
    }

    fn text_holds(&self, text: &str) -> bool {
        match self.op {
            Op::Contains => contains(text, &self.value),
            op => op.holds(text.cmp(self.value.as_str())),
        }
    }
}

/// `$."a"."b"`: a JSON path SQLite reads whatever the keys hold.
fn json_path(parts: &[String]) -> String {
    let mut path = String::from("$");
    for part in parts {
        path.push_str(".\"");
        path.push_str(&part.replace('"', ""));
        path.push('"');
    }
    path
}

/// `~`: contains, ignoring the case of ASCII letters (as SQLite's `lower`).
fn contains(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// A text as SQLite's `CAST(text AS REAL)` reads it: the number its start
/// spells (`42ms` is 42), or 0.
fn sqlite_real(text: &str) -> f64 {
    let text = text.trim_start();
    let bytes = text.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        end = 1;
    }
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    };
    let whole = digits(end);
    end += whole;
    let mut fraction = 0;
    if bytes.get(end) == Some(&b'.') {
        fraction = digits(end + 1);
        if whole + fraction > 0 {
            end += 1 + fraction;
        }
    }
    if whole + fraction == 0 {
        return 0.0;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exponent = end + 1;
        if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        let count = digits(exponent);
        if count > 0 {
            end = exponent + count;
        }
    }
    text[..end].parse().unwrap_or(0.0)
}
