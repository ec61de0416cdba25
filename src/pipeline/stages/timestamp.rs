//! `timestamp`: sets the entry's time from an extracted value.
//!
//! Formats are Go layouts or the names Promtail knows (`RFC3339`, `Unix`, ...); named layouts
//! ignore `location` as Promtail's do. A layout without a year gets the current year (the
//! previous one for a December value read in January, the next one for a January value read in
//! December). On failure, `fudge` (the default) sets the last good timestamp of the same label
//! set plus 1 ns, and `skip` leaves the time as it was.

use super::options;
// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use crate::entry::Timestamp;
use crate::pipeline::gotime::{Fields, Layout, Zone, named_layout};
use crate::pipeline::{Cx, Entry, Flow, Labels, Stage};
use chrono::Datelike;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::collections::HashMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampConfig {
    source: Option<WString>,
    format: Option<WString>,
    #[serde(default)]
    fallback_formats: Vec<WString>,
    location: Option<WString>,
    action_on_failure: Option<WString>,
}

/// How one format reads a value.
#[derive(Debug, Clone)]
pub(crate) enum Format {
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
    /// A named Go layout: parsed as `time.Parse` (UTC unless the value says otherwise).
    Named(Layout),
    /// A custom layout, read in `location` when given.
    Custom(Layout, Zone),
}

impl Format {
    pub(crate) fn new(format: &str, location: Zone) -> Format {
        match format {
            "Unix" => Format::Unix,
            "UnixMs" => Format::UnixMs,
            "UnixUs" => Format::UnixUs,
            "UnixNs" => Format::UnixNs,
            other => match named_layout(other) {
                Some(l) => Format::Named(Layout::new(l)),
                None => Format::Custom(Layout::new(other), location),
            },
        }
    }

    pub(crate) fn parse(&self, value: &str) -> Result<Timestamp, String> {
        let int = |s: &str| s.parse::<i64>().map_err(|e| format!("{s:?}: {e}"));
        match self {
            Format::Unix => {
                if value.matches('.').count() == 1 {
                    let (sec, frac) = value.split_once('.').expect("one dot");
                    let sec = int(sec)?;
                    let f = int(frac)?;
                    let nsec = (f as f64 * 10f64.powi(9 - frac.len() as i32)) as i64;
                    return sec
                        .checked_mul(1_000_000_000)
                        .and_then(|s| s.checked_add(nsec))
                        .map(Timestamp::from_nanos)
                        .ok_or_else(|| "time out of range".to_string());
                }
                int(value)?
                    .checked_mul(1_000_000_000)
                    .map(Timestamp::from_nanos)
                    .ok_or_else(|| "time out of range".to_string())
            }
            Format::UnixMs => Ok(Timestamp::from_nanos(int(value)?.wrapping_mul(1_000_000))),
            Format::UnixUs => Ok(Timestamp::from_nanos(int(value)?.wrapping_mul(1_000))),
            Format::UnixNs => Ok(Timestamp::from_nanos(int(value)?)),
            Format::Named(layout) => layout.parse(value, &Zone::Utc),
            Format::Custom(layout, zone) => {
                if layout.has_year() {
                    return layout.parse(value, zone);
                }
                let fields = layout.parse_fields(value)?;
                if fields.year != 0 {
                    return Err(format!(
                        "timestamp '{value}' is expected to not contain the year date component"
                    ));
                }
                with_current_year(fields, zone)
            }
        }
    }
}

fn with_current_year(fields: Fields, zone: &Zone) -> Result<Timestamp, String> {
    let now = chrono::Utc::now();
    let (year, month) = (now.year() as i64, now.month());
    let year = match (fields.month, month) {
        (12, 1) => year - 1,
        (1, 12) => year + 1,
        _ => year,
    };
    fields.with_year(year).resolve(zone)
}

pub(crate) struct TimestampStage {
    source: String,
    formats: Vec<Format>,
    fudge: bool,
    /// Last good timestamp per label set (bounded like Promtail's LRU of 10,000), but for the
    /// label sets in `recent`. Hashed with foldhash, seeded per process: label values come from
    /// log lines, and SipHash cost ~7 % of an nginx regex → labels → timestamp pipeline whose
    /// labels take a few dozen values in no order.
    last: HashMap<Labels, (Timestamp, u64), foldhash::fast::RandomState>,
    /// The label sets of the last few good timestamps, with their digest, timestamp and tick:
    /// lines come in runs of one stream, or alternate between a few dozen (a container's stdout
    /// and stderr, a `level`, an HTTP method and status), and comparing digests costs less
    /// than hashing a label set into the map and out again for every line (that was ~7 % of an
    /// nginx regex → labels → timestamp pipeline with four recent sets and no digests).
    recent: Vec<Recent>,
    tick: u64,
}

