//! `/metrics` of the real binary: every `sigsci_proxy_*` family has `# HELP` and `# TYPE`,
//! closed label sets are on the page at 0 from start-up, calls with no agent are counted as uninspected, and every metric the monitoring component's
//! alert rules and dashboard use is one the proxy exports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::process::ProxyProcess;
use crate::support::*;

/// `# TYPE` of each `sigsci_proxy_*` family on the page, and the families with a `# HELP`.
fn families(page: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for line in page.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name)) if name.starts_with("sigsci_proxy_") => {
                types.insert(name.to_owned(), words.next().unwrap_or("").to_owned());
            }
            (Some("#"), Some("HELP"), Some(name)) if name.starts_with("sigsci_proxy_") => {
                assert!(words.next().is_some(), "empty HELP for {name}");
                helps.insert(name.to_owned());
            }
            _ => {}
        }
    }
    (types, helps)
}

/// The family a sample line belongs to (histogram series carry a suffix).
fn sample_families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with("sigsci_proxy_"))
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn sum_of(page: &str, family: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_has_help_and_type_and_calls_without_an_agent_count_as_uninspected() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.json");
    std::fs::write(&agents, "[]").unwrap();
    let ctl = dir.path().join("p.ctl");
    let proxy = ProxyProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--agents-file",
            agents.to_str().unwrap(),
            "--control-socket",
            ctl.to_str().unwrap(),
        ],
        &[],
    )
    .await
    .ok()
    .unwrap();
    let (status, before) = http(proxy.admin(), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let uninspected_before = sum_of(&before, "sigsci_proxy_uninspected_total");
    // Closed label sets are on the page at 0 before their first event, for `rate()` and
    // dashboards (docs/metrics.md).
    for series in [
        r#"sigsci_proxy_connections_closed_total{reason="malformed"} 0"#,
        r#"sigsci_proxy_connections_closed_total{reason="idle"} 0"#,
        r#"sigsci_proxy_module_closes_total{close="reset"} 0"#,
        r#"sigsci_proxy_module_closes_total{close="fin"} 0"#,
        r#"sigsci_proxy_rpcs_total{method="pre_request",outcome="no_agent"} 0"#,
        r#"sigsci_proxy_rpcs_total{method="update_request",outcome="lost"} 0"#,
        r#"sigsci_proxy_rpcs_total{method="post_request",outcome="timeout"} 0"#,
        r#"sigsci_proxy_uninspected_total{reason="deadline"} 0"#,
    ] {
        assert!(
            before.lines().any(|l| l == series),
            "{series} missing at start-up:\n{before}"
        );
    }

    for i in 0..50 {
        let (_, err, _) = call(proxy.rpc(), i, rpc::PRE_REQUEST, &pre_request()).await;
        assert!(err.is_some(), "no agent: an error frame");
    }

    let (_, page) = http(proxy.admin(), "GET", "/metrics").await;
    let uninspected = sum_of(&page, "sigsci_proxy_uninspected_total") - uninspected_before;
    assert!(
        uninspected >= 50.0,
        "uninspected rose by {uninspected}\n{page}"
    );

    let (types, helps) = families(&page);
    for family in sample_families(&page) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                family
                    .strip_suffix(s)
                    .filter(|b| types.get(*b).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&family);
        assert!(types.contains_key(base), "no # TYPE for {base}");
        assert!(helps.contains(base), "no # HELP for {base}");
    }
    for name in types.keys() {
        assert!(helps.contains(name), "no # HELP for {name}");
    }
}

/// Every `sigsci_proxy_*` name in `text`, histogram suffixes included.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sigsci_proxy_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // `sigsci_proxy_*` in prose is not a metric.
        if !tail[..end].ends_with('_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_the_dashboard_use_only_exported_metrics() {
    let monitoring =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/components/monitoring");
    let mut used = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&monitoring).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "json")
        ) {
            used.extend(names_in(&std::fs::read_to_string(&path).unwrap()));
            files += 1;
        }
    }
    assert!(files >= 2 && used.len() > 5, "read {files} files: {used:?}");

    // A proxy with an agent, after a few calls: per-agent series exist.
    let agent = Agent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("p.ctl");
    let proxy =
        ProxyProcess::in_front_of(agent.addr, &["--control-socket", ctl.to_str().unwrap()]).await;
    for _ in 0..5 {
        let id = pre(proxy.rpc()).await;
        assert_eq!(update(proxy.rpc(), &id).await, None);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, page) = http(proxy.admin(), "GET", "/metrics").await;
    let exported = sample_families(&page);
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by manifests/components/monitoring but not exported: {missing:?}\nexported: {exported:?}"
    );
}
