//! Positions across restarts: nothing lost, nothing repeated after a clean stop, only the lines
//! since the last sync repeated after a crash, Promtail's file imported, and the file itself
//! handled with care (corrupt, leftovers, dry-run, permissions).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn restart_after_a_graceful_stop_resumes_without_loss_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("first run ", 0, 100));
    // An unfinished line at shutdown is neither printed nor acknowledged...
    append(&log, "half a li");
    let config = Config::new(dir.path(), &log);
    let positions = config.positions.clone();
    let config = config.write(dir.path());

    let mut first = Agent::start(&config);
    first.wait_for_line("first run 99", SOON);
    first.stop();
    assert_eq!(first.lines(), numbered_lines("first run ", 0, 100));
    let complete = numbered("first run ", 0, 100).len() as u64;
    assert_eq!(position_of(&positions, &log), Some(complete));
    let mode = std::fs::metadata(&positions).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "positions file mode {mode:o}");

    // ...so the next run reads it whole once its newline has come.
    append(&log, "ne\n");
    append(&log, numbered("second run ", 0, 50));
    let mut second = Agent::start(&config);
    second.wait_for_line("second run 49", SOON);
    second.stop();
    let mut expected = vec!["half a line".to_string()];
    expected.extend(numbered_lines("second run ", 0, 50));
    assert_eq!(second.lines(), expected);
    assert_eq!(
        position_of(&positions, &log),
        Some(std::fs::metadata(&log).unwrap().len())
    );
}

/// Names YAML would misread if written carelessly: each file's position survives a restart,
/// so nothing is read twice.
#[test]
fn files_with_awkward_names_resume_where_they_stopped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let names: Vec<std::path::PathBuf> = [
        &b"colon: and #hash.log"[..],
        b"quote\"back\\slash.log",
        b"- dash.log",
        b"true",
        b"tab\tand\nnewline.log",
        "ünïcödé 日本.log".as_bytes(),
    ]
    .iter()
    .map(|n| logs.join(std::ffi::OsStr::from_bytes(n)))
    .collect();
    for (i, path) in names.iter().enumerate() {
        append(path, format!("first run {i}\n"));
    }
    let config = Config::new(dir.path(), logs.join("*")).write(dir.path());

    let mut first = Agent::start(&config);
    first.wait_for_count(names.len(), SOON);
    first.stop();
    for (i, path) in names.iter().enumerate() {
        append(path, format!("second run {i}\n"));
    }
    let mut second = Agent::start(&config);
    second.wait_for_count(names.len(), SOON);
    second.stop();
    let mut lines = second.lines();
    lines.sort();
    let expected: Vec<String> = (0..names.len())
        .map(|i| format!("second run {i}"))
        .collect();
    assert_eq!(lines, expected, "stderr:\n{}", second.stderr());
}

#[test]
fn kill_9_loses_nothing_and_repeats_only_what_came_after_the_last_sync() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let config = Config::new(dir.path(), &log).positions_sync("200ms");
    let positions = config.positions.clone();
    let config = config.write(dir.path());
    append(&log, numbered("batch a ", 0, 300));
    let a_end = std::fs::metadata(&log).unwrap().len();

    let mut first = Agent::start(&config);
    first.wait_for_line("batch a 299", SOON);
    assert!(
        wait_until(SOON, || position_of(&positions, &log) == Some(a_end)),
        "batch a was never synced to the positions file"
    );
    // Batch b is printed but perhaps not synced when the agent dies.
    append(&log, numbered("batch b ", 0, 300));
    first.wait_for_line("batch b 299", SOON);
    first.kill9();
    let synced = position_of(&positions, &log).expect("positions file lost its record");
    assert!(synced >= a_end, "position went back: {synced} < {a_end}");

    append(&log, numbered("batch c ", 0, 300));
    let mut second = Agent::start(&config);
    second.wait_for_line("batch c 299", SOON);
    second.stop();

    // The second run starts exactly at the synced position: no line skipped, and what it
    // repeats is only what the first run printed after that position was synced.
    let content = read(&log);
    let after_sync = file_lines(&content[synced as usize..]);
    assert_eq!(second.lines(), after_sync);
    let mut all = first.lines();
    all.extend(second.lines());
    let mut expected = numbered_lines("batch a ", 0, 300);
    expected.extend(numbered_lines("batch b ", 0, 300));
    expected.extend(numbered_lines("batch c ", 0, 300));
    let seen: std::collections::HashSet<&String> = all.iter().collect();
    for line in &expected {
        assert!(seen.contains(line), "{line:?} was never printed");
    }
    for dup in duplicates(&all) {
        assert!(
            dup.starts_with("batch b "),
            "{dup:?} printed twice, but it was synced before the kill"
        );
    }
    eprintln!(
        "kill -9: {} lines printed again after the restart",
        duplicates(&all).len()
    );
}

