//! What the end-to-end benchmarks share: the same deterministic files of realistic nginx access
//! and JSON application lines (so that the Loki and the Elasticsearch figures are measured on
//! the same bytes), the clocks they read (a thread's CPU time, a process's CPU time and peak
//! RSS, heap and mapped files apart), and which build of the binary they run.
#![allow(dead_code)]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many files the workload spreads over unless `LOGFERRY_BENCH_FILES` says otherwise: a few
/// big files, the shape of a web server's logs. Thousands of small files (a node with many
/// containers) is the other shape the agent must handle at the same cost per byte.
pub const FILES: usize = 8;

/// How much work a benchmark does: the variable `name`, or `full` under `cargo bench`; `test`
/// under `cargo test`, which only checks that the benchmark works.
pub fn amount(name: &str, full: u64, test: u64) -> u64 {
    if !std::env::args().any(|a| a == "--bench") {
        return test;
    }
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(full)
}

/// Times each floor is measured; the least CPU counts. A floor is what the work costs with
/// nothing in the way, and on a shared machine one run of it moved by 40 % between runs.
pub const FLOOR_RUNS: usize = 3;

/// The least of [`FLOOR_RUNS`] measurements of a floor.
pub fn floor_of(mut measure: impl FnMut() -> std::time::Duration) -> std::time::Duration {
    (0..FLOOR_RUNS).map(|_| measure()).min().unwrap_or_default()
}

/// MiB to write: `LOGFERRY_BENCH_MB` or `default` (4 under `cargo test`).
pub fn size_mb(default: u64) -> u64 {
    amount("LOGFERRY_BENCH_MB", default, 4)
}

/// The number of files from `LOGFERRY_BENCH_FILES`, or [`FILES`].
pub fn file_count() -> usize {
    std::env::var("LOGFERRY_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(FILES)
}

/// A small deterministic generator, so every run reads the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/orders",
    "/api/v1/orders/8812/items",
    "/static/app.3f9a1c.js",
    "/static/style.css",
    "/login",
    "/healthz",
    "/api/v2/search?q=rust+log+shipper&page=2",
    "/images/products/12345/large.jpg",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.5.0",
    "Prometheus/2.51.0",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const STATUS: &[&str] = &["200", "200", "200", "304", "404", "500", "201"];
const LEVELS: &[&str] = &["info", "info", "info", "debug", "warn", "error"];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss, fetching from origin",
    "order placed",
    "payment provider answered slowly",
    "user session refreshed",
    "retrying upstream call",
];

fn nginx_line(rng: &mut Rng, out: &mut Vec<u8>) {
    let n = rng.next();
    let _ = writeln!(
        out,
        "10.{}.{}.{} - - [21/Nov/2026:06:{:02}:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\"",
        n % 256,
        (n >> 8) % 256,
        (n >> 16) % 256,
        (n >> 24) % 60,
        (n >> 32) % 60,
        rng.pick(METHODS),
        rng.pick(PATHS),
        rng.pick(STATUS),
        (n >> 40) % 50_000,
        rng.pick(AGENTS)
    );
}

fn json_line(rng: &mut Rng, out: &mut Vec<u8>) {
    let n = rng.next();
    let _ = writeln!(
        out,
        "{{\"ts\":\"2026-11-21T06:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"msg\":\"{}\",\"trace_id\":\"{:016x}\",\"user_id\":{},\"duration_ms\":{}}}",
        n % 60,
        (n >> 8) % 60,
        (n >> 16) % 1000,
        rng.pick(LEVELS),
        rng.pick(MESSAGES),
        rng.next(),
        (n >> 24) % 100_000,
        (n >> 40) % 2_000
    );
}

/// Writes `files` files totalling about `bytes`; returns their paths and the number of lines.
pub fn make_files(dir: &Path, files: usize, bytes: u64) -> (Vec<PathBuf>, u64) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut lines = 0;
    let mut paths = vec![];
    let mut buf = Vec::with_capacity(512);
    for i in 0..files {
        let path = dir.join(format!("app-{i}.log"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create bench file"));
        let mut written = 0u64;
        while written < bytes / files as u64 {
            buf.clear();
            if i % 2 == 0 {
                nginx_line(&mut rng, &mut buf)
            } else {
                json_line(&mut rng, &mut buf)
            }
            out.write_all(&buf).expect("write bench file");
            written += buf.len() as u64;
            lines += 1;
        }
        out.flush().expect("flush bench file");
        paths.push(path);
    }
    (paths, lines)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct passed.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of this thread.
pub fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time (user + system) of this process: the receiver's threads, in the end-to-end
/// benchmarks.
pub fn own_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The user + system CPU time in a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // After the name (which may hold spaces and parentheses), utime and stime are the 12th and
    // 13th fields.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks_used: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(ticks_used / ticks)
}

/// CPU time of a running process's threads, summed by thread name, busiest first.
pub fn thread_usage(pid: u32) -> Vec<(String, Duration)> {
    let mut by_name: Vec<(String, Duration)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name.to_string())
            .unwrap_or_default();
        let cpu = stat_cpu(&stat);
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += cpu,
            None => by_name.push((name, cpu)),
        }
    }
    by_name.sort_by_key(|(_, cpu)| std::cmp::Reverse(*cpu));
    by_name
}

/// CPU time (user + system) and peak RSS of a running process.
pub fn proc_usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (stat_cpu(&stat), hwm_kb * 1024)
}

/// Peak resident memory seen while sampling, in KiB: anonymous (the heap) and file-backed
/// (mapped files, the binary), which the peak RSS lumps together.
#[derive(Default)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
}

impl Rss {
    pub fn sample(&mut self, pid: u32) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        for line in status.lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(kb)) = (words.next(), words.next()) else {
                continue;
            };
            let kb = kb.parse().unwrap_or(0);
            match name {
                "RssAnon:" => self.anon = self.anon.max(kb),
                "RssFile:" => self.file = self.file.max(kb),
                _ => {}
            }
        }
    }
}

/// The builds to run, with the suffix their rows carry: this one, then each of
/// `LOGFERRY_BENCH_BASELINE` (paths, `:`-separated): another build run on the same files in the
/// same run, to see how a change moved the figures under the same load.
pub fn builds() -> Vec<(String, std::path::PathBuf)> {
    let mut builds = vec![(String::new(), env!("CARGO_BIN_EXE_logferry").into())];
    if let Some(list) = std::env::var_os("LOGFERRY_BENCH_BASELINE") {
        builds.extend(
            std::env::split_paths(&list)
                .enumerate()
                .map(|(i, b)| (format!(" (baseline {})", i + 1), b)),
        );
    }
    builds
}

/// The binary measured: this build's, or `LOGFERRY_BENCH_BIN` (an earlier build, to compare
/// under the same conditions).
pub fn logferry_bin() -> std::path::PathBuf {
    std::env::var_os("LOGFERRY_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_logferry").into())
}
