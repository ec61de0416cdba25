//! Discovery: which files are found, and how soon: thousands at start, new files and
//! directories as they appear (inotify, or polling), `**` and `__path_exclude__`, and files
//! that cannot be opened yet.

mod common;

use common::*;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Within this, a new file must show up when the rescan is a minute away: only the watcher
/// (or the poller) can have found it.
const BEFORE_RESCAN: Duration = Duration::from_secs(10);

#[test]
fn ten_thousand_files_are_all_read() {
    const FILES: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for i in 0..FILES {
        std::fs::write(
            logs.join(format!("f{i:05}.log")),
            format!("line of file {i}\n"),
        )
        .unwrap();
    }
    let config = Config::new(dir.path(), logs.join("*.log"))
        .target_sync("60s")
        .write(dir.path());
    let started = Instant::now();
    let mut agent = Agent::spawn(command(&config));
    agent.wait_for_count(FILES, LONG);
    let elapsed = started.elapsed();
    eprintln!(
        "{FILES} files discovered and read in {:.2} s: {:.0} files/s",
        elapsed.as_secs_f64(),
        FILES as f64 / elapsed.as_secs_f64()
    );
    agent.stop();

    let entries = agent.entries();
    assert_eq!(entries.len(), FILES, "each file's one line exactly once");
    let files: HashSet<String> = entries.iter().filter_map(|e| e.filename()).collect();
    assert_eq!(files.len(), FILES);
    for e in &entries {
        let name = e.filename().unwrap();
        let i: usize = name[name.len() - 9..name.len() - 4].parse().unwrap();
        assert_eq!(e.line, format!("line of file {i}"));
    }
}

#[test]
fn directories_created_after_start_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut config = Config::new(d, d.join("nginx/*.log")).target_sync("60s");
    config.jobs.push((
        "deep".into(),
        d.join("a/b/c/*.log").display().to_string(),
        String::new(),
    ));
    let mut agent = Agent::start(&config.write(d));

    std::fs::create_dir(d.join("nginx")).unwrap();
    append(&d.join("nginx/access.log"), "GET / 200\n");
    agent.wait_for_line("GET / 200", BEFORE_RESCAN);
    // The new directory is watched from now on.
    append(&d.join("nginx/error.log"), "upstream timed out\n");
    agent.wait_for_line("upstream timed out", BEFORE_RESCAN);

    // Several levels at once, as `mkdir -p` makes them.
    std::fs::create_dir_all(d.join("a/b/c")).unwrap();
    append(&d.join("a/b/c/deep.log"), "deep line\n");
    agent.wait_for_line("deep line", BEFORE_RESCAN);
    agent.stop();

    let deep = agent
        .entries()
        .into_iter()
        .find(|e| e.line == "deep line")
        .unwrap();
    assert_eq!(deep.labels, labels_for(&d.join("a/b/c/deep.log"), "deep"));
    assert_eq!(agent.count(), 3);
}

#[test]
fn double_star_globs_and_path_exclude() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (path, line) in [
        ("top.log", "top"),
        ("sub/mid.log", "mid"),
        ("sub/deep/er/low.log", "low"),
        ("sub/skip-me.log", "excluded at start"),
        ("notes.txt", "not a log"),
    ] {
        std::fs::create_dir_all(d.join(path).parent().unwrap()).unwrap();
        append(&d.join(path), format!("{line}\n"));
    }
    let config = Config::new(d, d.join("**/*.log"))
        .target_sync("60s")
        .labels(&format!(
            "__path_exclude__: '{}'",
            d.join("**/skip-*.log").display()
        ));
    let mut agent = Agent::start(&config.write(d));
    agent.wait_for_count(3, SOON);

    // New directories anywhere below, and a new excluded file.
    std::fs::create_dir_all(d.join("new/deeper")).unwrap();
    append(&d.join("new/deeper/late.log"), "late\n");
    append(&d.join("sub/deep/skip-late.log"), "excluded later\n");
    agent.wait_for_line("late", BEFORE_RESCAN);
    append(&d.join("sub/mid.log"), "mid again\n");
    agent.wait_for_line("mid again", BEFORE_RESCAN);
    agent.stop();

    let mut lines = agent.lines();
    lines.sort();
    assert_eq!(lines, vec!["late", "low", "mid", "mid again", "top"]);
}

