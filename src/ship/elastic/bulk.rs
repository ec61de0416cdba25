//! Reading a `_bulk` answer: what happened to each item.
//!
//! Elasticsearch (7.x and 8.x alike) answers a bulk request that it could parse with 200 and
//! one result per item, in request order:
//!
//! ```json
//! {"took":3,"errors":true,"items":[
//!   {"index":{"_index":"logs","_id":"…","status":201,"result":"created"}},
//!   {"index":{"_index":"logs","status":400,
//!             "error":{"type":"mapper_parsing_exception","reason":"failed to parse …"}}},
//!   {"create":{"_index":"logs-x-y","status":429,
//!              "error":{"type":"es_rejected_execution_exception","reason":"…"}}}]}
//! ```
//!
//! When `errors` is false every item succeeded, and only the number of items is read.

use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::HashMap;

/// What became of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Indexed (or already there: a `create` that conflicts with an existing document).
    Delivered,
    /// Worth sending again (429, 5xx, 408).
    Retry { status: u16, kind: String },
    /// Refused for good (a mapping error, a missing pipeline or index); `kind` is
    /// Elasticsearch's `error.type`, or `http_<status>` when it gave none.
    Rejected {
        status: u16,
        kind: String,
        reason: String,
    },
}

/// An answer that is not a `_bulk` result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    #[error("unreadable bulk answer: {0}")]
    Unreadable(String),
    #[error("bulk answer has {got} items for {sent} documents")]
    Count { got: usize, sent: usize },
}

#[derive(Deserialize)]
struct Head {
    errors: bool,
    items: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct Full {
    items: Vec<HashMap<String, ItemResult>>,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The outcome of each of the `sent` items, from the answer's body.
pub fn parse(body: &[u8], sent: usize) -> Result<Vec<ItemOutcome>, BulkError> {
    let unreadable = |e: serde_json::Error| BulkError::Unreadable(e.to_string());
    let head: Head = serde_json::from_slice(body).map_err(unreadable)?;
    if head.items.len() != sent {
        return Err(BulkError::Count {
            got: head.items.len(),
            sent,
        });
    }
    if !head.errors {
        return Ok(vec![ItemOutcome::Delivered; sent]);
    }
    let full: Full = serde_json::from_slice(body).map_err(unreadable)?;
    full.items
        .into_iter()
        .map(|item| {
            // One key, the action's name.
            let result = item
                .into_values()
                .next()
                .ok_or_else(|| BulkError::Unreadable("an item without an action".into()))?;
            Ok(classify(result))
        })
        .collect()
}

fn classify(item: ItemResult) -> ItemOutcome {
    let status = item.status;
    let (kind, reason) = match item.error {
        Some(e) => (
            e.kind.unwrap_or_else(|| format!("http_{status}")),
            e.reason.unwrap_or_default(),
        ),
        None => (format!("http_{status}"), String::new()),
    };
    match status {
        200..=299 => ItemOutcome::Delivered,
        // Documents carry no id of their own, so a conflict means the same document is
        // already indexed.
        409 => ItemOutcome::Delivered,
        408 | 429 | 500..=599 => ItemOutcome::Retry { status, kind },
        _ => ItemOutcome::Rejected {
            status,
            kind,
            reason,
        },
    }
}

/// The `reason` label of a dropped item: Elasticsearch's error type, kept to the characters
/// such types have, so that a label never carries document text.
pub fn reason_label(kind: &str) -> String {
    let clean: String = kind
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_answer_delivers_every_item() {
        let body = br#"{"took":2,"errors":false,"items":[{"index":{"_index":"a","_id":"1","_version":1,"result":"created","status":201}},{"index":{"status":201}}]}"#;
        assert_eq!(parse(body, 2), Ok(vec![ItemOutcome::Delivered; 2]));
        assert_eq!(
            parse(body, 3),
            Err(BulkError::Count { got: 2, sent: 3 }),
            "a count that does not match is not trusted"
        );
    }

    #[test]
    fn failed_items_are_sorted_by_status() {
        let body = br#"{"took":5,"errors":true,"items":[
            {"create":{"_index":"logs-a-b","status":201}},
            {"create":{"_index":"logs-a-b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_index":"x","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]","caused_by":{"type":"number_format_exception"}}}},
            {"index":{"_index":"x","status":404,"error":{"type":"index_not_found_exception","reason":"no such index [x]"}}},
            {"index":{"_index":"x","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
            {"create":{"_index":"x","status":409,"error":{"type":"version_conflict_engine_exception","reason":"document already exists"}}}
        ]}"#;
        let outcomes = parse(body, 6).unwrap_or_default();
        assert_eq!(outcomes[0], ItemOutcome::Delivered);
        assert!(
            matches!(&outcomes[1], ItemOutcome::Retry { status: 429, kind } if kind == "es_rejected_execution_exception")
        );
        assert!(
            matches!(&outcomes[2], ItemOutcome::Rejected { status: 400, kind, reason } if kind == "mapper_parsing_exception" && reason.contains("[n]"))
        );
        assert!(matches!(
            &outcomes[3],
            ItemOutcome::Rejected { status: 404, .. }
        ));
        assert!(matches!(
            &outcomes[4],
            ItemOutcome::Retry { status: 503, .. }
        ));
        assert_eq!(outcomes[5], ItemOutcome::Delivered);
    }

    #[test]
    fn garbage_is_not_taken_for_an_answer() {
        assert!(matches!(
            parse(b"<html>proxy error</html>", 1),
            Err(BulkError::Unreadable(_))
        ));
        assert_eq!(
            reason_label("mapper_parsing_exception"),
            "mapper_parsing_exception"
        );
        assert_eq!(reason_label("x\"} 1\n"), "x1");
        assert_eq!(reason_label(""), "unknown");
    }
}
