//! Encoding a batch as a Loki push request body.
//!
//! The protobuf encoder writes Loki's `PushRequest` wire format directly from the chunks' text
//! (field by field, lengths computed first), so encoding costs one pass over the bytes and no
//! allocation per line. `tests` checks it against `prost`-derived message types.

use super::batch::Batch;
use crate::config::{Compression, Encoding};
use crate::labels::LabelSet;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

/// A request body ready to send.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

/// Turns batches into request bodies for one client.
#[derive(Debug)]
pub struct Encoder {
    encoding: Encoding,
    compression: Compression,
    external_labels: BTreeMap<String, String>,
    /// Stream labels merged with the external labels, by the stream's own rendered labels.
    merged: HashMap<String, Arc<LabelSet>>,
    /// The encoded batch, and its snappy-compressed form: both kept for the next batch, so
    /// that a batch costs no fresh megabyte-sized buffers (each would be new pages to fault in).
    raw: Vec<u8>,
    compressed: Vec<u8>,
}

/// Merged label sets remembered at most (streams of files long gone are forgotten beyond it).
const MERGED_CACHE: usize = 10_000;

impl Encoder {
    /// An encoder; the client config is checked before, so the pair is one Loki accepts.
    pub fn new(
        encoding: Encoding,
        compression: Compression,
        external_labels: BTreeMap<String, String>,
    ) -> Encoder {
        Encoder {
            encoding,
            compression,
            external_labels,
            merged: HashMap::new(),
            raw: Vec::new(),
            compressed: Vec::new(),
        }
    }

    /// The labels a stream is sent with: the external labels, overridden by the stream's own.
    fn stream_labels(&mut self, labels: &Arc<LabelSet>) -> Arc<LabelSet> {
        if self.external_labels.is_empty() {
            return labels.clone();
        }
        if let Some(merged) = self.merged.get(labels.rendered()) {
            return merged.clone();
        }
        if self.merged.len() >= MERGED_CACHE {
            self.merged.clear();
        }
        let merged = Arc::new(LabelSet::new(
            self.external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(labels.pairs().iter().cloned()),
        ));
        self.merged
            .insert(labels.rendered().to_string(), merged.clone());
        merged
    }

    /// Groups a batch's parts by stream, in the order streams first appear.
    fn streams(&mut self, batch: &Batch) -> Vec<(Arc<LabelSet>, Vec<usize>)> {
        let mut streams: Vec<(Arc<LabelSet>, Vec<usize>)> = Vec::new();
        let mut index: HashMap<*const LabelSet, usize> = HashMap::new();
        for (i, part) in batch.parts.iter().enumerate() {
            let key = Arc::as_ptr(&part.chunk.labels);
            match index.get(&key) {
                Some(&s) => streams[s].1.push(i),
                None => {
                    index.insert(key, streams.len());
                    let labels = self.stream_labels(&part.chunk.labels);
                    streams.push((labels, vec![i]));
                }
            }
        }
        streams
    }

    /// Encodes and compresses a batch.
    pub fn encode(&mut self, batch: &Batch) -> Body {
        let streams = self.streams(batch);
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let body = match self.encoding {
            Encoding::Protobuf => {
                write_protobuf(batch, &streams, &mut raw);
                let out = &mut self.compressed;
                out.resize(snap::raw::max_compress_len(raw.len()), 0);
                let n = snap::raw::Encoder::new()
                    .compress(&raw, out)
                    .unwrap_or_else(|e| {
                        unreachable!("snappy output is sized by max_compress_len: {e}")
                    });
                // The body is copied out at its size (logs compress to a third or less), so
                // a request in flight and retried holds no more than it sends.
                let bytes = bytes::Bytes::copy_from_slice(&out[..n]);
                if out.capacity() > 8 << 20 {
                    *out = Vec::new();
                }
                Body {
                    bytes,
                    content_type: "application/x-protobuf",
                    content_encoding: None,
                }
            }
            Encoding::Json => {
                write_json(batch, &streams, &mut raw);
                match self.compression {
                    Compression::Gzip => {
                        let mut gz = flate2::write::GzEncoder::new(
                            Vec::with_capacity(raw.len() / 4),
                            flate2::Compression::fast(),
                        );
                        let out = gz
                            .write_all(&raw)
                            .and_then(|()| gz.finish())
                            .map(|mut out| {
                                out.shrink_to_fit();
                                out
                            })
                            .unwrap_or_default();
                        Body {
                            bytes: out.into(),
                            content_type: "application/json",
                            content_encoding: Some("gzip"),
                        }
                    }
                    _ => Body {
                        bytes: raw.clone().into(),
                        content_type: "application/json",
                        content_encoding: None,
                    },
                }
            }
        };
        // Keep the buffer for the next batch, unless one huge batch made it huge.
        if raw.capacity() <= 8 << 20 {
            self.raw = raw;
        }
        body
    }
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

fn put_varint(buf: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, buf);
}

/// Length of a `google.protobuf.Timestamp` body.
fn timestamp_len(secs: u64, nanos: u64) -> usize {
    (if secs != 0 { 1 + varint_len(secs) } else { 0 })
        + (if nanos != 0 { 1 + varint_len(nanos) } else { 0 })
}

