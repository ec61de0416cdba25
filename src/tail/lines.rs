//! Splitting what was read into lines.
//!
//! [`Splitter`] is pure: it is handed the bytes of each read and returns the chunk text and line
//! spans. It carries only an unfinished last line between reads, bounded by the line limit, so a
//! 50 MB line without a newline never holds more than the limit in memory.

/// How long lines may be, from `limits_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineLimit {
    /// Longest line kept, in bytes (without its newline).
    pub max: usize,
    /// Keep the first `max` bytes of a longer line (true) or drop the line (false).
    pub truncate: bool,
}

/// The ceiling used when `max_line_size` is 0: lines up to it pass whole, longer ones are cut
/// there. It exists so that memory stays bounded whatever a file holds.
pub const DEFAULT_LINE_CEILING: usize = 16 << 20;

impl LineLimit {
    /// The limit from `limits_config`, with 0 meaning [`DEFAULT_LINE_CEILING`] (truncating).
    pub fn from_config(max_line_size: u64, truncate: bool) -> LineLimit {
        if max_line_size == 0 {
            LineLimit {
                max: DEFAULT_LINE_CEILING,
                truncate: true,
            }
        } else {
            LineLimit {
                max: usize::try_from(max_line_size)
                    .unwrap_or(usize::MAX)
                    .min(1 << 30),
                truncate,
            }
        }
    }

    /// The limit for reading the files of a target with stages, which apply the configured
    /// one to what leaves them: only the memory ceiling (or the configured limit when higher),
    /// truncating.
    pub fn before_stages(self) -> LineLimit {
        LineLimit {
            max: self.max.max(DEFAULT_LINE_CEILING),
            truncate: true,
        }
    }
}

/// A span of a complete line in the split text, with the file offset just past its newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
    pub offset: u64,
}

/// What one split produced.
#[derive(Debug, Default)]
pub struct Split {
    pub text: String,
    pub spans: Vec<Span>,
    /// Lines longer than the limit that were dropped whole.
    pub dropped_too_long: u64,
    /// Lines longer than the limit that were cut to it.
    pub truncated: u64,
    /// Lines in which invalid UTF-8 was replaced by U+FFFD.
    pub invalid_utf8: u64,
}

impl Split {
    /// The chunk lines of this split, read at `base` and after: lines read together share the
    /// read time, nudged apart by a nanosecond each so that a source's lines keep their order
    /// and identical lines are not taken for duplicates.
    pub fn lines_at(&self, base: crate::entry::Timestamp) -> Vec<crate::entry::Line> {
        self.spans
            .iter()
            .enumerate()
            .map(|(i, s)| crate::entry::Line {
                start: s.start,
                end: s.end,
                timestamp: crate::entry::Timestamp::from_nanos(base.0 + i as i64),
                offset: s.offset,
            })
            .collect()
    }

    /// The timestamp for a split read now, after a last line stamped `last`, and the stamp
    /// its own last line will get.
    pub fn stamp(
        &self,
        last: crate::entry::Timestamp,
    ) -> (crate::entry::Timestamp, crate::entry::Timestamp) {
        let base =
            crate::entry::Timestamp::from_nanos(crate::entry::Timestamp::now().0.max(last.0 + 1));
        (
            base,
            crate::entry::Timestamp::from_nanos(base.0 + self.spans.len().max(1) as i64 - 1),
        )
    }
}

/// Turns successive reads of one file into complete lines.
#[derive(Debug)]
pub struct Splitter {
    limit: LineLimit,
    /// Bytes of the unfinished last line (at most `limit.max`).
    partial: Vec<u8>,
    /// The unfinished line is over the limit: bytes up to its newline are skipped.
    skipping: bool,
    /// Bytes per line in this file's last split (0 before the first): what the next split's
    /// spans are sized from.
    line_bytes: u32,
}

/// Bytes per line guessed for a file's first split. Lines of logs run from 50 to 300 bytes;
/// a guess on the short side sizes the spans a little over, and they only live until the
/// chunk's lines are made of them.
const FIRST_LINE_BYTES: usize = 64;

/// Spans reserved ahead at most (64 KiB of them): a file of empty lines followed by a long
/// buffer must not reserve a span per byte of it.
const SPANS_AHEAD: usize = 4096;

