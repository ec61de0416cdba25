//! Parsing an NDJSON `_bulk` body and judging each item, as Elasticsearch does.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A failure of the whole request: `(status, error type, reason)`.
pub type RequestError = (u16, &'static str, String);

/// One action with its source.
#[derive(Debug, Clone)]
pub struct Action {
    pub op: String,
    pub index: Option<String>,
    pub id: Option<String>,
    pub pipeline: Option<String>,
    /// The source line, for `index` and `create` (`update` is parsed but not applied).
    pub source: Option<Vec<u8>>,
}

/// Action parameters Elasticsearch 8 accepts on an action line.
const PARAMS: &[&str] = &[
    "_index",
    "_id",
    "routing",
    "op_type",
    "version",
    "version_type",
    "if_seq_no",
    "if_primary_term",
    "pipeline",
    "require_alias",
    "require_data_stream",
    "retry_on_conflict",
    "_source",
    "dynamic_templates",
    "list_executed_pipelines",
];

/// Splits a body into actions, failing the whole request where Elasticsearch does.
pub fn parse(body: &[u8], default_index: Option<&str>) -> Result<Vec<Action>, RequestError> {
    let bad = |reason: String| (400, "illegal_argument_exception", reason);
    if !body.is_empty() && body.last() != Some(&b'\n') {
        return Err(bad(
            "The bulk request must be terminated by a newline [\\n]".into(),
        ));
    }
    let mut lines = body.split(|b| *b == b'\n').enumerate().peekable();
    let mut actions = Vec::new();
    while let Some((i, line)) = lines.next() {
        let number = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| {
            bad(format!(
                "Malformed action/metadata line [{number}], expected START_OBJECT or END_OBJECT but found [{e}]"
            ))
        })?;
        let Value::Object(map) = value else {
            return Err(bad(format!(
                "Malformed action/metadata line [{number}], expected START_OBJECT or END_OBJECT but found [VALUE]"
            )));
        };
        let mut entries = map.into_iter();
        let Some((op, params)) = entries.next() else {
            return Err(bad(format!(
                "Malformed action/metadata line [{number}], expected FIELD_NAME but found [END_OBJECT]"
            )));
        };
        if entries.next().is_some() {
            return Err(bad(format!(
                "Malformed action/metadata line [{number}], expected END_OBJECT but found [FIELD_NAME]"
            )));
        }
        if !["index", "create", "update", "delete"].contains(&op.as_str()) {
            return Err(bad(format!(
                "Malformed action/metadata line [{number}], expected field [create], [delete], [index] or [update] but found [{op}]"
            )));
        }
        let Value::Object(params) = params else {
            return Err(bad(format!(
                "Malformed action/metadata line [{number}], expected START_OBJECT but found [VALUE]"
            )));
        };
        let mut action = Action {
            op,
            index: default_index.map(str::to_string),
            id: None,
            pipeline: None,
            source: None,
        };
        for (name, value) in params {
            if !PARAMS.contains(&name.as_str()) {
                return Err(bad(format!(
                    "Action/metadata line [{number}] contains an unknown parameter [{name}]"
                )));
            }
            let text = match &value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => continue,
                _ if name == "_source" || name == "dynamic_templates" => continue,
                _ => {
                    return Err(bad(format!(
                        "Malformed action/metadata line [{number}], expected a simple value for field [{name}] but found [START_OBJECT]"
                    )));
                }
            };
            match name.as_str() {
                "_index" => action.index = Some(text),
                "_id" => action.id = Some(text),
                "pipeline" => action.pipeline = Some(text),
                _ => {}
            }
        }
        if action.op != "delete" {
            match lines.next() {
                Some((_, source)) if !source.is_empty() || lines.peek().is_some() => {
                    action.source = Some(source.to_vec());
                }
                _ => {
                    return Err((
                        400,
                        "action_request_validation_exception",
                        format!(
                            "Validation Failed: 1: source is missing for action on line [{number}];"
                        ),
                    ));
                }
            }
        }
        if action.index.is_none() {
            return Err((
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;".into(),
            ));
        }
        actions.push(action);
    }
    if actions.is_empty() {
        return Err((
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;".into(),
        ));
    }
    Ok(actions)
}

/// Parses a document source as Elasticsearch does: one JSON object, no field twice.
pub fn parse_source(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("failed to parse: {e}"))?;
    let Value::Object(map) = value else {
        return Err("failed to parse, document is empty or not an object".into());
    };
    if let Some(name) = duplicate_key(bytes) {
        return Err(format!("failed to parse: Duplicate field '{name}'"));
    }
    Ok(map)
}

