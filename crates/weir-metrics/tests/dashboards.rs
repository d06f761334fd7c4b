//! The Grafana dashboards in `dashboards/` against the metric catalog.
//!
//! For each dashboard: Grafana's conventions (stable uid, the `datasource` variable everywhere and
//! no hard-coded data source uid, the template variables, a title, description and unit on every
//! panel) and, for every PromQL expression, what the catalog says about its metrics: the name
//! exists; histograms only as `_bucket` / `_sum` / `_count`; counters only inside `rate()` or
//! `increase()`; gauges never there; `$__rate_interval` as the only range; only labels the metric
//! has; the `job` / `instance` / dashboard variables as filters; legend labels that survive the
//! aggregation. Then every catalog metric must be on a dashboard (or listed, with a reason, in
//! [`NOT_ON_A_DASHBOARD`]). `mistakes_are_caught` breaks the dashboards in memory, one mistake at a
//! time, and checks that each is reported.
//!
//! `dashboards/test.sh` runs the same queries against a real Prometheus scraping the demo.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};
use weir_metrics::catalog::{self, CATALOG, Kind, MetricInfo};

/// A dashboard file, its uid and its template variables (besides `datasource`), in order.
struct Spec {
    file: &'static str,
    uid: &'static str,
    variables: &'static [&'static str],
}

const DASHBOARDS: &[Spec] = &[
    Spec { file: "weir-overview.json", uid: "weir-overview", variables: &["job", "instance", "pipeline"] },
    Spec { file: "weir-log.json", uid: "weir-log", variables: &["job", "instance", "topic", "group"] },
];

/// Catalog metrics no panel shows, each with the reason.
const NOT_ON_A_DASHBOARD: &[(&str, &str)] = &[];

/// Counters a panel shows as they are, not inside `rate()` / `increase()`, each with the reason.
const RAW_COUNTERS: &[(&str, &str)] = &[(
    "weir_log_recovery_truncations_total",
    "truncations happen while the log opens, before the first scrape: the series starts at its \
     final value and rate()/increase() never see them; the count since the process started is \
     what matters",
)];

/// Units a panel may use (Grafana's unit ids).
const UNITS: &[&str] = &["s", "ms", "bytes", "Bps", "ops", "short", "percentunit", "none"];

/// Functions that take a range vector.
const RANGE_FUNCTIONS: &[&str] =
    &["rate", "increase", "irate", "deriv", "delta", "idelta", "changes", "resets"];

/// PromQL words that are neither metrics nor functions (aggregations can be followed by `by`).
const KEYWORDS: &[&str] = &[
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "bool",
    "offset", "and", "or", "unless", "inf", "nan", "Inf", "NaN",
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The data source every panel, target and variable query names.
fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dashboards")
}

