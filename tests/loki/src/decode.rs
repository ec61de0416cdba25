//! Decoding and validation of push request bodies, following Loki's
//! `ParseLokiRequest` (HTTP layer) and the distributor's validation.
//!
//! Two kinds of failure exist, as in Loki:
//!
//! * request-level errors (bad Content-Encoding or Content-Type, undecodable
//!   body, unparsable label text): nothing is accepted, 400;
//! * stream- and entry-level validation errors (empty label set, duplicate
//!   label names, missing timestamp, line too long, ...): the offending stream
//!   or entry is discarded, every valid entry of the same request is still
//!   accepted, and the answer is 400 with all reasons, one per line.

use crate::labels::{self, LabelLimits};
use crate::proto;
use flate2::read::{DeflateDecoder, MultiGzDecoder};
use prost::Message as _;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request body format, chosen from the Content-Type header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushFormat {
    /// `application/json` (parameters such as `charset` allowed).
    Json,
    /// Any other media type, normally `application/x-protobuf`: a snappy
    /// block-compressed `PushRequest`.
    Protobuf,
}

/// The validation limits in force (a subset of Loki's `limits_config`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_line_size: usize,
    pub labels: LabelLimits,
    pub reject_old_samples_max_age: Option<Duration>,
    pub creation_grace_period: Option<Duration>,
    pub max_structured_metadata_size: usize,
    pub max_structured_metadata_count: usize,
    pub max_decoded_size: usize,
}

/// A request-level failure: status code and plain-text reason.
#[derive(Debug)]
pub(crate) struct RequestError {
    pub status: u16,
    pub message: String,
}

impl RequestError {
    fn bad(message: impl Into<String>) -> Self {
        RequestError {
            status: 400,
            message: message.into(),
        }
    }
}

/// An entry that passed validation.
#[derive(Debug)]
pub(crate) struct AcceptedEntry {
    pub labels: std::sync::Arc<(BTreeMap<String, String>, String)>,
    pub timestamp_ns: i64,
    pub line: String,
    pub structured_metadata: Vec<(String, String)>,
}

/// What came out of a decoded, validated request.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub format: Option<PushFormat>,
    pub decoded_len: usize,
    pub accepted: Vec<AcceptedEntry>,
    /// `accepted.len()` before the entries were moved into the store.
    pub accepted_count: usize,
    pub errors: Vec<String>,
    pub rejected_entries: usize,
}

/// A stream before validation, common to both formats.
struct RawStream {
    labels: String,
    entries: Vec<RawEntry>,
}

struct RawEntry {
    /// `Err` holds the per-entry reason the timestamp is unusable.
    timestamp: Result<i64, &'static str>,
    line: String,
    structured_metadata: Vec<(String, String)>,
}

