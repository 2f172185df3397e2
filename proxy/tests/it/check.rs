//! `sigsci-proxy check` against a fake API server holding a whole install: a healthy one
//! passes, and each fault an operator meets (a Secret key missing, the placeholder digest, no
//! ready agent, a PodMonitor no Prometheus selects, calls going uninspected, no namespace
//! allowed to send RPCs) is named by its own check, with a hint, and by nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fake_apiserver::FakeApiServer;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sigsci_proxy::check::{CheckArgs, Report, Status, check};

use crate::support::process::BIN;

const NS: &str = "sigsci";
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A proxy's admin port as `check` reads it: per scrape, 1,000 more RPCs and `uninspected`
/// more calls left uninspected (reason `no_agent`), and `/agents` listing both agents ready.
async fn admin_fixture(uninspected: u64) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = match req.uri().path() {
                        "/metrics" => {
                            let n = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
                            format!(
                                "# TYPE sigsci_proxy_rpcs_total counter\n\
                                 sigsci_proxy_rpcs_total{{method=\"pre_request\",outcome=\"ok\"}} {}\n\
                                 sigsci_proxy_uninspected_total{{reason=\"no_agent\"}} {}\n\
                                 sigsci_proxy_uninspected_total{{reason=\"deadline\"}} 0\n",
                                n * 1000,
                                n * uninspected
                            )
                        }
                        _ => json!([
                            {"address": "10.0.0.1:9999", "state": "ready"},
                            {"address": "10.0.0.2:9999", "state": "ready"},
                        ])
                        .to_string(),
                    };
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn agent_deployment(image: &str, ready: i64) -> Value {
    let applied = json!({"spec": {"replicas": 2}}).to_string();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sigsci-agent", "namespace": NS,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": "sigsci-agent"}},
                 "template": {"spec": {"containers": [{"name": "sigsci-agent", "image": image,
                     "env": [{"name": "SIGSCI_ACCESSKEYID", "valueFrom": {"secretKeyRef":
                         {"name": "sigsci-agent-credentials", "key": "accesskeyid"}}}]}]}}},
        "status": {"replicas": 2, "readyReplicas": ready},
    })
}

