//! `check --pre`: before installing, whether the API server answers and the user may create
//! what the overlays hold (SelfSubjectAccessReviews, one per kind), so an install does not stop
//! half-applied on a refusal.

use serde_json::json;

use super::api::describe;
use super::report::Report;

/// (API group, resource, namespaced) of every kind the base and `overlays/production` create.
const KINDS: [(&str, &str, bool); 11] = [
    ("", "namespaces", false),
    ("", "serviceaccounts", true),
    ("", "services", true),
    ("", "configmaps", true),
    ("apps", "deployments", true),
    ("apps", "daemonsets", true),
    ("policy", "poddisruptionbudgets", true),
    ("rbac.authorization.k8s.io", "roles", true),
    ("rbac.authorization.k8s.io", "rolebindings", true),
    ("networking.k8s.io", "networkpolicies", true),
    ("scheduling.k8s.io", "priorityclasses", false),
];

/// Kinds only some overlays add (autoscaling, monitoring): a refusal there is a warning.
const OPTIONAL: [(&str, &str, bool); 4] = [
    ("autoscaling", "horizontalpodautoscalers", true),
    ("keda.sh", "scaledobjects", true),
    ("monitoring.coreos.com", "podmonitors", true),
    ("monitoring.coreos.com", "prometheusrules", true),
];

pub(crate) async fn run(client: &kube::Client, ns: &str, report: &mut Report) {
    match client.apiserver_version().await {
        Ok(v) => report.ok(
            "api-server",
            format!("the API server answers (Kubernetes {})", v.git_version),
        ),
        Err(e) => {
            report.fail(
                "api-server",
                describe(&e),
                "check the kubeconfig, its context and the network path to the API server (kubectl version)",
            );
            return;
        }
    }
    let denied = refused(client, ns, &KINDS).await;
    if denied.is_empty() {
        report.ok(
            "permissions",
            format!(
                "the user may create the {} kinds the base and overlays/production hold",
                KINDS.len()
            ),
        );
    } else {
        report.fail(
            "permissions",
            format!("the user may not create: {}", denied.join(", ")),
            "ask a cluster admin for these rights, or to apply manifests/cluster and the namespace for you",
        );
    }
    let denied = refused(client, ns, &OPTIONAL).await;
    if denied.is_empty() {
        report.ok(
            "permissions-optional",
            "the user may create the autoscaling and monitoring overlays' kinds",
        );
    } else {
        report.warn(
            "permissions-optional",
            format!("the user may not create: {}", denied.join(", ")),
            "needed only for the autoscaling or monitoring overlays (or their CRDs are not installed)",
        );
    }
}

/// The kinds of `kinds` the user may not create in `ns`.
async fn refused(client: &kube::Client, ns: &str, kinds: &[(&str, &str, bool)]) -> Vec<String> {
    let mut denied = Vec::new();
    for &(group, resource, namespaced) in kinds {
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "group": group, "resource": resource, "verb": "create",
                "namespace": if namespaced { ns } else { "" },
            }},
        });
        let request = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review).expect("json"))
            .expect("a POST request builds");
        match client.request::<serde_json::Value>(request).await {
            Ok(answer) if answer["status"]["allowed"] == true => {}
            Ok(_) => denied.push(resource.to_owned()),
            Err(e) => denied.push(format!("{resource} ({})", describe(&e))),
        }
    }
    denied
}
