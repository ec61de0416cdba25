//! One inotify instance for the tailer, feeding a [`WatchSink`] (the tailer's inbox); and the
//! polling fallback for when inotify cannot be had.
//!
//! Why on the `inotify` crate and not `notify` (which is built on it): `notify` watches every
//! directory for `IN_OPEN` as well, and cannot be told not to. Each open of a file in a watched
//! directory then queued an event that its thread woke up to read and logferry dropped:
//! logferry's own opens of every file it discovers (on 10,000 files, 10,000 wake-ups and about
//! 5 % of a run's CPU in the kernel alone), and in production every `tail -f` and every writer
//! that opens the file for each line. Here the mask is what tailing needs, and nothing else.
//!
//! A recursive root (a `**` glob) is watched in every directory below it; a directory created
//! or moved into one is watched as soon as its event is read, then a rescan finds the files
//! already in it. Anything the events cannot say for sure (the queue overflowed, a watched
//! directory went away, a directory appeared) asks for a rescan: the globs are the truth, the
//! events only make it quick.

use super::WatchRoot;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// What happened at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touch {
    /// Data was written: read on.
    Data,
    /// Created, removed, renamed, or its metadata changed: look at what is there now.
    Entry,
}

/// Where the watcher reports what it saw. The reader of the files implements it, so that
/// discovery needs to know nothing of how files are read.
pub trait WatchSink: Send + Sync + 'static {
    /// Something happened at `path`.
    fn touch(&self, path: PathBuf, touch: Touch);
    /// The globs should be matched again (a directory appeared, events were lost).
    fn request_rescan(&self);
}

/// Set `LOGFERRY_WATCH=poll` to poll instead of using inotify (for filesystems that do not
/// deliver inotify events, such as some network mounts).
pub const WATCH_ENV: &str = "LOGFERRY_WATCH";

/// What a watched directory is watched for: writes, entries made, removed or renamed, metadata
/// (a file made readable), and the directory itself going away. Not opens, reads or closes.
const MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// Keeps the set of watched directories in step with the targets.
pub struct Watcher {
    inner: Option<Running>,
    /// Each watched root with the (device, inode) it had when its watch was added.
    watched: BTreeMap<WatchRoot, (u64, u64)>,
}

/// The inotify instance, its reading thread, and which directory each watch is on.
struct Running {
    dirs: Arc<Mutex<Dirs>>,
    /// Written to stop the reading thread.
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The reading thread's id, for tests that count its wake-ups.
    #[cfg(test)]
    tid: Arc<std::sync::atomic::AtomicI32>,
}

/// The watches, shared by the tailer's thread (which adds and removes roots) and the reading
/// thread (which turns a watch's events into paths, and adds directories made under a
/// recursive root).
struct Dirs {
    watches: Watches,
    /// By watch descriptor: the directory and whether what is made under it is watched too.
    by_wd: HashMap<i32, (PathBuf, bool)>,
    /// By root: the descriptors of its directories.
    by_root: BTreeMap<WatchRoot, Vec<WatchDescriptor>>,
}

/// The (device, inode) of a directory, if it is there.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

impl Watcher {
    /// Starts inotify, or falls back to polling (logged once) when it is unavailable.
    pub fn start(inbox: Arc<dyn WatchSink>) -> Watcher {
        let polling = Watcher {
            inner: None,
            watched: BTreeMap::new(),
        };
        if std::env::var(WATCH_ENV).is_ok_and(|v| v == "poll") {
            tracing::info!("{WATCH_ENV}=poll: polling files instead of using inotify");
            return polling;
        }
        match Running::start(inbox) {
            Ok(running) => Watcher {
                inner: Some(running),
                ..polling
            },
            Err(err) => {
                tracing::warn!(error = %err, "inotify is unavailable; polling files instead");
                polling
            }
        }
    }

    /// Whether files must be polled because no watcher runs.
    pub fn is_polling(&self) -> bool {
        self.inner.is_none()
    }

