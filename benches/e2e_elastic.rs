//! End-to-end throughput to Elasticsearch: files of realistic lines → the `logferry` binary →
//! the `_bulk` receiver of the tests on 127.0.0.1; next to the floor measured in the same run:
//! reading the same files, splitting them into lines, rendering the same NDJSON documents and
//! gzipping them, in-process, with no I/O to a sink.
//!
//! `cargo bench --bench e2e_elastic` runs it on 512 MiB (`LOGFERRY_BENCH_MB` changes that);
//! `cargo test` runs it on 4 MiB, only to check that it works.
//!
//! Reported: lines/s and MB/s of raw log, logferry's CPU seconds per GB (user + system, from
//! /proc), its peak RSS, the floor's CPU seconds per GB, and their ratio.

use elastic_receiver::Receiver;
use logferry::acknowledge::Acknowledger;
use logferry::config::ElasticsearchConfig;
use logferry::entry::{Chunk, Line, Timestamp};
use logferry::labels::LabelSet;
use logferry::positions::AckedOffset;
use logferry::positions::{FileId, Fingerprint, Table};
use logferry::ship::elastic::batch::Batch;
use logferry::ship::elastic::document::Renderer;
use logferry::tail::lines::{LineLimit, Splitter};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILES: usize = 8;

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

/// Writes `FILES` files totalling about `bytes`; returns their paths and the number of lines.
fn make_files(dir: &Path, bytes: u64) -> (Vec<PathBuf>, u64) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut lines = 0;
    let mut paths = vec![];
    let mut buf = Vec::with_capacity(512);
    for i in 0..FILES {
        let path = dir.join(format!("app-{i}.log"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create bench file"));
        let mut written = 0u64;
        while written < bytes / FILES as u64 {
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

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The floor: read, split, render and gzip the files as the Elasticsearch output would,
/// with no sink. Returns CPU time.
fn floor(paths: &[PathBuf]) -> Duration {
    let acks = Acknowledger::new(Table::default());
    let config: ElasticsearchConfig =
        serde_yaml_ng::from_str("url: http://127.0.0.1:9200").expect("a bench output config");
    let limit = config.batch_size.0 as usize;
    let mut renderer = Renderer::new(&config, "bench-host");
    let gzip = |batch: &Batch| {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(batch.body.len() / 6),
            flate2::Compression::fast(),
        );
        let _ = gz.write_all(&batch.body);
        gz.finish().map(|v| v.len()).unwrap_or(0)
    };
    let start = thread_cpu();
    let mut sink = 0usize;
    for (i, path) in paths.iter().enumerate() {
        let labels = Arc::new(LabelSet::new([
            ("job", "bench"),
            ("filename", &*path.to_string_lossy()),
        ]));
        let source = acks.open(
            path,
            FileId {
                device: 0,
                inode: i as u64,
            },
            Fingerprint::of(b""),
            AckedOffset::START,
        );
        let mut file = std::fs::File::open(path).expect("open bench file");
        let mut splitter = Splitter::new(LineLimit::from_config(0, false));
        let mut batch = Batch::default();
        let mut offset = 0u64;
        loop {
            let mut buf = splitter.take_buffer(256 * 1024);
            let base = buf.len();
            buf.resize(base + 256 * 1024, 0);
            let n = file.read(&mut buf[base..]).expect("read bench file");
            buf.truncate(base + n);
            offset += n as u64;
            let split = splitter.split(buf, offset);
            if n == 0 {
                break;
            }
            let ts = Timestamp::now();
            let lines = split
                .spans
                .iter()
                .map(|s| Line {
                    start: s.start,
                    end: s.end,
                    timestamp: ts,
                    offset: s.offset,
                })
                .collect();
            let ticket = acks.dispatch(source, offset, offset, 1);
            let chunk = Arc::new(Chunk::new(ticket, labels.clone(), split.text, lines));
            let mut from = 0;
            while let Some(rest) = batch.add(&mut renderer, &chunk, from, limit, Instant::now()) {
                sink += gzip(&batch.take());
                from = rest;
            }
            if batch.is_full(limit) {
                sink += gzip(&batch.take());
            }
        }
        if !batch.is_empty() {
            sink += gzip(&batch.take());
        }
    }
    std::hint::black_box(sink);
    thread_cpu() - start
}

/// CPU time (user + system) and peak RSS of a running process.
fn proc_usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (Duration::from_secs_f64(cpu / ticks), hwm_kb * 1024)
}

struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss: u64,
}

fn ship(dir: &Path, glob: &str, lines: u64) -> Run {
    let receiver = Receiver::builder().count_only(true).start();
    let positions = dir.join("positions-elastic.yaml");
    let config = dir.join("config-elastic.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{http_listen_port: 0}}\npositions: {{filename: {}}}\nelasticsearch:\n  - url: {}\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - labels: {{job: bench, __path__: '{glob}'}}\n",
            positions.display(),
            receiver.url()
        ),
    )
    .expect("write bench config");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg(format!("-config.file={}", config.display()))
        .arg("-log.level=warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start logferry");
    let deadline = started + Duration::from_secs(900);
    while receiver.stats().documents < lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed();
    let (cpu, peak_rss) = proc_usage(child.id());
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let got = receiver.stats().documents;
    assert_eq!(got, lines, "the receiver indexed {got} of {lines} lines");
    Run {
        wall,
        cpu,
        peak_rss,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mb: u64 = if full {
        std::env::var("LOGFERRY_BENCH_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    } else {
        4
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (paths, lines) = make_files(dir.path(), mb << 20);
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let gb = bytes as f64 / 1e9;
    let glob = format!("{}/app-*.log", dir.path().display());
    println!(
        "{FILES} files, {lines} lines, {:.1} MB (nginx access and JSON app lines)",
        bytes as f64 / 1e6
    );
    println!(
        "{:<14} {:>12} {:>9} {:>11} {:>9} {:>11} {:>8}",
        "output", "lines/s", "MB/s", "CPU-s/GB", "peak RSS", "floor s/GB", "ratio"
    );
    // Warm the page cache so both sides read from memory.
    let floor_cpu = floor(&paths);
    let run = ship(dir.path(), &glob, lines);
    let secs = run.wall.as_secs_f64();
    let cpu_per_gb = run.cpu.as_secs_f64() / gb;
    let floor_per_gb = floor_cpu.as_secs_f64() / gb;
    println!(
        "{:<14} {:>12.0} {:>9.1} {:>11.2} {:>7.1}MB {:>11.2} {:>7.2}x",
        "elasticsearch",
        lines as f64 / secs,
        bytes as f64 / 1e6 / secs,
        cpu_per_gb,
        run.peak_rss as f64 / (1 << 20) as f64,
        floor_per_gb,
        cpu_per_gb / floor_per_gb.max(1e-9)
    );
}
