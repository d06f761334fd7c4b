//! Values of command-line flags shared by several commands: one parser for every time and one
//! for every duration, so each flag accepts the same forms.
//!
//! - A **time** (`consume --since`, `group reset-offsets --to-datetime`, `produce --timestamp`
//!   and its per-line timestamps): milliseconds since the Unix epoch (`1714564800000`), an RFC
//!   3339 timestamp with a zone (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`, fractions
//!   of a second allowed), or a duration before now (`10m`, `2h 30m`, `1day`).
//! - A **duration** (`--retention-ms`, `--segment-ms`): a number of milliseconds, a duration with
//!   units (`7d`, `36h`, `1h 30m`, `500ms`), or `forever` (also `unlimited`, `none`, `-1`, as
//!   Kafka's `-1`) for no limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TIME_HELP: &str = "expected milliseconds since the Unix epoch (1714564800000), an RFC 3339 \
timestamp with a time zone (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or a duration before \
now (10m, 2h 30m, 1day)";

const DURATION_HELP: &str = "expected milliseconds (604800000), a duration with units (7d, 36h, \
1h 30m, 500ms), or forever/unlimited/-1 for no limit";

/// Parses a time flag: milliseconds since the Unix epoch.
pub(crate) fn time(s: &str) -> Result<i64, String> {
    time_at(s.trim(), SystemTime::now())
}

fn time_at(s: &str, now: SystemTime) -> Result<i64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|e| format!("{e}: {s} is out of range; {TIME_HELP}"));
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        let t = now.checked_sub(ago).ok_or_else(|| format!("{s} ago is out of range"))?;
        return millis(t);
    }
    let (body, zone_minutes) = split_zone(s).ok_or(TIME_HELP)?;
    let mut body = body.to_owned();
    if body.as_bytes().get(10) == Some(&b't') {
        body.replace_range(10..11, "T");
    }
    let t = humantime::parse_rfc3339_weak(&body).map_err(|e| format!("{e}; {TIME_HELP}"))?;
    Ok(millis(t)? - zone_minutes * 60_000)
}

/// Parses a duration flag: `Some(milliseconds)`, or `None` for no limit.
pub(crate) fn duration(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    match s {
        "forever" | "unlimited" | "none" | "-1" => return Ok(None),
        _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            return s
                .parse::<u64>()
                .map(Some)
                .map_err(|e| format!("{e}: {s} is out of range; {DURATION_HELP}"));
        }
        _ => {}
    }
    let d: Duration = humantime::parse_duration(s).map_err(|e| format!("{e}; {DURATION_HELP}"))?;
    u64::try_from(d.as_millis()).map(Some).map_err(|_| format!("{s} is out of range; {DURATION_HELP}"))
}

/// Splits an RFC 3339 time zone (`Z` or `±HH:MM`) off the end: the rest and the zone's offset
/// from UTC in minutes.
fn split_zone(s: &str) -> Option<(&str, i64)> {
    if let Some(body) = s.strip_suffix(['Z', 'z']) {
        return Some((body, 0));
    }
    let at = s.len().checked_sub(6)?;
    if !s.is_char_boundary(at) {
        return None;
    }
    let (body, zone) = s.split_at(at);
    let &[sign, h1, h2, b':', m1, m2] = zone.as_bytes() else { return None };
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
    };
    let (hours, minutes) = (two(h1, h2)?, two(m1, m2)?);
    (hours <= 23 && minutes <= 59).then_some((body, sign * (hours * 60 + minutes)))
}

fn millis(t: SystemTime) -> Result<i64, String> {
    let since_epoch = t.duration_since(UNIX_EPOCH).map_err(|_| "times before 1970 are not supported")?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| "time out of range".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_epoch_milliseconds_rfc_3339_with_any_zone_or_durations_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let utc = 1_714_564_800_000; // 2024-05-01T12:00:00Z
        assert_eq!(time_at("1714564800000", now), Ok(utc));
        assert_eq!(time_at("0", now), Ok(0));
        assert_eq!(time_at("2024-05-01T12:00:00Z", now), Ok(utc));
        assert_eq!(time_at("2024-05-01t12:00:00z", now), Ok(utc));
        assert_eq!(time_at("2024-05-01T14:00:00+02:00", now), Ok(utc));
        assert_eq!(time_at("2024-05-01T07:30:00-04:30", now), Ok(utc));
        assert_eq!(time_at("2024-05-01T12:00:00.250Z", now), Ok(utc + 250));
        assert_eq!(time_at("10m", now), Ok(1_700_000_000_000 - 600_000));
        assert_eq!(time_at("1h 30m", now), Ok(1_700_000_000_000 - 5_400_000));
        for bad in [
            "",
            "yesterday",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01",
            "ääääääää",
            "-5",
            "99999999999999999999",
        ] {
            assert!(time_at(bad, now).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_are_milliseconds_units_or_forever() {
        assert_eq!(duration("604800000"), Ok(Some(604_800_000)));
        assert_eq!(duration("7d"), Ok(Some(604_800_000)));
        assert_eq!(duration("36h"), Ok(Some(129_600_000)));
        assert_eq!(duration("1h 30m"), Ok(Some(5_400_000)));
        assert_eq!(duration("500ms"), Ok(Some(500)));
        assert_eq!(duration("0"), Ok(Some(0)));
        for none in ["forever", "unlimited", "none", "-1"] {
            assert_eq!(duration(none), Ok(None));
        }
        for bad in ["", "7 parsecs", "-2", "99999999999999999999999"] {
            assert!(duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
