//! Compressing a push body piece by piece, as it is encoded.
//!
//! A batch is encoded into a small buffer that is compressed each time it fills, so the
//! uncompressed body (a megabyte or more, the size of the batch) never exists whole: only the
//! compressed body grows, in a buffer sized from the body before (batches of a stream of logs
//! compress alike) and handed over as it is. Measured on 1,000 busy files, the whole-body
//! buffers (the encoded batch, the snappy output sized for the worst case, a fresh gzip state
//! and output per batch) were 2 to 6 MB of the agent's resident memory, and the most varied
//! part of it; copying the body out at its size cost 3 % of the output's time.
//!
//! Why snappy by hand around the `snap` crate: Loki takes snappy's block format, whose header
//! is the uncompressed length, and `snap` compresses a block only from a whole input. A block
//! is a run of literals and copies reaching back into what was already decompressed; a piece
//! compressed on its own reaches back only into itself, so pieces compressed one by one, each
//! without its own header, after one header with the total length, are one valid block (`snap`
//! itself compresses 64 KiB at a time this way). Gzip uses `flate2`'s deflate stream, kept
//! from body to body and reset, with the RFC 1952 header and trailer written here: `flate2`'s
//! gzip writer cannot be reset, and a new one per batch allocates its state anew.

use crate::config::{Compression, Encoding};
use flate2::{Compress, CompressError, Crc, FlushCompress, Status};

/// Encoded bytes gathered before they are compressed.
const PIECE: usize = 64 << 10;

/// Most room set aside ahead for a body, and largest scratch buffer kept between bodies.
const KEEP_AT_MOST: usize = 8 << 20;

/// The gzip header: deflate, no name or time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Compression failed; it cannot with the buffers sized here, but the libraries say it may.
#[derive(Debug, thiserror::Error)]
pub enum CompressFailed {
    #[error("snappy compression failed: {0}")]
    Snappy(#[from] snap::Error),
    #[error("gzip compression failed: {0}")]
    Gzip(#[from] CompressError),
}

/// How a body is compressed, with the state kept between bodies.
pub struct Compressor {
    kind: Kind,
    /// Encoded bytes not compressed yet.
    piece: Vec<u8>,
    /// The body so far.
    out: Vec<u8>,
    /// Length of the last body: the next one starts with room for a little more.
    last_len: usize,
}

enum Kind {
    /// Snappy's block format (protobuf bodies). `scratch` holds one piece's own block.
    Snappy {
        encoder: Box<snap::raw::Encoder>,
        scratch: Vec<u8>,
    },
    Gzip {
        deflate: Compress,
        crc: Crc,
    },
    /// Uncompressed JSON.
    Identity,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Snappy { .. } => "snappy",
            Kind::Gzip { .. } => "gzip",
            Kind::Identity => "none",
        };
        f.debug_struct("Compressor").field("kind", &kind).finish()
    }
}

impl Compressor {
    /// The compression Loki expects for `encoding`: snappy for protobuf (the only one it
    /// accepts), gzip or none for JSON.
    pub fn new(encoding: Encoding, compression: Compression) -> Compressor {
        let kind = match (encoding, compression) {
            (Encoding::Protobuf, _) => Kind::Snappy {
                encoder: Box::new(snap::raw::Encoder::new()),
                scratch: Vec::new(),
            },
            (Encoding::Json, Compression::Gzip) => Kind::Gzip {
                deflate: Compress::new(flate2::Compression::fast(), false),
                crc: Crc::new(),
            },
            (Encoding::Json, _) => Kind::Identity,
        };
        Compressor {
            kind,
            piece: Vec::new(),
            out: Vec::new(),
            last_len: 0,
        }
    }

