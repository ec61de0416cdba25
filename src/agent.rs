//! Wiring: config in, tailer and outputs running, positions synced, until a signal stops it.

use crate::acknowledge::Acknowledger;
use crate::config::Config;
use crate::discover::Targets;
use crate::positions;
use crate::ship;
use crate::tail::inbox::Inbox;
use crate::tail::lines::LineLimit;
use crate::tail::{TailOptions, TailStats, Tailer};
use anyhow::{Context, bail};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Chunks waiting between the tailer and the outputs (each at most `read_size` bytes).
const CHUNK_QUEUE: usize = 16;

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
    if !config.clients.is_empty() && !dry_run {
        bail!(
            "shipping to clients is not available in this build yet; run with -dry-run to print entries"
        );
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
    let acks = Arc::new(Acknowledger::new(table, 1));
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
    let stats = Arc::new(TailStats::default());
    let inbox = Arc::new(Inbox::new());
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNK_QUEUE);

    let tailer = {
        let (inbox, acks, stats) = (inbox.clone(), acks.clone(), stats.clone());
        std::thread::Builder::new()
            .name("tailer".into())
            .spawn(move || {
                Tailer::new(tail_opts, targets, inbox, acks, chunk_tx, stats)
                    .run(|files| tracing::info!(files, "tailing started"));
            })?
    };
    let (printer_done_tx, printer_done) = oneshot::channel();
    let printer = {
        let acks = acks.clone();
        let color = std::io::stdout().is_terminal();
        std::thread::Builder::new()
            .name("printer".into())
            .spawn(move || {
                let result = ship::print::run(chunk_rx, acks, color);
                let _ = printer_done_tx.send(());
                result
            })?
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sync_every = config
        .positions
        .sync_period
        .0
        .max(Duration::from_millis(100));
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut sync =
            tokio::time::interval_at(tokio::time::Instant::now() + sync_every, sync_every);
        let mut printer_done = printer_done;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break }
                _ = &mut printer_done => break,
                _ = sync.tick() => if !dry_run { sync_positions(&acks, &positions_path) },
            }
        }
        anyhow::Ok(())
    })?;

    // Stop reading, let the output settle what it holds, then record where that leaves us.
    inbox.shutdown();
    let _ = tailer.join();
    let printed = printer.join();
    if !dry_run {
        sync_positions(&acks, &positions_path);
    }
    log_summary(&stats);
    match printed {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Ok(Err(e)) => Err(e).context("cannot write to standard output"),
        _ => Ok(()),
    }
}

fn sync_positions(acks: &Acknowledger, path: &Path) {
    let Some(text) = acks.with_table(|t| t.take_changes()) else {
        return;
    };
    if let Err(e) = positions::save(path, &text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write positions file; will retry");
        acks.with_table(|t| t.mark_dirty());
    }
}

fn log_summary(stats: &TailStats) {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    tracing::info!(
        lines = get(&stats.lines),
        bytes = get(&stats.bytes),
        dropped_too_long = get(&stats.dropped_too_long),
        truncated_lines = get(&stats.truncated_lines),
        invalid_utf8_lines = get(&stats.invalid_utf8),
        rotations = get(&stats.rotations),
        truncations = get(&stats.truncations),
        unread_bytes_of_deleted = get(&stats.unread_bytes_of_deleted),
        "stopped"
    );
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
