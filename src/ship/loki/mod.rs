//! A Loki client: batches chunks, pushes them, retries, and settles what it delivered.
//!
//! Each client has its own queue, batch and retries; one request is in flight at a time, so
//! each stream's entries arrive in the order they were read. While a client cannot deliver,
//! its queue fills, the fan-out waits for it, and the tailer stops reading: nothing is dropped
//! because the sink is slow or down.

use crate::acknowledge::Acknowledger;
pub mod batch;
mod compress;
pub mod encode;

use super::batching::aborted;
use super::retry::{FailureLog, RetryPolicy, Transient, Verdict};
use crate::config::{ClientConfig, Compression, Encoding};
use crate::entry::Chunk;
use crate::metrics::{HostLabel, HostReason, HostStatus, Metrics};
use crate::status::{ClientStatus, StatusBoard, unix_seconds};
use batch::{Batch, Settlement};
use encode::{Body, Encoder};
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// A client config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("clients[{index}] ({url}): {message}")]
pub struct ClientError {
    pub index: usize,
    pub url: String,
    pub message: String,
}

/// A ready-to-run client.
pub struct LokiClient {
    url: reqwest::Url,
    host: String,
    http: reqwest::Client,
    headers: HeaderMap,
    auth: Option<Auth>,
    encoder: Encoder,
    batch_wait: Duration,
    batch_size: usize,
    retry: RetryPolicy,
    drop_rate_limited: bool,
    acks: Arc<Acknowledger>,
    metrics: Arc<Metrics>,
    failures: FailureLog,
    status: Option<(Arc<StatusBoard>, u64)>,
}

/// Credentials, kept out of `Debug` output and sent as sensitive headers.
enum Auth {
    Basic(String, String),
    Bearer(String),
}

