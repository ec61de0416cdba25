//! The reading loop of one journal job, on the input's own thread: catch up from the saved
//! cursor (or from `max_age` ago), then look for changes a few times a second and read what
//! is new after the last entry read. Each pass reopens the journal files, so rotation,
//! archival, vacuuming and new files need no special case; a file that cannot be read is
//! logged once and left out while the others go on.

use super::changes::Snapshot;
use super::fields::{Shape, Skip};
use crate::entry::Timestamp;
use crate::input::records::RecordStep;
use crate::input::{InputContext, InputError};
use crate::metrics::{HostReason, JobLabel, JobReason, ReasonLabel};
use crate::status::JournalCounters;
use prometheus_client::metrics::counter::Counter;
use sdjournal::{Cursor, Journal, JournalConfig};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the journal is looked at for new entries.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Entries read between two sends, so a long catch-up streams and can be stopped.
const BATCH: usize = 1024;

/// What one job reads and how.
pub struct Job {
    pub name: String,
    pub roots: Vec<PathBuf>,
    pub matches: Vec<(String, String)>,
    pub max_age: Duration,
    pub shape: Shape,
    /// Its progress, as `/targets` shows it.
    pub counters: Arc<JournalCounters>,
}

/// Where reading goes on from.
struct Position {
    /// After this entry…
    cursor: Option<Cursor>,
    /// …and no entry older than this (µs since the epoch): entries come in realtime order,
    /// so this lets each file seek instead of scanning from its head.
    since: u64,
}

/// The cursor of the last entry a stopped job read and sent: where the job restarted by a
/// reload goes on. Its entries are still on their way to the outputs, which outlive the reload.
pub type Handover = Arc<Mutex<Option<String>>>;

pub fn run(
    job: Job,
    mut step: RecordStep,
    saved: Option<String>,
    stop: Arc<AtomicBool>,
    handover: Handover,
    ctx: &InputContext,
) -> Result<(), InputError> {
    let now = micros(SystemTime::now());
    let oldest = now.saturating_sub(u64::try_from(job.max_age.as_micros()).unwrap_or(u64::MAX));
    let cursor = saved.and_then(|text| match Cursor::parse(&text) {
        Ok(cursor) => Some(cursor),
        Err(err) => {
            tracing::warn!(job = %job.name, cursor = %text, error = %err,
                "saved journal cursor is not valid; reading from max_age ago");
            None
        }
    });
    let job_label = JobLabel {
        job: job.name.clone(),
    };
    let mut reader = Reader {
        position: Position {
            cursor,
            since: oldest,
        },
        read_counter: ctx
            .metrics
            .journal_entries
            .get_or_create(&job_label)
            .clone(),
        cursor_key: format!("cursor-{}", job.name),
        job,
        errors: HashSet::new(),
        ctx: ctx.clone(),
        stop,
    };
    follow(&mut reader, &mut step, ctx)?;
    // Asked to stop: what the stages hold is sent too, so a restart can go on right after the
    // last entry read instead of after the last one acknowledged.
    if reader.stopped()
        && step.finish()
        && let Some(cursor) = &reader.position.cursor
    {
        *handover.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor.to_string());
    }
    Ok(())
}

fn follow(
    reader: &mut Reader,
    step: &mut RecordStep,
    ctx: &InputContext,
) -> Result<(), InputError> {
    let mut last = None;
    let mut announced = false;
    loop {
        if reader.stopped() {
            return Ok(());
        }
        let snapshot = Snapshot::take(&reader.job.roots);
        if !announced {
            // Ready once the journal was looked at: a long catch-up does not hold readiness.
            announced = true;
            (ctx.started)(&format!("journal/{}", reader.job.name));
        }
        if let Some(newest) = snapshot.newest_realtime() {
            reader
                .job
                .counters
                .newest_us
                .fetch_max(newest, Ordering::Relaxed);
        }
        if last.as_ref() != Some(&snapshot) {
            reader.report_broken(&snapshot);
            let empty = snapshot.is_empty();
            last = Some(snapshot);
            if empty {
                let roots = format!("{:?}", reader.job.roots);
                reader.log_once(
                    "no journal files",
                    format_args!("no journal files under {roots} yet"),
                );
            } else if !reader.pass(step)? {
                return Ok(());
            }
        }
        if step.next_deadline().is_some_and(|at| at <= Instant::now()) && !step.send(Instant::now())
        {
            return Ok(());
        }
        reader.publish_lag();
        std::thread::park_timeout(LOOK_EVERY);
    }
}

struct Reader {
    job: Job,
    position: Position,
    /// Errors already logged, so a broken file is reported once, not at every pass.
    errors: HashSet<String>,
    ctx: InputContext,
    stop: Arc<AtomicBool>,
    read_counter: Counter,
    cursor_key: String,
}