#[test]
fn a_new_file_is_picked_up_at_once_with_inotify() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path(), dir.path().join("*.log")).target_sync("60s");
    let mut agent = Agent::start(&config.write(dir.path()));

    let fresh = dir.path().join("fresh.log");
    append(&fresh, "first line of a new file\n");
    agent.wait_for_line("first line of a new file", BEFORE_RESCAN);
    append(&fresh, "second line\n");
    agent.wait_for_line("second line", BEFORE_RESCAN);
    agent.stop();
    assert_eq!(
        agent.lines_of(&fresh),
        vec!["first line of a new file", "second line"]
    );
    assert!(!agent.stderr().contains("polling"), "{}", agent.stderr());
}

#[test]
fn polling_follows_files_without_inotify() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "at start\n");
    // A rescan a minute away: growth and truncation must come from polling.
    let config = Config::new(dir.path(), dir.path().join("*.log")).target_sync("60s");
    let mut cmd = command(&config.write(dir.path()));
    cmd.env("LOGFERRY_WATCH", "poll");
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_stderr("LOGFERRY_WATCH=poll", SOON);
    agent.wait_for_line("at start", SOON);

    append(&log, "appended while polling\n");
    agent.wait_for_line("appended while polling", BEFORE_RESCAN);
    std::fs::write(&log, "").unwrap();
    agent.wait_for_stderr("file was truncated", BEFORE_RESCAN);
    append(&log, "after truncation\n");
    agent.wait_for_line("after truncation", BEFORE_RESCAN);
    agent.stop();
    assert_eq!(
        agent.lines(),
        vec!["at start", "appended while polling", "after truncation"]
    );
}

#[test]
fn polling_finds_new_files_at_the_rescan() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path(), dir.path().join("*.log")).target_sync("1s");
    let mut cmd = command(&config.write(dir.path()));
    cmd.env("LOGFERRY_WATCH", "poll");
    let mut agent = Agent::start_cmd(cmd);
    let fresh = dir.path().join("fresh.log");
    append(&fresh, "new file while polling\n");
    agent.wait_for_line("new file while polling", SOON);
    append(&fresh, "and more\n");
    agent.wait_for_line("and more", SOON);
    agent.stop();
    assert_eq!(agent.lines(), vec!["new file while polling", "and more"]);
}

