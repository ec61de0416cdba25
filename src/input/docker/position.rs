//! A container's checkpoint: the time of the last line every output acknowledged.
//!
//! Promtail records `cursor-<container id>` → unix seconds of the last line it *read*, and
//! asks Docker for the logs `since` that second, so a restart sends the rest of that second
//! again. logferry records the acknowledged line's time with nanoseconds
//! (`1733200000.123456789`), asks for the logs since that instant and skips the lines at or
//! before it. Docker gives every line of a container its own nanosecond time, so nothing is
//! sent twice and nothing is skipped.

/// Where reading a container's log goes on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Nanoseconds since the Unix epoch.
    pub nanos: i64,
    /// True when `nanos` is the time of a line already delivered (logferry's own checkpoint):
    /// lines at or before it are skipped. False for Promtail's whole seconds, whose second is
    /// read again in full, as Promtail would.
    pub exact: bool,
}

impl Position {
    /// The position after a line with this time.
    pub fn after(nanos: i64) -> Position {
        Position { nanos, exact: true }
    }

    /// Reads a checkpoint: Promtail's `<seconds>` or logferry's `<seconds>.<nanoseconds>`.
    pub fn parse(text: &str) -> Option<Position> {
        let (secs, fraction) = match text.trim().split_once('.') {
            Some((secs, fraction)) => (secs, Some(fraction)),
            None => (text.trim(), None),
        };
        let secs: i64 = secs.parse().ok()?;
        let Some(fraction) = fraction else {
            return Some(Position {
                nanos: secs.checked_mul(1_000_000_000)?,
                exact: false,
            });
        };
        if fraction.is_empty()
            || fraction.len() > 9
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let scale = 10i64.pow(9 - u32::try_from(fraction.len()).ok()?);
        let nanos: i64 = fraction.parse::<i64>().ok()? * scale;
        Some(Position {
            nanos: secs.checked_mul(1_000_000_000)?.checked_add(nanos)?,
            exact: true,
        })
    }

    /// The checkpoint text recorded in the positions file.
    pub fn text(self) -> String {
        format!(
            "{}.{:09}",
            self.nanos.div_euclid(1_000_000_000),
            self.nanos.rem_euclid(1_000_000_000)
        )
    }

    /// The `since` parameter of the logs request: Docker reads `<seconds>.<nanoseconds>`
    /// and returns the lines at or after that instant.
    pub fn since(self) -> String {
        if self.exact {
            self.text()
        } else {
            self.nanos.div_euclid(1_000_000_000).to_string()
        }
    }

    /// Whether a line with this time was delivered already.
    pub fn covers(self, nanos: i64) -> bool {
        self.exact && nanos <= self.nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promtail_seconds_resume_at_the_start_of_that_second() {
        let p = Position::parse("1733200000").unwrap();
        assert_eq!(p.since(), "1733200000");
        assert!(
            !p.covers(1_733_200_000_500_000_000),
            "the rest of the second is read again"
        );
    }

    #[test]
    fn own_checkpoints_skip_what_was_delivered_and_nothing_more() {
        let p = Position::parse("1733200000.123456789").unwrap();
        assert_eq!(p.since(), "1733200000.123456789");
        assert!(p.covers(1_733_200_000_123_456_789));
        assert!(!p.covers(1_733_200_000_123_456_790));
        assert_eq!(
            Position::after(1_733_200_000_000_000_005).text(),
            "1733200000.000000005"
        );
        assert_eq!(
            Position::parse("1733200000.5").unwrap().nanos,
            1_733_200_000_500_000_000
        );
    }

    #[test]
    fn garbage_is_no_position() {
        for text in ["", "abc", "12.x", "12.", "1.0000000001"] {
            assert_eq!(Position::parse(text), None, "{text:?}");
        }
    }
}
