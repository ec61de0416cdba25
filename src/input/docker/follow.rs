//! Reading one container's log, on a thread of its own: the logs request is followed until
//! the container stops (Docker then ends the response), the daemon goes away, or the input
//! stops. Each line becomes a record with the container's labels and its stream; each batch
//! that arrived is sent before the next is read, so while the outputs are full the response
//! is not read and the daemon waits (backpressure, memory bounded by one read).

use super::api::Api;
use super::decode::{Decoder, LogLine};
use super::position::Position;
use crate::entry::Timestamp;
use crate::input::records::{Record, RecordStep};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The discovered labels of a container; discovery replaces them when the container is
/// renamed, the reader takes them for every line.
pub type SharedLabels = Arc<Mutex<Arc<BTreeMap<String, String>>>>;

/// The label of a line's stream, offered to relabeling.
pub const STREAM_LABEL: &str = "__meta_docker_container_log_stream";

/// Longest line kept whole; a longer one (a TTY writing without newline) is let out in parts.
const MAX_LINE: usize = 8 << 20;
/// Bytes taken from the response, at most, before they are sent.
const BATCH_BYTES: usize = 256 << 10;
/// How long after the first bytes of a batch more are waited for.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

pub struct Follow {
    pub id: String,
    pub tty: bool,
    pub labels: SharedLabels,
    /// Whether relabeling reads the stream label.
    pub stream_label: bool,
    /// Where to go on from; None reads the whole log, as Promtail does for a new container.
    pub from: Option<Position>,
}

/// How reading ended.
pub struct Ended {
    pub step: RecordStep,
    /// After the last line read (and sent), or where it started if it read nothing.
    pub position: Option<Position>,
    /// Why it ended, when not because the container stopped or the input stopped.
    pub error: Option<String>,
    /// True when the outputs are gone (the process is stopping).
    pub outputs_gone: bool,
    /// True when the daemon could not be reached: discovery's listing says so, once.
    pub daemon_away: bool,
}

pub fn run(api: &Api, follow: Follow, mut step: RecordStep, stop: watch::Receiver<bool>) -> Ended {
    let mut position = follow.from;
    let end = |step, error, outputs_gone, position| Ended {
        step,
        position,
        error,
        outputs_gone,
        daemon_away: false,
    };
    // The connection runs on this thread: a busy container's lines arrive as one small HTTP
    // chunk each, and handing each from an I/O thread to this one would cost a thread switch
    // per line. A client of its own, so no pooled connection outlives this runtime.
    let io = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(io) => io,
        Err(e) => {
            return end(
                step,
                Some(format!("cannot start a runtime: {e}")),
                false,
                position,
            );
        }
    };
    let api = match api.for_one_stream() {
        Ok(api) => api,
        Err(e) => return end(step, Some(e.to_string()), false, position),
    };
    let reading = io.block_on(async {
        let mut stop = stop.clone();
        tokio::select! {
            r = api.logs(&follow.id, follow.from) => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        }
    });
    let response = match reading {
        None => return end(step, None, false, position),
        Some(Err(e)) => {
            let daemon_away = matches!(e, super::api::ApiError::Unreachable { .. });
            return Ended {
                daemon_away,
                ..end(step, Some(e.to_string()), false, position)
            };
        }
        Some(Ok(r)) => r,
    };
    let mut reader = Reader {
        response,
        decoder: Decoder::new(follow.tty, MAX_LINE),
        ending: None,
        stop,
    };
    let mut lines: Vec<LogLine> = Vec::new();
    loop {
        let held = step.next_deadline();
        let outcome = io.block_on(reader.batch(held, &mut lines));
        push(&mut step, &follow, &mut lines, &mut position);
        let sent = match &outcome {
            Batch::Lines => step.send(Instant::now()),
            Batch::End | Batch::Failed(_) => step.finish(),
        };
        match outcome {
            _ if !sent => return end(step, None, true, position),
            Batch::Lines => {}
            Batch::End => return end(step, None, false, position),
            // What was cut off is read again from the position next time.
            Batch::Failed(e) => {
                let message = format!("log of container {} cut off: {e}", follow.id);
                return end(step, Some(message), false, position);
            }
        }
    }
}

/// What one wait for the response gave.
enum Batch {
    /// Lines (maybe none: the stages' wait time passed).
    Lines,
    /// The container stopped (Docker ended the response) or the input stops.
    End,
    Failed(String),
}

struct Reader {
    response: reqwest::Response,
    decoder: Decoder,
    /// The end (or an error) met while a batch was being filled: the next batch's outcome.
    ending: Option<Batch>,
    stop: watch::Receiver<bool>,
}

impl Reader {
    /// Waits for the response's next bytes (or until `held`, when the stages hold lines
    /// that must go out then), then takes what else arrives within [`BATCH_WINDOW`], up to
    /// [`BATCH_BYTES`]: a busy container's lines go out in few, full chunks.
    async fn batch(&mut self, held: Option<Instant>, lines: &mut Vec<LogLine>) -> Batch {
        if let Some(ending) = self.ending.take() {
            return ending;
        }
        let hold = async {
            match held {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            chunk = self.response.chunk() => chunk,
            _ = hold => return Batch::Lines,
            _ = self.stop.wait_for(|s| *s) => return Batch::End,
        };
        let mut taken = match self.take(first, lines) {
            Ok(n) => n,
            Err(ending) => return ending,
        };
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while taken < BATCH_BYTES {
            let next = tokio::select! {
                biased;
                chunk = self.response.chunk() => chunk,
                _ = &mut window => break,
            };
            match self.take(next, lines) {
                Ok(n) => taken += n,
                Err(ending) => {
                    self.ending = Some(ending);
                    break;
                }
            }
        }
        Batch::Lines
    }

    /// Decodes one read; Err with the outcome at the end of the response or on an error.
    fn take(
        &mut self,
        read: reqwest::Result<Option<bytes::Bytes>>,
        lines: &mut Vec<LogLine>,
    ) -> Result<usize, Batch> {
        match read {
            Ok(Some(bytes)) => {
                self.decoder.push(&bytes, lines);
                Ok(bytes.len())
            }
            Ok(None) => {
                self.decoder.finish(lines);
                Err(Batch::End)
            }
            Err(e) => Err(Batch::Failed(e.to_string())),
        }
    }
}

/// Hands the decoded lines to the step, skipping those already delivered.
fn push(
    step: &mut RecordStep,
    follow: &Follow,
    lines: &mut Vec<LogLine>,
    position: &mut Option<Position>,
) {
    if lines.is_empty() {
        return;
    }
    let labels = follow
        .labels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let now = Instant::now();
    for line in lines.drain(..) {
        let nanos = line.nanos.unwrap_or_else(|| Timestamp::now().0);
        if position.is_some_and(|p| p.covers(nanos)) {
            continue;
        }
        let mut record_labels = (*labels).clone();
        if follow.stream_label {
            record_labels.insert(STREAM_LABEL.to_string(), line.stream.name().to_string());
        }
        let at = Position::after(nanos);
        *position = Some(at);
        step.push(
            Record {
                labels: record_labels,
                timestamp: Timestamp::from_nanos(nanos),
                line: line.text,
                checkpoint: Some(Arc::from(at.text())),
            },
            now,
        );
    }
}
