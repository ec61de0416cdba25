//! The text of the positions file, written by hand rather than through `serde_yaml_ng`.
//!
//! The file is rewritten moments after each acknowledgement (up to five times a second while
//! lines flow), and each write renders the entry of every file followed. On a node with a
//! thousand files the generic emitter (an event per scalar, each string checked against every
//! YAML type it could be mistaken for) cost more than reading the lines. The format is small
//! and fixed, so it is emitted directly; reading still goes through `serde_yaml_ng`, and the
//! tests read back what is written here, awkward names included.

use super::file::CURSOR_PREFIX;
use super::table::Table;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// The first line of every positions file logferry writes.
const HEADER: &str =
    "# logferry positions: bytes of each file that every client has acknowledged.\n";

/// The file text for a table.
pub(super) fn render(table: &Table) -> String {
    struct Row<'a> {
        path: &'a std::path::Path,
        offset: u64,
        identity: Option<(u64, u64, String)>,
    }
    let mut rows: Vec<Row> = table
        .records
        .iter()
        .map(|(id, r)| Row {
            path: &r.path,
            offset: r.offset.get(),
            identity: Some((id.device, id.inode, r.fingerprint.to_text())),
        })
        .chain(table.by_path.iter().map(|(path, (offset, _))| Row {
            path,
            offset: offset.get(),
            identity: None,
        }))
        .collect();
    // Byte order of the names: stable from one write to the next, and cheap.
    rows.sort_unstable_by(|a, b| {
        (
            a.path.as_os_str().as_bytes(),
            a.identity.as_ref().map(|i| i.1),
        )
            .cmp(&(
                b.path.as_os_str().as_bytes(),
                b.identity.as_ref().map(|i| i.1),
            ))
    });

    let mut out = String::with_capacity(HEADER.len() + 32 + rows.len() * 112);
    out.push_str(HEADER);
    out.push_str("version: 1\n");
    if rows.is_empty() {
        out.push_str("files: []\n");
    } else {
        out.push_str("files:\n");
    }
    for row in &rows {
        out.push_str("- path: ");
        // A name that is not UTF-8 is written with replacement characters: a file with an
        // identity is found again by its device, inode and fingerprint, not by its name.
        scalar(&mut out, &row.path.to_string_lossy());
        let _ = write!(out, "\n  offset: {}\n", row.offset);
        if let Some((device, inode, fingerprint)) = &row.identity {
            let _ = write!(out, "  device: {device}\n  inode: {inode}\n  fingerprint: ");
            scalar(&mut out, fingerprint);
            out.push('\n');
        }
    }
    if !table.cursors.is_empty() {
        out.push_str("cursors:\n");
        let mut cursors: Vec<_> = table.cursors.iter().collect();
        cursors.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, cursor) in cursors {
            debug_assert!(key.starts_with(CURSOR_PREFIX));
            out.push_str("  ");
            scalar(&mut out, key);
            out.push_str(": ");
            scalar(&mut out, cursor.as_str());
            out.push('\n');
        }
    }
    out
}

/// Appends `text` as a YAML string scalar: plain when it cannot be read as anything else,
/// double-quoted with escapes otherwise.
fn scalar(out: &mut String, text: &str) {
    if is_plain(text) {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // Controls, YAML's own line breaks and the byte-order mark are not printable in a
            // YAML stream.
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether `text` reads back as this very string when written plain: it starts with `/` or a
/// letter (or a digit, with a `/` further on), holds only characters with no meaning in YAML, and is not a word YAML 1.1 or 1.2
/// reads as a boolean or null. Anything else is quoted, which is always correct.
fn is_plain(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=;,~()".contains(c);
    // No number, date or time YAML knows has a `/` in it.
    (first == '/' || first.is_ascii_alphabetic() || (first.is_ascii_digit() && text.contains('/')))
        && text.chars().all(safe)
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_yaml_ng reads back from a scalar written here.
    fn read_back(text: &str) -> String {
        let mut out = String::new();
        scalar(&mut out, text);
        let doc = format!("key: {out}\n");
        let value: std::collections::BTreeMap<String, String> =
            serde_yaml_ng::from_str(&doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        value["key"].clone()
    }

    #[test]
    fn every_string_reads_back_as_itself() {
        for text in [
            "/var/log/syslog",
            "/var/log/pods/ns_pod-7d9f_0a1b/app/0.log",
            "/logs/with space.log",
            "/logs/colon: here.log",
            "/logs/#hash",
            "/logs/quote\"and\\backslash",
            "/logs/new\nline\ttab\r",
            "/logs/ünïcödé/日本.log",
            "/logs/\u{85}\u{2028}\u{2029}\u{feff}\u{7f}\u{1}",
            "- dash",
            "*star",
            "&anchor",
            "!tag",
            "%percent",
            "@at",
            "`tick",
            "'single'",
            "{flow}",
            "[seq]",
            "? key",
            "|",
            ">",
            "",
            " leading space",
            "trailing space ",
            "true",
            "Yes",
            "off",
            "null",
            "~",
            "123",
            "0x1F",
            "1e5",
            ".inf",
            "cursor-journal",
            "s=6f2a;i=1c;b=9e;m=2a;t=5f;x=1d",
            "9f86d081884c7d65/256",
        ] {
            assert_eq!(read_back(text), text, "{text:?}");
        }
    }

    #[test]
    fn ordinary_paths_and_cursors_are_written_plain() {
        for text in [
            "/var/log/syslog",
            "cursor-journal",
            "s=6f2a;i=1c;b=9e",
            "9f86d081884c7d65/256",
        ] {
            let mut out = String::new();
            scalar(&mut out, text);
            assert_eq!(out, text);
        }
    }
}
