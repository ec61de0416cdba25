//! Operating logferry, end to end through the real binary: reloading the config (SIGHUP and
//! `POST /reload`) without losing or repeating a line, rejecting a bad config while the old one
//! keeps shipping, the status API and the `/targets` page as a real browser shows it, and the
//! agent's own logs (logfmt, JSON, a failing client logged without flooding).

mod common;

use common::*;
use loki_receiver::{Behavior, Receiver};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `clients:` entry (YAML, continuation lines indented for a `  - ` list item).
fn client(url: &str, more: &str) -> String {
    let mut text = format!("url: {url}\n    batchwait: 100ms");
    for line in more.lines() {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

/// `server:` on `http` plus the `clients:` list (empty: print to standard output).
fn server_and_clients(http: u16, clients: &[String]) -> String {
    let mut extra = format!("server:\n  http_listen_port: {http}\n");
    if !clients.is_empty() {
        extra.push_str("clients:\n");
        for c in clients {
            extra.push_str(&format!("  - {c}\n"));
        }
    }
    extra
}

/// A config whose jobs are `(job name, glob)`; each job's `job` label is its name.
fn config_with_jobs(dir: &Path, jobs: &[(&str, PathBuf)], extra: &str) -> Config {
    let mut cfg = Config::new(dir, &jobs[0].1).extra(extra);
    cfg.jobs = jobs
        .iter()
        .map(|(name, glob)| (name.to_string(), glob.display().to_string(), String::new()))
        .collect();
    cfg
}

/// An HTTP/1.1 request on 127.0.0.1; (status, body), or None when nothing answers.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(LONG)).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn get(port: u16, path: &str) -> String {
    match http(port, "GET", path) {
        Some((200, body)) => body,
        other => panic!("GET {path} on port {port}: {other:?}"),
    }
}

fn metrics(port: u16) -> String {
    http(port, "GET", "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of the first sample whose line starts with `series` (give the whole series
/// name, with a trailing space or the opening brace, so that `_created` lines do not match).
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `/api/v1/targets`, parsed.
fn targets(port: u16) -> Value {
    let body = get(port, "/api/v1/targets");
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/api/v1/targets is not JSON ({e}):\n{body}"))
}

/// Every `jobs[].targets[].files[]` entry of the status API.
fn status_files(overview: &Value) -> Vec<Value> {
    let mut files = Vec::new();
    for job in overview["jobs"].as_array().expect("jobs is not a list") {
        for target in job["targets"].as_array().expect("targets is not a list") {
            files.extend(
                target["files"]
                    .as_array()
                    .expect("files is not a list")
                    .iter()
                    .cloned(),
            );
        }
    }
    files
}

/// The status API's entry for one file.
fn status_of(overview: &Value, file: &Path) -> Option<Value> {
    let name = file.display().to_string();
    status_files(overview)
        .into_iter()
        .find(|f| f["path"].as_str() == Some(name.as_str()))
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Lines received from one file.
fn lines_of(receiver: &Receiver, file: &Path) -> Vec<String> {
    let name = file.display().to_string();
    receiver
        .entries()
        .into_iter()
        .filter(|e| e.label("filename") == Some(name.as_str()))
        .map(|e| e.line)
        .collect()
}

fn send_signal(agent: &Agent, signal: i32) {
    // SAFETY: signals our own child, which has not been reaped (the agent still runs).
    let rc = unsafe { libc::kill(agent.pid(), signal) };
    assert_eq!(rc, 0, "cannot signal logferry");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Where `program` is on PATH, if anywhere.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Appends numbered lines (`{prefix}{i}`, ten per write, a few milliseconds apart) to a file
/// until stopped, from a background thread.
struct Writer {
    written: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Writer {
    fn start(path: &Path, prefix: &'static str, from: usize) -> Writer {
        let written = Arc::new(AtomicUsize::new(from));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (path, written, stop) = (path.to_path_buf(), written.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let n = written.load(Ordering::Acquire);
                    append(&path, numbered(prefix, n, 10));
                    written.store(n + 10, Ordering::Release);
                    // Pacing only, so that the file grows over time; nothing waits on it.
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Writer {
            written,
            stop,
            handle,
        }
    }

    /// Lines written so far (all complete: each write ends with a newline).
    fn written(&self) -> usize {
        self.written.load(Ordering::Acquire)
    }

    /// Stops writing; returns how many lines the file holds.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap();
        self.written.load(Ordering::Acquire)
    }
}

/// The key=value pairs of one logfmt line, values unquoted (Go quoting).
fn parse_logfmt(line: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        loop {
            match chars.next()? {
                '=' => break,
                c if c == ' ' || c == '"' => return None,
                c => key.push(c),
            }
        }
        if key.is_empty() {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => value.push('\n'),
                        'r' => value.push('\r'),
                        't' => value.push('\t'),
                        'a' => value.push('\u{7}'),
                        'b' => value.push('\u{8}'),
                        'f' => value.push('\u{c}'),
                        'v' => value.push('\u{b}'),
                        c @ ('x' | 'u' | 'U') => {
                            let digits = match c {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let hex: String = (0..digits).filter_map(|_| chars.next()).collect();
                            value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some(' ')) {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if c == '"' || c == '=' {
                    return None;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Asserts that every line of `stderr` is `level=<level> ts=<RFC 3339> msg=<message> ...`.
fn assert_logfmt(stderr: &str) {
    assert!(!stderr.trim().is_empty(), "nothing was logged");
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        let pairs = parse_logfmt(line).unwrap_or_else(|| panic!("not logfmt: {line:?}"));
        let keys: Vec<&str> = pairs.iter().take(3).map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["level", "ts", "msg"], "in {line:?}");
        assert!(
            ["debug", "info", "warn", "error"].contains(&pairs[0].1.as_str()),
            "unknown level in {line:?}"
        );
        let ts = &pairs[1].1;
        assert!(
            ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T',
            "ts is not an RFC 3339 time in {line:?}"
        );
        assert!(!pairs[2].1.is_empty(), "empty msg in {line:?}");
    }
}

/// The logfmt lines whose `msg` starts with `prefix`, parsed.
fn logged(stderr: &str, prefix: &str) -> Vec<Vec<(String, String)>> {
    stderr
        .lines()
        .filter_map(parse_logfmt)
        .filter(|pairs| field(pairs, "msg").is_some_and(|m| m.starts_with(prefix)))
        .collect()
}

/// What logferry prints when it is started on `config` and refuses it (exit status 1): the
/// error, without the `logferry: ` prefix.
fn start_error(config: &Path) -> String {
    let mut failed = Agent::spawn(command(config));
    let status = failed
        .wait_exit(SOON)
        .expect("logferry kept running on an invalid config");
    assert_eq!(status.code(), Some(1), "{}", failed.stderr());
    let err = failed.stderr();
    err.trim_end()
        .strip_prefix("logferry: ")
        .unwrap_or_else(|| panic!("unexpected start error: {err}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// 1-4: reloading on SIGHUP
// ---------------------------------------------------------------------------------------------

#[test]
fn sighup_adds_a_job_while_a_file_is_written_without_losing_or_repeating_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let http_port = free_port();
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let a = dir.path().join("a/a.log");
    let b = dir.path().join("b/b.log");
    append(&a, numbered("a", 0, 10));
    append(&b, numbered("b", 0, 20));
    let extra = server_and_clients(http_port, &[client(&loki.url(), "")]);
    let mut cfg = config_with_jobs(dir.path(), &[("alpha", dir.path().join("a/*.log"))], &extra);
    let cfg_path = cfg.write(dir.path());
    let first_hash = sha256_hex(&std::fs::read(&cfg_path).unwrap());
    let mut agent = Agent::start(&cfg_path);
    let writer = Writer::start(&a, "a", 10);
    assert!(
        wait_until(SOON, || lines_of(&loki, &a).len() >= 200),
        "a.log is not shipped; stderr:\n{}",
        agent.tail_of_stderr()
    );
    assert_eq!(
        lines_of(&loki, &b),
        Vec::<String>::new(),
        "b is not a job yet"
    );

    // Add job beta, reload while a.log keeps growing.
    cfg.jobs.push((
        "beta".into(),
        dir.path().join("b/*.log").display().to_string(),
        String::new(),
    ));
    cfg.write(dir.path());
    let new_hash = sha256_hex(&std::fs::read(&cfg_path).unwrap());
    send_signal(&agent, libc::SIGHUP);
    agent.wait_for_stderr("config reloaded", SOON);
    let at_reload = writer.written();
    append(&b, numbered("b", 20, 10));
    assert!(
        wait_until(SOON, || lines_of(&loki, &b).len() >= 30),
        "the new job's file is not shipped: got {:?}; stderr:\n{}",
        lines_of(&loki, &b),
        agent.tail_of_stderr()
    );
    // a.log goes on being shipped after the reload.
    assert!(
        wait_until(SOON, || lines_of(&loki, &a).len() >= at_reload + 200),
        "a.log stopped being shipped after the reload"
    );
    let total = writer.stop();
    assert!(
        wait_until(LONG, || lines_of(&loki, &a).len() >= total),
        "got {} of {total} lines of a.log",
        lines_of(&loki, &a).len()
    );

    let text = metrics(http_port);
    assert_eq!(
        metric_value(&text, "logferry_config_reload_success_total "),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "logferry_config_reload_fail_total "),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&text, "logferry_config_last_reload_successful "),
        Some(1.0)
    );
    agent.stop();

    // Every line of a.log exactly once, in order, across the reload.
    let got_a = lines_of(&loki, &a);
    assert_eq!(
        duplicates(&got_a),
        Vec::<String>::new(),
        "lines of a.log shipped twice"
    );
    assert_eq!(got_a, numbered_lines("a", 0, total));
    assert_eq!(lines_of(&loki, &b), numbered_lines("b", 0, 30));
    for e in loki.entries() {
        let expected = if e.line.starts_with('a') {
            "alpha"
        } else {
            "beta"
        };
        assert_eq!(e.label("job"), Some(expected), "{e:?}");
    }
    assert_eq!(
        position_of(&dir.path().join("positions.yaml"), &a),
        Some(std::fs::metadata(&a).unwrap().len())
    );

    // The config's hash is logged at start and after the reload.
    let err = agent.stderr();
    let loaded = logged(&err, "config loaded");
    assert_eq!(field(&loaded[0], "hash"), Some(first_hash.as_str()));
    let reloaded = logged(&err, "config reloaded");
    assert_eq!(reloaded.len(), 1, "{err}");
    assert_eq!(
        field(&reloaded[0], "hash"),
        Some(new_hash.as_str()),
        "the reload does not log the new config's SHA-256"
    );
    assert_ne!(first_hash, new_hash);
    assert_logfmt(&err);
}

#[test]
fn a_removed_job_delivers_what_was_read_and_ships_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    // Loki answers 503 at first: what is read stays in flight.
    let loki = Receiver::builder()
        .behavior(Behavior::Status(503, "ingester not ready".into()))
        .start();
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let a = dir.path().join("a/a.log");
    let b = dir.path().join("b/b.log");
    append(&a, numbered("a", 0, 10));
    append(&b, numbered("b", 0, 50));
    let read_at_reload = std::fs::metadata(&b).unwrap().len();
    let extra = server_and_clients(
        http_port,
        &[client(
            &loki.url(),
            "backoff_config: {min_period: 50ms, max_period: 200ms}",
        )],
    );
    let mut cfg = config_with_jobs(
        dir.path(),
        &[
            ("alpha", dir.path().join("a/*.log")),
            ("beta", dir.path().join("b/*.log")),
        ],
        &extra,
    );
    let cfg_path = cfg.write(dir.path());
    let mut agent = Agent::start(&cfg_path);
    let read_series = format!("logferry_read_lines_total{{path=\"{}\"}}", b.display());
    assert!(
        wait_until(SOON, || metric_value(&metrics(http_port), &read_series)
            == Some(50.0)),
        "b.log was not read; metrics:\n{}",
        metrics(http_port)
    );
    assert!(wait_until(SOON, || loki.request_count() >= 1));
    assert_eq!(loki.entry_count(), 0);

    // Remove job beta while its 50 lines are read but not delivered.
    cfg.jobs.truncate(1);
    cfg.write(dir.path());
    send_signal(&agent, libc::SIGHUP);
    agent.wait_for_stderr("config reloaded", SOON);
    // The tailer logs that it closes the file (with its path) once it switched targets.
    let b_name = b.display().to_string();
    assert!(
        wait_until(SOON, || logged(&agent.stderr(), "").iter().any(|l| {
            field(l, "path") == Some(b_name.as_str())
                && field(l, "msg").is_some_and(|m| m.contains("closing"))
        })),
        "the removed job's file was not closed; stderr:\n{}",
        agent.tail_of_stderr()
    );
    append(&b, numbered("b", 50, 20));
    let positions = dir.path().join("positions.yaml");
    assert_eq!(
        position_of(&positions, &b).unwrap_or(0),
        0,
        "the position moved while nothing was delivered"
    );

    // Loki recovers: what was read of b.log is delivered, and a.log goes on.
    loki.set_behavior(Behavior::Accept);
    assert!(
        wait_until(SOON, || lines_of(&loki, &b).len() >= 50),
        "the removed job's read lines were not delivered: {:?}; stderr:\n{}",
        lines_of(&loki, &b),
        agent.tail_of_stderr()
    );
    append(&a, "after-reload\n");
    assert!(
        wait_until(SOON, || lines_of(&loki, &a)
            .contains(&"after-reload".into())),
        "a.log is not shipped after the reload"
    );
    assert!(
        wait_until(SOON, || position_of(&positions, &b) == Some(read_at_reload)),
        "the removed file's position is {:?}, not its delivered {read_at_reload} bytes",
        position_of(&positions, &b)
    );
    // Give the watcher and a rescan (target_config.sync_period: 1s) time to notice b.log
    // grew: nothing of it may be shipped.
    let shipped_more = wait_until(Duration::from_secs(3), || lines_of(&loki, &b).len() > 50);
    assert!(
        !shipped_more,
        "lines appended to a removed job's file were shipped: {:?}",
        &lines_of(&loki, &b)[50..]
    );
    let overview = targets(http_port);
    assert!(
        status_of(&overview, &b).is_none(),
        "the removed job's file is still listed: {overview}"
    );
    assert!(
        overview["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["job"] != "beta"),
        "{overview}"
    );
    agent.stop();
    assert_eq!(lines_of(&loki, &b), numbered_lines("b", 0, 50));
    assert_eq!(
        position_of(&positions, &b),
        Some(read_at_reload),
        "the positions file lost or moved the removed file's acknowledged offset"
    );
    assert_eq!(
        position_of(&positions, &a),
        Some(std::fs::metadata(&a).unwrap().len())
    );
}

#[test]
fn a_changed_client_gets_the_new_labels_and_an_unchanged_one_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let changed = Receiver::start();
    let same = Receiver::start();
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 10));
    let clients = |external: &str| {
        server_and_clients(
            http_port,
            &[client(&changed.url(), external), client(&same.url(), "")],
        )
    };
    let mut cfg = Config::new(dir.path(), dir.path().join("*.log")).extra(&clients(""));
    let cfg_path = cfg.write(dir.path());
    let mut agent = Agent::start(&cfg_path);
    let writer = Writer::start(&file, "x", 10);
    assert!(wait_until(SOON, || changed.entry_count() >= 100
        && same.entry_count() >= 100));

    cfg.extra = clients("external_labels: {env: prod}");
    cfg.write(dir.path());
    send_signal(&agent, libc::SIGHUP);
    agent.wait_for_stderr("config reloaded", SOON);
    let at_reload = writer.written();
    assert!(
        wait_until(SOON, || changed
            .entries()
            .iter()
            .filter(|e| e.label("env") == Some("prod"))
            .count()
            >= 100),
        "no entries with the new external label; stderr:\n{}",
        agent.tail_of_stderr()
    );
    let total = writer.stop();
    assert!(
        wait_until(LONG, || lines_of(&same, &file).len() >= total
            && changed.entry_count() >= total),
        "same: {}, changed: {} of {total}",
        same.entry_count(),
        changed.entry_count()
    );
    let overview = targets(http_port);
    agent.stop();

    // The unchanged client: every line once, in order, never with the other client's label.
    let got = lines_of(&same, &file);
    assert_eq!(duplicates(&got), Vec::<String>::new());
    assert_eq!(got, numbered_lines("x", 0, total));
    assert!(same.entries().iter().all(|e| e.label("env").is_none()));
    // The changed client: nothing lost, and what was written after the reload carries env.
    let got = lines_of(&changed, &file);
    let missing: Vec<String> = numbered_lines("x", 0, total)
        .into_iter()
        .filter(|l| !got.contains(l))
        .collect();
    assert!(
        missing.is_empty(),
        "lost at the changed client: {missing:?}"
    );
    assert_eq!(duplicates(&got), Vec::<String>::new());
    for e in changed.entries() {
        let n: usize = e.line[1..].parse().unwrap();
        if n >= at_reload {
            assert_eq!(
                e.label("env"),
                Some("prod"),
                "line {} was written after the reload",
                e.line
            );
        }
    }
    // The status API lists the two clients of the config, the replaced one no more.
    let clients = overview["clients"].as_array().unwrap();
    let urls: Vec<&str> = clients.iter().filter_map(|c| c["url"].as_str()).collect();
    assert!(
        clients.len() == 2
            && urls.contains(&changed.url().as_str())
            && urls.contains(&same.url().as_str()),
        "clients after the reload should be exactly the two configured ones: {}",
        overview["clients"]
    );
    let same_status = clients
        .iter()
        .find(|c| c["url"].as_str() == Some(same.url().as_str()))
        .unwrap();
    assert_eq!(same_status["sent_entries"].as_u64(), Some(total as u64));
}

#[test]
fn a_client_changed_while_its_queue_is_full_still_gets_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    // The client to change is stuck: its queue fills and the fan-out waits for it.
    let changed = Receiver::builder().behavior(Behavior::Stall).start();
    let same = Receiver::start();
    let file = dir.path().join("x.log");
    let clients = |external: &str| {
        server_and_clients(
            http_port,
            &[
                client(&changed.url(), &format!("timeout: 60s\n{external}")),
                client(&same.url(), ""),
            ],
        )
    };
    let mut cfg = Config::new(dir.path(), dir.path().join("*.log")).extra(&clients(""));
    let cfg_path = cfg.write(dir.path());
    let mut agent = Agent::start(&cfg_path);
    let writer = Writer::start(&file, "x", 0);
    let host = changed.addr().to_string();
    let fill = format!("logferry_client_queue_fill_ratio{{host=\"{host}\"}}");
    assert!(
        wait_until(SOON, || metric_value(&metrics(http_port), &fill)
            == Some(1.0)),
        "the stalled client's queue did not fill; metrics:\n{}",
        metrics(http_port)
    );
    // One more chunk is read after the queue is full: the fan-out holds it for that client.
    let read = format!("logferry_read_lines_total{{path=\"{}\"}}", file.display());
    let read_when_full = metric_value(&metrics(http_port), &read).unwrap_or(0.0);
    assert!(wait_until(SOON, || metric_value(
        &metrics(http_port),
        &read
    )
    .unwrap_or(0.0)
        > read_when_full));

    cfg.extra = clients("external_labels: {env: prod}");
    cfg.write(dir.path());
    send_signal(&agent, libc::SIGHUP);
    agent.wait_for_stderr("config reloaded", SOON);
    changed.set_behavior(Behavior::Accept);
    assert!(wait_until(SOON, || changed
        .entries()
        .iter()
        .any(|e| e.label("env") == Some("prod"))));
    let total = writer.stop();
    assert!(
        wait_until(LONG, || same.entry_count() >= total),
        "the unchanged client got {} of {total}",
        same.entry_count()
    );
    let complete = wait_until(SOON, || {
        let got = lines_of(&changed, &file);
        numbered_lines("x", 0, total)
            .iter()
            .all(|l| got.contains(l))
    });
    agent.stop();
    let got = lines_of(&changed, &file);
    let missing: Vec<String> = numbered_lines("x", 0, total)
        .into_iter()
        .filter(|l| !got.contains(l))
        .collect();
    assert!(
        complete && missing.is_empty(),
        "the changed client never got {} line(s) of {total}: {}..{}; yet the positions file \
         says {:?} of {} bytes were delivered",
        missing.len(),
        missing.first().map(String::as_str).unwrap_or(""),
        missing.last().map(String::as_str).unwrap_or(""),
        position_of(&dir.path().join("positions.yaml"), &file),
        std::fs::metadata(&file).unwrap().len()
    );
    assert_eq!(lines_of(&same, &file), numbered_lines("x", 0, total));
}

#[test]
fn an_invalid_config_on_sighup_is_rejected_and_the_old_one_keeps_shipping() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let loki = Receiver::start();
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 20));
    let extra = server_and_clients(http_port, &[client(&loki.url(), "")]);
    let cfg = Config::new(dir.path(), dir.path().join("*.log")).extra(&extra);
    let cfg_path = cfg.write(dir.path());
    let mut agent = Agent::start(&cfg_path);
    assert!(loki.wait_for_entries(20, SOON));

    // A typo in the file: an unknown key under server.
    let bad = cfg.yaml().replace("server:\n", "server:\n  colour: blue\n");
    std::fs::write(&cfg_path, &bad).unwrap();
    let line = bad.lines().position(|l| l == "  colour: blue").unwrap() + 1;
    let expected = start_error(&cfg_path);
    assert!(
        expected.starts_with(&format!("{}:{line}:", cfg_path.display()))
            && expected.contains("server.colour"),
        "the start error does not name file:line: key: {expected}"
    );

    send_signal(&agent, libc::SIGHUP);
    agent.wait_for_stderr("rejected", SOON);
    let err = agent.stderr();
    let rejected = logged(&err, "config reload rejected");
    assert_eq!(rejected.len(), 1, "{err}");
    assert_eq!(field(&rejected[0], "level"), Some("error"));
    assert_eq!(
        field(&rejected[0], "error"),
        Some(expected.as_str()),
        "the reload error differs from the start error"
    );
    assert!(!err.contains("config reloaded"));

    // The old config keeps shipping.
    append(&file, numbered("x", 20, 30));
    assert!(
        loki.wait_for_entries(50, SOON),
        "nothing shipped after a rejected reload; stderr:\n{}",
        agent.tail_of_stderr()
    );
    let text = metrics(http_port);
    assert_eq!(
        metric_value(&text, "logferry_config_reload_fail_total "),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "logferry_config_last_reload_successful "),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&text, "logferry_config_reload_success_total "),
        Some(0.0)
    );
    agent.stop();
    assert_eq!(lines_of(&loki, &file), numbered_lines("x", 0, 50));
    assert_logfmt(&agent.stderr());
}

