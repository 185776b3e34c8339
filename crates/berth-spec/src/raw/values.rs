//! Reading the values fly accepts in several forms: counts, durations,
//! ports, memory sizes and process names.

use super::shapes::*;
use super::*;

/// MiB from fly's memory forms: a bare number of MB, or `512mb`, `1gb`, `2048MiB`.
pub(super) fn memory_mib(value: &NumberOrText) -> Option<u32> {
    match value {
        NumberOrText::Integer(number) => u32::try_from(*number).ok(),
        NumberOrText::Float(_) => None,
        NumberOrText::Text(text) => {
            let mib = sized(text, 1024.0 * 1024.0)? / (1024.0 * 1024.0);
            (mib < u32::MAX as f64).then_some(mib.round() as u32)
        }
    }
}

/// Bytes from a size: a bare number of bytes, or `512kb`, `10mb`, `1gb`.
pub(super) fn size_bytes(value: &NumberOrText) -> Option<u64> {
    match value {
        NumberOrText::Integer(number) => u64::try_from(*number).ok(),
        NumberOrText::Float(_) => None,
        NumberOrText::Text(text) => {
            let bytes = sized(text, 1.0)?;
            (bytes < u64::MAX as f64).then_some(bytes.round() as u64)
        }
    }
}

/// Bytes from a size as text: `512kb`, `10mb`, `1gb`, or a bare number of bytes.
pub(crate) fn size_text_bytes(text: &str) -> Option<u64> {
    size_bytes(&NumberOrText::Text(text.to_string()))
}

/// `NUMBER[UNIT]` in bytes, a bare number counting `bare` bytes each;
/// units k, m, g (with or without `b`/`ib`), powers of 1024.
fn sized(text: &str, bare: f64) -> Option<f64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" => bare,
        "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes)
}

pub(super) fn valid_process_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A count: a whole number, 0 or more, as a number or a string.
pub(super) fn count_value(
    value: &Spanned<NumberOrText>,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<u32> {
    let number = match value.get_ref() {
        NumberOrText::Integer(number) => Some(*number),
        NumberOrText::Text(text) => text.trim().parse::<i64>().ok(),
        NumberOrText::Float(_) => None,
    };
    match number.and_then(|number| u32::try_from(number).ok()) {
        Some(count) => Some(count),
        None => {
            problems.at(value, format!("`{key}` must be a whole number, 0 or more"));
            None
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Unit {
    Seconds,
    Millis,
}

pub(super) fn duration_value(
    value: &Spanned<NumberOrText>,
    bare_unit: Unit,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<Duration> {
    let from_number = |number: f64| -> Option<Duration> {
        if number < 0.0 || !number.is_finite() {
            return None;
        }
        Some(match bare_unit {
            Unit::Seconds => Duration::from_secs_f64(number),
            Unit::Millis => Duration::from_secs_f64(number / 1000.0),
        })
    };
    let parsed = match value.get_ref() {
        NumberOrText::Integer(number) => {
            from_number(*number as f64).ok_or_else(|| format!("`{key}` must not be negative"))
        }
        NumberOrText::Float(number) => {
            from_number(*number).ok_or_else(|| format!("`{key}` must not be negative"))
        }
        NumberOrText::Text(text) => match text.trim().parse::<f64>() {
            Ok(number) => {
                from_number(number).ok_or_else(|| format!("`{key}` must not be negative"))
            }
            Err(_) => parse_duration(text).map_err(|message| format!("`{key}`: {message}")),
        },
    };
    match parsed {
        Ok(duration) => Some(duration),
        Err(message) => {
            problems.at(value, message);
            None
        }
    }
}

pub(super) fn port_value(
    value: &Spanned<NumberOrText>,
    problems: &mut Problems<'_>,
) -> Option<u16> {
    named_port_value(value, "internal_port", problems)
}

pub(super) fn named_port_value(
    value: &Spanned<NumberOrText>,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<u16> {
    let number = match value.get_ref() {
        NumberOrText::Integer(number) => Some(*number),
        NumberOrText::Text(text) => text.trim().parse::<i64>().ok(),
        NumberOrText::Float(_) => None,
    };
    match number {
        Some(port @ 1..=65535) => Some(port as u16),
        _ => {
            problems.at(
                value,
                format!("{key} must be a whole number from 1 to 65535"),
            );
            None
        }
    }
}

/// Env vars as a spec gives them: names berth can pass to a process, values
/// without NUL and at most [`crate::MAX_ENV_VALUE_BYTES`], at most
/// [`crate::MAX_ENV_VARS`] of them. `PORT` is berth's: a warning says so.
pub(super) fn validate_env(
    env: BTreeMap<String, Spanned<Scalar>>,
    section: &str,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
    file: &str,
) -> BTreeMap<String, String> {
    if env.len() > crate::MAX_ENV_VARS
        && let Some((_, first)) = env.iter().next()
    {
        problems.at(
            first,
            format!(
                "{section} has {} variables; at most {} fit",
                env.len(),
                crate::MAX_ENV_VARS
            ),
        );
    }
    let mut valid = BTreeMap::new();
    for (key, value) in env {
        if let Err(why) = crate::check_env_key(&key) {
            problems.at(&value, format!("{section}: {why}"));
            continue;
        }
        if key == "PORT" && !file.is_empty() {
            warnings.push(format!(
                "{file}: {section} sets PORT, which berth sets itself (to internal_port, or a port it picks); the value is replaced"
            ));
        }
        let span = value.span();
        let text = value.into_inner().into_string();
        let located = Spanned::new(span, ());
        if text.contains('\0') {
            problems.at(&located, format!("{section}: `{key}` holds a NUL byte"));
        } else if text.len() > crate::MAX_ENV_VALUE_BYTES {
            problems.at(
                &located,
                format!(
                    "{section}: `{key}` is {} bytes; a value may have at most {}",
                    text.len(),
                    crate::MAX_ENV_VALUE_BYTES
                ),
            );
        } else {
            valid.insert(key, text);
        }
    }
    valid
}

/// Joins words into one `/bin/sh -c` command line, quoting each that the
/// shell would otherwise split or expand.
pub fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
