//! What an operator sees on `/targets` and `/api/v1/targets`: each job's targets and files,
//! each listener (syslog), each journal job, and each client's state.
//!
//! The tailer publishes a snapshot of its files (at most a few times a second while busy,
//! never while idle), clients publish each push result; positions are read from the
//! acknowledger when a page is asked for, so they are always current.

use crate::acknowledge::Acknowledger;
use crate::positions::FileId;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// What a file is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Read within the last 10 seconds.
    Reading,
    /// Open, nothing new lately.
    Idle,
    /// Rotated away or deleted; being read to its end.
    Draining,
    /// Matched, but it cannot be opened (see `error`).
    Unreadable,
}

/// One file, as the tailer last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub path: String,
    pub size: u64,
    /// Acknowledged position (filled in when the page is built).
    pub position: u64,
    /// Bytes not acknowledged yet.
    pub lag_bytes: u64,
    /// Unix seconds of the last read that returned data.
    pub last_read: Option<f64>,
    pub state: FileState,
    pub error: Option<String>,
    #[serde(skip)]
    pub id: Option<FileId>,
    #[serde(skip)]
    pub target: usize,
}

/// One target (static config) and its files.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub labels: BTreeMap<String, String>,
    pub path: String,
    pub exclude: Option<String>,
    pub files: Vec<FileStatus>,
}

/// One job and its targets.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub targets: Vec<TargetStatus>,
}

/// A target as configured (without its files).
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub job: String,
    pub labels: BTreeMap<String, String>,
    pub path: String,
    pub exclude: Option<String>,
}

/// One client's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientStatus {
    pub url: String,
    pub host: String,
    /// How full its queue is, 0 to 1.
    pub queue_fill: f64,
    /// Unix seconds of the last push attempt.
    pub last_push: Option<f64>,
    /// `204`, another status code, or the connection error.
    pub last_result: Option<String>,
    /// Whether the batch in hand failed and is being retried.
    pub retrying: bool,
    /// Attempts made for the batch in hand.
    pub attempt: u32,
    pub sent_entries: u64,
    pub dropped_entries: u64,
}

/// A listener's live counts, updated by the listener as it goes.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub connections: AtomicU64,
    pub messages: AtomicU64,
}

/// One listener (a syslog socket), as `/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    pub job: String,
    /// `tcp`, `tcp+tls` or `udp`.
    pub protocol: String,
    pub address: String,
    pub open_connections: u64,
    pub messages_received: u64,
}

/// A journal job's progress, updated by its reader as it goes.
#[derive(Debug, Default)]
pub struct JournalCounters {
    pub entries_read: AtomicU64,
    /// Realtime (µs since the epoch) of the newest entry in the journal files (their headers).
    pub newest_us: AtomicU64,
    /// Realtime of the first entry read since the job started: how far back the lag goes
    /// while nothing was acknowledged yet.
    pub first_read_us: AtomicU64,
    /// Whether the reader is in the middle of the journal (not everything was read yet).
    pub reading: AtomicBool,
    /// Cursors handed to the outputs and not known to be acknowledged, oldest first, and the
    /// last one found acknowledged (entries read up to it, its realtime).
    marks: Mutex<(VecDeque<JournalMark>, Option<Acked>)>,
}

/// Entries read up to the acknowledged cursor, and its entry's realtime (µs).
type Acked = (u64, u64);

#[derive(Debug)]
struct JournalMark {
    cursor: Arc<str>,
    realtime_us: u64,
    /// Entries read up to it.
    read: u64,
}

/// Marks kept at most: far more sends than can be on their way at once.
const JOURNAL_MARKS: usize = 10_000;

/// How far the acknowledged cursor is behind.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JournalProgress {
    pub entries_acknowledged: u64,
    pub lag_entries: u64,
    /// Unix seconds of the last entry acknowledged (known once one was, since the start).
    pub acknowledged_entry_time: Option<f64>,
    pub lag_seconds: f64,
}

