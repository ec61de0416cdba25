//! The HTTP side: accept loop, TLS, per-request handling and recording.

use crate::decode::{self, Decoded, Limits};
use crate::{Behavior, PUSH_PATH, ReceivedEntry, RequestInfo, Stats};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

/// Largest request body read off the wire (compressed), answered 413 above.
const MAX_BODY: usize = 256 << 20;

/// Static configuration of one receiver.
pub(crate) struct Config {
    pub basic_auth: Option<(String, String)>,
    pub bearer: Option<String>,
    pub require_tenant: bool,
    pub count_only: bool,
    pub limits: Limits,
}

/// State shared between the API handle and the server thread.
pub(crate) struct Shared {
    pub config: Config,
    pub behavior: Mutex<Behavior>,
    pub behavior_changed: Notify,
    pub store: Mutex<Store>,
    pub changed: Condvar,
}

/// Everything recorded so far.
#[derive(Default)]
pub(crate) struct Store {
    pub epoch: u64,
    pub entries: Vec<ReceivedEntry>,
    pub requests: Vec<RequestInfo>,
    pub stats: Stats,
}

/// Identifies a recorded request across `clear()`.
#[derive(Clone, Copy)]
struct RequestRef {
    epoch: u64,
    index: usize,
}

/// What we know about a connection.
struct ConnInfo {
    id: u64,
    peer: SocketAddr,
    tls: bool,
    client_cert: bool,
}

/// How a push request ends.
enum Outcome {
    Respond(Answer),
    Drop,
}

