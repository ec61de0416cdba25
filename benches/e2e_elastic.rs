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
use logferry::config::ElasticsearchConfig;
use logferry::ship::elastic::batch::Batch;
use logferry::ship::elastic::document::Renderer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/chunks.rs"]
mod chunks;
#[path = "common/workload.rs"]
mod workload;
use chunks::read_chunks;
use workload::{file_count, make_files, proc_usage, size_mb, thread_cpu};

/// The floor: read, split, render and gzip the files as the Elasticsearch output would,
/// with no sink. Returns CPU time.
fn floor(paths: &[PathBuf]) -> Duration {
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
    let mut batch = Batch::default();
    let start = thread_cpu();
    let mut sink = 0usize;
    read_chunks(paths, |chunk| {
        let mut from = 0;
        while let Some(rest) = batch.add(&mut renderer, &chunk, from, limit, Instant::now()) {
            sink += gzip(&batch.take());
            from = rest;
        }
        if batch.is_full(limit) {
            sink += gzip(&batch.take());
        }
    });
    if !batch.is_empty() {
        sink += gzip(&batch.take());
    }
    std::hint::black_box(sink);
    thread_cpu() - start
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
    let mb = size_mb(512);
    let files = file_count();
    let dir = tempfile::tempdir().expect("temp dir");
    let (paths, lines) = make_files(dir.path(), files, mb << 20);
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let gb = bytes as f64 / 1e9;
    let glob = format!("{}/app-*.log", dir.path().display());
    println!(
        "{files} files, {lines} lines, {:.1} MB (nginx access and JSON app lines)",
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
