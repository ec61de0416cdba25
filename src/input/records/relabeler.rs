//! A job's `relabel_configs` over records, remembering what each distinct set of labels became.
//!
//! A record input sees the same few label sets over and over: a syslog listener's messages
//! differ in hostname and app name, a journal's entries in unit and priority, and the labels
//! relabeling can read are few. Relabeling is a pure function of the labels, so its result (a
//! shared [`LabelSet`], or a drop) is kept under the labels' bytes: a record whose labels were
//! seen before costs one hash lookup, no map of owned strings, no regex. Labels are added one
//! by one into a buffer the relabeler reuses, so building them allocates nothing either.
//!
//! When records have labels that are (nearly) all different (a rule reads the message text, a
//! `labelmap` over every journal field), remembering does not pay: after a cache's worth of
//! lookups that mostly missed, the relabeler stops remembering for a while.
//!
//! Clones (one per thread or connection that labels records) share one memory, so that many
//! connections of one listener hold one bounded cache, not one each.

use crate::labels::LabelSet;
use crate::relabel::{Action, RelabelConfig, relabel};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What relabeling made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Relabeled {
    /// The labels it is shipped with (`__` labels gone), shared by every record with the same.
    Labels(Arc<LabelSet>),
    /// A rule dropped it.
    Dropped,
    /// Nothing was left once the `__` labels were gone.
    Unlabeled,
}

/// Distinct label sets remembered at most (beyond, the memory starts over).
const CACHE: usize = 4096;
/// Lookups made without remembering once remembering stopped paying.
const REST: u64 = 100_000;

/// Relabels records of one job; each thread that labels records has its own.
#[derive(Debug, Clone)]
pub struct Relabeler {
    rules: Arc<[RelabelConfig]>,
    /// The `__` labels the rules can read; None when a rule reads label names by regex.
    read: Option<Arc<HashSet<String>>>,
    /// The record being labelled: names and values, and their spans in `text`.
    text: String,
    spans: Vec<Span>,
    key: Vec<u8>,
    memory: Arc<Mutex<Memory>>,
}

/// What the clones of one relabeler remember.
#[derive(Debug, Default)]
struct Memory {
    cache: HashMap<Box<[u8]>, Relabeled>,
    hits: u64,
    /// Lookups to make without the cache before trying it again.
    resting: u64,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Relabeler {
    pub fn new(rules: &[RelabelConfig]) -> Relabeler {
        let by_name = rules.iter().any(|r| {
            matches!(
                r.action,
                Action::LabelMap | Action::LabelDrop | Action::LabelKeep
            )
        });
        let read = (!by_name).then(|| {
            Arc::new(
                rules
                    .iter()
                    .flat_map(|r| r.source_labels.iter().chain([&r.target_label]))
                    .cloned()
                    .collect(),
            )
        });
        Relabeler {
            rules: rules.into(),
            read,
            text: String::new(),
            spans: Vec::new(),
            key: Vec::new(),
            memory: Arc::default(),
        }
    }

    /// Whether a label named `name` can make a difference: every label not starting with
    /// `__`, and the `__` labels the rules read (all of them when a rule matches label names).
    /// The others are dropped after relabeling unread, so an input need not make them.
    pub fn wants(&self, name: &str) -> bool {
        !name.starts_with("__") || self.read.as_ref().is_none_or(|read| read.contains(name))
    }

    /// Adds a label to the record being labelled; a later label of the same name replaces an
    /// earlier one.
    pub fn label(&mut self, name: &str, value: &str) {
        let at = |text: &mut String, s: &str| {
            let start = text.len() as u32;
            text.push_str(s);
            (start, text.len() as u32)
        };
        let name = at(&mut self.text, name);
        let value = at(&mut self.text, value);
        self.spans.push(Span { name, value });
    }

    /// Adds each pair, in order.
    pub fn labels<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (name, value) in pairs {
            self.label(name, value);
        }
    }

    /// Relabels the labels added since the last call, and starts the next record.
    pub fn finish(&mut self) -> Relabeled {
        let text = &self.text;
        let get = |(start, end): (u32, u32)| &text[start as usize..end as usize];
        // Sorted by name, the last of equal names kept: the labels as a map would hold them.
        self.spans.sort_by(|a, b| get(a.name).cmp(get(b.name)));
        let mut kept = 0;
        for i in 0..self.spans.len() {
            let last_of_name = self
                .spans
                .get(i + 1)
                .is_none_or(|next| get(next.name) != get(self.spans[i].name));
            if last_of_name {
                self.spans[kept] = self.spans[i];
                kept += 1;
            }
        }
        self.spans.truncate(kept);
        self.key.clear();
        for span in &self.spans {
            for part in [get(span.name), get(span.value)] {
                self.key
                    .extend_from_slice(&(part.len() as u32).to_le_bytes());
                self.key.extend_from_slice(part.as_bytes());
            }
        }
        let known = {
            let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            if memory.resting > 0 {
                memory.resting -= 1;
                Err(false)
            } else {
                match memory.cache.get(self.key.as_slice()).cloned() {
                    Some(known) => {
                        memory.hits += 1;
                        Ok(known)
                    }
                    None => Err(true),
                }
            }
        };
        let outcome = match known {
            Ok(known) => known,
            Err(remember) => {
                let outcome = self.relabel();
                if remember {
                    let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                    if memory.cache.len() >= CACHE {
                        // Mostly misses since the last start: labels that rarely repeat.
                        if memory.hits < CACHE as u64 {
                            memory.resting = REST;
                        }
                        memory.cache.clear();
                        memory.hits = 0;
                    }
                    memory
                        .cache
                        .insert(self.key.as_slice().into(), outcome.clone());
                }
                outcome
            }
        };
        self.text.clear();
        self.spans.clear();
        outcome
    }

