//! The printing output: `-dry-run`, and configs without clients.
//!
//! Each entry is one line, `<timestamp>\t<labels>\t<line>`, in the format of Promtail's dry-run
//! (timestamp in Go's `2006-01-02T15:04:05.999999999-0700` layout, local time), so outputs of
//! the two can be compared line by line. Chunks are settled once written and flushed.
//!
//! Like Promtail's, the printed labels include `__tenant_id__` when a `tenant` stage chose a
//! tenant: Promtail's client takes that label out only when it sends a batch, so its dry-run
//! shows it.

use crate::acknowledge::Acknowledger;
use crate::entry::Chunk;
use crate::labels::go_quote_into;
use crate::pipeline::TENANT_LABEL;
use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Colours for a terminal: dim timestamp, cyan labels.
const DIM: &str = "\x1b[2m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// The chunk's labels as printed: its label set, plus the tenant a stage chose.
fn printed_labels(chunk: &Chunk) -> Cow<'_, str> {
    let Some(tenant) = &chunk.tenant else {
        return Cow::Borrowed(chunk.labels.rendered());
    };
    let mut out = String::with_capacity(chunk.labels.rendered().len() + tenant.len() + 20);
    let mut tenant_pending = true;
    let push = |out: &mut String, name: &str, value: &str| {
        out.push_str(if out.is_empty() { "{" } else { ", " });
        out.push_str(name);
        out.push('=');
        go_quote_into(value, out);
    };
    for (name, value) in chunk.labels.pairs() {
        if tenant_pending && name.as_str() > TENANT_LABEL {
            push(&mut out, TENANT_LABEL, tenant);
            tenant_pending = false;
        }
        push(&mut out, name, value);
    }
    if tenant_pending {
        push(&mut out, TENANT_LABEL, tenant);
    }
    out.push('}');
    Cow::Owned(out)
}

/// Writes one chunk's entries to `out`.
pub fn write_chunk(out: &mut impl Write, chunk: &Chunk, color: bool) -> std::io::Result<()> {
    let labels = printed_labels(chunk);
    for (line, text) in chunk.iter() {
        let ts = line.timestamp.to_go_layout();
        if color {
            writeln!(out, "{DIM}{ts}{RESET}\t{CYAN}{labels}{RESET}\t{text}")?;
        } else {
            writeln!(out, "{ts}\t{labels}\t{text}")?;
        }
    }
    Ok(())
}

/// The printing output.
pub struct Printer {
    acks: Arc<Acknowledger>,
    color: bool,
}

impl Printer {
    pub fn new(acks: Arc<Acknowledger>, color: bool) -> Printer {
        Printer { acks, color }
    }
}

impl super::Output for Printer {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn run(
        self: Box<Self>,
        inbox: super::Inbox,
        _abort: tokio::sync::watch::Receiver<bool>,
    ) -> super::OutputTask {
        // Every chunk is printed as it comes: nothing is held back, so starving is no matter.
        let queue = inbox.chunks;
        // Writing to standard output blocks; it gets a thread of its own. Abort needs nothing:
        // the printer never waits on anything but its queue and the terminal.
        Box::pin(async move {
            let (acks, color) = (self.acks, self.color);
            match tokio::task::spawn_blocking(move || run(queue, acks, color)).await {
                Ok(result) => result.map_err(super::OutputError::Stdout),
                Err(e) => Err(super::OutputError::Stdout(std::io::Error::other(e))),
            }
        })
    }
}

/// Prints chunks until the tailer stops sending; returns an error when standard output
/// fails (a closed pipe, say).
pub fn run(
    mut chunks: mpsc::Receiver<Arc<Chunk>>,
    acks: Arc<Acknowledger>,
    color: bool,
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut written = Vec::new();
    while let Some(chunk) = chunks.blocking_recv() {
        write_chunk(&mut out, &chunk, color)?;
        written.push(chunk.ticket);
        // Flush when no more is waiting, then settle: a line counts as delivered once it has
        // left the process.
        if chunks.is_empty() {
            out.flush()?;
            for ticket in written.drain(..) {
                acks.settle(ticket);
            }
        }
    }
    out.flush()?;
    for ticket in written {
        acks.settle(ticket);
    }
    Ok(())
}
