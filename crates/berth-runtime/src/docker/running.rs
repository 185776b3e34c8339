//! A started container: the words it runs, its output as lines, how it
//! ended, and its signals.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    KillContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::engine_runtime;
use crate::{ExitCause, InstanceControl, OutputSink, OutputStream};

/// The words a command runs as: exec form (`["a", "b c"]`), plain words,
/// or a line for the image's `/bin/sh`.
pub(super) fn argv_of(command: &str) -> Vec<String> {
    if command.trim_start().starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(command)
        && !words.is_empty()
    {
        return words;
    }
    let plain = command.bytes().all(|b| {
        b.is_ascii_alphanumeric() || b.is_ascii_whitespace() || b"/._-=:,@+%".contains(&b)
    });
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    if plain && words.first().is_some_and(|first| !first.contains('=')) {
        words
    } else {
        vec!["/bin/sh".into(), "-c".into(), command.into()]
    }
}

/// Hands each line the container writes to `output`, a line cut at its
/// end kept until the rest comes.
pub(super) async fn read_lines(
    mut frames: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    output: OutputSink,
) {
    let mut pending = [Vec::new(), Vec::new()];
    // A line past the longest kept is cut there, as a process's is.
    let emit = |stream: OutputStream, mut bytes: &[u8], pending: &mut Vec<u8>| {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let part = &bytes[..end.unwrap_or(bytes.len())];
            let room = crate::process::MAX_LINE_BYTES.saturating_sub(pending.len());
            pending.extend_from_slice(&part[..part.len().min(room)]);
            let Some(end) = end else { break };
            bytes = &bytes[end + 1..];
            let text = String::from_utf8_lossy(pending);
            output(stream, text.trim_end_matches('\r').to_string());
            pending.clear();
        }
    };
    while let Some(Ok(frame)) = frames.next().await {
        // Whoever stores the lines is behind: the engine's buffer fills and
        // the app waits, rather than lines being lost.
        while crate::output_backlogged() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match frame {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                emit(OutputStream::Stdout, &message, &mut pending[0]);
            }
            LogOutput::StdErr { message } => emit(OutputStream::Stderr, &message, &mut pending[1]),
            LogOutput::StdIn { .. } => {}
        }
    }
    for (stream, rest) in [OutputStream::Stdout, OutputStream::Stderr]
        .into_iter()
        .zip(pending)
    {
        if !rest.is_empty() {
            output(stream, String::from_utf8_lossy(&rest).into_owned());
        }
    }
}

/// Waits for the container to stop; how it ended.
pub(super) async fn exit_of(docker: &Docker, container: &str, limit_mib: Option<u64>) -> ExitCause {
    let mut waiting = docker.wait_container(
        container,
        Some(WaitContainerOptions {
            condition: "not-running".into(),
        }),
    );
    let code = match waiting.next().await {
        Some(Ok(answer)) => answer.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(err)) => return ExitCause::Unknown(err.to_string()),
        None => return ExitCause::Unknown("the engine stopped answering".into()),
    };
    let killed_for_memory = docker
        .inspect_container(container, None)
        .await
        .ok()
        .and_then(|inspected| inspected.state)
        .and_then(|state| state.oom_killed)
        .unwrap_or(false);
    match (killed_for_memory, limit_mib) {
        (true, Some(limit_mib)) => ExitCause::OutOfMemory { limit_mib },
        // The engine reports a signal's death as 128 + its number.
        _ if (129..=128 + 64).contains(&code) => ExitCause::Signal((code - 128) as i32),
        _ => ExitCause::Code(code as i32),
    }
}

/// Removes a container, running or not, with its anonymous volumes.
pub(super) async fn remove(docker: &Docker, container: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(err) = docker.remove_container(container, Some(options)).await {
        tracing::warn!(%container, error = %err, "cannot remove a container");
    }
}

/// Signals an instance's container through the engine.
#[derive(Debug)]
pub(super) struct ContainerControl {
    pub(super) docker: Docker,
    pub(super) container: String,
    pub(super) stop_signal: i32,
    /// The engine's cgroup of the container, read for its usage.
    pub(super) cgroup: Option<crate::cgroup::InstanceCgroup>,
}

impl ContainerControl {
    fn send(&self, signal: i32) {
        let docker = self.docker.clone();
        let container = self.container.clone();
        engine_runtime().spawn(async move {
            let options = KillContainerOptions {
                signal: signal.to_string(),
            };
            // One that has just exited is not an error worth a word.
            let _ = docker.kill_container(&container, Some(options)).await;
        });
    }
}

impl InstanceControl for ContainerControl {
    fn terminate(&self) {
        self.send(self.stop_signal);
    }

    fn kill(&self) {
        self.send(libc::SIGKILL);
    }

    fn usage(&self) -> crate::Usage {
        self.cgroup
            .as_ref()
            .map(crate::cgroup::InstanceCgroup::usage)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_the_words_they_run() {
        assert_eq!(argv_of("/hello --port=8080"), ["/hello", "--port=8080"]);
        assert_eq!(
            argv_of(r#"["/bin/sh","-c","echo it's"]"#),
            ["/bin/sh", "-c", "echo it's"]
        );
        assert_eq!(
            argv_of("serve > /tmp/log"),
            ["/bin/sh", "-c", "serve > /tmp/log"]
        );
    }
}
