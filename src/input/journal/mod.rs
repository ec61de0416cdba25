//! `journal:` jobs: the systemd journal, read from its files directly (the `sdjournal`
//! crate), so the static binary needs neither libsystemd nor `journalctl` on the host.
//!
//! One input per job (`journal/<job_name>`). Each entry becomes a record with every field as
//! a `__journal_<field>` label, then goes through the job's relabeling and stages
//! ([`RecordStep`]). The job's cursor is kept under Promtail's positions key
//! `cursor-<job_name>` and moves only past entries every output acknowledged.

mod changes;
mod fields;
mod read;

use super::records::RecordStep;
use super::{Input, InputContext, InputError, RunningInput};
use crate::config::{JournalConfig, ScrapeConfig};
use crate::status::{JournalCounters, JournalInfo};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the journal is when `path` is not given: the persistent and the volatile journal.
const SYSTEM_ROOTS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// One `journal:` job, resolved.
pub struct JournalInput {
    job: ScrapeConfig,
    journal: JournalConfig,
    /// The job as it runs, to tell whether a reload changed it: relabel rules have no
    /// equality of their own, their printed form stands in for it.
    fingerprint: String,
    /// Where the job it replaces stopped reading (set when a reload restarts the job).
    handover: read::Handover,
}

impl JournalInput {
    /// The input of `job` when it has a `journal:` section.
    pub fn new(job: &ScrapeConfig) -> Option<JournalInput> {
        let journal = job.journal.clone()?;
        let fingerprint = format!(
            "{:?}|{:?}|{:?}|{:?}",
            job.job_name, journal, job.relabel_configs, job.pipeline_stages
        );
        Some(JournalInput {
            job: job.clone(),
            journal,
            fingerprint,
            handover: read::Handover::default(),
        })
    }

    fn roots(&self) -> Vec<PathBuf> {
        match &self.journal.path {
            Some(path) => vec![path.clone()],
            None => SYSTEM_ROOTS.iter().map(PathBuf::from).collect(),
        }
    }
}

impl Input for JournalInput {
    fn key(&self) -> String {
        format!("journal/{}", self.job.job_name)
    }

    fn start(self: Box<Self>, ctx: InputContext) -> Result<Box<dyn RunningInput>, InputError> {
        let name = self.key();
        let (source, saved) = ctx
            .acks
            .open_cursor(&format!("cursor-{}", self.job.job_name));
        let step = RecordStep::new(
            &self.job.job_name,
            &self.job.relabel_configs,
            &self.job.pipeline_stages,
            source,
            &ctx,
        )?;
        let counters = Arc::new(JournalCounters::default());
        ctx.status.add_journal(
            &name,
            JournalInfo {
                job: self.job.job_name.clone(),
                paths: self
                    .roots()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                cursor_key: format!("cursor-{}", self.job.job_name),
            },
            counters.clone(),
        );
        let job = read::Job {
            name: self.job.job_name.clone(),
            roots: self.roots(),
            matches: self.journal.matches.0.clone(),
            max_age: self.journal.max_age.0,
            shape: fields::Shape::new(self.journal.labels.0.clone(), self.journal.json),
            counters,
        };
        // A job restarted by a reload goes on after what the one it replaces read and sent;
        // otherwise after what was acknowledged.
        let handed = self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let saved = handed.or_else(|| saved.map(|c| c.as_str().to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reader = ctx.clone();
        let handover = read::Handover::default();
        let out = handover.clone();
        let thread = super::spawn(&name, &ctx, move || {
            read::run(job, step, saved, flag, out, &reader)
        })?;
        Ok(Box::new(RunningJournal {
            key: name,
            status: ctx.status.clone(),
            fingerprint: self.fingerprint,
            stop,
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

struct RunningJournal {
    key: String,
    status: Arc<crate::status::StatusBoard>,
    fingerprint: String,
    stop: Arc<AtomicBool>,
    handover: read::Handover,
    thread: std::thread::JoinHandle<()>,
}

impl RunningInput for RunningJournal {
    /// Kept as it is when the job did not change; otherwise restarted, resuming from the
    /// acknowledged cursor.
    fn reconfigure(&mut self, next: Box<dyn Input>) -> Option<Box<dyn Input>> {
        // The handover is filled when this one stops, before the new one starts.
        super::keep_or_restart(
            next,
            &self.fingerprint,
            |planned: &JournalInput| &planned.fingerprint,
            |changed| changed.handover = self.handover.clone(),
        )
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
    }

    fn join(self: Box<Self>) {
        let _ = self.thread.join();
        self.status.remove_journal(&self.key);
    }
}
