//! Rotation, truncation, deletion and inode reuse, with the real `logrotate` doing the rotating
//! while a writer keeps writing numbered lines.

mod common;

use common::*;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The `logrotate` binary; installed with apt-get when it is missing and we are root, else
/// `None` (the caller skips, saying why).
fn logrotate() -> Option<PathBuf> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let find = || {
        [
            "/usr/sbin/logrotate",
            "/sbin/logrotate",
            "/usr/bin/logrotate",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    };
    if let Some(found) = find() {
        return Some(found);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: logrotate is not installed and we are not root to install it");
        return None;
    }
    eprintln!("installing logrotate with apt-get for the rotation tests");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "logrotate"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        install();
    }
    let found = find();
    if found.is_none() {
        eprintln!("SKIPPED: logrotate could not be installed");
    }
    found
}

/// Runs `logrotate -s STATE -f CONF` for one file with the given directives.
struct Rotator {
    bin: PathBuf,
    state: PathBuf,
    conf: PathBuf,
}

impl Rotator {
    fn new(bin: PathBuf, dir: &Path, log: &Path, directives: &str) -> Rotator {
        let conf = dir.join("logrotate.conf");
        std::fs::write(
            &conf,
            format!(
                "{} {{\n    rotate 20\n    missingok\n    nocompress\n{directives}}}\n",
                log.display()
            ),
        )
        .unwrap();
        Rotator {
            bin,
            state: dir.join("logrotate.state"),
            conf,
        }
    }

