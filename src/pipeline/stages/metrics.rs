//! `metrics`: counters, gauges and histograms fed from the extracted map.
//!
//! Metric names get the prefix `logferry_custom_` (Promtail's is `promtail_custom_`) unless the
//! metric sets its own `prefix`. Series are labelled with the entry's labels (internal `__`
//! labels left out).

use super::options;
use super::weak::{WBool, WF64, WString};
use crate::pipeline::metrics::{DEFAULT_BUCKETS, Family, Kind, SeriesLabels};
use crate::pipeline::{BuildCtx, Cx, Entry, Flow, Stage, get_float, get_string};
use crate::units::GoDuration;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The default prefix of custom metric names.
pub(crate) const PREFIX: &str = "logferry_custom_";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricConfig {
    #[serde(rename = "type")]
    kind: Option<WString>,
    #[serde(default)]
    description: WString,
    source: Option<WString>,
    prefix: Option<WString>,
    max_idle_duration: Option<WString>,
    #[serde(default)]
    config: InnerConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InnerConfig {
    match_all: Option<WBool>,
    count_entry_bytes: Option<WBool>,
    value: Option<WString>,
    action: Option<WString>,
    buckets: Option<Vec<WF64>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Inc,
    Dec,
    Add,
    Sub,
    Set,
    Observe,
}

struct Metric {
    family: Arc<Family>,
    source: String,
    value: Option<String>,
    action: Action,
    match_all: bool,
    count_bytes: bool,
}

struct Metrics {
    metrics: Vec<Metric>,
}

fn series_labels(entry: &Entry) -> SeriesLabels {
    entry
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Stage for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }
    fn process(&mut self, entry: Entry, cx: &mut Cx<'_>) -> Flow {
        let mut labels: Option<SeriesLabels> = None;
        let now = cx.now;
        for m in &self.metrics {
            let labels = labels.get_or_insert_with(|| series_labels(&entry));
            if m.match_all {
                if m.count_bytes {
                    m.family.add(labels, entry.line.len() as f64, now);
                } else {
                    m.family.inc(labels, now);
                }
                continue;
            }
            let Some(v) = entry.extracted.get(&m.source) else {
                tracing::debug!(
                    source = m.source.as_str(),
                    "metrics stage: source does not exist"
                );
                continue;
            };
            if let Some(want) = &m.value {
                match get_string(v) {
                    Some(s) if *s == **want => {}
                    Some(_) => continue,
                    None => {
                        tracing::debug!(
                            "failed to convert extracted value to string, can't perform value comparison"
                        );
                        continue;
                    }
                }
            }
            if m.action == Action::Inc {
                m.family.inc(labels, now);
                continue;
            }
            if m.action == Action::Dec {
                m.family.add(labels, -1.0, now);
                continue;
            }
            let Some(f) = get_float(v) else {
                tracing::debug!(
                    source = m.source.as_str(),
                    "failed to convert extracted value to float"
                );
                continue;
            };
            match m.action {
                Action::Add if m.family.is_counter() && f < 0.0 => {
                    tracing::debug!("counters cannot decrease; negative value ignored");
                }
                Action::Add => m.family.add(labels, f, now),
                Action::Sub => m.family.add(labels, -f, now),
                Action::Set => m.family.set(labels, f, now),
                Action::Observe => m.family.observe(labels, f, now),
                Action::Inc | Action::Dec => {}
            }
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml, ctx: &BuildCtx<'_>) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("empty metric stage configuration".into());
    }
    let configs: BTreeMap<WString, MetricConfig> = options(config)?;
    let mut metrics = Vec::new();
    for (name, c) in configs {
        let name = name.0;
        let kind_name = c.kind.map(|k| k.0.to_ascii_lowercase()).unwrap_or_default();
        let max_idle = match c.max_idle_duration {
            None => Duration::from_secs(300),
            Some(d) => {
                let d: GoDuration = d.0.parse().map_err(|e| {
                    format!("{name}: max_idle_duration could not be parsed as a time.Duration: {e}")
                })?;
                if d.0 < Duration::from_secs(1) {
                    return Err(format!(
                        "{name}: max_idle_duration less than 1s not allowed"
                    ));
                }
                d.0
            }
        };
        let full = format!(
            "{}{name}",
            c.prefix
                .map(|p| p.0)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| PREFIX.to_string())
        );
        if !is_metric_name(&full) {
            return Err(format!("invalid metric name {full:?}"));
        }
        let inner = c.config;
        let action_name = inner.action.as_ref().map(|a| a.0.to_ascii_lowercase());
        let match_all = inner.match_all.is_some_and(|b| b.0);
        let count_bytes = inner.count_entry_bytes.is_some_and(|b| b.0);
        let (kind, action) = match kind_name.as_str() {
            "counter" => {
                let action = match action_name.as_deref() {
                    None | Some("") => {
                        return Err(format!(
                            "{name}: counter action must be defined as either `inc` or `add`"
                        ));
                    }
                    Some("inc") => Action::Inc,
                    Some("add") => Action::Add,
                    Some(other) => {
                        return Err(format!(
                            "{name}: action {other} is not valid, action must be either `inc` or `add`"
                        ));
                    }
                };
                if match_all && inner.value.is_some() {
                    return Err(format!(
                        "{name}: `match_all: true` cannot be combined with `value`, please remove `match_all` or `value`"
                    ));
                }
                if count_bytes && !match_all {
                    return Err(format!(
                        "{name}: `count_entry_bytes: true` can only be set with `match_all: true`"
                    ));
                }
                if count_bytes && action != Action::Add {
                    return Err(format!(
                        "{name}: `count_entry_bytes: true` can only be used with `action: add`"
                    ));
                }
                (Kind::Counter, action)
            }
            "gauge" => {
                let action = match action_name.as_deref() {
                    None | Some("") => {
                        return Err(format!(
                            "{name}: gauge action must be defined as `set`, `inc`, `dec`, `add`, or `sub`"
                        ));
                    }
                    Some("set") => Action::Set,
                    Some("inc") => Action::Inc,
                    Some("dec") => Action::Dec,
                    Some("add") => Action::Add,
                    Some("sub") => Action::Sub,
                    Some(other) => {
                        return Err(format!(
                            "{name}: action {other} is not valid, action must be `set`, `inc`, `dec`, `add`, or `sub`"
                        ));
                    }
                };
                if match_all || count_bytes {
                    return Err(format!(
                        "{name}: match_all and count_entry_bytes are for counters"
                    ));
                }
                (Kind::Gauge, action)
            }
            "histogram" => {
                if match_all || count_bytes || inner.action.is_some() {
                    return Err(format!(
                        "{name}: histograms take `value` and `buckets` only"
                    ));
                }
                let mut buckets: Vec<f64> = match &inner.buckets {
                    Some(b) if !b.is_empty() => b.iter().map(|b| b.0).collect(),
                    _ => DEFAULT_BUCKETS.to_vec(),
                };
                if buckets.iter().any(|b| b.is_nan()) {
                    return Err(format!("{name}: bucket bounds must be numbers"));
                }
                buckets.sort_by(|a, b| a.total_cmp(b));
                buckets.dedup();
                buckets.retain(|b| *b != f64::INFINITY);
                (Kind::Histogram(buckets), Action::Observe)
            }
            other => {
                return Err(format!(
                    "invalid metric type '{other}', metric type must be one of 'counter', 'gauge', or 'histogram'"
                ));
            }
        };
        if inner.buckets.is_some() && !matches!(kind, Kind::Histogram(_)) {
            return Err(format!("{name}: buckets are for histograms"));
        }
        let family = ctx
            .metrics
            .family(&full, &c.description.0, kind, max_idle)?;
        metrics.push(Metric {
            family,
            source: c.source.map(|s| s.0).unwrap_or_else(|| name.clone()),
            value: inner.value.map(|v| v.0),
            action,
            match_all,
            count_bytes,
        });
    }
    Ok(Box::new(Metrics { metrics }))
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::tests::build_err;
    use crate::pipeline::{CustomMetrics, Entry, Pipeline};
    use std::time::Instant;

    fn run(yaml: &str, lines: &[&str]) -> CustomMetrics {
        let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).unwrap();
        let metrics = CustomMetrics::default();
        let mut p = Pipeline::new(&stages, &metrics, "job").unwrap();
        let labels: std::collections::BTreeMap<String, String> =
            [("job".to_string(), "app".to_string())]
                .into_iter()
                .collect();
        for (i, l) in lines.iter().enumerate() {
            let (mut out, mut dropped) = (vec![], vec![]);
            p.process(
                Entry::new(Timestamp::from_nanos(0), *l, labels.clone(), i as u64),
                Instant::now(),
                &mut out,
                &mut dropped,
            );
        }
        metrics
    }

    #[test]
    fn docs_counter_match_all_and_bytes() {
        let yaml = r#"
- metrics:
    log_lines_total:
      type: Counter
      description: "total number of log lines"
      prefix: my_promtail_custom_
      max_idle_duration: 24h
      config:
        match_all: true
        action: inc
    log_bytes_total:
      type: Counter
      description: "total bytes of log lines"
      prefix: my_promtail_custom_
      max_idle_duration: 24h
      config:
        match_all: true
        count_entry_bytes: true
        action: add
"#;
        let text = run(yaml, &["abc", "de"]).render();
        assert!(
            text.contains("# HELP my_promtail_custom_log_lines total number of log lines"),
            "{text}"
        );
        assert!(
            text.contains("my_promtail_custom_log_lines_total{job=\"app\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("my_promtail_custom_log_bytes_total{job=\"app\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn docs_counter_from_regex() {
        let yaml = r#"
- regex:
    expression: "^.*(?P<order_success>order successful).*$"
- metrics:
    successful_orders_total:
      type: Counter
      description: "log lines with the message `order successful`"
      source: order_success
      config:
        action: inc
"#;
        let text = run(
            yaml,
            &["x order successful y", "nothing", "order successful"],
        )
        .render();
        assert!(
            text.contains("logferry_custom_successful_orders_total{job=\"app\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn docs_counter_values() {
        let yaml = r#"
- regex:
    expression: "^.* order_status=(?P<order_status>.*?) .*$"
- metrics:
    successful_orders_total:
      type: Counter
      description: "successful orders"
      source: order_status
      config:
        value: success
        action: inc
    failed_orders_total:
      type: Counter
      description: "failed orders"
      source: order_status
      config:
        value: fail
        action: inc
"#;
        let text = run(
            yaml,
            &[
                "a order_status=success b",
                "a order_status=fail b",
                "a order_status=success b",
            ],
        )
        .render();
        assert!(
            text.contains("logferry_custom_successful_orders_total{job=\"app\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("logferry_custom_failed_orders_total{job=\"app\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn docs_gauge_and_actions() {
        let yaml = r#"
- regex:
    expression: "^.* retries=(?P<retries>\\d+) .*$"
- metrics:
    retries_total:
      type: Gauge
      description: "total retries"
      source: retries
      config:
        action: add
    last_retries:
      type: Gauge
      source: retries
      config:
        action: set
    up_down:
      type: Gauge
      source: retries
      config:
        action: dec
    subbed:
      type: gauge
      source: retries
      config:
        action: sub
"#;
        let text = run(yaml, &["a retries=3 b", "a retries=4 b"]).render();
        assert!(
            text.contains("logferry_custom_retries_total{job=\"app\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("logferry_custom_last_retries{job=\"app\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("logferry_custom_up_down{job=\"app\"} -2"),
            "{text}"
        );
        assert!(
            text.contains("logferry_custom_subbed{job=\"app\"} -7"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE logferry_custom_retries_total gauge"),
            "{text}"
        );
    }

    #[test]
    fn docs_histogram() {
        let yaml = r#"
- json:
    expressions: {response_time: rt}
- metrics:
    http_response_time_seconds:
      type: Histogram
      description: "length of each log line"
      source: response_time
      config:
        buckets: [0.001,0.0025,0.005,0.010,0.025,0.050]
"#;
        let text = run(
            yaml,
            &[
                r#"{"rt": 0.002}"#,
                r#"{"rt": "0.02"}"#,
                r#"{"rt": "30ms"}"#,
                r#"{"rt": 9}"#,
            ],
        )
        .render();
        assert!(
            text.contains("logferry_custom_http_response_time_seconds_count{job=\"app\"} 4"),
            "{text}"
        );
        assert!(
            text.contains(
                "logferry_custom_http_response_time_seconds_bucket{le=\"0.0025\",job=\"app\"} 1"
            ) || text.contains(
                "logferry_custom_http_response_time_seconds_bucket{job=\"app\",le=\"0.0025\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("le=\"0.05\"") && text.contains("} 3\n"),
            "{text}"
        );
        assert!(text.contains("le=\"+Inf\""), "{text}");
    }

    #[test]
    fn same_metric_in_two_pipelines_is_one_family() {
        let yaml = "- metrics:\n    lines:\n      type: Counter\n      config: {match_all: true, action: inc}";
        let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(yaml).unwrap();
        let metrics = CustomMetrics::default();
        let _a = Pipeline::new(&stages, &metrics, "a").unwrap();
        let _b = Pipeline::new(&stages, &metrics, "b").unwrap();
        let bad = "- metrics:\n    lines:\n      type: Gauge\n      config: {action: inc}";
        let stages: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(bad).unwrap();
        assert!(Pipeline::new(&stages, &metrics, "c").is_err());
    }

    #[test]
    fn config_errors() {
        let e = |m: &str| build_err(&format!("- metrics:\n    m:\n{m}"));
        assert!(
            e("      type: Counter\n      config: {}").contains("counter action must be defined")
        );
        assert!(e("      type: Counter\n      config: {action: dec}").contains("not valid"));
        assert!(
            e("      type: Counter\n      config: {action: inc, match_all: true, value: x}")
                .contains("match_all")
        );
        assert!(
            e("      type: Counter\n      config: {action: inc, count_entry_bytes: true}")
                .contains("count_entry_bytes")
        );
        assert!(e("      type: Counter\n      config: {action: inc, match_all: true, count_entry_bytes: true}").contains("action: add"));
        assert!(e("      type: Gauge\n      config: {action: bump}").contains("not valid"));
        assert!(
            e("      type: Summary\n      config: {action: inc}").contains("invalid metric type")
        );
        assert!(
            e("      type: Counter\n      max_idle_duration: 500ms\n      config: {action: inc}")
                .contains("less than 1s")
        );
        assert!(
            e("      type: Counter\n      prefix: 'bad-'\n      config: {action: inc}")
                .contains("invalid metric name")
        );
        assert!(
            e("      type: Counter\n      config: {action: inc, colour: red}")
                .contains("unknown field")
        );
    }
}
