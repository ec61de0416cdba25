//! `json`: JMESPath expressions over a JSON object (the line or an extracted value).
//!
//! The `jmespath` crate (the JMESPath project's own Rust implementation) evaluates the
//! expressions. Values keep their JSON type in the extracted map; arrays and objects are written
//! back to JSON text, as Promtail does. Go's key order is random; an object picked by a field
//! path keeps the line's order (Promtail's usual one, see `order`), others are sorted.

mod order;

// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::{SBool as WBool, SString as WString};
use super::{non_empty_source, options};
use crate::pipeline::value::{go_json_number, go_json_string};
use crate::pipeline::{Cx, Entry, Flow, Stage};
use jmespath::{Context, DEFAULT_RUNTIME, Expression, Rcvar, Variable};
use serde::Deserialize;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonConfig {
    expressions: Option<BTreeMap<WString, Option<WString>>>,
    source: Option<WString>,
    #[serde(default)]
    drop_malformed: WBool,
}

pub(crate) struct JsonStage {
    expressions: Vec<(String, Expression<'static>)>,
    source: Option<String>,
    drop_malformed: bool,
}

/// Why an entry could not be parsed (only "malformed" drops the entry with `drop_malformed`).
pub(crate) enum JsonFailure {
    Skipped,
    Malformed,
}

impl JsonStage {
    pub(crate) fn new(
        expressions: &[(String, String)],
        source: Option<String>,
        drop_malformed: bool,
    ) -> Result<JsonStage, String> {
        if expressions.is_empty() {
            return Err("JMES expression is required".into());
        }
        let mut compiled = Vec::with_capacity(expressions.len());
        for (name, expr) in expressions {
            let expr = if expr.is_empty() { name } else { expr };
            let e = jmespath::compile(expr)
                .map_err(|e| format!("could not compile JMES expression {expr:?}: {e}"))?;
            compiled.push((name.clone(), e));
        }
        Ok(JsonStage {
            expressions: compiled,
            source,
            drop_malformed,
        })
    }

    pub(crate) fn apply(&self, entry: &mut Entry) -> Result<(), JsonFailure> {
        let owned;
        let text = match &self.source {
            None => entry.line.as_str(),
            Some(source) => match super::source_string(&entry.extracted, source) {
                Ok(s) => {
                    // Owned: the ordered rewrite reads it after `extracted` has changed.
                    owned = s.into_owned();
                    &owned
                }
                Err(why) => {
                    tracing::debug!(source = source.as_str(), "json stage: {why}");
                    return Err(JsonFailure::Skipped);
                }
            },
        };
        let data = match parse_object(text) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "failed to unmarshal log line");
                return Err(JsonFailure::Malformed);
            }
        };
        for (name, expr) in &self.expressions {
            let mut ctx = Context::new(expr.as_str(), &DEFAULT_RUNTIME);
            let result = match jmespath::interpret(&data, expr.as_ast(), &mut ctx) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "failed to search JMES expression");
                    continue;
                }
            };
            let value = match &*result {
                Variable::Null => Value::Null,
                Variable::Bool(b) => Value::Bool(*b),
                Variable::Number(n) => Value::Number(n.clone()),
                Variable::String(s) => Value::String(s.clone()),
                Variable::Object(_) if let Some(s) = order::ordered_object(text, expr.as_ast()) => {
                    Value::String(s)
                }
                Variable::Array(_) | Variable::Object(_) => {
                    let mut s = String::new();
                    go_json_variable(&result, &mut s);
                    Value::String(s)
                }
                Variable::Expref(_) => {
                    tracing::debug!("failed to marshal complex type back to string");
                    continue;
                }
            };
            entry.extracted.insert(name.clone(), value);
        }
        Ok(())
    }
}

/// Parses a JSON object (anything else is malformed, as Promtail unmarshals into a map).
fn parse_object(input: &str) -> Result<Rcvar, String> {
    let v: Variable = serde_json::from_str(input).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("not a JSON object".to_string());
    }
    Ok(Rcvar::new(v))
}

/// Writes a JMESPath value as Go's `json.Marshal` does.
fn go_json_variable(v: &Variable, out: &mut String) {
    match v {
        Variable::Null | Variable::Expref(_) => out.push_str("null"),
        Variable::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Variable::Number(n) => go_json_number(n, out),
        Variable::String(s) => go_json_string(s, out),
        Variable::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_variable(item, out);
            }
            out.push(']');
        }
        Variable::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                go_json_variable(item, out);
            }
            out.push('}');
        }
    }
}

