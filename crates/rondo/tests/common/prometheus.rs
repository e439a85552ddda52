//! The Prometheus naming conventions (<https://prometheus.io/docs/practices/naming/>), checked
//! on a real `/metrics` scrape: the families a proxy exports depend on its upstreams (DNS names,
//! etcd), so each test that builds such a proxy checks its own scrape.

use std::collections::BTreeSet;

/// Checks every family declared and every sample of `text` (a `/metrics` body) against the
/// naming conventions, panicking at the first name that breaks one; returns the names of the
/// samples checked, so a caller can assert that the families it cares about were among them.
pub fn assert_names_follow_the_conventions(text: &str) -> BTreeSet<String> {
    let well_formed = |name: &str| {
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let mut declared = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').unwrap();
        assert!(
            declared.insert(family.to_owned()),
            "{family} declared twice"
        );
        assert!(
            family.starts_with("rondo_") || family.starts_with("process_"),
            "{family}: a namespace prefix"
        );
        assert!(well_formed(family), "{family}: snake_case ASCII");
        if kind == "histogram" {
            assert!(
                family.ends_with("_seconds") || family.ends_with("_bytes"),
                "{family}: a histogram names its base unit"
            );
        }
        // Units are base units, and come before `_total`.
        for bad in [
            "_milliseconds",
            "_microseconds",
            "_kilobytes",
            "_megabytes",
            "_total_",
        ] {
            assert!(!family.contains(bad), "{family}: {bad}");
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut names = BTreeSet::new();
    for sample in &scrape.samples {
        let name = sample.metric.as_str();
        assert!(well_formed(name), "{name}: snake_case ASCII");
        let is_counter = matches!(sample.value, prometheus_parse::Value::Counter(_));
        assert_eq!(
            is_counter,
            name.ends_with("_total"),
            "{name}: `_total` on counters and only on counters"
        );
        // The family a sample belongs to: its name, or its name less the suffix the type
        // adds (`_total` on counters, `_info` on info, a histogram's parts).
        let family = [
            "", "_total", "_info", "_bucket", "_sum", "_count", "_created",
        ]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|f| declared.contains(*f));
        assert!(
            family.is_some_and(|f| scrape.docs.contains_key(f)),
            "{name}: its family has TYPE and HELP"
        );
        names.insert(name.to_owned());
    }
    names
}
