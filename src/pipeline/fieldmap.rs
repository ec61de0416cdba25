//! The maps an entry carries through the stages (its labels and its extracted values).
//!
//! Hand-written rather than a `BTreeMap`: an entry's maps hold a handful of short keys, every
//! line fills them again, and a `BTreeMap` allocates a node and a string per key and value for
//! each line. A [`FieldMap`] is a sorted vector whose removed or cleared slots stay allocated
//! behind the live ones, so an entry reused for the next line (see `tail::pipelined`) sets its
//! keys and values again into the same strings. Iteration is in key order, as a `BTreeMap`'s.

use serde_json::Value;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// A small map with sorted string keys; its slots are reused after `clear` and `retain`.
pub struct FieldMap<V> {
    /// Live slots `[..len]`, sorted by key; spare slots (old keys and values kept for their
    /// memory) after them.
    slots: Vec<(String, V)>,
    len: usize,
}

/// An entry's labels.
pub type Labels = FieldMap<String>;
/// An entry's extracted values.
pub type Extracted = FieldMap<Value>;

/// A value that can take a string's content, reusing its own memory when it can.
pub trait FromStrIn {
    fn from_text(s: &str) -> Self;
    /// Becomes `s`.
    fn set_text(&mut self, s: &str);
}

impl FromStrIn for String {
    fn from_text(s: &str) -> Self {
        s.to_string()
    }
    fn set_text(&mut self, s: &str) {
        if self != s {
            self.clear();
            self.push_str(s);
        }
    }
}

impl FromStrIn for Value {
    fn from_text(s: &str) -> Self {
        Value::String(s.to_string())
    }
    fn set_text(&mut self, s: &str) {
        match self {
            Value::String(old) => old.set_text(s),
            other => *other = Value::String(s.to_string()),
        }
    }
}

impl<V> Default for FieldMap<V> {
    fn default() -> Self {
        FieldMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V> FieldMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.slots[..self.len].binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).ok().map(|i| &self.slots[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match self.find(key) {
            Ok(i) => Some(&mut self.slots[i].1),
            Err(_) => None,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.slots[i].1, value)),
            Err(i) => {
                self.slots.insert(i, (key, value));
                self.len += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.find(key).ok()?;
        self.len -= 1;
        Some(self.slots.remove(i).1)
    }

    /// Keeps the pairs for which `keep` is true (their slots stay for reuse).
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut V) -> bool) {
        let mut i = 0;
        while i < self.len {
            let (k, v) = &mut self.slots[i];
            if keep(k, v) {
                i += 1;
            } else {
                self.slots[i..self.len].rotate_left(1);
                self.len -= 1;
            }
        }
    }

    /// Empties the map, keeping its slots for reuse.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the spare slots when they hold more than `max` bytes of keys (for maps kept
    /// between lines, so one huge value does not stay allocated).
    pub fn shrink_spare(&mut self, max: usize, size: impl Fn(&V) -> usize) {
        let spare: usize = self.slots[self.len..]
            .iter()
            .map(|(k, v)| k.capacity() + size(v))
            .sum();
        if spare > max {
            self.slots.truncate(self.len);
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> + ExactSizeIterator {
        self.slots[..self.len].iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.slots[..self.len].iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.slots[..self.len].iter().map(|(_, v)| v)
    }
}

impl<V: FromStrIn> FieldMap<V> {
    /// Sets `key` to the string `value`, reusing the memory of a spare slot or of the value it
    /// replaces.
    pub fn set_text(&mut self, key: &str, value: &str) {
        match self.find(key) {
            Ok(i) => self.slots[i].1.set_text(value),
            Err(i) => {
                if self.len < self.slots.len() {
                    let (k, v) = &mut self.slots[self.len];
                    k.clear();
                    k.push_str(key);
                    v.set_text(value);
                } else {
                    self.slots.push((key.to_string(), V::from_text(value)));
                }
                self.slots[i..=self.len].rotate_right(1);
                self.len += 1;
            }
        }
    }
}

impl<V: Clone> Clone for FieldMap<V> {
    fn clone(&self) -> Self {
        FieldMap {
            slots: self.slots[..self.len].to_vec(),
            len: self.len,
        }
    }
}

impl<V: PartialEq> PartialEq for FieldMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.slots[..self.len] == other.slots[..other.len]
    }
}

impl<V: Eq> Eq for FieldMap<V> {}

impl<V: PartialEq> PartialEq<BTreeMap<String, V>> for FieldMap<V> {
    fn eq(&self, other: &BTreeMap<String, V>) -> bool {
        self.len == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl<V: Hash> Hash for FieldMap<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.slots[..self.len].hash(state);
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for FieldMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> std::ops::Index<&str> for FieldMap<V> {
    type Output = V;
    fn index(&self, key: &str) -> &V {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no key {key:?} in the map"),
        }
    }
}

impl<V> FromIterator<(String, V)> for FieldMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut map = FieldMap::new();
        map.extend(iter);
        map
    }
}

impl<V> Extend<(String, V)> for FieldMap<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<V> From<BTreeMap<String, V>> for FieldMap<V> {
    fn from(map: BTreeMap<String, V>) -> Self {
        let slots: Vec<(String, V)> = map.into_iter().collect();
        FieldMap {
            len: slots.len(),
            slots,
        }
    }
}

impl<V> From<FieldMap<V>> for BTreeMap<String, V> {
    fn from(map: FieldMap<V>) -> Self {
        map.into_iter().collect()
    }
}

impl<V> IntoIterator for FieldMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;
    fn into_iter(mut self) -> Self::IntoIter {
        self.slots.truncate(self.len);
        self.slots.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a FieldMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&'a (String, V)) -> (&'a String, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        fn pair<K, V>((k, v): &(K, V)) -> (&K, &V) {
            (k, v)
        }
        self.slots[..self.len].iter().map(pair as fn(&'a (String, V)) -> (&'a String, &'a V))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut m: FieldMap<String> = FieldMap::new();
        m.set_text("b", "2");
        m.insert("a".into(), "1".into());
        m.set_text("c", "3");
        assert_eq!(m.insert("b".into(), "two".into()), Some("2".into()));
        let keys: Vec<&String> = m.keys().collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(m.remove("a"), Some("1".into()));
        assert_eq!(m.remove("a"), None);
        assert_eq!(m["b"], "two");
        let pairs: BTreeMap<String, String> = m.clone().into();
        assert_eq!(m, pairs);
    }

    #[test]
    fn cleared_slots_are_reused_in_key_order() {
        let mut m: FieldMap<Value> = FieldMap::new();
        for k in ["x", "y", "z"] {
            m.set_text(k, "value");
        }
        m.retain(|k, _| k != "y");
        m.clear();
        assert!(m.is_empty() && m.get("x").is_none());
        m.set_text("m", "1");
        m.set_text("b", "2");
        m.set_text("q", "3");
        m.set_text("a", "4");
        let got: Vec<(&String, &Value)> = m.iter().collect();
        let want = [("a", "4"), ("b", "2"), ("m", "1"), ("q", "3")];
        assert_eq!(got.len(), want.len());
        for ((k, v), (wk, wv)) in got.into_iter().zip(want) {
            assert_eq!((k.as_str(), v), (wk, &Value::String(wv.into())));
        }
        // A clone and an equal map built afresh compare equal, whatever their spare slots.
        let fresh: FieldMap<Value> = want
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        assert_eq!(m, fresh);
        assert_eq!(m.clone(), fresh);
    }
}
