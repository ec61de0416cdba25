//! Shipping to Loki, end to end: lines written to files reach a faithful Loki receiver on
//! 127.0.0.1 through the real binary, through outages, error storms, crashes and restarts.

mod common;

use common::*;
use loki_receiver::{Behavior, Receiver, TlsOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config reading `dir/*.log`, shipping with `client` (YAML of one `clients:` entry, indented
/// by four spaces after the first line), and serving HTTP on `http_port` (0 = off).
fn shipping_config(dir: &Path, clients: &[String], http_port: u16) -> PathBuf {
    let mut extra = format!("server:\n  http_listen_port: {http_port}\nclients:\n");
    for c in clients {
        extra.push_str(&format!("  - {c}\n"));
    }
    Config::new(dir, dir.join("*.log")).extra(&extra).write(dir)
}

fn client(url: &str, more: &str) -> String {
    if more.is_empty() {
        format!("url: {url}\n    batchwait: 100ms")
    } else {
        format!("url: {url}\n    batchwait: 100ms\n    {more}")
    }
}

fn lines_of(receiver: &Receiver, file: &Path) -> Vec<String> {
    let name = file.display().to_string();
    receiver
        .entries()
        .into_iter()
        .filter(|e| e.label("filename") == Some(name.as_str()))
        .map(|e| e.line)
        .collect()
}

#[test]
fn lines_arrive_once_in_order_with_every_encoding() {
    for (encoding, compression, content_type, content_encoding) in [
        ("protobuf", "snappy", "application/x-protobuf", None),
        ("json", "gzip", "application/json", Some("gzip")),
        ("json", "none", "application/json", None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let loki = Receiver::start();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, numbered("a", 0, 500));
        append(&b, numbered("b", 0, 300));
        let cfg = shipping_config(
            dir.path(),
            &[client(
                &loki.url(),
                &format!("encoding: {encoding}\n    compression: {compression}"),
            )],
            0,
        );
        let mut agent = Agent::start(&cfg);
        append(&a, numbered("a", 500, 500));
        assert!(
            loki.wait_for_entries(1300, SOON),
            "{encoding}/{compression}: got {}",
            loki.entry_count()
        );
        agent.stop();
        assert_eq!(
            lines_of(&loki, &a),
            numbered_lines("a", 0, 1000),
            "{encoding}/{compression}"
        );
        assert_eq!(
            lines_of(&loki, &b),
            numbered_lines("b", 0, 300),
            "{encoding}/{compression}"
        );
        let entries = loki.entries();
        assert_eq!(entries[0].label("job"), Some("test"));
        let requests = loki.requests();
        assert!(
            requests
                .iter()
                .all(|r| r.content_type.as_deref() == Some(content_type))
        );
        assert!(
            requests
                .iter()
                .all(|r| r.content_encoding.as_deref() == content_encoding)
        );
        assert!(requests.iter().all(|r| r.status == Some(204)));
        // Timestamps within a file only grow.
        let times: Vec<i64> = entries
            .iter()
            .filter(|e| e.line.starts_with('a'))
            .map(|e| e.timestamp_ns)
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{encoding}: timestamps not increasing"
        );
        assert_eq!(
            position_of(&dir.path().join("positions.yaml"), &a),
            Some(std::fs::metadata(&a).unwrap().len())
        );
    }
}

#[test]
fn tenant_auth_headers_and_external_labels_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let basic = Receiver::builder()
        .require_basic_auth("user", "s3cret")
        .require_tenant(true)
        .start();
    let bearer = Receiver::builder().require_bearer("tok-123").start();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    append(&dir.path().join("x.log"), numbered("x", 0, 10));
    let cfg = shipping_config(
        dir.path(),
        &[
            client(
                &basic.url(),
                "tenant_id: team-a\n    basic_auth: {username: user, password: s3cret}\n    external_labels: {host: web-1, job: overridden}\n    headers: {X-Extra: yes}",
            ),
            client(
                &bearer.url(),
                &format!("bearer_token_file: {}", token_file.display()),
            ),
        ],
        0,
    );
    let mut agent = Agent::start(&cfg);
    assert!(basic.wait_for_entries(10, SOON) && bearer.wait_for_entries(10, SOON));
    agent.stop();
    let e = &basic.entries()[0];
    assert_eq!(e.tenant.as_deref(), Some("team-a"));
    assert_eq!(e.label("host"), Some("web-1"));
    assert_eq!(
        e.label("job"),
        Some("test"),
        "a stream's own label wins over an external one"
    );
    assert_eq!(basic.requests()[0].header("x-extra"), Some("yes"));
    assert!(
        basic.requests()[0]
            .user_agent
            .as_deref()
            .unwrap_or("")
            .starts_with("logferry/")
    );
    assert_eq!(bearer.entry_count(), 10);
    assert!(!agent.stderr().contains("s3cret"), "a secret was logged");
}