fn load_text(spec: &Spec) -> String {
    let path = dashboards_dir().join(spec.file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(text: &str, spec: &Spec) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", spec.file))
}

// ---- A small PromQL tokenizer --------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A metric, function, keyword or label name.
    Ident(String),
    /// A quoted string, without its quotes.
    Str(String),
    /// A number.
    Num(String),
    /// The inside of `[...]`.
    Range(String),
    /// An operator or punctuation.
    Punct(String),
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let take_while = |i: &mut usize, f: &dyn Fn(char) -> bool| {
        let start = *i;
        while *i < chars.len() && f(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated string in `{expr}`")),
                    Some('\\') if c != '`' => {
                        s.extend(chars.get(i + 1));
                        i += 2;
                    }
                    Some(&d) if d == c => break,
                    Some(&d) => {
                        s.push(d);
                        i += 1;
                    }
                }
            }
            i += 1;
            toks.push(Tok::Str(s));
        } else if c == '[' {
            i += 1;
            let r = take_while(&mut i, &|d| d != ']');
            if i == chars.len() {
                return Err(format!("unterminated range in `{expr}`"));
            }
            i += 1;
            toks.push(Tok::Range(r.trim().to_owned()));
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            i += 1;
            let rest = take_while(&mut i, &|d| d.is_ascii_alphanumeric() || d == '_' || d == ':');
            toks.push(Tok::Ident(format!("{c}{rest}")));
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            toks.push(Tok::Num(take_while(&mut i, &|d| d.is_ascii_alphanumeric() || d == '.')));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["=~", "!~", "!=", "==", ">=", "<="].contains(&two.as_str()) {
                toks.push(Tok::Punct(two));
                i += 2;
            } else {
                toks.push(Tok::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(toks)
}

/// One `metric{label op "value", ...}[range]`.
#[derive(Debug)]
struct Selector {
    name: String,
    /// The function it is the direct argument of (`rate` in `rate(x[1m])`).
    function: Option<String>,
    matchers: Vec<(String, String, String)>,
    range: Option<String>,
}

/// What an expression refers to.
#[derive(Debug, Default)]
struct Parsed {
    selectors: Vec<Selector>,
    /// Label lists of `by (...)`.
    by: Vec<Vec<String>>,
    /// Labels of `without`, `on`, `ignoring`, `group_left`, `group_right`.
    other_grouping: Vec<String>,
    /// Functions called.
    functions: Vec<String>,
    /// Ranges not attached to a selector (subqueries).
    loose_ranges: Vec<String>,
}

fn is_punct(t: Option<&Tok>, p: &str) -> bool {
    matches!(t, Some(Tok::Punct(q)) if q == p)
}

fn parse_expr(expr: &str) -> Result<Parsed, String> {
    let toks = lex(expr)?;
    let mut out = Parsed::default();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(name) if name.starts_with("weir_") => {
                let function = match (i.checked_sub(2).map(|j| &toks[j]), i.checked_sub(1).map(|j| &toks[j]))
                {
                    (Some(Tok::Ident(f)), Some(Tok::Punct(p))) if p == "(" => Some(f.clone()),
                    _ => None,
                };
                let mut sel = Selector { name: name.clone(), function, matchers: Vec::new(), range: None };
                i += 1;
                if is_punct(toks.get(i), "{") {
                    i += 1;
                    loop {
                        if is_punct(toks.get(i), "}") {
                            i += 1;
                            break;
                        }
                        match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                            (Some(Tok::Ident(l)), Some(Tok::Punct(op)), Some(Tok::Str(v)))
                                if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
                            {
                                sel.matchers.push((l.clone(), op.clone(), v.clone()));
                                i += 3;
                            }
                            _ => return Err(format!("bad label matcher after `{name}` in `{expr}`")),
                        }
                        if is_punct(toks.get(i), ",") {
                            i += 1;
                        } else if !is_punct(toks.get(i), "}") {
                            return Err(format!(
                                "expected `,` or `}}` in the selector of `{name}` in `{expr}`"
                            ));
                        }
                    }
                }
                if let Some(Tok::Range(r)) = toks.get(i) {
                    sel.range = Some(r.clone());
                    i += 1;
                }
                out.selectors.push(sel);
            }
            Tok::Ident(kw)
                if ["by", "without", "on", "ignoring", "group_left", "group_right"]
                    .contains(&kw.as_str())
                    && is_punct(toks.get(i + 1), "(") =>
            {
                i += 2;
                let mut labels = Vec::new();
                while let Some(t) = toks.get(i) {
                    i += 1;
                    match t {
                        Tok::Ident(l) => labels.push(l.clone()),
                        Tok::Punct(p) if p == "," => {}
                        Tok::Punct(p) if p == ")" => break,
                        _ => return Err(format!("bad label list after `{kw}` in `{expr}`")),
                    }
                }
                if kw == "by" {
                    out.by.push(labels);
                } else {
                    out.other_grouping.extend(labels);
                }
            }
            Tok::Ident(f) if is_punct(toks.get(i + 1), "(") => {
                out.functions.push(f.clone());
                i += 1;
            }
            Tok::Punct(p) if p == "{" => return Err(format!("a selector without a metric name in `{expr}`")),
            Tok::Ident(word) if !KEYWORDS.contains(&word.as_str()) => {
                return Err(format!("`{word}` is not a weir_ metric, a function or a keyword (in `{expr}`)"));
            }
            Tok::Range(r) => {
                out.loose_ranges.push(r.clone());
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// The labels of `{{label}}` in a legend format.
fn legend_labels(legend: &str) -> Vec<String> {
    legend.split("{{").skip(1).filter_map(|s| s.split_once("}}")).map(|(l, _)| l.trim().to_owned()).collect()
}

// ---- The checks -----------------------------------------------------------------------------

/// What checking one dashboard found.
#[derive(Debug, Default)]
struct Report {
    problems: Vec<String>,
    /// Catalog names (histograms by their base name) panel expressions use.
    used: BTreeSet<&'static str>,
}

/// Where a query is: a panel target or a template variable's query.
enum Place<'a> {
    /// A panel target: filters by every dashboard variable.
    Panel,
    /// Variable `name`'s query: filters by the variables before it.
    Variable { earlier: &'a [&'a str] },
}

/// Checks one selector against the catalog and the filters it must carry.
fn check_selector(
    sel: &Selector,
    place: &Place<'_>,
    spec: &Spec,
    problems: &mut Vec<String>,
) -> Option<&'static MetricInfo> {
    let name = sel.name.as_str();
    let Some(info) = catalog::lookup(name) else {
        problems.push(format!("`{name}` is not in the catalog"));
        return None;
    };
    let series_of_histogram = info.kind == Kind::Histogram;
    if series_of_histogram && name == info.name {
        problems.push(format!("histogram `{name}` used without `_bucket`, `_sum` or `_count`"));
    }
    let in_range_function = sel.function.as_deref().is_some_and(|f| RANGE_FUNCTIONS.contains(&f));
    let counts = info.kind == Kind::Counter || series_of_histogram;
    let rate_or_increase = matches!(sel.function.as_deref(), Some("rate" | "increase"));
    if let Place::Panel = place {
        if counts && !rate_or_increase && !RAW_COUNTERS.iter().any(|(n, _)| *n == name) {
            problems.push(format!("counter series `{name}` outside rate()/increase()"));
        }
        if info.kind == Kind::Gauge && matches!(sel.function.as_deref(), Some("rate" | "increase" | "irate"))
        {
            problems.push(format!("gauge `{name}` inside {}()", sel.function.as_deref().unwrap_or_default()));
        }
    }
    match (&sel.range, in_range_function) {
        (Some(r), true) if r == "$__rate_interval" => {}
        (Some(r), _) => problems.push(format!("`{name}[{r}]`: the range must be `$__rate_interval`")),
        (None, true) => problems.push(format!("`{name}` in a range function without a range")),
        (None, false) => {}
    }
    for (label, _, _) in &sel.matchers {
        let known = info.labels.contains(&label.as_str())
            || TARGET_LABELS.contains(&label.as_str())
            || (label == "le" && name.ends_with("_bucket"));
        if !known {
            problems.push(format!("`{name}` has no label `{label}` (it has {:?})", info.labels));
        }
    }
    let filters: Vec<&str> = match place {
        Place::Panel => spec.variables.to_vec(),
        Place::Variable { earlier } => earlier.to_vec(),
    };
    for var in filters {
        if !(TARGET_LABELS.contains(&var) || info.labels.contains(&var)) {
            continue;
        }
        let value = format!("${var}");
        if !sel.matchers.iter().any(|(l, op, v)| l == var && op == "=~" && *v == value) {
            problems.push(format!("`{name}` is not filtered by {var}=~\"{value}\""));
        }
    }
    Some(info)
}

