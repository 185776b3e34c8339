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
            let text = text.trim().to_ascii_lowercase();
            let split = text
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: f64 = number.parse().ok()?;
            let factor = match unit.trim() {
                "" | "m" | "mb" | "mib" => 1.0,
                "g" | "gb" | "gib" => 1024.0,
                "k" | "kb" | "kib" => 1.0 / 1024.0,
                _ => return None,
            };
            let mib = number * factor;
            (mib.is_finite() && mib >= 0.0 && mib < u32::MAX as f64).then_some(mib.round() as u32)
        }
    }
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
                "internal_port must be a whole number from 1 to 65535".into(),
            );
            None
        }
    }
}
