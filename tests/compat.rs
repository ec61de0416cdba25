//! The differential corpus: logferry against what Promtail 2.8 printed.
//!
//! Each directory under `tests/compat/` holds `config.yaml`, `input.txt` and `expected.txt`,
//! the output of the real Promtail for `TZ=UTC promtail -stdin -dry-run` on that config and
//! input, written by `scripts/compat-regen` (never by hand, never from logferry's output). This
//! test runs `logferry -stdin -dry-run` on every case and compares. A case whose
//! `expected.txt` is `<rejected>` is a config Promtail refuses: logferry must exit with an error
//! and print no entry.
//!
//! Both outputs go through these normalisations, each one for something that is Promtail's own
//! behaviour rather than a property of the entries:
//!
//! - **Promtail's printer is a Go tab-aligning writer** (`text/tabwriter`, tab width 8, flushed
//!   after each entry). It pads every tab-terminated field with tabs up to the next multiple of
//!   8 columns, so a field whose width is already a multiple of 8 gets no separator at all, an
//!   empty field none either, and tabs inside a multi-line entry are re-padded to the width of
//!   the timestamp. logferry prints fields separated by exactly one tab (a deliberate
//!   difference, see docs/pipeline.md); the runner passes each of logferry's entries through the
//!   same alignment rules before comparing.
//! - **Read-time timestamps** change at every run: a timestamp within the run (±2 s) becomes
//!   `READ_TIME` (the regen script did the same to Promtail's output).
//! - **Order between streams**: logferry prints what one read produced grouped by label set
//!   (a known difference outside the pipeline), and Promtail's own order between streams varies
//!   from run to run when a `match` stage sends entries down different paths; both outputs are
//!   grouped by label set, groups sorted by labels, keeping the order within a label set.
//!
//! Cases in [`KNOWN_DIFFERENCES`] and [`NOT_YET_PREFIXES`] are not compared; each names its
//! reason. A case with a `deliberate.txt` is one where Promtail is plainly wrong (it loses an
//! entry, refuses what its documentation allows): logferry is compared with
//! `logferry-expected.txt` instead, written by hand and reviewed, and `deliberate.txt` says why.
//!
//! To regenerate the expected files from Promtail: `scripts/compat-regen` (see its header).

mod common;

use regex::Regex;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Cases not compared, with the reason: differences that live outside the pipeline (the
/// tailer and the printer), listed in docs/pipeline.md, and differences not resolved yet.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// Case-name prefixes not compared yet, with the reason.
const NOT_YET_PREFIXES: &[(&str, &str)] = &[];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("compat")
}

fn cases() -> Vec<String> {
    common::case_names(&corpus())
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    started: chrono::DateTime<chrono::Utc>,
    ended: chrono::DateTime<chrono::Utc>,
}

fn run(dir: &Path) -> Run {
    let input = std::fs::File::open(dir.join("input.txt")).unwrap();
    let started = chrono::Utc::now();
    let child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["-config.file=config.yaml", "-stdin", "-dry-run"])
        .env("TZ", "UTC")
        .current_dir(dir)
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let ended = chrono::Utc::now();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        started,
        ended,
    }
}

/// Go's `text/tabwriter` with Promtail's settings (min width 0, tab width 8, padding 0, tabs
/// as padding, no flags) applied to one flushed block of text.
fn tab_align(text: &str) -> String {
    let ends_with_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<Vec<&str>> = body.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    format_block(&lines, &mut widths, 0, lines.len(), &mut out);
    if !ends_with_newline {
        out.pop();
    }
    out
}

fn format_block(
    lines: &[Vec<&str>],
    widths: &mut Vec<usize>,
    mut line0: usize,
    line1: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, widths, line0, this, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count());
            this += 1;
        }
        widths.push(width);
        format_block(lines, widths, line0, this, out);
        widths.pop();
        line0 = this;
        // Like the reference, the line that ended the block is not looked at again.
        this += 1;
    }
    write_lines(lines, widths, line0, line1, out);
}

fn write_lines(
    lines: &[Vec<&str>],
    widths: &[usize],
    line0: usize,
    line1: usize,
    out: &mut String,
) {
    for line in &lines[line0..line1.min(lines.len())] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(&width) = widths.get(j)
                && j + 1 < line.len()
            {
                let cell_width = width.div_ceil(8) * 8;
                let pad = cell_width - cell.chars().count();
                for _ in 0..pad.div_ceil(8) {
                    out.push('\t');
                }
            }
        }
        out.push('\n');
    }
}

/// Where each entry of logferry's output starts: `<timestamp>\t<labels>\t`.
fn entry_header() -> Regex {
    Regex::new(
        r#"(?m)^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?[+-]\d{4})\t(\{(?:[^"}\n]|"(?:[^"\\\n]|\\.)*")*\})\t"#,
    )
    .unwrap()
}

/// A header after alignment: the separators may be missing.
fn aligned_header() -> Regex {
    Regex::new(
        r#"(?m)^(READ_TIME|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?[+-]\d{4})\t*(\{(?:[^"}\n]|"(?:[^"\\\n]|\\.)*")*\})\t*"#,
    )
    .unwrap()
}

