//! `-stdin`: lines from standard input instead of files, through the first scrape config's
//! stages and labels, as Promtail does. At the end of the input, the unfinished last line and
//! everything the stages hold is let out; then the input is done.

use super::{Input, InputContext, InputError, RunningInput};
use crate::config::{Config, ConfigError};
use crate::entry::Timestamp;
use crate::labels::LabelSet;
use crate::pipeline::{CustomMetrics, Pipeline};
use crate::tail::lines::{LineLimit, Splitter};
use crate::tail::pipelined::{TargetPipeline, plain_chunk};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

/// Standard input (`-stdin`): read to its end, then the input is done.
pub struct StdinInput {
    labels: LabelSet,
    /// The first scrape config's stages, as Promtail runs them on standard input.
    pipeline: Option<Pipeline>,
    limit: LineLimit,
}

impl StdinInput {
    pub fn new(
        config: &Config,
        origin: &str,
        custom: &CustomMetrics,
    ) -> Result<StdinInput, ConfigError> {
        Ok(StdinInput {
            labels: stdin_labels(config),
            pipeline: super::build_stages(config, 0, origin, custom)?,
            limit: LineLimit::from_config(
                config.limits_config.max_line_size.0,
                config.limits_config.max_line_size_truncate,
            ),
        })
    }
}

impl Input for StdinInput {
    fn key(&self) -> String {
        "stdin".into()
    }

    fn start(self: Box<Self>, ctx: InputContext) -> Result<Box<dyn RunningInput>, InputError> {
        (ctx.started)("stdin");
        let reporter = ctx.clone();
        let thread = super::spawn("stdin", &reporter, move || read_stdin(*self, &ctx))?;
        Ok(Box::new(RunningStdin { thread }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

struct RunningStdin {
    thread: std::thread::JoinHandle<()>,
}

impl RunningInput for RunningStdin {
    /// Standard input is read once; a reload changes nothing of it.
    fn reconfigure(&mut self, _next: Box<dyn Input>) -> Option<Box<dyn Input>> {
        None
    }

    /// A blocking read of standard input cannot be interrupted: the thread ends when the
    /// input does or when its next chunk finds the outputs gone.
    fn stop(&mut self) {}

    fn join(self: Box<Self>) {
        // Waiting here could wait for a terminal forever; the thread holds nothing to save.
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

/// The labels of stdin entries, as Promtail gives them: the label sets of the first scrape
/// config's static configs merged (later ones win); with no scrape config, Promtail's built-in
/// `job="stdin"` and `hostname`. Internal `__` labels (`__path__`) are left out, as for every
/// stream logferry sends.
pub fn stdin_labels(config: &Config) -> LabelSet {
    let Some(job) = config.scrape_configs.first() else {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        return LabelSet::new([("job", "stdin".to_string()), ("hostname", hostname)]);
    };
    let mut merged = std::collections::BTreeMap::new();
    for sc in &job.static_configs {
        merged.extend(sc.labels.0.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    LabelSet::new(
        merged
            .into_iter()
            .filter(|(k, v)| !k.starts_with("__") && !v.is_empty()),
    )
}

/// Reads standard input to its end, sending chunks to the outputs.
fn read_stdin(input: StdinInput, ctx: &InputContext) -> Result<(), InputError> {
    let StdinInput {
        labels,
        pipeline,
        limit,
    } = input;
    let (acks, metrics, out) = (&ctx.acks, &ctx.metrics, &ctx.chunks);
    let labels = Arc::new(labels);
    let mut pipeline = pipeline.map(|p| TargetPipeline::new(p, ctx.inspect));
    // Stdin has no position to remember; its chunks still go through the acknowledger, which
    // is how the outputs report delivery and shutdown knows what is in flight.
    let source = acks.open_untracked();
    if let Some(tp) = pipeline.as_mut() {
        tp.open(0, source, &labels, 0);
    }
    let mut splitter = Splitter::new(limit);
    let mut stdin = std::io::stdin().lock();
    let mut offset = 0u64;
    let mut last_ts = Timestamp::from_nanos(0);
    loop {
        let mut buf = splitter.take_buffer(256 * 1024);
        let base = buf.len();
        buf.resize(base + 256 * 1024, 0);
        let n = loop {
            match stdin.read(&mut buf[base..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(InputError::Stdin)?,
            }
        };
        buf.truncate(base + n);
        offset += n as u64;
        let mut split = if n == 0 {
            let rest = splitter.split(buf, offset);
            debug_assert!(rest.spans.is_empty());
            splitter.finish(offset)
        } else {
            splitter.split(buf, offset)
        };
        // Promtail skips blank lines of standard input (a line of only `\r` included).
        split.spans.retain(|span| span.end > span.start);
        if !split.spans.is_empty() {
            let (ts, last) = split.stamp(last_ts);
            last_ts = last;
            match pipeline.as_mut() {
                Some(tp) => tp.feed(0, &split, ts, offset, Instant::now()),
                None => {
                    let chunk = plain_chunk(acks, source, &labels, split, ts, offset);
                    if chunk.is_some_and(|chunk| out.blocking_send(chunk).is_err()) {
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
