//! Go's time layouts (`2006-01-02T15:04:05.999999999Z07:00`): parsing as `time.Parse` /
//! `time.ParseInLocation` do, and formatting as `Time.Format` does.
//!
//! A layout is the reference time `Mon Jan 2 15:04:05 MST 2006` written the way the value is.
//! Parsing follows Go's rules: spaces in the layout match any run of spaces, a fractional second
//! may follow the seconds even when the layout has none, `_2` allows a leading space, zone
//! abbreviations are looked up in the local (or given) zone and otherwise read as UTC.
//!
//! ```
//! use logferry::pipeline::gotime::{Layout, Zone};
//! let layout = Layout::new("02/Jan/2006:15:04:05 -0700");
//! let ts = layout.parse("25/Jan/2000:14:00:01 -0500", &Zone::Utc).unwrap();
//! assert_eq!(ts.0, 948_826_801_000_000_000);
//! assert_eq!(layout.format(ts, &Zone::Utc), "25/Jan/2000:19:00:01 +0000");
//! ```

use crate::entry::Timestamp;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::{OffsetComponents, OffsetName, Tz};
use std::sync::OnceLock;

mod rfc3339;

/// Go's named layouts (those of the `time` package that Promtail accepts, and a few more).
pub fn named_layout(name: &str) -> Option<&'static str> {
    Some(match name {
        "ANSIC" => "Mon Jan _2 15:04:05 2006",
        "UnixDate" => "Mon Jan _2 15:04:05 MST 2006",
        "RubyDate" => "Mon Jan 02 15:04:05 -0700 2006",
        "RFC822" => "02 Jan 06 15:04 MST",
        "RFC822Z" => "02 Jan 06 15:04 -0700",
        "RFC850" => "Monday, 02-Jan-06 15:04:05 MST",
        "RFC1123" => "Mon, 02 Jan 2006 15:04:05 MST",
        "RFC1123Z" => "Mon, 02 Jan 2006 15:04:05 -0700",
        "RFC3339" => "2006-01-02T15:04:05Z07:00",
        "RFC3339Nano" => "2006-01-02T15:04:05.999999999Z07:00",
        _ => return None,
    })
}

/// A time zone: UTC or an IANA zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    Tz(Tz),
}

impl Zone {
    /// An IANA zone by name (`UTC`, `Local`, `Europe/Paris`), as Go's `time.LoadLocation`.
    pub fn load(name: &str) -> Result<Zone, String> {
        match name {
            "" | "UTC" => Ok(Zone::Utc),
            "Local" => Ok(Zone::local()),
            _ => name
                .parse::<Tz>()
                .map(Zone::Tz)
                .map_err(|_| format!("unknown time zone {name}")),
        }
    }

    /// The machine's zone: `$TZ`, else the system setting, else UTC (as Go's `time.Local`).
    pub fn local() -> Zone {
        static LOCAL: OnceLock<Zone> = OnceLock::new();
        *LOCAL.get_or_init(|| {
            if let Ok(tz) = std::env::var("TZ") {
                let tz = tz.trim_start_matches(':');
                return match tz {
                    "" | "UTC" | "Etc/UTC" => Zone::Utc,
                    name => name.parse::<Tz>().map(Zone::Tz).unwrap_or(Zone::Utc),
                };
            }
            match iana_time_zone::get_timezone() {
                Ok(name) if name != "UTC" && name != "Etc/UTC" => {
                    name.parse::<Tz>().map(Zone::Tz).unwrap_or(Zone::Utc)
                }
                _ => Zone::Utc,
            }
        })
    }

    /// Offset (seconds east of UTC) and abbreviation in effect at a Unix second.
    pub fn at(&self, unix: i64) -> (i32, String) {
        match self {
            Zone::Utc => (0, "UTC".to_string()),
            Zone::Tz(tz) => {
                let Some(utc) = chrono::DateTime::from_timestamp(unix, 0) else {
                    return (0, "UTC".to_string());
                };
                let off = tz.offset_from_utc_datetime(&utc.naive_utc());
                let abbr = off.abbreviation().unwrap_or("").to_string();
                (off.fix().local_minus_utc(), abbr)
            }
        }
    }

    fn offset_at(&self, unix: i64) -> i32 {
        match self {
            Zone::Utc => 0,
            Zone::Tz(tz) => match chrono::DateTime::from_timestamp(unix, 0) {
                Some(utc) => {
                    let off = tz.offset_from_utc_datetime(&utc.naive_utc());
                    (off.base_utc_offset() + off.dst_offset()).num_seconds() as i32
                }
                None => 0,
            },
        }
    }

    /// The offset in effect at a wall-clock time in this zone, choosing as Go's `time.Date`
    /// does around transitions.
    fn civil_offset(&self, civil: i64) -> i32 {
        self.offset_at(civil - self.offset_at(civil) as i64)
    }

