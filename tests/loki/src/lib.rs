//! A faithful Grafana Loki push API receiver for logferry's integration tests
//! and benchmarks.
//!
//! [`Receiver`] listens on loopback, answers `POST /loki/api/v1/push` the way
//! Loki 2.8/3.x does, and records what it accepted. The API is synchronous;
//! the server runs on its own thread with its own tokio runtime and stops when
//! the [`Receiver`] is dropped.
//!
//! What is checked, as Loki does:
//!
//! * `Content-Encoding`: absent, `snappy` (no-op), `gzip`, or `deflate` (raw
//!   DEFLATE, RFC 1951, as Go's `compress/flate`); anything else is 400.
//! * `Content-Type`: parsed like Go's `mime.ParseMediaType`, so an absent or
//!   malformed one is 400 (`mime: no media type`). `application/json` (with
//!   parameters such as `charset`) selects JSON; every other media type,
//!   normally `application/x-protobuf`, selects protobuf, whose body must be
//!   snappy *block*-compressed (after the optional Content-Encoding). So
//!   `gzip` over a bare protobuf is rejected (400), while `gzip` over a
//!   snappy-compressed protobuf is accepted, exactly as in Loki.
//! * Every stream's label text must parse as a Prometheus label set (see
//!   [`labels`]); otherwise the whole request is 400.
//! * Per stream, with entries: at least one label (after dropping empty
//!   values), at most 15 label names, name ≤ 1024 and value ≤ 2048 bytes, no
//!   duplicate name (limits configurable).
//! * Per entry: a timestamp is present (protobuf) or a string holding a
//!   base-10 int64 (JSON); optionally not too old / too new; optionally not
//!   longer than a maximum line size; structured metadata ≤ 64 KiB and ≤ 128
//!   pairs.
//! * Lines, labels and metadata are valid UTF-8 (protobuf decoding rejects
//!   invalid `string` fields; label escapes may not produce invalid UTF-8).
//!
//! Stream and entry failures are partial, as in Loki's distributor: valid
//! entries of the same request are accepted and recorded, and the answer is
//! 400 with one reason per line. Request-level failures accept nothing.
//!
//! ```no_run
//! use loki_receiver::{Behavior, Receiver};
//! use std::time::Duration;
//!
//! let loki = Receiver::start();
//! // ... point logferry at loki.url() and let it ship ...
//! assert!(loki.wait_for_entries(3, Duration::from_secs(10)));
//! let entries = loki.entries();
//! assert_eq!(entries[0].labels["job"], "app");
//! loki.set_behavior(Behavior::Status(429, "slow down".into()));
//! ```

#![warn(missing_docs)]

mod decode;
pub mod labels;
pub mod proto;
mod server;
mod tls;

pub use decode::PushFormat;
pub use tls::{ClientIdentity, TlsFiles, TlsOptions, install_crypto_provider};

use labels::LabelLimits;
use server::{Config, Shared, Store};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The push endpoint path.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// How the receiver answers the push requests that arrive after
/// [`Receiver::set_behavior`]. Authentication (401) and the tenant check are
/// applied first; the behavior comes next; then decoding and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Decode, validate and record; answer 204 (or 400 when invalid).
    Accept,
    /// Answer this status with this plain-text body, without decoding
    /// (e.g. 429 rate limited, 500 ingester failure, 400 bad request).
    Status(u16, String),
    /// Never answer: the request waits until the behavior changes (it is then
    /// handled under the new behavior) or the client gives up (it is then
    /// forgotten: no entries are recorded and its status stays `None`).
    Stall,
    /// Close the TCP connection without writing any HTTP response.
    DropConnection,
    /// Answer this status (with a short body) for the next `n` requests, then
    /// switch to [`Behavior::Accept`].
    FailNext(usize, u16),
    /// Wait this long, then behave as [`Behavior::Accept`].
    Delay(Duration),
}

