//! `drop`: drops entries that meet every configured condition (`source`/`value`,
//! `expression`, `older_than`, `longer_than`); for OR, use several drop stages.
//!
//! With several sources, `value` and `expression` see the sources' values joined with
//! `separator` (all sources must be present); without either, the entry is dropped when any of
//! the sources is present.

use super::compile_regex;
use super::options;
use super::weak::{OneOrMany, WString};
use crate::entry::Timestamp;
use crate::pipeline::{Cx, Entry, Flow, Stage, get_string};
use crate::units::{ByteSize, GoDuration};
use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropConfig {
    source: Option<OneOrMany>,
    separator: Option<WString>,
    expression: Option<WString>,
    value: Option<WString>,
    older_than: Option<WString>,
    longer_than: Option<ByteSize>,
    drop_counter_reason: Option<WString>,
}

struct Drop {
    sources: Vec<String>,
    separator: String,
    expression: Option<Regex>,
    value: Option<String>,
    older_than: Option<i64>,
    longer_than: Option<usize>,
    reason: String,
}

impl Drop {
    /// The sources' values joined, or None when one is missing or has no string form.
    fn joined(&self, entry: &Entry) -> Option<String> {
        let mut out = String::new();
        for (i, s) in self.sources.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.separator);
            }
            out.push_str(&get_string(entry.extracted.get(s)?)?);
        }
        Some(out)
    }

    fn should_drop(&self, entry: &Entry) -> bool {
        if let Some(max) = self.longer_than
            && entry.line.len() <= max
        {
            return false;
        }
        if let Some(age) = self.older_than
            && entry.timestamp.0 >= Timestamp::now().0.saturating_sub(age)
        {
            return false;
        }
        if !self.sources.is_empty() && self.expression.is_none() {
            match &self.value {
                None => {
                    if !self.sources.iter().any(|s| entry.extracted.contains_key(s)) {
                        return false;
                    }
                }
                Some(want) => match self.joined(entry) {
                    Some(v) if v == *want => {}
                    _ => return false,
                },
            }
        }
        if let Some(re) = &self.expression {
            let matched = if self.sources.is_empty() {
                re.is_match(&entry.line)
            } else {
                match self.joined(entry) {
                    Some(v) => re.is_match(&v),
                    None => return false,
                }
            };
            if !matched {
                return false;
            }
        }
        true
    }
}

