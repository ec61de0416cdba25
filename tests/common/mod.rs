//! Shared harness for the integration tests that drive the real `logferry` binary.
//!
//! Each test makes its own temporary directory, writes a config into it with [`Config`], starts
//! the binary with [`Agent::start`], and watches what it prints: standard output is read line by
//! line in a background thread into a shared list, standard error into a shared string. Nothing
//! here waits by sleeping: [`wait_until`] polls a condition against a generous deadline, because
//! the machines these run on are small and busy, and speed is never what a test asserts.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_logferry");

/// The default deadline for anything the agent should do "soon".
pub const SOON: Duration = Duration::from_secs(20);
/// For the slow things: thousands of files, tens of megabytes.
pub const LONG: Duration = Duration::from_secs(60);

/// Polls `condition` every 25 ms until it holds or `deadline` has passed; returns whether it held.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One entry printed by the agent: `<timestamp>\t<labels>\t<line>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub timestamp: String,
    pub labels: String,
    pub line: String,
}

impl Entry {
    fn parse(raw: &str) -> Entry {
        let mut parts = raw.splitn(3, '\t');
        let timestamp = parts.next().unwrap_or_default().to_string();
        let labels = parts.next().unwrap_or_default().to_string();
        let line = parts
            .next()
            .unwrap_or_else(|| panic!("printed line without two tabs: {raw:?}"))
            .to_string();
        Entry {
            timestamp,
            labels,
            line,
        }
    }

    /// The value of the `filename` label.
    pub fn filename(&self) -> Option<String> {
        let start = self.labels.find("filename=\"")? + "filename=\"".len();
        let end = self.labels[start..].find('"')?;
        Some(self.labels[start..start + end].to_string())
    }
}

/// A config file for a test, with fast position syncs and rescans unless told otherwise.
#[derive(Debug, Clone)]
pub struct Config {
    pub positions: PathBuf,
    pub positions_sync: String,
    pub target_sync: String,
    /// More keys of the `positions:` section (e.g. `ignore_invalid_yaml: true`).
    pub positions_extra: String,
    /// (job name, `__path__`, extra labels as YAML flow entries, e.g. `__path_exclude__: '/x'`)
    pub jobs: Vec<(String, String, String)>,
    /// Appended at the top level (limits_config and the like).
    pub extra: String,
}

impl Config {
    /// One job `test` (label `job: test`) reading `glob`; positions in `dir/positions.yaml`.
    pub fn new(dir: &Path, glob: impl AsRef<Path>) -> Config {
        Config {
            positions: dir.join("positions.yaml"),
            positions_sync: "200ms".into(),
            target_sync: "1s".into(),
            positions_extra: String::new(),
            jobs: vec![(
                "test".into(),
                glob.as_ref().display().to_string(),
                String::new(),
            )],
            extra: String::new(),
        }
    }

    pub fn target_sync(mut self, period: &str) -> Config {
        self.target_sync = period.into();
        self
    }

    pub fn positions_sync(mut self, period: &str) -> Config {
        self.positions_sync = period.into();
        self
    }

    /// Adds a key to the `positions:` section, e.g. `ignore_invalid_yaml: true`.
    pub fn positions_key(mut self, yaml: &str) -> Config {
        self.positions_extra.push_str(&format!("  {yaml}\n"));
        self
    }

    pub fn extra(mut self, yaml: &str) -> Config {
        self.extra.push_str(yaml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Adds labels (YAML flow entries) to the first job.
    pub fn labels(mut self, flow: &str) -> Config {
        self.jobs[0].2 = flow.into();
        self
    }

    pub fn yaml(&self) -> String {
        let mut text = format!(
            "positions:\n  filename: '{}'\n  sync_period: {}\n{}target_config:\n  sync_period: {}\nscrape_configs:\n",
            self.positions.display(),
            self.positions_sync,
            self.positions_extra,
            self.target_sync
        );
        for (name, glob, labels) in &self.jobs {
            let more = if labels.is_empty() {
                String::new()
            } else {
                format!(", {labels}")
            };
            text.push_str(&format!(
                "- job_name: {name}\n  static_configs:\n  - targets: [localhost]\n    labels: {{job: {name}, __path__: '{glob}'{more}}}\n"
            ));
        }
        text.push_str(&self.extra);
        // No HTTP server unless the test asks for one: tests run side by side, and Promtail's
        // default port (9080) can be held by only one of them.
        if !self.extra.lines().any(|l| l.starts_with("server:")) {
            text.push_str("server:\n  http_listen_port: 0\n");
        }
        text
    }

    /// Writes the config as `dir/config.yaml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("config.yaml");
        std::fs::write(&path, self.yaml()).unwrap();
        path
    }
}

/// A running `logferry` and what it printed so far.
pub struct Agent {
    child: Child,
    exited: Option<ExitStatus>,
    out: Arc<Mutex<Vec<Entry>>>,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    /// Standard output held open but never read (see [`Agent::spawn_unread`]).
    unread: Option<std::process::ChildStdout>,
}

/// `logferry -config.file=CONFIG` with piped output, ready for more args and env.
pub fn command(config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(format!("-config.file={}", config.display()));
    cmd
}

impl Agent {
    /// Starts `logferry -config.file=CONFIG` and waits until it has opened its files.
    pub fn start(config: &Path) -> Agent {
        Agent::start_cmd(command(config))
    }