/// logferry's output as Promtail's printer would have laid it out.
fn as_promtail_prints(stdout: &str, run: &Run) -> String {
    let header = entry_header();
    let starts: Vec<usize> = header.find_iter(stdout).map(|m| m.start()).collect();
    let from = run.started - chrono::Duration::seconds(2);
    let to = run.ended + chrono::Duration::seconds(2);
    let mut out = String::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(stdout.len());
        let entry = &stdout[start..end];
        let Some(c) = header.captures(entry) else {
            continue;
        };
        let whole = c.get(0).map_or(0, |m| m.end());
        let ts = &c[1];
        let labels = &c[2];
        let rebuilt = format!("{ts}\t{labels}\t{}", &entry[whole..]);
        let aligned = tab_align(&rebuilt);
        let is_read_time = chrono::DateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f%z")
            .map(|t| t >= from && t <= to)
            .unwrap_or(false);
        if is_read_time {
            out.push_str("READ_TIME");
            out.push_str(&aligned[ts.len()..]);
        } else {
            out.push_str(&aligned);
        }
    }
    out
}

/// Entries grouped by label set, `READ_TIME` always followed by one tab.
fn grouped(text: &str) -> String {
    let header = aligned_header();
    let starts: Vec<usize> = header.find_iter(text).map(|m| m.start()).collect();
    let mut groups: Vec<(String, String)> = Vec::new();
    if let Some(&first) = starts.first() {
        if first > 0 {
            groups.push(("<before any entry>".into(), text[..first].to_string()));
        }
    } else if !text.is_empty() {
        groups.push(("<no entry>".into(), text.to_string()));
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let mut entry = text[start..end].to_string();
        if let Some(rest) = entry.strip_prefix("READ_TIME") {
            entry = format!("READ_TIME\t{}", rest.trim_start_matches('\t'));
        }
        let labels = header
            .captures(&text[start..end])
            .map(|c| c[2].to_string())
            .unwrap_or_default();
        match groups.iter_mut().find(|(l, _)| *l == labels) {
            Some(group) => group.1.push_str(&entry),
            None => groups.push((labels, entry)),
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups.into_iter().map(|(_, e)| e).collect()
}

/// Compares one case; returns a description of the difference.
fn check(name: &str) -> Result<(), String> {
    let dir = corpus().join(name);
    let deliberate = dir.join("deliberate.txt").exists();
    let expected_file = if deliberate {
        "logferry-expected.txt"
    } else {
        "expected.txt"
    };
    let expected = std::fs::read_to_string(dir.join(expected_file)).unwrap();
    let run = run(&dir);
    if expected == "<rejected>\n" {
        let printed = entry_header().is_match(&run.stdout);
        if run.ok || printed {
            return Err(format!(
                "{name}: Promtail rejects this config; logferry exit ok={} and printed:\n{}",
                run.ok, run.stdout
            ));
        }
        return Ok(());
    }
    if !run.ok {
        return Err(format!("{name}: logferry failed:\n{}", run.stderr));
    }
    let got = grouped(&as_promtail_prints(&run.stdout, &run));
    let want = grouped(&expected);
    if got != want {
        return Err(format!(
            "{name}: output differs\n--- Promtail\n{want}--- logferry\n{got}--- logferry raw\n{}",
            run.stdout
        ));
    }
    Ok(())
}

#[test]
fn logferry_prints_what_promtail_printed() {
    let names: Vec<String> = cases()
        .into_iter()
        .filter(|n| !KNOWN_DIFFERENCES.iter().any(|(k, _)| k == n))
        .filter(|n| !NOT_YET_PREFIXES.iter().any(|(p, _)| n.starts_with(p)))
        .collect();
    assert!(names.len() >= 300, "corpus too small: {}", names.len());
    common::assert_cases_match(names, 2, check);
}

#[test]
fn known_differences_name_existing_cases() {
    let names = cases();
    for (case, reason) in KNOWN_DIFFERENCES {
        assert!(names.iter().any(|n| n == case), "{case}: no such case");
        assert!(!reason.is_empty(), "{case}: no reason given");
    }
    for (prefix, _) in NOT_YET_PREFIXES {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "{prefix}: no such case"
        );
    }
    for name in &names {
        let dir = corpus().join(name);
        if dir.join("deliberate.txt").exists() {
            assert!(
                dir.join("logferry-expected.txt").exists(),
                "{name}: deliberate difference without logferry-expected.txt"
            );
        }
    }
}

#[test]
fn tab_alignment_follows_go_tabwriter() {
    // Widths that are multiples of 8 get no separator; others one tab.
    assert_eq!(tab_align("12345678\tab\tline\n"), "12345678ab\tline\n");
    // A continuation line's leading tab is padded to the first field's width.
    assert_eq!(
        tab_align("1234567890\tx\tl\n\tat\n"),
        "1234567890\tx\tl\n\t\tat\n"
    );
    // Empty fields between tabs collapse.
    assert_eq!(tab_align("ab\tcd\t\tef\n"), "ab\tcd\tef\n");
}
