//! Retrying HTTP pushes: what a push came to, whether to try again, and when.
//!
//! Every HTTP output (Loki's push API, a bulk API) answers the same three questions about a
//! failed request — is it worth trying again, how long to wait, when to give up — and logs
//! the same way while a sink is down. Keeping that here, with failures as types rather than
//! strings, is what lets a new output reuse it unchanged.

use crate::config::BackoffConfig;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::{Duration, Instant};

/// A push that may succeed if tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Transient {
    /// No answer within the client timeout.
    #[error("timeout: no answer within the client timeout")]
    Timeout,
    /// The connection could not be made or broke (refused, reset, TLS, DNS).
    #[error("connection: {0}")]
    Connection(String),
    /// The server answered with a status that says "later" (5xx, 408).
    #[error("{code}: {body}")]
    Status { code: u16, body: String },
    /// The server asked to slow down (429).
    #[error("429: rate limited: {0}")]
    RateLimited(String),
}

impl Transient {
    /// The `status_code` label of request metrics: the HTTP status, or what went wrong.
    pub fn status_label(&self) -> String {
        match self {
            Transient::Timeout => "timeout".into(),
            Transient::Connection(_) => "connection".into(),
            Transient::Status { code, .. } => code.to_string(),
            Transient::RateLimited(_) => "429".into(),
        }
    }

    /// Failures of one kind are logged once per interval, not once per attempt.
    fn kind(&self) -> (u8, u16) {
        match self {
            Transient::Timeout => (0, 0),
            Transient::Connection(_) => (1, 0),
            Transient::Status { code, .. } => (2, *code),
            Transient::RateLimited(_) => (3, 429),
        }
    }

    /// Sorts a finished request into "delivered", "failed for good" or "try again". Only
    /// statuses the sink uses for "the request itself is wrong" (4xx but 408 and 429) are
    /// final; anything else may pass later.
    pub fn classify(status: u16, body: String) -> Result<(), Verdict> {
        match status {
            200..=299 => Ok(()),
            429 => Err(Verdict::Retry(Transient::RateLimited(body))),
            408 => Err(Verdict::Retry(Transient::Status { code: status, body })),
            400..=499 => Err(Verdict::Rejected { code: status, body }),
            _ => Err(Verdict::Retry(Transient::Status { code: status, body })),
        }
    }

    /// A request that got no answer.
    pub fn from_reqwest(e: &reqwest::Error) -> Transient {
        if e.is_timeout() {
            Transient::Timeout
        } else {
            Transient::Connection(error_chain(e))
        }
    }
}

/// Why a push did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after a delay.
    Retry(Transient),
    /// The sink refused the content for good: retrying cannot help.
    Rejected { code: u16, body: String },
}

/// The retry policy of one output, from its `backoff_config`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    backoff: ExponentialBuilder,
    /// 0: never give up.
    max_retries: u32,
}

impl RetryPolicy {
    pub fn new(config: &BackoffConfig) -> RetryPolicy {
        let min = config.min_period.0;
        RetryPolicy {
            backoff: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(config.max_period.0.max(min))
                .with_jitter()
                .without_max_times(),
            max_retries: config.max_retries,
        }
    }

    /// The attempts of one request (a batch), starting with the first.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            delays: Box::new(self.backoff.build()),
            attempt: 1,
            max_retries: self.max_retries,
        }
    }
}

/// Counts the attempts of one request and says how long to wait before the next.
pub struct Attempts {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    attempt: u32,
    max_retries: u32,
}

impl Attempts {
    /// The attempt under way, from 1.
    pub fn number(&self) -> u32 {
        self.attempt
    }

    /// The current attempt failed: the delay before the next one, or None when the policy
    /// says to give up (`max_retries` attempts made).
    pub fn failed(&mut self) -> Option<Duration> {
        if self.max_retries > 0 && self.attempt >= self.max_retries {
            return None;
        }
        self.attempt += 1;
        // The builder has no maximum count, so it never runs dry; five minutes is the
        // longest wait any sane config asks for.
        Some(self.delays.next().unwrap_or(Duration::from_secs(300)))
    }
}

/// Logs a failing sink without repeating itself: the first failure and each new kind of
/// failure at once, the same kind again at most every 30 s, and the recovery.
#[derive(Debug, Default)]
pub struct FailureLog {
    last: Option<((u8, u16), Instant)>,
    repeats: u64,
}

impl FailureLog {
    pub fn failed(&mut self, sink: &str, failure: &Transient, retry_in: Duration) {
        let kind = failure.kind();
        match &mut self.last {
            Some((last, at)) if *last == kind && at.elapsed() < Duration::from_secs(30) => {
                self.repeats += 1;
            }
            _ => {
                tracing::warn!(host = sink, error = %failure, retry_in = ?retry_in,
                    repeated = self.repeats, "push failed; retrying");
                self.last = Some((kind, Instant::now()));
                self.repeats = 0;
            }
        }
    }

    pub fn recovered(&mut self, sink: &str) {
        if self.last.take().is_some() {
            tracing::info!(host = sink, "push succeeded again");
            self.repeats = 0;
        }
    }
}

/// An error with its causes, for a log line: reqwest's own message says little.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::GoDuration;

    #[test]
    fn statuses_sort_into_delivered_final_and_transient() {
        assert_eq!(Transient::classify(204, String::new()), Ok(()));
        assert!(matches!(
            Transient::classify(400, "bad".into()),
            Err(Verdict::Rejected { code: 400, .. })
        ));
        assert!(matches!(
            Transient::classify(429, String::new()),
            Err(Verdict::Retry(Transient::RateLimited(_)))
        ));
        assert!(matches!(
            Transient::classify(408, String::new()),
            Err(Verdict::Retry(Transient::Status { code: 408, .. }))
        ));
        assert!(matches!(
            Transient::classify(503, String::new()),
            Err(Verdict::Retry(Transient::Status { code: 503, .. }))
        ));
    }

    #[test]
    fn status_labels_name_the_failure_not_its_message() {
        assert_eq!(Transient::Timeout.status_label(), "timeout");
        assert_eq!(
            Transient::Connection("refused: 127.0.0.1:1".into()).status_label(),
            "connection"
        );
        let busy = Transient::Status {
            code: 503,
            body: "busy: try later".into(),
        };
        assert_eq!(busy.status_label(), "503");
    }

    #[test]
    fn attempts_stop_at_max_retries_and_wait_within_the_bounds() {
        let policy = RetryPolicy::new(&BackoffConfig {
            min_period: GoDuration(Duration::from_millis(10)),
            max_period: GoDuration(Duration::from_millis(40)),
            max_retries: 3,
        });
        let mut attempts = policy.attempts();
        for _ in 0..2 {
            let delay = attempts.failed().unwrap_or_default();
            assert!(delay >= Duration::from_millis(10) && delay <= Duration::from_millis(80));
        }
        assert_eq!(attempts.number(), 3);
        assert_eq!(attempts.failed(), None);
    }

    #[test]
    fn zero_max_retries_never_gives_up() {
        let policy = RetryPolicy::new(&BackoffConfig {
            min_period: GoDuration(Duration::from_millis(1)),
            max_period: GoDuration(Duration::from_millis(2)),
            max_retries: 0,
        });
        let mut attempts = policy.attempts();
        assert!((0..1000).all(|_| attempts.failed().is_some()));
    }
}
