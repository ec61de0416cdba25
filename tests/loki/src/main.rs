//! `loki-receiver`: runs the test Loki receiver standalone, for manual
//! end-to-end benchmarks.
//!
//! ```text
//! loki-receiver [--listen 127.0.0.1:3100] [--count-only] [--tenant-required] [--dump FILE]
//! ```
//!
//! Prints a one-line summary to stderr every second and once more on SIGINT
//! or SIGTERM, then exits. With `--dump`, every accepted entry is appended to
//! FILE as one JSON object per line (see [`dump_line`]), in arrival order,
//! each second and at exit: other programs (the Promtail comparison scripts)
//! read what a client pushed without linking this crate.

use anyhow::{Context as _, bail};
use loki_receiver::{ReceivedEntry, Receiver, Stats};
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

const USAGE: &str = "usage: loki-receiver [--listen ADDR:PORT] [--count-only] [--tenant-required] [--dump FILE]

  --listen ADDR:PORT   loopback address to listen on (default 127.0.0.1:3100)
  --count-only         only count entries and bytes (no storing), for benchmarks
  --tenant-required    answer 401 to pushes without an X-Scope-OrgID header
  --dump FILE          append every accepted entry to FILE, one JSON object a line:
                       {\"tenant\", \"labels\", \"timestamp_ns\", \"line\", \"structured_metadata\"}";

/// Parsed command line.
struct Args {
    listen: SocketAddr,
    count_only: bool,
    tenant_required: bool,
    dump: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut listen = String::from("127.0.0.1:3100");
    let mut count_only = false;
    let mut tenant_required = false;
    let mut dump = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--count-only" => count_only = true,
            "--tenant-required" => tenant_required = true,
            "--listen" => listen = args.next().context("--listen needs an address")?,
            "--dump" => dump = Some(PathBuf::from(args.next().context("--dump needs a file")?)),
            other => {
                if let Some(v) = other.strip_prefix("--listen=") {
                    listen = v.to_string();
                } else if let Some(v) = other.strip_prefix("--dump=") {
                    dump = Some(PathBuf::from(v));
                } else {
                    bail!("unknown argument {other:?}\n\n{USAGE}");
                }
            }
        }
    }
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .with_context(|| format!("bad listen address {listen:?}"))?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        bail!("listen address {listen:?} resolves to nothing");
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("refusing to listen on {listen} ({bad}): only loopback addresses are allowed");
    }
    Ok(Some(Args {
        listen: addr,
        count_only,
        tenant_required,
        dump,
    }))
}

fn summary(stats: &Stats, prev: &Stats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let failed: u64 = stats
        .responses
        .iter()
        .filter(|(code, _)| **code >= 300)
        .map(|(_, n)| n)
        .sum();
    format!(
        "loki-receiver: entries={} line_bytes={} requests={} non_2xx={} rejected_entries={} \
         | {:.0} entries/s {:.2} MiB/s {:.1} req/s",
        stats.entries,
        stats.line_bytes,
        stats.requests,
        failed,
        stats.rejected_entries,
        (stats.entries - prev.entries) as f64 / secs,
        (stats.line_bytes - prev.line_bytes) as f64 / secs / (1024.0 * 1024.0),
        (stats.requests - prev.requests) as f64 / secs,
    )
}

/// One accepted entry as a JSON object: the labels as Loki stores them (parsed, empty values
/// dropped), the tenant header (`null` without one), the timestamp in nanoseconds and the line.
fn dump_line(entry: &ReceivedEntry) -> String {
    let metadata: Vec<[&str; 2]> = entry
        .structured_metadata
        .iter()
        .map(|(n, v)| [n.as_str(), v.as_str()])
        .collect();
    serde_json::json!({
        "tenant": entry.tenant,
        "labels": entry.labels,
        "timestamp_ns": entry.timestamp_ns,
        "line": entry.line,
        "structured_metadata": metadata,
    })
    .to_string()
}

/// Appends the entries accepted since the last call to the dump file.
fn dump_new(receiver: &Receiver, path: &Path) -> anyhow::Result<()> {
    let entries = receiver.take_entries();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the dump file {}", path.display()))?;
    let mut text = String::new();
    for entry in &entries {
        text.push_str(&dump_line(entry));
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing the dump file {}", path.display()))?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loki-receiver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let receiver = Receiver::builder()
        .listen(args.listen)
        .count_only(args.count_only)
        .require_tenant(args.tenant_required)
        .try_start()
        .with_context(|| format!("starting the receiver on {}", args.listen))?;
    eprintln!(
        "loki-receiver: listening on {} (count_only={}, tenant_required={})",
        receiver.url(),
        args.count_only,
        args.tenant_required
    );
    if let Some(path) = &args.dump {
        // Truncated now, so a dump holds one run only.
        std::fs::write(path, "")
            .with_context(|| format!("creating the dump file {}", path.display()))?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut prev = receiver.stats();
        let mut prev_at = Instant::now();
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = sigint.recv() => true,
                _ = sigterm.recv() => true,
            };
            let stats = receiver.stats();
            if let Some(path) = &args.dump {
                dump_new(&receiver, path)?;
            }
            eprintln!("{}", summary(&stats, &prev, prev_at.elapsed()));
            if stop {
                return anyhow::Ok(());
            }
            prev = stats;
            prev_at = Instant::now();
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> anyhow::Result<Option<Args>> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!(a.listen, "127.0.0.1:3100".parse().unwrap());
        assert!(!a.count_only && !a.tenant_required);
        let a = parse(&["--listen", "[::1]:0", "--count-only", "--tenant-required"])
            .unwrap()
            .unwrap();
        assert_eq!(a.listen, "[::1]:0".parse().unwrap());
        assert!(a.count_only && a.tenant_required);
        assert!(parse(&["--listen=localhost:3100"]).unwrap().is_some());
        assert!(parse(&["--help"]).unwrap().is_none());
        assert_eq!(
            parse(&["--dump", "/tmp/d.jsonl"]).unwrap().unwrap().dump,
            Some(PathBuf::from("/tmp/d.jsonl"))
        );
        assert_eq!(
            parse(&["--dump=x"]).unwrap().unwrap().dump,
            Some(PathBuf::from("x"))
        );
        assert!(parse(&["--dump"]).is_err());
    }

    #[test]
    fn dump_lines_are_json_objects() {
        let entry = ReceivedEntry {
            tenant: Some("team-a".into()),
            labels: [("job".to_string(), "app".to_string())].into(),
            labels_raw: "{job=\"app\"}".into(),
            timestamp_ns: 1_711_012_501_101_234_567,
            line: "tab\there \"quoted\" é".into(),
            structured_metadata: vec![("trace".into(), "abc".into())],
            request_index: 0,
            format: loki_receiver::PushFormat::Protobuf,
        };
        let v: serde_json::Value = serde_json::from_str(&dump_line(&entry)).unwrap();
        assert_eq!(v["tenant"], "team-a");
        assert_eq!(v["labels"]["job"], "app");
        assert_eq!(v["timestamp_ns"], 1_711_012_501_101_234_567_i64);
        assert_eq!(v["line"], "tab\there \"quoted\" é");
        assert_eq!(v["structured_metadata"][0][1], "abc");
        assert!(!dump_line(&entry).contains('\n'), "one line per entry");
    }

    #[test]
    fn refuses_non_loopback() {
        assert!(parse(&["--listen", "0.0.0.0:3100"]).is_err());
        assert!(parse(&["--listen", "10.1.2.3:3100"]).is_err());
        assert!(parse(&["--listen", "[::]:3100"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
