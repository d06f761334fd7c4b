//! Prometheus' text format, parsed for tests: every sample of a scrape by name and label set.

use std::collections::BTreeMap;

/// A label set: names to values.
pub type Labels = BTreeMap<String, String>;

/// The samples of one scrape, by metric name and label set.
#[derive(Debug)]
pub struct Scrape {
    samples: BTreeMap<(String, Labels), f64>,
    /// The text parsed, printed when a series is missing.
    pub text: String,
}

impl Scrape {
    /// Parses `text` (the body of `GET /metrics`); fails on a malformed line and on a series
    /// that appears twice.
    pub fn parse(text: impl Into<String>) -> Scrape {
        let text = text.into();
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    (name, labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}")))
                }
                None => (series, ""),
            };
            let labels: Labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("bad label {l}: {line}"));
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(
                samples.insert((name.to_owned(), labels), value).is_none(),
                "series twice: {line}\n{text}"
            );
        }
        Scrape { samples, text }
    }

    /// The value of the series `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// As [`Scrape::get`], failing if the series is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }

    /// The series of `name` whose labels include all of `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(&Labels, f64)> {
        self.samples
            .iter()
            .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
            .map(|((_, l), v)| (l, *v))
            .collect()
    }

    /// The sum of [`Scrape::series`]; `None` if there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = self.series(name, labels);
        (!series.is_empty()).then(|| series.iter().map(|(_, v)| v).sum())
    }

    /// Whether any series of `name` has label `key` = `value`.
    pub fn any(&self, name: &str, key: &str, value: &str) -> bool {
        !self.series(name, &[(key, value)]).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_exact_labels_and_summed_by_some() {
        let s = Scrape::parse(
            "# HELP x a help\n# TYPE x counter\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4.5\ny 7\n",
        );
        assert_eq!(s.get("x", &[("a", "1"), ("b", "2")]), Some(3.0));
        assert_eq!(s.get("x", &[("a", "1")]), None, "exact labels only");
        assert_eq!(s.sum("x", &[("a", "1")]), Some(7.5));
        assert_eq!(s.sum("x", &[("a", "2")]), None);
        assert_eq!(s.value("y", &[]), 7.0);
        assert!(s.any("x", "b", "3") && !s.any("x", "b", "4"));
    }

    #[test]
    #[should_panic(expected = "series twice")]
    fn a_series_twice_fails() {
        Scrape::parse("x 1\nx 2\n");
    }
}
