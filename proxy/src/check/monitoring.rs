//! With prometheus-operator installed: a Prometheus must select the install's PodMonitor and
//! PrometheusRule, by their labels and their namespace's, or nothing is scraped and no alert
//! exists, silently (kube-prometheus-stack's default selectors want a `release` label).

use std::collections::BTreeMap;

use serde_json::Value;

use super::api::{self, describe};
use super::names::PROXY;
use super::report::Report;

const GROUP: &str = "/apis/monitoring.coreos.com/v1";

pub(crate) async fn run(client: &kube::Client, ns: &str, report: &mut Report) {
    let Some((monitors, rules)) = objects(client, ns, report).await else {
        return;
    };
    let monitor = monitors.iter().find(|m| api::name(m) == PROXY);
    let rule = rules.iter().find(|r| api::name(r) == PROXY);
    if monitor.is_none() && rule.is_none() {
        report.skip(
            "monitoring",
            format!("no PodMonitor {PROXY} here (no monitoring overlay applied)"),
        );
        return;
    }
    let prometheuses = api::list(client, &format!("{GROUP}/prometheuses"), None)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let ns_labels = namespace_labels(client, ns).await;
    let hint = "kube-prometheus-stack selects by its release label: add components/kube-prometheus-stack (manifests/README.md, step 7)";
    for (check, object, selector, ns_selector) in [
        (
            "podmonitor-selected",
            monitor,
            "podMonitorSelector",
            "podMonitorNamespaceSelector",
        ),
        (
            "rule-selected",
            rule,
            "ruleSelector",
            "ruleNamespaceSelector",
        ),
    ] {
        let Some(object) = object else {
            report.warn(
                check,
                format!("no {} named {PROXY}", kind(check)),
                "apply a monitoring overlay or components/monitoring",
            );
            continue;
        };
        let by = selected_by(
            &prometheuses,
            object,
            (selector, ns_selector),
            ns,
            &ns_labels,
        );
        if by.is_empty() {
            report.fail(
                check,
                format!(
                    "no Prometheus ({} found) selects the {} {PROXY}",
                    prometheuses.len(),
                    kind(check)
                ),
                hint,
            );
        } else {
            report.ok(
                check,
                format!("{} {PROXY} selected by {}", kind(check), by.join(", ")),
            );
        }
    }
}

/// The PodMonitors and PrometheusRules of `ns`; `None` (with a finding) without
/// prometheus-operator or when they cannot be read.
async fn objects(
    client: &kube::Client,
    ns: &str,
    report: &mut Report,
) -> Option<(Vec<Value>, Vec<Value>)> {
    let path = |plural: &str| format!("{GROUP}/namespaces/{ns}/{plural}");
    let monitors = match api::list(client, &path("podmonitors"), None).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            report.skip("monitoring", "no prometheus-operator (no PodMonitor kind): scrape by the pods' prometheus.io annotations");
            return None;
        }
        Err(e) => {
            report.warn("monitoring", describe(&e), "the user may list podmonitors?");
            return None;
        }
    };
    let rules = api::list(client, &path("prometheusrules"), None).await;
    Some((monitors, rules.ok().flatten().unwrap_or_default()))
}

/// `namespace/name` of each Prometheus whose selectors (object, namespace) pick `object`.
fn selected_by(
    prometheuses: &[Value],
    object: &Value,
    (selector, ns_selector): (&str, &str),
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> Vec<String> {
    prometheuses
        .iter()
        .filter(|p| {
            let own_ns = p["metadata"]["namespace"].as_str() == Some(ns);
            selects(&p["spec"][selector], &api::labels(object))
                && selects_namespace(&p["spec"][ns_selector], own_ns, ns_labels)
        })
        .map(|p| {
            let namespace = p["metadata"]["namespace"].as_str().unwrap_or("");
            format!("{namespace}/{}", api::name(p))
        })
        .collect()
}

fn kind(check: &str) -> &'static str {
    if check == "podmonitor-selected" {
        "PodMonitor"
    } else {
        "PrometheusRule"
    }
}

async fn namespace_labels(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    match api::get(client, &format!("/api/v1/namespaces/{ns}")).await {
        Ok(Some(n)) => api::labels(&n),
        _ => BTreeMap::new(),
    }
}

/// prometheus-operator's rule for an object selector: absent (null) selects nothing, `{}`
/// everything, else `matchLabels` and `matchExpressions` all hold.
pub(crate) fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return false;
    }
    matches(selector, labels)
}

/// Its rule for a namespace selector: absent selects the Prometheus's own namespace only.
fn selects_namespace(
    selector: &Value,
    own_namespace: bool,
    labels: &BTreeMap<String, String>,
) -> bool {
    if selector.is_null() {
        return own_namespace;
    }
    matches(selector, labels)
}

/// A Kubernetes label selector against `labels`.
pub(crate) fn matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    let labels_hold = match_labels
        .into_iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten();
    labels_hold
        && expressions.into_iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or("") {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_null_selector_picks_nothing_an_empty_one_everything() {
        let l = labels(&[("release", "kps")]);
        assert!(!selects(&Value::Null, &l));
        assert!(selects(&json!({}), &l));
        assert!(selects(&json!({"matchLabels": {"release": "kps"}}), &l));
        assert!(!selects(&json!({"matchLabels": {"release": "other"}}), &l));
        assert!(!selects(
            &json!({"matchLabels": {"release": "kps"}}),
            &labels(&[])
        ));
    }

    #[test]
    fn expressions_follow_the_kubernetes_operators() {
        let l = labels(&[("team", "a")]);
        let sel = |op: &str, values: &[&str]| json!({"matchExpressions": [{"key": "team", "operator": op, "values": values}]});
        assert!(matches(&sel("In", &["a", "b"]), &l));
        assert!(!matches(&sel("NotIn", &["a"]), &l));
        assert!(matches(&sel("Exists", &[]), &l));
        assert!(!matches(&sel("DoesNotExist", &[]), &l));
        assert!(matches(&sel("NotIn", &["a"]), &labels(&[])));
    }

    #[test]
    fn an_absent_namespace_selector_is_the_prometheus_own_namespace() {
        assert!(selects_namespace(&Value::Null, true, &labels(&[])));
        assert!(!selects_namespace(&Value::Null, false, &labels(&[])));
        assert!(selects_namespace(&json!({}), false, &labels(&[])));
    }
}
