//! Whether the directories a scan looked at changed since: what lets a periodic rescan skip
//! matching the globs again.
//!
//! A file appears in, leaves or is renamed within a directory only by changing that directory's
//! modification time, so when no directory a glob walks has a new mtime (or a new identity),
//! matching the glob again would find the same files. With inotify working the rescan is only
//! a safety net, and on a node with thousands of quiet files the glob walk (a `readdir` and a
//! `stat` per entry) was most of what logferry did while idle; one `stat` per directory is
//! enough to know that the walk can be skipped.
//!
//! Filesystems with coarse timestamps can give a directory changed twice in one tick the same
//! mtime. As git does for its index, a stamp taken while the directory's mtime was that recent
//! is not trusted: the next rescan matches the globs again and takes a fresh one.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A change this close to when the stamp was taken may be hidden by timestamp granularity.
const RACY: Duration = Duration::from_secs(2);

/// What a directory looked like: its identity and modification time, or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(dir: &std::path::Path) -> Option<Stamp> {
        let meta = std::fs::metadata(dir).ok()?;
        Some(Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

/// The directories one scan depended on, each as it was just before the scan read it.
#[derive(Debug, Default)]
pub struct DirStamps {
    dirs: Vec<(PathBuf, Option<Stamp>)>,
    /// Whether some directory had changed so recently that its stamp proves nothing.
    racy: bool,
}

impl DirStamps {
    /// Stamps `dirs` now. Taken before the globs are matched, so that whatever changes while
    /// they are shows as a change next time.
    pub fn take(dirs: impl IntoIterator<Item = PathBuf>) -> DirStamps {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut racy = false;
        let dirs = dirs
            .into_iter()
            .map(|dir| {
                let stamp = Stamp::of(&dir);
                if let Some(s) = stamp {
                    let mtime = Duration::new(
                        s.mtime.0.max(0) as u64,
                        s.mtime.1.clamp(0, 999_999_999) as u32,
                    );
                    racy |= mtime + RACY >= now;
                }
                (dir, stamp)
            })
            .collect();
        DirStamps { dirs, racy }
    }

    /// Whether every directory is as stamped, so that matching the globs again would find the
    /// same files. An empty set proves nothing.
    pub fn unchanged(&self) -> bool {
        !self.racy
            && !self.dirs.is_empty()
            && self
                .dirs
                .iter()
                .all(|(dir, stamp)| Stamp::of(dir) == *stamp)
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::FileTimes;

    /// Sets a directory's mtime into the past, as if nothing had happened in it for a while.
    fn age(dir: &std::path::Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        let handle = std::fs::File::open(dir).expect("open dir");
        handle
            .set_times(FileTimes::new().set_modified(old))
            .expect("set mtime");
    }

    #[test]
    fn quiet_directories_are_unchanged_and_any_entry_change_is_seen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("logs");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("a.log"), "x\n").expect("write");
        age(&dir);
        let stamps = DirStamps::take([dir.clone()]);
        assert!(stamps.unchanged());
        // Writing into a file does not touch the directory.
        std::fs::write(dir.join("a.log"), "more\n").expect("write");
        assert!(stamps.unchanged());
        std::fs::write(dir.join("b.log"), "x\n").expect("create");
        assert!(!stamps.unchanged(), "a new file is a change");

        age(&dir);
        let stamps = DirStamps::take([dir.clone()]);
        std::fs::rename(dir.join("b.log"), dir.join("b.log.1")).expect("rename");
        assert!(!stamps.unchanged(), "a rename is a change");

        age(&dir);
        let stamps = DirStamps::take([dir.clone()]);
        std::fs::remove_file(dir.join("a.log")).expect("remove");
        assert!(!stamps.unchanged(), "a removal is a change");
    }

    #[test]
    fn a_directory_replaced_or_appearing_is_a_change() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("logs");
        let stamps = DirStamps::take([dir.clone()]);
        assert!(stamps.unchanged(), "still absent");
        std::fs::create_dir(&dir).expect("mkdir");
        assert!(!stamps.unchanged(), "it appeared");

        age(&dir);
        let stamps = DirStamps::take([dir.clone()]);
        std::fs::remove_dir(&dir).expect("rmdir");
        std::fs::create_dir(&dir).expect("mkdir");
        age(&dir);
        assert!(!stamps.unchanged(), "same mtime, another directory");
    }

    #[test]
    fn a_recent_change_is_not_trusted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let stamps = DirStamps::take([tmp.path().to_path_buf()]);
        assert!(!stamps.unchanged());
        assert!(!DirStamps::default().unchanged());
    }
}
