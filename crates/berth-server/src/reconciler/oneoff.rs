//! One-off processes — release and post-deploy commands, job tasks — are
//! started here too, so the reconciler is the one owner of every start:
//! each is journaled (a crashed server's successor kills it), and stopped
//! with the rest when the server stops. Whoever asked waits for its exit.

use berth_runtime::{InstanceSpec, OutputSink, RunningInstance};
use tokio::sync::oneshot;

use super::Reconciler;
use super::handle::{Message, ReconcilerHandle};
use crate::launch::StartError;

impl ReconcilerHandle {
    /// Starts `spec` once (not kept running: its exit is the caller's to
    /// wait for); its output goes to `output`.
    pub async fn run_once(
        &self,
        spec: InstanceSpec,
        output: OutputSink,
    ) -> Result<RunningInstance, StartError> {
        let (reply, answer) = oneshot::channel();
        let asked = self.messages.send(Message::RunOnce {
            spec: Box::new(spec),
            output,
            reply,
        });
        if asked.is_err() {
            return Err(stopping());
        }
        answer.await.unwrap_or_else(|_| Err(stopping()))
    }
}

fn stopping() -> StartError {
    StartError::lasting(
        crate::launch::StartSide::Berth,
        "the server is stopping; nothing new starts",
    )
}

impl Reconciler {
    pub(super) fn run_once(
        &mut self,
        spec: &InstanceSpec,
        output: OutputSink,
        reply: oneshot::Sender<Result<RunningInstance, StartError>>,
    ) {
        let started = self
            .parts
            .driver
            .start(spec, output)
            .map_err(StartError::from);
        if let Ok(running) = &started {
            self.pending_journal
                .push((spec.id.clone(), spec.app.clone(), running.pid));
            self.one_offs.insert(spec.id.clone(), running.clone());
            let messages = self.messages.clone();
            let running = running.clone();
            let id = spec.id.clone();
            tokio::spawn(async move {
                running.exited().await;
                let _ = messages.send(Message::OneOffExited { id });
            });
        }
        let _ = reply.send(started);
    }

    pub(super) fn one_off_exited(&mut self, id: &str) {
        if self.one_offs.remove(id).is_some()
            && let Err(err) = self.parts.store.forget_instance(id)
        {
            tracing::warn!(error = %err, "cannot forget a one-off process");
        }
    }
}
