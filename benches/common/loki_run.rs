//! One run of the real binary on a glob of files into the loopback Loki receiver, measured:
//! what the end-to-end workloads share whatever their config.
#![allow(dead_code)]

use super::workload::{FLOOR_RUNS, amount, own_cpu, proc_usage, thread_usage};
use loki_receiver::Receiver;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
pub struct Shipment<'a> {
    pub binary: &'a Path,
    /// Names this run's config and positions files in `dir`.
    pub name: &'a str,
    pub dir: &'a Path,
    pub glob: &'a str,
    /// Lines the receiver must get before the run ends.
    pub lines: u64,
    /// Extra keys of the client, as YAML lines indented under it.
    pub client: &'a str,
    /// The job's `pipeline_stages`, as YAML lines indented under the job, or nothing.
    pub stages: &'a str,
    /// Pins the process to the first CPU.
    pub one_core: bool,
    pub env: &'a [(&'a str, String)],
}

/// What [`ship`] measured over its runs.
pub struct Run {
    /// Until the receiver had the first line (discovery, opening and the first push): the
    /// longest of the runs.
    pub first: Duration,
    /// The shortest of the runs.
    pub wall: Duration,
    /// The least CPU of the runs, as for the floors: noise on a shared machine only ever adds.
    pub cpu: Duration,
    /// The most CPU of the runs, to show how far they spread.
    pub cpu_most: Duration,
    /// The highest of the runs.
    pub peak_rss: u64,
    /// What the receiver (this process, with its 2 ms polling of the count) used while the
    /// run with the least CPU shipped, over its wall time, in cores: on a machine of a few
    /// cores, what the binary could not have.
    pub receiver_cores: f64,
    /// CPU of the binary's threads by name, in the run with the least CPU.
    pub threads: Vec<(String, Duration)>,
}

/// How many times each build ships the files: `LOGFERRY_BENCH_RUNS`, [`FLOOR_RUNS`] unless set,
/// once under `cargo test`.
pub fn runs() -> usize {
    amount("LOGFERRY_BENCH_RUNS", FLOOR_RUNS as u64, 1).max(1) as usize
}

/// Ships the files [`runs`] times, each from the start, and keeps for each figure the same end
/// of the runs as the floors do: a floor is the least of as many runs, and setting one run of
/// the binary against it would count the noise of the machine as logferry's cost.
pub fn ship(s: &Shipment) -> Run {
    fold((0..runs()).map(|_| ship_once(s)).collect())
}

/// One figure of several runs of the same shipment: the least CPU (with that run's per-thread
/// figures), the most CPU beside it, the shortest wall time, the longest wait for a first line
/// and the highest peak RSS.
pub fn fold(runs: Vec<Run>) -> Run {
    let most = |f: fn(&Run) -> Duration| runs.iter().map(f).max().unwrap_or_default();
    let (first, wall, cpu_most) = (
        most(|r| r.first),
        runs.iter().map(|r| r.wall).min().unwrap_or_default(),
        most(|r| r.cpu),
    );
    let peak_rss = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
    let least = runs
        .into_iter()
        .min_by_key(|r| r.cpu)
        .expect("at least one run");
    Run {
        first,
        wall,
        cpu_most,
        peak_rss,
        ..least
    }
}

/// The open-files limit (soft and hard) the binary runs under: `LOGFERRY_BENCH_NOFILE`, or
/// this process's own. A node whose limit is below its file count makes the tailer close and
/// reopen files to stay within its descriptor budget.
fn open_files_limit() -> Option<libc::rlim_t> {
    std::env::var("LOGFERRY_BENCH_NOFILE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the binary once from the start (no positions file) until the receiver has every line,
/// then stops it. The client waits at most
/// 100 ms to fill a batch (Promtail's default is 1 s): the last lines of a run then wait no
/// longer than that, which would otherwise count as a second of a run of a few seconds.
pub fn ship_once(s: &Shipment) -> Run {
    let positions = s.dir.join(format!("positions-{}.yaml", s.name));
    let _ = std::fs::remove_file(&positions);
    let receiver = Receiver::builder().count_only(true).start();
    let config = s.dir.join(format!("config-{}.yaml", s.name));
    std::fs::write(
        &config,
        format!(
            "server: {{http_listen_port: 0}}\npositions: {{filename: {}}}\nclients:\n  - url: {}\n    batchwait: 100ms\n{}scrape_configs:\n  - job_name: bench\n    static_configs:\n      - labels: {{job: bench, __path__: '{}'}}\n{}",
            positions.display(),
            receiver.url(),
            s.client,
            s.glob,
            s.stages,
        ),
    )
    .expect("write bench config");
    let started = Instant::now();
    let receiver_started = own_cpu();
    let mut command = Command::new(s.binary);
    command
        .arg(format!("-config.file={}", config.display()))
        .arg("-log.level=warn")
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null());
    let one_core = s.one_core;
    let nofile = open_files_limit();
    if one_core || nofile.is_some() {
        // SAFETY: between fork and exec, only sched_setaffinity and setrlimit
        // (async-signal-safe) run.
        unsafe {
            command.pre_exec(move || {
                if one_core {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(limit) = nofile {
                    let both = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &both) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().expect("start logferry");
    let deadline = started + Duration::from_secs(900);
    let mut first = None;
    loop {
        let got = receiver.stats().entries;
        if got > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if got >= s.lines || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = started.elapsed();
    let receiver_cpu = own_cpu().saturating_sub(receiver_started);
    let (cpu, peak_rss) = proc_usage(child.id());
    let threads = thread_usage(child.id());
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let got = receiver.stats().entries;
    assert_eq!(
        got, s.lines,
        "the receiver got {got} of {} lines ({})",
        s.lines, s.name
    );
    Run {
        first: first.unwrap_or(wall),
        wall,
        cpu,
        cpu_most: cpu,
        peak_rss,
        receiver_cores: receiver_cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        threads,
    }
}
