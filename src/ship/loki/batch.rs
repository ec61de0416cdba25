//! Batching: gathering chunks into push requests.
//!
//! A [`Batch`] holds references to the chunks it carries (no line is copied until encoding) and
//! is full at `batchsize` bytes of lines; a chunk that does not fit is split at a line boundary
//! and continues in the next batch. A chunk's ticket travels with its last part, so it is
//! settled only once every line of it has been delivered (batches of one client are sent one
//! at a time, in order).

use crate::acknowledge::Ticket;
use crate::entry::Chunk;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Some lines of one chunk.
#[derive(Debug, Clone)]
pub struct Part {
    pub chunk: Arc<Chunk>,
    pub lines: Range<usize>,
}

impl Part {
    /// Whether this part ends its chunk, so delivering it settles the chunk.
    pub fn is_last(&self) -> bool {
        self.lines.end == self.chunk.lines.len()
    }

    pub fn line_bytes(&self) -> usize {
        self.chunk.lines[self.lines.clone()]
            .iter()
            .map(|l| (l.end - l.start) as usize)
            .sum()
    }
}

/// Lines waiting to be sent together.
#[derive(Debug, Default)]
pub struct Batch {
    pub parts: Vec<Part>,
    /// The tenant of every part (a pipeline's `tenant` stage); one request goes to one tenant.
    pub tenant: Option<Arc<str>>,
    bytes: usize,
    entries: usize,
    started: Option<Instant>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes of line text.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// When the oldest part was added.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// The tickets this batch settles when it is delivered or dropped.
    pub fn tickets(&self) -> impl Iterator<Item = Ticket> + '_ {
        self.parts
            .iter()
            .filter(|p| p.is_last())
            .map(|p| p.chunk.ticket)
    }

    /// Adds the lines of `chunk` from `from` on, up to `limit` bytes in all. Returns where the
    /// rest of the chunk starts when it did not fit, or None when all of it was taken. An empty
    /// batch always takes at least one line, so progress is certain.
    pub fn add(
        &mut self,
        chunk: &Arc<Chunk>,
        from: usize,
        limit: usize,
        now: Instant,
    ) -> Option<usize> {
        let mut end = from;
        let mut bytes = self.bytes;
        for line in &chunk.lines[from..] {
            let len = (line.end - line.start) as usize;
            if bytes + len > limit && (end > from || !self.parts.is_empty()) {
                break;
            }
            bytes += len;
            end += 1;
        }
        if end > from || (from == chunk.lines.len() && chunk.lines.is_empty()) {
            if self.parts.is_empty() {
                self.tenant = chunk.tenant.clone();
            }
            self.started.get_or_insert(now);
            self.entries += end - from;
            self.bytes = bytes;
            self.parts.push(Part {
                chunk: chunk.clone(),
                lines: from..end,
            });
        }
        (end < chunk.lines.len()).then_some(end)
    }

    /// Whether `chunk` may join this batch: same tenant, or the batch is empty.
    pub fn accepts(&self, chunk: &Chunk) -> bool {
        self.parts.is_empty() || self.tenant == chunk.tenant
    }

    /// Whether the batch has reached `limit` bytes.
    pub fn is_full(&self, limit: usize) -> bool {
        self.bytes >= limit
    }

    /// Empties the batch, returning its parts.
    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// What is left to know of the batch once its lines are encoded: the chunks themselves
    /// can go (up to `batchsize` of them) while the request is in flight and retried.
    pub fn settlement(self) -> Settlement {
        Settlement {
            tickets: self.tickets().collect(),
            tenant: self.tenant,
            bytes: self.bytes,
            entries: self.entries,
        }
    }
}

/// An encoded batch's bookkeeping: the chunks it settles, its tenant and its size.
#[derive(Debug)]
pub struct Settlement {
    pub tickets: Vec<Ticket>,
    pub tenant: Option<Arc<str>>,
    bytes: usize,
    entries: usize,
}

impl Settlement {
    /// Bytes of line text.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn entries(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::acknowledge::Acknowledger;
    use crate::entry::{Line, Timestamp};
    use crate::labels::LabelSet;
    use crate::positions::AckedOffset;
    use crate::positions::{FileId, Fingerprint, Table};

    /// A chunk of the given lines, with a real ticket.
    pub fn chunk(acks: &Acknowledger, labels: &Arc<LabelSet>, lines: &[&str]) -> Arc<Chunk> {
        let source = acks.open(
            std::path::Path::new("/t"),
            FileId {
                device: 0,
                inode: lines.len() as u64,
            },
            Fingerprint::of(b""),
            AckedOffset::START,
        );
        let mut text = String::new();
        let mut spans = vec![];
        for (i, l) in lines.iter().enumerate() {
            let start = text.len() as u32;
            text.push_str(l);
            spans.push(Line {
                start,
                end: text.len() as u32,
                timestamp: Timestamp::from_nanos(1_700_000_000_000_000_000 + i as i64),
                offset: text.len() as u64 + 1,
            });
            text.push('\n');
        }
        let ticket = acks.dispatch(source, text.len() as u64, text.len() as u64, 1);
        Arc::new(Chunk::new(ticket, labels.clone(), text, spans))
    }

    #[test]
    fn splits_chunks_at_the_byte_limit_and_settles_on_the_last_part() {
        let acks = Acknowledger::new(Table::default());
        let labels = Arc::new(LabelSet::new([("job", "x")]));
        let c = chunk(&acks, &labels, &["aaaa", "bbbb", "cccc"]);
        let now = Instant::now();
        let mut batch = Batch::default();
        assert_eq!(batch.add(&c, 0, 9, now), Some(2));
        assert!(batch.is_full(8));
        assert_eq!(batch.tickets().count(), 0, "the chunk is not done");
        let first = batch.take();
        assert_eq!(first.entries(), 2);
        assert_eq!(batch.add(&c, 2, 9, now), None);
        assert_eq!(batch.tickets().count(), 1);
    }

    #[test]
    fn an_empty_batch_takes_a_line_longer_than_the_limit() {
        let acks = Acknowledger::new(Table::default());
        let labels = Arc::new(LabelSet::new([("job", "x")]));
        let c = chunk(&acks, &labels, &["a very long line", "b"]);
        let mut batch = Batch::default();
        assert_eq!(batch.add(&c, 0, 4, Instant::now()), Some(1));
        assert_eq!(batch.entries(), 1);
    }
}
