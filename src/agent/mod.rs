//! Wiring: config in, inputs and outputs running, positions synced, until a signal stops it.
//!
//! The agent knows no kind of input or output by name: it asks [`input::plan`] and
//! [`ship::plan`] what the config wants, starts that, and on reload plans again and swaps.
//!
//! Reload (SIGHUP, or `POST /reload` when enabled): the config file is read again; if it is
//! valid, inputs take the new config in place where they can (the file tailer switches to the
//! new targets; files still matched keep their position) and are restarted otherwise; outputs
//! whose settings did not change keep their queues, removed outputs finish with what they
//! hold; if it is not valid, the error is logged and the old config keeps running.
//!
//! Shutdown (SIGINT/SIGTERM): reading stops; the outputs deliver what they hold until the
//! shutdown deadline (`server.graceful_shutdown_timeout`, 5 s by default), then give up; the
//! positions of what was acknowledged are written; the process exits 0. What was not
//! delivered is read again at the next start.

mod inputs;
mod plan;

pub use plan::{Mode, Plan, origin};

use crate::acknowledge::Acknowledger;
use crate::budget::Budget;
use crate::config::Config;
use crate::entry::{Chunk, ChunkSender};
use crate::input::{Ended, InputContext};
use crate::metrics::Metrics;
use crate::pipeline::CustomMetrics;
use crate::positions;
use crate::server::{self, ReloadRequest, ServerState};
use crate::ship::{self, OutputContext, OutputError, set::OutputSet};
use crate::status::{StatusBoard, unix_seconds};
use anyhow::Context;
use inputs::Inputs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// Chunks waiting between the inputs and the outputs. Their memory is bounded by the budget
/// of bytes in flight ([`in_flight_limit`]); the count only needs to be high enough for the
/// small chunks of pipelines that split each read into many streams.
const CHUNK_QUEUE: usize = 64;

