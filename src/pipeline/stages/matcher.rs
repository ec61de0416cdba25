//! `match`: runs nested stages (or drops the entry) when a LogQL stream selector, and optional
//! line filters, match.
//!
//! The selector is `{name="value", name!="value", name=~"regex", name!~"regex"}` (regexes fully
//! anchored; a missing label reads as ""), optionally followed by line filters `|= "text"`,
//! `!= "text"`, `|~ "regex"`, `!~ "regex"`. Strings are Go strings: `"..."` with escapes or
//! `` `...` `` raw.

use super::options;
// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use crate::pipeline::{BuildCtx, Cx, Entry, Flow, PipelineError, Stage, Stages};
use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::time::Instant;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchConfig {
    selector: Option<WString>,
    pipeline_name: Option<WString>,
    action: Option<WString>,
    drop_counter_reason: Option<WString>,
    #[serde(default)]
    stages: Option<Vec<Yaml>>,
}

#[derive(Debug)]
enum LabelMatcher {
    Eq(String, String),
    Ne(String, String),
    Re(String, Regex),
    NotRe(String, Regex),
}

#[derive(Debug)]
enum LineFilter {
    Contains(String),
    NotContains(String),
    Re(Regex),
    NotRe(Regex),
}

/// A parsed LogQL stream selector with line filters.
#[derive(Debug)]
pub(crate) struct Selector {
    matchers: Vec<LabelMatcher>,
    filters: Vec<LineFilter>,
}

impl Selector {
    pub(crate) fn parse(s: &str) -> Result<Selector, String> {
        let mut p = Lexer { s, pos: 0 };
        p.expect('{')?;
        let mut matchers = Vec::new();
        loop {
            p.skip_ws();
            if p.peek() == Some('}') && !matchers.is_empty() {
                p.pos += 1;
                break;
            }
            let name = p.ident()?;
            p.skip_ws();
            let op = if p.eat("=~") {
                "=~"
            } else if p.eat("!~") {
                "!~"
            } else if p.eat("!=") {
                "!="
            } else if p.eat("=") {
                "="
            } else {
                return Err(p.error("expected one of = != =~ !~"));
            };
            let value = p.string()?;
            let anchored = |v: &str| {
                Regex::new(&format!("^(?:{v})$"))
                    .map_err(|e| format!("invalid regular expression {v:?}: {e}"))
            };
            matchers.push(match op {
                "=" => LabelMatcher::Eq(name, value),
                "!=" => LabelMatcher::Ne(name, value),
                "=~" => LabelMatcher::Re(name, anchored(&value)?),
                _ => LabelMatcher::NotRe(name, anchored(&value)?),
            });
            p.skip_ws();
            match p.next() {
                Some(',') => continue,
                Some('}') => break,
                _ => return Err(p.error("expected , or }")),
            }
        }
        let mut filters = Vec::new();
        loop {
            p.skip_ws();
            if p.pos >= s.len() {
                break;
            }
            let op = if p.eat("|=") {
                "|="
            } else if p.eat("!=") {
                "!="
            } else if p.eat("|~") {
                "|~"
            } else if p.eat("!~") {
                "!~"
            } else {
                return Err(p.error("expected a line filter (|= != |~ !~)"));
            };
            let value = p.string()?;
            let re = |v: &str| {
                Regex::new(v).map_err(|e| format!("invalid regular expression {v:?}: {e}"))
            };
            filters.push(match op {
                "|=" => LineFilter::Contains(value),
                "!=" => LineFilter::NotContains(value),
                "|~" => LineFilter::Re(re(&value)?),
                _ => LineFilter::NotRe(re(&value)?),
            });
        }
        if matchers.is_empty() {
            return Err("a selector needs at least one label matcher".into());
        }
        Ok(Selector { matchers, filters })
    }

