//! Helpers for the stage tests, and tests of the pipeline as a whole.

use super::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// A pipeline from the YAML list of stages.
pub(crate) fn pipeline(yaml: &str) -> Pipeline {
    let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).expect("yaml");
    Pipeline::new(&stages, &CustomMetrics::default(), "test").unwrap_or_else(|e| panic!("{e}"))
}

/// The error of building a pipeline, as text.
pub(crate) fn build_err(yaml: &str) -> String {
    let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).expect("yaml");
    match Pipeline::new(&stages, &CustomMetrics::default(), "test") {
        Ok(p) => panic!("built {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// Runs entries through a pipeline (then flushes it).
pub(crate) fn run_entries(yaml: &str, entries: Vec<Entry>) -> (Vec<Entry>, Vec<(u64, String)>) {
    let mut p = pipeline(yaml);
    let (mut out, mut dropped) = (vec![], vec![]);
    let now = Instant::now();
    for e in entries {
        p.process(e, now, &mut out, &mut dropped);
    }
    p.flush_all(&mut out);
    p.take_dropped(&mut dropped);
    (out, dropped)
}

/// Runs lines (labels `job="j"`, timestamp 0, origin = index) through a pipeline.
pub(crate) fn run_lines(yaml: &str, lines: &[&str]) -> (Vec<Entry>, Vec<(u64, String)>) {
    let labels: BTreeMap<String, String> =
        [("job".to_string(), "j".to_string())].into_iter().collect();
    let entries = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Entry::new(Timestamp::from_nanos(0), *l, labels.clone(), i as u64))
        .collect();
    run_entries(yaml, entries)
}

/// Runs one line and returns the one entry that comes out.
pub(crate) fn run_one(yaml: &str, line: &str) -> Entry {
    let (mut out, dropped) = run_lines(yaml, &[line]);
    assert!(dropped.is_empty(), "dropped: {dropped:?}");
    assert_eq!(out.len(), 1, "{out:?}");
    out.pop().expect("one")
}

/// Runs one line whose extracted map also holds `pairs`.
pub(crate) fn run_entry_with(yaml: &str, line: &str, pairs: &[(&str, &str)]) -> Entry {
    let mut e = Entry::new(Timestamp::from_nanos(0), line, BTreeMap::new(), 0);
    for (k, v) in pairs {
        e.extracted
            .insert(k.to_string(), Value::String(v.to_string()));
    }
    let (mut out, _) = run_entries(yaml, vec![e]);
    assert_eq!(out.len(), 1);
    out.pop().expect("one")
}

#[test]
fn empty_pipeline_passes_entries() {
    let p = pipeline("[]");
    assert!(p.is_empty());
    let (out, _) = run_lines("[]", &["a", "b"]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].line, "b");
}

#[test]
fn extracted_map_starts_with_labels() {
    let out = run_one(
        "- template:\n    source: x\n    template: '{{ .job }}'",
        "l",
    );
    assert_eq!(out.extracted["x"], serde_json::json!("j"));
    // An entry built without its extracted map gets the labels too.
    let mut e = Entry::new(Timestamp::from_nanos(0), "l", Default::default(), 0);
    e.labels.insert("job".into(), "k".into());
    let (out, _) = run_entries(
        "- template:\n    source: x\n    template: '{{ .job }}'",
        vec![e],
    );
    assert_eq!(out[0].extracted["x"], serde_json::json!("k"));
}

#[test]
fn stage_shape_errors() {
    assert_eq!(
        build_err("- regex:\n    expression: a\n- nosuchstage: {}"),
        "pipeline_stages[1]: unknown stage type \"nosuchstage\""
    );
    assert!(
        build_err("- json: {expressions: {a: a}}\n  regex: {expression: a}")
            .contains("exactly one key")
    );
    assert!(build_err("- json").contains("YAML object"));
    assert_eq!(
        build_err("- geoip: {}"),
        "pipeline_stages[0] (geoip): stage not supported yet"
    );
    assert!(build_err("- labels: [a, b]").starts_with("pipeline_stages[0] (labels): "));
}

#[test]
fn unparsable_lines_pass_unchanged_through_parsers() {
    let yaml = r#"
- json:
    expressions: {a: a}
- logfmt:
    mapping: {b: null}
- regex:
    expression: '^(?P<c>\d+)$'
- replace:
    expression: '(\d+)'
    replace: 'N'
- timestamp:
    source: a
    format: RFC3339
- output:
    source: a
- cri: {}
- docker: {}
"#;
    let line = "\"this is not parsable by any of them\"";
    let out = run_one(yaml, line);
    assert_eq!(out.line, line);
    assert_eq!(out.timestamp, Timestamp::from_nanos(0));
    assert_eq!(out.labels.len(), 1);
}

