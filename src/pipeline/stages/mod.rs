//! The stages, one module per stage or small family, and the table that builds them from YAML.

mod cri;
mod decolorize;
mod docker;
mod drop;
mod json;
mod labels;
mod limit;
mod logfmt;
mod matcher;
mod metrics;
mod multiline;
mod pack;
mod regex;
mod replace;
mod sampling;
mod template;
mod timestamp;

pub(crate) use labels::LabelsStage;
pub(crate) use timestamp::TimestampStage;

use super::{BuildCtx, PipelineError, Stage};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value as Yaml;

/// Builds one stage from its YAML (`{name: config}`); `path` names it in errors.
pub(crate) fn build(
    item: &Yaml,
    ctx: &BuildCtx<'_>,
    path: &str,
) -> Result<Box<dyn Stage>, PipelineError> {
    let err = |path: String, message: String| PipelineError { path, message };
    let map = match item {
        Yaml::Mapping(m) => m,
        Yaml::Tagged(t) => {
            return Err(err(
                path.to_string(),
                format!("unexpected YAML tag {}", t.tag),
            ));
        }
        other => {
            return Err(err(
                path.to_string(),
                format!(
                    "a stage must be a YAML object with one key, the stage name (e.g. `- json: ...`), got {}",
                    describe(other)
                ),
            ));
        }
    };
    if map.len() != 1 {
        return Err(err(
            path.to_string(),
            format!(
                "a stage must have exactly one key, the stage name; found {}",
                map.len()
            ),
        ));
    }
    let (name, config) = map.iter().next().expect("one key");
    let Some(name) = name.as_str() else {
        return Err(err(
            path.to_string(),
            "the stage name must be a string".to_string(),
        ));
    };
    let here = format!("{path} ({name})");
    let wrap = |r: Result<Box<dyn Stage>, String>| r.map_err(|m| err(here.clone(), m));
    match name {
        "docker" => wrap(docker::build(config)),
        "cri" => wrap(cri::build(config)),
        "json" => wrap(json::build(config)),
        "logfmt" => wrap(logfmt::build(config)),
        "regex" => wrap(regex::build(config)),
        "replace" => wrap(replace::build(config)),
        "multiline" => wrap(multiline::build(config)),
        "decolorize" => wrap(decolorize::build(config)),
        "pack" => wrap(pack::build(config)),
        "template" => wrap(template::build(config)),
        "labels" => wrap(labels::build_labels(config)),
        "static_labels" => wrap(labels::build_static_labels(config)),
        "labeldrop" => wrap(labels::build_labeldrop(config)),
        "labelallow" => wrap(labels::build_labelallow(config)),
        "structured_metadata" | "non_indexed_labels" => {
            wrap(labels::build_structured_metadata(config))
        }
        "output" => wrap(labels::build_output(config)),
        "tenant" => wrap(labels::build_tenant(config)),
        "timestamp" => wrap(timestamp::build(config)),
        "match" => matcher::build(config, ctx, &here),
        "drop" => wrap(drop::build(config)),
        "limit" => wrap(limit::build(config)),
        "sampling" => wrap(sampling::build(config)),
        "metrics" => wrap(metrics::build(config, ctx)),
        "geoip" | "eventlogmessage" => Err(err(here, "stage not supported yet".to_string())),
        other => Err(err(
            path.to_string(),
            format!("unknown stage type {other:?}"),
        )),
    }
}

