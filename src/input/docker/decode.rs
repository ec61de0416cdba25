//! The body of `/containers/{id}/logs` with `timestamps=1`, as lines.
//!
//! A container without a TTY has its stdout and stderr multiplexed: each message is a frame
//! of an 8-byte header (stream byte, three zero bytes, big-endian length) and the message.
//! A TTY container's output comes raw, one stream. Either way each message starts with
//! Docker's time (`2026-12-03T07:11:14.008851999Z `) and ends with a newline, except that
//! Docker cuts lines longer than 16 KiB into messages of 16 KiB that do not end with one, all
//! with the time of the first: those are joined here into the line the container wrote. In a
//! raw TTY stream the cut shows only as a time in the middle of the text at exactly 16 KiB.

/// Docker's cut for long lines (its log copier's buffer).
const PART: usize = 16 * 1024;
/// `2006-01-02T15:04:05.000000000Z`: Docker always writes nine digits and `Z`.
const TIME_LEN: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a container, as it wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub stream: Stream,
    /// Docker's time of the line (of its first part), nanoseconds since the epoch; None when
    /// the message had no time Docker writes (never seen; the caller uses its own clock).
    pub nanos: Option<i64>,
    pub text: String,
}

struct Partial {
    nanos: Option<i64>,
    text: Vec<u8>,
}

/// Turns the bytes of a logs response into lines, as they arrive.
pub struct Decoder {
    tty: bool,
    pending: Vec<u8>,
    /// A line cut by Docker, per stream, waiting for its other parts.
    partial: [Option<Partial>; 2],
    /// A line (or a raw TTY stream without a newline) longer than this is let out as it is.
    max_line: usize,
}

impl Decoder {
    pub fn new(tty: bool, max_line: usize) -> Decoder {
        Decoder {
            tty,
            pending: Vec::new(),
            partial: [None, None],
            max_line: max_line.max(PART + TIME_LEN + 1),
        }
    }

    /// Decodes what arrived, adding the lines it completes to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<LogLine>) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        if self.tty {
            while let Some(end) = memchr::memchr(b'\n', &self.pending[at..]) {
                let message = self.pending[at..at + end].to_vec();
                at += end + 1;
                out.push(raw_line(&message));
            }
            if self.pending.len() - at > self.max_line {
                let message = self.pending[at..].to_vec();
                at = self.pending.len();
                out.push(raw_line(&message));
            }
        } else {
            while self.pending.len() - at >= 8 {
                let header = &self.pending[at..at + 8];
                let stream = if header[0] == 2 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if self.pending.len() - at - 8 < len {
                    break;
                }
                let frame = self.pending[at + 8..at + 8 + len].to_vec();
                at += 8 + len;
                self.frame(stream, &frame, out);
            }
        }
        self.pending.drain(..at);
    }

    /// The end of the response: a cut line whose last part never came is let out as it is.
    pub fn finish(&mut self, out: &mut Vec<LogLine>) {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if let Some(p) = self.partial[i].take() {
                out.push(line(stream, p.nanos, &p.text));
            }
        }
        if self.tty && !self.pending.is_empty() {
            let message = std::mem::take(&mut self.pending);
            out.push(raw_line(&message));
        }
        self.pending.clear();
    }

    /// One frame: normally one message; several lines in one frame are taken one by one.
    fn frame(&mut self, stream: Stream, mut frame: &[u8], out: &mut Vec<LogLine>) {
        let slot = stream as usize;
        while !frame.is_empty() {
            let (message, complete) = match memchr::memchr(b'\n', frame) {
                Some(end) => (&frame[..end], true),
                None => (frame, false),
            };
            frame = &frame[(message.len() + usize::from(complete)).min(frame.len())..];
            let (nanos, text) = split_time(message);
            let mut part = match self.partial[slot].take() {
                Some(mut p) => {
                    p.text.extend_from_slice(text);
                    p
                }
                None => Partial {
                    nanos,
                    text: text.to_vec(),
                },
            };
            if complete || part.text.len() > self.max_line {
                if part.text.last() == Some(&b'\r') {
                    part.text.pop();
                }
                out.push(line(stream, part.nanos, &part.text));
            } else {
                self.partial[slot] = Some(part);
            }
        }
    }
}

/// A message of a raw TTY stream (its newline removed): parts cut at 16 KiB are found by
/// the time Docker put in front of each.
fn raw_line(message: &[u8]) -> LogLine {
    let message = message.strip_suffix(b"\r").unwrap_or(message);
    let (nanos, mut rest) = split_time(message);
    let mut text = Vec::with_capacity(rest.len());
    while rest.len() > PART + TIME_LEN
        && rest[PART + TIME_LEN] == b' '
        && parse_time(&rest[PART..PART + TIME_LEN]).is_some()
    {
        text.extend_from_slice(&rest[..PART]);
        rest = &rest[PART + TIME_LEN + 1..];
    }
    text.extend_from_slice(rest);
    line(Stream::Stdout, nanos, &text)
}

