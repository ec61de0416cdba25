//! The step every record-based input shares: a record (a journal entry, a syslog message, a
//! container's log line) with its discovered labels → the job's `relabel_configs` → the job's
//! `pipeline_stages` → chunks registered with the acknowledger under the input's checkpoint.
//!
//! File inputs split bytes into lines and track byte offsets; record inputs get whole
//! entries, each with labels of its own and a checkpoint of the input's kind (a journal
//! cursor, a container timestamp, nothing for a socket). Both go through the same
//! `TargetPipeline`, so the rule that a position never passes an entry the stages still hold
//! is the same code. Records are numbered in their source; the checkpoint of each record is
//! marked at its number and recorded once every output settled everything up to it.

use super::{InputContext, InputError};
use crate::acknowledge::SourceKey;
use crate::entry::{Chunk, Timestamp};
use crate::labels::LabelSet;
use crate::metrics::HostReason;
use crate::pipeline::Pipeline;
use crate::relabel::{RelabelConfig, relabel};
use crate::tail::pipelined::TargetPipeline;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// One entry as a record-based input read it.
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

/// A job's relabeling and stages over the records of one source.
pub struct RecordStep {
    relabel: Vec<RelabelConfig>,
    stages: TargetPipeline,
    source: SourceKey,
    /// Records fed so far: each record's number in the source's ledger.
    fed: u64,
    ctx: InputContext,
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
        Ok(RecordStep {
            relabel: relabel.to_vec(),
            stages,
            source,
            fed: 0,
            ctx: ctx.clone(),
        })
    }

    /// Relabels one record and hands it to the stages. A record that relabeling drops, or
    /// that is left with no label at all once the `__` labels are gone, is counted and
    /// skipped; its checkpoint still counts, so the input resumes after it.
    pub fn push(&mut self, record: Record, now: Instant) {
        let Record {
            labels,
            timestamp,
            line,
            checkpoint,
        } = record;
        let kept = relabel(&labels, &self.relabel).map(|mut labels| {
            labels.retain(|name, value| !name.starts_with("__") && !value.is_empty());
            labels
        });
        match kept {
            Some(labels) if !labels.is_empty() => {
                self.fed += 1;
                self.stages
                    .feed_record(SLOT, labels, timestamp, &line, self.fed, now);
            }
            Some(_) => self.count_drop("no_labels"),
            None => self.count_drop("relabel_dropped"),
        }
        if let Some(checkpoint) = checkpoint {
            // A skipped record shares the number of the last record fed: once that one is
            // settled, the input may resume after the skipped one too.
            self.ctx.acks.mark_cursor(self.source, self.fed, checkpoint);
        }
    }

    fn count_drop(&self, reason: &str) {
        self.ctx
            .metrics
            .dropped_entries
            .get_or_create(&HostReason {
                host: String::new(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sends what the stages let out (and what they held past its wait time); blocks while
    /// the outputs are full. Returns false when the outputs are gone (shutting down).
    pub fn send(&mut self, now: Instant) -> bool {
        self.stages.flush_due(now);
        self.send_out()
    }

    /// Lets out everything the stages hold (end of input) and sends it.
    pub fn finish(&mut self) -> bool {
        self.stages.flush_all();
        self.send_out()
    }

    /// When the stages next have something to release on their own.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.stages.next_deadline()
    }

    fn send_out(&mut self) -> bool {
        let mut chunks: Vec<Chunk> = Vec::new();
        self.stages
            .finish(&self.ctx.acks, &self.ctx.metrics, &mut chunks);
        chunks
            .into_iter()
            .all(|chunk| self.ctx.chunks.blocking_send(chunk).is_ok())
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
            chunks,
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