/// Decodes and validates one push request body.
pub(crate) fn decode_push(
    body: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    limits: &Limits,
) -> Result<Decoded, RequestError> {
    let encoding = content_encoding.unwrap_or("");
    let decompressed: std::borrow::Cow<'_, [u8]> = match encoding {
        "" | "snappy" => body.into(),
        "gzip" => read_limited(MultiGzDecoder::new(body), limits.max_decoded_size)
            .map_err(|e| RequestError::bad(format!("gzip: {e}")))?
            .into(),
        "deflate" => read_limited(DeflateDecoder::new(body), limits.max_decoded_size)
            .map_err(|e| {
                let hint = if looks_like_zlib(body) {
                    " (the body starts with a zlib header: Loki decodes Content-Encoding deflate \
                     as raw DEFLATE, RFC 1951, without the zlib wrapper)"
                } else {
                    ""
                };
                RequestError::bad(format!("flate: corrupt input: {e}{hint}"))
            })?
            .into(),
        other => {
            return Err(RequestError::bad(format!(
                "Content-Encoding {other:?} not supported"
            )));
        }
    };

    let media_type = parse_media_type(content_type.unwrap_or("")).map_err(RequestError::bad)?;
    let format = if media_type == "application/json" {
        PushFormat::Json
    } else {
        PushFormat::Protobuf
    };
    let (streams, decoded_len) = match format {
        PushFormat::Json => (decode_json(&decompressed)?, decompressed.len()),
        PushFormat::Protobuf => {
            let raw = decode_snappy(&decompressed, limits.max_decoded_size).map_err(|e| {
                let mut msg = format!("snappy: {e}");
                if matches!(encoding, "gzip" | "deflate") {
                    msg.push_str(&format!(
                        " (the body was {encoding}-decoded first; a protobuf push body must be \
                         snappy block-compressed, Content-Encoding {encoding} on top is optional)"
                    ));
                } else {
                    msg.push_str(
                        " (a protobuf push body must be snappy block-compressed, not framed, \
                         not gzip)",
                    );
                }
                RequestError::bad(msg)
            })?;
            let len = raw.len();
            (decode_protobuf(&raw)?, len)
        }
    };

    // Loki parses every stream's labels in the HTTP layer; one unparsable
    // label text fails the whole request.
    let mut parsed = Vec::with_capacity(streams.len());
    for s in &streams {
        let pairs = labels::parse_labels(&s.labels)
            .map_err(|e| RequestError::bad(format!("couldn't parse labels: {e}")))?;
        parsed.push(pairs);
    }

    let now_ns = now_ns();
    let mut out = Decoded {
        format: Some(format),
        decoded_len,
        ..Decoded::default()
    };
    for (stream, pairs) in streams.into_iter().zip(parsed) {
        if stream.entries.is_empty() {
            continue;
        }
        let map = match labels::validate_label_set(&pairs, &limits.labels) {
            Ok(map) => map,
            Err(e) => {
                out.errors.push(e);
                out.rejected_entries += stream.entries.len();
                continue;
            }
        };
        let canonical = labels::render_labels(map.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        let raw_text = if format == PushFormat::Json {
            canonical.clone()
        } else {
            stream.labels
        };
        let shared = std::sync::Arc::new((map, raw_text));
        for entry in stream.entries {
            match validate_entry(&entry, &canonical, limits, now_ns) {
                Ok(ts) => out.accepted.push(AcceptedEntry {
                    labels: shared.clone(),
                    timestamp_ns: ts,
                    line: entry.line,
                    structured_metadata: entry.structured_metadata,
                }),
                Err(e) => {
                    out.errors.push(e);
                    out.rejected_entries += 1;
                }
            }
        }
    }
    out.accepted_count = out.accepted.len();
    Ok(out)
}

/// Loki's per-entry checks (distributor `ValidateEntry`), in Loki's order.
fn validate_entry(
    entry: &RawEntry,
    stream: &str,
    limits: &Limits,
    now_ns: i64,
) -> Result<i64, String> {
    let ts = entry
        .timestamp
        .map_err(|why| format!("entry for stream '{stream}' has {why}"))?;
    if let Some(max_age) = limits.reject_old_samples_max_age {
        let oldest = now_ns.saturating_sub(duration_ns(max_age));
        if ts < oldest {
            return Err(format!(
                "entry for stream '{stream}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                rfc3339(ts),
                rfc3339(oldest)
            ));
        }
    }
    if let Some(grace) = limits.creation_grace_period
        && ts > now_ns.saturating_add(duration_ns(grace))
    {
        return Err(format!(
            "entry for stream '{stream}' has timestamp too new: {}",
            rfc3339(ts)
        ));
    }
    if limits.max_line_size != 0 && entry.line.len() > limits.max_line_size {
        return Err(format!(
            "Max entry size '{}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
            limits.max_line_size,
            entry.line.len()
        ));
    }
    if !entry.structured_metadata.is_empty() {
        let size: usize = entry
            .structured_metadata
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum();
        if limits.max_structured_metadata_size != 0 && size > limits.max_structured_metadata_size {
            return Err(format!(
                "stream '{stream}' has structured metadata too large: '{size}' bytes, limit: '{}' bytes",
                limits.max_structured_metadata_size
            ));
        }
        let count = entry.structured_metadata.len();
        if limits.max_structured_metadata_count != 0 && count > limits.max_structured_metadata_count
        {
            return Err(format!(
                "stream '{stream}' has too many structured metadata labels: '{count}', limit: '{}'",
                limits.max_structured_metadata_count
            ));
        }
    }
    Ok(ts)
}