fn split_ts(ns: i64) -> (u64, u64) {
    (
        ns.div_euclid(1_000_000_000) as u64,
        ns.rem_euclid(1_000_000_000) as u64,
    )
}

/// Length of a `LabelPairAdapter { string name = 1; string value = 2 }` body.
fn pair_len(name: &str, value: &str) -> usize {
    let field = |n: usize| {
        if n > 0 {
            1 + varint_len(n as u64) + n
        } else {
            0
        }
    };
    field(name.len()) + field(value.len())
}

fn entry_len(secs: u64, nanos: u64, line: usize, metadata: &[(String, String)]) -> usize {
    let ts = timestamp_len(secs, nanos);
    let meta: usize = metadata
        .iter()
        .map(|(n, v)| {
            let p = pair_len(n, v);
            1 + varint_len(p as u64) + p
        })
        .sum();
    let line = if line > 0 {
        1 + varint_len(line as u64) + line
    } else {
        0
    };
    1 + varint_len(ts as u64) + ts + line + meta
}

/// `PushRequest { repeated StreamAdapter streams = 1 }`,
/// `StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2 }`,
/// `EntryAdapter { Timestamp timestamp = 1; string line = 2 }`.
fn write_protobuf(batch: &Batch, streams: &[(Arc<LabelSet>, Vec<usize>)], buf: &mut Vec<u8>) {
    for (labels, parts) in streams {
        let labels = labels.rendered().as_bytes();
        let mut stream_len = 1 + varint_len(labels.len() as u64) + labels.len();
        for &p in parts {
            let part = &batch.parts[p];
            for (i, line) in part.chunk.lines[part.lines.clone()].iter().enumerate() {
                let (secs, nanos) = split_ts(line.timestamp.0);
                let meta = part.chunk.metadata_of(part.lines.start + i);
                let e = entry_len(secs, nanos, (line.end - line.start) as usize, meta);
                stream_len += 1 + varint_len(e as u64) + e;
            }
        }
        buf.push(0x0a);
        put_varint(buf, stream_len as u64);
        buf.push(0x0a);
        put_varint(buf, labels.len() as u64);
        buf.extend_from_slice(labels);
        for &p in parts {
            let part = &batch.parts[p];
            let text = part.chunk.text.as_bytes();
            for (i, line) in part.chunk.lines[part.lines.clone()].iter().enumerate() {
                let (secs, nanos) = split_ts(line.timestamp.0);
                let len = (line.end - line.start) as usize;
                let meta = part.chunk.metadata_of(part.lines.start + i);
                buf.push(0x12);
                put_varint(buf, entry_len(secs, nanos, len, meta) as u64);
                buf.push(0x0a);
                put_varint(buf, timestamp_len(secs, nanos) as u64);
                if secs != 0 {
                    buf.push(0x08);
                    put_varint(buf, secs);
                }
                if nanos != 0 {
                    buf.push(0x10);
                    put_varint(buf, nanos);
                }
                if len > 0 {
                    buf.push(0x12);
                    put_varint(buf, len as u64);
                    buf.extend_from_slice(&text[line.start as usize..line.end as usize]);
                }
                for (name, value) in meta {
                    buf.push(0x1a);
                    put_varint(buf, pair_len(name, value) as u64);
                    for (tag, field) in [(0x0a, name), (0x12, value)] {
                        if !field.is_empty() {
                            buf.push(tag);
                            put_varint(buf, field.len() as u64);
                            buf.extend_from_slice(field.as_bytes());
                        }
                    }
                }
            }
        }
    }
}

