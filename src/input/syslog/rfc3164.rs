//! RFC 3164 (BSD) messages after `<PRI>`: `Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`, as
//! rsyslog's traditional forwarding format, busybox, `logger --rfc3164` and most network gear
//! send them. Everything but PRI is optional: what is not recognised stays in MSG, as a relay
//! would keep it. rsyslog's high-precision variant (an RFC 3339 timestamp) is read too.
//!
//! A BSD timestamp has no year and no zone: it is taken in logferry's local time zone, in the
//! year that puts it at most a week in the future (so December's messages read in January
//! land in the old year).

use super::message::{Format, Message};
use crate::entry::Timestamp;
use chrono::{Datelike, NaiveDate, TimeZone};

/// Parses what follows `<PRI>`.
pub fn parse(facility: u8, severity: u8, text: &str) -> Message<'_> {
    let mut message = Message {
        format: Format::Rfc3164,
        facility,
        severity,
        timestamp: None,
        hostname: None,
        app_name: None,
        proc_id: None,
        msg_id: None,
        structured_data: Vec::new(),
        msg: None,
    };
    let mut rest = text;
    if let Some((timestamp, after)) = bsd_timestamp(rest).or_else(|| rfc3339_timestamp(rest)) {
        message.timestamp = Some(timestamp);
        rest = after;
        // After a timestamp comes the hostname, unless the sender left it out and the next
        // word is already the tag.
        if let Some((word, after)) = rest.split_once(' ')
            && !word.is_empty()
            && tag(word).is_none()
            && word.bytes().all(|b| (33..=126).contains(&b))
        {
            message.hostname = Some(word);
            rest = after;
        }
    }
    if let Some((word, after)) = rest.split_once(' ').or(Some((rest, "")))
        && let Some((app, pid)) = tag(word)
    {
        message.app_name = Some(app);
        message.proc_id = pid;
        rest = after;
    }
    message.msg = Some(rest).filter(|m| !m.is_empty());
    message
}

/// `TAG:`, `TAG[PID]:` or `TAG[PID]` (some senders leave the colon out after a PID).
fn tag(word: &str) -> Option<(&str, Option<&str>)> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 48
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
    };
    if let Some(open) = word.find('[') {
        let inner = word[open + 1..]
            .strip_suffix("]:")
            .or_else(|| word[open + 1..].strip_suffix(']'))?;
        let name = &word[..open];
        let pid_ok = !inner.is_empty() && inner.len() <= 128 && !inner.contains([']', '[']);
        return (is_name(name) && pid_ok).then_some((name, Some(inner)));
    }
    let name = word.strip_suffix(':')?;
    is_name(name).then_some((name, None))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd hh:mm:ss ` (day space-padded or not) in local time; returns what follows.
fn bsd_timestamp(text: &str) -> Option<(Timestamp, &str)> {
    let month = MONTHS.iter().position(|m| text.starts_with(m))? as u32 + 1;
    let rest = text.get(3..)?.strip_prefix(' ')?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (day, rest) = rest.split_once(' ')?;
    let (time, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let mut hms = time.splitn(3, ':');
    let mut part = || hms.next().filter(|p| p.len() == 2)?.parse::<u32>().ok();
    let (h, m, s) = (part()?, part()?, part()?);
    let now = chrono::Local::now();
    let build = |year: i32| {
        let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(h, m, s)?;
        chrono::Local.from_local_datetime(&naive).earliest()
    };
    let this_year = build(now.year());
    let time = match this_year {
        Some(t) if t <= now + chrono::Duration::days(7) => t,
        _ => build(now.year() - 1)?,
    };
    Some((Timestamp::from_nanos(time.timestamp_nanos_opt()?), rest))
}

/// rsyslog's high-precision traditional format: an RFC 3339 timestamp where the BSD one goes.
fn rfc3339_timestamp(text: &str) -> Option<(Timestamp, &str)> {
    if !text.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let (word, rest) = text.split_once(' ')?;
    let time = chrono::DateTime::parse_from_rfc3339(word).ok()?;
    Some((Timestamp::from_nanos(time.timestamp_nanos_opt()?), rest))
}

#[cfg(test)]
mod tests {
    use super::super::message::{Format, parse};
    use chrono::{Datelike, TimeZone, Timelike};

    #[test]
    fn logger_and_rsyslog_forms() {
        let m = parse("<13>Dec  3 04:31:00 myhost sshd[4242]: Accepted key for x").unwrap();
        assert_eq!(m.format, Format::Rfc3164);
        assert_eq!(m.hostname, Some("myhost"));
        assert_eq!(m.app_name, Some("sshd"));
        assert_eq!(m.proc_id, Some("4242"));
        assert_eq!(m.msg, Some("Accepted key for x"));
        let local = chrono::Local.timestamp_nanos(m.timestamp.map(|t| t.0).unwrap_or_default());
        assert_eq!((local.month(), local.day(), local.hour()), (12, 3, 4));

        let m = parse("<30>2026-12-03T04:31:00.123456+00:00 relay cron: job done").unwrap();
        assert_eq!(m.hostname, Some("relay"));
        assert_eq!(m.app_name, Some("cron"));
        assert_eq!(m.proc_id, None);
        assert_eq!(m.msg, Some("job done"));
        assert_eq!(m.timestamp.map(|t| t.0 % 1_000_000_000), Some(123_456_000));
    }

    #[test]
    fn without_hostname_or_tag_the_rest_is_msg() {
        let m = parse("<13>Dec 13 04:31:00 kernel: oops").unwrap();
        assert_eq!(
            (m.hostname, m.app_name, m.msg),
            (None, Some("kernel"), Some("oops"))
        );
        let m = parse("<190>%ASA-6-302013: Built outbound TCP connection").unwrap();
        assert_eq!(m.timestamp, None);
        assert_eq!(m.app_name, None);
        assert_eq!(m.msg, Some("%ASA-6-302013: Built outbound TCP connection"));
        let m = parse("<14>just text").unwrap();
        assert_eq!((m.facility, m.severity, m.msg), (1, 6, Some("just text")));
    }

    #[test]
    fn a_date_ahead_of_now_is_last_year() {
        let now = chrono::Local::now();
        let ahead = now + chrono::Duration::days(60);
        let text = format!("<13>{} h t: x", ahead.format("%b %e %H:%M:%S"));
        let m = parse(&text).unwrap();
        let year = chrono::Local
            .timestamp_nanos(m.timestamp.map(|t| t.0).unwrap_or_default())
            .year();
        assert_eq!(year, ahead.year() - 1, "{text}");
    }
}
