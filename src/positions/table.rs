//! The in-memory positions: one record per file, keyed by identity.

use super::checkpoint::{AckedCursor, AckedOffset};
use super::identity::{FileId, Fingerprint};
use foldhash::HashMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct Record {
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub offset: AckedOffset,
    /// When the file stopped being read (None while it is read).
    pub released: Option<Instant>,
}

/// Every remembered position. Records of files no longer read are kept for a grace period
/// (a file may reappear, or a restart may find it again), then pruned.
#[derive(Debug, Default)]
pub struct Table {
    pub(super) records: HashMap<FileId, Record>,
    /// Positions imported from a Promtail positions file, by path: they have no identity, and
    /// are used once, for the file found at that path.
    pub(super) by_path: HashMap<PathBuf, (AckedOffset, Instant)>,
    /// Resume points of inputs that are not files, by key (`cursor-<job>` for a journal).
    pub(super) cursors: BTreeMap<String, AckedCursor>,
    dirty: bool,
    /// Told when the table goes from written to changed (see [`Table::subscribe`]).
    wake: Option<SyncSender<()>>,
}

impl Table {
    pub(super) fn from_parts(
        records: HashMap<FileId, Record>,
        by_path: HashMap<PathBuf, (AckedOffset, Instant)>,
        cursors: BTreeMap<String, AckedCursor>,
    ) -> Table {
        Table {
            records,
            by_path,
            cursors,
            dirty: false,
            wake: None,
        }
    }

    /// From now on, `wake` is sent a message when the table changes after its text was taken:
    /// once per [`take_changes`](Self::take_changes), not once per change, so a busy table
    /// costs its writer one wake-up per write. Replaces any earlier subscriber.
    pub fn subscribe(&mut self, wake: SyncSender<()>) {
        if self.dirty {
            let _ = wake.try_send(());
        }
        self.wake = Some(wake);
    }

    fn changed(&mut self) {
        if !self.dirty {
            self.dirty = true;
            if let Some(wake) = &self.wake {
                // Full means a wake-up is already pending; gone means nobody writes the table.
                let _ = wake.try_send(());
            }
        }
    }

    /// The acknowledged cursor recorded under `key`, if any.
    pub fn cursor(&self, key: &str) -> Option<&AckedCursor> {
        self.cursors.get(key)
    }

    /// Records the acknowledged cursor of the input keyed `key`.
    pub fn set_cursor(&mut self, key: &str, cursor: AckedCursor) {
        if self.cursors.get(key) != Some(&cursor) {
            self.cursors.insert(key.to_string(), cursor);
            self.changed();
        }
    }

    /// Where to resume a file found at `path`: its recorded position if the record is for this
    /// very file (`matches` checks the record's fingerprint against the file), else 0.
    pub fn resume_offset(
        &mut self,
        path: &Path,
        id: FileId,
        size: u64,
        matches: impl FnOnce(&Fingerprint) -> bool,
    ) -> AckedOffset {
        let recorded = match self.records.get(&id) {
            Some(record) if matches(&record.fingerprint) => Some(record.offset),
            Some(record) => {
                tracing::info!(
                    path = %path.display(),
                    previous = %record.path.display(),
                    "file reuses the inode of another file; reading it from the start"
                );
                None
            }
            None => self.by_path.remove(path).map(|(offset, _)| offset),
        };
        match recorded {
            Some(offset) if offset.get() > size => {
                tracing::warn!(
                    path = %path.display(),
                    position = offset.get(),
                    size,
                    "position is past the end of the file; reading it from the start"
                );
                AckedOffset::START
            }
            Some(offset) => offset,
            None => AckedOffset::START,
        }
    }

    /// The file `id` is now read from `start`.
    pub fn claim(&mut self, id: FileId, path: &Path, fingerprint: Fingerprint, start: AckedOffset) {
        self.records.insert(
            id,
            Record {
                path: path.to_path_buf(),
                fingerprint,
                offset: start,
                released: None,
            },
        );
        self.changed();
    }

    /// The file's settled prefix now ends at `offset`.
    pub fn advance(&mut self, id: FileId, offset: AckedOffset) {
        if let Some(record) = self.records.get_mut(&id)
            && record.offset != offset
        {
            record.offset = offset;
            self.changed();
        }
    }

    pub fn set_fingerprint(&mut self, id: FileId, fingerprint: Fingerprint) {
        if let Some(record) = self.records.get_mut(&id) {
            record.fingerprint = fingerprint;
            self.changed();
        }
    }

    /// The file is no longer read; its record is pruned after the grace period.
    pub fn release(&mut self, id: FileId, now: Instant) {
        if let Some(record) = self.records.get_mut(&id) {
            record.released = Some(now);
        }
    }

    /// Removes records of files not read for longer than `grace`.
    pub fn prune(&mut self, now: Instant, grace: Duration) -> usize {
        let before = self.records.len() + self.by_path.len();
        self.records
            .retain(|_, r| r.released.is_none_or(|t| now.duration_since(t) < grace));
        self.by_path
            .retain(|_, (_, t)| now.duration_since(*t) < grace);
        let pruned = before - self.records.len() - self.by_path.len();
        if pruned > 0 {
            self.changed();
        }
        pruned
    }

    /// The recorded offset of a file, if any.
    pub fn offset(&self, id: FileId) -> Option<u64> {
        self.records.get(&id).map(|r| r.offset.get())
    }

    /// Number of remembered files.
    pub fn len(&self) -> usize {
        self.records.len() + self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file text to write if anything changed since the last call, marking it written.
    pub fn take_changes(&mut self) -> Option<String> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(super::render::render(self))
    }

    /// Marks the table changed again (after a failed write).
    pub fn mark_dirty(&mut self) {
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: FileId = FileId {
        device: 8,
        inode: 99,
    };

    #[test]
    fn resumes_only_a_matching_file() {
        let mut t = Table::default();
        let fp = Fingerprint::of(b"abc");
        t.claim(
            ID,
            Path::new("/a"),
            fp,
            AckedOffset::from_positions_file(50),
        );
        assert_eq!(
            t.resume_offset(Path::new("/a"), ID, 100, |f| *f == fp)
                .get(),
            50
        );
        assert_eq!(
            t.resume_offset(Path::new("/a"), ID, 100, |_| false).get(),
            0
        );
        assert_eq!(
            t.resume_offset(Path::new("/a"), ID, 10, |_| true).get(),
            0,
            "past the end"
        );
    }

    #[test]
    fn promtail_positions_are_used_once_by_path() {
        let mut t = Table::default();
        t.by_path.insert(
            "/var/log/syslog".into(),
            (AckedOffset::from_positions_file(7), Instant::now()),
        );
        assert_eq!(
            t.resume_offset(Path::new("/var/log/syslog"), ID, 100, |_| true)
                .get(),
            7
        );
        assert_eq!(
            t.resume_offset(Path::new("/var/log/syslog"), ID, 100, |_| true)
                .get(),
            0
        );
    }

    #[test]
    fn released_records_are_pruned_after_the_grace_period() {
        let mut t = Table::default();
        let now = Instant::now();
        t.claim(
            ID,
            Path::new("/a"),
            Fingerprint::of(b""),
            AckedOffset::START,
        );
        assert_eq!(
            t.prune(now + Duration::from_secs(7200), Duration::from_secs(3600)),
            0
        );
        t.release(ID, now);
        assert_eq!(
            t.prune(now + Duration::from_secs(60), Duration::from_secs(3600)),
            0
        );
        assert_eq!(
            t.prune(now + Duration::from_secs(3601), Duration::from_secs(3600)),
            1
        );
        assert!(t.is_empty());
    }
}
