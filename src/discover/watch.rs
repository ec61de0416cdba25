//! One inotify watcher for the whole process, feeding a [`WatchSink`] (the tailer's inbox); and the polling
//! fallback for when inotify cannot be had.

use super::WatchRoot;
use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
    fn touch(&self, path: std::path::PathBuf, touch: Touch);
    /// The globs should be matched again (a directory appeared, events were lost).
    fn request_rescan(&self);
}

/// Set `LOGFERRY_WATCH=poll` to poll instead of using inotify (for filesystems that do not
/// deliver inotify events, such as some network mounts).
pub const WATCH_ENV: &str = "LOGFERRY_WATCH";

/// Keeps the set of watched directories in step with the targets.
pub struct Watcher {
    inner: Option<RecommendedWatcher>,
    /// Each watched directory with the (device, inode) it had when the watch was added.
    watched: BTreeMap<WatchRoot, (u64, u64)>,
}

/// The (device, inode) of a directory, if it is there.
fn dir_identity(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

impl Watcher {
    /// Starts inotify, or falls back to polling (logged once) when it is unavailable.
    pub fn start(inbox: Arc<dyn WatchSink>) -> Watcher {
        if std::env::var(WATCH_ENV).is_ok_and(|v| v == "poll") {
            tracing::info!("{WATCH_ENV}=poll: polling files instead of using inotify");
            return Watcher {
                inner: None,
                watched: BTreeMap::new(),
            };
        }
        let handler = move |result: notify::Result<notify::Event>| match result {
            Ok(event) => forward(&inbox, event),
            Err(err) => {
                tracing::warn!(error = %err, "file watcher error; rescanning");
                inbox.request_rescan();
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Watcher {
                inner: Some(watcher),
                watched: BTreeMap::new(),
            },
            Err(err) => {
                tracing::warn!(error = %err, "inotify is unavailable; polling files instead");
                Watcher {
                    inner: None,
                    watched: BTreeMap::new(),
                }
            }
        }
    }

    /// Whether files must be polled because no watcher runs.
    pub fn is_polling(&self) -> bool {
        self.inner.is_none()
    }

    /// Watches exactly `roots`.
    pub fn update(&mut self, roots: &[WatchRoot]) {
        let Some(watcher) = self.inner.as_mut() else {
            return;
        };
        let wanted: BTreeSet<WatchRoot> = roots.iter().cloned().collect();
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
            let _ = watcher.unwatch(&root.dir);
            self.watched.remove(&root);
        }
        let mut exhausted = None;
        let missing: Vec<WatchRoot> = wanted
            .iter()
            .filter(|r| !self.watched.contains_key(*r))
            .cloned()
            .collect();
        for root in &missing {
            let mode = if root.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let identity = dir_identity(&root.dir);
            match watcher.watch(&root.dir, mode) {
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
                    tracing::debug!(dir = %root.dir.display(), error = %err, "cannot watch directory");
                }
            }
        }
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

fn is_exhausted(err: &notify::Error) -> bool {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => {
            matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EMFILE))
        }
        _ => false,
    }
}

fn forward(inbox: &Arc<dyn WatchSink>, event: notify::Event) {
    if event.need_rescan() {
        inbox.request_rescan();
        return;
    }
    let touch = match event.kind {
        EventKind::Access(_) => return,
        EventKind::Modify(ModifyKind::Data(_)) => Touch::Data,
        // Why removals too: when a watched directory itself is removed, its watch goes with
        // it, and the globs' watch roots must be worked out again (its parent is watched
        // until it comes back), or a directory made again at that path goes unnoticed.
        EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {
            inbox.request_rescan();
            return;
        }
        _ => Touch::Entry,
    };
    for path in event.paths {
        inbox.touch(path, touch);
    }
}
