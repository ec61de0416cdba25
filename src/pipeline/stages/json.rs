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
    /// When every expression is a plain key of the object (`log`, `level`), those keys in
    /// expression order: the line is then read for them alone (see [`pick_fields`]).
    fields: Option<Vec<String>>,
    /// For each expression, the first one that names the same key (itself when none).
    first_of: Vec<usize>,
    /// What [`pick_fields`] read from the last line, kept for its buffers.
    picks: Picks,
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
        let fields = compiled
            .iter()
            .map(|(_, e)| is_plain_key(e.as_str()).then(|| e.as_str().to_string()))
            .collect();
        let first_of = compiled
            .iter()
            .enumerate()
            .map(|(i, (_, e))| {
                compiled[..i]
                    .iter()
                    .position(|(_, f)| f.as_str() == e.as_str())
                    .unwrap_or(i)
            })
            .collect();
        Ok(JsonStage {
            expressions: compiled,
            fields,
            first_of,
            picks: Picks::default(),
            source,
            drop_malformed,
        })
    }

    pub(crate) fn apply(&mut self, entry: &mut Entry) -> Result<(), JsonFailure> {
        if let Some(fields) = &self.fields
            && self.source.is_none()
            && pick_fields(&entry.line, fields, &self.first_of, &mut self.picks).is_ok()
            // An object keeps the line's key order, which only the general path writes.
            && !self.picks.values.iter().any(|v| matches!(v, Picked::Object))
        {
            let picks = &mut self.picks;
            for ((name, _), (value, text)) in self
                .expressions
                .iter()
                .zip(picks.values.iter_mut().zip(&mut picks.texts))
            {
                match value {
                    Picked::Line(a, b) => entry.extracted.set_text(name, &entry.line[*a..*b]),
                    Picked::Text => {
                        entry.extracted.set_text(name, text);
                        if text.capacity() > MAX_KEPT_TEXT {
                            *text = String::new();
                        }
                    }
                    Picked::Other(v) => set_value(&mut entry.extracted, name, std::mem::take(v)),
                    Picked::Object => {}
                }
            }
            return Ok(());
        }
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

/// Whether a JMESPath expression is an unquoted identifier, i.e. selects one key of the object.
fn is_plain_key(expr: &str) -> bool {
    let mut bytes = expr.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Puts one selected value in the extracted map as the stage does for a JMESPath result:
/// scalars keep their type, arrays and objects become their JSON text.
fn set_value(extracted: &mut crate::pipeline::Extracted, name: &str, value: Value) {
    match value {
        Value::String(s) => extracted.set_text(name, &s),
        Value::Array(_) | Value::Object(_) => {
            let mut s = String::new();
            crate::pipeline::value::go_json_value(&value, &mut s);
            extracted.insert(name.to_string(), Value::String(s));
        }
        scalar => {
            extracted.insert(name.to_string(), scalar);
        }
    }
}

/// An unescaped value longer than this is not kept for the next line's.
const MAX_KEPT_TEXT: usize = 64 * 1024;

/// The values of top-level `keys` of a JSON object (null for a missing key, the last one for a
/// repeated key, as JMESPath over the parsed object gives them) into `picks`, reading the rest
/// of the object only to check it is valid JSON. An error means "take the general path", which
/// then reports the problem the way it always does.
///
/// Hand-written because building the whole document (every key and value of the line) and
/// evaluating an expression tree per key is most of the cost of this stage on typical lines.
/// Strings without escapes are kept as places in the line and the others in buffers of
/// `picks`, so that a line costs no allocation once the first few have been read.
fn pick_fields(
    line: &str,
    keys: &[String],
    first_of: &[usize],
    picks: &mut Picks,
) -> Result<(), serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Pick<'a, 'l> {
        keys: &'a [String],
        line: &'l str,
        picks: &'a mut Picks,
    }
    /// Reads a key as the index of its first occurrence in the wanted keys, without copying it.
    struct Key<'k>(&'k [String]);
    impl<'de> Visitor<'de> for Key<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string key")
        }
        fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
            Ok(self.0.iter().position(|k| k == key))
        }
    }
    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = Option<usize>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Pick<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let Pick { keys, line, picks } = self;
            while let Some(found) = map.next_key_seed(Key(keys))? {
                match found {
                    Some(i) => {
                        let text = &mut picks.texts[i];
                        picks.values[i] = map.next_value_seed(PickValue { line, text })?;
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Pick<'_, 'de> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    picks.values.clear();
    picks
        .values
        .resize_with(keys.len(), || Picked::Other(Value::Null));
    if picks.texts.len() < keys.len() {
        picks.texts.resize_with(keys.len(), String::new);
    }
    let mut de = serde_json::Deserializer::from_str(line);
    Pick { keys, line, picks }.deserialize(&mut de)?;
    de.end()?;
    // One key may be picked by several expressions: they all get its value.
    for (j, &i) in first_of.iter().enumerate() {
        if i != j {
            picks.values[j] = picks.values[i].clone();
            if matches!(picks.values[i], Picked::Text) {
                let text = picks.texts[i].clone();
                picks.texts[j] = text;
            }
        }
    }
    Ok(())
}

/// What [`pick_fields`] read, one value and one buffer per expression.
#[derive(Default)]
struct Picks {
    values: Vec<Picked>,
    /// The unescaped string of a [`Picked::Text`] value.
    texts: Vec<String>,
}

/// A value [`pick_fields`] selected.
#[derive(Clone)]
enum Picked {
    /// A string without escapes: the bytes of the line between these offsets.
    Line(usize, usize),
    /// A string with escapes, unescaped in the buffer of its expression.
    Text,
    Other(Value),
    /// An object, not read: written from the line's text by the general path.
    Object,
}

/// Reads one value for [`pick_fields`].
struct PickValue<'a, 'l> {
    line: &'l str,
    text: &'a mut String,
}

impl<'de> serde::de::DeserializeSeed<'de> for PickValue<'_, 'de> {
    type Value = Picked;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Picked, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PickValue<'_, 'de> {
    type Value = Picked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Picked, E> {
        let start = (s.as_ptr() as usize).wrapping_sub(self.line.as_ptr() as usize);
        if start <= self.line.len() && s.len() <= self.line.len() - start {
            return Ok(Picked::Line(start, start + s.len()));
        }
        self.visit_str(s)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Picked, E> {
        self.text.clear();
        self.text.push_str(s);
        Ok(Picked::Text)
    }
    fn visit_string<E>(self, s: String) -> Result<Picked, E> {
        *self.text = s;
        Ok(Picked::Text)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Picked, E> {
        Ok(Picked::Other(Value::Bool(b)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Picked, E> {
        Ok(Picked::Other(Value::from(n)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Picked, E> {
        Ok(Picked::Other(Value::from(n)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Picked, E> {
        Ok(Picked::Other(Value::from(n)))
    }
    fn visit_unit<E>(self) -> Result<Picked, E> {
        Ok(Picked::Other(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Picked, A::Error> {
        use serde::Deserialize;
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Picked::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Picked, A::Error> {
        use serde::Deserialize;
        serde::de::IgnoredAny::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(|_| Picked::Object)
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
    fn plain_keys_over_many_lines() {
        let yaml = "- json:\n    expressions: {a: a, b: a, c: c}";
        let (out, _) = run_lines(
            yaml,
            &[
                r#"{"a":"x\ty","c":"plain","a":"last\n"}"#,
                r#"{"a":"\u00e9\u00e9","c":1}"#,
                r#"{"a":"tail", "#,
                r#"{"c":"q\"r","a":"y"}"#,
                r#"{"c":"q"}"#,
            ],
        );
        assert_eq!(out[0].extracted["a"], json!("last\n"));
        assert_eq!(out[0].extracted["b"], json!("last\n"));
        assert_eq!(out[0].extracted["c"], json!("plain"));
        assert_eq!(out[1].extracted["a"], json!("\u{e9}\u{e9}"));
        assert_eq!(out[1].extracted["b"], json!("\u{e9}\u{e9}"));
        assert_eq!(out[1].extracted["c"], json!(1));
        assert!(!out[2].extracted.contains_key("a"));
        assert!(!out[2].extracted.contains_key("c"));
        assert_eq!(out[3].extracted["a"], json!("y"));
        assert_eq!(out[3].extracted["b"], json!("y"));
        assert_eq!(out[3].extracted["c"], json!("q\"r"));
        assert_eq!(out[4].extracted["a"], json!(null));
        assert_eq!(out[4].extracted["c"], json!("q"));
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
