//! What every end-to-end floor does first: read the files and split them into chunks as the
//! tailer does (256 KiB reads, one chunk per read, registered with an acknowledger), so that
//! floors differ only in what their output does with the chunks.

use logferry::acknowledge::Acknowledger;
use logferry::entry::{Chunk, Line, Timestamp};
use logferry::labels::LabelSet;
use logferry::positions::{AckedOffset, FileId, Fingerprint, Table};
use logferry::tail::lines::{LineLimit, Splitter};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// What the reader hands over.
pub enum Read1 {
    /// One read's complete lines.
    Chunk(Arc<Chunk>),
    /// The file just read is done.
    FileEnd,
}

/// Reads each file in turn, calling `each` with its chunks, then with the end of the file.
pub fn read_chunks(paths: &[PathBuf], mut each: impl FnMut(Read1)) {
    let acks = Acknowledger::new(Table::default());
    for (i, path) in paths.iter().enumerate() {
        let labels = Arc::new(LabelSet::new([
            ("job", "bench"),
            ("filename", &*path.to_string_lossy()),
        ]));
        let source = acks.open(
            path,
            FileId {
                device: 0,
                inode: i as u64,
            },
            Fingerprint::of(b""),
            AckedOffset::START,
        );
        let mut file = std::fs::File::open(path).expect("open bench file");
        let mut splitter = Splitter::new(LineLimit::from_config(0, false));
        let mut offset = 0u64;
        loop {
            let mut buf = splitter.take_buffer(256 * 1024);
            let base = buf.len();
            buf.resize(base + 256 * 1024, 0);
            let n = file.read(&mut buf[base..]).expect("read bench file");
            buf.truncate(base + n);
            offset += n as u64;
            let split = splitter.split(buf, offset);
            if n == 0 {
                break;
            }
            let ts = Timestamp::now();
            let lines = split
                .spans
                .iter()
                .map(|s| Line {
                    start: s.start,
                    end: s.end,
                    timestamp: ts,
                    offset: s.offset,
                })
                .collect();
            let ticket = acks.dispatch(source, offset, offset, 1);
            each(Read1::Chunk(Arc::new(Chunk::new(
                ticket,
                labels.clone(),
                split.text,
                lines,
            ))));
        }
        each(Read1::FileEnd);
    }
}
