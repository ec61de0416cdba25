//! A faithful Elasticsearch `_bulk` receiver for logferry's integration tests and benchmarks.
//!
//! [`Receiver`] listens on loopback and answers `POST /_bulk` and `POST /<index>/_bulk` the
//! way Elasticsearch 8.x does (and 7.x, whose bulk shapes are the same), recording what it
//! indexed. The API is synchronous; the server runs on its own thread with its own runtime
//! and stops when the receiver is dropped.
//!
//! What is checked, as Elasticsearch does:
//!
//! * `Content-Type` must be `application/x-ndjson` or `application/json` (parameters
//!   allowed); anything else, or none, is 406 `Content-Type header [...] is not supported`.
//! * `Content-Encoding: gzip` or `deflate` bodies are decompressed; another encoding is 400.
//! * The body is NDJSON action/source pairs ending with a newline. A malformed action line,
//!   an unknown action or parameter (`_type` included, as in 8.x), a missing index or
//!   source fail the whole request with 400 and Elasticsearch's error object.
//! * Each item on its own: its index name must be valid (`invalid_index_name_exception`);
//!   its source must be one JSON object with no field twice (`mapper_parsing_exception`);
//!   an ingest pipeline must exist (`illegal_argument_exception`); names matching `logs-*-*`
//!   are data streams, which take only `create` and need a `@timestamp` that parses as a
//!   date. Items fail alone, with `errors: true` in a 200 answer.
//! * Documents may be made to fail on purpose with [`Receiver::fail_documents`] (429
//!   `es_rejected_execution_exception`, 400 `mapper_parsing_exception`, 404
//!   `index_not_found_exception`, 503 `unavailable_shards_exception`), and whole requests
//!   with [`Behavior`].
//!
//! Answers have Elasticsearch's shape: `{"took":…,"errors":…,"items":[{"<op>":{"_index":…,
//! "_id":…,"_version":1,"result":"created","_shards":{…},"_seq_no":…,"_primary_term":1,
//! "status":201}}]}`, failed items `{"<op>":{"_index":…,"_id":…,"status":…,"error":{"type":…,
//! "reason":…}}}`, failed requests `{"error":{"root_cause":[…],"type":…,"reason":…},
//! "status":…}`. A data stream's documents are reported in its backing index
//! `.ds-<name>-<yyyy.MM.dd>-000001`.

mod bulk;
mod server;

pub use bulk::is_date;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How whole requests are answered from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Parse, index and answer per item.
    Accept,
    /// Answer this status with Elasticsearch's error object, indexing nothing.
    Status(u16),
    /// Answer this status for the next `n` requests, then accept.
    FailNext(usize, u16),
    /// Wait this long, then accept.
    Delay(Duration),
}

/// A per-item failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 `es_rejected_execution_exception`: a full write queue.
    TooManyRequests,
    /// 400 `mapper_parsing_exception`: a field does not fit the mapping.
    MapperParsing,
    /// 404 `index_not_found_exception`: the index may not be created.
    IndexNotFound,
    /// 503 `unavailable_shards_exception`: the primary shard is not active.
    Unavailable,
}

impl Failure {
    fn status(self) -> u16 {
        match self {
            Failure::TooManyRequests => 429,
            Failure::MapperParsing => 400,
            Failure::IndexNotFound => 404,
            Failure::Unavailable => 503,
        }
    }

    fn error(self, index: &str) -> (&'static str, String) {
        match self {
            Failure::TooManyRequests => (
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=0]".into(),
            ),
            Failure::MapperParsing => (
                "mapper_parsing_exception",
                "failed to parse field [message] of type [long] in document".into(),
            ),
            Failure::IndexNotFound => ("index_not_found_exception", format!("no such index [{index}]")),
            Failure::Unavailable => (
                "unavailable_shards_exception",
                format!("[{index}][0] primary shard is not active Timeout: [1m]"),
            ),
        }
    }
}

/// Documents whose `message` contains `contains` fail with `failure`, the first `times`
/// times each is sent (0: always).
#[derive(Debug, Clone)]
pub struct FailRule {
    pub contains: String,
    pub failure: Failure,
    pub times: usize,
}

/// One indexed document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The index (or data stream) named in the request.
    pub index: String,
    /// `index` or `create`.
    pub op: String,
    pub id: String,
    pub source: Map<String, Value>,
    /// [`RequestInfo::index`] of the request that carried it.
    pub request: usize,
}

