//! The install's objects: the namespace, the Deployments and Services, the agents' Secret and
//! image, the agents ready and listed in their EndpointSlices, the autoscaler an autoscaling
//! overlay needs, and the namespaces allowed to send RPCs.

use serde_json::Value;

use super::api::{self, describe};
use super::names::*;
use super::report::Report;

/// Runs the checks; `false` when the namespace does not exist (nothing else is checked then).
pub(crate) async fn run(client: &kube::Client, ns: &str, report: &mut Report) -> bool {
    match api::get(client, &format!("/api/v1/namespaces/{ns}")).await {
        Ok(Some(_)) => report.ok("namespace", format!("namespace {ns} exists")),
        Ok(None) => {
            report.fail(
                "namespace",
                format!("namespace {ns} does not exist"),
                "apply your site overlay (manifests/README.md, step 3), or pass --namespace",
            );
            return false;
        }
        Err(e) => {
            report.fail(
                "namespace",
                describe(&e),
                "check the kubeconfig and context (kubectl get ns works?), or run with --pre",
            );
            return false;
        }
    }
    let agent = objects(client, ns, report).await;
    let uses_secret = agent
        .as_ref()
        .is_some_and(|a| a.to_string().contains(SECRET));
    if uses_secret {
        secret(client, ns, report).await;
    } else {
        report.skip("secret", "the agents read no Secret (simulated agents)");
    }
    if let Some(agent) = &agent {
        image(agent, report);
        agents_ready(agent, report);
        autoscaler(client, ns, agent, report).await;
    }
    endpoint_slices(client, ns, report).await;
    client_namespaces(client, report).await;
    true
}

/// The agent Deployment (returned), the proxy Deployment or DaemonSet, the two Services.
async fn objects(client: &kube::Client, ns: &str, report: &mut Report) -> Option<Value> {
    let apps = format!("/apis/apps/v1/namespaces/{ns}");
    let core = format!("/api/v1/namespaces/{ns}");
    let agent = api::get(client, &format!("{apps}/deployments/{AGENT}")).await;
    let proxy = match api::get(client, &format!("{apps}/deployments/{PROXY}")).await {
        Ok(None) => api::get(client, &format!("{apps}/daemonsets/{PROXY}")).await,
        other => other,
    };
    let found =
        |r: &Result<Option<Value>, api::Error>| r.as_ref().map(Option::is_some).map_err(describe);
    let mut missing = Vec::new();
    for (what, found) in [
        (format!("Deployment {AGENT}"), found(&agent)),
        (format!("Deployment or DaemonSet {PROXY}"), found(&proxy)),
        (
            format!("Service {AGENT}"),
            found(&api::get(client, &format!("{core}/services/{AGENT}")).await),
        ),
        (
            format!("Service {PROXY}"),
            found(&api::get(client, &format!("{core}/services/{PROXY}")).await),
        ),
    ] {
        match found {
            Ok(true) => {}
            Ok(false) => missing.push(what),
            Err(e) => missing.push(format!("{what} ({e})")),
        }
    }
    if missing.is_empty() {
        report.ok(
            "objects",
            "the agent and proxy workloads and their Services exist",
        );
    } else {
        report.fail(
            "objects",
            format!("missing: {}", missing.join(", ")),
            "apply your site overlay again: kubectl apply -k <your overlay>",
        );
    }
    agent.ok().flatten()
}

async fn secret(client: &kube::Client, ns: &str, report: &mut Report) {
    let hint = format!(
        "kubectl -n {ns} create secret generic {SECRET} --from-literal=accesskeyid=... --from-literal=secretaccesskey=... (manifests/README.md, step 2)"
    );
    match api::get(client, &format!("/api/v1/namespaces/{ns}/secrets/{SECRET}")).await {
        Ok(Some(s)) => {
            let missing: Vec<_> = SECRET_KEYS
                .into_iter()
                .filter(|k| {
                    s["data"]
                        .get(*k)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                })
                .collect();
            if missing.is_empty() {
                report.ok(
                    "secret",
                    format!("Secret {SECRET} has keys {}", SECRET_KEYS.join(" and ")),
                );
            } else {
                report.fail(
                    "secret",
                    format!(
                        "Secret {SECRET} lacks key(s) {} (values not shown)",
                        missing.join(", ")
                    ),
                    hint,
                );
            }
        }
        Ok(None) => report.fail(
            "secret",
            format!("no Secret {SECRET}: the agents cannot start"),
            hint,
        ),
        Err(e) => report.fail(
            "secret",
            describe(&e),
            "the user may read Secrets in the namespace?",
        ),
    }
}

fn image(agent: &Value, report: &mut Report) {
    let images: Vec<&str> = containers(agent)
        .filter_map(|c| c["image"].as_str())
        .collect();
    if images.iter().any(|i| i.ends_with(PLACEHOLDER_DIGEST)) {
        report.fail(
            "agent-image",
            format!("the agent image is the placeholder digest ({})", images.join(", ")),
            "pin the real digest in your site overlay: scripts/manifests/site_overlay.py SITE --tag TAG --agent AGENT_TAG@DIGEST (manifests/README.md, step 1), then apply",
        );
    } else {
        report.ok("agent-image", format!("agent image {}", images.join(", ")));
    }
}

