//! Golden tests of the pipeline stages, through the real binary.
//!
//! Each directory under `fixtures/` that has a `pipeline.yaml` holds a log file and the output
//! logferry must print for it: `expected.txt`. The test writes a config whose only scrape config
//! is named after the fixture (`job` label too) and whose `pipeline_stages` are `pipeline.yaml`,
//! runs `logferry -stdin -dry-run` with `TZ=UTC` and the log file on standard input, and compares
//! the whole of standard output (`<timestamp>\t<labels>\t<line>` per entry; an entry can span
//! several lines) with `expected.txt`, after these normalizations that keep the goldens stable:
//!
//! - entries are grouped by label set, in the order each label set first appears, keeping their
//!   order within a label set (logferry prints what one read produced grouped that way; the
//!   order between streams is not what these tests check, the order within one is);
//! - no entry may carry a `hostname` label: with a scrape config, Promtail's `-stdin` labels are
//!   its static labels only;
//! - a timestamp that no stage set is the time the line was read: any timestamp within the run
//!   (±1 s) becomes `READ_TIME`, so a golden also records which entries kept their read time;
//! - in fixtures whose lines have no year (`syslog`), the year of an entry whose line starts with
//!   an RFC 3164 date is checked to be the one Promtail assumes (the current year; the previous
//!   one for a December date read in January, the next one for a January date read in December)
//!   and becomes `YYYY`.
//!
//! To rewrite the goldens after an intended change, run
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --release --test golden
//! ```
//!
//! and review the diff of `fixtures/*/expected.txt` line by line before keeping it: a golden is
//! only worth what its review was.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, FixedOffset, Utc};
use regex::Regex;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fixtures that have a pipeline; `every_fixture_with_a_pipeline_has_a_test` keeps this list
/// and the directory in step.
const FIXTURES: &[&str] = &[
    "nginx", "apache", "syslog", "docker", "cri", "java", "json", "logfmt",
];

/// Fixtures whose timestamps are parsed with a layout that has no year.
const YEARLESS: &[&str] = &["syslog"];

/// How long one run may take before the test gives up on the binary.
const DEADLINE: Duration = Duration::from_secs(60);

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The fixture's log file: its only regular file other than `pipeline.yaml`, `expected.txt` and
/// `README.md`.
fn input_file(dir: &Path) -> PathBuf {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            !matches!(name, "pipeline.yaml" | "expected.txt" | "README.md")
        })
        .collect();
    assert_eq!(
        inputs.len(),
        1,
        "{}: expected exactly one log file, found {inputs:?}",
        dir.display()
    );
    inputs.pop().unwrap()
}

/// A config with one scrape config named `name`, whose stages are `pipeline_yaml`.
fn config_yaml(name: &str, pipeline_yaml: &str, positions: &Path) -> String {
    let mut yaml = format!(
        "server: {{http_listen_port: 0}}\n\
         positions: {{filename: '{}'}}\n\
         scrape_configs:\n\
         - job_name: {name}\n  \
           static_configs: [{{labels: {{job: {name}}}}}]\n  \
           pipeline_stages:\n",
        positions.display()
    );
    for line in pipeline_yaml.lines() {
        if !line.trim().is_empty() {
            yaml.push_str("    ");
            yaml.push_str(line);
        }
        yaml.push('\n');
    }
    yaml
}

/// What one run printed, and the wall-clock span of the run.
struct Run {
    stdout: String,
    stderr: String,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
}

/// Runs the binary on fixture `name`, its log file on standard input.
fn run(name: &str) -> Run {
    let dir = fixtures_dir().join(name);
    let pipeline = std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap();
    // A regular file, not a pipe, on standard input: every read returns all it asks for, so
    // how the input is cut into reads (and so into chunks) does not depend on timing.
    let input = std::fs::File::open(input_file(&dir)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(name, &pipeline, &tmp.path().join("positions.yaml")),
    )
    .unwrap();

    let started = Utc::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg(format!("-config.file={}", config.display()))
        .args(["-stdin", "-dry-run", "-log.level=warn"])
        .env("TZ", "UTC")
        .current_dir(tmp.path())
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: logferry did not exit within {DEADLINE:?} after its input ended");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let ended = Utc::now();
    let stdout = out_reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    assert!(status.success(), "{name}: logferry {status}\n{stderr}");
    let stdout = String::from_utf8(stdout)
        .unwrap_or_else(|e| panic!("{name}: output is not UTF-8: {e}\n{stderr}"));
    Run {
        stdout,
        stderr,
        started,
        ended,
    }
}

/// The year Promtail gives a date of `month` without a year, read at `now`.
fn assumed_year(month: u32, now: DateTime<Utc>) -> i32 {
    match (month, now.month()) {
        (12, 1) => now.year() - 1,
        (1, 12) => now.year() + 1,
        _ => now.year(),
    }
}

