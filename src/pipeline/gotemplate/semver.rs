//! Versions and constraints as Sprig's `semver` and `semverCompare` read them.
//!
//! Hand-written because the `semver` crate follows Cargo's rules: Sprig accepts `v1.2` and `1`
//! (missing parts are 0), reads constraints with wildcards, hyphen ranges, `||`, commas or spaces,
//! and refuses a pre-release version for any constraint that names no pre-release.

use regex::Regex;
use std::cmp::Ordering;
use std::sync::LazyLock;

/// A parsed version; `original` is the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: String,
    pub meta: String,
    pub original: String,
}

const PRE: &str =
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?";

static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?{PRE}$")).unwrap_or_else(|e| {
        unreachable!("fixed pattern: {e}");
    })
});

/// A constraint's version: parts may be `x`, `X`, `*` (and, as Sprig's pattern allows, `|`).
const CV: &str = r"v?([0-9xX*|]+)(\.[0-9xX*|]+)?(\.[0-9xX*|]+)?(?:-(?:[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+(?:[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?";
const OPS: &str = r"(!=|>=|=>|<=|=<|~>|>|<|=|~|\^|)";

static ONE: LazyLock<Regex> = LazyLock::new(|| fixed(&format!(r"^\s*{OPS}\s*({CV})\s*$")));
static FIND: LazyLock<Regex> = LazyLock::new(|| fixed(&format!(r"{OPS}\s*({CV})")));
static VALID: LazyLock<Regex> =
    LazyLock::new(|| fixed(&format!(r"^(?:\s*{OPS}\s*(?:{CV})\s*,?)+$")));
static RANGE: LazyLock<Regex> = LazyLock::new(|| fixed(&format!(r"\s*({CV})\s+-\s+({CV})\s*")));

fn fixed(p: &str) -> Regex {
    Regex::new(p).unwrap_or_else(|e| unreachable!("fixed pattern: {e}"))
}

const INVALID: &str = "Invalid Semantic Version";

