//! What every process of a release is started with, whether it is a
//! long-running instance, a job task or a release command: its env (the
//! contract of DESIGN.md) and where its output goes.

use std::sync::Arc;

use berth_build::{SLUG_BIN_DIR, SlugStore};
use berth_logs::{LogSource, LogStore};
use berth_proto::LogStream;
use berth_runtime::{InstanceSpec, OutputSink, OutputStream};
use berth_spec::AppSpec;
use berth_store::ReleaseRow;

/// The env of a process of `release`: the spec's `[env]`, the app's env vars,
/// `extra` (job env, task variables), then berth's own variables, which win.
pub fn release_env(
    release: &ReleaseRow,
    spec: &AppSpec,
    process: &str,
    instance: &str,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    env.extend(
        spec.env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    env.extend(
        release
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    env.extend(extra.iter().cloned());
    env.push(("BERTH_APP".into(), release.app.clone()));
    env.push(("BERTH_RELEASE".into(), release.version.to_string()));
    env.push(("BERTH_PROCESS".into(), process.to_string()));
    env.push(("BERTH_INSTANCE".into(), instance.to_string()));
    env
}

/// The spec of a process of `release` running `command`.
pub fn instance_spec(
    slugs: &SlugStore,
    release: &ReleaseRow,
    id: &str,
    command: &str,
    env: Vec<(String, String)>,
) -> Result<InstanceSpec, String> {
    let slug_dir = slugs.path(&release.slug);
    if !slug_dir.is_dir() {
        return Err(format!(
            "the slug {} of v{} is missing from the data dir",
            release.slug, release.version
        ));
    }
    Ok(InstanceSpec {
        id: id.to_string(),
        app: release.app.clone(),
        command: command.to_string(),
        bin_dir: slug_dir.join(SLUG_BIN_DIR),
        workdir: slug_dir,
        env,
        binds: Vec::new(),
    })
}

/// A sink that stores each line in the log store under `source`, and also
/// hands it to `also` (a deploy's progress stream, say).
pub fn log_sink(
    logs: Arc<LogStore>,
    source: LogSource,
    also: Option<Arc<dyn Fn(String) + Send + Sync>>,
) -> OutputSink {
    Arc::new(move |stream, line| {
        let stream = match stream {
            OutputStream::Stdout => LogStream::Stdout,
            OutputStream::Stderr => LogStream::Stderr,
        };
        if let Some(also) = &also {
            also(line.clone());
        }
        logs.append(&source, stream, &line);
    })
}