impl Stage for Drop {
    fn name(&self) -> &'static str {
        "drop"
    }
    fn process(&mut self, entry: Entry, cx: &mut Cx<'_>) -> Flow {
        if self.should_drop(&entry) {
            cx.drop(entry.origin, &self.reason);
            Flow::Nothing
        } else {
            Flow::Pass(entry)
        }
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: DropConfig = options(config)?;
    if c.source.is_none()
        && c.expression.is_none()
        && c.older_than.is_none()
        && c.longer_than.is_none()
    {
        return Err("drop stage config must contain at least one of `source`, `expression`, `older_than` or `longer_than`".into());
    }
    if c.value.is_some() && c.expression.is_some() {
        return Err("drop stage config error, `value` and `expression` cannot both be defined at the same time.".into());
    }
    if c.value.is_some() && c.source.is_none() {
        return Err("drop stage config error, `value` needs `source`".into());
    }
    let older_than = match c.older_than {
        None => None,
        Some(d) => {
            let d: GoDuration = d.0.parse().map_err(|e| {
                format!(
                    "drop stage invalid duration, {} cannot be converted to a duration: {e}",
                    d.0
                )
            })?;
            Some(i64::try_from(d.0.as_nanos()).unwrap_or(i64::MAX))
        }
    };
    Ok(Box::new(Drop {
        sources: c.source.map(|s| s.0).unwrap_or_default(),
        separator: c.separator.map_or(";".to_string(), |s| s.0),
        expression: match c.expression {
            Some(e) => Some(
                compile_regex(&e.0)
                    .map_err(|e| format!("drop stage regex compilation error: {e}"))?,
            ),
            None => None,
        },
        value: c.value.map(|v| v.0),
        older_than,
        longer_than: c.longer_than.map(|b| b.0 as usize),
        reason: c
            .drop_counter_reason
            .map(|r| r.0)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "drop_stage".to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use crate::entry::Timestamp;
    use crate::pipeline::Entry;
    use crate::pipeline::tests::{build_err, run_entries, run_lines};

    const ERROR_LINE: &str = r#"{"time":"2019-01-01T01:00:00.000000001Z", "level": "error", "msg":"11.11.11.11 - \"POST /loki/api/push/ HTTP/1.1\" 200 932 \"-\" \"Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6\""}"#;

    fn kept(yaml: &str, lines: &[&str]) -> Vec<String> {
        run_lines(yaml, lines)
            .0
            .into_iter()
            .map(|e| e.line)
            .collect()
    }

    #[test]
    fn docs_simple_source_list() {
        let yaml = "- json:\n    expressions: {level: level, msg: msg}\n- drop:\n    source: [\"level\",\"msg\"]";
        assert!(kept(yaml, &[ERROR_LINE]).is_empty());
        let yaml =
            "- json:\n    expressions: {level: level}\n- drop:\n    source: [\"nope\",\"msg\"]";
        assert_eq!(kept(yaml, &[ERROR_LINE]).len(), 1);
    }

    #[test]
    fn docs_regex_match_line() {
        let yaml = "- drop:\n    expression: \".*debug.*\"";
        assert_eq!(
            kept(yaml, &["a debug line", "an info line"]),
            ["an info line"]
        );
    }

    #[test]
    fn docs_regex_concatenated_sources() {
        let yaml = r##"
- json:
    expressions:
     level:
     msg:
- drop:
    source:     ["level","msg"]
    separator:   "#"
    expression:  "(error|ERROR)#.*\/loki\/api\/push.*"
"##;
        let upper = ERROR_LINE.replace("\"error\"", "\"ERROR\"");
        let info = ERROR_LINE.replace("\"error\"", "\"info\"");
        assert_eq!(kept(yaml, &[ERROR_LINE, &upper, &info]), [info]);
    }

    #[test]
    fn docs_value_match() {
        let yaml = "- json:\n    expressions:\n     level:\n     msg:\n- drop:\n    source: \"level\"\n    value:  \"error\"";
        let info = ERROR_LINE.replace("\"error\"", "\"info\"");
        let (out, dropped) = run_lines(yaml, &[ERROR_LINE, &info]);
        assert_eq!(out.len(), 1);
        assert_eq!(dropped, vec![(0, "drop_stage".to_string())]);
    }

    #[test]
    fn docs_older_than() {
        let yaml = r#"
- json:
    expressions:
     time:
     msg:
- timestamp:
    source: time
    format: RFC3339
- drop:
    older_than: 24h
    drop_counter_reason: "line_too_old"
"#;
        let now = Timestamp::now().0 / 1_000_000_000;
        let fmt = |secs: i64| {
            chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        };
        let old = format!(r#"{{"time":"{}", "msg":"old"}}"#, fmt(now - 25 * 3600));
        let recent = format!(r#"{{"time":"{}", "msg":"recent"}}"#, fmt(now - 23 * 3600));
        let (out, dropped) = run_lines(yaml, &[&old, &recent]);
        assert_eq!(out.len(), 1);
        assert!(out[0].line.contains("recent"));
        assert_eq!(dropped, vec![(0, "line_too_old".to_string())]);
    }

    #[test]
    fn docs_longer_than_and_combined() {
        let long = "x".repeat(8193);
        let yaml = "- drop:\n    longer_than: 8kb\n    drop_counter_reason: \"line_too_long\"";
        let (out, dropped) = run_lines(yaml, &[&long, &"x".repeat(8192)]);
        assert_eq!(out.len(), 1);
        assert_eq!(dropped[0].1, "line_too_long");
        // regex AND length
        let yaml = "- drop:\n    expression: \".*debug.*\"\n    longer_than: 1kb";
        let long_debug = format!("debug {}", "x".repeat(1024));
        let short_debug = "debug";
        assert_eq!(
            kept(yaml, &[&long_debug, short_debug, &long]),
            [short_debug.to_string(), long.clone()]
        );
    }

    #[test]
    fn docs_or_with_several_stages() {
        let yaml = r#"
- json:
    expressions:
     msg:
- drop:
    longer_than: 8kb
- drop:
    source: "msg"
    expression: ".*trace.*"
"#;
        let (out, dropped) = run_entries(
            yaml,
            vec![
                Entry::new(
                    Timestamp::from_nanos(0),
                    r#"{"msg":"a trace"}"#,
                    Default::default(),
                    1,
                ),
                Entry::new(
                    Timestamp::from_nanos(0),
                    r#"{"msg":"fine"}"#,
                    Default::default(),
                    2,
                ),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(dropped, vec![(1, "drop_stage".to_string())]);
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- drop: {}").contains("at least one of"));
        assert!(
            build_err("- drop:\n    source: a\n    value: b\n    expression: c")
                .contains("cannot both be defined")
        );
        assert!(build_err("- drop:\n    expression: '('").contains("regex compilation error"));
        assert!(build_err("- drop:\n    older_than: yesterday").contains("invalid duration"));
        assert!(build_err("- drop:\n    longer_than: lots").contains("longer_than"));
    }
}
