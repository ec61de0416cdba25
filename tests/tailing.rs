//! The tailing spine, end to end: lines appended to a file come out of the real binary whole,
//! once, in order, with their labels, whatever the writer's pace or the bytes in them.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn appended_lines_arrive_once_in_order_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, numbered("before start ", 0, 3));
    let mut agent =
        Agent::start(&Config::new(dir.path(), dir.path().join("*.log")).write(dir.path()));
    agent.wait_for_count(3, SOON);

    // Many small appends, some several lines at a time.
    for i in 0..500 {
        append(&log, numbered("line ", i * 2, 2));
    }
    agent.wait_for_count(1003, SOON);
    agent.stop();

    let mut expected = numbered_lines("before start ", 0, 3);
    expected.extend(numbered_lines("line ", 0, 1000));
    assert_eq!(agent.lines(), expected);
    let labels = labels_for(&log, "test");
    for entry in agent.entries() {
        assert_eq!(entry.labels, labels);
    }
    // Timestamps go strictly forward line by line, so Loki keeps the order.
    let stamps: Vec<i64> = agent
        .entries()
        .iter()
        .map(|e| {
            chrono::DateTime::parse_from_str(&e.timestamp, "%Y-%m-%dT%H:%M:%S%.f%z")
                .unwrap_or_else(|err| panic!("bad timestamp {:?}: {err}", e.timestamp))
                .timestamp_nanos_opt()
                .unwrap()
        })
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "timestamps do not increase"
    );
}

#[test]
fn a_slow_writer_gives_whole_lines_and_an_unfinished_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("slow.log");
    let marker = dir.path().join("marker.log");
    std::fs::write(&log, "").unwrap();
    let mut agent =
        Agent::start(&Config::new(dir.path(), dir.path().join("*.log")).write(dir.path()));

    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let text = "first line\nsecond, a little longer line\nthird\n";
    for byte in text.as_bytes() {
        writer.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    agent.wait_for_line("third", SOON);
    assert_eq!(
        agent.lines(),
        vec!["first line", "second, a little longer line", "third"]
    );

    // An unfinished last line is held back...
    writer.write_all(b"unfinish").unwrap();
    writer.write_all(b"ed line").unwrap();
    // ...which we check once the agent has certainly read past it: another file written
    // afterwards was read, and the agent had some more time to misbehave.
    append(&marker, "marker\n");
    agent.wait_for_line("marker", SOON);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !agent.lines().iter().any(|l| l.starts_with("unfinish")),
        "an unfinished line was printed: {:?}",
        agent.lines()
    );
    // ...and comes out whole once its newline arrives.
    writer.write_all(b"\n").unwrap();
    agent.wait_for_line("unfinished line", SOON);
    agent.stop();
    assert_eq!(
        agent.lines_of(&log),
        vec![
            "first line",
            "second, a little longer line",
            "third",
            "unfinished line"
        ]
    );
}

#[test]
fn crlf_invalid_utf8_and_nul_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bytes.log");
    std::fs::write(&log, "").unwrap();
    let mut agent = Agent::start(&Config::new(dir.path(), &log).write(dir.path()));

    append(&log, b"windows line\r\nanother\r\n");
    // Invalid UTF-8 between valid lines in one read, and a NUL byte.
    append(
        &log,
        b"before\nbad \xff\xfe bytes\nafter\nnul\x00byte\nend\n",
    );
    agent.wait_for_line("end", SOON);
    agent.stop();
    assert_eq!(
        agent.lines(),
        vec![
            "windows line",
            "another",
            "before",
            "bad \u{fffd}\u{fffd} bytes",
            "after",
            "nul\0byte",
            "end"
        ]
    );
}

/// Writes a 50 MB line without a newline while sampling the agent's memory, then ends it and
/// writes one more line. Returns the printed lines and the peak RSS seen, in KiB.
fn huge_line(truncate: bool) -> (Vec<String>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("huge.log");
    append(&log, "before\n");
    let config = Config::new(dir.path(), &log).extra(&format!(
        "limits_config:\n  max_line_size: 1MB\n  max_line_size_truncate: {truncate}\n"
    ));
    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("before", SOON);

    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let block = vec![b'x'; 256 * 1024];
    let mut peak = 0;
    for i in 0..200 {
        writer.write_all(&block).unwrap();
        if i % 8 == 0 {
            // Let the agent catch up now and then, so it really reads the line as it grows.
            std::thread::sleep(Duration::from_millis(20));
            peak = peak.max(agent.rss_kib().unwrap().0);
        }
    }
    // The agent reads the whole 50 MB before the next line can show up: wait for it.
    writer.write_all(b"\nafter\n").unwrap();
    agent.wait_for_line("after", LONG);
    let (rss, hwm) = agent.rss_kib().unwrap();
    peak = peak.max(rss).max(hwm);
    agent.stop();
    (agent.lines(), peak)
}

