//! A syslog message as the listener understands it, whatever its format, and the labels
//! Promtail gives it for relabeling.
//!
//! Both parsers are written here rather than taken from a crate: RFC 5424 must be strict the
//! way Promtail's parser is (a message with a broken header is counted and skipped, not
//! guessed at, and a nil field is told apart from an absent one so that exactly Promtail's
//! labels exist), while RFC 3164 must be lenient the way relays are (no year, no zone, an
//! optional hostname). The lenient crates guess at broken RFC 5424 headers, and the strict
//! ones do not read BSD messages; both parsers here also borrow from the frame instead of
//! allocating per field, which the listener's throughput depends on.

use super::{rfc3164, rfc5424};
use crate::entry::Timestamp;
use crate::input::records::Relabeler;

/// The format a message was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

/// One structured-data element: its SD-ID and its parameters, values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element<'a> {
    pub id: &'a str,
    pub params: Vec<(&'a str, String)>,
}

/// A parsed message; fields borrow from the frame. `None` is a nil (`-`) or absent field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub format: Format,
    pub facility: u8,
    pub severity: u8,
    pub timestamp: Option<Timestamp>,
    pub hostname: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub proc_id: Option<&'a str>,
    pub msg_id: Option<&'a str>,
    pub structured_data: Vec<Element<'a>>,
    /// MSG; None when the message has none (or an empty one).
    pub msg: Option<&'a str>,
}

/// Why a frame is not a syslog message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no <PRI> at the start")]
    Pri,
    #[error("RFC 5424 {0}")]
    Rfc5424(&'static str),
}

/// Parses one frame (without its framing): `<PRI>1 …` as RFC 5424, any other `<PRI>…` as
/// RFC 3164. A trailing line end is not part of the message.
pub fn parse(text: &str) -> Result<Message<'_>, ParseError> {
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let (pri, rest) = pri(text).ok_or(ParseError::Pri)?;
    let (facility, severity) = (pri / 8, pri % 8);
    if let Some(after) = rest.strip_prefix("1 ") {
        rfc5424::parse(facility, severity, after).map_err(ParseError::Rfc5424)
    } else {
        Ok(rfc3164::parse(facility, severity, rest))
    }
}

/// `<PRIVAL>`: one to three digits, at most 191, no leading zero but for `<0>`.
fn pri(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty()
        || digits.len() > 3
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let value: u16 = digits.parse().ok()?;
    let value = u8::try_from(value).ok().filter(|v| *v <= 191)?;
    Some((value, &rest[end + 1..]))
}

/// Severity keywords, as Promtail labels them.
const SEVERITIES: [&str; 8] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

/// Facility keywords as in syslog(3) where one exists, else the RFC's description, as
/// Promtail labels them.
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "clock daemon",
    "authpriv",
    "ftp",
    "NTP subsystem",
    "log audit",
    "log alert",
    "cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

impl Message<'_> {
    /// Gives `add` the `__syslog_message_*` labels Promtail gives this message, those that
    /// `wanted` names (relabeling reads no others, and every other `__` label is dropped
    /// after it, so the rest would only cost time).
    pub fn add_labels(
        &self,
        structured_data: bool,
        wanted: &Wanted,
        mut add: impl FnMut(&str, &str),
    ) {
        let [severity, facility, hostname, app_name, proc_id, msg_id] = wanted.fields;
        if severity {
            add(
                "__syslog_message_severity",
                SEVERITIES[usize::from(self.severity & 7)],
            );
        }
        if facility && let Some(name) = FACILITIES.get(usize::from(self.facility)) {
            add("__syslog_message_facility", name);
        }
        let fields = [
            (hostname, "__syslog_message_hostname", self.hostname),
            (app_name, "__syslog_message_app_name", self.app_name),
            (proc_id, "__syslog_message_proc_id", self.proc_id),
            (msg_id, "__syslog_message_msg_id", self.msg_id),
        ];
        for (wanted, name, value) in fields {
            if wanted && let Some(value) = value {
                add(name, value);
            }
        }
        if structured_data {
            let mut label = String::new();
            for element in &self.structured_data {
                for (name, value) in &element.params {
                    label.clear();
                    label.push_str("__syslog_message_sd_");
                    label.extend(element.id.chars().map(|c| if c == '@' { '_' } else { c }));
                    label.push('_');
                    label.push_str(name);
                    if wanted.wants(&label) {
                        add(&label, value);
                    }
                }
            }
        }
    }
}

/// The labels Promtail gives syslog messages, in the order [`Message::add_labels`] checks the
/// header's.
pub const FIELD_LABELS: [&str; 6] = [
    "__syslog_message_severity",
    "__syslog_message_facility",
    "__syslog_message_hostname",
    "__syslog_message_app_name",
    "__syslog_message_proc_id",
    "__syslog_message_msg_id",
];

