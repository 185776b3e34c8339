//! Durations as fly.toml and berth.toml write them: `500ms`, `5s`, `1m30s`, `2h`, `14d`.

use std::time::Duration;

/// Parses `500ms`, `5s`, `1.5s`, `1m30s`, `2h`, `14d`. A bare number is rejected here;
/// callers decide its unit (fly takes seconds for `kill_timeout`, milliseconds
/// for check intervals).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration `{text}` needs a unit (ms, s, m, h or d)"))?;
        if number_len == 0 {
            return Err(format!("duration `{text}` must start with a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("`{}` in `{text}` is not a number", &rest[..number_len]))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "us" | "µs" => 0.000_001,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in duration `{text}` (use ms, s, m, h or d)"
                ));
            }
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * seconds_per_unit);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fly_style_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    }

    #[test]
    fn rejects_bare_numbers_and_unknown_units() {
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }
}

pub use berth_proto::format_duration;

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for (text, millis) in [
            ("250ms", 250),
            ("1.5s", 1500),
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
        ] {
            let duration = Duration::from_millis(millis);
            let shown = format_duration(duration);
            let expected = if text == "90s" { "1m30s" } else { text };
            assert_eq!(shown, expected);
            assert_eq!(parse_duration(&shown).unwrap(), duration);
        }
    }
}
