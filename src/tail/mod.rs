//! Tailing: reading the discovered files as they grow, through rotation and truncation.
//!
//! One thread reads every file. It sleeps until the inbox has news (inotify events, a rescan
//! due, shutdown), reads what changed in rounds of at most `read_size` bytes per file (so one
//! busy file cannot starve the others), and hands each read's complete lines to the outputs as
//! a [`Chunk`]. When the outputs fall behind, sending blocks and reading pauses: the files on
//! disk are the buffer.
//!
//! A file is identified by (device, inode) and a fingerprint of its first bytes:
//! - renamed away (rotation by rename + create): the old file is drained to its end, then
//!   closed once it has been quiet for `drain_quiet`, and the new file at the path is read
//!   from 0;
//! - shorter than what was read (copytruncate), or starting with other bytes than before:
//!   read again from 0;
//! - deleted: drained, and closed at the latest `deleted_timeout` after the deletion (bytes
//!   left unread then are counted and logged).
//!
//! An unfinished last line waits for its newline. It is sent when its file is closed after
//! rotation or deletion (no newline can come then); at shutdown it is left unacknowledged, so
//! the next start reads it again, whole once its newline arrives.

mod file;
pub mod inbox;
pub mod lines;
pub(crate) mod pipelined;

use crate::acknowledge::Acknowledger;
use crate::discover::Targets;
use crate::discover::meta::MetaCache;
use crate::discover::watch::Watcher;
use crate::entry::{Chunk, Timestamp};
use crate::metrics::{Metrics, ReasonLabel};
use crate::positions::AckedOffset;
use crate::positions::{FileId, Fingerprint};
use crate::status::{FileState, FileStatus, StatusBoard, unix_seconds};
use file::{Read1, TailedFile};
use inbox::{Inbox, Touch};
use lines::{LineLimit, Split, Splitter};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One periodic rescan in this many looks at every known file (see [`Tailer::run`]).
const THOROUGH_EVERY: u32 = 6;

/// How often, at most, the tailer publishes its files to the status page.
const STATUS_EVERY: Duration = Duration::from_secs(1);
use tokio::sync::mpsc;

/// How the tailer behaves; see the module docs.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub limit: LineLimit,
    /// How often the globs are matched again, whatever inotify says (`target_config.sync_period`).
    pub rescan_every: Duration,
    /// How often files are polled when inotify is unavailable.
    pub poll_every: Duration,
    /// Most bytes read from one file at a time; also the largest chunk.
    pub read_size: usize,
    /// A rotated file is closed once it has been at its end this long.
    pub drain_quiet: Duration,
    /// A deleted file is closed at the latest this long after its deletion.
    pub deleted_timeout: Duration,
    /// Most files kept open; beyond it, the least recently active are closed and reopened
    /// when they change.
    pub max_open_files: usize,
    /// How long the position of a file no longer seen is remembered.
    pub position_grace: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            limit: LineLimit::from_config(0, false),
            rescan_every: Duration::from_secs(10),
            poll_every: Duration::from_millis(250),
            read_size: 256 * 1024,
            drain_quiet: Duration::from_secs(5),
            deleted_timeout: Duration::from_secs(60),
            max_open_files: 4096,
            position_grace: Duration::from_secs(3600),
        }
    }
}

/// What the tailer reads: the targets, each target's built pipeline (by target index; None
/// for a target without stages), and how. Built once from the config (see
/// [`crate::input::files`]); a reload hands over a new one whole.
#[derive(Debug, Default)]
pub struct TailPlan {
    pub targets: Targets,
    pub pipelines: Vec<Option<crate::pipeline::Pipeline>>,
    pub options: TailOptions,
}

/// The reading thread's state.
pub struct Tailer {
    opts: TailOptions,
    targets: Targets,
    inbox: Arc<Inbox>,
    watcher: Watcher,
    acks: Arc<Acknowledger>,
    out: mpsc::Sender<Chunk>,
    metrics: Arc<Metrics>,
    /// The file currently at each path.
    live: HashMap<PathBuf, TailedFile>,
    /// Files that left their path and are read to their end.
    draining: Vec<TailedFile>,
    ids: HashSet<FileId>,
    ready: VecDeque<PathBuf>,
    /// Files that could not be opened, with the error last reported.
    unreadable: HashMap<PathBuf, String>,
    open_files: usize,
    next_rescan: Instant,
    next_poll: Instant,
    stopped: bool,
    /// Container metadata of the files read, for relabeling.
    meta: MetaCache,
    /// Each target's pipeline, by target index.
    pipelines: Vec<Option<pipelined::TargetPipeline>>,
    /// Print what each stage does (`-inspect`).
    inspect: bool,
    /// The last slot given to a file (its lines' origins in the pipelines).
    slots: u32,
    /// Periodic rescans so far.
    rescans: u32,
    status: Option<Arc<StatusBoard>>,
    /// Something the status page shows changed since it was last published.
    status_changed: bool,
    next_status: Instant,
}

