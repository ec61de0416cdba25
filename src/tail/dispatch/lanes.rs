//! A target's stages on several threads (lanes), so that parsing many busy files uses the
//! cores while the tailer keeps reading.
//!
//! Each lane owns a twin of the target's pipeline and runs on its own thread. A file is pinned
//! to one lane for as long as it is open, and files with the same labels (the generations of a
//! truncated or rotated file, or files a relabel made alike) go to the same lane, so the
//! lines of a file, and of a stream, go through one pipeline in order, and one lane registers
//! every chunk of a file's source with the acknowledger: positions move as they do with one
//! pipeline. A lane sends what comes out itself, closes the sources of the files it no longer
//! holds lines of, and releases what its stages held too long on its own clock.
//!
//! The channel to a lane is bounded: when a lane is behind, the tailer waits (backpressure),
//! so memory stays bounded by a few reads per lane.

use super::super::lines::Split;
use super::super::pipelined::TargetPipeline;
use crate::acknowledge::{Acknowledger, SourceKey};
use crate::entry::{ChunkSender, Timestamp};
use crate::labels::LabelSet;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

/// Reads a lane may have waiting.
const QUEUE: usize = 2;
/// Label sets whose lane is remembered (beyond, the table starts over).
const REMEMBERED: usize = 10_000;

enum Msg {
    Open {
        slot: u32,
        source: SourceKey,
        labels: Arc<LabelSet>,
        start: u64,
    },
    Relabel {
        slot: u32,
        labels: LabelSet,
    },
    Close {
        slot: u32,
        source: SourceKey,
    },
    Feed {
        slot: u32,
        split: Split,
        base: Timestamp,
        size: u64,
    },
    Inspect(bool),
    /// Release everything held (the target's stages are being replaced).
    FlushAll,
}

/// What every lane shares: where chunks go and how acknowledgements are kept.
#[derive(Clone)]
pub(super) struct Sink {
    pub acks: Arc<Acknowledger>,
    pub out: ChunkSender,
    pub metrics: Arc<Metrics>,
    /// Set once the outputs are gone.
    pub stopped: Arc<AtomicBool>,
}

impl Sink {
    /// Turns what came out of the stages into chunks and sends them; closes sources the stages
    /// are done with.
    fn finish(&self, tp: &mut TargetPipeline) {
        let mut chunks = Vec::new();
        let closable = tp.finish(&self.acks, &self.metrics, &mut chunks);
        for chunk in chunks {
            if self.stopped.load(Ordering::Relaxed) {
                break;
            }
            if self.out.blocking_send(chunk).is_err() {
                self.stopped.store(true, Ordering::Relaxed);
            }
        }
        for source in closable {
            self.acks.close(source, Instant::now());
        }
    }
}

struct Lane {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

/// What a lane's thread has.
struct Worker {
    tp: TargetPipeline,
    rx: Receiver<Msg>,
    sink: Sink,
    /// The tailer is going away: reads still queued are left (read again at the next start).
    quit: Arc<AtomicBool>,
}

/// The lanes of one target.
pub(super) struct Lanes {
    lanes: Vec<Lane>,
    /// The lane and source of each open slot.
    by_slot: HashMap<u32, (usize, SourceKey)>,
    by_labels: HashMap<String, usize>,
    next: usize,
    quit: Arc<AtomicBool>,
}

impl Lanes {
    /// `count` lanes running twins of `pipeline`; None when a twin cannot be built.
    pub fn start(pipeline: &Pipeline, count: usize, inspect: bool, sink: &Sink) -> Option<Lanes> {
        let mut lanes = Vec::with_capacity(count);
        let quit = Arc::new(AtomicBool::new(false));
        for i in 0..count {
            let twin = match pipeline.twin() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot run the stages on several threads");
                    return None;
                }
            };
            let (tx, rx) = sync_channel(QUEUE);
            let worker = Worker {
                tp: TargetPipeline::new(twin, inspect),
                rx,
                sink: sink.clone(),
                quit: quit.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("stages-{i}"))
                .spawn(move || worker.run());
            match thread {
                Ok(t) => lanes.push(Lane {
                    tx: Some(tx),
                    thread: Some(t),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a thread for the stages");
                    return None;
                }
            }
        }
        Some(Lanes {
            lanes,
            by_slot: HashMap::new(),
            by_labels: HashMap::new(),
            next: 0,
            quit,
        })
    }

