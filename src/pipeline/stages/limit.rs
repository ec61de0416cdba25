//! `limit`: a token bucket (`rate` lines per second, `burst` at most), globally or per value of
//! the label `by_label_name` (entries without that label are not limited).
//!
//! With `drop: true`, entries over the limit are dropped (reason `ratelimit_drop_stage`). With
//! `drop: false` Promtail blocks its whole pipeline until a token is free; logferry cannot block
//! here, so it holds the entries, in order, and releases them through `Pipeline::flush_due` as
//! tokens come back (`Pipeline::next_deadline` says when; `Pipeline::pending` counts them, for
//! the caller's back-pressure). `flush_all` releases what is held at once.

use super::options;
use super::weak::{WBool, WF64, WString, WU64};
use crate::pipeline::{Cx, Entry, Flow, Stage};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    rate: Option<WF64>,
    burst: Option<WU64>,
    drop: Option<WBool>,
    by_label_name: Option<WString>,
    max_distinct_labels: Option<WU64>,
}

/// golang.org/x/time/rate's limiter: starts full.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        if let Some(last) = self.last
            && now > last
        {
            self.tokens = (self.tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
    }

    fn allow(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn next_token(&self, rate: f64) -> Option<Instant> {
        let last = self.last?;
        let missing = (1.0 - self.tokens).max(0.0);
        Some(last + Duration::from_secs_f64(missing / rate))
    }
}

struct Limit {
    rate: f64,
    burst: f64,
    drop: bool,
    by_label: Option<String>,
    max_distinct: usize,
    bucket: Bucket,
    buckets: HashMap<String, Bucket>,
    held: VecDeque<Entry>,
}

impl Limit {
    fn allow(&mut self, entry: &Entry, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        match &self.by_label {
            None => self.bucket.allow(now, rate, burst),
            Some(name) => {
                let Some(value) = entry.labels.get(name) else {
                    return true;
                };
                if !self.buckets.contains_key(value) && self.buckets.len() >= self.max_distinct {
                    // Forget them all, as Promtail's generational map does.
                    self.buckets.clear();
                }
                self.buckets
                    .entry(value.clone())
                    .or_insert_with(|| Bucket::new(burst))
                    .allow(now, rate, burst)
            }
        }
    }
}

impl Stage for Limit {
    fn name(&self) -> &'static str {
        "limit"
    }

    fn process(&mut self, entry: Entry, cx: &mut Cx<'_>) -> Flow {
        if self.drop {
            if self.allow(&entry, cx.now) {
                return Flow::Pass(entry);
            }
            cx.drop(entry.origin, "ratelimit_drop_stage");
            return Flow::Nothing;
        }
        if self.held.is_empty() && self.allow(&entry, cx.now) {
            return Flow::Pass(entry);
        }
        self.held.push_back(entry);
        Flow::Nothing
    }

    fn flush_due(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        while let Some(front) = self.held.front() {
            let front = front.clone();
            if !self.allow(&front, cx.now) {
                break;
            }
            out.extend(self.held.pop_front());
        }
    }

    fn flush_all(&mut self, _cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        out.extend(self.held.drain(..));
    }

    fn pending(&self) -> usize {
        self.held.len()
    }

    fn held_origins(&self, out: &mut Vec<u64>) {
        out.extend(self.held.iter().map(|e| e.origin));
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        self.bucket.next_token(self.rate)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: LimitConfig = options(config)?;
    let rate = c.rate.map_or(0.0, |r| r.0);
    let burst = c.burst.map_or(0, |b| b.0);
    if rate.is_nan() || rate <= 0.0 || burst == 0 {
        return Err("limit stage failed to parse rate or burst".into());
    }
    let drop = c.drop.is_some_and(|d| d.0);
    let by_label = c.by_label_name.map(|n| n.0).filter(|n| !n.is_empty());
    if by_label.is_some() && !drop {
        return Err("When ratelimiting by label, drop must be true".into());
    }
    let max_distinct = c
        .max_distinct_labels
        .map_or(10_000, |n| n.0 as usize)
        .max(10_000);
    Ok(Box::new(Limit {
        rate,
        burst: burst as f64,
        drop,
        by_label,
        max_distinct,
        bucket: Bucket::new(burst as f64),
        buckets: HashMap::new(),
        held: VecDeque::new(),
    }))
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::Entry;
    use crate::pipeline::tests::{build_err, pipeline};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    fn entry(ns: Option<&str>, o: u64) -> Entry {
        let mut labels = BTreeMap::new();
        if let Some(ns) = ns {
            labels.insert("namespace".to_string(), ns.to_string());
        }
        Entry::new(Timestamp::from_nanos(0), "x", labels, o)
    }

    #[test]
    fn docs_drop() {
        let mut p = pipeline("- limit:\n    rate: 10\n    burst: 10\n    drop: true");
        let t0 = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        for i in 0..15 {
            p.process(entry(None, i), t0, &mut out, &mut dropped);
        }
        assert_eq!(out.len(), 10);
        assert_eq!(dropped.len(), 5);
        assert_eq!(dropped[0], (10, "ratelimit_drop_stage".to_string()));
        // 100 ms later one token is back.
        p.process(
            entry(None, 15),
            t0 + Duration::from_millis(100),
            &mut out,
            &mut dropped,
        );
        p.process(
            entry(None, 16),
            t0 + Duration::from_millis(100),
            &mut out,
            &mut dropped,
        );
        assert_eq!(out.len(), 11);
        assert_eq!(dropped.len(), 6);
    }

    #[test]
    fn docs_by_label() {
        let mut p = pipeline(
            "- limit:\n    rate: 10\n    burst: 10\n    drop: true\n    by_label_name: \"namespace\"",
        );
        let t0 = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        for i in 0..12 {
            p.process(entry(Some("a"), i), t0, &mut out, &mut dropped);
            p.process(entry(Some("b"), 100 + i), t0, &mut out, &mut dropped);
            p.process(entry(None, 200 + i), t0, &mut out, &mut dropped);
        }
        assert_eq!(out.len(), 10 + 10 + 12);
        assert_eq!(dropped.len(), 4);
    }

    #[test]
    fn docs_throttle_holds_and_releases_in_order() {
        let mut p = pipeline("- limit:\n    rate: 10\n    burst: 10");
        let t0 = Instant::now();
        let (mut out, mut dropped) = (vec![], vec![]);
        for i in 0..13 {
            p.process(entry(None, i), t0, &mut out, &mut dropped);
        }
        assert_eq!(out.len(), 10);
        assert!(dropped.is_empty());
        assert_eq!(p.pending(), 3);
        let due = p.next_deadline().unwrap();
        assert_eq!(due, t0 + Duration::from_millis(100));
        p.flush_due(t0 + Duration::from_millis(250), &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(out[10].origin, 10);
        // A new entry queues behind the held one.
        p.process(
            entry(None, 13),
            t0 + Duration::from_millis(250),
            &mut out,
            &mut dropped,
        );
        assert_eq!(p.pending(), 2);
        p.flush_all(&mut out);
        let origins: Vec<u64> = out.iter().map(|e| e.origin).collect();
        assert_eq!(origins, (0..14).collect::<Vec<u64>>());
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- limit:\n    rate: 0\n    burst: 10").contains("rate or burst"));
        assert!(build_err("- limit:\n    rate: 10").contains("rate or burst"));
        assert!(
            build_err("- limit:\n    rate: 1\n    burst: 1\n    by_label_name: ns")
                .contains("drop must be true")
        );
    }
}
