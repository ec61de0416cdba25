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
//! The work is split three ways: `file` is one file's state machine (identity, reading,
//! what a look at its path means, truncation, reopening), `dispatch` turns what was read into
//! chunks through each target's stages, and [`Tailer`] here schedules over all files
//! (discovery events, rescans, fairness, the descriptor budget, draining, status).
//!
//! An unfinished last line waits for its newline. It is sent when its file is closed after
//! rotation or deletion (no newline can come then); at shutdown it is left unacknowledged, so
//! the next start reads it again, whole once its newline arrives.

pub mod append;
mod dispatch;
mod file;
pub mod inbox;
pub mod lines;
pub(crate) mod pipelined;

use crate::acknowledge::Acknowledger;
use crate::discover::DirStamps;
use crate::discover::Targets;
use crate::discover::meta::MetaCache;
use crate::discover::watch::Watcher;
use crate::entry::ChunkSender;
use crate::metrics::Metrics;
use crate::positions::FileId;
use crate::status::{FileState, FileStatus, StatusBoard, unix_seconds};
use dispatch::Dispatch;
use file::{Opening, Read1, Seen, TailedFile};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use inbox::{Inbox, Touch};
use lines::{LineLimit, Splitter};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One periodic rescan in this many looks at every known file (see [`Tailer::run`]).
const THOROUGH_EVERY: u32 = 6;

/// How soon after an asked-for rescan the globs are matched once more.
const RESCAN_SETTLE: Duration = Duration::from_secs(1);

/// How often, at most, the tailer publishes its files to the status page.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How the tailer behaves; see the module docs.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub limit: LineLimit,
    /// How often the globs are matched again, whatever inotify says (`target_config.sync_period`).
    pub rescan_every: Duration,
    /// How often files are polled when inotify is unavailable.
    pub poll_every: Duration,
    /// Most bytes read from one file at a time; also the largest chunk. 128 KiB: every chunk
    /// queued or batched holds its read's buffer, so this sets the memory in flight; 256 KiB
    /// cost ~2 MB more peak RSS on 1,000 busy files for ~3 % less CPU per GB.
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
            read_size: 128 * 1024,
            drain_quiet: Duration::from_secs(5),
            deleted_timeout: Duration::from_secs(60),
            max_open_files: 4096,
            position_grace: Duration::from_secs(3600),
        }
    }
}