    pub(crate) fn matches(&self, labels: &crate::pipeline::Labels, line: &str) -> bool {
        let get = |n: &str| labels.get(n).map_or("", String::as_str);
        self.matchers.iter().all(|m| match m {
            LabelMatcher::Eq(n, v) => get(n) == v,
            LabelMatcher::Ne(n, v) => get(n) != v,
            LabelMatcher::Re(n, r) => r.is_match(get(n)),
            LabelMatcher::NotRe(n, r) => !r.is_match(get(n)),
        }) && self.filters.iter().all(|f| match f {
            LineFilter::Contains(t) => line.contains(t.as_str()),
            LineFilter::NotContains(t) => !line.contains(t.as_str()),
            LineFilter::Re(r) => r.is_match(line),
            LineFilter::NotRe(r) => !r.is_match(line),
        })
    }
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn error(&self, what: &str) -> String {
        format!("parse error at position {}: {what}", self.pos + 1)
    }
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {c:?}")))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let id = &self.s[start..self.pos];
        if id.is_empty() || id.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error("expected a label name"));
        }
        Ok(id.to_string())
    }
    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        match self.peek() {
            Some('`') => {
                let rest = &self.s[self.pos + 1..];
                let end = rest
                    .find('`')
                    .ok_or_else(|| self.error("unterminated raw string"))?;
                let v = rest[..end].to_string();
                self.pos += end + 2;
                Ok(v)
            }
            Some('"') => {
                let mut out = String::new();
                self.pos += 1;
                loop {
                    let c = self
                        .next()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    match c {
                        '"' => return Ok(out),
                        '\\' => {
                            let e = self
                                .next()
                                .ok_or_else(|| self.error("unterminated string"))?;
                            match e {
                                'n' => out.push('\n'),
                                't' => out.push('\t'),
                                'r' => out.push('\r'),
                                '\\' => out.push('\\'),
                                '"' => out.push('"'),
                                '\'' => out.push('\''),
                                'a' => out.push('\u{7}'),
                                'b' => out.push('\u{8}'),
                                'f' => out.push('\u{c}'),
                                'v' => out.push('\u{b}'),
                                'x' | 'u' | 'U' => {
                                    let n = match e {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let hex: String = (0..n).filter_map(|_| self.next()).collect();
                                    let code = u32::from_str_radix(&hex, 16)
                                        .map_err(|_| self.error("invalid escape"))?;
                                    out.push(
                                        char::from_u32(code)
                                            .ok_or_else(|| self.error("invalid escape"))?,
                                    );
                                }
                                _ => return Err(self.error(&format!("unknown escape \\{e}"))),
                            }
                        }
                        c => out.push(c),
                    }
                }
            }
            _ => Err(self.error("expected a quoted string")),
        }
    }
}

enum Action {
    Keep(Stages, Vec<Entry>),
    Drop(String),
}

struct Match {
    selector: Selector,
    action: Action,
}

impl Stage for Match {
    fn name(&self) -> &'static str {
        "match"
    }

    fn process(&mut self, entry: Entry, cx: &mut Cx<'_>) -> Flow {
        if !self.selector.matches(&entry.labels, &entry.line) {
            return Flow::Pass(entry);
        }
        match &mut self.action {
            Action::Drop(reason) => {
                cx.drop(entry.origin, reason);
                Flow::Nothing
            }
            Action::Keep(stages, buf) => {
                stages.run(0, entry, cx, buf);
                match buf.len() {
                    0 => Flow::Nothing,
                    1 => Flow::Pass(buf.pop().expect("one")),
                    _ => Flow::Many(std::mem::take(buf)),
                }
            }
        }
    }

    fn flush_due(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        if let Action::Keep(stages, _) = &mut self.action {
            stages.flush_due(cx, out);
        }
    }

    fn flush_all(&mut self, cx: &mut Cx<'_>, out: &mut Vec<Entry>) {
        if let Action::Keep(stages, _) = &mut self.action {
            stages.flush_all(cx, out);
        }
    }

    fn pending(&self) -> usize {
        match &self.action {
            Action::Keep(stages, _) => stages.pending(),
            Action::Drop(_) => 0,
        }
    }

    fn held_origins(&self, out: &mut Vec<u64>) {
        if let Action::Keep(stages, _) = &self.action {
            stages.held_origins(out);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match &self.action {
            Action::Keep(stages, _) => stages.next_deadline(),
            Action::Drop(_) => None,
        }
    }
}

pub(crate) fn build(
    config: &Yaml,
    ctx: &BuildCtx<'_>,
    here: &str,
) -> Result<Box<dyn Stage>, PipelineError> {
    let err = |m: String| PipelineError {
        path: here.to_string(),
        message: m,
    };
    if config.is_null() {
        return Err(err("match stage config cannot be empty".into()));
    }
    let c: MatchConfig = options(config).map_err(err)?;
    if c.pipeline_name.as_ref().is_some_and(|n| n.0.is_empty()) {
        return Err(err(
            "match stage pipeline name can be omitted but cannot be an empty string".into(),
        ));
    }
    let selector = c
        .selector
        .filter(|s| !s.0.is_empty())
        .ok_or_else(|| err("selector statement required for match stage".into()))?;
    let selector = Selector::parse(&selector.0)
        .map_err(|e| err(format!("invalid selector syntax for match stage: {e}")))?;
    let stages = c.stages.unwrap_or_default();
    let action = match c.action.as_ref().map(|a| a.0.as_str()) {
        None | Some("") | Some("keep") => {
            if stages.is_empty() {
                return Err(err(
                    "match stage requires at least one additional stage to be defined in '- stages'"
                        .into(),
                ));
            }
            Action::Keep(
                Stages::build(&stages, ctx, &format!("{here} stages"))?,
                Vec::new(),
            )
        }
        Some("drop") => {
            if !stages.is_empty() {
                return Err(err(
                    "match stage configured to drop entries cannot contains stages".into(),
                ));
            }
            let reason = c
                .drop_counter_reason
                .map(|r| r.0)
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "match_stage".to_string());
            Action::Drop(reason)
        }
        Some(_) => return Err(err("match stage action should be 'keep' or 'drop'".into())),
    };
    Ok(Box::new(Match { selector, action }))
}

#[cfg(test)]
mod tests {
    use super::Selector;
    use crate::pipeline::tests::{build_err, run_lines};

