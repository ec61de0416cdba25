//! Shipping: where chunks go once read — the output seam.
//!
//! An [`Output`] takes chunks from its own queue and settles every chunk it is given exactly
//! once with the [`Acknowledger`], after delivering it or after deciding for good to drop it
//! (and counting the drop). That one rule is what keeps positions honest whatever the sink.
//! [`plan`] turns the config into [`OutputSpec`]s, the only place that knows the kinds of
//! output; [`set::OutputSet`] runs them and swaps them on reload, and [`fan_out`] hands every
//! chunk to every current output. An output that was removed by a reload gets no new chunks
//! and finishes with what it holds.

pub mod batching;
pub mod elastic;
pub mod loki;
pub mod print;
pub mod retry;
pub mod set;
pub mod tls;

use crate::acknowledge::Acknowledger;
use crate::config::{ClientConfig, Config, ElasticsearchConfig};
use crate::entry::Chunk;
use crate::metrics::Metrics;
use crate::status::StatusBoard;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{mpsc, watch};

/// An output that cannot be built, or that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Loki(#[from] loki::ClientError),
    #[error(transparent)]
    Elastic(#[from] elastic::ElasticError),
    /// Writing to standard output failed (a closed pipe, say).
    #[error("cannot write to standard output: {0}")]
    Stdout(#[from] std::io::Error),
}

/// What every output is built with.
#[derive(Clone)]
pub struct OutputContext {
    /// Where chunks are settled.
    pub acks: Arc<Acknowledger>,
    pub metrics: Arc<Metrics>,
    /// The `/targets` page; outputs report their state under their key.
    pub status: Arc<StatusBoard>,
    /// True while an input waits for the budget of bytes in flight ([`crate::budget`]): a
    /// batch should not wait for lines that cannot come.
    pub starved: watch::Receiver<bool>,
}

/// A running output's future.
pub type OutputTask = Pin<Box<dyn Future<Output = Result<(), OutputError>> + Send>>;

/// A sink for chunks.
///
/// Contract: [`run`](Output::run) takes chunks from `queue` in order and settles each one
/// exactly once with [`Acknowledger::settle`] — after the sink acknowledged it, or after
/// dropping it for good (rejected content, `max_retries` spent), which it counts in the
/// `dropped_entries` metrics. While the sink cannot take more, it stops taking chunks: the
/// queue fills and reading waits (backpressure; nothing is dropped for being slow). When the
/// queue closes, it delivers what it holds and returns `Ok`. When `abort` turns true, it
/// returns at once and leaves what it did not deliver unsettled (read again at the next
/// start). `Err` means the output cannot go on at all, which stops the process.
pub trait Output: Send + 'static {
    /// Its name in metrics and logs (`host:port` for a push endpoint, `stdout`).
    fn name(&self) -> String;

    /// Runs the output until its queue closes or `abort` turns true.
    fn run(self: Box<Self>, inbox: Inbox, abort: watch::Receiver<bool>) -> OutputTask;
}

/// What comes to a running output: its chunks, and whether the inputs are waiting for their
/// memory to be given back (so that nothing is held for a fuller batch meanwhile).
pub struct Inbox {
    pub chunks: mpsc::Receiver<Arc<Chunk>>,
    pub starved: watch::Receiver<bool>,
}

/// One output as the config describes it: compared across reloads (an unchanged output
/// keeps its queue and its batch), built when new.
#[derive(Debug, Clone)]
pub enum OutputSpec {
    /// One entry of `clients:`, at its index.
    Loki {
        index: usize,
        config: Box<ClientConfig>,
    },
    /// One entry of `elasticsearch:`, at its index.
    Elasticsearch {
        index: usize,
        config: Box<ElasticsearchConfig>,
    },
    /// Entries printed to standard output (`-dry-run`, or no clients configured).
    Print { color: bool },
}

impl OutputSpec {
    /// Whether a running output built from `self` can stand for `other` after a reload
    /// (its position in the list does not matter).
    pub fn same_as(&self, other: &OutputSpec) -> bool {
        match (self, other) {
            (OutputSpec::Loki { config: a, .. }, OutputSpec::Loki { config: b, .. }) => a == b,
            (
                OutputSpec::Elasticsearch { config: a, .. },
                OutputSpec::Elasticsearch { config: b, .. },
            ) => a == b,
            (OutputSpec::Print { color: a }, OutputSpec::Print { color: b }) => a == b,
            _ => false,
        }
    }

