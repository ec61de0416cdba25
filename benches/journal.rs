//! Journal throughput: a journal directory written by systemd (`systemd-journal-remote`) →
//! the `logferry` binary (one `journal:` job with typical relabeling) → a Loki receiver on
//! 127.0.0.1; next to the floor measured in the same run: `journalctl --output=export`
//! reading the same files to /dev/null.
//!
//! `cargo bench --bench journal` runs it on 1,000,000 entries (`LOGFERRY_BENCH_ENTRIES`
//! changes that); `cargo test` runs it on 5,000, only to check that it works.
//!
//! Reported: entries per CPU-second and per second for both, logferry's peak RSS (and the
//! peaks of its anonymous and file-backed memory sampled while it runs: the journal files are
//! mapped, and their pages count in the RSS), and the ratio of their CPU time.
//!
//! `LOGFERRY_BENCH_BIN=/path/to/logferry cargo bench --bench journal` measures another build
//! under the same conditions.

use loki_receiver::Receiver;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "common/workload.rs"]
mod workload;
use workload::{Rss, amount, logferry_bin, proc_usage};

const UNITS: &[&str] = &[
    "nginx.service",
    "postgresql@15-main.service",
    "sshd.service",
    "cron.service",
    "app-worker.service",
    "systemd-logind.service",
];
const MESSAGES: &[&str] = &[
    "GET /api/v1/orders/8812/items HTTP/1.1 200 1532 0.004",
    "checkpoint complete: wrote 1832 buffers (11.2%); 0 WAL file(s) added, 0 removed",
    "Accepted publickey for deploy from 10.0.4.17 port 51022 ssh2: ED25519 SHA256:Qm9v",
    "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "job 48213 finished in 113 ms: 12 rows updated, cache refreshed",
    "New session 4411 of user deploy.",
];

/// Writes `count` journald-like entries into `dir` through systemd's own writer.
fn make_journal(dir: &Path, count: u64) {
    let mut child = Command::new("/lib/systemd/systemd-journal-remote")
        .arg(format!("--output={}", dir.join("system.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote (Debian package systemd-journal-remote) is needed");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
        - 1_800_000_000;
    {
        let mut out = BufWriter::new(child.stdin.take().expect("piped stdin"));
        for n in 0..count {
            let unit = UNITS[(n % UNITS.len() as u64) as usize];
            let message = MESSAGES[(n * 7 % MESSAGES.len() as u64) as usize];
            let pid = 1000 + n % 97;
            let ident = unit.split(['.', '@']).next().unwrap_or(unit);
            write!(
                out,
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_MACHINE_ID=fedcba9876543210fedcba9876543210\n_HOSTNAME=web-01\n_TRANSPORT=stdout\n_PID={pid}\n_UID=0\n_GID=0\n_COMM={ident}\n_EXE=/usr/sbin/{ident}\n_CMDLINE=/usr/sbin/{ident} --config /etc/{ident}.conf\n_SYSTEMD_UNIT={unit}\n_SYSTEMD_CGROUP=/system.slice/{unit}\n_SYSTEMD_SLICE=system.slice\nSYSLOG_IDENTIFIER={ident}\nSYSLOG_FACILITY=3\nPRIORITY={}\nMESSAGE={message} seq={n}\n\n",
                start + n,
                5_000_000 + n,
                n % 8,
            )
            .expect("write to systemd-journal-remote");
        }
    }
    let status = child.wait().expect("systemd-journal-remote ran");
    assert!(status.success(), "systemd-journal-remote failed");
}

/// `journalctl --output=export` over the directory to /dev/null: wall and CPU time.
// The child is reaped by wait4, which also gives its CPU time.
#[allow(clippy::zombie_processes)]
fn floor(dir: &Path) -> (Duration, Duration) {
    let started = Instant::now();
    let child = Command::new("journalctl")
        .arg(format!("--directory={}", dir.display()))
        .args(["--output=export", "--no-pager"])
        .stdout(Stdio::null())
        .spawn()
        .expect("journalctl is needed");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for the child we started.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (wall, tv(usage.ru_utime) + tv(usage.ru_stime))
}

fn main() {
    let count = amount("LOGFERRY_BENCH_ENTRIES", 1_000_000, 5_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).expect("journal dir");
    make_journal(&journal, count);
    let bytes: u64 = std::fs::read_dir(&journal)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "{count} entries, 19 fields each, {:.0} MB of journal files",
        bytes as f64 / 1e6
    );
    // Twice, so both sides read from the page cache; the second run counts.
    floor(&journal);
    let (floor_wall, floor_cpu) = floor(&journal);

    let receiver = Receiver::builder().count_only(true).start();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{http_listen_port: 0}}\npositions: {{filename: {}}}\nclients:\n  - url: {}\nscrape_configs:\n  - job_name: bench\n    journal:\n      path: {}\n      labels: {{job: systemd-journal}}\n    relabel_configs:\n      - source_labels: [__journal__systemd_unit]\n        target_label: unit\n      - source_labels: [__journal_priority_keyword]\n        target_label: level\n      - source_labels: [__journal__hostname]\n        target_label: host\n",
            dir.path().join("positions.yaml").display(),
            receiver.url(),
            journal.display()
        ),
    )
    .expect("write bench config");
    let started = Instant::now();
    let mut child = Command::new(logferry_bin())
        .arg(format!("-config.file={}", config.display()))
        .arg("-log.level=warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start logferry");
    let deadline = started + Duration::from_secs(1800);
    let mut rss = Rss::default();
    while receiver.stats().entries < count && Instant::now() < deadline {
        rss.sample(child.id());
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed();
    let (cpu, peak_rss) = proc_usage(child.id());
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let got = receiver.stats().entries;
    assert_eq!(got, count, "the receiver got {got} of {count} entries");
    let per = |d: Duration| count as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "{:<22} {:>14} {:>12} {:>10}",
        "", "entries/CPU-s", "entries/s", "peak RSS"
    );
    println!(
        "{:<22} {:>14.0} {:>12.0} {:>8.1}MB",
        "logferry → Loki",
        per(cpu),
        per(wall),
        peak_rss as f64 / (1 << 20) as f64
    );
    println!(
        "{:<22} {:>14.0} {:>12.0}",
        "journalctl -o export",
        per(floor_cpu),
        per(floor_wall)
    );
    println!(
        "peak resident memory sampled: {:.1} MB anonymous (heap), {:.1} MB file-backed (mapped files)",
        rss.anon as f64 / 1024.0,
        rss.file as f64 / 1024.0
    );
    println!(
        "CPU ratio logferry / journalctl: {:.2}x",
        cpu.as_secs_f64() / floor_cpu.as_secs_f64().max(1e-9)
    );
}
