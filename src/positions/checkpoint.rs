//! Checkpoints that every output has settled: what a positions file records.
//!
//! Each kind of input resumes from its own kind of checkpoint: a file from a byte offset, the
//! journal from a cursor, a container from the timestamp of its last line. They are distinct
//! types, made only by the acknowledgement ledger or read back from a positions file, so a
//! place that was only *read* can never be recorded as delivered by mistake.

use std::sync::Arc;

/// A byte offset of a file that every output has settled: delivered, or deliberately dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct AckedOffset(u64);

impl AckedOffset {
    /// The start of a file: nothing of it needs acknowledging.
    pub const START: AckedOffset = AckedOffset(0);

    /// An offset read back from a positions file, which only ever holds acknowledged offsets.
    pub(crate) fn from_positions_file(offset: u64) -> AckedOffset {
        AckedOffset(offset)
    }

    /// An offset the acknowledgement ledger found settled by every output.
    pub(crate) fn acknowledged(offset: u64) -> AckedOffset {
        AckedOffset(offset)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// An input's own resume point (a journal cursor, a container's last timestamp) that every
/// output has settled. Stored as text, under the key the input names (Promtail's
/// `cursor-<name>` keys), so a host moving from Promtail continues where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AckedCursor(Arc<str>);

impl AckedCursor {
    /// A cursor read back from a positions file.
    pub(crate) fn from_positions_file(cursor: &str) -> AckedCursor {
        AckedCursor(Arc::from(cursor))
    }

    /// A cursor the acknowledgement ledger found settled by every output.
    pub(crate) fn acknowledged(cursor: Arc<str>) -> AckedCursor {
        AckedCursor(cursor)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
