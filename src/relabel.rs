//! Prometheus relabeling (`relabel_configs`), as Promtail applies it to discovered targets.
//!
//! Each rule reads the values of `source_labels` joined with `separator` (default `;`), matches
//! them against `regex` (default `(.*)`, anchored at both ends) and acts: `replace` (default)
//! writes `replacement` (default `$1`, expanded like Go's `Regexp.Expand`) to `target_label`,
//! `keep`/`drop` keep or drop the target, `keepequal`/`dropequal` compare with `target_label`'s
//! value, `hashmod` writes the MD5-based hash modulo `modulus`, `labelmap` copies labels whose
//! name matches to the expanded replacement, `labeldrop`/`labelkeep` remove labels by name, and
//! `lowercase`/`uppercase` write the case-mapped value. Setting a label to "" removes it.
//!
//! ```
//! use logferry::relabel::{relabel, RelabelConfig};
//! let rules: Vec<RelabelConfig> = serde_yaml_ng::from_str(r#"
//! - source_labels: [__meta_kubernetes_namespace]
//!   target_label: namespace
//! - action: drop
//!   source_labels: [namespace]
//!   regex: kube-.*
//! "#).unwrap();
//! let labels = [("__meta_kubernetes_namespace".to_string(), "default".to_string())].into();
//! let out = relabel(&labels, &rules).unwrap();
//! assert_eq!(out["namespace"], "default");
//! ```

use crate::labels::is_valid_name;
use regex::Regex;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// One relabeling rule, with Prometheus' defaults and checks.
#[derive(Debug, Clone)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    /// The expression as written (without the anchors).
    pub regex_source: String,
    regex: Regex,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    source_labels: Option<Vec<String>>,
    separator: Option<String>,
    #[serde(default, deserialize_with = "nullable_string")]
    regex: Option<String>,
    #[serde(default)]
    modulus: u64,
    #[serde(default)]
    target_label: String,
    replacement: Option<String>,
    action: Option<String>,
}

fn nullable_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?.unwrap_or_default()))
}

fn anchored(expr: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{expr})$")).map_err(|e| format!("invalid regex {expr:?}: {e}"))
}

/// Whether a `target_label` / `replacement` with `$` references can make a label name, as
/// Prometheus checks (`^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`).
fn is_target_template(s: &str) -> bool {
    static TARGET: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("valid")
    });
    TARGET.is_match(s)
}

impl RelabelConfig {
    /// Builds and checks a rule, as Prometheus' `Config.Validate`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        action: Action,
        source_labels: Vec<String>,
        separator: Option<String>,
        regex: Option<String>,
        modulus: u64,
        target_label: String,
        replacement: Option<String>,
    ) -> Result<RelabelConfig, String> {
        for l in &source_labels {
            if !is_valid_name(l) {
                return Err(format!("{l:?} is not a valid label name"));
            }
        }
        let explicit_sources = !source_labels.is_empty();
        let separator_set = separator.as_deref().is_some_and(|s| s != ";");
        let replacement_set = replacement
            .as_deref()
            .is_some_and(|r| r != DEFAULT_REPLACEMENT);
        let regex_source = regex.unwrap_or_else(|| DEFAULT_REGEX.to_string());
        let regex_set = regex_source != DEFAULT_REGEX;
        let name = action.name();
        let c = RelabelConfig {
            regex: anchored(&regex_source)?,
            regex_source,
            source_labels,
            separator: separator.unwrap_or_else(|| ";".to_string()),
            modulus,
            target_label,
            replacement: replacement.unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string()),
            action,
        };
        let t = c.target_label.as_str();
        if action == Action::HashMod && modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && t.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        if action == Action::Replace
            && ((!t.contains('$') && !is_valid_name(t))
                || (t.contains('$') && !is_target_template(t)))
        {
            return Err(format!("{t:?} is invalid 'target_label' for {name} action"));
        }
        let strict_target = matches!(
            action,
            Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
                | Action::HashMod
        );
        if strict_target && !is_valid_name(t) {
            return Err(format!("{t:?} is invalid 'target_label' for {name} action"));
        }
        if matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual
        ) && replacement_set
        {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if action == Action::LabelMap && !is_target_template(&c.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {name} action",
                c.replacement
            ));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (regex_set || modulus != 0 || separator_set || replacement_set)
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (explicit_sources
                || !t.is_empty()
                || modulus != 0
                || separator_set
                || replacement_set)
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        Ok(c)
    }
}

impl<'de> Deserialize<'de> for RelabelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        let action = match raw
            .action
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("replace") => Action::Replace,
            Some("keep") => Action::Keep,
            Some("drop") => Action::Drop,
            Some("keepequal") => Action::KeepEqual,
            Some("dropequal") => Action::DropEqual,
            Some("hashmod") => Action::HashMod,
            Some("labelmap") => Action::LabelMap,
            Some("labeldrop") => Action::LabelDrop,
            Some("labelkeep") => Action::LabelKeep,
            Some("lowercase") => Action::Lowercase,
            Some("uppercase") => Action::Uppercase,
            Some("") => return Err(serde::de::Error::custom("relabel action cannot be empty")),
            Some(_) => {
                return Err(serde::de::Error::custom(format!(
                    "unknown relabel action {:?}",
                    raw.action.unwrap_or_default()
                )));
            }
        };
        RelabelConfig::new(
            action,
            raw.source_labels.unwrap_or_default(),
            raw.separator,
            raw.regex,
            raw.modulus,
            raw.target_label,
            raw.replacement,
        )
        .map_err(serde::de::Error::custom)
    }
}