    fn rotate(&self) {
        let out = Command::new(&self.bin)
            .arg("-s")
            .arg(&self.state)
            .arg("-f")
            .arg(&self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes `total` numbered lines to `path` about one per millisecond.
///
/// Like a program that reopens its log now and then (as after a SIGHUP from a postrotate
/// script), it checks every 25 lines whether the path still names the file it holds, and
/// reopens it if not; so some lines land in the rotated file after the rename, which the agent
/// must still read. It never creates the file (logrotate does) and never drops a line.
struct Writer {
    written: Arc<AtomicUsize>,
    handle: JoinHandle<()>,
}

fn line_text(i: usize) -> String {
    format!("seq {i:06} GET /api/v1/items?page={i} 200 {}", i * 7 % 1000)
}

impl Writer {
    fn start(path: &Path, total: usize, reopen: bool) -> Writer {
        let written = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (path, written) = (path.to_path_buf(), written.clone());
            std::thread::spawn(move || {
                let open = || loop {
                    match OpenOptions::new().append(true).open(&path) {
                        Ok(f) => return f,
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                };
                let mut file = open();
                for i in 0..total {
                    if reopen && i % 25 == 0 {
                        let held = file.metadata().unwrap().ino();
                        if std::fs::metadata(&path).map(|m| m.ino()).ok() != Some(held) {
                            file = open();
                        }
                    }
                    file.write_all(format!("{}\n", line_text(i)).as_bytes())
                        .unwrap();
                    written.store(i + 1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Writer { written, handle }
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::SeqCst)
    }

    fn wait_written(&self, n: usize) {
        assert!(wait_until(LONG, || self.written() >= n), "writer stalled");
    }
}

/// The sequence numbers of the printed lines, checking each is a whole line as written.
fn sequence_numbers(agent: &Agent) -> Vec<usize> {
    agent
        .lines()
        .iter()
        .map(|l| {
            let n: usize = l
                .strip_prefix("seq ")
                .and_then(|r| r.get(..6))
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("not a line the writer wrote: {l:?}"));
            assert_eq!(l, &line_text(n), "a line came out damaged");
            n
        })
        .collect()
}

const TOTAL: usize = 3000;

#[test]
fn rename_and_create_rotation_by_logrotate_loses_and_repeats_nothing() {
    let Some(bin) = logrotate() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    File::create(&log).unwrap();
    let rotator = Rotator::new(bin, dir.path(), &log, "    create 0644\n");
    let mut agent =
        Agent::start(&Config::new(dir.path(), dir.path().join("*.log")).write(dir.path()));

    let writer = Writer::start(&log, TOTAL, true);
    for at in [700, 1500, 2300] {
        writer.wait_written(at);
        rotator.rotate();
    }
    writer.handle.join().unwrap();
    let all_seen = wait_until(LONG, || {
        sequence_numbers(&agent)
            .into_iter()
            .collect::<HashSet<_>>()
            .len()
            == TOTAL
    });
    // A little longer, for a late repeat to show (a rescan runs every second).
    std::thread::sleep(Duration::from_millis(2500));
    agent.stop();

    let seqs = sequence_numbers(&agent);
    let seen: HashSet<usize> = seqs.iter().copied().collect();
    let missing: Vec<usize> = (0..TOTAL).filter(|i| !seen.contains(i)).collect();
    assert!(
        all_seen && missing.is_empty(),
        "lines lost: {missing:?}; stderr:\n{}",
        agent.tail_of_stderr()
    );
    assert_eq!(
        duplicates(&seqs),
        Vec::<usize>::new(),
        "lines printed twice"
    );
    // Every line carries the path it was written to, even those read from a rotated file.
    let labels = labels_for(&log, "test");
    assert!(agent.entries().iter().all(|e| e.labels == labels));
    // The rotations really happened, and the agent noticed.
    for n in 1..=3 {
        assert!(dir.path().join(format!("app.log.{n}")).exists());
    }
    assert_eq!(
        agent.stderr().matches("file left its path").count(),
        3,
        "{}",
        agent.stderr()
    );
}

#[test]
fn copytruncate_rotation_by_logrotate_starts_over_at_zero() {
    let Some(bin) = logrotate() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    File::create(&log).unwrap();
    let rotator = Rotator::new(bin, dir.path(), &log, "    copytruncate\n");
    let mut agent =
        Agent::start(&Config::new(dir.path(), dir.path().join("*.log")).write(dir.path()));

    let writer = Writer::start(&log, TOTAL, false);
    // Lines written while logrotate ran may be lost (written after the copy, before the
    // truncation): logrotate's own window, which we record.
    let mut windows = Vec::new();
    for at in [700, 1500, 2300] {
        writer.wait_written(at);
        let before = writer.written();
        rotator.rotate();
        windows.push(before..writer.written() + 1);
    }
    writer.handle.join().unwrap();
    // The last line is written well after the last truncation: it must come, read from the
    // restarted file.
    agent.wait_for_line(&line_text(TOTAL - 1), LONG);
    std::thread::sleep(Duration::from_millis(2500));
    agent.stop();

    let seqs = sequence_numbers(&agent);
    assert_eq!(
        duplicates(&seqs),
        Vec::<usize>::new(),
        "lines printed twice"
    );
    let seen: HashSet<usize> = seqs.iter().copied().collect();
    let lost_outside: Vec<usize> = (0..TOTAL)
        .filter(|i| !seen.contains(i) && !windows.iter().any(|w| w.contains(i)))
        .collect();
    assert!(
        lost_outside.is_empty(),
        "lines lost outside logrotate's copy-to-truncate windows {windows:?}: {lost_outside:?}"
    );
    let lost = (0..TOTAL).filter(|i| !seen.contains(i)).count();
    eprintln!("copytruncate: {lost} lines lost inside logrotate's windows {windows:?}");
    let truncations = agent.stderr().matches("file was truncated").count();
    assert_eq!(truncations, 3, "{}", agent.stderr());
    // The copies hold what was written before each truncation.
    assert!(dir.path().join("app.log.3").exists());
}

#[test]
fn plain_truncation_then_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("old line ", 0, 50));
    let mut agent = Agent::start(&Config::new(dir.path(), &log).write(dir.path()));
    agent.wait_for_line("old line 49", SOON);

    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    agent.wait_for_stderr("file was truncated", SOON);
    append(&log, numbered("new line ", 0, 5));
    agent.wait_for_line("new line 4", SOON);
    agent.stop();
    let mut expected = numbered_lines("old line ", 0, 50);
    expected.extend(numbered_lines("new line ", 0, 5));
    assert_eq!(agent.lines(), expected);
}

/// `> app.log; echo ... >> app.log` in quick succession, with more new bytes than there were
/// old ones: the truncation must not be missed because the file has grown past the old end by
/// the time the agent looks.
#[test]
fn truncation_immediately_followed_by_longer_content() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "old 0\nold 1\n");
    let mut agent = Agent::start(&Config::new(dir.path(), &log).write(dir.path()));
    agent.wait_for_line("old 1", SOON);

    let mut expected = vec!["old 0".to_string(), "old 1".to_string()];
    for round in 0..5 {
        let text = numbered(&format!("round {round} new line "), 0, 20);
        // Truncate and rewrite in one go: O_TRUNC, then the new lines.
        File::create(&log)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let last = format!("round {round} new line 19");
        agent.wait_for_line(&last, SOON);
        expected.extend(numbered_lines(&format!("round {round} new line "), 0, 20));
    }
    agent.stop();
    assert_eq!(agent.lines(), expected);
}

#[test]
fn deleted_and_recreated_file_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("old ", 0, 10));
    let mut agent = Agent::start(&Config::new(dir.path(), &log).write(dir.path()));
    agent.wait_for_line("old 9", SOON);