impl Stage for JsonStage {
    fn name(&self) -> &'static str {
        "json"
    }
    fn process(&mut self, mut entry: Entry, cx: &mut Cx<'_>) -> Flow {
        match self.apply(&mut entry) {
            Err(JsonFailure::Malformed) if self.drop_malformed => {
                cx.drop(entry.origin, "malformed_json");
                Flow::Nothing
            }
            _ => Flow::Pass(entry),
        }
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("empty json stage configuration".into());
    }
    let c: JsonConfig = options(config)?;
    let expressions: Vec<(String, String)> = c
        .expressions
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.0, v.map(|v| v.0).unwrap_or_default()))
        .collect();
    let source = non_empty_source(c.source)?;
    Ok(Box::new(JsonStage::new(
        &expressions,
        source,
        c.drop_malformed.0,
    )?))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::{build_err, run_lines, run_one};
    use serde_json::json;

    #[test]
    fn docs_example_using_log_line() {
        let yaml = "
- json:
    expressions:
      output: log
      stream: stream
      timestamp: time
";
        let out = run_one(
            yaml,
            r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#,
        );
        assert_eq!(out.extracted["output"], json!("log message\n"));
        assert_eq!(out.extracted["stream"], json!("stderr"));
        assert_eq!(
            out.extracted["timestamp"],
            json!("2019-04-30T02:12:41.8443515Z")
        );
    }

    #[test]
    fn docs_example_using_extracted_data() {
        let yaml = "
- json:
    expressions:
      output:    log
      stream:    stream
      timestamp: time
      extra:
- json:
    expressions:
      user:
    source: extra
";
        let out = run_one(
            yaml,
            r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z","extra":"{\"user\":\"marco\"}"}"#,
        );
        assert_eq!(out.extracted["extra"], json!(r#"{"user":"marco"}"#));
        assert_eq!(out.extracted["user"], json!("marco"));
    }

    #[test]
    fn docs_example_jmespath_literal() {
        let yaml = r#"
- json:
    expressions:
      output: log
      stream: '"grpc.stream"'
      timestamp: time
"#;
        let out = run_one(
            yaml,
            r#"{"log":"log message\n","grpc.stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#,
        );
        assert_eq!(out.extracted["stream"], json!("stderr"));
        assert_eq!(out.extracted["output"], json!("log message\n"));
    }

    #[test]
    fn types_are_kept_and_complex_values_become_json() {
        let yaml = "
- json:
    expressions:
      n: n
      f: f
      b: b
      missing: nope
      arr: arr
      obj: obj
      nested: obj.inner.x
      first: arr[0]
";
        let out = run_one(
            yaml,
            r#"{"n":42,"f":1.0,"b":true,"arr":[1,"a<b",2.5],"obj":{"z":1,"a":{"q":null},"inner":{"x":"y"}}}"#,
        );
        assert_eq!(out.extracted["n"], json!(42));
        assert_eq!(out.extracted["f"], json!(1.0));
        assert_eq!(out.extracted["b"], json!(true));
        assert_eq!(out.extracted["missing"], json!(null));
        assert_eq!(out.extracted["arr"], json!(r#"[1,"a\u003cb",2.5]"#));
        assert_eq!(
            out.extracted["obj"],
            json!(r#"{"z":1,"a":{"q":null},"inner":{"x":"y"}}"#)
        );
        assert_eq!(out.extracted["nested"], json!("y"));
        assert_eq!(out.extracted["first"], json!(1));
    }

    #[test]
    fn malformed_lines_pass_unchanged_or_drop() {
        let out = run_one("- json:\n    expressions: {a: a}", "not json {");
        assert_eq!(out.line, "not json {");
        assert!(!out.extracted.contains_key("a"));
        // A JSON array or string is not an object: malformed too.
        let out = run_one("- json:\n    expressions: {a: a}", "[1,2]");
        assert!(!out.extracted.contains_key("a"));

        let (out, dropped) = run_lines(
            "- json:\n    expressions: {a: a}\n    drop_malformed: true",
            &["not json", r#"{"a":"x"}"#],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].extracted["a"], json!("x"));
        assert_eq!(dropped, vec![(0, "malformed_json".to_string())]);
        // A missing source is not malformed: kept even with drop_malformed.
        let (out, dropped) = run_lines(
            "- json:\n    expressions: {a: a}\n    source: nope\n    drop_malformed: true",
            &["whatever"],
        );
        assert_eq!(out.len(), 1);
        assert!(dropped.is_empty());
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- json: {}").contains("JMES expression is required"));
        let err = build_err("- json:\n    expressions:\n      a: 'foo[?'");
        assert!(
            err.starts_with("pipeline_stages[0] (json): could not compile JMES expression"),
            "{err}"
        );
        assert!(
            build_err("- json:\n    expressions: {a: a}\n    source: ''").contains("empty source")
        );
    }
}