    fn send(&mut self, lane: usize, msg: Msg) {
        if let Some(tx) = &self.lanes[lane].tx
            && tx.send(msg).is_err()
        {
            // The lane's thread ended (it panicked): what it had is read again next start.
            tracing::error!(
                lane,
                "a thread running pipeline stages ended; its files' positions stay where they are"
            );
            self.lanes[lane].tx = None;
        }
    }

    pub fn open(&mut self, slot: u32, source: SourceKey, labels: &Arc<LabelSet>, start: u64) {
        let key = labels.rendered();
        let lane = match self.by_labels.get(key) {
            Some(&lane) => lane,
            None => {
                let lane = self.next % self.lanes.len();
                self.next = self.next.wrapping_add(1);
                if self.by_labels.len() >= REMEMBERED {
                    self.by_labels.clear();
                }
                self.by_labels.insert(key.to_string(), lane);
                lane
            }
        };
        self.by_slot.insert(slot, (lane, source));
        let labels = labels.clone();
        self.send(
            lane,
            Msg::Open {
                slot,
                source,
                labels,
                start,
            },
        );
    }

    pub fn relabel(&mut self, slot: u32, labels: &LabelSet) {
        if let Some(&(lane, _)) = self.by_slot.get(&slot) {
            let labels = labels.clone();
            self.send(lane, Msg::Relabel { slot, labels });
        }
    }

    /// The lane closes the file's source once its stages hold nothing of it.
    pub fn close(&mut self, slot: u32) {
        if let Some((lane, source)) = self.by_slot.remove(&slot) {
            self.send(lane, Msg::Close { slot, source });
        }
    }

    pub fn feed(&mut self, slot: u32, split: Split, base: Timestamp, size: u64) {
        if let Some(&(lane, _)) = self.by_slot.get(&slot) {
            self.send(
                lane,
                Msg::Feed {
                    slot,
                    split,
                    base,
                    size,
                },
            );
        }
    }

    pub fn set_inspect(&mut self, inspect: bool) {
        for lane in 0..self.lanes.len() {
            self.send(lane, Msg::Inspect(inspect));
        }
    }

    /// Lets the lanes release everything they hold, and waits for them to end.
    pub fn flush_and_stop(mut self) {
        for lane in 0..self.lanes.len() {
            self.send(lane, Msg::FlushAll);
        }
        self.stop();
    }