impl Splitter {
    pub fn new(limit: LineLimit) -> Splitter {
        Splitter {
            limit,
            partial: Vec::new(),
            skipping: false,
            line_bytes: 0,
        }
    }

    /// Bytes of an unfinished last line held back for its newline.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Forgets any unfinished line (after a truncation, say).
    pub fn reset(&mut self) {
        self.partial = Vec::new();
        self.skipping = false;
    }

    /// Starts a read buffer: the unfinished line goes first, then the caller appends what it
    /// reads. Taking the buffer this way lets the read land where the chunk text will live.
    pub fn take_buffer(&mut self, read_size: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.partial.len() + read_size);
        buf.append(&mut self.partial);
        buf
    }

    /// Splits `buf` (from [`take_buffer`](Self::take_buffer) plus fresh bytes) whose last byte
    /// sits just before file offset `end_offset`. Complete lines become spans; an unfinished
    /// tail is kept for the next call.
    pub fn split(&mut self, mut buf: Vec<u8>, end_offset: u64) -> Split {
        let mut split = Split::default();
        let buf_start = end_offset - buf.len() as u64;
        let Some(last_nl) = memchr::memrchr(b'\n', &buf) else {
            self.hold_partial(buf);
            return split;
        };
        let tail = buf.split_off(last_nl + 1);
        // Sized ahead: pushed one by one from empty, the spans of a file of 100 lines were
        // reallocated 6 times, 5 % of the reading thread's instructions on 10,000 small files.
        let per_line = match self.line_bytes {
            0 => FIRST_LINE_BYTES,
            n => n as usize,
        };
        split
            .spans
            .reserve((buf.len() / per_line + 1).min(SPANS_AHEAD));
        let mut truncated_spans = Vec::new();
        let mut pos = 0usize;
        for nl in memchr::memchr_iter(b'\n', &buf) {
            let start = pos;
            pos = nl + 1;
            let mut end = if nl > start && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            // A line over the limit, or the rest of one whose head was held back.
            let over = self.skipping || end - start > self.limit.max;
            self.skipping = false;
            if over {
                if !self.limit.truncate {
                    split.dropped_too_long += 1;
                    continue;
                }
                split.truncated += 1;
                end = end.min(start + self.limit.max);
                truncated_spans.push(split.spans.len());
            }
            split.spans.push(Span {
                start: start as u32,
                end: end as u32,
                offset: buf_start + pos as u64,
            });
        }
        if !split.spans.is_empty() {
            self.line_bytes = u32::try_from(buf.len() / split.spans.len())
                .unwrap_or(u32::MAX)
                .max(1);
        }
        split.text = match String::from_utf8(buf) {
            Ok(text) => text,
            Err(err) => {
                let bytes = err.into_bytes();
                relabel_lossy(&bytes, &mut split)
            }
        };
        // A cut may land inside a multi-byte character: move it back to a boundary.
        for i in truncated_spans {
            let span = &mut split.spans[i];
            while span.end > span.start && !split.text.is_char_boundary(span.end as usize) {
                span.end -= 1;
            }
        }
        self.hold_partial(tail);
        split
    }

    /// Returns the unfinished last line as a line of its own, for a file that will never be
    /// read again (rotated away and drained).
    pub fn finish(&mut self, end_offset: u64) -> Split {
        if self.partial.is_empty() && !self.skipping {
            return Split::default();
        }
        let mut buf = std::mem::take(&mut self.partial);
        buf.push(b'\n');
        let mut split = self.split(buf, end_offset + 1);
        if let Some(last) = split.spans.last_mut() {
            last.offset = end_offset;
        }
        split
    }

    fn hold_partial(&mut self, mut tail: Vec<u8>) {
        if self.skipping || tail.len() > self.limit.max {
            // Over the limit: keep only the head (when truncating) and skip to the newline.
            self.skipping = true;
            if self.limit.truncate {
                tail.truncate(self.limit.max);
                self.partial = tail;
            } else {
                self.partial = Vec::new();
            }
        } else {
            self.partial = tail;
        }
    }
}

