//! `multiline`: merges the lines of a block (a stack trace, say) into one entry.
//!
//! A block starts at a line matching `firstline`; following lines that do not match are added
//! to it (joined with `\n`). The block is sent when the next first line arrives, when it has
//! `max_lines` lines (default 128), or when no line came for `max_wait_time` (default 3s).
//! Blocks are kept per label set; until a label set's first `firstline`, its lines pass
//! unchanged. The merged entry has the first line's timestamp, labels and extracted map (as in
//! Promtail) and the origin of its last line.

use super::options;
use super::weak::{WString, WU64};
use crate::pipeline::{Cx, Entry, Flow, Labels, Stage};
use crate::units::GoDuration;
use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MultilineConfig {
    firstline: Option<WString>,
    max_wait_time: Option<WString>,
    max_lines: Option<WU64>,
}

struct Block {
    /// The block's first entry (line emptied). Its labels are the block's label set.
    start: Entry,
    buffer: String,
    lines: u64,
    last_origin: u64,
    last_line_at: Instant,
}

struct Multiline {
    firstline: Regex,
    max_wait: Duration,
    max_lines: u64,
    /// One block per label set seen with a first line. Blocks are never removed, so the
    /// positions in `index` and `last` stay valid.
    blocks: Vec<Block>,
    index: HashMap<Labels, usize>,
    /// The block of the last line: lines of a stream come in runs, and comparing a label set
    /// with this block's costs less than hashing it.
    last: usize,
}

impl Block {
    /// The block so far, as an entry. The block keeps its first entry: lines that follow a
    /// cut (`max_lines`, `max_wait_time`) start a block from it.
    fn take(&mut self) -> Option<Entry> {
        if self.lines == 0 {
            return None;
        }
        let mut e = self.start.clone();
        e.line = std::mem::take(&mut self.buffer);
        e.origin = self.last_origin;
        self.lines = 0;
        Some(e)
    }

    /// Starts the next block at `first`; returns the block it ends, if any. The ended block's
    /// first entry becomes the block's entry (its maps are moved, not copied), and the line of
    /// `first` becomes the new buffer.
    fn restart(&mut self, mut first: Entry) -> Option<Entry> {
        let line = std::mem::take(&mut first.line);
        let mut ended = std::mem::replace(&mut self.start, first);
        let text = std::mem::replace(&mut self.buffer, line);
        let had_lines = self.lines > 0;
        self.lines = 0;
        if !had_lines {
            return None;
        }
        ended.line = text;
        ended.origin = self.last_origin;
        Some(ended)
    }
}

impl Multiline {
    /// The block of `labels`, if the label set had a first line.
    fn find(&self, labels: &Labels) -> Option<usize> {
        match self.blocks.get(self.last) {
            Some(b) if b.start.labels == *labels => Some(self.last),
            _ => self.index.get(labels).copied(),
        }
    }
}