    fn stop(&mut self) {
        for lane in &mut self.lanes {
            lane.tx = None;
        }
        for lane in &mut self.lanes {
            if let Some(t) = lane.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        self.stop();
    }
}

/// A lane's thread: takes messages until the tailer drops its end of the channel.
impl Worker {
    fn run(self) {
        let Worker {
            mut tp,
            rx,
            sink,
            quit,
        } = self;
        loop {
            let msg = match tp.next_deadline() {
                Some(deadline) => {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => return,
                },
            };
            let mut send = true;
            match msg {
                None => {}
                Some(Msg::Open {
                    slot,
                    source,
                    labels,
                    start,
                }) => {
                    tp.open(slot, source, &labels, start);
                    send = false;
                }
                Some(Msg::Relabel { slot, labels }) => {
                    tp.relabel(slot, &labels);
                    send = false;
                }
                Some(Msg::Close { slot, source }) => {
                    if tp.close(slot) {
                        sink.acks.close(source, Instant::now());
                    }
                    send = false;
                }
                Some(Msg::Feed {
                    slot,
                    split,
                    base,
                    size,
                }) if !sink.stopped.load(Ordering::Relaxed) && !quit.load(Ordering::Relaxed) => {
                    tp.feed(slot, &split, base, size, Instant::now());
                }
                Some(Msg::Feed { .. }) => {}
                Some(Msg::Inspect(inspect)) => {
                    tp.set_inspect(inspect);
                    send = false;
                }
                Some(Msg::FlushAll) => tp.flush_all(),
            }
            let now = Instant::now();
            if tp.next_deadline().is_some_and(|d| d <= now) {
                tp.flush_due(now);
                send = true;
            }
            if send {
                sink.finish(&mut tp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CustomMetrics;
    use crate::positions::{AckedOffset, FileId, Fingerprint, Table};
    use crate::tail::lines::{LineLimit, Splitter};

    fn split(text: &str, end: u64) -> Split {
        let mut s = Splitter::new(LineLimit {
            max: 1 << 20,
            truncate: true,
        });
        let mut buf = s.take_buffer(text.len());
        buf.extend_from_slice(text.as_bytes());
        s.split(buf, end)
    }

    #[test]
    fn files_in_lanes_keep_their_order_and_positions() {
        let acks = Arc::new(Acknowledger::new(Table::default()));
        let (out, mut chunks) = tokio::sync::mpsc::channel(1024);
        let sink = Sink {
            acks: acks.clone(),
            out: ChunkSender::new(out, crate::budget::Budget::unlimited()),
            metrics: Arc::new(Metrics::new()),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let yaml: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(
            "- regex:\n    expression: '^(?P<n>\\d+) (?P<level>\\w+)$'\n- labels:\n    level:\n- multiline:\n    firstline: '^\\d'\n",
        )
        .unwrap();
        let pipeline = Pipeline::new(&yaml, &CustomMetrics::default(), "t").unwrap();
        let mut lanes = Lanes::start(&pipeline, 2, false, &sink).unwrap();
        let files = 5u64;
        let mut ends = Vec::new();
        for f in 0..files {
            let id = FileId {
                device: 1,
                inode: f,
            };
            let path = format!("/f{f}");
            let source = acks.open(
                std::path::Path::new(&path),
                id,
                Fingerprint::of(b""),
                AckedOffset::START,
            );
            let labels = Arc::new(LabelSet::new([("job", "j"), ("filename", path.as_str())]));
            lanes.open(f as u32, source, &labels, 0);
            ends.push((id, 0u64));
        }
        // Reads of every file, interleaved, each line numbered within its file.
        for read in 0..20u64 {
            for f in 0..files {
                let mut text = String::new();
                for i in 0..50 {
                    let n = read * 50 + i;
                    let level = ["info", "warn", "error"][(n % 3) as usize];
                    text.push_str(&format!("{n} {level}\n"));
                }
                let (_, end) = &mut ends[f as usize];
                *end += text.len() as u64;
                lanes.feed(f as u32, split(&text, *end), Timestamp::from_nanos(1), *end);
            }
        }
        for f in 0..files {
            lanes.close(f as u32);
        }
        lanes.flush_and_stop();
        drop(sink);
        // Every line came out once, in its file's order within each stream.
        let mut seen: HashMap<(String, String), Vec<u64>> = HashMap::new();
        let mut lines = 0;
        while let Ok(chunk) = chunks.try_recv() {
            let file = chunk.labels.get("filename").unwrap().to_string();
            let level = chunk.labels.get("level").unwrap().to_string();
            for line in &chunk.lines {
                let text = chunk.line_text(line);
                let n: u64 = text.split(' ').next().unwrap().parse().unwrap();
                assert!(text.ends_with(&level), "{text} in the {level} stream");
                seen.entry((file.clone(), level.clone()))
                    .or_default()
                    .push(n);
                lines += 1;
            }
            acks.arm(chunk.ticket, 1);
            acks.settle(chunk.ticket);
        }
        assert_eq!(lines, files * 20 * 50);
        for ((file, level), ns) in &seen {
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "{file} {level}: {ns:?}");
        }
        // Once everything is settled, every file's position is at its end.
        for (id, end) in ends {
            assert_eq!(acks.with_table(|t| t.offset(id)), Some(end));
        }
    }
}
