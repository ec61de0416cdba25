//! The step every record-based input shares: a record (a journal entry, a syslog message, a
//! container's log line) with its discovered labels → the job's `relabel_configs` → the job's
//! `pipeline_stages` → chunks registered with the acknowledger under the input's checkpoint.
//!
//! File inputs split bytes into lines and track byte offsets; record inputs get whole
//! entries, each with labels of its own and a checkpoint of the input's kind (a journal
//! cursor, a container timestamp, nothing for a socket). With `pipeline_stages`, both go
//! through the same `TargetPipeline`, so the rule that a position never passes an entry the
//! stages still hold is the same code. Records are numbered in their source; a checkpoint is
//! marked at its record's number and recorded once every output settled everything up to it.
//!
//! Relabeling is done by a [`Relabeler`], which remembers what each distinct label set became;
//! an input that reads on threads of its own relabels there and hands over
//! [`RelabeledBatch`]es, so that only the chunking is left to the step's thread. A job without
//! `pipeline_stages` needs none of the stages' per-entry maps: its records go straight into one
//! chunk per label set.

mod relabeler;

pub use relabeler::{Relabeled, Relabeler};

use super::{InputContext, InputError};
use crate::acknowledge::SourceKey;
use crate::entry::{Chunk, Line, Timestamp};
use crate::labels::LabelSet;
use crate::metrics::HostReason;
use crate::pipeline::Pipeline;
use crate::relabel::RelabelConfig;
use crate::tail::pipelined::TargetPipeline;
use prometheus_client::metrics::counter::Counter;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// One entry as a record-based input read it, with its labels in a map (the simple form; an
/// input that reads many records builds them in a [`Relabeler`] instead).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its labels before relabeling: the job's `labels` and the discovered `__` labels
    /// (`__journal__systemd_unit`, `__syslog_message_hostname`, …).
    pub labels: BTreeMap<String, String>,
    pub timestamp: Timestamp,
    pub line: String,
    /// Where to resume after this record once it is acknowledged; None for inputs that cannot
    /// resume (sockets).
    pub checkpoint: Option<Arc<str>>,
}

/// Records relabeled on another thread, their lines in one buffer, for a source without
/// checkpoints (a socket).
#[derive(Debug, Default)]
pub struct RelabeledBatch {
    text: String,
    records: Vec<(Relabeled, u32, u32, Timestamp)>,
}

impl RelabeledBatch {
    pub fn push(&mut self, labels: Relabeled, timestamp: Timestamp, line: &str) {
        let start = self.text.len() as u32;
        if matches!(labels, Relabeled::Labels(_)) {
            self.text.push_str(line);
        }
        self.records
            .push((labels, start, self.text.len() as u32, timestamp));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of the lines it holds.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }
}