    /// Starts `cmd` and waits until it reports that tailing started.
    pub fn start_cmd(cmd: Command) -> Agent {
        let mut agent = Agent::spawn(cmd);
        agent.wait_started();
        agent
    }

    /// Starts `cmd` without waiting for anything.
    pub fn spawn(cmd: Command) -> Agent {
        Agent::spawn_with(cmd, true)
    }

    /// Starts `cmd` with a standard output that is kept open but never read: once the pipe
    /// is full, every write of the agent blocks (a consumer that stopped reading).
    pub fn spawn_unread(cmd: Command) -> Agent {
        Agent::spawn_with(cmd, false)
    }

    fn spawn_with(mut cmd: Command, read_stdout: bool) -> Agent {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start logferry");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (stdout, unread) = if read_stdout {
            (Some(stdout), None)
        } else {
            (None, Some(stdout))
        };
        let out_reader = stdout.map(|stdout| {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::with_capacity(1 << 20, stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    let raw = String::from_utf8_lossy(&buf);
                    out.lock().unwrap().push(Entry::parse(&raw));
                }
            })
        });
        let err_reader = {
            let err = err.clone();
            std::thread::spawn(move || {
                let mut stderr = stderr;
                let mut buf = [0u8; 8192];
                loop {
                    match stderr.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => err
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            })
        };
        Agent {
            child,
            exited: None,
            out,
            err,
            readers: out_reader.into_iter().chain([err_reader]).collect(),
            unread,
        }
    }

    /// The standard output of [`Agent::spawn_unread`], to read what is left in it.
    pub fn take_unread(&mut self) -> Option<std::process::ChildStdout> {
        self.unread.take()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the agent logged that its first discovery is done.
    pub fn wait_started(&mut self) {
        let started = wait_until(LONG, || {
            let stderr = self.stderr();
            stderr.contains("tailing started")
                || stderr.contains("every input started")
                || self.has_exited()
        });
        if !started || self.has_exited() {
            // Collect everything it said before it went.
            let status = self.wait_exit(Duration::from_secs(1));
            panic!(
                "logferry did not start (exit: {status:?}); stderr:\n{}",
                self.stderr()
            );
        }
    }

    fn has_exited(&self) -> bool {
        // SAFETY: kill with signal 0 only checks that the process exists.
        self.exited.is_some() || unsafe { libc::kill(self.pid(), 0) } != 0 || self.is_zombie()
    }

    fn is_zombie(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true)
    }

    /// Everything printed to standard output so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.out.lock().unwrap().clone()
    }

    /// The line texts printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.line.clone())
            .collect()
    }

    /// The line texts printed so far for one file.
    pub fn lines_of(&self, file: &Path) -> Vec<String> {
        let name = file.display().to_string();
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.filename().as_deref() == Some(name.as_str()))
            .map(|e| e.line.clone())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    pub fn printed(&self, line: &str) -> bool {
        self.out.lock().unwrap().iter().any(|e| e.line == line)
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until at least `n` entries were printed; panics with context if not.
    pub fn wait_for_count(&self, n: usize, deadline: Duration) {
        let ok = wait_until(deadline, || self.count() >= n);
        assert!(
            ok,
            "expected at least {n} entries within {deadline:?}, got {}; stderr:\n{}",
            self.count(),
            self.tail_of_stderr()
        );
    }

    /// Waits until `line` was printed; panics with context if not.
    pub fn wait_for_line(&self, line: &str, deadline: Duration) {
        let ok = wait_until(deadline, || self.printed(line));
        assert!(
            ok,
            "expected {line:?} to be printed within {deadline:?}; printed {} entries, last: {:?}; stderr:\n{}",
            self.count(),
            self.lines().last(),
            self.tail_of_stderr()
        );
    }

    /// Waits until standard error contains `text`; panics with context if not.
    pub fn wait_for_stderr(&self, text: &str, deadline: Duration) {
        let ok = wait_until(deadline, || self.stderr().contains(text));
        assert!(
            ok,
            "expected {text:?} in stderr within {deadline:?}; stderr:\n{}",
            self.tail_of_stderr()
        );
    }

    pub fn tail_of_stderr(&self) -> String {
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: sends a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
    }

    /// Waits up to `deadline` for the process to exit; then all its output has been read.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let end = Instant::now() + deadline;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    self.exited = Some(status);
                    break;
                }
                if Instant::now() >= end {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.exited
    }

    /// SIGTERM, then waits for a clean exit (status 0) and all output.
    pub fn stop(&mut self) {
        self.sigterm();
        let status = self.wait_exit(LONG);
        assert!(
            status.is_some(),
            "logferry did not exit after SIGTERM; stderr:\n{}",
            self.tail_of_stderr()
        );
        assert!(
            status.unwrap().success(),
            "logferry exited with {status:?} after SIGTERM; stderr:\n{}",
            self.tail_of_stderr()
        );
    }

    /// SIGKILL: no chance to flush or write positions.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        self.wait_exit(LONG).expect("SIGKILL did not end logferry");
    }

    /// Resident memory and its peak, in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Appends `bytes` to `path` (creating it) in one write.