fn proxy_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/name": "sigsci-proxy"}},
        "spec": {"containers": [{"name": "sigsci-proxy", "image": "sigsci-proxy:0.2.0"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn prometheus_object(kind: &str, release: Option<&str>) -> Value {
    let mut labels = json!({"app.kubernetes.io/name": "sigsci-proxy"});
    if let Some(r) = release {
        labels["release"] = json!(r);
    }
    json!({"apiVersion": "monitoring.coreos.com/v1", "kind": kind,
           "metadata": {"name": "sigsci-proxy", "namespace": NS, "labels": labels}, "spec": {}})
}

/// A fault to plant in the otherwise healthy install.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    SecretKeyMissing,
    PlaceholderDigest,
    NoReadyAgent,
    PodMonitorUnselected,
    Uninspected,
    NoClientNamespace,
}

/// The fake API server holding a whole install (two agents, two proxies, monitoring by a
/// kube-prometheus-stack-like Prometheus), with `fault` planted.
async fn install(fault: Fault) -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.put_object("/api/v1", "namespaces", json!({"metadata": {"name": NS}}));
    let client_label = if fault == Fault::NoClientNamespace {
        "false"
    } else {
        "true"
    };
    fake.put_object(
        "/api/v1",
        "namespaces",
        json!({"metadata": {"name": "shop", "labels": {"sigsci-proxy/client": client_label}}}),
    );
    let image = if fault == Fault::PlaceholderDigest {
        format!(
            "signalsciences/sigsci-agent:4.84.0@sha256:{}",
            "0".repeat(64)
        )
    } else {
        format!("signalsciences/sigsci-agent:4.84.0@{DIGEST}")
    };
    let ready = if fault == Fault::NoReadyAgent { 0 } else { 2 };
    fake.add_deployment(serde_json::from_value(agent_deployment(&image, ready)).unwrap());
    fake.add_deployment(
        serde_json::from_value(
            json!({"metadata": {"name": "sigsci-proxy", "namespace": NS},
        "spec": {"replicas": 2, "selector": {}, "template": {}}}),
        )
        .unwrap(),
    );
    for svc in ["sigsci-agent", "sigsci-proxy"] {
        fake.put_object(
            "/api/v1",
            "services",
            json!({"metadata": {"name": svc, "namespace": NS}}),
        );
    }
    let mut data = json!({"accesskeyid": "a2V5", "secretaccesskey": "c2VjcmV0"});
    if fault == Fault::SecretKeyMissing {
        data.as_object_mut().unwrap().remove("secretaccesskey");
    }
    fake.put_object(
        "/api/v1",
        "secrets",
        json!({"metadata": {"name": "sigsci-agent-credentials", "namespace": NS}, "data": data}),
    );
    fake.apply(
        serde_json::from_value(json!({
            "addressType": "IPv4",
            "metadata": {"name": "sigsci-agent-abc", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "sigsci-agent"}},
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                          {"addresses": ["10.0.0.2"], "conditions": {"ready": true}}],
            "ports": [{"name": "rpc", "port": 9999, "protocol": "TCP"}],
        }))
        .unwrap(),
    );
    let uninspected = if fault == Fault::Uninspected { 20 } else { 0 };
    for pod in ["sigsci-proxy-a", "sigsci-proxy-b"] {
        fake.add_pod(serde_json::from_value(proxy_pod(pod)).unwrap());
        fake.map_pod_port(NS, pod, 9090, admin_fixture(uninspected).await);
    }
    let release = (fault != Fault::PodMonitorUnselected).then_some("kps");
    fake.put_object(
        "/apis/monitoring.coreos.com/v1",
        "podmonitors",
        prometheus_object("PodMonitor", release),
    );
    fake.put_object(
        "/apis/monitoring.coreos.com/v1",
        "prometheusrules",
        prometheus_object("PrometheusRule", Some("kps")),
    );
    fake.put_object("/apis/monitoring.coreos.com/v1", "prometheuses", json!({
        "metadata": {"name": "kps-prometheus", "namespace": "monitoring"},
        "spec": {"podMonitorSelector": {"matchLabels": {"release": "kps"}}, "podMonitorNamespaceSelector": {},
                 "ruleSelector": {"matchLabels": {"release": "kps"}}, "ruleNamespaceSelector": {}},
    }));
    fake
}

fn args() -> CheckArgs {
    CheckArgs {
        namespace: NS.to_owned(),
        kubeconfig: None,
        context: None,
        output: "text".to_owned(),
        window: Duration::ZERO,
        pre: false,
    }
}

async fn run(fault: Fault) -> Report {
    let fake = install(fault).await;
    check(&fake.client(), &args()).await
}

#[tokio::test]
async fn a_healthy_install_passes_every_check() {
    let report = run(Fault::None).await;
    println!("{}", report.text());
    assert!(report.ok, "{}", report.text());
    let runbooks = include_str!("../../../docs/runbooks.md");
    for f in &report.checks {
        assert!(
            runbooks.contains(&format!("\n### check-{}\n", f.check)),
            "docs/runbooks.md has no section check-{}",
            f.check
        );
    }
    for f in &report.checks {
        assert!(
            matches!(f.status, Status::Ok | Status::Skip),
            "{}",
            report.text()
        );
    }
    for check in [
        "namespace",
        "objects",
        "secret",
        "agent-image",
        "agents-ready",
        "endpointslices",
        "client-namespaces",
        "proxies-ready",
        "proxy-metrics",
        "agents-seen",
        "uninspected",
        "podmonitor-selected",
        "rule-selected",
    ] {
        assert_eq!(
            report.get(check).map(|f| f.status),
            Some(Status::Ok),
            "{check}: {}",
            report.text()
        );
    }
}