    /// The offset of an abbreviation (`EST`) in this zone near a Unix second, as Go's
    /// `Location.lookupName`.
    fn lookup_name(&self, name: &str, unix: i64) -> Option<i32> {
        match self {
            Zone::Utc => (name == "UTC").then_some(0),
            Zone::Tz(_) => {
                const MONTH: i64 = 30 * 86400;
                for delta in [0, -3, 3, -6, 6, -9, 9, -12, 12] {
                    let (off, abbr) = self.at(unix + delta * MONTH);
                    if abbr == name {
                        return Some(off);
                    }
                }
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    TZ,
    Iso8601TZ,
    Iso8601SecondsTZ,
    Iso8601ShortTZ,
    Iso8601ColonTZ,
    Iso8601ColonSecondsTZ,
    NumTZ,
    NumSecondsTz,
    NumShortTZ,
    NumColonTZ,
    NumColonSecondsTZ,
    /// `.000` (exactly n digits) with its separator.
    FracSecond0(usize, u8),
    /// `.999` (up to n digits, trailing zeros dropped) with its separator.
    FracSecond9(usize, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Lit(String),
    Std(Std),
}

/// A parsed layout, reusable for many values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    chunks: Vec<Chunk>,
    source: String,
    has_year: bool,
    /// RFC3339 or RFC3339Nano, whose usual values [`rfc3339::parse`] reads directly.
    rfc3339: bool,
}

fn starts(s: &[u8], i: usize, pat: &str) -> bool {
    s.len() >= i + pat.len() && &s[i..i + pat.len()] == pat.as_bytes()
}

/// Go's `nextStdChunk`: (literal prefix length, std, length of the std token).
fn next_std(l: &[u8]) -> Option<(usize, Std, usize)> {
    let mut i = 0;
    while i < l.len() {
        let c = l[i];
        let found: Option<(Std, usize)> = match c {
            b'J' => {
                if starts(l, i, "January") {
                    Some((Std::LongMonth, 7))
                } else if starts(l, i, "Jan") {
                    Some((Std::Month, 3))
                } else {
                    None
                }
            }
            b'M' => {
                if starts(l, i, "Monday") {
                    Some((Std::LongWeekDay, 6))
                } else if starts(l, i, "Mon") {
                    Some((Std::WeekDay, 3))
                } else if starts(l, i, "MST") {
                    Some((Std::TZ, 3))
                } else {
                    None
                }
            }
            b'0' => {
                if starts(l, i, "002") {
                    Some((Std::ZeroYearDay, 3))
                } else if i + 1 < l.len() && (b'1'..=b'6').contains(&l[i + 1]) {
                    let s = match l[i + 1] {
                        b'1' => Std::ZeroMonth,
                        b'2' => Std::ZeroDay,
                        b'3' => Std::ZeroHour12,
                        b'4' => Std::ZeroMinute,
                        b'5' => Std::ZeroSecond,
                        _ => Std::Year,
                    };
                    Some((s, 2))
                } else {
                    None
                }
            }
            b'1' => {
                if starts(l, i, "15") {
                    Some((Std::Hour, 2))
                } else {
                    Some((Std::NumMonth, 1))
                }
            }
            b'2' => {
                if starts(l, i, "2006") {
                    Some((Std::LongYear, 4))
                } else {
                    Some((Std::Day, 1))
                }
            }
            b'_' => {
                if i + 1 < l.len() && l[i + 1] == b'2' {
                    if starts(l, i + 1, "2006") {
                        // `_2006` is a literal `_` and a year.
                        return Some((i + 1, Std::LongYear, 4));
                    }
                    Some((Std::UnderDay, 2))
                } else if starts(l, i, "__2") {
                    Some((Std::UnderYearDay, 3))
                } else {
                    None
                }
            }
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if starts(l, i, "PM") => Some((Std::PM, 2)),
            b'p' if starts(l, i, "pm") => Some((Std::Pm, 2)),
            b'-' => {
                if starts(l, i, "-070000") {
                    Some((Std::NumSecondsTz, 7))
                } else if starts(l, i, "-07:00:00") {
                    Some((Std::NumColonSecondsTZ, 9))
                } else if starts(l, i, "-0700") {
                    Some((Std::NumTZ, 5))
                } else if starts(l, i, "-07:00") {
                    Some((Std::NumColonTZ, 6))
                } else if starts(l, i, "-07") {
                    Some((Std::NumShortTZ, 3))
                } else {
                    None
                }
            }
            b'Z' => {
                if starts(l, i, "Z070000") {
                    Some((Std::Iso8601SecondsTZ, 7))
                } else if starts(l, i, "Z07:00:00") {
                    Some((Std::Iso8601ColonSecondsTZ, 9))
                } else if starts(l, i, "Z0700") {
                    Some((Std::Iso8601TZ, 5))
                } else if starts(l, i, "Z07:00") {
                    Some((Std::Iso8601ColonTZ, 6))
                } else if starts(l, i, "Z07") {
                    Some((Std::Iso8601ShortTZ, 3))
                } else {
                    None
                }
            }
            b'.' | b',' => {
                if i + 1 < l.len() && (l[i + 1] == b'0' || l[i + 1] == b'9') {
                    let ch = l[i + 1];
                    let mut j = i + 1;
                    while j < l.len() && l[j] == ch {
                        j += 1;
                    }
                    if !(j < l.len() && l[j].is_ascii_digit()) {
                        let n = j - (i + 1);
                        let std = if ch == b'0' {
                            Std::FracSecond0(n, c)
                        } else {
                            Std::FracSecond9(n, c)
                        };
                        Some((std, j - i))
                    } else {
                        None
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some((std, len)) = found {
            return Some((i, std, len));
        }
        i += 1;
    }
    None
}

/// The civil fields of a parsed value and what it said about its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanosecond: u32,
    zone: ZoneSeen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ZoneSeen {
    None,
    Utc,
    Offset(i32),
    Name(String),
}

const SHORT_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const SHORT_MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn lookup(names: &[&str], v: &str) -> Option<(usize, usize)> {
    for (i, n) in names.iter().enumerate() {
        if v.len() >= n.len() && v.as_bytes()[..n.len()].eq_ignore_ascii_case(n.as_bytes()) {
            return Some((i, n.len()));
        }
    }
    None
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`).
fn getnum(v: &str, fixed: bool) -> Result<(u32, &str), ()> {
    let b = v.as_bytes();
    if b.is_empty() || !b[0].is_ascii_digit() {
        return Err(());
    }
    if b.len() < 2 || !b[1].is_ascii_digit() {
        if fixed {
            return Err(());
        }
        return Ok(((b[0] - b'0') as u32, &v[1..]));
    }
    Ok((((b[0] - b'0') * 10 + (b[1] - b'0')) as u32, &v[2..]))
}

/// Go's `getnum3`: one to three digits (exactly three when `fixed`).
fn getnum3(v: &str, fixed: bool) -> Result<(u32, &str), ()> {
    let b = v.as_bytes();
    let mut n = 0u32;
    let mut i = 0;
    while i < 3 && i < b.len() && b[i].is_ascii_digit() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    if i == 0 || (fixed && i != 3) {
        return Err(());
    }
    Ok((n, &v[i..]))
}

fn cutspace(s: &str) -> &str {
    s.trim_start_matches(' ')
}

/// Go's `skip`: the literal part of a layout; a space matches any run of spaces.
fn skip<'a>(mut value: &'a str, mut prefix: &str) -> Result<&'a str, ()> {
    while !prefix.is_empty() {
        if prefix.as_bytes()[0] == b' ' {
            if !value.is_empty() && value.as_bytes()[0] != b' ' {
                return Err(());
            }
            prefix = cutspace(prefix);
            value = cutspace(value);
            continue;
        }
        let c = prefix.chars().next().expect("non-empty");
        if !value.starts_with(c) {
            return Err(());
        }
        prefix = &prefix[c.len_utf8()..];
        value = &value[c.len_utf8()..];
    }
    Ok(value)
}

fn parse_nanoseconds(value: &str, nbytes: usize) -> Result<u32, String> {
    let b = value.as_bytes();
    if b[0] != b'.' && b[0] != b',' {
        return Err("bad fractional second".into());
    }
    let nbytes = nbytes.min(10);
    let digits = value.get(1..nbytes).ok_or("bad fractional second")?;
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err("bad fractional second".into());
    }
    let mut ns: u32 = digits.parse().unwrap_or(0);
    for _ in 0..(10 - nbytes) {
        ns *= 10;
    }
    Ok(ns)
}

fn parse_time_zone(v: &str) -> Option<usize> {
    let b = v.as_bytes();
    if b.len() < 3 {
        return None;
    }
    if v.starts_with("ChST") || v.starts_with("MeST") {
        return Some(4);
    }
    if let Some(rest) = v.strip_prefix("GMT") {
        return Some(3 + parse_signed_offset(rest));
    }
    if b[0] == b'+' || b[0] == b'-' {
        let n = parse_signed_offset(v);
        return (n > 0).then_some(n);
    }
    let upper = b
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    match upper {
        5 if b[4] == b'T' => Some(5),
        4 if b[3] == b'T' || v.starts_with("WITA") => Some(4),
        3 => Some(3),
        _ => None,
    }
}

fn parse_signed_offset(v: &str) -> usize {
    let b = v.as_bytes();
    if b.is_empty() || (b[0] != b'+' && b[0] != b'-') {
        return 0;
    }
    let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return 0;
    }
    match v[1..1 + digits].parse::<u64>() {
        Ok(x) if x <= 23 => 1 + digits,
        _ => 0,
    }
}

fn days_in(month: u32, year: i64) -> u32 {
    match month {
        2 => {
            if is_leap(year) {
                29
            } else {
                28
            }
        }
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

impl Layout {
    pub fn new(layout: &str) -> Layout {
        let mut chunks = Vec::new();
        let mut rest = layout;
        while let Some((lit, std, len)) = next_std(rest.as_bytes()) {
            if lit > 0 {
                chunks.push(Chunk::Lit(rest[..lit].to_string()));
            }
            chunks.push(Chunk::Std(std));
            rest = &rest[lit + len..];
        }
        if !rest.is_empty() {
            chunks.push(Chunk::Lit(rest.to_string()));
        }
        Layout {
            chunks,
            source: layout.to_string(),
            has_year: layout.contains("06"),
            rfc3339: matches!(
                layout,
                "2006-01-02T15:04:05Z07:00" | "2006-01-02T15:04:05.999999999Z07:00"
            ),
        }
    }

    /// The layout as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the layout text has a year (`06` or `2006`), as Promtail checks it.
    pub fn has_year(&self) -> bool {
        self.has_year
    }

    /// Parses `value` (`time.Parse` when `default` is UTC, else `time.ParseInLocation`).
    pub fn parse(&self, value: &str, default: &Zone) -> Result<Timestamp, String> {
        if self.rfc3339
            && let Some(ts) = rfc3339::parse(value)
        {
            // The value names its zone, so `default` has no say.
            return Ok(ts);
        }
        self.parse_general(value, default)
    }

    fn parse_general(&self, value: &str, default: &Zone) -> Result<Timestamp, String> {
        self.parse_fields(value)?.resolve(default)
    }

    /// Parses `value` into civil fields, without resolving the zone.
    pub fn parse_fields(&self, value: &str) -> Result<Fields, String> {
        let bad = |what: &str| format!("parsing time {value:?} as {:?}: {what}", self.source);
        let mut v = value;
        let (mut year, mut month, mut day, mut yday) = (0i64, -1i64, -1i64, -1i64);
        let (mut hour, mut min, mut sec, mut nsec) = (0u32, 0u32, 0u32, 0u32);
        let (mut pm, mut am) = (false, false);
        let mut zone = ZoneSeen::None;
        let mut range_err: Option<&str> = None;
        for (idx, chunk) in self.chunks.iter().enumerate() {
            let std = match chunk {
                Chunk::Lit(l) => {
                    v = skip(v, l).map_err(|_| bad(&format!("cannot parse {v:?} as {l:?}")))?;
                    continue;
                }
                Chunk::Std(s) => *s,
            };
            let before = v;
            let fail = || bad(&format!("cannot parse {before:?} as {}", std_name(std)));
            match std {
                Std::Year => {
                    if v.len() < 2 || !v.as_bytes()[..2].iter().all(u8::is_ascii_digit) {
                        return Err(fail());
                    }
                    let y: i64 = v[..2].parse().map_err(|_| fail())?;
                    year = if y >= 69 { y + 1900 } else { y + 2000 };
                    v = &v[2..];
                }
                Std::LongYear => {
                    if v.len() < 4 || !v.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                        return Err(fail());
                    }
                    year = v[..4].parse().map_err(|_| fail())?;
                    v = &v[4..];
                }
                Std::Month | Std::LongMonth => {
                    let names: &[&str] = if std == Std::Month {
                        &SHORT_MONTHS
                    } else {
                        &LONG_MONTHS
                    };
                    let (i, n) = lookup(names, v).ok_or_else(fail)?;
                    month = i as i64 + 1;
                    v = &v[n..];
                }
                Std::NumMonth | Std::ZeroMonth => {
                    let (m, r) = getnum(v, std == Std::ZeroMonth).map_err(|_| fail())?;
                    if !(1..=12).contains(&m) {
                        range_err = Some("month");
                    }
                    month = m as i64;
                    v = r;
                }
                Std::WeekDay | Std::LongWeekDay => {
                    let names: &[&str] = if std == Std::WeekDay {
                        &SHORT_DAYS
                    } else {
                        &LONG_DAYS
                    };
                    let (_, n) = lookup(names, v).ok_or_else(fail)?;
                    v = &v[n..];
                }
                Std::Day | Std::UnderDay | Std::ZeroDay => {
                    if std == Std::UnderDay && v.starts_with(' ') {
                        v = &v[1..];
                    }
                    let (d, r) = getnum(v, std == Std::ZeroDay).map_err(|_| fail())?;
                    day = d as i64;
                    v = r;
                }
                Std::UnderYearDay | Std::ZeroYearDay => {
                    for _ in 0..2 {
                        if std == Std::UnderYearDay && v.starts_with(' ') {
                            v = &v[1..];
                        }
                    }
                    let (d, r) = getnum3(v, std == Std::ZeroYearDay).map_err(|_| fail())?;
                    yday = d as i64;
                    v = r;
                }
                Std::Hour => {
                    let (h, r) = getnum(v, false).map_err(|_| fail())?;
                    if h >= 24 {
                        range_err = Some("hour");
                    }
                    hour = h;
                    v = r;
                }
                Std::Hour12 | Std::ZeroHour12 => {
                    let (h, r) = getnum(v, std == Std::ZeroHour12).map_err(|_| fail())?;
                    if h > 12 {
                        range_err = Some("hour");
                    }
                    hour = h;
                    v = r;
                }
                Std::Minute | Std::ZeroMinute => {
                    let (m, r) = getnum(v, std == Std::ZeroMinute).map_err(|_| fail())?;
                    if m >= 60 {
                        range_err = Some("minute");
                    }
                    min = m;
                    v = r;
                }
                Std::Second | Std::ZeroSecond => {
                    let (s, r) = getnum(v, std == Std::ZeroSecond).map_err(|_| fail())?;
                    if s >= 60 {
                        range_err = Some("second");
                    }
                    sec = s;
                    v = r;
                    let b = v.as_bytes();
                    if b.len() >= 2 && (b[0] == b'.' || b[0] == b',') && b[1].is_ascii_digit() {
                        let next_is_frac = self.chunks[idx + 1..].iter().find_map(|c| match c {
                            Chunk::Std(s) => Some(*s),
                            _ => None,
                        });
                        if !matches!(
                            next_is_frac,
                            Some(Std::FracSecond0(..)) | Some(Std::FracSecond9(..))
                        ) {
                            let mut n = 2;
                            while n < b.len() && b[n].is_ascii_digit() {
                                n += 1;
                            }
                            nsec = parse_nanoseconds(v, n).map_err(|e| bad(&e))?;
                            v = &v[n..];
                        }
                    }
                }
                Std::PM | Std::Pm => {
                    if v.len() < 2 {
                        return Err(fail());
                    }
                    let (p, a) = if std == Std::PM {
                        ("PM", "AM")
                    } else {
                        ("pm", "am")
                    };
                    match v.get(..2).unwrap_or("") {
                        x if x == p => pm = true,
                        x if x == a => am = true,
                        _ => return Err(fail()),
                    }
                    v = &v[2..];
                }
                Std::Iso8601TZ
                | Std::Iso8601ShortTZ
                | Std::Iso8601ColonTZ
                | Std::Iso8601SecondsTZ
                | Std::Iso8601ColonSecondsTZ
                | Std::NumTZ
                | Std::NumShortTZ
                | Std::NumColonTZ
                | Std::NumSecondsTz
                | Std::NumColonSecondsTZ => {
                    let iso = matches!(
                        std,
                        Std::Iso8601TZ
                            | Std::Iso8601ShortTZ
                            | Std::Iso8601ColonTZ
                            | Std::Iso8601SecondsTZ
                            | Std::Iso8601ColonSecondsTZ
                    );
                    if iso && v.starts_with('Z') {
                        v = &v[1..];
                        zone = ZoneSeen::Utc;
                        continue;
                    }
                    // Only ASCII can make an offset (and slicing stays on char boundaries).
                    let ascii = v.bytes().take(9).take_while(u8::is_ascii).count();
                    let b = &v.as_bytes()[..ascii];
                    let (sign, hh, mm, ss, rest): (u8, &str, &str, &str, &str) = match std {
                        Std::Iso8601ColonTZ | Std::NumColonTZ => {
                            if b.len() < 6 || b[3] != b':' {
                                return Err(fail());
                            }
                            (b[0], &v[1..3], &v[4..6], "00", &v[6..])
                        }
                        Std::Iso8601ShortTZ | Std::NumShortTZ => {
                            if b.len() < 3 {
                                return Err(fail());
                            }
                            (b[0], &v[1..3], "00", "00", &v[3..])
                        }
                        Std::Iso8601ColonSecondsTZ | Std::NumColonSecondsTZ => {
                            if b.len() < 9 || b[3] != b':' || b[6] != b':' {
                                return Err(fail());
                            }
                            (b[0], &v[1..3], &v[4..6], &v[7..9], &v[9..])
                        }
                        Std::Iso8601SecondsTZ | Std::NumSecondsTz => {
                            if b.len() < 7 {
                                return Err(fail());
                            }
                            (b[0], &v[1..3], &v[3..5], &v[5..7], &v[7..])
                        }
                        _ => {
                            if b.len() < 5 {
                                return Err(fail());
                            }
                            (b[0], &v[1..3], &v[3..5], "00", &v[5..])
                        }
                    };
                    let num = |s: &str| -> Result<i32, String> {
                        let (n, r) = getnum(s, true).map_err(|_| fail())?;
                        if !r.is_empty() {
                            return Err(fail());
                        }
                        Ok(n as i32)
                    };
                    let (h, m, s) = (num(hh)?, num(mm)?, num(ss)?);
                    if h > 24 {
                        range_err = Some("time zone offset hour");
                    }
                    if m > 60 {
                        range_err = Some("time zone offset minute");
                    }
                    if s > 60 {
                        range_err = Some("time zone offset second");
                    }
                    let off = (h * 60 + m) * 60 + s;
                    zone = match sign {
                        b'+' => ZoneSeen::Offset(off),
                        b'-' => ZoneSeen::Offset(-off),
                        _ => return Err(fail()),
                    };
                    v = rest;
                }
                Std::TZ => {
                    if v.starts_with("UTC") {
                        zone = ZoneSeen::Utc;
                        v = &v[3..];
                        continue;
                    }
                    let n = parse_time_zone(v).ok_or_else(fail)?;
                    zone = ZoneSeen::Name(v[..n].to_string());
                    v = &v[n..];
                }
                Std::FracSecond0(n, _) => {
                    let ndigit = 1 + n;
                    if v.len() < ndigit || !v.is_char_boundary(ndigit) {
                        return Err(fail());
                    }
                    nsec = parse_nanoseconds(v, ndigit).map_err(|e| bad(&e))?;
                    v = &v[ndigit..];
                }
                Std::FracSecond9(..) => {
                    let b = v.as_bytes();
                    if b.len() < 2 || !(b[0] == b'.' || b[0] == b',') || !b[1].is_ascii_digit() {
                        continue;
                    }
                    let mut i = 0;
                    while i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                        i += 1;
                    }
                    nsec = parse_nanoseconds(v, 1 + i).map_err(|e| bad(&e))?;
                    v = &v[1 + i..];
                }
            }
        }
        if let Some(what) = range_err {
            return Err(bad(&format!("{what} out of range")));
        }
        if !v.is_empty() {
            return Err(bad(&format!("extra text: {v:?}")));
        }
        if pm && hour < 12 {
            hour += 12;
        } else if am && hour == 12 {
            hour = 0;
        }
        if yday >= 0 {
            let mut yd = yday;
            let (mut m, mut d) = (0i64, 0i64);
            if is_leap(year) {
                if yd == 31 + 29 {
                    m = 2;
                    d = 29;
                } else if yd > 31 + 29 {
                    yd -= 1;
                }
            }
            if !(1..=365).contains(&yd) {
                return Err(bad("day-of-year out of range"));
            }
            if m == 0 {
                const BEFORE: [i64; 13] =
                    [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
                m = (yd - 1) / 31 + 1;
                if BEFORE[m as usize] < yd {
                    m += 1;
                }
                d = yd - BEFORE[m as usize - 1];
            }
            if month >= 0 && month != m {
                return Err(bad("day-of-year does not match month"));
            }
            month = m;
            if day >= 0 && day != d {
                return Err(bad("day-of-year does not match day"));
            }
            day = d;
        } else {
            if month < 0 {
                month = 1;
            }
            if day < 0 {
                day = 1;
            }
        }
        if day < 1 || day > days_in(month as u32, year) as i64 {
            return Err(bad("day out of range"));
        }
        Ok(Fields {
            year,
            month: month as u32,
            day: day as u32,
            hour,
            minute: min,
            second: sec,
            nanosecond: nsec,
            zone,
        })
    }
}

impl Fields {
    /// Seconds since the epoch of the civil time read as UTC.
    fn civil_unix(&self) -> i64 {
        // Normalise like Go's AddDate: Feb 29 of a non-leap year is Mar 1.
        let (mut y, mut m, mut d) = (self.year, self.month, self.day);
        let dim = days_in(m, y);
        if d > dim {
            d -= dim;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
        days_from_civil(y, m, d) * 86400
            + self.hour as i64 * 3600
            + self.minute as i64 * 60
            + self.second as i64
    }

    /// The instant, with `default` as the zone when the value named none (and as the place to
    /// look zone abbreviations up, as `ParseInLocation`; `time.Parse` looks them up in the local
    /// zone, which [`Fields::resolve_go`] does).
    pub fn resolve(&self, default: &Zone) -> Result<Timestamp, String> {
        let lookup_in = if *default == Zone::Utc {
            Zone::local()
        } else {
            *default
        };
        self.resolve_in(default, &lookup_in)
    }

    fn resolve_in(&self, default: &Zone, names: &Zone) -> Result<Timestamp, String> {
        let civil = self.civil_unix();
        let offset = match &self.zone {
            ZoneSeen::None => default.civil_offset(civil),
            ZoneSeen::Utc => 0,
            ZoneSeen::Offset(off) => *off,
            ZoneSeen::Name(name) => match names.lookup_name(name, civil) {
                Some(off) => off,
                None => {
                    let hours = if let Some(rest) = name.strip_prefix("GMT") {
                        rest.parse::<i32>().unwrap_or(0)
                    } else if name.starts_with(['+', '-']) {
                        name.parse::<i32>().unwrap_or(0)
                    } else {
                        0
                    };
                    hours * 3600
                }
            },
        };
        let unix = civil - offset as i64;
        unix.checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(self.nanosecond as i64))
            .map(|nanos| Timestamp::with_offset(nanos, offset))
            .ok_or_else(|| "time out of range".to_string())
    }

    /// Sets a year (for layouts without one).
    pub fn with_year(mut self, year: i64) -> Fields {
        self.year = year;
        self
    }
}

fn std_name(std: Std) -> &'static str {
    match std {
        Std::LongMonth => "\"January\"",
        Std::Month => "\"Jan\"",
        Std::NumMonth => "\"1\"",
        Std::ZeroMonth => "\"01\"",
        Std::LongWeekDay => "\"Monday\"",
        Std::WeekDay => "\"Mon\"",
        Std::Day => "\"2\"",
        Std::UnderDay => "\"_2\"",
        Std::ZeroDay => "\"02\"",
        Std::UnderYearDay => "\"__2\"",
        Std::ZeroYearDay => "\"002\"",
        Std::Hour => "\"15\"",
        Std::Hour12 => "\"3\"",
        Std::ZeroHour12 => "\"03\"",
        Std::Minute => "\"4\"",
        Std::ZeroMinute => "\"04\"",
        Std::Second => "\"5\"",
        Std::ZeroSecond => "\"05\"",
        Std::LongYear => "\"2006\"",
        Std::Year => "\"06\"",
        Std::PM => "\"PM\"",
        Std::Pm => "\"pm\"",
        Std::TZ => "\"MST\"",
        Std::Iso8601TZ => "\"Z0700\"",
        Std::Iso8601SecondsTZ => "\"Z070000\"",
        Std::Iso8601ShortTZ => "\"Z07\"",
        Std::Iso8601ColonTZ => "\"Z07:00\"",
        Std::Iso8601ColonSecondsTZ => "\"Z07:00:00\"",
        Std::NumTZ => "\"-0700\"",
        Std::NumSecondsTz => "\"-070000\"",
        Std::NumShortTZ => "\"-07\"",
        Std::NumColonTZ => "\"-07:00\"",
        Std::NumColonSecondsTZ => "\"-07:00:00\"",
        Std::FracSecond0(..) => "a fractional second",
        Std::FracSecond9(..) => "a fractional second",
    }
}

impl Layout {
    /// Formats an instant in `zone`, as Go's `Time.Format`.
    pub fn format(&self, ts: Timestamp, zone: &Zone) -> String {
        let secs = ts.0.div_euclid(1_000_000_000);
        let nanos = ts.0.rem_euclid(1_000_000_000) as u32;
        let (offset, abbr) = zone.at(secs);
        let local = NaiveDateTime::from_timestamp_opt_compat(secs + offset as i64);
        let mut out = String::new();
        for chunk in &self.chunks {
            let std = match chunk {
                Chunk::Lit(l) => {
                    out.push_str(l);
                    continue;
                }
                Chunk::Std(s) => *s,
            };
            let year = local.year() as i64;
            let month = local.month();
            let day = local.day();
            let hour = local.hour();
            match std {
                Std::Year => push_pad(&mut out, year.rem_euclid(100), 2),
                Std::LongYear => push_pad(&mut out, year, 4),
                Std::Month => out.push_str(SHORT_MONTHS[month as usize - 1]),
                Std::LongMonth => out.push_str(LONG_MONTHS[month as usize - 1]),
                Std::NumMonth => push_pad(&mut out, month as i64, 1),
                Std::ZeroMonth => push_pad(&mut out, month as i64, 2),
                Std::WeekDay => {
                    out.push_str(SHORT_DAYS[local.weekday().num_days_from_sunday() as usize])
                }
                Std::LongWeekDay => {
                    out.push_str(LONG_DAYS[local.weekday().num_days_from_sunday() as usize])
                }
                Std::Day => push_pad(&mut out, day as i64, 1),
                Std::UnderDay => {
                    if day < 10 {
                        out.push(' ');
                    }
                    push_pad(&mut out, day as i64, 1);
                }
                Std::ZeroDay => push_pad(&mut out, day as i64, 2),
                Std::UnderYearDay => {
                    let yd = local.ordinal();
                    if yd < 100 {
                        out.push(' ');
                        if yd < 10 {
                            out.push(' ');
                        }
                    }
                    push_pad(&mut out, yd as i64, 1);
                }
                Std::ZeroYearDay => push_pad(&mut out, local.ordinal() as i64, 3),
                Std::Hour => push_pad(&mut out, hour as i64, 2),
                Std::Hour12 | Std::ZeroHour12 => {
                    let h = match hour % 12 {
                        0 => 12,
                        h => h,
                    };
                    push_pad(&mut out, h as i64, if std == Std::Hour12 { 1 } else { 2 });
                }
                Std::Minute => push_pad(&mut out, local.minute() as i64, 1),
                Std::ZeroMinute => push_pad(&mut out, local.minute() as i64, 2),
                Std::Second => push_pad(&mut out, local.second() as i64, 1),
                Std::ZeroSecond => push_pad(&mut out, local.second() as i64, 2),
                Std::PM => out.push_str(if hour >= 12 { "PM" } else { "AM" }),
                Std::Pm => out.push_str(if hour >= 12 { "pm" } else { "am" }),
                Std::TZ => {
                    if !abbr.is_empty() && !abbr.starts_with(['+', '-']) {
                        out.push_str(&abbr);
                    } else {
                        // No abbreviation: -0700 style, as Go.
                        let z = offset / 60;
                        out.push(if z < 0 { '-' } else { '+' });
                        push_pad(&mut out, (z.abs() / 60) as i64, 2);
                        push_pad(&mut out, (z.abs() % 60) as i64, 2);
                    }
                }
                Std::Iso8601TZ
                | Std::Iso8601ShortTZ
                | Std::Iso8601ColonTZ
                | Std::Iso8601SecondsTZ
                | Std::Iso8601ColonSecondsTZ
                | Std::NumTZ
                | Std::NumShortTZ
                | Std::NumColonTZ
                | Std::NumSecondsTz
                | Std::NumColonSecondsTZ => {
                    let iso = matches!(
                        std,
                        Std::Iso8601TZ
                            | Std::Iso8601ShortTZ
                            | Std::Iso8601ColonTZ
                            | Std::Iso8601SecondsTZ
                            | Std::Iso8601ColonSecondsTZ
                    );
                    if iso && offset == 0 {
                        out.push('Z');
                        continue;
                    }
                    let abs = offset.abs();
                    out.push(if offset < 0 { '-' } else { '+' });
                    push_pad(&mut out, (abs / 3600) as i64, 2);
                    let colon = matches!(
                        std,
                        Std::Iso8601ColonTZ
                            | Std::NumColonTZ
                            | Std::Iso8601ColonSecondsTZ
                            | Std::NumColonSecondsTZ
                    );
                    if !matches!(std, Std::Iso8601ShortTZ | Std::NumShortTZ) {
                        if colon {
                            out.push(':');
                        }
                        push_pad(&mut out, ((abs / 60) % 60) as i64, 2);
                    }
                    if matches!(
                        std,
                        Std::Iso8601SecondsTZ
                            | Std::NumSecondsTz
                            | Std::Iso8601ColonSecondsTZ
                            | Std::NumColonSecondsTZ
                    ) {
                        if colon {
                            out.push(':');
                        }
                        push_pad(&mut out, (abs % 60) as i64, 2);
                    }
                }
                Std::FracSecond0(n, sep) => {
                    out.push(sep as char);
                    let digits = format!("{nanos:09}");
                    out.push_str(&digits[..n.min(9)]);
                }
                Std::FracSecond9(n, sep) => {
                    let digits = format!("{nanos:09}");
                    let cut = &digits[..n.min(9)];
                    let trimmed = cut.trim_end_matches('0');
                    if !trimmed.is_empty() {
                        out.push(sep as char);
                        out.push_str(trimmed);
                    }
                }
            }
        }
        out
    }
}

fn push_pad(out: &mut String, n: i64, width: usize) {
    if n < 0 {
        out.push('-');
    }
    let s = n.unsigned_abs().to_string();
    for _ in s.len()..width {
        out.push('0');
    }
    out.push_str(&s);
}

trait FromTimestampCompat {
    fn from_timestamp_opt_compat(secs: i64) -> NaiveDateTime;
}

impl FromTimestampCompat for NaiveDateTime {
    fn from_timestamp_opt_compat(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(secs, 0)
            .map(|d| d.naive_utc())
            .unwrap_or_else(|| {
                NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("epoch")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(layout: &str, value: &str) -> Result<i64, String> {
        Layout::new(layout).parse(value, &Zone::Utc).map(|t| t.0)
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn named_layouts_parse() {
        assert_eq!(
            utc(named_layout("RFC3339").unwrap(), "2019-04-30T02:12:41Z"),
            Ok(1556590361 * S)
        );
        assert_eq!(
            utc(
                named_layout("RFC3339Nano").unwrap(),
                "2019-04-30T02:12:41.8443515Z"
            ),
            Ok(1556590361 * S + 844_351_500)
        );
        // A fraction is accepted after the seconds even if the layout has none.
        assert_eq!(
            utc(
                named_layout("RFC3339").unwrap(),
                "2019-04-30T02:12:41.5+02:00"
            ),
            Ok((1556590361 - 7200) * S + 500_000_000)
        );
        assert_eq!(
            utc(
                named_layout("RFC1123Z").unwrap(),
                "Tue, 30 Apr 2019 02:12:41 -0700"
            ),
            Ok((1556590361 + 7 * 3600) * S)
        );
        assert_eq!(
            utc(named_layout("RFC822Z").unwrap(), "30 Apr 19 02:12 +0000"),
            Ok((1556590361 - 41) * S)
        );
        assert_eq!(
            utc(named_layout("ANSIC").unwrap(), "Tue Apr 30 02:12:41 2019"),
            Ok(1556590361 * S)
        );
        assert_eq!(
            utc(named_layout("ANSIC").unwrap(), "Mon Jan  2 15:04:05 2006"),
            Ok(1136214245 * S)
        );
        assert_eq!(
            utc(
                named_layout("RubyDate").unwrap(),
                "Mon Jan 02 15:04:05 -0700 2006"
            ),
            Ok(1136239445 * S)
        );
        assert_eq!(
            utc(
                named_layout("UnixDate").unwrap(),
                "Mon Jan  2 15:04:05 UTC 2006"
            ),
            Ok(1136214245 * S)
        );
        assert_eq!(
            utc(
                named_layout("RFC850").unwrap(),
                "Monday, 02-Jan-06 15:04:05 UTC"
            ),
            Ok(1136214245 * S)
        );
    }

    #[test]
    fn custom_layouts_parse() {
        // nginx / apache access logs
        assert_eq!(
            utc("02/Jan/2006:15:04:05 -0700", "25/Jan/2000:14:00:01 -0500"),
            Ok(948826801 * S)
        );
        assert_eq!(
            utc("2006-01-02 15:04:05,000", "2021-01-07 14:17:43,494"),
            Ok(1610029063 * S + 494_000_000)
        );
        assert_eq!(
            utc("2006-01-02 15:04:05.000000", "2021-01-07 14:17:43.494123"),
            Ok(1610029063 * S + 494_123_000)
        );
        assert_eq!(
            utc("01/02/2006, 3:04:05 PM", "11/08/2022, 12:53:24 PM"),
            Ok(1667912004 * S)
        );
        assert_eq!(
            utc("01/02/2006 3:04:05 pm", "11/08/2022 12:53:24 am"),
            Ok(1667868804 * S)
        );
        assert_eq!(utc("2006-002", "2020-060"), utc("2006-01-02", "2020-02-29"));
        assert_eq!(utc("2006 Z07", "2020 +03"), Ok((1577836800 - 3 * 3600) * S));
        assert_eq!(utc("2006 Z07:00:00", "2020 Z"), Ok(1577836800 * S));
    }

    #[test]
    fn parse_errors() {
        assert!(
            utc("2006-01-02", "2020-13-01")
                .unwrap_err()
                .contains("month out of range")
        );
        assert!(
            utc("2006-01-02", "2021-02-29")
                .unwrap_err()
                .contains("day out of range")
        );
        assert!(
            utc("2006-01-02", "2021-02-01x")
                .unwrap_err()
                .contains("extra text")
        );
        assert!(utc("2006-01-02", "21-02-01").is_err());
        assert!(
            utc("15:04:05", "25:00:00")
                .unwrap_err()
                .contains("hour out of range")
        );
        assert!(utc("2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05.12Z").is_err());
        assert!(utc(named_layout("RFC3339").unwrap(), "not a time").is_err());
    }

    #[test]
    fn zones() {
        let paris = Zone::load("Europe/Paris").unwrap();
        let l = Layout::new("2006-01-02 15:04:05");
        // Winter: +01:00, summer: +02:00.
        assert_eq!(
            l.parse("2021-01-07 14:17:43", &paris).unwrap().0,
            (1610029063 - 3600) * S
        );
        assert_eq!(
            l.parse("2021-07-07 14:17:43", &paris).unwrap().0,
            (1625667463 - 7200) * S
        );
        // Abbreviations are looked up in the location.
        let ny = Zone::load("America/New_York").unwrap();
        let l = Layout::new("2006-01-02 15:04:05 MST");
        assert_eq!(
            l.parse("2021-01-07 14:17:43 EST", &ny).unwrap().0,
            (1610029063 + 5 * 3600) * S
        );
        assert_eq!(
            l.parse("2021-07-07 14:17:43 EDT", &ny).unwrap().0,
            (1625667463 + 4 * 3600) * S
        );
        // Unknown abbreviations read as UTC.
        assert_eq!(
            l.parse("2021-01-07 14:17:43 XYZ", &ny).unwrap().0,
            1610029063 * S
        );
        assert!(Zone::load("Not/AZone").is_err());
    }

    #[test]
    fn format() {
        let t = Timestamp::from_nanos(1136239445 * S + 123_400_000); // 2006-01-02T15:04:05.1234-07:00
        let ny = Zone::load("America/New_York").unwrap();
        assert_eq!(
            Layout::new(named_layout("RFC3339Nano").unwrap()).format(t, &Zone::Utc),
            "2006-01-02T22:04:05.1234Z"
        );
        assert_eq!(
            Layout::new("Mon Jan _2 03:04:05.000 PM MST -07:00 2006").format(t, &ny),
            "Mon Jan  2 05:04:05.123 PM EST -05:00 2006"
        );
        assert_eq!(
            Layout::new("2006-01-02T15:04:05.999999999Z07:00")
                .format(Timestamp::from_nanos(0), &Zone::Utc),
            "1970-01-01T00:00:00Z"
        );
    }
}