/// One accepted log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEntry {
    /// The `X-Scope-OrgID` header of the request, if any.
    pub tenant: Option<String>,
    /// The stream labels as Loki stores them: parsed, sorted, empty values
    /// dropped.
    pub labels: BTreeMap<String, String>,
    /// The label text as sent (protobuf), or the canonical rendering of the
    /// JSON label object, e.g. `{env="prod", job="app"}`.
    pub labels_raw: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The log line.
    pub line: String,
    /// Structured metadata pairs, in wire order (protobuf) or sorted by name
    /// (JSON).
    pub structured_metadata: Vec<(String, String)>,
    /// [`RequestInfo::index`] of the request that carried the entry.
    pub request_index: usize,
    /// The body format of that request.
    pub format: PushFormat,
}

impl ReceivedEntry {
    /// The value of one stream label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// The value of one structured metadata pair (the first with that name).
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.structured_metadata
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to the push path (any method), recorded when its body has
/// been read and updated when it is answered.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Position in arrival order since the last [`Receiver::clear`].
    pub index: usize,
    /// Which TCP connection carried it (1, 2, ... in accept order); equal ids
    /// mean the client reused a connection.
    pub connection_id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection used TLS.
    pub tls: bool,
    /// Whether the client presented a certificate (mutual TLS).
    pub client_cert: bool,
    /// `HTTP/1.1` or `HTTP/2.0` (HTTP/2 is offered over TLS via ALPN, as a Go
    /// server does).
    pub http_version: String,
    /// The request method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Content-Encoding` header.
    pub content_encoding: Option<String>,
    /// The `X-Scope-OrgID` header.
    pub tenant: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// All headers, lower-case names, in received order.
    pub headers: Vec<(String, String)>,
    /// Body length as received (after transfer decoding, before
    /// Content-Encoding and snappy decoding).
    pub body_len: usize,
    /// Length of the decoded payload (JSON text or protobuf bytes), when it
    /// was decoded.
    pub decoded_len: Option<usize>,
    /// Body format, when it was decoded.
    pub format: Option<PushFormat>,
    /// Entries accepted from this request.
    pub accepted_entries: usize,
    /// Entries discarded by stream or entry validation.
    pub rejected_entries: usize,
    /// The status answered; `None` while pending, when the connection was
    /// dropped on purpose, or when a stalled client gave up.
    pub status: Option<u16>,
    /// Whether the receiver closed the connection without answering
    /// ([`Behavior::DropConnection`]).
    pub dropped: bool,
    /// The plain-text body answered (empty for 204).
    pub response_body: String,
    /// When the request arrived (monotonic), for measuring retry intervals.
    pub arrived_at: Instant,
    /// When the request arrived (wall clock).
    pub arrived_at_wall: SystemTime,
    /// When it was answered (monotonic).
    pub answered_at: Option<Instant>,
}