#[test]
fn tls_with_a_private_ca_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsOptions::generate_mtls();
    let files = tls.write_files(dir.path()).unwrap();
    let loki = Receiver::builder().tls(tls).start();
    assert!(loki.url().starts_with("https://"));
    append(&dir.path().join("x.log"), numbered("x", 0, 20));
    let cfg = shipping_config(
        dir.path(),
        &[client(
            &loki.url(),
            &format!(
                "tls_config: {{ca_file: {}, cert_file: {}, key_file: {}}}",
                files.ca_file.display(),
                files.cert_file.as_ref().unwrap().display(),
                files.key_file.as_ref().unwrap().display()
            ),
        )],
        0,
    );
    deliver(&cfg, &loki, 20);
    assert!(loki.requests().iter().all(|r| r.tls && r.client_cert));
}

/// Runs logferry on `config` until `loki` has `entries` entries, then stops it.
fn deliver(config: &Path, loki: &Receiver, entries: usize) {
    let mut agent = Agent::start(config);
    assert!(
        loki.wait_for_entries(entries, SOON),
        "stderr:\n{}",
        agent.tail_of_stderr()
    );
    agent.stop();
}

/// A plain HTTP server on 127.0.0.1 that answers every request with a permanent redirect to
/// `target` (method and body kept, as 308 says). Returns its URL.
fn redirect_to(target: String) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/loki/api/v1/push", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    url
}

/// An `http://` client needs no certificate roots until a server sends it to `https://`: they
/// are loaded at that first handshake, and the certificate is checked against them and
/// `ca_file` as for an `https://` URL; without the private CA, nothing is sent.
#[test]
fn a_redirect_from_http_to_https_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsOptions::generate();
    let files = tls.write_files(dir.path()).unwrap();
    let loki = Receiver::builder().tls(tls).start();
    let plain = redirect_to(loki.url());
    append(&dir.path().join("x.log"), numbered("x", 0, 20));
    let trusting = shipping_config(
        dir.path(),
        &[client(
            &plain,
            &format!("tls_config: {{ca_file: {}}}", files.ca_file.display()),
        )],
        0,
    );
    deliver(&trusting, &loki, 20);
    assert!(loki.requests().iter().all(|r| r.tls));

    let other = tempfile::tempdir().unwrap();
    let loki = Receiver::builder().tls(TlsOptions::generate()).start();
    let plain = redirect_to(loki.url());
    append(&other.path().join("y.log"), numbered("y", 0, 5));
    refused_for_its_certificate(
        &shipping_config(other.path(), &[client(&plain, "")], 0),
        &loki,
    );
}

/// Runs logferry on `config` until a push fails, and checks that `loki` got nothing and the
/// failure was the server's certificate.
fn refused_for_its_certificate(config: &Path, loki: &Receiver) {
    let mut agent = Agent::start(config);
    agent.wait_for_stderr("push failed", SOON);
    agent.stop();
    assert_eq!(loki.entry_count(), 0);
    assert!(
        agent.stderr().contains("certificate"),
        "{}",
        agent.tail_of_stderr()
    );
}