    /// Watches exactly `roots`.
    pub fn update(&mut self, roots: &[WatchRoot]) {
        let Some(running) = self.inner.as_ref() else {
            return;
        };
        let wanted: BTreeSet<WatchRoot> = roots.iter().cloned().collect();
        let mut dirs = running.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        // Why the identity check: a watched directory that was removed and made again (`rm -rf
        // dir; mkdir dir`) keeps its path, so it stays "wanted" and "watched", but the kernel
        // dropped the watch with the old directory: without a new watch, files in the new
        // directory would only be seen at rescans. So a directory that is not the one watched
        // any more (or is gone) is unwatched here and watched again below.
        let stale: Vec<WatchRoot> = self
            .watched
            .iter()
            .filter(|(root, id)| !wanted.contains(*root) || dir_identity(&root.dir) != Some(**id))
            .map(|(root, _)| root.clone())
            .collect();
        for root in stale {
            dirs.unwatch(&root);
            self.watched.remove(&root);
        }
        let mut exhausted = None;
        let missing: Vec<&WatchRoot> = wanted
            .iter()
            .filter(|r| !self.watched.contains_key(*r))
            .collect();
        for root in missing {
            let identity = dir_identity(&root.dir);
            match dirs.watch_tree(root, &root.dir) {
                Ok(()) => {
                    if let Some(identity) = identity {
                        self.watched.insert(root.clone(), identity);
                    }
                }
                Err(err) if is_exhausted(&err) => {
                    exhausted = Some(err);
                    break;
                }
                Err(err) => {
                    // A directory that vanished between the check and the watch: the next
                    // rescan tries again.
                    dirs.unwatch(root);
                    tracing::debug!(dir = %root.dir.display(), error = %err, "cannot watch directory");
                }
            }
        }
        drop(dirs);
        if let Some(err) = exhausted {
            tracing::warn!(
                error = %err,
                "inotify limits reached (fs.inotify.max_user_watches / max_user_instances); \
                 polling files instead"
            );
            self.inner = None;
            self.watched.clear();
        }
    }
}

impl Running {
    fn start(inbox: Arc<dyn WatchSink>) -> std::io::Result<Running> {
        let inotify = Inotify::init()?;
        // SAFETY: eventfd has no preconditions; a negative result is checked below.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `stop` was just opened by eventfd and is owned by nothing else.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let dirs = Arc::new(Mutex::new(Dirs {
            watches: inotify.watches(),
            by_wd: HashMap::new(),
            by_root: BTreeMap::new(),
        }));
        let (shared, stop_fd) = (dirs.clone(), stop.as_raw_fd());
        #[cfg(test)]
        let (tid, reader_tid) = {
            let tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
            (tid.clone(), tid)
        };
        let thread = std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || {
                #[cfg(test)]
                // SAFETY: gettid has no preconditions.
                reader_tid.store(
                    unsafe { libc::gettid() },
                    std::sync::atomic::Ordering::SeqCst,
                );
                read_events(inotify, stop_fd, &shared, &*inbox)
            })?;
        Ok(Running {
            dirs,
            stop,
            thread: Some(thread),
            #[cfg(test)]
            tid,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd this struct owns.
        unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Dirs {
    /// Watches `dir` for `root`, and every directory below it if the root is recursive.
    fn watch_tree(&mut self, root: &WatchRoot, dir: &Path) -> std::io::Result<()> {
        let mut seen = HashSet::new();
        let mut todo = vec![dir.to_path_buf()];
        let mut first = true;
        while let Some(dir) = todo.pop() {
            // Directories reached through symbolic links are followed, as the globs follow
            // them; a link back up the tree is watched once.
            if dir_identity(&dir).is_some_and(|id| !seen.insert(id)) {
                continue;
            }
            match self.watches.add(&dir, MASK) {
                Ok(wd) => {
                    // Two roots on one directory share its descriptor: what is made under it
                    // is watched if either root is recursive.
                    self.by_wd
                        .entry(wd.get_watch_descriptor_id())
                        .and_modify(|(_, recursive)| *recursive |= root.recursive)
                        .or_insert((dir.clone(), root.recursive));
                    self.by_root.entry(root.clone()).or_default().push(wd);
                }
                // Below the root, a directory that just went away or cannot be read is left
                // to the next rescan.
                Err(e) if first || is_exhausted(&e) => return Err(e),
                Err(_) => continue,
            }
            first = false;
            if root.recursive
                && let Ok(entries) = std::fs::read_dir(&dir)
            {
                todo.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir())),
                );
            }
        }
        Ok(())
    }

    /// The root a watch descriptor was added for.
    fn root_of(&self, id: i32) -> Option<WatchRoot> {
        self.by_root
            .iter()
            .find(|(_, wds)| wds.iter().any(|w| w.get_watch_descriptor_id() == id))
            .map(|(root, _)| root.clone())
    }

    fn unwatch(&mut self, root: &WatchRoot) {
        for wd in self.by_root.remove(root).unwrap_or_default() {
            // Another root may watch the same directory: the kernel gives one descriptor per
            // inode, so the path stays known while any root still holds it.
            let id = wd.get_watch_descriptor_id();
            if !self.by_root.values().flatten().any(|w| *w == wd) {
                self.by_wd.remove(&id);
                let _ = self.watches.remove(wd);
            }
        }
    }
}

