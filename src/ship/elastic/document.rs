//! One `_bulk` item per entry: the action line and the document, as NDJSON.
//!
//! The JSON is written by hand straight into the request body: everything that is the same
//! for all lines of a chunk (labels, file, container, host) is rendered once per chunk, and
//! each line adds only its timestamp, message and offset. A serializer building a value per
//! document would cost more than the rest of the output together.
//!
//! Document shape (fields follow the Elastic Common Schema where one applies):
//!
//! ```json
//! {"@timestamp":"2026-12-03T04:31:07.123456789Z","message":"the line",
//!  "log":{"offset":1234,"file":{"path":"/var/log/app.log"}},
//!  "host":{"name":"web-1"},"container":{"id":"…","name":"…"},"stream":"stdout",
//!  "labels":{"job":"app","filename":"/var/log/app.log"},
//!  "fields":{"trace_id":"…"},
//!  "data_stream":{"type":"logs","dataset":"generic","namespace":"default"}}
//! ```

use super::time::{IndexPattern, TimestampFormat};
use crate::config::ElasticsearchConfig;
use crate::entry::Chunk;

/// Where documents go: a (dated) index, or a data stream.
#[derive(Debug)]
enum Target {
    /// `index` action into a name rendered per entry.
    Index(IndexPattern),
    /// `create` action into a fixed data stream.
    DataStream(String),
}

/// Renders entries as `_bulk` items for one output.
#[derive(Debug)]
pub struct Renderer {
    target: Target,
    /// `"host":{"name":…}`, rendered once.
    host: String,
    /// `,"data_stream":{…}` or empty.
    data_stream_fields: String,
    clock: TimestampFormat,
    /// The action line last written, and the index name it was for.
    action: (String, String),
}

/// What all lines of one chunk share, rendered once.
#[derive(Debug, Default)]
pub struct ChunkFields {
    /// `,"file":{"path":…}}` closing the `log` object, when the chunk came from a file.
    log_file: Option<String>,
    /// From `,"host"` to the end of `labels`.
    rest: String,
}

impl Renderer {
    pub fn new(config: &ElasticsearchConfig, host_name: &str) -> Renderer {
        let (target, data_stream_fields) = match &config.data_stream {
            Some(ds) => {
                let mut fields = String::from(",\"data_stream\":{\"type\":");
                push_str(&mut fields, &ds.kind);
                fields.push_str(",\"dataset\":");
                push_str(&mut fields, &ds.dataset);
                fields.push_str(",\"namespace\":");
                push_str(&mut fields, &ds.namespace);
                fields.push('}');
                (Target::DataStream(ds.name()), fields)
            }
            None => (
                Target::Index(IndexPattern::new(config.index_pattern())),
                String::new(),
            ),
        };
        let mut host = String::from("\"host\":{\"name\":");
        push_str(&mut host, host_name);
        host.push('}');
        Renderer {
            target,
            host,
            data_stream_fields,
            clock: TimestampFormat::default(),
            action: (String::new(), String::new()),
        }
    }

    /// Renders what the lines of `chunk` share.
    pub fn chunk_fields(&self, chunk: &Chunk) -> ChunkFields {
        let labels = &chunk.labels;
        let log_file = labels.get("filename").map(|path| {
            let mut s = String::from(",\"file\":{\"path\":");
            push_str(&mut s, path);
            s.push_str("}}");
            s
        });
        let mut rest = String::from(",");
        rest.push_str(&self.host);
        let id = labels.get("container_id");
        let name = labels
            .get("container_name")
            .or_else(|| labels.get("container"));
        if id.is_some() || name.is_some() {
            rest.push_str(",\"container\":{");
            if let Some(id) = id {
                rest.push_str("\"id\":");
                push_str(&mut rest, id);
            }
            if let Some(name) = name {
                if id.is_some() {
                    rest.push(',');
                }
                rest.push_str("\"name\":");
                push_str(&mut rest, name);
            }
            rest.push('}');
        }
        if let Some(stream) = labels.get("stream") {
            rest.push_str(",\"stream\":");
            push_str(&mut rest, stream);
        }
        rest.push_str(",\"labels\":{");
        for (i, (name, value)) in labels.pairs().iter().enumerate() {
            if i > 0 {
                rest.push(',');
            }
            push_str(&mut rest, name);
            rest.push(':');
            push_str(&mut rest, value);
        }
        rest.push('}');
        rest.push_str(&self.data_stream_fields);
        ChunkFields { log_file, rest }
    }