pub fn append(path: &Path, bytes: impl AsRef<[u8]>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes.as_ref()).unwrap();
}

/// `count` lines `"{prefix}{i}"` for i in `from..from+count`, each ending in `\n`.
pub fn numbered(prefix: &str, from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("{prefix}{i}\n"))
        .collect()
}

/// The same as a list of lines without newlines.
pub fn numbered_lines(prefix: &str, from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| format!("{prefix}{i}"))
        .collect()
}

/// One record of the positions file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub path: String,
    pub offset: u64,
    pub device: Option<u64>,
    pub inode: Option<u64>,
    pub fingerprint: Option<String>,
}

/// Reads logferry's positions file (`files:` list); panics if it is not in that format.
pub fn read_positions(path: &Path) -> Vec<Position> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read positions file {}: {e}", path.display()));
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("positions file is not YAML ({e}):\n{text}"));
    assert_eq!(
        doc.get("version").and_then(|v| v.as_u64()),
        Some(1),
        "positions file without version 1:\n{text}"
    );
    let files = doc
        .get("files")
        .and_then(|f| f.as_sequence())
        .unwrap_or_else(|| panic!("positions file without a files list:\n{text}"));
    files
        .iter()
        .map(|r| Position {
            path: r["path"].as_str().unwrap().to_string(),
            offset: r["offset"].as_u64().unwrap(),
            device: r.get("device").and_then(|v| v.as_u64()),
            inode: r.get("inode").and_then(|v| v.as_u64()),
            fingerprint: r
                .get("fingerprint")
                .and_then(|v| v.as_str())
                .map(String::from),
        })
        .collect()
}

/// The offset recorded for `file` in the positions file, if the file exists and has a record.
pub fn position_of(positions: &Path, file: &Path) -> Option<u64> {
    if !positions.exists() {
        return None;
    }
    let name = file.display().to_string();
    read_positions(positions)
        .into_iter()
        .find(|p| p.path == name)
        .map(|p| p.offset)
}

/// (device, inode) of a file.
pub fn file_id(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// Counts of each distinct value.
pub fn counts<T: std::hash::Hash + Eq + Clone>(items: &[T]) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for item in items {
        *map.entry(item.clone()).or_insert(0) += 1;
    }
    map
}

/// Values seen more than once.
pub fn duplicates<T: std::hash::Hash + Eq + Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut dups: Vec<T> = counts(items)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(v, _)| v)
        .collect();
    dups.sort();
    dups
}

/// Lines of a file's bytes (each without its newline), lossily decoded; an unfinished last
/// line is left out.
pub fn file_lines(bytes: &[u8]) -> Vec<String> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &bytes[..0],
    };
    complete
        .split(|&b| b == b'\n')
        .take(complete.iter().filter(|&&b| b == b'\n').count())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// Reads a whole file.
pub fn read(path: &Path) -> Vec<u8> {
    let mut buf = Vec::new();
    File::open(path).unwrap().read_to_end(&mut buf).unwrap();
    buf
}

/// The rendered label set the agent prints for a file of the default job.
pub fn labels_for(file: &Path, job: &str) -> String {
    format!("{{filename=\"{}\", job=\"{job}\"}}", file.display())
}

/// A loopback port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port; the whole response (status line, headers, body), or "" when
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The agent's `/metrics` text.
pub fn metrics(port: u16) -> String {
    http_get(port, "/metrics")
}

/// The value of the first series starting with `series` in a metrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Runs `check` on every case name on `workers` threads (cases mostly wait for the binary) and
/// returns the failures, sorted.
pub fn check_cases(
    names: Vec<String>,
    workers: usize,
    check: fn(&str) -> Result<(), String>,
) -> Vec<String> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(names));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, failures) = (queue.clone(), failures.clone());
            std::thread::spawn(move || {
                while let Some(name) = queue.lock().unwrap().pop() {
                    if let Err(e) = check(&name) {
                        failures.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut failures = failures.lock().unwrap().clone();
    failures.sort();
    failures
}

/// The names of the case folders in `dir`, sorted.
pub fn case_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `check` on the cases (only those starting with `$COMPAT_CASE` when it is set) on
/// `workers` threads, and fails with every case that differs.
pub fn assert_cases_match(
    names: Vec<String>,
    workers: usize,
    check: fn(&str) -> Result<(), String>,
) {
    let only = std::env::var("COMPAT_CASE").ok();
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| only.as_ref().is_none_or(|o| n.starts_with(o.as_str())))
        .collect();
    let failures = check_cases(names, workers, check);
    assert!(
        failures.is_empty(),
        "{} case(s) differ from Promtail:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
