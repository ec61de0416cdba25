//! Whether the journal changed since the last look, without opening it: the list of journal
//! files and the first bytes of each one's header (which journald rewrites with every entry:
//! entry count, tail seqnum and time). Reading a few hundred bytes per file is far cheaper
//! than reopening and seeking every file a few times a second, and, unlike modification
//! times, it also sees writes made through a shared mapping.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The bytes of a journal file's header compared between looks: the signature and the
/// fields up to the tail entry's timestamps.
const HEADER: usize = 256;
/// What every journal file starts with.
const SIGNATURE: &[u8; 8] = b"LPKSHHRH";

/// What the journal looked like.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Snapshot {
    /// The journal files under `roots` (directly or in a machine-ID directory) as they are now.
    pub fn take(roots: &[PathBuf]) -> Snapshot {
        let mut files = Vec::new();
        for root in roots {
            for path in journal_files(root) {
                let header = read_header(&path).unwrap_or_default();
                files.push((path, header));
            }
        }
        files.sort();
        Snapshot { files }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The realtime (µs since the epoch) of the newest entry in any file, from the headers'
    /// `tail_entry_realtime` (a little-endian u64 at byte 192 of the header).
    pub fn newest_realtime(&self) -> Option<u64> {
        self.files
            .iter()
            .filter(|(_, header)| header.starts_with(SIGNATURE))
            .filter_map(|(_, header)| header.get(192..200))
            .filter_map(|bytes| bytes.try_into().ok().map(u64::from_le_bytes))
            .max()
    }

    /// Files whose header does not start as a journal file's does (cut short, overwritten).
    pub fn broken(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .filter(|(_, header)| !header.starts_with(SIGNATURE))
            .map(|(path, _)| path.as_path())
    }
}

fn journal_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(root) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && is_machine_id(&entry.file_name().to_string_lossy()) {
            if let Ok(sub) = std::fs::read_dir(&path) {
                out.extend(
                    sub.flatten()
                        .map(|e| e.path())
                        .filter(|p| is_journal(p) && p.is_file()),
                );
            }
        } else if kind.is_file() && is_journal(&path) {
            out.push(path);
        }
    }
    out
}

fn is_machine_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_journal(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "journal")
}

fn read_header(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(HEADER);
    std::fs::File::open(path)?
        .take(HEADER as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_new_changed_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let roots = vec![dir.path().to_path_buf()];
        assert!(Snapshot::take(&roots).is_empty());
        let machine = dir.path().join("0123456789abcdef0123456789abcdef");
        std::fs::create_dir(&machine).unwrap();
        let mut header = SIGNATURE.to_vec();
        header.resize(300, 0);
        std::fs::write(machine.join("system.journal"), &header).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let first = Snapshot::take(&roots);
        assert_eq!(first.len(), 1);
        assert_eq!(first.broken().count(), 0);
        header[200] = 1;
        std::fs::write(machine.join("system.journal"), &header).unwrap();
        let second = Snapshot::take(&roots);
        assert_ne!(first, second);
        header[280] = 1;
        std::fs::write(machine.join("system.journal"), &header).unwrap();
        assert_eq!(second, Snapshot::take(&roots), "only the header counts");
        std::fs::write(dir.path().join("cut.journal"), b"LPK").unwrap();
        let third = Snapshot::take(&roots);
        assert_eq!(third.len(), 2);
        assert_eq!(third.broken().count(), 1);
    }
}
