//! Stages that set the entry's labels, structured metadata, line and tenant from the extracted
//! map: `labels`, `static_labels`, `labeldrop`, `labelallow`, `structured_metadata`, `output`,
//! `tenant`.

use super::options;
// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use crate::labels::is_valid_name;
use crate::pipeline::{Cx, Entry, Flow, Stage, TENANT_LABEL, get_string};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeMap;

/// `name: source` pairs; an empty source means the name itself.
fn label_pairs(config: &Yaml, stage: &str) -> Result<Vec<(String, String)>, String> {
    if config.is_null() {
        return Err(format!("{stage} stage config cannot be empty"));
    }
    let map: Option<BTreeMap<WString, Option<WString>>> = options(config)?;
    let map = map.ok_or_else(|| format!("{stage} stage config cannot be empty"))?;
    let mut pairs = Vec::with_capacity(map.len());
    for (name, source) in map {
        if !is_valid_name(&name.0) {
            return Err(format!("invalid label name: {}", name.0));
        }
        let source = match source {
            Some(s) if !s.0.is_empty() => s.0,
            _ => name.0.clone(),
        };
        pairs.push((name.0, source));
    }
    Ok(pairs)
}

/// Sets labels from the extracted map (`labels: {name: source}`).
pub(crate) struct LabelsStage {
    pairs: Vec<(String, String)>,
}

impl LabelsStage {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> LabelsStage {
        LabelsStage { pairs }
    }

    pub(crate) fn apply(&self, entry: &mut Entry) {
        for (name, source) in &self.pairs {
            let Some(value) = entry.extracted.get(source) else {
                continue;
            };
            match get_string(value) {
                Some(s) => entry.labels.set_text(name, &s),
                None => tracing::debug!(
                    label = name.as_str(),
                    "failed to convert extracted label value to string"
                ),
            }
        }
    }
}

impl Stage for LabelsStage {
    fn name(&self) -> &'static str {
        "labels"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        self.apply(&mut entry);
        Flow::Pass(entry)
    }
}

pub(crate) fn build_labels(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    Ok(Box::new(LabelsStage::new(label_pairs(config, "label")?)))
}

/// Sets fixed labels (`static_labels: {name: value}`); empty values are skipped.
struct StaticLabels {
    pairs: Vec<(String, String)>,
}

impl Stage for StaticLabels {
    fn name(&self) -> &'static str {
        "static_labels"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        for (name, value) in &self.pairs {
            entry.labels.set_text(name, value);
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build_static_labels(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("static_labels stage config cannot be empty".into());
    }
    let map: Option<BTreeMap<WString, Option<WString>>> = options(config)?;
    let map = map.ok_or("static_labels stage config cannot be empty")?;
    let mut pairs = Vec::new();
    for (name, value) in map {
        if !is_valid_name(&name.0) {
            return Err(format!("invalid label name: {}", name.0));
        }
        if let Some(v) = value.filter(|v| !v.0.is_empty()) {
            pairs.push((name.0, v.0));
        }
    }
    Ok(Box::new(StaticLabels { pairs }))
}

/// Removes the listed labels.
struct LabelDrop {
    names: Vec<String>,
}

impl Stage for LabelDrop {
    fn name(&self) -> &'static str {
        "labeldrop"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        for name in &self.names {
            entry.labels.remove(name);
        }
        Flow::Pass(entry)
    }
}

fn name_list(config: &Yaml, stage: &str) -> Result<Vec<String>, String> {
    let list: Option<Vec<WString>> = options_list(config)?;
    match list {
        Some(l) if !l.is_empty() => Ok(l.into_iter().map(|s| s.0).collect()),
        _ => Err(format!("{stage} stage config cannot be empty")),
    }
}

fn options_list(config: &Yaml) -> Result<Option<Vec<WString>>, String> {
    if config.is_null() {
        return Ok(None);
    }
    options(config)
}

pub(crate) fn build_labeldrop(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    Ok(Box::new(LabelDrop {
        names: name_list(config, "labeldrop")?,
    }))
}

/// Keeps only the listed labels (internal `__` labels too are removed unless listed, as in
/// Promtail).
struct LabelAllow {
    names: Vec<String>,
}

impl Stage for LabelAllow {
    fn name(&self) -> &'static str {
        "labelallow"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        entry
            .labels
            .retain(|k, _| self.names.iter().any(|n| n == k));
        Flow::Pass(entry)
    }
}

pub(crate) fn build_labelallow(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    Ok(Box::new(LabelAllow {
        names: name_list(config, "labelallow")?,
    }))
}

/// Sets structured metadata from the extracted map; a source that is a stream label moves
/// from the labels to the structured metadata (so it stops making streams).
struct StructuredMetadata {
    pairs: Vec<(String, String)>,
}

