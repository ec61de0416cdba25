//! Packaging, driven for real: the man page against `--help`, the systemd unit through
//! `systemd-analyze`, the shipped configs through `-check-syntax` and `-dry-run`, the Debian
//! package through cargo-deb, lintian and dpkg (install, run as the `logferry` user, reinstall,
//! remove, purge), and the container image through podman (ship to a receiver, restart, continue).
//!
//! Tests that change the system (dpkg, podman) need root. As root they install what they need
//! with apt-get; otherwise, or when an install fails, they print why they skip and pass.

use loki_receiver::Receiver;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logferry");
const UNIT: &str = "packaging/systemd/logferry.service";
const DROP_IN: &str = "packaging/systemd/docker-logs.conf";
const MAN_PAGE: &str = "packaging/logferry.1";
const HOST_CONFIG: &str = "packaging/debian/config.yaml";
const CONTAINER_CONFIG: &str = "packaging/container/config.yaml";
const DAEMONSET: &str = "packaging/kubernetes/daemonset.yaml";
const COMPOSE: &str = "packaging/compose.yaml";
/// The highest exposure `systemd-analyze security` may give the unit (it calls up to 1.9 "OK",
/// from 2.0 "MEDIUM").
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Prints why a test does not run, and returns from it.
macro_rules! skip {
    ($($why:tt)*) => {{
        eprintln!("SKIPPED: {}", format!($($why)*));
        return;
    }};
}

// ---------------------------------------------------------------------------------------------
// Commands

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command to its end with no standard input.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)))
}

/// Runs a command that must succeed; returns its standard output.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cmd
}