impl Tailer {
    pub fn new(
        plan: TailPlan,
        inbox: Arc<Inbox>,
        acks: Arc<Acknowledger>,
        out: mpsc::Sender<Chunk>,
        metrics: Arc<Metrics>,
    ) -> Tailer {
        let watcher = Watcher::start(inbox.clone());
        let now = Instant::now();
        let TailPlan {
            targets,
            pipelines,
            options: opts,
        } = plan;
        let mut tailer = Tailer {
            opts,
            targets,
            inbox,
            watcher,
            acks,
            out,
            metrics,
            live: HashMap::new(),
            draining: Vec::new(),
            ids: HashSet::new(),
            ready: VecDeque::new(),
            unreadable: HashMap::new(),
            open_files: 0,
            next_rescan: now,
            next_poll: now,
            stopped: false,
            meta: MetaCache::new(),
            pipelines: Vec::new(),
            inspect: false,
            slots: 0,
            rescans: 0,
            status: None,
            status_changed: false,
            next_status: now,
        };
        tailer.set_pipelines(pipelines);
        tailer
    }

    /// Publishes what files are read to the status page.
    pub fn with_status(mut self, status: Arc<StatusBoard>) -> Tailer {
        status.set_targets(self.targets.describe());
        self.status = Some(status);
        self
    }

    /// Switches to the targets of a reloaded config. Files still matched keep their open file
    /// and position (their labels follow the new config); files no longer matched are closed
    /// once what was read of them is delivered; new matches are opened by the rescan.
    fn retarget(&mut self, plan: TailPlan) {
        // The old stages release what they hold, under the old config.
        for target in 0..self.pipelines.len() {
            if let Some(Some(tp)) = self.pipelines.get_mut(target) {
                tp.flush_all();
            }
            self.finish_pipeline(target);
        }
        self.targets = plan.targets;
        self.set_pipelines(plan.pipelines);
        self.opts = plan.options;
        let paths: Vec<PathBuf> = self.live.keys().cloned().collect();
        for path in paths {
            self.relabel_live(&path);
        }
        for tf in self.draining.iter_mut() {
            tf.target = self.targets.find(&tf.path).unwrap_or(usize::MAX);
        }
        // The new stages take every file from its last complete line.
        for tf in self.live.values().chain(self.draining.iter()) {
            if let Some(Some(tp)) = self.pipelines.get_mut(tf.target) {
                let start = tf.read_pos - tf.splitter.pending() as u64;
                tp.open(tf.slot, tf.source, &tf.labels, start);
            }
        }
        self.ready.retain(|p| self.live.contains_key(p));
        if let Some(board) = &self.status {
            board.set_targets(self.targets.describe());
        }
        self.rescan();
    }

    /// Works out again which target a live file belongs to and its labels (after a reload, or
    /// when its container metadata changed); closes it when no target wants it any more.
    fn relabel_live(&mut self, path: &Path) {
        let found = self.targets.find(path).and_then(|index| {
            let target = self.targets.get(index)?;
            Some((index, target.relabeled_labels_for(path, &mut self.meta)?))
        });
        match found {
            Some((index, labels)) => {
                if let Some(tf) = self.live.get_mut(path) {
                    tf.target = index;
                    if tf.labels != labels {
                        tracing::info!(path = %path.display(), labels = %labels.rendered(), "labels of the file changed");
                        if let Some(Some(tp)) = self.pipelines.get_mut(index) {
                            tp.relabel(tf.slot, &labels);
                        }
                        tf.labels = labels;
                    }
                }
            }
            None => {
                if let Some(tf) = self.live.remove(path) {
                    tracing::info!(path = %path.display(), "no target wants the file any more; closing it");
                    self.close(tf);
                }
            }
        }
    }