impl LokiClient {
    /// Checks a client's config and builds its HTTP client (reading password and token files).
    pub fn new(
        index: usize,
        config: &ClientConfig,
        acks: Arc<Acknowledger>,
        metrics: Arc<Metrics>,
    ) -> Result<LokiClient, ClientError> {
        let fail = |message: String| ClientError {
            index,
            url: config.url.clone(),
            message,
        };
        let url =
            reqwest::Url::parse(&config.url).map_err(|e| fail(format!("invalid url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail("url must be http:// or https://".into()));
        }
        let host = match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(fail("url has no host".into())),
        };
        // The pair was checked with the config; protobuf is always snappy.
        let compression = match (config.encoding, config.compression) {
            (Encoding::Json, Some(Compression::None)) => Compression::None,
            (Encoding::Json, _) => Compression::Gzip,
            (Encoding::Protobuf, _) => Compression::Snappy,
        };
        let mut headers = HeaderMap::new();
        let user_agent = concat!("logferry/", env!("CARGO_PKG_VERSION"));
        headers.insert(USER_AGENT, HeaderValue::from_static(user_agent));
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| fail(format!("headers: {name:?}: {e}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| fail(format!("headers: {name}: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(tenant) = &config.tenant_id {
            let value =
                HeaderValue::from_str(tenant).map_err(|e| fail(format!("tenant_id: {e}")))?;
            headers.insert("X-Scope-OrgID", value);
        }
        let read_secret = |key: &str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| fail(format!("{key}: cannot read {}: {e}", path.display())))
        };
        let auth = if let Some(auth) = &config.basic_auth {
            let password = match (&auth.password, &auth.password_file) {
                (Some(p), _) => p.0.clone(),
                (None, Some(file)) => read_secret("basic_auth.password_file", file)?,
                (None, None) => String::new(),
            };
            Some(Auth::Basic(auth.username.clone(), password))
        } else if let Some(token) = &config.bearer_token {
            Some(Auth::Bearer(token.0.clone()))
        } else if let Some(file) = &config.bearer_token_file {
            Some(Auth::Bearer(read_secret("bearer_token_file", file)?))
        } else {
            None
        };
        let roots = super::tls::Roots::for_urls(
            std::iter::once(config.url.as_str()).chain(config.proxy_url.as_deref()),
        );
        let tls = super::tls::client_config(config.tls_config.as_ref(), roots)
            .map_err(|e| fail(e.to_string()))?;
        let mut http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(1);
        http = match &config.proxy_url {
            Some(proxy) => {
                http.proxy(reqwest::Proxy::all(proxy).map_err(|e| fail(format!("proxy_url: {e}")))?)
            }
            None => http.no_proxy(),
        };
        let http = http
            .build()
            .map_err(|e| fail(format!("cannot build HTTP client: {e}")))?;
        Ok(LokiClient {
            url,
            host,
            http,
            headers,
            auth,
            encoder: Encoder::new(config.encoding, compression, config.external_labels.clone()),
            batch_wait: config.batchwait.0,
            batch_size: usize::try_from(config.batchsize.0)
                .unwrap_or(usize::MAX)
                .max(1),
            retry: RetryPolicy::new(&config.backoff_config),
            drop_rate_limited: config.drop_rate_limited_batches,
            acks,
            metrics,
            failures: FailureLog::default(),
            status: None,
        })
    }

    /// Reports this client's state to the status page under `key`.
    pub fn with_status(mut self, board: Arc<StatusBoard>, key: u64) -> LokiClient {
        board.add_client(key, self.url.to_string(), self.host.clone());
        self.status = Some((board, key));
        self
    }

    fn report(&self, f: impl FnOnce(&mut ClientStatus)) {
        if let Some((board, key)) = &self.status {
            board.update_client(*key, f);
        }
    }

    /// The `host:port` the client pushes to (its metrics label).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one batch until it is delivered or dropped for good (true), or until abort (false).
    async fn send(&mut self, batch: Batch, abort: &watch::Receiver<bool>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let body = self.encoder.encode(&batch);
        let batch = batch.settlement();
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(host = %self.host, entries = batch.entries(), error = %e,
                    "a batch could not be encoded; it is dropped");
                self.drop_batch(&batch, "encode_failed");
                return true;
            }
        };
        let host = HostLabel {
            host: self.host.clone(),
        };
        self.metrics
            .batch_bytes
            .get_or_create(&host)
            .observe(batch.bytes() as f64);
        let mut attempts = self.retry.attempts();
        loop {
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = aborted(abort) => return false,
                outcome = self.push(&body, batch.tenant.as_deref()) => outcome,
            };
            let (result, status) = match &outcome {
                Ok(()) => ("delivered".to_string(), "2xx".to_string()),
                Err(Verdict::Rejected { code, .. }) => {
                    (format!("{code} rejected"), code.to_string())
                }
                Err(Verdict::Retry(failure)) => (
                    failure.to_string().chars().take(200).collect(),
                    failure.status_label(),
                ),
            };
            let (delivered, attempt) = (outcome.is_ok(), attempts.number());
            self.report(|c| {
                c.last_push = Some(unix_seconds(SystemTime::now()));
                c.last_result = Some(result);
                c.attempt = attempt;
                c.retrying = !delivered;
            });
            self.metrics
                .request_duration
                .get_or_create(&HostStatus {
                    host: self.host.clone(),
                    status_code: status,
                })
                .observe(started.elapsed().as_secs_f64());
            let failure = match outcome {
                Ok(()) => {
                    self.metrics
                        .sent_entries
                        .get_or_create(&host)
                        .inc_by(batch.entries() as u64);
                    self.metrics
                        .sent_bytes
                        .get_or_create(&host)
                        .inc_by(batch.bytes() as u64);
                    self.metrics
                        .encoded_bytes
                        .get_or_create(&host)
                        .inc_by(body.bytes.len() as u64);
                    self.failures.recovered(&self.host);
                    self.report(|c| c.sent_entries += batch.entries() as u64);
                    self.settle(&batch);
                    return true;
                }
                Err(Verdict::Rejected { code, body }) => {
                    tracing::warn!(host = %self.host, status = code, entries = batch.entries(), loki_said = %body,
                        "Loki rejected a batch; it is dropped (not retried)");
                    self.drop_batch(&batch, &format!("http_{code}"));
                    return true;
                }
                Err(Verdict::Retry(Transient::RateLimited(body))) if self.drop_rate_limited => {
                    tracing::warn!(host = %self.host, entries = batch.entries(), loki_said = %body,
                        "rate limited; batch dropped (drop_rate_limited_batches)");
                    self.drop_batch(&batch, "rate_limited");
                    return true;
                }
                Err(Verdict::Retry(failure)) => failure,
            };
            let Some(delay) = attempts.failed() else {
                tracing::warn!(host = %self.host, attempts = attempts.number(), entries = batch.entries(), last_error = %failure,
                    "giving up on a batch after backoff_config.max_retries; it is dropped");
                self.drop_batch(&batch, "max_retries");
                return true;
            };
            self.failures.failed(&self.host, &failure, delay);
            self.metrics.retries.get_or_create(&host).inc();
            tokio::select! {
                biased;
                () = aborted(abort) => return false,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn push(&self, body: &Body, tenant: Option<&str>) -> Result<(), Verdict> {
        let mut headers = self.headers.clone();
        if let Some(tenant) = tenant {
            // A tenant chosen by the pipeline wins over the client's tenant_id.
            match HeaderValue::from_str(tenant) {
                Ok(value) => {
                    headers.insert("X-Scope-OrgID", value);
                }
                Err(_) => {
                    return Err(Verdict::Rejected {
                        code: 400,
                        body: format!("invalid tenant id {tenant:?}"),
                    });
                }
            }
        }
        let mut request = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .header(CONTENT_TYPE, body.content_type)
            .body(body.bytes.clone());
        if let Some(encoding) = body.content_encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }

        request = match &self.auth {
            Some(Auth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let mut text = response.text().await.unwrap_or_default();
                text.truncate(text.floor_char_boundary(1024));
                Transient::classify(status.as_u16(), text.trim().to_string())
            }
            Err(e) => Err(Verdict::Retry(Transient::from_reqwest(&e))),
        }
    }

