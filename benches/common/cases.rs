//! The pipelines users run, as benchmark cases: each case's realistic lines, its
//! `pipeline_stages`, and its parsing floor (the parsing alone, as a program that only wants
//! the values would do it). `benches/stages.rs` runs them in-process; the end-to-end `stages`
//! workload ships files of them through the binary.
//!
//! - `regex`: nginx combined lines, one regex of 8 groups.
//! - `json`, `logfmt`: application lines, five keys extracted.
//! - `docker`: Docker json-file lines, the `docker` stage.
//! - `cri`: CRI lines, mostly `F`, every 64th line split into a `P` piece and its `F` end.
//! - `multiline`: log4j lines, one block in five with a Java stack trace.
//! - `chain`: `docker` → `regex` → `labels` → `timestamp` → `output` on log4j lines inside
//!   Docker's json-file format.
//! - `docker-json`: `docker` → `json` → `labels` → `timestamp` → `output` on JSON application
//!   lines inside Docker's json-file format.
//! - `cri-logfmt`: `cri` → `logfmt` → `labels` → `timestamp` → `output` on logfmt application
//!   lines inside CRI lines (with the `cri` case's `P` pieces).
//!
//! Floors: the regex with `captures_read` into reused locations, `serde_json` into a
//! `serde_json::Value` (Docker lines into a struct of their three keys), logfmt split on its
//! spaces and `=`, CRI lines split on their first three spaces, the `multiline` first-line
//! regex with lines joined into a block, and chrono for every timestamp a case's stages read.
#![allow(dead_code)]

pub const NGINX_REGEX: &str = r#"^(?P<remote_addr>[\w\.:]+) - (?P<remote_user>[^ ]*) \[(?P<time_local>[^\]]*)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+) "(?P<http_referer>(?:[^"\\]|\\.)*)" "(?P<http_user_agent>(?:[^"\\]|\\.)*)"$"#;

const APP_REGEX: &str =
    r"^(?P<time>\S+) (?P<level>[A-Z]+)\s+\[(?P<thread>[^\]]+)\] (?P<logger>\S+) - (?P<msg>.*)";
const FIRST_LINE: &str = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ";

/// The `pipeline_stages` of a case, as a YAML list at the left margin.
pub fn stages_yaml(case: &str) -> String {
    match case {
        "regex" => format!("- regex:\n    expression: '{NGINX_REGEX}'\n"),
        "json" => "- json:\n    expressions:\n      time:\n      level:\n      msg:\n      status:\n      user_id: user.id\n".into(),
        "logfmt" => "- logfmt:\n    mapping:\n      time:\n      level:\n      msg:\n      status:\n      duration:\n".into(),
        "docker" => "- docker: {}\n".into(),
        "cri" => "- cri: {}\n".into(),
        // A block's last lines wait for the next first line at most this long.
        "multiline" => format!("- multiline:\n    firstline: '{FIRST_LINE}'\n    max_wait_time: 500ms\n"),
        "chain" => format!(
            "- docker: {{}}\n- regex:\n    expression: '{APP_REGEX}'\n{}",
            TAIL_STAGES
        ),
        "docker-json" => format!(
            "- docker: {{}}\n- json:\n    expressions:\n      time:\n      level:\n      msg:\n      status:\n{}",
            TAIL_STAGES
        ),
        "cri-logfmt" => format!(
            "- cri: {{}}\n- logfmt:\n    mapping:\n      time:\n      level:\n      msg:\n      status:\n{}",
            TAIL_STAGES
        ),
        other => panic!("unknown case {other}"),
    }
}

/// What the chains do once the values are extracted.
const TAIL_STAGES: &str = "- labels:\n    level:\n- timestamp:\n    source: time\n    format: RFC3339Nano\n- output:\n    source: msg\n";

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

fn json_app_line(i: usize) -> String {
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
    .to_string()
}

fn logfmt_app_line(i: usize) -> String {
    format!(
        "time={} level={} msg=\"{}\" method={} path={} status={} duration={}ms trace_id={:032x}",
        rfc3339(i),
        LEVELS[i % LEVELS.len()].to_lowercase(),
        MESSAGES[i % MESSAGES.len()],
        METHODS[i % METHODS.len()],
        PATHS[i % PATHS.len()],
        STATUSES[i % STATUSES.len()],
        i % 900,
        i * 2_654_435_761,
    )
}

fn docker_line(log: &str, stream: &str, i: usize) -> String {
    serde_json::json!({"log": log, "stream": stream, "time": rfc3339(i)}).to_string()
}

/// CRI lines of `content`: one `F` line, or every 64th a `P` piece and its `F` end.
fn cri_lines(content: &str, i: usize, out: &mut Vec<String>) {
    if i % 64 == 63 {
        let (a, b) = content.split_at(content.len() / 2);
        out.push(format!("{} stdout P {a}", rfc3339(i)));
        out.push(format!("{} stdout F {b}", rfc3339(i)));
    } else {
        out.push(format!("{} stdout F {content}", rfc3339(i)));
    }
}

