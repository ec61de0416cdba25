//! `cri`: the CRI log format, `<RFC3339Nano time> <stdout|stderr> <flags> <text>`.
//!
//! As Promtail: `stream` becomes a label, `time` the timestamp, the text the line; the extracted
//! map gets `time`, `stream`, `flags` and `content`. Partial lines (flag `P`) are held per label
//! set and prefixed to the next line of the same stream (the final `F` piece gives the joined
//! entry its timestamp, labels and origin). When `max_partial_lines` label sets have partial
//! lines held (default 100), all of them are released as they are, as Promtail does. With
//! `max_partial_line_size_truncate: true`, held lines are cut to `max_partial_line_size` bytes.
//!
//! logferry extension: `max_wait_time` (default 3s) releases a partial line whose rest did not
//! come in time (Promtail holds it until the next line of its stream).

use super::docker::truncate_at;
use super::options;
use super::timestamp::Format;
use super::weak::{WBool, WString, WU64};
use super::{LabelsStage, RegexStage, TimestampStage};
use crate::pipeline::gotime::Zone;
use crate::pipeline::{Cx, Entry, Flow, Labels, Stage};
use crate::units::{ByteSize, GoDuration};
use serde::Deserialize;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CriConfig {
    max_partial_lines: Option<WU64>,
    max_partial_line_size: Option<ByteSize>,
    max_partial_line_size_truncate: Option<WBool>,
    max_wait_time: Option<WString>,
}

struct Cri {
    regex: RegexStage,
    labels: LabelsStage,
    timestamp: TimestampStage,
    max_partial_lines: usize,
    /// Cut held lines to this many bytes (when truncation is on).
    truncate_to: Option<usize>,
    max_wait: Duration,
    /// Per label set: the partial line so far, when it started, and its first origin.
    partials: HashMap<Labels, (Entry, Instant, u64)>,
}

impl Cri {
    fn truncate(&self, e: &mut Entry) {
        if let Some(max) = self.truncate_to {
            truncate_at(&mut e.line, max);
        }
    }
}