    fn settle(&self, batch: &Settlement) {
        for &ticket in &batch.tickets {
            self.acks.settle(ticket);
        }
    }

    fn drop_batch(&self, batch: &Settlement, reason: &str) {
        self.report(|c| {
            c.dropped_entries += batch.entries() as u64;
            c.retrying = false;
        });
        let label = HostReason {
            host: self.host.clone(),
            reason: reason.to_string(),
        };
        self.metrics
            .dropped_entries
            .get_or_create(&label)
            .inc_by(batch.entries() as u64);
        self.metrics
            .dropped_bytes
            .get_or_create(&label)
            .inc_by(batch.bytes() as u64);
        // Dropped for good counts as settled: tailing goes on past it.
        self.settle(batch);
    }
}

impl super::batching::Batching for LokiClient {
    type Batch = Batch;

    fn empty_batch(&self) -> Batch {
        Batch::default()
    }

    fn batch_wait(&self) -> Duration {
        self.batch_wait
    }

    fn add(&mut self, batch: &mut Batch, chunk: &Arc<Chunk>, from: usize) -> Option<usize> {
        batch.add(chunk, from, self.batch_size, Instant::now())
    }

    fn accepts(&self, batch: &Batch, chunk: &Chunk) -> bool {
        batch.accepts(chunk)
    }

    fn is_full(&self, batch: &Batch) -> bool {
        batch.is_full(self.batch_size)
    }

    fn is_empty(&self, batch: &Batch) -> bool {
        batch.is_empty()
    }

    fn started(&self, batch: &Batch) -> Option<Instant> {
        batch.started()
    }

    fn queue_fill(&mut self, fill: f64) {
        self.report(|c| c.queue_fill = fill);
    }

    async fn send(&mut self, batch: Batch, abort: &watch::Receiver<bool>) -> bool {
        LokiClient::send(self, batch, abort).await
    }
}

impl super::Output for LokiClient {
    fn name(&self) -> String {
        self.host.clone()
    }

    fn run(
        self: Box<Self>,
        inbox: super::Inbox,
        abort: watch::Receiver<bool>,
    ) -> super::OutputTask {
        Box::pin(async move {
            super::batching::run(*self, inbox, abort).await;
            Ok(())
        })
    }
}