fn describe(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "an object",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Decodes a stage's options; `null` (e.g. `docker:`) reads as an empty object.
///
/// An option the stage does not know is left out with a warning naming it, as Promtail decodes
/// stage options without complaining about extra keys: a config written for a later Promtail
/// (`docker: {container_labels: true}`) still loads, and a typo is still seen.
pub(crate) fn options<T: DeserializeOwned>(config: &Yaml) -> Result<T, String> {
    let mut config = if config.is_null() {
        Yaml::Mapping(Default::default())
    } else {
        config.clone()
    };
    loop {
        let err = match serde_path_to_error::deserialize(config.clone()) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let path = err.path().to_string();
        let message = err.inner().to_string();
        if let Some(key) = unknown_field(&message)
            && let Yaml::Mapping(map) = &mut config
            && (path == "." || path.is_empty() || path == key)
            && map.remove(key).is_some()
        {
            let known = message
                .split_once(", expected ")
                .map_or("", |(_, rest)| rest);
            tracing::warn!(
                option = key,
                "pipeline stage option {key:?} is unknown and ignored, as Promtail does (expected {known})"
            );
            continue;
        }
        return Err(if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        });
    }
}

/// The field named by serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// Lenient scalar decoding, as Promtail's `mapstructure.WeakDecode` does for many stages: a
/// string option may be written as a number or boolean, a number as a string.
pub(crate) mod weak {
    use serde::Deserialize;
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    /// A string written as any YAML scalar.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct WString(pub String);

