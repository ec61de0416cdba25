//! The positions file on disk.
//!
//! logferry writes:
//!
//! ```yaml
//! # logferry positions: bytes of each file that every client has acknowledged.
//! version: 1
//! files:
//! - path: /var/log/syslog
//!   offset: 1234
//!   device: 2049
//!   inode: 131
//!   fingerprint: 9f86d081884c7d65/256
//! ```
//!
//! and reads that or Promtail's `positions: {"/var/log/syslog": "1234"}`, so a host moving from
//! Promtail continues where Promtail stopped.

use super::checkpoint::{AckedCursor, AckedOffset};
use super::identity::{FileId, Fingerprint};
use super::table::{Record, Table};
use foldhash::{HashMap, HashMapExt};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A positions file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("positions file {file}: cannot read it: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "positions file {file} is corrupt ({problem}); fix or remove it, or set \
         positions.ignore_invalid_yaml: true to start afresh"
    )]
    Corrupt { file: String, problem: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(default)]
    files: Vec<DiskRecord>,
    /// Resume points of inputs that are not files (journal cursors, container timestamps).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cursors: BTreeMap<String, String>,
    /// Promtail's format: path (or journal key) → offset as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    positions: Option<BTreeMap<String, serde_yaml_ng::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskRecord {
    path: PathBuf,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

/// The key prefix Promtail gives resume points that are not file offsets (`cursor-<job>`).
pub const CURSOR_PREFIX: &str = "cursor-";

/// The temporary file a write goes through.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads the positions file; a missing file is an empty table. A corrupt one is an error, or
/// (with `ignore_invalid`) a warning and an empty table.
pub fn load(path: &Path, ignore_invalid: bool) -> Result<Table, PositionsError> {
    let file = path.display().to_string();
    let temp = temp_path(path);
    if temp.exists() {
        // An interrupted write: the rename never happened, so the positions file is intact.
        tracing::info!(path = %temp.display(), "removing a leftover temporary positions file");
        let _ = std::fs::remove_file(&temp);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return corrupt_or_empty(file, "not UTF-8 text".into(), ignore_invalid);
        }
        Err(source) => return Err(PositionsError::Read { file, source }),
    };
    if text.trim().is_empty() {
        tracing::warn!(path = %file, "positions file is empty; starting without positions");
        return Ok(Table::default());
    }
    match parse(&text) {
        Ok(table) => Ok(table),
        Err(problem) => corrupt_or_empty(file, problem, ignore_invalid),
    }
}

fn corrupt_or_empty(
    file: String,
    problem: String,
    ignore_invalid: bool,
) -> Result<Table, PositionsError> {
    if ignore_invalid {
        tracing::warn!(path = %file, %problem, "positions file is corrupt; ignoring it (ignore_invalid_yaml)");
        Ok(Table::default())
    } else {
        Err(PositionsError::Corrupt { file, problem })
    }
}

fn parse(text: &str) -> Result<Table, String> {
    let disk: OnDisk = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if let Some(version) = disk.version
        && version != 1
    {
        return Err(format!("unknown version {version}"));
    }
    let now = Instant::now();
    let mut records = HashMap::new();
    let mut by_path = HashMap::new();
    for (i, r) in disk.files.into_iter().enumerate() {
        let offset = AckedOffset::from_positions_file(r.offset);
        match (r.device, r.inode, r.fingerprint) {
            (Some(device), Some(inode), Some(fp)) => {
                let fingerprint = Fingerprint::from_text(&fp)
                    .ok_or_else(|| format!("files[{i}].fingerprint: invalid value {fp:?}"))?;
                records.insert(
                    FileId { device, inode },
                    Record {
                        path: r.path,
                        fingerprint,
                        offset,
                        released: Some(now),
                    },
                );
            }
            (None, None, None) => {
                by_path.insert(r.path, (offset, now));
            }
            _ => {
                return Err(format!(
                    "files[{i}]: device, inode and fingerprint go together"
                ));
            }
        }
    }
    let mut cursors: BTreeMap<String, AckedCursor> = disk
        .cursors
        .iter()
        .map(|(k, v)| (k.clone(), AckedCursor::from_positions_file(v)))
        .collect();
    for (key, value) in disk.positions.unwrap_or_default() {
        if key.starts_with(CURSOR_PREFIX) {
            // Promtail keeps journal cursors and container timestamps as strings.
            let text = match &value {
                serde_yaml_ng::Value::String(s) => Some(s.clone()),
                serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            match text {
                Some(text) => {
                    cursors.insert(key, AckedCursor::from_positions_file(&text));
                }
                None => return Err(format!("positions[{key:?}]: not a cursor string")),
            }
            continue;
        }
        let parsed = match &value {
            serde_yaml_ng::Value::String(s) => s.trim().parse::<u64>().ok(),
            serde_yaml_ng::Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match parsed {
            Some(offset) if key.starts_with('/') => {
                by_path.insert(
                    PathBuf::from(key),
                    (AckedOffset::from_positions_file(offset), now),
                );
            }
            // Journal cursors and other non-file positions are Promtail's own.
            _ => tracing::debug!(
                key,
                "ignoring a non-file entry of a Promtail positions file"
            ),
        }
    }
    Ok(Table::from_parts(records, by_path, cursors))
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, fsync, rename
/// over the old file, fsync the directory. A crash leaves either the old or the new file; a
/// failure (a full disk) leaves the old file and removes the temporary one, so that it takes no
/// room while the disk stays full.
pub fn save(path: &Path, text: &str) -> std::io::Result<()> {
    let temp = temp_path(path);
    let written = write_synced(&temp, text).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        let mut table = Table::default();
        let id = FileId {
            device: 1,
            inode: 2,
        };
        table.claim(
            id,
            Path::new("/var/log/a.log"),
            Fingerprint::of(b"abc"),
            AckedOffset::from_positions_file(9),
        );
        save(&path, &table.take_changes().unwrap()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = load(&path, false).unwrap();
        assert_eq!(loaded.offset(id), Some(9));
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn reads_promtail_positions() {
        let table =
            parse("positions:\n  /var/log/syslog: \"1234\"\n  journal-system: \"s=abc;i=1\"\n")
                .unwrap();
        assert_eq!(table.by_path.len(), 1);
        assert_eq!(table.by_path[Path::new("/var/log/syslog")].0.get(), 1234);
    }

    #[test]
    fn corrupt_files_are_errors_unless_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        std::fs::write(&path, "files:\n- path: /x\n  offset: [").unwrap();
        let err = load(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("positions.yaml") && err.contains("corrupt"),
            "{err}"
        );
        assert!(load(&path, true).unwrap().is_empty());
    }

    #[test]
    fn a_full_disk_keeps_the_previous_file_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        save(&path, "positions:\n  /a: \"5\"\n").unwrap();
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        std::os::unix::fs::symlink("/dev/full", temp_path(&path)).unwrap();
        let err = save(&path, "positions:\n  /a: \"9\"\n").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "positions:\n  /a: \"5\"\n"
        );
        assert!(std::fs::symlink_metadata(temp_path(&path)).is_err());
    }

    #[test]
    fn a_leftover_temp_file_is_removed_and_the_real_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        std::fs::write(&path, "positions:\n  /a: \"5\"\n").unwrap();
        std::fs::write(temp_path(&path), "garbage: [").unwrap();
        assert_eq!(load(&path, false).unwrap().len(), 1);
        assert!(!temp_path(&path).exists());
    }
}
