//! `docker_sd_configs` throughput: 4 busy containers on a Docker Engine started for the run
//! (its own data root and socket, as in tests/docker.rs) → the `logferry` binary (one job,
//! the README's relabeling) → a Loki receiver on 127.0.0.1.
//!
//! Each container writes its lines (json-file driver) as fast as busybox `awk` can, then
//! sleeps; logferry starts once they are written and reads all four logs at once through the
//! API, so what is measured is logferry's side: the logs request, demultiplexing, relabeling,
//! batching, protobuf and snappy. The daemon's own CPU time spent meanwhile (it reads the
//! json-file logs and serves them) is reported beside it.
//!
//! `cargo bench --bench docker` runs it on 4 × 250,000 lines (`LOGFERRY_BENCH_LINES` changes
//! the number per container); `cargo test` runs it on 4 × 2,000, only to check that it works.
//! Needs root, `dockerd` (docker.io) and a static `/bin/busybox` (busybox-static).

use loki_receiver::Receiver;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/workload.rs"]
mod workload;
use workload::{amount, proc_usage};

const CONTAINERS: usize = 4;

fn docker(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg(format!("--host=unix://{}", socket.display()))
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("the docker client (docker.io) is needed");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn main() {
    let lines = amount("LOGFERRY_BENCH_LINES", 250_000, 2_000) as usize;
    let dir = tempfile::Builder::new()
        .prefix("lfb")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let d = dir.path();
    let socket = d.join("d.sock");
    let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd log");
    let daemon = Daemon(
        Command::new("dockerd")
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("-H=unix://{}", socket.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd (docker.io) is needed, and root"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let image = d.join("image");
    std::fs::create_dir(&image).expect("image dir");
    std::fs::copy("/bin/busybox", image.join("busybox")).expect("a static /bin/busybox");
    std::fs::write(
        image.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .expect("Dockerfile");
    docker(
        &socket,
        &["build", "-q", "-t", "bench", image.to_str().expect("path")],
    );

    // nginx-like lines, about 130 bytes each.
    let script = format!(
        "awk 'BEGIN {{ for (i = 0; i < {lines}; i++) printf \"10.0.%d.%d - - [03/Dec/2026:07:11:14 +0000] \\\"GET /api/v1/orders/%d/items HTTP/1.1\\\" 200 %d \\\"-\\\" \\\"curl/8.5.0\\\"\\n\", i % 256, i % 97, i, 1000 + i % 5000 }}'; exec sleep 100000"
    );
    let ids: Vec<String> = (0..CONTAINERS)
        .map(|n| {
            docker(
                &socket,
                &[
                    "run",
                    "-d",
                    "--network=none",
                    "--stop-timeout=1",
                    &format!("--name=app-{n}"),
                    "--label=com.docker.compose.project=bench",
                    &format!("--label=com.docker.compose.service=app-{n}"),
                    "bench",
                    "sh",
                    "-c",
                    &script,
                ],
            )
        })
        .collect();
    // Written once each log holds every line.
    let written = Instant::now() + Duration::from_secs(600);
    let mut bytes = 0u64;
    for id in &ids {
        let path = d
            .join("data/containers")
            .join(id)
            .join(format!("{id}-json.log"));
        loop {
            let count = std::fs::read(&path)
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0);
            if count >= lines || Instant::now() > written {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let total = (lines * CONTAINERS) as u64;

    let receiver = Receiver::builder().count_only(true).start();
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{http_listen_port: 0}}\npositions: {{filename: {}}}\nclients:\n  - url: {}\nscrape_configs:\n  - job_name: docker\n    docker_sd_configs:\n      - host: unix://{}\n    relabel_configs:\n      - source_labels: [__meta_docker_container_name]\n        regex: '/(.*)'\n        target_label: container\n      - source_labels: [__meta_docker_container_log_stream]\n        target_label: stream\n      - source_labels: [__meta_docker_container_label_com_docker_compose_project]\n        target_label: compose_project\n      - source_labels: [__meta_docker_container_label_com_docker_compose_service]\n        target_label: compose_service\n",
            d.join("positions.yaml").display(),
            receiver.url(),
            socket.display()
        ),
    )
    .expect("write bench config");
    let (daemon_before, _) = proc_usage(daemon.0.id());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg(format!("-config.file={}", config.display()))
        .arg("-log.level=warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start logferry");
    let deadline = started + Duration::from_secs(1800);
    while receiver.stats().entries < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed();
    let (cpu, peak_rss) = proc_usage(child.id());
    let (daemon_after, _) = proc_usage(daemon.0.id());
    bytes += receiver.stats().line_bytes;
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    for id in &ids {
        let _ = Command::new("docker")
            .arg(format!("--host=unix://{}", socket.display()))
            .args(["rm", "-f", id])
            .output();
    }
    let got = receiver.stats().entries;
    assert_eq!(got, total, "the receiver got {got} of {total} lines");
    let gb = bytes as f64 / 1e9;
    println!(
        "{CONTAINERS} containers × {lines} lines, {:.0} MB of lines",
        bytes as f64 / 1e6
    );
    println!(
        "logferry: {:.0} lines/s, {:.1} MB/s, {:.2} CPU-s ({:.1} CPU-s per GB), peak RSS {:.1} MB",
        total as f64 / wall.as_secs_f64(),
        bytes as f64 / 1e6 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / gb.max(1e-9),
        peak_rss as f64 / (1 << 20) as f64
    );
    let daemon_cpu = daemon_after.saturating_sub(daemon_before);
    println!(
        "dockerd meanwhile: {:.2} CPU-s ({:.1} CPU-s per GB)",
        daemon_cpu.as_secs_f64(),
        daemon_cpu.as_secs_f64() / gb.max(1e-9)
    );
}
