//! Printing for people: aligned tables, durations, log lines, deploy
//! progress; and the logs of long-running commands.

use std::io::Write;

use berth_proto::{DeployProgress, LogLine};

/// One line about the tunnel to a relay: its state and what it serves.
pub fn tunnel_line(tunnel: &berth_proto::TunnelStatus) -> String {
    match tunnel.state.as_str() {
        "connected" => format!(
            "connected to {} (serving {})",
            tunnel.relay,
            tunnel.domains.join(", ")
        ),
        "retrying" => format!(
            "down, dialling {} again: {}",
            tunnel.relay,
            tunnel.error.as_deref().unwrap_or("unknown error")
        ),
        _ => format!("connecting to {}", tunnel.relay),
    }
}

/// Writes `text` to stdout (see `say!`): exits with status 0 when the
/// reader has closed the pipe, with status 1 on any other write error.
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {err}");
        std::process::exit(1);
    }
}

/// Prints rows under headers with columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if index < widths.len() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        say!("{}", text.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `3d4h`, `5m12s`, `42s`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// One log line as `berth logs` prints it.
pub fn log_line(line: &LogLine) -> String {
    let level = line
        .level
        .as_deref()
        .map(|level| format!(" {}", level.to_ascii_uppercase()))
        .unwrap_or_default();
    let fields = match &line.fields {
        Some(serde_json::Value::Object(fields)) => fields
            .iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => format!(" {key}={text}"),
                other => format!(" {key}={other}"),
            })
            .collect::<String>(),
        _ => String::new(),
    };
    // On a terminal, a line that came in colour is shown as written.
    if let Some(colored) = &line.colored
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return format!(
            "{} {}[v{}] {colored}\u{1b}[0m",
            line.at, line.instance, line.release
        );
    }
    format!(
        "{} {}[v{}]{level} {}{fields}",
        line.at, line.instance, line.release, line.message
    )
}

/// A size for people: `512 B`, `3.2 KiB`, `1.0 GiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Prints one deploy progress line; returns the outcome when it is the last.
pub fn progress(line: &DeployProgress, json: bool) -> Option<Result<(u64, String), String>> {
    if json && let Ok(text) = serde_json::to_string(line) {
        say!("{text}");
    }
    match line {
        DeployProgress::Step { message } => {
            if !json {
                eprintln!("==> {message}");
            }
            None
        }
        DeployProgress::Build { line } => {
            if !json {
                eprintln!("    {line}");
            }
            None
        }
        DeployProgress::ReleaseOutput { line } => {
            if !json {
                eprintln!("    release | {line}");
            }
            None
        }
        DeployProgress::Warning { message } => {
            if !json {
                eprintln!("warning: {message}");
            }
            None
        }
        DeployProgress::Done { release, url } => Some(Ok((*release, url.clone()))),
        DeployProgress::Failed { message, .. } => Some(Err(message.clone())),
        DeployProgress::Unknown => None,
    }
}

/// Logs of a long-running command (the server, the relay) to stderr, at
/// `RUST_LOG` or `info`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Unix seconds as `2026-12-07 10:04Z`.
pub fn unix_time(seconds: u64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(seconds as i64) else {
        return seconds.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}