/// Whether a program is on PATH, or in the sbin directories a non-login root PATH may lack.
fn have(program: &str) -> bool {
    output(&mut sh(&format!(
        "command -v {program} || test -x /usr/sbin/{program} || test -x /sbin/{program}"
    )))
    .status
    .success()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// apt-get and dpkg take the same lock: one test at a time.
static DPKG: Mutex<()> = Mutex::new(());
static APT_UPDATED: OnceLock<bool> = OnceLock::new();

fn dpkg_lock() -> std::sync::MutexGuard<'static, ()> {
    DPKG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes sure each `(program, Debian package)` is there, installing the missing packages when
/// root. The error says why not.
fn ensure(tools: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "needs {} (apt-get install them, or run as root)",
            missing.join(", ")
        ));
    }
    let _lock = dpkg_lock();
    let updated = *APT_UPDATED.get_or_init(|| {
        output(Command::new("apt-get").args(["update", "-qq"]))
            .status
            .success()
    });
    let out = output(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if !out.status.success() {
        return Err(format!(
            "apt-get install {} failed (apt-get update {}): {}",
            missing.join(" "),
            if updated { "worked" } else { "failed" },
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    match tools.iter().find(|(program, _)| !have(program)) {
        Some((program, package)) => Err(format!(
            "{program} still missing after installing {package}"
        )),
        None => Ok(()),
    }
}

/// Starts a command with standard output piped into a channel, line by line.
struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<Mutex<String>>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(cmd)));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// Collects printed lines until `n` have come (then `settle` longer, to catch extra ones)
    /// or `deadline` passes.
    fn collect(&self, n: usize, deadline: Duration, settle: Duration) -> Vec<String> {
        let mut got = Vec::new();
        let end = Instant::now() + deadline;
        let mut settle_end: Option<Instant> = None;
        loop {
            let until = settle_end.unwrap_or(end).min(end);
            let now = Instant::now();
            if now >= until {
                return got;
            }
            match self.lines.recv_timeout(until - now) {
                Ok(line) => {
                    got.push(line);
                    if got.len() >= n && settle_end.is_none() {
                        settle_end = Some(Instant::now() + settle);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return got,
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, and the exit status within 20 s (SIGKILL after that).
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = output(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.stderr());
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                return (status, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a printed line starts a `-dry-run` entry: an RFC 3339 timestamp and a tab.
fn starts_entry(raw: &str) -> bool {
    let stamp = raw.split('\t').next().unwrap_or_default();
    raw.contains('\t')
        && stamp.len() >= 20
        && stamp.as_bytes()[4] == b'-'
        && stamp.as_bytes()[10] == b'T'
        && stamp[..4].bytes().all(|b| b.is_ascii_digit())
}

/// The line part of a `-dry-run` entry (`timestamp TAB labels TAB line`).
fn dry_run_line(entry: &str) -> (String, String) {
    let mut parts = entry.splitn(3, '\t');
    let _timestamp = parts.next();
    let labels = parts.next().unwrap_or_default().to_string();
    let line = parts
        .next()
        .unwrap_or_else(|| panic!("not a dry-run entry: {entry:?}"))
        .to_string();
    (labels, line)
}

/// A label set as printed (`{a="b", c="d"}`), as a map.
fn label_map(text: &str) -> BTreeMap<String, String> {
    let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut map = BTreeMap::new();
    let mut rest = inner;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let value_and_more = &rest[eq + 2..];
        let mut value = String::new();
        let mut chars = value_and_more.char_indices();
        let mut end = value_and_more.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        map.insert(name, value);
        rest = &value_and_more[end..];
    }
    map
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The part of a Docker `config.v2.json` logferry reads labels from.
const DOCKER_CONFIG_V2: &str = r#"{"ID":"abc","Name":"/shop-web-1","Config":{"Image":"shop/web:1","Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"web"}}}"#;

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn append(path: &Path, text: &str) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn check_syntax(config: &Path, envs: &[(&str, &str)]) {
    let out = output(
        Command::new(BIN)
            .arg("-check-syntax")
            .arg("-config.expand-env=true")
            .arg(format!("-config.file={}", config.display()))
            .envs(envs.iter().copied()),
    );
    assert!(
        out.status.success(),
        "{} is not valid: {}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `GET` over plain HTTP/1.1; the status code, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    BufReader::new(stream).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// The man page

/// Flags named at the start of the man page's OPTIONS entries (`.TP` tags), one dash.
fn man_page_flags(roff: &str) -> BTreeSet<String> {
    let text = roff
        .replace("\\-", "-")
        .replace("\\&", "")
        .replace("\\c", "");
    let mut flags = BTreeSet::new();
    let mut in_options = false;
    let mut tag_next = false;
    for line in text.lines() {
        if line.starts_with(".SH") {
            in_options = line.trim() == ".SH OPTIONS";
            continue;
        }
        if !in_options {
            continue;
        }
        if line.starts_with(".TP") {
            tag_next = true;
            continue;
        }
        if tag_next {
            tag_next = false;
            flags.extend(flags_in(line, "-"));
        }
    }
    flags
}

/// Words starting with `prefix` followed by a letter, cut at the first character that cannot be
/// in a flag name, with the prefix turned into one dash.
fn flags_in(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
        let Some(rest) = word.strip_prefix(prefix) else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == '_')
            .collect();
        found.push(format!("-{name}"));
    }
    found
}

#[test]
fn man_page_describes_exactly_the_flags_of_help() {
    let help = run(Command::new(BIN).arg("--help"));
    let mut from_help: BTreeSet<String> = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        if line.starts_with('-') {
            from_help.extend(flags_in(line, "--"));
            if line.starts_with("-h,") {
                from_help.insert("-h".into());
            }
        }
    }
    assert!(
        from_help.contains("-config.file") && from_help.contains("-help"),
        "could not read the flags of --help:\n{help}"
    );
    let roff = read(MAN_PAGE);
    let documented = man_page_flags(&roff);
    let undocumented: Vec<_> = from_help.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&from_help).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "{MAN_PAGE} is out of sync with `logferry --help`: not described: {undocumented:?}; \
         described but gone: {stale:?}"
    );
    assert!(roff.contains(".SH NAME\nlogferry \\- "), "NAME section");

    // It renders without a warning, when man is there (lintian checks the same).
    if have("man") {
        let out = output(
            Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
                .arg(repo().join(MAN_PAGE))
                .env("LC_ALL", "C.UTF-8")
                .env("MANROFFSEQ", "")
                .env("MANWIDTH", "80"),
        );
        assert!(out.status.success(), "man failed: {out:?}");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "groff warnings:\n{warnings}");
    } else {
        eprintln!("man is not installed: the page's rendering is not checked");
    }
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

/// The unit's `Key=value` lines (comments and blank lines left out).
fn unit_settings(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(String::from)
        .collect()
}

/// `systemd-analyze security --offline=yes` of a unit file: the overall exposure.
fn exposure(unit: &Path) -> (f64, String) {
    let out = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    (score, line.trim().to_string())
}

/// `systemd-analyze verify`: what it printed on standard error.
fn verify(unit: &Path, check_man: bool) -> String {
    let out = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--man={}", if check_man { "yes" } else { "no" }))
            .arg(unit)
            .env("SYSTEMD_LOG_COLOR", "0")
            .env("SYSTEMD_PAGER", ""),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() && stderr.trim().is_empty() {
        return format!("systemd-analyze verify failed ({}) silently", out.status);
    }
    stderr
}

/// A copy of the unit (and optionally the drop-in) in a temporary directory, with ExecStart
/// pointing at `binary`.
fn unit_copy(dir: &Path, binary: &str, unit_text: &str, drop_in: Option<&str>) -> PathBuf {
    let unit = dir.join("logferry.service");
    write(&unit, &unit_text.replace("/usr/bin/logferry", binary));
    if let Some(conf) = drop_in {
        write(&dir.join("logferry.service.d/docker-logs.conf"), conf);
    }
    unit
}

#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let text = read(UNIT);
    let settings = unit_settings(&text);
    for wanted in [
        "Type=notify",
        "ExecStart=/usr/bin/logferry -config.file=/etc/logferry/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=logferry",
        "Group=logferry",
        "SupplementaryGroups=adm",
        "StateDirectory=logferry",
        "StateDirectoryMode=0750",
        "LimitNOFILE=65536",
        "WatchdogSec=30s",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "DevicePolicy=closed",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
        "MemoryDenyWriteExecute=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            settings.iter().any(|s| s == wanted),
            "{UNIT} lacks {wanted:?}"
        );
    }
    assert!(
        !settings.iter().any(|s| s == "IPAddressDeny=any"),
        "Loki may be remote: the unit must not deny every address"
    );
    let drop_in = read(DROP_IN);
    let drop_in_settings = unit_settings(&drop_in);
    for wanted in [
        "[Service]",
        "AmbientCapabilities=CAP_DAC_READ_SEARCH",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
    ] {
        assert!(
            drop_in_settings.iter().any(|s| s == wanted),
            "{DROP_IN} lacks {wanted:?}"
        );
    }

    if let Err(why) = ensure(&[("systemd-analyze", "systemd")]) {
        skip!("systemd-analyze checks: {why}");
    }
    let dir = tempfile::tempdir().unwrap();
    // The unit as it is, but starting the binary under test; the man page is checked by the
    // Debian package test, where it is installed.
    let unit = unit_copy(dir.path(), BIN, &text, None);
    let complaints = verify(&unit, false);
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify {UNIT}:\n{complaints}"
    );
    let (score, line) = exposure(&unit);
    eprintln!("{UNIT}: {line}");
    assert!(score <= MAX_EXPOSURE, "{line}: more than {MAX_EXPOSURE}");

    // With the Docker drop-in too.
    let with_drop_in = tempfile::tempdir().unwrap();
    let unit = unit_copy(with_drop_in.path(), BIN, &text, Some(&drop_in));
    let complaints = verify(&unit, false);
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify with {DROP_IN}:\n{complaints}"
    );
    let (score, line) = exposure(&unit);
    eprintln!("{UNIT} + {DROP_IN}: {line}");
    assert!(score <= MAX_EXPOSURE, "with the drop-in: {line}");
}

