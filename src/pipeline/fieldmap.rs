//! The maps an entry carries through the stages (its labels and its extracted values).
//!
//! Hand-written rather than a `BTreeMap`: an entry's maps hold a handful of short keys, every
//! line fills them again with the same keys, and a `BTreeMap` allocates a node and a string per
//! key and value for each line. A [`FieldMap`] is a vector sorted by key whose removed or
//! cleared pairs stay in place, marked dead: an entry reused for the next line (see
//! `tail::pipelined`) finds each key where it was and writes the new value into the old
//! string, without allocating or moving anything. Iteration is in key order, as a
//! `BTreeMap`'s, and sees the live pairs only.

use serde_json::Value;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// A small map with sorted string keys; its slots are reused after `clear`, `remove` and
/// `retain`.
pub struct FieldMap<V> {
    /// Every slot, live or dead, sorted by key (keys are unique).
    slots: Vec<Slot<V>>,
    // `u32` rather than `usize`: an entry holds two of these maps, and with them at 32 bytes
    // (and its structured metadata boxed) an entry is 120 bytes, under the 128 that a move
    // copies inline. At 152 bytes each of the several moves of an entry per line (into a
    // stage, out of it, into a queue) was a call to `memcpy`: 31 % of the tailer's time on a
    // multiline pipeline, 6 % since.
    len: u32,
    /// The slot after the one last set.
    hint: u16,
    /// No write since [`FieldMap::settle`]: see [`FieldMap::is_settled`].
    settled: bool,
}

/// Orders keys as `str::cmp` does; short keys are compared here rather than by a call to
/// `memcmp`, which is most of the cost of looking a key up.
fn cmp_key(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// The first 8 bytes of a key (zero-padded) as a big-endian number. Where two keys' heads
/// differ, they order as the keys do (a zero of padding is below any byte it stands against
/// but zero, and against a zero the heads do not differ). Comparing heads spares reading the
/// key's text, which is elsewhere in memory and, for an entry reused for the next line, often
/// no longer in cache when a stage sets a value: that read was most of the cost of a set.
fn head(key: &str) -> u64 {
    let bytes = key.as_bytes();
    // Shifts rather than a copy into a zeroed array: that copy is a call to `memcpy` whose
    // bytes the load of the number then waits for.
    match bytes.first_chunk::<8>() {
        Some(first) => u64::from_be_bytes(*first),
        None => bytes
            .iter()
            .enumerate()
            .fold(0, |h, (i, &b)| h | u64::from(b) << (56 - 8 * i)),
    }
}

struct Slot<V> {
    /// [`head`] of `key`.
    head: u64,
    key: String,
    value: V,
    live: bool,
}

impl<V> Slot<V> {
    fn new(key: String, value: V) -> Slot<V> {
        Slot {
            head: head(&key),
            key,
            value,
            live: true,
        }
    }

    /// Orders this slot's key against `key`, whose [`head`] is `key_head`.
    fn cmp(&self, key: &str, key_head: u64) -> std::cmp::Ordering {
        match self.head.cmp(&key_head) {
            // Equal heads and equal lengths up to 8 bytes: the same key, read from the slot.
            std::cmp::Ordering::Equal if self.key.len() == key.len() && key.len() <= 8 => {
                std::cmp::Ordering::Equal
            }
            std::cmp::Ordering::Equal => cmp_key(&self.key, key),
            unequal => unequal,
        }
    }
}

impl<V: Clone> Clone for Slot<V> {
    fn clone(&self) -> Self {
        Slot {
            head: self.head,
            key: self.key.clone(),
            value: self.value.clone(),
            live: self.live,
        }
    }
}

/// Up to this many slots, keys are looked up by a scan rather than a binary search.
const LINEAR_MAX: usize = 16;

/// Dead slots kept at most (beyond, and when they outnumber the live ones, they go).
const DEAD_KEPT: usize = 64;

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
        self.clear();
        self.push_str(s);
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
            hint: 0,
            settled: false,
        }
    }
}

