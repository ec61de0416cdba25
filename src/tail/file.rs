//! One file being read: its state machine.
//!
//! A [`TailedFile`] knows one generation of one file: how far it was read, its identity
//! (device, inode and a fingerprint of its first bytes), and its acknowledgement source. It
//! decides what a look at its path means ([`TailedFile::observe`]: grew, truncated, replaced
//! by another file, removed), reads and splits ([`TailedFile::read`]), starts a new generation
//! after a truncation, and reopens itself after being closed for the descriptor budget only if
//! it is still the same file. Scheduling over files — which file is read when, the budget,
//! draining, pipelines, status — is the tailer's ([`super::Tailer`]).

use super::append::read_onto;
use super::lines::{Split, Splitter};
use crate::acknowledge::{Acknowledger, SourceKey};
use crate::entry::Timestamp;
use crate::labels::LabelSet;
use crate::metrics::{FileSeries, Metrics};
use crate::positions::{AckedOffset, FINGERPRINT_BYTES, FileId, Fingerprint, Prefix};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What one read of a file gave.
pub(super) enum Read1 {
    /// Bytes were read (perhaps without completing a line); `more` when there are more.
    Data {
        split: Split,
        bytes: usize,
        more: bool,
        /// The fingerprint of the bytes read when the read started at the file's start.
        head: Option<Fingerprint>,
    },
    /// Nothing new.
    Eof,
    /// The file is shorter than what was read of it: truncated in place.
    Truncated { size: u64 },
}

/// What a look at a file's path found, compared with the file being read there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Nothing new.
    Same,
    /// It has bytes not read yet.
    Grew,
    /// Shorter than what was read, or starting with other bytes than before: truncated (and
    /// perhaps rewritten) in place.
    Truncated { size: u64 },
    /// Another file is at the path now: this one was rotated away. `is_file` tells whether the
    /// newcomer is a regular file.
    Replaced { is_file: bool },
    /// Nothing is at the path any more.
    Removed,
}

#[derive(Debug)]
pub(super) struct TailedFile {
    pub path: PathBuf,
    /// Index of its target.
    pub target: usize,
    /// Names its lines in the target's pipeline.
    pub slot: u32,
    /// Its metric series, looked up once when it is opened.
    pub series: Arc<FileSeries>,
    /// Its size when last looked at.
    pub size: u64,
    pub labels: Arc<LabelSet>,
    /// None while closed to stay within the descriptor budget.
    pub file: Option<File>,
    pub id: FileId,
    pub fingerprint: Fingerprint,
    pub source: SourceKey,
    /// Bytes consumed, including an unfinished last line held by the splitter.
    pub read_pos: u64,
    pub splitter: Splitter,
    /// Timestamp of the last line sent, so that a file's lines get strictly increasing times.
    pub last_ts: Timestamp,
    pub queued: bool,
    /// The number of the last match of the globs that found it (see the tailer's rematch).
    pub matched: u32,
    /// The last time it yielded bytes.
    pub last_active: Instant,
    /// Whether it ever yielded bytes.
    pub has_read: bool,
    /// The ctime at which its first bytes were last checked against its fingerprint.
    pub verified_ctime: Option<(i64, i64)>,
    /// When it left its path (rotated or removed); it is then drained and closed.
    pub gone_since: Option<Instant>,
    /// Size and ctime as the open found them, for the first read: on 10,000 new files, one
    /// `stat` each less.
    pub stat_at_open: Option<(u64, (i64, i64))>,
}

/// When a file found is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// At once.
    Now,
    /// When its turn to be read comes ([`TailedFile::reopen`]); until then it is known by a
    /// `stat` of its path. For files found beyond the descriptor budget: opened now, each
    /// would be closed again, unread, to make room for the next one.
    AtItsRead,
}

