//! The running outputs, and swapping them on reload.
//!
//! Outputs whose spec did not change keep their queue, batch and retries; new ones are built
//! and started; removed ones lose their place in the fan-out's list, so their queue closes and
//! they finish with what they hold. Nothing changes if any new output cannot be built.

use super::{Inbox, OUTPUT_QUEUE, OutputContext, OutputError, OutputHandle, OutputSpec};
use crate::metrics::HostLabel;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// One running output.
struct Running {
    key: u64,
    spec: OutputSpec,
    handle: OutputHandle,
}

/// The outputs running now.
pub struct OutputSet {
    running: Vec<Running>,
    next_key: u64,
    tasks: Vec<JoinHandle<()>>,
    publish: watch::Sender<Vec<OutputHandle>>,
    ctx: OutputContext,
    abort: watch::Receiver<bool>,
    /// Where an output that cannot go on reports it.
    fatal: mpsc::Sender<OutputError>,
}

impl OutputSet {
    /// An empty set publishing its outputs to the fan-out through `publish`.
    pub fn new(
        ctx: OutputContext,
        publish: watch::Sender<Vec<OutputHandle>>,
        abort: watch::Receiver<bool>,
        fatal: mpsc::Sender<OutputError>,
    ) -> OutputSet {
        OutputSet {
            running: Vec::new(),
            next_key: 0,
            tasks: Vec::new(),
            publish,
            ctx,
            abort,
            fatal,
        }
    }

    /// Makes the running outputs match `specs`.
    pub fn apply(&mut self, specs: &[OutputSpec]) -> Result<(), OutputError> {
        let mut available: Vec<Running> = std::mem::take(&mut self.running);
        let mut kept: Vec<Running> = Vec::new();
        let mut fresh: Vec<(u64, OutputSpec, Box<dyn super::Output>)> = Vec::new();
        for spec in specs {
            if let Some(pos) = available.iter().position(|r| r.spec.same_as(spec)) {
                kept.push(available.remove(pos));
                continue;
            }
            let key = self.next_key + fresh.len() as u64;
            match spec.build(&self.ctx, key) {
                Ok(output) => fresh.push((key, spec.clone(), output)),
                Err(e) => {
                    // Put everything back as it was.
                    for (key, _, _) in &fresh {
                        self.ctx.status.remove_client(*key);
                    }
                    kept.append(&mut available);
                    self.running = kept;
                    return Err(e);
                }
            }
        }
        self.next_key += fresh.len() as u64;
        for gone in &available {
            self.ctx.status.remove_client(gone.key);
        }
        for (key, spec, output) in fresh {
            let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
            let handle = OutputHandle {
                key,
                fill: self
                    .ctx
                    .metrics
                    .queue_fill
                    .get_or_create(&HostLabel {
                        host: output.name(),
                    })
                    .clone(),
                queue: tx,
            };
            let inbox = Inbox {
                chunks: rx,
                starved: self.ctx.starved.clone(),
            };
            let (fatal, task) = (self.fatal.clone(), output.run(inbox, self.abort.clone()));
            self.tasks.push(tokio::spawn(async move {
                if let Err(e) = task.await {
                    let _ = fatal.try_send(e);
                }
            }));
            kept.push(Running { key, spec, handle });
        }
        self.running = kept;
        // Outputs left out of the list lose their last sender here and finish what they hold.
        let _ = self
            .publish
            .send(self.running.iter().map(|r| r.handle.clone()).collect());
        Ok(())
    }

    /// Lets go of the outputs (their queues close once the fan-out is done) and returns their
    /// tasks, to wait for them to finish.
    pub fn into_tasks(self) -> Vec<JoinHandle<()>> {
        self.tasks
    }
}