fn read_limited(reader: impl Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Err(std::io::Error::other(format!(
            "decompressed body exceeds {max} bytes"
        )));
    }
    Ok(out)
}

/// A zlib (RFC 1950) header: CM=8, and the 16-bit header is a multiple of 31.
fn looks_like_zlib(body: &[u8]) -> bool {
    body.len() >= 2
        && body[0] & 0x0f == 8
        && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0
}

fn decode_snappy(data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let len = snap::raw::decompress_len(data).map_err(|e| e.to_string())?;
    if len > max {
        return Err(format!("decoded length {len} exceeds {max} bytes"));
    }
    snap::raw::Decoder::new()
        .decompress_vec(data)
        .map_err(|e| e.to_string())
}

/// Go's `time` package accepts seconds in [0001-01-01, 10000-01-01).
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_800;

fn decode_protobuf(raw: &[u8]) -> Result<Vec<RawStream>, RequestError> {
    let req = proto::PushRequest::decode(raw)
        .map_err(|e| RequestError::bad(format!("proto: failed to decode PushRequest: {e}")))?;
    let mut streams = Vec::with_capacity(req.streams.len());
    for s in req.streams {
        let mut entries = Vec::with_capacity(s.entries.len());
        for e in s.entries {
            let timestamp = match e.timestamp {
                None => Err("no timestamp"),
                Some(t) => {
                    if !(0..1_000_000_000).contains(&t.nanos) {
                        return Err(RequestError::bad(format!(
                            "proto: timestamp: {t:?}: nanos not in range [0, 1e9)"
                        )));
                    }
                    if !(MIN_SECONDS..MAX_SECONDS).contains(&t.seconds) {
                        return Err(RequestError::bad(format!(
                            "proto: timestamp: {t:?}: seconds out of range [0001-01-01, 10000-01-01)"
                        )));
                    }
                    t.seconds
                        .checked_mul(1_000_000_000)
                        .and_then(|s| s.checked_add(i64::from(t.nanos)))
                        .ok_or("a timestamp outside the range of int64 nanoseconds (1677-09-21 to 2262-04-11)")
                }
            };
            entries.push(RawEntry {
                timestamp,
                line: e.line,
                structured_metadata: e
                    .structured_metadata
                    .into_iter()
                    .map(|p| (p.name, p.value))
                    .collect(),
            });
        }
        streams.push(RawStream {
            labels: s.labels,
            entries,
        });
    }
    Ok(streams)
}

/// `{"streams": [...]}`; unknown fields are ignored, as in Loki. Only a JSON
/// object (or `null`) is accepted, not the array form serde allows for
/// structs.
#[derive(Default)]
struct JsonPushRequest {
    streams: Vec<JsonStream>,
}

/// `{"stream": {labels}, "values": [entries]}`.
#[derive(Default)]
struct JsonStream {
    stream: BTreeMap<String, String>,
    values: Vec<JsonEntry>,
}