impl TailedFile {
    /// Starts tailing the file at `path` from its acknowledged position (0 when the positions
    /// hold none for this very file), opening it now or at its first read, and opens its
    /// acknowledgement source. None when it is not a regular file or `known(id)` says it is
    /// already read under another name.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        path: PathBuf,
        opening: Opening,
        target: usize,
        slot: u32,
        labels: Arc<LabelSet>,
        splitter: Splitter,
        acks: &Acknowledger,
        metrics: &Metrics,
        known: impl FnOnce(FileId) -> bool,
    ) -> std::io::Result<Option<TailedFile>> {
        let (mut file, meta) = match opening {
            Opening::Now => {
                let file = File::open(&path)?;
                let meta = file.metadata()?;
                (Some(file), meta)
            }
            Opening::AtItsRead => (None, std::fs::metadata(&path)?),
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let id = FileId::of(&meta);
        if known(id) {
            return Ok(None);
        }
        let size = meta.len();
        // The first bytes are read here only to check a recorded position's fingerprint. A
        // file with none (every file the first time it is seen) takes its fingerprint from
        // its first read instead: one system call less per new file.
        let mut prefix = None;
        let start = acks.resume_offset(&path, id, size, |fp| {
            let read = match &file {
                Some(file) => Prefix::read(file),
                // Opened only for this check: the descriptor is given back at once.
                None => File::open(&path).and_then(|file| Prefix::read(&file)),
            };
            prefix.insert(read).as_ref().is_ok_and(|p| p.starts_as(fp))
        });
        let fingerprint = match prefix {
            Some(Ok(p)) => p.fingerprint(size),
            _ => Fingerprint::of(b""),
        };
        // A file just opened is at its start: one system call less per file found. One opened
        // later is moved to its position then.
        if let Some(file) = file.as_mut()
            && start.get() > 0
        {
            file.seek(SeekFrom::Start(start.get()))?;
        }
        let source = acks.open(&path, id, fingerprint, start);
        tracing::debug!(path = %path.display(), position = start.get(), size, "tailing file");
        Ok(Some(TailedFile {
            labels,
            target,
            slot,
            series: metrics.files.series(&path),
            size,
            path,
            stat_at_open: file
                .is_some()
                .then_some((size, (meta.ctime(), meta.ctime_nsec()))),
            file,
            id,
            fingerprint,
            source,
            read_pos: start.get(),
            splitter,
            last_ts: Timestamp::from_nanos(0),
            queued: false,
            matched: 0,
            last_active: Instant::now(),
            has_read: false,
            // Resuming, its first bytes were just checked against the position's fingerprint:
            // the first read after a restart need not read them once more.
            verified_ctime: Some((meta.ctime(), meta.ctime_nsec())),
            gone_since: None,
        }))
    }

    /// What `stat` of its path, taken just now, says happened to the file.
    pub fn observe(&mut self, stat: std::io::Result<std::fs::Metadata>) -> Seen {
        match stat {
            Ok(meta) if FileId::of(&meta) == self.id => {
                let Some(file) = self.file.as_ref() else {
                    // Closed for the budget: its first bytes are checked when it is reopened.
                    return if meta.len() != self.read_pos {
                        Seen::Grew
                    } else {
                        Seen::Same
                    };
                };
                // Any write or truncation changes the ctime: an unchanged file needs no second
                // look at its first bytes (this is what keeps rescans of idle files cheap).
                let ctime = (meta.ctime(), meta.ctime_nsec());
                let rewritten = self.read_pos > 0
                    && self.verified_ctime != Some(ctime)
                    && !self.fingerprint.matches(file).unwrap_or(true);
                self.verified_ctime = Some(ctime);
                if meta.len() < self.read_pos || rewritten {
                    Seen::Truncated { size: meta.len() }
                } else if meta.len() > self.read_pos {
                    Seen::Grew
                } else {
                    Seen::Same
                }
            }
            Ok(meta) => Seen::Replaced {
                is_file: meta.is_file(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Removed,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot stat file");
                Seen::Same
            }
        }
    }

    /// Starts a new generation after a truncation: what was read of the old one no longer
    /// counts (its source is forgotten, so its chunks still in flight move no position), and
    /// the file is read again from 0 under a new source.
    pub fn new_generation(&mut self, acks: &Acknowledger, size: u64) {
        acks.forget(self.source);
        if let Err(e) = self.rewind() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot rewind truncated file");
        }
        let size_now = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(size);
        self.fingerprint = self
            .file
            .as_ref()
            .and_then(|f| Fingerprint::read(f, size_now).ok())
            .unwrap_or(Fingerprint::of(b""));
        self.source = acks.open(&self.path, self.id, self.fingerprint, AckedOffset::START);
    }

    /// Opens the file again after it was closed for the descriptor budget, if the same file
    /// (identity and first bytes) is still at its path; false otherwise.
    pub fn reopen(&mut self) -> bool {
        let Ok(mut file) = File::open(&self.path) else {
            return false;
        };
        let same = file.metadata().is_ok_and(|m| FileId::of(&m) == self.id)
            && self.fingerprint.matches(&file).unwrap_or(false);
        if !same || (self.read_pos > 0 && file.seek(SeekFrom::Start(self.read_pos)).is_err()) {
            return false;
        }
        self.file = Some(file);
        // It may have grown while it was closed.
        self.stat_at_open = None;
        true
    }

    /// A file shorter than a full fingerprint when opened (or not fingerprinted yet) has a
    /// longer one now that it was read: its identity (in memory and in the positions) gets it.
    /// `head` is the fingerprint of the read just made if it started at the file's start.
    pub fn grow_fingerprint(&mut self, acks: &Acknowledger, head: Option<Fingerprint>) {
        if self.fingerprint.is_full() {
            return;
        }
        let longer = match head {
            Some(fp) => Some(fp),
            None => self
                .file
                .as_ref()
                .and_then(|file| Fingerprint::read(file, self.read_pos).ok()),
        };
        if let Some(fp) = longer
            && fp.len > self.fingerprint.len
        {
            self.fingerprint = fp;
            acks.refingerprint(self.source, fp);
        }
    }

    /// Reads at most `max` new bytes and splits them.
    pub fn read(&mut self, max: usize) -> std::io::Result<Read1> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Read1::Eof);
        };
        // A file just opened was just looked at: growth since comes as an event (or the next
        // poll) and is read then.
        let (size, ctime) = match self.stat_at_open.take() {
            Some(seen) => seen,
            None => {
                let meta = file.metadata()?;
                (meta.len(), (meta.ctime(), meta.ctime_nsec()))
            }
        };
        self.size = size;
        self.series
            .size
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        if size < self.read_pos {
            return Ok(Read1::Truncated { size });
        }
        // Why: a file truncated and at once rewritten with as many bytes as were read or more
        // (`> f; echo ... >> f`, copytruncate under a busy writer) is no shorter than
        // `read_pos` by the time we look, and the truncation only shows as a data event;
        // reading on from `read_pos` would skip the new file's first bytes. So whenever the
        // file changed since its first bytes were last checked (its ctime moved), check that
        // it still starts with them (one pread of at most 256 bytes, from the page cache).
        if self.read_pos > 0
            && self.verified_ctime != Some(ctime)
            && !self.fingerprint.matches(file).unwrap_or(true)
        {
            return Ok(Read1::Truncated { size });
        }
        self.verified_ctime = Some(ctime);
        if size == self.read_pos {
            return Ok(Read1::Eof);
        }
        let want = (size - self.read_pos).min(max as u64) as usize;
        let mut buf = self.splitter.take_buffer(want);
        let base = buf.len();
        let mut got = 0;
        while got < want {
            match read_onto(file, &mut buf, want - got) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => {
                    self.read_pos += got as u64;
                    let _ = self.splitter.split(buf, self.read_pos);
                    return Err(e);
                }
            }
        }
        let head = (self.read_pos == 0)
            .then(|| Fingerprint::of(&buf[base..base + got.min(FINGERPRINT_BYTES)]));
        self.read_pos += got as u64;
        self.last_active = Instant::now();
        self.has_read |= got > 0;
        let split = self.splitter.split(buf, self.read_pos);
        Ok(Read1::Data {
            split,
            bytes: got,
            more: self.read_pos < size,
            head,
        })
    }

    /// Starts over from the beginning (after a truncation).
    pub fn rewind(&mut self) -> std::io::Result<()> {
        self.splitter.reset();
        self.read_pos = 0;
        self.stat_at_open = None;
        if let Some(file) = self.file.as_mut() {
            file.seek(SeekFrom::Start(0))?;
        }
        Ok(())
    }

    /// Bytes of the file not read yet.
    pub fn unread(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len().saturating_sub(self.read_pos))
            .unwrap_or(0)
    }

    /// Whether the file has been deleted (no name left) while it is open.
    pub fn is_deleted(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.nlink() == 0)
    }
}
