//! From a file's lines to the outputs: each target's stages, the chunks, backpressure.
//!
//! The tailer decides which file is read when; what becomes of the lines read is decided
//! here: a target without stages sends each read as one chunk; a target with stages feeds its
//! [`TargetPipeline`], and what comes out is sent in chunks registered no further than the
//! stages let go. Sending blocks while the outputs are full, which pauses reading.
//!
//! With `LOGFERRY_STAGE_LANES` set (see [`LANES_ENV`]), a target's stages run in [`lanes`]
//! (threads), each file pinned to one, unless a stage needs to see all of the target's lines
//! (`limit`) or `-inspect` prints what the stages do.

mod lanes;

use super::file::TailedFile;
use super::lines::Split;
use super::pipelined::{self, TargetPipeline};
use crate::acknowledge::{Acknowledger, SourceKey};
use crate::entry::{Chunk, ChunkSender};
use crate::labels::LabelSet;
use crate::metrics::{Metrics, ReasonLabel};
use crate::pipeline::Pipeline;
use lanes::{Lanes, Sink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Lanes per target at most, whatever the number of cores.
const MAX_LANES: usize = 8;

/// Bytes of plain chunks held before they are handed over together (see [`Dispatch::release`]).
///
/// Why hold them at all: a chunk handed over alone may wake the outputs' runtime, parked since
/// the last one, with a system call on each side; on 10,000 small files (one chunk each) the
/// runtime's threads switched about 1,200 times per run, and about 700 with chunks handed
/// over together, which are taken in one wake-up. Held no longer than one round of reads, and
/// never more than this, they add no latency that counts next to `batchwait`.
const HOLD_BYTES: usize = 256 * 1024;

/// Set `LOGFERRY_STAGE_LANES=N` to run each target's stages on up to N threads (at most one per
/// core). Off by default: on two cores it has not yet shown the throughput that would pay for
/// the memory each lane holds (its own entries, queued reads and allocator arena), and files
/// whose stages give them the same labels may then interleave differently within that stream.
pub const LANES_ENV: &str = "LOGFERRY_STAGE_LANES";

/// A target's stages: on the tailer's thread, or in lanes.
enum Staged {
    // Boxed: its state is a few hundred bytes, several times a handle on lanes.
    Here(Box<TargetPipeline>),
    Lanes(Lanes),
}

pub(super) struct Dispatch {
    /// Each target's stages, by target index (None: no stages).
    pipelines: Vec<Option<Staged>>,
    inspect: bool,
    acks: Arc<Acknowledger>,
    out: ChunkSender,
    metrics: Arc<Metrics>,
    /// The outputs are gone (shutting down): nothing more can be delivered.
    stopped: bool,
    /// Set by a lane that found the outputs gone.
    lanes_stopped: Arc<AtomicBool>,
    /// Lanes a target's stages run in (below 2: on the tailer's thread).
    lane_count: usize,
    /// Chunks of targets without stages, read and not handed over yet, and their bytes.
    held: Vec<Chunk>,
    held_bytes: usize,
}

impl Dispatch {
    pub fn new(acks: Arc<Acknowledger>, out: ChunkSender, metrics: Arc<Metrics>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lanes = std::env::var(LANES_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1);
        Dispatch {
            pipelines: Vec::new(),
            inspect: false,
            acks,
            out,
            metrics,
            stopped: false,
            lanes_stopped: Arc::new(AtomicBool::new(false)),
            lane_count: lanes.min(cores).min(MAX_LANES),
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped || self.lanes_stopped.load(Ordering::Relaxed)
    }

    /// Takes the stages of new targets (after letting the old ones release what they hold).
    pub fn set_pipelines(&mut self, pipelines: Vec<Option<Pipeline>>) {
        for target in 0..self.pipelines.len() {
            match self.pipelines.get_mut(target).and_then(Option::take) {
                Some(Staged::Here(mut tp)) => {
                    tp.flush_all();
                    finish(
                        &mut tp,
                        &self.acks,
                        &self.metrics,
                        &self.out,
                        &mut self.stopped,
                    );
                }
                Some(Staged::Lanes(lanes)) => lanes.flush_and_stop(),
                None => {}
            }
        }
        let sink = Sink {
            acks: self.acks.clone(),
            out: self.out.clone(),
            metrics: self.metrics.clone(),
            stopped: self.lanes_stopped.clone(),
        };
        let (inspect, lane_count) = (self.inspect, self.lane_count);
        self.pipelines = pipelines
            .into_iter()
            .map(|p| {
                let p = p.filter(|p| !p.is_empty())?;
                if lane_count < 2 || inspect || !p.splits_by_stream() {
                    return Some(Staged::Here(Box::new(TargetPipeline::new(p, inspect))));
                }
                match Lanes::start(&p, lane_count, inspect, &sink) {
                    Some(lanes) => Some(Staged::Lanes(lanes)),
                    None => Some(Staged::Here(Box::new(TargetPipeline::new(p, inspect)))),
                }
            })
            .collect();
    }

    /// Prints what each stage does to each entry, to standard error (`-inspect`).
    pub fn set_inspect(&mut self, inspect: bool) {
        self.inspect = inspect;
        for staged in self.pipelines.iter_mut().flatten() {
            match staged {
                Staged::Here(tp) => tp.set_inspect(inspect),
                Staged::Lanes(lanes) => lanes.set_inspect(inspect),
            }
        }
    }

    /// A file (generation) starts feeding its target's stages from byte `start`.
    pub fn open(&mut self, tf: &TailedFile, start: u64) {
        match self.pipelines.get_mut(tf.target) {
            Some(Some(Staged::Here(tp))) => tp.open(tf.slot, tf.source, &tf.labels, start),
            Some(Some(Staged::Lanes(lanes))) => lanes.open(tf.slot, tf.source, &tf.labels, start),
            _ => {}
        }
    }

    /// The file's labels changed (reload, container metadata).
    pub fn relabel(&mut self, target: usize, slot: u32, labels: &LabelSet) {
        match self.pipelines.get_mut(target) {
            Some(Some(Staged::Here(tp))) => tp.relabel(slot, labels),
            Some(Some(Staged::Lanes(lanes))) => lanes.relabel(slot, labels),
            _ => {}
        }
    }

    /// The file's slot stops feeding its stages. Returns whether its source may be closed now
    /// (false while the stages still hold some of its lines, or run in lanes: the pipeline
    /// closes it later).
    pub fn close(&mut self, target: usize, slot: u32) -> bool {
        match self.pipelines.get_mut(target) {
            Some(Some(Staged::Here(tp))) => tp.close(slot),
            Some(Some(Staged::Lanes(lanes))) => {
                lanes.close(slot);
                false
            }
            _ => true,
        }
    }

    /// Whether the file's target has stages.
    pub fn has_stages(&self, target: usize) -> bool {
        matches!(self.pipelines.get(target), Some(Some(_)))
    }

    /// Hands a split's lines to the outputs; blocks while they are full.
    pub fn send(&mut self, tf: &mut TailedFile, split: Split) {
        let m = &self.metrics;
        if split.dropped_too_long > 0 {
            m.lines_dropped
                .get_or_create(&ReasonLabel {
                    reason: "line_too_long".into(),
                })
                .inc_by(split.dropped_too_long);
        }
        if split.truncated > 0 {
            m.lines_truncated.inc_by(split.truncated);
        }
        if split.invalid_utf8 > 0 {
            m.invalid_utf8_lines.inc_by(split.invalid_utf8);
        }
        if split.spans.is_empty() || self.stopped {
            return;
        }
        tf.series.read_lines.inc_by(split.spans.len() as u64);
        let (base, last_ts) = split.stamp(tf.last_ts);
        tf.last_ts = last_ts;
        match self.pipelines.get_mut(tf.target) {
            Some(Some(Staged::Here(tp))) => {
                tp.feed(tf.slot, &split, base, tf.size, Instant::now());
                finish(tp, &self.acks, &self.metrics, &self.out, &mut self.stopped);
                return;
            }
            Some(Some(Staged::Lanes(lanes))) => {
                lanes.feed(tf.slot, split, base, tf.size);
                return;
            }
            _ => {}
        }
        if let Some(chunk) =
            pipelined::plain_chunk(&self.acks, tf.source, &tf.labels, split, base, tf.size)
        {
            self.held_bytes += chunk.text.len();
            self.held.push(chunk);
            if self.held_bytes >= HOLD_BYTES {
                self.release();
            }
        }
    }

    /// Hands the chunks held over to the outputs (blocking while they are full). The tailer
    /// calls this before it waits for anything, so that nothing read stays held.
    pub fn release(&mut self) {
        self.held_bytes = 0;
        for chunk in self.held.drain(..) {
            if self.stopped {
                // Never acknowledged: read again at the next start.
                continue;
            }
            if self.out.blocking_send(chunk).is_err() {
                self.stopped = true;
            }
        }
    }

    /// Lets the stages release what waited long enough (multiline blocks, partial lines).
    /// Lanes do this on their own.
    pub fn flush_due(&mut self, now: Instant) {
        for staged in self.pipelines.iter_mut().flatten() {
            let Staged::Here(tp) = staged else {
                continue;
            };
            if tp.next_deadline().is_some_and(|d| d <= now) {
                tp.flush_due(now);
                finish(tp, &self.acks, &self.metrics, &self.out, &mut self.stopped);
            }
        }
    }

    /// When the stages on this thread next have something to release on their own.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pipelines
            .iter()
            .flatten()
            .filter_map(|staged| match staged {
                Staged::Here(tp) => tp.next_deadline(),
                Staged::Lanes(_) => None,
            })
            .min()
    }
}

/// Sends what a target's stages let out (blocking while the outputs are full), and closes
/// sources of files they no longer hold lines of.
fn finish(
    tp: &mut TargetPipeline,
    acks: &Acknowledger,
    metrics: &Metrics,
    out: &ChunkSender,
    stopped: &mut bool,
) {
    let mut chunks = Vec::new();
    let closable: Vec<SourceKey> = tp.finish(acks, metrics, &mut chunks);
    for chunk in chunks {
        if *stopped {
            break;
        }
        if out.blocking_send(chunk).is_err() {
            *stopped = true;
        }
    }
    for source in closable {
        acks.close(source, Instant::now());
    }
}