    fn relabel(&self) -> Relabeled {
        let get = |(start, end): (u32, u32)| &self.text[start as usize..end as usize];
        let labels: BTreeMap<String, String> = self
            .spans
            .iter()
            .map(|s| (get(s.name).to_string(), get(s.value).to_string()))
            .collect();
        match relabel(&labels, &self.rules) {
            None => Relabeled::Dropped,
            Some(labels) => {
                let set = LabelSet::new(labels.into_iter().filter(|(_, v)| !v.is_empty()));
                if set.is_empty() {
                    Relabeled::Unlabeled
                } else {
                    Relabeled::Labels(Arc::new(set))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        serde_yaml_ng::from_str(yaml).unwrap_or_default()
    }

    fn rendered(outcome: &Relabeled) -> String {
        match outcome {
            Relabeled::Labels(set) => set.rendered().to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_same_labels_give_the_same_shared_set_and_later_labels_win() {
        let mut r = Relabeler::new(&rules(
            "- {source_labels: [__host], target_label: host}\n- {source_labels: [__app], regex: 'noisy', action: drop}\n",
        ));
        let mut one = |host: &str, app: &str| {
            r.labels([
                ("job", "a"),
                ("__host", "x"),
                ("__app", app),
                ("__host", host),
            ]);
            r.finish()
        };
        let first = one("h1", "sshd");
        assert_eq!(rendered(&first), r#"{host="h1", job="a"}"#);
        let again = one("h1", "sshd");
        match (&first, &again) {
            (Relabeled::Labels(a), Relabeled::Labels(b)) => assert!(Arc::ptr_eq(a, b)),
            _ => panic!("{first:?} {again:?}"),
        }
        assert_eq!(rendered(&one("h2", "cron")), r#"{host="h2", job="a"}"#);
        assert_eq!(one("h2", "noisy"), Relabeled::Dropped);
        assert_eq!(one("h2", "noisy"), Relabeled::Dropped, "remembered too");
    }

    #[test]
    fn clones_share_what_they_remember() {
        let mut one = Relabeler::new(&[]);
        let mut other = one.clone();
        one.label("job", "a");
        other.label("job", "a");
        match (one.finish(), other.finish()) {
            (Relabeled::Labels(a), Relabeled::Labels(b)) => assert!(Arc::ptr_eq(&a, &b)),
            got => panic!("{got:?}"),
        }
    }

    #[test]
    fn a_record_left_without_labels_is_unlabeled() {
        let mut r = Relabeler::new(&[]);
        r.label("__only_internal", "x");
        assert_eq!(r.finish(), Relabeled::Unlabeled);
        r.label("job", "");
        assert_eq!(
            r.finish(),
            Relabeled::Unlabeled,
            "an empty value is no label"
        );
    }

    #[test]
    fn only_labels_the_rules_read_are_wanted() {
        let r = Relabeler::new(&rules("- {source_labels: [__a], target_label: b}"));
        assert!(r.wants("__a") && r.wants("job") && !r.wants("__c"));
        let r = Relabeler::new(&rules("- {action: labelmap, regex: '__(.+)'}"));
        assert!(r.wants("__c"));
    }

    #[test]
    fn labels_that_never_repeat_still_relabel_right() {
        let mut r = Relabeler::new(&rules("- {source_labels: [__n], target_label: n}"));
        for n in 0..(CACHE * 3) {
            let n = n.to_string();
            r.labels([("__n", n.as_str())]);
            assert_eq!(rendered(&r.finish()), format!("{{n=\"{n}\"}}"));
        }
        let memory = r.memory.lock().unwrap();
        assert!(memory.cache.len() <= CACHE);
    }

    #[test]
    fn names_and_values_cannot_run_into_each_other() {
        let mut r = Relabeler::new(&[]);
        r.labels([("a", "bc")]);
        let first = r.finish();
        r.labels([("ab", "c")]);
        assert_ne!(first, r.finish());
    }
}
