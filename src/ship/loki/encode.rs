//! Encoding a batch as a Loki push request body.
//!
//! The protobuf encoder writes Loki's `PushRequest` wire format directly from the chunks' text
//! (field by field, lengths computed first), so encoding costs one pass over the bytes and no
//! allocation per line. `tests` checks it against `prost`-derived message types. Both encoders
//! write into the [`Compressor`]'s piece and let it compress between entries.

use super::batch::Batch;
use super::compress::{CompressFailed, Compressor, put_varint};
use crate::config::{Compression, Encoding};
use crate::labels::LabelSet;
use std::collections::{BTreeMap, HashMap};
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
    external_labels: BTreeMap<String, String>,
    /// Stream labels merged with the external labels, by the stream's own rendered labels.
    merged: HashMap<String, Arc<LabelSet>>,
    compressor: Compressor,
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
            external_labels,
            merged: HashMap::new(),
            compressor: Compressor::new(encoding, compression),
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
    pub fn encode(&mut self, batch: &Batch) -> Result<Body, CompressFailed> {
        let streams = self.streams(batch);
        match self.encoding {
            Encoding::Protobuf => write_protobuf(batch, &streams, &mut self.compressor)?,
            Encoding::Json => write_json(batch, &streams, &mut self.compressor)?,
        }
        Ok(Body {
            bytes: self.compressor.finish()?,
            content_type: match self.encoding {
                Encoding::Protobuf => "application/x-protobuf",
                Encoding::Json => "application/json",
            },
            content_encoding: self.compressor.content_encoding(),
        })
    }
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
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

/// Bytes of one `StreamAdapter` body: its labels and entries.
fn stream_len(batch: &Batch, labels: &[u8], parts: &[usize]) -> usize {
    let mut len = 1 + varint_len(labels.len() as u64) + labels.len();
    for &p in parts {
        let part = &batch.parts[p];
        for (i, line) in part.chunk.lines[part.lines.clone()].iter().enumerate() {
            let (secs, nanos) = split_ts(line.timestamp.0);
            let meta = part.chunk.metadata_of(part.lines.start + i);
            let e = entry_len(secs, nanos, (line.end - line.start) as usize, meta);
            len += 1 + varint_len(e as u64) + e;
        }
    }
    len
}

/// `PushRequest { repeated StreamAdapter streams = 1 }`,
/// `StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2 }`,
/// `EntryAdapter { Timestamp timestamp = 1; string line = 2 }`.
fn write_protobuf(
    batch: &Batch,
    streams: &[(Arc<LabelSet>, Vec<usize>)],
    out: &mut Compressor,
) -> Result<(), CompressFailed> {
    // Snappy's header is the uncompressed length, so every length is known before writing.
    let lens: Vec<usize> = streams
        .iter()
        .map(|(labels, parts)| stream_len(batch, labels.rendered().as_bytes(), parts))
        .collect();
    let total = lens
        .iter()
        .map(|&len| 1 + varint_len(len as u64) + len)
        .sum();
    out.begin(total);
    for ((labels, parts), stream_len) in streams.iter().zip(lens) {
        let labels = labels.rendered().as_bytes();
        let buf = out.piece();
        buf.push(0x0a);
        put_varint(buf, stream_len as u64);
        buf.push(0x0a);
        put_varint(buf, labels.len() as u64);
        buf.extend_from_slice(labels);
        for &p in parts {
            let part = &batch.parts[p];
            let text = part.chunk.text.as_bytes();
            for (i, line) in part.chunk.lines[part.lines.clone()].iter().enumerate() {
                let buf = out.piece();
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
                out.flush_if_full()?;
            }
        }
    }
    Ok(())
}

/// `{"streams":[{"stream":{"job":"x"},"values":[["<ns>","line"]]}]}`.
fn write_json(
    batch: &Batch,
    streams: &[(Arc<LabelSet>, Vec<usize>)],
    out: &mut Compressor,
) -> Result<(), CompressFailed> {
    // Writing to a Vec cannot fail.
    let string = |buf: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *buf, s);
    };
    // Formatting a timestamp with `write!` was a tenth of JSON encoding's time.
    let mut digits = itoa::Buffer::new();
    out.begin(0);
    out.piece().extend_from_slice(b"{\"streams\":[");
    for (si, (labels, parts)) in streams.iter().enumerate() {
        let buf = out.piece();
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
                let buf = out.piece();
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.extend_from_slice(b"[\"");
                buf.extend_from_slice(digits.format(line.timestamp.0).as_bytes());
                buf.extend_from_slice(b"\",");
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
                out.flush_if_full()?;
            }
        }
        out.piece().extend_from_slice(b"]}");
    }
    out.piece().extend_from_slice(b"]}");
    Ok(())
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

    /// The request `batch` encodes to (protobuf, no external labels), checked to be byte for
    /// byte what `prost` writes for the same message.
    fn push_request(batch: &Batch) -> PushRequest {
        let body = Encoder::new(Encoding::Protobuf, Compression::Snappy, BTreeMap::new())
            .encode(batch)
            .unwrap();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.bytes)
            .unwrap();
        let req = PushRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.encode_to_vec(), raw);
        req
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
        let body = enc.encode(&batch).unwrap();
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
    fn batches_of_many_pieces_decode_whole_in_both_encodings() {
        let acks = Acknowledger::new(Table::default());
        // About 400 KB in two streams, with one line longer than a piece.
        let lines: Vec<String> = (0..4_000)
            .map(|i| {
                format!(
                    "10.0.0.{} - - \"GET /item/{i} HTTP/1.1\" 200 {}",
                    i % 7,
                    i * 3
                )
            })
            .collect();
        let huge = "x".repeat(100_000);
        let mut a: Vec<&str> = lines[..2_000].iter().map(String::as_str).collect();
        a.insert(1_000, huge.as_str());
        let b: Vec<&str> = lines[2_000..].iter().map(String::as_str).collect();
        let batch = batch_of(&acks, &[(&[("job", "a")], &a), (&[("job", "b")], &b)]);
        let req = push_request(&batch);
        let sent: Vec<&str> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(sent, a);
        assert_eq!(req.streams[1].entries.len(), 2_000);
        assert_eq!(req.streams[1].entries[1_999].line, lines[3_999]);

        let mut enc = Encoder::new(Encoding::Json, Compression::Gzip, BTreeMap::new());
        // Twice through one encoder: its compression state is reused.
        for _ in 0..2 {
            let body = enc.encode(&batch).unwrap();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body.bytes[..])
                .read_to_string(&mut text)
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let values = v["streams"][0]["values"].as_array().unwrap();
            assert_eq!(values.len(), 2_001);
            assert_eq!(values[1_000][1], huge.as_str());
            assert_eq!(v["streams"][1]["values"][1_999][1], lines[3_999].as_str());
        }
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
        let req = push_request(&batch);
        let meta = &req.streams[0].entries[0].structured_metadata;
        assert_eq!(
            (meta[0].name.as_str(), meta[0].value.as_str()),
            ("trace_id", "abc")
        );
        assert_eq!(meta[1].name, "empty");
        assert!(req.streams[0].entries[1].structured_metadata.is_empty());
        let body = Encoder::new(Encoding::Json, Compression::None, BTreeMap::new())
            .encode(&batch)
            .unwrap();
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
            let body = enc.encode(&batch).unwrap();
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
