//! The process's metrics, served on `/metrics` in Prometheus text format.
//!
//! Names follow Promtail's with `logferry_` for `promtail_` where the meaning is the same (see
//! the README's table). Hot paths hold handles (a per-file counter is looked up once when the
//! file is opened), so updating a metric is an atomic add, never a map lookup per line.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

mod files;
pub use files::{FileFamilies, FileSeries};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostReason {
    pub host: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostStatus {
    pub host: String,
    pub status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobReason {
    pub job: String,
    pub reason: String,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 10))
}

/// Every metric logferry exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Bytes and lines read, size, acknowledged position and lag of each file.
    pub files: Arc<FileFamilies>,
    pub active_files: Gauge,
    pub lines_dropped: Family<ReasonLabel, Counter>,
    pub lines_truncated: Counter,
    pub invalid_utf8_lines: Counter,
    pub rotations: Counter,
    pub truncations: Counter,
    pub unread_bytes_of_deleted: Counter,
    pub sent_entries: Family<HostLabel, Counter>,
    pub sent_bytes: Family<HostLabel, Counter>,
    pub encoded_bytes: Family<HostLabel, Counter>,
    pub dropped_entries: Family<HostReason, Counter>,
    pub dropped_bytes: Family<HostReason, Counter>,
    pub retries: Family<HostLabel, Counter>,
    pub request_duration: Family<HostStatus, Histogram, fn() -> Histogram>,
    pub batch_bytes: Family<HostLabel, Histogram, fn() -> Histogram>,
    pub queue_fill: Family<HostLabel, Gauge<f64, AtomicU64>>,
    pub positions_write_errors: Counter,
    pub positions_writes: Counter,
    pub reload_success: Counter,
    pub reload_failures: Counter,
    pub last_reload_successful: Gauge,
    pub last_reload_success_time: Gauge<f64, AtomicU64>,
    pub journal_entries: Family<JobLabel, Counter>,
    pub journal_errors: Family<JobReason, Counter>,
    pub journal_lag_entries: Family<JobLabel, Gauge>,
    pub journal_lag_seconds: Family<JobLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("logferry")),
            files: Arc::default(),
            active_files: Gauge::default(),
            lines_dropped: Family::default(),
            lines_truncated: Counter::default(),
            invalid_utf8_lines: Counter::default(),
            rotations: Counter::default(),
            truncations: Counter::default(),
            unread_bytes_of_deleted: Counter::default(),
            sent_entries: Family::default(),
            sent_bytes: Family::default(),
            encoded_bytes: Family::default(),
            dropped_entries: Family::default(),
            dropped_bytes: Family::default(),
            retries: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            batch_bytes: Family::new_with_constructor(batch_histogram),
            queue_fill: Family::default(),
            positions_write_errors: Counter::default(),
            positions_writes: Counter::default(),
            reload_success: Counter::default(),
            reload_failures: Counter::default(),
            last_reload_successful: Gauge::default(),
            last_reload_success_time: Gauge::default(),
            journal_entries: Family::default(),
            journal_errors: Family::default(),
            journal_lag_entries: Family::default(),
            journal_lag_seconds: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register_collector(Box::new(m.files.clone()));
            r.register("files_active", "Files being read", m.active_files.clone());
            r.register(
                "journal_entries_read",
                "Journal entries read, per journal job",
                m.journal_entries.clone(),
            );
            r.register(
                "journal_errors",
                "Journal files or entries that could not be read, per journal job and reason",
                m.journal_errors.clone(),
            );
            r.register(
                "journal_lag_entries",
                "Journal entries read and not acknowledged yet, per journal job",
                m.journal_lag_entries.clone(),
            );
            r.register(
                "journal_lag_seconds",
                "Seconds from the last acknowledged journal entry to the newest in the journal, per journal job",
                m.journal_lag_seconds.clone(),
            );
            r.register(
                "lines_dropped",
                "Lines dropped while reading, by reason",
                m.lines_dropped.clone(),
            );
            r.register(
                "lines_truncated",
                "Lines cut to limits_config.max_line_size",
                m.lines_truncated.clone(),
            );
            r.register(
                "invalid_utf8_lines",
                "Lines in which invalid UTF-8 was replaced",
                m.invalid_utf8_lines.clone(),
            );
            r.register(
                "file_rotations",
                "Files that left their path (rotated or removed)",
                m.rotations.clone(),
            );
            r.register(
                "file_truncations",
                "Files found truncated and read again from the start",
                m.truncations.clone(),
            );
            r.register(
                "unread_bytes_of_deleted_files",
                "Bytes of deleted files closed before their end",
                m.unread_bytes_of_deleted.clone(),
            );
            r.register(
                "sent_entries",
                "Entries delivered, per client host",
                m.sent_entries.clone(),
            );
            r.register(
                "sent_bytes",
                "Bytes of lines delivered, per client host",
                m.sent_bytes.clone(),
            );
            r.register(
                "encoded_bytes",
                "Bytes of request bodies sent, per client host",
                m.encoded_bytes.clone(),
            );
            r.register(
                "dropped_entries",
                "Entries dropped, per client host and reason",
                m.dropped_entries.clone(),
            );
            r.register(
                "dropped_bytes",
                "Bytes of lines dropped, per client host and reason",
                m.dropped_bytes.clone(),
            );
            r.register(
                "batch_retries",
                "Push requests retried, per client host",
                m.retries.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Push request duration by host and status code",
                m.request_duration.clone(),
            );
            r.register(
                "batch_size_bytes",
                "Bytes of lines per batch sent",
                m.batch_bytes.clone(),
            );
            r.register(
                "client_queue_fill_ratio",
                "How full each client's queue is (0 to 1)",
                m.queue_fill.clone(),
            );
            r.register(
                "config_reload_success",
                "Config reloads that took effect",
                m.reload_success.clone(),
            );
            r.register(
                "config_reload_fail",
                "Config reloads rejected (the old config kept running)",
                m.reload_failures.clone(),
            );
            r.register(
                "config_last_reload_successful",
                "Whether the last reload took effect (1) or was rejected (0)",
                m.last_reload_successful.clone(),
            );
            r.register(
                "config_last_reload_success_timestamp_seconds",
                "When the config was last loaded successfully (start or reload)",
                m.last_reload_success_time.clone(),
            );
            r.register(
                "positions_write_errors",
                "Failed writes of the positions file",
                m.positions_write_errors.clone(),
            );
            r.register(
                "positions_writes",
                "Writes of the positions file (each one temporary file, two fsyncs, a rename)",
                m.positions_writes.clone(),
            );
        }
        m
    }

    /// Forgets the per-file series of a path no longer read.
    pub fn forget_file(&self, path: &std::path::Path) {
        self.files.forget(path);
    }

    /// Registers more metrics (pipeline `metrics` stages, say).
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.files
            .series(std::path::Path::new("/var/log/syslog"))
            .read_bytes
            .inc_by(5);
        m.sent_entries
            .get_or_create(&HostLabel {
                host: "loki:3100".into(),
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains("logferry_read_bytes_total{path=\"/var/log/syslog\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("logferry_sent_entries_total{host=\"loki:3100\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
