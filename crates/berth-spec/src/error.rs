//! Spec errors that point at file, line and column.

use std::fmt;

/// A position in a spec file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number, from 1.
    pub line: usize,
    /// Column number in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The line and column of byte offset `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        Location { line, column }
    }
}

/// A serde message without berth's own type names: "expected struct
/// RawBlueprint" becomes "expected a mapping" (`what`: "a mapping", "a
/// table", "an object").
pub(crate) fn without_type_names(message: &str, what: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("struct Raw") {
        out.push_str(&rest[..at]);
        out.push_str(what);
        let after = &rest[at + "struct Raw".len()..];
        let name_end = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        rest = &after[name_end..];
    }
    out.push_str(rest);
    out
}

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Where it is, when known.
    pub location: Option<Location>,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

/// Every problem found in one spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file's name as the user knows it (`berth.toml`).
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<SpecProblem>,
}

impl SpecError {
    pub(crate) fn single(file: &str, location: Option<Location>, message: String) -> Self {
        SpecError {
            file: file.to_string(),
            problems: vec![SpecProblem { location, message }],
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            match problem.location {
                Some(Location { line, column }) => {
                    write!(f, "{}:{line}:{column}: {}", self.file, problem.message)?
                }
                None => write!(f, "{}: {}", self.file, problem.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 6),
            Location { line: 2, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 9),
            Location { line: 2, column: 4 }
        );
    }
}

#[cfg(test)]
mod type_name_tests {
    #[test]
    fn serde_messages_lose_the_raw_type_names() {
        assert_eq!(
            super::without_type_names(
                "invalid type: string \"x\", expected struct RawBlueprint",
                "a mapping"
            ),
            "invalid type: string \"x\", expected a mapping"
        );
        assert_eq!(super::without_type_names("plain", "a table"), "plain");
    }
}
