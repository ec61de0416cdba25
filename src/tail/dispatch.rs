//! From a file's lines to the outputs: each target's stages, the chunks, backpressure.
//!
//! The tailer decides which file is read when; what becomes of the lines read is decided
//! here: a target without stages sends each read as one chunk; a target with stages feeds its
//! [`TargetPipeline`], and what comes out is sent in chunks registered no further than the
//! stages let go. Sending blocks while the outputs are full, which pauses reading.

use super::file::TailedFile;
use super::lines::Split;
use super::pipelined::{self, TargetPipeline};
use crate::acknowledge::{Acknowledger, SourceKey};
use crate::entry::Chunk;
use crate::labels::LabelSet;
use crate::metrics::{Metrics, ReasonLabel};
use crate::pipeline::Pipeline;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

pub(super) struct Dispatch {
    /// Each target's stages, by target index (None: no stages).
    pipelines: Vec<Option<TargetPipeline>>,
    inspect: bool,
    acks: Arc<Acknowledger>,
    out: mpsc::Sender<Chunk>,
    metrics: Arc<Metrics>,
    /// The outputs are gone (shutting down): nothing more can be delivered.
    stopped: bool,
}

impl Dispatch {
    pub fn new(acks: Arc<Acknowledger>, out: mpsc::Sender<Chunk>, metrics: Arc<Metrics>) -> Self {
        Dispatch {
            pipelines: Vec::new(),
            inspect: false,
            acks,
            out,
            metrics,
            stopped: false,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the stages of new targets (after letting the old ones release what they hold).
    pub fn set_pipelines(&mut self, pipelines: Vec<Option<Pipeline>>) {
        for target in 0..self.pipelines.len() {
            if let Some(Some(tp)) = self.pipelines.get_mut(target) {
                tp.flush_all();
            }
            self.finish(target);
        }
        let inspect = self.inspect;
        self.pipelines = pipelines
            .into_iter()
            .map(|p| {
                p.filter(|p| !p.is_empty())
                    .map(|p| TargetPipeline::new(p, inspect))
            })
            .collect();
    }

    /// Prints what each stage does to each entry, to standard error (`-inspect`).
    pub fn set_inspect(&mut self, inspect: bool) {
        self.inspect = inspect;
        for tp in self.pipelines.iter_mut().flatten() {
            tp.set_inspect(inspect);
        }
    }

    /// A file (generation) starts feeding its target's stages from byte `start`.
    pub fn open(&mut self, tf: &TailedFile, start: u64) {
        if let Some(Some(tp)) = self.pipelines.get_mut(tf.target) {
            tp.open(tf.slot, tf.source, &tf.labels, start);
        }
    }

    /// The file's labels changed (reload, container metadata).
    pub fn relabel(&mut self, target: usize, slot: u32, labels: &LabelSet) {
        if let Some(Some(tp)) = self.pipelines.get_mut(target) {
            tp.relabel(slot, labels);
        }
    }

    /// The file's slot stops feeding its stages. Returns whether its source may be closed now
    /// (false while the stages still hold some of its lines: the pipeline closes it later).
    pub fn close(&mut self, target: usize, slot: u32) -> bool {
        match self.pipelines.get_mut(target) {
            Some(Some(tp)) => tp.close(slot),
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
        tf.counters.lines.inc_by(split.spans.len() as u64);
        let (base, last_ts) = split.stamp(tf.last_ts);
        tf.last_ts = last_ts;
        if let Some(Some(tp)) = self.pipelines.get_mut(tf.target) {
            tp.feed(tf.slot, &split, base, tf.size, Instant::now());
            self.finish(tf.target);
            return;
        }
        if let Some(chunk) =
            pipelined::plain_chunk(&self.acks, tf.source, &tf.labels, split, base, tf.size)
        {
            self.emit(chunk);
        }
    }

    /// Hands a chunk to the outputs; blocks while they are full.
    fn emit(&mut self, chunk: Chunk) {
        if self.stopped {
            return;
        }
        if self.out.blocking_send(chunk).is_err() {
            self.stopped = true;
        }
    }

    /// Sends what a target's stages let out, and closes sources of files they no longer hold
    /// lines of.
    fn finish(&mut self, target: usize) {
        let Some(Some(tp)) = self.pipelines.get_mut(target) else {
            return;
        };
        let mut chunks = Vec::new();
        let closable: Vec<SourceKey> = tp.finish(&self.acks, &self.metrics, &mut chunks);
        for chunk in chunks {
            self.emit(chunk);
        }
        for source in closable {
            self.acks.close(source, Instant::now());
        }
    }

    /// Lets the stages release what waited long enough (multiline blocks, partial lines).
    pub fn flush_due(&mut self, now: Instant) {
        for target in 0..self.pipelines.len() {
            let due = self.pipelines[target]
                .as_ref()
                .and_then(|tp| tp.next_deadline())
                .is_some_and(|d| d <= now);
            if due {
                if let Some(Some(tp)) = self.pipelines.get_mut(target) {
                    tp.flush_due(now);
                }
                self.finish(target);
            }
        }
    }

    /// When the stages next have something to release on their own.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pipelines
            .iter()
            .flatten()
            .filter_map(|tp| tp.next_deadline())
            .min()
    }
}