// ---------------------------------------------------------------------------------------------
// The shipped configs

/// Runs `binary -dry-run` on `config` until `expected` entries came (and a second more), and
/// returns (labels, line) of each.
fn dry_run(cmd: &mut Command, expected: usize) -> Vec<(String, String)> {
    let running = Running::start(cmd);
    let printed = running.collect(expected, Duration::from_secs(30), Duration::from_secs(1));
    let (status, stderr) = running.stop();
    assert!(
        status.success(),
        "{} exited {status}:\n{stderr}",
        describe(cmd)
    );
    // A line may hold newlines (Docker's `log` keeps its own): what does not start like an entry
    // continues the one before.
    let mut entries: Vec<String> = Vec::new();
    for raw in printed {
        match entries.last_mut() {
            Some(last) if !starts_entry(&raw) => {
                last.push('\n');
                last.push_str(&raw);
            }
            _ => entries.push(raw),
        }
    }
    entries.iter().map(|e| dry_run_line(e)).collect()
}

#[test]
fn host_config_reads_current_logs_and_leaves_rotated_ones() {
    let root = tempfile::tempdir().unwrap();
    let var_log = root.path().join("var/log");
    let current = [
        "syslog",
        "auth.log",
        "dpkg.log",
        "apt/history.log",
        "nginx/x/access.log",
    ];
    let left_out = [
        "lastlog",
        "faillog",
        "syslog.1",
        "syslog.2.gz",
        "apt/history.log.1",
        "apt/history.log.2.xz",
        "nginx/x/access.log.3.zst",
        "nginx/x/error.log.4.bz2",
        "wtmp",
    ];
    for name in current.iter().chain(&left_out) {
        write(&var_log.join(name), &format!("line of {name}\n"));
    }
    check_syntax(&repo().join(HOST_CONFIG), &[]);
    let config = root.path().join("config.yaml");
    write(
        &config,
        &read(HOST_CONFIG)
            .replace("http_listen_port: 9080", "http_listen_port: 0")
            .replace("/var/log", &var_log.display().to_string())
            .replace(
                "/var/lib/logferry",
                &root.path().join("state").display().to_string(),
            )
            // Not this machine's journal: files only.
            .replace(
                "    journal:\n",
                &format!("    journal:\n      path: {}/journal\n", var_log.display()),
            ),
    );
    let entries = dry_run(
        Command::new(BIN)
            .arg("-dry-run")
            .arg(format!("-config.file={}", config.display())),
        current.len(),
    );
    let got: BTreeSet<String> = entries.iter().map(|(_, line)| line.clone()).collect();
    let want: BTreeSet<String> = current.iter().map(|n| format!("line of {n}")).collect();
    assert_eq!(got, want, "the files /etc/logferry/config.yaml reads");
    assert_eq!(
        entries.len(),
        current.len(),
        "each file read once: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|(labels, _)| labels.contains("job=\"varlogs\""))
    );
}

