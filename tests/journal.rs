//! `journal:` jobs against real journal files: systemd's own `systemd-journal-remote` writes
//! them from export-format streams, `journalctl` is the reference reader, and the real binary
//! ships what it reads to the Loki receiver.

mod common;

use common::{Agent, LONG, SOON, duplicates, wait_until};
use loki_receiver::{ReceivedEntry, Receiver};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

type Fields = Vec<(String, Vec<u8>)>;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// An entry at `realtime` with these fields (and the trusted ones journald would add).
fn entry(realtime: u64, fields: &[(&str, &[u8])]) -> Fields {
    let mut out: Fields = vec![
        (
            "__REALTIME_TIMESTAMP".into(),
            realtime.to_string().into_bytes(),
        ),
        (
            "__MONOTONIC_TIMESTAMP".into(),
            (realtime % 1_000_000_000).to_string().into_bytes(),
        ),
        (
            "_BOOT_ID".into(),
            b"0123456789abcdef0123456789abcdef".to_vec(),
        ),
        ("_HOSTNAME".into(), b"testhost".to_vec()),
    ];
    out.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_vec())));
    out
}

/// `count` entries of unit `unit` with MESSAGE `<prefix> <n>`, one µs apart from `start`.
fn numbered(prefix: &str, unit: &str, from: usize, count: usize, start: u64) -> Vec<Fields> {
    (from..from + count)
        .map(|n| {
            let message = format!("{prefix} {n}");
            entry(
                start + n as u64,
                &[
                    ("_SYSTEMD_UNIT", unit.as_bytes()),
                    ("PRIORITY", b"6"),
                    ("MESSAGE", message.as_bytes()),
                ],
            )
        })
        .collect()
}

