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
struct CriConfig {
    max_partial_lines: Option<WU64>,
    max_partial_line_size: Option<ByteSize>,
    max_partial_line_size_truncate: Option<WBool>,
    max_wait_time: Option<WString>,
}

/// The fields of a CRI line as Promtail's expression for it,
/// `^(?s)(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$`, captures
/// them. Read by hand rather than with that expression: capturing its groups over the whole
/// line was most of the stage's cost, while the answer depends on the first few dozen bytes.
///
/// `time` and `flags` are runs of non-whitespace (Unicode's, as the expression's `\S`), each
/// ended by a space; the lazy quantifiers change nothing, as the space that ends such a run is
/// its first whitespace.
#[derive(Debug, PartialEq, Eq)]
struct CriFields<'a> {
    time: &'a str,
    stream: &'a str,
    flags: &'a str,
    content: &'a str,
}

impl<'a> CriFields<'a> {
    fn read(line: &'a str) -> Option<CriFields<'a>> {
        let (time, rest) = word(line)?;
        let stream = match rest.get(..7)? {
            "stdout " => "stdout",
            "stderr " => "stderr",
            _ => return None,
        };
        let (flags, content) = word(&rest[7..])?;
        Some(CriFields {
            time,
            stream,
            flags,
            content,
        })
    }
}

/// A non-empty run of non-whitespace at the start of `s` ended by a space, and what follows
/// that space.
fn word(s: &str) -> Option<(&str, &str)> {
    let end = first_whitespace(s)?;
    if end == 0 || s.as_bytes()[end] != b' ' {
        return None;
    }
    Some((&s[..end], &s[end + 1..]))
}

/// Where the first whitespace character of `s` is. Bytes are checked as bytes up to the first
/// non-ASCII one; only the text from there on is decoded into characters.
fn first_whitespace(s: &str) -> Option<usize> {
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if !b.is_ascii() {
            // Every byte before `i` is ASCII, so `i` is a character boundary.
            return s[i..].find(char::is_whitespace).map(|j| i + j);
        }
        if b == b' ' || (b'\t'..=b'\r').contains(&b) {
            return Some(i);
        }
    }
    None
}

struct Cri {
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

/// Makes `line` the held text `held` followed by `line`, leaving in `held` a string to reuse.
fn join(held: &mut String, line: &mut String) {
    held.push_str(line);
    std::mem::swap(held, line);
    held.clear();
}

impl Stage for Cri {
    fn name(&self) -> &'static str {
        "cri"
    }

