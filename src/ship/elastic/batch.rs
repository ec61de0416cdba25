//! A bulk request being gathered: rendered items, and the chunks they settle.
//!
//! Entries are rendered as they are added, so `batch_size` counts the NDJSON actually sent.
//! Each item keeps its place in the body, so that after a partial failure the items still
//! due can be sent again alone. A chunk that does not fit continues in the next batch; its
//! ticket travels with its last line, so it is settled once every line of it is delivered or
//! dropped (an output sends one batch at a time, in order).

use super::document::Renderer;
use crate::acknowledge::Ticket;
use crate::entry::Chunk;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// One document of the batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its action and source lines in the body.
    pub range: Range<usize>,
    /// Bytes of the entry's line (what `sent_bytes` counts).
    pub line_bytes: usize,
    /// Attempts that failed with a "try again" for it.
    pub failures: u32,
}

/// Documents waiting to be sent together.
#[derive(Debug, Default)]
pub struct Batch {
    pub body: Vec<u8>,
    pub items: Vec<Item>,
    pub tickets: Vec<Ticket>,
    started: Option<Instant>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.tickets.is_empty()
    }

    /// When the oldest entry was added.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn is_full(&self, limit: usize) -> bool {
        self.body.len() >= limit
    }

    /// Renders the lines of `chunk` from `from` on until the body reaches `limit` bytes.
    /// Returns where the rest starts when it did not all fit, or None when the chunk is done
    /// (its ticket is then carried by this batch). A batch always takes at least one line.
    pub fn add(
        &mut self,
        renderer: &mut Renderer,
        chunk: &Arc<Chunk>,
        from: usize,
        limit: usize,
        now: Instant,
    ) -> Option<usize> {
        self.started.get_or_insert(now);
        let fields = renderer.chunk_fields(chunk);
        let mut next = from;
        while next < chunk.lines.len() {
            if self.body.len() >= limit && !self.items.is_empty() {
                return Some(next);
            }
            let start = self.body.len();
            renderer.write(chunk, &fields, next, &mut self.body);
            let line = &chunk.lines[next];
            self.items.push(Item {
                range: start..self.body.len(),
                line_bytes: (line.end - line.start) as usize,
                failures: 0,
            });
            next += 1;
        }
        self.tickets.push(chunk.ticket);
        None
    }

    /// Empties the batch, returning what it held.
    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acknowledge::Acknowledger;
    use crate::labels::LabelSet;
    use crate::positions::Table;
    use crate::ship::loki::batch::tests::chunk;

    #[test]
    fn a_chunk_split_over_batches_is_carried_by_its_last_part() {
        let acks = Acknowledger::new(Table::default());
        let labels = Arc::new(LabelSet::new([("job", "x")]));
        let c = chunk(&acks, &labels, &["aaaa", "bbbb", "cccc"]);
        let config = serde_yaml_ng::from_str("url: http://127.0.0.1:1").unwrap_or_else(|e| {
            panic!("{e}");
        });
        let mut renderer = Renderer::new(&config, "h");
        let mut batch = Batch::default();
        // Room for one document: each batch takes one line.
        assert_eq!(batch.add(&mut renderer, &c, 0, 10, Instant::now()), Some(1));
        assert_eq!(batch.items.len(), 1);
        assert!(batch.tickets.is_empty(), "the chunk is not done");
        let first = batch.take();
        assert_eq!(first.items[0].range, 0..first.body.len());
        assert_eq!(
            batch.add(&mut renderer, &c, 1, 1 << 20, Instant::now()),
            None
        );
        assert_eq!(batch.items.len(), 2);
        assert_eq!(batch.tickets, vec![c.ticket]);
        let text = String::from_utf8_lossy(&batch.body[batch.items[1].range.clone()]).to_string();
        assert!(
            text.contains("\"message\":\"cccc\"") && text.ends_with("}\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "action and source");
    }
}
