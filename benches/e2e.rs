//! End-to-end throughput: files of realistic lines → the `logferry` binary → a Loki receiver on
//! 127.0.0.1, for each encoding; next to the floor measured in the same run: reading the same
//! files, splitting them into lines, and encoding and compressing them with the same codec,
//! in-process, with no I/O to a sink.
//!
//! `cargo bench --bench e2e` runs it on 512 MiB in 8 files; `LOGFERRY_BENCH_MB` changes the
//! size and `LOGFERRY_BENCH_FILES` the number of files (`LOGFERRY_BENCH_FILES=1000
//! LOGFERRY_BENCH_MB=250`: a node's thousand small container logs). `LOGFERRY_BENCH_BASELINE`
//! names other builds of the binary (`:`-separated) to run on the same files in the same run, for
//! a before and after. `LOGFERRY_BENCH_NOFILE` runs the binary under that open-files limit
//! (`LOGFERRY_BENCH_FILES=10000 LOGFERRY_BENCH_MB=150 LOGFERRY_BENCH_NOFILE=1024`: more files
//! than descriptors, so that files are closed and opened again). `cargo test` runs it on 4 MiB,
//! only to check that it works.
//!
//! Reported per encoding: lines/s and MB/s of raw log, how long until the first line arrived,
//! logferry's CPU seconds per GB (user + system, from /proc), its peak RSS, the floor's CPU
//! seconds per GB, and their ratio; then the sending floor's (the floor posting its bodies to a
//! receiver on 127.0.0.1, see [`sending_floor`]) and logferry's ratio to it. Each build ships
//! the files three times (`LOGFERRY_BENCH_RUNS`), taking turns with the floors, which are
//! measured as many times: the least CPU of each side makes the ratio, and the most CPU of the
//! binary's runs is printed next to it (`most`) to show the machine's noise. The floor's chunks are the tailer's (see
//! `common/chunks.rs`): lines stamped a nanosecond apart, buffers the size of what is read; and
//! its batches are the client's, lines of many files in bodies of up to 1 MiB.
//!
//! Then the `stages` workload (`common/stages_workload.rs`): nginx lines through `regex` →
//! `labels` → `timestamp`, with its shipping and parsing floors, on all cores and on one.
//! Then the same for the other pipelines users run (`common/cases.rs`), each with the shipping
//! floor of its files and its own parsing floor: `stages-chain` (Docker lines → `regex` →
//! `labels` → `timestamp` → `output`), `stages-docker-json`, `stages-cri-logfmt` and
//! `stages-multiline` (Java stack traces).
//! `cargo bench --bench e2e -- stages` runs all the pipelines, `-- stages-nginx` or
//! `-- stages-cri` one of them, `-- shipping` only the first.

use logferry::config::{Compression, Encoding};
use logferry::ship::loki::batch::Batch;
use logferry::ship::loki::encode::{Body, Encoder};
use loki_receiver::Receiver;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "common/cases.rs"]
mod cases;
#[path = "common/chunks.rs"]
mod chunks;
#[path = "common/loki_run.rs"]
mod loki_run;
#[path = "common/stages_workload.rs"]
mod stages_workload;
#[path = "common/workload.rs"]
mod workload;
use chunks::read_chunks;
use loki_run::{Run, Shipment, fold, runs, ship_once};
use workload::{builds, file_count, make_files, size_mb, thread_cpu};

/// The floor: read, split and encode+compress the files as logferry's output would, with no
/// sink. Returns CPU time.
fn floor(paths: &[PathBuf], encoding: Encoding, compression: Compression) -> Duration {
    encode_all(paths, encoding, compression, |body| body.bytes.len())
}