#[test]
fn container_and_kubernetes_configs_are_valid() {
    let dir = tempfile::tempdir().unwrap();

    // The image's config, with and without the environment set.
    check_syntax(&repo().join(CONTAINER_CONFIG), &[]);
    check_syntax(
        &repo().join(CONTAINER_CONFIG),
        &[
            ("LOKI_URL", "https://loki.example.net/loki/api/v1/push"),
            ("LOGFERRY_HTTP_ADDRESS", "127.0.0.1"),
            ("LOGFERRY_HTTP_PORT", "0"),
        ],
    );
    let printed = output(
        Command::new(BIN)
            .args([
                "-check-syntax",
                "-config.expand-env=true",
                "-print-config-stderr",
            ])
            .arg(format!(
                "-config.file={}",
                repo().join(CONTAINER_CONFIG).display()
            )),
    );
    assert!(printed.status.success());

    // The image's globs, under a fake /host: Docker's logs unwrapped and labelled from the
    // container's config.v2.json, the host's current logs; rotated and binary files left out.
    let host = dir.path().join("host");
    write(&host.join("var/log/syslog"), "syslog line\n");
    write(&host.join("var/log/syslog.1"), "rotated\n");
    write(&host.join("var/log/lastlog"), "binary\n");
    let container_dir = host.join("var/lib/docker/containers/abc");
    write(
        &container_dir.join("abc-json.log"),
        "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2026-01-01T00:00:00Z\"}\n",
    );
    write(&container_dir.join("abc-json.log.1"), "rotated\n");
    write(&container_dir.join("config.v2.json"), DOCKER_CONFIG_V2);
    let config = dir.path().join("container.yaml");
    write(
        &config,
        &read(CONTAINER_CONFIG)
            .replace("/host/", &format!("{}/", host.display()))
            .replace(
                "/var/lib/logferry",
                &dir.path().join("state").display().to_string(),
            ),
    );
    let entries = dry_run(
        Command::new(BIN)
            .args(["-dry-run", "-config.expand-env=true"])
            .arg(format!("-config.file={}", config.display()))
            .env("LOGFERRY_HTTP_PORT", "0"),
        2,
    );
    let mut got: Vec<(BTreeMap<String, String>, String)> = entries
        .iter()
        .map(|(labels, line)| {
            let mut labels = label_map(labels);
            labels.remove("filename");
            (labels, line.clone())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                labels(&[
                    ("compose_project", "shop"),
                    ("compose_service", "web"),
                    ("container", "shop-web-1"),
                    ("job", "docker"),
                    ("stream", "stdout"),
                ]),
                // As Promtail: Docker's `log`, its newline included.
                "hello\n".to_string()
            ),
            (labels(&[("job", "varlogs")]), "syslog line".to_string()),
        ]
    );

    // The Kubernetes config's globs and relabeling under a fake /var/log/pods: namespace, pod and
    // container from the path, CRI lines unwrapped, logferry's own logs left out.
    let pods = dir.path().join("var/log/pods");
    write(
        &pods.join("shop_web-0_0b6e1c2a/web/0.log"),
        "2026-01-01T00:00:00.000000001Z stdout F hello from a pod\n",
    );
    write(
        &pods.join("shop_web-0_0b6e1c2a/web/0.log.20260101-000000"),
        "rotated\n",
    );
    write(
        &pods.join("logging_logferry-x1_9d0c/logferry/0.log"),
        "2026-01-01T00:00:00.000000001Z stderr F level=info msg=own\n",
    );
    // The Containerfile: FROM scratch, the entrypoint the docs promise, positions on a volume.
    let containerfile = read("packaging/container/Containerfile");
    let instructions: Vec<&str> = containerfile
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(instructions.first(), Some(&"FROM scratch"));
    assert!(instructions.contains(
        &r#"ENTRYPOINT ["/logferry", "-config.file=/etc/logferry/config.yaml", "-config.expand-env=true"]"#
    ));
    assert!(instructions.contains(&r#"VOLUME ["/var/lib/logferry"]"#));
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("COPY ca-certificates.crt /etc/ssl/certs/"))
    );

    // The DaemonSet and its ConfigMap.
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&read(DAEMONSET))
        .map(|d| serde::Deserialize::deserialize(d).expect("daemonset.yaml is valid YAML"))
        .filter(|v: &serde_yaml_ng::Value| !v.is_null())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k} in {DAEMONSET}"))
    };
    let config_map = kind("ConfigMap");
    let k8s_config = dir.path().join("k8s.yaml");
    write(
        &k8s_config,
        config_map["data"]["config.yaml"]
            .as_str()
            .expect("ConfigMap data config.yaml"),
    );
    check_syntax(
        &k8s_config,
        &[
            ("LOKI_URL", "http://loki.loki.svc:3100/loki/api/v1/push"),
            ("NODE_NAME", "node-1"),
        ],
    );
    let k8s_text = fs::read_to_string(&k8s_config).unwrap();
    let k8s_local = dir.path().join("k8s-local.yaml");
    write(
        &k8s_local,
        &k8s_text
            .replace("http_listen_port: 9080", "http_listen_port: 0")
            .replace("/var/log/pods", &pods.display().to_string())
            .replace(
                "/var/lib/logferry",
                &dir.path().join("k8s-state").display().to_string(),
            ),
    );
    let entries = dry_run(
        Command::new(BIN)
            .args(["-dry-run", "-config.expand-env=true"])
            .arg(format!("-config.file={}", k8s_local.display()))
            .env("LOKI_URL", "http://127.0.0.1:1/loki/api/v1/push")
            .env("NODE_NAME", "node-1"),
        1,
    );
    let got: Vec<(BTreeMap<String, String>, String)> = entries
        .iter()
        .map(|(labels, line)| {
            let mut labels = label_map(labels);
            labels.remove("filename");
            (labels, line.clone())
        })
        .collect();
    assert_eq!(
        got,
        vec![(
            labels(&[
                ("container", "web"),
                ("job", "kubernetes-pods"),
                ("namespace", "shop"),
                ("pod", "web-0"),
                ("stream", "stdout"),
            ]),
            "hello from a pod".to_string()
        )]
    );
    assert!(
        k8s_text.contains("http_listen_address: 0.0.0.0"),
        "the probes need the server on the pod's address"
    );
    let daemonset = kind("DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some("/ready"),
            "{probe}"
        );
    }
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    for path in ["/var/log/pods", "/var/lib/docker/containers"] {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("no mount of {path}"));
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{path} read-only");
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["hostPath"]["path"].as_str(), Some(path));
    }
    let positions = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/var/lib/logferry"))
        .expect("positions mount");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == positions["name"])
        .unwrap();
    assert!(
        volume["hostPath"]["path"].is_string(),
        "positions on a hostPath"
    );

    // The compose file: logferry next to an app, logs read-only, positions on a volume.
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(COMPOSE)).unwrap();
    let logferry = &compose["services"]["logferry"];
    let volumes: Vec<&str> = logferry["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(volumes.iter().any(|v| v.ends_with(":/host/var/log:ro")));
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(":/host/var/lib/docker/containers:ro"))
    );
    assert!(volumes.iter().any(|v| v.ends_with(":/var/lib/logferry")));
    assert!(logferry["environment"]["LOKI_URL"].is_string());
    assert!(compose["services"]["app"].is_mapping());
}

