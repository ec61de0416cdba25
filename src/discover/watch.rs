//! One inotify watcher for the whole process, feeding the tailer's inbox; and the polling
//! fallback for when inotify cannot be had.

use super::WatchRoot;
use crate::tail::inbox::{Inbox, Touch};
use notify::event::{CreateKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Set `LOGFERRY_WATCH=poll` to poll instead of using inotify (for filesystems that do not
/// deliver inotify events, such as some network mounts).
pub const WATCH_ENV: &str = "LOGFERRY_WATCH";

/// Keeps the set of watched directories in step with the targets.
pub struct Watcher {
    inner: Option<RecommendedWatcher>,
    watched: BTreeSet<WatchRoot>,
}

impl Watcher {
    /// Starts inotify, or falls back to polling (logged once) when it is unavailable.
    pub fn start(inbox: Arc<Inbox>) -> Watcher {
        if std::env::var(WATCH_ENV).is_ok_and(|v| v == "poll") {
            tracing::info!("{WATCH_ENV}=poll: polling files instead of using inotify");
            return Watcher {
                inner: None,
                watched: BTreeSet::new(),
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
                watched: BTreeSet::new(),
            },
            Err(err) => {
                tracing::warn!(error = %err, "inotify is unavailable; polling files instead");
                Watcher {
                    inner: None,
                    watched: BTreeSet::new(),
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
        for stale in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(&stale.dir);
        }
        self.watched.retain(|r| wanted.contains(r));
        let mut exhausted = None;
        for root in wanted.difference(&self.watched.clone()) {
            let mode = if root.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(&root.dir, mode) {
                Ok(()) => {
                    self.watched.insert(root.clone());
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

fn forward(inbox: &Inbox, event: notify::Event) {
    if event.need_rescan() {
        inbox.request_rescan();
        return;
    }
    let touch = match event.kind {
        EventKind::Access(_) => return,
        EventKind::Modify(ModifyKind::Data(_)) => Touch::Data,
        EventKind::Create(CreateKind::Folder) => {
            inbox.request_rescan();
            return;
        }
        _ => Touch::Entry,
    };
    for path in event.paths {
        inbox.touch(path, touch);
    }
}
