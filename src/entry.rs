//! What flows from the tailer to the outputs: chunks of lines.
//!
//! A [`Chunk`] is every complete line read from one file in one read. Its text is the read
//! buffer itself (validated as UTF-8 once), and each [`Line`] is a span into it, so reading a
//! line costs no allocation. Everything downstream works chunk by chunk.

use crate::acknowledge::Ticket;
use crate::budget::{Budget, Reservation};
use crate::labels::LabelSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A point in time: nanoseconds since the Unix epoch (what Loki's push API carries), and the
/// UTC offset (seconds east) it was written with when a stage parsed it from a line, so that
/// the printed time keeps that offset as Promtail's does; `None` is the local zone.
///
/// Equality, order and hashing look at the instant only. Built with
/// [`Timestamp::from_nanos`] (a time in the local zone) or [`Timestamp::with_offset`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Timestamp(pub i64, pub Option<i32>);

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for Timestamp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Timestamp {
    /// An instant in the local zone, `nanos` after the Unix epoch: code that deals only in
    /// instants stays unaware of offsets.
    pub const fn from_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos, None)
    }

    /// An instant written with a UTC offset (seconds east of UTC).
    pub const fn with_offset(nanos: i64, offset: i32) -> Timestamp {
        Timestamp(nanos, Some(offset))
    }

    /// The same offset, another instant (Promtail's `fudge` adds a nanosecond to a parsed time
    /// and keeps its zone).
    pub const fn at(self, nanos: i64) -> Timestamp {
        Timestamp(nanos, self.1)
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_nanos(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Formats in Go's `2006-01-02T15:04:05.999999999-0700` layout, in the offset the time was
    /// parsed with or else local time, as Promtail's dry-run does: the fraction loses its
    /// trailing zeros, and its dot when zero.
    ///
    /// ```
    /// use logferry::entry::Timestamp;
    /// // Two instants in UTC (`TZ=UTC` is assumed by this example).
    /// # unsafe { std::env::set_var("TZ", "UTC") };
    /// assert_eq!(Timestamp::from_nanos(1_700_000_000_120_000_000).to_go_layout(), "2023-11-14T22:13:20.12+0000");
    /// assert_eq!(Timestamp::from_nanos(1_700_000_000_000_000_000).to_go_layout(), "2023-11-14T22:13:20+0000");
    /// // A time parsed with an offset keeps it.
    /// let paris = Timestamp::with_offset(1_700_000_000_000_000_000, 3600);
    /// assert_eq!(paris.to_go_layout(), "2023-11-14T23:13:20+0100");
    /// ```
    pub fn to_go_layout(self) -> String {
        use chrono::TimeZone;
        let fixed = self.1.and_then(chrono::FixedOffset::east_opt);
        let (civil, zone) = match fixed {
            Some(offset) => {
                let t = offset.timestamp_nanos(self.0);
                (t.format("%Y-%m-%dT%H:%M:%S"), t.format("%z"))
            }
            None => {
                let t = chrono::Local.timestamp_nanos(self.0).fixed_offset();
                (t.format("%Y-%m-%dT%H:%M:%S"), t.format("%z"))
            }
        };
        let mut out = civil.to_string();
        let nanos = self.0.rem_euclid(1_000_000_000);
        if nanos != 0 {
            let frac = format!(".{nanos:09}");
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push_str(&zone.to_string());
        out
    }
}

/// One line of a chunk: where its text is, when it was read, and the file offset just past its
/// newline (what a position records once the line is acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub start: u32,
    pub end: u32,
    pub timestamp: Timestamp,
    pub offset: u64,
}

/// Complete lines read from one file in one read, sharing the file's labels.
#[derive(Debug)]
pub struct Chunk {
    /// Settled once every output has delivered (or deliberately dropped) the chunk.
    pub ticket: Ticket,
    pub labels: Arc<LabelSet>,
    pub text: String,
    pub lines: Vec<Line>,
    /// The tenant a pipeline's `tenant` stage chose (otherwise the client's `tenant_id`).
    pub tenant: Option<Arc<str>>,
    /// Structured metadata of each line, when a pipeline set some; otherwise empty.
    pub metadata: Vec<Vec<(String, String)>>,
    /// The chunk's share of the bytes in flight, given back when the chunk is dropped.
    reservation: Option<Reservation>,
}

impl Chunk {
    /// The text of one line, without its newline (or `\r\n`).
    pub fn line_text(&self, line: &Line) -> &str {
        self.text
            .get(line.start as usize..line.end as usize)
            .unwrap_or_default()
    }

    /// A chunk of plain lines (no tenant, no structured metadata).
    pub fn new(ticket: Ticket, labels: Arc<LabelSet>, text: String, lines: Vec<Line>) -> Chunk {
        Chunk {
            ticket,
            labels,
            text,
            lines,
            tenant: None,
            metadata: Vec::new(),
            reservation: None,
        }
    }

    /// The memory the chunk holds, roughly: its text and line index.
    fn bytes(&self) -> usize {
        self.text.capacity() + self.lines.capacity() * std::mem::size_of::<Line>()
    }

    /// The structured metadata of line `index`.
    pub fn metadata_of(&self, index: usize) -> &[(String, String)] {
        self.metadata
            .get(index)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every line with its text.
    pub fn iter(&self) -> impl Iterator<Item = (&Line, &str)> {
        self.lines.iter().map(|l| (l, self.line_text(l)))
    }

    /// Bytes of line text in the chunk (what `batchsize` counts).
    pub fn line_bytes(&self) -> usize {
        self.lines.iter().map(|l| (l.end - l.start) as usize).sum()
    }
}

/// Where inputs send chunks: the queue to the outputs, behind the [`Budget`] of bytes in flight.
#[derive(Debug, Clone)]
pub struct ChunkSender {
    queue: mpsc::Sender<Chunk>,
    budget: Arc<Budget>,
}

impl ChunkSender {
    pub fn new(queue: mpsc::Sender<Chunk>, budget: Arc<Budget>) -> ChunkSender {
        ChunkSender { queue, budget }
    }

    /// Sends a chunk from a thread outside the runtime, first waiting until its bytes fit in
    /// the budget (backpressure). Fails when the outputs are gone; the chunk is dropped (its
    /// lines were not acknowledged, so they are read again at the next start).
    pub fn blocking_send(&self, mut chunk: Chunk) -> Result<(), OutputsGone> {
        let reservation = self
            .budget
            .reserve(chunk.bytes(), || self.queue.is_closed())
            .ok_or(OutputsGone)?;
        chunk.reservation = Some(reservation);
        self.queue.blocking_send(chunk).map_err(|_| OutputsGone)
    }
}

/// The outputs stopped taking chunks (shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputsGone;