fn containers(workload: &Value) -> impl Iterator<Item = &Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
}

fn agents_ready(agent: &Value, report: &mut Report) {
    let desired = agent["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = agent["status"]["readyReplicas"].as_i64().unwrap_or(0);
    let detail = format!("{ready} of {desired} agents ready");
    if ready == 0 {
        report.fail(
            "agents-ready",
            detail,
            format!("no agent is ready, every call fails open: kubectl -n <ns> describe pods -l app.kubernetes.io/name={AGENT}"),
        );
    } else if ready < desired {
        report.warn(
            "agents-ready",
            detail,
            "some agents are starting or failing: kubectl describe their pods",
        );
    } else {
        report.ok("agents-ready", detail);
    }
}

async fn endpoint_slices(client: &kube::Client, ns: &str, report: &mut Report) {
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    let selector = format!("kubernetes.io/service-name={AGENT}");
    match api::list(client, &path, Some(&selector)).await {
        Ok(Some(slices)) => {
            let ready = ready_endpoints(&slices).len();
            if ready == 0 {
                report.fail(
                    "endpointslices",
                    format!("the EndpointSlices of Service {AGENT} list no ready agent"),
                    "the proxies find no agent: are the agents ready, and does the Service select them?",
                );
            } else {
                report.ok(
                    "endpointslices",
                    format!("{ready} ready agent address(es) in the EndpointSlices"),
                );
            }
        }
        Ok(None) => report.fail(
            "endpointslices",
            "the EndpointSlice API is not served",
            "Kubernetes 1.21 or newer is needed",
        ),
        Err(e) => report.fail(
            "endpointslices",
            describe(&e),
            "the user may list EndpointSlices?",
        ),
    }
}

/// The addresses of the ready endpoints (`ip` without the port) in `slices`.
pub(crate) fn ready_endpoints(slices: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices {
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let ready = e["conditions"]["ready"].as_bool().unwrap_or(true);
            let terminating = e["conditions"]["terminating"].as_bool().unwrap_or(false);
            if ready && !terminating {
                out.extend(
                    e["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_owned)),
                );
            }
        }
    }
    out
}

/// An autoscaling overlay leaves the agents' replicas out of what it applies: then an HPA or a
/// ScaledObject must own them, and an HPA needs the external metrics API to answer.
async fn autoscaler(client: &kube::Client, ns: &str, agent: &Value, report: &mut Report) {
    let applied =
        agent["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok());
    let autoscaled = applied
        .as_ref()
        .is_some_and(|a| a["spec"].get("replicas").is_none());
    let hpa = api::get(
        client,
        &format!("/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{AGENT}"),
    )
    .await;
    let scaled_object = api::get(
        client,
        &format!("/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{AGENT}"),
    )
    .await;
    let keda = matches!(scaled_object, Ok(Some(_)));
    match (&hpa, keda) {
        (_, true) => report.ok("autoscaler", format!("KEDA ScaledObject {AGENT} scales the agents")),
        (Ok(Some(_)), false) => {
            let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/sigsci_proxy_agent_demand");
            match api::list(client, &path, None).await {
                Ok(Some(items)) if !items.is_empty() => {
                    report.ok("autoscaler", "HPA present; the external metrics API answers sigsci_proxy_agent_demand")
                }
                _ => report.fail(
                    "autoscaler",
                    "HPA present, but the external metrics API does not answer sigsci_proxy_agent_demand",
                    "install prometheus-adapter with the rule of manifests/README.md, step 7, and check kubectl get --raw /apis/external.metrics.k8s.io/v1beta1",
                ),
            }
        }
        _ if autoscaled => report.fail(
            "autoscaler",
            "an autoscaling overlay was applied (no agent replicas), but no HPA or ScaledObject exists",
            "apply the autoscaling overlay again, or components/hpa or components/keda",
        ),
        _ => report.skip("autoscaler", "a fixed pool (the applied overlay sets the agents' replicas)"),
    }
}

async fn client_namespaces(client: &kube::Client, report: &mut Report) {
    match api::list(client, "/api/v1/namespaces", Some(CLIENT_LABEL)).await {
        Ok(Some(list)) if !list.is_empty() => {
            let names: Vec<_> = list.iter().map(api::name).collect();
            report.ok(
                "client-namespaces",
                format!("labelled {CLIENT_LABEL}: {}", names.join(", ")),
            );
        }
        Ok(_) => report.warn(
            "client-namespaces",
            format!("no namespace is labelled {CLIENT_LABEL}: the NetworkPolicy admits no module"),
            format!("kubectl label namespace <app namespace> {CLIENT_LABEL}"),
        ),
        Err(e) => report.warn(
            "client-namespaces",
            describe(&e),
            "the user may list namespaces?",
        ),
    }
}
