//! Running a target's `pipeline_stages` over what the tailer read, without ever letting a
//! position pass a line the stages still hold.
//!
//! One [`Pipeline`] serves all files of a target, as in Promtail (its stateful stages keep
//! their state per stream), or all files of one lane of the target (see `dispatch::lanes`). Each line handed to it carries an origin made of its file's slot
//! and its sequence number in that file. After each step, the stages say which lines they still
//! hold (the first line of every held entry); a file's *frontier* is the start of its oldest
//! line still held, or the end of its last line when none is. Chunks of what came out are
//! registered with the acknowledger up to the frontier, so a position never moves past a line
//! that has not left the pipeline; a step that emits nothing still moves the frontier.

use super::lines::Split;
use crate::acknowledge::{Acknowledger, SourceKey};
use crate::entry::{Chunk, Line, Timestamp};
use crate::labels::LabelSet;
use crate::metrics::{HostReason, Metrics, ReasonLabel};
use crate::pipeline::{Entry, Labels, Pipeline, TENANT_LABEL};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// The lines of one read as one chunk, registered up to its last line, for a stream with no
/// stages (the lines go out as read). None when the read holds no complete line.
pub(crate) fn plain_chunk(
    acks: &Acknowledger,
    source: SourceKey,
    labels: &Arc<LabelSet>,
    split: Split,
    base: Timestamp,
    size: u64,
) -> Option<Chunk> {
    let end = split.spans.last()?.offset;
    let lines = split.lines_at(base);
    let ticket = acks.reserve(source, end, size);
    Some(Chunk::new(ticket, labels.clone(), split.text, lines))
}

/// Bits of an origin that number a line within its file; the rest name the file's slot.
const SEQ_BITS: u32 = 44;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

fn origin(slot: u32, seq: u64) -> u64 {
    (u64::from(slot) << SEQ_BITS) | (seq & SEQ_MASK)
}

fn slot_of(origin: u64) -> u32 {
    (origin >> SEQ_BITS) as u32
}

/// Lines that came out of one file with one label set and tenant: a chunk in the making.
///
/// Why lines and not entries: an entry is sorted into its group as soon as it leaves the stages,
/// its line copied into the group's text and the entry itself made ready for the next line.
/// Keeping a read's entries until the end of the read (about 800 of them, with their maps'
/// strings) made each line's entry a cold one, and each stage's writes into it cache misses;
/// measured on nginx lines through regex → labels → timestamp, that and moving entries from
/// list to list were a fifth of the tailer's time.
struct Group {
    slot: u32,
    /// A quick digest of the labels, to compare labels only with groups that may match.
    digest: u64,
    labels: Labels,
    tenant: Option<String>,
    text: String,
    /// The lines in `text`; their offset is set when the chunk is made.
    lines: Vec<Line>,
    /// Each line's structured metadata, up to the last line that has some.
    metadata: Vec<Vec<(String, String)>>,
    /// How long `text` and `lines` were when last made into a chunk: about the memory they
    /// start with the next time. Grown from nothing by doubling, they were copied about once
    /// more each, in all 5 % of the tailer's time on a `multiline` pipeline.
    last_size: (usize, usize),
}

/// One file's lines on their way through the pipeline.
#[derive(Debug)]
struct Feed {
    source: SourceKey,
    /// The labels its entries start with.
    labels: Labels,
    next_seq: u64,
    /// End offset of the last line handed over.
    last_end: u64,
    /// (sequence, start offset) of lines handed over and not known to be out, oldest first.
    pending: VecDeque<(u64, u64)>,
    /// The frontier last registered.
    frontier: u64,
    size: u64,
    /// The file was closed; the feed goes once nothing of it is held.
    closed: bool,
}

/// A target's pipeline and the files feeding it.
pub(crate) struct TargetPipeline {
    pipeline: Pipeline,
    feeds: HashMap<u32, Feed>,
    label_sets: HashMap<Labels, Arc<LabelSet>>,
    /// Print what each stage did, to standard error (`-inspect`).
    inspect: bool,
    /// What the last step of the stages let out, before it is sorted into groups.
    emitted: Vec<Entry>,
    dropped: Vec<(u64, String)>,
    /// Entries that are out, kept to make the next lines' entries without allocating.
    spare: Vec<Entry>,
    /// What came out since the last `finish`: `groups[..used]`; the rest are kept for their
    /// memory.
    groups: Vec<Group>,
    used: usize,
    /// The group the last entry went to (meaningful while `used > 0`).
    last_group: usize,
    /// Lines that left the stages over `max_line_size`: dropped, and cut to it.
    too_long: u64,
    cut: u64,
}