impl Document {
    /// The `message` field.
    pub fn message(&self) -> &str {
        self.source
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// A field by its dotted path (`log.file.path`), through objects.
    pub fn field(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.source.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    /// A string field by its dotted path.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.field(path).and_then(Value::as_str)
    }
}

/// One request to a bulk path.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub index: usize,
    pub method: String,
    /// Path and query.
    pub target: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub authorization: Option<String>,
    pub body_len: usize,
    /// Items in the body.
    pub items: usize,
    /// The status of each item that failed.
    pub failed_items: Vec<u16>,
    pub status: Option<u16>,
    pub response: String,
    pub arrived_at: Instant,
}

/// Counters, kept in `count_only` mode too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub documents: u64,
    pub message_bytes: u64,
    pub body_bytes: u64,
    /// Item failures by status.
    pub item_failures: BTreeMap<u16, u64>,
    /// Answers by status.
    pub responses: BTreeMap<u16, u64>,
}

pub(crate) struct Settings {
    pub api_key: Option<String>,
    pub pipelines: BTreeSet<String>,
    pub count_only: bool,
    pub data_stream_prefixes: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Store {
    pub documents: Vec<Document>,
    pub requests: Vec<RequestInfo>,
    pub stats: Stats,
    pub rules: Vec<FailRule>,
    /// How often each failing document was failed, by rule and message.
    pub failed: HashMap<(usize, String), usize>,
    pub next_seq: u64,
}

pub(crate) struct Shared {
    pub settings: Settings,
    pub behavior: Mutex<Behavior>,
    pub store: Mutex<Store>,
    pub changed: Condvar,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn behavior(&self) -> MutexGuard<'_, Behavior> {
        self.behavior.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Configures a [`Receiver`].
#[derive(Debug, Clone)]
pub struct ReceiverBuilder {
    port: u16,
    api_key: Option<String>,
    pipelines: BTreeSet<String>,
    count_only: bool,
    behavior: Behavior,
}

impl ReceiverBuilder {
    /// Listens on `127.0.0.1:port` (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Requires `Authorization: ApiKey <key>`; otherwise 401 `security_exception`.
    pub fn require_api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// An ingest pipeline that exists.
    pub fn pipeline(mut self, name: &str) -> Self {
        self.pipelines.insert(name.into());
        self
    }

    /// Parses and checks everything but keeps only counters.
    pub fn count_only(mut self, on: bool) -> Self {
        self.count_only = on;
        self
    }

    pub fn behavior(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }

    /// Starts the receiver; panics if it cannot (a test helper).
    pub fn start(self) -> Receiver {
        let listener =
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
                .expect("bind the Elasticsearch receiver");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the receiver's address");
        let shared = Arc::new(Shared {
            settings: Settings {
                api_key: self.api_key,
                pipelines: self.pipelines,
                count_only: self.count_only,
                data_stream_prefixes: vec!["logs-".into(), "metrics-".into(), "traces-".into()],
            },
            behavior: Mutex::new(self.behavior),
            store: Mutex::new(Store::default()),
            changed: Condvar::new(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("elastic-receiver")
            .enable_all()
            .build()
            .expect("the receiver's runtime");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                server::run(listener, thread_shared, stopped).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Receiver {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// A running `_bulk` receiver; dropping it closes every connection.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::builder().start()
    }

    pub fn builder() -> ReceiverBuilder {
        ReceiverBuilder {
            port: 0,
            api_key: None,
            pipelines: BTreeSet::new(),
            count_only: false,
            behavior: Behavior::Accept,
        }
    }

    /// The node's base URL, as an Elasticsearch client is given it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.shared.behavior() = behavior;
    }

    /// Adds a rule failing some documents.
    pub fn fail_documents(&self, contains: &str, failure: Failure, times: usize) {
        self.shared.lock().rules.push(FailRule {
            contains: contains.into(),
            failure,
            times,
        });
    }

    /// Drops every failure rule.
    pub fn clear_failures(&self) {
        self.shared.lock().rules.clear();
    }

    pub fn documents(&self) -> Vec<Document> {
        self.shared.lock().documents.clone()
    }

    /// The `message` of every document, in the order indexed.
    pub fn messages(&self) -> Vec<String> {
        self.shared
            .lock()
            .documents
            .iter()
            .map(|d| d.message().to_string())
            .collect()
    }

    pub fn document_count(&self) -> usize {
        self.shared.lock().stats.documents as usize
    }

    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.lock().requests.clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Waits until at least `n` documents were indexed; false at the deadline.
    pub fn wait_for_documents(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut store = self.shared.lock();
        while (store.stats.documents as usize) < n {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            store = self
                .shared
                .changed
                .wait_timeout(store, end - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
