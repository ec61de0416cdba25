//! Shipping: where chunks go once read. Every output settles each chunk it is given exactly
//! once, after delivering it (or deciding for good to drop it).

pub mod loki;
pub mod print;
pub mod tls;

use crate::acknowledge::Acknowledger;
use crate::entry::Chunk;
use crate::metrics::{HostLabel, Metrics};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Chunks each client may hold queued (each at most one read, 256 KiB): with the batch being
/// built and the request in flight, this bounds a client's memory.
pub const CLIENT_QUEUE: usize = 8;

/// Hands every chunk to every client, waiting for the slowest: a client that cannot keep up
/// holds back reading rather than losing lines. On `stop`, it stops taking new chunks and
/// hands on those already queued; on `abort`, it quits at once.
pub async fn fan_out(
    mut chunks: mpsc::Receiver<Chunk>,
    acks: Arc<Acknowledger>,
    clients: Vec<(String, mpsc::Sender<Arc<Chunk>>)>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
) {
    let fills: Vec<_> = clients
        .iter()
        .map(|(host, _)| {
            metrics
                .queue_fill
                .get_or_create(&HostLabel { host: host.clone() })
                .clone()
        })
        .collect();
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
        acks.arm(chunk.ticket, clients.len() as u32);
        let chunk = Arc::new(chunk);
        for ((_, tx), fill) in clients.iter().zip(&fills) {
            let mut abort = abort.clone();
            tokio::select! {
                biased;
                _ = abort.wait_for(|v| *v) => return,
                sent = tx.send(chunk.clone()) => if sent.is_err() { return },
            }
            let used = tx.max_capacity() - tx.capacity();
            fill.set(used as f64 / tx.max_capacity().max(1) as f64);
        }
    }
}