/// `server_name` is the name the certificate is checked against instead of the URL's host
/// (the receiver's certificate names localhost, 127.0.0.1 and ::1, not `logs.example`);
/// `insecure_skip_verify` accepts a certificate no root vouches for.
#[test]
fn server_name_and_insecure_skip_verify() {
    let tls = TlsOptions::generate();
    let loki = Receiver::builder().tls(tls.clone()).start();
    let cases = [
        ("localhost", "server_name: localhost", 3),
        ("other", "server_name: logs.example", 0),
        ("insecure", "insecure_skip_verify: true", 3),
    ];
    let mut delivered = 0;
    for (name, setting, lines) in cases {
        let dir = tempfile::tempdir().unwrap();
        let files = tls.write_files(dir.path()).unwrap();
        let ca = if setting.starts_with("insecure") {
            String::new()
        } else {
            format!("ca_file: {}, ", files.ca_file.display())
        };
        append(
            &dir.path().join(format!("{name}.log")),
            numbered(name, 0, 3),
        );
        let cfg = shipping_config(
            dir.path(),
            &[client(
                &loki.url(),
                &format!("tls_config: {{{ca}{setting}}}"),
            )],
            0,
        );
        if lines == 0 {
            let mut agent = Agent::start(&cfg);
            agent.wait_for_stderr("push failed", SOON);
            agent.stop();
            assert!(agent.stderr().contains("certificate"), "{}", agent.stderr());
        } else {
            delivered += lines;
            deliver(&cfg, &loki, delivered);
        }
    }
    assert_eq!(loki.entry_count(), delivered);
}

#[test]
fn an_untrusted_server_is_not_sent_anything() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::builder().tls(TlsOptions::generate()).start();
    append(&dir.path().join("x.log"), numbered("x", 0, 5));
    let cfg = shipping_config(dir.path(), &[client(&loki.url(), "")], 0);
    refused_for_its_certificate(&cfg, &loki);
    assert_eq!(
        position_of(
            &dir.path().join("positions.yaml"),
            &dir.path().join("x.log")
        )
        .unwrap_or(0),
        0
    );
}

#[test]
fn an_outage_pauses_reading_keeps_memory_bounded_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = free_port();
    let url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let file = dir.path().join("big.log");
    // 40 MB waiting while Loki is down.
    let line = "x".repeat(190);
    let mut text = String::with_capacity(41 << 20);
    let count = 200_000;
    for i in 0..count {
        text.push_str(&format!("{i:08} {line}\n"));
    }
    append(&file, &text);
    let size = std::fs::metadata(&file).unwrap().len();
    let cfg = shipping_config(
        dir.path(),
        &[client(
            &url,
            "backoff_config: {min_period: 50ms, max_period: 200ms}",
        )],
        http,
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_for_stderr("push failed", SOON);
    std::thread::sleep(Duration::from_secs(2));
    let read = metric_value(&metrics(http), "logferry_read_bytes_total").unwrap_or(f64::MAX);
    assert!(
        read < (size / 3) as f64,
        "the tailer kept reading while Loki was down: {read} of {size} bytes"
    );
    let (_, peak_kib) = agent.rss_kib().unwrap();
    assert!(
        peak_kib < 64 * 1024,
        "memory grew while Loki was down: {peak_kib} KiB"
    );
    assert_eq!(
        position_of(&dir.path().join("positions.yaml"), &file).unwrap_or(0),
        0
    );
    // Loki comes up: everything arrives, once.
    let loki = Receiver::builder().port(port).count_only(false).start();
    assert!(
        loki.wait_for_entries(count, LONG),
        "got {} of {count}",
        loki.entry_count()
    );
    agent.stop();
    let got = lines_of(&loki, &file);
    assert_eq!(got.len(), count);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, l)| l.starts_with(&format!("{i:08} "))),
        "out of order or duplicated"
    );
    assert_eq!(
        position_of(&dir.path().join("positions.yaml"), &file),
        Some(size)
    );
}