    fn process(&mut self, mut entry: Entry, cx: &mut Cx<'_>) -> Flow {
        let partial = match CriFields::read(&entry.line) {
            Some(f) => {
                // In key order, as the regex stage sets named groups.
                entry.extracted.set_text("content", f.content);
                entry.extracted.set_text("flags", f.flags);
                entry.extracted.set_text("stream", f.stream);
                entry.extracted.set_text("time", f.time);
                let partial = f.flags == "P";
                let content_at = entry.line.len() - f.content.len();
                self.labels.apply(&mut entry);
                self.timestamp.apply(&mut entry);
                // The content is the end of the line: moved to its start, not copied.
                entry.line.replace_range(..content_at, "");
                partial
            }
            None => {
                tracing::debug!("cri stage: not a CRI line");
                // The extracted map may still hold `stream`, `time`, `content` and `flags`
                // from the entry's labels, which the stages Promtail's `cri` is made of read.
                self.labels.apply(&mut entry);
                self.timestamp.apply(&mut entry);
                if let Some(Value::String(content)) = entry.extracted.get("content")
                    && entry.line != *content
                {
                    entry.line.clear();
                    entry.line.push_str(content);
                }
                matches!(entry.extracted.get("flags"), Some(Value::String(f)) if f == "P")
            }
        };
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
            if let Some((mut prev, _, first)) = self.partials.remove(&entry.labels) {
                join(&mut prev.line, &mut entry.line);
                cx.spend(prev);
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
            && let Some((mut prev, _, _)) = self.partials.remove(&entry.labels)
        {
            join(&mut prev.line, &mut entry.line);
            cx.spend(prev);
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
    let max_wait = match c.max_wait_time {
        None => Duration::from_secs(3),
        Some(d) => d.0.parse::<GoDuration>()?.0,
    };
    let truncate = c.max_partial_line_size_truncate.is_some_and(|b| b.0);
    Ok(Box::new(Cri {
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
    fn fields_are_read_as_promtails_expression_reads_them() {
        let re = regex::Regex::new(
            r"^(?s)(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$",
        )
        .unwrap();
        let lines = [
            "2024-01-01T00:00:00Z stdout F text",
            "2024-01-01T00:00:00Z stderr P ",
            "2024-01-01T00:00:00Z stdout F",
            "2024-01-01T00:00:00Z stdout F  two spaces",
            "2024-01-01T00:00:00Z stdout F multi\nline\r\n",
            "2024-01-01T00:00:00Z stdout F:x tag",
            "t stdout F x",
            " stdout F x",
            "2024-01-01T00:00:00Z  stdout F x",
            "2024-01-01T00:00:00Z\tstdout F x",
            "2024-01-01T00:00:00Z stdout\tF x",
            "2024-01-01T00:00:00Z stdout F\tx",
            "2024-01-01T00:00:00Z stdout  F x",
            "2024-01-01T00:00:00Z stdoutF x",
            "2024-01-01T00:00:00Z stdin F x",
            "2024-01-01T00:00:00Z Stdout F x",
            "2024-01-01T00:00:00Z stdout",
            "2024-01-01T00:00:00Z stdou",
            "2024-01-01T00:00:00Z",
            "",
            "é stdout F x",
            "2024\u{a0}01 stdout F x",
            "2024\u{2003}01 stdout F x",
            "2024-01-01T00:00:00Z stdout \u{85}F x",
            "2024-01-01T00:00:00Z stdout Fé\u{3000}x y",
            "2024-01-01T00:00:00Z stdout F\u{b}x y",
            "2024\u{1c}01 stdout F x",
        ];
        for line in lines {
            let want = re.captures(line).map(|c| super::CriFields {
                time: c.name("time").map_or("", |m| m.as_str()),
                stream: c.name("stream").map_or("", |m| m.as_str()),
                flags: c.name("flags").map_or("", |m| m.as_str()),
                content: c.name("content").map_or("", |m| m.as_str()),
            });
            assert_eq!(super::CriFields::read(line), want, "{line:?}");
        }
    }

    #[test]
    fn pieces_beyond_max_partial_lines_are_released_then_joined_again() {
        let yaml = "- cri:\n    max_partial_lines: 2";
        let mut p = pipeline(yaml);
        let now = Instant::now();
        let (mut out, mut dropped, mut spare) = (vec![], vec![], vec![]);
        // Asking once for spent entries makes the pipeline keep them.
        p.take_spent(&mut spare);
        let mk = |job: &str, text: &str, o: u64| {
            let labels: BTreeMap<String, String> =
                [("job".to_string(), job.to_string())].into_iter().collect();
            Entry::new(Timestamp::from_nanos(0), text, labels, o)
        };
        for (job, text, o) in [
            ("a", "2024-01-01T00:00:01Z stdout P a1 ", 1),
            ("a", "2024-01-01T00:00:02Z stdout P a2 ", 2),
            ("b", "2024-01-01T00:00:03Z stdout P b1 ", 3),
            // A third stream with a piece: the pieces held so far go out as they are.
            ("c", "2024-01-01T00:00:04Z stdout P c1 ", 4),
            ("a", "2024-01-01T00:00:05Z stdout F a3", 5),
            ("c", "2024-01-01T00:00:06Z stdout F c2", 6),
        ] {
            p.process(mk(job, text, o), now, &mut out, &mut dropped);
        }
        let mut got: Vec<(&str, u64)> = out.iter().map(|e| (e.line.as_str(), e.origin)).collect();
        got[..2].sort();
        assert_eq!(got, [("a1 a2 ", 2), ("b1 ", 3), ("a3", 5), ("c1 c2", 6)]);
        assert_eq!(out[3].timestamp.0 / 1_000_000_000 % 60, 6);
        assert_eq!(p.pending(), 0);
        // Every piece merged into another comes back for reuse.
        p.take_spent(&mut spare);
        assert_eq!(spare.len(), 2);
    }

    #[test]
    fn a_content_label_is_the_line_of_a_line_that_is_not_cri() {
        let labels: BTreeMap<String, String> = [("content", "from label"), ("flags", "P")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (out, _) = crate::pipeline::tests::run_entries(
            "- cri: {}",
            vec![Entry::new(Timestamp::from_nanos(0), "not cri", labels, 0)],
        );
        // Held as a partial line (flags "P"), released by the flush at the end.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "from label");
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- cri:\n    max_partial_lines: many").contains("max_partial_lines"));
    }
}
