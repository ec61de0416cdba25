//! The file-tailing corpus: the streams logferry pushes against those Promtail 2.8 pushed.
//!
//! Each directory under `tests/compat-tail/` is a case: a Promtail config (`config.yaml`, with
//! `__LOGDIR__`, `__POSITIONS__` and `__LOKI_URL__` to fill in), the log files to start with
//! (`files/`), optionally what happens to them while the agent runs (`steps.txt`), and
//! `expected.txt`, the streams the real Promtail pushed into the test Loki receiver for that
//! case, written by `scripts/compat-tail-regen` (never by hand, never from logferry). Its header
//! describes the format and the normalisations: streams sorted by labels, entries in arrival
//! order within a stream, read-time timestamps as `READ_TIME`, the log directory as
//! `__LOGDIR__`, long lines as their length and digest.
//!
//! This test runs the real logferry binary on every case, with the same environment
//! (`TZ=UTC`, `HOSTNAME=compat-host`, `LOKI_URL`, `-config.expand-env=true` when the config
//! holds `${`), pushing into the same receiver (in-process here), performs the same steps, stops
//! logferry with SIGTERM once it has pushed as many entries as Promtail did and 1.5 s have shown
//! no more, and compares.
//!
//! A case with a `deliberate.txt` is one where logferry differs from Promtail on purpose (a
//! Promtail bug, or something logferry does that Promtail cannot): logferry is compared with
//! `logferry-expected.txt` instead, written by hand from Promtail's output and reviewed, and
//! `deliberate.txt` says what differs and why (docs/pipeline.md lists the same).
//!
//! Cases in [`KNOWN_DIFFERENCES`] are differences not resolved yet: they are run by the regen
//! script like the others, but not compared here.

mod common;

use common::{Agent, SOON, command, wait_until};
use loki_receiver::{ReceivedEntry, Receiver};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cases not compared, with the reason.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

const HOSTNAME: &str = "compat-host";
/// A timestamp this close to the run is the time the line was read.
const READ_TIME_MARGIN_NS: i64 = 2_000_000_000;
/// How long to watch for entries beyond the expected count.
const EXTRA_GRACE: Duration = Duration::from_millis(1500);
/// Lines longer than this are compared by length and digest.
const LONG_LINE: usize = 1024;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("compat-tail")
}

