//! Syslog throughput: N concurrent TCP senders (octet-counted RFC 5424, as rsyslog forwards)
//! → the `logferry` binary's listener → relabeling → a Loki receiver on 127.0.0.1.
//!
//! `cargo bench --bench syslog` sends 1,000,000 messages from 4 senders
//! (`LOGFERRY_BENCH_MESSAGES` and `LOGFERRY_BENCH_SENDERS` change that); `cargo test` sends
//! 20,000, only to check that it works.
//!
//! Reported: messages/s from the first byte sent to the last entry received, logferry's CPU
//! seconds per million messages (user + system, from /proc), its peak RSS, and the peaks of
//! its anonymous (heap) and file-backed memory sampled while it runs.
//!
//! `LOGFERRY_BENCH_BIN=/path/to/logferry cargo bench --bench syslog` measures another build
//! (an earlier one, kept aside) under the same conditions.

use loki_receiver::Receiver;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/workload.rs"]
mod workload;
use workload::{Rss, amount, logferry_bin, proc_usage};

const HOSTS: &[&str] = &["fw-edge-01", "nas-02", "router-core", "relay-03"];
const APPS: &[&str] = &["sshd", "kernel", "dhcpd", "nginx", "cron"];
const TEXTS: &[&str] = &[
    "Accepted publickey for deploy from 10.20.30.40 port 51234 ssh2: ED25519 SHA256:Xb3k",
    "DHCPACK on 192.168.1.57 to 3c:22:fb:11:9a:0e (phone) via eth1",
    "IN=eth0 OUT= MAC=00:11:22:33:44:55 SRC=203.0.113.9 DST=198.51.100.2 LEN=60 PROTO=TCP DPT=22",
    "GET /api/v1/orders/8812 200 1432 0.012 \"Mozilla/5.0 (X11; Linux x86_64)\"",
    "(root) CMD (/usr/lib/sysstat/debian-sa1 1 1)",
];

/// `count` octet-counted messages of sender `id`.
fn payload(id: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * 160);
    for i in 0..count {
        let k = id * 7 + i;
        let message = format!(
            "<{}>1 2026-12-03T04:31:00.{:06}Z {} {} {} - - {} #{i}",
            8 + k % 160,
            i % 1_000_000,
            HOSTS[k % HOSTS.len()],
            APPS[(k / 3) % APPS.len()],
            1000 + id,
            TEXTS[k % TEXTS.len()],
        );
        let _ = write!(out, "{} {message}", message.len());
    }
    out
}

fn main() {
    let senders = (amount("LOGFERRY_BENCH_SENDERS", 4, 4) as usize).max(1);
    let total = amount("LOGFERRY_BENCH_MESSAGES", 1_000_000, 20_000) as usize;
    let each = total / senders;
    let total = each * senders;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let receiver = Receiver::builder().count_only(true).start();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{http_listen_port: 0}}\npositions: {{filename: {}}}\nclients:\n  - url: {}\nscrape_configs:\n  - job_name: bench\n    syslog:\n      listen_address: 127.0.0.1:{port}\n      labels: {{job: syslog}}\n    relabel_configs:\n      - {{source_labels: [__syslog_message_hostname], target_label: host}}\n      - {{source_labels: [__syslog_message_app_name], target_label: app}}\n",
            dir.path().join("positions.yaml").display(),
            receiver.url()
        ),
    )
    .expect("write bench config");
    let payloads: Vec<Vec<u8>> = (0..senders).map(|id| payload(id, each)).collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let mut child = Command::new(logferry_bin())
        .arg(format!("-config.file={}", config.display()))
        .arg("-log.level=warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start logferry");
    let up = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < up, "the listener did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let threads: Vec<_> = payloads
        .into_iter()
        .map(|bytes| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.write_all(&bytes).expect("send");
            })
        })
        .collect();
    let deadline = started + Duration::from_secs(600);
    let mut rss = Rss::default();
    while (receiver.stats().entries as usize) < total && Instant::now() < deadline {
        rss.sample(child.id());
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed();
    let (cpu, peak_rss) = proc_usage(child.id());
    for t in threads {
        let _ = t.join();
    }
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let got = receiver.stats().entries as usize;
    assert_eq!(got, total, "the receiver got {got} of {total} messages");
    let secs = wall.as_secs_f64();
    println!(
        "{senders} TCP senders, {total} messages, {:.1} MB (octet-counted RFC 5424)",
        bytes as f64 / 1e6
    );
    println!(
        "{:>12} {:>9} {:>16} {:>9}",
        "messages/s", "MB/s", "CPU-s/million", "peak RSS"
    );
    println!(
        "{:>12.0} {:>9.1} {:>16.2} {:>7.1}MB",
        total as f64 / secs,
        bytes as f64 / 1e6 / secs,
        cpu.as_secs_f64() / (total as f64 / 1e6),
        peak_rss as f64 / (1 << 20) as f64
    );
    println!(
        "peak resident memory sampled: {:.1} MB anonymous (heap), {:.1} MB file-backed (mapped files)",
        rss.anon as f64 / 1024.0,
        rss.file as f64 / 1024.0
    );
}