// ---------------------------------------------------------------------------------------------
// The Debian package

/// Builds the .deb with scripts/package-deb; its path.
fn build_deb() -> PathBuf {
    let mut cmd = Command::new(repo().join("scripts/package-deb"));
    cmd.current_dir(repo());
    // Under `cargo test --release`, package the very binary under test (cargo-deb finds it in
    // target/release); otherwise let cargo-deb build a release binary.
    let bin = Path::new(BIN);
    if bin.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        cmd.arg("--no-build");
        if let Some(target_dir) = bin.parent().and_then(Path::parent) {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
    }
    let started = Instant::now();
    let stdout = run(&mut cmd);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    eprintln!("built {} in {:.0?}", deb.display(), started.elapsed());
    assert!(deb.is_file(), "scripts/package-deb printed {stdout:?}");
    deb
}

fn passwd_entry(db: &str, name: &str) -> Option<String> {
    let out = output(Command::new("getent").args([db, name]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Paths named like the package under /etc, /usr and /var. Left out: the container store, and
/// man-db's cache of formatted pages (`systemd-analyze verify` runs `man logferry`, which fills
/// it; man-db's daily job drops pages whose source is gone, as for every package).
fn logferry_paths() -> BTreeSet<String> {
    let out = output(&mut sh(
        "find /etc /usr /var -xdev \\( -path /var/lib/containers -o -path /var/cache/man \\) -prune \
         -o -name '*logferry*' -print 2>/dev/null",
    ));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn dpkg_status() -> String {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "logferry"]));
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        "not-installed".into()
    }
}

/// Purges the package if a test left it installed, even on panic.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if dpkg_status() != "not-installed" && dpkg_status() != "unknown ok not-installed" {
            let _lock = dpkg_lock();
            let _ = output(Command::new("dpkg").args(["--purge", "logferry"]));
        }
    }
}

fn owner_and_mode(path: &str) -> (String, String, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        passwd_entry(db, &id.to_string())
            .and_then(|e| e.split(':').next().map(String::from))
            .unwrap_or_else(|| id.to_string())
    };
    (
        name("passwd", meta.uid()),
        name("group", meta.gid()),
        meta.permissions().mode() & 0o7777,
    )
}

