//! Promtail's pipeline stages: what happens to a line between reading and shipping.
//!
//! A [`Pipeline`] is built from the YAML list under a scrape config's `pipeline_stages` and runs
//! one [`Entry`] at a time through its stages, in order. Most stages change the entry and pass it
//! on; some drop it (`drop`, `match` with `action: drop`, `sampling`, `limit`), and some hold it
//! back to merge it with later ones (`multiline`, the partial lines of `cri` and `docker`), which
//! [`Pipeline::flush_due`] and [`Pipeline::flush_all`] release.
//!
//! Each stage follows Promtail's documented behaviour: a stage that cannot parse a line (not JSON,
//! regex without a match, missing source) leaves the entry as it was and says so at `debug`
//! level. Where logferry deviates, the stage's module says so.
//!
//! ```
//! use logferry::pipeline::{CustomMetrics, Entry, Pipeline};
//! use logferry::entry::Timestamp;
//! let yaml: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(r#"
//! - regex:
//!     expression: '^(?P<level>\w+) (?P<msg>.*)$'
//! - labels:
//!     level:
//! - output:
//!     source: msg
//! "#).unwrap();
//! let mut pipeline = Pipeline::new(&yaml, &CustomMetrics::default(), "job").unwrap();
//! let (mut out, mut dropped) = (vec![], vec![]);
//! let entry = Entry::new(Timestamp::from_nanos(1), "WARN disk almost full", Default::default(), 7);
//! pipeline.process(entry, std::time::Instant::now(), &mut out, &mut dropped);
//! assert_eq!(out[0].line, "disk almost full");
//! assert_eq!(out[0].labels["level"], "WARN");
//! ```

mod fieldmap;
pub mod gotemplate;
pub mod gotime;
mod metadata;
mod metrics;
mod sprig_extra;
mod stages;
mod value;

pub use fieldmap::{Extracted, FieldMap, Labels};
pub use metadata::Metadata;
pub use metrics::CustomMetrics;
pub use value::{get_float, get_string, go_json_string};

use crate::entry::Timestamp;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

/// The label Promtail's `tenant` stage sets; the client sends the entry to that tenant.
pub const TENANT_LABEL: &str = "__tenant_id__";

/// One log entry on its way through the stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub timestamp: Timestamp,
    pub line: String,
    /// Current labels, including internal `__`-prefixed ones such as [`TENANT_LABEL`]; the
    /// output strips the `__` labels.
    pub labels: Labels,
    /// Promtail's extracted map; starts with the entry's labels as strings. Parsing stages add
    /// strings, numbers, booleans and nulls.
    pub extracted: Extracted,
    pub structured_metadata: Metadata,
    /// An opaque tag. A stage that merges entries gives the result the origin of the last entry
    /// merged into it; stages never invent origins.
    pub origin: u64,
}

impl Entry {
    /// An entry whose extracted map holds its labels, as Promtail starts every entry.
    pub fn new(
        timestamp: Timestamp,
        line: impl Into<String>,
        labels: BTreeMap<String, String>,
        origin: u64,
    ) -> Entry {
        Entry::with_labels(timestamp, line, labels.into(), origin)
    }

    /// [`Entry::new`] with labels already in an entry's map.
    pub fn with_labels(
        timestamp: Timestamp,
        line: impl Into<String>,
        mut labels: Labels,
        origin: u64,
    ) -> Entry {
        let mut extracted = Extracted::new();
        seed(&mut extracted, &labels);
        // The pair as `refill` leaves it, so that reusing this entry can keep them.
        labels.settle();
        extracted.settle();
        Entry {
            timestamp,
            line: line.into(),
            labels,
            extracted,
            structured_metadata: Metadata::default(),
            origin,
        }
    }

    /// Makes this entry what [`Entry::new`] would make of these arguments, reusing its memory
    /// (for a caller that makes an entry per line and gets them back once they are out).
    pub fn refill(&mut self, timestamp: Timestamp, line: &str, labels: &Labels, origin: u64) {
        self.timestamp = timestamp;
        self.line.clear();
        self.line.push_str(line);
        // Both maps as the last refill left them, with the same labels: the extracted values
        // are still the seed of these labels. (The two are only ever replaced together, by new
        // maps, which are not settled; a settled map moved alone into another entry would
        // break this.)
        let kept =
            self.labels.is_settled() && self.extracted.is_settled() && self.labels == *labels;
        if !kept {
            self.labels.clear();
            for (k, v) in labels {
                self.labels.set_text(k, v);
            }
            self.extracted.clear();
            seed(&mut self.extracted, labels);
            self.labels.settle();
            self.extracted.settle();
        }
        self.structured_metadata.clear();
        self.origin = origin;
    }

