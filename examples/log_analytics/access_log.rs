//! Web server access logs: the Apache/nginx *combined* and *common* formats, and nginx's JSON
//! lines.
//!
//! [`parse_access_log`] takes one line and detects its format: a line starting with `{` is JSON,
//! anything else the common format (`%h %l %u %t "%r" %>s %b`), optionally followed by the
//! combined format's referer and user agent (two quoted fields), optionally followed by a
//! request time in seconds (nginx's `$request_time`, as many `log_format`s append it), and
//! then by anything at all: the fields real configurations add (`"%{X-Forwarded-For}i"`,
//! `$upstream_response_time`, a host, a trailing `"-"`) are ignored, never a reason to reject
//! the line.
//!
//! ```text
//! 203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.0" 200 2326 "http://ref/" "Mozilla/5.0" 0.012
//! 2001:db8::7 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/2.0" 200 - "-" "curl/8.5.0" "198.51.100.4"
//! {"time_iso8601":"2000-10-10T20:55:36+00:00","remote_addr":"203.0.113.9","request":"GET /a.gif HTTP/1.0","status":200,"body_bytes_sent":2326,"request_time":0.012}
//! ```
//!
//! Rules (an oracle that recomputes results from a raw log must apply the same; the corpus
//! under `corpus/` holds a line of every variant with its expected parse):
//! - fields are separated by spaces (not tabs); `[...]` has no escapes; inside `"..."` a
//!   backslash escapes the next character, and `\"` and `\\` are undone in the request,
//!   referer and user agent (other escapes, such as Apache's `\xhh`, stay as written);
//! - the request must be `METHOD TARGET PROTOCOL`, or `METHOD TARGET` (HTTP/0.9: the protocol
//!   is then `HTTP/0.9`), the method an HTTP token (`PROPFIND`, `M-SEARCH`) and the protocol
//!   `HTTP/...`; anything else — `"-"`, a TLS handshake sent to a plain HTTP port — is an
//!   error, so the line becomes a dead letter;
//! - the path is the request target up to `?` (the query is dropped);
//! - bytes `-` is 0; the status is a number from 100 to 599;
//! - the request time is the word after the user agent (or after the bytes, without referer
//!   and user agent) when it is written `digits.digits`, in seconds; a whole number is not taken
//!   (Apache's `%T`, `%D` and `%{ms}T` are seconds, microseconds and milliseconds alike);
//! - times carry their UTC offset and become milliseconds since the epoch (UTC); the common
//!   format has whole seconds.
//!
//! JSON lines may name the fields as nginx variables: `time_iso8601`, `time_local` or `msec`;
//! `remote_addr`; `request` or `request_method` + `request_uri`; `status`;
//! `body_bytes_sent` or `bytes_sent`; `request_time` (seconds); `http_referer`;
//! `http_user_agent`; `remote_user`. Numbers may be JSON numbers or strings; other fields are
//! ignored.

use serde_json::Value;

/// One request from an access log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AccessLogEntry {
    /// The client address (`%h`, `$remote_addr`).
    pub(crate) client: String,
    /// The authenticated user, if any.
    pub(crate) user: Option<String>,
    /// When the request was received, ms since the Unix epoch (UTC).
    pub(crate) timestamp_ms: i64,
    /// `GET`, `POST`, …
    pub(crate) method: String,
    /// The request target without its query string.
    pub(crate) path: String,
    /// `HTTP/1.1`, …
    pub(crate) protocol: String,
    /// The response status.
    pub(crate) status: u16,
    /// Response body bytes.
    pub(crate) bytes: u64,
    /// The `Referer` header, if logged and not `-`.
    pub(crate) referer: Option<String>,
    /// The `User-Agent` header, if logged and not `-`.
    pub(crate) user_agent: Option<String>,
    /// Time to serve the request in ms, if logged.
    pub(crate) request_time_ms: Option<f64>,
}

/// Why a line is not an access log entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AccessLogError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, AccessLogError> {
    Err(AccessLogError(msg.into()))
}