/// Bytes of chunks in flight, from the read to the last output's encoding (see
/// [`crate::budget`]): twice the largest batch an output builds, so that one batch fills while
/// the one before it is in flight, and at least 2 MiB.
fn in_flight_limit(config: &Config) -> usize {
    let largest = config
        .clients
        .iter()
        .map(|c| c.batchsize.0)
        .chain(config.elasticsearch.iter().map(|e| e.batch_size.0))
        .max()
        .unwrap_or(0);
    usize::try_from(largest.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .max(2 << 20)
}

/// Threads of the outputs' runtime: one per output the config starts with, up to the cores.
///
/// The runtime's work is the outputs' (encoding, compressing, sending); inputs read on threads
/// of their own. A second worker for a single output only takes turns with the first: each
/// body sent parks a worker until the answer comes, and chunks handed over wake whichever is
/// parked, so on 8 busy files the runtime switched threads about 2,500 times per 537 MB with
/// two workers and 1,100 with one, for 2 – 3 % of the agent's CPU and the same wall time.
/// Outputs added by a reload share the workers the process started with.
fn runtime_workers(outputs: usize, cores: usize) -> usize {
    outputs.clamp(1, cores.max(1))
}

/// The shutdown deadline when `server.graceful_shutdown_timeout` is not set.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a run was asked for.
pub struct RunOptions {
    pub config: Config,
    /// The config resolved by [`Plan::build`].
    pub plan: Plan,
    /// Where the plan's metrics stages registered.
    pub custom: CustomMetrics,
    /// Where the config came from (None: the built-in default), read again on reload.
    pub config_path: Option<PathBuf>,
    pub expand_env: bool,
    pub mode: Mode,
    /// Serve `POST /reload` (`-server.enable-runtime-reload`).
    pub reload_endpoint: bool,
    /// Print what each pipeline stage does to each entry (`-inspect`, with `-dry-run`).
    pub inspect: bool,
}

/// A hash of the config file, logged at start and at each reload so an operator can tell
/// which version runs.
fn config_hash(path: Option<&Path>) -> String {
    use sha2::Digest;
    match path.map(std::fs::read) {
        Some(Ok(bytes)) => format!("{:x}", sha2::Sha256::digest(&bytes)),
        Some(Err(_)) => "unreadable".into(),
        None => "built-in".into(),
    }
}

/// Runs until SIGINT or SIGTERM (or the end of every input, or standard output closing when
/// printing).
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let RunOptions {
        config,
        plan,
        custom,
        config_path,
        expand_env,
        mode,
        reload_endpoint,
        inspect,
    } = opts;
    // Standard input has no positions to keep.
    let dry_run = mode.dry_run || mode.stdin;
    let inspect = inspect && dry_run;
    let metrics = Arc::new(Metrics::new());
    let positions_path = config.positions.filename.clone();
    if !dry_run
        && let Some(dir) = positions_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the positions directory {}", dir.display()))?;
    }
    let table = positions::load(&positions_path, config.positions.ignore_invalid_yaml)?;
    let acks = Arc::new(Acknowledger::new(table).with_metrics(metrics.clone()));
    metrics.with_registry(|r| custom.register(r));
    let status = Arc::new(StatusBoard::new());
    let shutdown_timeout = config
        .server
        .graceful_shutdown_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let positions_writer = if dry_run {
        None
    } else {
        Some(positions::Writer::start(
            positions_path.clone(),
            positions::write_interval(config.positions.sync_period.0),
            acks.clone(),
            positions::WriteCounters {
                writes: metrics.positions_writes.clone(),
                errors: metrics.positions_write_errors.clone(),
            },
        )?)
    };
    tracing::info!(config = %config_path.as_ref().map(|p| p.display().to_string()).unwrap_or("built-in".into()),
        hash = %config_hash(config_path.as_deref()), "config loaded");
    metrics.last_reload_successful.set(1);
    metrics
        .last_reload_success_time
        .set(unix_seconds(SystemTime::now()));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_workers(
            plan.outputs.len(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ))
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let (abort_tx, abort_rx) = watch::channel(false);
    let (publish, outputs_rx) = watch::channel(Vec::new());
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<OutputError>(1);
    let budget = Budget::new(in_flight_limit(&config));
    let mut outputs = OutputSet::new(
        OutputContext {
            acks: acks.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
            starved: budget.starved(),
        },
        publish,
        abort_rx.clone(),
        fatal_tx,
    );
    if mode.print(&config) && !dry_run {
        tracing::info!(
            "no clients and no elasticsearch outputs configured: printing entries to standard output"
        );
    }
    let Plan {
        inputs: first_inputs,
        outputs: first_outputs,
    } = plan;
    outputs.apply(&first_outputs)?;

    let ready = Arc::new(AtomicBool::new(false));
    let listener = if !config.server.disable && config.server.http_listen_port != 0 {
        Some(runtime.block_on(server::bind(
            &config.server.http_listen_address,
            config.server.http_listen_port,
        ))?)
    } else {
        None
    };

    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let started = inputs::readiness(first_inputs.len(), ready.clone());
    let mut inputs = Inputs::new(InputContext {
        acks: acks.clone(),
        chunks: ChunkSender::new(chunk_tx, budget.clone()),
        metrics: metrics.clone(),
        status: status.clone(),
        custom: custom.clone(),
        inspect,
        started,
        ended: ended_tx,
    });
    inputs.apply(first_inputs)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let fan_out = runtime.spawn(ship::fan_out(
        chunk_rx,
        acks.clone(),
        outputs_rx,
        stop_rx,
        abort_rx.clone(),
    ));

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let reload_enabled = reload_endpoint || config.server.enable_runtime_reload;
    let mut current = config;
    let result: anyhow::Result<()> = runtime.block_on(async {
        if let Some(listener) = listener {
            serve_http(listener, ServerState {
                metrics: metrics.clone(),
                status: status.clone(),
                acks: acks.clone(),
                ready: ready.clone(),
                reload: reload_enabled.then(|| reload_tx.clone()),
            });
        }
        pet_watchdog();
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let reload = |trigger: &str, current: &mut Config, outputs: &mut OutputSet, inputs: &mut Inputs| -> Result<(), String> {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, monotonic_now()]);
            let outcome = reload_config(config_path.as_deref(), expand_env, current, outputs, inputs, mode, &custom);
            match &outcome {
                Ok(()) => {
                    budget.set_limit(in_flight_limit(current));
                    metrics.reload_success.inc();
                    metrics.last_reload_successful.set(1);
                    metrics.last_reload_success_time.set(unix_seconds(SystemTime::now()));
                    tracing::info!(trigger, hash = %config_hash(config_path.as_deref()), "config reloaded");
                }
                Err(e) => {
                    metrics.reload_failures.inc();
                    metrics.last_reload_successful.set(0);
                    tracing::error!(trigger, error = %e, "config reload rejected; the previous config keeps running");
                }
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            outcome
        };
        let mut signalled = false;
        let early: Option<anyhow::Error> = loop {
            tokio::select! {
                Some((key, result)) = ended_rx.recv() => {
                    if let Err(e) = result {
                        break Some(anyhow::Error::new(e).context(format!("input {key} failed")));
                    }
                    if inputs.ended(&key) {
                        break None;
                    }
                }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); signalled = true; break None }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); signalled = true; break None }
                _ = hup.recv() => { let _ = reload("SIGHUP", &mut current, &mut outputs, &mut inputs); }
                Some(reply) = reload_rx.recv() => {
                    let _ = reply.send(reload("POST /reload", &mut current, &mut outputs, &mut inputs));
                }
                Some(e) = fatal_rx.recv() => {
                    break match e {
                        OutputError::Stdout(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                            return Ok(());
                        }
                        e => Some(anyhow::Error::new(e)),
                    };
                }
            }
        };
        // Stop reading; let the outputs deliver what they hold, up to the deadline.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        inputs.stop();
        let _ = stop_tx.send(true);
        if let Some(e) = early {
            return Err(e);
        }
        // The outputs stay as they are: the fan-out hands on what is queued, and when it ends,
        // the output list it holds goes with it, which closes the outputs' queues.
        let tasks = outputs.into_tasks();
        let all_done = async {
            let _ = fan_out.await;
            for task in tasks {
                let _ = task.await;
            }
        };
        drain(all_done, signalled, shutdown_timeout, &acks, &abort_tx, &mut term, &mut int).await;
        Ok(())
    });
    let _ = abort_tx.send(true);
    inputs.stop();
    inputs.join();
    if let Some(writer) = positions_writer {
        writer.finish();
    }
    drop(_guard);
    runtime.shutdown_timeout(Duration::from_millis(100));
    tracing::info!(
        lines_truncated = metrics.lines_truncated.get(),
        invalid_utf8_lines = metrics.invalid_utf8_lines.get(),
        rotations = metrics.rotations.get(),
        truncations = metrics.truncations.get(),
        unread_bytes_of_deleted = metrics.unread_bytes_of_deleted.get(),
        "stopped"
    );
    result
}

