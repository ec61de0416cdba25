//! Crashes and a full disk, through the real binary: after kill -9 only what was in flight at
//! the kill comes again, and a positions write that fails is logged, counted and retried while
//! the previous file stays whole. `scripts/fault` measures the figures under load.

mod common;

use common::*;
use loki_receiver::Receiver;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the receiver counts as delivered but perhaps not yet recorded at a kill: everything it
/// accepted this long before the kill. Positions are written within a fifth of a second of
/// an acknowledgement; the rest is room for a slow machine.
const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(2);

fn config(dir: &Path, receiver: &Receiver, http_port: u16) -> std::path::PathBuf {
    // The default positions.sync_period (10s), as a user who never set it has.
    Config::new(dir, dir.join("*.log"))
        .positions_sync("10s")
        .extra(&format!(
            "server:\n  http_listen_port: {http_port}\nclients:\n  - url: {}\n    batchwait: 200ms\n",
            receiver.url()
        ))
        .write(dir)
}

/// Appends numbered lines to `path` in bursts every 10 ms until told to stop.
fn steady_writer(path: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Acquire) {
            append(&path, numbered("line ", n, 10));
            n += 10;
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    })
}

#[test]
fn after_kill_9_only_lines_in_flight_come_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let loki = Receiver::start();
    let cfg = config(dir.path(), &loki, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = steady_writer(&log, stop.clone());
    let mut first = Agent::start(&cfg);
    // Twice as long as the window: with positions as old as `sync_period` (10s) said before,
    // about every line delivered would come again.
    assert!(loki.wait_for_entries(4000, LONG), "nothing shipped");
    first.kill9();
    let killed_at = Instant::now();
    let in_flight: usize = loki
        .requests()
        .iter()
        .filter(|r| killed_at.duration_since(r.arrived_at) <= IN_FLIGHT_WINDOW)
        .map(|r| r.accepted_entries)
        .sum();
    let delivered_before = loki.entry_count();

    let mut second = Agent::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    let written = writer.join().unwrap();
    let all = numbered_lines("line ", 0, written);
    assert!(
        wait_until(LONG, || {
            let got: std::collections::HashSet<String> = loki.lines().into_iter().collect();
            all.iter().all(|l| got.contains(l))
        }),
        "lines lost after kill -9; stderr:\n{}",
        second.tail_of_stderr()
    );
    second.stop();

    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in loki.lines() {
        *seen.entry(line).or_default() += 1;
    }
    let repeated = seen.values().filter(|&&n| n > 1).count();
    eprintln!(
        "kill -9 after {delivered_before} lines delivered: {repeated} came again; \
         {in_flight} were accepted in the {IN_FLIGHT_WINDOW:?} before the kill"
    );
    assert!(
        repeated <= in_flight,
        "{repeated} lines came twice, more than the {in_flight} delivered in the \
         {IN_FLIGHT_WINDOW:?} before the kill (of {delivered_before} in all)"
    );
}

#[test]
fn a_full_disk_is_logged_counted_and_retried_and_the_previous_positions_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("before ", 0, 100));
    let loki = Receiver::start();
    let port = free_port();
    let cfg = config(dir.path(), &loki, port);
    let positions = dir.path().join("positions.yaml");
    let mut agent = Agent::start(&cfg);
    let first_end = std::fs::metadata(&log).unwrap().len();
    assert!(
        wait_until(SOON, || position_of(&positions, &log) == Some(first_end)),
        "the first lines never reached the positions file"
    );

    // The next write of the temporary file fails with ENOSPC, as on a full disk: it goes to
    // /dev/full. The failed write removes the link, so the retry finds room again.
    let temp = dir.path().join("positions.yaml.tmp");
    assert!(
        wait_until(SOON, || std::os::unix::fs::symlink("/dev/full", &temp)
            .is_ok()),
        "could not put the full disk in place"
    );
    append(&log, numbered("after ", 0, 100));
    let end = std::fs::metadata(&log).unwrap().len();
    assert!(
        wait_until(SOON, || {
            // Whatever happens, the file on disk is whole, and never past what was delivered.
            let recorded = position_of(&positions, &log);
            assert!(recorded.is_some_and(|p| p >= first_end && p <= end));
            metric_value(&metrics(port), "logferry_positions_write_errors_total") >= Some(1.0)
        }),
        "the failed write was not counted; stderr:\n{}",
        agent.tail_of_stderr()
    );
    assert!(
        agent.stderr().contains("No space left on device"),
        "the failed write was not logged:\n{}",
        agent.tail_of_stderr()
    );
    assert!(
        wait_until(SOON, || position_of(&positions, &log) == Some(end)),
        "the write was not retried; stderr:\n{}",
        agent.tail_of_stderr()
    );
    assert!(metric_value(&metrics(port), "logferry_positions_writes_total") >= Some(2.0));
    agent.stop();
    assert!(loki.lines().contains(&"after 99".to_string()));
}

/// A positions file cut short, or filled with NUL bytes as a crash can leave a file whose size
/// was written but not its data: logferry stops at once with a status (78) that its systemd
/// unit does not restart on, so it does not crash-loop, and says which file and what to do.
#[test]
fn a_damaged_positions_file_stops_the_start_with_a_status_that_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("line ", 0, 10));
    let loki = Receiver::start();
    let cfg = config(dir.path(), &loki, 0);
    let positions = dir.path().join("positions.yaml");
    let mut agent = Agent::start(&cfg);
    assert!(loki.wait_for_entries(10, SOON));
    agent.stop();
    let whole = std::fs::read_to_string(&positions).unwrap();
    let cut = whole.find("fingerprint: ").unwrap() + "fingerprint: ".len() + 5;

    for damaged in [whole[..cut].to_string(), "\0".repeat(whole.len())] {
        std::fs::write(&positions, &damaged).unwrap();
        let mut agent = Agent::spawn(command(&cfg));
        let status = agent.wait_exit(LONG).expect("logferry kept running");
        assert_eq!(status.code(), Some(78), "{}", agent.stderr());
        let stderr = agent.stderr();
        assert!(
            stderr.contains(&positions.display().to_string())
                && stderr.contains("ignore_invalid_yaml"),
            "the error does not name the file and the way out:\n{stderr}"
        );
        assert_eq!(std::fs::read_to_string(&positions).unwrap(), damaged);
    }
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/logferry.service"),
    )
    .unwrap();
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78"));
}