// ---------------------------------------------------------------------------------------------
// 5: POST /reload
// ---------------------------------------------------------------------------------------------

#[test]
fn post_reload_is_off_by_default_and_answers_200_or_400_when_enabled() {
    // Without the flag: 403, and nothing is reloaded.
    let dir = tempfile::tempdir().unwrap();
    let off_port = free_port();
    append(&dir.path().join("x.log"), numbered("x", 0, 3));
    let cfg =
        Config::new(dir.path(), dir.path().join("*.log")).extra(&server_and_clients(off_port, &[]));
    let mut off = Agent::start(&cfg.write(dir.path()));
    let (status, body) = http(off_port, "POST", "/reload").expect("no answer");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("-server.enable-runtime-reload"), "{body}");
    assert_eq!(
        metric_value(&metrics(off_port), "logferry_config_reload_success_total "),
        Some(0.0)
    );
    off.stop();

    // With it: a valid config takes effect, an invalid one is refused with its error.
    let dir = tempfile::tempdir().unwrap();
    let on_port = free_port();
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 3));
    let mut cfg =
        Config::new(dir.path(), dir.path().join("*.log")).extra(&server_and_clients(on_port, &[]));
    let cfg_path = cfg.write(dir.path());
    let mut cmd = command(&cfg_path);
    cmd.arg("-server.enable-runtime-reload");
    let mut on = Agent::start_cmd(cmd);
    on.wait_for_count(3, SOON);
    cfg = cfg.labels("team: core");
    cfg.write(dir.path());
    let (status, body) = http(on_port, "POST", "/reload").expect("no answer");
    assert_eq!((status, body.trim()), (200, "config reloaded"));
    append(&file, "after\n");
    on.wait_for_line("after", SOON);
    let after = on
        .entries()
        .into_iter()
        .find(|e| e.line == "after")
        .unwrap();
    assert!(
        after.labels.contains("team=\"core\""),
        "the reloaded labels are not applied: {}",
        after.labels
    );

    let bad = cfg
        .yaml()
        .replace("positions:\n", "positions:\n  colour: blue\n");
    std::fs::write(&cfg_path, &bad).unwrap();
    let expected = start_error(&cfg_path);
    let (status, body) = http(on_port, "POST", "/reload").expect("no answer");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&expected),
        "the 400 answer does not carry the config error {expected:?}: {body}"
    );
    let text = metrics(on_port);
    assert_eq!(
        metric_value(&text, "logferry_config_reload_success_total "),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "logferry_config_reload_fail_total "),
        Some(1.0)
    );
    // Still running the last good config.
    append(&file, "still\n");
    on.wait_for_line("still", SOON);
    on.stop();
    let err = on.stderr();
    assert!(err.contains("trigger=\"POST /reload\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 6-7: the status API and page
// ---------------------------------------------------------------------------------------------

/// Checks one file's entry of the status API against the file on disk (size may only be at
/// most the file's length, the position at most the size).
fn check_file_status(f: &Value, file: &Path) {
    let size = u64_field(f, "size");
    let position = u64_field(f, "position");
    assert!(position <= size, "{f}");
    assert_eq!(u64_field(f, "lag_bytes"), size - position, "{f}");
    assert!(
        size <= std::fs::metadata(file).unwrap().len(),
        "size larger than the file: {f}"
    );
    let state = f["state"].as_str().unwrap_or_default();
    assert!(
        ["reading", "idle", "draining", "unreadable"].contains(&state),
        "{f}"
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_read = f["last_read"]
        .as_f64()
        .unwrap_or_else(|| panic!("no last_read for a file that was read: {f}"));
    assert!(
        last_read <= now + 1.0 && last_read > now - 600.0,
        "last_read is not a recent Unix time: {f}"
    );
}

#[test]
fn the_status_api_shows_files_positions_lag_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let loki = Receiver::start();
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    append(&a, numbered("a", 0, 10));
    append(&b, numbered("b", 0, 40));
    let extra = server_and_clients(http_port, &[client(&loki.url(), "")]);
    let cfg = Config::new(dir.path(), dir.path().join("*.log")).extra(&extra);
    let mut agent = Agent::start(&cfg.write(dir.path()));
    let writer = Writer::start(&a, "a", 10);

    // While a.log is written: both files listed, consistent numbers, a.log being read.
    assert!(
        wait_until(SOON, || {
            let o = targets(http_port);
            status_of(&o, &a)
                .is_some_and(|f| f["state"] == "reading" && u64_field(&f, "size") > 1000)
                && status_of(&o, &b).is_some()
        }),
        "{}",
        targets(http_port)
    );
    // Sampled while a.log grows: the position shown never runs ahead of the size shown.
    let mut samples = 0;
    let mut inconsistent = None;
    wait_until(Duration::from_secs(3), || {
        if let Some(f) = status_of(&targets(http_port), &a) {
            samples += 1;
            let (size, position) = (u64_field(&f, "size"), u64_field(&f, "position"));
            if position > size || u64_field(&f, "lag_bytes") != size - position {
                inconsistent = Some(f);
                return true;
            }
        }
        false
    });
    assert!(samples > 0);
    assert!(
        inconsistent.is_none(),
        "while the file grows, the status API shows a position past the size (lag_bytes is \
         then not size - position): {}",
        inconsistent.unwrap()
    );
    let overview = targets(http_port);
    assert_eq!(overview["jobs"][0]["job"], "test", "{overview}");
    let target = &overview["jobs"][0]["targets"][0];
    assert_eq!(
        target["path"].as_str(),
        Some(dir.path().join("*.log").display().to_string().as_str())
    );
    assert_eq!(target["labels"]["job"], "test", "{target}");
    check_file_status(&status_of(&overview, &a).unwrap(), &a);
    check_file_status(&status_of(&overview, &b).unwrap(), &b);

    // Once the writer stopped and all is delivered: position == size == the file's length.
    let total = writer.stop();
    assert!(loki.wait_for_entries(total + 40, LONG));
    let len_a = std::fs::metadata(&a).unwrap().len();
    let len_b = std::fs::metadata(&b).unwrap().len();
    assert!(
        wait_until(SOON, || {
            let o = targets(http_port);
            [(&a, len_a), (&b, len_b)].iter().all(|(file, len)| {
                status_of(&o, file).is_some_and(|f| {
                    u64_field(&f, "size") == *len
                        && u64_field(&f, "position") == *len
                        && u64_field(&f, "lag_bytes") == 0
                })
            }) && o["clients"][0]["sent_entries"].as_u64() == Some((total + 40) as u64)
        }),
        "the status API did not settle on the files' lengths ({len_a}, {len_b}) and {} entries:\n{}",
        total + 40,
        targets(http_port)
    );
    let overview = targets(http_port);
    check_file_status(&status_of(&overview, &a).unwrap(), &a);
    let clients = overview["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{overview}");
    let c = &clients[0];
    assert_eq!(c["url"].as_str(), Some(loki.url().as_str()), "{c}");
    assert_eq!(c["host"].as_str(), Some(loki.addr().to_string().as_str()));
    assert_eq!(c["last_result"], "delivered", "{c}");
    assert_eq!(c["retrying"], false);
    assert_eq!(c["dropped_entries"], 0);
    assert_eq!(c["sent_entries"].as_u64(), Some(loki.entry_count() as u64));
    assert!(c["last_push"].as_f64().is_some(), "{c}");
    // The metrics say the same.
    let text = metrics(http_port);
    let lag = format!("logferry_file_lag_bytes{{path=\"{}\"}}", a.display());
    assert_eq!(metric_value(&text, &lag), Some(0.0), "{text}");
    agent.stop();
}

#[test]
fn an_unreadable_file_is_shown_with_its_error() {
    if !is_root() {
        eprintln!("SKIPPED an_unreadable_file_is_shown_with_its_error: needs root to switch user");
        return;
    }
    let Some(setpriv) = which("setpriv") else {
        eprintln!(
            "SKIPPED an_unreadable_file_is_shown_with_its_error: setpriv is missing (util-linux)"
        );
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(dir.path(), 0o755);
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    std::fs::create_dir(&logs).unwrap();
    std::fs::create_dir(&state).unwrap();
    chmod(&logs, 0o755);
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let ok = logs.join("ok.log");
    let secret = logs.join("secret.log");
    append(&ok, numbered("ok", 0, 5));
    append(&secret, numbered("secret", 0, 5));
    chmod(&ok, 0o644);
    chmod(&secret, 0o000);
    let http_port = free_port();
    let mut cfg = Config::new(dir.path(), logs.join("*.log"))
        .target_sync("300ms")
        .extra(&server_and_clients(http_port, &[]));
    cfg.positions = state.join("positions.yaml");
    let cfg_path = cfg.write(dir.path());
    chmod(&cfg_path, 0o644);

    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg(format!("-config.file={}", cfg_path.display()));
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_count(5, SOON);
    assert!(
        wait_until(SOON, || status_of(&targets(http_port), &secret)
            .is_some_and(|f| f["state"] == "unreadable")),
        "{}",
        targets(http_port)
    );
    let f = status_of(&targets(http_port), &secret).unwrap();
    let error = f["error"].as_str().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("permission denied"),
        "no error for the unreadable file: {f}"
    );
    let html = get(http_port, "/targets");
    assert!(
        html.contains("unreadable") && html.contains(&secret.display().to_string()),
        "{html}"
    );
    let okf = status_of(&targets(http_port), &ok).unwrap();
    assert!(okf["state"] == "reading" || okf["state"] == "idle", "{okf}");
    assert!(okf["error"].is_null(), "{okf}");
    assert!(!agent.printed("secret0"));

    // Reported once, not at each rescan (every 300 ms here).
    let rescans = |agent: &Agent| agent.stderr().matches("cannot open file").count();
    append(&ok, "ok-later\n");
    agent.wait_for_line("ok-later", SOON);
    std::thread::sleep(Duration::from_millis(1500)); // several rescans; nothing to wait for
    assert_eq!(rescans(&agent), 1, "{}", agent.stderr());

    // Readable again: picked up at a rescan, from the start.
    chmod(&secret, 0o644);
    agent.wait_for_line("secret4", SOON);
    assert!(
        wait_until(SOON, || {
            status_of(&targets(http_port), &secret)
                .is_some_and(|f| f["state"] != "unreadable" && f["error"].is_null())
        }),
        "{}",
        targets(http_port)
    );
    agent.stop();
    assert_eq!(agent.lines_of(&secret), numbered_lines("secret", 0, 5));
}

/// The text of an HTML fragment: tags removed, the five entities decoded, trimmed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

/// The `<td>` texts of each row of the tables with `class`.
fn table_rows(html: &str, class: &str) -> Vec<Vec<String>> {
    let marker = format!("<table class=\"{class}\"");
    let mut rows = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&marker) {
        let after = &rest[start..];
        let end = after.find("</table>").unwrap_or(after.len());
        for row in after[..end].split("<tr").skip(1) {
            let cells: Vec<String> = row
                .split("<td")
                .skip(1)
                .map(|cell| {
                    let cell = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                    text_of(&cell[..cell.find("</td>").unwrap_or(cell.len())])
                })
                .collect();
            if !cells.is_empty() {
                rows.push(cells);
            }
        }
        rest = &after[end..];
    }
    rows
}

/// Chromium from Debian, installed if it is missing and we may; None (with the reason
/// printed) when it cannot be had.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = which("chromium") {
        return Some(path);
    }
    if !is_root() {
        eprintln!("SKIPPED the browser test: chromium is missing and we are not root");
        return None;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !install() {
            eprintln!("SKIPPED the browser test: `apt-get install chromium` failed");
            return None;
        }
    }
    let found = which("chromium");
    if found.is_none() {
        eprintln!("SKIPPED the browser test: chromium installed but not on PATH");
    }
    found
}