/// Checks one panel expression and its legend; returns the catalog names it uses.
fn check_panel_query(expr: &str, legend: &str, spec: &Spec, problems: &mut Vec<String>) -> Vec<&'static str> {
    let parsed = match parse_expr(expr) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e);
            return Vec::new();
        }
    };
    if parsed.selectors.is_empty() {
        problems.push("no weir_ metric in the expression".to_owned());
    }
    let mut used = Vec::new();
    let mut labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    for sel in &parsed.selectors {
        if let Some(info) = check_selector(sel, &Place::Panel, spec, problems) {
            used.push(info.name);
            labels.extend(info.labels.iter().copied());
            if sel.name.ends_with("_bucket") {
                labels.insert("le");
                if !parsed.functions.iter().any(|f| f == "histogram_quantile") {
                    problems.push(format!("`{}` outside histogram_quantile()", sel.name));
                }
                if parsed.by.is_empty() || parsed.by.iter().any(|b| !b.iter().any(|l| l == "le")) {
                    problems.push(format!("`{}`: aggregate by (le, ...) for histogram_quantile()", sel.name));
                }
            }
        }
    }
    for f in &parsed.functions {
        if RANGE_FUNCTIONS.contains(&f.as_str())
            && parsed.selectors.iter().all(|s| s.function.as_ref() != Some(f))
        {
            problems.push(format!("{f}() whose argument is not a weir_ selector with a range"));
        }
    }
    for r in &parsed.loose_ranges {
        problems.push(format!("range `[{r}]` outside a selector"));
    }
    for l in parsed.by.iter().flatten().chain(&parsed.other_grouping) {
        if !labels.contains(l.as_str()) {
            problems.push(format!("grouping label `{l}` is on none of the expression's metrics"));
        }
    }
    for l in legend_labels(legend) {
        let kept = if parsed.by.is_empty() {
            labels.contains(l.as_str())
        } else {
            parsed.by.iter().all(|b| b.contains(&l))
        };
        if !kept {
            problems.push(format!("legend label `{l}` is not in the result's labels"));
        }
    }
    used
}