fn line(stream: Stream, nanos: Option<i64>, text: &[u8]) -> LogLine {
    LogLine {
        stream,
        nanos,
        text: String::from_utf8_lossy(text).into_owned(),
    }
}

/// Docker's time in front of a message, and the text after it.
fn split_time(message: &[u8]) -> (Option<i64>, &[u8]) {
    if let Some(space) = memchr::memchr(b' ', message)
        && let Some(nanos) = parse_time(&message[..space])
    {
        return (Some(nanos), &message[space + 1..]);
    }
    (None, message)
}

/// An RFC 3339 time: Docker's fixed layout quickly, any other offset or precision slowly.
pub fn parse_time(text: &[u8]) -> Option<i64> {
    if text.len() == TIME_LEN && text[TIME_LEN - 1] == b'Z' && text[19] == b'.' {
        let num = |range: std::ops::Range<usize>| -> Option<u32> {
            let digits = text.get(range)?;
            digits.iter().try_fold(0u32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
            })
        };
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::try_from(num(0..4)?).ok()?,
            num(5..7)?,
            num(8..10)?,
        )?;
        let time = date.and_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, num(20..29)?)?;
        return time.and_utc().timestamp_nanos_opt();
    }
    let text = std::str::from_utf8(text).ok()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-12-03T07:11:14.008851999Z";
    const T1_NANOS: i64 = 1_796_281_874_008_851_999;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![stream, 0, 0, 0];
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn decode(tty: bool, body: &[u8], step: usize) -> Vec<LogLine> {
        let mut d = Decoder::new(tty, 1 << 20);
        let mut out = Vec::new();
        for piece in body.chunks(step) {
            d.push(piece, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn docker_time_is_read_exactly() {
        assert_eq!(parse_time(T1.as_bytes()), Some(T1_NANOS));
        assert_eq!(
            parse_time(b"2026-12-03T08:11:14.008851999+01:00"),
            Some(T1_NANOS)
        );
        assert_eq!(parse_time(b"2026-13-03T07:11:14.008851999Z"), None);
    }

    #[test]
    fn frames_are_split_by_stream_whatever_the_read_boundaries() {
        let mut body = frame(1, format!("{T1} out one\n").as_bytes());
        body.extend(frame(2, format!("{T1} err one\n").as_bytes()));
        body.extend(frame(1, format!("{T1} out two\r\n").as_bytes()));
        for step in [1, 3, 7, 1000] {
            let lines = decode(false, &body, step);
            let got: Vec<(&str, &str)> = lines
                .iter()
                .map(|l| (l.stream.name(), l.text.as_str()))
                .collect();
            assert_eq!(
                got,
                [
                    ("stdout", "out one"),
                    ("stderr", "err one"),
                    ("stdout", "out two")
                ],
                "read {step} bytes at a time"
            );
            assert!(lines.iter().all(|l| l.nanos == Some(T1_NANOS)));
        }
    }

    #[test]
    fn lines_docker_cut_at_16_kib_are_joined_in_frames() {
        let long: String = (0..40_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut body = Vec::new();
        let parts = [&long[..PART], &long[PART..2 * PART], &long[2 * PART..]];
        for (i, part) in parts.iter().enumerate() {
            let end = if i == 2 { "\n" } else { "" };
            body.extend(frame(1, format!("{T1} {part}{end}").as_bytes()));
            // Another stream's line between the parts stays whole and apart.
            if i == 0 {
                body.extend(frame(2, format!("{T1} between\n").as_bytes()));
            }
        }
        body.extend(frame(1, format!("{T1} short\n").as_bytes()));
        let lines = decode(false, &body, 4096);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["between", long.as_str(), "short"]);
    }

    #[test]
    fn lines_docker_cut_at_16_kib_are_joined_in_a_tty_stream() {
        let long = "é".repeat(20_000);
        let bytes = long.as_bytes();
        let mut body = Vec::new();
        for (i, part) in bytes.chunks(PART).enumerate() {
            body.extend_from_slice(format!("{T1} ").as_bytes());
            body.extend_from_slice(part);
            if (i + 1) * PART >= bytes.len() {
                body.extend_from_slice(b"\r\n");
            }
        }
        body.extend_from_slice(format!("{T1} next\r\n").as_bytes());
        let lines = decode(true, &body, 5000);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text, long, "a character cut in two is whole again");
        assert_eq!(lines[1].text, "next");
    }

    #[test]
    fn a_last_line_without_newline_is_let_out_at_the_end() {
        let body = frame(1, format!("{T1} no newline").as_bytes());
        let lines = decode(false, &body, 10);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "no newline");
    }
}