impl Stage for StructuredMetadata {
    fn name(&self) -> &'static str {
        "structured_metadata"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        for (name, source) in &self.pairs {
            if let Some(v) = entry.extracted.get(source) {
                match get_string(v) {
                    Some(s) => {
                        entry
                            .structured_metadata
                            .insert(name.clone(), s.into_owned());
                    }
                    None => tracing::debug!(
                        name = name.as_str(),
                        "failed to convert extracted value to string"
                    ),
                }
            }
        }
        for (name, source) in &self.pairs {
            if let Some(v) = entry.labels.remove(source) {
                entry.structured_metadata.insert(name.clone(), v);
            }
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build_structured_metadata(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    Ok(Box::new(StructuredMetadata {
        pairs: label_pairs(config, "structured_metadata")?,
    }))
}

/// Replaces the line with an extracted value.
struct Output {
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputConfig {
    source: Option<WString>,
}

impl Stage for Output {
    fn name(&self) -> &'static str {
        "output"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        match super::source_string(&entry.extracted, &self.source) {
            Ok(s) => {
                if entry.line != *s {
                    entry.line.clear();
                    entry.line.push_str(&s);
                }
            }
            Err(why) => tracing::debug!(source = self.source.as_str(), "output stage: {why}"),
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build_output(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("output stage config cannot be empty".into());
    }
    let c: OutputConfig = options(config)?;
    let source = c
        .source
        .filter(|s| !s.0.is_empty())
        .ok_or("output source value is required")?;
    Ok(Box::new(Output { source: source.0 }))
}

/// Sets the tenant (label [`TENANT_LABEL`]) from an extracted value, a label, or a fixed value.
struct Tenant {
    from: TenantFrom,
}

enum TenantFrom {
    Source(String),
    Label(String),
    Value(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantConfig {
    source: Option<WString>,
    label: Option<WString>,
    value: Option<WString>,
}

impl Stage for Tenant {
    fn name(&self) -> &'static str {
        "tenant"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        let id = match &self.from {
            TenantFrom::Value(v) => Some(v.clone()),
            TenantFrom::Source(s) => match super::source_string(&entry.extracted, s) {
                Ok(v) => Some(v.into_owned()),
                Err(why) => {
                    tracing::debug!(source = s.as_str(), "tenant stage: {why}");
                    None
                }
            },
            TenantFrom::Label(l) => entry.labels.get(l).cloned(),
        };
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            entry.labels.insert(TENANT_LABEL.to_string(), id);
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build_tenant(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: TenantConfig = options(config)?;
    let set: Vec<(&str, String)> = [("source", c.source), ("label", c.label), ("value", c.value)]
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.0.is_empty()).map(|v| (k, v.0)))
        .collect();
    let from = match set.as_slice() {
        [] => return Err("one of label, source or value is required".into()),
        [(k, v)] => match *k {
            "source" => TenantFrom::Source(v.clone()),
            "label" => TenantFrom::Label(v.clone()),
            _ => TenantFrom::Value(v.clone()),
        },
        _ => {
            return Err(
                "label, source and value are mutually exclusive: set only one of them".into(),
            );
        }
    };
    Ok(Box::new(Tenant { from }))
}

#[cfg(test)]
mod tests {
    use super::super::test_stage;
    use crate::entry::Timestamp;
    use crate::pipeline::{Cx, Entry, Flow, TENANT_LABEL};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn run(yaml: &str, mut entry: Entry, extracted: &[(&str, serde_json::Value)]) -> Entry {
        for (k, v) in extracted {
            entry.extracted.insert(k.to_string(), v.clone());
        }
        let mut stage = test_stage(yaml);
        let mut dropped = vec![];
        let mut cx = Cx {
            now: Instant::now(),
            dropped: &mut dropped,
            inspect: None,
            spent: None,
        };
        match stage.process(entry, &mut cx) {
            Flow::Pass(e) => e,
            _ => panic!("not passed"),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_from_extracted() {
        // Promtail docs: `labels: {stream:}` after extracting stream=stderr.
        let e = run(
            "labels:\n  stream:\n  lvl: level\n  num: n\n  obj: o",
            Entry::new(Timestamp::from_nanos(0), "x", labels(&[("job", "a")]), 0),
            &[
                ("stream", json!("stderr")),
                ("level", json!("warn")),
                ("n", json!(1.5)),
                ("o", json!(null)),
            ],
        );
        assert_eq!(
            e.labels,
            labels(&[
                ("job", "a"),
                ("stream", "stderr"),
                ("lvl", "warn"),
                ("num", "1.5")
            ])
        );
    }

    #[test]
    fn bad_label_name_is_an_error() {
        let item: serde_yaml_ng::Value = serde_yaml_ng::from_str("labels:\n  a-b:\n").unwrap();
        let m = crate::pipeline::CustomMetrics::default();
        let ctx = crate::pipeline::BuildCtx {
            metrics: &m,
            job_name: "j",
        };
        let err = super::super::build(&item, &ctx, "pipeline_stages[4]")
            .err()
            .unwrap();
        assert_eq!(err.path, "pipeline_stages[4] (labels)");
        assert_eq!(err.message, "invalid label name: a-b");
    }

    #[test]
    fn static_labels() {
        let e = run(
            "static_labels:\n  custom_label: value\n  empty: ''\n  n: '5'",
            Entry::new(Timestamp::from_nanos(0), "x", labels(&[]), 0),
            &[],
        );
        assert_eq!(e.labels, labels(&[("custom_label", "value"), ("n", "5")]));
        // Promtail refuses a value that is not a string.
        assert!(
            crate::pipeline::tests::build_err("- static_labels:\n    port: 8080")
                .contains("expected type 'string', got unconvertible type 'int'")
        );
    }

    #[test]
    fn labeldrop_and_labelallow() {
        // Promtail docs: labeldrop [kubernetes_pod_name, kubernetes_container_name].
        let input = labels(&[
            ("kubernetes_pod_name", "loki-pqrs"),
            ("kubernetes_container_name", "loki"),
            ("kubernetes_pod_template_hash", "79f5db67b"),
            ("kubernetes_controller_revision_hash", "774858987d"),
        ]);
        let e = run(
            "labeldrop:\n  - kubernetes_pod_name\n  - kubernetes_container_name",
            Entry::new(Timestamp::from_nanos(0), "x", input.clone(), 0),
            &[],
        );
        assert_eq!(
            e.labels,
            labels(&[
                ("kubernetes_pod_template_hash", "79f5db67b"),
                ("kubernetes_controller_revision_hash", "774858987d"),
            ])
        );
        let e = run(
            "labelallow:\n  - kubernetes_pod_name\n  - kubernetes_container_name",
            Entry::new(Timestamp::from_nanos(0), "x", input, 0),
            &[],
        );
        assert_eq!(
            e.labels,
            labels(&[
                ("kubernetes_pod_name", "loki-pqrs"),
                ("kubernetes_container_name", "loki"),
            ])
        );
    }

    #[test]
    fn structured_metadata_from_extracted_and_labels() {
        // Promtail docs: traceID from the extracted map; pod_uid from a discovered label.
        let e = run(
            "structured_metadata:\n  traceID:\n  pod_uid:",
            Entry::new(
                Timestamp::from_nanos(0),
                "x",
                labels(&[("pod_uid", "b3937321"), ("job", "j")]),
                0,
            ),
            &[("traceID", json!("0242ac120002"))],
        );
        assert_eq!(
            e.structured_metadata,
            labels(&[("traceID", "0242ac120002"), ("pod_uid", "b3937321")])
        );
        assert_eq!(e.labels, labels(&[("job", "j")]));
    }

    #[test]
    fn output_replaces_the_line() {
        let e = run(
            "output:\n  source: message",
            Entry::new(Timestamp::from_nanos(0), "{...}", labels(&[]), 0),
            &[("message", json!("hello, world!"))],
        );
        assert_eq!(e.line, "hello, world!");
        // Missing or non-string sources leave the line.
        let e = run(
            "output:\n  source: message",
            Entry::new(Timestamp::from_nanos(0), "orig", labels(&[]), 0),
            &[("message", json!({"a": 1}))],
        );
        assert_eq!(e.line, "orig");
        let e = run(
            "output:\n  source: nope",
            Entry::new(Timestamp::from_nanos(0), "orig", labels(&[]), 0),
            &[],
        );
        assert_eq!(e.line, "orig");
    }

    #[test]
    fn tenant_from_source_value_label() {
        let e = run(
            "tenant:\n  source: customer_id",
            Entry::new(Timestamp::from_nanos(0), "x", labels(&[]), 0),
            &[("customer_id", json!("1"))],
        );
        assert_eq!(e.labels[TENANT_LABEL], "1");
        let e = run(
            "tenant:\n  value: team-api",
            Entry::new(Timestamp::from_nanos(0), "x", labels(&[]), 0),
            &[],
        );
        assert_eq!(e.labels[TENANT_LABEL], "team-api");
        let e = run(
            "tenant:\n  label: namespace",
            Entry::new(
                Timestamp::from_nanos(0),
                "x",
                labels(&[("namespace", "ns1")]),
                0,
            ),
            &[],
        );
        assert_eq!(e.labels[TENANT_LABEL], "ns1");
        let e = run(
            "tenant:\n  source: missing",
            Entry::new(Timestamp::from_nanos(0), "x", labels(&[]), 0),
            &[],
        );
        assert!(!e.labels.contains_key(TENANT_LABEL));
    }

    #[test]
    fn tenant_config_errors() {
        let m = crate::pipeline::CustomMetrics::default();
        let ctx = crate::pipeline::BuildCtx {
            metrics: &m,
            job_name: "j",
        };
        for yaml in ["tenant: {}", "tenant:\n  source: a\n  value: b"] {
            let item: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
            assert!(super::super::build(&item, &ctx, "p").is_err(), "{yaml}");
        }
    }
}
