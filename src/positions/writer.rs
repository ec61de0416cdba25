//! Writing the positions file soon after acknowledgements move it.
//!
//! Everything acknowledged but not yet on disk is shipped again after a crash, so the file
//! should follow the acknowledgements closely; but each write is two fsyncs, so writes are
//! coalesced: the first change after a quiet spell is written at once (a few milliseconds later,
//! so that the rest of its burst comes along), further changes at most
//! once per interval, and nothing is written while nothing changes. Every write renders every
//! file's entry, so a table of thousands of files is paced by its size as well: a write of
//! `n` bytes waits at least `n` / [`WRITE_RATE`] before the next, which bounds what keeping the
//! file fresh costs (about a megabyte per second) whatever the number of files, and leaves the
//! interval of ordinary tables (a few hundred files, tens of kilobytes) as it is. A failed write (a full
//! disk) leaves the previous file whole; it is logged, counted and tried again with a growing
//! delay, each try writing the newest positions.
//!
//! The writer is a thread of its own rather than a task: fsync blocks, sometimes for long on a
//! busy disk, and must hold up neither reading nor shipping.

use super::file::save;
use prometheus_client::metrics::counter::Counter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a change waits for the write that carries it, while writes succeed.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(200);
/// Bytes of positions file written per second at most, while changes keep coming: 10,000 files
/// (about a megabyte) are written once a second rather than five times.
pub const WRITE_RATE: u64 = 1 << 20;
/// How long a write waits after the change that woke it: an answer from Loki settles many
/// chunks, one at a time, and the write should carry all of them rather than the first few.
const GATHER: Duration = Duration::from_millis(10);
/// The shortest interval `positions.sync_period` may ask for.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Delays between tries after a failed write: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_LAST: Duration = Duration::from_secs(30);
/// At shutdown: tries of the final write, and the pause between them.
const FINAL_TRIES: u32 = 3;
const FINAL_PAUSE: Duration = Duration::from_millis(100);

/// The interval between writes for a `positions.sync_period`: it may shorten the interval,
/// never lengthen it past [`WRITE_INTERVAL`] (a longer wait only means more lines shipped
/// again after a crash).
pub fn write_interval(sync_period: Duration) -> Duration {
    sync_period.clamp(MIN_INTERVAL, WRITE_INTERVAL)
}

/// Where the positions to write come from: the acknowledged positions table.
pub trait Changes: Send + Sync + 'static {
    /// From now on, `wake` is to be sent a message when the positions change after
    /// [`take`](Self::take) (a full channel means a wake-up is pending already).
    fn subscribe(&self, wake: SyncSender<()>);
    /// The file text, if anything changed since the last call.
    fn take(&self) -> Option<String>;
    /// The text taken last was not written: the next [`take`](Self::take) must return text.
    fn restore(&self);
}

/// Counters of the writes, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct WriteCounters {
    pub writes: Counter,
    pub errors: Counter,
}

