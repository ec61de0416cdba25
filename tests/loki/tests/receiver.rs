//! End-to-end tests of the receiver over real sockets. Requests are encoded
//! here independently of the receiver: protobuf by hand (wire format), JSON
//! with serde_json, compression with snap and flate2, sent with reqwest.

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use loki_receiver::{Behavior, PushFormat, Receiver, TlsOptions};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// A minimal protobuf writer for Loki's PushRequest.
mod pb {
    pub struct Entry {
        pub ts: Option<(i64, i32)>,
        pub line: String,
        pub meta: Vec<(String, String)>,
    }

    pub fn entry(secs: i64, nanos: i32, line: &str) -> Entry {
        Entry {
            ts: Some((secs, nanos)),
            line: line.to_string(),
            meta: Vec::new(),
        }
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        varint(out, (field << 3) | wire_type);
    }

    fn len_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
        key(out, field, 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }

    /// Encodes `PushRequest { streams }` (uncompressed).
    pub fn push(streams: &[(&str, Vec<Entry>)]) -> Vec<u8> {
        let mut req = Vec::new();
        for (labels, entries) in streams {
            let mut stream = Vec::new();
            len_field(&mut stream, 1, labels.as_bytes());
            for e in entries {
                let mut entry = Vec::new();
                if let Some((secs, nanos)) = e.ts {
                    let mut ts = Vec::new();
                    if secs != 0 {
                        varint_field(&mut ts, 1, secs as u64);
                    }
                    if nanos != 0 {
                        varint_field(&mut ts, 2, nanos as i64 as u64);
                    }
                    len_field(&mut entry, 1, &ts);
                }
                len_field(&mut entry, 2, e.line.as_bytes());
                for (n, v) in &e.meta {
                    let mut pair = Vec::new();
                    len_field(&mut pair, 1, n.as_bytes());
                    len_field(&mut pair, 2, v.as_bytes());
                    len_field(&mut entry, 3, &pair);
                }
                len_field(&mut stream, 2, &entry);
            }
            varint_field(&mut stream, 3, 12345);
            len_field(&mut req, 1, &stream);
        }
        req
    }
}

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A synchronous wrapper over an async reqwest client.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

type Reply = Result<(u16, String), reqwest::Error>;

impl Http {
    fn new() -> Http {
        Http::with(|b| b)
    }

    fn with(f: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder) -> Http {
        loki_receiver::install_crypto_provider();
        // Multi-threaded so the client's connection tasks keep running (and
        // close abandoned connections) between calls.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false);
        let client = f(builder).build().unwrap();
        Http { rt, client }
    }

    fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        self.rt.block_on(async {
            let mut req = self.client.post(url).body(body);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await?))
        })
    }

    fn get(&self, url: &str) -> Reply {
        self.rt.block_on(async {
            let resp = self.client.get(url).send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await?))
        })
    }

    fn push_proto(&self, url: &str, streams: &[(&str, Vec<pb::Entry>)]) -> Reply {
        self.post(
            url,
            &[("content-type", "application/x-protobuf")],
            snappy(&pb::push(streams)),
        )
    }

    fn push_json(&self, url: &str, body: &serde_json::Value) -> Reply {
        self.post(
            url,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).unwrap(),
        )
    }
}

fn one_line(job: &str, line: &str) -> Vec<(String, Vec<pb::Entry>)> {
    vec![(format!("{{job=\"{job}\"}}"), vec![pb::entry(1, 0, line)])]
}

fn push_one(http: &Http, url: &str, line: &str) -> Reply {
    let streams = one_line("app", line);
    let streams: Vec<(&str, Vec<pb::Entry>)> = streams
        .into_iter()
        .map(|(l, e)| (Box::leak(l.into_boxed_str()) as &str, e))
        .collect();
    http.push_proto(url, &streams)
}