#[test]
fn a_promtail_positions_file_is_imported_then_rewritten_in_logferry_format() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("line ", 0, 10));
    let offset = numbered("line ", 0, 4).len();
    let config = Config::new(dir.path(), &log);
    let positions = config.positions.clone();
    std::fs::write(
        &positions,
        format!(
            "positions:\n  {}: \"{offset}\"\n  journal-system: \"s=0123;i=1\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&positions, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("line 9", SOON);
    append(&log, "line 10\n");
    agent.wait_for_line("line 10", SOON);
    agent.stop();
    assert_eq!(agent.lines(), numbered_lines("line ", 4, 7));

    let text = std::fs::read_to_string(&positions).unwrap();
    assert!(
        !text.lines().any(|l| l.starts_with("positions:")),
        "still Promtail's format:\n{text}"
    );
    let records = read_positions(&positions);
    let record = records
        .iter()
        .find(|p| p.path == log.display().to_string())
        .unwrap_or_else(|| panic!("no record for the file:\n{text}"));
    let (device, inode) = file_id(&log);
    assert_eq!(record.offset, std::fs::metadata(&log).unwrap().len());
    assert_eq!((record.device, record.inode), (Some(device), Some(inode)));
    assert!(record.fingerprint.is_some());
    let mode = std::fs::metadata(&positions).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "positions file mode {mode:o}");
}

#[test]
fn a_corrupt_positions_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "a line\n");
    let config = Config::new(dir.path(), &log);
    let positions = config.positions.clone();
    let garbage = "files:\n- path: /x\n  offset: [unclosed\n";
    std::fs::write(&positions, garbage).unwrap();

    let mut agent = Agent::spawn(command(&config.write(dir.path())));
    let status = agent.wait_exit(SOON).expect("logferry kept running");
    assert_eq!(status.code(), Some(78), "stderr:\n{}", agent.stderr());
    let stderr = agent.stderr();
    assert!(
        stderr.contains(&positions.display().to_string()) && stderr.contains("corrupt"),
        "stderr does not name the corrupt positions file:\n{stderr}"
    );
    assert!(agent.lines().is_empty());
    assert_eq!(std::fs::read_to_string(&positions).unwrap(), garbage);
}

#[test]
fn ignore_invalid_yaml_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("line ", 0, 5));
    let config = Config::new(dir.path(), &log).positions_key("ignore_invalid_yaml: true");
    let positions = config.positions.clone();
    std::fs::write(&positions, "\u{0}\u{1}garbage: [\n").unwrap();

    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("line 4", SOON);
    agent.stop();
    assert_eq!(agent.lines(), numbered_lines("line ", 0, 5));
    assert!(
        agent.stderr().contains("corrupt"),
        "no warning about the corrupt file:\n{}",
        agent.stderr()
    );
    assert_eq!(
        position_of(&positions, &log),
        Some(std::fs::metadata(&log).unwrap().len())
    );
}

#[test]
fn a_leftover_temporary_positions_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("line ", 0, 5));
    let config = Config::new(dir.path(), &log);
    let positions = config.positions.clone();
    // Positions of a previous run, and a write of it that was interrupted.
    std::fs::write(
        &positions,
        format!(
            "positions:\n  {}: \"{}\"\n",
            log.display(),
            "line 0\n".len()
        ),
    )
    .unwrap();
    let temp = dir.path().join("positions.yaml.tmp");
    std::fs::write(&temp, "files: [half written").unwrap();

    let mut agent = Agent::start(&config.write(dir.path()));
    assert!(!temp.exists(), "the leftover temporary file is still there");
    agent.wait_for_line("line 4", SOON);
    agent.stop();
    // The real positions file was used: line 0 was delivered before.
    assert_eq!(agent.lines(), numbered_lines("line ", 1, 4));
    assert!(!temp.exists());
}

#[test]
fn dry_run_never_creates_or_changes_the_positions_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("line ", 0, 5));
    let config = Config::new(dir.path(), &log).positions_sync("100ms");
    let positions = config.positions.clone();
    let config = config.write(dir.path());

    // Without a positions file: none is created, even after many sync periods.
    let mut cmd = command(&config);
    cmd.arg("-dry-run");
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_line("line 4", SOON);
    std::thread::sleep(Duration::from_millis(800));
    agent.stop();
    assert_eq!(agent.lines(), numbered_lines("line ", 0, 5));
    assert!(!positions.exists(), "dry-run created the positions file");

    // With one from a real run: it is read (printing resumes there) and left as it was.
    let mut real = Agent::start(&config);
    real.wait_for_line("line 4", SOON);
    real.stop();
    let before = std::fs::read(&positions).unwrap();
    let mtime = std::fs::metadata(&positions).unwrap().modified().unwrap();
    append(&log, numbered("more ", 0, 3));
    let mut cmd = command(&config);
    cmd.arg("--dry-run");
    let mut dry = Agent::start_cmd(cmd);
    dry.wait_for_line("more 2", SOON);
    std::thread::sleep(Duration::from_millis(800));
    dry.stop();
    assert_eq!(dry.lines(), numbered_lines("more ", 0, 3));
    assert_eq!(std::fs::read(&positions).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&positions).unwrap().modified().unwrap(),
        mtime
    );
    assert!(!dir.path().join("positions.yaml.tmp").exists());
}
