//! The proxies as they run: every pod ready, its `/metrics` reachable through the API server's
//! pod proxy, the agents it sees equal to the EndpointSlices' ready agents, and the fraction of
//! RPCs left uninspected over a short window, by reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::api::{self, describe};
use super::install::ready_endpoints;
use super::names::*;
use super::report::Report;

/// Above this fraction of RPCs left uninspected over the window, the check fails (the alert
/// `SigsciProxyUninspectedRequests` fires at the same 1 %).
pub const UNINSPECTED_LIMIT: f64 = 0.01;

pub(crate) async fn run(client: &kube::Client, ns: &str, window: Duration, report: &mut Report) {
    let pods = match api::list(
        client,
        &format!("/api/v1/namespaces/{ns}/pods"),
        Some(PROXY_SELECTOR),
    )
    .await
    {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            report.fail("proxies-ready", describe(&e), "the user may list pods?");
            return;
        }
    };
    let ready: Vec<&Value> = pods.iter().filter(|p| pod_ready(p)).collect();
    let detail = format!("{} of {} proxy pods ready", ready.len(), pods.len());
    if ready.is_empty() || ready.len() < pods.len() {
        report.fail(
            "proxies-ready",
            detail,
            format!("kubectl -n {ns} describe pods -l {PROXY_SELECTOR}; a proxy is ready once it has a ready agent"),
        );
    } else {
        report.ok("proxies-ready", detail);
    }
    let names: Vec<&str> = ready.iter().map(|p| api::name(p)).collect();
    let first = scrape_all(client, ns, &names, report).await;
    if names.is_empty() || first.len() < names.len() {
        return;
    }
    agents_seen(client, ns, &names, report).await;
    tokio::time::sleep(window).await;
    let mut second = BTreeMap::new();
    for pod in &names {
        if let Ok(text) = api::pod_get(client, ns, pod, ADMIN_PORT, "/metrics").await {
            second.insert(pod.to_string(), Counters::parse(&text));
        }
    }
    uninspected(&first, &second, window, report);
}

fn pod_ready(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Each ready proxy's counters, and a finding on whether all were reachable.
async fn scrape_all(
    client: &kube::Client,
    ns: &str,
    pods: &[&str],
    report: &mut Report,
) -> BTreeMap<String, Counters> {
    let mut out = BTreeMap::new();
    let mut failed = Vec::new();
    for pod in pods {
        match api::pod_get(client, ns, pod, ADMIN_PORT, "/metrics").await {
            Ok(text) => {
                out.insert(pod.to_string(), Counters::parse(&text));
            }
            Err(e) => failed.push(format!("{pod} ({})", describe(&e))),
        }
    }
    if pods.is_empty() {
        report.skip("proxy-metrics", "no ready proxy to read");
    } else if failed.is_empty() {
        report.ok(
            "proxy-metrics",
            format!(
                "/metrics of {} proxies read through the API server",
                pods.len()
            ),
        );
    } else {
        report.fail(
            "proxy-metrics",
            format!("/metrics unreachable: {}", failed.join(", ")),
            format!("the admin port {ADMIN_PORT} must listen on the pod's address ([::]:{ADMIN_PORT} in the manifests) and the user may get pods/proxy"),
        );
    }
    out
}

/// The agents each proxy takes as ready (`/agents`) against the EndpointSlices' ready ones.
async fn agents_seen(client: &kube::Client, ns: &str, pods: &[&str], report: &mut Report) {
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    let selector = format!("kubernetes.io/service-name={AGENT}");
    let Ok(Some(slices)) = api::list(client, &path, Some(&selector)).await else {
        report.skip("agents-seen", "no EndpointSlices to compare with");
        return;
    };
    let want: BTreeSet<String> = ready_endpoints(&slices).into_iter().collect();
    let mut differ = Vec::new();
    for pod in pods {
        let seen = match api::pod_get(client, ns, pod, ADMIN_PORT, "/agents").await {
            Ok(text) => ready_agents(&text),
            Err(e) => {
                differ.push(format!("{pod}: /agents unreachable ({})", describe(&e)));
                continue;
            }
        };
        if seen != want {
            differ.push(format!("{pod} sees {} ready", list(&seen)));
        }
    }
    if differ.is_empty() {
        report.ok(
            "agents-seen",
            format!(
                "every proxy sees the {} ready agent(s) of the EndpointSlices",
                want.len()
            ),
        );
    } else {
        report.fail(
            "agents-seen",
            format!("the EndpointSlices list {} ready; {}", list(&want), differ.join("; ")),
            "a proxy whose view differs for long has lost its watch (its RBAC, or the API server): see its logs",
        );
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        return "none".to_owned();
    }
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The hosts of the agents a proxy's `/agents` lists as ready (without the port, as the
/// EndpointSlices list them).
fn ready_agents(text: &str) -> BTreeSet<String> {
    let agents: Vec<Value> = serde_json::from_str(text).unwrap_or_default();
    agents
        .iter()
        .filter(|a| a["state"] == "ready")
        .filter_map(|a| a["address"].as_str())
        .map(|addr| {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .collect()
}

/// The counters `check` reads from a `/metrics` page.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    rpcs: f64,
    uninspected: BTreeMap<String, f64>,
}

impl Counters {
    pub(crate) fn parse(text: &str) -> Self {
        let mut c = Counters::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series.starts_with("sigsci_proxy_rpcs_total") {
                c.rpcs += value;
            } else if let Some(labels) = series.strip_prefix("sigsci_proxy_uninspected_total") {
                let reason = labels
                    .split("reason=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_owned();
                *c.uninspected.entry(reason).or_default() += value;
            }
        }
        c
    }
}

fn uninspected(
    first: &BTreeMap<String, Counters>,
    second: &BTreeMap<String, Counters>,
    window: Duration,
    report: &mut Report,
) {
    let mut rpcs = 0.0;
    let mut by_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (pod, after) in second {
        let Some(before) = first.get(pod) else {
            continue;
        };
        rpcs += (after.rpcs - before.rpcs).max(0.0);
        for (reason, v) in &after.uninspected {
            let was = before.uninspected.get(reason).copied().unwrap_or(0.0);
            *by_reason.entry(reason).or_default() += (v - was).max(0.0);
        }
    }
    let total: f64 = by_reason.values().sum();
    let reasons: Vec<String> = by_reason
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(r, v)| format!("{r} {v}"))
        .collect();
    let secs = humantime::format_duration(window);
    if rpcs == 0.0 && total == 0.0 {
        report.ok(
            "uninspected",
            format!("no RPC in {secs}: nothing left uninspected"),
        );
        return;
    }
    let fraction = if rpcs > 0.0 { total / rpcs } else { 1.0 };
    let detail = format!(
        "{total} of {rpcs} RPCs uninspected in {secs} ({:.2} %){}",
        fraction * 100.0,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", reasons.join(", "))
        }
    );
    if fraction > UNINSPECTED_LIMIT {
        report.fail(
            "uninspected",
            detail,
            "modules are failing open: docs/runbooks.md#sigsciproxyuninspectedrequests has each reason's steps",
        );
    } else {
        report.ok("uninspected", detail);
    }
}