/// A template variable's query: `label_values(selector, label)`.
fn check_variable_query(query: &str, name: &str, earlier: &[&str], spec: &Spec, problems: &mut Vec<String>) {
    let Some(inner) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) else {
        problems.push(format!("variable `{name}`: query `{query}` is not label_values(metric, label)"));
        return;
    };
    let Some((selector, label)) = inner.rsplit_once(',') else {
        problems.push(format!("variable `{name}`: `{query}` needs a metric and a label"));
        return;
    };
    let label = label.trim();
    if label != name {
        problems.push(format!("variable `{name}` lists the values of `{label}`"));
    }
    let parsed = match parse_expr(selector) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("variable `{name}`: {e}"));
            return;
        }
    };
    let [sel] = parsed.selectors.as_slice() else {
        problems.push(format!("variable `{name}`: `{query}` needs exactly one weir_ metric"));
        return;
    };
    let mut ps = Vec::new();
    if let Some(info) = check_selector(sel, &Place::Variable { earlier }, spec, &mut ps)
        && !(info.labels.contains(&label) || TARGET_LABELS.contains(&label))
    {
        ps.push(format!("`{}` has no label `{label}`", sel.name));
    }
    problems.extend(ps.into_iter().map(|p| format!("variable `{name}`: {p}")));
}

/// Every object under `v` with a `datasource` or (below the top) a `uid`.
fn check_datasources(v: &Value, path: &str, top: bool, problems: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let here = format!("{path}.{k}");
                if k == "datasource" && x.is_object() && *x != datasource() {
                    problems.push(format!("{here}: datasource {x}, not the ${{datasource}} variable"));
                }
                if k == "uid" && !top && x != "${datasource}" {
                    problems.push(format!("{here}: hard-coded uid {x}"));
                }
                check_datasources(x, &here, false, problems);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                check_datasources(x, &format!("{path}[{i}]"), false, problems);
            }
        }
        _ => {}
    }
}

