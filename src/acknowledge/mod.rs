//! Acknowledgement: positions move only past what every output has settled.
//!
//! Every input opens a *source* for each stream of entries it can resume (a generation of a
//! file — a truncation starts a new one —, a journal, a container), and registers every chunk
//! it sends with the source's [`Ledger`]; outputs settle chunks by their [`Ticket`]. The ledger
//! orders chunks by a number that grows with what was read (a file's byte offset; for other
//! inputs, a count of entries), and when a source's settled prefix grows, its checkpoint of
//! its own kind is recorded in the positions [`Table`]: a file's [`AckedOffset`], or the
//! [`AckedCursor`] the input marked at that number. Only the table is ever written to disk.

mod ledger;

pub use ledger::Ledger;

use crate::metrics::{FileSeries, Metrics};
use crate::positions::{AckedCursor, AckedOffset, FileId, Fingerprint, Table};
use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// One generation of one file being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(u64);

/// The receipt for a chunk: whoever delivers it settles it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    source: SourceKey,
    seq: u64,
}

/// What a source's settled prefix is recorded as: its kind of checkpoint.
#[derive(Debug)]
enum Resume {
    /// A file generation: the settled offset is the file's position.
    File {
        id: FileId,
        /// The file's size when last read, for the lag gauge.
        size: u64,
        /// Where its acknowledged position and lag are shown.
        series: Option<std::sync::Arc<FileSeries>>,
    },
    /// An input that resumes from a cursor of its own, recorded under `key`. `marks` holds,
    /// oldest first, the cursor reached at each ledger number not yet settled.
    Cursor {
        key: String,
        marks: VecDeque<(u64, std::sync::Arc<str>)>,
    },
    /// Nothing to resume from (standard input, a socket): chunks are tracked only so that
    /// outputs can settle them and shutdown knows what is still in flight.
    Nothing,
}

#[derive(Debug)]
struct Source {
    resume: Resume,
    ledger: Ledger,
    /// The input is done with it; it goes once its last chunk settles.
    closed: bool,
}

impl Source {
    fn publish(&self) {
        if let Resume::File {
            size,
            series: Some(series),
            ..
        } = &self.resume
        {
            let acked = self.ledger.acked().get();
            series
                .position
                .set(i64::try_from(acked).unwrap_or(i64::MAX));
            series
                .lag
                .set(i64::try_from(size.saturating_sub(acked)).unwrap_or(i64::MAX));
        }
    }

    /// Writes the settled prefix into the table as this source's kind of checkpoint.
    fn record(&mut self, table: &mut Table) {
        let acked = self.ledger.acked();
        match &mut self.resume {
            Resume::File { id, .. } => table.advance(*id, acked),
            Resume::Cursor { key, marks } => {
                let mut reached = None;
                while marks.front().is_some_and(|(end, _)| *end <= acked.get()) {
                    reached = marks.pop_front().map(|(_, cursor)| cursor);
                }
                if let Some(cursor) = reached {
                    table.set_cursor(key, AckedCursor::acknowledged(cursor));
                }
            }
            Resume::Nothing => {}
        }
        self.publish();
    }
}

#[derive(Debug)]
struct Inner {
    sources: HashMap<SourceKey, Source>,
    next_key: u64,
    table: Table,
}

/// Shared by the tailer (which dispatches chunks) and the outputs (which settle them).
pub struct Acknowledger {
    inner: Mutex<Inner>,
    metrics: Option<std::sync::Arc<Metrics>>,
}

impl Acknowledger {
    /// Tracks chunks of files whose remembered positions are `table`.
    pub fn new(table: Table) -> Acknowledger {
        Acknowledger {
            inner: Mutex::new(Inner {
                sources: HashMap::new(),
                next_key: 0,
                table,
            }),
            metrics: None,
        }
    }

    /// Publishes each file's acknowledged position and lag as gauges.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Acknowledger {
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop positions from being saved.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where to start reading a newly found file: its recorded position if the record is for
    /// this very file (`matches` checks the record's fingerprint against the file), else 0.
    pub fn resume_offset(
        &self,
        path: &Path,
        id: FileId,
        size: u64,
        matches: impl FnOnce(&Fingerprint) -> bool,
    ) -> AckedOffset {
        self.lock().table.resume_offset(path, id, size, matches)
    }

