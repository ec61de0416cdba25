//! `pack`: embeds chosen labels (or extracted values) and the line in a JSON object, as
//! `{"label":"value",...,"_entry":"line"}`, and removes those labels from the stream.

use super::options;
use super::weak::{WBool, WString};
use crate::entry::Timestamp;
use crate::pipeline::value::go_json_string;
use crate::pipeline::{Cx, Entry, Flow, Stage, get_string};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackConfig {
    #[serde(default)]
    labels: Vec<WString>,
    ingest_timestamp: Option<WBool>,
}

struct Pack {
    labels: Vec<String>,
    ingest_timestamp: bool,
}

impl Stage for Pack {
    fn name(&self) -> &'static str {
        "pack"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        let mut packed: Vec<(&str, String)> = Vec::with_capacity(self.labels.len());
        for name in &self.labels {
            match entry.extracted.get(name).map(get_string) {
                Some(Some(v)) => packed.push((name, v.into_owned())),
                Some(None) => tracing::debug!(
                    key = name.as_str(),
                    "value cannot be converted to a string and cannot be packed"
                ),
                None => {}
            }
        }
        packed.sort_by(|a, b| a.0.cmp(b.0));
        packed.dedup_by(|a, b| a.0 == b.0);
        let mut line = String::with_capacity(entry.line.len() + 16);
        line.push('{');
        for (name, value) in &packed {
            go_json_string(name, &mut line);
            line.push(':');
            go_json_string(value, &mut line);
            line.push(',');
        }
        line.push_str("\"_entry\":");
        go_json_string(&entry.line, &mut line);
        line.push('}');
        for (name, _) in &packed {
            entry.labels.remove(name);
        }
        entry.line = line;
        if self.ingest_timestamp {
            entry.timestamp = Timestamp::now();
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: PackConfig = options(config)?;
    Ok(Box::new(Pack {
        labels: c.labels.into_iter().map(|l| l.0).collect(),
        ingest_timestamp: c.ingest_timestamp.is_none_or(|b| b.0),
    }))
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::Entry;
    use crate::pipeline::tests::run_entries;

    fn entry(line: &str, labels: &[(&str, &str)]) -> Entry {
        Entry::new(
            Timestamp::from_nanos(5),
            line,
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            1,
        )
    }

    #[test]
    fn docs_example() {
        let (out, _) = run_entries(
            "- pack:\n    labels:\n      - container\n      - pod",
            vec![entry(
                "original log message",
                &[("container", "myapp"), ("pod", "pod-3223f"), ("job", "j")],
            )],
        );
        assert_eq!(
            out[0].line,
            r#"{"container":"myapp","pod":"pod-3223f","_entry":"original log message"}"#
        );
        assert_eq!(out[0].labels.len(), 1);
        assert_eq!(out[0].labels["job"], "j");
        assert_ne!(
            out[0].timestamp,
            Timestamp::from_nanos(5),
            "ingest_timestamp defaults to true"
        );
    }

    #[test]
    fn escapes_and_keeps_timestamp() {
        let (out, _) = run_entries(
            "- pack:\n    labels: [container, missing]\n    ingest_timestamp: false",
            vec![entry("say \"hi\" <now>", &[("container", "a&b")])],
        );
        assert_eq!(
            out[0].line,
            r#"{"container":"a\u0026b","_entry":"say \"hi\" \u003cnow\u003e"}"#
        );
        assert_eq!(out[0].timestamp, Timestamp::from_nanos(5));
        // No labels: just the entry.
        let (out, _) = run_entries("- pack: {}", vec![entry("x", &[])]);
        assert_eq!(out[0].line, r#"{"_entry":"x"}"#);
    }
}
