//! `replace`: every capture group of an RE2 expression is replaced by a Go template rendered
//! with `.Value` set to the captured text; named groups also go to the extracted map (with their
//! replaced value, as in Promtail).
//!
//! Deviations from Promtail: the `replace` template is parsed when the pipeline is built (an
//! invalid one is a config error, where Promtail fails on every line); a group that starts
//! exactly where the previous replaced group ends is replaced too (Promtail skips it); nested
//! groups are left to their outermost group.

use super::template::ExtractedData;
// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use super::{compile_regex, non_empty_source, options};
use crate::pipeline::gotemplate::Template;
use crate::pipeline::{Cx, Entry, Flow, Stage};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use std::borrow::Cow;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceConfig {
    expression: Option<WString>,
    source: Option<WString>,
    replace: Option<WString>,
}

struct Replace {
    regex: Regex,
    source: Option<String>,
    template: Template,
    /// The template is plain text (no `{{`): no need to execute it per group.
    literal: Option<String>,
    names: Vec<(usize, String)>,
}

impl Replace {
    fn render(&self, entry: &Entry, captured: &str) -> Result<String, String> {
        if let Some(l) = &self.literal {
            return Ok(l.clone());
        }
        let data = ExtractedData {
            extracted: &entry.extracted,
            value: Some(captured),
            line: None,
        };
        self.template.execute(&data)
    }
}

