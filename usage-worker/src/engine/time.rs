//! Time arithmetic without a time-zone database: ISO-8601 parsing, civil dates, day keys.
//!
//! Transcripts carry ISO strings (`toISOString()`) and epoch milliseconds; answers need
//! `YYYY-MM-DD` keys in UTC or a fixed offset. Everything is integer math on epoch ms, so it is
//! exact and independent of the host's TZ (OpenClaw 2026.5 keyed days by the gateway's local
//! zone; clawgate uses the query's `day_zone` instead).
//!
//! Why not jiff here (it checks these functions in the property tests): [`parse_iso_ms`] must
//! accept what JavaScript's `Date.parse` accepts (date-only, no zone, `24:00`, a space for `T`),
//! which `jiff::Timestamp` refuses; and it runs once per transcript line, where it measured 2.0–2.4x
//! faster than `str::parse::<jiff::Timestamp>` (24–29 ns against 54–58 ns per `toISOString()`
//! string, 1M strings, release build, 2026-12-04).

use ipc_proto::DayZone;

/// One quarter hour, the rollup bucket width.
pub const QUARTER_MS: i64 = 15 * 60 * 1000;
/// One day.
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Quarter hours per day.
pub const QUARTERS_PER_DAY: i64 = DAY_MS / QUARTER_MS;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` for a day number.
pub fn format_day(day: i64) -> String {
    match Day(day).ascii() {
        Some(b) => b.iter().map(|&c| char::from(c)).collect(),
        None => {
            let (y, m, d) = civil_from_days(day);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

/// A day number that serialises as its `YYYY-MM-DD` without allocating: an answer holds tens
/// of thousands of dates (a `wide` store's `sessionActivity` alone ~50,000), and formatting
/// each into a `String` was most of the time its aggregates took to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(pub i64);

impl Day {
    /// The date's text for years 0-9999 (all [`format_day`] pads to four digits).
    fn ascii(self) -> Option<[u8; 10]> {
        let (y, m, d) = civil_from_days(self.0);
        let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
        let digit = |v: u32| b'0' + (v % 10) as u8;
        Some([
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            digit(m / 10),
            digit(m),
            b'-',
            digit(d / 10),
            digit(d),
        ])
    }
}

impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.ascii() {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).expect("ASCII digits")),
            None => s.serialize_str(&format_day(self.0)),
        }
    }
}

/// The zone's offset east of UTC in milliseconds.
pub fn zone_offset_ms(zone: &DayZone) -> i64 {
    match zone {
        DayZone::Utc => 0,
        DayZone::FixedOffsetMinutes(m) => i64::from(*m) * 60_000,
    }
}

/// The day number of an instant as seen with a fixed offset.
#[inline]
pub fn day_of(ts_ms: i64, offset_ms: i64) -> i64 {
    (ts_ms + offset_ms).div_euclid(DAY_MS)
}

/// The quarter-hour bucket of an instant (UTC, so any offset that is a multiple of 15 minutes
/// cuts days on bucket edges).
#[inline]
pub fn quarter_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(QUARTER_MS)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses the ISO-8601 forms `Date.parse` accepts in practice: `YYYY-MM-DD`,
/// `YYYY-MM-DDTHH:MM[:SS[.fff…]][Z|±HH:MM|±HHMM]`. A missing zone is taken as UTC (JavaScript
/// would use the host zone for date-times; transcripts always carry `Z`). Sub-millisecond digits
/// are truncated, as `Date` keeps milliseconds only.
pub fn parse_iso_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * DAY_MS;
    let rest = &b[10..];
    if rest.is_empty() {
        return Some(ms);
    }
    if !matches!(rest[0], b'T' | b't' | b' ') || rest.len() < 6 || rest[3] != b':' {
        return None;
    }
    let h = digits(&rest[1..3])?;
    let mi = digits(&rest[4..6])?;
    let mut i = 6;
    let (mut sec, mut milli) = (0u32, 0u32);
    if rest.get(i) == Some(&b':') {
        sec = digits(rest.get(i + 1..i + 3)?)?;
        i += 3;
        if matches!(rest.get(i), Some(b'.' | b',')) {
            let start = i + 1;
            let mut end = start;
            while end < rest.len() && rest[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let frac = &rest[start..end.min(start + 3)];
            milli = digits(frac)? * 10u32.pow(3 - frac.len() as u32);
            i = end;
        }
    }
    if mi > 59 || sec > 59 || h > 24 || (h == 24 && (mi, sec, milli) != (0, 0, 0)) {
        return None;
    }
    ms += i64::from(h) * 3_600_000 + i64::from(mi) * 60_000 + i64::from(sec) * 1000;
    ms += i64::from(milli);
    let zone = &rest[i..];
    match zone {
        [] | [b'Z' | b'z'] => Some(ms),
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (zh, zm) = match tail {
                [a, b, b':', c, d] => (digits(&[*a, *b])?, digits(&[*c, *d])?),
                [a, b, c, d] => (digits(&[*a, *b])?, digits(&[*c, *d])?),
                [a, b] => (digits(&[*a, *b])?, 0),
                _ => return None,
            };
            if zh > 23 || zm > 59 {
                return None;
            }
            let off = i64::from(zh) * 3_600_000 + i64::from(zm) * 60_000;
            Some(if *sign == b'+' { ms - off } else { ms + off })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation-free date text is `format!`'s, in and out of years 0-9999.
    #[test]
    fn day_text_is_the_formatted_date() {
        let slow = |day: i64| {
            let (y, m, d) = civil_from_days(day);
            format!("{y:04}-{m:02}-{d:02}")
        };
        let edges = [days_from_civil(0, 1, 1), days_from_civil(9999, 12, 31)];
        let days = (-1_000..1_000)
            .chain((0..4_000_000).step_by(997).map(|d| d - 800_000))
            .chain(edges.iter().flat_map(|e| e - 3..e + 3));
        for day in days {
            assert_eq!(format_day(day), slow(day), "{day}");
            assert_eq!(serde_json::to_string(&Day(day)).unwrap(), format!("\"{}\"", slow(day)), "{day}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for z in [-800_000i64, -1, 0, 1, 20_000, 20_766, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(days_from_civil(2026, 11, 9), 20_766);
    }

    #[test]
    fn iso_parsing() {
        assert_eq!(parse_iso_ms("2026-11-09T10:36:29.117Z"), Some(1_794_220_589_117));
        assert_eq!(parse_iso_ms("2026-11-09T10:36:29Z"), Some(1_794_220_589_000));
        assert_eq!(parse_iso_ms("2026-11-09T10:36:29.1179Z"), Some(1_794_220_589_117));
        assert_eq!(parse_iso_ms("2026-11-09T12:36:29.117+02:00"), Some(1_794_220_589_117));
        assert_eq!(parse_iso_ms("2026-11-09"), Some(1_794_182_400_000));
        assert_eq!(parse_iso_ms("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_iso_ms("yesterday"), None);
        assert_eq!(parse_iso_ms("2026-11-09T10:36:29.117Q"), None);
    }

    #[test]
    fn day_keys_with_offsets() {
        let ts = parse_iso_ms("2026-11-09T23:30:00Z").unwrap();
        assert_eq!(format_day(day_of(ts, 0)), "2026-11-09");
        assert_eq!(format_day(day_of(ts, 60 * 60_000)), "2026-11-10");
        assert_eq!(format_day(day_of(ts, -24 * 60 * 60_000)), "2026-11-08");
    }
}