impl Reader {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads everything after the position. False when reading must end (stopped, or the
    /// outputs are gone).
    fn pass(&mut self, step: &mut RecordStep) -> Result<bool, InputError> {
        let journal = match Journal::open_dirs_with_config(&self.job.roots, config()) {
            Ok(journal) => journal,
            Err(err) => {
                self.error("open", format_args!("cannot open the journal: {err}"));
                return Ok(true);
            }
        };
        let mut query = journal.query();
        for (field, value) in &self.job.matches {
            query.match_exact(field, value.as_bytes());
        }
        query.since_realtime(self.position.since);
        if let Some(cursor) = &self.position.cursor {
            query.after_cursor(cursor.clone());
        }
        let entries = match query.iter() {
            Ok(entries) => entries,
            Err(err) => {
                self.error("seek", format_args!("cannot seek the saved cursor: {err}"));
                self.position.cursor = None;
                return Ok(true);
            }
        };
        let mut read = 0usize;
        let mut unmarked = false;
        let counters = self.job.counters.clone();
        counters.reading.store(true, Ordering::Relaxed);
        for item in entries {
            let entry = match item {
                Ok(entry) => entry,
                Err(err) => {
                    self.error("entry", format_args!("skipping what cannot be read: {err}"));
                    continue;
                }
            };
            let cursor = match entry.cursor() {
                Ok(cursor) => cursor,
                Err(err) => {
                    self.error("entry", format_args!("entry without a cursor: {err}"));
                    continue;
                }
            };
            self.position.since = self.position.since.max(entry.realtime_usec());
            counters.entries_read.fetch_add(1, Ordering::Relaxed);
            let _ = counters.first_read_us.compare_exchange(
                0,
                entry.realtime_usec(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            counters
                .newest_us
                .fetch_max(entry.realtime_usec(), Ordering::Relaxed);
            self.read_counter.inc();
            // With stages, each record's cursor is marked (the stages may hold some records
            // back); without, only the last one's before each send.
            let each = step
                .needs_every_checkpoint()
                .then(|| Arc::<str>::from(cursor.to_string()));
            self.position.cursor = Some(cursor);
            let micros = i64::try_from(entry.realtime_usec()).unwrap_or(i64::MAX / 1000);
            let timestamp = Timestamp::from_nanos(micros.saturating_mul(1000));
            match self.job.shape.record(&entry, step.relabeler()) {
                Ok((labels, line)) => {
                    step.push_relabeled(labels, timestamp, &line, each, Instant::now());
                    unmarked = true;
                }
                // Its cursor is not marked: the next record's moves past it anyway, and
                // reading it again after a restart only skips it again.
                Err(Skip::NoMessage) => self.count_dropped("journal_no_message"),
            }
            read += 1;
            if read.is_multiple_of(BATCH) && (!self.send(step, &mut unmarked) || self.stopped()) {
                return Ok(false);
            }
        }
        let sent = self.send(step, &mut unmarked);
        counters.reading.store(false, Ordering::Relaxed);
        self.publish_lag();
        Ok(sent && !self.stopped())
    }

    /// Sends what was read, marking the last cursor read when records were pushed since the
    /// last send.
    fn send(&self, step: &mut RecordStep, unmarked: &mut bool) -> bool {
        if std::mem::take(unmarked)
            && let Some(cursor) = &self.position.cursor
        {
            let text: Arc<str> = Arc::from(cursor.to_string());
            self.job.counters.marked(text.clone(), self.position.since);
            if !step.needs_every_checkpoint() {
                step.checkpoint(text);
            }
        }
        step.send(Instant::now())
    }

    /// Sets the job's lag metrics from the cursor acknowledged now.
    fn publish_lag(&self) {
        let acked = self
            .ctx
            .acks
            .with_table(|t| t.cursor(&self.cursor_key).map(|c| c.as_str().to_string()));
        let progress = self.job.counters.progress(acked.as_deref());
        let job = JobLabel {
            job: self.job.name.clone(),
        };
        let metrics = &self.ctx.metrics;
        metrics
            .journal_lag_seconds
            .get_or_create(&job)
            .set(progress.lag_seconds);
        metrics
            .journal_lag_entries
            .get_or_create(&job)
            .set(i64::try_from(progress.lag_entries).unwrap_or(i64::MAX));
    }

    fn report_broken(&mut self, snapshot: &Snapshot) {
        let broken: Vec<String> = snapshot.broken().map(|p| p.display().to_string()).collect();
        for path in broken {
            self.error(
                "corrupt",
                format_args!("{path} is not a journal file (bad header): left out"),
            );
        }
    }

    /// Logs an error the first time it happens, counting it every time it is new.
    fn error(&mut self, reason: &str, message: std::fmt::Arguments) {
        let text = message.to_string();
        if self.errors.insert(text.clone()) {
            tracing::warn!(job = %self.job.name, "{text}");
            self.ctx
                .metrics
                .lines_dropped
                .get_or_create(&ReasonLabel {
                    reason: format!("journal_{reason}"),
                })
                .inc();
            self.ctx
                .metrics
                .journal_errors
                .get_or_create(&JobReason {
                    job: self.job.name.clone(),
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    fn log_once(&mut self, key: &str, message: std::fmt::Arguments) {
        if self.errors.insert(key.to_string()) {
            tracing::info!(job = %self.job.name, "{message}");
        }
    }

    fn count_dropped(&self, reason: &str) {
        self.ctx
            .metrics
            .dropped_entries
            .get_or_create(&HostReason {
                host: String::new(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// The reader's limits: a journal written while being read is read without a mapping,
/// as sdjournal does by default, so a file truncated under it cannot fault the process.
fn config() -> JournalConfig {
    JournalConfig {
        // Fields up to journald's own limit (`DATA_SIZE_MAX`, 64 MiB) once decompressed.
        max_decompressed_bytes: 64 * 1024 * 1024,
        max_object_size_bytes: 64 * 1024 * 1024,
        max_fields_per_entry: 4096,
        ..JournalConfig::default()
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
