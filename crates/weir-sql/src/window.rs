//! Window functions in `GROUP BY`: `tumble(ts, size)`, `hop(ts, slide, size)`,
//! `session(ts, gap)`.
//!
//! DataFusion knows nothing of them. Before planning, the query's top-level `GROUP BY` is
//! rewritten: the call is replaced by the two columns `window_start, window_end`, which the
//! source's table then carries (timestamps, ms). The streaming plan fills them per row —
//! tumbling and sliding windows are epoch-aligned and half-open, `[start, end)`, as in the
//! runtime; a row belongs to `size / slide` sliding windows — and a session aggregate merges
//! `[t, t + gap)` per group when they overlap or touch.
//!
//! A sliding window repeats each row in `size / slide` windows; a query whose hop would put a
//! row in more than [`MAX_WINDOWS_PER_ROW`] windows is refused at planning, naming the call (a
//! fan-out of millions per row is never what was meant, and would run for ever).

use weir_runtime::WindowSpec;

use crate::ddl::{parse_interval_ms, split_top_level};
use crate::error::{Result, SqlError};

/// Names of the columns a windowed query groups by and may select.
pub const WINDOW_START: &str = "window_start";
/// See [`WINDOW_START`].
pub const WINDOW_END: &str = "window_end";

/// The most windows `hop(ts, slide, size)` may put one row in (`size / slide`): 10 000 (a day
/// sliding by 10 seconds is 8 640). Each window a row is in costs as much as a row.
pub const MAX_WINDOWS_PER_ROW: i64 = 10_000;

/// The window of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `tumble(ts, size)`.
    Tumble {
        /// Size, ms.
        size: i64,
    },
    /// `hop(ts, slide, size)`.
    Hop {
        /// Slide, ms.
        slide: i64,
        /// Size, ms.
        size: i64,
    },
    /// `session(ts, gap)`.
    Session {
        /// Gap, ms.
        gap: i64,
    },
}

/// The window call found in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCall {
    /// The kind and its sizes.
    pub kind: WindowKind,
    /// The time column it windows by.
    pub time_column: String,
}

impl WindowKind {
    /// The runtime's window of this kind (epoch-aligned, as SQL windows are).
    pub fn spec(self) -> WindowSpec {
        match self {
            WindowKind::Tumble { size } => WindowSpec::Tumbling { size, offset: 0 },
            WindowKind::Hop { slide, size } => WindowSpec::Sliding { size, slide, offset: 0 },
            WindowKind::Session { gap } => WindowSpec::Session { gap },
        }
    }
}

impl WindowCall {
    /// The windows `[start, end)` a row at `ts` belongs to (tumble, hop), or its initial
    /// session: the runtime's [`WindowSpec::for_each_window`], so SQL and typed windows are one
    /// rule. A window that would start before `i64::MIN` or end after `i64::MAX` ms does not
    /// exist: a row only in such windows gets none.
    pub fn assign(&self, ts: i64, out: &mut Vec<(i64, i64)>) {
        self.kind.spec().for_each_window(ts, |start, end| out.push((start, end)));
    }
}