    /// Whether keeping this entry for reuse keeps too much memory (a huge merged line).
    pub fn too_big_to_keep(&self) -> bool {
        const MAX: usize = 64 * 1024;
        self.line.capacity() > MAX
    }
}

/// Promtail starts the extracted map with the labels, as strings.
fn seed(extracted: &mut Extracted, labels: &Labels) {
    for (k, v) in labels {
        extracted.set_text(k, v);
    }
}

/// A pipeline that cannot be built: which stage, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PipelineError {
    /// Where the stage is, e.g. `pipeline_stages[2] (regex)` or
    /// `pipeline_stages[1] (match) stages[0] (json)`.
    pub path: String,
    pub message: String,
}

/// What a stage does with an entry.
pub(crate) enum Flow {
    /// Passed on (changed or not).
    Pass(Entry),
    /// Several entries released at once (e.g. `cri` flushing partial lines of every stream).
    Many(Vec<Entry>),
    /// Nothing to pass on: held for later, or dropped (and reported through [`Cx::drop`]).
    Nothing,
}

/// What a stage sees besides the entry: the time, where drops go, and where entries merged
/// into others go.
pub(crate) struct Cx<'a> {
    pub now: Instant,
    pub dropped: &'a mut Vec<(u64, String)>,
    pub inspect: Option<&'a mut Vec<String>>,
    /// `None` while nobody takes spent entries (see [`Pipeline::take_spent`]).
    pub spent: Option<&'a mut Vec<Entry>>,
}

/// Spent entries a pipeline keeps at most for [`Pipeline::take_spent`]: about what one read of
/// short lines makes, as a caller's own pool of entries.
const SPENT_KEPT: usize = 4096;

impl Cx<'_> {
    /// Reports a dropped entry.
    pub fn drop(&mut self, origin: u64, reason: &str) {
        self.dropped.push((origin, reason.to_string()));
    }

    /// Takes an entry whose content a stage has merged into another one: its memory goes
    /// back to the caller, which would otherwise allocate a new entry for every line a
    /// multiline block or a partial line swallows.
    pub fn spend(&mut self, entry: Entry) {
        if let Some(spent) = self.spent.as_deref_mut()
            && spent.len() < SPENT_KEPT
            && !entry.too_big_to_keep()
        {
            spent.push(entry);
        }
    }
}