/// Bytes as text, invalid UTF-8 replaced. Nearly all input is valid, and checking it in one go
/// is cheaper than `String::from_utf8_lossy`'s chunked scan, which was a tenth of the syslog
/// listener's profile.
pub fn lossy_utf8(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A job's relabeling and stages over the records of one source.
pub struct RecordStep {
    relabeler: Relabeler,
    /// None when the job has no stages: records then go straight into [`Open`] chunks.
    stages: Option<TargetPipeline>,
    open: Vec<Open>,
    /// Index in `open` of each label set (by address: a relabeler hands out the same set for
    /// the same labels).
    by_labels: HashMap<usize, usize>,
    /// The checkpoint of the last record pushed, marked at the next send (without stages,
    /// every chunk of a send ends at the same record, so marking each record buys nothing).
    checkpoint: Option<Arc<str>>,
    source: SourceKey,
    /// Records fed so far: each record's number in the source's ledger.
    fed: u64,
    relabel_dropped: Counter,
    unlabeled: Counter,
    ctx: InputContext,
}

/// The lines of one label set since the last send.
struct Open {
    labels: Arc<LabelSet>,
    text: String,
    lines: Vec<Line>,
}

/// The slot of the one feed a record step has.
const SLOT: u32 = 0;

impl RecordStep {
    /// The step of job `job` over `source` (opened by the input with the acknowledger, with
    /// its checkpoint kind).
    pub fn new(
        job: &str,
        relabel: &[RelabelConfig],
        stages: &[serde_yaml_ng::Value],
        source: SourceKey,
        ctx: &InputContext,
    ) -> Result<RecordStep, InputError> {
        let stages = if stages.is_empty() {
            None
        } else {
            let pipeline =
                Pipeline::new(stages, &ctx.custom, job).map_err(|e| InputError::Pipeline {
                    job: job.to_string(),
                    message: e.to_string(),
                })?;
            let mut stages = TargetPipeline::new(pipeline, ctx.inspect);
            stages.open(
                SLOT,
                source,
                &LabelSet::new(std::iter::empty::<(String, String)>()),
                0,
            );
            Some(stages)
        };
        let counter = |reason: &str| {
            ctx.metrics
                .dropped_entries
                .get_or_create(&HostReason {
                    host: String::new(),
                    reason: reason.to_string(),
                })
                .clone()
        };
        Ok(RecordStep {
            relabeler: Relabeler::new(relabel),
            stages,
            open: Vec::new(),
            by_labels: HashMap::new(),
            checkpoint: None,
            source,
            fed: 0,
            relabel_dropped: counter("relabel_dropped"),
            unlabeled: counter("no_labels"),
            ctx: ctx.clone(),
        })
    }

    /// The step's relabeler: add a record's labels to it, then hand
    /// [`Relabeler::finish`]'s answer to [`RecordStep::push_relabeled`]. Threads of the input
    /// that relabel on their own take a clone.
    pub fn relabeler(&mut self) -> &mut Relabeler {
        &mut self.relabeler
    }

    /// Relabels one record and hands it on (see [`RecordStep::push_relabeled`]).
    pub fn push(&mut self, record: Record, now: Instant) {
        let Record {
            labels,
            timestamp,
            line,
            checkpoint,
        } = record;
        self.relabeler
            .labels(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let labels = self.relabeler.finish();
        self.push_relabeled(labels, timestamp, &line, checkpoint, now);
    }

    /// Hands one relabeled record to the stages (or straight to its chunk). A record that
    /// relabeling dropped, or that was left with no label at all, is counted and skipped; its
    /// checkpoint still counts, so the input resumes after it.
    pub fn push_relabeled(
        &mut self,
        labels: Relabeled,
        timestamp: Timestamp,
        line: &str,
        checkpoint: Option<Arc<str>>,
        now: Instant,
    ) {
        self.take(labels, timestamp, line, now);
        if let Some(checkpoint) = checkpoint {
            if self.stages.is_some() {
                // A skipped record shares the number of the last record fed: once that one
                // is settled, the input may resume after the skipped one too.
                self.ctx.acks.mark_cursor(self.source, self.fed, checkpoint);
            } else {
                self.checkpoint = Some(checkpoint);
            }
        }
    }

    /// Whether each record's checkpoint must be given with it: with stages, which may hold
    /// records back, a checkpoint is only good once the records before it are out. Without
    /// stages, an input may instead give only the last record's, with
    /// [`RecordStep::checkpoint`], before each send.
    pub fn needs_every_checkpoint(&self) -> bool {
        self.stages.is_some()
    }

    /// Where to resume once everything pushed so far is acknowledged.
    pub fn checkpoint(&mut self, checkpoint: Arc<str>) {
        if self.stages.is_some() {
            self.ctx.acks.mark_cursor(self.source, self.fed, checkpoint);
        } else {
            self.checkpoint = Some(checkpoint);
        }
    }

    /// Hands over records relabeled elsewhere.
    pub fn push_batch(&mut self, batch: RelabeledBatch, now: Instant) {
        for (labels, start, end, timestamp) in batch.records {
            let line = batch.text.get(start as usize..end as usize).unwrap_or("");
            self.take(labels, timestamp, line, now);
        }
    }

    fn take(&mut self, labels: Relabeled, timestamp: Timestamp, line: &str, now: Instant) {
        let labels = match labels {
            Relabeled::Labels(labels) => labels,
            Relabeled::Dropped => {
                self.relabel_dropped.inc();
                return;
            }
            Relabeled::Unlabeled => {
                self.unlabeled.inc();
                return;
            }
        };
        self.fed += 1;
        if let Some(stages) = &mut self.stages {
            let labels = labels.pairs().iter().cloned().collect();
            stages.feed_record(SLOT, labels, timestamp, line, self.fed, now);
            return;
        }
        let key = Arc::as_ptr(&labels) as usize;
        let index = match self.by_labels.get(&key) {
            Some(&index) => index,
            None => {
                self.open.push(Open {
                    labels,
                    text: String::new(),
                    lines: Vec::new(),
                });
                self.by_labels.insert(key, self.open.len() - 1);
                self.open.len() - 1
            }
        };
        let open = &mut self.open[index];
        let start = open.text.len() as u32;
        open.text.push_str(line);
        open.lines.push(Line {
            start,
            end: open.text.len() as u32,
            timestamp,
            offset: self.fed,
        });
    }

    /// Sends what the stages let out (and what they held past its wait time); blocks while
    /// the outputs are full. Returns false when the outputs are gone (shutting down).
    pub fn send(&mut self, now: Instant) -> bool {
        if let Some(stages) = &mut self.stages {
            stages.flush_due(now);
        }
        self.send_out()
    }

    /// Lets out everything the stages hold (end of input) and sends it.
    pub fn finish(&mut self) -> bool {
        if let Some(stages) = &mut self.stages {
            stages.flush_all();
        }
        self.send_out()
    }

    /// When the stages next have something to release on their own.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.stages.as_ref().and_then(TargetPipeline::next_deadline)
    }

    fn send_out(&mut self) -> bool {
        let mut chunks: Vec<Chunk> = Vec::new();
        match &mut self.stages {
            Some(stages) => {
                stages.finish(&self.ctx.acks, &self.ctx.metrics, &mut chunks);
            }
            None => self.chunks(&mut chunks),
        }
        chunks
            .into_iter()
            .all(|chunk| self.ctx.chunks.blocking_send(chunk).is_ok())
    }

    /// The open chunks, registered up to the last record pushed.
    fn chunks(&mut self, out: &mut Vec<Chunk>) {
        let acks = &self.ctx.acks;
        if let Some(checkpoint) = self.checkpoint.take() {
            if self.open.is_empty() {
                // Only skipped records since the last send: a record number of their own,
                // settled at once, so that their checkpoint is recorded behind what is still
                // on its way rather than waiting for the next record shipped.
                self.fed += 1;
                acks.mark_cursor(self.source, self.fed, checkpoint);
                acks.dispatch(self.source, self.fed, self.fed, 0);
            } else {
                acks.mark_cursor(self.source, self.fed, checkpoint);
            }
        }
        self.by_labels.clear();
        for open in self.open.drain(..) {
            let ticket = acks.reserve(self.source, self.fed, self.fed);
            out.push(Chunk::new(ticket, open.labels, open.text, open.lines));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acknowledge::Acknowledger;
    use crate::metrics::Metrics;
    use crate::pipeline::CustomMetrics;
    use crate::positions::Table;
    use crate::status::StatusBoard;
    use tokio::sync::mpsc;

    fn context(acks: Arc<Acknowledger>) -> (InputContext, mpsc::Receiver<Chunk>) {
        let (chunks, rx) = mpsc::channel(64);
        let (ended, _) = mpsc::unbounded_channel();
        let ctx = InputContext {
            acks,
            chunks: crate::entry::ChunkSender::new(chunks, crate::budget::Budget::unlimited()),
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(StatusBoard::new()),
            custom: CustomMetrics::default(),
            inspect: false,
            started: Arc::new(|_| {}),
            ended,
        };
        (ctx, rx)
    }

    fn record(unit: &str, line: &str, cursor: &str) -> Record {
        Record {
            labels: BTreeMap::from([
                ("job".to_string(), "journal".to_string()),
                ("__journal__systemd_unit".to_string(), unit.to_string()),
            ]),
            timestamp: Timestamp::from_nanos(1_700_000_000_000_000_000),
            line: line.to_string(),
            checkpoint: Some(Arc::from(cursor)),
        }
    }

    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        serde_yaml_ng::from_str(yaml).unwrap_or_default()
    }

    #[test]
    fn relabeled_records_become_chunks_without_internal_labels() {
        let acks = Arc::new(Acknowledger::new(Table::default()));
        let (source, _) = acks.open_cursor("cursor-journal");
        let (ctx, mut rx) = context(acks.clone());
        let relabel = rules("- source_labels: ['__journal__systemd_unit']\n  target_label: unit\n");
        let mut step = RecordStep::new("journal", &relabel, &[], source, &ctx).unwrap();
        step.push(record("ssh.service", "accepted", "c1"), Instant::now());
        assert!(step.send(Instant::now()));
        let chunk = rx.try_recv().unwrap();
        assert_eq!(
            chunk.labels.rendered().to_string(),
            r#"{job="journal", unit="ssh.service"}"#
        );
        assert_eq!(chunk.line_text(&chunk.lines[0]), "accepted");
    }

    #[test]
    fn the_cursor_moves_only_past_what_was_settled() {
        let acks = Arc::new(Acknowledger::new(Table::default()));
        let (source, last) = acks.open_cursor("cursor-journal");
        assert!(last.is_none());
        let (ctx, mut rx) = context(acks.clone());
        let mut step = RecordStep::new("journal", &[], &[], source, &ctx).unwrap();
        step.push(record("a", "one", "c1"), Instant::now());
        assert!(step.send(Instant::now()));
        step.push(record("a", "two", "c2"), Instant::now());
        assert!(step.send(Instant::now()));
        let (first, second) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        acks.arm(first.ticket, 1);
        acks.arm(second.ticket, 1);
        let cursor =
            || acks.with_table(|t| t.cursor("cursor-journal").map(|c| c.as_str().to_string()));
        acks.settle(second.ticket);
        assert_eq!(cursor(), None, "the first record is not acknowledged yet");
        acks.settle(first.ticket);
        assert_eq!(cursor().as_deref(), Some("c2"));
    }

    #[test]
    fn dropped_records_are_counted_and_still_move_the_cursor() {
        let acks = Arc::new(Acknowledger::new(Table::default()));
        let (source, _) = acks.open_cursor("cursor-journal");
        let (ctx, mut rx) = context(acks.clone());
        let relabel = rules(
            "- source_labels: ['__journal__systemd_unit']\n  regex: 'noisy.*'\n  action: drop\n",
        );
        let mut step = RecordStep::new("journal", &relabel, &[], source, &ctx).unwrap();
        step.push(record("kept", "one", "c1"), Instant::now());
        step.push(record("noisy.service", "two", "c2"), Instant::now());
        let mut unlabeled = record("kept", "three", "c3");
        unlabeled.labels.remove("job");
        step.push(unlabeled, Instant::now());
        assert!(step.send(Instant::now()));
        let chunk = rx.try_recv().unwrap();
        assert_eq!(chunk.lines.len(), 1);
        assert!(rx.try_recv().is_err());
        acks.arm(chunk.ticket, 1);
        acks.settle(chunk.ticket);
        assert_eq!(
            acks.with_table(|t| t.cursor("cursor-journal").map(|c| c.as_str().to_string())),
            Some("c3".to_string())
        );
        let metrics = ctx.metrics.render();
        assert!(
            metrics.contains("reason=\"relabel_dropped\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("reason=\"no_labels\"} 1"), "{metrics}");
    }

    #[test]
    fn one_chunk_per_label_set_and_a_send_of_skipped_records_still_moves_the_cursor() {
        let acks = Arc::new(Acknowledger::new(Table::default()));
        let (source, _) = acks.open_cursor("cursor-journal");
        let (ctx, mut rx) = context(acks.clone());
        let relabel = rules(
            "- source_labels: ['__journal__systemd_unit']\n  target_label: unit\n- source_labels: ['__journal__systemd_unit']\n  regex: 'noisy.*'\n  action: drop\n",
        );
        let mut step = RecordStep::new("journal", &relabel, &[], source, &ctx).unwrap();
        for (unit, line, cursor) in [("a", "1", "c1"), ("b", "2", "c2"), ("a", "3", "c3")] {
            step.push(record(unit, line, cursor), Instant::now());
        }
        assert!(step.send(Instant::now()));
        let chunks: Vec<Chunk> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let got: Vec<(String, Vec<&str>)> = chunks
            .iter()
            .map(|c| {
                let lines = c.lines.iter().map(|l| c.line_text(l)).collect();
                (c.labels.rendered().to_string(), lines)
            })
            .collect();
        assert_eq!(
            got,
            [
                (r#"{job="journal", unit="a"}"#.to_string(), vec!["1", "3"]),
                (r#"{job="journal", unit="b"}"#.to_string(), vec!["2"]),
            ]
        );
        let cursor =
            || acks.with_table(|t| t.cursor("cursor-journal").map(|c| c.as_str().to_string()));
        for chunk in &chunks {
            acks.arm(chunk.ticket, 1);
            acks.settle(chunk.ticket);
        }
        assert_eq!(cursor().as_deref(), Some("c3"));
        // Only dropped records since: their cursor is recorded without waiting for another
        // record to be shipped.
        step.push(record("noisy.service", "4", "c4"), Instant::now());
        assert!(step.send(Instant::now()));
        assert!(rx.try_recv().is_err());
        assert_eq!(cursor().as_deref(), Some("c4"));
    }

    #[test]
    fn stages_run_on_records() {
        let acks = Arc::new(Acknowledger::new(Table::default()));
        let source = acks.open_untracked();
        let (ctx, mut rx) = context(acks);
        let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(
            "- regex:\n    expression: '^(?P<level>\\w+) '\n- labels:\n    level:\n",
        )
        .unwrap();
        let mut step = RecordStep::new("syslog", &[], &stages, source, &ctx).unwrap();
        let mut r = record("x", "error disk full", "c");
        r.checkpoint = None;
        step.push(r, Instant::now());
        assert!(step.finish());
        let chunk = rx.try_recv().unwrap();
        assert_eq!(
            chunk.labels.rendered().to_string(),
            r#"{job="journal", level="error"}"#
        );
    }
}