    /// Starts a source for a file generation whose bytes before `start` are settled.
    pub fn open(
        &self,
        path: &Path,
        id: FileId,
        fingerprint: Fingerprint,
        start: AckedOffset,
    ) -> SourceKey {
        let mut inner = self.lock();
        let key = SourceKey(inner.next_key);
        inner.next_key += 1;
        inner.table.claim(id, path, fingerprint, start);
        let series = self.metrics.as_ref().map(|m| m.files.series(path));
        let source = Source {
            resume: Resume::File {
                id,
                size: start.get(),
                series,
            },
            ledger: Ledger::new(start),
            closed: false,
        };
        source.publish();
        inner.sources.insert(key, source);
        key
    }

    /// Starts a source for an input that resumes from a cursor recorded under `key`
    /// (Promtail's `cursor-<name>`), returning it with the cursor acknowledged last time.
    /// The input numbers what it reads with ever-growing numbers starting after 0, and
    /// [marks](Self::mark_cursor) the cursor reached at each number it registers chunks up to.
    pub fn open_cursor(&self, key: &str) -> (SourceKey, Option<AckedCursor>) {
        let mut inner = self.lock();
        let source = SourceKey(inner.next_key);
        inner.next_key += 1;
        let last = inner.table.cursor(key).cloned();
        inner.sources.insert(
            source,
            Source {
                resume: Resume::Cursor {
                    key: key.to_string(),
                    marks: VecDeque::new(),
                },
                ledger: Ledger::new(AckedOffset::START),
                closed: false,
            },
        );
        (source, last)
    }

    /// Starts a source with nothing to resume from (standard input, a socket).
    pub fn open_untracked(&self) -> SourceKey {
        let mut inner = self.lock();
        let source = SourceKey(inner.next_key);
        inner.next_key += 1;
        inner.sources.insert(
            source,
            Source {
                resume: Resume::Nothing,
                ledger: Ledger::new(AckedOffset::START),
                closed: false,
            },
        );
        source
    }

    /// Once everything a cursor source registered up to number `end` is settled, `cursor` is
    /// its acknowledged resume point. Marks must come in the order of their numbers.
    pub fn mark_cursor(&self, source: SourceKey, end: u64, cursor: std::sync::Arc<str>) {
        let mut inner = self.lock();
        if let Some(Source {
            resume: Resume::Cursor { marks, .. },
            ..
        }) = inner.sources.get_mut(&source)
        {
            match marks.back_mut() {
                Some((last, c)) if *last == end => *c = cursor,
                _ => marks.push_back((end, cursor)),
            }
        }
    }

    /// Registers a chunk of `source` ending at file offset `end`, read from a file that was
    /// `size` bytes long. It holds the position back until [armed](Self::arm) and settled.
    pub fn reserve(&self, source: SourceKey, end: u64, size: u64) -> Ticket {
        let mut inner = self.lock();
        let seq = match inner.sources.get_mut(&source) {
            Some(s) => {
                if let Resume::File { size: known, .. } = &mut s.resume {
                    *known = size.max(end);
                }
                s.publish();
                s.ledger.reserve(end)
            }
            None => 0,
        };
        Ticket { source, seq }
    }

    /// The chunk goes to `outputs` outputs, each of which will settle it once. The count is
    /// taken when the chunk is handed over, so a reload that changes the clients cannot
    /// leave a chunk waiting for an output that never saw it.
    pub fn arm(&self, ticket: Ticket, outputs: u32) {
        let mut inner = self.lock();
        let Inner { sources, table, .. } = &mut *inner;
        if let Some(source) = sources.get_mut(&ticket.source)
            && source.ledger.arm(ticket.seq, outputs)
        {
            source.record(table);
        }
    }

    /// `more` outputs will also settle this chunk (outputs added by a reload while it was being
    /// handed out). Works while the chunk is unsettled by someone, which the fan-out ensures by
    /// holding a share of it until it is done handing it out.
    pub fn add_outputs(&self, ticket: Ticket, more: u32) -> bool {
        let mut inner = self.lock();
        match inner.sources.get_mut(&ticket.source) {
            Some(source) => source.ledger.add_outputs(ticket.seq, more),
            None => false,
        }
    }

