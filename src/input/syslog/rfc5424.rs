//! RFC 5424 after `<PRI>1 `: the header fields, the structured data, MSG. Strict about the
//! header (a malformed one is an error, as in Promtail), so that what is labelled is what the
//! sender meant. See `message` for why this is not a crate.

use super::message::{Element, Format, Message};
use crate::entry::Timestamp;

/// Parses what follows `<PRI>1 `.
pub fn parse(facility: u8, severity: u8, text: &str) -> Result<Message<'_>, &'static str> {
    let mut rest = text;
    let timestamp = match field(&mut rest, 64, "timestamp")? {
        None => None,
        Some(t) => Some(timestamp(t).ok_or("timestamp is not a valid RFC 3339 time")?),
    };
    let hostname = field(&mut rest, 255, "hostname")?;
    let app_name = field(&mut rest, 48, "app-name")?;
    let proc_id = field(&mut rest, 128, "procid")?;
    let msg_id = field_last(&mut rest, 32, "msgid")?;
    let (structured_data, rest) = structured_data(rest)?;
    let msg = match rest {
        "" => None,
        r => {
            let r = r
                .strip_prefix(' ')
                .ok_or("no space after the structured data")?;
            let r = r.strip_prefix('\u{feff}').unwrap_or(r);
            Some(r).filter(|m| !m.is_empty())
        }
    };
    Ok(Message {
        format: Format::Rfc5424,
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        proc_id,
        msg_id,
        structured_data,
        msg,
    })
}

/// A header field of printable US-ASCII up to `max` long, followed by a space; `-` is nil.
fn field<'a>(
    rest: &mut &'a str,
    max: usize,
    name: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    let end = rest.find(' ').ok_or(match name {
        "timestamp" => "message ends in the timestamp",
        "hostname" => "message ends in the hostname",
        "app-name" => "message ends in the app-name",
        _ => "message ends in the procid",
    })?;
    let value = &rest[..end];
    *rest = &rest[end + 1..];
    check(value, max, name)
}

/// MSGID: the last header field, followed by a space and the structured data.
fn field_last<'a>(
    rest: &mut &'a str,
    max: usize,
    name: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    let end = rest
        .find(' ')
        .ok_or("message ends before the structured data")?;
    let value = &rest[..end];
    *rest = &rest[end + 1..];
    check(value, max, name)
}

fn check<'a>(
    value: &'a str,
    max: usize,
    name: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    if value == "-" {
        return Ok(None);
    }
    if value.is_empty() {
        return Err("empty header field (two spaces)");
    }
    if value.len() > max {
        return Err(match name {
            "hostname" => "hostname longer than 255",
            "app-name" => "app-name longer than 48",
            "procid" => "procid longer than 128",
            "msgid" => "msgid longer than 32",
            _ => "timestamp too long",
        });
    }
    if !value.bytes().all(|b| (33..=126).contains(&b)) {
        return Err("header field with a character that is not printable ASCII");
    }
    Ok(Some(value))
}

/// `FULL-DATE "T" FULL-TIME`, in nanoseconds since the epoch.
fn timestamp(text: &str) -> Option<Timestamp> {
    // RFC 5424 allows an upper-case T and Z only, and at most 6 fraction digits.
    let b = text.as_bytes();
    if b.len() < 20 || b[10] != b'T' || text.contains(['t', 'z']) {
        return None;
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    if let Some(fraction) = text[19..].strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return None;
        }
    }
    time.timestamp_nanos_opt().map(Timestamp::from_nanos)
}

