//! Which file is which: (device, inode) plus a fingerprint of the first bytes.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// The inode a file lives in. Alone it is not enough (inodes are reused after a delete), which
/// is why positions also keep a [`Fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub device: u64,
    pub inode: u64,
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> FileId {
        FileId {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// Bytes a full fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 256;

/// A hash of a file's first bytes: the first [`FINGERPRINT_BYTES`], or all of them while the
/// file is shorter. A short file's fingerprint grows with it, and a file matches a fingerprint
/// when its first `len` bytes hash the same; so an empty file matches any file in its inode,
/// which is harmless, as its position is 0 too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u16,
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `bytes` (at most [`FINGERPRINT_BYTES`] of them count).
    pub fn of(bytes: &[u8]) -> Fingerprint {
        let bytes = &bytes[..bytes.len().min(FINGERPRINT_BYTES)];
        // FNV-1a: tiny, and stable across builds, which matters as it is written to disk.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Fingerprint {
            len: bytes.len() as u16,
            hash,
        }
    }

    /// The fingerprint of an open file of `size` bytes.
    pub fn read(file: &File, size: u64) -> std::io::Result<Fingerprint> {
        Ok(Prefix::read(file)?.fingerprint(size))
    }

    /// Whether the file starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> std::io::Result<bool> {
        let mut buf = [0u8; FINGERPRINT_BYTES];
        let want = self.len as usize;
        let got = read_prefix(file, &mut buf[..want])?;
        Ok(got == want && Fingerprint::of(&buf[..got]) == *self)
    }

    /// Whether it covers all the bytes a fingerprint can.
    pub fn is_full(&self) -> bool {
        self.len as usize >= FINGERPRINT_BYTES
    }

    /// The form written in positions files: `<hash in hex>/<bytes>`.
    pub fn to_text(self) -> String {
        format!("{:016x}/{}", self.hash, self.len)
    }

    pub fn from_text(text: &str) -> Option<Fingerprint> {
        let (hash, len) = text.split_once('/')?;
        Some(Fingerprint {
            hash: u64::from_str_radix(hash, 16).ok()?,
            len: len.parse().ok()?,
        })
    }
}

/// The first bytes of an open file, read once both to check the fingerprint a position was
/// saved with and to take the file's own (one `pread` per file found at a restart, not two).
pub struct Prefix {
    bytes: [u8; FINGERPRINT_BYTES],
    len: usize,
}

impl Prefix {
    /// Reads up to [`FINGERPRINT_BYTES`] from the start of `file`.
    pub fn read(file: &File) -> std::io::Result<Prefix> {
        let mut bytes = [0u8; FINGERPRINT_BYTES];
        let len = read_prefix(file, &mut bytes)?;
        Ok(Prefix { bytes, len })
    }

    /// The fingerprint of the file when it was `size` bytes long: bytes written since are left
    /// out, as reading goes no further than `size` either.
    pub fn fingerprint(&self, size: u64) -> Fingerprint {
        Fingerprint::of(&self.bytes[..self.len.min(usize::try_from(size).unwrap_or(usize::MAX))])
    }

    /// Whether the file starts with the bytes `fingerprint` was taken of (as
    /// [`Fingerprint::matches`] would read them).
    pub fn starts_as(&self, fingerprint: &Fingerprint) -> bool {
        let want = usize::from(fingerprint.len);
        self.len >= want && Fingerprint::of(&self.bytes[..want]) == *fingerprint
    }
}

fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprints_grow_with_short_files_and_still_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"short").unwrap();
        let small = Fingerprint::read(&File::open(&path).unwrap(), 5).unwrap();
        assert_eq!(small.len, 5);
        f.write_all(&[b'x'; 1000]).unwrap();
        let reader = File::open(&path).unwrap();
        assert!(small.matches(&reader).unwrap());
        let full = Fingerprint::read(&reader, 1005).unwrap();
        assert!(full.is_full());
        assert!(full.matches(&reader).unwrap());
        assert_eq!(Fingerprint::from_text(&full.to_text()), Some(full));
    }

    #[test]
    fn one_read_of_the_first_bytes_checks_and_takes_fingerprints_as_two_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"short").unwrap();
        let small = Fingerprint::read(&File::open(&path).unwrap(), 5).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[b'x'; 1000]).unwrap();
        let reader = File::open(&path).unwrap();
        let prefix = Prefix::read(&reader).unwrap();
        for fp in [small, Fingerprint::read(&reader, 1005).unwrap()] {
            assert_eq!(prefix.starts_as(&fp), fp.matches(&reader).unwrap());
            assert!(prefix.starts_as(&fp));
        }
        // Taken at a size read before the file grew, a fingerprint covers that size only.
        assert_eq!(prefix.fingerprint(5), small);
        assert!(prefix.fingerprint(1005).is_full());
        std::fs::write(&path, b"shorn").unwrap();
        let changed = Prefix::read(&File::open(&path).unwrap()).unwrap();
        assert!(!changed.starts_as(&small));
        std::fs::write(&path, b"sho").unwrap();
        let shorter = Prefix::read(&File::open(&path).unwrap()).unwrap();
        assert!(
            !shorter.starts_as(&small),
            "a file shorter than the fingerprint"
        );
        assert!(
            Prefix::read(&File::open(&path).unwrap())
                .unwrap()
                .starts_as(&Fingerprint::of(b""))
        );
    }

    #[test]
    fn different_content_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first file content").unwrap();
        let fp = Fingerprint::read(&File::open(&path).unwrap(), 18).unwrap();
        std::fs::write(&path, b"other").unwrap();
        assert!(!fp.matches(&File::open(&path).unwrap()).unwrap());
        std::fs::write(&path, b"second file content").unwrap();
        assert!(!fp.matches(&File::open(&path).unwrap()).unwrap());
    }
}