const RSS_LIMIT_KIB: u64 = 40 * 1024;

#[test]
fn a_50mb_line_is_truncated_to_the_limit_in_bounded_memory() {
    let (lines, peak) = huge_line(true);
    eprintln!("peak RSS while reading a 50 MB line (truncate): {peak} KiB");
    assert_eq!(lines.len(), 3, "expected before, the head, after");
    assert_eq!(lines[0], "before");
    assert_eq!(lines[1].len(), 1 << 20, "the head is exactly max_line_size");
    assert!(lines[1].bytes().all(|b| b == b'x'));
    assert_eq!(lines[2], "after");
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}

#[test]
fn a_50mb_line_is_dropped_in_bounded_memory() {
    let (lines, peak) = huge_line(false);
    eprintln!("peak RSS while reading a 50 MB line (drop): {peak} KiB");
    assert_eq!(lines, vec!["before", "after"]);
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}

/// A file much bigger than what the pipeline holds, so that chunks are queued between the
/// tailer and the printer when the signal comes.
fn big_file(dir: &std::path::Path, lines: usize) -> std::path::PathBuf {
    let log = dir.join("big.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    for i in 0..lines {
        writeln!(
            f,
            "{i:08} 127.0.0.1 - - \"GET /index.html HTTP/1.1\" 200 612"
        )
        .unwrap();
    }
    log
}

const BIG: usize = 400_000;

#[test]
fn sigterm_with_lines_in_flight_exits_0_within_5_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = big_file(dir.path(), BIG);
    let mut agent = Agent::start(&Config::new(dir.path(), &log).write(dir.path()));
    // Stop in the middle of the file.
    agent.wait_for_count(1000, SOON);
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "logferry still runs 5 s after SIGTERM; stderr:\n{}",
        agent.tail_of_stderr()
    );
    assert!(status.unwrap().success(), "{status:?}");
    eprintln!("printed {} of {BIG} lines before stopping", agent.count());
}

/// After a SIGTERM in the middle of a big file, the positions file says exactly what was
/// printed, so the next run continues with the next line: nothing lost, nothing repeated.
#[test]
fn sigterm_with_lines_in_flight_loses_nothing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = big_file(dir.path(), BIG);
    let config = Config::new(dir.path(), &log);
    let positions = config.positions.clone();
    let config = config.write(dir.path());
    let mut first = Agent::start(&config);
    first.wait_for_count(1000, SOON);
    first.stop();

    let printed = first.lines();
    let offset = position_of(&positions, &log).expect("no position recorded for the file");
    let content = read(&log);
    let acked = file_lines(&content[..offset as usize]);
    assert_eq!(
        printed.len(),
        acked.len(),
        "lines printed vs lines the positions file says were delivered"
    );
    assert_eq!(printed, acked);

    let mut second = Agent::start(&config);
    second.wait_for_count(BIG - printed.len(), LONG);
    second.stop();
    let mut all = printed;
    all.extend(second.lines());
    assert_eq!(all.len(), BIG, "lines lost or repeated across the restart");
    assert_eq!(all, file_lines(&content));
}

/// A consumer of standard output that stopped reading (a paused `| less`, a stuck pipe): the
/// agent must still stop on SIGTERM, as a service manager expects, rather than hang until
/// SIGKILL; and what it could not print must not be recorded as delivered.
#[test]
fn sigterm_exits_even_when_standard_output_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let log = big_file(dir.path(), 200_000);
    let config = Config::new(dir.path(), &log);
    let positions = config.positions.clone();
    let mut agent = Agent::spawn_unread(command(&config.write(dir.path())));
    agent.wait_started();
    // Let it fill the pipe and block.
    std::thread::sleep(Duration::from_millis(500));
    agent.sigterm();
    // The shutdown deadline (server.graceful_shutdown_timeout) is 5 s by default.
    let status = agent.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "logferry still runs 15 s after SIGTERM; stderr:\n{}",
        agent.tail_of_stderr()
    );
    let mut printed = Vec::new();
    agent
        .take_unread()
        .unwrap()
        .read_to_end(&mut printed)
        .unwrap();
    let printed_lines = printed.iter().filter(|&&b| b == b'\n').count();
    let acked = position_of(&positions, &log).unwrap_or(0) as usize;
    let acked_lines = read(&log)[..acked].iter().filter(|&&b| b == b'\n').count();
    assert!(
        acked_lines <= printed_lines,
        "positions say {acked_lines} lines were delivered, but only {printed_lines} were printed"
    );
}