impl<'de> Deserialize<'de> for JsonPushRequest {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonPushRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a push request object {"streams": [...]}"#)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonPushRequest::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = JsonPushRequest::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "streams" {
                        out.streams = map
                            .next_value::<Option<Vec<JsonStream>>>()?
                            .unwrap_or_default();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for JsonStream {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonStream;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a stream object {"stream": {...}, "values": [...]}"#)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonStream::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = JsonStream::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "stream" => {
                            out.stream = map
                                .next_value::<Option<BTreeMap<String, String>>>()?
                                .unwrap_or_default();
                        }
                        "values" => {
                            out.values = map
                                .next_value::<Option<Vec<JsonEntry>>>()?
                                .unwrap_or_default();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

struct JsonEntry(RawEntry);

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(JsonEntryVisitor)
    }
}

struct JsonEntryVisitor;

impl<'de> Visitor<'de> for JsonEntryVisitor {
    type Value = JsonEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            r#"an entry array ["<unix epoch nanoseconds as a string>", "<line>", {optional structured metadata}]"#,
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonEntry, A::Error> {
        let timestamp = match seq.next_element::<String>()? {
            None => Err("no timestamp"),
            Some(s) => Ok(s.parse::<i64>().map_err(|e| {
                de::Error::custom(format!("error reading entry timestamp {s:?}: {e}"))
            })?),
        };
        let line = seq.next_element::<String>()?.unwrap_or_default();
        let structured_metadata = seq
            .next_element::<BTreeMap<String, String>>()?
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "error reading entry: an entry array has at most 3 elements",
            ));
        }
        Ok(JsonEntry(RawEntry {
            timestamp,
            line,
            structured_metadata,
        }))
    }
}

fn decode_json(body: &[u8]) -> Result<Vec<RawStream>, RequestError> {
    let req: JsonPushRequest = serde_json::from_slice(body)
        .map_err(|e| RequestError::bad(format!("json: failed to decode push request: {e}")))?;
    Ok(req
        .streams
        .into_iter()
        .map(|s| {
            let map = s.stream;
            RawStream {
                // Loki renders the JSON label map as text and parses that, so
                // invalid names fail exactly as in the protobuf path.
                labels: labels::render_labels(map.iter().map(|(a, b)| (a.as_str(), b.as_str()))),
                entries: s.values.into_iter().map(|e| e.0).collect(),
            }
        })
        .collect())
}

/// Go's `mime.ParseMediaType`, reduced to what Loki uses: the lower-cased
/// media type, with parameters checked for syntax. An empty or absent
/// Content-Type is an error ("mime: no media type"), as in Loki.
pub(crate) fn parse_media_type(v: &str) -> Result<String, String> {
    let (base, mut rest) = match v.find(';') {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let media = base.trim().to_ascii_lowercase();
    let (typ, after) = consume_token(&media);
    if typ.is_empty() {
        return Err("mime: no media type".into());
    }
    if !after.is_empty() {
        let Some(sub) = after.strip_prefix('/') else {
            return Err("mime: expected slash after first token".into());
        };
        let (subtype, after) = consume_token(sub);
        if subtype.is_empty() {
            return Err("mime: expected token after slash".into());
        }
        if !after.is_empty() {
            return Err("mime: unexpected content after media subtype".into());
        }
    }
    let mut seen = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        match consume_param(rest) {
            Some((key, next)) => {
                if seen.contains(&key) {
                    return Err("mime: duplicate parameter name".into());
                }
                seen.push(key);
                rest = next;
            }
            None if rest.trim() == ";" => break,
            None => return Err("mime: invalid media parameter".into()),
        }
    }
    Ok(media)
}

fn is_token_char(c: char) -> bool {
    c > ' ' && c < '\u{7f}' && !"()<>@,;:\\\"/[]?=".contains(c)
}

fn consume_token(v: &str) -> (&str, &str) {
    let end = v.find(|c| !is_token_char(c)).unwrap_or(v.len());
    (&v[..end], &v[end..])
}