    impl<'de> Deserialize<'de> for WString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = WString;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<WString, E> {
                    Ok(WString(v.to_string()))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<WString, E> {
                    Ok(WString(v))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<WString, E> {
                    Ok(WString(v.to_string()))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<WString, E> {
                    Ok(WString(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<WString, E> {
                    Ok(WString(v.to_string()))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<WString, E> {
                    Ok(WString(crate::pipeline::value::float_plain(v)))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A number written as a YAML number or a numeric string.
    #[derive(Debug, Clone, Copy, PartialEq, Default)]
    pub struct WF64(pub f64);

    impl<'de> Deserialize<'de> for WF64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = WF64;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a number")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<WF64, E> {
                    v.trim()
                        .parse()
                        .map(WF64)
                        .map_err(|_| E::custom(format!("invalid number {v:?}")))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<WF64, E> {
                    Ok(WF64(v as f64))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<WF64, E> {
                    Ok(WF64(v as f64))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<WF64, E> {
                    Ok(WF64(v))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A whole number written as a YAML number or a numeric string.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct WU64(pub u64);

    impl<'de> Deserialize<'de> for WU64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = WU64;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a whole number")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<WU64, E> {
                    v.trim()
                        .parse()
                        .map(WU64)
                        .map_err(|_| E::custom(format!("invalid whole number {v:?}")))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<WU64, E> {
                    u64::try_from(v)
                        .map(WU64)
                        .map_err(|_| E::custom(format!("must not be negative, got {v}")))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<WU64, E> {
                    Ok(WU64(v))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<WU64, E> {
                    if v >= 0.0 && v.fract() == 0.0 {
                        Ok(WU64(v as u64))
                    } else {
                        Err(E::custom(format!("expected a whole number, got {v}")))
                    }
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A boolean written as a YAML boolean or `"true"`/`"false"`/`1`/`0`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct WBool(pub bool);

    impl<'de> Deserialize<'de> for WBool {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = WBool;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a boolean")
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<WBool, E> {
                    Ok(WBool(v))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<WBool, E> {
                    match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "t" => Ok(WBool(true)),
                        "false" | "0" | "f" | "" => Ok(WBool(false)),
                        _ => Err(E::custom(format!("invalid boolean {v:?}"))),
                    }
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<WBool, E> {
                    Ok(WBool(v != 0))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<WBool, E> {
                    Ok(WBool(v != 0))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A string option of a stage Promtail decodes strictly (most of them): any other scalar
    /// is refused, as `yes`, `5` or `1.5` would be by Promtail.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct SString(pub String);

    /// A boolean option of a stage Promtail decodes strictly: `"true"` (a string) is refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct SBool(pub bool);

    fn unconvertible<E: de::Error>(want: &str, got: &str, value: impl fmt::Display) -> E {
        E::custom(format!(
            "expected type '{want}', got unconvertible type '{got}', value: '{value}'"
        ))
    }

    impl<'de> Deserialize<'de> for SString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = SString;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<SString, E> {
                    Ok(SString(v.to_string()))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<SString, E> {
                    Ok(SString(v))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<SString, E> {
                    Err(unconvertible("string", "bool", v))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<SString, E> {
                    Err(unconvertible("string", "int", v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<SString, E> {
                    Err(unconvertible("string", "int", v))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<SString, E> {
                    Err(unconvertible(
                        "string",
                        "float64",
                        crate::pipeline::value::float_plain(v),
                    ))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for SBool {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = SBool;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a boolean")
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<SBool, E> {
                    Ok(SBool(v))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<SBool, E> {
                    Err(unconvertible("bool", "string", v))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<SBool, E> {
                    Err(unconvertible("bool", "int", v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<SBool, E> {
                    Err(unconvertible("bool", "int", v))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl From<SString> for String {
        fn from(s: SString) -> String {
            s.0
        }
    }

    impl From<WString> for String {
        fn from(s: WString) -> String {
            s.0
        }
    }

    /// One string or a list of strings.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct OneOrMany(pub Vec<String>);

    impl<'de> Deserialize<'de> for OneOrMany {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Raw {
                One(WString),
                Many(Vec<WString>),
            }
            Ok(match Raw::deserialize(d)? {
                Raw::One(s) => OneOrMany(vec![s.0]),
                Raw::Many(v) => OneOrMany(v.into_iter().map(|s| s.0).collect()),
            })
        }
    }
}

/// Reads a stage option that is a source name: `Some("")` is an error ("empty source").
pub(crate) fn non_empty_source<S: Into<String>>(
    source: Option<S>,
) -> Result<Option<String>, String> {
    match source.map(Into::into) {
        Some(s) if s.is_empty() => Err("empty source".to_string()),
        other => Ok(other),
    }
}

/// Compiles a Go RE2 expression.
pub(crate) fn compile_regex(expr: &str) -> Result<::regex::Regex, String> {
    reject_angle_group(expr)
        .map_err(|e| format!("could not compile regular expression {expr:?}: {e}"))?;
    ::regex::Regex::new(expr)
        .map_err(|e| format!("could not compile regular expression {expr:?}: {e}"))
}

/// Go's RE2 (as in Promtail 2.8) knows named groups only as `(?P<name>...)`; the Rust crate
/// also takes `(?<name>...)`, which Promtail refuses.
pub(crate) fn reject_angle_group(expr: &str) -> Result<(), String> {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'(' if bytes[i + 1..].starts_with(b"?<") => {
                return Err("invalid or unsupported Perl syntax: `(?<`".to_string());
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The value of `source` in the extracted map as a string, or why not (for debug logs).
pub(crate) fn source_string<'a>(
    extracted: &'a crate::pipeline::Extracted,
    source: &str,
) -> Result<std::borrow::Cow<'a, str>, &'static str> {
    let v = extracted
        .get(source)
        .ok_or("source does not exist in the set of extracted values")?;
    crate::pipeline::get_string(v).ok_or("failed to convert source value to string")
}

/// Runs a stage built from YAML over one entry (tests).
#[cfg(test)]
pub(crate) fn test_stage(yaml: &str) -> Box<dyn Stage> {
    let item: Yaml = serde_yaml_ng::from_str(yaml).expect("yaml");
    let metrics = crate::pipeline::CustomMetrics::default();
    let ctx = BuildCtx {
        metrics: &metrics,
        job_name: "test",
    };
    build(&item, &ctx, "pipeline_stages[0]").expect("stage builds")
}

/// Decodes logfmt text into pairs (tests).
#[cfg(test)]
pub(crate) fn logfmt_decode(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut v = Vec::new();
    logfmt::decode(s, |k, val| v.push((k.to_string(), val.to_string())))?;
    Ok(v)
}

/// Parses a LogQL selector (tests).
#[cfg(test)]
pub(crate) fn parse_selector(s: &str) -> bool {
    matcher::Selector::parse(s).is_ok()
}
