//! An Elasticsearch output: entries as documents through the `_bulk` API.
//!
//! Like a Loki client, it batches chunks, sends one request at a time and settles a chunk
//! only when Elasticsearch has answered for every line of it. What differs is that a bulk
//! answer judges each document on its own: documents refused with 429 or 5xx are sent again,
//! alone, with backoff; documents refused for good (a mapping error, a missing pipeline) are
//! dropped, counted by Elasticsearch's error type and logged; the rest are done. A batch is
//! over when none of its documents is left to send.

pub mod batch;
pub mod bulk;
pub mod client;
pub mod document;
pub mod time;

use crate::acknowledge::Acknowledger;
use crate::config::ElasticsearchConfig;
use crate::entry::Chunk;
use crate::metrics::{HostLabel, HostReason, HostStatus, Metrics};
use crate::ship::batching::aborted;
use crate::ship::retry::{FailureLog, RetryPolicy, Transient, Verdict};
use crate::status::{ClientStatus, StatusBoard, unix_seconds};
use batch::Batch;
use bulk::ItemOutcome;
use client::{Answer, BulkClient};
use document::Renderer;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// An `elasticsearch:` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("elasticsearch[{index}] ({url}): {message}")]
pub struct ElasticError {
    pub index: usize,
    pub url: String,
    pub message: String,
}

/// The shortest wait before trying again with credentials that were refused: they are
/// likely being rotated, and hammering an authentication layer helps no one.
const AUTH_RETRY: Duration = Duration::from_secs(30);

/// A ready-to-run Elasticsearch output.
pub struct ElasticOutput {
    client: BulkClient,
    host: String,
    url: String,
    renderer: Renderer,
    batch_wait: Duration,
    batch_size: usize,
    retry: RetryPolicy,
    max_retries: u32,
    acks: Arc<Acknowledger>,
    metrics: Arc<Metrics>,
    failures: FailureLog,
    status: Option<(Arc<StatusBoard>, u64)>,
}