impl JournalCounters {
    /// The reader handed everything up to `cursor` (the entry at `realtime_us`) to the outputs.
    pub fn marked(&self, cursor: Arc<str>, realtime_us: u64) {
        let read = self.entries_read.load(Ordering::Relaxed);
        let (marks, _) = &mut *lock(&self.marks);
        if marks.len() >= JOURNAL_MARKS {
            marks.pop_front();
        }
        marks.push_back(JournalMark {
            cursor,
            realtime_us,
            read,
        });
    }

    /// Progress, given the cursor acknowledged now (as the positions table has it). The lag
    /// in seconds runs from the last entry acknowledged to the newest entry in the journal;
    /// it is 0 when everything was read and acknowledged.
    pub fn progress(&self, acknowledged: Option<&str>) -> JournalProgress {
        let read = self.entries_read.load(Ordering::Relaxed);
        let newest = self.newest_us.load(Ordering::Relaxed);
        let (acked_read, acked_us) = {
            let (marks, last) = &mut *lock(&self.marks);
            let found =
                acknowledged.and_then(|acked| marks.iter().rposition(|m| &*m.cursor == acked));
            if let Some(index) = found {
                marks.drain(..index);
                *last = marks.front().map(|m| (m.read, m.realtime_us));
            }
            match *last {
                Some((read, us)) => (read, Some(us)),
                None => (0, None),
            }
        };
        let lag_entries = read.saturating_sub(acked_read);
        let caught_up = lag_entries == 0 && !self.reading.load(Ordering::Relaxed);
        let from = acked_us.unwrap_or_else(|| self.first_read_us.load(Ordering::Relaxed));
        let lag_seconds = if caught_up || from == 0 {
            0.0
        } else {
            newest.saturating_sub(from) as f64 / 1e6
        };
        JournalProgress {
            entries_acknowledged: acked_read,
            lag_entries,
            acknowledged_entry_time: acked_us.map(|us| us as f64 / 1e6),
            lag_seconds,
        }
    }
}

/// A journal job as configured.
#[derive(Debug, Clone)]
pub struct JournalInfo {
    pub job: String,
    pub paths: Vec<String>,
    /// Its key in the positions file (`cursor-<job>`).
    pub cursor_key: String,
}

/// One journal job, as `/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JournalStatus {
    pub job: String,
    pub paths: Vec<String>,
    /// The acknowledged cursor (what a restart resumes after).
    pub cursor: Option<String>,
    pub entries_read: u64,
    pub entries_acknowledged: u64,
    pub lag_entries: u64,
    /// Unix seconds of the newest entry in the journal files.
    pub newest_entry_time: Option<f64>,
    pub acknowledged_entry_time: Option<f64>,
    pub lag_seconds: f64,
}

/// One container read through a Docker daemon, as `/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    pub job: String,
    pub id: String,
    pub name: String,
    /// `following`, `stopped`, `waiting` (for the daemon or after an error).
    pub state: String,
    pub error: Option<String>,
    /// Discovered labels, before relabeling.
    pub labels: BTreeMap<String, String>,
    /// Where the acknowledged position is recorded (`cursor-<id>`).
    #[serde(skip)]
    pub key: String,
    /// The acknowledged position: unix time of the last line delivered.
    pub position: Option<String>,
}

