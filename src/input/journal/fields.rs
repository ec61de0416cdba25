//! One journal entry → one record: its fields as `__journal_<field>` labels, its line
//! (`MESSAGE`, or all fields as JSON), its realtime timestamp and its cursor.

use crate::input::records::{Relabeled, Relabeler, lossy_utf8};
use sdjournal::EntryRef;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

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
    /// Label name of each field name seen so far, None for a field relabeling does not read:
    /// the same few dozen fields repeat in every entry, so each is looked at once.
    names: HashMap<String, Option<String>>,
}

impl Shape {
    pub fn new(labels: BTreeMap<String, String>, json: bool) -> Shape {
        Shape {
            labels,
            json,
            names: HashMap::new(),
        }
    }

    /// The entry's labels, relabeled, and its line. Only the fields relabeling reads are
    /// offered to it: every other `__journal_` label would be dropped after it unread.
    pub fn record<'e>(
        &mut self,
        entry: &'e EntryRef,
        relabeler: &mut Relabeler,
    ) -> Result<(Relabeled, Cow<'e, str>), Skip> {
        relabeler.labels(self.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let mut json: BTreeMap<&str, Cow<str>> = BTreeMap::new();
        // A field may repeat; as with Promtail's map of fields, the last one wins.
        let mut message = None;
        let mut priority = None;
        for (name, value) in entry.iter_fields() {
            let value = lossy_utf8(value);
            match name {
                "MESSAGE" => message = Some(value.clone()),
                "PRIORITY" => priority = Some(priority_keyword(&value)),
                _ => {}
            }
            let label = match self.names.get(name) {
                Some(label) => label.as_deref(),
                None => {
                    let label = format!("{PREFIX}{}", name.to_ascii_lowercase());
                    let label = relabeler.wants(&label).then_some(label);
                    self.names.insert(name.to_string(), label);
                    self.names.get(name).and_then(Option::as_deref)
                }
            };
            if let Some(label) = label {
                relabeler.label(label, &value);
            }
            if self.json {
                json.insert(name, value);
            }
        }
        if let Some(Some(keyword)) = priority
            && relabeler.wants(PRIORITY_KEYWORD)
        {
            relabeler.label(PRIORITY_KEYWORD, keyword);
        }
        let labels = relabeler.finish();
        let line = if self.json {
            Cow::Owned(serde_json::to_string(&json).map_err(|_| Skip::NoMessage)?)
        } else {
            message.ok_or(Skip::NoMessage)?
        };
        Ok((labels, line))
    }
}

const PRIORITY_KEYWORD: &str = "__journal_priority_keyword";
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