/// The floor that also sends: each body is posted to a receiver in this process over one
/// kept-alive connection, from the same thread, and its answer awaited before the next, as the
/// client does. What it adds to the floor is what any agent on this machine pays to hand its
/// bodies to a receiver beside it: the kernel's loopback TCP on both sides of the send, and the
/// receiver decoding on the other core at the same time. Returns this thread's CPU time.
fn sending_floor(
    paths: &[PathBuf],
    lines: u64,
    encoding: Encoding,
    compression: Compression,
) -> Duration {
    let receiver = Receiver::builder().count_only(true).start();
    let url = receiver.url();
    let (addr, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .expect("receiver url has a path");
    let stream = TcpStream::connect(addr).expect("connect to the receiver");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut answers = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut stream = stream;
    let mut head = String::new();
    let cpu = encode_all(paths, encoding, compression, |body| {
        let mut request = format!(
            "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            body.content_type,
            body.bytes.len()
        );
        if let Some(coding) = body.content_encoding {
            request.push_str(&format!("Content-Encoding: {coding}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("send a request");
        stream.write_all(&body.bytes).expect("send a body");
        // The answer: a status line, headers up to an empty line, then Content-Length bytes.
        let mut length = 0usize;
        head.clear();
        answers.read_line(&mut head).expect("read the status");
        assert!(
            head.contains(" 204 ") || head.contains(" 200 "),
            "answer: {head}"
        );
        loop {
            head.clear();
            answers.read_line(&mut head).expect("read a header");
            let line = head.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a content length");
            }
        }
        let mut rest = vec![0; length];
        answers
            .read_exact(&mut rest)
            .expect("read the answer's body");
        body.bytes.len()
    });
    assert_eq!(
        receiver.stats().entries,
        lines,
        "the sending floor lost lines"
    );
    cpu
}

/// Reads, splits, batches and encodes the files as the client does, handing each body to
/// `sink`; returns this thread's CPU time.
fn encode_all(
    paths: &[PathBuf],
    encoding: Encoding,
    compression: Compression,
    mut sink: impl FnMut(Body) -> usize,
) -> Duration {
    let mut encoder = Encoder::new(encoding, compression, BTreeMap::new());
    let mut batch = Batch::default();
    let start = thread_cpu();
    let mut sent = 0usize;
    let mut encode = |batch: Batch| {
        if let Ok(body) = encoder.encode(&batch) {
            sent += sink(body);
        }
    };
    read_chunks(paths, |chunk| {
        let mut from = 0;
        while let Some(rest) = batch.add(&chunk, from, 1 << 20, Instant::now()) {
            encode(batch.take());
            from = rest;
        }
        if batch.is_full(1 << 20) {
            encode(batch.take());
        }
    });
    if !batch.is_empty() {
        encode(batch.take());
    }
    std::hint::black_box(sent);
    thread_cpu() - start
}

fn main() {
    // Words after `--` pick workloads by name; none runs them all.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| picked.is_empty() || picked.iter().any(|p| name.contains(p.as_str()));
    let mb = size_mb(512);
    if wanted("shipping") {
        shipping(mb);
    }
    if wanted("stages-nginx") {
        stages_workload::run(mb << 20, floor);
    }
    for case in ["chain", "docker-json", "cri-logfmt", "multiline"] {
        if wanted(&format!("stages-{case}")) {
            stages_workload::run_case(case, mb << 20, floor);
        }
    }
}

/// The nginx and JSON files, shipped without stages, per encoding.
fn shipping(mb: u64) {
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
    let binaries = builds();
    println!(
        "{:<21} {:>10} {:>8} {:>9} {:>9} {:>6} {:>9} {:>11} {:>7} {:>10} {:>8}",
        "encoding",
        "lines/s",
        "MB/s",
        "1st line",
        "CPU-s/GB",
        "most",
        "peak RSS",
        "floor s/GB",
        "ratio",
        "sent s/GB",
        "to sent"
    );
    for (name, encoding, compression) in [
        ("protobuf", Encoding::Protobuf, Compression::Snappy),
        ("json", Encoding::Json, Compression::Gzip),
    ] {
        // Warms the page cache, so that every measured run reads from memory.
        floor(&paths, encoding, compression);
        // The floor and each build take turns, so that a slow spell of the machine falls on
        // both sides rather than on whichever happened to run during it.
        let mut floors = Vec::new();
        let mut sending = Vec::new();
        let mut shipped: Vec<Vec<Run>> = binaries.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs() {
            floors.push(floor(&paths, encoding, compression));
            // On a thread of its own, named so that a profile tells it from the floor.
            sending.push(
                std::thread::scope(|s| {
                    std::thread::Builder::new()
                        .name("sending-floor".into())
                        .spawn_scoped(s, || sending_floor(&paths, lines, encoding, compression))
                        .expect("start the sending floor")
                        .join()
                })
                .expect("the sending floor"),
            );
            for (i, (_, binary)) in binaries.iter().enumerate() {
                shipped[i].push(ship_once(&Shipment {
                    binary,
                    name: &format!("{name}-{i}"),
                    dir: dir.path(),
                    glob: &glob,
                    lines,
                    client: &format!("    encoding: {name}\n"),
                    stages: "",
                    one_core: false,
                    env: &[],
                }));
            }
        }
        let floor_cpu = floors.into_iter().min().unwrap_or_default();
        let floor_per_gb = floor_cpu.as_secs_f64() / gb;
        let sent_per_gb = sending.into_iter().min().unwrap_or_default().as_secs_f64() / gb;
        for ((which, _), runs) in binaries.iter().zip(shipped) {
            let run = fold(runs);
            let secs = run.wall.as_secs_f64();
            let cpu_per_gb = run.cpu.as_secs_f64() / gb;
            println!(
                "{:<21} {:>10.0} {:>8.1} {:>8.2}s {:>9.2} {:>6.2} {:>7.1}MB {:>11.2} {:>6.2}x {:>10.2} {:>7.2}x",
                format!("{name}{which}"),
                lines as f64 / secs,
                bytes as f64 / 1e6 / secs,
                run.first.as_secs_f64(),
                cpu_per_gb,
                run.cpu_most.as_secs_f64() / gb,
                run.peak_rss as f64 / (1 << 20) as f64,
                floor_per_gb,
                cpu_per_gb / floor_per_gb.max(1e-9),
                sent_per_gb,
                cpu_per_gb / sent_per_gb.max(1e-9)
            );
        }
    }
}