/// The whole page, as `/api/v1/targets` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub jobs: Vec<JobStatus>,
    pub listeners: Vec<ListenerStatus>,
    pub journals: Vec<JournalStatus>,
    pub containers: Vec<ContainerStatus>,
    pub clients: Vec<ClientStatus>,
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    targets: Mutex<Vec<TargetInfo>>,
    files: Mutex<Vec<FileStatus>>,
    listeners: Mutex<BTreeMap<String, (ListenerStatus, Arc<ListenerCounters>)>>,
    journals: Mutex<BTreeMap<String, (JournalInfo, Arc<JournalCounters>)>>,
    containers: Mutex<BTreeMap<String, Vec<ContainerStatus>>>,
    clients: Mutex<BTreeMap<u64, ClientStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unix seconds of a time.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    pub fn set_targets(&self, targets: Vec<TargetInfo>) {
        *lock(&self.targets) = targets;
    }

    pub fn set_files(&self, files: Vec<FileStatus>) {
        *lock(&self.files) = files;
    }

    /// Adds a client under `key`.
    pub fn add_client(&self, key: u64, url: String, host: String) {
        lock(&self.clients).insert(
            key,
            ClientStatus {
                url,
                host,
                ..ClientStatus::default()
            },
        );
    }

    /// Updates the client with `key`; a client removed from the page (by a reload) stays
    /// removed, even while it finishes what it holds.
    pub fn update_client(&self, key: u64, f: impl FnOnce(&mut ClientStatus)) {
        if let Some(client) = lock(&self.clients).get_mut(&key) {
            f(client);
        }
    }

    pub fn remove_client(&self, key: u64) {
        lock(&self.clients).remove(&key);
    }

    /// Shows a listener under `key` (its input's key), with counts read at each page.
    pub fn add_listener(&self, key: &str, info: ListenerStatus, counters: Arc<ListenerCounters>) {
        lock(&self.listeners).insert(key.to_string(), (info, counters));
    }

    pub fn remove_listener(&self, key: &str) {
        lock(&self.listeners).remove(key);
    }

    /// Shows a journal job under `key` (its input's key), with progress read at each page.
    pub fn add_journal(&self, key: &str, info: JournalInfo, counters: Arc<JournalCounters>) {
        lock(&self.journals).insert(key.to_string(), (info, counters));
    }

    pub fn remove_journal(&self, key: &str) {
        lock(&self.journals).remove(key);
    }

    /// Shows the containers of the input `key`, replacing what it showed before (an empty
    /// list removes them).
    pub fn set_containers(&self, key: &str, rows: Vec<ContainerStatus>) {
        let mut containers = lock(&self.containers);
        if rows.is_empty() {
            containers.remove(key);
        } else {
            containers.insert(key.to_string(), rows);
        }
    }

    /// Everything, with current positions.
    pub fn overview(&self, acks: &Acknowledger) -> Overview {
        let targets = lock(&self.targets).clone();
        let mut files = lock(&self.files).clone();
        let now = unix_seconds(SystemTime::now());
        acks.with_table(|table| {
            for f in &mut files {
                f.position = f.id.and_then(|id| table.offset(id)).unwrap_or(0);
                // The size is from the tailer's last snapshot (at most a second old), the
                // position is live: a file that grew since is at least that long.
                f.size = f.size.max(f.position);
                f.lag_bytes = f.size - f.position;
                if f.state == FileState::Reading && f.last_read.is_none_or(|t| now - t > 10.0) {
                    f.state = FileState::Idle;
                }
            }
        });
        let mut jobs: Vec<JobStatus> = Vec::new();
        for (index, t) in targets.into_iter().enumerate() {
            let target = TargetStatus {
                labels: t.labels,
                path: t.path,
                exclude: t.exclude,
                files: files
                    .iter()
                    .filter(|f| f.target == index)
                    .cloned()
                    .collect(),
            };
            match jobs.iter_mut().find(|j| j.job == t.job) {
                Some(job) => job.targets.push(target),
                None => jobs.push(JobStatus {
                    job: t.job,
                    targets: vec![target],
                }),
            }
        }
        let listeners = lock(&self.listeners)
            .values()
            .map(|(info, counters)| ListenerStatus {
                open_connections: counters.connections.load(Ordering::Relaxed),
                messages_received: counters.messages.load(Ordering::Relaxed),
                ..info.clone()
            })
            .collect();
        let journals = lock(&self.journals)
            .values()
            .map(|(info, counters)| {
                let cursor =
                    acks.with_table(|t| t.cursor(&info.cursor_key).map(|c| c.as_str().to_string()));
                let progress = counters.progress(cursor.as_deref());
                let newest = counters.newest_us.load(Ordering::Relaxed);
                JournalStatus {
                    job: info.job.clone(),
                    paths: info.paths.clone(),
                    cursor,
                    entries_read: counters.entries_read.load(Ordering::Relaxed),
                    entries_acknowledged: progress.entries_acknowledged,
                    lag_entries: progress.lag_entries,
                    newest_entry_time: (newest > 0).then(|| newest as f64 / 1e6),
                    acknowledged_entry_time: progress.acknowledged_entry_time,
                    lag_seconds: progress.lag_seconds,
                }
            })
            .collect();
        let mut containers: Vec<ContainerStatus> =
            lock(&self.containers).values().flatten().cloned().collect();
        acks.with_table(|table| {
            for c in &mut containers {
                c.position = table.cursor(&c.key).map(|p| p.as_str().to_string());
            }
        });
        let clients = lock(&self.clients).values().cloned().collect();
        Overview {
            jobs,
            listeners,
            journals,
            containers,
            clients,
        }
    }
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time_cell(t: Option<f64>, now: f64) -> String {
    match t {
        Some(t) => format!("{:.1} s ago", (now - t).max(0.0)),
        None => "never".into(),
    }
}

