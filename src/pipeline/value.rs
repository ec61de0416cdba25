//! Values of the extracted map, converted the way Promtail converts them.

use serde_json::{Number, Value};
use std::borrow::Cow;

/// An extracted value as a string, as Promtail's `getString` makes it: strings as they are,
/// numbers in plain decimal (`1.5`, `100`, never an exponent), booleans as `true`/`false`.
/// Nulls, arrays and objects have no string form.
///
/// Every number is a float64 first, as Promtail holds JSON numbers: integers beyond 2^53 are
/// rounded (`12345678901234567890` prints `12345678901234567000`).
pub fn get_string(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(number_plain(n))),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        _ => None,
    }
}

/// A number as Go's `strconv.FormatFloat(f, 'f', -1, 64)` prints the float64 it decodes to.
pub(crate) fn number_plain(n: &Number) -> String {
    float_plain(n.as_f64().unwrap_or(f64::NAN))
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits, no exponent.
pub(crate) fn float_plain(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    format!("{f}")
}

/// An extracted value as a number, as Promtail's metrics stage reads it: numbers, booleans
/// (1 or 0), numeric strings, and Go duration strings (`"0.5ms"` is 0.0005 seconds).
pub fn get_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => float_from_str(s),
        _ => None,
    }
}

pub(crate) fn float_from_str(s: &str) -> Option<f64> {
    if let Ok(f) = parse_go_float(s) {
        return Some(f);
    }
    go_duration_seconds(s)
}

/// Go's `strconv.ParseFloat`: decimal, exponent, `inf`/`infinity`/`nan` in any case,
/// underscores only between digits (and only with a base prefix, which we do not accept).
fn parse_go_float(s: &str) -> Result<f64, ()> {
    let t = s.trim_start_matches(['+', '-']);
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return s.to_ascii_lowercase().parse::<f64>().map_err(|_| ());
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return Err(());
    }
    s.parse::<f64>().map_err(|_| ())
}

/// Go's `time.ParseDuration`, in seconds (signed).
pub(crate) fn go_duration_seconds(s: &str) -> Option<f64> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut r = rest;
    while !r.is_empty() {
        let n = r.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if n == 0 {
            return None;
        }
        let num: f64 = r[..n].parse().ok()?;
        r = &r[n..];
        let u = r
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(r.len());
        let scale = match &r[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * scale;
        r = &r[u..];
    }
    Some(if neg { -total } else { total })
}

/// Appends `s` as a JSON string the way Go's `json.Marshal` writes it (HTML characters and
/// U+2028/U+2029 escaped).
pub fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        let needs_hex = esc.is_none()
            && ((c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'));
        if esc.is_some() || needs_hex {
            out.push_str(&s[start..i]);
            match esc {
                Some(e) => out.push_str(e),
                None => {
                    let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
                }
            }
            start = i + c.len_utf8();
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A float as Go's `encoding/json` writes it.
pub(crate) fn go_json_float(f: f64, out: &mut String) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Go: 'e' format with at least two exponent digits, then "e-07" becomes "e-7".
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        out.push_str(mant);
        out.push('e');
        if exp.starts_with('-') {
            out.push_str(exp);
        } else {
            out.push('+');
            out.push_str(exp);
        }
    } else {
        out.push_str(&float_plain(f));
    }
}

/// A JSON value as Go's `json.Marshal` writes it (keys sorted, no spaces).
pub(crate) fn go_json_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => go_json_number(n, out),
        Value::String(s) => go_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                go_json_value(&map[k], out);
            }
            out.push('}');
        }
    }
}

pub(crate) fn go_json_number(n: &Number, out: &mut String) {
    // A float64 in Go, like every JSON number Promtail decodes.
    go_json_float(n.as_f64().unwrap_or(0.0), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_of_values() {
        assert_eq!(get_string(&json!("a")).unwrap(), "a");
        assert_eq!(get_string(&json!(1.0)).unwrap(), "1");
        assert_eq!(get_string(&json!(1.5)).unwrap(), "1.5");
        assert_eq!(get_string(&json!(1e21)).unwrap(), "1000000000000000000000");
        assert_eq!(get_string(&json!(0.0000001)).unwrap(), "0.0000001");
        assert_eq!(get_string(&json!(-3)).unwrap(), "-3");
        let big: Value = serde_json::from_str("12345678901234567890").unwrap();
        assert_eq!(get_string(&big).unwrap(), "12345678901234567000");
        assert_eq!(get_string(&json!(true)).unwrap(), "true");
        assert!(get_string(&json!(null)).is_none());
        assert!(get_string(&json!([1])).is_none());
        assert!(get_string(&json!({"a": 1})).is_none());
    }

    #[test]
    fn floats_of_values() {
        assert_eq!(get_float(&json!("0.804")), Some(0.804));
        assert_eq!(get_float(&json!("0.5ms")), Some(0.0005));
        assert_eq!(get_float(&json!("1h")), Some(3600.0));
        assert_eq!(get_float(&json!("-2s")), Some(-2.0));
        assert_eq!(get_float(&json!(true)), Some(1.0));
        assert_eq!(get_float(&json!(false)), Some(0.0));
        assert_eq!(get_float(&json!(3)), Some(3.0));
        assert_eq!(get_float(&json!("abc")), None);
        assert_eq!(get_float(&json!(null)), None);
        assert_eq!(get_float(&json!("1e3")), Some(1000.0));
    }

    #[test]
    fn go_json() {
        let mut s = String::new();
        go_json_value(
            &json!({"b": [1, 2.5, "<a&b>"], "a": null, "c": 1e-7, "d": 1e21, "e": "\u{1}\n"}),
            &mut s,
        );
        assert_eq!(
            s,
            r#"{"a":null,"b":[1,2.5,"\u003ca\u0026b\u003e"],"c":1e-7,"d":1e+21,"e":"\u0001\n"}"#
        );
    }
}