/// Finds a window function in the top-level `GROUP BY` of `query` and replaces it by
/// `window_start, window_end`. Returns the query to plan and the call, if any.
///
/// # Errors
///
/// [`SqlError::Parse`] for a malformed call (arguments, intervals), [`SqlError::Unsupported`]
/// for a window function outside the top-level `GROUP BY` or more than one.
pub fn rewrite(query: &str) -> Result<(String, Option<WindowCall>)> {
    let tokens = scan(query);
    let Some(group_by) =
        tokens.iter().position(|t| t.depth == 0 && t.word_eq("GROUP") && t.next_word_eq(&tokens, "BY"))
    else {
        return check_elsewhere(query, &tokens).map(|()| (query.to_owned(), None));
    };
    let mut found = None;
    for (i, t) in tokens.iter().enumerate().skip(group_by) {
        if t.depth != 0 {
            continue;
        }
        if ["HAVING", "ORDER", "LIMIT", "WINDOW", "UNION"].iter().any(|k| t.word_eq(k)) {
            break;
        }
        let kind = ["TUMBLE", "HOP", "SESSION"].into_iter().find(|k| t.word_eq(k));
        if let Some(kind) = kind
            && tokens.get(i + 1).is_some_and(|n| n.text == "(")
        {
            if found.is_some() {
                return Err(SqlError::Unsupported("more than one window function in GROUP BY".into()));
            }
            found = Some((kind, i));
        }
    }
    let Some((kind, at)) = found else {
        return check_elsewhere(query, &tokens).map(|()| (query.to_owned(), None));
    };
    // The call spans from the name to the matching parenthesis.
    let open = &tokens[at + 1];
    let close = tokens[at + 2..]
        .iter()
        .find(|t| t.text == ")" && t.depth == 0)
        .ok_or_else(|| SqlError::Parse(format!("{kind}(: missing ')'")))?;
    let args_text = &query[open.end..close.start];
    let args = split_top_level(args_text);
    let interval = |i: usize, what: &str| -> Result<i64> {
        let text = args.get(i).map(String::as_str).unwrap_or("");
        match parse_interval_ms(text) {
            Some(ms) if ms > 0 => Ok(ms),
            _ => Err(SqlError::Parse(format!(
                "{}: {what} must be a positive INTERVAL (e.g. INTERVAL '1' MINUTE), not {text:?}",
                kind.to_ascii_lowercase()
            ))),
        }
    };
    let expected = if kind == "HOP" { 3 } else { 2 };
    if args.len() != expected {
        let usage = match kind {
            "TUMBLE" => "tumble(time_column, size)",
            "HOP" => "hop(time_column, slide, size)",
            _ => "session(time_column, gap)",
        };
        return Err(SqlError::Parse(format!("{usage} takes {expected} arguments, got {}", args.len())));
    }
    // `ts`, `"ts"`, or qualified by its table: `r.ts`, `"r"."ts"`.
    let parts: Vec<String> =
        args[0].split('.').map(|p| p.trim().trim_matches('"').to_ascii_lowercase()).collect();
    let time_column = parts.last().cloned().unwrap_or_default();
    let identifier = |p: &String| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_');
    if parts.len() > 2 || !parts.iter().all(identifier) {
        return Err(SqlError::Unsupported(format!(
            "the first argument of {} must be a column of the source, not {:?}",
            kind.to_ascii_lowercase(),
            args[0]
        )));
    }
    let kind = match kind {
        "TUMBLE" => WindowKind::Tumble { size: interval(1, "the size")? },
        "HOP" => {
            let (slide, size) = (interval(1, "the slide")?, interval(2, "the size")?);
            if size % slide != 0 {
                return Err(SqlError::Unsupported(format!(
                    "hop: the size ({size} ms) must be a multiple of the slide ({slide} ms)"
                )));
            }
            if size / slide > MAX_WINDOWS_PER_ROW {
                return Err(SqlError::Unsupported(format!(
                    "{}: every row would be in {} windows (size {size} ms / slide {slide} ms); at \
                     most {MAX_WINDOWS_PER_ROW} are supported: use a larger slide",
                    &query[tokens[at].start..close.end],
                    size / slide
                )));
            }
            WindowKind::Hop { slide, size }
        }
        _ => WindowKind::Session { gap: interval(1, "the gap")? },
    };
    let start = tokens[at].start;
    let rewritten = format!("{}{WINDOW_START}, {WINDOW_END}{}", &query[..start], &query[close.end..]);
    // The rest of the query must not hold another window call.
    check_elsewhere(&rewritten, &scan(&rewritten))?;
    Ok((rewritten, Some(WindowCall { kind, time_column })))
}