/// The `/targets` page: plain HTML, no script, no external assets.
pub fn render_html(overview: &Overview) -> String {
    use std::fmt::Write;
    let now = unix_seconds(SystemTime::now());
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>logferry targets</title>\n\
         <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}\
         th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
         .reading{color:#070}.idle{color:#555}.draining{color:#a60}.unreadable{color:#b00}code{font-size:.95em}</style>\n\
         </head><body>\n<h1>logferry targets</h1>\n",
    );
    for job in &overview.jobs {
        let _ = writeln!(h, "<h2>Job <code>{}</code></h2>", esc(&job.job));
        for t in &job.targets {
            let labels: Vec<String> = t
                .labels
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", esc(k), esc(v)))
                .collect();
            let _ = writeln!(
                h,
                "<p>Target <code>{}</code>{} — labels <code>{{{}}}</code> — {} file(s)</p>",
                esc(&t.path),
                t.exclude
                    .as_ref()
                    .map(|e| format!(" minus <code>{}</code>", esc(e)))
                    .unwrap_or_default(),
                labels.join(", "),
                t.files.len()
            );
            if t.files.is_empty() {
                continue;
            }
            h.push_str("<table class=\"files\"><tr><th>file</th><th>state</th><th>position</th><th>size</th><th>lag (bytes)</th><th>last read</th></tr>\n");
            for f in &t.files {
                let state = match f.state {
                    FileState::Reading => "reading",
                    FileState::Idle => "idle",
                    FileState::Draining => "rotated, draining",
                    FileState::Unreadable => "unreadable",
                };
                let class = match f.state {
                    FileState::Reading => "reading",
                    FileState::Idle => "idle",
                    FileState::Draining => "draining",
                    FileState::Unreadable => "unreadable",
                };
                let error = f
                    .error
                    .as_ref()
                    .map(|e| format!(": {}", esc(e)))
                    .unwrap_or_default();
                let _ = writeln!(
                    h,
                    "<tr><td><code>{}</code></td><td class=\"{class}\">{state}{error}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(&f.path),
                    f.position,
                    f.size,
                    f.lag_bytes,
                    time_cell(f.last_read, now)
                );
            }
            h.push_str("</table>\n");
        }
    }
    if !overview.listeners.is_empty() {
        h.push_str("<h2>Listeners</h2>\n<table class=\"listeners\"><tr><th>job</th><th>protocol</th><th>address</th><th>open connections</th><th>messages received</th></tr>\n");
        for l in &overview.listeners {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&l.job),
                esc(&l.protocol),
                esc(&l.address),
                l.open_connections,
                l.messages_received
            );
        }
        h.push_str("</table>\n");
    }
    if !overview.journals.is_empty() {
        h.push_str("<h2>Journal</h2>\n<table class=\"journals\"><tr><th>job</th><th>path</th><th>entries read</th><th>acknowledged</th><th>lag (entries)</th><th>lag (seconds)</th><th>acknowledged cursor</th></tr>\n");
        for j in &overview.journals {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td><code>{}</code></td></tr>",
                esc(&j.job),
                esc(&j.paths.join(" ")),
                j.entries_read,
                j.entries_acknowledged,
                j.lag_entries,
                j.lag_seconds,
                esc(j.cursor.as_deref().unwrap_or("none yet"))
            );
        }
        h.push_str("</table>\n");
    }
    if !overview.containers.is_empty() {
        h.push_str("<h2>Containers</h2>\n<table class=\"containers\"><tr><th>job</th><th>container</th><th>id</th><th>state</th><th>position</th><th>labels</th></tr>\n");
        for c in &overview.containers {
            let labels: Vec<String> = c
                .labels
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", esc(k), esc(v)))
                .collect();
            let error = c
                .error
                .as_ref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td>{}{error}</td><td>{}</td><td><code>{{{}}}</code></td></tr>",
                esc(&c.job),
                esc(&c.name),
                esc(c.id.get(..12).unwrap_or(&c.id)),
                esc(&c.state),
                esc(c.position.as_deref().unwrap_or("none yet")),
                labels.join(", ")
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Clients</h2>\n");
    if overview.clients.is_empty() {
        h.push_str("<p>No client: entries are printed to standard output.</p>\n");
    } else {
        h.push_str("<table class=\"clients\"><tr><th>url</th><th>queue</th><th>last push</th><th>result</th><th>retry</th><th>sent entries</th><th>dropped entries</th></tr>\n");
        for c in &overview.clients {
            let retry = if c.retrying {
                format!("retrying (attempt {})", c.attempt)
            } else {
                "no".into()
            };
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"n\">{:.0}%</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&c.url),
                c.queue_fill * 100.0,
                time_cell(c.last_push, now),
                esc(c.last_result.as_deref().unwrap_or("none yet")),
                retry,
                c.sent_entries,
                c.dropped_entries
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<p><a href=\"/api/v1/targets\">JSON</a> · <a href=\"/metrics\">metrics</a></p>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::Table;

    #[test]
    fn journal_progress_follows_the_acknowledged_cursor() {
        let c = JournalCounters::default();
        c.newest_us.store(100_000_000, Ordering::Relaxed);
        c.first_read_us.store(10_000_000, Ordering::Relaxed);
        c.entries_read.store(10, Ordering::Relaxed);
        c.marked("a".into(), 40_000_000);
        c.entries_read.store(20, Ordering::Relaxed);
        c.marked("b".into(), 90_000_000);
        let p = c.progress(None);
        assert_eq!(
            (p.lag_entries, p.lag_seconds),
            (20, 90.0),
            "from the first read"
        );
        let p = c.progress(Some("a"));
        assert_eq!((p.entries_acknowledged, p.lag_entries), (10, 10));
        assert_eq!(p.lag_seconds, 60.0);
        assert_eq!(p.acknowledged_entry_time, Some(40.0));
        let p = c.progress(Some("b"));
        assert_eq!((p.lag_entries, p.lag_seconds), (0, 0.0), "caught up");
        c.reading.store(true, Ordering::Relaxed);
        assert_eq!(c.progress(Some("b")).lag_seconds, 10.0, "more to read");
        assert_eq!(
            c.progress(Some("from an earlier run")).entries_acknowledged,
            20,
            "an unknown cursor keeps the last one found"
        );
    }

    #[test]
    fn html_escapes_and_lists_files_and_clients() {
        let board = StatusBoard::new();
        board.set_targets(vec![TargetInfo {
            job: "sys<tem>".into(),
            labels: BTreeMap::from([("job".into(), "varlogs".into())]),
            path: "/var/log/*log".into(),
            exclude: None,
        }]);
        board.set_files(vec![FileStatus {
            path: "/var/log/a&b.log".into(),
            size: 100,
            position: 0,
            lag_bytes: 0,
            last_read: None,
            state: FileState::Idle,
            error: None,
            id: None,
            target: 0,
        }]);
        board.add_client(1, "http://l:3100/loki/api/v1/push".into(), "l:3100".into());
        board.update_client(1, |c| c.last_result = Some("204".into()));
        board.update_client(2, |c| c.last_result = Some("ghost".into()));
        let overview = board.overview(&Acknowledger::new(Table::default()));
        assert_eq!(overview.jobs[0].targets[0].files[0].lag_bytes, 100);
        let html = render_html(&overview);
        assert!(html.contains("sys&lt;tem&gt;") && html.contains("/var/log/a&amp;b.log"));
        assert!(html.contains("<td class=\"n\">100</td>") && html.contains("204"));
        assert!(!html.contains("<script"));
        assert_eq!(
            overview.clients.len(),
            1,
            "updates to unknown clients add nothing"
        );
    }
}