impl Stage for Multiline {
    fn name(&self) -> &'static str {
        "multiline"
    }

    fn process(&mut self, mut entry: Entry, cx: &mut Cx<'_>) -> Flow {
        let is_first = self.firstline.is_match(&entry.line);
        let origin = entry.origin;
        let mut released = None;
        let i = match self.find(&entry.labels) {
            Some(i) => {
                let block = &mut self.blocks[i];
                if is_first {
                    released = block.restart(entry);
                } else {
                    if block.lines > 0 {
                        block.buffer.push('\n');
                    }
                    block.buffer.push_str(&entry.line);
                    cx.spend(entry);
                }
                i
            }
            None if is_first => {
                self.index.insert(entry.labels.clone(), self.blocks.len());
                let buffer = std::mem::take(&mut entry.line);
                self.blocks.push(Block {
                    start: entry,
                    buffer,
                    lines: 0,
                    last_origin: origin,
                    last_line_at: cx.now,
                });
                self.blocks.len() - 1
            }
            None => return Flow::Pass(entry),
        };
        self.last = i;
        let block = &mut self.blocks[i];
        block.lines += 1;
        block.last_origin = origin;
        block.last_line_at = cx.now;
        if self.max_lines > 0 && block.lines >= self.max_lines {
            match (released, block.take()) {
                (Some(ended), Some(cut)) => return Flow::Many(vec![ended, cut]),
                (ended, cut) => released = ended.or(cut),
            }
        }
        match released {
            Some(e) => Flow::Pass(e),
            None => Flow::Nothing,
        }
    }

    fn flush_due(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        for block in &mut self.blocks {
            if block.lines > 0
                && cx.now.saturating_duration_since(block.last_line_at) >= self.max_wait
            {
                tracing::debug!(wait = ?self.max_wait, "flush multiline block due to timeout");
                out.extend(block.take());
            }
        }
    }

    fn flush_all(&mut self, _cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        for block in &mut self.blocks {
            out.extend(block.take());
        }
    }

    fn pending(&self) -> usize {
        self.blocks.iter().map(|b| b.lines as usize).sum()
    }

    fn held_origins(&self, out: &mut Vec<u64>) {
        out.extend(
            self.blocks
                .iter()
                .filter(|b| b.lines > 0)
                .map(|b| b.start.origin),
        );
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.blocks
            .iter()
            .filter(|b| b.lines > 0)
            .map(|b| b.last_line_at + self.max_wait)
            .min()
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: MultilineConfig = options(config)?;
    let expr = c
        .firstline
        .ok_or("multiline stage config must define `firstline` regular expression")?;
    super::reject_angle_group(&expr.0)
        .map_err(|e| format!("multiline stage first line regex compilation error: {e}"))?;
    let firstline = Regex::new(&expr.0)
        .map_err(|e| format!("multiline stage first line regex compilation error: {e}"))?;
    let max_wait = match c.max_wait_time {
        None => Duration::from_secs(3),
        Some(d) => {
            d.0.parse::<GoDuration>()
                .map_err(|e| format!("multiline stage `max_wait_time` parse error: {e}"))?
                .0
        }
    };
    Ok(Box::new(Multiline {
        firstline,
        max_wait,
        max_lines: c.max_lines.map_or(128, |n| n.0),
        blocks: Vec::new(),
        index: HashMap::new(),
        last: 0,
    }))
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::Entry;
    use crate::pipeline::tests::{build_err, pipeline};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    const FLASK: &str = r#"[2020-12-03 11:36:20] "GET /hello HTTP/1.1" 200 -
[2020-12-03 11:36:23] ERROR in app: Exception on /error [GET]
Traceback (most recent call last):
  File "/home/pallets/.pyenv/versions/3.8.5/lib/python3.8/site-packages/flask/app.py", line 2447, in wsgi_app
    response = self.full_dispatch_request()
  File "/home/pallets/src/deployment_tools/hello.py", line 10, in error
    raise Exception("Sorry, this route always breaks")
Exception: Sorry, this route always breaks
[2020-12-03 11:36:23] "GET /error HTTP/1.1" 500 -
[2020-12-03 11:36:26] "GET /hello HTTP/1.1" 200 -
[2020-12-03 11:36:27] "GET /hello HTTP/1.1" 200 -"#;

    fn labels(job: &str) -> BTreeMap<String, String> {
        [("job".to_string(), job.to_string())].into_iter().collect()
    }

    #[test]
    fn docs_flask_example() {
        let yaml = r#"
- multiline:
    firstline: '^\[\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}:\d{2}\]'
    max_wait_time: 3s
- regex:
    expression: '^(?P<time>\[\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}:\d{2}\]) (?P<message>(?s:.*))$'
"#;
        let mut p = pipeline(yaml);
        let t0 = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        for (i, line) in FLASK.lines().enumerate() {
            let e = Entry::new(
                Timestamp::from_nanos(i as i64),
                line,
                labels("flask"),
                i as u64,
            );
            p.process(e, t0, &mut out, &mut dropped);
        }
        // The last block is still held.
        assert_eq!(out.len(), 4);
        assert_eq!(p.pending(), 1);
        assert_eq!(
            out[0].line,
            r#"[2020-12-03 11:36:20] "GET /hello HTTP/1.1" 200 -"#
        );
        assert!(
            out[1]
                .line
                .starts_with("[2020-12-03 11:36:23] ERROR in app")
        );
        assert!(
            out[1]
                .line
                .ends_with("\nException: Sorry, this route always breaks")
        );
        assert_eq!(out[1].line.lines().count(), 7);
        assert_eq!(
            out[1].timestamp,
            Timestamp::from_nanos(1),
            "the first line's timestamp"
        );
        assert_eq!(out[1].origin, 7, "the last line's origin");
        assert!(
            out[1].extracted["message"]
                .as_str()
                .unwrap()
                .contains("Traceback")
        );
        // Nothing is due before max_wait_time.
        p.flush_due(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(3)));
        p.flush_due(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(
            out[4].line,
            r#"[2020-12-03 11:36:27] "GET /hello HTTP/1.1" 200 -"#
        );
        assert_eq!(
            out[4].extracted["time"],
            serde_json::json!("[2020-12-03 11:36:27]")
        );
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn docs_zero_width_space_and_max_lines() {
        let yaml = "- multiline:\n    firstline: '^\\x{200B}\\['\n    max_lines: 3";
        let mut p = pipeline(yaml);
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        for (i, line) in ["before", "\u{200B}[a", "b", "c", "d", "e", "\u{200B}[f"]
            .iter()
            .enumerate()
        {
            p.process(
                Entry::new(Timestamp::from_nanos(0), *line, labels("x"), i as u64),
                now,
                &mut out,
                &mut dropped,
            );
        }
        let lines: Vec<&str> = out.iter().map(|e| e.line.as_str()).collect();
        // Lines before the first block pass; max_lines cuts blocks; a continuation after a cut
        // starts a new block.
        assert_eq!(lines, ["before", "\u{200B}[a\nb\nc", "d\ne"]);
        p.flush_all(&mut out);
        assert_eq!(out.last().unwrap().line, "\u{200B}[f");
    }

    #[test]
    fn streams_are_kept_apart() {
        let mut p = pipeline("- multiline:\n    firstline: '^START'");
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        for (i, (job, line)) in [
            ("a", "START 1"),
            ("b", "START 2"),
            ("a", "a-cont"),
            ("b", "b-cont"),
            ("a", "START 3"),
        ]
        .iter()
        .enumerate()
        {
            p.process(
                Entry::new(Timestamp::from_nanos(0), *line, labels(job), i as u64),
                now,
                &mut out,
                &mut dropped,
            );
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "START 1\na-cont");
        assert_eq!(out[0].origin, 2);
        p.flush_all(&mut out);
        let mut rest: Vec<&str> = out[1..].iter().map(|e| e.line.as_str()).collect();
        rest.sort();
        assert_eq!(rest, ["START 2\nb-cont", "START 3"]);
        // Nobody asked for spent entries: the pipeline kept none.
        let mut spare = vec![];
        p.take_spent(&mut spare);
        assert!(spare.is_empty());
    }

    #[test]
    fn max_lines_of_one_and_lines_after_a_timeout() {
        let mut p = pipeline("- multiline:\n    firstline: '^START'\n    max_lines: 1");
        let now = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        let mut line = |text: &str, ts: i64, o: u64, out: &mut Vec<Entry>| {
            let e = Entry::new(Timestamp::from_nanos(ts), text, labels("x"), o);
            p.process(e, now, out, &mut dropped);
        };
        line("START a", 1, 0, &mut out);
        line("b", 2, 1, &mut out);
        line("START c", 3, 2, &mut out);
        // Every line is a block of its own; a continuation line keeps the time of the block's
        // first line.
        let got: Vec<(&str, i64, u64)> = out
            .iter()
            .map(|e| (e.line.as_str(), e.timestamp.0, e.origin))
            .collect();
        assert_eq!(got, [("START a", 1, 0), ("b", 1, 1), ("START c", 3, 2)]);
        assert_eq!(p.pending(), 0);

        let mut p = pipeline("- multiline:\n    firstline: '^START'\n    max_wait_time: 1s");
        let (mut out, mut spare) = (vec![], vec![]);
        // Asking once for spent entries makes the pipeline keep them.
        p.take_spent(&mut spare);
        for (i, text) in ["START a", "b"].into_iter().enumerate() {
            let e = Entry::new(Timestamp::from_nanos(i as i64), text, labels("x"), i as u64);
            p.process(e, now, &mut out, &mut dropped);
        }
        p.flush_due(now + Duration::from_secs(1), &mut out);
        // A line after the timeout starts a block with the first line's time and labels.
        let e = Entry::new(Timestamp::from_nanos(5), "c", labels("x"), 2);
        p.process(e, now + Duration::from_secs(2), &mut out, &mut dropped);
        let e = Entry::new(Timestamp::from_nanos(6), "d", labels("x"), 3);
        p.process(e, now + Duration::from_secs(2), &mut out, &mut dropped);
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(3)));
        p.flush_all(&mut out);
        let got: Vec<(&str, i64, u64)> = out
            .iter()
            .map(|e| (e.line.as_str(), e.timestamp.0, e.origin))
            .collect();
        assert_eq!(got, [("START a\nb", 0, 1), ("c\nd", 0, 3)]);
        // The lines merged into a block after its first come back for reuse.
        p.take_spent(&mut spare);
        assert_eq!(spare.len(), 3);
        assert!(dropped.is_empty());
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- multiline: {}").contains("must define `firstline`"));
        assert!(build_err("- multiline:\n    firstline: '('").contains("regex compilation error"));
        assert!(
            build_err("- multiline:\n    firstline: a\n    max_wait_time: soon")
                .contains("max_wait_time")
        );
    }
}