impl RequestInfo {
    /// The first value of a header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters since start or the last [`Receiver::clear`]; kept in
/// `count_only` mode too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Push requests received (any outcome).
    pub requests: u64,
    /// Entries accepted.
    pub entries: u64,
    /// Total bytes of accepted lines.
    pub line_bytes: u64,
    /// Entries discarded by validation.
    pub rejected_entries: u64,
    /// Total request body bytes as received.
    pub body_bytes: u64,
    /// Answers by status code.
    pub responses: BTreeMap<u16, u64>,
    /// Requests answered by closing the connection.
    pub dropped_connections: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes that failed (e.g. missing or untrusted client
    /// certificate, plain HTTP on a TLS port).
    pub tls_handshake_failures: u64,
}

/// Configures and starts a [`Receiver`].
#[derive(Debug, Clone)]
pub struct ReceiverBuilder {
    addr: SocketAddr,
    basic_auth: Option<(String, String)>,
    bearer: Option<String>,
    require_tenant: bool,
    count_only: bool,
    tls: Option<TlsOptions>,
    behavior: Behavior,
    max_line_size: usize,
    label_limits: LabelLimits,
    reject_old_samples_max_age: Option<Duration>,
    creation_grace_period: Option<Duration>,
    max_structured_metadata_size: usize,
    max_structured_metadata_count: usize,
}

impl Default for ReceiverBuilder {
    fn default() -> Self {
        ReceiverBuilder {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            basic_auth: None,
            bearer: None,
            require_tenant: false,
            count_only: false,
            tls: None,
            behavior: Behavior::Accept,
            max_line_size: 0,
            label_limits: LabelLimits {
                max_label_names_per_series: 15,
                max_label_name_length: 1024,
                max_label_value_length: 2048,
            },
            reject_old_samples_max_age: None,
            creation_grace_period: None,
            max_structured_metadata_size: 64 * 1024,
            max_structured_metadata_count: 128,
        }
    }
}

impl ReceiverBuilder {
    /// Requires `Authorization: Basic` with these credentials; otherwise 401.
    /// Combined with [`ReceiverBuilder::require_bearer`], either is accepted.
    pub fn require_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Requires `Authorization: Bearer <token>`; otherwise 401.
    pub fn require_bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_string());
        self
    }

    /// Requires a non-empty `X-Scope-OrgID` header, as Loki with
    /// `auth_enabled: true`; otherwise 401 `no org id`.
    pub fn require_tenant(mut self, required: bool) -> Self {
        self.require_tenant = required;
        self
    }

    /// Rejects entries whose line is longer than `bytes` (Loki's
    /// `max_line_size`; 0, the default, means unlimited).
    pub fn max_line_size(mut self, bytes: usize) -> Self {
        self.max_line_size = bytes;
        self
    }

    /// Loki's `max_label_names_per_series` (default 15).
    pub fn max_label_names_per_series(mut self, n: usize) -> Self {
        self.label_limits.max_label_names_per_series = n;
        self
    }

    /// Loki's `max_label_name_length` (default 1024).
    pub fn max_label_name_length(mut self, bytes: usize) -> Self {
        self.label_limits.max_label_name_length = bytes;
        self
    }

    /// Loki's `max_label_value_length` (default 2048).
    pub fn max_label_value_length(mut self, bytes: usize) -> Self {
        self.label_limits.max_label_value_length = bytes;
        self
    }

    /// Rejects entries older than `max_age` (Loki's `reject_old_samples`,
    /// whose default there is 1 week; off by default here so tests may use
    /// fixed timestamps).
    pub fn reject_old_samples(mut self, max_age: Duration) -> Self {
        self.reject_old_samples_max_age = Some(max_age);
        self
    }

    /// Rejects entries newer than now + `grace` (Loki's
    /// `creation_grace_period`, 10 minutes there; off by default here).
    pub fn creation_grace_period(mut self, grace: Duration) -> Self {
        self.creation_grace_period = Some(grace);
        self
    }

    /// Loki's `max_structured_metadata_size` in bytes (default 64 KiB; 0
    /// means unlimited).
    pub fn max_structured_metadata_size(mut self, bytes: usize) -> Self {
        self.max_structured_metadata_size = bytes;
        self
    }

    /// Loki's `max_structured_metadata_entries_count` (default 128; 0 means
    /// unlimited).
    pub fn max_structured_metadata_count(mut self, n: usize) -> Self {
        self.max_structured_metadata_count = n;
        self
    }

    /// Serves HTTPS with these certificates (and mutual TLS when they say so).
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// Decodes and validates everything but keeps only counters (no entries,
    /// no request records): cheap enough for benchmarks.
    pub fn count_only(mut self, on: bool) -> Self {
        self.count_only = on;
        self
    }

    /// Listens on `127.0.0.1:port` (0, the default, picks a free port).
    pub fn port(mut self, port: u16) -> Self {
        self.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self
    }

    /// Listens on this address, which must be a loopback address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The behavior in force from the first request (default
    /// [`Behavior::Accept`]).
    pub fn behavior(mut self, behavior: Behavior) -> Self {
        check_behavior(&behavior);
        self.behavior = behavior;
        self
    }

    /// Starts the receiver; panics if it cannot (this is a test helper).
    pub fn start(self) -> Receiver {
        self.try_start().expect("start the Loki receiver")
    }

    /// Starts the receiver, reporting failures (non-loopback address, port in
    /// use, ...).
    pub fn try_start(self) -> std::io::Result<Receiver> {
        if !self.addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "refusing to listen on {}: not a loopback address",
                    self.addr
                ),
            ));
        }
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tls_config = self.tls.as_ref().map(TlsOptions::server_config);
        let shared = Arc::new(Shared {
            config: Config {
                basic_auth: self.basic_auth,
                bearer: self.bearer,
                require_tenant: self.require_tenant,
                count_only: self.count_only,
                limits: decode::Limits {
                    max_line_size: self.max_line_size,
                    labels: self.label_limits,
                    reject_old_samples_max_age: self.reject_old_samples_max_age,
                    creation_grace_period: self.creation_grace_period,
                    max_structured_metadata_size: self.max_structured_metadata_size,
                    max_structured_metadata_count: self.max_structured_metadata_count,
                    max_decoded_size: 512 << 20,
                },
            },
            behavior: Mutex::new(self.behavior),
            behavior_changed: tokio::sync::Notify::new(),
            store: Mutex::new(Store::default()),
            changed: Condvar::new(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loki-receiver")
            .enable_all()
            .build()?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("loki-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("register the listener with tokio");
                    let acceptor = tls_config.map(tokio_rustls::TlsAcceptor::from);
                    server::run(listener, thread_shared, acceptor, shutdown_rx).await;
                });
                // Dropping the runtime cancels every connection task.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Receiver {
            shared,
            addr,
            tls: self.tls.is_some(),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }
}