#[test]
fn debian_package_installs_runs_and_purges_clean() {
    if !is_root() {
        skip!("the Debian package test installs a package: run the tests as root");
    }
    if let Err(why) = ensure(&[
        ("dpkg-deb", "dpkg"),
        ("lintian", "lintian"),
        ("man", "man-db"),
        ("adduser", "adduser"),
        ("deb-systemd-helper", "init-system-helpers"),
        ("systemd-analyze", "systemd"),
        ("setpriv", "util-linux"),
        ("strip", "binutils"),
        ("dpkg-shlibdeps", "dpkg-dev"),
    ]) {
        skip!("Debian package: {why}");
    }
    let status = dpkg_status();
    if status.contains("installed") && !status.contains("not-installed")
        || status.contains("config-files")
    {
        skip!(
            "logferry is already installed here ({status}); dpkg --purge logferry to run this test"
        );
    }
    if passwd_entry("passwd", "logferry").is_some() || passwd_entry("group", "logferry").is_some() {
        skip!("a logferry user or group exists already; the package's purge would remove it");
    }
    let before = logferry_paths();

    let deb = build_deb();

    // What is in it.
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for field in [
        "Package: logferry",
        "Section: admin",
        "Priority: optional",
        "Maintainer: ",
        "Depends: ",
        "adduser",
    ] {
        assert!(info.contains(field), "dpkg-deb -I lacks {field:?}:\n{info}");
    }
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert!(info.contains(&format!("Version: {version}\n")), "{info}");
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script}:\n{info}");
    }
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: BTreeSet<String> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    for wanted in [
        "/usr/bin/logferry",
        "/etc/logferry/config.yaml",
        "/usr/lib/systemd/system/logferry.service",
        "/usr/share/man/man1/logferry.1.gz",
        "/usr/share/doc/logferry/copyright",
        "/usr/share/doc/logferry/changelog.Debian.gz",
        "/usr/share/logferry/docker-logs.conf",
        "/usr/share/lintian/overrides/logferry",
    ] {
        assert!(
            files.contains(wanted),
            "{wanted} not in the package:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0 ") && l.ends_with("./usr/bin/logferry")),
        "{contents}"
    );
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    assert_eq!(
        fs::read_to_string(control.path().join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/logferry/config.yaml"
    );
    let postinst = fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable logferry.service"));
    assert!(postinst.contains("deb-systemd-invoke $_dh_action logferry.service"));
    assert!(!postinst.contains("#DEBHELPER#"));
    // The changelog's newest entry is this version.
    let changelog = read("packaging/debian/changelog");
    assert!(
        changelog.starts_with(&format!("logferry ({version}) ")),
        "packaging/debian/changelog must start with an entry for {version}"
    );

    // lintian: no error, no warning.
    let lintian = output(
        Command::new("lintian")
            .args(["--fail-on", "none", "--tag-display-limit", "0"])
            .arg(&deb),
    );
    let report = String::from_utf8_lossy(&lintian.stdout);
    let bad: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        bad.is_empty(),
        "lintian:\n{report}\n{}",
        String::from_utf8_lossy(&lintian.stderr)
    );

    // Install.
    let _purge = PurgeOnDrop;
    {
        let _lock = dpkg_lock();
        run(Command::new("dpkg").arg("-i").arg(&deb));
    }
    assert_eq!(dpkg_status(), "install ok installed");
    let user = passwd_entry("passwd", "logferry").expect("the logferry user");
    let fields: Vec<&str> = user.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    assert_eq!(fields[5], "/nonexistent", "{user}");
    assert!(fields[6].ends_with("nologin"), "{user}");
    assert!(passwd_entry("group", "logferry").is_some());
    let groups = run(Command::new("id").args(["-nG", "logferry"]));
    let groups: BTreeSet<&str> = groups.split_whitespace().collect();
    assert!(groups.contains("adm"), "groups: {groups:?}");
    if passwd_entry("group", "systemd-journal").is_some() {
        assert!(groups.contains("systemd-journal"), "groups: {groups:?}");
    }
    assert_eq!(
        owner_and_mode("/var/lib/logferry"),
        ("logferry".into(), "logferry".into(), 0o750)
    );
    assert_eq!(
        owner_and_mode("/usr/bin/logferry"),
        ("root".into(), "root".into(), 0o755)
    );
    assert_eq!(
        owner_and_mode("/etc/logferry/config.yaml"),
        ("root".into(), "root".into(), 0o644)
    );
    assert!(
        fs::symlink_metadata("/etc/systemd/system/multi-user.target.wants/logferry.service")
            .is_ok(),
        "the unit is enabled"
    );
    let installed_version = run(Command::new("/usr/bin/logferry").arg("-version"));
    assert!(installed_version.contains(env!("CARGO_PKG_VERSION")));
    check_syntax(Path::new("/etc/logferry/config.yaml"), &[]);
    // man finds the page by name (-w: where, without formatting it into man-db's cache).
    let page = run(Command::new("man").args(["-w", "logferry"]));
    assert_eq!(page.trim(), "/usr/share/man/man1/logferry.1.gz");
    let man = run(Command::new("man")
        .args(["-P", "cat", "-l", page.trim()])
        .env("MANWIDTH", "80"));
    assert!(man.contains("-config.file"), "man logferry:\n{man}");

    // systemd-analyze on the installed unit: verify is silent (the binary and the man page it
    // names exist now), the exposure is low, with and without the Docker drop-in.
    let unit = "/usr/lib/systemd/system/logferry.service";
    let complaints = verify(Path::new(unit), true);
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify {unit}:\n{complaints}"
    );
    let (score, line) = exposure(Path::new(unit));
    eprintln!("installed unit: {line}");
    assert!(score <= MAX_EXPOSURE, "{line}");
    let with_drop_in = tempfile::tempdir().unwrap();
    let copy = unit_copy(
        with_drop_in.path(),
        "/usr/bin/logferry",
        &fs::read_to_string(unit).unwrap(),
        Some(&fs::read_to_string("/usr/share/logferry/docker-logs.conf").unwrap()),
    );
    let complaints = verify(&copy, true);
    assert!(
        complaints.trim().is_empty(),
        "verify with the drop-in:\n{complaints}"
    );

    // The installed binary, run as the unit runs it (the logferry user, its groups), reads a
    // log only the adm group may read.
    let fixtures = tempfile::tempdir().unwrap();
    fs::set_permissions(fixtures.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let logs = fixtures.path().join("logs");
    write(&logs.join("app.log"), "first line\nsecond line\n");
    write(&logs.join("app.log.1"), "rotated line\n");
    run(Command::new("chgrp").args(["-R", "adm"]).arg(&logs));
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(logs.join("app.log"), fs::Permissions::from_mode(0o640)).unwrap();
    let config = fixtures.path().join("config.yaml");
    write(
        &config,
        &format!(
            "server:\n  http_listen_port: 0\npositions:\n  filename: /var/lib/logferry/positions.yaml\n\
             scrape_configs:\n  - job_name: fixture\n    static_configs:\n      - labels:\n          \
             job: fixture\n          __path__: {}/*.log\n",
            logs.display()
        ),
    );
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let entries = dry_run(
        Command::new("setpriv")
            .args(["--reuid=logferry", "--regid=logferry", "--init-groups"])
            .arg("/usr/bin/logferry")
            .arg(format!("-config.file={}", config.display()))
            .arg("-dry-run")
            .current_dir("/"),
        2,
    );
    let lines: Vec<&str> = entries.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, ["first line", "second line"]);
    assert!(
        fs::read_dir("/var/lib/logferry").unwrap().next().is_none(),
        "-dry-run writes no positions"
    );

    // The installed config as it is, as the logferry user: it ships /var/log to a Loki on
    // localhost:3100 and keeps positions in /var/lib/logferry. Needs ports 3100 and 9080.
    let ports_free = TcpListener::bind("127.0.0.1:9080").is_ok();
    match Receiver::builder().port(3100).try_start() {
        Ok(loki) if ports_free => {
            let agent = Running::start(
                Command::new("setpriv")
                    .args(["--reuid=logferry", "--regid=logferry", "--init-groups"])
                    .arg("/usr/bin/logferry")
                    .arg("-config.file=/etc/logferry/config.yaml")
                    .current_dir("/"),
            );
            let ready = wait_for(Duration::from_secs(30), || {
                http_status(9080, "/ready") == Some(200)
            });
            let shipped = wait_for(Duration::from_secs(30), || {
                loki.entries()
                    .iter()
                    .any(|e| e.label("filename") == Some("/var/log/dpkg.log"))
            });
            let metrics = http_status(9080, "/metrics");
            let (status, stderr) = agent.stop();
            assert!(ready, "/ready never answered 200:\n{stderr}");
            assert_eq!(metrics, Some(200), "/metrics");
            assert!(
                shipped,
                "no line of /var/log/dpkg.log reached Loki ({} entries):\n{stderr}",
                loki.entry_count()
            );
            assert!(status.success(), "exit {status}:\n{stderr}");
            assert_eq!(
                owner_and_mode("/var/lib/logferry/positions.yaml"),
                ("logferry".into(), "logferry".into(), 0o600)
            );
        }
        _ => eprintln!(
            "127.0.0.1:3100 or :9080 is taken: the installed config is not run against a receiver"
        ),
    }

    // Reinstall (the upgrade path): a local edit of the conffile stays, and so does the user.
    append(
        Path::new("/etc/logferry/config.yaml"),
        "# edited by the packaging test\n",
    );
    {
        let _lock = dpkg_lock();
        run(Command::new("dpkg").arg("-i").arg(&deb));
    }
    assert!(
        read_system("/etc/logferry/config.yaml").ends_with("# edited by the packaging test\n"),
        "the conffile edit was lost on upgrade"
    );
    assert_eq!(passwd_entry("passwd", "logferry"), Some(user.clone()));

    // Remove: the program goes, the configuration, the user and the positions stay.
    {
        let _lock = dpkg_lock();
        run(Command::new("dpkg").args(["-r", "logferry"]));
    }
    assert_eq!(dpkg_status(), "deinstall ok config-files");
    assert!(!Path::new("/usr/bin/logferry").exists());
    assert!(!Path::new("/usr/lib/systemd/system/logferry.service").exists());
    assert!(Path::new("/etc/logferry/config.yaml").exists());
    assert!(passwd_entry("passwd", "logferry").is_some());
    assert!(Path::new("/var/lib/logferry").is_dir());

    // Purge: nothing is left.
    {
        let _lock = dpkg_lock();
        run(Command::new("dpkg").args(["-P", "logferry"]));
    }
    assert!(dpkg_status().contains("not-installed"), "{}", dpkg_status());
    assert_eq!(passwd_entry("passwd", "logferry"), None, "the user is gone");
    assert_eq!(passwd_entry("group", "logferry"), None, "the group is gone");
    let group_file = read_system("/etc/group");
    assert!(
        !group_file.lines().any(|l| l
            .split(':')
            .nth(3)
            .is_some_and(|m| m.split(',').any(|u| u == "logferry"))),
        "logferry is still a member of a group"
    );
    let after = logferry_paths();
    let left: Vec<_> = after.difference(&before).collect();
    assert!(left.is_empty(), "left behind by the purge: {left:?}");
    for path in [
        "/var/lib/logferry",
        "/etc/logferry",
        "/etc/systemd/system/logferry.service",
        "/etc/systemd/system/multi-user.target.wants/logferry.service",
    ] {
        assert!(fs::symlink_metadata(path).is_err(), "{path} is left");
    }
}