impl<V> FieldMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of `key` (live or dead), or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        let key_head = head(key);
        if self.slots.len() > LINEAR_MAX {
            return self.slots.binary_search_by(|s| s.cmp(key, key_head));
        }
        // A binary search of a few slots costs a mispredicted branch at almost every step; a
        // scan mispredicts once, where it stops.
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.cmp(key, key_head) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => return Err(i),
            }
        }
        Err(self.slots.len())
    }

    /// [`FieldMap::find`], trying first the slot after the one last set: stages set the same
    /// keys in the same order on every line.
    fn find_from_hint(&mut self, key: &str) -> Result<usize, usize> {
        let hint = self.hint as usize;
        if let Some(slot) = self.slots.get(hint)
            && slot.cmp(key, head(key)).is_eq()
        {
            self.hint = self.hint.saturating_add(1);
            return Ok(hint);
        }
        let found = self.find(key);
        if let Ok(i) = found {
            // Past u16 (a map of thousands of keys) the hint points nowhere and is merely not
            // used.
            self.hint = u16::try_from(i + 1).unwrap_or(u16::MAX);
        }
        found
    }

    /// Marks the map as it is now: until its next write (or its clone, or a new map),
    /// [`FieldMap::is_settled`] says it has not changed. An entry reused for the next line of
    /// the same target checks it to keep its labels and seeded extracted values rather than
    /// write them again: on a pipeline that leaves them alone (a `multiline`, a `drop`), that
    /// writing was most of the cost of an entry.
    pub(crate) fn settle(&mut self) {
        self.settled = true;
    }

    /// No write since [`FieldMap::settle`].
    pub(crate) fn is_settled(&self) -> bool {
        self.settled
    }

    fn live(&self, key: &str) -> Option<usize> {
        self.find(key).ok().filter(|&i| self.slots[i].live)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.live(key).map(|i| &self.slots[i].value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.settled = false;
        self.live(key).map(|i| &mut self.slots[i].value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.live(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        self.settled = false;
        match self.find(&key) {
            Ok(i) => {
                let slot = &mut self.slots[i];
                let old = std::mem::replace(&mut slot.value, value);
                if slot.live {
                    Some(old)
                } else {
                    slot.live = true;
                    self.len += 1;
                    None
                }
            }
            Err(i) => {
                self.slots.insert(i, Slot::new(key, value));
                self.len += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.live(key)?;
        self.settled = false;
        self.len -= 1;
        Some(self.slots.remove(i).value)
    }

    /// Keeps the pairs for which `keep` is true (the others' slots stay for reuse). The map stays
    /// settled unless a pair goes: the output drops the labels it does not ship from every
    /// entry, most often none.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &V) -> bool) {
        for slot in &mut self.slots {
            if slot.live && !keep(&slot.key, &slot.value) {
                slot.live = false;
                self.len -= 1;
                self.settled = false;
            }
        }
    }

    /// Empties the map, keeping its slots for reuse.
    pub fn clear(&mut self) {
        self.settled = false;
        let dead = self.slots.len() - self.len as usize;
        if dead > DEAD_KEPT && dead > self.len as usize {
            self.slots.clear();
        }
        for slot in &mut self.slots {
            slot.live = false;
        }
        self.len = 0;
        self.hint = 0;
    }

    fn live_slots(&self) -> impl DoubleEndedIterator<Item = &Slot<V>> {
        self.slots.iter().filter(|s| s.live)
    }

    pub fn iter(&self) -> Iter<'_, V> {
        Iter(self.slots.iter())
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> {
        self.live_slots().map(|s| &s.key)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.live_slots().map(|s| &s.value)
    }
}

impl<V: FromStrIn> FieldMap<V> {
    /// Sets `key` to the string `value`, in the slot the key had when there is one.
    pub fn set_text(&mut self, key: &str, value: &str) {
        self.settled = false;
        match self.find_from_hint(key) {
            Ok(i) => {
                let slot = &mut self.slots[i];
                slot.value.set_text(value);
                if !slot.live {
                    slot.live = true;
                    self.len += 1;
                }
            }
            Err(i) => {
                self.slots
                    .insert(i, Slot::new(key.to_string(), V::from_text(value)));
                self.len += 1;
            }
        }
    }
}

impl FieldMap<String> {
    /// A quick hash of the pairs, eight bytes at a time: only to tell label sets apart before
    /// comparing them (equal digests are still compared), so an adversarial collision costs a
    /// comparison, nothing more. Cheaper than `Hash` with any `Hasher`: no call per field.
    pub fn digest(&self) -> u64 {
        fn mix(h: u64, word: u64) -> u64 {
            (h ^ word)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(26)
        }
        let mut h: u64 = 0;
        for (k, v) in self {
            for text in [k, v] {
                let mut words = text.as_bytes().chunks_exact(8);
                for w in &mut words {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(w);
                    h = mix(h, u64::from_le_bytes(word));
                }
                let mut last = [0u8; 8];
                last[..words.remainder().len()].copy_from_slice(words.remainder());
                h = mix(h, u64::from_le_bytes(last) ^ (text.len() as u64) << 56);
            }
        }
        h
    }
}

impl<V: Clone> Clone for FieldMap<V> {
    fn clone(&self) -> Self {
        FieldMap {
            slots: self.live_slots().cloned().collect(),
            len: self.len,
            hint: 0,
            settled: false,
        }
    }
}

impl<V: PartialEq> PartialEq for FieldMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .live_slots()
                .zip(other.live_slots())
                .all(|(a, b)| a.cmp(&b.key, b.head).is_eq() && a.value == b.value)
    }
}

impl<V: Eq> Eq for FieldMap<V> {}

impl<V: PartialEq> PartialEq<BTreeMap<String, V>> for FieldMap<V> {
    fn eq(&self, other: &BTreeMap<String, V>) -> bool {
        self.len as usize == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl<V: Hash> Hash for FieldMap<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len as usize);
        for (k, v) in self.iter() {
            k.hash(state);
            v.hash(state);
        }
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
        let slots: Vec<Slot<V>> = map
            .into_iter()
            .map(|(key, value)| Slot::new(key, value))
            .collect();
        FieldMap {
            len: u32::try_from(slots.len()).unwrap_or(u32::MAX),
            slots,
            hint: 0,
            settled: false,
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
    fn into_iter(self) -> Self::IntoIter {
        let pairs: Vec<(String, V)> = self
            .slots
            .into_iter()
            .filter(|s| s.live)
            .map(|s| (s.key, s.value))
            .collect();
        pairs.into_iter()
    }
}

/// The live pairs of a [`FieldMap`], in key order.
pub struct Iter<'a, V>(std::slice::Iter<'a, Slot<V>>);

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a String, &'a V);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.by_ref().find(|s| s.live).map(|s| (&s.key, &s.value))
    }
}