fn cases() -> Vec<String> {
    common::case_names(&corpus())
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn fmt_time(ns: i64, start_ns: i64, end_ns: i64) -> String {
    if ns >= start_ns - READ_TIME_MARGIN_NS && ns <= end_ns + READ_TIME_MARGIN_NS {
        return "READ_TIME".into();
    }
    let (secs, frac) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    match chrono::DateTime::from_timestamp(secs, frac as u32) {
        Some(t) => format!("{}.{frac:09}Z", t.format("%Y-%m-%dT%H:%M:%S")),
        None => format!("<{ns} ns>"),
    }
}

fn json(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn fmt_line(line: &str) -> String {
    if line.len() <= LONG_LINE {
        return json(line);
    }
    let digest: String = Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let start: String = line.chars().take(64).collect();
    format!(
        "LONG {} bytes sha256={digest} starting {}",
        line.len(),
        json(&start)
    )
}

/// The receiver's entries in `expected.txt`'s format (see scripts/compat-tail-regen).
fn normalise(entries: &[ReceivedEntry], logdir: &str, start_ns: i64, end_ns: i64) -> String {
    let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries {
        let labels: Vec<String> = e
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={}", json(&v.replace(logdir, "__LOGDIR__"))))
            .collect();
        let mut header = format!("{{{}}}", labels.join(", "));
        if let Some(tenant) = &e.tenant {
            header = format!("tenant={} {header}", json(tenant));
        }
        streams.entry(header).or_default().push(format!(
            "{} {}",
            fmt_time(e.timestamp_ns, start_ns, end_ns),
            fmt_line(&e.line)
        ));
    }
    let mut out = format!("# {} entries\n", entries.len());
    for (header, lines) in streams {
        out.push_str(&header);
        out.push('\n');
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The entry count on the first line of an expected file.
fn expected_count(expected: &str) -> usize {
    expected
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .and_then(|l| l.strip_suffix(" entries"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected file without its `# N entries` line"))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Performs one step of `steps.txt`; an error says what did not happen.
fn step(line: &str, logdir: &Path, case: &Path, loki: &Receiver) -> Result<(), String> {
    let words: Vec<&str> = line.splitn(4, ' ').collect();
    match words.as_slice() {
        ["wait", ..] => {
            let text = &line["wait ".len()..];
            if !wait_until(SOON, || loki.lines().iter().any(|l| l == text)) {
                return Err(format!(
                    "step `{line}`: not pushed ({} entries in all)",
                    loki.entry_count()
                ));
            }
        }
        ["append", path, source] => {
            common::append(
                &logdir.join(path),
                std::fs::read(case.join(source)).unwrap(),
            );
        }
        ["mv", from, to] => std::fs::rename(logdir.join(from), logdir.join(to)).unwrap(),
        ["cp", from, to] => {
            std::fs::copy(logdir.join(from), logdir.join(to)).unwrap();
        }
        ["truncate", path] => std::fs::File::create(logdir.join(path))
            .and_then(|f| f.set_len(0))
            .unwrap(),
        ["repeat", path, n, text] => {
            let mut line = text.repeat(n.parse().unwrap());
            line.push('\n');
            common::append(&logdir.join(path), line);
        }
        _ => panic!("unknown step {line:?}"),
    }
    Ok(())
}

/// Runs logferry on one case; the differences from the expected streams, if any.
fn check(name: &str) -> Result<(), String> {
    let case = corpus().join(name);
    let deliberate = case.join("deliberate.txt").exists();
    let expected_file = if deliberate {
        "logferry-expected.txt"
    } else {
        "expected.txt"
    };
    let expected = std::fs::read_to_string(case.join(expected_file)).unwrap();
    let want_count = expected_count(&expected);

    let work = tempfile::tempdir().unwrap();
    let logdir = work.path().join("logs");
    copy_tree(&case.join("files"), &logdir);
    let loki = Receiver::start();
    let config = std::fs::read_to_string(case.join("config.yaml")).unwrap();
    let expand = config.contains("${");
    let config = config
        .replace("__LOGDIR__", &logdir.display().to_string())
        .replace(
            "__POSITIONS__",
            &work.path().join("positions.yaml").display().to_string(),
        )
        .replace("__LOKI_URL__", &loki.url());
    let config_path = work.path().join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let steps = std::fs::read_to_string(case.join("steps.txt")).unwrap_or_default();

    let start_ns = now_ns();
    let mut cmd = command(&config_path);
    if expand {
        cmd.arg("-config.expand-env=true");
    }
    cmd.current_dir(work.path())
        .env("TZ", "UTC")
        .env("HOSTNAME", HOSTNAME)
        .env("LOKI_URL", loki.url())
        .env_remove("NODE_NAME");
    let mut agent = Agent::start_cmd(cmd);
    let mut failure = None;
    for line in steps.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('#') {
            continue;
        }
        if let Err(e) = step(line, &logdir, &case, &loki) {
            failure = Some(e);
            break;
        }
    }
    if failure.is_none() && !wait_until(SOON, || loki.entry_count() >= want_count) {
        failure = Some(format!(
            "only {} of {want_count} entries pushed",
            loki.entry_count()
        ));
    }
    // A moment more (longer than a batch waits) for entries beyond the expected ones, such as a
    // file read twice.
    if failure.is_none() {
        wait_until(EXTRA_GRACE, || loki.entry_count() > want_count);
    }
    agent.stop();
    let end_ns = now_ns();
    let got = normalise(
        &loki.entries(),
        &logdir.display().to_string(),
        start_ns,
        end_ns,
    );
    if got != expected {
        return Err(format!(
            "{name}: logferry pushed other streams than {expected_file}{}\n--- expected\n{expected}--- logferry\n{got}--- logferry's log (end)\n{}",
            failure.map(|f| format!(" ({f})")).unwrap_or_default(),
            agent.tail_of_stderr()
        ));
    }
    Ok(())
}

#[test]
fn logferry_pushes_what_promtail_pushed() {
    let names: Vec<String> = cases()
        .into_iter()
        .filter(|n| !KNOWN_DIFFERENCES.iter().any(|(k, _)| k == n))
        .collect();
    assert!(!names.is_empty(), "no case in tests/compat-tail");
    // The cases mostly wait for the agent's batches: several at once keep the test short.
    common::assert_cases_match(names, 6, check);
}

#[test]
fn every_case_is_complete() {
    let names = cases();
    for (case, reason) in KNOWN_DIFFERENCES {
        assert!(names.iter().any(|n| n == case), "{case}: no such case");
        assert!(!reason.is_empty(), "{case}: no reason given");
    }
    for name in names {
        let dir = corpus().join(name.as_str());
        for file in ["config.yaml", "expected.txt"] {
            assert!(dir.join(file).exists(), "{name}: no {file}");
        }
        assert!(dir.join("files").is_dir(), "{name}: no files/");
        if dir.join("deliberate.txt").exists() {
            assert!(
                dir.join("logferry-expected.txt").exists(),
                "{name}: deliberate difference without logferry-expected.txt"
            );
        }
    }
}

#[test]
fn normalisation_marks_read_times_and_long_lines() {
    let entry = |ts: i64, line: &str| ReceivedEntry {
        tenant: None,
        labels: BTreeMap::from([("filename".into(), "/tmp/x/logs/a.log".into())]),
        labels_raw: String::new(),
        timestamp_ns: ts,
        line: line.into(),
        structured_metadata: Vec::new(),
        request_index: 0,
        format: loki_receiver::PushFormat::Protobuf,
    };
    let long = "y".repeat(2000);
    let text = normalise(
        &[
            entry(1_000_000_000_000_000_000, "read now"),
            entry(1_711_012_501_101_234_567, "tab\there"),
            entry(1_000_000_000_000_000_000, &long),
        ],
        "/tmp/x/logs",
        1_000_000_000_000_000_000,
        1_000_000_000_000_000_000,
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# 3 entries"));
    assert_eq!(lines.next(), Some("{filename=\"__LOGDIR__/a.log\"}"));
    assert_eq!(lines.next(), Some("READ_TIME \"read now\""));
    assert_eq!(
        lines.next(),
        Some("2024-03-21T09:15:01.101234567Z \"tab\\there\"")
    );
    let last = lines.next().unwrap();
    assert!(
        last.starts_with("READ_TIME LONG 2000 bytes sha256=") && last.ends_with(&json(&long[..64])),
        "{last}"
    );
}