/// The slow path for chunks holding invalid UTF-8: each line is converted on its own, with
/// U+FFFD for what is invalid, and the spans are rebuilt over the converted text.
fn relabel_lossy(bytes: &[u8], split: &mut Split) -> String {
    let mut text = String::with_capacity(bytes.len() + 16);
    for span in &mut split.spans {
        let line = &bytes[span.start as usize..span.end as usize];
        let converted = String::from_utf8_lossy(line);
        if matches!(converted, std::borrow::Cow::Owned(_)) {
            split.invalid_utf8 += 1;
        }
        span.start = text.len() as u32;
        text.push_str(&converted);
        span.end = text.len() as u32;
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(split: &Split) -> Vec<(&str, u64)> {
        split
            .spans
            .iter()
            .map(|s| (&split.text[s.start as usize..s.end as usize], s.offset))
            .collect()
    }

    fn feed(splitter: &mut Splitter, data: &[u8], end: u64) -> Split {
        let mut buf = splitter.take_buffer(data.len());
        buf.extend_from_slice(data);
        splitter.split(buf, end)
    }

    const UNLIMITED: LineLimit = LineLimit {
        max: 1 << 20,
        truncate: true,
    };

    #[test]
    fn splits_complete_lines_and_holds_the_rest() {
        let mut s = Splitter::new(UNLIMITED);
        let out = feed(&mut s, b"one\ntwo\r\nthr", 12);
        assert_eq!(lines(&out), vec![("one", 4), ("two", 9)]);
        assert_eq!(s.pending(), 3);
        let out = feed(&mut s, b"ee\n\n", 16);
        assert_eq!(lines(&out), vec![("three", 15), ("", 16)]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn no_newline_means_no_line() {
        let mut s = Splitter::new(UNLIMITED);
        assert!(feed(&mut s, b"abc", 3).spans.is_empty());
        assert_eq!(s.finish(3).spans.len(), 1);
    }

    #[test]
    fn finish_emits_the_unfinished_line_at_its_end_offset() {
        let mut s = Splitter::new(UNLIMITED);
        feed(&mut s, b"a\nlast", 6);
        let out = s.finish(6);
        assert_eq!(lines(&out), vec![("last", 6)]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted_nul_passes() {
        let mut s = Splitter::new(UNLIMITED);
        let out = feed(&mut s, b"ok\nbad\xff\xfe!\nnul\0x\n", 16);
        assert_eq!(
            lines(&out),
            vec![("ok", 3), ("bad\u{fffd}\u{fffd}!", 10), ("nul\0x", 16)]
        );
        assert_eq!(out.invalid_utf8, 1);
    }

    #[test]
    fn long_lines_are_truncated_on_a_char_boundary() {
        let mut s = Splitter::new(LineLimit {
            max: 3,
            truncate: true,
        });
        let out = feed(&mut s, "abcdef\nxyé\nok\n".as_bytes(), 15);
        assert_eq!(
            lines(&out).iter().map(|l| l.0).collect::<Vec<_>>(),
            vec!["abc", "xy", "ok"]
        );
        assert_eq!(out.truncated, 2);
    }

    #[test]
    fn long_lines_are_dropped_and_counted() {
        let mut s = Splitter::new(LineLimit {
            max: 4,
            truncate: false,
        });
        let out = feed(&mut s, b"abcdef\nok\n", 10);
        assert_eq!(lines(&out), vec![("ok", 10)]);
        assert_eq!(out.dropped_too_long, 1);
    }

    #[test]
    fn a_huge_unfinished_line_stays_within_the_limit() {
        for truncate in [true, false] {
            let mut s = Splitter::new(LineLimit {
                max: 1000,
                truncate,
            });
            let block = vec![b'x'; 64 * 1024];
            let mut end = 0;
            for _ in 0..100 {
                end += block.len() as u64;
                assert!(feed(&mut s, &block, end).spans.is_empty());
                assert!(s.pending() <= 1000);
            }
            end += 6;
            let out = feed(&mut s, b"\nnext\n", end);
            let got = lines(&out);
            if truncate {
                assert_eq!(got.len(), 2);
                assert_eq!(got[0].0.len(), 1000);
                assert_eq!(got[0].1, end - 5);
                assert_eq!(out.truncated, 1);
            } else {
                assert_eq!(got, vec![("next", end)]);
                assert_eq!(out.dropped_too_long, 1);
            }
        }
    }

    #[test]
    fn offsets_are_file_offsets() {
        let mut s = Splitter::new(UNLIMITED);
        // The first read started at offset 100 of the file.
        let out = feed(&mut s, b"ab\ncd\n", 106);
        assert_eq!(lines(&out), vec![("ab", 103), ("cd", 106)]);
    }
}