/// Lets the outputs deliver what they hold: all of it when the inputs ended by themselves
/// (unless a signal says stop), else up to the shutdown deadline; then aborts them.
async fn drain(
    all_done: impl std::future::Future<Output = ()>,
    signalled: bool,
    deadline: Duration,
    acks: &Acknowledger,
    abort: &watch::Sender<bool>,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) {
    tokio::pin!(all_done);
    if !signalled {
        tokio::select! {
            () = &mut all_done => return,
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
    if tokio::time::timeout(deadline, &mut all_done).await.is_err() {
        tracing::warn!(
            undelivered_chunks = acks.in_flight(),
            deadline = ?deadline,
            "shutdown deadline reached with entries undelivered; files and the journal read them again at the next start, what sockets received is lost"
        );
        let _ = abort.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), all_done).await;
    }
}

/// Serves the HTTP endpoints (`/metrics`, `/ready`, `/targets`, `/reload`…).
fn serve_http(listener: tokio::net::TcpListener, state: ServerState) {
    let router = server::router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
}

/// Under systemd with `WatchdogSec=`: pets the watchdog at twice the rate it asks for, while
/// the runtime runs.
fn pet_watchdog() {
    if let Some(every) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Reads the config again and applies it; on error nothing changes.
fn reload_config(
    path: Option<&Path>,
    expand_env: bool,
    current: &mut Config,
    outputs: &mut OutputSet,
    inputs: &mut Inputs,
    mode: Mode,
    custom: &CustomMetrics,
) -> Result<(), String> {
    let config = match path {
        Some(path) => Config::load(path, expand_env).map_err(|e| e.to_string())?,
        None => current.clone(),
    };
    let plan = Plan::build(&config, &origin(path), mode, custom).map_err(|e| e.to_string())?;
    outputs.apply(&plan.outputs).map_err(|e| e.to_string())?;
    inputs.apply(plan.inputs).map_err(|e| e.to_string())?;
    let restart_needed = [
        (
            config.positions.filename != current.positions.filename,
            "positions.filename",
        ),
        (
            config.server.http_listen_address != current.server.http_listen_address,
            "server.http_listen_address",
        ),
        (
            config.server.http_listen_port != current.server.http_listen_port,
            "server.http_listen_port",
        ),
    ];
    for (changed, key) in restart_needed {
        if changed {
            tracing::warn!(
                key,
                "changed in the config; it takes effect at the next restart"
            );
        }
    }
    let keep = (current.positions.filename.clone(), current.server.clone());
    *current = config;
    (current.positions.filename, current.server) = keep;
    Ok(())
}

fn monotonic_now() -> sd_notify::NotifyState<'static> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    sd_notify::NotifyState::MonotonicUsec(
        i128::from(ts.tv_sec) * 1_000_000 + i128::from(ts.tv_nsec) / 1000,
    )
}

#[cfg(test)]
mod tests {
    use super::runtime_workers;

    #[test]
    fn one_worker_per_output_up_to_the_cores() {
        assert_eq!(runtime_workers(0, 8), 1, "printing still needs a worker");
        assert_eq!(runtime_workers(1, 8), 1);
        assert_eq!(runtime_workers(2, 8), 2);
        assert_eq!(runtime_workers(3, 2), 2);
        assert_eq!(runtime_workers(3, 0), 1);
    }
}
