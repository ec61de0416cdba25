//! One file being read.

use super::lines::{Split, Splitter};
use crate::acknowledge::SourceKey;
use crate::entry::Timestamp;
use crate::labels::LabelSet;
use crate::metrics::Metrics;
use crate::positions::{FileId, Fingerprint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
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
    },
    /// Nothing new.
    Eof,
    /// The file is shorter than what was read of it: truncated in place.
    Truncated { size: u64 },
}

/// A file's metric handles, looked up once when it is opened.
#[derive(Debug)]
pub(super) struct FileCounters {
    pub bytes: Counter,
    pub lines: Counter,
    pub size: Gauge,
}

impl FileCounters {
    pub fn new(metrics: &Metrics, path: &std::path::Path) -> FileCounters {
        let label = Metrics::path(path);
        FileCounters {
            bytes: metrics.read_bytes.get_or_create(&label).clone(),
            lines: metrics.read_lines.get_or_create(&label).clone(),
            size: metrics.file_size.get_or_create(&label).clone(),
        }
    }
}

#[derive(Debug)]
pub(super) struct TailedFile {
    pub path: PathBuf,
    /// Index of its target.
    pub target: usize,
    /// Names its lines in the target's pipeline.
    pub slot: u32,
    pub counters: FileCounters,
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
    /// The last time it yielded bytes.
    pub last_active: Instant,
    /// Whether it ever yielded bytes.
    pub has_read: bool,
    /// The ctime at which its first bytes were last checked against its fingerprint.
    pub verified_ctime: Option<(i64, i64)>,
    /// When it left its path (rotated or removed); it is then drained and closed.
    pub gone_since: Option<Instant>,
}

impl TailedFile {
    /// Reads at most `max` new bytes and splits them.
    pub fn read(&mut self, max: usize) -> std::io::Result<Read1> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Read1::Eof);
        };
        let meta = file.metadata()?;
        let size = meta.len();
        self.size = size;
        self.counters
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
        let ctime = (meta.ctime(), meta.ctime_nsec());
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
        buf.resize(base + want, 0);
        let mut got = 0;
        while got < want {
            match file.read(&mut buf[base + got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(base + got);
                    self.read_pos += got as u64;
                    let _ = self.splitter.split(buf, self.read_pos);
                    return Err(e);
                }
            }
        }
        buf.truncate(base + got);
        self.read_pos += got as u64;
        self.last_active = Instant::now();
        self.has_read |= got > 0;
        let split = self.splitter.split(buf, self.read_pos);
        Ok(Read1::Data {
            split,
            bytes: got,
            more: self.read_pos < size,
        })
    }

    /// Starts over from the beginning (after a truncation).
    pub fn rewind(&mut self) -> std::io::Result<()> {
        self.splitter.reset();
        self.read_pos = 0;
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