fn read_system(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The container image

/// Removes a container when dropped (it may be running).
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        let out = output(Command::new("podman").args(["logs", &self.name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(Command::new("podman").args(["rm", "-f", "-t", "0", &self.name]));
    }
}

/// This process's hard limit for a resource in /proc/self/limits (e.g. "Max open files").
fn hard_limit(name: &str) -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn container_image_ships_and_keeps_positions_across_restarts() {
    if !is_root() {
        skip!("the container test runs podman as root: run the tests as root");
    }
    if let Err(why) = ensure(&[
        ("podman", "podman"),
        ("runc", "runc"),
        ("musl-gcc", "musl-tools"),
        ("strip", "binutils"),
        ("update-ca-certificates", "ca-certificates"),
    ]) {
        skip!("container image: {why}");
    }

    let started = Instant::now();
    let image = format!("localhost/logferry-test:{}", std::process::id());
    let out = output(
        Command::new(repo().join("scripts/package-image"))
            .arg(&image)
            .current_dir(repo()),
    );
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("rustup") && !have("rustup") {
            skip!("no rustup to add the musl target:\n{stderr}");
        }
        panic!("scripts/package-image failed:\n{stderr}");
    }
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = output(Command::new("podman").args(["rmi", "-f", &self.0]));
        }
    }
    let _image = Image(image.clone());
    let size: u64 =
        run(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", &image]))
            .trim()
            .parse()
            .unwrap();
    eprintln!(
        "built {image} ({:.1} MB) in {:.0?}",
        size as f64 / 1e6,
        started.elapsed()
    );
    assert!(size < 40_000_000, "the image is {size} bytes");

    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("log");
    let docker = dir.path().join("containers");
    let positions = dir.path().join("positions");
    write(&logs.join("app.log"), "app 1\napp 2\napp 3\n");
    write(&logs.join("app.log.1"), "rotated\n");
    write(&logs.join("lastlog"), "binary\n");
    write(
        &docker.join("c0ffee/c0ffee-json.log"),
        "{\"log\":\"from docker\\n\",\"stream\":\"stdout\",\"time\":\"2026-01-01T00:00:00Z\"}\n",
    );
    write(
        &docker.join("c0ffee/config.v2.json"),
        &DOCKER_CONFIG_V2.replace("\"abc\"", "\"c0ffee\""),
    );
    fs::create_dir_all(&positions).unwrap();

    let loki = Receiver::start();
    let port = free_port();
    // This sandbox may not raise limits (no CAP_SYS_RESOURCE): ask podman for ours, not its
    // defaults.
    let nofile = hard_limit("Max open files").unwrap_or(1024).min(65536);
    let nproc = hard_limit("Max processes").unwrap_or(4096).min(4096);
    let start = |name: &str| -> Container {
        let container = Container {
            name: name.to_string(),
        };
        let _ = output(Command::new("podman").args(["rm", "-f", name]));
        run(Command::new("podman")
            .args([
                "run",
                "-d",
                "--name",
                name,
                "--runtime",
                "runc",
                "--network",
                "host",
            ])
            .args([
                "--read-only",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
            ])
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            .arg(format!("--ulimit=nproc={nproc}:{nproc}"))
            .arg(format!("--volume={}:/host/var/log:ro", logs.display()))
            .arg(format!(
                "--volume={}:/host/var/lib/docker/containers:ro",
                docker.display()
            ))
            .arg(format!(
                "--volume={}:/var/lib/logferry",
                positions.display()
            ))
            .arg(format!("--env=LOKI_URL={}", loki.url()))
            .arg("--env=LOGFERRY_HTTP_ADDRESS=127.0.0.1")
            .arg(format!("--env=LOGFERRY_HTTP_PORT={port}"))
            .arg(&image));
        container
    };
    let stop = |container: &Container| {
        run(Command::new("podman").args(["stop", "-t", "20", &container.name]));
        let state = run(Command::new("podman").args([
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            &container.name,
        ]));
        assert_eq!(state.trim(), "0", "exit code; logs:\n{}", container.logs());
    };
    let lines = |loki: &Receiver| -> Vec<String> {
        let mut lines = loki.lines();
        lines.sort();
        lines
    };

    let name = format!("logferry-test-{}", std::process::id());
    let first = start(&name);
    assert!(
        loki.wait_for_entries(4, Duration::from_secs(60)),
        "{} entries arrived; logs:\n{}",
        loki.entry_count(),
        first.logs()
    );
    assert!(
        wait_for(Duration::from_secs(20), || http_status(port, "/ready")
            == Some(200)),
        "/ready; logs:\n{}",
        first.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    // Unwrapped by the docker stage, its newline kept (as Promtail does).
    let docker_line = "from docker\n";
    let mut want = vec!["app 1", "app 2", "app 3", docker_line];
    want.sort();
    assert_eq!(lines(&loki), want, "logs:\n{}", first.logs());
    let entries = loki.entries();
    let app = entries.iter().find(|e| e.line == "app 1").unwrap();
    assert_eq!(app.label("job"), Some("varlogs"));
    assert_eq!(app.label("filename"), Some("/host/var/log/app.log"));
    let from_docker = entries.iter().find(|e| e.line == docker_line).unwrap();
    assert_eq!(from_docker.label("job"), Some("docker"));
    assert_eq!(from_docker.label("container"), Some("shop-web-1"));
    assert_eq!(from_docker.label("compose_service"), Some("web"));
    assert_eq!(from_docker.label("stream"), Some("stdout"));
    assert!(from_docker.label("host").is_some_and(|h| !h.is_empty()));
    stop(&first);
    drop(first);
    assert!(
        positions.join("positions.yaml").is_file(),
        "no positions written to the volume"
    );

    // A new container on the same positions: only what was appended meanwhile arrives.
    append(&logs.join("app.log"), "app 4\napp 5\n");
    let second = start(&name);
    assert!(
        loki.wait_for_entries(6, Duration::from_secs(60)),
        "{} entries; logs:\n{}",
        loki.entry_count(),
        second.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut want = vec!["app 1", "app 2", "app 3", "app 4", "app 5", docker_line];
    want.sort();
    assert_eq!(
        lines(&loki),
        want,
        "after the restart only the new lines come; logs:\n{}",
        second.logs()
    );
    stop(&second);
}