/// The printed entries with the replacements of the module documentation, grouped by label set.
/// Panics when an entry's hostname or assumed year is wrong.
fn normalize(name: &str, run: &Run) -> String {
    // The start of each entry: its timestamp and labels (label values are Go-quoted strings),
    // and, for the year check, the RFC 3164 date a line may start with.
    let header = Regex::new(
        r#"(?m)^(\d{4})(-(\d{2})-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?[+-]\d{4})\t(\{(?:[^"}\n]|"(?:[^"\\\n]|\\.)*")*\})\t([A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} )?"#,
    )
    .unwrap();
    let from = run.started - ChronoDuration::seconds(1);
    let to = run.ended + ChronoDuration::seconds(1);
    let yearless = YEARLESS.contains(&name);
    let out = &run.stdout;
    let starts: Vec<usize> = header.find_iter(out).map(|m| m.start()).collect();
    assert!(
        starts.first().copied().unwrap_or(out.len()) == 0,
        "{name}: the output does not start with an entry:\n{}",
        truncate(out)
    );
    // (labels, entries) in the order each label set first appears.
    let mut streams: Vec<(String, String)> = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(out.len());
        let text = &out[start..end];
        let n = i + 1;
        let c = header.captures(text).unwrap();
        let (year, rest, labels) = (&c[1], &c[2], &c[4]);
        let rfc3164 = c.get(5).map_or("", |m| m.as_str());
        assert!(
            !labels.contains("hostname="),
            "{name}: entry {n} has labels {labels}: a scrape config's labels only, no hostname"
        );
        let labels = labels.to_string();
        let ts = format!("{year}{rest}");
        let parsed: DateTime<FixedOffset> = DateTime::parse_from_str(&ts, "%Y-%m-%dT%H:%M:%S%.f%z")
            .unwrap_or_else(|e| panic!("{name}: entry {n}: bad timestamp {ts:?}: {e}"));
        let ts = if parsed >= from && parsed <= to {
            "READ_TIME".to_string()
        } else if yearless && !rfc3164.is_empty() {
            let month: u32 = c[3].parse().unwrap();
            let want = assumed_year(month, run.started);
            assert_eq!(
                year,
                want.to_string(),
                "{name}: entry {n} ({rfc3164:?}) has timestamp {ts}: wrong assumed year"
            );
            format!("YYYY{rest}")
        } else {
            ts
        };
        let entry = format!("{ts}\t{labels}\t{}", &text[c[0].len() - rfc3164.len()..]);
        match streams.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, entries)) => entries.push_str(&entry),
            None => streams.push((labels, entry)),
        }
    }
    streams.into_iter().map(|(_, entries)| entries).collect()
}

/// Where the first difference is, with a few lines of each side around it.
fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (
        expected.split_inclusive('\n').collect(),
        actual.split_inclusive('\n').collect(),
    );
    let i = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let show = |v: &[&str]| {
        v.iter()
            .skip(i.saturating_sub(2))
            .take(5)
            .map(|l| format!("    {:?}\n", truncate(l)))
            .collect::<String>()
    };
    format!(
        "first difference at output line {} (expected {} lines, got {}):\n  expected:\n{}  actual:\n{}",
        i + 1,
        e.len(),
        a.len(),
        show(&e),
        show(&a)
    )
}

fn truncate(line: &str) -> String {
    if line.len() <= 300 {
        return line.to_string();
    }
    let mut end = 300;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &line[..end], line.len())
}

fn golden(name: &str) {
    let run = run(name);
    let actual = normalize(name, &run);
    let expected_path = fixtures_dir().join(name).join("expected.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&expected_path, &actual).unwrap();
        eprintln!("{name}: wrote {}", expected_path.display());
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_GOLDEN=1 writes it; review it before keeping it)",
            expected_path.display()
        )
    });
    if expected != actual {
        let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("golden-{name}.txt"));
        std::fs::write(&saved, &actual).unwrap();
        panic!(
            "{name}: output differs from {}\n{}\nwhole output (normalized): {}\nstderr:\n{}",
            expected_path.display(),
            first_difference(&expected, &actual),
            saved.display(),
            run.stderr
        );
    }
}

#[test]
fn every_fixture_with_a_pipeline_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("pipeline.yaml").is_file())
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    found.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "fixtures with a pipeline.yaml vs FIXTURES");
}

#[test]
fn config_indents_the_stages() {
    let yaml = config_yaml(
        "x",
        "# comment\n- regex:\n    expression: 'a'\n\n- labels: {a: }\n",
        Path::new("/p"),
    );
    assert!(
        yaml.ends_with(
            "  pipeline_stages:\n    # comment\n    - regex:\n        expression: 'a'\n\n    - labels: {a: }\n"
        ),
        "{yaml}"
    );
}

macro_rules! golden_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                golden(stringify!($name));
            }
        )*
    };
}

golden_tests!(nginx, apache, syslog, docker, cri, java, json, logfmt);
