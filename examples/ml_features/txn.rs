//! Card transactions: the input line format, its parser, and the feature view over them.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use weir::features::{Agg, FeatureView, Window};

/// The view's name: `GET /features/user_txn/<user>`.
pub(crate) const VIEW: &str = "user_txn";

/// How far behind the newest event time an event may arrive and still be applied online.
pub(crate) const ALLOWED_LATENESS: Duration = Duration::from_secs(3600);

/// One transaction: `{"user": "u17", "merchant": "m3", "amount_cents": 1250, "ts": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Txn {
    pub(crate) user: String,
    pub(crate) merchant: String,
    pub(crate) amount_cents: i64,
    /// Event time, ms since the epoch.
    pub(crate) ts: i64,
}

/// Parses one input line; the error says what is wrong (it goes with the line to the dead
/// letters). `ts` is epoch milliseconds (an integer) or RFC 3339 in UTC (`...Z`); the amount a
/// non-negative integer of cents; user and merchant non-empty strings; other fields are
/// ignored.
pub(crate) fn parse(line: &[u8]) -> Result<Txn, String> {
    // The fast path: a typed parse that borrows the strings; any error is explained by the
    // slow path below, which says which field is wrong.
    // (A derived struct also takes a JSON array of its fields: only an object may pass.)
    let object = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if let Some(raw) = object.then(|| serde_json::from_slice::<Raw<'_>>(line).ok()).flatten() {
        let ts = match raw.ts {
            RawTs::Ms(ms) => Some(ms),
            RawTs::Text(s) => rfc3339_ms(&s).ok(),
        };
        if let Some(ts) = ts.filter(|ts| (0..=MAX_TS).contains(ts))
            && raw.amount_cents >= 0
            && !raw.user.is_empty()
            && !raw.merchant.is_empty()
        {
            return Ok(Txn {
                user: raw.user.into_owned(),
                merchant: raw.merchant.into_owned(),
                amount_cents: raw.amount_cents,
                ts,
            });
        }
    }
    explain(line)
}

/// The last ms of the year 9999: far enough from the ends of `i64` that window arithmetic
/// cannot overflow.
const MAX_TS: i64 = 253_402_300_799_999;

#[derive(serde::Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    user: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    merchant: std::borrow::Cow<'a, str>,
    amount_cents: i64,
    #[serde(borrow)]
    ts: RawTs<'a>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawTs<'a> {
    Ms(i64),
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
}

/// Parses `line` field by field, to say what is wrong with it.
fn explain(line: &[u8]) -> Result<Txn, String> {
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| match obj.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("`{name}` is not a non-empty string")),
        None => Err(format!("no `{name}`")),
    };
    let user = text("user")?;
    let merchant = text("merchant")?;
    let amount_cents = match obj.get("amount_cents") {
        Some(serde_json::Value::Number(n)) => {
            n.as_i64().filter(|a| *a >= 0).ok_or("`amount_cents` is not a non-negative integer")?
        }
        Some(_) => return Err("`amount_cents` is not a number".into()),
        None => return Err("no `amount_cents`".into()),
    };
    let ts = match obj.get("ts") {
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or("`ts` is not an integer of epoch ms")?,
        Some(serde_json::Value::String(s)) => rfc3339_ms(s)?,
        Some(_) => return Err("`ts` is neither epoch ms nor an RFC 3339 string".into()),
        None => return Err("no `ts`".into()),
    };
    if !(0..=MAX_TS).contains(&ts) {
        return Err(format!("`ts` {ts} is outside 1970..=9999"));
    }
    Ok(Txn { user, merchant, amount_cents, ts })
}

fn rfc3339_ms(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339(s).map_err(|e| format!("`ts` {s:?}: {e}"))?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| format!("`ts` {s:?} is before 1970"))?;
    i64::try_from(d.as_millis()).map_err(|_| format!("`ts` {s:?} is out of range"))
}

/// The feature names, in the view's (and the training set's) column order.
pub(crate) const FEATURES: [&str; 8] = [
    "txn_count_5m",
    "txn_count_1h",
    "txn_count_24h",
    "amount_sum_5m",
    "amount_sum_1h",
    "amount_sum_24h",
    "distinct_merchants_24h",
    "last_amount",
];

/// The view `user_txn`: per user, counts and amount sums over the last 5 minutes, hour and
/// day, distinct merchants of the day (approximate), and the newest amount.
pub(crate) fn view() -> anyhow::Result<FeatureView<String, Txn>> {
    let windows = [("5m", 300), ("1h", 3_600), ("24h", 86_400)];
    let mut b = FeatureView::builder(VIEW)
        .entity(|t: &Txn| t.user.clone())
        .event_time(|t| t.ts)
        .allowed_lateness(ALLOWED_LATENESS)
        .number("amount", |t| t.amount_cents as f64)
        .category("merchant", |t| t.merchant.clone());
    for (name, secs) in windows {
        b = b.feature(&format!("txn_count_{name}"), Agg::Count, Window::Last(Duration::from_secs(secs)));
    }
    for (name, secs) in windows {
        let w = Window::Last(Duration::from_secs(secs));
        b = b.feature(&format!("amount_sum_{name}"), Agg::Sum("amount".into()), w);
    }
    let day = Window::Last(Duration::from_secs(86_400));
    let view = b
        .feature("distinct_merchants_24h", Agg::ApproxDistinct("merchant".into()), day)
        .feature("last_amount", Agg::Last("amount".into()), Window::Lifetime)
        .build()?;
    debug_assert!(view.feature_names().eq(FEATURES));
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_time_forms_parse_to_the_same_ms() {
        let a = parse(br#"{"user":"u1","merchant":"m1","amount_cents":5,"ts":1772359200250}"#).unwrap();
        let b = parse(br#"{"user":"u1","merchant":"m1","amount_cents":5,"ts":"2026-03-01T10:00:00.250Z"}"#)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ts, 1_772_359_200_250);
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        for (line, why) in [
            (&b"{"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"["u1","m1",100,1772359200250]"#, "not a JSON object"),
            (br#"{"merchant":"m","amount_cents":1,"ts":1}"#, "no `user`"),
            (br#"{"user":"","merchant":"m","amount_cents":1,"ts":1}"#, "`user`"),
            (br#"{"user":"u","merchant":"m","amount_cents":-1,"ts":1}"#, "non-negative"),
            (br#"{"user":"u","merchant":"m","amount_cents":1.5,"ts":1}"#, "non-negative integer"),
            (br#"{"user":"u","merchant":"m","amount_cents":1,"ts":"yesterday"}"#, "`ts`"),
            (br#"{"user":"u","merchant":"m","amount_cents":1,"ts":-5}"#, "outside"),
            (br#"{"user":"u","merchant":"m","amount_cents":1}"#, "no `ts`"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_view_has_the_documented_features() {
        let v = view().unwrap();
        assert_eq!(v.feature_names().collect::<Vec<_>>(), FEATURES);
    }
}