    /// Publishes the files' state, at most once a second (and not at all while idle).
    fn publish_status(&mut self, now: Instant) {
        let Some(board) = &self.status else { return };
        if !self.status_changed || now < self.next_status {
            return;
        }
        self.status_changed = false;
        self.next_status = now + STATUS_EVERY;
        let wall = SystemTime::now();
        let last_read = |at: Instant| unix_seconds(wall - now.duration_since(at));
        let mut files: Vec<FileStatus> = Vec::with_capacity(self.live.len() + self.draining.len());
        for (tf, state) in self
            .live
            .values()
            .map(|tf| (tf, FileState::Reading))
            .chain(self.draining.iter().map(|tf| (tf, FileState::Draining)))
        {
            files.push(FileStatus {
                path: tf.path.to_string_lossy().into_owned(),
                size: tf.size,
                position: 0,
                lag_bytes: 0,
                last_read: tf.has_read.then(|| last_read(tf.last_active)),
                state,
                error: None,
                id: Some(tf.id),
                target: tf.target,
            });
        }
        for (path, error) in &self.unreadable {
            files.push(FileStatus {
                path: path.to_string_lossy().into_owned(),
                size: 0,
                position: 0,
                lag_bytes: 0,
                last_read: None,
                state: FileState::Unreadable,
                error: Some(error.clone()),
                id: None,
                target: self.targets.find(path).unwrap_or(usize::MAX),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        board.set_files(files);
    }

    /// Reads until shutdown is requested or the outputs go away. `on_started` runs once the
    /// first discovery is done and every matched file is open.
    pub fn run(mut self, on_started: impl FnOnce(usize)) {
        self.rescan();
        on_started(self.live.len());
        while !self.stopped {
            let now = Instant::now();
            let timeout = if self.ready.is_empty() {
                self.next_wake().saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            let news = self.inbox.wait(timeout);
            if news.shutdown {
                break;
            }
            if let Some(plan) = news.retarget {
                self.retarget(plan);
            }
            for (path, touch) in news.touched {
                match touch {
                    Touch::Data if self.live.contains_key(&path) => self.queue(&path),
                    _ => self.check(&path),
                }
            }
            let now = Instant::now();
            if news.rescan || now >= self.next_rescan {
                // With inotify working, rotations and truncations arrive as events: most
                // periodic rescans only look for new and vanished files, and every
                // THOROUGH_EVERY-th one (or one asked for) also looks at every known file.
                self.rescans = self.rescans.wrapping_add(1);
                let thorough = news.rescan
                    || self.watcher.is_polling()
                    || self.rescans.is_multiple_of(THOROUGH_EVERY);
                self.rescan_with(thorough);
            }
            if self.watcher.is_polling() && now >= self.next_poll {
                self.poll();
            }
            self.read_ready();
            self.drain(false);
            self.flush_pipelines(Instant::now());
            self.publish_status(Instant::now());
        }
        tracing::debug!("tailer stopped");
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_rescan;
        if self.watcher.is_polling() {
            wake = wake.min(self.next_poll);
        }
        if !self.draining.is_empty() {
            wake = wake.min(Instant::now() + self.opts.poll_every);
        }
        if self.status_changed && self.status.is_some() {
            wake = wake.min(self.next_status);
        }
        for deadline in self
            .pipelines
            .iter()
            .flatten()
            .filter_map(|tp| tp.next_deadline())
        {
            wake = wake.min(deadline);
        }
        wake
    }

    fn queue(&mut self, path: &Path) {
        if let Some(tf) = self.live.get_mut(path)
            && !tf.queued
        {
            tf.queued = true;
            self.ready.push_back(path.to_path_buf());
        }
    }

    /// Matches the globs again: new files are opened, known ones checked for rotation and
    /// truncation, and positions of long-gone files pruned.
    fn rescan(&mut self) {
        self.rescan_with(true);
    }

    /// A rescan; `thorough` also checks every known file for rotation and truncation.
    fn rescan_with(&mut self, thorough: bool) {
        let now = Instant::now();
        self.next_rescan = now + self.opts.rescan_every;
        self.watcher.update(&self.targets.watch_roots());
        let found = self.targets.scan();
        let found_paths: HashSet<PathBuf> = found.iter().map(|(p, _, _)| p.clone()).collect();
        for (path, target, meta) in found {
            if self.live.contains_key(&path) {
                if self
                    .targets
                    .get(target)
                    .is_some_and(|t| t.meta_changed(&path, &self.meta))
                {
                    self.relabel_live(&path);
                }
                if thorough {
                    self.check_stat(&path, Ok(meta));
                }
            } else {
                self.add(path, target);
            }
        }
        let vanished: Vec<PathBuf> = self
            .live
            .keys()
            .filter(|p| !found_paths.contains(*p))
            .cloned()
            .collect();
        for path in vanished {
            self.check(&path);
        }
        self.meta.prune();
        let grace = self.opts.position_grace;
        let pruned = self.acks.with_table(|t| t.prune(now, grace));
        if pruned > 0 {
            tracing::debug!(
                pruned,
                "forgot positions of files gone for longer than the grace period"
            );
        }
    }

    /// Without inotify: looks at every file for growth, rotation and truncation.
    fn poll(&mut self) {
        self.next_poll = Instant::now() + self.opts.poll_every;
        let paths: Vec<PathBuf> = self.live.keys().cloned().collect();
        for path in paths {
            self.check(&path);
        }
    }

    /// Looks at what is at `path` now.
    fn check(&mut self, path: &Path) {
        if !self.live.contains_key(path) {
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {
                    if let Some(target) = self.targets.find(path) {
                        self.add(path.to_path_buf(), target);
                    }
                }
                Ok(m) if m.is_dir() => self.inbox.request_rescan(),
                _ => {}
            }
            return;
        }
        let stat = std::fs::metadata(path);
        self.check_stat(path, stat);
    }

    /// [`check`](Self::check) with what `stat` said of the path just now.
    fn check_stat(&mut self, path: &Path, stat: std::io::Result<std::fs::Metadata>) {
        let Some(tf) = self.live.get_mut(path) else {
            return;
        };
        match stat {
            Ok(meta) if FileId::of(&meta) == tf.id => {
                if tf.file.is_none() {
                    if meta.len() != tf.read_pos {
                        self.queue(path);
                    }
                    return;
                }
                // Any write or truncation changes the ctime: an unchanged file needs no second
                // look at its first bytes (this is what keeps rescans of idle files cheap).
                let ctime = (meta.ctime(), meta.ctime_nsec());
                let rewritten = tf.read_pos > 0
                    && tf.verified_ctime != Some(ctime)
                    && tf
                        .file
                        .as_ref()
                        .is_some_and(|f| !tf.fingerprint.matches(f).unwrap_or(true));
                tf.verified_ctime = Some(ctime);
                if meta.len() < tf.read_pos || rewritten {
                    let size = meta.len();
                    self.truncated(path, size);
                } else if meta.len() > tf.read_pos {
                    self.queue(path);
                }
            }
            Ok(meta) => {
                // Another file is at the path now: the old one was rotated away.
                let Some(old) = self.live.remove(path) else {
                    return;
                };
                self.start_draining(old, "rotated");
                if meta.is_file()
                    && let Some(target) = self.targets.find(path)
                {
                    self.add(path.to_path_buf(), target);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(old) = self.live.remove(path) else {
                    return;
                };
                self.start_draining(old, "removed");
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot stat file"),
        }
    }

    /// Opens a newly found file, from its position if one is remembered for it.
    fn add(&mut self, path: PathBuf, target: usize) {
        self.status_changed = true;
        self.make_room();
        let Some(target_ref) = self.targets.get(target) else {
            return;
        };
        let Some(labels) = target_ref.relabeled_labels_for(&path, &mut self.meta) else {
            tracing::debug!(path = %path.display(), "relabel_configs drop this file");
            return;
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let error = e.to_string();
                if self.unreadable.get(&path) != Some(&error) {
                    tracing::warn!(path = %path.display(), %error, "cannot open file; will retry at each rescan");
                    self.unreadable.insert(path, error);
                }
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            _ => return,
        };
        if self.unreadable.remove(&path).is_some() {
            tracing::info!(path = %path.display(), "file is readable now");
        }
        let id = FileId::of(&meta);
        if self.ids.contains(&id) {
            return; // the same file under another name (a link, or a rotated file draining)
        }
        let size = meta.len();
        let start = self
            .acks
            .resume_offset(&path, id, size, |fp| fp.matches(&file).unwrap_or(false));
        let fingerprint = Fingerprint::read(&file, size).unwrap_or(Fingerprint::of(b""));
        let mut file = file;
        if file.seek(SeekFrom::Start(start.get())).is_err() {
            return;
        }
        let source = self.acks.open(&path, id, fingerprint, start);
        tracing::debug!(path = %path.display(), position = start.get(), size, "tailing file");
        let slot = self.next_slot();
        if let Some(Some(tp)) = self.pipelines.get_mut(target) {
            tp.open(slot, source, &labels, start.get());
        }
        let tf = TailedFile {
            labels,
            target,
            slot,
            counters: file::FileCounters::new(&self.metrics, &path),
            size,
            path: path.clone(),
            file: Some(file),
            id,
            fingerprint,
            source,
            read_pos: start.get(),
            splitter: Splitter::new(self.opts.limit),
            last_ts: Timestamp(0),
            queued: false,
            last_active: Instant::now(),
            has_read: false,
            verified_ctime: None,
            gone_since: None,
        };
        self.ids.insert(id);
        self.live.insert(path.clone(), tf);
        self.open_files += 1;
        self.metrics
            .active_files
            .set((self.live.len() + self.draining.len()) as i64);
        self.queue(&path);
        self.enforce_fd_budget();
    }

    fn truncated(&mut self, path: &Path, size: u64) {
        let Some(tf) = self.live.get_mut(path) else {
            return;
        };
        tracing::info!(path = %path.display(), position = tf.read_pos, size, "file was truncated; reading it from the start");
        self.metrics.truncations.inc();
        self.acks.forget(tf.source);
        if let Err(e) = tf.rewind() {
            tracing::warn!(path = %path.display(), error = %e, "cannot rewind truncated file");
        }
        let size_now = tf
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(size);
        tf.fingerprint = tf
            .file
            .as_ref()
            .and_then(|f| Fingerprint::read(f, size_now).ok())
            .unwrap_or(Fingerprint::of(b""));
        tf.source = self
            .acks
            .open(path, tf.id, tf.fingerprint, AckedOffset::START);
        if let Some(Some(tp)) = self.pipelines.get_mut(tf.target) {
            // Lines of the old generation still in the stages go out under their old slot;
            // its source is forgotten, so they no longer move any position.
            tp.close(tf.slot);
            self.slots = self.slots.wrapping_add(1) & 0x000f_ffff;
            tf.slot = self.slots;
            tp.open(tf.slot, tf.source, &tf.labels, 0);
        }
        self.queue(path);
    }

    fn start_draining(&mut self, mut tf: TailedFile, why: &str) {
        self.status_changed = true;
        tracing::info!(path = %tf.path.display(), why, "file left its path; reading what is left of it");
        self.metrics.rotations.inc();
        tf.gone_since = Some(Instant::now());
        tf.queued = false;
        if tf.file.is_none() {
            // Closed for the descriptor budget: what was written after our last read is out
            // of reach now.
            self.close(tf);
            return;
        }
        self.draining.push(tf);
    }

    /// Reads each queued file once; files with more to read go to the back of the queue.
    fn read_ready(&mut self) {
        let rounds = self.ready.len();
        for _ in 0..rounds {
            if self.stopped || self.inbox.is_shutdown() {
                return;
            }
            let Some(path) = self.ready.pop_front() else {
                return;
            };
            let Some(mut tf) = self.live.remove(&path) else {
                continue;
            };
            tf.queued = false;
            if tf.file.is_none() && !self.reopen(&mut tf) {
                self.live.insert(path.clone(), tf);
                self.check(&path);
                continue;
            }
            let more = self.read_once(&mut tf);
            self.live.insert(path.clone(), tf);
            match more {
                ReadResult::More => self.queue(&path),
                ReadResult::Truncated(size) => self.truncated(&path, size),
                ReadResult::Done => {}
            }
        }
    }

    /// Reads what is left of rotated and deleted files; closes those that are done.
    fn drain(&mut self, _final: bool) {
        if self.draining.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut keep = Vec::with_capacity(self.draining.len());
        for mut tf in std::mem::take(&mut self.draining) {
            if self.stopped {
                keep.push(tf);
                continue;
            }
            let gone_for = tf
                .gone_since
                .map(|t| now.duration_since(t))
                .unwrap_or_default();
            let mut at_end = false;
            for _ in 0..4 {
                match self.read_once(&mut tf) {
                    ReadResult::More => continue,
                    ReadResult::Done => {
                        at_end = tf.unread() == 0;
                        break;
                    }
                    ReadResult::Truncated(_) => {
                        at_end = true;
                        break;
                    }
                }
            }
            let quiet = now.duration_since(tf.last_active) >= self.opts.drain_quiet
                && gone_for >= self.opts.drain_quiet;
            let deleted_too_long = gone_for >= self.opts.deleted_timeout && tf.is_deleted();
            if at_end && quiet {
                self.finish(&mut tf);
                self.close(tf);
            } else if deleted_too_long {
                let unread = tf.unread();
                if unread > 0 {
                    tracing::warn!(
                        path = %tf.path.display(),
                        unread_bytes = unread,
                        "closing a deleted file before its end: it stayed open for the deleted-file timeout"
                    );
                    self.metrics.unread_bytes_of_deleted.inc_by(unread);
                }
                self.finish(&mut tf);
                self.close(tf);
            } else {
                keep.push(tf);
            }
        }
        self.draining.extend(keep);
    }

    /// Sends the unfinished last line of a file that will not be read again.
    fn finish(&mut self, tf: &mut TailedFile) {
        let split = tf.splitter.finish(tf.read_pos);
        self.send(tf, split);
    }

    fn close(&mut self, tf: TailedFile) {
        self.status_changed = true;
        tracing::debug!(path = %tf.path.display(), "closing file");
        // With a pipeline, the source stays until the stages hold nothing of the file.
        let held = match self.pipelines.get_mut(tf.target) {
            Some(Some(tp)) => !tp.close(tf.slot),
            _ => false,
        };
        if !held {
            self.acks.close(tf.source, Instant::now());
        }
        self.ids.remove(&tf.id);
        if !self.live.contains_key(&tf.path) {
            // No file at that path any more: its series would only go stale.
            self.metrics.forget_file(&Metrics::path(&tf.path));
        }
        self.metrics
            .active_files
            .set((self.live.len() + self.draining.len()) as i64);
        if tf.file.is_some() {
            self.open_files = self.open_files.saturating_sub(1);
        }
    }

    fn read_once(&mut self, tf: &mut TailedFile) -> ReadResult {
        match tf.read(self.opts.read_size) {
            Ok(Read1::Eof) => ReadResult::Done,
            Ok(Read1::Truncated { size }) => ReadResult::Truncated(size),
            Ok(Read1::Data { split, bytes, more }) => {
                self.status_changed = true;
                tf.counters.bytes.inc_by(bytes as u64);
                if !tf.fingerprint.is_full()
                    && let Some(file) = tf.file.as_ref()
                    && let Ok(fp) = Fingerprint::read(file, tf.read_pos)
                    && fp.len > tf.fingerprint.len
                {
                    tf.fingerprint = fp;
                    self.acks.refingerprint(tf.source, fp);
                }
                self.send(tf, split);
                if more {
                    ReadResult::More
                } else {
                    ReadResult::Done
                }
            }
            Err(e) => {
                tracing::warn!(path = %tf.path.display(), error = %e, "read failed");
                ReadResult::Done
            }
        }
    }

    /// Hands a split's lines to the outputs; blocks while they are full.
    fn send(&mut self, tf: &mut TailedFile, split: Split) {
        let m = &self.metrics;
        if split.dropped_too_long > 0 {
            m.lines_dropped
                .get_or_create(&ReasonLabel {
                    reason: "line_too_long".into(),
                })
                .inc_by(split.dropped_too_long);
        }
        if split.truncated > 0 {
            m.lines_truncated.inc_by(split.truncated);
        }
        if split.invalid_utf8 > 0 {
            m.invalid_utf8_lines.inc_by(split.invalid_utf8);
        }
        if split.spans.is_empty() || self.stopped {
            return;
        }
        tf.counters.lines.inc_by(split.spans.len() as u64);
        let (base, last_ts) = split.stamp(tf.last_ts);
        tf.last_ts = last_ts;
        if let Some(Some(tp)) = self.pipelines.get_mut(tf.target) {
            tp.feed(tf.slot, &split, base, tf.size, Instant::now());
            self.finish_pipeline(tf.target);
            return;
        }
        if let Some(chunk) =
            pipelined::plain_chunk(&self.acks, tf.source, &tf.labels, split, base, tf.size)
        {
            self.emit(chunk);
        }
    }

    /// Hands a chunk to the outputs; blocks while they are full.
    fn emit(&mut self, chunk: Chunk) {
        if self.stopped {
            return;
        }
        if self.out.blocking_send(chunk).is_err() {
            // The outputs are gone (shutting down): nothing more can be delivered.
            self.stopped = true;
        }
    }

    /// Sends what a target's pipeline let out, and closes files it no longer holds lines of.
    fn finish_pipeline(&mut self, target: usize) {
        let Some(Some(tp)) = self.pipelines.get_mut(target) else {
            return;
        };
        let mut chunks = Vec::new();
        let closable = tp.finish(&self.acks, &self.metrics, &mut chunks);
        for chunk in chunks {
            self.emit(chunk);
        }
        for source in closable {
            self.acks.close(source, Instant::now());
        }
    }

    /// Lets the stages release what waited long enough (multiline blocks, partial lines).
    fn flush_pipelines(&mut self, now: Instant) {
        for target in 0..self.pipelines.len() {
            let due = self.pipelines[target]
                .as_ref()
                .and_then(|tp| tp.next_deadline())
                .is_some_and(|d| d <= now);
            if due {
                if let Some(Some(tp)) = self.pipelines.get_mut(target) {
                    tp.flush_due(now);
                }
                self.finish_pipeline(target);
            }
        }
    }

    fn set_pipelines(&mut self, pipelines: Vec<Option<crate::pipeline::Pipeline>>) {
        let inspect = self.inspect;
        self.pipelines = pipelines
            .into_iter()
            .map(|p| {
                p.filter(|p| !p.is_empty())
                    .map(|p| pipelined::TargetPipeline::new(p, inspect))
            })
            .collect();
    }

    /// Prints what each pipeline stage does to each entry, to standard error (`-inspect`).
    pub fn with_inspect(mut self, inspect: bool) -> Tailer {
        self.inspect = inspect;
        for tp in self.pipelines.iter_mut().flatten() {
            tp.set_inspect(inspect);
        }
        self
    }

    fn next_slot(&mut self) -> u32 {
        self.slots = self.slots.wrapping_add(1) & 0x000f_ffff;
        self.slots
    }

    fn reopen(&mut self, tf: &mut TailedFile) -> bool {
        self.make_room();
        let Ok(mut file) = File::open(&tf.path) else {
            return false;
        };
        let same = file.metadata().is_ok_and(|m| FileId::of(&m) == tf.id)
            && tf.fingerprint.matches(&file).unwrap_or(false);
        if !same || file.seek(SeekFrom::Start(tf.read_pos)).is_err() {
            return false;
        }
        tf.file = Some(file);
        self.open_files += 1;
        self.enforce_fd_budget();
        true
    }

    /// Closes the least recently active files, queued ones included, until one more file can
    /// be opened within the descriptor budget.
    ///
    /// Why before opening, and why queued files too: [`enforce_fd_budget`] runs after an open
    /// and spares queued files, but every file found at start is queued; with more files
    /// than the budget, nothing could be closed, the process ran out of descriptors (files
    /// reported unreadable, positions not saved) and never recovered, since the budget was
    /// only enforced after an open succeeded. A queued file closed here is reopened by
    /// [`read_ready`](Self::read_ready) when its turn comes.
    fn make_room(&mut self) {
        while self.open_files >= self.opts.max_open_files {
            let victim = self
                .live
                .values()
                .filter(|tf| tf.file.is_some())
                .min_by_key(|tf| tf.last_active)
                .map(|tf| tf.path.clone());
            let Some(path) = victim else { break };
            if let Some(tf) = self.live.get_mut(&path) {
                tf.file = None;
                self.open_files -= 1;
            }
        }
    }

    /// Closes the least recently active files beyond the descriptor budget.
    fn enforce_fd_budget(&mut self) {
        while self.open_files > self.opts.max_open_files {
            let victim = self
                .live
                .values()
                .filter(|tf| tf.file.is_some() && !tf.queued)
                .min_by_key(|tf| tf.last_active)
                .map(|tf| tf.path.clone());
            let Some(path) = victim else { break };
            if let Some(tf) = self.live.get_mut(&path) {
                tf.file = None;
                self.open_files -= 1;
            }
        }
    }
}

enum ReadResult {
    More,
    Done,
    Truncated(u64),
}
