//! News for the tailer: which paths changed, whether to rescan, whether to stop.
//!
//! Filesystem events are merged per path as they arrive, so however busy the files and however
//! long the tailer is held up by a slow output, the inbox holds at most one entry per path.

use super::TailPlan;
use foldhash::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::discover::watch::Touch;

/// What [`Inbox::wait`] hands over.
#[derive(Debug, Default)]
pub struct News {
    pub touched: HashMap<PathBuf, Touch>,
    pub rescan: bool,
    pub shutdown: bool,
    /// What to read from now on, after a config reload.
    pub retarget: Option<TailPlan>,
}

#[derive(Debug, Default)]
pub struct Inbox {
    news: Mutex<News>,
    wake: Condvar,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    fn lock(&self) -> MutexGuard<'_, News> {
        self.news.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something happened at `path`.
    pub fn touch(&self, path: PathBuf, touch: Touch) {
        let mut news = self.lock();
        let entry = news.touched.entry(path).or_insert(touch);
        *entry = (*entry).max(touch);
        drop(news);
        self.wake.notify_one();
    }

    /// The globs should be matched again (a directory appeared, events were lost).
    pub fn request_rescan(&self) {
        self.lock().rescan = true;
        self.wake.notify_one();
    }

    /// The config was reloaded: read these targets from now on.
    pub fn retarget(&self, plan: TailPlan) {
        self.lock().retarget = Some(plan);
        self.wake.notify_one();
    }

    /// The tailer should stop.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.wake.notify_one();
    }

    pub fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }

    /// Waits up to `timeout` for news and takes it (shutdown stays set once set).
    pub fn wait(&self, timeout: Duration) -> News {
        let mut news = self.lock();
        if news.touched.is_empty()
            && !news.rescan
            && !news.shutdown
            && news.retarget.is_none()
            && !timeout.is_zero()
        {
            news = self
                .wake
                .wait_timeout(news, timeout)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let shutdown = news.shutdown;
        let taken = std::mem::take(&mut *news);
        news.shutdown = shutdown;
        taken
    }
}

impl crate::discover::watch::WatchSink for Inbox {
    fn touch(&self, path: PathBuf, touch: Touch) {
        Inbox::touch(self, path, touch);
    }

    fn request_rescan(&self) {
        Inbox::request_rescan(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_merge_per_path() {
        let inbox = Inbox::new();
        for _ in 0..1000 {
            inbox.touch("/a".into(), Touch::Data);
        }
        inbox.touch("/a".into(), Touch::Entry);
        inbox.touch("/a".into(), Touch::Data);
        let news = inbox.wait(Duration::ZERO);
        assert_eq!(news.touched.len(), 1);
        assert_eq!(news.touched[&PathBuf::from("/a")], Touch::Entry);
        assert!(inbox.wait(Duration::ZERO).touched.is_empty());
    }

    #[test]
    fn shutdown_sticks() {
        let inbox = Inbox::new();
        inbox.shutdown();
        assert!(inbox.wait(Duration::from_secs(5)).shutdown);
        assert!(inbox.wait(Duration::from_secs(5)).shutdown);
    }
}