#[test]
fn inspect_reports_changes() {
    let yaml = r#"
- regex:
    expression: '^(?P<level>\w+) (?P<msg>.*)$'
- labels:
    level:
- output:
    source: msg
- drop:
    expression: nothing-matches-this
"#;
    let mut p = pipeline(yaml);
    let (mut out, mut dropped) = (vec![], vec![]);
    let lines = p.process_inspect(
        Entry::new(
            Timestamp::from_nanos(0),
            "WARN disk full",
            Default::default(),
            0,
        ),
        Instant::now(),
        &mut out,
        &mut dropped,
    );
    let text = lines.join("\n");
    assert!(text.contains("[inspect: regex stage]:"), "{text}");
    assert!(text.contains("extracted: + level: \"WARN\""), "{text}");
    assert!(text.contains("labels: + level: \"WARN\""), "{text}");
    assert!(
        text.contains("line: \"WARN disk full\" -> \"disk full\""),
        "{text}"
    );
    assert!(text.contains("[inspect: drop stage]:\n  none"), "{text}");
    assert_eq!(out.len(), 1);
}

#[test]
fn drops_during_flush_are_reported() {
    let yaml = "- multiline:\n    firstline: '^START'\n- drop:\n    expression: secret";
    let mut p = pipeline(yaml);
    let now = Instant::now();
    let (mut out, mut dropped) = (vec![], vec![]);
    p.process(
        Entry::new(Timestamp::from_nanos(0), "START 1", Default::default(), 1),
        now,
        &mut out,
        &mut dropped,
    );
    p.process(
        Entry::new(Timestamp::from_nanos(0), "a secret", Default::default(), 2),
        now,
        &mut out,
        &mut dropped,
    );
    assert_eq!(
        p.next_deadline(),
        Some(now + std::time::Duration::from_secs(3))
    );
    p.flush_due(now + std::time::Duration::from_secs(3), &mut out);
    assert!(out.is_empty());
    p.take_dropped(&mut dropped);
    assert_eq!(dropped, vec![(2, "drop_stage".to_string())]);
}

#[test]
fn pipeline_is_send() {
    fn send<T: Send>() {}
    send::<Pipeline>();
}

#[test]
fn nginx_pipeline_end_to_end() {
    let yaml = r#"
- regex:
    expression: '^(?P<remote_addr>[\w\.]+) - (?P<remote_user>[^ ]*) \[(?P<time_local>.*)\] "(?P<method>[^ ]*) (?P<request>[^ ]*) (?P<protocol>[^ ]*)" (?P<status>[\d]+) (?P<body_bytes_sent>[\d]+) "(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"?'
- labels:
    method:
    status:
- timestamp:
    source: time_local
    format: 02/Jan/2006:15:04:05 -0700
- metrics:
    bytes_sent:
      type: Counter
      source: body_bytes_sent
      config:
        action: add
"#;
    let out = run_one(
        yaml,
        r#"192.168.1.10 - - [21/Mar/2024:10:15:32 +0100] "GET /index.html HTTP/1.1" 200 612 "-" "curl/8.4.0""#,
    );
    assert_eq!(out.labels["method"], "GET");
    assert_eq!(out.labels["status"], "200");
    assert_eq!(
        out.timestamp,
        Timestamp::from_nanos(1_711_012_532_000_000_000)
    );
}

