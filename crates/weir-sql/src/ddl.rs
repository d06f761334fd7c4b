//! Weir's statements around standard SQL: `CREATE SOURCE` and `CREATE SINK`.
//!
//! ```sql
//! CREATE SOURCE access (ts_ms BIGINT, ip TEXT, status INT, latency_ms DOUBLE,
//!                       ts AS to_timestamp_millis(ts_ms),
//!                       WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
//!   WITH (connector = 'log', topic = 'access', format = 'json');
//! CREATE SINK per_status WITH (connector = 'file', path = 'out/per_status', format = 'jsonl') AS
//! SELECT ...;
//! ```
//!
//! A script is split into statements at top-level semicolons (not inside quotes, comments or
//! parentheses). Column items are `name TYPE`, `name AS expression` (computed from the others,
//! in any DataFusion expression) or one `WATERMARK FOR column AS column - INTERVAL '…' unit`.
//! Options are `key = 'value'` pairs; keys are case-insensitive.

use std::collections::BTreeMap;

use crate::error::{Result, SqlError};

/// A `CREATE SOURCE` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDef {
    /// The table name queries use.
    pub name: String,
    /// Columns read from the input, with their SQL types (as written).
    pub columns: Vec<(String, String)>,
    /// Columns computed from the others: name and SQL expression.
    pub computed: Vec<(String, String)>,
    /// The event-time column and how late records may be (ms).
    pub watermark: Option<(String, i64)>,
    /// `WITH (...)` options, keys lower-cased.
    pub options: BTreeMap<String, String>,
}