/// Parses one line in the common, combined or JSON format (see the module docs).
///
/// # Errors
///
/// [`AccessLogError`] saying which field is missing or malformed.
pub(crate) fn parse_access_log(line: &str) -> Result<AccessLogEntry, AccessLogError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim_start().starts_with('{') { parse_json(line) } else { parse_text(line) }
}

/// A cursor over a common/combined line.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    /// The next space-separated word.
    fn word(&mut self, what: &str) -> Result<&'a str, AccessLogError> {
        let s = self.0.trim_start_matches(' ');
        if s.is_empty() {
            return err(format!("missing {what}"));
        }
        let end = s.find(' ').unwrap_or(s.len());
        self.0 = &s[end..];
        Ok(&s[..end])
    }

    /// The next field delimited by `open` and `close` (no escapes inside `[...]`; `\"` inside
    /// quotes).
    fn delimited(&mut self, open: char, close: char, what: &str) -> Result<&'a str, AccessLogError> {
        let s = self.0.trim_start_matches(' ');
        let Some(rest) = s.strip_prefix(open) else { return err(format!("{what}: expected {open}")) };
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if close == '"' => escaped = !escaped,
                c if c == close && !escaped => {
                    self.0 = &rest[i + c.len_utf8()..];
                    return Ok(&rest[..i]);
                }
                _ => escaped = false,
            }
        }
        err(format!("{what}: no closing {close}"))
    }
}

fn dash(s: &str) -> Option<String> {
    (s != "-" && !s.is_empty()).then(|| s.to_owned())
}

fn parse_text(line: &str) -> Result<AccessLogEntry, AccessLogError> {
    let mut f = Fields(line);
    let client = f.word("client")?.to_owned();
    let _ident = f.word("ident")?;
    let user = dash(f.word("user")?);
    let timestamp_ms = parse_clf_time(f.delimited('[', ']', "time")?)?;
    let (method, path, protocol) = split_request(&unescape(f.delimited('"', '"', "request")?))?;
    let status = parse_status(f.word("status")?)?;
    let bytes = parse_bytes(f.word("bytes")?)?;
    // The combined format's referer and user agent: two quoted fields, else neither.
    let (mut referer, mut user_agent) = (None, None);
    let mut combined = Fields(f.0);
    if let (Ok(r), Ok(u)) =
        (combined.delimited('"', '"', "referer"), combined.delimited('"', '"', "user agent"))
    {
        (referer, user_agent) = (dash(&unescape(r)), dash(&unescape(u)));
        f = combined;
    }
    // The next word is the request time if it is written as nginx's `$request_time` is;
    // whatever else follows (more quoted headers, upstream times, ...) is not ours to judge.
    let request_time_ms = f.word("request time").ok().and_then(parse_request_time);
    Ok(AccessLogEntry {
        client,
        user,
        timestamp_ms,
        method,
        path,
        protocol,
        status,
        bytes,
        referer,
        user_agent,
        request_time_ms,
    })
}

/// A quoted field's text with Apache's `\"` and `\\` escapes undone (other escapes, such as
/// `\xhh` for a byte that is not printable ASCII, stay as written).
fn unescape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(e @ ('"' | '\\'))) => {
                out.push(e);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out.into()
}

/// `digits.digits` seconds (nginx's `$request_time`, `0.012`) in milliseconds. A whole number
/// is not taken: Apache writes `%T` (seconds), `%D` (microseconds) and `%{ms}T` alike.
fn parse_request_time(word: &str) -> Option<f64> {
    let (whole, frac) = word.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let seconds = word.parse::<f64>().ok().filter(|s| s.is_finite())?;
    (digits(whole) && digits(frac)).then_some(seconds * 1000.0)
}

