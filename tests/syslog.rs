//! The syslog listener, driven by real senders: util-linux `logger`, rsyslog forwarding, a TLS
//! client, and raw sockets for floods and malformed input; delivered to the Loki receiver.

mod common;

use common::*;
use loki_receiver::{Behavior, ReceivedEntry, Receiver};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A config with the given jobs (YAML list items) shipping to `loki`.
fn config(dir: &Path, http: u16, loki: &Receiver, jobs: &str) -> PathBuf {
    let yaml = format!(
        "server:\n  http_listen_port: {http}\npositions:\n  filename: {}\nclients:\n  - url: {}\n    batchwait: 100ms\n    backoff_config: {{min_period: 100ms, max_period: 500ms}}\nscrape_configs:\n{jobs}",
        dir.join("positions.yaml").display(),
        loki.url()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A syslog job `name` on 127.0.0.1:`port`, with more keys of `syslog:` (indented by 4).
fn job(name: &str, port: u16, more: &str) -> String {
    format!(
        "- job_name: {name}\n  syslog:\n    listen_address: 127.0.0.1:{port}\n    labels: {{job: {name}}}\n{more}"
    )
}

/// Starts logferry and waits until its `n` listeners are bound.
fn start(cfg: &Path, n: usize) -> Agent {
    let agent = Agent::spawn(command(cfg));
    let ok = wait_until(LONG, || {
        agent.stderr().matches("syslog listener started").count() >= n
    });
    assert!(
        ok,
        "listeners not started; stderr:\n{}",
        agent.tail_of_stderr()
    );
    agent
}

fn entries_of(loki: &Receiver, job: &str) -> Vec<ReceivedEntry> {
    loki.entries()
        .into_iter()
        .filter(|e| e.label("job") == Some(job))
        .collect()
}

fn wait_for_entries(loki: &Receiver, job: &str, n: usize) -> Vec<ReceivedEntry> {
    let ok = wait_until(SOON, || entries_of(loki, job).len() >= n);
    assert!(
        ok,
        "{job}: expected {n} entries, got {:?}",
        entries_of(loki, job)
    );
    entries_of(loki, job)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn logger(args: &[&str]) {
    let status = Command::new("logger").args(args).status().unwrap();
    assert!(status.success(), "logger {args:?} failed");
}

/// Every `__syslog_*` label, renamed by relabeling so that it survives.
const EVERY_LABEL: &str = "  relabel_configs:\n  - action: labelmap\n    regex: __syslog_(.+)\n";

#[test]
fn logger_messages_get_every_label_promtail_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp, udp) = (free_port(), free_port(), free_port());
    let loki = Receiver::start();
    let jobs = format!(
        "{}{EVERY_LABEL}{}    listen_protocol: udp\n{EVERY_LABEL}",
        job("tcp", tcp, "    label_structured_data: true\n"),
        job("udp", udp, ""),
    );
    let mut agent = start(&config(dir.path(), http, &loki, &jobs), 2);
    let port = tcp.to_string();
    logger(&[
        "--tcp",
        "--octet-count",
        "--rfc5424",
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-t",
        "app1",
        "--id=4242",
        "--msgid",
        "ID7",
        "-p",
        "local3.warning",
        "--sd-id",
        "origin@32473",
        "--sd-param",
        "software=\"test\"",
        "five four two four",
    ]);
    logger(&[
        "--tcp",
        "--rfc3164",
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-t",
        "bsdapp",
        "--id=77",
        "-p",
        "daemon.err",
        "three one six four",
    ]);
    let port = udp.to_string();
    logger(&[
        "--udp",
        "--rfc5424",
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-t",
        "udpapp",
        "-p",
        "user.info",
        "over udp",
    ]);
    let tcp_entries = wait_for_entries(&loki, "tcp", 2);
    let udp_entries = wait_for_entries(&loki, "udp", 1);
    let find = |entries: &[ReceivedEntry], line: &str| {
        entries
            .iter()
            .find(|e| e.line == line)
            .unwrap_or_else(|| panic!("{line:?} not in {entries:?}"))
            .clone()
    };
    let host = hostname();
    let rfc5424 = find(&tcp_entries, "five four two four");
    for (label, value) in [
        ("message_severity", "warning"),
        ("message_facility", "local3"),
        ("message_hostname", host.as_str()),
        ("message_app_name", "app1"),
        ("message_proc_id", "4242"),
        ("message_msg_id", "ID7"),
        ("message_sd_origin_32473_software", "test"),
        ("message_sd_timeQuality_tzKnown", "1"),
        ("connection_ip_address", "127.0.0.1"),
    ] {
        assert_eq!(rfc5424.label(label), Some(value), "{label} of {rfc5424:?}");
    }
    assert!(
        rfc5424
            .label("connection_hostname")
            .is_some_and(|h| !h.is_empty()),
        "127.0.0.1 has a name in /etc/hosts: {rfc5424:?}"
    );
    let bsd = find(&tcp_entries, "three one six four");
    for (label, value) in [
        ("message_severity", "error"),
        ("message_facility", "daemon"),
        ("message_hostname", host.as_str()),
        ("message_app_name", "bsdapp"),
        ("message_proc_id", "77"),
    ] {
        assert_eq!(bsd.label(label), Some(value), "{label} of {bsd:?}");
    }
    assert_eq!(bsd.label("message_msg_id"), None);
    let over_udp = find(&udp_entries, "over udp");
    assert_eq!(over_udp.label("message_app_name"), Some("udpapp"));
    assert_eq!(over_udp.label("message_severity"), Some("informational"));
    assert_eq!(over_udp.label("message_facility"), Some("user"));
    assert!(
        over_udp.labels.keys().all(|k| !k.starts_with("message_sd")),
        "structured data is labelled only with label_structured_data: {over_udp:?}"
    );
    let targets = http_get(http, "/api/v1/targets");
    assert!(
        targets.contains(&format!("\"address\": \"127.0.0.1:{tcp}\""))
            && targets.contains("\"messages_received\": 2"),
        "{targets}"
    );
    let page = http_get(http, "/targets");
    assert!(
        page.contains("<h2>Listeners</h2>")
            && page.contains(&format!("<code>127.0.0.1:{tcp}</code>"))
            && page.contains(&format!("<code>127.0.0.1:{udp}</code>")),
        "{page}"
    );
    agent.stop();
}

#[test]
fn unlabelled_internal_labels_are_dropped_and_options_change_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let loki = Receiver::start();
    let jobs = job(
        "opts",
        tcp,
        "    use_incoming_timestamp: true\n    use_rfc5424_message: true\n",
    );
    let mut agent = start(&config(dir.path(), http, &loki, &jobs), 1);
    let message = "<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed";
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    stream.write_all(format!("{message}\n").as_bytes()).unwrap();
    drop(stream);
    let entries = wait_for_entries(&loki, "opts", 1);
    assert_eq!(entries[0].line, message);
    assert_eq!(entries[0].timestamp_ns, 1_065_910_455_003_000_000);
    assert_eq!(
        entries[0].labels.keys().collect::<Vec<_>>(),
        ["job"],
        "__syslog labels are gone after relabeling"
    );
    agent.stop();
}

