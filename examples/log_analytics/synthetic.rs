//! The synthetic access log: line `i` is a pure function of `i`.

use std::io::Write;
use std::path::Path;
use weir_examples::mix;

/// 2026-11-24T00:00:00Z.
const START_MS: i64 = 1_795_478_400_000;
const PER_SECOND: i64 = 100;
const CLIENTS: u64 = 2_000;
const PATHS: u64 = 400;
const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0",
    "Mozilla/5.0 (Macintosh) Safari/605.1.15",
    "curl/8.5.0",
    "Googlebot/2.1",
];

/// A uniform number in [0, 1) from draw `k` of line `i`.
fn unit(i: u64, k: u64) -> f64 {
    (mix(i.wrapping_mul(8).wrapping_add(k)) >> 11) as f64 / (1u64 << 53) as f64
}

/// A long-tailed pick in `0..n` (small indices far more often).
fn skewed(i: u64, k: u64, n: u64) -> u64 {
    ((n as f64) * unit(i, k).powi(3)) as u64 % n
}

/// Line `i` of the log.
pub(super) fn line(i: u64) -> String {
    let disorder = (unit(i, 0) * 3_000.0) as i64;
    let ts = START_MS + i as i64 * 1_000 / PER_SECOND - disorder;
    let minute = (ts - START_MS).div_euclid(60_000);
    // Who is busy changes every 45 minutes: clients come back after gaps, so most have
    // several sessions.
    let client = (skewed(i, 1, CLIENTS) + (i / (45 * 60 * PER_SECOND as u64)) * 613) % CLIENTS;
    let path = skewed(i, 2, PATHS);
    let burst = minute % 17 == 16;
    let u = unit(i, 3);
    let status = if burst && u < 0.25 {
        [500, 502, 503][(i % 3) as usize]
    } else if u < 0.85 {
        200
    } else if u < 0.91 {
        [301, 304][(i % 2) as usize]
    } else if u < 0.97 {
        [404, 403, 400][(i % 3) as usize]
    } else {
        500
    };
    let bytes = if status == 304 { 0 } else { 200 + (path * 37 % 5_000) + (unit(i, 4) * 2_000.0) as u64 };
    // Log-normal-ish: exp of a sum of uniforms, scaled per path.
    let z = unit(i, 5) + unit(i, 6) + unit(i, 7) - 1.5;
    let latency_ms = (5.0 + (path % 20) as f64) * (2.0 * z).exp() * if burst { 3.0 } else { 1.0 };
    let path_text = match path {
        0 => "/".to_owned(),
        p if p % 5 == 0 => format!("/api/v1/items/{p}?page={}", i % 4),
        p => format!("/page/{p}"),
    };
    let method = if path.is_multiple_of(5) && i.is_multiple_of(7) { "POST" } else { "GET" };
    let agent = AGENTS[(client % 4) as usize];
    format!(
        "10.{}.{}.{} - - [{}] \"{method} {path_text} HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\" {:.3}",
        client / 65_536,
        client / 256 % 256,
        client % 256,
        clf_time(ts),
        latency_ms / 1000.0
    )
}

/// `24/Nov/2026:00:00:00 +0000`.
fn clf_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = super::stats::civil_from_days(days);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes lines `0..n` to `path`.
pub(super) fn write(path: &Path, n: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        writeln!(out, "{}", line(i))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_covers_every_year_the_parser_accepts() {
        assert_eq!(crate::stats::rfc3339(super::START_MS), "2026-11-24T00:00:00.000Z");
        assert_eq!(crate::stats::rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(crate::stats::rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(crate::stats::rfc3339(-62_167_219_200_000), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn lines_parse_and_times_round_trip() {
        for i in [0, 1, 99, 12_345, 299_999] {
            let l = super::line(i);
            let e = crate::access_log::parse_access_log(&l).unwrap_or_else(|err| panic!("{l}: {err}"));
            assert!((e.timestamp_ms - (super::START_MS + i as i64 * 10)).abs() <= 3_000, "{l}");
        }
    }
}