/// The export format (systemd's JOURNAL_EXPORT_FORMATS): binary-safe fields where needed.
fn export(entries: &[Fields]) -> Vec<u8> {
    let mut out = Vec::new();
    for fields in entries {
        for (name, value) in fields {
            let text =
                value.iter().all(|&b| b >= 0x20 && b != 0x7f) && std::str::from_utf8(value).is_ok();
            if text {
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(value);
            } else {
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
            }
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// Appends `entries` to the journal file `file` (created if missing), as systemd writes it.
fn write_journal(file: &Path, entries: &[Fields]) {
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote (Debian package systemd-journal-remote) is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&export(entries))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "systemd-journal-remote failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `journalctl --directory=DIR -o export` reads: each entry's fields, in order.
fn journalctl(dir: &Path, extra: &[&str]) -> Vec<Fields> {
    let out = Command::new("journalctl")
        .arg(format!("--directory={}", dir.display()))
        .args(["-o", "export", "--no-pager"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "journalctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = BufReader::new(&out.stdout[..]);
    let mut entries = Vec::new();
    let mut current: Fields = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.is_empty() {
            entries.push(std::mem::take(&mut current));
            continue;
        }
        match line.iter().position(|&b| b == b'=') {
            Some(eq) => current.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                line[eq + 1..].to_vec(),
            )),
            None => {
                let mut len = [0u8; 8];
                reader.read_exact(&mut len).unwrap();
                let mut value = vec![0u8; u64::from_le_bytes(len) as usize];
                reader.read_exact(&mut value).unwrap();
                let mut newline = [0u8; 1];
                reader.read_exact(&mut newline).unwrap();
                current.push((String::from_utf8_lossy(&line).into_owned(), value));
            }
        }
    }
    if !current.is_empty() {
        entries.push(current);
    }
    entries
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The entry's fields as the JSON line carries them: addressing fields (`__CURSOR`, …) left
/// out, values as text, the last of a repeated field.
fn as_json_fields(fields: &Fields) -> BTreeMap<String, String> {
    fields
        .iter()
        .filter(|(n, _)| !n.starts_with("__"))
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// A config with one journal job `sys` reading `dir/journal`, shipping to `loki`.
/// Starts logferry with the default journal job on `dir` and waits until Loki has `entries`.
fn start_default_job(dir: &Path, loki: &Receiver, entries: usize) -> (PathBuf, Agent) {
    let cfg = config(dir, loki, "", "");
    let agent = Agent::start(&cfg);
    assert!(
        loki.wait_for_entries(entries, SOON),
        "{}",
        agent.tail_of_stderr()
    );
    (cfg, agent)
}

fn config(dir: &Path, loki: &Receiver, journal: &str, more: &str) -> PathBuf {
    let yaml = format!(
        "server:\n  http_listen_port: 0\npositions:\n  filename: '{}'\n  sync_period: 200ms\nclients:\n- url: {}\n  batchwait: 100ms\nscrape_configs:\n- job_name: sys\n  journal:\n    path: '{}'\n    labels: {{job: systemd}}\n{journal}{more}",
        dir.join("positions.yaml").display(),
        loki.url(),
        dir.join("journal").display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn journal_dir(dir: &Path) -> PathBuf {
    let journal = dir.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    journal
}

fn lines(loki: &Receiver) -> Vec<String> {
    loki.entries().into_iter().map(|e| e.line).collect()
}

fn messages(entries: &[Fields]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(field(e, "MESSAGE").unwrap_or_default()).into_owned())
        .collect()
}

fn saved_cursor(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("positions.yaml")).ok()?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    doc.get("cursors")?
        .get("cursor-sys")?
        .as_str()
        .map(String::from)
}

#[test]
fn every_field_of_thousands_of_entries_equals_journalctls() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    let start = now_us() - 60_000_000;
    let big = "a compressible field ".repeat(2000);
    let entries: Vec<Fields> = (0..3000)
        .map(|n| {
            let message = format!("entry {n}");
            let multi = format!("first line {n}\nsecond line\n\tthird, indented");
            let binary = [0u8, 1, 2, 0xff, 0xfe, b'\n', n as u8];
            let mut fields: Vec<(&str, &[u8])> = vec![
                ("_SYSTEMD_UNIT", b"app.service"),
                ("PRIORITY", b"5"),
                ("SYSLOG_IDENTIFIER", b"app"),
            ];
            match n % 4 {
                0 => fields.push(("MESSAGE", message.as_bytes())),
                1 => fields.push(("MESSAGE", multi.as_bytes())),
                2 => {
                    fields.push(("MESSAGE", message.as_bytes()));
                    fields.push(("BLOB", &binary));
                }
                _ => {
                    fields.push(("MESSAGE", message.as_bytes()));
                    fields.push(("BIG", big.as_bytes()));
                }
            }
            entry(start + n as u64 * 10, &fields)
        })
        .collect();
    write_journal(&journal.join("system.journal"), &entries);
    let header = Command::new("journalctl")
        .arg(format!("--directory={}", journal.display()))
        .arg("--header")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&header.stdout).contains("COMPRESSED"),
        "the test file should hold compressed fields"
    );
    let reference = journalctl(&journal, &[]);
    assert_eq!(reference.len(), 3000);

    let loki = Receiver::start();
    let cfg = config(dir.path(), &loki, "    json: true\n", "");
    let mut agent = Agent::start(&cfg);
    assert!(
        loki.wait_for_entries(3000, LONG),
        "got {} of 3000; stderr:\n{}",
        loki.entry_count(),
        agent.tail_of_stderr()
    );
    agent.stop();
    let got = loki.entries();
    assert_eq!(got.len(), 3000, "each entry once");
    for (n, (received, expected)) in got.iter().zip(&reference).enumerate() {
        let fields: BTreeMap<String, String> = serde_json::from_str(&received.line)
            .unwrap_or_else(|e| panic!("entry {n}: not a JSON object ({e}): {}", received.line));
        assert_eq!(fields, as_json_fields(expected), "entry {n}");
        let realtime: i64 =
            String::from_utf8_lossy(field(expected, "__REALTIME_TIMESTAMP").unwrap())
                .parse()
                .unwrap();
        assert_eq!(
            received.timestamp_ns,
            realtime * 1000,
            "entry {n}: timestamp"
        );
        assert_eq!(received.label("job"), Some("systemd"));
    }
    // The cursor recorded is the last entry's: a restart reads nothing again.
    assert!(saved_cursor(dir.path()).is_some());
    let mut agent = Agent::start(&cfg);
    write_journal(
        &journal.join("system.journal"),
        &numbered("after", "app.service", 0, 1, now_us()),
    );
    assert!(loki.wait_for_entries(3001, SOON));
    agent.stop();
    assert_eq!(
        loki.entry_count(),
        3001,
        "nothing read twice after a clean stop"
    );
}

#[test]
fn lines_labels_priorities_and_relabeling_follow_promtail() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    let start = now_us() - 10_000_000;
    let entries = vec![
        entry(
            start,
            &[
                ("_SYSTEMD_UNIT", b"ssh.service"),
                ("PRIORITY", b"3"),
                ("MESSAGE", b"one\ntwo lines"),
            ],
        ),
        entry(
            start + 1,
            &[
                ("_SYSTEMD_UNIT", b"noisy.service"),
                ("PRIORITY", b"6"),
                ("MESSAGE", b"dropped by relabeling"),
            ],
        ),
        entry(
            start + 2,
            &[("_SYSTEMD_UNIT", b"cron.service"), ("PRIORITY", b"7")],
        ),
        entry(
            start + 3,
            &[
                ("_SYSTEMD_UNIT", b"cron.service"),
                ("PRIORITY", b"4"),
                ("SYSLOG_IDENTIFIER", b"CRON"),
                ("MESSAGE", b"last"),
            ],
        ),
    ];
    write_journal(&journal.join("system.journal"), &entries);
    let loki = Receiver::start();
    let relabel = "  relabel_configs:\n  - source_labels: [__journal__systemd_unit]\n    regex: 'noisy.*'\n    action: drop\n  - source_labels: [__journal__systemd_unit]\n    target_label: unit\n  - source_labels: [__journal_priority_keyword]\n    target_label: level\n  - source_labels: [__journal_syslog_identifier]\n    target_label: ident\n  - source_labels: [__journal__hostname]\n    target_label: host\n";
    let cfg = config(dir.path(), &loki, "", relabel);
    let mut agent = Agent::start(&cfg);
    assert!(loki.wait_for_entries(2, SOON), "{}", agent.tail_of_stderr());
    // The last entry is read after the one without MESSAGE: that one was skipped, not stuck.
    agent.stop();
    let got: Vec<ReceivedEntry> = loki.entries();
    let summary: Vec<(String, BTreeMap<String, String>)> = got
        .iter()
        .map(|e| (e.line.clone(), e.labels.clone()))
        .collect();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        summary,
        vec![
            (
                "one\ntwo lines".to_string(),
                labels(&[
                    ("host", "testhost"),
                    ("job", "systemd"),
                    ("level", "error"),
                    ("unit", "ssh.service")
                ])
            ),
            (
                "last".to_string(),
                labels(&[
                    ("host", "testhost"),
                    ("ident", "CRON"),
                    ("job", "systemd"),
                    ("level", "warning"),
                    ("unit", "cron.service")
                ])
            ),
        ]
    );
}

