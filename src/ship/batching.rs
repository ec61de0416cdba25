//! The loop every batching output runs: gather chunks from the queue into a batch, send it
//! when it is full, when its oldest entry waited `batch_wait`, when the next chunk cannot join
//! it, when the inputs wait for memory held by chunks (no more lines can come before the batch
//! goes; see `crate::budget`), or when the queue closes; stop at once on abort.
//!
//! Outputs differ in what a batch is and how it is sent (Loki's push API, Elasticsearch's
//! `_bulk`), not in when: that part is here once.

use crate::entry::Chunk;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An output that sends chunks in batches.
pub trait Batching: Send {
    type Batch: Send;

    fn empty_batch(&self) -> Self::Batch;
    /// How long the oldest entry of a batch may wait for more.
    fn batch_wait(&self) -> Duration;
    /// Adds `chunk`'s lines from `from` on; returns where to go on when the batch filled up
    /// first.
    fn add(&mut self, batch: &mut Self::Batch, chunk: &Arc<Chunk>, from: usize) -> Option<usize>;
    /// Whether `chunk` may join `batch` (one tenant per Loki request, say).
    fn accepts(&self, _batch: &Self::Batch, _chunk: &Chunk) -> bool {
        true
    }
    fn is_full(&self, batch: &Self::Batch) -> bool;
    fn is_empty(&self, batch: &Self::Batch) -> bool;
    /// When the batch got its first entry.
    fn started(&self, batch: &Self::Batch) -> Option<Instant>;
    /// How full the output's queue is (0 to 1), for the status page.
    fn queue_fill(&mut self, fill: f64);
    /// Sends a batch until it is delivered or dropped for good (true), or until abort (false:
    /// nothing of it is settled).
    fn send(
        &mut self,
        batch: Self::Batch,
        abort: &watch::Receiver<bool>,
    ) -> impl Future<Output = bool> + Send;
}

/// Batches and sends chunks until the queue closes (then sends what it holds) or `abort`
/// turns true (then stops at once; what was not delivered stays unsettled).
pub async fn run<O: Batching>(mut output: O, inbox: super::Inbox, abort: watch::Receiver<bool>) {
    let super::Inbox {
        chunks: mut queue,
        mut starved,
    } = inbox;
    let mut batch = output.empty_batch();
    let mut rest: Option<(Arc<Chunk>, usize)> = None;
    loop {
        let (chunk, from) = match rest.take() {
            Some(pending) => pending,
            None => {
                let due = output
                    .started(&batch)
                    .map(|t| tokio::time::Instant::from_std(t + output.batch_wait()));
                tokio::select! {
                    biased;
                    () = aborted(&abort) => return,
                    chunk = queue.recv() => match chunk {
                        Some(chunk) => {
                            output.queue_fill(queue.len() as f64 / queue.max_capacity().max(1) as f64);
                            if !output.accepts(&batch, &chunk) {
                                let full = std::mem::replace(&mut batch, output.empty_batch());
                                if !output.send(full, &abort).await {
                                    return;
                                }
                            }
                            (chunk, 0)
                        }
                        None => {
                            if !output.is_empty(&batch) {
                                output.send(batch, &abort).await;
                            }
                            return;
                        }
                    },
                    // After the queue: what is queued joins the batch first.
                    true = starving(&mut starved), if !output.is_empty(&batch) => {
                        let held = std::mem::replace(&mut batch, output.empty_batch());
                        if !output.send(held, &abort).await {
                            return;
                        }
                        continue;
                    }
                    () = sleep_until(due) => {
                        let due = std::mem::replace(&mut batch, output.empty_batch());
                        if !output.send(due, &abort).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        rest = output.add(&mut batch, &chunk, from).map(|r| (chunk, r));
        if rest.is_some() || output.is_full(&batch) {
            let full = std::mem::replace(&mut batch, output.empty_batch());
            if !output.send(full, &abort).await {
                return;
            }
        }
    }
}

/// Resolves (true) once an input waits for memory; false if the budget is gone.
async fn starving(starved: &mut watch::Receiver<bool>) -> bool {
    starved.wait_for(|s| *s).await.is_ok()
}

/// Resolves once `abort` is true; never, if its sender is gone.
pub async fn aborted(abort: &watch::Receiver<bool>) {
    let mut abort = abort.clone();
    if abort.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
