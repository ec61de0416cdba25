//! Discovery for one daemon, on the input's thread: list the containers, start a reader for
//! each running one (and for a stopped one that has a recorded position, to read what it
//! wrote while nothing was reading it), let go of removed ones, and show them on `/targets`.
//! The event stream and the readers' ends wake it; otherwise it lists every
//! `refresh_interval`. A daemon that cannot be reached is logged once, then tried again.
//!
//! Listing and the event stream run on a small runtime of this input; each reader is a thread
//! that runs its own connection, so a reader blocked by full outputs holds nothing but its own
//! response, and a busy container costs no thread switch per line. A thread per container is
//! cheap at the scale of a Docker host (tens to a few hundred containers).

use super::api::{Api, ApiError, filters_json};
use super::follow::{self, Ended, Follow, SharedLabels};
use super::meta::{self, ContainerSummary};
use super::position::Position;
use super::{Handover, HandoverMap};
use crate::acknowledge::SourceKey;
use crate::config::{DockerSdConfig, ScrapeConfig};
use crate::input::records::RecordStep;
use crate::input::{InputContext, InputError};
use crate::status::ContainerStatus;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The first wait before a container whose reading failed is tried again; it doubles.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// After an event, containers are listed at once and once more this much later. The event may
/// come before a listing shows its effect, and a stream just connected may send its headers
/// before the daemon subscribes it to events; either way a change would otherwise wait for
/// `refresh_interval` (a minute by default). Seen as a renamed container keeping its old name.
const EVENT_SETTLE: Duration = Duration::from_secs(1);

pub struct Setup {
    pub key: String,
    pub job: ScrapeConfig,
    pub sd: DockerSdConfig,
    pub api: Api,
    pub handed: HandoverMap,
    pub handover: Handover,
    pub stop: Arc<AtomicBool>,
    pub wake: Sender<()>,
    pub woken: Receiver<()>,
}

struct Tracked {
    name: String,
    labels: SharedLabels,
    discovered: Arc<BTreeMap<String, String>>,
    running: bool,
    tty: Option<bool>,
    source: Option<SourceKey>,
    /// The step while no reader holds it.
    step: Option<RecordStep>,
    reader: Option<JoinHandle<Ended>>,
    /// After the last line read and sent in this process.
    position: Option<Position>,
    /// A stopped container read to its end.
    drained: bool,
    error: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
}

struct Discovery<'a> {
    setup: Setup,
    ctx: &'a InputContext,
    io: tokio::runtime::Runtime,
    filters: String,
    tracked: HashMap<String, Tracked>,
    stop_readers: watch::Sender<bool>,
    /// None before the first listing; then whether the last one worked.
    reachable: Option<bool>,
    outputs_gone: bool,
    /// The discovered labels the job's relabeling reads: what each line carries.
    wanted: meta::Wanted,
}