/// `fault` makes `check` (and no other) end as `status`, with a hint and a runbook link.
async fn names_alone(fault: Fault, name: &str, status: Status, detail: &str) {
    let report = run(fault).await;
    println!("{}", report.text());
    let f = report
        .get(name)
        .unwrap_or_else(|| panic!("no {name} check: {}", report.text()));
    assert_eq!(f.status, status, "{}", report.text());
    assert!(f.detail.contains(detail), "{}: {}", f.detail, report.text());
    assert!(f.hint.as_deref().is_some_and(|h| !h.is_empty()));
    assert_eq!(
        f.doc.as_deref(),
        Some(format!("docs/runbooks.md#check-{name}").as_str())
    );
    let runbooks = include_str!("../../../docs/runbooks.md");
    assert!(
        runbooks.contains(&format!("\n### check-{name}\n")),
        "docs/runbooks.md has no section check-{name}"
    );
    let others: Vec<_> = report
        .checks
        .iter()
        .filter(|o| o.check != name && matches!(o.status, Status::Fail | Status::Warn))
        .map(|o| o.check)
        .collect();
    assert!(others.is_empty(), "also {others:?}: {}", report.text());
    assert_eq!(report.ok, status != Status::Fail);
}

#[tokio::test]
async fn a_missing_secret_key_is_named_without_its_value() {
    names_alone(
        Fault::SecretKeyMissing,
        "secret",
        Status::Fail,
        "lacks key(s) secretaccesskey",
    )
    .await;
    let report = run(Fault::SecretKeyMissing).await;
    assert!(
        !report.json().contains("a2V5"),
        "a Secret value was printed"
    );
}

#[tokio::test]
async fn the_placeholder_digest_is_named() {
    names_alone(
        Fault::PlaceholderDigest,
        "agent-image",
        Status::Fail,
        "placeholder digest",
    )
    .await;
}

#[tokio::test]
async fn no_ready_agent_is_named() {
    names_alone(
        Fault::NoReadyAgent,
        "agents-ready",
        Status::Fail,
        "0 of 2 agents ready",
    )
    .await;
}

#[tokio::test]
async fn a_podmonitor_no_prometheus_selects_is_named() {
    names_alone(
        Fault::PodMonitorUnselected,
        "podmonitor-selected",
        Status::Fail,
        "no Prometheus",
    )
    .await;
}

#[tokio::test]
async fn uninspected_calls_above_one_percent_are_named_by_reason() {
    names_alone(
        Fault::Uninspected,
        "uninspected",
        Status::Fail,
        "no_agent 40",
    )
    .await;
}

#[tokio::test]
async fn no_labelled_client_namespace_is_a_warning() {
    names_alone(
        Fault::NoClientNamespace,
        "client-namespaces",
        Status::Warn,
        "admits no module",
    )
    .await;
}

#[tokio::test]
async fn pre_asks_whether_the_user_may_create_what_the_overlays_hold() {
    let fake = FakeApiServer::start().await;
    let pre = CheckArgs {
        pre: true,
        ..args()
    };
    let report = check(&fake.client(), &pre).await;
    assert!(report.ok, "{}", report.text());
    fake.deny("create", "rolebindings");
    let report = check(&fake.client(), &pre).await;
    println!("{}", report.text());
    let f = report.get("permissions").unwrap();
    assert_eq!(
        (f.status, f.detail.contains("rolebindings")),
        (Status::Fail, true),
        "{}",
        report.text()
    );
}

/// Through the binary: a kubeconfig naming the fake, exit 0 and JSON for the healthy install,
/// exit 1 with the fault named for a broken one.
#[tokio::test]
async fn the_binary_prints_json_and_exits_non_zero_on_a_failure() {
    for (fault, code) in [(Fault::None, 0), (Fault::PlaceholderDigest, 1)] {
        let fake = install(fault).await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: 'http://{}'}}}}]\n\
             users: [{{name: u, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]\n",
                fake.addr()
            ),
        )
        .unwrap();
        let out = tokio::process::Command::new(BIN)
            .args([
                "check",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--window",
                "0s",
                "--output",
                "json",
            ])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["ok"], code == 0);
        let failed: Vec<_> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "fail")
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        assert_eq!(
            failed,
            if code == 0 {
                vec![]
            } else {
                vec!["agent-image"]
            }
        );
    }
}
