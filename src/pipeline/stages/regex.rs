//! `regex`: named capture groups of an RE2 expression go to the extracted map.

// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use super::{compile_regex, non_empty_source, options};
use crate::pipeline::{Cx, Entry, Flow, Stage};
use regex::{CaptureLocations, Regex};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexConfig {
    expression: Option<WString>,
    source: Option<WString>,
}

pub(crate) struct RegexStage {
    regex: Regex,
    source: Option<String>,
    /// (group index, name) of the named groups.
    names: Vec<(usize, String)>,
    /// Where the groups matched, reused from line to line.
    locations: CaptureLocations,
}

impl RegexStage {
    pub(crate) fn new(regex: Regex, source: Option<String>) -> RegexStage {
        let mut names: Vec<(usize, String)> = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
            .collect();
        // Names are unique: setting them in key order gives the same map, with each key found
        // right after the previous one.
        names.sort_by(|a, b| a.1.cmp(&b.1));
        RegexStage {
            locations: regex.capture_locations(),
            regex,
            source,
            names,
        }
    }

    pub(crate) fn apply(&mut self, entry: &mut Entry) {
        let input = match &self.source {
            None => std::borrow::Cow::Borrowed(entry.line.as_str()),
            Some(source) => match super::source_string(&entry.extracted, source) {
                Ok(s) => std::borrow::Cow::Owned(s.into_owned()),
                Err(why) => {
                    tracing::debug!(source = source.as_str(), "regex stage: {why}");
                    return;
                }
            },
        };
        let matched = if self.names.is_empty() {
            // Nothing to extract: whether it matches is all there is to know.
            self.regex.is_match(&input)
        } else {
            self.regex
                .captures_read(&mut self.locations, &input)
                .is_some()
        };
        if !matched {
            tracing::debug!(regex = self.regex.as_str(), "regex did not match");
            return;
        }
        for (i, name) in &self.names {
            let value = self
                .locations
                .get(*i)
                .map_or("", |(start, end)| &input[start..end]);
            entry.extracted.set_text(name, value);
        }
    }
}

impl Stage for RegexStage {
    fn name(&self) -> &'static str {
        "regex"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        self.apply(&mut entry);
        Flow::Pass(entry)
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("empty regex stage configuration".into());
    }
    let c: RegexConfig = options(config)?;
    let expr = c
        .expression
        .filter(|e| !e.0.is_empty())
        .ok_or("expression is required")?;
    let source = non_empty_source(c.source)?;
    Ok(Box::new(RegexStage::new(compile_regex(&expr.0)?, source)))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::{build_err, run_one};
    use serde_json::json;

    #[test]
    fn docs_example_without_source() {
        let yaml = r#"
- regex:
    expression: "^(?s)(?P<time>\\S+?) (?P<stream>stdout|stderr) (?P<flags>\\S+?) (?P<content>.*)$"
"#;
        let out = run_one(
            yaml,
            "2019-01-01T01:00:00.000000001Z stderr P i'm a log message!",
        );
        assert_eq!(
            out.extracted["time"],
            json!("2019-01-01T01:00:00.000000001Z")
        );
        assert_eq!(out.extracted["stream"], json!("stderr"));
        assert_eq!(out.extracted["flags"], json!("P"));
        assert_eq!(out.extracted["content"], json!("i'm a log message!"));
        assert_eq!(
            out.line,
            "2019-01-01T01:00:00.000000001Z stderr P i'm a log message!"
        );
    }

    #[test]
    fn docs_example_with_source() {
        let yaml = r#"
- json:
    expressions:
      time:
- regex:
    expression: "^(?P<year>\\d+)"
    source:     "time"
"#;
        let out = run_one(yaml, r#"{"time":"2019-01-01T01:00:00.000000001Z"}"#);
        assert_eq!(
            out.extracted["time"],
            json!("2019-01-01T01:00:00.000000001Z")
        );
        assert_eq!(out.extracted["year"], json!("2019"));
    }

    #[test]
    fn no_match_leaves_entry_unchanged() {
        let out = run_one("- regex:\n    expression: '^(?P<a>\\d+)$'", "abc");
        assert!(!out.extracted.contains_key("a"));
        assert_eq!(out.line, "abc");
        // Optional groups that do not take part extract "".
        let out = run_one("- regex:\n    expression: '^(?P<a>x)?(?P<b>abc)$'", "abc");
        assert_eq!(out.extracted["a"], json!(""));
        assert_eq!(out.extracted["b"], json!("abc"));
    }

    #[test]
    fn config_errors() {
        let err = build_err("- json:\n    expressions: {a: a}\n- regex:\n    expression: '(?P<a'");
        assert!(
            err.starts_with("pipeline_stages[1] (regex): could not compile regular expression"),
            "{err}"
        );
        assert!(build_err("- regex: {}").contains("expression is required"));
        assert!(build_err("- regex:\n    expression: a\n    source: ''").contains("empty source"));
        // Go's RE2 knows only `(?P<name>...)`.
        assert!(build_err("- regex:\n    expression: '(?<a>x)'").contains("`(?<`"));
        // Promtail ignores options it does not know; so does logferry (with a warning).
        let out = crate::pipeline::tests::run_one(
            "- regex:\n    expression: '(?P<a>x)'\n    sourc: y",
            "x",
        );
        assert_eq!(out.extracted["a"], "x");
    }
}
