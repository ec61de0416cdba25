//! `docker`: Docker's json-file lines (`{"log":"...","stream":"stdout","time":"..."}`).
//!
//! As Promtail: `log` becomes the line (with its trailing newline), `stream` a label, `time` the
//! timestamp (RFC3339Nano), and the extracted map gets `output`, `stream` and `timestamp`.
//!
//! Unlike Promtail, lines that Docker split into 16 KiB pieces are joined again: a piece whose
//! `log` does not end with a newline is held and joined with the following pieces of the same
//! stream until one ends with a newline. Options (logferry extensions):
//! `max_partial_line_size` (default 256 KiB; a joined line is cut there, the rest of it is
//! discarded) and `max_wait_time` (default 3s; a partial line waits no longer for the rest).
//! The joined entry has the timestamp, labels and origin of its last piece.

use super::json::JsonStage;
use super::options;
use super::timestamp::Format;
use super::weak::WString;
use super::{LabelsStage, TimestampStage};
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
struct DockerConfig {
    max_partial_line_size: Option<ByteSize>,
    max_wait_time: Option<WString>,
}

struct Partial {
    entry: Entry,
    /// Origin of the first piece.
    first_origin: u64,
    text: String,
    truncated: bool,
    since: Instant,
}

struct Docker {
    json: JsonStage,
    labels: LabelsStage,
    timestamp: TimestampStage,
    max_size: usize,
    max_wait: Duration,
    partials: HashMap<Labels, Partial>,
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_at(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

impl Docker {
    fn finish(mut entry: Entry, text: String) -> Entry {
        entry.line = text.clone();
        entry.extracted.insert("output".into(), Value::String(text));
        entry
    }

    fn release(p: Partial) -> Entry {
        Docker::finish(p.entry, p.text)
    }
}

impl Stage for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn process(&mut self, mut entry: Entry, cx: &mut Cx<'_>) -> Flow {
        let _ = self.json.apply(&mut entry);
        self.labels.apply(&mut entry);
        self.timestamp.apply(&mut entry);
        let Some(Value::String(output)) = entry.extracted.get("output") else {
            // Not a Docker line: passes as the sub-stages left it (no output to set).
            return Flow::Pass(entry);
        };
        let is_stream = matches!(entry.extracted.get("stream"), Some(Value::String(_)));
        let complete = output.ends_with('\n') || !is_stream;
        if complete && (self.partials.is_empty() || !self.partials.contains_key(&entry.labels)) {
            // A whole line with nothing held before it: the line is the output.
            if entry.line != *output {
                entry.line.clear();
                entry.line.push_str(output);
            }
            return Flow::Pass(entry);
        }
        let mut output = output.clone();
        match (self.partials.remove(&entry.labels), complete) {
            (None, true) => {
                if entry.line != output {
                    entry.line = output;
                }
                Flow::Pass(entry)
            }
            (None, false) => {
                let truncated = output.len() > self.max_size;
                truncate_at(&mut output, self.max_size);
                let key = entry.labels.clone();
                self.partials.insert(
                    key,
                    Partial {
                        first_origin: entry.origin,
                        entry,
                        text: output,
                        truncated,
                        since: cx.now,
                    },
                );
                Flow::Nothing
            }
            (Some(mut p), complete) => {
                if !p.truncated {
                    p.text.push_str(&output);
                    if p.text.len() > self.max_size {
                        truncate_at(&mut p.text, self.max_size);
                        p.truncated = true;
                    }
                }
                if complete {
                    Flow::Pass(Docker::finish(entry, p.text))
                } else {
                    let key = entry.labels.clone();
                    p.entry = entry;
                    self.partials.insert(key, p);
                    Flow::Nothing
                }
            }
        }
    }

    fn flush_due(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        let due: Vec<Labels> = self
            .partials
            .iter()
            .filter(|(_, p)| cx.now.saturating_duration_since(p.since) >= self.max_wait)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(p) = self.partials.remove(&k) {
                out.push(Docker::release(p));
            }
        }
    }

    fn flush_all(&mut self, _cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        out.extend(self.partials.drain().map(|(_, p)| Docker::release(p)));
    }

    fn pending(&self) -> usize {
        self.partials.len()
    }