/// One stage. `process` sees each entry once; holding stages release entries later through
/// the flush methods.
pub(crate) trait Stage: Send {
    fn name(&self) -> &'static str;
    fn process(&mut self, entry: Entry, cx: &mut Cx<'_>) -> Flow;
    /// Releases entries held longer than the stage allows.
    fn flush_due(&mut self, _cx: &mut Cx<'_>, _out: &mut Vec<Entry>) {}
    /// Releases everything held.
    fn flush_all(&mut self, _cx: &mut Cx<'_>, _out: &mut Vec<Entry>) {}
    /// Entries held right now.
    fn pending(&self) -> usize {
        0
    }
    /// The origin of the first line of every entry held right now (a merged entry counts from
    /// its first line), so the caller knows which lines are not out yet.
    fn held_origins(&self, _out: &mut Vec<u64>) {}
    /// When `flush_due` next has something to release.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
}

/// An ordered list of stages (a pipeline, or the nested stages of `match`).
pub(crate) struct Stages {
    list: Vec<Box<dyn Stage>>,
}

impl Stages {
    pub fn build(
        yaml: &[serde_yaml_ng::Value],
        ctx: &BuildCtx<'_>,
        prefix: &str,
    ) -> Result<Stages, PipelineError> {
        let mut list = Vec::with_capacity(yaml.len());
        for (i, item) in yaml.iter().enumerate() {
            list.push(stages::build(item, ctx, &format!("{prefix}[{i}]"))?);
        }
        Ok(Stages { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Runs `entry` through stages `from..`, pushing what comes out of the last one to `out`.
    pub fn run(&mut self, from: usize, entry: Entry, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        let mut entry = entry;
        for i in from..self.list.len() {
            let stage = &mut self.list[i];
            let before = cx.inspect.is_some().then(|| entry.clone());
            let drops_before = cx.dropped.len();
            let flow = stage.process(entry, cx);
            if let Some(before) = before {
                let name = stage.name();
                let dropped = cx.dropped.len() > drops_before;
                if let Some(lines) = cx.inspect.as_deref_mut() {
                    inspect_diff(name, &before, &flow, dropped, lines);
                }
            }
            match flow {
                Flow::Pass(e) => entry = e,
                Flow::Nothing => return,
                Flow::Many(entries) => {
                    for e in entries {
                        self.run(i + 1, e, cx, out);
                    }
                    return;
                }
            }
        }
        out.push(entry);
    }

    pub fn flush_due(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        let mut released = Vec::new();
        for i in 0..self.list.len() {
            if self.list[i].pending() == 0 {
                continue;
            }
            self.list[i].flush_due(cx, &mut released);
            for e in std::mem::take(&mut released) {
                self.run(i + 1, e, cx, out);
            }
        }
    }

    pub fn flush_all(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        let mut released = Vec::new();
        for i in 0..self.list.len() {
            if self.list[i].pending() == 0 {
                continue;
            }
            self.list[i].flush_all(cx, &mut released);
            for e in std::mem::take(&mut released) {
                self.run(i + 1, e, cx, out);
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.list.iter().map(|s| s.pending()).sum()
    }

    pub fn held_origins(&self, out: &mut Vec<u64>) {
        for s in &self.list {
            s.held_origins(out);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.list.iter().filter_map(|s| s.next_deadline()).min()
    }
}

/// What building a stage needs besides its YAML.
pub(crate) struct BuildCtx<'a> {
    pub metrics: &'a CustomMetrics,
    #[allow(dead_code)]
    pub job_name: &'a str,
}

/// A scrape config's `pipeline_stages`, ready to run.
pub struct Pipeline {
    stages: Stages,
    /// What it was built from, to build twins of it.
    yaml: Vec<serde_yaml_ng::Value>,
    metrics: CustomMetrics,
    job_name: String,
    /// Drops that happened while flushing (the flush methods have no `dropped` parameter);
    /// handed out by [`Pipeline::take_dropped`] and at the next [`Pipeline::process`].
    flush_drops: Vec<(u64, String)>,
    /// The longest line that may leave the stages; whoever turns what comes out into chunks
    /// applies it.
    line_limit: Option<LineSizeLimit>,
    /// Entries merged into others, for [`Pipeline::take_spent`]; `None` until it is first
    /// called, so that a caller that never takes them does not make the pipeline keep them.
    spent: Option<Vec<Entry>>,
}

/// `limits_config.max_line_size` as Promtail applies it: to the line as it leaves the stages
/// (its client checks what it sends), not to the line as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSizeLimit {
    /// Longest line, in bytes.
    pub max: usize,
    /// Cut a longer line to `max` bytes (at a character boundary) instead of dropping it.
    pub truncate: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.stages.list.iter().map(|s| s.name()).collect();
        f.debug_struct("Pipeline").field("stages", &names).finish()
    }
}

impl Pipeline {
    /// Builds the pipeline of one scrape config. `stages` is the YAML list under
    /// `pipeline_stages`; metrics stages register their metrics with `metrics`.
    ///
    /// Errors name the stage index and the problem: unknown stage, bad regex, bad JMESPath,
    /// unparsable template, bad selector, bad option.
    pub fn new(
        stages: &[serde_yaml_ng::Value],
        metrics: &CustomMetrics,
        job_name: &str,
    ) -> Result<Pipeline, PipelineError> {
        let ctx = BuildCtx { metrics, job_name };
        Ok(Pipeline {
            stages: Stages::build(stages, &ctx, "pipeline_stages")?,
            yaml: stages.to_vec(),
            metrics: metrics.clone(),
            job_name: job_name.to_string(),
            flush_drops: Vec::new(),
            line_limit: None,
            spent: None,
        })
    }

    /// Sets the limit on the lines that leave the stages (see [`LineSizeLimit`]).
    pub fn set_line_limit(&mut self, limit: Option<LineSizeLimit>) {
        self.line_limit = limit;
    }

    /// The limit on the lines that leave the stages.
    pub fn line_limit(&self) -> Option<LineSizeLimit> {
        self.line_limit
    }

    /// A pipeline of the same stages with none of this one's state (held lines, last
    /// timestamps); metrics stages count into the same metrics.
    pub fn twin(&self) -> Result<Pipeline, PipelineError> {
        let mut twin = Pipeline::new(&self.yaml, &self.metrics, &self.job_name)?;
        twin.line_limit = self.line_limit;
        Ok(twin)
    }

    /// Whether the files of a target may each run through a twin of this pipeline instead of
    /// all through this one: true unless a stage's state is about every stream of the target
    /// together (`limit`, whose rate is the target's).
    pub fn splits_by_stream(&self) -> bool {
        fn has_limit(stages: &[serde_yaml_ng::Value]) -> bool {
            stages.iter().any(|stage| {
                let Some(map) = stage.as_mapping() else {
                    return false;
                };
                map.iter().any(|(name, config)| {
                    name.as_str() == Some("limit")
                        || config
                            .get("stages")
                            .and_then(|s| s.as_sequence())
                            .is_some_and(|s| has_limit(s))
                })
            })
        }
        !has_limit(&self.yaml)
    }

    /// Whether there are no stages (entries pass unchanged).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs one entry through all stages; pushes 0..n entries to `out` (0 when dropped or held)
    /// and reports dropped entries to `dropped` as `(origin, reason)`.
    ///
    /// An entry whose extracted map is empty gets its labels there first (what
    /// [`Entry::new`] does).
    pub fn process(
        &mut self,
        entry: Entry,
        now: Instant,
        out: &mut Vec<Entry>,
        dropped: &mut Vec<(u64, String)>,
    ) {
        self.take_dropped(dropped);
        let entry = seed_extracted(entry);
        let mut cx = Cx {
            now,
            dropped,
            inspect: None,
            spent: self.spent.as_mut(),
        };
        self.stages.run(0, entry, &mut cx, out);
    }

    /// Emits entries held longer than their wait time (multiline blocks, partial CRI and
    /// Docker lines, lines a non-dropping `limit` stage delays). Entries dropped by a later
    /// stage on the way out are reported by [`Pipeline::take_dropped`].
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<Entry>) {
        let mut drops = std::mem::take(&mut self.flush_drops);
        let mut cx = Cx {
            now,
            dropped: &mut drops,
            inspect: None,
            spent: self.spent.as_mut(),
        };
        self.stages.flush_due(&mut cx, out);
        self.flush_drops = drops;
    }

    /// Emits everything held (end of input, file closed, shutdown). Entries dropped by a later
    /// stage on the way out are reported by [`Pipeline::take_dropped`].
    pub fn flush_all(&mut self, out: &mut Vec<Entry>) {
        let mut drops = std::mem::take(&mut self.flush_drops);
        let mut cx = Cx {
            now: Instant::now(),
            dropped: &mut drops,
            inspect: None,
            spent: self.spent.as_mut(),
        };
        self.stages.flush_all(&mut cx, out);
        self.flush_drops = drops;
    }

    /// Moves the drops that happened during [`Pipeline::flush_due`] or
    /// [`Pipeline::flush_all`] to `dropped`.
    pub fn take_dropped(&mut self, dropped: &mut Vec<(u64, String)>) {
        dropped.append(&mut self.flush_drops);
    }

    /// Moves to `spare` the entries whose lines stages merged into other entries (the lines
    /// of a multiline block after its first, the pieces of a partial line): a caller that
    /// makes entries from the spare ones that came out (see [`Entry::refill`]) can make them
    /// from these too, rather than allocate an entry per merged line. Entries are kept for
    /// this from the first call on.
    pub fn take_spent(&mut self, spare: &mut Vec<Entry>) {
        spare.append(self.spent.get_or_insert_with(Vec::new));
    }

    /// How many entries stages hold right now (for back-pressure and tests).
    pub fn pending(&self) -> usize {
        self.stages.pending()
    }

    /// The earliest time at which [`Pipeline::flush_due`] has something to release, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.stages.next_deadline()
    }

    /// Appends the origin of the first line of every entry held right now: lines from that
    /// origin on have not come out yet, which is what a position must not pass.
    pub fn held_origins(&self, out: &mut Vec<u64>) {
        self.stages.held_origins(out);
    }

    /// Like [`Pipeline::process`], and also returns, stage by stage, what changed (extracted
    /// map, labels, timestamp, line, structured metadata) as human-readable lines, for
    /// `-inspect`.
    pub fn process_inspect(
        &mut self,
        entry: Entry,
        now: Instant,
        out: &mut Vec<Entry>,
        dropped: &mut Vec<(u64, String)>,
    ) -> Vec<String> {
        self.take_dropped(dropped);
        let entry = seed_extracted(entry);
        let mut lines = Vec::new();
        let mut cx = Cx {
            now,
            dropped,
            inspect: Some(&mut lines),
            spent: self.spent.as_mut(),
        };
        self.stages.run(0, entry, &mut cx, out);
        lines
    }
}

fn seed_extracted(mut entry: Entry) -> Entry {
    if entry.extracted.is_empty() && !entry.labels.is_empty() {
        seed(&mut entry.extracted, &entry.labels);
    }
    entry
}

fn inspect_diff(name: &str, before: &Entry, flow: &Flow, dropped: bool, lines: &mut Vec<String>) {
    lines.push(format!("[inspect: {name} stage]:"));
    let after = match flow {
        Flow::Pass(e) => e,
        Flow::Many(v) if !v.is_empty() => &v[v.len() - 1],
        _ => {
            lines.push(if dropped {
                "  entry dropped".to_string()
            } else {
                "  entry held".to_string()
            });
            return;
        }
    };
    if let Flow::Many(v) = flow {
        lines.push(format!("  released {} entries", v.len()));
    }
    let mut changed = false;
    diff_maps(
        "extracted",
        &before.extracted.iter().collect(),
        &after.extracted.iter().collect(),
        lines,
        &mut changed,
        |v| v.to_string(),
    );
    diff_maps(
        "labels",
        &before.labels.iter().collect(),
        &after.labels.iter().collect(),
        lines,
        &mut changed,
        |v| {
            let mut s = String::new();
            crate::labels::go_quote_into(v, &mut s);
            s
        },
    );
    diff_maps(
        "structured_metadata",
        &before.structured_metadata.iter().collect(),
        &after.structured_metadata.iter().collect(),
        lines,
        &mut changed,
        |v| {
            let mut s = String::new();
            crate::labels::go_quote_into(v, &mut s);
            s
        },
    );
    if before.timestamp != after.timestamp {
        changed = true;
        lines.push(format!(
            "  timestamp: {} -> {}",
            before.timestamp.to_go_layout(),
            after.timestamp.to_go_layout()
        ));
    }
    if before.line != after.line {
        changed = true;
        let mut l = String::from("  line: ");
        crate::labels::go_quote_into(&before.line, &mut l);
        l.push_str(" -> ");
        crate::labels::go_quote_into(&after.line, &mut l);
        lines.push(l);
    }
    if !changed {
        lines.push("  none".to_string());
    }
}

fn diff_maps<V: PartialEq>(
    what: &str,
    before: &BTreeMap<&String, &V>,
    after: &BTreeMap<&String, &V>,
    lines: &mut Vec<String>,
    changed: &mut bool,
    show: impl Fn(&V) -> String,
) {
    for (k, v) in after {
        match before.get(k) {
            None => {
                *changed = true;
                lines.push(format!("  {what}: + {k}: {}", show(v)));
            }
            Some(old) if old != v => {
                *changed = true;
                lines.push(format!("  {what}: ~ {k}: {} -> {}", show(old), show(v)));
            }
            _ => {}
        }
    }
    for (k, v) in before {
        if !after.contains_key(k) {
            *changed = true;
            let mut line = String::new();
            let _ = write!(line, "  {what}: - {k}: {}", show(v));
            lines.push(line);
        }
    }
}

#[cfg(test)]
mod tests;