impl Stage for Replace {
    fn name(&self) -> &'static str {
        "replace"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        let input: Cow<'_, str> = match &self.source {
            None => Cow::Borrowed(&entry.line),
            Some(source) => match super::source_string(&entry.extracted, source) {
                Ok(s) => Cow::Owned(s.into_owned()),
                Err(why) => {
                    tracing::debug!(source = source.as_str(), "replace stage: {why}");
                    return Flow::Pass(entry);
                }
            },
        };
        let mut result = String::with_capacity(input.len());
        let mut prev = 0;
        let mut matched = false;
        // Replacement of each captured text, in order (first wins for named groups).
        let mut captured: Vec<(String, String)> = Vec::new();
        let mut first_match: Vec<Option<String>> = Vec::new();
        for caps in self.regex.captures_iter(&input) {
            if !matched {
                first_match = (0..caps.len())
                    .map(|i| caps.get(i).map(|m| m.as_str().to_string()))
                    .collect();
            }
            matched = true;
            for i in 1..caps.len() {
                let Some(m) = caps.get(i) else { continue };
                let rendered = match self.render(&entry, m.as_str()) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(
                            error = e.as_str(),
                            "failed to execute template on extracted value"
                        );
                        return Flow::Pass(entry);
                    }
                };
                if m.start() >= prev {
                    result.push_str(&input[prev..m.start()]);
                    result.push_str(&rendered);
                    prev = m.end();
                }
                if !captured.iter().any(|(c, _)| c == m.as_str()) {
                    captured.push((m.as_str().to_string(), rendered));
                }
            }
        }
        if !matched {
            tracing::debug!(regex = self.regex.as_str(), "regex did not match");
            return Flow::Pass(entry);
        }
        result.push_str(&input[prev..]);
        drop(input);
        match &self.source {
            Some(source) => {
                entry
                    .extracted
                    .insert(source.clone(), Value::String(result));
            }
            None => entry.line = result,
        }
        for (i, name) in &self.names {
            if let Some(Some(text)) = first_match.get(*i)
                && let Some((_, rendered)) = captured.iter().find(|(c, _)| c == text)
            {
                entry
                    .extracted
                    .insert(name.clone(), Value::String(rendered.clone()));
            }
        }
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("empty replace stage configuration".into());
    }
    let c: ReplaceConfig = options(config)?;
    let expr = c
        .expression
        .filter(|e| !e.0.is_empty())
        .ok_or("expression is required")?;
    let source = non_empty_source(c.source)?;
    let regex = compile_regex(&expr.0)?;
    let replace = c.replace.unwrap_or_default().0;
    let template = Template::parse(&replace)?;
    let literal = (!replace.contains("{{")).then_some(replace);
    let names = regex
        .capture_names()
        .enumerate()
        .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
        .collect();
    Ok(Box::new(Replace {
        regex,
        source,
        template,
        literal,
        names,
    }))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::{build_err, run_one};
    use serde_json::json;

    const APACHE: &str = r#"11.11.11.11 - frank [25/Jan/2000:14:00:01 -0500] "GET /1986.js HTTP/1.1" 200 932 "-" "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6""#;

    #[test]
    fn docs_without_source() {
        let out = run_one(
            "- replace:\n    expression: \"password (\\\\S+)\"\n    replace: \"****\"",
            "2019-01-01T01:00:00.000000001Z stderr P i'm a log message who has sensitive information with password xyz!",
        );
        assert_eq!(
            out.line,
            "2019-01-01T01:00:00.000000001Z stderr P i'm a log message who has sensitive information with password ****"
        );
    }

    #[test]
    fn docs_with_source() {
        let yaml = r#"
- json:
    expressions:
     level:
     msg:
- replace:
    expression: "\\S+ - \"POST (\\S+) .*"
    source:     "msg"
    replace: "/loki/api/v1/push"
"#;
        let out = run_one(
            yaml,
            r#"{"time":"2019-01-01T01:00:00.000000001Z", "level": "info", "msg":"11.11.11.11 - \"POST /loki/api/push/ HTTP/1.1\" 200 932 \"-\" \"Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6\""}"#,
        );
        assert_eq!(
            out.extracted["msg"],
            json!(
                r#"11.11.11.11 - "POST /loki/api/v1/push HTTP/1.1" 200 932 "-" "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6""#
            )
        );
    }

    #[test]
    fn docs_template_replace() {
        let yaml = r#"
- replace:
    expression: "^(\\S+) (\\S+) (\\S+) \\[([\\w:/]+\\s[+\\-]\\d{4})\\] \"(\\S+)\\s?(\\S+)?\\s?(\\S+)?\" (\\d{3}|-) (\\d+|-)\\s?\"?([^\"]*)\"?\\s?\"?([^\"]*)?\"?$"
    replace: '{{ if eq .Value "200" }}{{ Replace .Value "200" "HttpStatusOk" -1 }}{{ else }}{{ .Value | ToUpper }}{{ end }}'
"#;
        let out = run_one(yaml, APACHE);
        assert_eq!(
            out.line,
            r#"11.11.11.11 - FRANK [25/JAN/2000:14:00:01 -0500] "GET /1986.JS HTTP/1.1" HttpStatusOk 932 "-" "MOZILLA/5.0 (WINDOWS; U; WINDOWS NT 5.1; DE; RV:1.9.1.7) GECKO/20091221 FIREFOX/3.5.7 GTB6""#
        );
    }

    #[test]
    fn docs_named_groups() {
        let yaml = r#"
- replace:
    expression: "^(?P<ip>\\S+) (?P<identd>\\S+) (?P<user>\\S+) \\[(?P<timestamp>[\\w:/]+\\s[+\\-]\\d{4})\\] \"(?P<action>\\S+)\\s?(?P<path>\\S+)?\\s?(?P<protocol>\\S+)?\" (?P<status>\\d{3}|-) (?P<size>\\d+|-)\\s?\"?(?P<referer>[^\"]*)\"?\\s?\"?(?P<useragent>[^\"]*)?\"?$"
    replace: '{{ .Value | ToUpper }}'
"#;
        let out = run_one(yaml, APACHE);
        let want = [
            ("ip", "11.11.11.11"),
            ("identd", "-"),
            ("user", "FRANK"),
            ("timestamp", "25/JAN/2000:14:00:01 -0500"),
            ("action", "GET"),
            ("path", "/1986.JS"),
            ("protocol", "HTTP/1.1"),
            ("status", "200"),
            ("size", "932"),
            ("referer", "-"),
            (
                "useragent",
                "MOZILLA/5.0 (WINDOWS; U; WINDOWS NT 5.1; DE; RV:1.9.1.7) GECKO/20091221 FIREFOX/3.5.7 GTB6",
            ),
        ];
        for (k, v) in want {
            assert_eq!(out.extracted[k], json!(v), "{k}");
        }
        assert_eq!(
            out.line,
            r#"11.11.11.11 - FRANK [25/JAN/2000:14:00:01 -0500] "GET /1986.JS HTTP/1.1" 200 932 "-" "MOZILLA/5.0 (WINDOWS; U; WINDOWS NT 5.1; DE; RV:1.9.1.7) GECKO/20091221 FIREFOX/3.5.7 GTB6""#
        );
    }

    #[test]
    fn docs_named_and_unnamed_groups() {
        let yaml = r#"
- replace:
    expression: "^(?P<ip>\\S+) (?P<identd>\\S+) (\\S+) \\[(?P<timestamp>[\\w:/]+\\s[+\\-]\\d{4})\\] \"(?P<action>\\S+)\\s?(?P<path>\\S+)?\\s?(?P<protocol>\\S+)?\" (?P<status>\\d{3}|-) (?P<size>\\d+|-)\\s?\"?(?P<referer>[^\"]*)\"?\\s?\"?(?P<useragent>[^\"]*)?\"?$"
    replace: '{{ .Value | ToUpper }}'
"#;
        let out = run_one(yaml, APACHE);
        assert!(!out.extracted.contains_key("user"));
        assert_eq!(out.extracted["path"], json!("/1986.JS"));
        assert!(out.line.starts_with("11.11.11.11 - FRANK [25/JAN/2000"));
    }

    #[test]
    fn docs_empty_replace() {
        let out = run_one(
            "- replace:\n    expression: \"11.11.11.11 - (\\\\S+\\\\s)\"\n    replace: \"\"",
            APACHE,
        );
        assert_eq!(
            out.line,
            r#"11.11.11.11 - [25/Jan/2000:14:00:01 -0500] "GET /1986.js HTTP/1.1" 200 932 "-" "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6""#
        );
    }

    #[test]
    fn docs_hash_obfuscation() {
        let yaml = r#"
- replace:
    expression: '([0-9]{3}-[0-9]{2}-[0-9]{4})'
    replace: '*SSN*{{ .Value | Hash "salt" }}*'
- replace:
    expression: '(\d{1,3}[.]\d{1,3}[.]\d{1,3}[.]\d{1,3})'
    replace: '*IP4*{{ .Value | Hash "salt" }}*'
- replace:
    expression: '([\w\.=-]+@[\w\.-]+\.[\w]{2,64})'
    replace: '*email*{{ .Value | Hash "salt" }}*'
"#;
        let out = run_one(yaml, "user 123-45-6789 from 10.1.2.3 mail a.b@example.com");
        let h = |s: &str| {
            use sha3::Digest as _;
            sha3::Sha3_256::digest(format!("salt{s}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(
            out.line,
            format!(
                "user *SSN*{}* from *IP4*{}* mail *email*{}*",
                h("123-45-6789"),
                h("10.1.2.3"),
                h("a.b@example.com")
            )
        );
    }

    #[test]
    fn every_match_is_replaced_and_no_match_is_unchanged() {
        let out = run_one(
            "- replace:\n    expression: '(\\d+)'\n    replace: 'N'",
            "a1b22c333",
        );
        assert_eq!(out.line, "aNbNcN");
        let out = run_one(
            "- replace:\n    expression: '(\\d+)'\n    replace: 'N'",
            "abc",
        );
        assert_eq!(out.line, "abc");
        // Adjacent groups are both replaced.
        let out = run_one(
            "- replace:\n    expression: '(a)(b)'\n    replace: 'X'",
            "ab",
        );
        assert_eq!(out.line, "XX");
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- replace:\n    replace: x").contains("expression is required"));
        assert!(build_err("- replace:\n    expression: '('").contains("could not compile"));
        assert!(
            build_err("- replace:\n    expression: a\n    replace: '{{ .x'").contains("(replace)")
        );
    }
}