    /// Appends the action line and the document of line `index` of `chunk`.
    pub fn write(&mut self, chunk: &Chunk, fields: &ChunkFields, index: usize, out: &mut Vec<u8>) {
        let Some(line) = chunk.lines.get(index) else {
            return;
        };
        self.write_action(line.timestamp, out);
        out.extend_from_slice(b"{\"@timestamp\":\"");
        self.clock.write(line.timestamp, out);
        out.extend_from_slice(b"\",\"message\":");
        escape_into(chunk.line_text(line), out);
        if let Some(file) = &fields.log_file {
            out.extend_from_slice(b",\"log\":{\"offset\":");
            push_u64(line.offset, out);
            out.extend_from_slice(file.as_bytes());
        }
        out.extend_from_slice(fields.rest.as_bytes());
        let metadata = chunk.metadata_of(index);
        if !metadata.is_empty() {
            out.extend_from_slice(b",\"fields\":{");
            let mut first = true;
            for (i, (name, value)) in metadata.iter().enumerate() {
                // Elasticsearch refuses a document with a key twice: the last value wins.
                if metadata[i + 1..].iter().any(|(n, _)| n == name) {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                escape_into(name, out);
                out.push(b':');
                escape_into(value, out);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
    }

    fn write_action(&mut self, ts: crate::entry::Timestamp, out: &mut Vec<u8>) {
        let (op, name) = match &mut self.target {
            Target::Index(pattern) => ("index", pattern.name(ts)),
            Target::DataStream(name) => ("create", name.as_str()),
        };
        if self.action.1 != name || self.action.0.is_empty() {
            let mut action = format!("{{\"{op}\":{{\"_index\":");
            push_str(&mut action, name);
            action.push_str("}}\n");
            self.action = (action, name.to_string());
        }
        out.extend_from_slice(self.action.0.as_bytes());
    }
}

fn push_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_str(out: &mut String, s: &str) {
    let mut bytes = Vec::with_capacity(s.len() + 2);
    escape_into(s, &mut bytes);
    // Escaping keeps UTF-8 valid: only ASCII bytes are replaced.
    out.push_str(&String::from_utf8_lossy(&bytes));
}

/// Appends `s` as a JSON string, escaping what RFC 8259 requires.
pub fn escape_into(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acknowledge::Acknowledger;
    use crate::labels::LabelSet;
    use crate::positions::Table;
    use crate::ship::loki::batch::tests::chunk;
    use std::sync::Arc;

    fn config(yaml: &str) -> ElasticsearchConfig {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn render_all(renderer: &mut Renderer, chunk: &Chunk) -> Vec<serde_json::Value> {
        let fields = renderer.chunk_fields(chunk);
        let mut out = Vec::new();
        for i in 0..chunk.lines.len() {
            renderer.write(chunk, &fields, i, &mut out);
        }
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    #[test]
    fn documents_carry_the_line_labels_and_ecs_fields() {
        let acks = Acknowledger::new(Table::default());
        let labels = Arc::new(LabelSet::new([
            ("job", "app"),
            ("filename", "/var/log/a \"b\".log"),
            ("container_id", "abc123"),
            ("container_name", "web"),
            ("stream", "stderr"),
        ]));
        let c = chunk(&acks, &labels, &["plain", "tab\tquote\" back\\ ctl\u{1} é"]);
        let mut r = Renderer::new(&config("url: http://127.0.0.1:9200"), "host-1");
        let docs = render_all(&mut r, &c);
        assert_eq!(docs.len(), 4, "an action and a document per line");
        let action = &docs[0]["index"]["_index"];
        assert!(
            action
                .as_str()
                .is_some_and(|i| i.starts_with("logferry-2023.11.")),
            "{action}"
        );
        let doc = &docs[3];
        assert_eq!(doc["message"], "tab\tquote\" back\\ ctl\u{1} é");
        assert_eq!(doc["log"]["file"]["path"], "/var/log/a \"b\".log");
        assert_eq!(doc["log"]["offset"], c.lines[1].offset);
        assert_eq!(doc["host"]["name"], "host-1");
        assert_eq!(doc["container"]["id"], "abc123");
        assert_eq!(doc["container"]["name"], "web");
        assert_eq!(doc["stream"], "stderr");
        assert_eq!(doc["labels"]["job"], "app");
        assert!(doc.get("data_stream").is_none());
        let ts = doc["@timestamp"].as_str().unwrap_or_default();
        let parsed = chrono::DateTime::parse_from_rfc3339(ts).map(|d| d.timestamp_nanos_opt());
        assert_eq!(parsed, Ok(Some(c.lines[1].timestamp.0)));
    }

    #[test]
    fn data_streams_are_written_with_create_and_named_in_the_document() {
        let acks = Acknowledger::new(Table::default());
        let labels = Arc::new(LabelSet::new([("job", "stdin")]));
        let mut c = chunk(&acks, &labels, &["x"]);
        if let Some(c) = Arc::get_mut(&mut c) {
            c.metadata = vec![vec![
                ("trace".into(), "1".into()),
                ("trace".into(), "2".into()),
                ("user".into(), "ann".into()),
            ]];
        }
        let mut r = Renderer::new(
            &config("url: http://127.0.0.1:9200\ndata_stream: {dataset: nginx}"),
            "h",
        );
        let docs = render_all(&mut r, &c);
        assert_eq!(docs[0]["create"]["_index"], "logs-nginx-default");
        let doc = &docs[1];
        assert_eq!(doc["data_stream"]["dataset"], "nginx");
        assert_eq!(doc["data_stream"]["type"], "logs");
        assert_eq!(doc["fields"]["trace"], "2");
        assert_eq!(doc["fields"]["user"], "ann");
        assert!(doc.get("log").is_none(), "no file, no log.file.path");
        assert!(doc.get("container").is_none());
    }
}