/// What one event means for the tailer.
#[derive(Debug, PartialEq, Eq)]
enum Meaning {
    Touch(Touch),
    /// A directory was made or moved in: watch it too (under a recursive root), then rescan.
    NewDir,
    Rescan,
    /// The kernel dropped the watch (its directory is gone): forget it.
    Gone,
    Nothing,
}

/// Reads the mask of an event on a watched directory (`named`: whether it is about an entry in
/// it, rather than the directory itself).
fn meaning(mask: EventMask, named: bool) -> Meaning {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Meaning::Rescan;
    }
    if mask.contains(EventMask::IGNORED) {
        return Meaning::Gone;
    }
    // The watched directory itself was removed or moved: the globs' roots must be worked out
    // again (its parent is watched until it comes back).
    if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT) || !named
    {
        return Meaning::Rescan;
    }
    if mask.contains(EventMask::ISDIR) {
        return if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            Meaning::NewDir
        } else {
            Meaning::Rescan
        };
    }
    if mask.contains(EventMask::MODIFY) {
        Meaning::Touch(Touch::Data)
    } else if mask.intersects(
        EventMask::CREATE
            | EventMask::DELETE
            | EventMask::MOVED_FROM
            | EventMask::MOVED_TO
            | EventMask::ATTRIB,
    ) {
        Meaning::Touch(Touch::Entry)
    } else {
        Meaning::Nothing
    }
}

/// The reading thread: waits for events or the stop signal, and forwards what the events mean.
fn read_events(mut inotify: Inotify, stop: i32, dirs: &Mutex<Dirs>, inbox: &dyn WatchSink) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls two descriptors from a live array of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot wait for inotify events; rescanning");
            inbox.request_rescan();
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        loop {
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read inotify events; rescanning");
                    inbox.request_rescan();
                    break;
                }
            };
            let mut dirs = dirs.lock().unwrap_or_else(PoisonError::into_inner);
            for event in events {
                let id = event.wd.get_watch_descriptor_id();
                let meaning = meaning(event.mask, event.name.is_some());
                let known = dirs.by_wd.get(&id).cloned();
                let (dir, recursive) = match (&meaning, known) {
                    (Meaning::Rescan, _) => {
                        inbox.request_rescan();
                        continue;
                    }
                    (Meaning::Gone, _) => {
                        dirs.by_wd.remove(&id);
                        inbox.request_rescan();
                        continue;
                    }
                    (_, Some(known)) => known,
                    // Raced with a root being unwatched.
                    (_, None) => continue,
                };
                let path = dir.join(event.name.unwrap_or(OsStr::new("")));
                match meaning {
                    Meaning::Touch(touch) => inbox.touch(path, touch),
                    Meaning::NewDir => {
                        if recursive && let Some(root) = dirs.root_of(id) {
                            let _ = dirs.watch_tree(&root, &path);
                        }
                        inbox.request_rescan();
                    }
                    Meaning::Rescan | Meaning::Gone | Meaning::Nothing => {}
                }
            }
        }
    }
}