/// Panels, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = d["panels"].as_array().map(|a| a.iter().rev().collect()).unwrap_or_default();
    while let Some(p) = stack.pop() {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested.iter().rev());
        }
    }
    out
}

fn non_empty_str(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.trim().is_empty())
}

fn check_dashboard(d: &Value, spec: &Spec) -> Report {
    let mut r = Report::default();
    let p = &mut r.problems;

    // The dashboard.
    if d["uid"] != spec.uid {
        p.push(format!("uid is {}, not {}", d["uid"], spec.uid));
    }
    if !d["schemaVersion"].as_u64().is_some_and(|v| (36..=41).contains(&v)) {
        p.push(format!("schemaVersion {} (expected about 39)", d["schemaVersion"]));
    }
    if !d["id"].is_null() {
        p.push("id must be null (Grafana assigns it)".to_owned());
    }
    for key in ["title", "description"] {
        if !non_empty_str(&d[key]) {
            p.push(format!("the dashboard has no {key}"));
        }
    }
    check_datasources(d, "", true, p);

    // Template variables.
    let vars: Vec<&Value> =
        d["templating"]["list"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    let mut expected = vec!["datasource"];
    expected.extend(spec.variables);
    if names != expected {
        p.push(format!("template variables are {names:?}, expected {expected:?}"));
    }
    for v in &vars {
        let name = v["name"].as_str().unwrap_or_default();
        if name == "datasource" {
            if v["type"] != "datasource" || v["query"] != "prometheus" {
                p.push("variable `datasource` must be of type datasource, query prometheus".to_owned());
            }
            continue;
        }
        if v["type"] != "query" {
            p.push(format!("variable `{name}` is not a query variable"));
        }
        if v["datasource"] != datasource() {
            p.push(format!("variable `{name}`: its datasource is not the ${{datasource}} variable"));
        }
        let query = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
        if v["definition"].as_str().is_some_and(|def| def != query) {
            p.push(format!("variable `{name}`: definition and query differ"));
        }
        let at = spec.variables.iter().position(|x| *x == name).unwrap_or(0);
        check_variable_query(query, name, &spec.variables[..at], spec, p);
    }

    // Panels.
    let mut ids = BTreeSet::new();
    for panel in all_panels(d) {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let at = |msg: String| format!("panel `{title}`: {msg}");
        if !ids.insert(panel["id"].as_u64()) || panel["id"].as_u64().is_none() {
            p.push(at(format!("id {} missing or not unique", panel["id"])));
        }
        if !non_empty_str(&panel["title"]) {
            p.push(at("no title".to_owned()));
        }
        let g = &panel["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        if !(x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24)
            && h.is_some_and(|h| h > 0)
            && g["y"].is_u64())
        {
            p.push(at(format!("bad gridPos {g}")));
        }
        if panel["type"] == "row" {
            continue;
        }
        if !non_empty_str(&panel["description"]) {
            p.push(at("no description".to_owned()));
        }
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
        if !UNITS.contains(&unit) {
            p.push(at(format!("unit `{unit}` is not one of {UNITS:?}")));
        }
        if panel["datasource"] != datasource() {
            p.push(at("its datasource is not the ${datasource} variable".to_owned()));
        }
        let targets: Vec<&Value> =
            panel["targets"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        if targets.is_empty() {
            p.push(at("no targets".to_owned()));
        }
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            let ref_id = t["refId"].as_str().unwrap_or_default();
            if ref_id.is_empty() || !ref_ids.insert(ref_id) {
                p.push(at(format!("refId `{ref_id}` empty or repeated")));
            }
            if t["datasource"] != datasource() {
                p.push(at(format!("target {ref_id}: its datasource is not the ${{datasource}} variable")));
            }
            let expr = t["expr"].as_str().unwrap_or_default();
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            let mut ps = Vec::new();
            r.used.extend(check_panel_query(expr, legend, spec, &mut ps));
            p.extend(ps.into_iter().map(|e| at(format!("target {ref_id}: {e}"))));
        }
    }
    r
}

/// Catalog metrics no dashboard uses and that are not excused, and stale excuses.
fn check_coverage(used: &BTreeSet<&'static str>) -> Vec<String> {
    let mut problems = Vec::new();
    for m in CATALOG {
        let excused = NOT_ON_A_DASHBOARD.iter().any(|(n, _)| *n == m.name);
        match (used.contains(m.name), excused) {
            (false, false) => problems.push(format!("`{}` is on no dashboard", m.name)),
            (true, true) => {
                problems.push(format!("`{}` is on a dashboard: drop it from NOT_ON_A_DASHBOARD", m.name))
            }
            _ => {}
        }
    }
    for (n, reason) in NOT_ON_A_DASHBOARD.iter().chain(RAW_COUNTERS) {
        if catalog::lookup(n).is_none() || reason.is_empty() {
            problems.push(format!("exception `{n}`: not in the catalog, or no reason"));
        }
    }
    problems
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
}

// ---- Tests ----------------------------------------------------------------------------------

#[test]
fn dashboards_follow_the_catalog_and_grafana_conventions() {
    for spec in DASHBOARDS {
        let d = parse(&load_text(spec), spec);
        assert_no_problems(spec.file, &check_dashboard(&d, spec).problems);
    }
}

#[test]
fn every_catalog_metric_is_on_a_dashboard() {
    let mut used = BTreeSet::new();
    for spec in DASHBOARDS {
        used.extend(check_dashboard(&parse(&load_text(spec), spec), spec).used);
    }
    assert_no_problems("catalog coverage", &check_coverage(&used));
}

#[test]
fn the_tokenizer_reads_selectors_ranges_and_grouping() {
    let p = parse_expr(
        r#"histogram_quantile(0.99, sum by (pipeline, le) (rate(weir_x_bucket{job=~"$job", a!="}{,"}[$__rate_interval])))"#,
    )
    .unwrap();
    assert_eq!(p.selectors.len(), 1);
    let s = &p.selectors[0];
    assert_eq!(
        (s.name.as_str(), s.function.as_deref(), s.range.as_deref()),
        ("weir_x_bucket", Some("rate"), Some("$__rate_interval"))
    );
    assert_eq!(s.matchers[1], ("a".to_owned(), "!=".to_owned(), "}{,".to_owned()));
    assert_eq!(p.by, vec![vec!["pipeline".to_owned(), "le".to_owned()]]);
    assert_eq!(p.functions, ["histogram_quantile", "rate"]);
    // Names in strings are not metrics; an unterminated string is an error.
    assert_eq!(parse_expr(r#"weir_x{job="weir_nope"}"#).unwrap().selectors.len(), 1);
    assert!(parse_expr(r#"up{job="weir"}"#).unwrap_err().contains("`up` is not a weir_ metric"));
    assert!(parse_expr("sum(weir_x) by (job) > bool 0").is_ok());
    assert!(parse_expr(r#"weir_x{job="a}"#).is_err());
    assert_eq!(legend_labels("{{pipeline}} / {{ operator }} p99"), ["pipeline", "operator"]);
}

/// A mistake made in a dashboard's text (every occurrence of `from` becomes `to`), and what the
/// report must say.
struct Mistake {
    file: &'static str,
    from: &'static str,
    to: &'static str,
    expect: &'static str,
}

const fn mistake(file: &'static str, from: &'static str, to: &'static str, expect: &'static str) -> Mistake {
    Mistake { file, from, to, expect }
}

const OV: &str = "weir-overview.json";
const LOG: &str = "weir-log.json";

/// One of each mistake the checks exist for; each must be reported.
const MISTAKES: &[Mistake] = &[
    mistake(OV, r#""uid": "weir-overview""#, r#""uid": "weir-overview-2""#, "uid is"),
    mistake(OV, r#""id": null"#, r#""id": 7"#, "id must be null"),
    mistake(
        OV,
        r#""description": "Weir pipelines:"#,
        r#""summary": "Weir pipelines:"#,
        "dashboard has no description",
    ),
    mistake(OV, r#""id": 3,"#, r#""id": 2,"#, "not unique"),
    mistake(LOG, r#""targets": ["#, r#""queries": ["#, "no targets"),
    mistake(OV, r#""schemaVersion": 39"#, r#""schemaVersion": 16"#, "schemaVersion"),
    mistake(OV, r#""unit": "ops""#, r#""unit": "records""#, "unit `records`"),
    mistake(OV, r#""unit": "s","#, "", "unit ``"),
    mistake(OV, r#""description": "Records each"#, r#""descr": "Records each"#, "no description"),
    mistake(OV, r#""title": "Records in per operator""#, r#""title": """#, "no title"),
    mistake(OV, r#""w": 8, "x": 16"#, r#""w": 12, "x": 16"#, "bad gridPos"),
    mistake(OV, r#""refId": "B""#, r#""refId": "A""#, "repeated"),
    mistake(
        OV,
        r#""datasource": {"type": "prometheus", "uid": "${datasource}"},
      "description""#,
        r#""datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"},
      "description""#,
        "hard-coded uid",
    ),
    mistake(
        OV,
        r#""datasource": {"type": "prometheus", "uid": "${datasource}"},
          "editorMode""#,
        r#""editorMode""#,
        "target A: its datasource is not",
    ),
    mistake(
        LOG,
        r#""datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition""#,
        r#""definition""#,
        "variable `job`: its datasource is not",
    ),
    mistake(OV, "weir_operator_records_in_total{job", "weir_operator_records_in{job", "not in the catalog"),
    mistake(
        OV,
        "rate(weir_pipeline_end_to_end_latency_seconds_bucket{",
        "rate(weir_pipeline_end_to_end_latency_seconds{",
        "without `_bucket`",
    ),
    mistake(
        OV,
        "sum by (pipeline, le) (rate(weir_pipeline_event_time_lag_seconds_bucket",
        "sum by (pipeline) (rate(weir_pipeline_event_time_lag_seconds_bucket",
        "by (le",
    ),
    mistake(
        OV,
        r#"(rate(weir_operator_records_out_total{job=~\"$job\", instance=~\"$instance\", pipeline=~\"$pipeline\"}[$__rate_interval]))"#,
        r#"(weir_operator_records_out_total{job=~\"$job\", instance=~\"$instance\", pipeline=~\"$pipeline\"})"#,
        "outside rate()/increase()",
    ),
    mistake(
        OV,
        r#"(weir_keyed_state_keys{job=~\"$job\", instance=~\"$instance\", pipeline=~\"$pipeline\"})"#,
        r#"(rate(weir_keyed_state_keys{job=~\"$job\", instance=~\"$instance\", pipeline=~\"$pipeline\"}[$__rate_interval]))"#,
        "gauge `weir_keyed_state_keys` inside rate()",
    ),
    mistake(OV, "[$__rate_interval]", "[5m]", "must be `$__rate_interval`"),
    mistake(LOG, r#"topic=~\"$topic\"}[$__rate_interval]))"#, r#"topic=~\"$topic\"}))"#, "without a range"),
    mistake(OV, "(rate(weir_window_fired_total", "(rate(-weir_window_fired_total", "whose argument is not"),
    mistake(OV, "time() - min", "time()[1m:] - min", "range `[1m:]` outside a selector"),
    mistake(
        OV,
        "histogram_quantile(0.99, sum by (pipeline, operator, le)",
        "max(sum by (pipeline, operator, le)",
        "outside histogram_quantile()",
    ),
    mistake(
        OV,
        r#""expr": "time() - min by (pipeline, operator) (weir_operator_watermark_timestamp_seconds{job=~\"$job\", instance=~\"$instance\", pipeline=~\"$pipeline\"} > 0)""#,
        r#""expr": "time()""#,
        "no weir_ metric",
    ),
    mistake(OV, r#", reason=\"late\"}"#, r#", cause=\"late\"}"#, "no label `cause`"),
    mistake(
        OV,
        "(rate(weir_window_fired_total",
        "(rate(up + weir_window_fired_total",
        "`up` is not a weir_ metric",
    ),
    mistake(
        OV,
        r#"weir_window_fired_total{job=~\"$job\", "#,
        "weir_window_fired_total{",
        "not filtered by job",
    ),
    mistake(
        OV,
        r#"weir_window_open_windows{job=~\"$job\", instance=~\"$instance\", pipeline=~\"$pipeline\"}"#,
        r#"weir_window_open_windows{job=~\"$job\", instance=~\"$instance\"}"#,
        "not filtered by pipeline",
    ),
    mistake(
        OV,
        r#""legendFormat": "{{pipeline}} / {{operator}}""#,
        r#""legendFormat": "{{op}}""#,
        "legend label `op`",
    ),
    mistake(
        OV,
        "sum by (pipeline, operator) (rate(",
        "sum by (pipeline, operatr) (rate(",
        "grouping label `operatr`",
    ),
    mistake(OV, r#""name": "pipeline""#, r#""name": "pipelines""#, "template variables are"),
    mistake(
        OV,
        "weir_operator_records_in_total, job)",
        "weir_operator_records_in_total, jobs)",
        "lists the values of",
    ),
    mistake(
        OV,
        r#"{job=~\"$job\", instance=~\"$instance\"}, pipeline)"#,
        r#"{job=~\"$job\"}, pipeline)"#,
        "variable `pipeline`: `weir_operator_records_in_total` is not filtered by instance",
    ),
    mistake(LOG, r#"topic=~\"$topic\"}, group)"#, r#"topic=~\"$topic\"}, grp)"#, "no label `grp`"),
    mistake(LOG, r#""query": "prometheus""#, r#""query": "loki""#, "type datasource, query prometheus"),
    mistake(LOG, r#""type": "query""#, r#""type": "custom""#, "not a query variable"),
    mistake(
        LOG,
        "label_values(weir_log_end_offset, job)",
        "query_result(weir_log_end_offset)",
        "is not label_values",
    ),
    mistake(
        LOG,
        r#"weir_consumer_group_lag{job=~\"$job\", instance=~\"$instance\", group=~\"$group\", "#,
        r#"weir_consumer_group_lag{job=~\"$job\", instance=~\"$instance\", "#,
        "not filtered by group",
    ),
];

#[test]
fn mistakes_are_caught() {
    let mut missed = Vec::new();
    for m in MISTAKES {
        let spec = DASHBOARDS.iter().find(|s| s.file == m.file).unwrap();
        let text = load_text(spec);
        assert!(text.contains(m.from), "mistake `{}`: `{}` is not in {}", m.expect, m.from, m.file);
        let broken = parse(&text.replace(m.from, m.to), spec);
        let problems = check_dashboard(&broken, spec).problems;
        if !problems.iter().any(|p| p.contains(m.expect)) {
            let got = &problems[..problems.len().min(3)];
            missed.push(format!("{} → {}: expected `{}`, got {got:?}", m.from, m.to, m.expect));
        }
    }
    assert_no_problems("mistakes not caught", &missed);

    // A catalog metric on no dashboard.
    let mut used = BTreeSet::new();
    for spec in DASHBOARDS {
        used.extend(check_dashboard(&parse(&load_text(spec), spec), spec).used);
    }
    used.remove("weir_keyed_state_bytes");
    let problems = check_coverage(&used);
    assert!(
        problems.iter().any(|p| p.contains("`weir_keyed_state_bytes` is on no dashboard")),
        "{problems:?}"
    );
}
