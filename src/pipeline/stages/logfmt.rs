//! `logfmt`: `key=value` pairs, decoded as go-logfmt does (values found before a syntax error
//! are kept; the error is logged).

// Promtail decodes these options strictly: no number or boolean for a string.
use super::weak::SString as WString;
use super::{non_empty_source, options};
use crate::pipeline::{Cx, Entry, Flow, Stage};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogfmtConfig {
    mapping: Option<BTreeMap<WString, Option<WString>>>,
    source: Option<WString>,
}

struct Logfmt {
    /// logfmt key -> extracted names.
    mapping: Vec<(String, Vec<String>)>,
    source: Option<String>,
}

impl Stage for Logfmt {
    fn name(&self) -> &'static str {
        "logfmt"
    }
    fn process(&mut self, mut entry: Entry, _: &mut Cx<'_>) -> Flow {
        let input: Cow<'_, str> = match &self.source {
            None => Cow::Borrowed(&entry.line),
            Some(source) => match super::source_string(&entry.extracted, source) {
                Ok(s) => Cow::Owned(s.into_owned()),
                Err(why) => {
                    tracing::debug!(source = source.as_str(), "logfmt stage: {why}");
                    return Flow::Pass(entry);
                }
            },
        };
        let extracted = &mut entry.extracted;
        let result = decode(&input, |key, value| {
            if let Some((_, names)) = self.mapping.iter().find(|(k, _)| k == key) {
                for name in names {
                    extracted.set_text(name, value);
                }
            }
        });
        if let Err(e) = result {
            tracing::debug!(error = e.as_str(), "failed to decode logfmt");
        }
        Flow::Pass(entry)
    }
}

/// Decodes logfmt text (one record per line), calling `each` with every key and value.
/// A key without `=` has an empty value. Stops at the first syntax error.
pub(crate) fn decode(input: &str, mut each: impl FnMut(&str, &str)) -> Result<(), String> {
    for (line_no, line) in input.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let b = line.as_bytes();
        let mut pos = 0;
        let err = |pos: usize, what: &str| {
            format!(
                "logfmt syntax error at pos {} on line {}: {what}",
                pos + 1,
                line_no + 1
            )
        };
        loop {
            // Skip garbage (spaces and control characters).
            while pos < b.len() && b[pos] <= b' ' {
                pos += 1;
            }
            if pos >= b.len() {
                break;
            }
            // Key.
            let start = pos;
            while pos < b.len() && b[pos] > b' ' && b[pos] != b'=' && b[pos] != b'"' {
                pos += 1;
            }
            if pos < b.len() && b[pos] == b'"' {
                return Err(err(pos, "unexpected '\"'"));
            }
            if pos == start {
                return Err(err(pos, "unexpected '='"));
            }
            let key = &line[start..pos];
            if pos >= b.len() || b[pos] <= b' ' {
                each(key, "");
                continue;
            }
            // b[pos] == '='
            pos += 1;
            if pos >= b.len() || b[pos] <= b' ' {
                each(key, "");
                continue;
            }
            if b[pos] == b'"' {
                let qstart = pos;
                let mut esc = false;
                let mut has_esc = false;
                let mut end = None;
                for (i, &c) in b[pos + 1..].iter().enumerate() {
                    if esc {
                        esc = false;
                    } else if c == b'\\' {
                        esc = true;
                        has_esc = true;
                    } else if c == b'"' {
                        end = Some(pos + 1 + i);
                        break;
                    }
                }
                let Some(end) = end else {
                    return Err(err(b.len(), "unterminated quoted value"));
                };
                pos = end + 1;
                let raw = &line[qstart + 1..end];
                if has_esc {
                    match unquote(raw) {
                        Some(v) => each(key, &v),
                        None => return Err(err(pos, "invalid quoted value")),
                    }
                } else {
                    each(key, raw);
                }
                continue;
            }
            let vstart = pos;
            while pos < b.len() && b[pos] > b' ' {
                if b[pos] == b'=' || b[pos] == b'"' {
                    return Err(err(pos, &format!("unexpected '{}'", b[pos] as char)));
                }
                pos += 1;
            }
            each(key, &line[vstart..pos]);
        }
    }
    Ok(())
}

