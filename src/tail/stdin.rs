//! `-stdin`: lines from standard input instead of files, through the first scrape config's
//! stages and labels, as Promtail does. At the end of the input, the unfinished last line and
//! everything the stages hold is let out; then the input is done.

use super::lines::{LineLimit, Splitter};
use super::pipelined::TargetPipeline;
use crate::acknowledge::Acknowledger;
use crate::config::{Config, PATH_EXCLUDE_LABEL, PATH_LABEL};
use crate::entry::{Chunk, Timestamp};
use crate::labels::LabelSet;
use crate::metrics::Metrics;
use crate::pipeline::{CustomMetrics, Pipeline};
use crate::positions::AckedOffset;
use crate::positions::{FileId, Fingerprint};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The labels of stdin entries: `job="stdin"` and `hostname`, overridden by the first scrape
/// config's first static labels (`__` labels left out).
pub fn stdin_labels(config: &Config) -> LabelSet {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let statics = config
        .scrape_configs
        .first()
        .and_then(|job| job.static_configs.first())
        .map(|sc| sc.labels.0.clone())
        .unwrap_or_default();
    LabelSet::new(
        [
            ("job".to_string(), "stdin".to_string()),
            ("hostname".to_string(), hostname),
        ]
        .into_iter()
        .chain(
            statics
                .into_iter()
                .filter(|(k, _)| k != PATH_LABEL && k != PATH_EXCLUDE_LABEL),
        ),
    )
}

/// Reads standard input to its end, sending chunks to `out`.
pub fn read_stdin(
    config: &Config,
    custom: &CustomMetrics,
    inspect: bool,
    acks: &Acknowledger,
    metrics: &Metrics,
    out: &mpsc::Sender<Chunk>,
) -> std::io::Result<()> {
    let labels = Arc::new(stdin_labels(config));
    let mut pipeline = match config.scrape_configs.first() {
        Some(job) if !job.pipeline_stages.is_empty() => {
            Pipeline::new(&job.pipeline_stages, custom, &job.job_name)
                .map(|p| TargetPipeline::new(p, inspect))
                .map_err(|e| std::io::Error::other(e.to_string()))
                .map(Some)?
        }
        _ => None,
    };
    // Stdin has no position to remember; its chunks still go through the acknowledger, which
    // is how the outputs report delivery.
    let source = acks.open(
        std::path::Path::new("-"),
        FileId {
            device: u64::MAX,
            inode: u64::MAX,
        },
        Fingerprint::of(b""),
        AckedOffset::START,
    );
    if let Some(tp) = pipeline.as_mut() {
        tp.open(0, source, &labels, 0);
    }
    let limit = LineLimit::from_config(
        config.limits_config.max_line_size.0,
        config.limits_config.max_line_size_truncate,
    );
    let mut splitter = Splitter::new(limit);
    let mut stdin = std::io::stdin().lock();
    let mut offset = 0u64;
    let mut last_ts = Timestamp(0);
    loop {
        let mut buf = splitter.take_buffer(256 * 1024);
        let base = buf.len();
        buf.resize(base + 256 * 1024, 0);
        let n = loop {
            match stdin.read(&mut buf[base..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        buf.truncate(base + n);
        offset += n as u64;
        let split = if n == 0 {
            let rest = splitter.split(buf, offset);
            debug_assert!(rest.spans.is_empty());
            splitter.finish(offset)
        } else {
            splitter.split(buf, offset)
        };
        if !split.spans.is_empty() {
            let (ts, last) = split.stamp(last_ts);
            last_ts = last;
            match pipeline.as_mut() {
                Some(tp) => tp.feed(0, &split, ts, offset, Instant::now()),
                None => {
                    let lines = split.lines_at(ts);
                    let end = split.spans.last().map_or(offset, |s| s.offset);
                    let ticket = acks.reserve(source, end, offset);
                    if out
                        .blocking_send(Chunk::new(ticket, labels.clone(), split.text, lines))
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
        if let Some(tp) = pipeline.as_mut() {
            if n == 0 {
                tp.flush_all();
            } else {
                tp.flush_due(Instant::now());
            }
            let mut chunks = Vec::new();
            tp.finish(acks, metrics, &mut chunks);
            for chunk in chunks {
                if out.blocking_send(chunk).is_err() {
                    return Ok(());
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
    }
}