/// A method is an HTTP token (RFC 9110: letters, digits and ``!#$%&'*+-.^_`|~``).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `METHOD TARGET PROTOCOL`, or `METHOD TARGET` (HTTP/0.9, which has no protocol word).
fn split_request(request: &str) -> Result<(String, String, String), AccessLogError> {
    let mut parts = request.split(' ').filter(|p| !p.is_empty());
    let bad = || AccessLogError(format!("request is not METHOD TARGET PROTOCOL: {request:?}"));
    let (Some(method), Some(target), protocol, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let protocol = protocol.unwrap_or("HTTP/0.9");
    if !is_token(method) || !protocol.starts_with("HTTP/") {
        return Err(bad());
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok((method.to_owned(), path.to_owned(), protocol.to_owned()))
}

fn parse_status(s: &str) -> Result<u16, AccessLogError> {
    match s.parse::<u16>() {
        Ok(n) if (100..=599).contains(&n) => Ok(n),
        _ => err(format!("status: {s:?} is not an HTTP status")),
    }
}

fn parse_bytes(s: &str) -> Result<u64, AccessLogError> {
    if s == "-" {
        return Ok(0);
    }
    s.parse().or_else(|_| err(format!("bytes: {s:?} is not a number")))
}

/// Seconds (`0.012`) to milliseconds.
fn parse_seconds(s: &str) -> Result<f64, AccessLogError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * 1000.0),
        _ => err(format!("request time: {s:?} is not a number of seconds")),
    }
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, what: &str) -> Result<u32, AccessLogError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("time: bad {what} {s:?}"));
    }
    s.parse().or_else(|_| err(format!("time: bad {what} {s:?}")))
}

/// Milliseconds since the epoch of a local date-time and its UTC offset in minutes.
fn to_ms(
    (y, mo, d): (i64, u32, u32),
    (h, mi, s): (u32, u32, u32),
    frac_ms: i64,
    offset_min: i64,
) -> Result<i64, AccessLogError> {
    if !(0..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || s > 60
    {
        return err("time: field out of range");
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset_min * 60;
    Ok(secs * 1000 + frac_ms)
}

/// `[+-]HHMM` or `[+-]HH:MM` or `Z` to minutes east of UTC.
fn parse_offset(s: &str) -> Result<i64, AccessLogError> {
    if s == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return err(format!("time: bad UTC offset {s:?}")),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("time: bad UTC offset {s:?}"));
    }
    Ok(sign * i64::from(num(&digits[..2], "offset")? * 60 + num(&digits[2..], "offset")?))
}

/// `10/Oct/2000:13:55:36 -0700`.
fn parse_clf_time(s: &str) -> Result<i64, AccessLogError> {
    let (datetime, offset) =
        s.split_once(' ').ok_or_else(|| AccessLogError(format!("time: no UTC offset in {s:?}")))?;
    let mut parts = datetime.splitn(4, [':', '/']);
    let (Some(d), Some(mon), Some(y), Some(hms)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return err(format!("time: {s:?} is not dd/Mon/yyyy:HH:MM:SS +zzzz"));
    };
    let mo = MONTHS
        .iter()
        .position(|m| *m == mon)
        .ok_or_else(|| AccessLogError(format!("time: bad month {mon:?}")))?;
    let mut t = hms.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return err(format!("time: {s:?} is not dd/Mon/yyyy:HH:MM:SS +zzzz"));
    };
    to_ms(
        (i64::from(num(y, "year")?), mo as u32 + 1, num(d, "day")?),
        (num(h, "hour")?, num(mi, "minute")?, num(sec, "second")?),
        0,
        parse_offset(offset)?,
    )
}

/// `2000-10-10T20:55:36+00:00`, with optional fractional seconds, `Z` or an offset.
fn parse_iso_time(s: &str) -> Result<i64, AccessLogError> {
    let bad = || AccessLogError(format!("time: {s:?} is not an ISO 8601 date-time"));
    let (date, time) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(day), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let zone_at = time.find(['Z', '+', '-']).ok_or_else(bad)?;
    let (clock, zone) = time.split_at(zone_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    let frac_ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        i64::from(num(&digits, "fraction")?)
    };
    to_ms(
        (i64::from(num(y, "year")?), num(mo, "month")?, num(day, "day")?),
        (num(h, "hour")?, num(mi, "minute")?, num(sec, "second")?),
        frac_ms,
        parse_offset(zone)?,
    )
}