#[test]
fn protobuf_snappy_is_accepted_and_recorded() {
    let loki = Receiver::start();
    let http = Http::new();
    let mut meta_entry = pb::entry(1_700_000_000, 123_456_789, "hello wörld");
    meta_entry.meta = vec![
        ("trace_id".into(), "abc".into()),
        ("user".into(), "u1".into()),
    ];
    let streams = vec![
        (
            r#"{job="app", env="prod", empty=""}"#,
            vec![meta_entry, pb::entry(1_700_000_001, 0, "second")],
        ),
        (r#"{job="other"}"#, vec![pb::entry(-1, 5, "before 1970")]),
        (r#"{job="no entries"}"#, vec![]),
    ];
    let (status, body) = http
        .post(
            &loki.url(),
            &[
                ("content-type", "application/x-protobuf"),
                ("x-scope-orgid", "tenant-a"),
                ("user-agent", "logferry-test"),
            ],
            snappy(&pb::push(&streams)),
        )
        .unwrap();
    assert_eq!((status, body.as_str()), (204, ""));

    let entries = loki.entries();
    assert_eq!(entries.len(), 3);
    let e = &entries[0];
    assert_eq!(e.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(
        e.labels.len(),
        2,
        "empty-valued label dropped: {:?}",
        e.labels
    );
    assert_eq!(e.label("job"), Some("app"));
    assert_eq!(e.label("env"), Some("prod"));
    assert_eq!(e.labels_raw, r#"{job="app", env="prod", empty=""}"#);
    assert_eq!(e.timestamp_ns, 1_700_000_000_123_456_789);
    assert_eq!(e.line, "hello wörld");
    assert_eq!(e.metadata("trace_id"), Some("abc"));
    assert_eq!(e.structured_metadata.len(), 2);
    assert_eq!(e.format, PushFormat::Protobuf);
    assert_eq!(entries[1].line, "second");
    assert_eq!(entries[2].timestamp_ns, -999_999_995);
    assert_eq!(loki.lines(), vec!["hello wörld", "second", "before 1970"]);
    assert_eq!(loki.entry_count(), 3);
    assert_eq!(
        loki.line_bytes(),
        ("hello wörld".len() + "second".len() + "before 1970".len()) as u64
    );

    let reqs = loki.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.status, Some(204));
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/loki/api/v1/push");
    assert_eq!(r.content_type.as_deref(), Some("application/x-protobuf"));
    assert_eq!(r.content_encoding, None);
    assert_eq!(r.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(r.user_agent.as_deref(), Some("logferry-test"));
    assert_eq!(r.header("X-Scope-OrgID"), Some("tenant-a"));
    assert_eq!(r.format, Some(PushFormat::Protobuf));
    assert_eq!(r.accepted_entries, 3);
    assert_eq!(r.http_version, "HTTP/1.1");
    assert!(!r.tls);
    assert!(r.body_len > 0 && r.decoded_len.unwrap() > 0);
    assert!(r.answered_at.is_some());
    assert_eq!(loki.stats().responses.get(&204), Some(&1));
}

#[test]
fn json_plain_gzip_and_raw_deflate_are_accepted() {
    let loki = Receiver::start();
    let http = Http::new();
    let body = json!({"streams": [{
        "stream": {"job": "json", "host": "h1"},
        "values": [
            ["1570818238000000000", "plain line"],
            ["1570818238000000001", "with metadata", {"trace_id": "t1", "a": "b"}],
        ]
    }]});
    let raw = serde_json::to_vec(&body).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("", raw.clone()),
        ("gzip", gzip(&raw)),
        ("deflate", raw_deflate(&raw)),
    ];
    for (enc, data) in cases {
        let mut headers = vec![("content-type", "application/json; charset=utf-8")];
        if !enc.is_empty() {
            headers.push(("content-encoding", enc));
        }
        let (status, text) = http.post(&loki.url(), &headers, data).unwrap();
        assert_eq!(status, 204, "encoding {enc:?}: {text}");
    }
    let entries = loki.entries();
    assert_eq!(entries.len(), 6);
    for e in &entries {
        assert_eq!(e.format, PushFormat::Json);
        assert_eq!(e.labels_raw, r#"{host="h1", job="json"}"#);
        assert_eq!(e.label("job"), Some("json"));
    }
    assert_eq!(entries[0].timestamp_ns, 1_570_818_238_000_000_000);
    assert_eq!(entries[1].line, "with metadata");
    assert_eq!(
        entries[1].structured_metadata,
        vec![("a".into(), "b".into()), ("trace_id".into(), "t1".into())]
    );
    let encodings: Vec<Option<String>> = loki
        .requests()
        .into_iter()
        .map(|r| r.content_encoding)
        .collect();
    assert_eq!(
        encodings,
        vec![None, Some("gzip".into()), Some("deflate".into())]
    );
}

#[test]
fn zlib_wrapped_deflate_is_rejected_like_loki() {
    // Go's compress/flate (what Loki uses for "deflate") reads raw DEFLATE.
    let loki = Receiver::start();
    let http = Http::new();
    let raw =
        serde_json::to_vec(&json!({"streams": [{"stream": {"job": "x"}, "values": [["1", "l"]]}]}))
            .unwrap();
    let (status, body) = http
        .post(
            &loki.url(),
            &[
                ("content-type", "application/json"),
                ("content-encoding", "deflate"),
            ],
            zlib(&raw),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("zlib"), "{body}");
    assert_eq!(loki.entry_count(), 0);
}

#[test]
fn gzip_on_protobuf_requires_snappy_inside() {
    let loki = Receiver::start();
    let http = Http::new();
    let proto = pb::push(&[(r#"{job="x"}"#, vec![pb::entry(1, 0, "l")])]);
    let headers = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "gzip"),
    ];
    // gzip instead of snappy: rejected with a reason.
    let (status, body) = http.post(&loki.url(), &headers, gzip(&proto)).unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("snappy"), "{body}");
    // Uncompressed protobuf: rejected too.
    let (status, _) = http
        .post(
            &loki.url(),
            &[("content-type", "application/x-protobuf")],
            proto.clone(),
        )
        .unwrap();
    assert_eq!(status, 400);
    // Snappy framed format instead of block format: rejected.
    let mut framed = snap::write::FrameEncoder::new(Vec::new());
    framed.write_all(&proto).unwrap();
    let framed = framed.into_inner().unwrap();
    let (status, _) = http
        .post(
            &loki.url(),
            &[("content-type", "application/x-protobuf")],
            framed,
        )
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(loki.entry_count(), 0);
    // gzip over snappy is what Loki accepts (it gunzips, then unsnappies).
    let (status, _) = http
        .post(&loki.url(), &headers, gzip(&snappy(&proto)))
        .unwrap();
    assert_eq!(status, 204);
    // Content-Encoding: snappy is tolerated (a no-op, as in Loki).
    let (status, _) = http
        .post(
            &loki.url(),
            &[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "snappy"),
            ],
            snappy(&proto),
        )
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(loki.entry_count(), 2);
}

#[test]
fn content_type_and_encoding_checks() {
    let loki = Receiver::start();
    let http = Http::new();
    let proto = snappy(&pb::push(&[(r#"{job="x"}"#, vec![pb::entry(1, 0, "l")])]));
    // Absent Content-Type: Go's mime.ParseMediaType fails, Loki answers 400.
    let (status, body) = http.post(&loki.url(), &[], proto.clone()).unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("no media type"), "{body}");
    // Malformed parameter.
    let (status, _) = http
        .post(
            &loki.url(),
            &[("content-type", "application/json; charsetutf-8")],
            b"{}".to_vec(),
        )
        .unwrap();
    assert_eq!(status, 400);
    // Unknown Content-Encoding.
    let (status, body) = http
        .post(
            &loki.url(),
            &[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "br"),
            ],
            proto.clone(),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("not supported"), "{body}");
    // Any non-JSON media type means protobuf, as in Loki.
    let (status, _) = http
        .post(&loki.url(), &[("content-type", "text/plain")], proto)
        .unwrap();
    assert_eq!(status, 204);
    // Broken JSON.
    let (status, body) = http
        .post(
            &loki.url(),
            &[("content-type", "application/json")],
            b"{\"streams\": [".to_vec(),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.starts_with("json:"), "{body}");
    // An empty push is fine.
    let (status, _) = http
        .push_json(&loki.url(), &json!({"streams": []}))
        .unwrap();
    assert_eq!(status, 204);
    let (status, _) = http.push_proto(&loki.url(), &[]).unwrap();
    assert_eq!(status, 204);
    assert_eq!(loki.entry_count(), 1);
}

#[test]
fn invalid_label_sets_are_rejected() {
    let loki = Receiver::start();
    let http = Http::new();
    // Unparsable label text fails the whole request.
    for labels in [
        r#"{job="app""#,
        r#"job="app""#,
        r#"{1job="app"}"#,
        r#"{job-name="app"}"#,
        r#"{job.name="app"}"#,
        r#"{job=app}"#,
        r#"{job=~"app"}"#,
        r#"{job="a\xffb"}"#,
    ] {
        let streams = [
            (r#"{job="fine"}"#, vec![pb::entry(1, 0, "good")]),
            (labels, vec![pb::entry(1, 0, "bad")]),
        ];
        let (status, body) = http.push_proto(&loki.url(), &streams).unwrap();
        assert_eq!(status, 400, "{labels}");
        assert!(
            body.starts_with("couldn't parse labels"),
            "{labels}: {body}"
        );
    }
    assert_eq!(
        loki.entry_count(),
        0,
        "nothing accepted from unparsable requests"
    );

    // Missing labels and duplicate names are per-stream validation errors.
    for (labels, reason) in [
        ("{}", "at least one label pair"),
        ("", "at least one label pair"),
        (r#"{job=""}"#, "at least one label pair"),
        (r#"{job="a", job="b"}"#, "duplicate label name: 'job'"),
    ] {
        let (status, body) = http
            .push_proto(&loki.url(), &[(labels, vec![pb::entry(1, 0, "bad")])])
            .unwrap();
        assert_eq!(status, 400, "{labels}");
        assert!(body.contains(reason), "{labels}: {body}");
    }
    assert_eq!(loki.entry_count(), 0);

    // JSON: an invalid label name, an empty label object.
    let (status, body) = http
        .push_json(
            &loki.url(),
            &json!({"streams": [{"stream": {"bad.name": "x"}, "values": [["1", "l"]]}]}),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("couldn't parse labels"), "{body}");
    let (status, body) = http
        .push_json(
            &loki.url(),
            &json!({"streams": [{"stream": {}, "values": [["1", "l"]]}]}),
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("at least one label pair"), "{body}");
    assert_eq!(loki.entry_count(), 0);
    assert!(loki.requests().iter().all(|r| r.status == Some(400)));
}

#[test]
fn label_texts_accepted_by_loki_are_accepted() {
    let loki = Receiver::start();
    let http = Http::new();
    let streams = [
        (
            "{ job = \"a\\\"b\" ,\n env='x' , raw=`c\\d`, }",
            vec![pb::entry(1, 0, "l1")],
        ),
        (r#"metric{job="m"}"#, vec![pb::entry(1, 0, "l2")]),
    ];
    let (status, body) = http.push_proto(&loki.url(), &streams).unwrap();
    assert_eq!(status, 204, "{body}");
    let e = loki.entries();
    assert_eq!(e[0].label("job"), Some("a\"b"));
    assert_eq!(e[0].label("env"), Some("x"));
    assert_eq!(e[0].label("raw"), Some("c\\d"));
    assert_eq!(e[1].label("__name__"), Some("metric"));
}

#[test]
fn partial_acceptance_like_the_distributor() {
    let loki = Receiver::builder().max_line_size(10).start();
    let http = Http::new();
    let streams = [
        (
            r#"{job="ok"}"#,
            vec![
                pb::entry(1, 0, "short"),
                pb::entry(2, 0, "far too long line"),
            ],
        ),
        (r#"{job="x", job="y"}"#, vec![pb::entry(3, 0, "dup")]),
        (r#"{job="ok2"}"#, vec![pb::entry(4, 0, "fine")]),
    ];
    let (status, body) = http.push_proto(&loki.url(), &streams).unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("Max entry size '10' bytes exceeded"),
        "{body}"
    );
    assert!(body.contains("duplicate label name"), "{body}");
    assert_eq!(body.lines().count(), 2, "{body}");
    assert_eq!(loki.lines(), vec!["short", "fine"]);
    let r = &loki.requests()[0];
    assert_eq!((r.accepted_entries, r.rejected_entries), (2, 2));
    assert_eq!(loki.stats().rejected_entries, 2);
}

#[test]
fn missing_or_bad_timestamps_are_rejected() {
    let loki = Receiver::start();
    let http = Http::new();
    // Protobuf entry without a timestamp.
    let no_ts = pb::Entry {
        ts: None,
        line: "no ts".into(),
        meta: vec![],
    };
    let (status, body) = http
        .push_proto(&loki.url(), &[(r#"{job="x"}"#, vec![no_ts])])
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("no timestamp"), "{body}");
    // Nanos out of range: undecodable, like Go's timestamp validation.
    let (status, _) = http
        .push_proto(
            &loki.url(),
            &[(r#"{job="x"}"#, vec![pb::entry(1, -1, "l")])],
        )
        .unwrap();
    assert_eq!(status, 400);
    // JSON: missing, not a string, not an integer.
    for values in [
        json!([[]]),
        json!([[1570818238000000000u64, "number ts"]]),
        json!([["2019-10-11T18:23:58Z", "rfc3339 ts"]]),
        json!([["", "empty ts"]]),
        json!([["1", 5]]),
        json!([["1", "l", {"a": 1}]]),
        json!([["1", "l", {}, "extra"]]),
    ] {
        let (status, _) = http
            .push_json(
                &loki.url(),
                &json!({"streams": [{"stream": {"job": "x"}, "values": values}]}),
            )
            .unwrap();
        assert_eq!(status, 400, "{values}");
    }
    assert_eq!(loki.entry_count(), 0);
    // A timestamp with a sign is an integer for Go's strconv.ParseInt too.
    let (status, _) = http
        .push_json(
            &loki.url(),
            &json!({"streams": [{"stream": {"job": "x"}, "values": [["+5", "l"]]}]}),
        )
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(loki.entries()[0].timestamp_ns, 5);
}

#[test]
fn optional_time_limits() {
    let loki = Receiver::builder()
        .reject_old_samples(Duration::from_secs(3600))
        .creation_grace_period(Duration::from_secs(600))
        .start();
    let http = Http::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let streams = [(
        r#"{job="t"}"#,
        vec![
            pb::entry(now, 0, "now"),
            pb::entry(now - 7200, 0, "old"),
            pb::entry(now + 3600, 0, "future"),
        ],
    )];
    let (status, body) = http.push_proto(&loki.url(), &streams).unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("timestamp too old"), "{body}");
    assert!(body.contains("timestamp too new"), "{body}");
    assert_eq!(loki.lines(), vec!["now"]);
}

#[test]
fn behaviors_status_and_fail_next() {
    let loki = Receiver::start();
    let http = Http::new();
    loki.set_behavior(Behavior::Status(
        429,
        "Ingestion rate limit exceeded".into(),
    ));
    let (status, body) = push_one(&http, &loki.url(), "a").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (429, "Ingestion rate limit exceeded")
    );
    loki.set_behavior(Behavior::Status(500, "ingester down".into()));
    assert_eq!(push_one(&http, &loki.url(), "b").unwrap().0, 500);
    assert_eq!(loki.entry_count(), 0, "failed requests record no entries");

    loki.set_behavior(Behavior::FailNext(2, 503));
    assert_eq!(push_one(&http, &loki.url(), "c").unwrap().0, 503);
    assert_eq!(loki.behavior(), Behavior::FailNext(1, 503));
    assert_eq!(push_one(&http, &loki.url(), "d").unwrap().0, 503);
    assert_eq!(loki.behavior(), Behavior::Accept);
    assert_eq!(push_one(&http, &loki.url(), "e").unwrap().0, 204);
    assert_eq!(loki.lines(), vec!["e"]);

    let statuses: Vec<Option<u16>> = loki.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![Some(429), Some(500), Some(503), Some(503), Some(204)]
    );

    loki.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    assert_eq!(push_one(&http, &loki.url(), "f").unwrap().0, 204);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(loki.entry_count(), 2);
}

#[test]
fn behavior_stall_until_client_gives_up() {
    let loki = Receiver::builder().behavior(Behavior::Stall).start();
    let http = Http::with(|b| b.timeout(Duration::from_millis(400)));
    let start = Instant::now();
    let err = push_one(&http, &loki.url(), "stalled").unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(loki.wait_for_requests(1, WAIT));
    assert_eq!(loki.requests()[0].status, None);

    // The stalled request was abandoned; once the server has seen the
    // connection close, switching to Accept must not resurrect it.
    std::thread::sleep(Duration::from_millis(200));
    loki.set_behavior(Behavior::Accept);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(loki.entry_count(), 0);
    assert_eq!(loki.requests()[0].status, None);

    assert_eq!(push_one(&http, &loki.url(), "after").unwrap().0, 204);
    assert_eq!(loki.lines(), vec!["after"]);
}

#[test]
fn behavior_stall_released_by_a_behavior_change() {
    let loki = Receiver::builder().behavior(Behavior::Stall).start();
    let url = loki.url();
    let client = std::thread::spawn(move || {
        let http = Http::new();
        push_one(&http, &url, "released").unwrap().0
    });
    assert!(loki.wait_for_requests(1, WAIT));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(loki.entry_count(), 0);
    loki.set_behavior(Behavior::Status(503, "try later".into()));
    assert_eq!(client.join().unwrap(), 503);
    assert_eq!(loki.requests()[0].status, Some(503));
}

#[test]
fn behavior_drop_connection() {
    let loki = Receiver::builder()
        .behavior(Behavior::DropConnection)
        .start();
    // reqwest sees a transport error, not a status.
    let http = Http::new();
    let err = push_one(&http, &loki.url(), "x").unwrap_err();
    assert!(!err.is_status(), "{err}");

    // On the wire: the connection closes without a single response byte.
    let body = snappy(&pb::push(&[(r#"{job="x"}"#, vec![pb::entry(1, 0, "l")])]));
    let mut s = std::net::TcpStream::connect(loki.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "got {:?}", String::from_utf8_lossy(&got)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert_eq!(loki.entry_count(), 0);
    let reqs = loki.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.dropped && r.status.is_none()));
    assert_eq!(loki.stats().dropped_connections, 2);

    loki.set_behavior(Behavior::Accept);
    assert_eq!(push_one(&http, &loki.url(), "y").unwrap().0, 204);
}

#[test]
fn basic_auth() {
    let loki = Receiver::builder()
        .require_basic_auth("user", "s3cret")
        .start();
    let http = Http::new();
    let url = loki.url();
    let body = || snappy(&pb::push(&[(r#"{job="x"}"#, vec![pb::entry(1, 0, "l")])]));
    let ct = ("content-type", "application/x-protobuf");
    let (status, _) = http.post(&url, &[ct], body()).unwrap();
    assert_eq!(status, 401);
    // "user:wrong"
    let (status, _) = http
        .post(
            &url,
            &[ct, ("authorization", "Basic dXNlcjp3cm9uZw==")],
            body(),
        )
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = http
        .post(&url, &[ct, ("authorization", "Bearer s3cret")], body())
        .unwrap();
    assert_eq!(status, 401);
    // "user:s3cret"
    let (status, _) = http
        .post(
            &url,
            &[ct, ("authorization", "Basic dXNlcjpzM2NyZXQ=")],
            body(),
        )
        .unwrap();
    assert_eq!(status, 204);
    let reqs = loki.requests();
    assert_eq!(
        reqs[3].authorization.as_deref(),
        Some("Basic dXNlcjpzM2NyZXQ=")
    );
    assert_eq!(loki.entry_count(), 1);
}

#[test]
fn bearer_auth() {
    let loki = Receiver::builder().require_bearer("tok-123").start();
    let http = Http::new();
    let url = loki.url();
    let body = || snappy(&pb::push(&[(r#"{job="x"}"#, vec![pb::entry(1, 0, "l")])]));
    let ct = ("content-type", "application/x-protobuf");
    assert_eq!(http.post(&url, &[ct], body()).unwrap().0, 401);
    assert_eq!(
        http.post(&url, &[ct, ("authorization", "Bearer nope")], body())
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http.post(&url, &[ct, ("authorization", "Bearer tok-123")], body())
            .unwrap()
            .0,
        204
    );
}

#[test]
fn tenant_header_recorded_and_optionally_required() {
    let loki = Receiver::builder().require_tenant(true).start();
    let http = Http::new();
    let body = || snappy(&pb::push(&[(r#"{job="x"}"#, vec![pb::entry(1, 0, "l")])]));
    let ct = ("content-type", "application/x-protobuf");
    let (status, text) = http.post(&loki.url(), &[ct], body()).unwrap();
    assert_eq!((status, text.as_str()), (401, "no org id\n"));
    let (status, _) = http
        .post(&loki.url(), &[ct, ("X-Scope-OrgID", "team-1")], body())
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(loki.entries()[0].tenant.as_deref(), Some("team-1"));

    let open = Receiver::start();
    assert_eq!(http.post(&open.url(), &[ct], body()).unwrap().0, 204);
    assert_eq!(open.entries()[0].tenant, None);
}

#[test]
fn tls_server() {
    let tls = TlsOptions::generate();
    let loki = Receiver::builder().tls(tls.clone()).start();
    assert!(loki.url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(tls.ca_pem().as_bytes()).unwrap();

    let http = Http::with(|b| b.add_root_certificate(ca.clone()));
    assert_eq!(push_one(&http, &loki.url(), "h2").unwrap().0, 204);
    let localhost = loki.url().replace("127.0.0.1", "localhost");
    let http1 = Http::with(|b| b.add_root_certificate(ca.clone()).http1_only());
    assert_eq!(push_one(&http1, &localhost, "h1").unwrap().0, 204);
    let reqs = loki.requests();
    assert_eq!(reqs[0].http_version, "HTTP/2.0");
    assert_eq!(reqs[1].http_version, "HTTP/1.1");
    assert!(reqs.iter().all(|r| r.tls && !r.client_cert));

    // A client that does not trust the CA fails the handshake.
    let untrusting = Http::new();
    assert!(push_one(&untrusting, &loki.url(), "x").is_err());
    // Plain HTTP on the TLS port fails too.
    let plain = Http::new();
    assert!(push_one(&plain, &loki.url().replace("https", "http"), "x").is_err());
    assert_eq!(loki.entry_count(), 2);
    std::thread::sleep(Duration::from_millis(100));
    assert!(loki.stats().tls_handshake_failures >= 2);

    let dir = std::env::temp_dir().join(format!("loki-receiver-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = tls.write_files(&dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(&files.ca_file).unwrap(),
        tls.ca_pem()
    );
    assert_eq!(files.cert_file, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn behaviors_over_tls_and_http2() {
    let tls = TlsOptions::generate();
    let loki = Receiver::builder()
        .tls(tls.clone())
        .behavior(Behavior::DropConnection)
        .start();
    let ca = reqwest::Certificate::from_pem(tls.ca_pem().as_bytes()).unwrap();
    let http = Http::with(|b| {
        b.add_root_certificate(ca.clone())
            .timeout(Duration::from_millis(400))
    });
    let err = push_one(&http, &loki.url(), "dropped").unwrap_err();
    assert!(!err.is_status() && !err.is_timeout(), "{err}");
    assert!(loki.requests()[0].dropped);
    assert_eq!(loki.requests()[0].http_version, "HTTP/2.0");

    loki.set_behavior(Behavior::Stall);
    let err = push_one(&http, &loki.url(), "stalled").unwrap_err();
    assert!(err.is_timeout(), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    loki.set_behavior(Behavior::Accept);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        loki.entry_count(),
        0,
        "an abandoned HTTP/2 stream is not resurrected"
    );
    assert_eq!(push_one(&http, &loki.url(), "ok").unwrap().0, 204);
    assert_eq!(loki.lines(), vec!["ok"]);
}

#[test]
fn mutual_tls() {
    let tls = TlsOptions::generate_mtls();
    assert!(tls.requires_client_cert());
    let loki = Receiver::builder().tls(tls.clone()).start();
    let ca = reqwest::Certificate::from_pem(tls.ca_pem().as_bytes()).unwrap();
    let identity = |cert: &str, key: &str| {
        reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap()
    };

    let good = identity(
        tls.client_cert_pem().unwrap(),
        tls.client_key_pem().unwrap(),
    );
    let http = Http::with(|b| b.add_root_certificate(ca.clone()).identity(good));
    assert_eq!(push_one(&http, &loki.url(), "mtls").unwrap().0, 204);
    assert!(loki.requests()[0].client_cert);

    // Another certificate from the same CA is fine.
    let other = tls.issue_client_identity("second-client");
    let http = Http::with(|b| {
        b.add_root_certificate(ca.clone())
            .identity(identity(&other.cert_pem, &other.key_pem))
    });
    assert_eq!(push_one(&http, &loki.url(), "mtls2").unwrap().0, 204);

    // No client certificate: refused.
    let http = Http::with(|b| b.add_root_certificate(ca.clone()));
    assert!(push_one(&http, &loki.url(), "anon").is_err());
    // A certificate from an unrelated CA: refused.
    let foreign = TlsOptions::untrusted_client_identity();
    let http = Http::with(|b| {
        b.add_root_certificate(ca.clone())
            .identity(identity(&foreign.cert_pem, &foreign.key_pem))
    });
    assert!(push_one(&http, &loki.url(), "foreign").is_err());
    assert_eq!(loki.lines(), vec!["mtls", "mtls2"]);

    let dir = std::env::temp_dir().join(format!("loki-receiver-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = tls.write_files(&dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(files.cert_file.unwrap()).unwrap(),
        tls.client_cert_pem().unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(files.key_file.unwrap()).unwrap(),
        tls.client_key_pem().unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn count_only_mode() {
    let loki = Receiver::builder().count_only(true).start();
    let http = Http::new();
    for i in 0..5 {
        let streams = [(
            r#"{job="bench"}"#,
            (0..100)
                .map(|j| pb::entry(1, j, &format!("line {i} {j:03}")))
                .collect::<Vec<_>>(),
        )];
        assert_eq!(http.push_proto(&loki.url(), &streams).unwrap().0, 204);
    }
    // Still validates.
    let (status, _) = http
        .push_proto(&loki.url(), &[("{}", vec![pb::entry(1, 0, "bad")])])
        .unwrap();
    assert_eq!(status, 400);
    assert!(loki.wait_for_entries(500, WAIT));
    assert_eq!(loki.entry_count(), 500);
    assert_eq!(loki.line_bytes(), 500 * "line 0 000".len() as u64);
    assert!(loki.entries().is_empty());
    assert!(loki.requests().is_empty());
    let stats = loki.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.responses.get(&204), Some(&5));
    assert_eq!(stats.responses.get(&400), Some(&1));
}

#[test]
fn waiting_clearing_and_routing() {
    let loki = Receiver::start();
    let http = Http::new();
    assert!(!loki.wait_for_entries(1, Duration::from_millis(100)));
    let url = loki.url();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let http = Http::new();
        push_one(&http, &url, "late").unwrap().0
    });
    assert!(loki.wait_for_entries(1, WAIT));
    assert_eq!(pusher.join().unwrap(), 204);

    loki.clear();
    assert_eq!(loki.entry_count(), 0);
    assert!(loki.entries().is_empty() && loki.requests().is_empty());
    assert_eq!(loki.stats(), loki_receiver::Stats::default());

    let base = loki.base_url();
    assert_eq!(http.get(&format!("{base}/ready")).unwrap().0, 200);
    assert_eq!(
        http.post(&format!("{base}/api/v1/push"), &[], vec![])
            .unwrap()
            .0,
        404
    );
    assert_eq!(http.get(&loki.url()).unwrap().0, 405);
    assert_eq!(loki.requests()[0].status, Some(405));
}

#[test]
fn structured_metadata_limits_and_label_limits() {
    let loki = Receiver::builder()
        .max_structured_metadata_count(1)
        .max_label_names_per_series(2)
        .start();
    let http = Http::new();
    let mut e = pb::entry(1, 0, "meta");
    e.meta = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
    let (status, body) = http
        .push_proto(
            &loki.url(),
            &[
                (r#"{job="x"}"#, vec![e]),
                (r#"{a="1", b="2", c="3"}"#, vec![pb::entry(1, 0, "labels")]),
            ],
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("too many structured metadata"), "{body}");
    assert!(body.contains("3 label names; limit 2"), "{body}");
    assert_eq!(loki.entry_count(), 0);
}

#[test]
fn non_loopback_listen_is_refused() {
    let err = Receiver::builder()
        .listen("0.0.0.0:0".parse().unwrap())
        .try_start()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Reads one HTTP/1.1 response (status line, headers, Content-Length body).
fn read_response(s: &mut std::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed early");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn keep_alive_connections_are_reused() {
    let loki = Receiver::start();
    let mut s = std::net::TcpStream::connect(loki.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    for i in 0..3 {
        let body = snappy(&pb::push(&[(
            r#"{job="x"}"#,
            vec![pb::entry(1, 0, &format!("l{i}"))],
        )]));
        write!(
            s,
            "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        assert_eq!(read_response(&mut s), (204, String::new()));
    }
    // A bad request keeps the connection usable too, and its body is the
    // plain-text reason.
    write!(
        s,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"
    )
    .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 400);
    assert!(body.starts_with("json:") && body.ends_with('\n'), "{body}");

    let reqs = loki.requests();
    let ids: Vec<u64> = reqs.iter().map(|r| r.connection_id).collect();
    assert_eq!(ids, vec![ids[0]; 4]);
    assert!(reqs.windows(2).all(|w| w[1].arrived_at >= w[0].arrived_at));
    assert_eq!(loki.lines(), vec!["l0", "l1", "l2"]);
}