/// The running writer; [`finish`](Self::finish) writes the last positions and stops it.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Wakes the thread to see `stop` (the same channel that says the positions changed).
    poke: SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing the positions from `changes` to `path`, at most once per `interval`.
    pub fn start(
        path: PathBuf,
        interval: Duration,
        changes: Arc<dyn Changes>,
        counters: WriteCounters,
    ) -> std::io::Result<Writer> {
        let (poke, wake) = sync_channel(1);
        changes.subscribe(poke.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let mut job = Job {
            path,
            interval,
            changes,
            counters,
            stop: stop.clone(),
            failures: 0,
        };
        let thread = std::thread::Builder::new()
            .name("positions".into())
            .spawn(move || job.run(&wake))?;
        Ok(Writer {
            stop,
            poke,
            thread: Some(thread),
        })
    }

    /// Writes what changed since the last write (retrying briefly if that fails) and stops.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.poke.try_send(());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the positions writer failed; positions since its last write are lost");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

struct Job {
    path: PathBuf,
    interval: Duration,
    changes: Arc<dyn Changes>,
    counters: WriteCounters,
    stop: Arc<AtomicBool>,
    /// Failed writes in a row.
    failures: u32,
}

impl Job {
    fn run(&mut self, wake: &Receiver<()>) {
        // The first change may be written at once.
        let mut next = Instant::now();
        'changes: while !self.stopping() {
            if wake.recv().is_err() {
                break;
            }
            // Let more changes gather until the write is due.
            next = next.max(Instant::now() + GATHER);
            loop {
                if self.stopping() {
                    break 'changes;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(next - now) {
                    break 'changes;
                }
            }
            next = Instant::now() + self.write_once();
        }
        self.final_write();
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Writes the changes, if any, and returns how long to wait before the next write: the
    /// interval (longer for a big file), or the retry delay after a failure.
    fn write_once(&mut self) -> Duration {
        self.try_write().unwrap_or_else(|retry| retry)
    }

    /// Writes the changes, if any. `Err` is the delay before trying again after a failure.
    fn try_write(&mut self) -> Result<Duration, Duration> {
        let Some(text) = self.changes.take() else {
            return Ok(self.interval);
        };
        match save(&self.path, &text) {
            Ok(()) => {
                self.counters.writes.inc();
                if self.failures > 0 {
                    tracing::info!(path = %self.path.display(), failed_tries = self.failures,
                        "positions file written again");
                }
                self.failures = 0;
                Ok(paced_interval(self.interval, text.len()))
            }
            Err(e) => {
                self.counters.errors.inc();
                self.changes.restore();
                let retry = RETRY_FIRST
                    .saturating_mul(1 << self.failures.min(16))
                    .min(RETRY_LAST);
                self.failures += 1;
                tracing::warn!(path = %self.path.display(), error = %e, ?retry,
                    "cannot write the positions file; the previous one is kept, trying again");
                Err(retry)
            }
        }
    }

    fn final_write(&mut self) {
        for _ in 0..FINAL_TRIES {
            if self.try_write().is_ok() {
                return;
            }
            std::thread::sleep(FINAL_PAUSE);
        }
        tracing::error!(path = %self.path.display(),
            "positions not written at shutdown; lines since the last write will be read again");
    }
}

/// The wait after writing `bytes`: the configured interval, or longer for a file so big that
/// writing it that often would exceed [`WRITE_RATE`].
fn paced_interval(interval: Duration, bytes: usize) -> Duration {
    let pace = Duration::from_secs_f64(bytes as f64 / WRITE_RATE as f64);
    interval.max(pace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::file::temp_path;
    use std::sync::Mutex;

    /// A stand-in for the table: a version number that changes when told to.
    #[derive(Default)]
    struct Counting {
        state: Mutex<(u64, bool, Option<SyncSender<()>>)>,
    }

    impl Counting {
        fn bump(&self) {
            let mut st = self.state.lock().unwrap();
            st.0 += 1;
            if !st.1 {
                st.1 = true;
                if let Some(tx) = &st.2 {
                    let _ = tx.try_send(());
                }
            }
        }
    }

    impl Changes for Counting {
        fn subscribe(&self, wake: SyncSender<()>) {
            self.state.lock().unwrap().2 = Some(wake);
        }
        fn take(&self) -> Option<String> {
            let mut st = self.state.lock().unwrap();
            std::mem::replace(&mut st.1, false).then(|| format!("version {}\n", st.0))
        }
        fn restore(&self) {
            let mut st = self.state.lock().unwrap();
            st.1 = true;
            if let Some(tx) = &st.2 {
                let _ = tx.try_send(());
            }
        }
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_change_reaches_the_disk_soon_and_bursts_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        let source = Arc::new(Counting::default());
        let counters = WriteCounters::default();
        let writer = Writer::start(
            path.clone(),
            Duration::from_secs(1),
            source.clone(),
            counters.clone(),
        )
        .unwrap();
        source.bump();
        assert!(wait_for(|| counters.writes.get() == 1));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 1\n");
        // A burst of changes right after a write: written together, once the interval is over.
        for _ in 0..50 {
            source.bump();
        }
        assert!(wait_for(|| counters.writes.get() == 2));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 51\n");
        // Nothing changes: nothing is written.
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(counters.writes.get(), 2);
        source.bump();
        writer.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 52\n");
        assert_eq!(counters.writes.get(), 3);
    }

    #[test]
    fn a_failed_write_is_counted_retried_and_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        let source = Arc::new(Counting::default());
        let counters = WriteCounters::default();
        let writer = Writer::start(
            path.clone(),
            Duration::from_millis(10),
            source.clone(),
            counters.clone(),
        )
        .unwrap();
        source.bump();
        assert!(wait_for(|| counters.writes.get() == 1));
        // Writes through the temporary file now fail as on a full disk, until the failed
        // write removes the link; the retry then succeeds.
        std::os::unix::fs::symlink("/dev/full", temp_path(&path)).unwrap();
        source.bump();
        assert!(wait_for(|| counters.errors.get() == 1));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 1\n");
        assert!(wait_for(|| counters.writes.get() == 2));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 2\n");
        writer.finish();
        assert_eq!(counters.errors.get(), 1);
    }

    #[test]
    fn big_tables_are_written_less_often() {
        // A few hundred files: the interval as configured.
        let small = 300 * 120;
        assert_eq!(paced_interval(WRITE_INTERVAL, small), WRITE_INTERVAL);
        // Ten thousand files: about once a second.
        let big = 10_000 * 110;
        let wait = paced_interval(WRITE_INTERVAL, big);
        assert!(
            wait > Duration::from_millis(900) && wait < Duration::from_millis(1200),
            "{wait:?}"
        );
    }

    #[test]
    fn sync_period_only_shortens_the_interval() {
        assert_eq!(write_interval(Duration::from_secs(10)), WRITE_INTERVAL);
        assert_eq!(
            write_interval(Duration::from_millis(50)),
            Duration::from_millis(50)
        );
        assert_eq!(write_interval(Duration::ZERO), MIN_INTERVAL);
    }
}