    fn held_origins(&self, out: &mut Vec<u64>) {
        out.extend(self.partials.values().map(|p| p.first_origin));
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.partials
            .values()
            .map(|p| p.since + self.max_wait)
            .min()
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: DockerConfig = options(config)?;
    let max_wait = match c.max_wait_time {
        None => Duration::from_secs(3),
        Some(d) => d.0.parse::<GoDuration>()?.0,
    };
    let json = JsonStage::new(
        &[
            ("output".into(), "log".into()),
            ("stream".into(), "stream".into()),
            ("timestamp".into(), "time".into()),
        ],
        None,
        false,
    )?;
    Ok(Box::new(Docker {
        json,
        labels: LabelsStage::new(vec![("stream".into(), "stream".into())]),
        timestamp: TimestampStage::new(
            "timestamp".into(),
            vec![Format::new("RFC3339Nano", Zone::Utc)],
            true,
        ),
        max_size: c.max_partial_line_size.map_or(256 << 10, |s| s.0 as usize),
        max_wait,
        partials: HashMap::new(),
    }))
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::Entry;
    use crate::pipeline::tests::{pipeline, run_one};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    #[test]
    fn docs_example() {
        let out = run_one(
            "- docker: {}",
            r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#,
        );
        assert_eq!(out.line, "log message\n");
        assert_eq!(out.labels["stream"], "stderr");
        assert_eq!(
            out.timestamp,
            Timestamp::from_nanos(1_556_590_361_844_351_500)
        );
        assert_eq!(out.extracted["output"], json!("log message\n"));
        assert_eq!(out.extracted["stream"], json!("stderr"));
        assert_eq!(
            out.extracted["timestamp"],
            json!("2019-04-30T02:12:41.8443515Z")
        );
    }

    #[test]
    fn not_docker_passes_unchanged() {
        let out = run_one("- docker:", "plain text");
        assert_eq!(out.line, "plain text");
        assert!(!out.labels.contains_key("stream"));
    }

    fn piece(log: &str, stream: &str, sec: u32, origin: u64) -> Entry {
        let line = format!(
            r#"{{"log":{},"stream":"{stream}","time":"2024-01-01T00:00:{sec:02}.000000001Z"}}"#,
            serde_json::to_string(log).unwrap()
        );
        let labels: BTreeMap<String, String> = [("job".to_string(), "docker".to_string())]
            .into_iter()
            .collect();
        Entry::new(Timestamp::from_nanos(0), line, labels, origin)
    }

    #[test]
    fn split_lines_are_joined_per_stream() {
        let mut p = pipeline("- docker: {}");
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        let a = "a".repeat(16384);
        let b = "b".repeat(16384);
        p.process(piece(&a, "stdout", 1, 1), now, &mut out, &mut dropped);
        p.process(piece("err\n", "stderr", 2, 2), now, &mut out, &mut dropped);
        p.process(piece(&b, "stdout", 3, 3), now, &mut out, &mut dropped);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "err\n");
        assert_eq!(p.pending(), 1);
        p.process(piece("end\n", "stdout", 4, 4), now, &mut out, &mut dropped);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].line, format!("{a}{b}end\n"));
        assert_eq!(out[1].origin, 4);
        assert_eq!(out[1].labels["stream"], "stdout");
        assert_eq!(out[1].timestamp.0 % 1_000_000_000, 1);
        assert_eq!(
            out[1].extracted["output"].as_str().unwrap().len(),
            32768 + 4
        );
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn partial_lines_are_cut_and_released() {
        let mut p = pipeline("- docker:\n    max_partial_line_size: 10\n    max_wait_time: 1s");
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        p.process(
            piece("0123456", "stdout", 1, 1),
            now,
            &mut out,
            &mut dropped,
        );
        p.process(piece("789abc", "stdout", 2, 2), now, &mut out, &mut dropped);
        p.process(piece("def", "stdout", 3, 3), now, &mut out, &mut dropped);
        assert!(out.is_empty());
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(1)));
        p.flush_due(now + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "0123456789");
        assert_eq!(out[0].origin, 3);
        p.process(piece("x", "stdout", 4, 5), now, &mut out, &mut dropped);
        p.flush_all(&mut out);
        assert_eq!(out[1].line, "x");
    }

    #[test]
    fn bad_times_follow_their_own_stream() {
        let line = |stream: &str, time: &str| {
            format!(r#"{{"log":"x\n","stream":"{stream}","time":"{time}"}}"#)
        };
        let lines = [
            line("stdout", "2024-01-01T00:00:01Z"),
            line("stderr", "2024-01-01T00:00:02Z"),
            line("stdout", "2024-01-01T00:00:03Z"),
            line("stderr", "bad"),
            line("stdout", "bad"),
            line("stderr", "bad"),
            line("other", "2024-01-01T00:00:10Z"),
            line("stdout", "bad"),
            line("stderr", "bad"),
            line("other", "bad"),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, _) = crate::pipeline::tests::run_lines("- docker: {}", &lines);
        let s = 1_704_067_200_000_000_000i64;
        let got: Vec<i64> = out.iter().map(|e| e.timestamp.0 - s).collect();
        let sec = 1_000_000_000;
        assert_eq!(
            got,
            [
                sec,
                2 * sec,
                3 * sec,
                2 * sec + 1,
                3 * sec + 1,
                2 * sec + 2,
                10 * sec,
                3 * sec + 2,
                2 * sec + 3,
                10 * sec + 1,
            ]
        );
    }

    #[test]
    fn config_errors() {
        // An option of a later Promtail (or a typo) is ignored, with a warning.
        let out = crate::pipeline::tests::run_one(
            "- docker:\n    container_labels: true",
            r#"{"log":"x\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
        );
        assert_eq!(out.line, "x\n");
    }
}
