//! TCP framing (RFC 6587), decided by a connection's first byte as Promtail does: a digit
//! starts octet counting (`LEN SP MSG`), anything else is one message per line.
//!
//! The buffer never holds more than one message of `max` bytes plus one read: a longer
//! message is reported as too long and its bytes are skipped as they arrive, so a client
//! cannot make the listener hold unbounded memory.

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Message(&'a [u8]),
    /// A message longer than the limit; its bytes are skipped.
    TooLong,
}

/// The octet count is not a number: the stream cannot be split any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("octet-counting frame without a valid length")]
pub struct BrokenFraming;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    OctetCounting,
    Newline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    Bytes(usize),
    ToNewline,
}

/// Splits one connection's bytes into frames.
pub struct Decoder {
    max: usize,
    framing: Option<Framing>,
    buf: Vec<u8>,
    start: usize,
    skip: Skip,
}

/// The longest octet count read: 10 digits is more than any limit.
const MAX_DIGITS: usize = 10;

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder {
            max,
            framing: None,
            buf: Vec::new(),
            start: 0,
            skip: Skip::Nothing,
        }
    }

    /// Where the next read appends its bytes.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Hands every complete frame in the buffer to `each`.
    pub fn decode(&mut self, mut each: impl FnMut(Frame<'_>)) -> Result<(), BrokenFraming> {
        let result = self.decode_inner(&mut each);
        self.compact();
        result
    }

    fn decode_inner(&mut self, each: &mut impl FnMut(Frame<'_>)) -> Result<(), BrokenFraming> {
        loop {
            match self.skip {
                Skip::Nothing => {}
                Skip::Bytes(n) => {
                    let k = n.min(self.buf.len() - self.start);
                    self.start += k;
                    if n > k {
                        self.skip = Skip::Bytes(n - k);
                        return Ok(());
                    }
                    self.skip = Skip::Nothing;
                }
                Skip::ToNewline => match memchr::memchr(b'\n', &self.buf[self.start..]) {
                    Some(p) => {
                        self.start += p + 1;
                        self.skip = Skip::Nothing;
                    }
                    None => {
                        self.start = self.buf.len();
                        return Ok(());
                    }
                },
            }
            let data = &self.buf[self.start..];
            let Some(&first) = data.first() else {
                return Ok(());
            };
            let framing = *self.framing.get_or_insert(if first.is_ascii_digit() {
                Framing::OctetCounting
            } else {
                Framing::Newline
            });
            match framing {
                Framing::OctetCounting => {
                    // Some senders end each counted frame with a line end anyway.
                    if matches!(first, b'\n' | b'\r') {
                        self.start += 1;
                        continue;
                    }
                    let Some(space) = data.iter().take(MAX_DIGITS + 1).position(|b| *b == b' ')
                    else {
                        if data.len() > MAX_DIGITS || !data.iter().all(u8::is_ascii_digit) {
                            return Err(BrokenFraming);
                        }
                        return Ok(());
                    };
                    let digits = &data[..space];
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(BrokenFraming);
                    }
                    let len = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<usize>().ok())
                        .ok_or(BrokenFraming)?;
                    if len > self.max {
                        each(Frame::TooLong);
                        self.start += space + 1;
                        self.skip = Skip::Bytes(len);
                        continue;
                    }
                    if data.len() < space + 1 + len {
                        return Ok(());
                    }
                    if len > 0 {
                        each(Frame::Message(&data[space + 1..space + 1 + len]));
                    }
                    self.start += space + 1 + len;
                }
                Framing::Newline => match memchr::memchr(b'\n', data) {
                    Some(p) => {
                        let line = &data[..p];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        if line.len() > self.max {
                            each(Frame::TooLong);
                        } else if !line.is_empty() {
                            each(Frame::Message(line));
                        }
                        self.start += p + 1;
                    }
                    None => {
                        if data.len() > self.max {
                            each(Frame::TooLong);
                            self.start = self.buf.len();
                            self.skip = Skip::ToNewline;
                        }
                        return Ok(());
                    }
                },
            }
        }
    }

    /// The connection ended: a last line without its line end is still a message; a counted
    /// frame cut short is reported as too short (None when nothing was left).
    pub fn finish(&mut self, mut each: impl FnMut(Frame<'_>)) -> Result<(), BrokenFraming> {
        let data = &self.buf[self.start..];
        let result = match (self.framing, self.skip) {
            (_, Skip::Bytes(_) | Skip::ToNewline) | (None, _) => Ok(()),
            (Some(_), Skip::Nothing) if data.iter().all(|b| b.is_ascii_whitespace()) => Ok(()),
            (Some(Framing::Newline), Skip::Nothing) => {
                each(Frame::Message(data));
                Ok(())
            }
            (Some(Framing::OctetCounting), Skip::Nothing) => Err(BrokenFraming),
        };
        self.buf.clear();
        self.start = 0;
        result
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> (Vec<String>, Result<(), BrokenFraming>) {
        let mut decoder = Decoder::new(max);
        let mut out = Vec::new();
        let mut push = |f: Frame<'_>| {
            out.push(match f {
                Frame::Message(m) => String::from_utf8_lossy(m).into_owned(),
                Frame::TooLong => "<too long>".into(),
            })
        };
        for chunk in chunks {
            decoder.buffer().extend_from_slice(chunk);
            if let Err(e) = decoder.decode(&mut push) {
                return (out, Err(e));
            }
        }
        let end = decoder.finish(&mut push);
        (out, end)
    }

    #[test]
    fn octet_counted_frames_split_across_reads() {
        let (out, end) = frames(100, &[b"5 hel", b"lo3 ab", b"c\n2 xy"]);
        assert_eq!(out, ["hello", "abc", "xy"]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn newline_frames_and_a_last_line_without_its_end() {
        let (out, end) = frames(100, &[b"<1>a\r\n\n<2>b", b"\n<3>c"]);
        assert_eq!(out, ["<1>a", "<2>b", "<3>c"]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn too_long_messages_are_skipped_and_the_next_ones_kept() {
        let long = vec![b'x'; 50];
        let mut counted = b"50 ".to_vec();
        counted.extend_from_slice(&long);
        counted.extend_from_slice(b"2 ok");
        let (out, _) = frames(10, &[&counted[..20], &counted[20..]]);
        assert_eq!(out, ["<too long>", "ok"]);

        let mut lines = b"<1>".to_vec();
        lines.extend_from_slice(&long);
        lines.extend_from_slice(b"\n<2>ok\n");
        let (out, _) = frames(10, &[&lines[..15], &lines[15..30], &lines[30..]]);
        assert_eq!(out, ["<too long>", "<2>ok"]);
    }

    #[test]
    fn a_broken_octet_count_stops_the_stream() {
        let (out, end) = frames(100, &[b"2 ok", b"x1 y"]);
        assert_eq!(out, ["ok"]);
        assert_eq!(end, Err(BrokenFraming));
        let (_, end) = frames(100, &[b"3 ab"]);
        assert_eq!(end, Err(BrokenFraming), "a frame cut short");
    }
}