impl Version {
    /// Sprig's `semver`: `1.2.3-pre+meta`, with an optional `v` and optional minor and patch.
    pub fn parse(s: &str) -> Result<Version, String> {
        let c = VERSION.captures(s).ok_or(INVALID)?;
        let part = |i: usize| -> Result<u64, String> {
            match c.get(i) {
                None => Ok(0),
                Some(m) => {
                    let digits = m.as_str().trim_start_matches('.');
                    digits.parse().map_err(|_| {
                        format!(
                            "Error parsing version segment: strconv.ParseUint: parsing \"{digits}\": value out of range"
                        )
                    })
                }
            }
        };
        let (major, minor, patch) = (part(1)?, part(2)?, part(3)?);
        let pre = c.get(4).map_or("", |m| m.as_str());
        for id in pre.split('.') {
            if id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()) {
                return Err("Version segment starts with 0".into());
            }
        }
        Ok(Version {
            major,
            minor,
            patch,
            pre: pre.to_string(),
            meta: c.get(5).map_or("", |m| m.as_str()).to_string(),
            original: s.to_string(),
        })
    }

    /// Precedence: numbers, then a release above its pre-releases; metadata does not count.
    pub fn compare(&self, o: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            .then_with(|| compare_pre(&self.pre, &o.pre))
    }

    /// `IncMajor`, `IncMinor`, `IncPatch`: a pre-release only loses its suffix on `IncPatch`.
    pub fn inc(&self, part: &str) -> Version {
        let mut v = self.clone();
        match part {
            "major" => (v.major, v.minor, v.patch) = (v.major + 1, 0, 0),
            "minor" => (v.minor, v.patch) = (v.minor + 1, 0),
            _ if self.pre.is_empty() => v.patch += 1,
            _ => {}
        }
        v.pre.clear();
        v.meta.clear();
        v.original = v.to_string();
        v
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.meta.is_empty() {
            write!(f, "+{}", self.meta)?;
        }
        Ok(())
    }
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// One comparison: the operator, its version (wildcards as 0) and which parts were wildcards.
struct Constraint {
    op: String,
    v: Version,
    /// Major given as a wildcard: `*`, `x`.
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

fn parse_one(text: &str) -> Result<Constraint, String> {
    let c = ONE
        .captures(text)
        .ok_or_else(|| format!("improper constraint: {text}"))?;
    let op = c.get(1).map_or("", |m| m.as_str()).to_string();
    let ver = c.get(2).map_or("", |m| m.as_str());
    let major = c.get(3).map_or("", |m| m.as_str());
    let minor = c.get(4).map_or("", |m| m.as_str().trim_start_matches('.'));
    let patch = c.get(5).map_or("", |m| m.as_str().trim_start_matches('.'));
    let head_len = c.get(5).or(c.get(4)).or(c.get(3)).map_or(0, |m| m.end())
        - c.get(2).map_or(0, |m| m.start());
    let tail = &ver[head_len.min(ver.len())..];
    let (mut minor_dirty, mut patch_dirty, mut dirty) = (false, false, false);
    let rebuilt = if is_x(major) {
        dirty = true;
        format!("0.0.0{tail}")
    } else if minor.is_empty() || is_x(minor) {
        (dirty, minor_dirty) = (true, true);
        format!("{major}.0.0{tail}")
    } else if patch.is_empty() || is_x(patch) {
        (dirty, patch_dirty) = (true, true);
        format!("{major}.{minor}.0{tail}")
    } else {
        ver.to_string()
    };
    let v = Version::parse(&rebuilt).map_err(|_| "constraint Parser Error".to_string())?;
    Ok(Constraint {
        op,
        v,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

/// Sprig's `semverCompare`: whether `version` meets `constraint`.
pub fn satisfies(constraint: &str, version: &str) -> Result<bool, String> {
    let mut groups = Vec::new();
    for group in constraint.split("||") {
        let group = RANGE.replace_all(group, ">= $1, <= $5 ").into_owned();
        if !VALID.is_match(&group) {
            return Err(format!("improper constraint: {group}"));
        }
        let mut all = Vec::new();
        for m in FIND.find_iter(&group) {
            all.push(parse_one(m.as_str())?);
        }
        groups.push(all);
    }
    let v = Version::parse(version)?;
    Ok(groups.iter().any(|g| g.iter().all(|c| check(c, &v))))
}

fn check(c: &Constraint, v: &Version) -> bool {
    let con = &c.v;
    // A pre-release only meets constraints that name a pre-release themselves.
    let pre_blocked = !v.pre.is_empty() && con.pre.is_empty();
    let cmp = v.compare(con);
    match c.op.as_str() {
        "!=" => {
            if !c.dirty {
                return cmp != Ordering::Equal;
            }
            !pre_blocked && !within(c, v)
        }
        _ if pre_blocked => false,
        "" | "=" if c.dirty => tilde(c, v, cmp),
        "" | "=" => cmp == Ordering::Equal,
        ">" if !c.dirty => cmp == Ordering::Greater,
        ">" => match v.major.cmp(&con.major) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal if c.minor_dirty => false,
            Ordering::Equal if c.patch_dirty => v.minor > con.minor,
            Ordering::Equal => cmp == Ordering::Greater,
        },
        "<" => cmp == Ordering::Less,
        ">=" | "=>" => cmp != Ordering::Less,
        "<=" | "=<" if !c.dirty => cmp != Ordering::Greater,
        "<=" | "=<" => match v.major.cmp(&con.major) {
            Ordering::Greater => false,
            Ordering::Less => true,
            Ordering::Equal if c.minor_dirty => true,
            Ordering::Equal if c.patch_dirty => v.minor <= con.minor,
            Ordering::Equal => cmp != Ordering::Greater,
        },
        "~" | "~>" => tilde(c, v, cmp),
        _ => caret(c, v, cmp),
    }
}

/// Whether `v` lies in the range a wildcard constraint names (`1.2.x`, `1`, `*`).
fn within(c: &Constraint, v: &Version) -> bool {
    let con = &c.v;
    if c.dirty && !c.minor_dirty && !c.patch_dirty {
        return true;
    }
    v.major == con.major && (c.minor_dirty || v.minor == con.minor)
}

/// `~1.2.3`: at least 1.2.3 with the same major and minor; `~1` keeps the major only.
fn tilde(c: &Constraint, v: &Version, cmp: Ordering) -> bool {
    let con = &c.v;
    if cmp == Ordering::Less {
        return false;
    }
    if (con.major, con.minor, con.patch) == (0, 0, 0) && !c.minor_dirty && !c.patch_dirty {
        return true;
    }
    v.major == con.major && (c.minor_dirty || v.minor == con.minor)
}

/// `^1.2.3`: at least 1.2.3 below 2; below 1 the first non-zero part must stay.
fn caret(c: &Constraint, v: &Version, cmp: Ordering) -> bool {
    let con = &c.v;
    if cmp == Ordering::Less {
        return false;
    }
    if con.major > 0 || c.minor_dirty {
        return v.major == con.major;
    }
    if v.major > 0 {
        return false;
    }
    if con.minor > 0 || c.patch_dirty {
        return v.minor == con.minor;
    }
    if v.minor > 0 {
        return false;
    }
    v.patch == con.patch
}