    /// The `Content-Encoding` of the bodies, if any.
    pub fn content_encoding(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Gzip { .. } => Some("gzip"),
            _ => None,
        }
    }

    /// Starts a body of `raw_len` uncompressed bytes (snappy writes it first; the others do
    /// not need it).
    pub fn begin(&mut self, raw_len: usize) {
        self.piece.clear();
        self.out.clear();
        // A body that would not fit grows by doubling (snappy) or by half (gzip), each time
        // copying what it holds; an eighth more than the last one avoids that for most.
        self.out
            .reserve((self.last_len + self.last_len / 8 + 64).min(KEEP_AT_MOST));
        match &mut self.kind {
            Kind::Snappy { .. } => put_varint(&mut self.out, raw_len as u64),
            Kind::Gzip { deflate, crc } => {
                deflate.reset();
                *crc = Crc::new();
                self.out.extend_from_slice(&GZIP_HEADER);
            }
            Kind::Identity => {}
        }
    }

    /// Where the encoder writes the body's next bytes.
    pub fn piece(&mut self) -> &mut Vec<u8> {
        &mut self.piece
    }

    /// Compresses the piece once it is full (called between entries).
    pub fn flush_if_full(&mut self) -> Result<(), CompressFailed> {
        if self.piece.len() >= PIECE {
            self.flush()?;
        }
        Ok(())
    }

    /// Compresses the piece.
    fn flush(&mut self) -> Result<(), CompressFailed> {
        let piece = &self.piece;
        if piece.is_empty() {
            return Ok(());
        }
        match &mut self.kind {
            Kind::Snappy { encoder, scratch } => {
                scratch.resize(snap::raw::max_compress_len(piece.len()), 0);
                let n = encoder.compress(piece, scratch)?;
                let block = &scratch[..n];
                // Drop the piece's own header: the body has one, with the total length.
                let header = block.iter().take_while(|b| **b & 0x80 != 0).count() + 1;
                self.out
                    .extend_from_slice(block.get(header..).unwrap_or_default());
            }
            Kind::Gzip { deflate, crc } => {
                crc.update(piece);
                deflate_into(deflate, piece, &mut self.out, FlushCompress::None)?;
            }
            Kind::Identity => self.out.extend_from_slice(piece),
        }
        self.piece.clear();
        Ok(())
    }

    /// Ends the body and returns it.
    pub fn finish(&mut self) -> Result<bytes::Bytes, CompressFailed> {
        self.flush()?;
        if let Kind::Gzip { deflate, crc } = &mut self.kind {
            deflate_into(deflate, &[], &mut self.out, FlushCompress::Finish)?;
            self.out.extend_from_slice(&crc.sum().to_le_bytes());
            self.out.extend_from_slice(&crc.amount().to_le_bytes());
        }
        // A body waits for its answer, and through retries: what it holds beyond its length
        // stays bounded (a body larger than the last one may have doubled its buffer).
        if self.out.capacity() - self.out.len() > self.out.len() / 4 {
            self.out.shrink_to_fit();
        }
        let body = bytes::Bytes::from(std::mem::take(&mut self.out));
        self.last_len = body.len();
        // One huge line makes the piece huge.
        if self.piece.capacity() > 4 * PIECE {
            self.piece = Vec::new();
        }
        if let Kind::Snappy { scratch, .. } = &mut self.kind
            && scratch.capacity() > KEEP_AT_MOST
        {
            *scratch = Vec::new();
        }
        Ok(body)
    }
}

/// Runs `input` through the deflate stream into `out`, growing `out` as needed; with
/// `Finish`, until the stream has ended.
fn deflate_into(
    deflate: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> Result<(), CompressError> {
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve((out.len() / 2).max(PIECE));
        }
        let before = deflate.total_in();
        let status = deflate.compress_vec(input, out, flush)?;
        let taken = usize::try_from(deflate.total_in() - before).unwrap_or(input.len());
        input = input.get(taken..).unwrap_or_default();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => input.is_empty(),
        };
        if done {
            return Ok(());
        }
    }
}

/// A protobuf varint (snappy's header is one too). `prost::encoding::encode_varint` writes
/// through `BufMut` and was not inlined: 6 % of the agent's time went to its calls, several per
/// entry.
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Text that compresses as log lines do (words drawn from a few), `n` bytes of it.
    fn text(n: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "GET ",
            "/index.html ",
            "200 ",
            "HTTP/1.1 ",
            "10.0.0.1 ",
            "Mozilla/5.0 ",
            "- ",
            "\n",
        ];
        let mut seed = 7u64;
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            out.extend_from_slice(WORDS[(seed >> 61) as usize].as_bytes());
        }
        out.truncate(n);
        out
    }

    fn compress_in_pieces(c: &mut Compressor, data: &[u8], piece: usize) -> bytes::Bytes {
        c.begin(data.len());
        for p in data.chunks(piece) {
            c.piece().extend_from_slice(p);
            c.flush().unwrap();
        }
        c.finish().unwrap()
    }

    #[test]
    fn snappy_pieces_make_one_block_any_decoder_reads() {
        let mut c = Compressor::new(Encoding::Protobuf, Compression::Snappy);
        // Bodies of several pieces, pieces not a multiple of 64 KiB, one piece over it, bodies
        // larger and smaller than the one before through the same compressor. Each is read
        // only once all are made: a body waiting for its answer (or retried) must not change
        // while the next ones are compressed.
        let bodies: Vec<_> = [
            (300_000, PIECE),
            (200_001, 10_007),
            (900_000, 100_000),
            (150_000, 100_000),
            (0, 1),
        ]
        .into_iter()
        .map(|(len, piece)| (len, piece, compress_in_pieces(&mut c, &text(len), piece)))
        .collect();
        for (len, piece, body) in bodies {
            let back = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
            assert_eq!(back, text(len), "{len} bytes in pieces of {piece}");
            assert!(body.len() < len / 2 + 8, "it compressed");
        }
    }

    #[test]
    fn gzip_bodies_one_after_another_each_decode_with_their_checksum() {
        let mut c = Compressor::new(Encoding::Json, Compression::Gzip);
        assert_eq!(c.content_encoding(), Some("gzip"));
        for (len, piece) in [(300_000, PIECE), (5, 2), (0, 1), (1_000_000, 333_333)] {
            let data = text(len);
            let body = compress_in_pieces(&mut c, &data, piece);
            let mut back = Vec::new();
            // MultiGzDecoder would hide a second member; GzDecoder checks CRC and size.
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{len} bytes in pieces of {piece}");
        }
    }

    #[test]
    fn uncompressed_json_is_the_pieces_joined() {
        let mut c = Compressor::new(Encoding::Json, Compression::None);
        assert_eq!(c.content_encoding(), None);
        let data = text(100_000);
        assert_eq!(&compress_in_pieces(&mut c, &data, 7_000)[..], &data[..]);
    }
}
