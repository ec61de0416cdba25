//! Calendar arithmetic for documents: `@timestamp` in RFC 3339 and index names by date.
//!
//! Hand-written rather than through chrono's formatter because it runs once per document:
//! the date and time of the last second seen is kept, so most entries cost only their nine
//! digits of nanoseconds, and the index of the last hour seen is kept the same way.

use crate::entry::Timestamp;

const NANOS: i64 = 1_000_000_000;

/// The civil date of a day counted from 1970-01-01 (proleptic Gregorian, any era).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats timestamps as `2026-12-03T04:31:07.123456789Z`, remembering the last second.
#[derive(Debug, Default)]
pub struct TimestampFormat {
    second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: String,
}

impl TimestampFormat {
    /// Appends `ts` in RFC 3339, UTC, with nanoseconds.
    pub fn write(&mut self, ts: Timestamp, out: &mut Vec<u8>) {
        let second = ts.0.div_euclid(NANOS);
        let nanos = ts.0.rem_euclid(NANOS);
        if self.second != Some(second) {
            let (y, mo, d) = civil_from_days(second.div_euclid(86_400));
            let s = second.rem_euclid(86_400);
            self.prefix = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            self.second = Some(second);
        }
        out.extend_from_slice(self.prefix.as_bytes());
        let mut digits = [b'0'; 11];
        digits[0] = b'.';
        let mut n = nanos;
        for slot in digits[1..10].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        digits[10] = b'Z';
        out.extend_from_slice(&digits);
    }
}

/// A piece of an index name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Year,
    ShortYear,
    Month,
    Day,
    Hour,
}

/// An index name with date placeholders (`logs-%Y.%m.%d`), rendered from an entry's time.
#[derive(Debug, Clone)]
pub struct IndexPattern {
    pieces: Vec<Piece>,
    /// The hour (since the epoch) last rendered, and its name.
    last: Option<(i64, String)>,
}

impl IndexPattern {
    /// Parses a pattern; the config check has already refused unknown placeholders, which
    /// are kept as text here.
    pub fn new(pattern: &str) -> IndexPattern {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some('Y') => Piece::Year,
                Some('y') => Piece::ShortYear,
                Some('m') => Piece::Month,
                Some('d') => Piece::Day,
                Some('H') => Piece::Hour,
                Some(other) => {
                    if other != '%' {
                        text.push('%');
                    }
                    text.push(other);
                    continue;
                }
                None => {
                    text.push('%');
                    continue;
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        IndexPattern { pieces, last: None }
    }

    /// Whether the name never changes with time.
    pub fn is_fixed(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    /// The index name for an entry stamped `ts` (UTC).
    pub fn name(&mut self, ts: Timestamp) -> &str {
        let hour = ts.0.div_euclid(NANOS * 3600);
        if self.last.as_ref().map(|(h, _)| *h) != Some(hour) {
            let (y, mo, d) = civil_from_days(hour.div_euclid(24));
            let h = hour.rem_euclid(24);
            let mut name = String::new();
            for piece in &self.pieces {
                match piece {
                    Piece::Text(t) => name.push_str(t),
                    Piece::Year => name.push_str(&format!("{y:04}")),
                    Piece::ShortYear => name.push_str(&format!("{:02}", y.rem_euclid(100))),
                    Piece::Month => name.push_str(&format!("{mo:02}")),
                    Piece::Day => name.push_str(&format!("{d:02}")),
                    Piece::Hour => name.push_str(&format!("{h:02}")),
                }
            }
            self.last = Some((hour, name));
        }
        self.last
            .as_ref()
            .map(|(_, n)| n.as_str())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, Timelike};

    #[test]
    fn dates_match_chrono_across_eras_and_leap_years() {
        for days in (-800_000..800_000)
            .step_by(997)
            .chain([0, -1, 11_016, 19_782])
        {
            let (y, m, d) = civil_from_days(days);
            let Some(date) = DateTime::from_timestamp(days * 86_400, 0) else {
                continue;
            };
            assert_eq!(
                (y, m, d),
                (i64::from(date.year()), date.month(), date.day()),
                "{days}"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds_in_utc() {
        let mut f = TimestampFormat::default();
        for ns in [
            1_700_000_000_000_000_001i64,
            1_700_000_000_999_999_999,
            1_709_164_800_120_000_000,
            -1,
        ] {
            let mut out = Vec::new();
            f.write(Timestamp::from_nanos(ns), &mut out);
            let text = String::from_utf8(out).unwrap_or_default();
            let parsed = DateTime::parse_from_rfc3339(&text).map(|d| d.timestamp_nanos_opt());
            assert_eq!(parsed, Ok(Some(ns)), "{text}");
            assert!(text.ends_with('Z') && text.len() == 30, "{text}");
        }
    }

    #[test]
    fn index_names_follow_the_entry_time() {
        let mut p = IndexPattern::new("logs-%Y.%m.%d-%H-%y%%x");
        // 2024-02-29T23:59:59Z, then a nanosecond later the next day.
        let leap = 1_709_251_199_000_000_000i64;
        assert_eq!(
            p.name(Timestamp::from_nanos(leap)),
            "logs-2024.02.29-23-24%x"
        );
        assert_eq!(
            p.name(Timestamp::from_nanos(leap + 1_000_000_000)),
            "logs-2024.03.01-00-24%x"
        );
        assert!(!p.is_fixed());
        let mut fixed = IndexPattern::new("app");
        assert!(fixed.is_fixed());
        assert_eq!(fixed.name(Timestamp::from_nanos(leap)), "app");
        let dt = DateTime::from_timestamp_nanos(leap);
        assert_eq!((dt.hour(), dt.day()), (23, 29));
    }
}