/// rsyslog running in the foreground with a private config, reading messages from its own
/// socket and forwarding them to `forwards` (omfwd actions).
struct Rsyslog {
    child: std::process::Child,
    socket: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, forwards: &str) -> Rsyslog {
        let socket = dir.join("log.sock");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\")\nmodule(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket=\"{}\")\n{forwards}",
                dir.display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until(SOON, || socket.exists()),
            "rsyslogd did not open its socket"
        );
        Rsyslog { child, socket }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rsyslog_forwards_in_every_framing() {
    let dir = tempfile::tempdir().unwrap();
    let (http, octet, newline, udp) = (free_port(), free_port(), free_port(), free_port());
    let loki = Receiver::start();
    let jobs = format!(
        "{}{EVERY_LABEL}{}{EVERY_LABEL}{}    listen_protocol: udp\n{EVERY_LABEL}",
        job("octet", octet, ""),
        job("newline", newline, ""),
        job("udp", udp, ""),
    );
    let mut agent = start(&config(dir.path(), http, &loki, &jobs), 3);
    let rsyslog = Rsyslog::start(
        dir.path(),
        &format!(
            "action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{octet}\" protocol=\"tcp\" TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n\
             action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{newline}\" protocol=\"tcp\" template=\"RSYSLOG_TraditionalForwardFormat\")\n\
             action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{udp}\" protocol=\"udp\")\n"
        ),
    );
    let socket = rsyslog.socket.display().to_string();
    for i in 0..3 {
        logger(&[
            "-u",
            &socket,
            "-t",
            "relayed",
            "-p",
            "mail.notice",
            &format!("through rsyslog {i}"),
        ]);
    }
    let host = hostname();
    for job in ["octet", "newline", "udp"] {
        let entries = wait_for_entries(&loki, job, 3);
        // rsyslog keeps the space after the tag's colon at the start of MSG in RFC 5424.
        let mut lines: Vec<&str> = entries.iter().map(|e| e.line.trim_start()).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "through rsyslog 0",
                "through rsyslog 1",
                "through rsyslog 2"
            ],
            "{job}"
        );
        for e in &entries {
            assert_eq!(e.label("message_app_name"), Some("relayed"), "{job}: {e:?}");
            assert_eq!(e.label("message_facility"), Some("mail"), "{job}: {e:?}");
            assert_eq!(e.label("message_severity"), Some("notice"), "{job}: {e:?}");
            assert_eq!(
                e.label("message_hostname"),
                Some(host.as_str()),
                "{job}: {e:?}"
            );
        }
    }
    drop(rsyslog);
    agent.stop();
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &str| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("openssl {args}"))
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args}");
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run(&format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca"
    ));
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        run(&format!(
            "req {key} -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ));
        run(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
        ));
    }
}

