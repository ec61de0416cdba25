//! Stream label parsing, as Loki does it.
//!
//! Loki parses the `labels` string of every pushed stream with the PromQL
//! metric parser (`promql/parser.ParseMetric`). This module is an independent
//! implementation of that grammar:
//!
//! ```text
//! metric    = [ metric_name ] [ label_set ]
//! label_set = "{" [ item { "," item } [ "," ] ] "}"
//! item      = label_name "=" string
//! ```
//!
//! * whitespace (space, tab, CR, LF) may separate any two tokens;
//! * `label_name` is `[a-zA-Z_][a-zA-Z0-9_]*`; a metric name before the braces
//!   (`[a-zA-Z_:][a-zA-Z0-9_:]*`) becomes the `__name__` label;
//! * `string` is double-quoted or single-quoted with Go escapes (`\a \b \f \n
//!   \r \t \v \\`, the quote itself, `\xHH`, `\OOO`, `\uHHHH`, `\UHHHHHHHH`;
//!   no literal newline), or a back-quoted raw string;
//! * only `=` is allowed (`!=`, `=~`, `!~` are matchers, not labels).
//!
//! Like Loki, labels with an empty value are dropped after parsing (an empty
//! value is the same as an absent label) and the result is sorted by name.
//! Duplicate names are not a parse error; they are caught by
//! [`validate_label_set`], which Loki runs per stream in the distributor.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The label name Prometheus uses for a metric name given before the braces.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// Parses a label set text such as `{job="app", env="prod"}`.
///
/// Returns the labels sorted by name (stable, so duplicates stay adjacent and
/// in their original order), with empty-valued labels removed.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Parser { src: text, pos: 0 };
    let mut pairs = Vec::new();
    p.skip_ws();
    if p.peek()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
    {
        let name = p.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        pairs.push((METRIC_NAME_LABEL.to_string(), name.to_string()));
        p.skip_ws();
    }
    match p.peek() {
        None => {}
        Some('{') => {
            p.bump();
            p.parse_items(&mut pairs)?;
            p.skip_ws();
            if let Some(c) = p.peek() {
                return Err(format!(
                    "unexpected {} after the closing brace at offset {}",
                    describe(c),
                    p.pos
                ));
            }
        }
        Some(c) => {
            return Err(format!(
                "unexpected {} at offset {}, expected a label set starting with '{{'",
                describe(c),
                p.pos
            ));
        }
    }
    pairs.retain(|(_, v)| !v.is_empty());
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pairs)
}

/// Renders sorted labels the way Prometheus `labels.Labels.String()` does:
/// `{a="1", b="2"}`, values quoted with Go-style escapes.
pub fn render_labels<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        quote_into(&mut out, value);
    }
    out.push('}');
    out
}

/// Appends `value` as a double-quoted string with Go-compatible escapes.
fn quote_into(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Limits Loki applies to a stream's label set (per-tenant `limits_config`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LabelLimits {
    pub max_label_names_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
}