/// A window function anywhere else (SELECT list, WHERE, a subquery) is an error.
fn check_elsewhere(query: &str, tokens: &[Token]) -> Result<()> {
    for (i, t) in tokens.iter().enumerate() {
        if ["TUMBLE", "HOP", "SESSION"].iter().any(|k| t.word_eq(k))
            && tokens.get(i + 1).is_some_and(|n| n.text == "(")
        {
            return Err(SqlError::Unsupported(format!(
                "{}(...) is only supported in the GROUP BY of the outermost SELECT; select \
                 window_start and window_end instead (in {:?})",
                t.text.to_ascii_lowercase(),
                query.chars().take(60).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// A word or punctuation mark of the query, with its byte span and parenthesis depth.
#[derive(Debug)]
struct Token<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    depth: i32,
}

impl Token<'_> {
    fn word_eq(&self, w: &str) -> bool {
        self.text.eq_ignore_ascii_case(w)
    }

    fn next_word_eq(&self, tokens: &[Token], w: &str) -> bool {
        tokens.iter().find(|t| t.start >= self.end).is_some_and(|t| t.word_eq(w))
    }
}

/// Words, and `(`/`)` with their depth; skips strings, quoted identifiers and comments.
fn scan(q: &str) -> Vec<Token<'_>> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                out.push(Token { text: "(", start: i, end: i + 1, depth });
                depth += 1;
                i += 1;
            }
            b')' => {
                depth -= 1;
                out.push(Token { text: ")", start: i, end: i + 1, depth });
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Token { text: &q[start..i], start, end: i, depth });
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumble_hop_and_session_are_rewritten() {
        let (q, w) = rewrite(
            "SELECT window_start, status, count(*) FROM access WHERE method <> 'GROUP BY tumble(' \
             GROUP BY tumble(ts, INTERVAL '1' MINUTE), status HAVING count(*) > 1",
        )
        .unwrap();
        assert_eq!(
            q,
            "SELECT window_start, status, count(*) FROM access WHERE method <> 'GROUP BY tumble(' \
             GROUP BY window_start, window_end, status HAVING count(*) > 1"
        );
        assert_eq!(
            w,
            Some(WindowCall { kind: WindowKind::Tumble { size: 60_000 }, time_column: "ts".into() })
        );
        let (_, w) =
            rewrite("select 1 from t group by status, HOP(ts, interval '1' minute, interval '5' minute)")
                .unwrap();
        assert_eq!(w.unwrap().kind, WindowKind::Hop { slide: 60_000, size: 300_000 });
        let (_, w) = rewrite("SELECT 1 FROM t r GROUP BY tumble(r.ts, INTERVAL 1 MINUTE)").unwrap();
        assert_eq!(
            w,
            Some(WindowCall { kind: WindowKind::Tumble { size: 60_000 }, time_column: "ts".into() })
        );
        let (_, w) = rewrite("SELECT 1 FROM t GROUP BY tumble(\"t\".\"ts\", '1 minute')").unwrap();
        assert_eq!(w.unwrap().time_column, "ts");
        let (_, w) = rewrite("SELECT 1 FROM t GROUP BY session(ts, INTERVAL '30' MINUTE), ip").unwrap();
        assert_eq!(w.unwrap().kind, WindowKind::Session { gap: 1_800_000 });
        assert_eq!(
            rewrite("SELECT a FROM t GROUP BY a").unwrap(),
            ("SELECT a FROM t GROUP BY a".into(), None)
        );
    }

    #[test]
    fn windows_are_epoch_aligned_and_half_open() {
        let mut w = Vec::new();
        WindowCall { kind: WindowKind::Tumble { size: 10 }, time_column: "t".into() }.assign(-1, &mut w);
        assert_eq!(w, [(-10, 0)]);
        w.clear();
        WindowCall { kind: WindowKind::Hop { slide: 10, size: 30 }, time_column: "t".into() }
            .assign(25, &mut w);
        assert_eq!(w, [(20, 50), (10, 40), (0, 30)]);
        w.clear();
        WindowCall { kind: WindowKind::Hop { slide: 10, size: 30 }, time_column: "t".into() }
            .assign(30, &mut w);
        assert_eq!(w, [(30, 60), (20, 50), (10, 40)]);
    }

    #[test]
    fn windows_at_the_ends_of_time_do_not_overflow() {
        let assign = |kind: WindowKind, ts: i64| {
            let mut w = Vec::new();
            WindowCall { kind, time_column: "t".into() }.assign(ts, &mut w);
            w
        };
        let size = 60_000;
        // i64::MIN is not a multiple of a minute: its window would start before the start of
        // time, so it has none; the first window that exists starts at the next multiple.
        assert_eq!(assign(WindowKind::Tumble { size }, i64::MIN), []);
        let first = i64::MIN + (size - i64::MIN.rem_euclid(size));
        assert_eq!(assign(WindowKind::Tumble { size }, first), [(first, first + size)]);
        // The window of i64::MAX would end after the end of time: none.
        assert_eq!(assign(WindowKind::Tumble { size }, i64::MAX), []);
        let last = i64::MAX - i64::MAX.rem_euclid(size) - 1;
        assert_eq!(assign(WindowKind::Tumble { size }, last).len(), 1);
        let hop = WindowKind::Hop { slide: 10, size: 30 };
        assert_eq!(assign(hop, i64::MIN), []);
        let first = i64::MIN + (10 - i64::MIN.rem_euclid(10));
        assert_eq!(
            assign(hop, first + 25),
            [(first + 20, first + 50), (first + 10, first + 40), (first, first + 30)]
        );
        assert!(assign(hop, i64::MAX).is_empty());
        assert_eq!(assign(WindowKind::Session { gap: 5 }, i64::MAX), []);
        assert_eq!(assign(WindowKind::Session { gap: 5 }, i64::MIN), [(i64::MIN, i64::MIN + 5)]);
    }

    #[test]
    fn misuse_is_explained() {
        let err = |q: &str| rewrite(q).unwrap_err().to_string();
        assert!(
            err("SELECT tumble(ts, INTERVAL '1' MINUTE) FROM t").contains("only supported in the GROUP BY")
        );
        assert!(err("SELECT 1 FROM t GROUP BY tumble(ts)").contains("takes 2 arguments"));
        assert!(err("SELECT 1 FROM t GROUP BY tumble(ts, 5)").contains("positive INTERVAL"));
        assert!(
            err("SELECT 1 FROM t GROUP BY hop(ts, INTERVAL '2' SECOND, INTERVAL '5' SECOND)")
                .contains("multiple of the slide")
        );
        assert!(
            err("SELECT 1 FROM t GROUP BY tumble(ts + 1, INTERVAL '1' SECOND)").contains("must be a column")
        );
        assert!(
            err("SELECT 1 FROM t GROUP BY tumble(t.ts + 1.5, INTERVAL '1' SECOND)")
                .contains("must be a column")
        );
        let hop = "hop(ts, INTERVAL '1' MILLISECOND, INTERVAL '1' HOUR)";
        assert!(
            err(&format!("SELECT 1 FROM t GROUP BY {hop}"))
                .contains(&format!("{hop}: every row would be in 3600000 windows")),
            "{}",
            err(&format!("SELECT 1 FROM t GROUP BY {hop}"))
        );
        // At the limit, and above.
        rewrite("SELECT 1 FROM t GROUP BY hop(ts, INTERVAL '1' SECOND, INTERVAL '10000' SECOND)").unwrap();
        assert!(
            err("SELECT 1 FROM t GROUP BY hop(ts, INTERVAL '1' SECOND, INTERVAL '10001' SECOND)")
                .contains("10001 windows")
        );
        assert!(
            err("SELECT 1 FROM (SELECT 1 FROM t GROUP BY tumble(ts, INTERVAL '1' SECOND))")
                .contains("outermost")
        );
    }
}