/// The first key that appears twice in one object of a JSON text (which parsed already).
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    // Walk the text keeping, per open object, the keys seen.
    let mut stack: Vec<Option<BTreeSet<String>>> = Vec::new();
    let mut i = 0;
    let mut expect_key = false;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                stack.push(Some(BTreeSet::new()));
                expect_key = true;
            }
            b'[' => {
                stack.push(None);
                expect_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if expect_key {
                    let raw = &bytes[start.min(bytes.len())..i.min(bytes.len())];
                    let key: String =
                        serde_json::from_slice(&[b"\"", raw, b"\""].concat()).unwrap_or_default();
                    if let Some(Some(keys)) = stack.last_mut()
                        && !keys.insert(key.clone())
                    {
                        return Some(key);
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Why Elasticsearch refuses an index name, if it does.
pub fn invalid_index_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Some("must be lowercase".into());
    }
    if let Some(c) = name.chars().find(|c| "\\/*?\"<>| ,#:".contains(*c)) {
        return Some(format!(
            "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?] but contains [{c}]"
        ));
    }
    if name.starts_with(['-', '_', '+']) {
        return Some("must not start with '_', '-', or '+'".into());
    }
    if name == "." || name == ".." {
        return Some("must not be '.' or '..'".into());
    }
    if name.len() > 255 {
        return Some("index name is too long".into());
    }
    None
}

/// Whether a `@timestamp` value parses as Elasticsearch's `strict_date_optional_time`
/// (`yyyy-MM-dd['T'HH:mm[:ss[.S{1,9}]]][Z|±HH:mm]`) or `epoch_millis`.
pub fn is_date(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => is_iso_date(s),
        _ => false,
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10))
    {
        return false;
    }
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    let mut i = 10;
    if b.len() == i {
        return true;
    }
    if b[i] != b'T' {
        return false;
    }
    i += 1;
    if !(digits(i..i + 2) && b.get(i + 2) == Some(&b':') && digits(i + 3..i + 5)) {
        return false;
    }
    i += 5;
    if b.get(i) == Some(&b':') {
        if !digits(i + 1..i + 3) {
            return false;
        }
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start || i - start > 9 {
                return false;
            }
        }
    }
    match b.get(i) {
        None => true,
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3)
                && b.get(i + 3) == Some(&b':')
                && digits(i + 4..i + 6)
                && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_sources_pair_up() {
        let body = b"{\"index\":{\"_index\":\"a\"}}\n{\"x\":1}\n{\"delete\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"create\":{}}\n{\"y\":2}\n";
        let actions = parse(body, Some("d")).unwrap();
        assert_eq!(actions.len(), 3);
        assert_eq!(actions[0].index.as_deref(), Some("a"));
        assert_eq!(actions[1].op, "delete");
        assert_eq!(actions[2].index.as_deref(), Some("d"));
        assert_eq!(actions[2].source.as_deref(), Some(&b"{\"y\":2}"[..]));
    }

    #[test]
    fn malformed_requests_fail_whole() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"{\"index\":{\"_index\":\"a\"}}\n{}",
                "terminated by a newline",
            ),
            (b"{\"indx\":{}}\n{}\n", "expected field [create]"),
            (
                b"{\"index\":{\"_type\":\"doc\",\"_index\":\"a\"}}\n{}\n",
                "unknown parameter [_type]",
            ),
            (b"{\"index\":{}}\n{}\n", "index is missing"),
            (b"{\"index\":{\"_index\":\"a\"}}\n", "source is missing"),
        ];
        for (body, wanted) in cases {
            let err = parse(body, None).map(|_| ()).unwrap_err();
            assert!(err.2.contains(wanted), "{err:?}");
        }
    }

    #[test]
    fn sources_are_objects_without_duplicate_fields() {
        assert!(parse_source(b"{\"a\":{\"b\":1,\"c\":[{\"b\":2}]},\"b\":\"}\"}").is_ok());
        assert!(
            parse_source(b"{\"a\":1,\"b\":{\"x\":1},\"a\":2}")
                .unwrap_err()
                .contains("'a'")
        );
        assert!(
            parse_source(b"{\"a\":{\"x\":1,\"x\":2}}")
                .unwrap_err()
                .contains("'x'")
        );
        assert!(parse_source(b"[1]").is_err());
        assert!(parse_source(b"{\"a\":").is_err());
    }

    #[test]
    fn dates_and_index_names() {
        for ok in [
            "2026-12-03T04:31:07.123456789Z",
            "2026-12-03",
            "2026-12-03T04:31+01:00",
        ] {
            assert!(is_iso_date(ok), "{ok}");
        }
        for bad in [
            "2026-13-03T00:00:00Z",
            "2026-12-03T04:31:07.1234567891Z",
            "yesterday",
            "2026-12-03 04:31:07",
        ] {
            assert!(!is_iso_date(bad), "{bad}");
        }
        assert!(invalid_index_name("logs-2026.12.03").is_none());
        assert!(invalid_index_name("Logs").is_some());
        assert!(invalid_index_name("_x").is_some());
    }
}
