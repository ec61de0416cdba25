//! Wiring: config in, tailer and outputs running, positions synced, until a signal stops it.
//!
//! Reload (SIGHUP, or `POST /reload` when enabled): the config file is read again; if it is
//! valid, the tailer switches to the new targets (files still matched keep their position),
//! outputs whose settings did not change keep their queues, removed outputs finish with what
//! they hold; if it is not, the error is logged and the old config keeps running.
//!
//! Shutdown (SIGINT/SIGTERM): reading stops; the outputs deliver what they hold until the
//! shutdown deadline (`server.graceful_shutdown_timeout`, 5 s by default), then give up; the
//! positions of what was acknowledged are written; the process exits 0. What was not
//! delivered is read again at the next start.

use crate::acknowledge::Acknowledger;
use crate::config::{ClientConfig, Config};
use crate::discover::Targets;
use crate::entry::Chunk;
use crate::metrics::Metrics;
use crate::positions;
use crate::server::{self, ReloadRequest, ServerState};
use crate::ship::{self, OUTPUT_QUEUE, OutputHandle, loki::LokiClient};
use crate::status::{StatusBoard, unix_seconds};
use crate::tail::inbox::Inbox;
use crate::tail::lines::LineLimit;
use crate::tail::{TailOptions, Tailer};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Chunks waiting between the tailer and the outputs (each at most one read, 256 KiB).
const CHUNK_QUEUE: usize = 8;

/// The shutdown deadline when `server.graceful_shutdown_timeout` is not set.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a run was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: Config,
    /// Where the config came from (None: the built-in default), read again on reload.
    pub config_path: Option<PathBuf>,
    pub expand_env: bool,
    /// Print entries instead of shipping them, and never write positions.
    pub dry_run: bool,
    /// Serve `POST /reload` (`-server.enable-runtime-reload`).
    pub reload_endpoint: bool,
    /// Read standard input instead of files (`-stdin`), and exit at its end.
    pub stdin: bool,
    /// Print what each pipeline stage does to each entry (`-inspect`, with `-dry-run`).
    pub inspect: bool,
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
        ..TailOptions::default()
    }
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

/// The running outputs: Loki clients, or the printer.
struct Outputs {
    handles: Vec<OutputHandle>,
    /// The config each client output was built from, by key.
    clients: Vec<(u64, ClientConfig)>,
    printer: Option<u64>,
    next_key: u64,
    tasks: Vec<JoinHandle<()>>,
    publish: watch::Sender<Vec<OutputHandle>>,
    acks: Arc<Acknowledger>,
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
    abort: watch::Receiver<bool>,
    /// The printer failed (standard output closed, say).
    fatal: mpsc::Sender<std::io::Error>,
}

