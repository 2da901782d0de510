//! Epoch-millisecond timestamps formatted the way OpenClaw writes them (calendar from jiff).
//!
//! Entry-level `timestamp`s are JavaScript `toISOString()` strings (`2026-05-25T00:55:12.345Z`);
//! archive suffixes use the same time with `:` replaced by `-`.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const SECOND: i64 = 1_000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
pub(crate) const HOUR: i64 = 60 * MINUTE;
pub(crate) const DAY: i64 = 24 * HOUR;

/// Wall-clock now in epoch ms (the default end of the demo data).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn format(ms: i64, sep: char) -> String {
    // Demo times lie in jiff's range (years -9999..=9999); clamp rather than panic on a silly
    // `--days`.
    let ms = ms.clamp(jiff::Timestamp::MIN.as_millisecond(), jiff::Timestamp::MAX.as_millisecond());
    let t = jiff::Timestamp::from_millisecond(ms).expect("clamped to jiff's range");
    let dt = jiff::tz::Offset::UTC.to_datetime(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}{sep}{:02}{sep}{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// `2026-05-25T00:55:12.345Z`, as `Date.prototype.toISOString()` prints it.
pub fn iso(ms: i64) -> String {
    format(ms, ':')
}

/// `2026-05-25T00-55-12.345Z`: the suffix of `<id>.jsonl.reset.<ts>` archives.
pub(crate) fn archive_stamp(ms: i64) -> String {
    format(ms, '-')
}

/// Parses what [`iso`] prints (any RFC 3339 instant); `None` for anything else.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_instants() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        // From the OpenClaw reference example lines.
        assert_eq!(iso(1_779_670_512_345), "2026-05-25T00:55:12.345Z");
        assert_eq!(archive_stamp(1_779_670_512_345), "2026-05-25T00-55-12.345Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parse_round_trips() {
        for ms in [0, 951_782_400_000, 1_779_670_512_345, 4_102_444_799_999] {
            assert_eq!(parse_iso(&iso(ms)), Some(ms));
        }
        assert_eq!(parse_iso("nope"), None);
    }
}