pub fn run(setup: Setup, ctx: &InputContext) -> Result<(), InputError> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("docker-io")
        .enable_all()
        .build()
        .map_err(|source| InputError::Thread {
            name: format!("{} (I/O)", setup.key),
            source,
        })?;
    let (stop_readers, stopped) = watch::channel(false);
    io.spawn(watch_events(
        setup.api.clone(),
        setup.wake.clone(),
        stopped.clone(),
    ));
    let filters = filters_json(&setup.sd.filters);
    let setup_rules = setup.job.relabel_configs.clone();
    let mut d = Discovery {
        setup,
        ctx,
        io,
        filters,
        tracked: HashMap::new(),
        stop_readers,
        reachable: None,
        outputs_gone: false,
        wanted: meta::Wanted::from_rules(&setup_rules),
    };
    let interval = d.setup.sd.refresh_interval.0.max(Duration::from_secs(1));
    let mut announced = false;
    let mut failures = 0u32;
    let mut settle_at: Option<Instant> = None;
    while !d.stopped() {
        let wait = match d.refresh() {
            Ok(()) => {
                failures = 0;
                if d.reachable == Some(false) {
                    tracing::info!(job = %d.setup.job.job_name, host = %d.setup.api.host(),
                        "Docker daemon reachable again");
                }
                d.reachable = Some(true);
                interval
            }
            Err(e) => {
                if d.reachable != Some(false) {
                    tracing::warn!(job = %d.setup.job.job_name, "{e}; trying again");
                }
                d.reachable = Some(false);
                failures += 1;
                backoff(failures).min(interval)
            }
        };
        d.publish();
        if !announced {
            announced = true;
            (ctx.started)(&d.setup.key);
        }
        if d.outputs_gone {
            break;
        }
        let now = Instant::now();
        let soonest = d
            .tracked
            .values()
            .filter_map(|t| t.retry_at)
            .chain(settle_at)
            .min()
            .map(|at| at.saturating_duration_since(now));
        match d
            .setup
            .woken
            .recv_timeout(soonest.map_or(wait, |s| s.min(wait)))
        {
            Ok(()) => {
                while d.setup.woken.try_recv().is_ok() {}
                settle_at = Some(Instant::now() + EVENT_SETTLE);
            }
            Err(RecvTimeoutError::Timeout) => {
                settle_at = settle_at.filter(|at| *at > Instant::now());
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    d.shutdown();
    Ok(())
}

/// Wakes discovery at every container event, and when the stream (re)connects: the daemon
/// may have been away, so what runs is listed again.
async fn watch_events(api: Api, wake: Sender<()>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let connected = tokio::select! {
            r = api.events() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        if let Ok(mut response) = connected {
            failures = 0;
            let _ = wake.send(());
            loop {
                let chunk = tokio::select! {
                    c = response.chunk() => c,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let ended = !matches!(chunk, Ok(Some(_)));
                // An event, or the stream ending: the daemon may be going away.
                let _ = wake.send(());
                if ended {
                    break;
                }
            }
        }
        failures += 1;
        tokio::select! {
            _ = tokio::time::sleep(backoff(failures).min(Duration::from_secs(5))) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn backoff(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(RETRY_MAX)
}

impl Discovery<'_> {
    fn stopped(&self) -> bool {
        self.setup.stop.load(Ordering::Relaxed)
    }

    fn cursor_key(id: &str) -> String {
        format!("cursor-{id}")
    }

    fn refresh(&mut self) -> Result<(), ApiError> {
        self.reap();
        let api = self.setup.api.clone();
        let filters = self.filters.clone();
        let (containers, networks) = self
            .io
            .block_on(async { tokio::try_join!(api.containers(&filters), api.networks()) })?;
        let cx = meta::Context {
            port: self.setup.sd.port,
            host_networking_host: &self.setup.sd.host_networking_host,
            networks: &networks,
        };
        let mut seen = HashSet::new();
        for c in &containers {
            // Prometheus leaves out containers without a name; so does Promtail.
            let Some(name) = c.name() else { continue };
            seen.insert(c.id.clone());
            let discovered = Arc::new(meta::labels(c, &cx));
            let t = self.tracked.entry(c.id.clone()).or_insert_with(|| Tracked {
                name: name.to_string(),
                labels: SharedLabels::default(),
                discovered: discovered.clone(),
                running: false,
                tty: None,
                source: None,
                step: None,
                reader: None,
                position: None,
                drained: false,
                error: None,
                failures: 0,
                retry_at: None,
            });
            if c.running() {
                t.drained = false;
            }
            t.running = c.running();
            t.name = name.to_string();
            *t.labels.lock().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(self.wanted.keep(&discovered));
            t.discovered = discovered;
        }
        for c in &containers {
            if seen.contains(&c.id) && !self.outputs_gone {
                self.maybe_start(c);
            }
        }
        // Removed containers: their reader has ended (Docker ends the response).
        let gone: Vec<String> = self
            .tracked
            .iter()
            .filter(|(id, t)| !seen.contains(*id) && t.reader.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(t) = self.tracked.remove(&id)
                && let Some(source) = t.source
            {
                self.ctx.acks.close(source, Instant::now());
            }
        }
        Ok(())
    }

    /// Joins the readers that ended, taking back their step and position.
    fn reap(&mut self) {
        let now = Instant::now();
        for (id, t) in &mut self.tracked {
            if !t.reader.as_ref().is_some_and(JoinHandle::is_finished) {
                continue;
            }
            let Some(Ok(ended)) = t.reader.take().map(JoinHandle::join) else {
                continue;
            };
            t.step = Some(ended.step);
            t.position = ended.position.or(t.position);
            self.outputs_gone |= ended.outputs_gone;
            match ended.error {
                None => {
                    // Docker ends the response when the container stops: read to its end.
                    // If it already runs again, the listing says so and it is read again.
                    t.failures = 0;
                    t.retry_at = None;
                    t.error = None;
                    t.drained = true;
                }
                Some(error) => {
                    // A daemon going away cuts every reader: discovery says that once.
                    let repeated = t.error.as_ref() == Some(&error);
                    if !repeated && !ended.daemon_away && self.reachable != Some(false) {
                        tracing::warn!(job = %self.setup.job.job_name, container = %t.name,
                            id = %id, "{error}; trying again");
                    }
                    t.failures += 1;
                    t.retry_at = Some(now + backoff(t.failures));
                    t.error = Some(error);
                }
            }
        }
    }

    fn maybe_start(&mut self, c: &ContainerSummary) {
        let key = Self::cursor_key(&c.id);
        let saved = self
            .ctx
            .acks
            .with_table(|table| table.cursor(&key).map(|p| p.as_str().to_string()));
        let Some(t) = self.tracked.get_mut(&c.id) else {
            return;
        };
        let wanted = t.running || (!t.drained && (saved.is_some() || t.position.is_some()));
        if !wanted || t.reader.is_some() || t.retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        let api = self.setup.api.clone();
        if t.tty.is_none() {
            match self.io.block_on(api.inspect(&c.id)) {
                Ok(inspected) => t.tty = Some(inspected.tty),
                Err(e) => {
                    t.failures += 1;
                    t.retry_at = Some(Instant::now() + backoff(t.failures));
                    t.error = Some(e.to_string());
                    return;
                }
            }
        }
        if t.step.is_none() {
            let (source, acked) = self.ctx.acks.open_cursor(&key);
            let step = match RecordStep::new(
                &self.setup.job.job_name,
                &self.setup.job.relabel_configs,
                &self.setup.job.pipeline_stages,
                source,
                self.ctx,
            ) {
                Ok(step) => step,
                Err(e) => {
                    tracing::error!(job = %self.setup.job.job_name, "{e}");
                    self.ctx.acks.close(source, Instant::now());
                    t.retry_at = Some(Instant::now() + RETRY_MAX);
                    return;
                }
            };
            t.source = Some(source);
            t.step = Some(step);
            t.position = t.position.or_else(|| {
                self.setup
                    .handed
                    .get(&c.id)
                    .copied()
                    .or_else(|| acked.and_then(|a| Position::parse(a.as_str())))
            });
        }
        let Some(step) = t.step.take() else { return };
        let follow = Follow {
            id: c.id.clone(),
            tty: t.tty.unwrap_or(false),
            labels: t.labels.clone(),
            stream_label: self.wanted.wants(follow::STREAM_LABEL),
            from: t.position,
        };
        let stop = self.stop_readers.subscribe();
        let wake = self.setup.wake.clone();
        let name = format!("docker-{}", c.id.get(..12).unwrap_or(&c.id));
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let ended = follow::run(&api, follow, step, stop);
            let _ = wake.send(());
            ended
        });
        match spawned {
            Ok(handle) => t.reader = Some(handle),
            Err(e) => {
                tracing::error!(job = %self.setup.job.job_name, "cannot start a reader thread: {e}");
                t.retry_at = Some(Instant::now() + RETRY_MAX);
            }
        }
    }

    fn publish(&self) {
        let mut rows: Vec<ContainerStatus> = self
            .tracked
            .iter()
            .map(|(id, t)| ContainerStatus {
                job: self.setup.job.job_name.clone(),
                id: id.clone(),
                name: t.name.clone(),
                state: if t.reader.is_some() {
                    "following"
                } else if t.retry_at.is_some() {
                    "waiting"
                } else if t.running {
                    "starting"
                } else {
                    "stopped"
                }
                .into(),
                error: t.error.clone(),
                labels: (*t.discovered).clone(),
                key: Self::cursor_key(id),
                position: None,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        self.ctx.status.set_containers(&self.setup.key, rows);
    }

    /// Stops every reader, hands over where each left off, and closes their sources.
    fn shutdown(mut self) {
        let _ = self.stop_readers.send(true);
        let mut handover = self
            .setup
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (id, t) in self.tracked.drain() {
            let mut position = t.position;
            if let Some(Ok(ended)) = t.reader.map(JoinHandle::join) {
                position = ended.position.or(position);
            }
            if let Some(p) = position {
                handover.insert(id, p);
            }
            if let Some(source) = t.source {
                self.ctx.acks.close(source, Instant::now());
            }
        }
        self.ctx.status.set_containers(&self.setup.key, Vec::new());
        self.io.shutdown_timeout(Duration::from_secs(1));
    }
}
