//! logferry's own logs, on standard error: logfmt (`level=info ts=... msg="..." key=value`, as
//! Promtail writes them) or one JSON object per line.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as logfmt.
pub struct Logfmt;

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            push_pair(&mut self.rest, field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            push_pair(&mut self.rest, field.name(), &text);
        }
    }
}

/// Appends ` key=value`, quoting the value when it needs it.
fn push_pair(out: &mut String, key: &str, value: &str) {
    out.push(' ');
    out.push_str(key);
    out.push('=');
    push_value(out, value);
}

fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control());
    if plain {
        out.push_str(value);
    } else {
        crate::labels::go_quote_into(value, out);
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "debug",
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let mut line = format!(
            "level={} ts={ts} msg=",
            level_name(event.metadata().level())
        );
        push_value(&mut line, &fields.message);
        line.push_str(&fields.rest);
        writeln!(writer, "{line}")
    }
}

/// Formats events as one JSON object per line, with the keys of [`Logfmt`]: `level`, `ts`,
/// `msg`, then the event's fields.
pub struct Json;

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(json_key(field), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(json_key(field), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(json_key(field), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(json_key(field), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(json_key(field), format!("{value:?}").into());
    }
}

fn json_key(field: &Field) -> String {
    if field.name() == "message" {
        "msg".into()
    } else {
        field.name().into()
    }
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut map = serde_json::Map::new();
        map.insert("level".into(), level_name(event.metadata().level()).into());
        map.insert(
            "ts".into(),
            chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
                .into(),
        );
        let mut fields = JsonFields(map);
        event.record(&mut fields);
        writeln!(writer, "{}", serde_json::Value::Object(fields.0))
    }
}

/// Sets up logging at `level` (debug, info, warn, error) in `format` (logfmt or json).
/// `LOGFERRY_LOG` (an `EnvFilter` directive) overrides the level.
pub fn init(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOGFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("logferry={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.event_format(Json).init();
    } else {
        builder.event_format(Logfmt).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        let mut s = String::new();
        push_pair(&mut s, "path", "/var/log/syslog");
        push_pair(&mut s, "error", "no such file");
        push_pair(&mut s, "empty", "");
        assert_eq!(s, r#" path=/var/log/syslog error="no such file" empty="""#);
    }
}
