//! Shipping: where chunks go once read. Every output settles each chunk it is given exactly
//! once, after delivering it (or deciding for good to drop it).
//!
//! The fan-out hands every chunk to every current output. A config reload swaps the list of
//! outputs; an output that was removed gets no new chunks and finishes with what it holds.

pub mod loki;
pub mod print;
pub mod tls;

use crate::acknowledge::Acknowledger;
use crate::entry::Chunk;
use crate::metrics::{HostLabel, Metrics};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Chunks each output may hold queued (each at most one read, 256 KiB): with the batch being
/// built and the request in flight, this bounds an output's memory.
pub const OUTPUT_QUEUE: usize = 8;

/// An output as the fan-out sees it: its queue.
#[derive(Debug, Clone)]
pub struct OutputHandle {
    /// Unique for the life of the process; kept by outputs that survive a reload.
    pub key: u64,
    /// The metrics label (`host:port`, or `stdout`).
    pub name: String,
    pub queue: mpsc::Sender<Arc<Chunk>>,
}

/// Hands every chunk to every output, waiting for the slowest: an output that cannot keep up
/// holds back reading rather than losing lines. On `stop`, it stops taking new chunks and
/// hands on those already queued; on `abort`, it quits at once.
pub async fn fan_out(
    mut chunks: mpsc::Receiver<Chunk>,
    acks: Arc<Acknowledger>,
    mut outputs: watch::Receiver<Vec<OutputHandle>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
) {
    let mut stopping = false;
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.wait_for(|v| *v), if !stopping => {
                // Wakes a tailer blocked on a full queue; what is queued still goes out.
                chunks.close();
                stopping = true;
                continue;
            }
            chunk = chunks.recv() => chunk,
        };
        let Some(chunk) = chunk else { return };
        // The fan-out holds a share of the chunk until it is done handing it out, so that
        // outputs a reload adds meanwhile can still be counted in.
        let mut todo: VecDeque<OutputHandle> =
            outputs.borrow_and_update().iter().cloned().collect();
        if todo.is_empty() {
            // Nothing could deliver it: left unarmed, it holds its file's position back.
            continue;
        }
        acks.arm(chunk.ticket, todo.len() as u32 + 1);
        let chunk = Arc::new(chunk);
        let mut handed: HashSet<u64> = HashSet::new();
        while let Some(output) = todo.pop_front() {
            let mut abort = abort.clone();
            let sent = tokio::select! {
                biased;
                _ = abort.wait_for(|v| *v) => return,
                // A reload removed this output while it was full: it will never take the
                // chunk, so it settles it as gone (its replacement gets it below).
                () = removed(&mut outputs, output.key) => false,
                sent = output.queue.send(chunk.clone()) => sent.is_ok(),
            };
            handed.insert(output.key);
            // Outputs a reload added since the chunk came in get it too.
            let newcomers: Vec<OutputHandle> = outputs
                .borrow()
                .iter()
                .filter(|o| !handed.contains(&o.key) && !todo.iter().any(|t| t.key == o.key))
                .cloned()
                .collect();
            if !newcomers.is_empty() && acks.add_outputs(chunk.ticket, newcomers.len() as u32) {
                todo.extend(newcomers);
            }
            if !sent {
                acks.settle(chunk.ticket);
                continue;
            }
            let used = output.queue.max_capacity() - output.queue.capacity();
            metrics
                .queue_fill
                .get_or_create(&HostLabel {
                    host: output.name.clone(),
                })
                .set(used as f64 / output.queue.max_capacity().max(1) as f64);
        }
        // The fan-out's own share.
        acks.settle(chunk.ticket);
    }
}

/// Resolves once the output `key` is no longer among the outputs.
async fn removed(outputs: &mut watch::Receiver<Vec<OutputHandle>>, key: u64) {
    loop {
        if !outputs.borrow().iter().any(|o| o.key == key) {
            return;
        }
        if outputs.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