/// Loads `url` in headless Chromium and returns the DOM it built, killing the browser (its
/// whole process group) if it takes longer than a minute.
fn dump_dom(chromium: &Path, url: &str) -> String {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("cannot start chromium");
    let group = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signals the process group of the browser we started (helpers left behind, or
    // all of it after the timeout).
    unsafe { libc::kill(-group, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    let dom = reader.join().unwrap();
    assert!(
        status.is_some(),
        "chromium did not finish loading {url} within 60 s"
    );
    dom
}

#[test]
fn the_targets_page_in_a_real_browser_shows_what_the_api_says() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let loki = Receiver::start();
    let file = dir.path().join("app & <web>.log");
    append(&file, numbered("w", 0, 10));
    let extra = server_and_clients(http_port, &[client(&loki.url(), "")]);
    let cfg = Config::new(dir.path(), dir.path().join("*.log")).extra(&extra);
    let mut agent = Agent::start(&cfg.write(dir.path()));
    let writer = Writer::start(&file, "w", 10);
    assert!(wait_until(SOON, || loki.entry_count() >= 300));
    let total = writer.stop();
    // The file is still tailed; wait until what the page shows is stable.
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(
        wait_until(LONG, || {
            let o = targets(http_port);
            status_of(&o, &file)
                .is_some_and(|f| u64_field(&f, "position") == len && u64_field(&f, "size") == len)
                && o["clients"][0]["sent_entries"].as_u64() == Some(total as u64)
        }),
        "{}",
        targets(http_port)
    );
    let overview = targets(http_port);

    let url = format!("http://127.0.0.1:{http_port}/targets");
    let dom = dump_dom(&chromium, &url);
    assert!(
        dom.contains("logferry targets"),
        "chromium showed no targets page:\n{dom}"
    );
    let json = status_of(&overview, &file).unwrap();
    let rows = table_rows(&dom, "files");
    let name = file.display().to_string();
    let row = rows
        .iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row for {name} in {rows:?}\n{dom}"));
    assert_eq!(row.len(), 6, "{row:?}");
    assert!(
        row[1] == "reading" || row[1] == "idle",
        "state cell: {row:?}"
    );
    assert_eq!(row[2], json["position"].to_string(), "position cell");
    assert_eq!(row[3], json["size"].to_string(), "size cell");
    assert_eq!(row[2], len.to_string());
    assert_eq!(row[4], "0", "lag cell");
    assert!(row[5].ends_with("s ago"), "last read cell: {row:?}");
    let clients = table_rows(&dom, "clients");
    assert_eq!(clients.len(), 1, "{clients:?}");
    let c = &clients[0];
    assert_eq!(c[0], loki.url());
    assert_eq!(c[3], "delivered", "{c:?}");
    assert_eq!(c[5], total.to_string(), "sent entries cell: {c:?}");
    assert_eq!(c[6], "0", "dropped entries cell: {c:?}");

    // Self-contained: no script, nothing loaded from elsewhere.
    let raw = get(http_port, "/targets");
    for page in [&dom, &raw] {
        let lower = page.to_lowercase();
        for banned in [
            "<script", "<link", "<img", "<iframe", "src=", "@import", "url(",
        ] {
            assert!(!lower.contains(banned), "the page has {banned}:\n{page}");
        }
        for href in lower.split("href=\"").skip(1) {
            assert!(
                href.starts_with('/') && !href.starts_with("//"),
                "the page links elsewhere: {}",
                &href[..href.find('"').unwrap_or(href.len())]
            );
        }
    }
    agent.stop();
}

// ---------------------------------------------------------------------------------------------
// 8: the agent's own logs
// ---------------------------------------------------------------------------------------------

/// Runs an agent shipping to a closed port, waits for many retries, opens the port, and
/// returns the agent's stderr and the number of retries made before the port opened.
fn failing_then_recovering(format_flag: Option<&str>) -> (String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 10));
    let extra = server_and_clients(
        http_port,
        &[client(
            &url,
            "backoff_config: {min_period: 50ms, max_period: 100ms}",
        )],
    );
    let cfg = Config::new(dir.path(), dir.path().join("*.log")).extra(&extra);
    let mut cmd = command(&cfg.write(dir.path()));
    if let Some(flag) = format_flag {
        cmd.arg(flag);
    }
    let mut agent = Agent::start_cmd(cmd);
    let retries = format!("logferry_batch_retries_total{{host=\"127.0.0.1:{port}\"}}");
    // About five seconds of retries, 50 to 100 ms apart.
    assert!(
        wait_until(LONG, || metric_value(&metrics(http_port), &retries)
            .unwrap_or(0.0)
            >= 50.0),
        "the client is not retrying; stderr:\n{}",
        agent.tail_of_stderr()
    );
    let retried = metric_value(&metrics(http_port), &retries).unwrap();
    let loki = Receiver::builder().port(port).start();
    assert!(loki.wait_for_entries(10, SOON));
    agent.wait_for_stderr("push succeeded again", SOON);
    agent.stop();
    (agent.stderr(), retried)
}