fn check_behavior(b: &Behavior) {
    let code = match b {
        Behavior::Status(code, _) | Behavior::FailNext(_, code) => *code,
        _ => return,
    };
    assert!(
        (100..=999).contains(&code),
        "invalid HTTP status code {code} in {b:?}"
    );
}

/// A running Loki push receiver. Dropping it stops the server and closes
/// every connection.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Starts a plain-HTTP receiver on `127.0.0.1` with a free port and
    /// default settings.
    pub fn start() -> Receiver {
        Receiver::builder().start()
    }

    /// A builder for non-default settings.
    pub fn builder() -> ReceiverBuilder {
        ReceiverBuilder::default()
    }

    /// The full push URL, e.g. `http://127.0.0.1:41234/loki/api/v1/push`
    /// (`https://` with TLS; the certificate also covers `localhost`).
    pub fn url(&self) -> String {
        format!("{}{PUSH_PATH}", self.base_url())
    }

    /// Scheme, host and port, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how following requests are answered; requests stalled by
    /// [`Behavior::Stall`] re-evaluate under the new behavior. Panics on a
    /// status code outside 100..=999.
    pub fn set_behavior(&self, behavior: Behavior) {
        check_behavior(&behavior);
        *self.shared.current_behavior() = behavior;
        self.shared.behavior_changed.notify_waiters();
    }

    /// The behavior now in force (`FailNext` shows the failures left).
    pub fn behavior(&self) -> Behavior {
        self.shared.current_behavior().clone()
    }

    /// Accepted entries, in arrival order (empty in `count_only` mode).
    pub fn entries(&self) -> Vec<ReceivedEntry> {
        self.shared.lock().entries.clone()
    }

    /// Removes and returns the entries accepted so far, in arrival order;
    /// counters keep counting. For long runs that tally entries as they come
    /// instead of keeping them all.
    pub fn take_entries(&self) -> Vec<ReceivedEntry> {
        std::mem::take(&mut self.shared.lock().entries)
    }

    /// The lines of the accepted entries, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.shared
            .lock()
            .entries
            .iter()
            .map(|e| e.line.clone())
            .collect()
    }

    /// Push requests, in arrival order (empty in `count_only` mode).
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.lock().requests.clone()
    }

    /// Number of accepted entries.
    pub fn entry_count(&self) -> usize {
        self.shared.lock().stats.entries as usize
    }

    /// Total bytes of accepted lines.
    pub fn line_bytes(&self) -> u64 {
        self.shared.lock().stats.line_bytes
    }

    /// Number of push requests received.
    pub fn request_count(&self) -> usize {
        self.shared.lock().stats.requests as usize
    }

    /// All counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Waits until at least `n` entries were accepted; false on timeout.
    pub fn wait_for_entries(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.stats.entries as usize >= n)
    }

    /// Waits until at least `n` push requests arrived (answered or not);
    /// false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.stats.requests as usize >= n)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&Store) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if done(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Forgets all entries, requests and counters. Requests in flight finish
    /// normally; their entries are recorded after the clear.
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        let epoch = st.epoch + 1;
        *st = Store {
            epoch,
            ..Store::default()
        };
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