/// The `__syslog_*` labels a job's relabeling can read: all of them when a rule matches label
/// names by regex, else those its rules name. The header's are looked up once, not per message.
#[derive(Debug, Clone)]
pub struct Wanted {
    relabeler: Relabeler,
    fields: [bool; 6],
}

impl Wanted {
    pub fn new(relabeler: &Relabeler) -> Wanted {
        Wanted {
            fields: FIELD_LABELS.map(|name| relabeler.wants(name)),
            relabeler: relabeler.clone(),
        }
    }

    pub fn wants(&self, name: &str) -> bool {
        self.relabeler.wants(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels_for(
        text: &str,
        sd: bool,
        rules: &[crate::relabel::RelabelConfig],
    ) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let wanted = Wanted::new(&Relabeler::new(rules));
        parse(text).unwrap().add_labels(sd, &wanted, |n, v| {
            labels.insert(n.to_string(), v.to_string());
        });
        labels
    }

    fn labels(text: &str, sd: bool) -> BTreeMap<String, String> {
        let all: Vec<crate::relabel::RelabelConfig> =
            serde_yaml_ng::from_str("- {action: labelmap, regex: '__syslog_(.+)'}").unwrap();
        labels_for(text, sd, &all)
    }

    #[test]
    fn only_labels_relabeling_reads_are_made() {
        let rules: Vec<crate::relabel::RelabelConfig> = serde_yaml_ng::from_str(
            "- {source_labels: [__syslog_message_app_name], target_label: app}",
        )
        .unwrap();
        let labels = labels_for("<14>1 - host app - - [a b=\"c\"] x", true, &rules);
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["__syslog_message_app_name"]
        );
        let rules: Vec<crate::relabel::RelabelConfig> =
            serde_yaml_ng::from_str("- {action: labelmap, regex: __syslog_(.+)}").unwrap();
        let labels = labels_for("<14>1 - host app - - [a b=\"c\"] x", true, &rules);
        assert_eq!(labels.len(), 5);
    }

    #[test]
    fn rfc5424_messages_get_promtails_labels() {
        let text = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 42 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry"#;
        let message = parse(text).unwrap();
        assert_eq!(message.msg, Some("An application event log entry"));
        assert_eq!(
            message.timestamp,
            Some(Timestamp::from_nanos(1_065_910_455_003_000_000))
        );
        let labels = labels(text, true);
        let expect = [
            ("__syslog_message_severity", "notice"),
            ("__syslog_message_facility", "local4"),
            ("__syslog_message_hostname", "mymachine.example.com"),
            ("__syslog_message_app_name", "evntslog"),
            ("__syslog_message_proc_id", "42"),
            ("__syslog_message_msg_id", "ID47"),
            ("__syslog_message_sd_exampleSDID_32473_iut", "3"),
            (
                "__syslog_message_sd_exampleSDID_32473_eventSource",
                "Application",
            ),
            ("__syslog_message_sd_exampleSDID_32473_eventID", "1011"),
            ("__syslog_message_sd_examplePriority_32473_class", "high"),
        ];
        for (name, value) in expect {
            assert_eq!(labels.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert_eq!(labels.len(), expect.len());
    }

    #[test]
    fn nil_fields_make_no_label_and_structured_data_is_opt_in() {
        let labels = labels("<14>1 - - - - - - hello", false);
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["__syslog_message_facility", "__syslog_message_severity"]
        );
        assert_eq!(labels["__syslog_message_facility"], "user");
        assert_eq!(labels["__syslog_message_severity"], "informational");
        let text = "<14>1 - - - - - [a b=\"c\"] hello";
        assert!(!super::tests::labels(text, false).contains_key("__syslog_message_sd_a_b"));
        assert_eq!(
            super::tests::labels(text, true)["__syslog_message_sd_a_b"],
            "c"
        );
    }

    #[test]
    fn facilities_without_a_keyword_use_the_description() {
        let labels = labels("<72>1 - - - - - - x", false);
        assert_eq!(labels["__syslog_message_facility"], "clock daemon");
        assert_eq!(labels["__syslog_message_severity"], "emergency");
    }

    #[test]
    fn a_frame_without_pri_is_rejected() {
        for text in [
            "hello",
            "<>1 - - - - - - x",
            "<192>x",
            "<013>x",
            "<1234>x",
            "<12",
        ] {
            assert_eq!(parse(text), Err(ParseError::Pri), "{text}");
        }
    }

    #[test]
    fn trailing_line_ends_are_not_part_of_msg() {
        assert_eq!(parse("<14>1 - - - - - - hi\r\n").unwrap().msg, Some("hi"));
    }
}