/// Runs the agent as user nobody (as root, permissions would not stop it): a file it cannot
/// open is reported once, however many rescans pass, and read once it becomes readable.
#[test]
fn an_unreadable_file_is_reported_once_and_read_once_readable() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Path::new("/usr/bin/setpriv");
    if !root || !setpriv.exists() {
        eprintln!(
            "SKIPPED: needs root and setpriv to run logferry as another user (root: {root}, setpriv: {})",
            setpriv.exists()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    let open = d.join("open.log");
    let secret = d.join("secret.log");
    append(&open, "readable line\n");
    append(&secret, "secret line\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let config = Config::new(d, d.join("*.log"))
        .target_sync("500ms")
        .write(d);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .arg(format!("-config.file={}", config.display()));
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_line("readable line", SOON);
    agent.wait_for_stderr("cannot open file", SOON);
    // Several rescans (every 500 ms) pass: still one report.
    std::thread::sleep(Duration::from_secs(3));
    let reports = |agent: &Agent| {
        agent
            .stderr()
            .lines()
            .filter(|l| l.contains("cannot open file") && l.contains("secret.log"))
            .count()
    };
    assert_eq!(reports(&agent), 1, "{}", agent.stderr());
    assert!(!agent.printed("secret line"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    agent.wait_for_line("secret line", SOON);
    agent.stop();
    assert_eq!(reports(&agent), 1);
    assert!(agent.stderr().contains("file is readable now"));
    // It wrote its positions as nobody.
    assert!(position_of(&d.join("positions.yaml"), &secret).is_some());
}

/// `rm -rf` of the directory a glob starts in, then `mkdir` again (a package reinstalled, a
/// test cleaning up): files in the new directory are found and followed at once again, not
/// only at the next rescan.
#[test]
fn a_watched_directory_removed_and_recreated_is_watched_again() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    append(&app.join("a.log"), "before removal\n");
    let config = Config::new(dir.path(), app.join("*.log")).target_sync("60s");
    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("before removal", SOON);

    std::fs::remove_dir_all(&app).unwrap();
    std::fs::create_dir(&app).unwrap();
    append(&app.join("b.log"), "in the new directory\n");
    agent.wait_for_line("in the new directory", BEFORE_RESCAN);
    append(&app.join("b.log"), "appended in the new directory\n");
    agent.wait_for_line("appended in the new directory", BEFORE_RESCAN);

    // Removed while running, recreated a moment later.
    std::fs::remove_dir_all(&app).unwrap();
    agent.wait_for_stderr("file left its path", SOON);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(&app).unwrap();
    append(&app.join("c.log"), "third directory\n");
    agent.wait_for_line("third directory", BEFORE_RESCAN);
    agent.stop();
}

/// More files than descriptors: with an open-files hard limit of 300 (so a budget of 64 open
/// files), a thousand files are all read, their later lines too, and positions are saved; and
/// started again under the same limit, it goes on from those positions (files found beyond the
/// budget are opened only when their turn to be read comes, and moved to their position then).
#[test]
fn more_files_than_the_descriptor_limit_are_all_read() {
    use std::os::unix::process::CommandExt;
    const FILES: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let path = |i: usize| logs.join(format!("f{i:04}.log"));
    for i in 0..FILES {
        append(&path(i), format!("first {i}\n"));
    }
    let config = Config::new(dir.path(), logs.join("*.log"));
    let positions = config.positions.clone();
    let config_file = config.write(dir.path());
    let limited = || {
        let mut cmd = command(&config_file);
        // SAFETY: setrlimit is async-signal-safe and only changes the child's own limit.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 300,
                    rlim_max: 300,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    };
    let mut agent = Agent::start_cmd(limited());
    agent.wait_for_count(FILES, LONG);
    for i in 0..FILES {
        append(&path(i), format!("second {i}\n"));
    }
    agent.wait_for_count(2 * FILES, LONG);
    assert!(
        wait_until(SOON, || positions.exists()
            && read_positions(&positions).len() == FILES),
        "positions were not saved for every file"
    );
    agent.stop();
    let stderr = agent.stderr();
    assert!(!stderr.contains("cannot open file"), "{stderr}");
    assert!(!stderr.contains("cannot write positions"), "{stderr}");
    for i in [0, 1, FILES / 2, FILES - 1] {
        assert_eq!(
            agent.lines_of(&path(i)),
            vec![format!("first {i}"), format!("second {i}")]
        );
    }
    assert_eq!(agent.count(), 2 * FILES);

    for i in 0..FILES {
        append(&path(i), format!("third {i}\n"));
    }
    let mut again = Agent::start_cmd(limited());
    again.wait_for_count(FILES, LONG);
    again.stop();
    let stderr = again.stderr();
    assert!(!stderr.contains("cannot open file"), "{stderr}");
    for i in [0, 1, FILES / 2, FILES - 1] {
        assert_eq!(again.lines_of(&path(i)), vec![format!("third {i}")]);
    }
    assert_eq!(again.count(), FILES, "only the lines written while stopped");
}

/// A file matched by two jobs is read once, with the labels of the first job in the config.
#[test]
fn a_file_matched_by_two_jobs_is_read_once_for_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "only once\n");
    let mut config = Config::new(dir.path(), &log);
    config.jobs.push((
        "second".into(),
        dir.path().join("*.log").display().to_string(),
        String::new(),
    ));
    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("only once", SOON);
    append(&log, "and again once\n");
    agent.wait_for_line("and again once", SOON);
    agent.stop();
    let entries = agent.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.labels == labels_for(&log, "test")));
}
