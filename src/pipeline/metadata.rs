//! An entry's structured metadata (Loki's non-indexed pairs, set by the
//! `structured_metadata` stage).
//!
//! Boxed, and nothing at all until a stage sets a pair: most entries never get one, and an
//! entry is moved several times per line, so its size counts (see `Entry`); a map inline
//! would be 16 bytes more on every entry.

use std::collections::BTreeMap;

/// Structured metadata, in key order.
// The box is the point: 8 bytes in the entry instead of a map's 24.
#[allow(clippy::box_collection)]
#[derive(Debug, Clone, Default)]
pub struct Metadata(Option<Box<BTreeMap<String, String>>>);

impl Metadata {
    /// Sets `key`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.0.get_or_insert_default().insert(key, value)
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.as_ref()?.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// Empties it (an entry reused for the next line keeps the box).
    pub fn clear(&mut self) {
        if let Some(m) = &mut self.0 {
            m.clear();
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    /// Takes the pairs out, leaving it empty.
    pub fn take(&mut self) -> BTreeMap<String, String> {
        self.0.take().map(|m| *m).unwrap_or_default()
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl PartialEq<BTreeMap<String, String>> for Metadata {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::ops::Index<&str> for Metadata {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no key {key:?} in the structured metadata"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_whether_never_set_or_cleared() {
        let mut m = Metadata::default();
        assert!(m.is_empty());
        assert_eq!(m.insert("trace".into(), "a".into()), None);
        assert_eq!(m.insert("trace".into(), "b".into()), Some("a".into()));
        assert_eq!(m["trace"], "b");
        assert!(!m.is_empty());
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m, Metadata::default());
        m.insert("z".into(), "1".into());
        m.insert("a".into(), "2".into());
        let keys: Vec<&String> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "z"]);
        assert_eq!(m.take().len(), 2);
        assert!(m.is_empty());
    }
}
