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
//! - `pipeline`: the case's stages. `regex` (nginx combined), `json` and `logfmt` (application
//!   logs, five extracted keys), `docker` (json-file lines), `cri` (mostly `F` lines, every 64th
//!   line split into a `P` piece and its `F` end), `multiline` (log4j lines, one block in five
//!   with a stack trace), and `chain`: `docker` → `regex` → `labels` → `timestamp` → `output`
//!   on application lines inside Docker's json-file format, as a Docker host's config runs them.
//! - `baseline`: the same lines through a pipeline without stages, i.e. making the entries and
//!   passing them on. `pipeline` over `baseline` is what the stages cost.
//! - `floor`: the parsing alone, in-process, as a program that only wants the values would do
//!   it: the regex with `captures_read` into reused locations, `serde_json` into a
//!   `serde_json::Value` (Docker lines into a struct of their three keys), logfmt split on its
//!   spaces and `=`, CRI lines split on their first three spaces, the `multiline` first-line
//!   regex with lines joined into a block, and chrono for every timestamp a case's stages read.
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
];

const NGINX_REGEX: &str = r#"^(?P<remote_addr>[\w\.:]+) - (?P<remote_user>[^ ]*) \[(?P<time_local>[^\]]*)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+) "(?P<http_referer>(?:[^"\\]|\\.)*)" "(?P<http_user_agent>(?:[^"\\]|\\.)*)"$"#;

