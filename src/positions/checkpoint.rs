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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::{load, save};

    #[test]
    fn a_promtail_journal_cursor_is_where_the_journal_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        std::fs::write(
            &path,
            "positions:\n  /var/log/syslog: \"1234\"\n  cursor-journal: \"s=abc;i=2a;b=def\"\n",
        )
        .unwrap();
        let table = load(&path, false).unwrap();
        assert_eq!(
            table.cursor("cursor-journal").map(AckedCursor::as_str),
            Some("s=abc;i=2a;b=def")
        );
    }

    #[test]
    fn acknowledged_cursors_survive_a_restart_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        let mut table = crate::positions::Table::default();
        table.set_cursor(
            "cursor-/web",
            AckedCursor::acknowledged(Arc::from("1733200000.123456789")),
        );
        save(&path, &table.take_changes().unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("cursor-/web"), "{text}");
        let loaded = load(&path, false).unwrap();
        assert_eq!(
            loaded.cursor("cursor-/web").map(AckedCursor::as_str),
            Some("1733200000.123456789")
        );
    }
}