struct Recent {
    digest: u64,
    labels: Labels,
    ts: Timestamp,
    tick: u64,
}

const MAX_LAST_KNOWN: usize = 10_000;
/// How many label sets [`TimestampStage`] compares before it hashes.
const RECENT: usize = 32;

impl TimestampStage {
    pub(crate) fn new(source: String, formats: Vec<Format>, fudge: bool) -> TimestampStage {
        TimestampStage {
            source,
            formats,
            fudge,
            last: HashMap::default(),
            recent: Vec::new(),
            tick: 0,
        }
    }

    fn parse(&self, entry: &Entry) -> Result<Timestamp, String> {
        let value =
            super::source_string(&entry.extracted, &self.source).map_err(|_| {
                match entry.extracted.get(&self.source) {
                    None => "extracted data did not contain a timestamp".to_string(),
                    Some(_) => "failed to convert extracted time to string".to_string(),
                }
            })?;
        let mut first_err = None;
        for f in &self.formats {
            match f.parse(&value) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(format!(
            "failed to parse time: {}",
            first_err.unwrap_or_default()
        ))
    }

    fn recent_index(&self, labels: &Labels, digest: u64) -> Option<usize> {
        self.recent
            .iter()
            .position(|r| r.digest == digest && r.labels == *labels)
    }

    fn last_good(&self, labels: &Labels) -> Option<Timestamp> {
        match self.recent_index(labels, labels.digest()) {
            Some(i) => Some(self.recent[i].ts),
            None => self.last.get(labels).map(|(ts, _)| *ts),
        }
    }

    fn remember(&mut self, labels: &Labels, ts: Timestamp) {
        self.tick += 1;
        let digest = labels.digest();
        if let Some(i) = self.recent_index(labels, digest) {
            let r = &mut self.recent[i];
            (r.ts, r.tick) = (ts, self.tick);
            return;
        }
        // Another label set: it leaves the map (its key is reused), and when the recent ones
        // are all taken, the least recently used of them goes in.
        let key = match self.last.remove_entry(labels) {
            Some((key, _)) => key,
            None => labels.clone(),
        };
        let fresh = Recent {
            digest,
            labels: key,
            ts,
            tick: self.tick,
        };
        if self.recent.len() < RECENT {
            self.recent.push(fresh);
        } else if let Some(oldest) = self.recent.iter_mut().min_by_key(|r| r.tick) {
            let old = std::mem::replace(oldest, fresh);
            self.last.insert(old.labels, (old.ts, old.tick));
        }
        // The map and the recent ones hold every label set known.
        if self.last.len() + self.recent.len() > MAX_LAST_KNOWN {
            // Forget the least recently used tenth.
            let mut ticks: Vec<u64> = self.last.values().map(|(_, t)| *t).collect();
            ticks.extend(self.recent.iter().map(|r| r.tick));
            let cut = ticks.len() / 10;
            ticks.select_nth_unstable(cut);
            let limit = ticks[cut];
            self.last.retain(|_, (_, t)| *t > limit);
            self.recent.retain(|r| r.tick > limit);
        }
    }

    pub(crate) fn apply(&mut self, entry: &mut Entry) {
        match self.parse(entry) {
            Ok(ts) => {
                entry.timestamp = ts;
                if self.fudge {
                    self.remember(&entry.labels, ts);
                }
            }
            Err(e) => {
                tracing::debug!(
                    error = e.as_str(),
                    source = self.source.as_str(),
                    "timestamp stage"
                );
                if self.fudge
                    && let Some(last) = self.last_good(&entry.labels)
                {
                    let ts = last.at(last.0.saturating_add(1));
                    entry.timestamp = ts;
                    self.remember(&entry.labels, ts);
                }
            }
        }
    }
}

impl Stage for TimestampStage {
    fn name(&self) -> &'static str {
        "timestamp"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        self.apply(&mut entry);
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("timestamp stage config cannot be empty".into());
    }
    let c: TimestampConfig = options(config)?;
    let source = c
        .source
        .filter(|s| !s.0.is_empty())
        .ok_or("timestamp source value is required if timestamp is specified")?;
    let format = c
        .format
        .filter(|s| !s.0.is_empty())
        .ok_or("timestamp format is required")?;
    let zone = match c.location {
        Some(l) => Zone::load(&l.0).map_err(|e| format!("invalid location specified: {e}"))?,
        None => Zone::Utc,
    };
    let fudge = match c.action_on_failure.as_ref().map(|a| a.0.as_str()) {
        None | Some("fudge") => true,
        Some("skip") => false,
        Some(_) => {
            return Err("invalid action on failure (supported values are [skip fudge])".into());
        }
    };
    let mut formats = vec![Format::new(&format.0, zone)];
    for f in c.fallback_formats {
        formats.push(Format::new(&f.0, zone));
    }
    Ok(Box::new(TimestampStage::new(source.0, formats, fudge)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::{build_err, run_entry_with, run_lines};

    const S: i64 = 1_000_000_000;

    fn ts(yaml: &str, value: &str) -> i64 {
        run_entry_with(yaml, "x", &[("time", value)]).timestamp.0
    }

    fn fmt(format: &str, value: &str) -> Result<i64, String> {
        Format::new(format, Zone::Utc).parse(value).map(|t| t.0)
    }

    #[test]
    fn docs_example_rfc3339nano() {
        assert_eq!(
            ts(
                "- timestamp:\n    source: time\n    format: RFC3339Nano",
                "2019-04-30T02:12:41.8443515Z"
            ),
            1556590361 * S + 844_351_500
        );
    }

    #[test]
    fn every_named_format() {
        let t = 1136239445 * S; // Mon Jan 2 15:04:05 -0700 MST 2006
        assert_eq!(fmt("ANSIC", "Mon Jan  2 22:04:05 2006"), Ok(t));
        assert_eq!(fmt("UnixDate", "Mon Jan  2 22:04:05 UTC 2006"), Ok(t));
        assert_eq!(fmt("RubyDate", "Mon Jan 02 15:04:05 -0700 2006"), Ok(t));
        assert_eq!(fmt("RFC822", "02 Jan 06 22:04 UTC"), Ok(t - 5 * S));
        assert_eq!(fmt("RFC822Z", "02 Jan 06 15:04 -0700"), Ok(t - 5 * S));
        assert_eq!(fmt("RFC850", "Monday, 02-Jan-06 22:04:05 UTC"), Ok(t));
        assert_eq!(fmt("RFC1123", "Mon, 02 Jan 2006 22:04:05 UTC"), Ok(t));
        assert_eq!(fmt("RFC1123Z", "Mon, 02 Jan 2006 15:04:05 -0700"), Ok(t));
        assert_eq!(fmt("RFC3339", "2006-01-02T15:04:05-07:00"), Ok(t));
        assert_eq!(
            fmt("RFC3339Nano", "2006-01-02T15:04:05.999999999-07:00"),
            Ok(t + 999_999_999)
        );
        assert_eq!(fmt("Unix", "1562708916"), Ok(1562708916 * S));
        assert_eq!(
            fmt("Unix", "1562708916.000000123"),
            Ok(1562708916 * S + 123)
        );
        assert_eq!(
            fmt("Unix", "1562708916.414"),
            Ok(1562708916 * S + 414_000_000)
        );
        assert_eq!(
            fmt("UnixMs", "1562708916414"),
            Ok(1562708916414 * 1_000_000)
        );
        assert_eq!(
            fmt("UnixUs", "1562708916414123"),
            Ok(1562708916414123 * 1_000)
        );
        assert_eq!(
            fmt("UnixNs", "1562708916000000123"),
            Ok(1562708916000000123)
        );
        assert!(fmt("Unix", "abc").is_err());
        assert!(fmt("UnixMs", "1.5").is_err());
    }

    #[test]
    fn custom_layout_and_location() {
        let yaml = "- timestamp:\n    source: time\n    format: '2006-01-02 15:04:05'\n    location: America/New_York";
        assert_eq!(ts(yaml, "2021-01-07 14:17:43"), (1610029063 + 5 * 3600) * S);
        // Named layouts ignore the location (as in Promtail).
        let yaml =
            "- timestamp:\n    source: time\n    format: RFC3339\n    location: America/New_York";
        assert_eq!(ts(yaml, "2021-01-07T14:17:43Z"), 1610029063 * S);
    }

    #[test]
    fn layout_without_year_uses_this_year() {
        let now = chrono::Utc::now();
        let f = Format::new("Jan _2 15:04:05", Zone::Utc);
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][now.month0() as usize];
        let t = f.parse(&format!("{month}  1 00:00:00")).unwrap();
        let year = chrono::DateTime::from_timestamp(t.0 / S, 0).unwrap().year();
        assert_eq!(year, now.year());
        // A year in the value is an error for such a layout.
        assert!(
            Format::new("Jan _2 15:04:05", Zone::Utc)
                .parse("Jan  2 15:04:05")
                .is_ok()
        );
    }

    #[test]
    fn fallback_formats() {
        let yaml = "- timestamp:\n    source: time\n    format: RFC3339\n    fallback_formats: [UnixMs, '02/Jan/2006:15:04:05 -0700']";
        assert_eq!(ts(yaml, "2021-01-07T14:17:43Z"), 1610029063 * S);
        assert_eq!(ts(yaml, "1610029063000"), 1610029063 * S);
        assert_eq!(ts(yaml, "07/Jan/2021:14:17:43 +0000"), 1610029063 * S);
    }

    #[test]
    fn fudge_and_skip() {
        let yaml = "
- regex:
    expression: '^(?P<time>\\S+) '
- timestamp:
    source: time
    format: RFC3339
";
        let (out, _) = run_lines(
            yaml,
            &["2021-01-07T14:17:43Z a", "garbage b", "nope", "garbage c"],
        );
        assert_eq!(out[0].timestamp.0, 1610029063 * S);
        assert_eq!(out[1].timestamp.0, 1610029063 * S + 1);
        // "nope" has no time at all (missing source): fudged too.
        assert_eq!(out[2].timestamp.0, 1610029063 * S + 2);
        assert_eq!(out[3].timestamp.0, 1610029063 * S + 3);

        let skip = format!("{yaml}    action_on_failure: skip\n");
        let (out, _) = run_lines(&skip, &["2021-01-07T14:17:43Z a", "garbage b"]);
        assert_eq!(out[1].timestamp.0, 0, "kept the read time");
        // Nothing parsed yet: fudge keeps the read time.
        let (out, _) = run_lines(yaml, &["garbage b"]);
        assert_eq!(out[0].timestamp.0, 0);
    }

    #[test]
    fn fudge_per_label_set_among_many() {
        // More label sets taking turns than are compared before hashing.
        let streams = RECENT as i64 + 8;
        let yaml = "- docker: {}";
        let mut lines = Vec::new();
        for round in 0..3 {
            for stream in 0..streams {
                let time = if round == 0 {
                    format!("2024-01-01T00:{:02}:{:02}Z", stream / 60, stream % 60)
                } else {
                    "bad".to_string()
                };
                lines.push(format!(
                    r#"{{"log":"x\n","stream":"s{stream}","time":"{time}"}}"#
                ));
            }
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, _) = run_lines(yaml, &lines);
        let start = 1_704_067_200 * S;
        for (i, e) in out.iter().enumerate() {
            let (round, stream) = (i as i64 / streams, i as i64 % streams);
            assert_eq!(e.timestamp.0, start + stream * S + round, "line {i}");
        }
    }

    #[test]
    fn numbers_from_json_are_read() {
        let yaml =
            "- json:\n    expressions: {t: t}\n- timestamp:\n    source: t\n    format: Unix";
        let (out, _) = run_lines(yaml, &[r#"{"t": 1562708916}"#]);
        assert_eq!(out[0].timestamp.0, 1562708916 * S);
    }

    #[test]
    fn config_errors() {
        assert!(
            build_err("- timestamp:\n    format: RFC3339").contains("source value is required")
        );
        assert!(build_err("- timestamp:\n    source: t").contains("format is required"));
        assert!(
            build_err("- timestamp:\n    source: t\n    format: RFC3339\n    location: Mars/Base")
                .contains("invalid location")
        );
        assert!(
            build_err(
                "- timestamp:\n    source: t\n    format: RFC3339\n    action_on_failure: explode"
            )
            .contains("invalid action on failure")
        );
    }
}