impl Outputs {
    /// Makes the outputs match the config: the printer when `print`, else one client per
    /// entry of `clients:`. Outputs whose config did not change are kept. Nothing changes if
    /// any new client cannot be built.
    fn apply(&mut self, config: &Config, print: bool) -> anyhow::Result<()> {
        let mut kept_clients: Vec<(u64, ClientConfig)> = Vec::new();
        let mut new_clients: Vec<(u64, ClientConfig, LokiClient)> = Vec::new();
        let mut available = self.clients.clone();
        if !print {
            for (i, cfg) in config.clients.iter().enumerate() {
                if let Some(pos) = available.iter().position(|(_, c)| c == cfg) {
                    kept_clients.push(available.remove(pos));
                } else {
                    let key = self.next_key + new_clients.len() as u64;
                    let client = LokiClient::new(i, cfg, self.acks.clone(), self.metrics.clone())?
                        .with_status(self.status.clone(), key);
                    new_clients.push((key, cfg.clone(), client));
                }
            }
        }
        self.next_key += new_clients.len() as u64;
        let keep_printer = if print { self.printer } else { None };
        let mut handles: Vec<OutputHandle> = self
            .handles
            .iter()
            .filter(|h| {
                kept_clients.iter().any(|(k, _)| *k == h.key) || Some(h.key) == keep_printer
            })
            .cloned()
            .collect();
        for (key, _) in &available {
            self.status.remove_client(*key);
        }
        for (key, cfg, client) in new_clients {
            let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
            handles.push(OutputHandle {
                key,
                name: client.host().to_string(),
                queue: tx,
            });
            self.tasks
                .push(tokio::spawn(client.run(rx, self.abort.clone())));
            kept_clients.push((key, cfg));
        }
        if print && keep_printer.is_none() {
            let key = self.next_key;
            self.next_key += 1;
            let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
            handles.push(OutputHandle {
                key,
                name: "stdout".into(),
                queue: tx,
            });
            let (acks, fatal) = (self.acks.clone(), self.fatal.clone());
            let color = std::io::stdout().is_terminal();
            self.tasks.push(tokio::task::spawn_blocking(move || {
                if let Err(e) = ship::print::run(rx, acks, color) {
                    let _ = fatal.try_send(e);
                }
            }));
            self.printer = Some(key);
        } else if !print {
            self.printer = None;
        }
        self.clients = kept_clients;
        self.handles = handles.clone();
        // Outputs left out of the list lose their last sender here and finish what they hold.
        let _ = self.publish.send(handles);
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM (or standard output closes, when printing).
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let RunOptions {
        config,
        config_path,
        expand_env,
        dry_run,
        reload_endpoint,
        stdin,
        inspect,
    } = opts;
    // Standard input has no positions to keep.
    let dry_run = dry_run || stdin;
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
    let custom = crate::pipeline::CustomMetrics::default();
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
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let (abort_tx, abort_rx) = watch::channel(false);
    let (publish, outputs_rx) = watch::channel(Vec::new());
    let (fatal_tx, mut fatal_rx) = mpsc::channel(1);
    let mut outputs = Outputs {
        handles: Vec::new(),
        clients: Vec::new(),
        printer: None,
        next_key: 0,
        tasks: Vec::new(),
        publish,
        acks: acks.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        abort: abort_rx.clone(),
        fatal: fatal_tx,
    };
    let print = |c: &Config| dry_run || c.clients.is_empty();
    if print(&config) && !dry_run {
        tracing::info!("no clients configured: printing entries to standard output");
    }
    outputs.apply(&config, print(&config))?;

    let ready = Arc::new(AtomicBool::new(false));
    let listener = if !config.server.disable && config.server.http_listen_port != 0 {
        Some(runtime.block_on(server::bind(
            &config.server.http_listen_address,
            config.server.http_listen_port,
        ))?)
    } else {
        None
    };

    let inbox = Arc::new(Inbox::new());
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);
    let (input_done_tx, mut input_done) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let reader = if stdin {
        let (config, acks, metrics, custom) = (
            config.clone(),
            acks.clone(),
            metrics.clone(),
            custom.clone(),
        );
        ready.store(true, Ordering::Release);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let result = crate::tail::stdin::read_stdin(
                    &config, &custom, inspect, &acks, &metrics, &chunk_tx,
                );
                drop(chunk_tx);
                let _ = input_done_tx.send(result);
            })?
    } else {
        drop(input_done_tx);
        let (inbox, acks, metrics, ready, status) = (
            inbox.clone(),
            acks.clone(),
            metrics.clone(),
            ready.clone(),
            status.clone(),
        );
        let (targets, opts) = (
            Targets::from_config(&config),
            TailOptions {
                max_open_files: raise_fd_limit(),
                ..tail_options(&config)
            },
        );
        if targets.is_empty() {
            tracing::warn!("no scrape config has a __path__: nothing to read");
        }
        std::thread::Builder::new()
            .name("tailer".into())
            .spawn(move || {
                let tailer = Tailer::new(opts, targets, inbox, acks, chunk_tx, metrics)
                    .with_status(status)
                    .with_pipelines(custom, inspect);
                tailer.run(|files| {
                    ready.store(true, Ordering::Release);
                    tracing::info!(files, "tailing started");
                    // Under systemd (Type=notify): the unit is started once the targets run.
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                });
            })?
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let fan_out = runtime.spawn(ship::fan_out(
        chunk_rx,
        acks.clone(),
        outputs_rx,
        metrics.clone(),
        stop_rx,
        abort_rx.clone(),
    ));

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let reload_enabled = reload_endpoint || config.server.enable_runtime_reload;
    let mut current = config;
    let result: anyhow::Result<()> = runtime.block_on(async {
        if let Some(listener) = listener {
            let router = server::router(ServerState {
                metrics: metrics.clone(),
                status: status.clone(),
                acks: acks.clone(),
                ready: ready.clone(),
                reload: reload_enabled.then(|| reload_tx.clone()),
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
        let mut hup = signal(SignalKind::hangup())?;
        let reload = |trigger: &str, current: &mut Config, outputs: &mut Outputs| -> Result<(), String> {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, monotonic_now()]);
            let outcome = reload_config(config_path.as_deref(), expand_env, current, outputs, &inbox, print);
            match &outcome {
                Ok(()) => {
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
        let input_open = stdin;
        let mut signalled = false;
        let early = loop {
            tokio::select! {
                result = &mut input_done, if input_open => {
                    match result {
                        Ok(Err(e)) => break Some(e),
                        _ => break None,
                    }
                }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); signalled = true; break None }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); signalled = true; break None }
                _ = hup.recv() => { let _ = reload("SIGHUP", &mut current, &mut outputs); }
                Some(reply) = reload_rx.recv() => {
                    let _ = reply.send(reload("POST /reload", &mut current, &mut outputs));
                }
                Some(e) = fatal_rx.recv() => break Some(e),
            }
        };
        // Stop reading; let the outputs deliver what they hold, up to the deadline.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        inbox.shutdown();
        let _ = stop_tx.send(true);
        if let Some(e) = early {
            return if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e).context("cannot write to standard output") };
        }
        // The outputs stay as they are: the fan-out hands on what is queued, and when it ends,
        // the output list it holds goes with it, which closes the outputs' queues.
        let tasks = std::mem::take(&mut outputs.tasks);
        drop(outputs);
        let all_done = async {
            let _ = fan_out.await;
            for task in tasks {
                let _ = task.await;
            }
        };
        tokio::pin!(all_done);
        if !signalled {
            // The input ended: wait for everything to be delivered, unless a signal says stop.
            tokio::select! {
                () = &mut all_done => return Ok(()),
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        }
        if tokio::time::timeout(shutdown_timeout, &mut all_done).await.is_err() {
            tracing::warn!(
                undelivered_chunks = acks.in_flight(),
                deadline = ?shutdown_timeout,
                "shutdown deadline reached with entries undelivered; they will be read again at the next start"
            );
            let _ = abort_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(1), all_done).await;
        }
        Ok(())
    });
    let _ = abort_tx.send(true);
    inbox.shutdown();
    let _ = reader.join();
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

/// Reads the config again and applies it; on error nothing changes.
fn reload_config(
    path: Option<&Path>,
    expand_env: bool,
    current: &mut Config,
    outputs: &mut Outputs,
    inbox: &Inbox,
    print: impl Fn(&Config) -> bool,
) -> Result<(), String> {
    let config = match path {
        Some(path) => Config::load(path, expand_env).map_err(|e| e.to_string())?,
        None => current.clone(),
    };
    outputs
        .apply(&config, print(&config))
        .map_err(|e| e.to_string())?;
    inbox.retarget(Targets::from_config(&config), tail_options(&config));
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