/// Entries kept for reuse at most: what one read of short lines makes (a read of long lines
/// makes fewer, so the pool holds about one read whatever the lines).
const SPARE_ENTRIES: usize = 4096;

/// Label sets remembered at most per target (beyond, the cache starts over).
const LABEL_SET_CACHE: usize = 10_000;

impl TargetPipeline {
    pub fn new(pipeline: Pipeline, inspect: bool) -> TargetPipeline {
        TargetPipeline {
            pipeline,
            feeds: HashMap::new(),
            label_sets: HashMap::new(),
            inspect,
            emitted: Vec::new(),
            dropped: Vec::new(),
            spare: Vec::new(),
            groups: Vec::new(),
            used: 0,
            last_group: 0,
            too_long: 0,
            cut: 0,
        }
    }

    /// An entry for one line, made from a spare one when there is one.
    fn entry(&mut self, timestamp: Timestamp, line: &str, labels: &Labels, origin: u64) -> Entry {
        match self.spare.pop() {
            Some(mut e) => {
                e.refill(timestamp, line, labels, origin);
                e
            }
            None => Entry::with_labels(timestamp, line, labels.clone(), origin),
        }
    }

    pub fn set_inspect(&mut self, inspect: bool) {
        self.inspect = inspect;
    }

    /// A file (generation) starts feeding the pipeline from `start`.
    pub fn open(&mut self, slot: u32, source: SourceKey, labels: &LabelSet, start: u64) {
        let labels = labels.pairs().iter().cloned().collect();
        self.feeds.insert(
            slot,
            Feed {
                source,
                labels,
                next_seq: 0,
                last_end: start,
                pending: VecDeque::new(),
                frontier: start,
                size: start,
                closed: false,
            },
        );
    }

    /// The file's labels changed (reload, container metadata).
    pub fn relabel(&mut self, slot: u32, labels: &LabelSet) {
        if let Some(feed) = self.feeds.get_mut(&slot) {
            feed.labels = labels.pairs().iter().cloned().collect();
        }
    }

    /// The file was closed: its feed goes once nothing of it is held. Returns whether the
    /// caller may close the file's source now.
    pub fn close(&mut self, slot: u32) -> bool {
        match self.feeds.get_mut(&slot) {
            Some(feed) if !feed.pending.is_empty() => {
                feed.closed = true;
                false
            }
            _ => {
                self.feeds.remove(&slot);
                true
            }
        }
    }

    /// Hands the lines of one read to the stages.
    pub fn feed(&mut self, slot: u32, split: &Split, base: Timestamp, size: u64, now: Instant) {
        let Some(feed) = self.feeds.get_mut(&slot) else {
            return;
        };
        feed.size = feed.size.max(size);
        // The feed's labels, borrowed while entries are made (a relabel cannot happen meanwhile).
        let labels = std::mem::take(&mut feed.labels);
        let first_seq = feed.next_seq;
        for span in &split.spans {
            feed.pending.push_back((feed.next_seq, feed.last_end));
            feed.next_seq += 1;
            feed.last_end = span.offset;
        }
        for (i, span) in split.spans.iter().enumerate() {
            let text = split
                .text
                .get(span.start as usize..span.end as usize)
                .unwrap_or_default();
            let entry = self.entry(
                Timestamp::from_nanos(base.0 + i as i64),
                text,
                &labels,
                origin(slot, first_seq + i as u64),
            );
            self.process(entry, now);
        }
        if let Some(feed) = self.feeds.get_mut(&slot) {
            feed.labels = labels;
        }
    }