#[test]
fn follows_appends_and_a_second_file_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    let first = journal.join("system.journal");
    write_journal(
        &first,
        &numbered("a", "x.service", 0, 100, now_us() - 5_000_000),
    );
    let loki = Receiver::start();
    let (_, mut agent) = start_default_job(dir.path(), &loki, 100);
    for round in 1..4 {
        write_journal(
            &first,
            &numbered("a", "x.service", round * 100, 100, now_us()),
        );
        assert!(
            loki.wait_for_entries((round + 1) * 100, SOON),
            "appended round {round}"
        );
    }
    // A rotated journal: the next entries go to a new file.
    write_journal(
        &journal.join("system@0002.journal"),
        &numbered("b", "x.service", 0, 200, now_us()),
    );
    assert!(
        loki.wait_for_entries(600, SOON),
        "{}",
        agent.tail_of_stderr()
    );
    agent.stop();
    assert_eq!(lines(&loki), messages(&journalctl(&journal, &[])));
    assert_eq!(loki.entry_count(), 600);
}

#[test]
fn matches_and_max_age_choose_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    let now = now_us();
    let mut entries = numbered("old", "a.service", 0, 50, now - 3 * 3600 * 1_000_000);
    entries.extend(numbered("new-a", "a.service", 0, 50, now - 60_000_000));
    entries.extend(numbered("new-b", "b.service", 0, 50, now - 30_000_000));
    write_journal(&journal.join("system.journal"), &entries);
    let loki = Receiver::start();
    let cfg = config(
        dir.path(),
        &loki,
        "    max_age: 1h\n    matches: _SYSTEMD_UNIT=a.service PRIORITY=6\n",
        "",
    );
    let mut agent = Agent::start(&cfg);
    assert!(
        loki.wait_for_entries(50, SOON),
        "{}",
        agent.tail_of_stderr()
    );
    write_journal(
        &journal.join("system.journal"),
        &numbered("late-b", "b.service", 0, 5, now_us()),
    );
    write_journal(
        &journal.join("system.journal"),
        &numbered("late-a", "a.service", 0, 5, now_us()),
    );
    assert!(loki.wait_for_entries(55, SOON));
    agent.stop();
    let since = format!("@{}", (now - 3600 * 1_000_000) / 1_000_000);
    let reference = journalctl(
        &journal,
        &["_SYSTEMD_UNIT=a.service", "PRIORITY=6", "--since", &since],
    );
    assert_eq!(reference.len(), 55);
    assert_eq!(lines(&loki), messages(&reference));
}