    fn l(pairs: &[(&str, &str)]) -> crate::pipeline::Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let s = Selector::parse(r#"{app="loki", env=~"prod|dev", team!="a", x!~"y.*"}"#).unwrap();
        assert!(s.matches(&l(&[("app", "loki"), ("env", "prod")]), ""));
        assert!(!s.matches(&l(&[("app", "loki"), ("env", "production")]), ""));
        assert!(!s.matches(&l(&[("app", "loki"), ("env", "dev"), ("team", "a")]), ""));
        assert!(!s.matches(&l(&[("app", "loki"), ("env", "dev"), ("x", "yes")]), ""));
        let s = Selector::parse(r#"{app=""}"#).unwrap();
        assert!(s.matches(&l(&[]), ""), "a missing label reads as empty");
        let s = Selector::parse(r#"{app="promtail"} |~ ".*noisy error.*" != `debug` |= "foo""#)
            .unwrap();
        assert!(s.matches(&l(&[("app", "promtail")]), "foo noisy error"));
        assert!(!s.matches(&l(&[("app", "promtail")]), "foo noisy error debug"));
        assert!(!s.matches(&l(&[("app", "promtail")]), "noisy error"));
        let s = Selector::parse(r#"{a="x"} !~ "^b""#).unwrap();
        assert!(s.matches(&l(&[("a", "x")]), "ab"));
        assert!(!s.matches(&l(&[("a", "x")]), "ba"));
        for bad in [
            "{}",
            "app=\"x\"",
            "{app=x}",
            "{app=\"x\"",
            "{app=\"x\"} | json",
            "{app=~\"(\"}",
            "{1a=\"x\"}",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docs_example() {
        let yaml = r#"
- json:
    expressions:
      app:
- labels:
    app:
- match:
    selector: '{app="loki"}'
    stages:
    - json:
        expressions:
          msg: message
- match:
    pipeline_name: "app2"
    selector: '{app="pokey"}'
    action: keep
    stages:
    - json:
        expressions:
          msg: msg
- match:
    selector: '{app="promtail"} |~ ".*noisy error.*"'
    action: drop
    drop_counter_reason: promtail_noisy_error
- output:
    source: msg
"#;
        let (out, dropped) = run_lines(
            yaml,
            &[
                r#"{ "time":"2012-11-01T22:08:41+00:00", "app":"loki", "component": ["parser","type"], "level" : "WARN", "message" : "app1 log line" }"#,
                r#"{ "time":"2012-11-01T22:08:41+00:00", "app":"promtail", "component": ["parser","type"], "level" : "ERROR", "message" : "foo noisy error" }"#,
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "app1 log line");
        assert_eq!(dropped, vec![(1, "promtail_noisy_error".to_string())]);
    }

    #[test]
    fn docs_tenant_override() {
        let yaml = r#"
- json:
    expressions:
      app:
      message:
- labels:
    app:
- match:
    selector: '{app="api"}'
    stages:
      - tenant:
          value: "team-api"
- output:
    source: message
"#;
        let (out, _) = run_lines(
            yaml,
            &[
                r#"{"app":"api","log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#,
            ],
        );
        assert_eq!(out[0].labels["__tenant_id__"], "team-api");
    }

    #[test]
    fn default_drop_reason_and_nested_drop() {
        let yaml = "- match:\n    selector: '{job=\"j\"} |= \"x\"'\n    action: drop";
        let (out, dropped) = run_lines(yaml, &["a", "x"]);
        assert_eq!(out.len(), 1);
        assert_eq!(dropped, vec![(1, "match_stage".to_string())]);
        let yaml = "- match:\n    selector: '{job=\"j\"}'\n    stages:\n    - drop:\n        expression: x";
        let (out, dropped) = run_lines(yaml, &["a", "x"]);
        assert_eq!(out.len(), 1);
        assert_eq!(dropped, vec![(1, "drop_stage".to_string())]);
    }

    #[test]
    fn config_errors() {
        assert!(
            build_err("- match:\n    stages: [{labels: {a: null}}]")
                .contains("selector statement required")
        );
        assert!(
            build_err("- match:\n    selector: '{a=\"b\"}'")
                .contains("requires at least one additional stage")
        );
        assert!(build_err("- match:\n    selector: '{a=\"b\"}'\n    action: drop\n    stages: [{labels: {a: null}}]").contains("cannot contains stages"));
        assert!(build_err("- match:\n    selector: '{a=\"b\"}'\n    action: maybe\n    stages: [{labels: {a: null}}]").contains("'keep' or 'drop'"));
        assert!(
            build_err("- match:\n    selector: '{a=b}'\n    stages: [{labels: {a: null}}]")
                .contains("invalid selector syntax")
        );
        assert!(build_err("- match:\n    selector: '{a=\"b\"}'\n    pipeline_name: ''\n    stages: [{labels: {a: null}}]").contains("pipeline name"));
        let err = build_err(
            "- labels: {a: null}\n- match:\n    selector: '{a=\"b\"}'\n    stages:\n    - json: {}\n",
        );
        assert_eq!(
            err,
            "pipeline_stages[1] (match) stages[0] (json): JMES expression is required"
        );
    }
}