#[test]
fn logs_are_logfmt_and_a_failing_client_is_not_logged_at_every_retry() {
    let (err, retried) = failing_then_recovering(None);
    assert_logfmt(&err);
    let failures = logged(&err, "push failed");
    assert!(
        !failures.is_empty() && failures.len() <= 2,
        "{} \"push failed\" lines for {retried} retries:\n{err}",
        failures.len()
    );
    let first = &failures[0];
    assert_eq!(field(first, "level"), Some("warn"));
    assert!(
        field(first, "host").is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{first:?}"
    );
    assert!(
        field(first, "error").is_some_and(|e| e.contains("connect")),
        "{first:?}"
    );
    assert_eq!(logged(&err, "push succeeded again").len(), 1, "{err}");
    let loaded = logged(&err, "config loaded");
    assert_eq!(loaded.len(), 1);
    assert!(field(&loaded[0], "hash").is_some_and(|h| h.len() == 64));
}

#[test]
fn log_format_json_makes_every_line_a_json_object() {
    let (err, retried) = failing_then_recovering(Some("-log.format=json"));
    let mut messages = Vec::new();
    for line in err.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nstderr:\n{err}"));
        assert!(v.is_object(), "{line}");
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {line}"));
        // The keys of the logfmt lines, as Promtail's logger writes them.
        assert!(
            ["debug", "info", "warn", "error"].contains(&level),
            "{line}"
        );
        let message = v["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("no msg: {line}"));
        assert!(v["ts"].is_string(), "no ts: {line}");
        messages.push((message.to_string(), v));
    }
    let failures: Vec<&Value> = messages
        .iter()
        .filter(|(m, _)| m.starts_with("push failed"))
        .map(|(_, v)| v)
        .collect();
    assert!(
        !failures.is_empty() && failures.len() <= 2,
        "{} \"push failed\" lines for {retried} retries:\n{err}",
        failures.len()
    );
    assert!(failures[0]["host"].is_string(), "{}", failures[0]);
    assert!(messages.iter().any(|(m, v)| m == "config loaded"
        && v["hash"].as_str().is_some_and(|h| h.len() == 64)));
    assert!(messages.iter().any(|(m, _)| m == "tailing started"));
    assert!(messages.iter().any(|(m, _)| m == "push succeeded again"));
}