impl ElasticOutput {
    /// Checks an `elasticsearch:` entry and builds its HTTP client (reading secret files).
    pub fn new(
        index: usize,
        config: &ElasticsearchConfig,
        acks: Arc<Acknowledger>,
        metrics: Arc<Metrics>,
    ) -> Result<ElasticOutput, ElasticError> {
        let client = BulkClient::new(index, config)?;
        let node = client.node();
        let host = match (node.host_str(), node.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        let mut backoff = config.backoff_config.clone();
        // Retries are counted per document here, not per request.
        backoff.max_retries = 0;
        Ok(ElasticOutput {
            url: node.to_string(),
            client,
            host,
            renderer: Renderer::new(config, &host_name()),
            batch_wait: config.batch_wait.0,
            batch_size: usize::try_from(config.batch_size.0)
                .unwrap_or(usize::MAX)
                .max(1),
            retry: RetryPolicy::new(&backoff),
            max_retries: config.effective_max_retries(),
            acks,
            metrics,
            failures: FailureLog::default(),
            status: None,
        })
    }

    /// Reports this output's state to the status page under `key`.
    pub fn with_status(mut self, board: Arc<StatusBoard>, key: u64) -> ElasticOutput {
        board.add_client(key, self.url.clone(), self.host.clone());
        self.status = Some((board, key));
        self
    }

    fn report(&self, f: impl FnOnce(&mut ClientStatus)) {
        if let Some((board, key)) = &self.status {
            board.update_client(*key, f);
        }
    }

    fn label(&self) -> HostLabel {
        HostLabel {
            host: self.host.clone(),
        }
    }

    /// Sends a batch until every document in it is delivered or dropped for good (true), or
    /// until abort (false: nothing of it is settled).
    async fn send(&mut self, batch: Batch, abort: &watch::Receiver<bool>) -> bool {
        let Batch {
            body,
            mut items,
            tickets,
            ..
        } = batch;
        let full = bytes::Bytes::from(body);
        self.metrics
            .batch_bytes
            .get_or_create(&self.label())
            .observe(full.len() as f64);
        let mut attempts = self.retry.attempts();
        let mut first = true;
        while !items.is_empty() {
            let ndjson = if first {
                full.clone()
            } else {
                let mut part = Vec::with_capacity(items.iter().map(|i| i.range.len()).sum());
                for item in &items {
                    part.extend_from_slice(&full[item.range.clone()]);
                }
                part.into()
            };
            first = false;
            let (wire, encoding) = self.client.encode(ndjson);
            let started = Instant::now();
            let answer = tokio::select! {
                biased;
                () = aborted(abort) => return false,
                answer = self.client.send(wire.clone(), encoding) => answer,
            };
            let delay = match answer {
                Answer::Bulk(response) => match bulk::parse(&response, items.len()) {
                    Ok(outcomes) => {
                        self.observe(started, "200");
                        self.metrics
                            .encoded_bytes
                            .get_or_create(&self.label())
                            .inc_by(wire.len() as u64);
                        items = self.judge(items, outcomes);
                        if items.is_empty() {
                            break;
                        }
                        let failure = Transient::Status {
                            code: 200,
                            body: format!("{} documents to send again", items.len()),
                        };
                        self.retry_later(&failure, &mut attempts)
                    }
                    Err(e) => {
                        self.observe(started, "200");
                        let failure = Transient::Status {
                            code: 200,
                            body: e.to_string(),
                        };
                        items = self.count_failure(items, &failure);
                        self.retry_later(&failure, &mut attempts)
                    }
                },
                Answer::Failed(Verdict::Retry(failure)) => {
                    self.observe(started, &failure.status_label());
                    self.client.next_node();
                    items = self.count_failure(items, &failure);
                    self.retry_later(&failure, &mut attempts)
                }
                Answer::Failed(Verdict::Rejected {
                    code: code @ (401 | 403),
                    body,
                }) => {
                    self.observe(started, &code.to_string());
                    let delay = attempts.failed().unwrap_or(AUTH_RETRY).max(AUTH_RETRY);
                    tracing::error!(host = %self.host, status = code, elasticsearch_said = %body, retry_in = ?delay,
                        "Elasticsearch refused the credentials (api_key, basic_auth or bearer token); retrying");
                    self.report(|c| c.retrying = true);
                    Some(delay)
                }
                Answer::Failed(Verdict::Rejected { code, body }) => {
                    self.observe(started, &code.to_string());
                    tracing::warn!(host = %self.host, status = code, documents = items.len(), elasticsearch_said = %body,
                        "Elasticsearch refused a bulk request; its documents are dropped (not retried)");
                    let reason = format!("http_{code}");
                    self.drop_items(&items, &reason);
                    items.clear();
                    None
                }
            };
            if items.is_empty() {
                break;
            }
            let Some(delay) = delay else { continue };
            self.metrics.retries.get_or_create(&self.label()).inc();
            tokio::select! {
                biased;
                () = aborted(abort) => return false,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.report(|c| c.retrying = false);
        for ticket in tickets {
            self.acks.settle(ticket);
        }
        true
    }

    /// Applies a bulk answer: counts what was delivered and dropped, returns what is left.
    fn judge(&mut self, items: Vec<batch::Item>, outcomes: Vec<ItemOutcome>) -> Vec<batch::Item> {
        let mut left = Vec::new();
        let (mut delivered, mut delivered_bytes) = (0u64, 0u64);
        let mut first_rejection: Option<(u16, String, String)> = None;
        let mut rejected = 0usize;
        let mut retry_kind: Option<(u16, String)> = None;
        for (mut item, outcome) in items.into_iter().zip(outcomes) {
            match outcome {
                ItemOutcome::Delivered => {
                    delivered += 1;
                    delivered_bytes += item.line_bytes as u64;
                }
                ItemOutcome::Rejected {
                    status,
                    kind,
                    reason,
                } => {
                    rejected += 1;
                    self.drop_items(std::slice::from_ref(&item), &bulk::reason_label(&kind));
                    first_rejection.get_or_insert((status, kind, reason));
                }
                ItemOutcome::Retry { status, kind } => {
                    item.failures += 1;
                    if self.max_retries > 0 && item.failures >= self.max_retries {
                        self.drop_items(std::slice::from_ref(&item), "max_retries");
                        tracing::warn!(host = %self.host, status, error_type = %kind, attempts = item.failures,
                            "giving up on a document after max_retries; it is dropped");
                    } else {
                        retry_kind.get_or_insert((status, kind));
                        left.push(item);
                    }
                }
            }
        }
        if let Some((status, kind, reason)) = first_rejection {
            tracing::warn!(host = %self.host, documents = rejected, status, error_type = %kind, reason = %reason,
                "Elasticsearch refused documents for good; they are dropped (first error shown)");
        }
        let label = self.label();
        self.metrics
            .sent_entries
            .get_or_create(&label)
            .inc_by(delivered);
        self.metrics
            .sent_bytes
            .get_or_create(&label)
            .inc_by(delivered_bytes);
        let attempt_failed = !left.is_empty();
        let (result, host) = (
            match &retry_kind {
                Some((status, kind)) => {
                    format!("{} documents failed ({status} {kind})", left.len())
                }
                None => "delivered".to_string(),
            },
            self.host.clone(),
        );
        self.report(|c| {
            c.last_push = Some(unix_seconds(SystemTime::now()));
            c.last_result = Some(result);
            c.sent_entries += delivered;
            c.retrying = attempt_failed;
        });
        if !attempt_failed {
            self.failures.recovered(&host);
        }
        left
    }

    /// A whole attempt failed: every document still due failed once more.
    fn count_failure(&mut self, items: Vec<batch::Item>, failure: &Transient) -> Vec<batch::Item> {
        let result: String = failure.to_string().chars().take(200).collect();
        self.report(|c| {
            c.last_push = Some(unix_seconds(SystemTime::now()));
            c.last_result = Some(result);
            c.retrying = true;
        });
        let mut left = Vec::with_capacity(items.len());
        let mut given_up = Vec::new();
        for mut item in items {
            item.failures += 1;
            if self.max_retries > 0 && item.failures >= self.max_retries {
                given_up.push(item);
            } else {
                left.push(item);
            }
        }
        if !given_up.is_empty() {
            tracing::warn!(host = %self.host, documents = given_up.len(), last_error = %failure,
                "giving up on documents after max_retries; they are dropped");
            self.drop_items(&given_up, "max_retries");
        }
        left
    }

    /// The wait before the next attempt, logging the failure.
    fn retry_later(
        &mut self,
        failure: &Transient,
        attempts: &mut crate::ship::retry::Attempts,
    ) -> Option<Duration> {
        // The policy was built without a maximum: it always has a next delay.
        let delay = attempts.failed().unwrap_or(Duration::from_secs(1));
        let attempt = attempts.number();
        self.report(|c| c.attempt = attempt);
        self.failures.failed(&self.host, failure, delay);
        Some(delay)
    }

    fn observe(&self, started: Instant, status: &str) {
        self.metrics
            .request_duration
            .get_or_create(&HostStatus {
                host: self.host.clone(),
                status_code: status.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts documents dropped for good; their chunks still settle with the batch.
    fn drop_items(&self, items: &[batch::Item], reason: &str) {
        if items.is_empty() {
            return;
        }
        let count = items.len() as u64;
        let bytes: u64 = items.iter().map(|i| i.line_bytes as u64).sum();
        self.report(|c| c.dropped_entries += count);
        let label = HostReason {
            host: self.host.clone(),
            reason: reason.to_string(),
        };
        self.metrics
            .dropped_entries
            .get_or_create(&label)
            .inc_by(count);
        self.metrics
            .dropped_bytes
            .get_or_create(&label)
            .inc_by(bytes);
    }
}

impl crate::ship::batching::Batching for ElasticOutput {
    type Batch = Batch;

    fn empty_batch(&self) -> Batch {
        Batch::default()
    }

    fn batch_wait(&self) -> Duration {
        self.batch_wait
    }

    fn add(&mut self, batch: &mut Batch, chunk: &Arc<Chunk>, from: usize) -> Option<usize> {
        batch.add(
            &mut self.renderer,
            chunk,
            from,
            self.batch_size,
            Instant::now(),
        )
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
        ElasticOutput::send(self, batch, abort).await
    }
}

impl crate::ship::Output for ElasticOutput {
    fn name(&self) -> String {
        self.host.clone()
    }

    fn run(
        self: Box<Self>,
        inbox: crate::ship::Inbox,
        abort: watch::Receiver<bool>,
    ) -> crate::ship::OutputTask {
        Box::pin(async move {
            crate::ship::batching::run(*self, inbox, abort).await;
            Ok(())
        })
    }
}

/// This machine's name, for `host.name`.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error_of(yaml: &str) -> String {
        match Config::parse(yaml, "es.yaml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn config_mistakes_name_the_file_and_key() {
        let cases = [
            (
                "elasticsearch:\n- url: ftp://x\n",
                "es.yaml: elasticsearch[0].url:",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n  index: Logs-%Y\n",
                "elasticsearch[0].index",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n  index: logs-%Q\n",
                "unknown placeholder %Q",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n  index: a\n  data_stream: {}\n",
                "exclude each other",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n  data_stream: {dataset: a-b}\n",
                "elasticsearch[0].data_stream.dataset",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n  api_key: k\n  bearer_token: t\n",
                "at most one of",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n  compression: snappy\n",
                "elasticsearch[0].compression",
            ),
            (
                "elasticsearch:\n- url: http://127.0.0.1:9200\n\n  batchsize: 1MB\n",
                "es.yaml:4:3: elasticsearch[0].batchsize: unknown field",
            ),
        ];
        for (yaml, wanted) in cases {
            let error = error_of(yaml);
            assert!(error.contains(wanted), "{yaml}: {error}");
        }
    }

    #[test]
    fn one_url_or_several_and_defaults() {
        let config = Config::parse(
            "elasticsearch:\n- url: [http://127.0.0.1:9200, 'http://[::1]:9201/prefix']\n  max_retries: 4\n",
            "es.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let es = &config.elasticsearch[0];
        assert_eq!(es.url.as_slice().len(), 2);
        assert_eq!(es.index_pattern(), "logferry-%Y.%m.%d");
        assert_eq!(es.effective_max_retries(), 4);
        assert_eq!(es.compression, crate::config::Compression::Gzip);
        let specs = crate::ship::plan(&config, false, false);
        assert!(matches!(
            specs.as_slice(),
            [crate::ship::OutputSpec::Elasticsearch { index: 0, .. }]
        ));
    }
}