#[test]
fn the_cursor_resumes_after_a_restart_and_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    let file = journal.join("system.journal");
    write_journal(
        &file,
        &numbered("x", "x.service", 0, 2000, now_us() - 60_000_000),
    );
    let loki = Receiver::start();
    let cfg = config(dir.path(), &loki, "", "");
    let mut agent = Agent::start(&cfg);
    assert!(loki.wait_for_entries(2000, LONG));
    agent.stop();
    assert!(saved_cursor(dir.path()).is_some(), "a cursor is saved");

    write_journal(
        &file,
        &numbered("x", "x.service", 2000, 3000, now_us() - 1_000_000),
    );
    let mut agent = Agent::start(&cfg);
    assert!(wait_until(LONG, || loki.entry_count() >= 2500));
    agent.kill9();
    let before_restart = loki.entry_count() - 2000;
    write_journal(&file, &numbered("x", "x.service", 5000, 500, now_us()));
    let mut agent = Agent::start(&cfg);
    let expected = messages(&journalctl(&journal, &[]));
    assert_eq!(expected.len(), 5500);
    assert!(
        wait_until(LONG, || {
            let got = lines(&loki);
            expected.iter().all(|l| got.contains(l))
        }),
        "entries lost after kill -9"
    );
    agent.stop();
    let got = lines(&loki);
    let dups = duplicates(&got);
    assert!(
        dups.iter().all(|d| {
            let n: usize = d.trim_start_matches("x ").parse().unwrap();
            (2000..5000).contains(&n)
        }),
        "only what was read after the kill's last acknowledged cursor comes again: {dups:?}"
    );
    assert!(
        dups.len() <= before_restart,
        "{} duplicates, more than the {before_restart} delivered before the kill",
        dups.len()
    );
}

