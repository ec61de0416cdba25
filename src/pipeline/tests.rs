//! Helpers for the stage tests, and tests of the pipeline as a whole.

use super::*;
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
        .map(|(i, l)| Entry::new(Timestamp(0), *l, labels.clone(), i as u64))
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
    let mut e = Entry::new(Timestamp(0), line, BTreeMap::new(), 0);
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
    let mut e = Entry::new(Timestamp(0), "l", Default::default(), 0);
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
    assert_eq!(out.timestamp, Timestamp(0));
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
        Entry::new(Timestamp(0), "WARN disk full", Default::default(), 0),
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
        Entry::new(Timestamp(0), "START 1", Default::default(), 1),
        now,
        &mut out,
        &mut dropped,
    );
    p.process(
        Entry::new(Timestamp(0), "a secret", Default::default(), 2),
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
    assert_eq!(out.timestamp, Timestamp(1_711_012_532_000_000_000));
}