/// Parses `; key=value` at the start of `v`; returns the lower-cased key and
/// the rest.
fn consume_param(v: &str) -> Option<(String, &str)> {
    let rest = v.trim_start().strip_prefix(';')?.trim_start();
    let (key, rest) = consume_token(rest);
    if key.is_empty() {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let rest = if let Some(quoted) = rest.strip_prefix('"') {
        let mut escaped = false;
        let mut end = None;
        for (i, c) in quoted.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            }
        }
        &quoted[end? + 1..]
    } else {
        let (value, rest) = consume_token(rest);
        if value.is_empty() {
            return None;
        }
        rest
    };
    Some((key.to_ascii_lowercase(), rest))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC (seconds precision),
/// for error messages.
pub(crate) fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_go() {
        assert_eq!(
            parse_media_type("application/json").unwrap(),
            "application/json"
        );
        assert_eq!(
            parse_media_type("Application/JSON; charset=utf-8").unwrap(),
            "application/json"
        );
        assert_eq!(
            parse_media_type("application/json; charset=\"utf-8\";").unwrap(),
            "application/json"
        );
        assert_eq!(
            parse_media_type("application/x-protobuf").unwrap(),
            "application/x-protobuf"
        );
        assert!(parse_media_type("").is_err());
        assert!(parse_media_type("   ").is_err());
        assert!(parse_media_type("application/json; charsetutf-8").is_err());
        assert!(parse_media_type("application/json; a=1; a=2").is_err());
        assert!(parse_media_type("application/").is_err());
        assert!(parse_media_type("application/json extra").is_err());
        assert_eq!(parse_media_type("text").unwrap(), "text");
    }

    fn limits() -> Limits {
        Limits {
            max_line_size: 0,
            labels: LabelLimits {
                max_label_names_per_series: 15,
                max_label_name_length: 1024,
                max_label_value_length: 2048,
            },
            reject_old_samples_max_age: None,
            creation_grace_period: None,
            max_structured_metadata_size: 0,
            max_structured_metadata_count: 0,
            max_decoded_size: 1 << 20,
        }
    }

    fn json(body: &str) -> Result<Decoded, RequestError> {
        decode_push(body.as_bytes(), Some("application/json"), None, &limits())
    }

    #[test]
    fn json_shapes_follow_loki() {
        assert!(json("[]").is_err());
        assert!(json(r#"{"streams": [[{"job": "x"}, []]]}"#).is_err());
        assert!(json(r#"{"streams": [{"stream": {"job": 1}, "values": []}]}"#).is_err());
        assert_eq!(json("null").unwrap().accepted_count, 0);
        assert_eq!(json(r#"{"streams": null}"#).unwrap().accepted_count, 0);
        let d = json(
            r#"{"extra": [1, {"x": null}], "streams": [
                {"stream": {"job": "x"}, "other": true, "values": [["1", "a"], ["2"]]},
                {"stream": null, "values": null}
            ]}"#,
        )
        .unwrap();
        assert_eq!(d.accepted_count, 2);
        assert_eq!(
            d.accepted[1].line, "",
            "a missing line is empty, as in Loki"
        );
        assert!(d.errors.is_empty());
    }

    #[test]
    fn protobuf_invalid_utf8_is_rejected() {
        let mut raw = Vec::new();
        // PushRequest.streams[0].labels = b"{a=\"\xff\"}"
        let labels = b"{a=\"\xff\"}";
        let mut stream = vec![0x0a, labels.len() as u8];
        stream.extend_from_slice(labels);
        raw.push(0x0a);
        raw.push(stream.len() as u8);
        raw.extend_from_slice(&stream);
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let err = decode_push(&body, Some("application/x-protobuf"), None, &limits()).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("UTF-8"), "{}", err.message);
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_570_818_238_000_000_000), "2019-10-11T18:23:58Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn zlib_header_detection() {
        assert!(looks_like_zlib(&[0x78, 0x9c]));
        assert!(looks_like_zlib(&[0x78, 0x01]));
        assert!(!looks_like_zlib(&[0x1f, 0x8b]));
        assert!(!looks_like_zlib(&[0xcb, 0x48]));
    }
}