/// What the tailer reads: the targets, each target's built pipeline (by target index; None
/// for a target without stages), and how. Built once from the config (see
/// the file input); a reload hands over a new one whole.
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
    metrics: Arc<Metrics>,
    /// What becomes of the lines read: stages, chunks, the outputs.
    dispatch: Dispatch,
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
    /// Container metadata of the files read, for relabeling.
    meta: MetaCache,
    /// The last slot given to a file (its lines' origins in the pipelines).
    slots: u32,
    /// Periodic rescans so far.
    rescans: u32,
    /// Matches of the globs so far: the number of the last one marks the files it found.
    matches: u32,
    /// The directories the last match of the globs depended on.
    scanned: DirStamps,
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
        out: ChunkSender,
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
            dispatch: Dispatch::new(acks.clone(), out, metrics.clone()),
            acks,
            metrics,
            live: HashMap::new(),
            draining: Vec::new(),
            ids: HashSet::new(),
            ready: VecDeque::new(),
            unreadable: HashMap::new(),
            open_files: 0,
            next_rescan: now,
            next_poll: now,
            meta: MetaCache::new(),
            slots: 0,
            rescans: 0,
            matches: 0,
            scanned: DirStamps::default(),
            status: None,
            status_changed: false,
            next_status: now,
        };
        tailer.dispatch.set_pipelines(pipelines);
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
        self.targets = plan.targets;
        self.dispatch.set_pipelines(plan.pipelines);
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
            let start = tf.read_pos - tf.splitter.pending() as u64;
            self.dispatch.open(tf, start);
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
                        self.dispatch.relabel(index, tf.slot, &labels);
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
        while !self.dispatch.is_stopped() {
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
                // Matching the globs again is needed only when a directory they walk changed,
                // or when events may have been missed (asked for, or no inotify at all).
                let rematch = news.rescan || self.watcher.is_polling() || !self.scanned.unchanged();
                self.rescan_with(thorough, rematch);
                if news.rescan {
                    // What prompts a rescan is mostly a new directory, and files written into it
                    // before its watch was in place send no event: look once more shortly after.
                    self.next_rescan = self.next_rescan.min(now + RESCAN_SETTLE);
                }
            }
            if self.watcher.is_polling() && now >= self.next_poll {
                self.poll();
            }
            self.read_ready();
            self.drain(false);
            self.dispatch.release();
            self.dispatch.flush_due(Instant::now());
            self.publish_status(Instant::now());
        }
        self.dispatch.release();
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
        if let Some(deadline) = self.dispatch.next_deadline() {
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
        self.rescan_with(true, true);
    }

    /// A rescan; `thorough` also checks every known file for rotation and truncation, and
    /// `rematch` matches the globs again (otherwise the files are those of the last match).
    fn rescan_with(&mut self, thorough: bool, rematch: bool) {
        let now = Instant::now();
        self.next_rescan = now + self.opts.rescan_every;
        self.watcher.update(&self.targets.watch_roots());
        if rematch {
            self.rematch(thorough);
        } else {
            self.recheck(thorough);
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

    /// Matches the globs: opens new files, checks known ones, looks at those no longer matched.
    fn rematch(&mut self, thorough: bool) {
        let scan = self.targets.scan();
        self.scanned = scan.dirs;
        let found = scan.files;
        // Files found are marked with this match's number; live files left unmarked were not
        // found (one hash of each path, not three).
        self.matches = self.matches.wrapping_add(1);
        let mark = self.matches;
        for (path, target, meta) in found {
            let known = match self.live.get_mut(&path) {
                Some(tf) => {
                    tf.matched = mark;
                    true
                }
                None => false,
            };
            if known {
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
            .values()
            .filter(|tf| tf.matched != mark)
            .map(|tf| tf.path.clone())
            .collect();
        for path in vanished {
            self.check(&path);
        }
    }

    /// What a rematch would do when no directory changed: the files are those already known,
    /// so only their container metadata and (when `thorough`) their state are looked at, and
    /// files that could not be opened are tried again.
    fn recheck(&mut self, thorough: bool) {
        let relabel: Vec<PathBuf> = self
            .live
            .values()
            .filter(|tf| {
                self.targets
                    .get(tf.target)
                    .is_some_and(|t| t.meta_changed(&tf.path, &self.meta))
            })
            .map(|tf| tf.path.clone())
            .collect();
        for path in relabel {
            self.relabel_live(&path);
        }
        if thorough {
            // One `stat` per file and nothing else for the (usual) unchanged ones: on 10,000
            // quiet files, cloning and hashing their paths cost as much as the stats.
            let mut changed = vec![];
            for (path, tf) in self.live.iter_mut() {
                let seen = tf.observe(std::fs::metadata(path));
                if seen != Seen::Same {
                    changed.push((path.clone(), seen));
                }
            }
            for (path, seen) in changed {
                self.act_on(&path, seen);
            }
            let unreadable: Vec<PathBuf> = self.unreadable.keys().cloned().collect();
            for path in unreadable {
                self.check(&path);
            }
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
        let seen = tf.observe(stat);
        self.act_on(path, seen);
    }

    /// Does what a look at a live file's path calls for.
    fn act_on(&mut self, path: &Path, seen: Seen) {
        match seen {
            Seen::Same => {}
            Seen::Grew => self.queue(path),
            Seen::Truncated { size } => self.truncated(path, size),
            Seen::Replaced { is_file } => {
                if let Some(old) = self.live.remove(path) {
                    self.start_draining(old, "rotated");
                }
                if is_file && let Some(target) = self.targets.find(path) {
                    self.add(path.to_path_buf(), target);
                }
            }
            Seen::Removed => {
                if let Some(old) = self.live.remove(path) {
                    self.start_draining(old, "removed");
                }
            }
        }
    }

    /// Opens a newly found file, from its position if one is remembered for it.
    fn add(&mut self, path: PathBuf, target: usize) {
        self.status_changed = true;
        let Some(target_ref) = self.targets.get(target) else {
            return;
        };
        let Some(labels) = target_ref.relabeled_labels_for(&path, &mut self.meta) else {
            tracing::debug!(path = %path.display(), "relabel_configs drop this file");
            return;
        };
        let slot = self.next_slot();
        let limit = if self.dispatch.has_stages(target) {
            self.opts.limit.before_stages()
        } else {
            self.opts.limit
        };
        let splitter = Splitter::new(limit);
        let ids = &self.ids;
        // Within the budget a file is opened at once. Beyond it, opening it would mean closing
        // another file (one found just before, unread) to make room, and opening that one
        // again at its turn: 10,000 files found under 1,024 descriptors were each opened twice.
        let opening = if self.open_files < self.opts.max_open_files {
            Opening::Now
        } else {
            Opening::AtItsRead
        };
        let opened = TailedFile::open(
            path.clone(),
            opening,
            target,
            slot,
            labels,
            splitter,
            &self.acks,
            &self.metrics,
            // The same file under another name (a link, or a rotated file draining).
            |id| ids.contains(&id),
        );
        let mut tf = match opened {
            Ok(Some(tf)) => tf,
            Ok(None) => return,
            Err(e) => {
                let error = e.to_string();
                if self.unreadable.get(&path) != Some(&error) {
                    tracing::warn!(path = %path.display(), %error, "cannot open file; will retry at each rescan");
                    self.unreadable.insert(path, error);
                }
                return;
            }
        };
        if !self.unreadable.is_empty() && self.unreadable.remove(&path).is_some() {
            tracing::info!(path = %path.display(), "file is readable now");
        }
        self.dispatch.open(&tf, tf.read_pos);
        self.ids.insert(tf.id);
        tf.queued = true;
        tf.matched = self.matches;
        self.ready.push_back(path.clone());
        if tf.file.is_some() {
            self.open_files += 1;
        }
        self.live.insert(path, tf);
        self.metrics
            .active_files
            .set((self.live.len() + self.draining.len()) as i64);
        self.enforce_fd_budget();
    }

    fn truncated(&mut self, path: &Path, size: u64) {
        let Some(tf) = self.live.get_mut(path) else {
            return;
        };
        tracing::info!(path = %path.display(), position = tf.read_pos, size, "file was truncated; reading it from the start");
        self.metrics.truncations.inc();
        tf.new_generation(&self.acks, size);
        if self.dispatch.has_stages(tf.target) {
            // Lines of the old generation still in the stages go out under their old slot;
            // its source is forgotten, so they no longer move any position.
            self.dispatch.close(tf.target, tf.slot);
            self.slots = self.slots.wrapping_add(1) & 0x000f_ffff;
            tf.slot = self.slots;
            self.dispatch.open(tf, 0);
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
            if self.dispatch.is_stopped() || self.inbox.is_shutdown() {
                return;
            }
            let Some(path) = self.ready.pop_front() else {
                return;
            };
            let Some(tf) = self.live.get_mut(&path) else {
                continue;
            };
            tf.queued = false;
            let tf = if tf.file.is_some() {
                tf
            } else {
                // Closed for the descriptor budget.
                if !self.reopen_live(&path) {
                    self.check(&path);
                    continue;
                }
                let Some(tf) = self.live.get_mut(&path) else {
                    continue;
                };
                tf
            };
            let read = read_once(tf, &mut self.dispatch, &self.acks, self.opts.read_size);
            self.status_changed |= read.read_data;
            match read.next {
                ReadResult::More => {
                    tf.queued = true;
                    self.ready.push_back(path);
                }
                ReadResult::Truncated(size) => self.truncated(&path, size),
                ReadResult::Done => {}
            }
        }
    }

    /// Opens a live file closed for the descriptor budget again; false if it is not the same
    /// file any more (or cannot be opened).
    fn reopen_live(&mut self, path: &Path) -> bool {
        // Out of the map while room is made: making room looks at every live file.
        let Some(mut tf) = self.live.remove(path) else {
            return false;
        };
        let reopened = self.reopen(&mut tf);
        self.live.insert(path.to_path_buf(), tf);
        reopened
    }

    /// Reads what is left of rotated and deleted files; closes those that are done.
    fn drain(&mut self, _final: bool) {
        if self.draining.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut keep = Vec::with_capacity(self.draining.len());
        for mut tf in std::mem::take(&mut self.draining) {
            if self.dispatch.is_stopped() {
                keep.push(tf);
                continue;
            }
            let gone_for = tf
                .gone_since
                .map(|t| now.duration_since(t))
                .unwrap_or_default();
            let mut at_end = false;
            for _ in 0..4 {
                let read = read_once(&mut tf, &mut self.dispatch, &self.acks, self.opts.read_size);
                self.status_changed |= read.read_data;
                match read.next {
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
        self.dispatch.send(tf, split);
    }

    fn close(&mut self, tf: TailedFile) {
        self.status_changed = true;
        tracing::debug!(path = %tf.path.display(), "closing file");
        // With a pipeline, the source stays until the stages hold nothing of the file.
        if self.dispatch.close(tf.target, tf.slot) {
            self.acks.close(tf.source, Instant::now());
        }
        self.ids.remove(&tf.id);
        if !self.live.contains_key(&tf.path) {
            // No file at that path any more: its series would only go stale.
            self.metrics.forget_file(&tf.path);
        }
        self.metrics
            .active_files
            .set((self.live.len() + self.draining.len()) as i64);
        if tf.file.is_some() {
            self.open_files = self.open_files.saturating_sub(1);
        }
    }

    /// Prints what each pipeline stage does to each entry, to standard error (`-inspect`).
    pub fn with_inspect(mut self, inspect: bool) -> Tailer {
        self.dispatch.set_inspect(inspect);
        self
    }

    fn next_slot(&mut self) -> u32 {
        self.slots = self.slots.wrapping_add(1) & 0x000f_ffff;
        self.slots
    }

    fn reopen(&mut self, tf: &mut TailedFile) -> bool {
        self.make_room();
        if !tf.reopen() {
            return false;
        }
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
    ///
    /// Why a sixteenth of the budget at once: finding the least recently active file looks at
    /// every file, and doing that for each file opened beyond the budget grew with the square
    /// of the file count (10,000 files under a limit of 1,024 descriptors: 0.3 – 0.5 s of CPU
    /// at start). Closing the least active sixteenth in one look makes room for that many
    /// opens.
    fn make_room(&mut self) {
        if self.open_files < self.opts.max_open_files {
            return;
        }
        let wanted = (self.open_files + 1 - self.opts.max_open_files)
            .max(self.opts.max_open_files / 16)
            .max(1);
        let mut open: Vec<(Instant, &PathBuf)> = self
            .live
            .iter()
            .filter(|(_, tf)| tf.file.is_some())
            .map(|(path, tf)| (tf.last_active, path))
            .collect();
        if open.len() > wanted {
            open.select_nth_unstable_by_key(wanted - 1, |(active, _)| *active);
            open.truncate(wanted);
        }
        let victims: Vec<PathBuf> = open.into_iter().map(|(_, path)| path.clone()).collect();
        for path in victims {
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

/// What one read of a file gave, and what comes next for it.
struct ReadOnce {
    next: ReadResult,
    /// Bytes were read (the status page has something new).
    read_data: bool,
}

/// Reads a file once and hands its lines on. A function of the parts of the tailer it uses,
/// so that a live file is read where it sits in the map, with no second lookup to put it back.
fn read_once(
    tf: &mut TailedFile,
    dispatch: &mut Dispatch,
    acks: &Acknowledger,
    read_size: usize,
) -> ReadOnce {
    let (next, read_data) = match tf.read(read_size) {
        Ok(Read1::Eof) => (ReadResult::Done, false),
        Ok(Read1::Truncated { size }) => (ReadResult::Truncated(size), false),
        Ok(Read1::Data {
            split,
            bytes,
            more,
            head,
        }) => {
            tf.series.read_bytes.inc_by(bytes as u64);
            tf.grow_fingerprint(acks, head);
            dispatch.send(tf, split);
            let next = if more {
                ReadResult::More
            } else {
                ReadResult::Done
            };
            (next, true)
        }
        Err(e) => {
            tracing::warn!(path = %tf.path.display(), error = %e, "read failed");
            (ReadResult::Done, false)
        }
    };
    ReadOnce { next, read_data }
}

enum ReadResult {
    More,
    Done,
    Truncated(u64),
}
