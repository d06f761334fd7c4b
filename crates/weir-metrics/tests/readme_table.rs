//! The README's metrics table is the catalog's: regenerate it with
//! `WEIR_UPDATE_README=1 cargo test -p weir-metrics --test readme_table`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

const START: &str = "<!-- metrics-table:start -->\n";
const END: &str = "<!-- metrics-table:end -->";

#[test]
fn readme_lists_every_metric_of_the_catalog() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme.find(START).expect("README has the metrics-table start marker") + START.len();
    let end = readme[start..].find(END).expect("README has the metrics-table end marker") + start;
    let table = weir_metrics::catalog::markdown_table();
    if std::env::var_os("WEIR_UPDATE_README").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &readme[..start], &readme[end..])).unwrap();
        return;
    }
    assert!(
        readme[start..end] == table,
        "the README's metrics table is stale; run WEIR_UPDATE_README=1 cargo test -p weir-metrics --test readme_table"
    );
}