#[test]
fn rate_limits_and_server_errors_are_retried_until_delivered() {
    for status in [429, 500, 503] {
        let dir = tempfile::tempdir().unwrap();
        let loki = Receiver::builder()
            .behavior(Behavior::FailNext(4, status))
            .start();
        let file = dir.path().join("x.log");
        append(&file, numbered("x", 0, 100));
        let cfg = shipping_config(
            dir.path(),
            &[client(
                &loki.url(),
                "backoff_config: {min_period: 20ms, max_period: 100ms}",
            )],
            0,
        );
        let mut agent = Agent::start(&cfg);
        assert!(loki.wait_for_entries(100, SOON), "status {status}");
        agent.stop();
        assert_eq!(
            lines_of(&loki, &file),
            numbered_lines("x", 0, 100),
            "status {status}"
        );
        let statuses: Vec<Option<u16>> = loki.requests().iter().map(|r| r.status).collect();
        assert_eq!(&statuses[..4], &[Some(status); 4]);
        assert!(statuses[4..].iter().all(|s| *s == Some(204)));
    }
}

#[test]
fn dropped_connections_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::builder()
        .behavior(Behavior::DropConnection)
        .start();
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 50));
    let cfg = shipping_config(
        dir.path(),
        &[client(
            &loki.url(),
            "backoff_config: {min_period: 20ms, max_period: 100ms}",
        )],
        0,
    );
    let mut agent = Agent::start(&cfg);
    assert!(wait_until(SOON, || loki.stats().dropped_connections >= 2));
    loki.set_behavior(Behavior::Accept);
    assert!(loki.wait_for_entries(50, SOON));
    agent.stop();
    assert_eq!(lines_of(&loki, &file), numbered_lines("x", 0, 50));
}

#[test]
fn a_rejected_batch_is_dropped_counted_and_tailing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let loki = Receiver::builder()
        .behavior(Behavior::Status(400, "entry too far behind".into()))
        .start();
    let file = dir.path().join("x.log");
    append(&file, numbered("old", 0, 30));
    let cfg = shipping_config(dir.path(), &[client(&loki.url(), "")], http);
    let mut agent = Agent::start(&cfg);
    agent.wait_for_stderr("entry too far behind", SOON);
    let positions = dir.path().join("positions.yaml");
    let first = std::fs::metadata(&file).unwrap().len();
    assert!(
        wait_until(SOON, || position_of(&positions, &file) == Some(first)),
        "position did not move past the dropped batch"
    );
    loki.set_behavior(Behavior::Accept);
    append(&file, numbered("new", 0, 20));
    assert!(loki.wait_for_entries(20, SOON));
    let text = metrics(http);
    let dropped =
        metric_value(&text, "logferry_dropped_entries_total{host=\"127.0.0.1:").unwrap_or(0.0);
    assert_eq!(dropped, 30.0, "{text}");
    assert!(text.contains("reason=\"http_400\""));
    agent.stop();
    assert_eq!(lines_of(&loki, &file), numbered_lines("new", 0, 20));
}

#[test]
fn max_retries_gives_up_and_drop_rate_limited_drops() {
    for (setting, behavior, reason) in [
        (
            "backoff_config: {min_period: 10ms, max_period: 20ms, max_retries: 3}",
            Behavior::Status(500, "down".into()),
            "max_retries",
        ),
        (
            "drop_rate_limited_batches: true",
            Behavior::Status(429, "slow down".into()),
            "rate_limited",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let loki = Receiver::builder().behavior(behavior).start();
        let file = dir.path().join("x.log");
        append(&file, numbered("x", 0, 10));
        let cfg = shipping_config(dir.path(), &[client(&loki.url(), setting)], http);
        let mut agent = Agent::start(&cfg);
        let series = format!("reason=\"{reason}\"");
        assert!(
            wait_until(SOON, || metrics(http).contains(&series)),
            "{reason}: not counted"
        );
        if reason == "max_retries" {
            assert_eq!(loki.request_count(), 3, "max_retries: 3 means three tries");
        } else {
            assert_eq!(
                loki.request_count(),
                1,
                "a rate-limited batch is not retried"
            );
        }
        agent.stop();
    }
}

#[test]
fn kill_9_while_sending_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::builder()
        .behavior(Behavior::Delay(Duration::from_millis(30)))
        .start();
    let file = dir.path().join("x.log");
    let cfg = shipping_config(dir.path(), &[client(&loki.url(), "batchsize: 2048")], 0);
    append(&file, numbered("x", 0, 3000));
    let mut agent = Agent::start(&cfg);
    assert!(wait_until(SOON, || loki.entry_count() >= 500));
    agent.kill9();
    let before_restart = loki.entry_count();
    append(&file, numbered("x", 3000, 1000));
    loki.set_behavior(Behavior::Accept);
    let mut agent = Agent::start(&cfg);
    assert!(
        wait_until(LONG, || {
            let got = lines_of(&loki, &file);
            numbered_lines("x", 0, 4000).iter().all(|l| got.contains(l))
        }),
        "lines lost after kill -9"
    );
    agent.stop();
    let got = lines_of(&loki, &file);
    let dups = duplicates(&got);
    // Only what was delivered but not yet recorded in the positions file comes again.
    assert!(
        dups.len() <= before_restart,
        "{} duplicates, more than the {before_restart} delivered before the kill",
        dups.len()
    );
}