/// Sends `lines` (each an RFC 5424 message) over TLS, octet-counted; with the client
/// certificate when `identify`. Errors are the handshake's or the write's.
fn send_tls(dir: &Path, port: u16, identify: bool, lines: &[&str]) -> std::io::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if identify {
        let chain = CertificateDer::pem_file_iter(dir.join("client.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    for line in lines {
        tls.write_all(format!("{} {line}", line.len()).as_bytes())?;
    }
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()?;
    // Waits for the server's answer (its close, or its refusal of the certificate).
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).map(|_| ())
}

#[test]
fn tls_with_required_and_optional_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (http, required, optional) = (free_port(), free_port(), free_port());
    let loki = Receiver::start();
    let d = dir.path().display();
    let tls = |auth: &str| {
        format!(
            "    tls_config:\n      cert_file: {d}/server.pem\n      key_file: {d}/server.key\n      ca_file: {d}/ca.pem\n{auth}"
        )
    };
    let jobs = format!(
        "{}{}",
        job("required", required, &tls("")),
        job("optional", optional, &tls("      client_auth: optional\n")),
    );
    let mut agent = start(&config(dir.path(), http, &loki, &jobs), 2);
    let message = |text: &str| format!("<14>1 - h app - - - {text}");
    let _ = send_tls(dir.path(), required, false, &[&message("anonymous")]);
    send_tls(dir.path(), required, true, &[&message("identified")]).unwrap();
    send_tls(
        dir.path(),
        optional,
        false,
        &[&message("anonymous welcome")],
    )
    .unwrap();
    let required_entries = wait_for_entries(&loki, "required", 1);
    wait_for_entries(&loki, "optional", 1);
    // The anonymous message was sent first: had it been let in, it would be there by now.
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = entries_of(&loki, "required")
        .into_iter()
        .map(|e| e.line)
        .collect();
    assert_eq!(lines, ["identified"], "{required_entries:?}");
    assert!(
        agent.stderr().contains("TLS handshake failed"),
        "{}",
        agent.tail_of_stderr()
    );
    agent.stop();
}

/// `count` octet-counted RFC 5424 messages `flood-<id>-<i>`.
fn flood_payload(id: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let message = format!("<14>1 - sender app - - - flood-{id}-{i}");
        out.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
    }
    out
}

#[test]
fn a_flood_over_tcp_while_loki_is_down_all_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let loki = Receiver::builder()
        .behavior(Behavior::Status(503, "ingesters down".into()))
        .start();
    let mut agent = start(&config(dir.path(), http, &loki, &job("flood", tcp, "")), 1);
    const SENDERS: usize = 4;
    const EACH: usize = 25_000;
    let senders: Vec<_> = (0..SENDERS)
        .map(|id| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
                stream.write_all(&flood_payload(id, EACH)).unwrap();
            })
        })
        .collect();
    assert!(
        wait_until(SOON, || loki.request_count() >= 3),
        "logferry did not try to push"
    );
    loki.set_behavior(Behavior::Accept);
    for sender in senders {
        sender.join().unwrap();
    }
    let total = SENDERS * EACH;
    let ok = wait_until(LONG * 2, || loki.entry_count() >= total);
    let lines: std::collections::HashSet<String> = loki.lines().into_iter().collect();
    assert!(ok, "{} of {total} arrived", lines.len());
    for id in 0..SENDERS {
        for i in 0..EACH {
            let line = format!("flood-{id}-{i}");
            assert!(lines.contains(&line), "{line} is missing");
        }
    }
    agent.stop();
}