    fn process(&mut self, entry: Entry, now: Instant) {
        if self.inspect {
            let changes =
                self.pipeline
                    .process_inspect(entry, now, &mut self.emitted, &mut self.dropped);
            for line in changes {
                eprintln!("{line}");
            }
        } else {
            self.pipeline
                .process(entry, now, &mut self.emitted, &mut self.dropped);
        }
        self.sort_out();
        // Merged entries back at once, on top of the spares: the next line, most often of the
        // same file, gets an entry that already holds its labels (see `Entry::refill`).
        self.pipeline.take_spent(&mut self.spare);
    }

    /// Sorts what left the stages into groups by file, labels and tenant, keeping its order,
    /// and keeps the entries for the next lines.
    fn sort_out(&mut self) {
        let line_limit = self.pipeline.line_limit();
        for mut entry in self.emitted.drain(..) {
            if let Some(limit) = line_limit
                && entry.line.len() > limit.max
            {
                // `max_line_size` is about the line sent, as in Promtail: a long line the
                // stages shortened passes whole.
                if !limit.truncate {
                    self.too_long += 1;
                    recycle(&mut self.spare, entry);
                    continue;
                }
                let mut end = limit.max;
                while !entry.line.is_char_boundary(end) {
                    end -= 1;
                }
                entry.line.truncate(end);
                self.cut += 1;
            }
            let slot = slot_of(entry.origin);
            let tenant = entry.labels.remove(TENANT_LABEL);
            entry
                .labels
                .retain(|k, v| !k.starts_with("__") && !v.is_empty());
            // Consecutive entries most often go to the group of the one before: it is tried
            // first, which spares digesting the labels.
            let same_as_last = self.used > 0 && {
                let g = &self.groups[self.last_group];
                g.slot == slot && g.tenant == tenant && g.labels == entry.labels
            };
            let found = if same_as_last {
                Some(self.last_group)
            } else {
                let d = entry.labels.digest();
                self.groups[..self.used].iter().position(|g| {
                    g.digest == d
                        && g.slot == slot
                        && g.labels == entry.labels
                        && g.tenant == tenant
                })
            };
            let group = match found {
                Some(i) => {
                    self.last_group = i;
                    &mut self.groups[i]
                }
                None => {
                    // A new group, once per label set and read: digesting again is cheap.
                    let d = entry.labels.digest();
                    if self.used == self.groups.len() {
                        self.groups.push(Group {
                            slot,
                            digest: d,
                            labels: Labels::new(),
                            tenant: None,
                            text: String::new(),
                            lines: Vec::new(),
                            metadata: Vec::new(),
                            last_size: (0, 0),
                        });
                    }
                    self.last_group = self.used;
                    let g = &mut self.groups[self.used];
                    self.used += 1;
                    g.slot = slot;
                    g.digest = d;
                    g.labels.clear();
                    for (k, v) in &entry.labels {
                        g.labels.set_text(k, v);
                    }
                    g.tenant = tenant;
                    g
                }
            };
            if group.text.capacity() == 0 {
                // A quarter more: reads differ in size, and a block a stage held over the end
                // of a read makes the next one longer.
                let (text, lines) = group.last_size;
                group.text.reserve(text + text / 4);
                group.lines.reserve(lines + lines / 4);
            }
            let start = group.text.len() as u32;
            group.text.push_str(&entry.line);
            if !entry.structured_metadata.is_empty() {
                group.metadata.resize_with(group.lines.len(), Vec::new);
                group
                    .metadata
                    .push(entry.structured_metadata.take().into_iter().collect());
            }
            group.lines.push(Line {
                start,
                end: group.text.len() as u32,
                timestamp: entry.timestamp,
                offset: 0,
            });
            recycle(&mut self.spare, entry);
        }
    }

    /// Hands one record (an entry that did not come from splitting a file: a journal entry, a
    /// syslog message) to the stages, with labels of its own. `end` is its number in its
    /// source, which orders it in the source's ledger; it must grow with every record.
    pub fn feed_record(
        &mut self,
        slot: u32,
        labels: BTreeMap<String, String>,
        timestamp: Timestamp,
        line: &str,
        end: u64,
        now: Instant,
    ) {
        let Some(feed) = self.feeds.get_mut(&slot) else {
            return;
        };
        let seq = feed.next_seq;
        feed.next_seq += 1;
        feed.pending.push_back((seq, feed.last_end));
        feed.last_end = end;
        feed.size = feed.size.max(end);
        let entry = Entry::new(timestamp, line, labels, origin(slot, seq));
        self.process(entry, now);
    }