/// `-` or one or more `[SD-ID *(SP PARAM="VALUE")]`; returns what follows.
fn structured_data(text: &str) -> Result<(Vec<Element<'_>>, &str), &'static str> {
    if let Some(rest) = text.strip_prefix('-') {
        return Ok((Vec::new(), rest));
    }
    if !text.starts_with('[') {
        return Err("structured data is neither - nor [element]");
    }
    let mut elements = Vec::new();
    let mut rest = text;
    while let Some(after) = rest.strip_prefix('[') {
        let (element, after) = element(after)?;
        elements.push(element);
        rest = after;
    }
    Ok((elements, rest))
}

/// One element after its `[`; returns what follows its `]`.
fn element(text: &str) -> Result<(Element<'_>, &str), &'static str> {
    let id_end = text
        .find([' ', ']'])
        .ok_or("structured data element not closed")?;
    let id = sd_name(&text[..id_end], "bad SD-ID")?;
    let mut params = Vec::new();
    let mut rest = &text[id_end..];
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            return Ok((Element { id, params }, after));
        }
        rest = rest
            .strip_prefix(' ')
            .ok_or("structured data element not closed")?;
        let eq = rest.find('=').ok_or("SD-PARAM without =")?;
        let name = sd_name(&rest[..eq], "bad SD-PARAM name")?;
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("SD-PARAM value not quoted")?;
        let (value, after) = param_value(rest)?;
        params.push((name, value));
        rest = after;
    }
}

/// SD-NAME: 1 to 32 printable ASCII characters but `=`, space, `]` and `"`.
fn sd_name<'a>(text: &'a str, error: &'static str) -> Result<&'a str, &'static str> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'));
    if valid { Ok(text) } else { Err(error) }
}

/// A value after its opening quote, `\"`, `\\` and `\]` unescaped; returns what follows its
/// closing quote. A backslash before anything else stays, as the RFC says.
fn param_value(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.clone().next() {
                Some((_, next @ ('"' | '\\' | ']'))) => {
                    value.push(next);
                    chars.next();
                }
                _ => value.push('\\'),
            },
            ']' => return Err("unescaped ] in an SD-PARAM value"),
            c => value.push(c),
        }
    }
    Err("SD-PARAM value not closed")
}

#[cfg(test)]
mod tests {
    use super::super::message::{ParseError, parse};

    #[test]
    fn structured_data_values_are_unescaped() {
        let m = parse(r#"<14>1 - - - - - [a@1 x="q\"b\\s\]e\n"][b] m"#).unwrap();
        assert_eq!(m.structured_data.len(), 2);
        assert_eq!(m.structured_data[0].id, "a@1");
        assert_eq!(
            m.structured_data[0].params,
            [("x", r#"q"b\s]e\n"#.to_string())]
        );
        assert!(m.structured_data[1].params.is_empty());
        assert_eq!(m.msg, Some("m"));
    }

    #[test]
    fn a_message_without_msg_has_none() {
        assert_eq!(parse("<14>1 - h a p m -").unwrap().msg, None);
        assert_eq!(parse("<14>1 - h a p m - ").unwrap().msg, None);
        assert_eq!(
            parse("<14>1 - h a p m - \u{feff}bom").unwrap().msg,
            Some("bom")
        );
    }

    #[test]
    fn timestamps_with_offsets_and_fractions() {
        let m = parse("<14>1 2026-12-03T05:31:00.5+01:00 h a p m - x").unwrap();
        assert_eq!(m.timestamp.map(|t| t.0), Some(1_796_272_260_500_000_000));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let bad = [
            "<14>1 2026-13-03T05:31:00Z h a p m - x",
            "<14>1 yesterday h a p m - x",
            "<14>1 2026-12-03T05:31:00.1234567Z h a p m - x",
            "<14>1 - h a p",
            "<14>1 -  a p m - x",
            "<14>1 - h a p m [unclosed x",
            "<14>1 - h a p m [id k=v] x",
            "<14>1 - h a p m nope x",
            "<14>1 - h a p m-too-long-msgid-xxxxxxxxxxxxxxxxxxxxxxxx - x",
            "<14>1 - h a p m -x",
        ];
        for text in bad {
            assert!(
                matches!(parse(text), Err(ParseError::Rfc5424(_))),
                "{text}: {:?}",
                parse(text)
            );
        }
    }
}