/// A config whose outputs get `seconds` to deliver what they hold at shutdown.
fn config_with_deadline(
    dir: &Path,
    http: u16,
    loki: &Receiver,
    jobs: &str,
    seconds: u32,
) -> PathBuf {
    let path = config(dir, http, loki, jobs);
    let yaml = std::fs::read_to_string(&path).unwrap().replacen(
        "server:\n",
        &format!("server:\n  graceful_shutdown_timeout: {seconds}s\n"),
        1,
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Sends `count` messages `held-<i>` over one connection and waits until the listener has
/// taken them all.
fn send_and_wait_received(http: u16, tcp: u16, count: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    for i in 0..count {
        stream
            .write_all(format!("<14>1 - h app - - - held-{i}\n").as_bytes())
            .unwrap();
    }
    drop(stream);
    let received = format!("\"messages_received\": {count}");
    assert!(
        wait_until(SOON, || http_get(http, "/api/v1/targets")
            .contains(&received)),
        "{}",
        http_get(http, "/api/v1/targets")
    );
}

#[test]
fn messages_held_at_shutdown_are_delivered_within_the_shutdown_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let loki = Receiver::builder()
        .behavior(Behavior::Status(503, "ingesters down".into()))
        .start();
    let cfg = config_with_deadline(dir.path(), http, &loki, &job("held", tcp, ""), 30);
    let mut agent = start(&cfg, 1);
    const COUNT: usize = 2_000;
    send_and_wait_received(http, tcp, COUNT);
    assert!(wait_until(SOON, || loki.request_count() >= 2));
    agent.sigterm();
    // Loki is still down: logferry waits for it rather than exiting with the messages.
    assert!(
        agent.wait_exit(Duration::from_secs(2)).is_none(),
        "logferry exited with messages undelivered; stderr:\n{}",
        agent.tail_of_stderr()
    );
    loki.set_behavior(Behavior::Accept);
    let status = agent.wait_exit(LONG);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; stderr:\n{}",
        agent.tail_of_stderr()
    );
    let lines: std::collections::HashSet<String> = loki.lines().into_iter().collect();
    for i in 0..COUNT {
        assert!(lines.contains(&format!("held-{i}")), "held-{i} was lost");
    }
    assert_eq!(loki.entry_count(), COUNT, "nothing is sent twice");
}

#[test]
fn messages_still_undelivered_at_the_deadline_are_reported_and_logferry_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let loki = Receiver::builder().behavior(Behavior::Stall).start();
    let cfg = config_with_deadline(dir.path(), http, &loki, &job("lost", tcp, ""), 2);
    let mut agent = start(&cfg, 1);
    send_and_wait_received(http, tcp, 500);
    assert!(wait_until(SOON, || loki.request_count() >= 1));
    agent.sigterm();
    // The 2 s deadline, the listener's hand-over and the outputs' abort, with room to spare.
    let status = agent.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; stderr:\n{}",
        agent.tail_of_stderr()
    );
    let stderr = agent.stderr();
    assert!(
        stderr.contains("shutdown deadline reached"),
        "{}",
        agent.tail_of_stderr()
    );
    assert_eq!(loki.entry_count(), 0);
}