/// The `pipeline_stages` of a case.
fn stages_yaml(case: &str) -> String {
    match case {
        "regex" => format!("- regex:\n    expression: '{NGINX_REGEX}'\n"),
        "json" => "- json:\n    expressions:\n      time:\n      level:\n      msg:\n      status:\n      user_id: user.id\n".into(),
        "logfmt" => "- logfmt:\n    mapping:\n      time:\n      level:\n      msg:\n      status:\n      duration:\n".into(),
        "docker" => "- docker: {}\n".into(),
        "cri" => "- cri: {}\n".into(),
        "multiline" => "- multiline:\n    firstline: '^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2},\\d{3} '\n    max_wait_time: 3s\n".into(),
        "chain" => concat!(
            "- docker: {}\n",
            "- regex:\n",
            "    expression: '^(?P<time>\\S+) (?P<level>[A-Z]+)\\s+\\[(?P<thread>[^\\]]+)\\] (?P<logger>\\S+) - (?P<msg>.*)'\n",
            "- labels:\n",
            "    level:\n",
            "- timestamp:\n",
            "    source: time\n",
            "    format: RFC3339Nano\n",
            "- output:\n",
            "    source: msg\n",
        )
        .into(),
        other => panic!("unknown case {other}"),
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "curl/8.5.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
    "Prometheus/2.53.0",
    "kube-probe/1.30",
];
const PATHS: &[&str] = &["/", "/api/v1/items", "/static/app.js", "/login", "/healthz"];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const STATUSES: &[u16] = &[200, 200, 304, 404, 500];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const MESSAGES: &[&str] = &[
    "request done",
    "cache miss, loading from the database",
    "slow request",
    "user logged in",
    "retrying upstream call after timeout",
];

fn nginx_line(i: usize) -> String {
    format!(
        "203.0.{}.{} - - [21/Mar/2024:10:{:02}:{:02} +0100] \"{} {}?id={} HTTP/1.1\" {} {} \"https://example.com/page/{}\" \"{}\"",
        i % 7,
        i % 251,
        i / 60 % 60,
        i % 60,
        METHODS[i % METHODS.len()],
        PATHS[i % PATHS.len()],
        i,
        [200, 200, 200, 304, 404, 500][i % 6],
        100 + i * 37 % 9000,
        i % 97,
        AGENTS[i % AGENTS.len()],
    )
}

fn rfc3339(i: usize) -> String {
    format!(
        "2024-03-21T{:02}:{:02}:{:02}.{:09}Z",
        10 + i / 3600 % 12,
        i / 60 % 60,
        i % 60,
        i * 137_123 % 1_000_000_000
    )
}

/// A log4j-style line as an application writes it to its standard output.
fn app_line(i: usize) -> String {
    format!(
        "{} {:<5} [http-nio-8080-exec-{}] com.example.web.OrderController - {} order={} took={}ms",
        rfc3339(i),
        LEVELS[i % LEVELS.len()],
        i % 16,
        MESSAGES[i % MESSAGES.len()],
        9000 + i,
        i * 7 % 3000
    )
}

fn docker_line(log: &str, stream: &str, i: usize) -> String {
    serde_json::json!({"log": log, "stream": stream, "time": rfc3339(i)}).to_string()
}

/// The input lines of a case.
fn lines(case: &str) -> Vec<String> {
    let mut lines = Vec::with_capacity(LINES);
    let mut i = 0;
    while lines.len() < LINES {
        match case {
            "regex" => lines.push(nginx_line(i)),
            "json" => lines.push(
                serde_json::json!({
                    "time": rfc3339(i),
                    "level": LEVELS[i % LEVELS.len()].to_lowercase(),
                    "msg": MESSAGES[i % MESSAGES.len()],
                    "method": METHODS[i % METHODS.len()],
                    "path": PATHS[i % PATHS.len()],
                    "status": STATUSES[i % STATUSES.len()],
                    "duration_ms": (i % 900) as f64 / 7.0,
                    "user": {"id": i % 1000, "roles": ["reader"]},
                    "trace_id": format!("{:032x}", i * 2_654_435_761),
                })
                .to_string(),
            ),
            "logfmt" => lines.push(format!(
                "time={} level={} msg=\"{}\" method={} path={} status={} duration={}ms trace_id={:032x}",
                rfc3339(i),
                LEVELS[i % LEVELS.len()].to_lowercase(),
                MESSAGES[i % MESSAGES.len()],
                METHODS[i % METHODS.len()],
                PATHS[i % PATHS.len()],
                STATUSES[i % STATUSES.len()],
                i % 900,
                i * 2_654_435_761,
            )),
            "docker" => lines.push(docker_line(
                &format!("{}\n", nginx_line(i)),
                if i % 10 == 9 { "stderr" } else { "stdout" },
                i,
            )),
            "cri" => {
                let line = nginx_line(i);
                if i % 64 == 63 {
                    let (a, b) = line.split_at(line.len() / 2);
                    lines.push(format!("{} stdout P {a}", rfc3339(i)));
                    lines.push(format!("{} stdout F {b}", rfc3339(i)));
                } else {
                    lines.push(format!("{} stdout F {line}", rfc3339(i)));
                }
            }
            "multiline" => {
                lines.push(format!(
                    "2024-03-21 10:{:02}:{:02},{:03} {:<5} [main] com.example.App - {} order={}",
                    i / 60 % 60,
                    i % 60,
                    i % 1000,
                    LEVELS[i % LEVELS.len()],
                    MESSAGES[i % MESSAGES.len()],
                    9000 + i
                ));
                if i % 5 == 4 {
                    lines.push(format!(
                        "java.lang.IllegalStateException: Order {} is already shipped",
                        9000 + i
                    ));
                    for frame in [
                        "com.example.orders.OrderService.cancel(OrderService.java:118)",
                        "com.example.web.OrderController.cancel(OrderController.java:57)",
                        "java.base/java.lang.reflect.Method.invoke(Method.java:580)",
                        "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:205)",
                    ] {
                        lines.push(format!("\tat {frame}"));
                    }
                    lines.push("\t... 4 more".into());
                }
            }
            "chain" => lines.push(docker_line(&format!("{}\n", app_line(i)), "stdout", i)),
            other => panic!("unknown case {other}"),
        }
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
        serde_yaml_ng::from_str(&stages_yaml(case)).unwrap()
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
    let mut parse = parser(case);
    assert_eq!(
        lines.iter().map(|l| parse(l)).sum::<usize>(),
        lines.len(),
        "{case}: the floor's parser failed on some lines"
    );
    bencher
        .counter(ItemsCount::new(lines.len()))
        .bench_local(|| lines.iter().map(|l| parse(l)).sum::<usize>());
}

fn chrono_rfc3339(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[derive(serde::Deserialize)]
struct DockerLine {
    log: String,
    stream: String,
    time: String,
}

/// A case's parser alone: returns how many lines (0 or 1) it parsed fully, counting a
/// multiline block's continuation lines as parsed.
fn parser(case: &str) -> Box<dyn FnMut(&str) -> usize> {
    let regex_floor = |expr: &str, time_group: Option<&str>| {
        let re = regex::Regex::new(expr).unwrap();
        let mut locs = re.capture_locations();
        let time = time_group.map(|g| re.capture_names().position(|n| n == Some(g)).unwrap());
        move |line: &str| -> usize {
            if re.captures_read(&mut locs, line).is_none() {
                return 0;
            }
            match time.and_then(|t| locs.get(t)) {
                Some((a, b)) => usize::from(chrono_rfc3339(&line[a..b])),
                None => 1,
            }
        }
    };
    match case {
        "regex" => Box::new(regex_floor(NGINX_REGEX, None)),
        "json" => Box::new(|line: &str| {
            usize::from(
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            )
        }),
        "logfmt" => Box::new(|line: &str| {
            let mut pairs = 0;
            let mut rest = line;
            while !rest.is_empty() {
                let (key, after) = rest.split_once('=').unwrap_or((rest, ""));
                let (value, next) = match after.strip_prefix('"') {
                    Some(quoted) => {
                        let end = quoted.find('"').unwrap_or(quoted.len());
                        (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
                    }
                    None => after.split_once(' ').unwrap_or((after, "")),
                };
                pairs += usize::from(!key.is_empty() && !value.is_empty());
                rest = next.trim_start();
            }
            usize::from(pairs >= 5)
        }),
        "docker" => Box::new(|line: &str| {
            serde_json::from_str::<DockerLine>(line).map_or(0, |d| {
                usize::from(!d.log.is_empty() && !d.stream.is_empty() && chrono_rfc3339(&d.time))
            })
        }),
        "cri" => Box::new(|line: &str| {
            let mut parts = line.splitn(4, ' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(time), Some(_stream), Some(_flags), Some(_content)) => {
                    usize::from(chrono_rfc3339(time))
                }
                _ => 0,
            }
        }),
        "multiline" => {
            let first = regex::Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ").unwrap();
            let mut block = String::new();
            Box::new(move |line: &str| {
                if first.is_match(line) {
                    std::hint::black_box(&block);
                    block.clear();
                } else {
                    block.push('\n');
                }
                block.push_str(line);
                1
            })
        }
        "chain" => {
            let mut inner = regex_floor(
                r"^(?P<time>\S+) (?P<level>[A-Z]+)\s+\[(?P<thread>[^\]]+)\] (?P<logger>\S+) - (?P<msg>.*)",
                Some("time"),
            );
            Box::new(move |line: &str| {
                serde_json::from_str::<DockerLine>(line)
                    .map_or(0, |d| usize::from(chrono_rfc3339(&d.time)) * inner(&d.log))
            })
        }
        other => panic!("unknown case {other}"),
    }
}