    /// [`reserve`](Self::reserve) and [`arm`](Self::arm) at once.
    pub fn dispatch(&self, source: SourceKey, end: u64, size: u64, outputs: u32) -> Ticket {
        let ticket = self.reserve(source, end, size);
        self.arm(ticket, outputs);
        ticket
    }

    /// One output is done with a chunk (delivered it, or dropped it for good).
    pub fn settle(&self, ticket: Ticket) {
        let mut inner = self.lock();
        let Inner { sources, table, .. } = &mut *inner;
        let Some(source) = sources.get_mut(&ticket.source) else {
            return; // a generation that was forgotten (the file was truncated)
        };
        if source.ledger.settle(ticket.seq) {
            source.record(table);
        }
        if source.closed && source.ledger.in_flight() == 0 {
            sources.remove(&ticket.source);
        }
    }

    /// The file's fingerprint grew (it was shorter than a full fingerprint before).
    pub fn refingerprint(&self, source: SourceKey, fingerprint: Fingerprint) {
        let mut inner = self.lock();
        if let Some(Source {
            resume: Resume::File { id, .. },
            ..
        }) = inner.sources.get(&source)
        {
            let id = *id;
            inner.table.set_fingerprint(id, fingerprint);
        }
    }

    /// The input is done with the source; it goes when its chunks are settled. A file's
    /// position is kept for a while in case the file comes back.
    pub fn close(&self, source: SourceKey, now: Instant) {
        let mut inner = self.lock();
        let Some(s) = inner.sources.get_mut(&source) else {
            return;
        };
        s.closed = true;
        let file = match s.resume {
            Resume::File { id, .. } => Some(id),
            _ => None,
        };
        if s.ledger.in_flight() == 0 {
            inner.sources.remove(&source);
        }
        if let Some(id) = file {
            inner.table.release(id, now);
        }
    }

    /// Drops a generation whose chunks no longer count (the file was truncated under it).
    pub fn forget(&self, source: SourceKey) {
        self.lock().sources.remove(&source);
    }

    /// Chunks still waiting for an output, over all files.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .sources
            .values()
            .map(|s| s.ledger.in_flight())
            .sum()
    }

    /// Runs `f` on the positions table (to snapshot or prune it).
    pub fn with_table<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        f(&mut self.lock().table)
    }
}

/// The positions writer writes the table the acknowledgements move.
impl crate::positions::Changes for Acknowledger {
    fn subscribe(&self, wake: std::sync::mpsc::SyncSender<()>) {
        self.with_table(|t| t.subscribe(wake));
    }

    fn take(&self) -> Option<String> {
        self.with_table(|t| t.take_changes())
    }

    fn restore(&self) {
        self.with_table(|t| t.mark_dirty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint::of(b"hello")
    }

    #[test]
    fn positions_follow_settles_not_dispatches() {
        let acks = Acknowledger::new(Table::default());
        let id = FileId {
            device: 1,
            inode: 2,
        };
        let key = acks.open(Path::new("/x"), id, fp(), AckedOffset::START);
        let a = acks.dispatch(key, 10, 10, 1);
        let b = acks.dispatch(key, 20, 20, 1);
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(0));
        acks.settle(b);
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(0));
        acks.settle(a);
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(20));
        assert_eq!(acks.in_flight(), 0);
    }

    #[test]
    fn a_forgotten_generation_cannot_move_the_position() {
        let acks = Acknowledger::new(Table::default());
        let id = FileId {
            device: 1,
            inode: 2,
        };
        let old = acks.open(Path::new("/x"), id, fp(), AckedOffset::START);
        let t = acks.dispatch(old, 500, 500, 1);
        acks.forget(old);
        let _new = acks.open(Path::new("/x"), id, fp(), AckedOffset::START);
        acks.settle(t);
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(0));
    }

    #[test]
    fn closed_sources_still_settle_their_last_chunks() {
        let acks = Acknowledger::new(Table::default());
        let id = FileId {
            device: 1,
            inode: 3,
        };
        let key = acks.open(Path::new("/y"), id, fp(), AckedOffset::START);
        let t = acks.dispatch(key, 42, 42, 2);
        acks.close(key, Instant::now());
        acks.settle(t);
        acks.settle(t);
        assert_eq!(acks.with_table(|t| t.offset(id)), Some(42));
        assert_eq!(acks.in_flight(), 0);
    }
}