#[test]
fn malformed_and_too_long_messages_are_counted_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let loki = Receiver::start();
    let cfg = config(
        dir.path(),
        http,
        &loki,
        &job("bad", tcp, "    max_message_length: 200\n"),
    );
    let mut agent = start(&cfg, 1);
    // One message per line.
    let long = format!("<13>Dec  3 04:31:00 h app: {}", "x".repeat(300));
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    stream
        .write_all(
            format!(
                "<13>Dec  3 04:31:00 h app: line one\nthis is not syslog\n{long}\n<13>1 2026-02-30T00:00:00Z h a - - - bad date\n<13>Dec  3 04:31:00 h app: line two\n"
            )
            .as_bytes(),
        )
        .unwrap();
    drop(stream);
    // Octet counted.
    let counted = |m: &str| format!("{} {m}", m.len());
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let payload = [
        counted("<14>1 - h a - - - counted one"),
        counted("garbage"),
        counted(&format!("<14>1 - h a - - - {}", "y".repeat(300))),
        counted("<14>1 - h a - - -"),
        counted("<14>1 - h a - - - counted two"),
    ]
    .concat();
    stream.write_all(payload.as_bytes()).unwrap();
    drop(stream);
    let entries = wait_for_entries(&loki, "bad", 4);
    let mut lines: Vec<String> = entries.into_iter().map(|e| e.line).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["counted one", "counted two", "line one", "line two"]
    );
    let m = metrics(http);
    let value = |reason: &str| {
        metric_value(
            &m,
            &format!("logferry_dropped_entries_total{{host=\"\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(value("syslog_malformed"), Some(3.0), "{m}");
    assert_eq!(value("syslog_too_long"), Some(2.0), "{m}");
    assert_eq!(value("syslog_empty_message"), Some(1.0), "{m}");
    agent.stop();
}

#[test]
fn an_idle_client_is_disconnected_after_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let loki = Receiver::start();
    let cfg = config(
        dir.path(),
        http,
        &loki,
        &job("idle", tcp, "    idle_timeout: 1s\n"),
    );
    let mut agent = start(&cfg, 1);
    let mut silent = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    assert!(wait_until(SOON, || http_get(http, "/api/v1/targets")
        .contains("\"open_connections\": 1")));
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    let started = std::time::Instant::now();
    let read = silent.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err() && started.elapsed() < Duration::from_secs(19),
        "the listener kept an idle connection open: {read:?}"
    );
    assert!(wait_until(SOON, || http_get(http, "/api/v1/targets")
        .contains("\"open_connections\": 0")));
    // A client that talks is not disconnected in between messages shorter than the timeout.
    let mut talking = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    for i in 0..4 {
        talking
            .write_all(format!("<14>1 - h a - - - alive {i}\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for_entries(&loki, "idle", 4);
    agent.stop();
}

#[test]
fn config_mistakes_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let cfg = config(
        dir.path(),
        free_port(),
        &loki,
        &job("typo", free_port(), "    idle_timeot: 5s\n"),
    );
    let out = command(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("config.yaml:14:5: scrape_configs[0].syslog.idle_timeot: unknown field"),
        "{err}"
    );
    let cfg = config(
        dir.path(),
        free_port(),
        &loki,
        &format!(
            "{}    listen_protocol: udp\n    tls_config: {{cert_file: a, key_file: b}}\n",
            job("udp_tls", free_port(), "")
        ),
    );
    let out = command(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("scrape_configs[0].syslog.tls_config: TLS needs listen_protocol: tcp"),
        "{err}"
    );
    // A port already taken fails the start, naming the job and the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config(dir.path(), free_port(), &loki, &job("busy", port, ""));
    let out = command(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("job busy: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn a_reload_restarts_a_changed_listener_on_the_same_port_and_keeps_an_unchanged_one() {
    let dir = tempfile::tempdir().unwrap();
    let (http, changed, kept) = (free_port(), free_port(), free_port());
    let loki = Receiver::start();
    let jobs = |label: &str| {
        format!(
            "{}    labels: {{job: changed, version: {label}}}\n{}",
            job("changed", changed, "").replace("    labels: {job: changed}\n", ""),
            job("kept", kept, "")
        )
    };
    let cfg = config(dir.path(), http, &loki, &jobs("one"));
    let mut agent = start(&cfg, 2);
    // A connection to the unchanged listener, open across the reload.
    let mut open = TcpStream::connect(("127.0.0.1", kept)).unwrap();
    open.write_all(b"<14>1 - h a - - - before\n").unwrap();
    let send = |port: u16, text: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("<14>1 - h a - - - {text}\n").as_bytes())
            .unwrap();
    };
    send(changed, "first");
    wait_for_entries(&loki, "changed", 1);
    wait_for_entries(&loki, "kept", 1);
    config(dir.path(), http, &loki, &jobs("two"));
    // SAFETY: sends SIGHUP to our own child.
    unsafe { libc::kill(agent.pid(), libc::SIGHUP) };
    assert!(
        wait_until(SOON, || {
            agent.stderr().matches("syslog listener started").count() >= 3
        }),
        "{}",
        agent.tail_of_stderr()
    );
    send(changed, "second");
    open.write_all(b"<14>1 - h a - - - after\n").unwrap();
    let entries = wait_for_entries(&loki, "changed", 2);
    let second = entries.iter().find(|e| e.line == "second").unwrap();
    assert_eq!(second.label("version"), Some("two"));
    let kept_lines: Vec<String> = wait_for_entries(&loki, "kept", 2)
        .into_iter()
        .map(|e| e.line)
        .collect();
    assert_eq!(kept_lines, ["before", "after"]);
    assert_eq!(
        agent.stderr().matches("syslog listener started").count(),
        3,
        "the unchanged listener was not restarted"
    );
    agent.stop();
}
