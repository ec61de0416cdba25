//! Wiring: config in, tailer and outputs running, positions synced, until a signal stops it.
//!
//! Shutdown (SIGINT/SIGTERM): reading stops; the outputs deliver what they hold until the
//! shutdown deadline (`server.graceful_shutdown_timeout`, 5 s by default), then give up; the
//! positions of what was acknowledged are written; the process exits 0. What was not
//! delivered is read again at the next start.

use crate::acknowledge::Acknowledger;
use crate::config::Config;
use crate::discover::Targets;
use crate::metrics::Metrics;
use crate::positions;
use crate::server::{self, ServerState};
use crate::ship::{self, CLIENT_QUEUE, loki::LokiClient};
use crate::status::StatusBoard;
use crate::tail::inbox::Inbox;
use crate::tail::lines::LineLimit;
use crate::tail::{TailOptions, Tailer};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Chunks waiting between the tailer and the outputs (each at most one read, 256 KiB).
const CHUNK_QUEUE: usize = 8;

/// The shutdown deadline when `server.graceful_shutdown_timeout` is not set.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a run was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: Config,
    /// Print entries instead of shipping them, and never write positions.
    pub dry_run: bool,
}

/// Runs until SIGINT or SIGTERM (or standard output closes, when printing).
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let RunOptions { config, dry_run } = opts;
    let metrics = Arc::new(Metrics::new());
    let print = dry_run || config.clients.is_empty();
    if print && !dry_run {
        tracing::info!("no clients configured: printing entries to standard output");
    }
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
    let status = Arc::new(StatusBoard::new());
    let clients = if print {
        vec![]
    } else {
        config
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                LokiClient::new(i, c, acks.clone(), metrics.clone())
                    .map(|client| client.with_status(status.clone(), i as u64))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let targets = Targets::from_config(&config);
    if targets.is_empty() {
        tracing::warn!("no scrape config has a __path__: nothing to read");
    }
    let tail_opts = TailOptions {
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
        max_open_files: raise_fd_limit(),
        ..TailOptions::default()
    };
    let shutdown_timeout = config
        .server
        .graceful_shutdown_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let sync_every = config
        .positions
        .sync_period
        .0
        .max(Duration::from_millis(100));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ready = Arc::new(AtomicBool::new(false));
    let server = (!config.server.disable && config.server.http_listen_port != 0).then(|| {
        (
            config.server.http_listen_address.clone(),
            config.server.http_listen_port,
        )
    });
    let listener = match server {
        Some((address, port)) => Some(runtime.block_on(server::bind(&address, port))?),
        None => None,
    };

    let inbox = Arc::new(Inbox::new());
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNK_QUEUE);
    let tailer = {
        let (inbox, acks, metrics, ready, status) = (
            inbox.clone(),
            acks.clone(),
            metrics.clone(),
            ready.clone(),
            status.clone(),
        );
        std::thread::Builder::new()
            .name("tailer".into())
            .spawn(move || {
                let tailer = Tailer::new(tail_opts, targets, inbox, acks, chunk_tx, metrics)
                    .with_status(status);
                tailer.run(|files| {
                    ready.store(true, Ordering::Release);
                    tracing::info!(files, "tailing started");
                });
            })?
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    let (outputs_done_tx, outputs_done) = oneshot::channel::<std::io::Result<()>>();
    if print {
        let acks = acks.clone();
        let color = std::io::stdout().is_terminal();
        std::thread::Builder::new()
            .name("printer".into())
            .spawn(move || {
                let _ = outputs_done_tx.send(ship::print::run(chunk_rx, acks, color));
            })?;
    } else {
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for client in clients {
            let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
            queues.push((client.host().to_string(), tx));
            tasks.push(runtime.spawn(client.run(rx, abort_rx.clone())));
        }
        let fan_out = runtime.spawn(ship::fan_out(
            chunk_rx,
            acks.clone(),
            queues,
            metrics.clone(),
            stop_rx,
            abort_rx.clone(),
        ));
        runtime.spawn(async move {
            let _ = fan_out.await;
            for task in tasks {
                let _ = task.await;
            }
            let _ = outputs_done_tx.send(Ok(()));
        });
    }

    let result = runtime.block_on(async {
        if let Some(listener) = listener {
            let router = server::router(ServerState {
                metrics: metrics.clone(),
                status: status.clone(),
                acks: acks.clone(),
                ready: ready.clone(),
            });
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            });
        }
        if let Some(every) = sd_notify::watchdog_enabled() {
            // Pet systemd's watchdog at twice the rate it asks for, while the runtime runs.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every / 2);
                loop {
                    tick.tick().await;
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            });
        }
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut sync = tokio::time::interval_at(tokio::time::Instant::now() + sync_every, sync_every);
        let mut outputs_done = outputs_done;
        let early = loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break None }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break None }
                done = &mut outputs_done => break Some(done.unwrap_or(Ok(()))),
                _ = sync.tick() => if !dry_run { sync_positions(&acks, &positions_path, &metrics) },
            }
        };
        // Stop reading; let the outputs deliver what they hold, up to the deadline.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        inbox.shutdown();
        let _ = stop_tx.send(true);
        if let Some(done) = early {
            return done;
        }
        match tokio::time::timeout(shutdown_timeout, &mut outputs_done).await {
            Ok(done) => done.unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!(
                    undelivered_chunks = acks.in_flight(),
                    deadline = ?shutdown_timeout,
                    "shutdown deadline reached with entries undelivered; they will be read again at the next start"
                );
                let _ = abort_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(1), outputs_done).await;
                Ok(())
            }
        }
    });
    let _ = abort_tx.send(true);
    let _ = tailer.join();
    if !dry_run {
        sync_positions(&acks, &positions_path, &metrics);
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    log_summary(&metrics);
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("cannot write to standard output"),
        Ok(()) => Ok(()),
    }
}

fn sync_positions(acks: &Acknowledger, path: &Path, metrics: &Metrics) {
    let Some(text) = acks.with_table(|t| t.take_changes()) else {
        return;
    };
    if let Err(e) = positions::save(path, &text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write positions file; will retry");
        metrics.positions_write_errors.inc();
        acks.with_table(|t| t.mark_dirty());
    }
}

fn log_summary(metrics: &Metrics) {
    let lines: u64 = metrics_sum(&metrics.render(), "logferry_read_lines_total");
    tracing::info!(
        lines_read = lines,
        lines_truncated = metrics.lines_truncated.get(),
        invalid_utf8_lines = metrics.invalid_utf8_lines.get(),
        rotations = metrics.rotations.get(),
        truncations = metrics.truncations.get(),
        unread_bytes_of_deleted = metrics.unread_bytes_of_deleted.get(),
        "stopped"
    );
}

/// Sums every series of one metric in a text exposition.
fn metrics_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Raises the open-files soft limit to the hard limit (as the Go runtime does for Promtail)
/// and returns how many files the tailer may keep open, leaving room for everything else.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
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
}