impl<V> DoubleEndedIterator for Iter<'_, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0
            .by_ref()
            .rfind(|s| s.live)
            .map(|s| (&s.key, &s.value))
    }
}

impl<'a, V> IntoIterator for &'a FieldMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = Iter<'a, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
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
    fn keys_alike_in_their_first_bytes_stay_apart_and_in_order() {
        let keys = [
            "",
            "\0",
            "a",
            "ab",
            "ab\0",
            "ab\0\0",
            "ab\u{1}",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgi",
            "é",
            "ée",
            "\u{7f}",
        ];
        let mut m: FieldMap<String> = FieldMap::new();
        // Set in an order unlike the keys' own, twice, so that slots are found again.
        for round in 0..2 {
            for (i, k) in keys.iter().enumerate().rev() {
                m.set_text(k, &format!("{round}:{i}"));
            }
        }
        let want: BTreeMap<String, String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), format!("1:{i}")))
            .collect();
        assert_eq!(m, want);
        for k in keys {
            assert_eq!(m.get(k), want.get(k), "{k:?}");
        }
        assert!(m.get("abcdefg").is_none() && m.get("ab\0\0\0").is_none());
    }

    #[test]
    fn small_and_large_maps_find_their_keys() {
        // Below and above the size where lookups stop scanning and search.
        for n in [1, LINEAR_MAX, LINEAR_MAX + 1, 3 * LINEAR_MAX] {
            let mut m: FieldMap<String> = FieldMap::new();
            let mut want = BTreeMap::new();
            // Every third key is long and shares its first 8 bytes with the others like it.
            let key = |i: usize| match i % 3 {
                0 => format!("kubernetes_{i}"),
                _ => format!("k{}", i * 7919 % 1000),
            };
            for i in (0..n).rev() {
                m.set_text(&key(i), &i.to_string());
                want.insert(key(i), i.to_string());
            }
            assert_eq!(m, want, "{n} keys");
            for i in 0..n {
                assert_eq!(m.get(&key(i)), Some(&i.to_string()), "{n} keys");
            }
            assert!(m.get("kubernetes_").is_none() && m.get("k").is_none());
        }
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
