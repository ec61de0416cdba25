//! The usual shape of an RFC3339 value (`2024-03-21T10:15:32.123456789Z`, `...+01:00`) read
//! without walking the layout: Docker, CRI and most `timestamp` stages read one per line, and
//! the general layout parser costs several times this.
//!
//! Only values of exactly that shape are read here (four-digit year, two-digit fields at fixed
//! places, an optional `.` and 1 to 9 digits, `Z` or `±hh:mm` with hours below 24 and minutes
//! below 60, nothing after). Anything else, valid or not, returns `None` and goes to the general
//! parser, so that what Go's layout rules accept beyond this shape (a `,` before the fraction,
//! more than nine digits, a one-digit hour, offsets up to 24:60) and every error message stay
//! theirs.

use super::{days_from_civil, days_in};
use crate::entry::Timestamp;

/// The two digits at `at`, if both are digits.
fn two(b: &[u8], at: usize) -> Option<u32> {
    let (h, l) = (b[at].wrapping_sub(b'0'), b[at + 1].wrapping_sub(b'0'));
    (h < 10 && l < 10).then_some(h as u32 * 10 + l as u32)
}

/// The instant of `value` when it has the plain RFC3339 shape, as the general parser gives it.
pub(super) fn parse(value: &str) -> Option<Timestamp> {
    let b = value.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = two(b, 0)? * 100 + two(b, 2)?;
    let (month, day) = (two(b, 5)?, two(b, 8)?);
    let (hour, minute, second) = (two(b, 11)?, two(b, 14)?, two(b, 17)?);
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in(month, year)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if rest[0] == b'.' {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        for &c in &rest[1..=digits] {
            nanos = nanos * 10 + u32::from(c - b'0');
        }
        nanos *= 10u32.pow(9 - digits as u32);
        rest = &rest[1 + digits..];
    }
    let offset: i32 = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two(rest, 1)?, two(rest, 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = (h * 60 + m) as i32 * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let civil = days_from_civil(year, month, day) * 86400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second);
    (civil - i64::from(offset))
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(i64::from(nanos)))
        .map(|n| Timestamp::with_offset(n, offset))
}

#[cfg(test)]
mod tests {
    use super::super::{Layout, Zone, named_layout};

    /// Values around the shape: valid ones, edges of every field, and near misses.
    fn values() -> Vec<String> {
        let mut v: Vec<String> = [
            "2024-03-21T10:15:32Z",
            "2024-03-21T10:15:32.1Z",
            "2024-03-21T10:15:32.123456789Z",
            "2024-03-21T10:15:32.000000001+01:00",
            "2024-03-21T10:15:32.5-07:30",
            "2024-02-29T23:59:59.999999999Z",
            "2023-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-12-31T23:59:59Z",
            "2024-00-10T00:00:00Z",
            "2024-13-10T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-32T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00+23:59",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+24:60",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01T00:00:00-00:60",
            "2024-01-01T00:00:00-00:61",
            "2024-01-01T00:00:00-00:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+01",
            "2024-01-01T00:00:00+01:00:00",
            "2024-01-01T00:00:00z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00ZZ",
            "2024-01-01T00:00:00Z ",
            " 2024-01-01T00:00:00Z",
            "2024-01-01t00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T0:00:00Z",
            "2024-01-01T00:0:00Z",
            "2024-1-01T00:00:00Z",
            "24-01-01T00:00:00Z",
            "+2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.+01:00",
            "2024-01-01T00:00:00,5Z",
            "2024-01-01T00:00:00.1234567891Z",
            "2024-01-01T00:00:00.123456789123456Z",
            "2024-01-01T00:00:00.5",
            "2024-01-01T00:00:00.5x",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "1677-09-21T00:12:43.145224191Z",
            "1677-09-21T00:12:43.145224192Z",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "2262-04-11T23:47:16.854775807-00:01",
            "9999-12-31T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2024-01-01T00:00:00+01:00é",
            "2024-01-01T00:00:00.1é",
            "2024-01-01Té0:00:00Z",
            "",
            "2024",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every fraction length, with each kind of zone.
        for n in 0..=12 {
            for zone in ["Z", "+05:45", "-11:00", "+00:00"] {
                let frac = if n == 0 {
                    String::new()
                } else {
                    format!(".{}", &"987654321012"[..n])
                };
                v.push(format!("2019-04-30T02:12:41{frac}{zone}"));
            }
        }
        // Each byte of two values replaced by characters that are or look like the right ones.
        for base in [
            "2024-03-21T10:15:32.123456789Z",
            "2024-03-21T10:15:32.12-07:00",
        ] {
            for i in 0..base.len() {
                for c in [
                    '0', '1', '5', '9', ':', '-', '+', '.', 'T', 'Z', ' ', 'a', '/',
                ] {
                    let mut s = base.to_string();
                    s.replace_range(i..=i, &c.to_string());
                    v.push(s.clone());
                    s.remove(i);
                    v.push(s);
                }
            }
        }
        // Every day of a leap and a common year, at both ends of the day.
        for year in [2023, 2024] {
            for month in 1..=12 {
                for day in 28..=31 {
                    v.push(format!("{year}-{month:02}-{day:02}T00:00:00Z"));
                    v.push(format!("{year}-{month:02}-{day:02}T23:59:59.5+14:00"));
                }
            }
        }
        v
    }

    #[test]
    fn same_as_the_layout_parser() {
        let zones = [Zone::Utc, Zone::load("Europe/Paris").unwrap()];
        let mut fast = 0;
        for name in ["RFC3339", "RFC3339Nano"] {
            let layout = Layout::new(named_layout(name).unwrap());
            assert!(layout.rfc3339);
            for value in values() {
                for zone in &zones {
                    let got = layout.parse(&value, zone);
                    let want = layout.parse_general(&value, zone);
                    assert_eq!(
                        got.as_ref().map(|t| (t.0, t.1)),
                        want.as_ref().map(|t| (t.0, t.1)),
                        "{name} {value:?}"
                    );
                }
                fast += usize::from(super::parse(&value).is_some());
            }
        }
        // The usual values do take the short way.
        assert!(super::parse("2024-03-21T10:15:32.123456789Z").is_some());
        assert!(super::parse("2024-03-21T10:15:32+01:00").is_some());
        assert!(fast > 200, "{fast} values read directly");
    }

    #[test]
    fn other_layouts_take_the_general_way() {
        assert!(!Layout::new("2006-01-02T15:04:05.000Z07:00").rfc3339);
        assert!(!Layout::new("2006-01-02 15:04:05").rfc3339);
    }
}