/// An HTTP answer, kept as parts so the body can be recorded.
struct Answer {
    status: u16,
    body: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Answer {
    /// A plain-text answer, as Go's `http.Error` writes it (an empty body
    /// gets no Content-Type).
    fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Answer {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let has_body = !self.body.is_empty();
        let mut resp = Response::new(Full::new(Bytes::from(self.body)));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        if has_body {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        resp
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn current_behavior(&self) -> MutexGuard<'_, Behavior> {
        self.behavior.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_request(&self, mut info: RequestInfo) -> RequestRef {
        let mut st = self.lock();
        let index = st.stats.requests as usize;
        st.stats.requests += 1;
        st.stats.body_bytes += info.body_len as u64;
        info.index = index;
        if !self.config.count_only {
            st.requests.push(info);
        }
        let r = RequestRef {
            epoch: st.epoch,
            index,
        };
        drop(st);
        self.changed.notify_all();
        r
    }

    fn finish_request(
        &self,
        r: RequestRef,
        status: Option<u16>,
        response_body: &[u8],
        decoded: Option<&Decoded>,
    ) {
        let mut st = self.lock();
        match status {
            Some(code) => *st.stats.responses.entry(code).or_default() += 1,
            None => st.stats.dropped_connections += 1,
        }
        if st.epoch == r.epoch
            && let Some(info) = st.requests.get_mut(r.index)
        {
            info.status = status;
            info.dropped = status.is_none();
            info.answered_at = Some(Instant::now());
            info.response_body = String::from_utf8_lossy(response_body).into_owned();
            if let Some(d) = decoded {
                info.format = d.format;
                info.decoded_len = Some(d.decoded_len);
                info.accepted_entries = d.accepted_count;
                info.rejected_entries = d.rejected_entries;
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    fn store_accepted(&self, r: RequestRef, tenant: Option<&str>, decoded: &mut Decoded) {
        let mut st = self.lock();
        st.stats.entries += decoded.accepted.len() as u64;
        st.stats.rejected_entries += decoded.rejected_entries as u64;
        st.stats.line_bytes += decoded
            .accepted
            .iter()
            .map(|e| e.line.len() as u64)
            .sum::<u64>();
        if !self.config.count_only {
            let tenant = tenant.map(str::to_string);
            for e in decoded.accepted.drain(..) {
                let (labels, labels_raw) = &*e.labels;
                st.entries.push(ReceivedEntry {
                    tenant: tenant.clone(),
                    labels: labels.clone(),
                    labels_raw: labels_raw.clone(),
                    timestamp_ns: e.timestamp_ns,
                    line: e.line,
                    structured_metadata: e.structured_metadata,
                    request_index: r.index,
                    format: decoded.format.unwrap_or(crate::PushFormat::Protobuf),
                });
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Decides what to do with a request according to the behavior, updating
    /// `FailNext` counters. `None` means stall.
    fn decide(&self) -> Option<Decision> {
        let mut b = self.current_behavior();
        match &mut *b {
            Behavior::Accept => Some(Decision::Process(None)),
            Behavior::Delay(d) => Some(Decision::Process(Some(*d))),
            Behavior::Status(code, body) => Some(Decision::Answer(*code, body.clone())),
            Behavior::Stall => None,
            Behavior::DropConnection => Some(Decision::Drop),
            Behavior::FailNext(n, code) => {
                if *n == 0 {
                    *b = Behavior::Accept;
                    return Some(Decision::Process(None));
                }
                let code = *code;
                *n -= 1;
                if *n == 0 {
                    *b = Behavior::Accept;
                }
                drop(b);
                self.behavior_changed.notify_waiters();
                Some(Decision::Answer(
                    code,
                    "injected failure (FailNext)\n".to_string(),
                ))
            }
        }
    }
}

enum Decision {
    Process(Option<Duration>),
    Answer(u16, String),
    Drop,
}

/// Accepts connections until `shutdown` fires.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            res = listener.accept() => match res {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors and the like: back off a little.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        shared.lock().stats.connections += 1;
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let info = ConnInfo {
                        id,
                        peer,
                        tls: false,
                        client_cert: false,
                    };
                    serve(stream, info, false, shared).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let conn = stream.get_ref().1;
                            let h2 = conn.alpn_protocol() == Some(b"h2".as_slice());
                            let client_cert =
                                conn.peer_certificates().is_some_and(|c| !c.is_empty());
                            let info = ConnInfo {
                                id,
                                peer,
                                tls: true,
                                client_cert,
                            };
                            serve(stream, info, h2, shared).await;
                        }
                        _ => shared.lock().stats.tls_handshake_failures += 1,
                    }
                }
            }
        });
    }
}

/// Serves one connection; dropping the connection future closes the socket,
/// which is how `DropConnection` answers nothing.
async fn serve<I>(io: I, info: ConnInfo, h2: bool, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let info = Arc::new(info);
    let svc = {
        let kill = kill.clone();
        service_fn(move |req| handle(req, shared.clone(), info.clone(), kill.clone(), h2))
    };
    let io = TokioIo::new(io);
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::select! {
            _ = conn => {}
            _ = kill.notified() => {}
        }
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        tokio::select! {
            _ = conn => {}
            _ = kill.notified() => {}
        }
    }
}