/// `{"streams":[{"stream":{"job":"x"},"values":[["<ns>","line"]]}]}`.
fn write_json(batch: &Batch, streams: &[(Arc<LabelSet>, Vec<usize>)], buf: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let string = |buf: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *buf, s);
    };
    buf.extend_from_slice(b"{\"streams\":[");
    for (si, (labels, parts)) in streams.iter().enumerate() {
        if si > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"stream\":{");
        for (li, (name, value)) in labels.pairs().iter().enumerate() {
            if li > 0 {
                buf.push(b',');
            }
            string(buf, name);
            buf.push(b':');
            string(buf, value);
        }
        buf.extend_from_slice(b"},\"values\":[");
        let mut first = true;
        for &p in parts {
            let part = &batch.parts[p];
            for (i, line) in part.chunk.lines[part.lines.clone()].iter().enumerate() {
                if !first {
                    buf.push(b',');
                }
                first = false;
                let _ = write!(buf, "[\"{}\",", line.timestamp.0);
                string(buf, part.chunk.line_text(line));
                let meta = part.chunk.metadata_of(part.lines.start + i);
                if !meta.is_empty() {
                    buf.extend_from_slice(b",{");
                    for (j, (name, value)) in meta.iter().enumerate() {
                        if j > 0 {
                            buf.push(b',');
                        }
                        string(buf, name);
                        buf.push(b':');
                        string(buf, value);
                    }
                    buf.push(b'}');
                }
                buf.push(b']');
            }
        }
        buf.extend_from_slice(b"]}");
    }
    buf.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acknowledge::Acknowledger;
    use crate::positions::Table;
    use crate::ship::loki::batch::tests::chunk;
    use prost::Message;
    use std::io::Read;
    use std::time::Instant;

    #[derive(Clone, PartialEq, prost::Message)]
    struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        streams: Vec<StreamAdapter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct StreamAdapter {
        #[prost(string, tag = "1")]
        labels: String,
        #[prost(message, repeated, tag = "2")]
        entries: Vec<EntryAdapter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        timestamp: Option<Ts>,
        #[prost(string, tag = "2")]
        line: String,
        #[prost(message, repeated, tag = "3")]
        structured_metadata: Vec<Pair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Pair {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Ts {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }

    /// Streams as (labels, lines).
    type Streams<'a> = &'a [(&'a [(&'a str, &'a str)], &'a [&'a str])];

    fn batch_of(acks: &Acknowledger, streams: Streams<'_>) -> Batch {
        let mut batch = Batch::default();
        for (labels, lines) in streams {
            let labels = Arc::new(LabelSet::new(labels.iter().copied()));
            let c = chunk(acks, &labels, lines);
            assert_eq!(batch.add(&c, 0, usize::MAX, Instant::now()), None);
        }
        batch
    }

    #[test]
    fn protobuf_matches_prost_and_groups_streams() {
        let acks = Acknowledger::new(Table::default());
        let long = "é".repeat(300);
        let batch = batch_of(
            &acks,
            &[
                (&[("job", "a")], &["one", "", long.as_str()]),
                (&[("job", "b"), ("x", "q\"uote")], &["two"]),
            ],
        );
        let mut enc = Encoder::new(
            Encoding::Protobuf,
            Compression::Snappy,
            BTreeMap::from([
                ("host".into(), "h1".into()),
                ("job".into(), "ignored".into()),
            ]),
        );
        let body = enc.encode(&batch);
        assert_eq!(body.content_type, "application/x-protobuf");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.bytes)
            .unwrap();
        let req = PushRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.streams.len(), 2);
        assert_eq!(req.streams[0].labels, r#"{host="h1", job="a"}"#);
        assert_eq!(
            req.streams[1].labels,
            r#"{host="h1", job="b", x="q\"uote"}"#
        );
        let lines: Vec<&str> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(lines, vec!["one", "", long.as_str()]);
        let ts = req.streams[0].entries[1].timestamp.clone().unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 1));
        // Our encoding is byte for byte what prost writes for the same message.
        assert_eq!(req.encode_to_vec(), raw);
    }

    #[test]
    fn structured_metadata_in_both_encodings() {
        let acks = Acknowledger::new(Table::default());
        let labels = Arc::new(LabelSet::new([("job", "a")]));
        let c = chunk(&acks, &labels, &["one", "two"]);
        let mut c = Arc::try_unwrap(c).unwrap();
        c.metadata = vec![
            vec![
                ("trace_id".into(), "abc".into()),
                ("empty".into(), String::new()),
            ],
            vec![],
        ];
        let c = Arc::new(c);
        let mut batch = Batch::default();
        batch.add(&c, 0, usize::MAX, Instant::now());
        let body =
            Encoder::new(Encoding::Protobuf, Compression::Snappy, BTreeMap::new()).encode(&batch);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.bytes)
            .unwrap();
        let req = PushRequest::decode(raw.as_slice()).unwrap();
        let meta = &req.streams[0].entries[0].structured_metadata;
        assert_eq!(
            (meta[0].name.as_str(), meta[0].value.as_str()),
            ("trace_id", "abc")
        );
        assert_eq!(meta[1].name, "empty");
        assert!(req.streams[0].entries[1].structured_metadata.is_empty());
        assert_eq!(req.encode_to_vec(), raw);
        let body = Encoder::new(Encoding::Json, Compression::None, BTreeMap::new()).encode(&batch);
        let v: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
        assert_eq!(v["streams"][0]["values"][0][2]["trace_id"], "abc");
        assert!(v["streams"][0]["values"][1].get(2).is_none());
    }

    #[test]
    fn json_plain_and_gzip() {
        let acks = Acknowledger::new(Table::default());
        let batch = batch_of(&acks, &[(&[("job", "a")], &["he said \"hi\"\t", "two"])]);
        for compression in [Compression::None, Compression::Gzip] {
            let mut enc = Encoder::new(Encoding::Json, compression, BTreeMap::new());
            let body = enc.encode(&batch);
            let text = if compression == Compression::Gzip {
                assert_eq!(body.content_encoding, Some("gzip"));
                let mut s = String::new();
                flate2::read::GzDecoder::new(&body.bytes[..])
                    .read_to_string(&mut s)
                    .unwrap();
                s
            } else {
                String::from_utf8(body.bytes.to_vec()).unwrap()
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["streams"][0]["stream"]["job"], "a");
            assert_eq!(v["streams"][0]["values"][0][0], "1700000000000000000");
            assert_eq!(v["streams"][0]["values"][0][1], "he said \"hi\"\t");
            assert_eq!(v["streams"][0]["values"][1][1], "two");
        }
    }
}
