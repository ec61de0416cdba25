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
use std::time::Instant;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// The discovered labels of a container; discovery replaces them when the container is
/// renamed, the reader takes them for every line.
pub type SharedLabels = Arc<Mutex<Arc<BTreeMap<String, String>>>>;

/// The label of a line's stream, offered to relabeling.
pub const STREAM_LABEL: &str = "__meta_docker_container_log_stream";

/// Longest line kept whole; a longer one (a TTY writing without newline) is let out in parts.
const MAX_LINE: usize = 8 << 20;
/// Bytes taken from the response, when more has already arrived, before they are sent.
const BATCH_BYTES: usize = 256 << 10;

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
}

pub fn run(
    api: &Api,
    io: &Handle,
    follow: Follow,
    mut step: RecordStep,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let mut position = follow.from;
    let end = |step, error, outputs_gone, position| Ended {
        step,
        position,
        error,
        outputs_gone,
    };
    let response = io.block_on(async {
        tokio::select! {
            r = api.logs(&follow.id, follow.from) => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        }
    });
    let mut response = match response {
        None => return end(step, None, false, position),
        Some(Err(e)) => return end(step, Some(e.to_string()), false, position),
        Some(Ok(r)) => r,
    };
    let mut decoder = Decoder::new(follow.tty, MAX_LINE);
    let mut lines: Vec<LogLine> = Vec::new();
    // The end of the response (or an error) met while taking what had already arrived.
    let mut ending = None;
    loop {
        let deadline = step.next_deadline();
        let next = if let Some(end) = ending.take() {
            Some(end)
        } else {
            io.block_on(async {
                let held = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    chunk = response.chunk() => Some(chunk),
                    _ = held => None,
                    _ = stop.wait_for(|s| *s) => Some(Ok(None)),
                }
            })
        };
        let finished = match next {
            // Stages hold lines past their wait time: let them out.
            None => false,
            Some(Ok(Some(bytes))) => {
                decoder.push(&bytes, &mut lines);
                // What already arrived goes in the same batch: fewer, fuller chunks when busy.
                let mut taken = bytes.len();
                while taken < BATCH_BYTES {
                    let more = io.block_on(async {
                        tokio::select! {
                            biased;
                            c = response.chunk() => Some(c),
                            _ = std::future::ready(()) => None,
                        }
                    });
                    match more {
                        Some(Ok(Some(bytes))) => {
                            taken += bytes.len();
                            decoder.push(&bytes, &mut lines);
                        }
                        None => break,
                        Some(end) => {
                            ending = Some(end);
                            break;
                        }
                    }
                }
                false
            }
            Some(Ok(None)) => {
                if !*stop.borrow() {
                    decoder.finish(&mut lines);
                }
                true
            }
            Some(Err(e)) => {
                // What was cut off is read again from the position next time.
                let message = format!("log of container {} cut off: {e}", follow.id);
                push(&mut step, &follow, &mut lines, &mut position);
                let gone = !step.finish();
                return end(step, Some(message), gone, position);
            }
        };
        push(&mut step, &follow, &mut lines, &mut position);
        let sent = if finished {
            step.finish()
        } else {
            step.send(Instant::now())
        };
        if !sent {
            return end(step, None, true, position);
        }
        if finished {
            return end(step, None, false, position);
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