fn header_string(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    kill: Arc<Notify>,
    h2: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived_at = Instant::now();
    let arrived_at_wall = SystemTime::now();
    let path = req.uri().path().to_string();
    if path == "/ready" && req.method() == Method::GET {
        return Ok(Answer::text(200, "ready\n").into_response());
    }
    if path != PUSH_PATH {
        return Ok(Answer::text(404, "404 page not found\n").into_response());
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            // The client went away mid-body, or sent too much.
            return Ok(if too_large {
                Answer::text(413, format!("request body larger than {MAX_BODY} bytes\n"))
            } else {
                Answer::text(400, "error reading request body\n")
            }
            .into_response());
        }
    };
    let headers = &parts.headers;
    let tenant = header_string(headers, "x-scope-orgid");
    let info = RequestInfo {
        index: 0,
        connection_id: conn.id,
        peer: conn.peer,
        tls: conn.tls,
        client_cert: conn.client_cert,
        http_version: if h2 { "HTTP/2.0" } else { "HTTP/1.1" }.to_string(),
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        content_type: header_string(headers, header::CONTENT_TYPE),
        content_encoding: header_string(headers, header::CONTENT_ENCODING),
        tenant: tenant.clone(),
        authorization: header_string(headers, header::AUTHORIZATION),
        user_agent: header_string(headers, header::USER_AGENT),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len(),
        decoded_len: None,
        format: None,
        accepted_entries: 0,
        rejected_entries: 0,
        status: None,
        dropped: false,
        response_body: String::new(),
        arrived_at,
        arrived_at_wall,
        answered_at: None,
    };
    let r = shared.record_request(info);
    let mut decoded = None;
    let outcome = process(&parts, &body, tenant.as_deref(), &shared, r, &mut decoded).await;
    match outcome {
        Outcome::Respond(answer) => {
            shared.finish_request(
                r,
                Some(answer.status),
                answer.body.as_bytes(),
                decoded.as_ref(),
            );
            Ok(answer.into_response())
        }
        Outcome::Drop => {
            shared.finish_request(r, None, b"", decoded.as_ref());
            kill.notify_one();
            std::future::pending().await
        }
    }
}

async fn process(
    parts: &hyper::http::request::Parts,
    body: &Bytes,
    tenant: Option<&str>,
    shared: &Shared,
    r: RequestRef,
    decoded_out: &mut Option<Decoded>,
) -> Outcome {
    if parts.method != Method::POST {
        return Outcome::Respond(Answer::text(405, "").with_header(header::ALLOW, "POST"));
    }
    let config = &shared.config;
    if !authorized(&parts.headers, config) {
        let challenge = if config.basic_auth.is_some() {
            "Basic realm=\"loki\""
        } else {
            "Bearer"
        };
        return Outcome::Respond(
            Answer::text(401, "401 Unauthorized\n")
                .with_header(header::WWW_AUTHENTICATE, challenge),
        );
    }
    if config.require_tenant && tenant.is_none_or(str::is_empty) {
        return Outcome::Respond(Answer::text(401, "no org id\n"));
    }

    // Apply the configured behavior; a stalled request waits for a change.
    let decision = loop {
        let changed = shared.behavior_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match shared.decide() {
            Some(d) => break d,
            None => changed.await,
        }
    };
    match decision {
        Decision::Answer(code, body) => return Outcome::Respond(Answer::text(code, body)),
        Decision::Drop => return Outcome::Drop,
        Decision::Process(Some(delay)) => tokio::time::sleep(delay).await,
        Decision::Process(None) => {}
    }

    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_encoding = match parts.headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) => Some(s),
            Err(_) => {
                return Outcome::Respond(Answer::text(
                    400,
                    "Content-Encoding is not valid ASCII\n",
                ));
            }
        },
    };
    match decode::decode_push(body, content_type, content_encoding, &config.limits) {
        Err(e) => Outcome::Respond(Answer::text(e.status, format!("{}\n", e.message))),
        Ok(mut d) => {
            let resp = if d.errors.is_empty() {
                Answer::text(204, "")
            } else {
                Answer::text(400, format!("{}\n", d.errors.join("\n")))
            };
            shared.store_accepted(r, tenant, &mut d);
            *decoded_out = Some(d);
            Outcome::Respond(resp)
        }
    }
}

fn authorized(headers: &HeaderMap, config: &Config) -> bool {
    if config.basic_auth.is_none() && config.bearer.is_none() {
        return true;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return false;
    };
    let credentials = credentials.trim();
    if let Some((user, pass)) = &config.basic_auth
        && scheme.eq_ignore_ascii_case("basic")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials)
        && let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':')
        && u == user
        && p == pass
    {
        return true;
    }
    if let Some(token) = &config.bearer
        && scheme.eq_ignore_ascii_case("bearer")
        && credentials == token
    {
        return true;
    }
    false
}