impl Stage for Cri {
    fn name(&self) -> &'static str {
        "cri"
    }

    fn process(&mut self, mut entry: Entry, cx: &mut Cx<'_>) -> Flow {
        self.regex.apply(&mut entry);
        self.labels.apply(&mut entry);
        self.timestamp.apply(&mut entry);
        if let Some(Value::String(content)) = entry.extracted.get("content")
            && entry.line != *content
        {
            entry.line.clear();
            entry.line.push_str(content);
        }
        let partial = matches!(entry.extracted.get("flags"), Some(Value::String(f)) if f == "P");
        if partial {
            let mut released = Vec::new();
            if self.partials.len() >= self.max_partial_lines {
                tracing::warn!(
                    threshold = self.max_partial_lines,
                    "cri stage: partial lines upperbound exceeded. merging it to single line"
                );
                released.extend(self.partials.drain().map(|(_, (e, _, _))| e));
            }
            let mut first_origin = entry.origin;
            if let Some((prev, _, first)) = self.partials.remove(&entry.labels) {
                let mut line = prev.line;
                line.push_str(&entry.line);
                entry.line = line;
                first_origin = first;
            }
            self.truncate(&mut entry);
            self.partials
                .insert(entry.labels.clone(), (entry, cx.now, first_origin));
            return match released.len() {
                0 => Flow::Nothing,
                1 => Flow::Pass(released.pop().expect("one")),
                _ => Flow::Many(released),
            };
        }
        if !self.partials.is_empty()
            && let Some((prev, _, _)) = self.partials.remove(&entry.labels)
        {
            let mut line = prev.line;
            line.push_str(&entry.line);
            entry.line = line;
            self.truncate(&mut entry);
        }
        Flow::Pass(entry)
    }

    fn flush_due(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        let due: Vec<Labels> = self
            .partials
            .iter()
            .filter(|(_, (_, since, _))| cx.now.saturating_duration_since(*since) >= self.max_wait)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some((e, _, _)) = self.partials.remove(&k) {
                out.push(e);
            }
        }
    }

    fn flush_all(&mut self, _cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        out.extend(self.partials.drain().map(|(_, (e, _, _))| e));
    }

    fn pending(&self) -> usize {
        self.partials.len()
    }

    fn held_origins(&self, out: &mut Vec<u64>) {
        out.extend(self.partials.values().map(|(_, _, first)| *first));
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.partials
            .values()
            .map(|(_, since, _)| *since + self.max_wait)
            .min()
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: CriConfig = options(config)?;
    let regex = regex::Regex::new(
        r"^(?s)(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$",
    )
    .expect("valid CRI expression");
    let max_wait = match c.max_wait_time {
        None => Duration::from_secs(3),
        Some(d) => d.0.parse::<GoDuration>()?.0,
    };
    let truncate = c.max_partial_line_size_truncate.is_some_and(|b| b.0);
    Ok(Box::new(Cri {
        regex: RegexStage::new(regex, None),
        labels: LabelsStage::new(vec![("stream".into(), "stream".into())]),
        timestamp: TimestampStage::new(
            "time".into(),
            vec![Format::new("RFC3339Nano", Zone::Utc)],
            true,
        ),
        max_partial_lines: match c.max_partial_lines.map(|n| n.0) {
            None | Some(0) => 100,
            Some(n) => n as usize,
        },
        truncate_to: truncate.then(|| c.max_partial_line_size.map_or(0, |s| s.0 as usize)),
        max_wait,
        partials: HashMap::new(),
    }))
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::Entry;
    use crate::pipeline::tests::{build_err, pipeline, run_one};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    #[test]
    fn docs_example() {
        let out = run_one("- cri: {}", "2019-04-30T02:12:41.8443515Z stdout F message");
        assert_eq!(out.line, "message");
        assert_eq!(out.labels["stream"], "stdout");
        assert_eq!(
            out.timestamp,
            Timestamp::from_nanos(1_556_590_361_844_351_500)
        );
        assert_eq!(out.extracted["content"], json!("message"));
        assert_eq!(out.extracted["stream"], json!("stdout"));
        assert_eq!(out.extracted["flags"], json!("F"));
        assert_eq!(out.extracted["time"], json!("2019-04-30T02:12:41.8443515Z"));
    }

    #[test]
    fn docs_malformed_lines_pass() {
        // Only the first of the docs' three lines is CRI.
        let out = run_one(
            "- cri: {}",
            "2019-01-01T01:00:00.000000001Z stderr P test\ngood",
        );
        assert_eq!(out.line, "test\ngood");
        for bad in [
            "2019-01-01 T01:00:00.000000001Z stderr testgood",
            "2019-01-01T01:00:00.000000001Z testgood",
        ] {
            let out = run_one("- cri: {}", bad);
            assert_eq!(out.line, bad);
            assert!(!out.labels.contains_key("stream"));
        }
    }

    fn line(text: &str, origin: u64) -> Entry {
        let labels: BTreeMap<String, String> = [("job".to_string(), "k8s".to_string())]
            .into_iter()
            .collect();
        Entry::new(Timestamp::from_nanos(0), text, labels, origin)
    }

    #[test]
    fn partial_lines_are_joined() {
        let mut p = pipeline("- cri: {}");
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        p.process(
            line("2024-01-01T00:00:01.000000000Z stdout P part one, ", 1),
            now,
            &mut out,
            &mut dropped,
        );
        p.process(
            line("2024-01-01T00:00:01.500000000Z stderr F an error", 2),
            now,
            &mut out,
            &mut dropped,
        );
        p.process(
            line("2024-01-01T00:00:02.000000000Z stdout P part two, ", 3),
            now,
            &mut out,
            &mut dropped,
        );
        p.process(
            line("2024-01-01T00:00:03.000000000Z stdout F the end", 4),
            now,
            &mut out,
            &mut dropped,
        );
        let lines: Vec<&str> = out.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["an error", "part one, part two, the end"]);
        assert_eq!(out[1].origin, 4);
        assert_eq!(out[1].timestamp.0 % 1_000_000_000, 0);
        assert_eq!(out[1].timestamp.0 / 1_000_000_000 % 60, 3);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn limits_truncation_and_wait() {
        let yaml = "- cri:\n    max_partial_lines: 2\n    max_partial_line_size: 8\n    max_partial_line_size_truncate: true";
        let mut p = pipeline(yaml);
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        let mk = |job: &str, text: &str, o: u64| {
            let labels: BTreeMap<String, String> =
                [("job".to_string(), job.to_string())].into_iter().collect();
            Entry::new(Timestamp::from_nanos(0), text, labels, o)
        };
        p.process(
            mk("a", "2024-01-01T00:00:01Z stdout P 0123456789", 1),
            now,
            &mut out,
            &mut dropped,
        );
        p.process(
            mk("b", "2024-01-01T00:00:01Z stdout P bbb", 2),
            now,
            &mut out,
            &mut dropped,
        );
        assert!(out.is_empty());
        // A third label set with a partial line: the two held ones are released.
        p.process(
            mk("c", "2024-01-01T00:00:01Z stdout P ccc", 3),
            now,
            &mut out,
            &mut dropped,
        );
        let mut lines: Vec<&str> = out.iter().map(|e| e.line.as_str()).collect();
        lines.sort();
        assert_eq!(lines, ["01234567", "bbb"]);
        assert_eq!(p.pending(), 1);
        p.flush_due(now + Duration::from_secs(2), &mut out);
        assert_eq!(out.len(), 2);
        p.flush_due(now + Duration::from_secs(3), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].line, "ccc");
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- cri:\n    max_partial_lines: many").contains("max_partial_lines"));
    }
}