/// Sets a label, removing it when the value is empty (as Prometheus' label builder).
fn set(labels: &mut BTreeMap<String, String>, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_string(), value);
    }
}

/// Applies the rules in order; `None` when a rule drops the target.
pub fn relabel(
    labels: &BTreeMap<String, String>,
    configs: &[RelabelConfig],
) -> Option<BTreeMap<String, String>> {
    let mut lb = labels.clone();
    for c in configs {
        if !apply(c, &mut lb) {
            return None;
        }
    }
    Some(lb)
}

fn apply(c: &RelabelConfig, lb: &mut BTreeMap<String, String>) -> bool {
    let mut val = String::new();
    for (i, name) in c.source_labels.iter().enumerate() {
        if i > 0 {
            val.push_str(&c.separator);
        }
        val.push_str(lb.get(name).map_or("", String::as_str));
    }
    match c.action {
        Action::Drop => return !c.regex.is_match(&val),
        Action::Keep => return c.regex.is_match(&val),
        Action::DropEqual => return lb.get(&c.target_label).map_or("", String::as_str) != val,
        Action::KeepEqual => return lb.get(&c.target_label).map_or("", String::as_str) == val,
        Action::Replace => {
            if val.is_empty()
                && c.regex_source == DEFAULT_REGEX
                && !c.target_label.contains('$')
                && !c.replacement.contains('$')
            {
                set(lb, &c.target_label, c.replacement.clone());
                return true;
            }
            let Some(caps) = c.regex.captures(&val) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&c.target_label, &mut target);
            if !is_valid_name(&target) {
                return true;
            }
            let mut res = String::new();
            caps.expand(&c.replacement, &mut res);
            set(lb, &target, res);
        }
        Action::Lowercase => set(lb, &c.target_label, val.to_lowercase()),
        Action::Uppercase => set(lb, &c.target_label, val.to_uppercase()),
        Action::HashMod => {
            use md5::Digest as _;
            let hash = md5::Md5::digest(val.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&hash[8..16]);
            let m = u64::from_be_bytes(tail) % c.modulus;
            set(lb, &c.target_label, m.to_string());
        }
        Action::LabelMap => {
            let snapshot: Vec<(String, String)> =
                lb.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (name, value) in snapshot {
                if c.regex.is_match(&name) {
                    let res = c
                        .regex
                        .replace_all(&name, c.replacement.as_str())
                        .into_owned();
                    set(lb, &res, value);
                }
            }
        }
        Action::LabelDrop => lb.retain(|k, _| !c.regex.is_match(k)),
        Action::LabelKeep => lb.retain(|k, _| c.regex.is_match(k)),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn err(yaml: &str) -> String {
        serde_yaml_ng::from_str::<Vec<RelabelConfig>>(yaml)
            .expect_err(yaml)
            .to_string()
    }

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let r = rules("- target_label: x");
        assert_eq!(r[0].action, Action::Replace);
        assert_eq!(r[0].separator, ";");
        assert_eq!(r[0].regex_source, "(.*)");
        assert_eq!(r[0].replacement, "$1");
        assert!(r[0].source_labels.is_empty());
    }

    #[test]
    fn replace() {
        let r = rules(
            "- source_labels: [a, b]\n  target_label: joined\n- source_labels: [a]\n  regex: 'f(o+)'\n  target_label: 'x_${1}'\n  replacement: 'got $1!'\n- source_labels: [a]\n  regex: nomatch\n  target_label: y",
        );
        let out = relabel(&l(&[("a", "foo"), ("b", "bar")]), &r).unwrap();
        assert_eq!(out["joined"], "foo;bar");
        assert_eq!(out["x_oo"], "got oo!");
        assert!(!out.contains_key("y"));
        // An empty result removes the label; an empty value with the default regex sets the
        // replacement as it is.
        let r = rules(
            "- source_labels: [missing]\n  target_label: a\n- source_labels: [missing]\n  target_label: c\n  replacement: fixed",
        );
        let out = relabel(&l(&[("a", "foo")]), &r).unwrap();
        assert!(!out.contains_key("a"));
        assert_eq!(out["c"], "fixed");
        // An invalid target after expansion is skipped.
        let r = rules("- source_labels: [a]\n  regex: '(.*)'\n  target_label: '$1'");
        let out = relabel(&l(&[("a", "not-valid")]), &r).unwrap();
        assert_eq!(out, l(&[("a", "not-valid")]));
        // `$name` and `$$`.
        let r = rules(
            "- source_labels: [a]\n  regex: '(?P<word>\\w+)-(\\d+)'\n  target_label: t\n  replacement: '$word/${2}/$$'",
        );
        assert_eq!(relabel(&l(&[("a", "ab-12")]), &r).unwrap()["t"], "ab/12/$");
    }

    #[test]
    fn keep_and_drop() {
        let r = rules("- action: keep\n  source_labels: [env]\n  regex: prod|staging");
        assert!(relabel(&l(&[("env", "prod")]), &r).is_some());
        assert!(
            relabel(&l(&[("env", "production")]), &r).is_none(),
            "anchored"
        );
        assert!(relabel(&l(&[]), &r).is_none());
        let r = rules("- action: Drop\n  source_labels: [__path__]\n  regex: '.*\\.gz'");
        assert!(relabel(&l(&[("__path__", "/var/log/a.gz")]), &r).is_none());
        assert!(relabel(&l(&[("__path__", "/var/log/a.log")]), &r).is_some());
    }

    #[test]
    fn keepequal_and_dropequal() {
        let r = rules("- action: keepequal\n  source_labels: [a]\n  target_label: b");
        assert!(relabel(&l(&[("a", "1"), ("b", "1")]), &r).is_some());
        assert!(relabel(&l(&[("a", "1"), ("b", "2")]), &r).is_none());
        let r = rules("- action: dropequal\n  source_labels: [a]\n  target_label: b");
        assert!(relabel(&l(&[("a", "1"), ("b", "1")]), &r).is_none());
        assert!(relabel(&l(&[("a", "1")]), &r).is_some());
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Values computed with Prometheus' relabel.Process.
        let r =
            rules("- action: hashmod\n  source_labels: [a]\n  modulus: 10\n  target_label: shard");
        let shard = |v: &str| relabel(&l(&[("a", v)]), &r).unwrap()["shard"].clone();
        // md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8; last 8 bytes 0xedef654fccc4a4d8.
        assert_eq!(shard("foo"), (0xedef_654f_ccc4_a4d8u64 % 10).to_string());
        // md5("") = d41d8cd98f00b204e9800998ecf8427e; last 8 bytes 0xe9800998ecf8427e.
        assert_eq!(shard(""), (0xe980_0998_ecf8_427eu64 % 10).to_string());
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let r = rules("- action: labelmap\n  regex: __meta_kubernetes_pod_label_(.+)");
        let out = relabel(
            &l(&[("__meta_kubernetes_pod_label_app", "web"), ("x", "1")]),
            &r,
        )
        .unwrap();
        assert_eq!(out["app"], "web");
        assert_eq!(out["__meta_kubernetes_pod_label_app"], "web");
        let r = rules("- action: labelmap\n  regex: 'k_(.+)'\n  replacement: 'new_${1}'");
        assert_eq!(relabel(&l(&[("k_a", "v")]), &r).unwrap()["new_a"], "v");
        let r = rules("- action: labeldrop\n  regex: '__meta_.*'");
        assert_eq!(
            relabel(&l(&[("__meta_x", "1"), ("job", "j")]), &r).unwrap(),
            l(&[("job", "j")])
        );
        let r = rules("- action: labelkeep\n  regex: 'job|__path__'");
        assert_eq!(
            relabel(
                &l(&[("__meta_x", "1"), ("job", "j"), ("__path__", "/x")]),
                &r
            )
            .unwrap(),
            l(&[("job", "j"), ("__path__", "/x")])
        );
    }

    #[test]
    fn lowercase_uppercase() {
        let r = rules(
            "- action: lowercase\n  source_labels: [a]\n  target_label: lo\n- action: uppercase\n  source_labels: [a, b]\n  separator: '-'\n  target_label: up",
        );
        let out = relabel(&l(&[("a", "MiXeD"), ("b", "x")]), &r).unwrap();
        assert_eq!(out["lo"], "mixed");
        assert_eq!(out["up"], "MIXED-X");
    }

    #[test]
    fn validation() {
        assert!(err("- action: explode").contains("unknown relabel action"));
        assert!(err("- action: hashmod\n  target_label: x").contains("non-zero modulus"));
        assert!(err("- source_labels: [a]").contains("requires 'target_label'"));
        assert!(err("- target_label: 'bad-name'").contains("invalid 'target_label'"));
        assert!(err("- target_label: '$1-x'").contains("invalid 'target_label'"));
        assert!(
            err("- action: lowercase\n  target_label: x\n  replacement: y")
                .contains("'replacement' can not be set")
        );
        assert!(err("- action: labelmap\n  replacement: 'a-b'").contains("invalid 'replacement'"));
        assert!(
            err("- action: labeldrop\n  regex: a\n  source_labels: [b]")
                .contains("requires only 'regex'")
        );
        assert!(
            err("- action: keepequal\n  source_labels: [a]\n  target_label: b\n  regex: x")
                .contains("requires only 'source_labels'")
        );
        assert!(
            err("- source_labels: ['a-b']\n  target_label: x").contains("not a valid label name")
        );
        assert!(err("- target_label: x\n  regex: '('").contains("invalid regex"));
        assert!(err("- target_label: x\n  colour: red").contains("unknown field"));
        // A target with a template is fine for replace.
        rules("- target_label: 'a_$1'");
    }
}