fn parse_json(line: &str) -> Result<AccessLogEntry, AccessLogError> {
    let v: Value = serde_json::from_str(line).or_else(|e| err(format!("invalid JSON: {e}")))?;
    let Value::Object(o) = v else { return err("JSON line is not an object") };
    let text = |k: &str| -> Option<String> {
        match o.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let client = text("remote_addr").ok_or_else(|| AccessLogError("missing remote_addr".into()))?;
    let timestamp_ms = if let Some(t) = text("time_iso8601") {
        parse_iso_time(&t)?
    } else if let Some(t) = text("time_local") {
        parse_clf_time(&t)?
    } else if let Some(t) = text("msec") {
        match t.parse::<f64>() {
            Ok(s) if s.is_finite() => (s * 1000.0).round() as i64,
            _ => return err(format!("msec: {t:?} is not a number")),
        }
    } else {
        return err("missing time_iso8601, time_local or msec");
    };
    let (method, path, protocol) = match (text("request"), text("request_method"), text("request_uri")) {
        (Some(r), _, _) => split_request(&r)?,
        (None, Some(m), Some(u)) => split_request(&format!(
            "{m} {u} {}",
            text("server_protocol").unwrap_or_else(|| "HTTP/1.1".into())
        ))?,
        _ => return err("missing request (or request_method and request_uri)"),
    };
    let status = parse_status(&text("status").ok_or_else(|| AccessLogError("missing status".into()))?)?;
    let bytes =
        parse_bytes(&text("body_bytes_sent").or_else(|| text("bytes_sent")).unwrap_or_else(|| "-".into()))?;
    let request_time_ms = match text("request_time") {
        Some(t) if !t.is_empty() && t != "-" => Some(parse_seconds(&t)?),
        _ => None,
    };
    Ok(AccessLogEntry {
        client,
        user: text("remote_user").and_then(|u| dash(&u)),
        timestamp_ms,
        method,
        path,
        protocol,
        status,
        bytes,
        referer: text("http_referer").and_then(|r| dash(&r)),
        user_agent: text("http_user_agent").and_then(|u| dash(&u)),
        request_time_ms,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // 2000-10-10T20:55:36Z
    const T: i64 = 971_211_336_000;

    /// Every line of `corpus/access_logs.txt` parses to the entry written under it by hand.
    #[test]
    fn real_world_variants_parse_as_their_formats_define() {
        let corpus = include_str!("corpus/access_logs.txt");
        let mut lines = corpus.lines().filter(|l| !l.starts_with('#'));
        let mut checked = 0;
        while let Some(line) = lines.next() {
            let expected = lines.next().and_then(|e| e.strip_prefix("=> ")).unwrap_or_else(|| {
                panic!("corpus: no `=> ` line after {line:?}");
            });
            let parsed = parse_access_log(line);
            match expected.strip_prefix("error: ") {
                Some(want) => match parsed {
                    Err(e) => assert!(e.to_string().contains(want), "{line:?}: {e}, want {want:?}"),
                    Ok(e) => panic!("{line:?} parsed as {e:?}, want an error containing {want:?}"),
                },
                None => {
                    let want: AccessLogEntry = serde_json::from_str(expected).unwrap();
                    match parsed {
                        Ok(e) => assert_eq!(e, want, "{line:?}"),
                        Err(e) => panic!("{line:?}: {e}"),
                    }
                }
            }
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} corpus lines");
    }

    #[test]
    fn combined_with_request_time() {
        let e = parse_access_log(
            r#"203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.0" 200 2326 "http://ref/" "Mozilla/5.0 (X11)" 0.012"#,
        )
        .unwrap();
        assert_eq!(e.client, "203.0.113.9");
        assert_eq!(e.user.as_deref(), Some("frank"));
        assert_eq!(e.timestamp_ms, T);
        assert_eq!((e.method.as_str(), e.path.as_str(), e.protocol.as_str()), ("GET", "/a.gif", "HTTP/1.0"));
        assert_eq!((e.status, e.bytes), (200, 2326));
        assert_eq!(e.referer.as_deref(), Some("http://ref/"));
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0 (X11)"));
        assert_eq!(e.request_time_ms, Some(12.0));
    }

    #[test]
    fn trailing_fields_are_ignored_not_rejected() {
        let base = r#"h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1"#;
        let huge = format!(r#" "r" "u" 1{}.0"#, "0".repeat(400));
        for (tail, time) in [
            (r#" "r" "u" slow"#, None),
            (r#" "r" "u" 0.1 extra"#, Some(100.0)),
            (r#" "r" "u" "x""#, None),
            (r#" "r" "u" -1"#, None),
            (r#" "r" "u" inf"#, None),
            (huge.as_str(), None),
            (r#" "r""#, None),
            (r#" "r" "u"#, None),
            (" slow", None),
            (" 0.5\t", None),
        ] {
            let e = parse_access_log(&format!("{base}{tail}")).unwrap_or_else(|e| panic!("{tail:?}: {e}"));
            assert_eq!(e.request_time_ms, time, "{tail:?}");
        }
    }

    #[test]
    fn timezone_offsets_and_dashes() {
        let e =
            parse_access_log(r#"h - - [01/Mar/2024:00:00:00 +0130] "GET / HTTP/1.1" 200 5 "a \" b" "ua""#)
                .unwrap();
        assert_eq!(e.referer.as_deref(), Some(r#"a " b"#));
        assert_eq!(e.timestamp_ms, 1_709_251_200_000 - 90 * 60_000);
        let e = parse_access_log(r#"{"time_iso8601":"2000-10-10T20:55:36.25Z","remote_addr":"a","request":"GET / HTTP/1.1","status":200}"#).unwrap();
        assert_eq!(e.timestamp_ms, T + 250);
        let e = parse_access_log(r#"{"msec":"971211336.5","remote_addr":"a","request_method":"PUT","request_uri":"/p","status":201,"bytes_sent":3}"#).unwrap();
        assert_eq!((e.timestamp_ms, e.method.as_str(), e.status, e.bytes), (T + 500, "PUT", 201, 3));
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let cases = [
            ("", "missing client"),
            ("garbage", "missing ident"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700] "-" 400 0"#, "METHOD TARGET PROTOCOL"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700] "GET / FTP/1.1" 400 0"#, "METHOD TARGET PROTOCOL"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1 x" 400 0"#, "METHOD TARGET PROTOCOL"),
            (r#"h - - [10/Foo/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 0"#, "bad month"),
            (r#"h - - [10/Oct/2000:25:55:36 -0700] "GET / HTTP/1.1" 200 0"#, "out of range"),
            (r#"h - - [10/Oct/2000:13:55:36] "GET / HTTP/1.1" 200 0"#, "no UTC offset"),
            (r#"h - - [10/Oct/2000:13:55:36 +1é1] "GET / HTTP/1.1" 200 0"#, "bad UTC offset"),
            (r#"h - - [10/Oct/4000000000:13:55:36 +0000] "GET / HTTP/1.1" 200 0"#, "out of range"),
            (r#"h - - [10/Oct/10000:13:55:36 +0000] "GET / HTTP/1.1" 200 0"#, "out of range"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200"#, "missing bytes"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 999 0"#, "not an HTTP status"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 x"#, "not a number"),
            (r#"h - - [10/Oct/2000:13:55:36 -0700 "GET / HTTP/1.1" 200 1"#, "no closing"),
            ("{not json", "invalid JSON"),
            (r#"{"remote_addr":"a","request":"GET / HTTP/1.1","status":200}"#, "missing time"),
            (
                r#"{"remote_addr":"a","time_iso8601":"yesterday","request":"GET / HTTP/1.1","status":200}"#,
                "ISO 8601",
            ),
        ];
        for (line, want) in cases {
            let e = parse_access_log(line).unwrap_err();
            assert!(e.to_string().contains(want), "{line:?}: {e}");
        }
    }
}