    /// Releases what the stages held past its wait time.
    pub fn flush_due(&mut self, now: Instant) {
        self.pipeline.flush_due(now, &mut self.emitted);
        self.sort_out();
    }

    /// Releases everything held (end of input).
    pub fn flush_all(&mut self) {
        self.pipeline.flush_all(&mut self.emitted);
        self.sort_out();
    }

    /// When the stages next have something to release on their own.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pipeline.next_deadline()
    }

    /// Turns what came out into chunks (one per file, label set and tenant) registered up to
    /// each file's frontier, counts drops, and returns the sources of closed files that are now
    /// fully out.
    pub fn finish(
        &mut self,
        acks: &Acknowledger,
        metrics: &Metrics,
        out: &mut Vec<Chunk>,
    ) -> Vec<SourceKey> {
        self.pipeline.take_dropped(&mut self.dropped);
        for (_, reason) in self.dropped.drain(..) {
            metrics
                .dropped_entries
                .get_or_create(&HostReason {
                    host: String::new(),
                    reason,
                })
                .inc();
        }
        // The oldest line each file still has in the stages.
        let mut held: Vec<u64> = Vec::new();
        self.pipeline.held_origins(&mut held);
        let mut oldest: HashMap<u32, u64> = HashMap::new();
        for o in held {
            let seq = o & SEQ_MASK;
            oldest
                .entry(slot_of(o))
                .and_modify(|s| *s = (*s).min(seq))
                .or_insert(seq);
        }
        if self.too_long > 0 {
            metrics
                .lines_dropped
                .get_or_create(&ReasonLabel {
                    reason: "line_too_long".into(),
                })
                .inc_by(std::mem::take(&mut self.too_long));
        }
        if self.cut > 0 {
            metrics
                .lines_truncated
                .inc_by(std::mem::take(&mut self.cut));
        }
        let mut touched: HashSet<u32> = HashSet::new();
        let mut frontiers: HashMap<u32, u64> = HashMap::new();
        for (slot, feed) in &mut self.feeds {
            let limit = oldest.get(slot).copied().unwrap_or(u64::MAX);
            while feed.pending.front().is_some_and(|(seq, _)| *seq < limit) {
                feed.pending.pop_front();
            }
            let frontier = feed
                .pending
                .front()
                .map_or(feed.last_end, |(_, start)| *start);
            frontiers.insert(*slot, frontier);
        }
        for group in &mut self.groups[..self.used] {
            let slot = group.slot;
            let Some(feed) = self.feeds.get(&slot) else {
                // A generation forgotten (its file was truncated): its lines are not sent.
                group.text.clear();
                group.lines.clear();
                group.metadata.clear();
                continue;
            };
            let frontier = frontiers.get(&slot).copied().unwrap_or(feed.frontier);
            touched.insert(slot);
            let ticket = acks.reserve(feed.source, frontier, feed.size);
            let label_set = label_set(&mut self.label_sets, &group.labels);
            group.last_size = (group.text.len(), group.lines.len());
            let mut lines = std::mem::take(&mut group.lines);
            for line in &mut lines {
                line.offset = frontier;
            }
            let mut chunk = Chunk::new(ticket, label_set, std::mem::take(&mut group.text), lines);
            chunk.tenant = group.tenant.take().map(Arc::from);
            chunk.metadata = std::mem::take(&mut group.metadata);
            out.push(chunk);
        }
        self.used = 0;
        // Entries whose lines stages merged into others (a multiline block's lines after its
        // first, CRI pieces) come back too, so that such lines cost no new entry either.
        let kept = self.spare.len();
        self.pipeline.take_spent(&mut self.spare);
        let mut i = kept;
        while i < self.spare.len() {
            if self.spare[i].too_big_to_keep() {
                self.spare.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.spare.truncate(SPARE_ENTRIES);
        let mut closable = Vec::new();
        for (slot, feed) in &mut self.feeds {
            let frontier = frontiers.get(slot).copied().unwrap_or(feed.frontier);
            if frontier > feed.frontier && !touched.contains(slot) {
                // Everything up to here was dropped or is out in earlier chunks: record it.
                acks.dispatch(feed.source, frontier, feed.size, 0);
            }
            feed.frontier = frontier;
            if feed.closed && feed.pending.is_empty() {
                closable.push(*slot);
            }
        }
        closable
            .into_iter()
            .filter_map(|slot| self.feeds.remove(&slot).map(|f| f.source))
            .collect()
    }
}

/// Keeps an entry that is out for a next line, unless enough are kept or it grew too big.
fn recycle(spare: &mut Vec<Entry>, entry: Entry) {
    if spare.len() < SPARE_ENTRIES && !entry.too_big_to_keep() {
        spare.push(entry);
    }
}

/// The shared label set of `labels`, from the cache when it was seen before.
fn label_set(cache: &mut HashMap<Labels, Arc<LabelSet>>, labels: &Labels) -> Arc<LabelSet> {
    if let Some(set) = cache.get(labels) {
        return set.clone();
    }
    if cache.len() >= LABEL_SET_CACHE {
        cache.clear();
    }
    let set = Arc::new(LabelSet::new(
        labels.iter().map(|(k, v)| (k.clone(), v.clone())),
    ));
    cache.insert(labels.clone(), set.clone());
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CustomMetrics;
    use crate::positions::AckedOffset;
    use crate::positions::{FileId, Fingerprint, Table};
    use crate::tail::lines::{LineLimit, Splitter};

    fn pipeline(yaml: &str) -> TargetPipeline {
        let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).unwrap();
        TargetPipeline::new(
            Pipeline::new(&stages, &CustomMetrics::default(), "t").unwrap(),
            false,
        )
    }

    /// Feeds all of `text`, read from the start of the file, to `slot`.
    fn feed_all(tp: &mut TargetPipeline, slot: u32, text: &str) {
        let end = text.len() as u64;
        tp.feed(
            slot,
            &split(text, end),
            Timestamp::from_nanos(1),
            end,
            Instant::now(),
        );
    }

    fn split(text: &str, end: u64) -> Split {
        let mut s = Splitter::new(LineLimit {
            max: 1 << 20,
            truncate: true,
        });
        let mut buf = s.take_buffer(text.len());
        buf.extend_from_slice(text.as_bytes());
        s.split(buf, end)
    }

    /// A file `inode` read from its start.
    fn file(acks: &Acknowledger, inode: u64) -> (FileId, SourceKey) {
        let id = FileId { device: 1, inode };
        let source = acks.open(
            std::path::Path::new("/f"),
            id,
            Fingerprint::of(b""),
            AckedOffset::START,
        );
        (id, source)
    }

    #[test]
    fn positions_stay_behind_a_held_multiline_block() {
        let acks = Acknowledger::new(Table::default());
        let (id, source) = file(&acks, 1);
        let mut tp = pipeline("- multiline:\n    firstline: '^START'\n");
        tp.open(3, source, &LabelSet::new([("job", "j")]), 0);
        let metrics = Metrics::new();
        let text = "START a\n  more\nSTART b\n  tail\n";
        feed_all(&mut tp, 3, text);
        let mut out = vec![];
        tp.finish(&acks, &metrics, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line_text(&out[0].lines[0]), "START a\n  more");
        acks.arm(out[0].ticket, 1);
        acks.settle(out[0].ticket);
        // The block "START b" is held: the position stops where it starts (offset 15).
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(15));
        tp.flush_all();
        let mut out = vec![];
        tp.finish(&acks, &metrics, &mut out);
        acks.arm(out[0].ticket, 1);
        acks.settle(out[0].ticket);
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(text.len() as u64));
    }

    #[test]
    fn max_line_size_applies_to_what_leaves_the_stages() {
        let acks = Acknowledger::new(Table::default());
        let metrics = Metrics::new();
        let stages = "- regex:\n    expression: '^(?P<msg>\\S+)'\n- output:\n    source: msg\n";
        for (truncate, want) in [(true, vec!["short", "ééé"]), (false, vec!["short"])] {
            let (id, source) = file(&acks, if truncate { 5 } else { 6 });
            let mut tp = pipeline(stages);
            tp.pipeline
                .set_line_limit(Some(crate::pipeline::LineSizeLimit { max: 7, truncate }));
            tp.open(0, source, &LabelSet::new([("job", "j")]), 0);
            // The first line is long as read but short once through the stages; the second
            // stays long, and é is two bytes: a cut at 7 would split one.
            let text = "short and then a long tail\nééééé tail\n";
            feed_all(&mut tp, 0, text);
            let mut out = vec![];
            tp.finish(&acks, &metrics, &mut out);
            let lines: Vec<&str> = out
                .iter()
                .flat_map(|c| c.lines.iter().map(|l| c.line_text(l)))
                .collect();
            assert_eq!(lines, want, "truncate: {truncate}");
            for c in &out {
                acks.arm(c.ticket, 1);
                acks.settle(c.ticket);
            }
            assert_eq!(acks.with_table(|t| t.offset(id)), Some(text.len() as u64));
        }
        let rendered = metrics.render();
        assert!(
            rendered.contains("reason=\"line_too_long\"} 1"),
            "{rendered}"
        );
    }

    #[test]
    fn dropped_lines_move_the_position_and_are_counted() {
        let acks = Acknowledger::new(Table::default());
        let (id, source) = file(&acks, 2);
        let mut tp = pipeline("- drop:\n    expression: 'debug'\n");
        tp.open(0, source, &LabelSet::new([("job", "j")]), 0);
        let metrics = Metrics::new();
        let text = "debug 1\ndebug 2\n";
        tp.feed(
            0,
            &split(text, 16),
            Timestamp::from_nanos(1),
            16,
            Instant::now(),
        );
        let mut out = vec![];
        tp.finish(&acks, &metrics, &mut out);
        assert!(out.is_empty());
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(16));
        assert!(
            metrics.render().contains("reason=\"drop_stage\"} 2"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn labels_and_tenant_from_stages_split_chunks() {
        let acks = Acknowledger::new(Table::default());
        let (_, source) = file(&acks, 3);
        let mut tp = pipeline(
            "- regex:\n    expression: '^(?P<level>\\w+) (?P<team>\\w+)'\n- labels:\n    level:\n- tenant:\n    source: team\n",
        );
        tp.open(0, source, &LabelSet::new([("job", "j")]), 0);
        let text = "info a x\nerror a y\ninfo b z\n";
        feed_all(&mut tp, 0, text);
        let mut out = vec![];
        tp.finish(&acks, &Metrics::new(), &mut out);
        let got: Vec<(String, Option<String>, usize)> = out
            .iter()
            .map(|c| {
                (
                    c.labels.rendered().to_string(),
                    c.tenant.as_deref().map(str::to_string),
                    c.lines.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    r#"{job="j", level="info"}"#.to_string(),
                    Some("a".to_string()),
                    1
                ),
                (
                    r#"{job="j", level="error"}"#.to_string(),
                    Some("a".to_string()),
                    1
                ),
                (
                    r#"{job="j", level="info"}"#.to_string(),
                    Some("b".to_string()),
                    1
                ),
            ]
        );
    }

    #[test]
    fn reused_entries_start_afresh() {
        let acks = Acknowledger::new(Table::default());
        let (_, source) = file(&acks, 4);
        let mut tp = pipeline(
            "- regex:\n    expression: '^(?P<a>x+)'\n- labels:\n    a:\n- output:\n    source: a\n",
        );
        tp.open(0, source, &LabelSet::new([("job", "j")]), 0);
        let metrics = Metrics::new();
        let mut got = Vec::new();
        let mut end = 0;
        // The entry of "xx" is reused for "yy": nothing extracted from "xx" may stay.
        for text in ["xx\n", "yy\n"] {
            end += text.len() as u64;
            tp.feed(
                0,
                &split(text, end),
                Timestamp::from_nanos(1),
                end,
                Instant::now(),
            );
            let mut out = vec![];
            tp.finish(&acks, &metrics, &mut out);
            for c in &out {
                for l in &c.lines {
                    got.push((c.labels.rendered().to_string(), c.line_text(l).to_string()));
                }
            }
        }
        assert_eq!(
            got,
            vec![
                (r#"{a="xx", job="j"}"#.to_string(), "xx".to_string()),
                (r#"{job="j"}"#.to_string(), "yy".to_string()),
            ]
        );
    }
}
