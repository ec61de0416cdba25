//! Go-style durations (`500ms`, `1h30m`) and byte sizes (`1048576`, `256KB`), as Promtail writes
//! them in its YAML.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written in Go's syntax: a sequence of decimal numbers with units, e.g. `300ms`,
/// `1.5h`, `2h45m`. Prometheus' `d`, `w` and `y` units are accepted too, as some Promtail
/// settings use them.
///
/// ```
/// use logferry::config::GoDuration;
/// let d: GoDuration = "1h30m".parse().unwrap();
/// assert_eq!(d.0, std::time::Duration::from_secs(5400));
/// assert_eq!(d.to_string(), "1h30m");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Self {
        GoDuration(Duration::from_millis(ms))
    }
}

impl std::str::FromStr for GoDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(GoDuration)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. \"500ms\", \"10s\", \"1h30m\")");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("invalid duration {text:?}: must not be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("invalid duration {text:?}: missing unit (ns, us, ms, s, m, h)")
            })?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "w" => 7.0 * 86400e9,
            "y" => 365.0 * 86400e9,
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        total_nanos += number * unit_nanos;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(format!("invalid duration {text:?}: too large"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `time.Duration.String()` for whole units (`1h30m0s` is shortened to
    /// `1h30m`, which Go parses back the same).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d < Duration::from_secs(1) {
            let nanos = d.as_nanos();
            return if nanos.is_multiple_of(1_000_000) {
                write!(f, "{}ms", nanos / 1_000_000)
            } else if nanos.is_multiple_of(1_000) {
                write!(f, "{}us", nanos / 1_000)
            } else {
                write!(f, "{nanos}ns")
            };
        }
        let mut secs = d.as_secs();
        let h = secs / 3600;
        secs %= 3600;
        let m = secs / 60;
        secs %= 60;
        let frac = d.subsec_nanos();
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if secs > 0 || frac > 0 {
            if frac > 0 {
                let s = format!("{secs}.{frac:09}");
                out.push_str(s.trim_end_matches('0'));
            } else {
                out.push_str(&secs.to_string());
            }
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A size in bytes: a plain number, or a number with a unit (`KB`, `MiB`, ... all powers of
/// 1024, as Promtail's `flagext.ByteSize` reads them).
///
/// ```
/// use logferry::config::ByteSize;
/// let s: ByteSize = "256KB".parse().unwrap();
/// assert_eq!(s.0, 262_144);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number.parse().map_err(|_| {
            format!("invalid size {text:?} (expected bytes, e.g. 1048576 or \"1MB\")")
        })?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => return Err(format!("invalid size {text:?}: unknown unit {other:?}")),
        };
        Ok(ByteSize((number * multiplier as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<Duration, String> {
        s.parse::<GoDuration>().map(|g| g.0)
    }

    #[test]
    fn go_durations() {
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(d("2µs"), Ok(Duration::from_micros(2)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("1d"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(d("10").unwrap_err().contains("missing unit"));
        assert!(d("10x").unwrap_err().contains("unknown unit"));
        assert!(d("").is_err());
        assert!(d("-1s").unwrap_err().contains("negative"));
        assert!(d("ms").is_err());
    }

    #[test]
    fn durations_print_like_go() {
        for s in ["10s", "1h30m", "500ms", "5m", "1m0.5s", "0s"] {
            let parsed: GoDuration = s.parse().unwrap();
            let printed = parsed.to_string();
            assert_eq!(
                printed.parse::<GoDuration>().unwrap(),
                parsed,
                "{s} -> {printed}"
            );
        }
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn sizes() {
        assert_eq!("1048576".parse::<ByteSize>(), Ok(ByteSize(1_048_576)));
        assert_eq!("1MB".parse::<ByteSize>(), Ok(ByteSize(1_048_576)));
        assert_eq!("256KiB".parse::<ByteSize>(), Ok(ByteSize(262_144)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }
}
