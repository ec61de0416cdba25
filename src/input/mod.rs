//! Inputs: where entries come from — the input seam.
//!
//! An [`Input`] is what the config asks to read (all file targets, standard input; later the
//! journal, a syslog listener, containers). Started with an [`InputContext`], it reads on its
//! own thread, runs each job's pipeline and sends [`Chunk`]s, each registered with the
//! [`Acknowledger`] under a *source* whose checkpoint is of the input's own kind: a file's
//! identity and byte offset ([`Acknowledger::open`]), a cursor stored under a key
//! ([`Acknowledger::open_cursor`], e.g. Promtail's `cursor-<job_name>`), or nothing to resume
//! from ([`Acknowledger::open_untracked`]). Positions move only as far as outputs settle.
//!
//! [`plan`] turns the config into inputs: the only place that knows the kinds. A reload plans
//! again; an input with the same [`key`](Input::key) is offered the new config first
//! ([`RunningInput::reconfigure`]) and restarted only if it cannot take it in place.

pub mod docker;
pub mod files;
pub mod journal;
pub mod records;
pub mod stdin;
pub mod syslog;

use crate::acknowledge::Acknowledger;
use crate::config::{Config, ConfigError};
use crate::entry::ChunkSender;
use crate::metrics::Metrics;
use crate::pipeline::{CustomMetrics, Pipeline};
use crate::status::StatusBoard;
use std::sync::Arc;
use tokio::sync::mpsc;

/// An input that could not start, or that failed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot read standard input: {0}")]
    Stdin(std::io::Error),
    #[error("job {job}: cannot listen on {address}: {source}")]
    Listen {
        job: String,
        address: String,
        source: std::io::Error,
    },
    #[error("pipeline of job {job}: {message}")]
    Pipeline { job: String, message: String },
}

/// How an input that ended by itself ended.
pub type Ended = (String, Result<(), InputError>);

/// What every input runs with.
#[derive(Clone)]
pub struct InputContext {
    /// Where every chunk is registered before it is sent, under a source of the input's kind.
    pub acks: Arc<Acknowledger>,
    /// Where chunks go; sending blocks while the outputs are full (backpressure). When it
    /// fails, the outputs are gone and the input stops.
    pub chunks: ChunkSender,
    pub metrics: Arc<Metrics>,
    /// The `/targets` page.
    pub status: Arc<StatusBoard>,
    /// Where `metrics` stages register their metrics.
    pub custom: CustomMetrics,
    /// Print what each stage does to each entry (`-inspect`).
    pub inspect: bool,
    /// Called once by each input when it is reading (its first targets are open): readiness
    /// is reported once every input has called it.
    pub started: Arc<dyn Fn(&str) + Send + Sync>,
    /// Where an input that ends by itself (end of standard input, a fatal error) says so.
    pub ended: mpsc::UnboundedSender<Ended>,
}

/// Something to read, as the config describes it.
pub trait Input: Send + 'static {
    /// Names the input across reloads: `files`, `stdin`, later one per job of other kinds.
    fn key(&self) -> String;

    /// Starts reading on a thread of its own. Called once.
    fn start(self: Box<Self>, ctx: InputContext) -> Result<Box<dyn RunningInput>, InputError>;

    /// For [`RunningInput::reconfigure`]: lets the running input of the same kind recognise
    /// and take this one's resolved config.
    fn as_any(&self) -> &dyn std::any::Any;

    /// See [`as_any`](Input::as_any).
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

/// An input that was started.
pub trait RunningInput: Send {
    /// A reloaded config planned an input with this one's key: the running input takes
    /// `next` in place (files still matched keep their open file and position) and returns
    /// None, or hands it back to be started after this one is stopped.
    fn reconfigure(&mut self, next: Box<dyn Input>) -> Option<Box<dyn Input>>;

    /// Asks it to stop reading soon. What it read and did not send was not acknowledged, so
    /// it is read again at the next start.
    fn stop(&mut self);

    /// Waits until it stopped (after [`stop`](RunningInput::stop) or the end of its input).
    fn join(self: Box<Self>);
}