    std::fs::remove_file(&log).unwrap();
    append(&log, numbered("new ", 0, 20));
    agent.wait_for_line("new 19", SOON);
    agent.stop();
    let mut expected = numbered_lines("old ", 0, 10);
    expected.extend(numbered_lines("new ", 0, 20));
    assert_eq!(agent.lines(), expected);
}

/// A positions record for this very inode, but with another file's fingerprint, as left by a
/// deleted file whose inode the new one reuses: the new file is read from its start, not from
/// the recorded offset.
#[test]
fn a_reused_inode_with_another_fingerprint_is_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("new file line ", 0, 20));
    let (device, inode) = file_id(&log);
    let config = Config::new(dir.path(), &log);
    std::fs::write(
        &config.positions,
        format!(
            "version: 1\nfiles:\n- path: {}\n  offset: {}\n  device: {device}\n  inode: {inode}\n  fingerprint: 0123456789abcdef/256\n",
            log.display(),
            numbered("new file line ", 0, 10).len()
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("new file line 19", SOON);
    agent.stop();
    assert_eq!(agent.lines(), numbered_lines("new file line ", 0, 20));
    assert!(
        agent.stderr().contains("reuses the inode"),
        "{}",
        agent.stderr()
    );
}

/// The same across a restart with a real delete: the filesystem may well give the new file
/// the old inode; whether it does or not, the new file is read from its start.
#[test]
fn a_file_replaced_while_stopped_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("first file ", 0, 5));
    let config = Config::new(dir.path(), &log).write(dir.path());
    let mut agent = Agent::start(&config);
    agent.wait_for_line("first file 4", SOON);
    agent.stop();
    let old = file_id(&log);

    std::fs::remove_file(&log).unwrap();
    append(&log, numbered("second file ", 0, 30));
    eprintln!("inode reused by the new file: {}", file_id(&log) == old);
    let mut agent = Agent::start(&config);
    agent.wait_for_line("second file 29", SOON);
    agent.stop();
    assert_eq!(agent.lines(), numbered_lines("second file ", 0, 30));
}

