//! Throughput of the pipeline stages, in lines per second, next to the floor every stage pays.
//!
//! Each case prepares a few thousand realistic lines of its format once, outside the timed part.
//! One iteration makes an [`Entry`] of each line (with the three labels a file target has),
//! runs it through a [`Pipeline`] of that case's stages, copies the line of what comes out into
//! a chunk's text and reuses the entry for the next line, as the tailer does (entries whose
//! lines stages merged into others come back through [`Pipeline::take_spent`]), and flushes
//! what stages hold at the end, so that every line has come out; `Instant::now()` is read once
//! per iteration.
//!
//! - `pipeline`: the case's stages (the cases, their lines and stages: `common/cases.rs`).
//! - `baseline`: the same lines through a pipeline without stages, i.e. making the entries and
//!   passing them on. `pipeline` over `baseline` is what the stages cost.
//! - `floor`: the parsing alone, in-process, as a program that only wants the values would do
//!   it (see `common/cases.rs`).
//!   `pipeline` over `floor` is how far the stages are from the work itself. Where the parsing
//!   is cheap (`cri`, `multiline`), `baseline` alone is several times `floor` (making an entry
//!   writes its line, labels and extracted map); `pipeline` minus `baseline`, over `floor`, is
//!   then the distance of the stages' own work.
//!
//! Before timing, each case runs its lines once and checks that the stages did what they are
//! there for (the regex matched, labels and timestamps were set, pieces were joined), so the
//! figures are those of the parsing path, not of lines that fail to parse.
//!
//! ```sh
//! cargo bench --bench stages
//! ```

use divan::Bencher;
use divan::counter::ItemsCount;
use logferry::entry::Timestamp;
use logferry::pipeline::{CustomMetrics, Entry, Labels, Pipeline};
use std::collections::BTreeMap;
use std::time::Instant;

#[path = "common/cases.rs"]
mod cases;

fn main() {
    divan::main();
}

/// Lines per iteration.
const LINES: usize = 4096;

/// The read time the entries start with (2027): later than every time in the lines, so an
/// entry whose time a stage set is earlier.
const READ_TIME: i64 = 1_800_000_000_000_000_000;

const CASES: &[&str] = &[
    "regex",
    "json",
    "logfmt",
    "docker",
    "cri",
    "multiline",
    "chain",
    "docker-json",
    "cri-logfmt",
];

/// The input lines of a case.
fn lines(case: &str) -> Vec<String> {
    let mut lines = Vec::with_capacity(LINES + 8);
    let mut i = 0;
    while lines.len() < LINES {
        cases::entry_lines(case, i, &mut lines);
        i += 1;
    }
    lines.truncate(LINES);
    lines
}