#[test]
fn positions_wait_for_the_slowest_client() {
    let dir = tempfile::tempdir().unwrap();
    let fast = Receiver::start();
    let slow_port = free_port();
    let slow_url = format!("http://127.0.0.1:{slow_port}/loki/api/v1/push");
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 100));
    let cfg = shipping_config(
        dir.path(),
        &[
            client(&fast.url(), ""),
            client(
                &slow_url,
                "backoff_config: {min_period: 50ms, max_period: 200ms}",
            ),
        ],
        0,
    );
    let mut agent = Agent::start(&cfg);
    assert!(fast.wait_for_entries(100, SOON));
    let positions = dir.path().join("positions.yaml");
    std::thread::sleep(Duration::from_millis(800)); // several position syncs
    assert_eq!(
        position_of(&positions, &file).unwrap_or(0),
        0,
        "the position moved past what one client has not acknowledged"
    );
    let slow = Receiver::builder().port(slow_port).start();
    assert!(slow.wait_for_entries(100, SOON));
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(wait_until(SOON, || position_of(&positions, &file) == Some(size)));
    agent.stop();
    assert_eq!(fast.entry_count(), 100, "the fast client got lines twice");
}

#[test]
fn sigterm_while_loki_is_down_exits_promptly_and_resumes_later() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 50));
    let cfg = shipping_config(
        dir.path(),
        &[client(
            &url,
            "backoff_config: {min_period: 100ms, max_period: 1s}",
        )],
        0,
    );
    let mut agent = Agent::start(&cfg);
    agent.wait_for_stderr("push failed", SOON);
    let asked = std::time::Instant::now();
    agent.sigterm();
    let status = agent
        .wait_exit(Duration::from_secs(15))
        .expect("logferry hung at shutdown while Loki was down");
    assert!(status.success());
    assert!(
        asked.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        position_of(&dir.path().join("positions.yaml"), &file).unwrap_or(0),
        0
    );
    let loki = Receiver::builder().port(port).start();
    let mut agent = Agent::start(&cfg);
    assert!(loki.wait_for_entries(50, SOON));
    agent.stop();
    assert_eq!(lines_of(&loki, &file), numbered_lines("x", 0, 50));
}

#[test]
fn ready_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let loki = Receiver::start();
    // No file matches yet: still ready.
    let cfg = shipping_config(dir.path(), &[client(&loki.url(), "")], http);
    let mut agent = Agent::start(&cfg);
    let ready = http_get(http, "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    append(&dir.path().join("x.log"), numbered("x", 0, 7));
    assert!(loki.wait_for_entries(7, SOON));
    // The client counts a batch once Loki has answered it.
    assert!(wait_until(SOON, || metric_value(
        &metrics(http),
        "logferry_sent_entries_total{"
    ) == Some(7.0)));
    let text = metrics(http);
    for name in [
        "logferry_read_bytes_total{",
        "logferry_read_lines_total{",
        "logferry_files_active ",
        "logferry_sent_entries_total{",
        "logferry_sent_bytes_total{",
        "logferry_request_duration_seconds_bucket{",
        "logferry_batch_size_bytes_bucket{",
        "logferry_client_queue_fill_ratio{",
        "logferry_file_lag_bytes{",
        "logferry_positions_write_errors_total ",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    agent.stop();
}