fn is_exhausted(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EMFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_mean_what_tailing_needs() {
        let file = |mask| meaning(mask, true);
        assert_eq!(file(EventMask::MODIFY), Meaning::Touch(Touch::Data));
        for mask in [
            EventMask::CREATE,
            EventMask::DELETE,
            EventMask::MOVED_FROM,
            EventMask::MOVED_TO,
            EventMask::ATTRIB,
        ] {
            assert_eq!(file(mask), Meaning::Touch(Touch::Entry), "{mask:?}");
        }
        // Lost events, and directories coming and going, are for the globs to sort out.
        assert_eq!(meaning(EventMask::Q_OVERFLOW, false), Meaning::Rescan);
        assert_eq!(file(EventMask::CREATE | EventMask::ISDIR), Meaning::NewDir);
        assert_eq!(
            file(EventMask::MOVED_TO | EventMask::ISDIR),
            Meaning::NewDir
        );
        assert_eq!(file(EventMask::DELETE | EventMask::ISDIR), Meaning::Rescan);
        assert_eq!(meaning(EventMask::DELETE_SELF, false), Meaning::Rescan);
        assert_eq!(meaning(EventMask::MOVE_SELF, false), Meaning::Rescan);
        assert_eq!(meaning(EventMask::IGNORED, false), Meaning::Gone);
        assert_eq!(file(EventMask::ACCESS), Meaning::Nothing);
    }

    /// Records what the watcher reports.
    #[derive(Default)]
    struct Seen(Mutex<(Vec<(PathBuf, Touch)>, usize)>);

    impl WatchSink for Seen {
        fn touch(&self, path: PathBuf, touch: Touch) {
            self.0.lock().unwrap().0.push((path, touch));
        }
        fn request_rescan(&self) {
            self.0.lock().unwrap().1 += 1;
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// How many times the watcher's reading thread has been switched out: it sleeps in
    /// `poll` until the kernel has an event for it.
    fn wakeups(watcher: &Watcher) -> u64 {
        let running = watcher.inner.as_ref().expect("inotify runs");
        wait_until("the reading thread", || {
            running.tid.load(std::sync::atomic::Ordering::SeqCst) != 0
        });
        let tid = running.tid.load(std::sync::atomic::Ordering::SeqCst);
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn writes_are_reported_and_opening_files_wakes_nobody() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "one\n").unwrap();
        let seen = Arc::new(Seen::default());
        let mut watcher = Watcher::start(seen.clone());
        assert!(!watcher.is_polling());
        watcher.update(&[WatchRoot {
            dir: dir.path().to_path_buf(),
            recursive: false,
        }]);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = wakeups(&watcher);
        // Opening and reading files, as the tailer does with every file it finds, makes no
        // event: the reading thread sleeps on.
        for _ in 0..100 {
            let mut text = String::new();
            std::fs::File::open(&log)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(wakeups(&watcher), before, "opens woke the watcher");
        assert!(seen.0.lock().unwrap().0.is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        wait_until("the write", || !seen.0.lock().unwrap().0.is_empty());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(seen.0.lock().unwrap().0, vec![(log.clone(), Touch::Data)]);
        std::fs::remove_file(&log).unwrap();
        wait_until("the removal", || {
            seen.0.lock().unwrap().0.last() == Some(&(log.clone(), Touch::Entry))
        });
    }

    #[test]
    fn a_directory_made_under_a_recursive_root_is_watched_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let mut watcher = Watcher::start(seen.clone());
        watcher.update(&[WatchRoot {
            dir: dir.path().to_path_buf(),
            recursive: true,
        }]);
        let deep = dir.path().join("a");
        std::fs::create_dir(&deep).unwrap();
        wait_until("the new directory", || seen.0.lock().unwrap().1 > 0);
        // Its watch was added when its event was read: a file written into it now is seen
        // without any rescan.
        let log = deep.join("x.log");
        std::fs::write(&log, "x\n").unwrap();
        wait_until("the file in it", || {
            seen.0.lock().unwrap().0.iter().any(|(p, _)| *p == log)
        });
        // Stopping the watcher ends its thread.
        drop(watcher);
    }
}