/// JSON-style unescaping of a quoted logfmt value (without its quotes).
fn unquote(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if (c as u32) < 0x20 {
                return None;
            }
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).ok()?;
                if (0xD800..0xDC00).contains(&code) {
                    // A surrogate pair: \uD83D\uDE00.
                    let rest = chars.as_str();
                    if let Some(low) = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l))
                    {
                        chars = rest[6..].chars();
                        let c = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                    } else {
                        out.push('\u{FFFD}');
                    }
                } else {
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    if config.is_null() {
        return Err("empty logfmt stage configuration".into());
    }
    let c: LogfmtConfig = options(config)?;
    let mapping = c.mapping.unwrap_or_default();
    if mapping.is_empty() {
        return Err("logfmt mapping is required".into());
    }
    let mut inverse: Vec<(String, Vec<String>)> = Vec::new();
    for (name, key) in mapping {
        let key = match key {
            Some(k) if !k.0.is_empty() => k.0,
            _ => name.0.clone(),
        };
        match inverse.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(name.0),
            None => inverse.push((key, vec![name.0])),
        }
    }
    Ok(Box::new(Logfmt {
        mapping: inverse,
        source: non_empty_source(c.source)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::decode;
    use crate::pipeline::tests::{build_err, run_one};
    use serde_json::json;

    fn pairs(s: &str) -> (Vec<(String, String)>, Result<(), String>) {
        let mut v = vec![];
        let r = decode(s, |k, val| v.push((k.to_string(), val.to_string())));
        (v, r)
    }

    #[test]
    fn docs_example_using_log_line() {
        let yaml = "
- logfmt:
    mapping:
      timestamp: time
      app:
      duration:
      unknown:
";
        let out = run_one(
            yaml,
            r#"time=2012-11-01T22:08:41+00:00 app=loki level=WARN duration=125 message="this is a log line" extra="user=foo""#,
        );
        assert_eq!(
            out.extracted["timestamp"],
            json!("2012-11-01T22:08:41+00:00")
        );
        assert_eq!(out.extracted["app"], json!("loki"));
        assert_eq!(out.extracted["duration"], json!("125"));
        assert!(!out.extracted.contains_key("unknown"));
        assert!(!out.extracted.contains_key("level"));
    }

    #[test]
    fn docs_example_using_extracted_data() {
        let yaml = "
- logfmt:
    mapping:
      extra:
- logfmt:
    mapping:
      user:
    source: extra
";
        let out = run_one(
            yaml,
            r#"time=2012-11-01T22:08:41+00:00 app=loki level=WARN duration=125 message="this is a log line" extra="user=foo""#,
        );
        assert_eq!(out.extracted["extra"], json!("user=foo"));
        assert_eq!(out.extracted["user"], json!("foo"));
    }

    #[test]
    fn decoder_details() {
        let (v, r) = pairs(r#"a=1 b c= d="x \"y\" \u00e9" e="""#);
        assert!(r.is_ok());
        assert_eq!(
            v,
            [
                ("a", "1"),
                ("b", ""),
                ("c", ""),
                ("d", "x \"y\" é"),
                ("e", "")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // Errors stop decoding but keep what came before.
        let (v, r) = pairs(r#"a=1 b="unterminated"#);
        assert_eq!(v.len(), 1);
        assert!(r.unwrap_err().contains("unterminated quoted value"));
        let (_, r) = pairs("=x");
        assert!(r.unwrap_err().contains("unexpected '='"));
        let (v, r) = pairs("a=b=c");
        assert!(v.is_empty());
        assert!(r.is_err());
        // One record per line.
        let (v, _) = pairs("a=1\nb=2\r\n");
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn unparsable_line_passes_unchanged() {
        let out = run_one("- logfmt:\n    mapping: {a: null}", "\"just text\"");
        assert_eq!(out.line, "\"just text\"");
        assert!(!out.extracted.contains_key("a"));
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- logfmt: {}").contains("logfmt mapping is required"));
        assert!(
            build_err("- logfmt:\n    mapping: {a: null}\n    source: ''").contains("empty source")
        );
    }
}