#[test]
fn docs_output_example() {
    let yaml = "
- json:
    expressions:
      user: user
      message: message
- labels:
    user:
- output:
    source: message
";
    let out = run_one(yaml, r#"{"user": "alexis", "message": "hello, world!"}"#);
    assert_eq!(out.line, "hello, world!");
    assert_eq!(out.labels["user"], "alexis");
}

#[test]
fn docs_labels_and_static_labels_examples() {
    let yaml = "
- json:
    expressions:
      stream: stream
- labels:
    stream:
- static_labels:
    custom_key: custom_val
";
    let out = run_one(
        yaml,
        r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#,
    );
    assert_eq!(out.labels["stream"], "stderr");
    assert_eq!(out.labels["custom_key"], "custom_val");
}

#[test]
fn docs_decolorize_example() {
    // The docs' line, with the `m` its first color code needs.
    let out = run_one(
        "- decolorize:",
        "[2022-11-04 22:17:57.811] \u{1b}[0;32mhttp\u{1b}[0m: GET /_health (0 ms) 204",
    );
    assert_eq!(
        out.line,
        "[2022-11-04 22:17:57.811] http: GET /_health (0 ms) 204"
    );
}

#[test]
fn docs_structured_metadata_example() {
    let yaml = "
- json:
    expressions:
      stream: stream
      traceID: traceID
- labels:
    stream:
- structured_metadata:
    traceID:
";
    let out = run_one(
        yaml,
        r#"{"log":"log message\n","stream":"stderr","traceID":"0242ac120002","time":"2019-04-30T02:12:41.8443515Z"}"#,
    );
    assert_eq!(out.labels["stream"], "stderr");
    assert_eq!(out.structured_metadata["traceID"], "0242ac120002");
    assert!(!out.labels.contains_key("traceID"));
}

#[test]
fn docs_sampling_in_match() {
    let yaml = r#"
- json:
    expressions:
      app:
- labels:
    app:
- match:
    pipeline_name: "app2"
    selector: '{app="poki"}'
    stages:
    - sampling:
        rate: 0
"#;
    let (out, dropped) = run_lines(yaml, &[r#"{"app":"poki"}"#, r#"{"app":"other"}"#]);
    assert_eq!(out.len(), 1);
    assert_eq!(dropped, vec![(0, "sampling_stage".to_string())]);
}

#[test]
fn docs_tenant_from_json() {
    let yaml = "
- json:
    expressions:
      customer_id: customer_id
- tenant:
    source: customer_id
";
    let out = run_one(
        yaml,
        r#"{"customer_id":"1","log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#,
    );
    assert_eq!(out.labels[TENANT_LABEL], "1");
}

/// Runs a fixture file through its `pipeline.yaml`, one entry per line (origin = line index).
fn fixture(dir: &str, file: &str) -> (Vec<Entry>, Vec<(u64, String)>, usize) {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let yaml = std::fs::read_to_string(base.join("pipeline.yaml")).expect("pipeline.yaml");
    let text = std::fs::read_to_string(base.join(file)).expect("fixture");
    let labels: BTreeMap<String, String> = [
        ("job".to_string(), dir.to_string()),
        ("filename".to_string(), format!("/var/log/{file}")),
    ]
    .into_iter()
    .collect();
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .collect();
    let entries: Vec<Entry> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Entry::new(
                Timestamp::from_nanos(i as i64),
                *l,
                labels.clone(),
                i as u64,
            )
        })
        .collect();
    let (out, dropped) = run_entries(&yaml, entries);
    (out, dropped, lines.len())
}

#[test]
fn fixture_nginx() {
    let (out, _, n) = fixture("nginx", "access.log");
    assert_eq!(out.len(), n);
    let parsed = out
        .iter()
        .filter(|e| e.labels.contains_key("method"))
        .count();
    assert_eq!(
        parsed,
        n - 1,
        "all but the TLS handshake line have a method"
    );
    assert!(
        out.iter()
            .all(|e| e.timestamp.0 > 1_700_000_000_000_000_000)
    );
    let quoted = out.last().unwrap();
    assert_eq!(
        quoted.extracted["http_user_agent"],
        serde_json::json!(r#"Mozilla/5.0 \"quoted\" agent"#)
    );
}

#[test]
fn fixture_apache() {
    let (out, _, n) = fixture("apache", "access.log");
    assert_eq!(out.len(), n);
    assert!(out.iter().all(|e| e.labels.contains_key("status")));
    assert_eq!(
        out[n - 1].timestamp,
        Timestamp::from_nanos(948_826_801_000_000_000)
    );
    assert!(
        out.iter()
            .any(|e| e.extracted["size"] == serde_json::json!("-"))
    );
}

#[test]
fn fixture_syslog() {
    let (out, _, n) = fixture("syslog", "syslog");
    assert_eq!(out.len(), n);
    assert!(out.iter().all(|e| e.labels.contains_key("app")));
    let this_year = chrono::Datelike::year(&chrono::Utc::now());
    let t = out[0].timestamp.0 / 1_000_000_000;
    let year = chrono::Datelike::year(&chrono::DateTime::from_timestamp(t, 0).unwrap());
    assert!((this_year - 1..=this_year + 1).contains(&year));
    assert_eq!(
        out[n - 2].timestamp,
        Timestamp::from_nanos(1_711_016_401_003_000_000)
    );
    assert_eq!(out[n - 1].labels["app"], "evntslog");
}

#[test]
fn fixture_docker_rejoins_split_lines() {
    let (out, _, n) = fixture("docker", "container-json.log");
    // 3 pieces of the long line become 1; the stderr line split in two becomes 1.
    assert_eq!(out.len(), n - 2 - 1);
    let big = out.iter().find(|e| e.line.starts_with("BIG ")).unwrap();
    assert_eq!(big.line.len(), 40_001);
    assert!(big.line.ends_with('\n'));
    assert_eq!(big.labels["stream"], "stdout");
    assert_eq!(big.origin, 5, "the last piece's origin");
    // The stderr line written between the pieces comes out before the joined line.
    let between = out
        .iter()
        .position(|e| e.line == "stderr line in between\n")
        .unwrap();
    let joined = out.iter().position(|e| e.line.starts_with("BIG ")).unwrap();
    assert!(between < joined);
    assert!(
        out.iter()
            .any(|e| e.line == "exactly at a split with trailing text and its rest\n")
    );
    assert!(
        out.iter()
            .any(|e| e.line.contains("ünïcode ✓ \u{7} bell and <html>"))
    );
    assert!(
        out.iter()
            .all(|e| e.timestamp.0 > 1_700_000_000_000_000_000)
    );
}

#[test]
fn fixture_cri_joins_partial_lines() {
    let (out, _, n) = fixture("cri", "container.log");
    assert_eq!(out.len(), n - 4);
    let long = out.iter().find(|e| e.line.starts_with("AAAA")).unwrap();
    assert_eq!(
        long.line.len(),
        16384 * 2 + "the end of the long line".len()
    );
    assert_eq!(long.labels["stream"], "stdout");
    assert!(out.iter().any(|e| e.line == "short partial and full"));
    assert!(out.iter().any(|e| e.line == "partial on stderr, completed"));
    assert!(out.iter().any(|e| e.line.is_empty()));
}

#[test]
fn fixture_java_stack_traces() {
    let (out, _, _) = fixture("java", "app.log");
    let lines: Vec<&str> = out.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(out.len(), 7, "{lines:#?}");
    let trace = &out[3];
    assert!(
        trace
            .line
            .contains("Caused by: java.sql.SQLTransactionRollbackException")
    );
    assert!(trace.line.ends_with("\t... 4 more"));
    assert_eq!(trace.labels["level"], "ERROR");
    assert!(
        trace.extracted["msg"]
            .as_str()
            .unwrap()
            .contains("OrderService.java:118")
    );
    // 10:15:41,250 in Paris (UTC+1 in March 2024).
    assert_eq!(
        trace.timestamp,
        Timestamp::from_nanos(1_711_012_541_250_000_000)
    );
}

#[test]
fn fixture_json() {
    let (out, _, n) = fixture("json", "app.log");
    assert_eq!(out.len(), n);
    assert_eq!(out[0].line, "server started");
    assert_eq!(out[2].extracted["user_id"], serde_json::json!(42));
    assert_eq!(
        out[4].extracted["grpc_method"],
        serde_json::json!("/orders.v1.Orders/Get")
    );
    assert_eq!(
        out[6].timestamp,
        Timestamp::from_nanos(1_711_016_143_000_000_000)
    );
    assert!(
        !out[7].labels.contains_key("level"),
        "a null level makes no label"
    );
    // The lines that are not JSON objects pass unchanged.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/json/app.log"),
    )
    .unwrap();
    let input: Vec<&str> = text.lines().collect();
    for i in n - 3..n {
        assert_eq!(out[i].line, input[i]);
        assert!(!out[i].labels.contains_key("level"));
    }
}

#[test]
fn fixture_logfmt() {
    let (out, _, n) = fixture("logfmt", "app.log");
    assert_eq!(out.len(), n);
    assert_eq!(
        out[2].extracted["msg"],
        serde_json::json!("request failed: \"already shipped\"")
    );
    assert_eq!(out[2].labels["level"], "error");
    assert_eq!(out[3].extracted["msg"], serde_json::json!("unicode ✓ ✓"));
    assert_eq!(out[4].labels["level"], "WARN");
    // A bad line keeps what came before the error.
    assert_eq!(out[5].labels["level"], "info");
    assert!(!out[6].labels.contains_key("level"));
}

/// Random strings over an alphabet of the characters parsers care about, multibyte ones
/// included: no parser may panic on them.
#[test]
fn parsers_never_panic() {
    const ALPHABET: &[&str] = &[
        "0", "1", "2", "5", "9", "a", "Z", "J", "M", "P", "p", "T", ":", "-", "+", ".", ",", " ",
        "_", "é", "✓", "\u{1b}", "{", "}", "{{", "}}", "|", "(", ")", "$", "\"", "'", "`", "=",
        "\\", "\n", "Jan", "Mon", "MST", "2006", "15", "04", "05", ".000", ".999", "Z07:00",
        "-0700", "PM", "GMT", "UTC", "if", "end", "else", "range", ".x", "=~", "!~", "|=",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let layouts = [
        gotime::named_layout("RFC3339Nano").unwrap(),
        gotime::named_layout("RFC1123").unwrap(),
        "Jan _2 15:04:05",
        "2006-01-02 15:04:05.000 -07:00:00",
        "02/Jan/2006:03:04:05 PM Z0700",
        "__2 002 .999999999",
    ];
    let data: BTreeMap<String, String> = [("x".to_string(), "é✓".to_string())].into();
    for _ in 0..20_000 {
        let len = next() % 12;
        let s: String = (0..len)
            .map(|_| ALPHABET[next() % ALPHABET.len()])
            .collect();
        for l in &layouts {
            let _ = gotime::Layout::new(l).parse(&s, &gotime::Zone::Utc);
        }
        let _ = gotime::Layout::new(&s).parse("2024-03-21 10:15:32", &gotime::Zone::Utc);
        if let Ok(t) = gotemplate::Template::parse(&s) {
            let _ = t.execute(&data);
        }
        let _ = stages::logfmt_decode(&s);
        let _ = stages::parse_selector(&s);
    }
}

/// An entry is moved several times per line (into each stage and out, into the output list,
/// back to the spare ones); up to 128 bytes, a move is copied inline, beyond it is a call to
/// `memcpy` each time (see the fields of `FieldMap`).
#[test]
fn an_entry_moves_without_a_call_to_memcpy() {
    assert!(
        std::mem::size_of::<Entry>() <= 128,
        "an entry is {} bytes",
        std::mem::size_of::<Entry>()
    );
    assert!(std::mem::size_of::<Flow>() <= 128);
}

/// An entry reused for the next line keeps its maps only while nothing wrote to them and the
/// labels are the same: whatever a stage did, or whatever target the next line comes from, the
/// entry is what a new one would be.
#[test]
fn a_reused_entry_is_what_a_new_one_would_be() {
    let target: Labels = [("filename", "/var/log/a.log"), ("job", "j")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let other: Labels = [("filename", "/var/log/b.log"), ("job", "j")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let fresh = |labels: &Labels, line: &str| {
        Entry::with_labels(Timestamp::from_nanos(1), line, labels.clone(), 7)
    };
    let same = |what: &str, e: &Entry, want: &Entry| {
        assert_eq!(e.line, want.line, "after {what}");
        assert_eq!(e.labels, want.labels, "after {what}");
        assert_eq!(e.extracted, want.extracted, "after {what}");
        assert_eq!(e.timestamp, want.timestamp, "after {what}");
        assert_eq!(e.origin, want.origin, "after {what}");
    };
    type Change = fn(&mut Entry);
    let changes: [(&str, Change); 9] = [
        ("nothing", |_| {}),
        ("a label set", |e| e.labels.set_text("level", "info")),
        ("a label value changed", |e| {
            if let Some(v) = e.labels.get_mut("job") {
                v.push('x');
            }
        }),
        ("a label removed", |e| {
            e.labels.remove("job");
        }),
        ("labels retained", |e| e.labels.retain(|k, _| k != "job")),
        ("nothing removed", |e| {
            e.labels.remove("absent");
            e.labels.retain(|_, _| true);
            e.extracted.remove("absent");
        }),
        ("a value extracted", |e| {
            e.extracted
                .insert("status".into(), Value::String("200".into()));
        }),
        ("a seeded value changed", |e| {
            if let Some(v) = e.extracted.get_mut("filename") {
                *v = Value::Null;
            }
        }),
        ("both maps replaced", |e| {
            e.labels = Labels::new();
            e.extracted = Extracted::new();
        }),
    ];
    for (what, change) in changes {
        for next in [&target, &other] {
            let mut e = fresh(&target, "first");
            e.refill(Timestamp::from_nanos(1), "first", &target, 7);
            change(&mut e);
            e.refill(Timestamp::from_nanos(1), "second", next, 7);
            same(what, &e, &fresh(next, "second"));
            // And once more, now that the maps were written afresh.
            change(&mut e);
            e.refill(Timestamp::from_nanos(1), "third", &target, 7);
            same(what, &e, &fresh(&target, "third"));
        }
    }
}