/// Loki's per-stream label checks (distributor `ValidateLabels`), in Loki's
/// order: at least one label, not too many names (`service_name` is not
/// counted), then for each label in sorted order: name length, value length,
/// duplicate name. `pairs` must be sorted as returned by [`parse_labels`].
pub(crate) fn validate_label_set(
    pairs: &[(String, String)],
    limits: &LabelLimits,
) -> Result<BTreeMap<String, String>, String> {
    if pairs.is_empty() {
        return Err("error at least one label pair is required per stream".to_string());
    }
    let stream = render_labels(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let mut names = pairs.len();
    if pairs.iter().any(|(n, _)| n == "service_name") {
        names -= 1;
    }
    if names > limits.max_label_names_per_series {
        return Err(format!(
            "entry for stream '{stream}' has {names} label names; limit {}",
            limits.max_label_names_per_series
        ));
    }
    let mut last: Option<&str> = None;
    for (name, value) in pairs {
        if name.len() > limits.max_label_name_length {
            return Err(format!(
                "stream '{stream}' has label name too long: '{name}'"
            ));
        }
        if value.len() > limits.max_label_value_length {
            return Err(format!(
                "stream '{stream}' has label value too long: '{value}'"
            ));
        }
        if last == Some(name.as_str()) {
            return Err(format!(
                "stream '{stream}' has duplicate label name: '{name}'"
            ));
        }
        last = Some(name);
    }
    Ok(pairs.iter().cloned().collect())
}

fn describe(c: char) -> String {
    format!("character {c:?}")
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.pos..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.src[start..self.pos]
    }

    /// Parses the items after `{` up to and including `}`.
    fn parse_items(&mut self, pairs: &mut Vec<(String, String)>) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(());
        }
        loop {
            self.skip_ws();
            let name = self.parse_label_name()?;
            self.skip_ws();
            match (self.peek(), self.peek2()) {
                (Some('='), Some('~' | '=')) | (Some('!'), _) => {
                    return Err(format!(
                        "label {name:?} uses a matcher operator at offset {}; a label set only allows '='",
                        self.pos
                    ));
                }
                (Some('='), _) => {
                    self.bump();
                }
                (Some(c), _) => {
                    return Err(format!(
                        "unexpected {} at offset {} after label name {name:?}, expected '='",
                        describe(c),
                        self.pos
                    ));
                }
                (None, _) => {
                    return Err(format!(
                        "unexpected end of input after label name {name:?}, expected '='"
                    ));
                }
            }
            self.skip_ws();
            let value = self.parse_string()?;
            pairs.push((name, value));
            self.skip_ws();
            match self.bump() {
                Some(',') => {
                    self.skip_ws();
                    if self.peek() == Some('}') {
                        self.bump();
                        return Ok(());
                    }
                }
                Some('}') => return Ok(()),
                Some(c) => {
                    return Err(format!(
                        "unexpected {} at offset {} in label set, expected ',' or '}}'",
                        describe(c),
                        self.pos - c.len_utf8()
                    ));
                }
                None => return Err("unexpected end of input inside braces".to_string()),
            }
        }
    }

    fn parse_label_name(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => Ok(self
                .take_while(|c| c.is_ascii_alphanumeric() || c == '_')
                .to_string()),
            Some(c) => Err(format!(
                "unexpected {} inside braces at offset {}, expected a label name matching [a-zA-Z_][a-zA-Z0-9_]*",
                describe(c),
                self.pos
            )),
            None => Err("unexpected end of input inside braces, expected a label name".to_string()),
        }
    }

    fn parse_string(&mut self) -> Result<String, String> {
        let start = self.pos;
        let quote = match self.bump() {
            Some(q @ ('"' | '\'' | '`')) => q,
            Some(c) => {
                return Err(format!(
                    "unexpected {} at offset {start}, expected a quoted label value",
                    describe(c)
                ));
            }
            None => return Err("unexpected end of input, expected a quoted label value".into()),
        };
        if quote == '`' {
            let body = self.take_while(|c| c != '`');
            if self.bump() != Some('`') {
                return Err(format!(
                    "unterminated raw string starting at offset {start}"
                ));
            }
            return Ok(body.to_string());
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self
                .bump()
                .ok_or_else(|| format!("unterminated quoted string starting at offset {start}"))?;
            match c {
                c if c == quote => break,
                '\n' => {
                    return Err(format!(
                        "unterminated quoted string starting at offset {start} (literal newline)"
                    ));
                }
                '\\' => self.parse_escape(quote, &mut out)?,
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        String::from_utf8(out)
            .map_err(|_| format!("label value starting at offset {start} is not valid UTF-8"))
    }

    fn parse_escape(&mut self, quote: char, out: &mut Vec<u8>) -> Result<(), String> {
        let at = self.pos - 1;
        let c = self
            .bump()
            .ok_or_else(|| "unterminated escape sequence".to_string())?;
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            c if c == quote => Some(c as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        match c {
            'x' => {
                let v = self.hex_digits(2, at)?;
                out.push(v as u8);
            }
            'u' | 'U' => {
                let v = self.hex_digits(if c == 'u' { 4 } else { 8 }, at)?;
                let ch = char::from_u32(v).ok_or_else(|| {
                    format!("invalid Unicode code point in escape at offset {at}")
                })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = self
                        .bump()
                        .and_then(|d| d.to_digit(8))
                        .ok_or_else(|| format!("invalid octal escape at offset {at}"))?;
                    v = v * 8 + d;
                }
                if v > 255 {
                    return Err(format!("octal escape out of range at offset {at}"));
                }
                out.push(v as u8);
            }
            c => return Err(format!("unknown escape sequence \\{c} at offset {at}")),
        }
        Ok(())
    }

    fn hex_digits(&mut self, n: usize, at: usize) -> Result<u32, String> {
        let mut v: u32 = 0;
        for _ in 0..n {
            let d = self
                .bump()
                .and_then(|d| d.to_digit(16))
                .ok_or_else(|| format!("invalid hex escape at offset {at}"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse_labels(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_plain_sets() {
        assert_eq!(ok(r#"{job="app"}"#), pairs(&[("job", "app")]));
        assert_eq!(
            ok(r#"{job="app",env="prod"}"#),
            pairs(&[("env", "prod"), ("job", "app")])
        );
        assert_eq!(
            ok(" { job = \"app\" ,\n\tenv=\"prod\" , } "),
            pairs(&[("env", "prod"), ("job", "app")])
        );
        assert_eq!(ok("{}"), pairs(&[]));
        assert_eq!(ok(""), pairs(&[]));
        assert_eq!(ok(r#"{_a1="x"}"#), pairs(&[("_a1", "x")]));
    }

    #[test]
    fn parses_quoting_styles_and_escapes() {
        assert_eq!(
            ok(r#"{a="q\"b\\s\n\t", b='it\'s', c=`raw\n"`}"#),
            pairs(&[("a", "q\"b\\s\n\t"), ("b", "it's"), ("c", "raw\\n\"")])
        );
        assert_eq!(
            ok(r#"{a="\x41\101\u00e9\U0001F600"}"#),
            pairs(&[("a", "AAé😀")])
        );
        assert_eq!(ok(r#"{a="ü ☃"}"#), pairs(&[("a", "ü ☃")]));
        assert_eq!(ok("{a=`multi\nline`}"), pairs(&[("a", "multi\nline")]));
    }

    #[test]
    fn metric_name_becomes_name_label() {
        assert_eq!(
            ok(r#"up{job="x"}"#),
            pairs(&[("__name__", "up"), ("job", "x")])
        );
        assert_eq!(ok("ns:metric"), pairs(&[("__name__", "ns:metric")]));
    }

    #[test]
    fn drops_empty_values_and_sorts() {
        assert_eq!(
            ok(r#"{z="1", a="", m="2"}"#),
            pairs(&[("m", "2"), ("z", "1")])
        );
    }

    #[test]
    fn keeps_duplicates_for_validation() {
        assert_eq!(
            ok(r#"{a="1", b="2", a="3"}"#),
            pairs(&[("a", "1"), ("a", "3"), ("b", "2")])
        );
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            r#"{job="app""#,
            r#"{job="app"} extra"#,
            r#"job="app""#,
            r#"{1job="x"}"#,
            r#"{job-name="x"}"#,
            r#"{job.name="x"}"#,
            r#"{"job"="x"}"#,
            r#"{job=app}"#,
            r#"{job!="x"}"#,
            r#"{job=~"x"}"#,
            r#"{job=="x"}"#,
            r#"{job="x" env="y"}"#,
            r#"{job="x",,env="y"}"#,
            r#"{,}"#,
            r#"{job="a\qb"}"#,
            r#"{job="a\'b"}"#,
            "{job=\"a\nb\"}",
            r#"{job="\xZZ"}"#,
            r#"{job="\ud800"}"#,
            r#"{job="\777"}"#,
            r#"{job='x}"#,
            "{job=`x}",
            r#"{job="x"}}"#,
            r#"{{job="x"}"#,
            r#"{job}"#,
            r#"{job=}"#,
            r#"{ä="x"}"#,
        ] {
            assert!(parse_labels(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_escapes_that_make_invalid_utf8() {
        assert!(parse_labels(r#"{a="\xff"}"#).is_err());
        assert!(parse_labels(r#"{a="\377"}"#).is_err());
        // A valid UTF-8 sequence spelled as byte escapes is fine, as in Go.
        assert_eq!(ok(r#"{a="\xc3\xa9"}"#), pairs(&[("a", "é")]));
    }

    #[test]
    fn render_round_trips() {
        let p = pairs(&[("a", "x\"y\\z\n\u{1}"), ("b", "ü")]);
        let text = render_labels(p.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(text, r#"{a="x\"y\\z\n\x01", b="ü"}"#);
        assert_eq!(ok(&text), p);
    }

    #[test]
    fn validation_matches_loki() {
        let limits = LabelLimits {
            max_label_names_per_series: 2,
            max_label_name_length: 5,
            max_label_value_length: 5,
        };
        let v = |t: &str| validate_label_set(&ok(t), &limits);
        assert!(v(r#"{a="1"}"#).is_ok());
        assert!(v("{}").unwrap_err().contains("at least one label pair"));
        assert!(
            v(r#"{a=""}"#)
                .unwrap_err()
                .contains("at least one label pair")
        );
        assert!(
            v(r#"{a="1",a="2"}"#)
                .unwrap_err()
                .contains("duplicate label name: 'a'")
        );
        assert!(
            v(r#"{a="1",b="2",c="3"}"#)
                .unwrap_err()
                .contains("3 label names; limit 2")
        );
        let roomy = LabelLimits {
            max_label_name_length: 20,
            ..limits
        };
        assert!(validate_label_set(&ok(r#"{a="1",b="2",service_name="3"}"#), &roomy).is_ok());
        assert!(validate_label_set(&ok(r#"{a="1",b="2",c="3"}"#), &roomy).is_err());
        assert!(
            v(r#"{abcdef="1"}"#)
                .unwrap_err()
                .contains("label name too long")
        );
        assert!(
            v(r#"{a="123456"}"#)
                .unwrap_err()
                .contains("label value too long")
        );
    }
}
