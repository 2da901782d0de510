//! Epoch-millisecond timestamps formatted the way OpenClaw writes them, without a date crate.
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

/// Gregorian (year, month, day) for days since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

fn format(ms: i64, sep: char) -> String {
    let days = ms.div_euclid(DAY);
    let rem = ms.rem_euclid(DAY);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (rem / HOUR, rem % HOUR / MINUTE, rem % MINUTE / SECOND, rem % SECOND);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}{sep}{mi:02}{sep}{s:02}.{milli:03}Z")
}

/// `2026-05-25T00:55:12.345Z`, as `Date.prototype.toISOString()` prints it.
pub fn iso(ms: i64) -> String {
    format(ms, ':')
}

/// `2026-05-25T00-55-12.345Z`: the suffix of `<id>.jsonl.reset.<ts>` archives.
pub(crate) fn archive_stamp(ms: i64) -> String {
    format(ms, '-')
}

/// Parses what [`iso`] prints (and the same without milliseconds); `None` for anything else.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let milli = if b.len() == 24 && b[19] == b'.' { num(20..23)? } else { 0 };
    // days_from_civil, the inverse of civil_from_days.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * DAY + h * HOUR + mi * MINUTE + sec * SECOND + milli)
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