/// [`RunningInput::reconfigure`] for an input that is kept whole while its job's config is
/// unchanged and otherwise restarted: None (keep running) when `next` is of the same kind `T`
/// with the same `fingerprint`; else `next` to start, given `hand_over` first when it is a `T`
/// (so that it resumes where the running one stops).
pub(crate) fn keep_or_restart<T: Input>(
    next: Box<dyn Input>,
    fingerprint: &str,
    fingerprint_of: impl Fn(&T) -> &str,
    hand_over: impl FnOnce(&mut T),
) -> Option<Box<dyn Input>> {
    match next.as_any().downcast_ref::<T>() {
        Some(planned) if fingerprint_of(planned) == fingerprint => return None,
        Some(_) => {}
        None => return Some(next),
    }
    match next.into_any().downcast::<T>() {
        Ok(mut changed) => {
            hand_over(&mut changed);
            Some(changed)
        }
        // A `T`, as just checked: nothing to start in its place.
        Err(_) => None,
    }
}

/// The inputs a config asks for, resolved (pipelines built, globs compiled): standard input
/// alone with `-stdin`, else the file targets of every scrape config, one listener per
/// `syslog:` job (key `syslog/<job_name>`), one reader per `journal:` job (key
/// `journal/<job_name>`) and one per entry of `docker_sd_configs` (key
/// `docker/<job_name>/<index>`). Errors name `origin` (the config file) and the key.
pub fn plan(
    config: &Config,
    origin: &str,
    stdin: bool,
    custom: &CustomMetrics,
) -> Result<Vec<Box<dyn Input>>, ConfigError> {
    // Every job's stages are checked, whichever input reads it.
    for index in 0..config.scrape_configs.len() {
        build_stages(config, index, origin, custom)?;
    }
    if stdin {
        return Ok(vec![Box::new(stdin::StdinInput::new(
            config, origin, custom,
        )?)]);
    }
    let mut inputs: Vec<Box<dyn Input>> = Vec::new();
    for index in 0..config.scrape_configs.len() {
        if let Some(listener) = syslog::SyslogInput::new(config, index, origin)? {
            inputs.push(Box::new(listener));
        }
    }
    inputs.extend(
        config
            .scrape_configs
            .iter()
            .filter_map(journal::JournalInput::new)
            .map(|input| Box::new(input) as Box<dyn Input>),
    );
    for input in docker::plan(config, origin)? {
        inputs.push(Box::new(input));
    }
    // A config of listeners, journals and Docker hosts only has no files to read (and no
    // reason to warn).
    let has_files = config.scrape_configs.iter().any(|job| {
        job.syslog.is_none()
            && job.journal.is_none()
            && job.docker_sd_configs.is_empty()
            && !job.static_configs.is_empty()
    });
    if has_files || inputs.is_empty() {
        inputs.insert(0, Box::new(files::FilesInput::new(config, origin, custom)?));
    }
    Ok(inputs)
}

/// Builds the `pipeline_stages` of scrape config `index`; None when it has none.
pub(crate) fn build_stages(
    config: &Config,
    index: usize,
    origin: &str,
    custom: &CustomMetrics,
) -> Result<Option<Pipeline>, ConfigError> {
    let Some(job) = config.scrape_configs.get(index) else {
        return Ok(None);
    };
    if job.pipeline_stages.is_empty() {
        return Ok(None);
    }
    Pipeline::new(&job.pipeline_stages, custom, &job.job_name)
        .map(Some)
        .map_err(|e| ConfigError::Semantic {
            file: origin.to_string(),
            key: format!("scrape_configs[{index}].{}", e.path),
            message: e.message,
        })
}

/// Runs `body` on a thread named `name` and reports its end through `ctx.ended`.
pub(crate) fn spawn(
    name: &str,
    ctx: &InputContext,
    body: impl FnOnce() -> Result<(), InputError> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, InputError> {
    let (key, ended) = (name.to_string(), ctx.ended.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = body();
            let _ = ended.send((key, result));
        })
        .map_err(|source| InputError::Thread {
            name: name.into(),
            source,
        })
}
