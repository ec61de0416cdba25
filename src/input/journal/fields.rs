//! One journal entry → one record: its fields as `__journal_<field>` labels, its line
//! (`MESSAGE`, or all fields as JSON), its realtime timestamp and its cursor.

use crate::entry::Timestamp;
use crate::input::records::Record;
use sdjournal::EntryRef;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The prefix of the labels every field is offered as to `relabel_configs`.
const PREFIX: &str = "__journal_";

/// Why an entry gives no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No `MESSAGE` field, and the line is not the JSON of all fields.
    NoMessage,
}

/// How a job turns entries into records.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The job's `labels`.
    pub labels: BTreeMap<String, String>,
    pub json: bool,
    /// Label name of each field name seen so far: the same few dozen fields repeat in every
    /// entry, so each is lower-cased once.
    names: HashMap<String, String>,
}

impl Shape {
    pub fn new(labels: BTreeMap<String, String>, json: bool) -> Shape {
        Shape {
            labels,
            json,
            names: HashMap::new(),
        }
    }

    pub fn record(&mut self, entry: &EntryRef, cursor: Arc<str>) -> Result<Record, Skip> {
        let mut labels = self.labels.clone();
        let mut json: BTreeMap<&str, String> = BTreeMap::new();
        for (name, value) in entry.iter_fields() {
            let value = String::from_utf8_lossy(value).into_owned();
            if self.json {
                json.insert(name, value.clone());
            }
            let label = match self.names.get(name) {
                Some(label) => label.clone(),
                None => {
                    let label = format!("{PREFIX}{}", name.to_ascii_lowercase());
                    self.names.insert(name.to_string(), label.clone());
                    label
                }
            };
            // A field may repeat; as with Promtail's map of fields, the last one wins.
            labels.insert(label, value);
        }
        let line = if self.json {
            serde_json::to_string(&json).map_err(|_| Skip::NoMessage)?
        } else {
            labels.get(MESSAGE_LABEL).cloned().ok_or(Skip::NoMessage)?
        };
        if let Some(keyword) = labels.get(PRIORITY_LABEL).and_then(|p| priority_keyword(p)) {
            labels.insert(format!("{PREFIX}priority_keyword"), keyword.to_string());
        }
        let micros = i64::try_from(entry.realtime_usec()).unwrap_or(i64::MAX / 1000);
        Ok(Record {
            labels,
            timestamp: Timestamp::from_nanos(micros.saturating_mul(1000)),
            line,
            checkpoint: Some(cursor),
        })
    }
}

const MESSAGE_LABEL: &str = "__journal_message";
const PRIORITY_LABEL: &str = "__journal_priority";

/// syslog's names of the priorities 0 to 7, as Promtail spells them.
pub fn priority_keyword(priority: &str) -> Option<&'static str> {
    Some(match priority.trim() {
        "0" => "emerg",
        "1" => "alert",
        "2" => "crit",
        "3" => "error",
        "4" => "warning",
        "5" => "notice",
        "6" => "info",
        "7" => "debug",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_have_syslog_keywords() {
        assert_eq!(priority_keyword("0"), Some("emerg"));
        assert_eq!(priority_keyword("3"), Some("error"));
        assert_eq!(priority_keyword("4"), Some("warning"));
        assert_eq!(priority_keyword("7"), Some("debug"));
        assert_eq!(priority_keyword("8"), None);
        assert_eq!(priority_keyword("info"), None);
    }
}
