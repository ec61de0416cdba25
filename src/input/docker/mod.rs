//! `docker_sd_configs` jobs: the logs of a Docker host's containers, through the Docker
//! Engine API, with no path to glob and whatever the log driver's files look like.
//!
//! One input per entry of `docker_sd_configs` (key `docker/<job_name>/<index>`). Its thread
//! lists the daemon's containers (with the config's `filters`) every `refresh_interval` and
//! at once when the daemon's event stream reports a container started, stopped, renamed or
//! removed; each container gets a reader of its own ([`follow`]) with the discovered labels
//! of Prometheus' Docker discovery ([`meta`]). Lines go through the job's relabeling and
//! stages ([`RecordStep`](super::records::RecordStep)); the time of the last line every output
//! acknowledged is kept under Promtail's key `cursor-<container id>` ([`position`]).

mod api;
mod decode;
mod follow;
mod meta;
mod position;
mod run;

use super::{Input, InputContext, InputError, RunningInput};
use crate::config::{Config, ConfigError, DockerSdConfig, ScrapeConfig};
use position::Position;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where the readers of a stopped input left off (lines read and sent, per container id):
/// the input a reload starts in its place goes on from there instead of from what was
/// acknowledged, whose lines are still on their way to the outputs.
type HandoverMap = HashMap<String, Position>;
type Handover = Arc<Mutex<HandoverMap>>;

/// One entry of a job's `docker_sd_configs`, resolved.
pub struct DockerInput {
    key: String,
    job: ScrapeConfig,
    sd: DockerSdConfig,
    api: api::Api,
    /// The input as it runs, to tell whether a reload changed it (relabel rules have no
    /// equality of their own; their printed form stands in for it).
    fingerprint: String,
    handover: Handover,
}

/// The Docker inputs of a config; a host that cannot make a client is an error naming the key.
pub fn plan(config: &Config, origin: &str) -> Result<Vec<DockerInput>, ConfigError> {
    let mut inputs = Vec::new();
    for (i, job) in config.scrape_configs.iter().enumerate() {
        for (j, sd) in job.docker_sd_configs.iter().enumerate() {
            let api = api::Api::new(sd).map_err(|e| {
                let (key, message) = match e {
                    api::ApiError::Config { key, message } => (key, message),
                    other => ("host", other.to_string()),
                };
                ConfigError::Semantic {
                    file: origin.to_string(),
                    key: format!("scrape_configs[{i}].docker_sd_configs[{j}].{key}"),
                    message,
                }
            })?;
            inputs.push(DockerInput {
                key: format!("docker/{}/{j}", job.job_name),
                fingerprint: format!(
                    "{:?}|{:?}|{:?}|{:?}|{:?}",
                    job.job_name,
                    sd,
                    secrets(sd),
                    job.relabel_configs,
                    job.pipeline_stages
                ),
                job: job.clone(),
                sd: sd.clone(),
                api,
                handover: Handover::default(),
            });
        }
    }
    Ok(inputs)
}

/// The secrets of a config, which its Debug form hides: a reload that changes a password
/// must restart the input.
fn secrets(sd: &DockerSdConfig) -> [Option<&str>; 3] {
    [
        sd.basic_auth
            .as_ref()
            .and_then(|a| a.password.as_ref())
            .map(|p| p.0.as_str()),
        sd.authorization
            .as_ref()
            .and_then(|a| a.credentials.as_ref())
            .map(|c| c.0.as_str()),
        sd.bearer_token.as_ref().map(|t| t.0.as_str()),
    ]
}

impl Input for DockerInput {
    fn key(&self) -> String {
        self.key.clone()
    }

    fn start(self: Box<Self>, ctx: InputContext) -> Result<Box<dyn RunningInput>, InputError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = std::sync::mpsc::channel();
        let handed = std::mem::take(&mut *self.handover.lock().unwrap_or_else(|p| p.into_inner()));
        let handover = Handover::default();
        let setup = run::Setup {
            key: self.key.clone(),
            job: self.job,
            sd: self.sd,
            api: self.api,
            handed,
            handover: handover.clone(),
            stop: stop.clone(),
            wake: wake.clone(),
            woken,
        };
        let reader = ctx.clone();
        let thread = super::spawn(&self.key, &ctx, move || run::run(setup, &reader))?;
        Ok(Box::new(RunningDocker {
            fingerprint: self.fingerprint,
            stop,
            wake,
            handover,
            thread,
        }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

struct RunningDocker {
    fingerprint: String,
    stop: Arc<AtomicBool>,
    wake: std::sync::mpsc::Sender<()>,
    handover: Handover,
    thread: std::thread::JoinHandle<()>,
}

impl RunningInput for RunningDocker {
    /// Kept as it is when the job did not change; otherwise restarted, going on after the
    /// lines this one sent.
    fn reconfigure(&mut self, next: Box<dyn Input>) -> Option<Box<dyn Input>> {
        // The handover is filled when this one stops, before the new one starts.
        super::keep_or_restart(
            next,
            &self.fingerprint,
            |planned: &DockerInput| &planned.fingerprint,
            |changed| changed.handover = self.handover.clone(),
        )
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.send(());
    }

    fn join(self: Box<Self>) {
        let _ = self.thread.join();
    }
}