/// Appends the `i`-th entry of a case to `out`: the lines (no newline) that the case's stages
/// make one entry of.
pub fn entry_lines(case: &str, i: usize, out: &mut Vec<String>) {
    match case {
        "regex" => out.push(nginx_line(i)),
        "json" => out.push(json_app_line(i)),
        "logfmt" => out.push(logfmt_app_line(i)),
        "docker" => out.push(docker_line(
            &format!("{}\n", nginx_line(i)),
            if i % 10 == 9 { "stderr" } else { "stdout" },
            i,
        )),
        "cri" => cri_lines(&nginx_line(i), i, out),
        "multiline" => {
            out.push(format!(
                "2024-03-21 10:{:02}:{:02},{:03} {:<5} [main] com.example.App - {} order={}",
                i / 60 % 60,
                i % 60,
                i % 1000,
                LEVELS[i % LEVELS.len()],
                MESSAGES[i % MESSAGES.len()],
                9000 + i
            ));
            if i % 5 == 4 {
                out.push(format!(
                    "java.lang.IllegalStateException: Order {} is already shipped",
                    9000 + i
                ));
                for frame in [
                    "com.example.orders.OrderService.cancel(OrderService.java:118)",
                    "com.example.web.OrderController.cancel(OrderController.java:57)",
                    "java.base/java.lang.reflect.Method.invoke(Method.java:580)",
                    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:205)",
                ] {
                    out.push(format!("\tat {frame}"));
                }
                out.push("\t... 4 more".into());
            }
        }
        "chain" => out.push(docker_line(&format!("{}\n", app_line(i)), "stdout", i)),
        "docker-json" => out.push(docker_line(&format!("{}\n", json_app_line(i)), "stdout", i)),
        "cri-logfmt" => cri_lines(&logfmt_app_line(i), i, out),
        other => panic!("unknown case {other}"),
    }
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

/// The pairs of a logfmt line with a value, and its `time` value.
fn logfmt(line: &str) -> (usize, Option<&str>) {
    let mut pairs = 0;
    let mut time = None;
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
        if key == "time" {
            time = Some(value);
        }
        pairs += usize::from(!key.is_empty() && !value.is_empty());
        rest = next.trim_start();
    }
    (pairs, time)
}

/// A CRI line's time, stream, flag and content.
fn cri(line: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = line.splitn(4, ' ');
    Some((parts.next()?, parts.next()?, parts.next()?, parts.next()?))
}

/// A case's parser alone: returns how many lines (0 or 1) it parsed fully, counting a
/// multiline block's continuation lines (and CRI pieces) as parsed.
pub fn parser(case: &str) -> Box<dyn FnMut(&str) -> usize> {
    let regex_floor = |expr: &str, time_group: Option<&str>| {
        let re = regex::Regex::new(expr).expect("bench regex");
        let mut locs = re.capture_locations();
        let time = time_group.map(|g| {
            re.capture_names()
                .position(|n| n == Some(g))
                .expect("time group")
        });
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
        "logfmt" => Box::new(|line: &str| usize::from(logfmt(line).0 >= 5)),
        "docker" => Box::new(|line: &str| {
            serde_json::from_str::<DockerLine>(line).map_or(0, |d| {
                usize::from(!d.log.is_empty() && !d.stream.is_empty() && chrono_rfc3339(&d.time))
            })
        }),
        "cri" => Box::new(|line: &str| {
            cri(line).map_or(0, |(time, ..)| usize::from(chrono_rfc3339(time)))
        }),
        "multiline" => {
            let first = regex::Regex::new(FIRST_LINE).expect("bench regex");
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
            let mut inner = regex_floor(APP_REGEX, Some("time"));
            Box::new(move |line: &str| {
                serde_json::from_str::<DockerLine>(line)
                    .map_or(0, |d| usize::from(chrono_rfc3339(&d.time)) * inner(&d.log))
            })
        }
        "docker-json" => Box::new(|line: &str| {
            serde_json::from_str::<DockerLine>(line).map_or(0, |d| {
                let app = serde_json::from_str::<serde_json::Value>(&d.log);
                usize::from(
                    chrono_rfc3339(&d.time)
                        && app.is_ok_and(|v| v["time"].as_str().is_some_and(chrono_rfc3339)),
                )
            })
        }),
        "cri-logfmt" => {
            // A piece waits for its end, as the `cri` stage joins them.
            let mut piece = String::new();
            Box::new(move |line: &str| {
                let Some((time, _stream, flag, content)) = cri(line) else {
                    return 0;
                };
                if !chrono_rfc3339(time) {
                    return 0;
                }
                if flag == "P" {
                    piece.push_str(content);
                    return 1;
                }
                let whole = if piece.is_empty() {
                    logfmt(content)
                } else {
                    piece.push_str(content);
                    logfmt(&piece)
                };
                let ok = whole.0 >= 5 && whole.1.is_some_and(chrono_rfc3339);
                piece.clear();
                usize::from(ok)
            })
        }
        other => panic!("unknown case {other}"),
    }
}