#[test]
fn a_promtail_positions_file_resumes_from_its_journal_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    write_journal(
        &journal.join("system.journal"),
        &numbered("p", "x.service", 0, 100, now_us() - 60_000_000),
    );
    let reference = journalctl(&journal, &[]);
    let cursor = String::from_utf8(field(&reference[49], "__CURSOR").unwrap().to_vec()).unwrap();
    assert!(cursor.starts_with("s="), "a systemd cursor: {cursor}");
    std::fs::write(
        dir.path().join("positions.yaml"),
        format!("positions:\n  cursor-sys: \"{cursor}\"\n"),
    )
    .unwrap();
    let loki = Receiver::start();
    let (_, mut agent) = start_default_job(dir.path(), &loki, 50);
    write_journal(
        &journal.join("system.journal"),
        &numbered("q", "x.service", 0, 1, now_us()),
    );
    assert!(loki.wait_for_entries(51, SOON));
    agent.stop();
    let mut expected = messages(&reference[50..]);
    expected.push("q 0".into());
    assert_eq!(lines(&loki), expected);
}

#[test]
fn a_corrupt_journal_file_is_reported_and_the_others_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    write_journal(
        &journal.join("system.journal"),
        &numbered("good", "x.service", 0, 100, now_us() - 60_000_000),
    );
    // A file cut short in its header, and another one's body overwritten with garbage.
    std::fs::write(journal.join("cut.journal"), b"LPKSH").unwrap();
    let other = journal.join("user-1000.journal");
    write_journal(
        &other,
        &numbered("other", "y.service", 0, 100, now_us() - 50_000_000),
    );
    let mut bytes = std::fs::read(&other).unwrap();
    let len = bytes.len();
    for (i, b) in bytes[4096..len / 2].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&other, &bytes).unwrap();
    let loki = Receiver::start();
    let (_, mut agent) = start_default_job(dir.path(), &loki, 100);
    agent.wait_for_stderr("cut.journal", SOON);
    // Reading goes on: new entries of the good file arrive.
    write_journal(
        &journal.join("system.journal"),
        &numbered("good", "x.service", 100, 50, now_us()),
    );
    assert!(
        wait_until(SOON, || {
            let got = lines(&loki);
            (0..150).all(|n| got.contains(&format!("good {n}")))
        }),
        "{}",
        agent.tail_of_stderr()
    );
    agent.stop();
    let got = lines(&loki);
    assert!(duplicates(&got).is_empty(), "{:?}", duplicates(&got));
    let warnings = agent.stderr().matches("cut.journal").count();
    assert_eq!(
        warnings,
        1,
        "reported once, not at every look:\n{}",
        agent.stderr()
    );
}

#[test]
fn a_reload_keeps_an_unchanged_job_and_restarts_a_changed_one_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    let file = journal.join("system.journal");
    write_journal(
        &file,
        &numbered("r", "x.service", 0, 100, now_us() - 60_000_000),
    );
    let loki = Receiver::start();
    let (cfg, mut agent) = start_default_job(dir.path(), &loki, 100);
    let reloads = |agent: &Agent| agent.stderr().matches("config reloaded").count();

    // The same config again: the job goes on as it was.
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(agent.pid(), libc::SIGHUP) };
    assert!(wait_until(SOON, || reloads(&agent) == 1));
    write_journal(&file, &numbered("r", "x.service", 100, 50, now_us()));
    assert!(loki.wait_for_entries(150, SOON));

    // New labels: the job restarts, after the acknowledged cursor, with them.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("{job: systemd}", "{job: changed}")).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(agent.pid(), libc::SIGHUP) };
    assert!(wait_until(SOON, || reloads(&agent) == 2));
    write_journal(&file, &numbered("r", "x.service", 150, 50, now_us()));
    assert!(
        loki.wait_for_entries(200, SOON),
        "{}",
        agent.tail_of_stderr()
    );
    agent.stop();
    let got = loki.entries();
    assert_eq!(got.len(), 200, "nothing lost or read twice across reloads");
    let jobs: Vec<&str> = got.iter().map(|e| e.label("job").unwrap_or("")).collect();
    assert!(jobs[..150].iter().all(|j| *j == "systemd"));
    assert!(jobs[150..].iter().all(|j| *j == "changed"), "{jobs:?}");
    assert_eq!(lines(&loki), messages(&journalctl(&journal, &[])));
}