    /// Builds the output; `key` names it on the status page for the life of the process.
    pub fn build(&self, ctx: &OutputContext, key: u64) -> Result<Box<dyn Output>, OutputError> {
        Ok(match self {
            OutputSpec::Loki { index, config } => Box::new(
                loki::LokiClient::new(*index, config, ctx.acks.clone(), ctx.metrics.clone())?
                    .with_status(ctx.status.clone(), key),
            ),
            OutputSpec::Elasticsearch { index, config } => Box::new(
                elastic::ElasticOutput::new(*index, config, ctx.acks.clone(), ctx.metrics.clone())?
                    .with_status(ctx.status.clone(), key),
            ),
            OutputSpec::Print { color } => Box::new(print::Printer::new(ctx.acks.clone(), *color)),
        })
    }
}

/// The outputs a config asks for: the printer when `print`, else one per entry of `clients:`
/// and one per entry of `elasticsearch:`.
pub fn plan(config: &Config, print: bool, color: bool) -> Vec<OutputSpec> {
    if print {
        return vec![OutputSpec::Print { color }];
    }
    config
        .clients
        .iter()
        .enumerate()
        .map(|(index, config)| OutputSpec::Loki {
            index,
            config: Box::new(config.clone()),
        })
        .chain(
            config
                .elasticsearch
                .iter()
                .enumerate()
                .map(|(index, config)| OutputSpec::Elasticsearch {
                    index,
                    config: Box::new(config.clone()),
                }),
        )
        .collect()
}

/// Chunks each output may hold queued. Their memory is bounded by the budget of bytes in
/// flight (`crate::budget`), which chunks hold until every output has encoded them; the count
/// only needs to be high enough for the small chunks of pipelines that split reads into many
/// streams.
pub const OUTPUT_QUEUE: usize = 64;

/// An output as the fan-out sees it: its queue.
#[derive(Debug, Clone)]
pub struct OutputHandle {
    /// Unique for the life of the process; kept by outputs that survive a reload.
    pub key: u64,
    /// How full its queue is, under the output's metrics label (`host:port`, or `stdout`).
    pub fill: Gauge<f64, AtomicU64>,
    pub queue: mpsc::Sender<Arc<Chunk>>,
}

/// Hands every chunk to every output, waiting for the slowest: an output that cannot keep up
/// holds back reading rather than losing lines. On `stop`, it stops taking new chunks and
/// hands on those already queued; on `abort`, it quits at once.
pub async fn fan_out(
    mut chunks: mpsc::Receiver<Chunk>,
    acks: Arc<Acknowledger>,
    mut outputs: watch::Receiver<Vec<OutputHandle>>,
    mut stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
) {
    let mut stopping = false;
    // Kept from chunk to chunk: handing out a chunk allocates nothing.
    let mut todo: VecDeque<OutputHandle> = VecDeque::new();
    let mut handed: Vec<u64> = Vec::new();
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
        todo.clear();
        todo.extend(outputs.borrow_and_update().iter().cloned());
        if todo.is_empty() {
            // Nothing could deliver it: left unarmed, it holds its file's position back.
            continue;
        }
        acks.arm(chunk.ticket, todo.len() as u32 + 1);
        let chunk = Arc::new(chunk);
        handed.clear();
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
            handed.push(output.key);
            // Outputs a reload added since the chunk came in get it too.
            let is_new =
                |o: &OutputHandle| !handed.contains(&o.key) && !todo.iter().any(|t| t.key == o.key);
            if outputs.borrow().iter().any(is_new) {
                let newcomers: Vec<OutputHandle> = outputs
                    .borrow()
                    .iter()
                    .filter(|o| is_new(o))
                    .cloned()
                    .collect();
                if acks.add_outputs(chunk.ticket, newcomers.len() as u32) {
                    todo.extend(newcomers);
                }
            }
            if !sent {
                acks.settle(chunk.ticket);
                continue;
            }
            let used = output.queue.max_capacity() - output.queue.capacity();
            output
                .fill
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
