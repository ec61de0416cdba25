//! The per-file series: `read_bytes`, `read_lines`, `file_size_bytes`, `file_position_bytes`
//! and `file_lag_bytes`, one of each per path, kept together.
//!
//! Why not five `Family`s: the five are always made when a file is opened and forgotten when it
//! is closed for good. As families, each file cost five copies of its path, five SipHash
//! hashes and inserts under five write locks, and five maps regrowing as files are found: on
//! 10,000 files, about a tenth of the reading thread's time at start. One map from path to the
//! five values costs one entry, and `/metrics` shows the same text.

use foldhash::fast::RandomState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The series of one path. Handles are held by whoever updates them (the tailer, the
/// acknowledger), so an update is an atomic store, never a lookup.
#[derive(Debug, Default)]
pub struct FileSeries {
    pub read_bytes: Counter,
    pub read_lines: Counter,
    pub size: Gauge,
    pub position: Gauge,
    pub lag: Gauge,
}

/// Every path's series, encoded as five metric families.
#[derive(Debug, Default)]
pub struct FileFamilies {
    by_path: RwLock<HashMap<Arc<str>, Arc<FileSeries>, RandomState>>,
}

/// Name, help, and the value each family shows of a path's series (whose type it takes).
type Family = (
    &'static str,
    &'static str,
    fn(&FileSeries) -> &dyn EncodeMetric,
);

const FAMILIES: [Family; 5] = [
    ("read_bytes", "Bytes read, per file", |s| &s.read_bytes),
    ("read_lines", "Lines read, per file", |s| &s.read_lines),
    ("file_size_bytes", "Size of each file being read", |s| {
        &s.size
    }),
    (
        "file_position_bytes",
        "Acknowledged position of each file being read",
        |s| &s.position,
    ),
    (
        "file_lag_bytes",
        "Bytes of each file not acknowledged yet",
        |s| &s.lag,
    ),
];

impl FileFamilies {
    /// The series of `path`, made on first use.
    pub fn series(&self, path: &Path) -> Arc<FileSeries> {
        let key = path.to_string_lossy();
        if let Some(found) = self.read().get(&*key) {
            return found.clone();
        }
        self.write().entry(Arc::from(key)).or_default().clone()
    }

    /// Drops the series of `path` from what is shown (handles still held go on working).
    pub fn forget(&self, path: &Path) {
        self.write().remove(&*path.to_string_lossy());
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<FileSeries>, RandomState>> {
        // Values are atomics: a panic while the lock was held leaves nothing half-done.
        self.by_path.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<FileSeries>, RandomState>> {
        self.by_path.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Collector for FileFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let by_path = self.read();
        // Sorted by path, so that a scrape reads like `ls` and two scrapes can be compared.
        let mut files: Vec<(&str, &FileSeries)> =
            by_path.iter().map(|(p, s)| (&**p, &**s)).collect();
        files.sort_unstable_by_key(|(path, _)| *path);
        let any = FileSeries::default();
        for (name, help, value) in FAMILIES {
            let kind = value(&any).metric_type();
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (path, series) in &files {
                value(series).encode(family.encode_family(&[("path", *path)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn render(families: FileFamilies) -> String {
        let mut registry = Registry::with_prefix("logferry");
        registry.register_collector(Box::new(families));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn each_path_shows_five_series_and_a_forgotten_one_none() {
        let files = FileFamilies::default();
        let b = files.series(Path::new("/var/log/b.log"));
        b.read_bytes.inc_by(120);
        b.read_lines.inc_by(3);
        b.size.set(150);
        b.position.set(100);
        b.lag.set(50);
        // The same path gives the same series: a file replaced at a path carries on its counts.
        files.series(Path::new("/var/log/b.log")).read_lines.inc();
        files.series(Path::new("/var/log/a.log")).size.set(7);
        files.series(Path::new("/var/log/gone.log")).size.set(9);
        files.forget(Path::new("/var/log/gone.log"));
        let text = render(files);
        for line in [
            "# TYPE logferry_read_bytes counter",
            "logferry_read_bytes_total{path=\"/var/log/b.log\"} 120",
            "logferry_read_lines_total{path=\"/var/log/b.log\"} 4",
            "# TYPE logferry_file_size_bytes gauge",
            "logferry_file_size_bytes{path=\"/var/log/b.log\"} 150",
            "logferry_file_size_bytes{path=\"/var/log/a.log\"} 7",
            "logferry_file_position_bytes{path=\"/var/log/b.log\"} 100",
            "logferry_file_lag_bytes{path=\"/var/log/b.log\"} 50",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("gone.log"), "{text}");
        let a = text.find("file_size_bytes{path=\"/var/log/a.log\"}");
        let b = text.find("file_size_bytes{path=\"/var/log/b.log\"}");
        assert!(a < b, "paths not in order:\n{text}");
    }
}