/// The job `sys` as `/api/v1/targets` shows it.
fn journal_row(http: u16) -> serde_json::Value {
    let page = common::http_get(http, "/api/v1/targets");
    let body = page.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    doc["journals"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["job"] == "sys"))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn targets_and_metrics_show_each_journal_jobs_progress_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_dir(dir.path());
    // 299 entries from ten minutes ago, and one from now.
    let now = now_us();
    let mut entries = numbered("old", "x.service", 0, 299, now - 600_000_000);
    entries.extend(numbered("new", "x.service", 299, 1, now - 299));
    write_journal(&journal.join("system.journal"), &entries);
    let loki = Receiver::builder()
        .behavior(loki_receiver::Behavior::Status(
            503,
            "ingesters down".into(),
        ))
        .start();
    let http = common::free_port();
    let cfg = config(dir.path(), &loki, "", "");
    let yaml = std::fs::read_to_string(&cfg).unwrap().replacen(
        "http_listen_port: 0",
        &format!("http_listen_port: {http}"),
        1,
    );
    std::fs::write(&cfg, yaml).unwrap();
    let mut agent = Agent::start(&cfg);

    // Everything read, nothing acknowledged while Loki is down.
    assert!(
        wait_until(SOON, || journal_row(http)["entries_read"] == 300),
        "{}; {}",
        journal_row(http),
        agent.tail_of_stderr()
    );
    let row = journal_row(http);
    assert_eq!(row["paths"][0], journal.display().to_string(), "{row}");
    assert_eq!(row["cursor"], serde_json::Value::Null, "{row}");
    assert_eq!(row["lag_entries"], 300, "{row}");
    let lag = row["lag_seconds"].as_f64().unwrap_or_default();
    assert!((590.0..700.0).contains(&lag), "{row}");
    let series = |name: &str| {
        common::metric_value(&common::metrics(http), &format!("{name}{{job=\"sys\"}}"))
    };
    assert_eq!(series("logferry_journal_entries_read_total"), Some(300.0));
    assert!(
        wait_until(SOON, || series("logferry_journal_lag_entries")
            == Some(300.0)),
        "{}",
        common::metrics(http)
    );
    let lag = series("logferry_journal_lag_seconds").unwrap_or_default();
    assert!((590.0..700.0).contains(&lag), "{lag}");
    let html = common::http_get(http, "/targets");
    assert!(
        html.contains("<h2>Journal</h2>") && html.contains(&journal.display().to_string()),
        "{html}"
    );

    // Loki back: everything is acknowledged, and the lag is gone.
    loki.set_behavior(loki_receiver::Behavior::Accept);
    assert!(
        wait_until(SOON, || journal_row(http)["lag_entries"] == 0),
        "{}",
        journal_row(http)
    );
    let row = journal_row(http);
    assert_eq!(row["entries_acknowledged"], 300, "{row}");
    assert_eq!(row["lag_seconds"], 0.0, "{row}");
    assert!(
        wait_until(SOON, || {
            let saved = saved_cursor(dir.path());
            saved.is_some() && journal_row(http)["cursor"].as_str() == saved.as_deref()
        }),
        "{} vs {:?}",
        journal_row(http),
        saved_cursor(dir.path())
    );
    assert!(
        wait_until(SOON, || series("logferry_journal_lag_seconds") == Some(0.0)
            && series("logferry_journal_lag_entries") == Some(0.0)),
        "{}",
        common::metrics(http)
    );

    // A broken file is counted by reason.
    std::fs::write(journal.join("cut.journal"), b"LPKSH").unwrap();
    assert!(
        wait_until(SOON, || common::metric_value(
            &common::metrics(http),
            "logferry_journal_errors_total{job=\"sys\",reason=\"corrupt\"}"
        ) == Some(1.0)),
        "{}",
        common::metrics(http)
    );
    agent.stop();
}