fn labels() -> BTreeMap<String, String> {
    [
        ("job", "varlogs"),
        ("hostname", "web-01"),
        ("filename", "/var/log/app/current.log"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn pipeline(case: &str, with_stages: bool) -> Pipeline {
    let yaml: Vec<serde_yaml_ng::Value> = if with_stages {
        serde_yaml_ng::from_str(&cases::stages_yaml(case)).unwrap()
    } else {
        Vec::new()
    };
    Pipeline::new(&yaml, &CustomMetrics::default(), "bench").unwrap()
}

/// One iteration: every line through `p`, then what the stages hold. Entries are made from
/// spare ones (`spare`), as the tailer does: what comes out of the stages has its line copied
/// into a chunk's text (`text`) and goes back to `spare` at once, ready for the next line;
/// with `kept`, what comes out is kept there instead (to check it). The entries stages merged
/// into others go to `spare` at the end.
fn run(
    p: &mut Pipeline,
    lines: &[String],
    labels: &Labels,
    spare: &mut Vec<Entry>,
    mut kept: Option<&mut Vec<Entry>>,
    text: &mut String,
) {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    text.clear();
    let mut settle = |out: &mut Vec<Entry>, spare: &mut Vec<Entry>| {
        for e in out.drain(..) {
            text.push_str(&e.line);
            match kept.as_deref_mut() {
                Some(kept) => kept.push(e),
                None => spare.push(e),
            }
        }
    };
    for (i, line) in lines.iter().enumerate() {
        let ts = Timestamp::from_nanos(READ_TIME + i as i64);
        let entry = match spare.pop() {
            Some(mut e) => {
                e.refill(ts, line, labels, i as u64);
                e
            }
            None => Entry::with_labels(ts, line.as_str(), labels.clone(), i as u64),
        };
        p.process(entry, now, &mut out, &mut dropped);
        settle(&mut out, spare);
    }
    p.flush_all(&mut out);
    settle(&mut out, spare);
    p.take_dropped(&mut dropped);
    assert!(dropped.is_empty());
    p.take_spent(spare);
}

/// Checks that the case's stages did their work on its lines.
fn check(case: &str, lines: &[String], out: &[Entry]) {
    let read = READ_TIME;
    let all = |what: &str, ok: &dyn Fn(&Entry) -> bool| {
        assert!(out.iter().all(ok), "{case}: not every entry {what}");
    };
    match case {
        "regex" => {
            assert_eq!(out.len(), lines.len());
            all("has its status extracted", &|e| {
                e.extracted.contains_key("status")
            });
        }
        "json" | "logfmt" => {
            assert_eq!(out.len(), lines.len());
            all("has its keys extracted", &|e| {
                ["time", "level", "msg", "status"]
                    .iter()
                    .all(|k| e.extracted.contains_key(k))
            });
        }
        "docker" => {
            assert_eq!(out.len(), lines.len());
            all("was parsed", &|e| {
                e.labels.contains_key("stream") && e.line.ends_with('\n') && e.timestamp.0 < read
            });
        }
        "cri" => {
            let pieces = lines.iter().filter(|l| l.contains(" stdout P ")).count();
            assert!(pieces > 0);
            assert_eq!(out.len(), lines.len() - pieces);
            all("was parsed", &|e| {
                e.labels.contains_key("stream") && e.line.contains(" HTTP/1.1\" ")
            });
        }
        "multiline" => {
            let firsts = lines.iter().filter(|l| l.starts_with("2024-")).count();
            assert_eq!(out.len(), firsts);
            assert!(out.iter().any(|e| e.line.ends_with("\t... 4 more")));
        }
        "docker-json" | "cri-logfmt" => {
            let pieces = lines.iter().filter(|l| l.contains(" stdout P ")).count();
            assert_eq!(out.len(), lines.len() - pieces);
            all("went through every stage", &|e| {
                e.labels.contains_key("level")
                    && e.labels.contains_key("stream")
                    && !e.line.contains("level")
                    && e.timestamp.0 < read
            });
        }
        "chain" => {
            assert_eq!(out.len(), lines.len());
            all("went through every stage", &|e| {
                e.labels.contains_key("level")
                    && e.labels.contains_key("stream")
                    && !e.line.starts_with("2024-")
                    && e.timestamp.0 < read
            });
        }
        other => panic!("unknown case {other}"),
    }
}

fn bench_case(bencher: Bencher, case: &str, with_stages: bool) {
    let lines = lines(case);
    let labels = Labels::from(labels());
    let mut p = pipeline(case, with_stages);
    let mut spare = Vec::new();
    let mut text = String::new();
    let mut out = Vec::new();
    run(
        &mut p,
        &lines,
        &labels,
        &mut spare,
        Some(&mut out),
        &mut text,
    );
    if with_stages {
        check(case, &lines, &out);
    }
    spare.append(&mut out);
    bencher
        .counter(ItemsCount::new(lines.len()))
        .bench_local(|| {
            run(&mut p, &lines, &labels, &mut spare, None, &mut text);
            std::hint::black_box(text.len());
        });
}

/// The case's stages.
#[divan::bench(args = CASES, sample_count = 40)]
fn pipeline_stages(bencher: Bencher, case: &str) {
    bench_case(bencher, case, true);
}

/// The same lines through a pipeline without stages: making and passing on the entries.
#[divan::bench(args = CASES, sample_count = 40)]
fn baseline(bencher: Bencher, case: &str) {
    bench_case(bencher, case, false);
}

/// The parsing alone (see the module docs).
#[divan::bench(args = CASES, sample_count = 40)]
fn floor(bencher: Bencher, case: &str) {
    let lines = lines(case);
    let mut parse = cases::parser(case);
    assert_eq!(
        lines.iter().map(|l| parse(l)).sum::<usize>(),
        lines.len(),
        "{case}: the floor's parser failed on some lines"
    );
    bencher
        .counter(ItemsCount::new(lines.len()))
        .bench_local(|| lines.iter().map(|l| parse(l)).sum::<usize>());
}
