//! Secrets files users already have: Shuttle's `Secrets.toml` (a flat TOML
//! table) and `.env` files (`KEY=VALUE` lines).

use std::collections::BTreeMap;

use crate::error::{Location, SpecError, SpecProblem};

/// Reads a secrets file; `file` decides the format (`*.toml` is TOML,
/// anything else is `.env`). Every problem is reported with its line and
/// column; values never appear in errors.
pub fn parse_secrets_file(file: &str, text: &str) -> Result<BTreeMap<String, String>, SpecError> {
    if file.ends_with(".toml") {
        parse_toml(file, text)
    } else {
        parse_dotenv(file, text)
    }
}

fn parse_toml(file: &str, text: &str) -> Result<BTreeMap<String, String>, SpecError> {
    let table: toml::Spanned<toml::Table> = toml::from_str(text).map_err(|err| {
        let location = err.span().map(|span| Location::of_offset(text, span.start));
        SpecError::single(file, location, err.message().trim().to_string())
    })?;
    let raw: BTreeMap<String, toml::Spanned<toml::Value>> =
        toml::from_str(text).unwrap_or_default();
    let mut secrets = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in table.into_inner() {
        let location = raw
            .get(&name)
            .map(|spanned| Location::of_offset(text, spanned.span().start));
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            _ => {
                problems.push(SpecProblem {
                    location,
                    message: format!(
                        "secret `{name}` must be a string, number or boolean, not a table or array"
                    ),
                });
                continue;
            }
        };
        if let Err(message) = check_name(&name) {
            problems.push(SpecProblem { location, message });
            continue;
        }
        secrets.insert(name, value);
    }
    finish(file, secrets, problems)
}

fn parse_dotenv(file: &str, text: &str) -> Result<BTreeMap<String, String>, SpecError> {
    let mut secrets = BTreeMap::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let at = |column_offset: usize| Location {
            line: index + 1,
            column: column_offset + 1,
        };
        let Some((name, value)) = body.split_once('=') else {
            problems.push(SpecProblem {
                location: Some(at(indent)),
                message: "expected NAME=VALUE".into(),
            });
            continue;
        };
        let name = name.trim();
        if let Err(message) = check_name(name) {
            problems.push(SpecProblem {
                location: Some(at(indent)),
                message,
            });
            continue;
        }
        let value = value.trim();
        let value = match unquote(value) {
            Ok(value) => value,
            Err(message) => {
                let column = line.find('=').map_or(indent, |equals| equals + 1);
                problems.push(SpecProblem {
                    location: Some(at(column)),
                    message,
                });
                continue;
            }
        };
        secrets.insert(name.to_string(), value);
    }
    finish(file, secrets, problems)
}

/// `"…"` (with `\n`, `\"`, `\\` escapes), `'…'` (literal), or bare (a
/// trailing ` # comment` dropped).
fn unquote(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => break,
                },
                other => out.push(other),
            }
        }
        return Err("unterminated double-quoted value".into());
    }
    if let Some(rest) = value.strip_prefix('\'') {
        return rest
            .find('\'')
            .map(|end| rest[..end].to_string())
            .ok_or_else(|| "unterminated single-quoted value".into());
    }
    let bare = match value.find(" #") {
        Some(comment) => &value[..comment],
        None => value,
    };
    Ok(bare.trim_end().to_string())
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot be an env var name (letters, digits and `_`, not starting with a digit)"
        ))
    }
}

fn finish(
    file: &str,
    secrets: BTreeMap<String, String>,
    mut problems: Vec<SpecProblem>,
) -> Result<BTreeMap<String, String>, SpecError> {
    if problems.is_empty() {
        return Ok(secrets);
    }
    problems.sort_by_key(|problem| problem.location.map(|at| (at.line, at.column)));
    Err(SpecError {
        file: file.to_string(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuttle_secrets_toml_is_a_flat_table() {
        let text = "API_KEY = \"sk_123\"\nPORT_COUNT = 3\nDEBUG = true\n";
        let secrets = parse_secrets_file("Secrets.toml", text).unwrap();
        assert_eq!(secrets["API_KEY"], "sk_123");
        assert_eq!(secrets["PORT_COUNT"], "3");
        assert_eq!(secrets["DEBUG"], "true");
    }

    #[test]
    fn nested_tables_and_bad_toml_point_at_their_place() {
        let err = parse_secrets_file("Secrets.toml", "A = \"x\"\n[db]\nurl = \"y\"\n").unwrap_err();
        assert!(err.to_string().contains("Secrets.toml:2:"), "{err}");
        let err = parse_secrets_file("Secrets.toml", "A = \n").unwrap_err();
        assert!(err.to_string().starts_with("Secrets.toml:1:"), "{err}");
    }

    #[test]
    fn dotenv_lines_quotes_comments_and_export() {
        let text = "# comment\n\nexport A=plain # note\nB=\"two\\nlines\"\nC='lit$eral'\nD=\n";
        let secrets = parse_secrets_file(".env", text).unwrap();
        assert_eq!(secrets["A"], "plain");
        assert_eq!(secrets["B"], "two\nlines");
        assert_eq!(secrets["C"], "lit$eral");
        assert_eq!(secrets["D"], "");
    }

    #[test]
    fn dotenv_problems_name_line_and_column_without_values() {
        let text = "GOOD=1\nno equals here\n1BAD=x\nQ=\"open secret\n";
        let err = parse_secrets_file(".env", text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(".env:2:1: expected NAME=VALUE"), "{shown}");
        assert!(shown.contains(".env:3:1:"), "{shown}");
        assert!(shown.contains(".env:4:3: unterminated"), "{shown}");
        assert!(!shown.contains("open secret"), "{shown}");
    }
}
