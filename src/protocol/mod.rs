//! Front doors: how bytes on a connection become core commands, and core events become bytes.
//!
//! A protocol parses and renders; it holds no state and does no I/O (per-connection state lives
//! in `crate::session`). [`line`] is the telnet/`nc`-friendly protocol, [`irc`] is IRC; both
//! refuse lines by the same [`text::check`]. Each broadcast event is rendered once per render
//! class (`crate::session::render`) and the same bytes are queued for every recipient.

pub mod irc;
pub mod line;
pub mod telnet;
pub mod text;

use crate::core::Millis;

/// `2026-11-27T18:56:52Z` for a time in milliseconds since the UNIX epoch (UTC, second precision).
/// How long a server ban lasts, as both protocols say it: `until <time>` or `for good`.
pub fn ban_end(until: Option<Millis>) -> String {
    match until {
        Some(at) => format!("until {}", iso8601(at)),
        None => "for good".into(),
    }
}

pub fn iso8601(ms: Millis) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_795_805_812_999), "2026-11-27T18:56:52Z");
    }
}
