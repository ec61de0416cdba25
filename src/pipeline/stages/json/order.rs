//! The text of a nested object picked by a plain field path, keys in the order of the line.
//!
//! Promtail writes such an object back from a Go map, whose order is random but is the line's
//! own order most of the time for small objects; the JMESPath values here sort their keys, so
//! this reads the line a second time, keeping the order, only when an object is extracted.

use crate::pipeline::value::{go_json_number, go_json_string};
use jmespath::ast::Ast;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// A JSON value whose objects keep their keys in document order.
enum Doc {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Array(Vec<Doc>),
    /// Pairs in first-seen key order; a repeated key keeps its place and takes the last value,
    /// as in a Go map.
    Object(Vec<(String, Doc)>),
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        d.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Doc, E> {
        Ok(Doc::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Doc, E> {
        Ok(Doc::Num(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Doc, E> {
        Ok(Doc::Num(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Doc, E> {
        Ok(Number::from_f64(n).map_or(Doc::Null, Doc::Num))
    }
    fn visit_str<E>(self, s: &str) -> Result<Doc, E> {
        Ok(Doc::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Doc, E> {
        Ok(Doc::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
        let mut pairs: Vec<(String, Doc)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Doc>()? {
            match pairs.iter_mut().find(|(seen, _)| *seen == k) {
                Some(slot) => slot.1 = v,
                None => pairs.push((k, v)),
            }
        }
        Ok(Doc::Object(pairs))
    }
}

/// The field names of `a.b.c`, or `None` for any other expression.
fn field_path<'a>(ast: &'a Ast, out: &mut Vec<&'a str>) -> bool {
    match ast {
        Ast::Field { name, .. } => {
            out.push(name);
            true
        }
        Ast::Subexpr { lhs, rhs, .. } => field_path(lhs, out) && field_path(rhs, out),
        _ => false,
    }
}

/// The object `ast` selects in `text`, written as Go writes it but in document order; `None`
/// when the expression is not a plain field path or selects no object.
pub(super) fn ordered_object(text: &str, ast: &Ast) -> Option<String> {
    let mut path = Vec::new();
    if !field_path(ast, &mut path) {
        return None;
    }
    let doc: Doc = serde_json::from_str(text).ok()?;
    let mut at = &doc;
    for name in path {
        let Doc::Object(pairs) = at else {
            return None;
        };
        at = &pairs.iter().find(|(k, _)| k == name)?.1;
    }
    if !matches!(at, Doc::Object(_)) {
        return None;
    }
    let mut out = String::new();
    write(at, &mut out);
    Some(out)
}

fn write(v: &Doc, out: &mut String) {
    match v {
        Doc::Null => out.push_str("null"),
        Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Doc::Num(n) => go_json_number(n, out),
        Doc::Str(s) => go_json_string(s, out),
        Doc::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Doc::Object(pairs) => {
            out.push('{');
            for (i, (k, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ordered_object;

    fn pick(text: &str, expr: &str) -> Option<String> {
        let e = jmespath::compile(expr).ok()?;
        ordered_object(text, e.as_ast())
    }

    #[test]
    fn nested_objects_keep_the_line_order() {
        let line = r#"{"obj":{"b":2,"a":{"z":1,"y":[1,{"d":null,"c":true}]},"b":3}}"#;
        assert_eq!(
            pick(line, "obj").as_deref(),
            Some(r#"{"b":3,"a":{"z":1,"y":[1,{"d":null,"c":true}]}}"#)
        );
        assert_eq!(
            pick(line, "obj.a").as_deref(),
            Some(r#"{"z":1,"y":[1,{"d":null,"c":true}]}"#)
        );
        assert_eq!(
            pick(r#"{"o":{"x":"\u003c","n":1.0e3}}"#, "o").as_deref(),
            Some(r#"{"x":"\u003c","n":1000}"#)
        );
    }

    #[test]
    fn other_expressions_and_non_objects_are_left_to_the_caller() {
        let line = r#"{"obj":{"b":2,"a":1},"arr":[{"b":1,"a":2}],"s":"x"}"#;
        assert_eq!(pick(line, "arr[0]"), None);
        assert_eq!(pick(line, "s"), None);
        assert_eq!(pick(line, "nope.x"), None);
        assert_eq!(pick(line, "{x: obj}"), None);
    }
}