/// A file rewritten in place while logferry is stopped (same inode, other first bytes, longer
/// than before): its position is for the old bytes, so it is read from its start. This is what
/// the fingerprint a new file gets from its first read is for: the position file holds it.
#[test]
fn a_file_rewritten_in_place_while_stopped_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    // Longer than a fingerprint (256 bytes), and a short file that grows to more.
    let short = dir.path().join("short.log");
    append(&log, numbered("first version ", 0, 40));
    append(&short, "one\n");
    let config = Config::new(dir.path(), dir.path().join("*.log"));
    let positions = config.positions.clone();
    let config = config.write(dir.path());
    let mut agent = Agent::start(&config);
    agent.wait_for_line("first version 39", SOON);
    agent.wait_for_line("one", SOON);
    append(&short, numbered("grown ", 0, 30));
    agent.wait_for_line("grown 29", SOON);
    agent.stop();
    let records = read_positions(&positions);
    for (path, fingerprinted) in [(&log, 256), (&short, 256)] {
        let record = records
            .iter()
            .find(|r| r.path == path.display().to_string())
            .unwrap_or_else(|| panic!("no record for {}: {records:?}", path.display()));
        let fingerprint = record.fingerprint.clone().unwrap_or_default();
        assert!(
            fingerprint.ends_with(&format!("/{fingerprinted}")),
            "{}: fingerprint {fingerprint:?}",
            path.display()
        );
    }

    let inode = file_id(&log);
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    file.write_all(numbered("second version ", 0, 60).as_bytes())
        .unwrap();
    drop(file);
    assert_eq!(file_id(&log), inode);
    let mut agent = Agent::start(&config);
    agent.wait_for_line("second version 59", SOON);
    agent.stop();
    assert_eq!(
        agent.lines_of(&log),
        numbered_lines("second version ", 0, 60),
        "{}",
        agent.stderr()
    );
}

/// A file rotated away or deleted with an unfinished last line: no newline can come any more,
/// so the line is sent once the file is closed.
#[test]
fn the_unfinished_last_line_of_a_rotated_or_deleted_file_is_sent_when_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = dir.path().join("rotated.log");
    let deleted = dir.path().join("deleted.log");
    append(&rotated, "complete\nno newline before rotation");
    append(&deleted, "whole\nno newline before deletion");
    let mut agent =
        Agent::start(&Config::new(dir.path(), dir.path().join("*.log")).write(dir.path()));
    agent.wait_for_line("complete", SOON);
    agent.wait_for_line("whole", SOON);

    std::fs::rename(&rotated, dir.path().join("rotated.log.1")).unwrap();
    append(&rotated, "new file\n");
    std::fs::remove_file(&deleted).unwrap();
    agent.wait_for_line("new file", SOON);
    // Closed once quiet for 5 s.
    agent.wait_for_line("no newline before rotation", SOON);
    agent.wait_for_line("no newline before deletion", SOON);
    agent.stop();
    assert_eq!(
        agent.lines_of(&rotated),
        vec!["complete", "new file", "no newline before rotation"]
    );
    assert_eq!(
        agent.lines_of(&deleted),
        vec!["whole", "no newline before deletion"]
    );
}

/// `__path__: app.log*` also matches the rotated `app.log.1`: once the agent is done with the
/// rotated file under its old name, finding it under the new one must not read it again.
#[test]
fn a_glob_matching_rotated_files_reads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let old = dir.path().join("app.log.1");
    append(&log, numbered("before rotation ", 0, 100));
    let config = Config::new(dir.path(), dir.path().join("app.log*")).write(dir.path());
    let mut cmd = command(&config);
    cmd.arg("-log.level=debug");
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_line("before rotation 99", SOON);

    std::fs::rename(&log, &old).unwrap();
    append(&log, numbered("after rotation ", 0, 10));
    agent.wait_for_line("after rotation 9", SOON);
    // Once the drained file is closed (quiet for 5 s), it is a file of its own at its new
    // name, read on from where it was left.
    agent.wait_for_stderr("closing file", SOON);
    append(&old, "late line in the rotated file\n");
    agent.wait_for_line("late line in the rotated file", SOON);
    agent.stop();

    let lines = agent.lines();
    assert_eq!(duplicates(&lines), Vec::<String>::new(), "lines read twice");
    assert_eq!(lines.len(), 111);
    assert_eq!(
        agent.lines_of(&old),
        vec!["late line in the rotated file"],
        "the rotated file was read again from its start"
    );
}
