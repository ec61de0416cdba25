//! The file targets of every scrape config, read by one [`Tailer`] thread.
//!
//! All file targets form one input: the tailer shares one descriptor budget, one inotify
//! watcher and one fair schedule over every file, whatever job it belongs to. A reload hands
//! the new targets to the running tailer, so files still matched keep their open file and
//! position.

use super::{Input, InputContext, InputError, RunningInput};
use crate::config::{Config, ConfigError};
use crate::discover::Targets;
use crate::pipeline::{CustomMetrics, LineSizeLimit};
use crate::tail::inbox::Inbox;
use crate::tail::lines::LineLimit;
use crate::tail::{TailOptions, TailPlan, Tailer};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The files of every scrape config with a `__path__`.
pub struct FilesInput {
    plan: TailPlan,
}

impl FilesInput {
    /// Resolves the file targets of `config`, each with its own pipeline (stateful stages
    /// keep their state per target, as in Promtail).
    pub fn new(
        config: &Config,
        origin: &str,
        custom: &CustomMetrics,
    ) -> Result<FilesInput, ConfigError> {
        let targets = Targets::from_config(config);
        // With stages, max_line_size applies to what leaves them (see `LineSizeLimit`).
        let limits = &config.limits_config;
        let after_stages = (limits.max_line_size.0 > 0).then(|| LineSizeLimit {
            max: usize::try_from(limits.max_line_size.0).unwrap_or(usize::MAX),
            truncate: limits.max_line_size_truncate,
        });
        let mut pipelines = Vec::with_capacity(targets.len());
        for target in (0..targets.len()).filter_map(|i| targets.get(i)) {
            let job = config
                .scrape_configs
                .iter()
                .position(|job| job.job_name == target.job);
            pipelines.push(match job {
                Some(index) => super::build_stages(config, index, origin, custom)?.map(|mut p| {
                    p.set_line_limit(after_stages);
                    p
                }),
                None => None,
            });
        }
        Ok(FilesInput {
            plan: TailPlan {
                targets,
                pipelines,
                options: tail_options(config),
            },
        })
    }
}

/// The tailer's settings from a config.
fn tail_options(config: &Config) -> TailOptions {
    TailOptions {
        limit: LineLimit::from_config(
            config.limits_config.max_line_size.0,
            config.limits_config.max_line_size_truncate,
        ),
        rescan_every: config
            .target_config
            .sync_period
            .0
            .max(Duration::from_millis(100)),
        poll_every: config
            .global
            .file_watch_config
            .min_poll_frequency
            .0
            .max(Duration::from_millis(10)),
        max_open_files: open_files_budget(),
        ..TailOptions::default()
    }
}

impl Input for FilesInput {
    fn key(&self) -> String {
        "files".into()
    }

    fn start(self: Box<Self>, ctx: InputContext) -> Result<Box<dyn RunningInput>, InputError> {
        if self.plan.targets.is_empty() {
            tracing::warn!("no scrape config has a __path__: nothing to read");
        }
        let inbox = Arc::new(Inbox::new());
        let tailer = Tailer::new(
            self.plan,
            inbox.clone(),
            ctx.acks.clone(),
            ctx.chunks.clone(),
            ctx.metrics.clone(),
        )
        .with_status(ctx.status.clone())
        .with_inspect(ctx.inspect);
        let started = ctx.started.clone();
        let thread = super::spawn("tailer", &ctx, move || {
            tailer.run(|files| {
                tracing::info!(files, "tailing started");
                started("files");
            });
            Ok(())
        })?;
        Ok(Box::new(RunningFiles { inbox, thread }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

struct RunningFiles {
    inbox: Arc<Inbox>,
    thread: std::thread::JoinHandle<()>,
}

impl RunningInput for RunningFiles {
    fn reconfigure(&mut self, next: Box<dyn Input>) -> Option<Box<dyn Input>> {
        if !next.as_any().is::<FilesInput>() {
            return Some(next);
        }
        if let Ok(files) = next.into_any().downcast::<FilesInput>() {
            self.inbox.retarget(files.plan);
        }
        None
    }

    fn stop(&mut self) {
        self.inbox.shutdown();
    }

    fn join(self: Box<Self>) {
        self.inbox.shutdown();
        let _ = self.thread.join();
    }
}

/// How many files the tailer may keep open: the open-files limit, raised once to its hard
/// maximum (as the Go runtime does for Promtail), less room for everything else.
fn open_files_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        let soft = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        soft.saturating_sub(256).max(64)
    })
}