/// A `CREATE SINK` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkDef {
    /// The sink's name.
    pub name: String,
    /// `WITH (...)` options, keys lower-cased.
    pub options: BTreeMap<String, String>,
    /// The query whose results it writes.
    pub query: String,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE SOURCE`.
    Source(SourceDef),
    /// `CREATE SINK ... AS query`.
    Sink(SinkDef),
    /// `EXPLAIN query`.
    Explain(String),
    /// Any other statement: a query.
    Query(String),
}

/// Splits a script into statements and parses Weir's own.
///
/// # Errors
///
/// [`SqlError::Parse`] naming the statement and what is wrong.
pub fn parse_script(script: &str) -> Result<Vec<Statement>> {
    split_statements(script).into_iter().map(|s| parse_statement(&s)).collect()
}

/// Parses one statement.
pub fn parse_statement(stmt: &str) -> Result<Statement> {
    let s = stmt.trim();
    let upper = s.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().take(2).collect();
    match words.as_slice() {
        ["CREATE", "SOURCE", ..] => parse_source(after_words(s, 2)).map(Statement::Source),
        ["CREATE", "SINK", ..] => parse_sink(after_words(s, 2)).map(Statement::Sink),
        ["EXPLAIN", ..] => Ok(Statement::Explain(after_words(s, 1).trim().to_owned())),
        _ => Ok(Statement::Query(s.to_owned())),
    }
}

/// `s` after its first `n` whitespace-separated words.
fn after_words(s: &str, n: usize) -> &str {
    let mut rest = s.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

fn parse_error(what: impl Into<String>) -> SqlError {
    SqlError::Parse(what.into())
}

/// Splits at top-level `;`, skipping quotes, `--` and `/* */` comments; drops empty statements.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut depth = 0i32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            cur.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                cur.push(' ');
            }
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ';' if depth <= 0 => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// Splits at top-level commas (not inside parentheses or quotes).
pub(crate) fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '(') => {
                depth += 1;
                cur.push(c);
            }
            (None, ')') => {
                depth -= 1;
                cur.push(c);
            }
            (None, ',') if depth == 0 => out.push(std::mem::take(&mut cur).trim().to_owned()),
            (None, c) => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The text inside the parentheses that start `s`, and what follows them.
fn parenthesized(s: &str) -> Result<(&str, &str)> {
    let s = s.trim_start();
    if !s.starts_with('(') {
        return Err(parse_error(format!("expected '(' at {:?}", head(s))));
    }
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&s[1..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    Err(parse_error(format!("unbalanced parentheses in {:?}", head(s))))
}

fn head(s: &str) -> String {
    s.chars().take(40).collect()
}

/// An identifier at the start of `s` (optionally double-quoted) and the rest.
fn identifier(s: &str) -> Result<(String, &str)> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let end = rest.find('"').ok_or_else(|| parse_error("unterminated quoted identifier"))?;
        return Ok((rest[..end].to_owned(), &rest[end + 1..]));
    }
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    if end == 0 {
        return Err(parse_error(format!("expected a name at {:?}", head(s))));
    }
    Ok((s[..end].to_ascii_lowercase(), &s[end..]))
}

/// `WITH (k = 'v', ...)`.
fn parse_options(s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let s = s.trim_start();
    let upper = s.to_ascii_uppercase();
    if !upper.starts_with("WITH") {
        return Ok((BTreeMap::new(), s));
    }
    let (inner, rest) = parenthesized(&s[4..])?;
    let mut options = BTreeMap::new();
    for item in split_top_level(inner) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| parse_error(format!("option {item:?} is not key = 'value'")))?;
        let k = k.trim().trim_matches('\'').trim_matches('"').to_ascii_lowercase();
        let v = v.trim();
        let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v).replace("''", "'");
        if options.insert(k.clone(), v).is_some() {
            return Err(parse_error(format!("option {k:?} given twice")));
        }
    }
    Ok((options, rest))
}

fn parse_source(s: &str) -> Result<SourceDef> {
    let (name, rest) = identifier(s)?;
    let (columns_text, rest) = parenthesized(rest)?;
    let (options, rest) = parse_options(rest)?;
    if !rest.trim().is_empty() {
        return Err(parse_error(format!("CREATE SOURCE {name}: unexpected {:?}", head(rest.trim()))));
    }
    let mut def = SourceDef { name, columns: Vec::new(), computed: Vec::new(), watermark: None, options };
    for item in split_top_level(columns_text) {
        let upper = item.to_ascii_uppercase();
        if upper.split_whitespace().take(2).eq(["WATERMARK", "FOR"]) {
            if def.watermark.is_some() {
                return Err(parse_error(format!("CREATE SOURCE {}: more than one WATERMARK", def.name)));
            }
            def.watermark = Some(parse_watermark(&item)?);
            continue;
        }
        let (col, rest) = identifier(&item)?;
        let rest = rest.trim();
        if let Some(expr) = strip_as(rest) {
            def.computed.push((col, expr.trim().to_owned()));
        } else if rest.is_empty() {
            return Err(parse_error(format!("CREATE SOURCE {}: column {col} has no type", def.name)));
        } else {
            def.columns.push((col, rest.to_owned()));
        }
    }
    if let Some((col, _)) = &def.watermark
        && !def.columns.iter().chain(&def.computed).any(|(c, _)| c == col)
    {
        return Err(parse_error(format!("CREATE SOURCE {}: WATERMARK FOR {col}: no such column", def.name)));
    }
    Ok(def)
}

/// `WATERMARK FOR ts AS ts - INTERVAL '5' SECOND` (or `AS ts`: no disorder).
fn parse_watermark(item: &str) -> Result<(String, i64)> {
    let bad = || {
        parse_error(format!(
            "{item:?}: expected WATERMARK FOR column AS column - INTERVAL 'n' unit (or AS column)"
        ))
    };
    let rest = after_words(item, 2); // WATERMARK FOR
    let (col, rest) = identifier(rest)?;
    let rest = strip_as(rest).ok_or_else(bad)?;
    let (col2, rest) = identifier(rest)?;
    if col2 != col {
        return Err(parse_error(format!("{item:?}: the watermark must be {col} minus an interval")));
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok((col, 0));
    }
    let interval = rest.strip_prefix('-').ok_or_else(bad)?.trim();
    Ok((col, parse_interval_ms(interval).ok_or_else(bad)?))
}

/// An interval in ms, in any of DataFusion's forms: `INTERVAL '5' SECOND`, `INTERVAL 5 SECOND`,
/// `INTERVAL '5 seconds'`, or the bare string `'5 seconds'`.
pub fn parse_interval_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = match t.get(..8).filter(|p| p.eq_ignore_ascii_case("INTERVAL")) {
        Some(_) if t[8..].starts_with(|c: char| c.is_whitespace() || c == '\'') => t[8..].trim(),
        Some(_) => return None,
        None if t.starts_with('\'') => t,
        None => return None,
    };
    let (quoted, unit) = match t.strip_prefix('\'') {
        Some(rest) => {
            let end = rest.find('\'')?;
            (&rest[..end], rest[end + 1..].trim())
        }
        // `INTERVAL 5 SECOND`: an unquoted number, then the unit.
        None => {
            let end = t.find(char::is_whitespace)?;
            (&t[..end], t[end..].trim())
        }
    };
    let (number, unit) = if unit.is_empty() {
        let mut parts = quoted.split_whitespace();
        (parts.next()?, parts.next()?.to_owned())
    } else {
        (quoted.trim(), unit.to_owned())
    };
    let n: f64 = number.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let ms = match unit.trim_end_matches('s') {
        "millisecond" => 1.0,
        "second" => 1_000.0,
        "minute" => 60_000.0,
        "hour" => 3_600_000.0,
        "day" => 86_400_000.0,
        _ => return None,
    };
    let v = n * ms;
    (v.is_finite() && v >= 0.0).then_some(v.round() as i64)
}

/// Refuses an option of `options` that is not in `allowed` (the options of `what`, e.g. "a
/// file source"), naming it and the nearest allowed one.
///
/// # Errors
///
/// [`SqlError::Option`] for the first unknown option.
pub(crate) fn check_options(
    object: &str,
    what: &str,
    options: &BTreeMap<String, String>,
    allowed: &[&str],
) -> Result<()> {
    let Some(unknown) = options.keys().find(|k| !allowed.contains(&k.as_str())) else { return Ok(()) };
    let nearest = allowed
        .iter()
        .map(|a| (edit_distance(unknown, a), *a))
        .min()
        .filter(|(d, _)| *d <= 2.max(unknown.chars().count() / 3));
    let hint = match nearest {
        Some((_, a)) => format!("did you mean {a}? "),
        None => String::new(),
    };
    Err(SqlError::Option {
        object: object.to_owned(),
        field: unknown.clone(),
        reason: format!("unknown option; {hint}{what} takes {}", allowed.join(", ")),
    })
}

/// The edit distance between `a` and `b`, counting a swap of two neighbours as one edit
/// (`hedaer` is one edit from `header`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `s` after a leading keyword `AS` followed by whitespace.
fn strip_as(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let rest = s.get(..2).filter(|k| k.eq_ignore_ascii_case("AS")).map(|_| &s[2..])?;
    rest.starts_with(char::is_whitespace).then_some(rest)
}

fn parse_sink(s: &str) -> Result<SinkDef> {
    let (name, rest) = identifier(s)?;
    let (options, rest) = parse_options(rest)?;
    let query = strip_as(rest)
        .ok_or_else(|| parse_error(format!("CREATE SINK {name}: expected WITH (...) AS SELECT ...")))?;
    Ok(SinkDef { name, options, query: query.trim().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_with_source_sink_and_query() {
        let script = r#"
            -- the access log; semicolons in 'strings;' and comments; are kept apart
            CREATE SOURCE access (ts_ms BIGINT, ip TEXT, path VARCHAR(200), status INT,
                                  ts AS to_timestamp_millis(ts_ms),
                                  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
              WITH (connector = 'log', Topic = 'access', format = 'json');
            /* a sink; */
            CREATE SINK per_status WITH (connector = 'file', path = 'out/x;y', format = 'jsonl') AS
            SELECT status, count(*) FROM access GROUP BY tumble(ts, INTERVAL '1' MINUTE), status;
            SELECT 'a;b' FROM access;
            EXPLAIN SELECT 1
        "#;
        let stmts = parse_script(script).unwrap();
        assert_eq!(stmts.len(), 4);
        let Statement::Source(src) = &stmts[0] else { panic!("{stmts:?}") };
        assert_eq!(src.name, "access");
        assert_eq!(
            src.columns,
            [("ts_ms", "BIGINT"), ("ip", "TEXT"), ("path", "VARCHAR(200)"), ("status", "INT")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(src.computed, [("ts".to_owned(), "to_timestamp_millis(ts_ms)".to_owned())]);
        assert_eq!(src.watermark, Some(("ts".to_owned(), 5_000)));
        assert_eq!(src.options.get("topic").map(String::as_str), Some("access"));
        let Statement::Sink(sink) = &stmts[1] else { panic!() };
        assert_eq!(sink.options.get("path").map(String::as_str), Some("out/x;y"));
        assert!(sink.query.starts_with("SELECT status"), "{}", sink.query);
        assert_eq!(stmts[2], Statement::Query("SELECT 'a;b' FROM access".into()));
        assert_eq!(stmts[3], Statement::Explain("SELECT 1".into()));
    }

    #[test]
    fn unknown_options_are_refused_naming_the_nearest() {
        let options = |k: &str| BTreeMap::from([(k.to_owned(), "x".to_owned())]);
        let allowed = ["connector", "path", "format", "follow", "header"];
        let err =
            |k: &str| check_options("s", "a file source", &options(k), &allowed).unwrap_err().to_string();
        assert_eq!(
            err("hedaer"),
            "s: option hedaer: unknown option; did you mean header? a file source takes connector, path, \
             format, follow, header"
        );
        assert!(err("follw").contains("did you mean follow?"), "{}", err("follw"));
        assert!(err("PATHS").contains("did you mean path?") || err("paths").contains("did you mean path?"));
        assert!(!err("compression").contains("did you mean"), "{}", err("compression"));
        check_options("s", "a file source", &options("header"), &allowed).unwrap();
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval_ms("INTERVAL '5' SECOND"), Some(5_000));
        assert_eq!(parse_interval_ms("interval '1' minute"), Some(60_000));
        assert_eq!(parse_interval_ms("INTERVAL '10 seconds'"), Some(10_000));
        assert_eq!(parse_interval_ms("INTERVAL '1.5' HOURS"), Some(5_400_000));
        assert_eq!(parse_interval_ms("INTERVAL '250' MILLISECOND"), Some(250));
        assert_eq!(parse_interval_ms("INTERVAL '1' FORTNIGHT"), None);
        assert_eq!(parse_interval_ms("5 SECONDS"), None);
        // DataFusion's other forms.
        assert_eq!(parse_interval_ms("INTERVAL 1 MINUTE"), Some(60_000));
        assert_eq!(parse_interval_ms("'1 minute'"), Some(60_000));
        assert_eq!(parse_interval_ms("'2 hours'"), Some(7_200_000));
        assert_eq!(parse_interval_ms("INTERVAL 1"), None);
        assert_eq!(parse_interval_ms("INTERVALS '1 minute'"), None);
    }

    #[test]
    fn mistakes_name_what_is_wrong() {
        let err = |s: &str| parse_statement(s).unwrap_err().to_string();
        assert!(
            err("CREATE SOURCE a (x INT, WATERMARK FOR y AS y)").contains("WATERMARK FOR y: no such column")
        );
        assert!(err("CREATE SOURCE a (x)").contains("column x has no type"));
        assert!(err("CREATE SOURCE a (x INT) WITH (k)").contains("not key = 'value'"));
        assert!(err("CREATE SOURCE a (x INT, WATERMARK FOR x AS x + 1)").contains("expected WATERMARK FOR"));
        assert!(err("CREATE SINK s WITH (a = 'b') SELECT 1").contains("expected WITH (...) AS SELECT"));
        let Ok(Statement::Source(s)) = parse_statement("CREATE SOURCE a (watermark_ms BIGINT)") else {
            panic!()
        };
        assert_eq!(s.columns, [("watermark_ms".to_owned(), "BIGINT".to_owned())]);
        assert!(err("CREATE SOURCE a (x INT").contains("unbalanced"));
    }
}
